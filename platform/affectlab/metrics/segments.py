"""Segmental metrics of temporal action segmentation, as defined by MS-TCN (``eval.py``).

Frame accuracy rewards a prediction that flickers between classes as long as most frames
are right; the segmental metrics do not. Edit scores the order of segments (an extra
one-frame segment costs an edit), F1@k scores whether each true segment is found once
with IoU >= k.

Sequences are scored one trial at a time (segments never cross a trial boundary), and
``background`` is an explicit choice: labels listed there are dropped before segmenting.
MS-TCN's default background is the string "background", which never matches integer
labels, so ``()`` (count every class, rest included) reproduces MS-TCN on integer labels;
pass ``background=(0,)`` to score only the behaviours around rest.
"""

from __future__ import annotations

import numpy as np

OVERLAPS = (0.10, 0.25, 0.50)


def segments(labels, background=()) -> list[tuple[int, int, int]]:
    """Maximal runs of equal labels as (label, start, end), half-open, background removed."""
    labels = np.asarray(labels).ravel()
    if labels.size == 0:
        return []
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [labels.size]])
    drop = set(background)
    return [
        (labels[s].item(), int(s), int(e))
        for s, e in zip(starts, ends)
        if labels[s].item() not in drop
    ]


def _levenshtein(a: list, b: list) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def edit_score(pred, target, background=()) -> float:
    """(1 - Levenshtein / max length) x 100 on the segment label sequences; both empty -> 100."""
    p = [s[0] for s in segments(pred, background)]
    t = [s[0] for s in segments(target, background)]
    longest = max(len(p), len(t))
    if longest == 0:
        return 100.0
    return (1.0 - _levenshtein(p, t) / longest) * 100.0


def f1_overlap_counts(pred, target, overlap: float, background=()) -> tuple[int, int, int]:
    """(tp, fp, fn) at IoU threshold ``overlap`` (a fraction, e.g. 0.1).

    Each predicted segment is matched to its best-IoU true segment of the same label; it is
    a TP when that IoU >= overlap and the true segment was not already hit, else an FP.
    True segments never hit are FNs.
    """
    if not 0.0 < overlap <= 1.0:
        raise ValueError(f"overlap is a fraction in (0, 1], got {overlap}")
    pred_segments = segments(pred, background)
    true_segments = segments(target, background)
    if not true_segments:
        return 0, len(pred_segments), 0
    t_label = np.array([s[0] for s in true_segments], dtype=object)
    t_start = np.array([s[1] for s in true_segments])
    t_end = np.array([s[2] for s in true_segments])
    hit = np.zeros(len(true_segments), dtype=bool)
    tp = fp = 0
    for label, start, end in pred_segments:
        intersection = np.clip(np.minimum(end, t_end) - np.maximum(start, t_start), 0, None)
        union = np.maximum(end, t_end) - np.minimum(start, t_start)
        iou = np.where(t_label == label, intersection / union, 0.0)
        best = int(np.argmax(iou))
        if iou[best] >= overlap and not hit[best]:
            tp += 1
            hit[best] = True
        else:
            fp += 1
    return tp, fp, int((~hit).sum())


def _f1(tp: int, fp: int, fn: int) -> float:
    if tp + fp + fn == 0:
        return 100.0  # nothing to find and nothing predicted
    if tp == 0:
        return 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 200.0 * precision * recall / (precision + recall)


def segmental_scores(preds, targets, background=(), overlaps=OVERLAPS) -> dict[str, float]:
    """Edit (mean over sequences), F1@k (counts summed over sequences) and frame accuracy.

    ``preds`` and ``targets`` are lists of per-frame label sequences, one per trial.
    Keys: ``edit``, ``f1@10``, ``f1@25``, ``f1@50`` (all 0-100) and ``accuracy`` (0-100,
    pooled over frames, background included).
    """
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predicted sequences but {len(targets)} targets")
    if not preds:
        raise ValueError("no sequences to score")
    counts = np.zeros((len(overlaps), 3), dtype=np.int64)
    edits, correct, total = [], 0, 0
    for pred, target in zip(preds, targets):
        pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
        if pred.shape != target.shape:
            raise ValueError(f"prediction has {pred.size} frames but target has {target.size}")
        edits.append(edit_score(pred, target, background))
        for i, overlap in enumerate(overlaps):
            counts[i] += f1_overlap_counts(pred, target, overlap, background)
        correct += int((pred == target).sum())
        total += target.size
    scores = {"edit": float(np.mean(edits))}
    for overlap, (tp, fp, fn) in zip(overlaps, counts):
        scores[f"f1@{round(overlap * 100)}"] = _f1(int(tp), int(fp), int(fn))
    scores["accuracy"] = 100.0 * correct / max(total, 1)
    return scores
