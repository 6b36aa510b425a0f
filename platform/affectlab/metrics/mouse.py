"""Metrics of per-frame mouse behaviour recognition (pure numpy / scikit-learn).

Definitions, each fixing a defect of the original evaluation (reference/mouse.md §7, §9.2):

- **Frame metrics** use ``labels=range(6)``, so every class keeps its name (defect 14).
  A class absent from both the truth and the prediction has no F1: it is reported as
  ``None`` and left out of the macro mean; a class absent from the truth but predicted
  scores 0; a class present but never predicted scores 0.
- **Decision thresholds** (``fit_thresholds``): for each class, the probability threshold
  on a 0.05-0.95 grid that maximises its one-vs-rest F1 **on the validation split**. The
  decision rule is ``argmax_c p_c / t_c`` (the class that clears its own threshold by the
  largest factor; with equal thresholds it is plain argmax). The thresholds are then
  applied unchanged to the test split and at inference (defect 10).
- **Segmental metrics**: MS-TCN Edit and F1@{10,25,50} per trial (``metrics.segments``),
  never across trial boundaries; the background set is explicit (defect 11).
- **Majority baseline**: always predict the most frequent class of the training split.
- **Keypoint MAE**: mean absolute error of visible x and y coordinates, in pixels of the
  original video (normalised coordinates x width / height).
- **Cross-validation** (``summarize_folds``): each metric's mean over folds with the
  t-based 95% confidence half-width (``affectlab.metrics.summary.ci95``, as pain reports);
  counts and confusion matrices are summed; a per-class F1 is summarised over the folds
  whose test animals show that class (``n_folds`` says how many).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from affectlab.constants.mouse import CLASS_NAMES, NUM_CLASSES
from affectlab.metrics.segments import segmental_scores
from affectlab.metrics.summary import ci95, summarize

LABELS = list(range(NUM_CLASSES))
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
BACKGROUND_NONE = ()  # MS-TCN on integer labels: every class, rest included, is a segment
BACKGROUND_REST = (0,)  # only the behaviours around rest


def _none_if_nan(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def frame_scores(y_true, y_pred) -> dict:
    """Accuracy, macro F1, per-class F1 (by name) and the 6x6 confusion matrix (rows: truth)."""
    from sklearn.metrics import confusion_matrix, f1_score  # here: sklearn imports pandas

    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.size} true labels but {y_pred.size} predictions")
    if y_true.size == 0:
        raise ValueError("no frames to score")
    per_class = f1_score(y_true, y_pred, labels=LABELS, average=None, zero_division=np.nan)
    scored = per_class[np.isfinite(per_class)]
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "macro_f1": float(scored.mean()) if scored.size else float("nan"),
        "per_class_f1": {name: _none_if_nan(f) for name, f in zip(CLASS_NAMES, per_class)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=LABELS).tolist(),
    }


def fit_thresholds(probs, labels, grid=THRESHOLD_GRID) -> np.ndarray:
    """Per-class thresholds maximising one-vs-rest F1 (fit on validation only).

    A class with no validation frames keeps 0.5: there is nothing to fit it on.
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels).ravel()
    thresholds = np.full(probs.shape[1], 0.5)
    for c in range(probs.shape[1]):
        positive = labels == c
        if not positive.any():
            continue
        best = -1.0
        for t in grid:
            predicted = probs[:, c] >= t
            tp = np.sum(predicted & positive)
            f1 = 2 * tp / max(1, predicted.sum() + positive.sum())
            if f1 > best:  # ties keep the lowest threshold
                best, thresholds[c] = f1, t
    return thresholds


def apply_thresholds(probs, thresholds) -> np.ndarray:
    """The decision rule: ``argmax_c p_c / t_c``."""
    return np.argmax(np.asarray(probs) / np.asarray(thresholds)[None, :], axis=1)


def majority_class(train_labels) -> int:
    return int(np.bincount(np.asarray(train_labels).ravel(), minlength=NUM_CLASSES).argmax())


def majority_baseline_macro_f1(train_labels, test_labels) -> float:
    """Macro F1 on ``test_labels`` of always predicting the training split's majority class."""
    test_labels = np.asarray(test_labels).ravel()
    return frame_scores(test_labels, np.full_like(test_labels, majority_class(train_labels)))["macro_f1"]


def keypoint_mae_px(pred, target, mask, video_wh) -> float:
    """Mean |pred - target| over visible coordinates, in pixels.

    ``pred``/``target`` ``[..., K, 2]`` in normalised coordinates, ``mask`` ``[..., K]``,
    ``video_wh`` broadcastable to ``[..., 2]`` (width, height).
    """
    error = np.abs(np.asarray(pred, np.float64) - np.asarray(target, np.float64)) * np.asarray(video_wh, np.float64)
    weight = np.broadcast_to(np.asarray(mask, np.float64)[..., None], error.shape)
    return float((error * weight).sum() / weight.sum()) if weight.sum() > 0 else float("nan")


def stitch_trials(trial_id, row, probs, labels, ok) -> dict[int, dict[str, np.ndarray]]:
    """Per-trial frame sequences from overlapping windows.

    ``probs`` ``[N,T,C]`` and ``labels`` ``[N,T]`` of windows starting at annotation row
    ``row`` of trial ``trial_id``. Probabilities of frames covered by several windows are
    averaged; frames covered only by skipped windows (``ok == 0``) are dropped.
    Returns ``{trial_id: {"probs": [n,C], "labels": [n], "frames": [n] (rows kept)}}``.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    n_windows, length = labels.shape
    kept = [i for i in range(n_windows) if ok[i]]
    ends = defaultdict(int)
    for i in kept:
        ends[int(trial_id[i])] = max(ends[int(trial_id[i])], int(row[i]) + length)
    sequences = {
        t: {"sum": np.zeros((n, probs.shape[-1])), "count": np.zeros(n), "labels": np.full(n, -1, np.int64)}
        for t, n in ends.items()
    }
    for i in kept:
        s, r = sequences[int(trial_id[i])], int(row[i])
        s["sum"][r : r + length] += probs[i]
        s["count"][r : r + length] += 1
        s["labels"][r : r + length] = labels[i]
    out = {}
    for t in sorted(sequences):
        s = sequences[t]
        covered = np.flatnonzero(s["count"] > 0)
        out[t] = {"probs": s["sum"][covered] / s["count"][covered, None], "labels": s["labels"][covered], "frames": covered}
    return out


def segment_scores(pred_sequences, true_sequences, background=BACKGROUND_NONE) -> dict[str, float]:
    """MS-TCN Edit and F1@{10,25,50} (0-100) over per-trial sequences."""
    scores = segmental_scores(pred_sequences, true_sequences, background=background)
    return {k: v for k, v in scores.items() if k != "accuracy"}


def split_scores(sequences: dict, predict=None, background=BACKGROUND_NONE) -> dict:
    """Frame and segmental scores of stitched trials; ``predict(probs) -> labels`` (default argmax)."""
    predict = predict or (lambda p: np.argmax(p, axis=1))
    preds = [predict(s["probs"]) for s in sequences.values()]
    trues = [s["labels"] for s in sequences.values()]
    out = frame_scores(np.concatenate(trues), np.concatenate(preds))
    out.update(segment_scores(preds, trues, background))
    return out


# ---------------------------------------------------------------------------- a split's predictions
# ``predictions`` are the workload's ``predict`` output: per window ``probs`` [N,T,C],
# ``labels`` [N,T], ``trial_id``, ``row``, ``ok``, ``video_wh`` [N,2], and with a keypoint
# head ``kp_pred``/``kp_true`` [N,T,K,2] and ``kp_mask`` [N,T,K].

SEGMENT_KEYS = ("edit", "f1@10", "f1@25", "f1@50")


def stitch_predictions(predictions: dict) -> dict[int, dict[str, np.ndarray]]:
    """``stitch_trials`` of a split's window predictions: one sequence per trial."""
    p = predictions
    return stitch_trials(p["trial_id"], p["row"], p["probs"], p["labels"], p["ok"])


def predictions_keypoint_mae_px(predictions: dict, kp_pred=None) -> float:
    """Keypoint MAE (px) of a split's predictions over visible keypoints of decoded windows."""
    p = predictions
    mask = p["kp_mask"] * (p["ok"][:, None, None] > 0)
    return keypoint_mae_px(p["kp_pred"] if kp_pred is None else kp_pred, p["kp_true"], mask, p["video_wh"][:, None, None, :])


def evaluation_scores(predictions: dict) -> dict[str, float]:
    """Argmax scores of one split (checkpoint selection): accuracy, macro F1, ``f1_<class>``
    (NaN when undefined), segmental scores, skipped windows and, with keypoints, their MAE."""
    scores = split_scores(stitch_predictions(predictions))
    out = {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}
    out.update({f"f1_{name}": (np.nan if f is None else f) for name, f in scores["per_class_f1"].items()})
    out.update({k: scores[k] for k in SEGMENT_KEYS})
    out["skipped_samples"] = int((predictions["ok"] == 0).sum())
    if "kp_pred" in predictions:
        out["keypoint_mae_px"] = predictions_keypoint_mae_px(predictions)
    return out


def held_out_metrics(val: dict, test: dict, train_labels) -> tuple[dict, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Test metrics with decision thresholds fitted on validation (applied unchanged), and
    ``{trial_id: (true, predicted)}`` per test trial.

    ``val``/``test`` are the two splits' predictions, ``train_labels`` the training frames'
    labels (for the majority-class baseline).
    """
    train_labels = np.asarray(train_labels).ravel()
    val_seq, test_seq = stitch_predictions(val), stitch_predictions(test)
    thresholds = fit_thresholds(
        np.concatenate([s["probs"] for s in val_seq.values()]), np.concatenate([s["labels"] for s in val_seq.values()])
    )

    def rule(probs):
        return apply_thresholds(probs, thresholds)

    scores = split_scores(test_seq, rule, BACKGROUND_NONE)
    argmax = split_scores(test_seq)
    preds = {i: rule(s["probs"]) for i, s in test_seq.items()}
    trues = {i: s["labels"] for i, s in test_seq.items()}
    test_labels = np.concatenate(list(trues.values()))
    metrics = {
        **{k: scores[k] for k in ("accuracy", "macro_f1", "per_class_f1", "confusion_matrix", *SEGMENT_KEYS)},
        "segment_background": list(BACKGROUND_NONE),
        "segment_note": "Edit and F1@k are MS-TCN's (0-100), scored per test trial with no background "
        "class (rest counts as a segment); segmental_rest_as_background drops rest.",
        "segmental_rest_as_background": segment_scores(list(preds.values()), list(trues.values()), BACKGROUND_REST),
        "majority_class": CLASS_NAMES[majority_class(train_labels)],
        "majority_baseline_macro_f1": majority_baseline_macro_f1(train_labels, test_labels),
        "thresholds": {name: float(t) for name, t in zip(CLASS_NAMES, thresholds)},
        "decision_rule": "argmax_c p_c / t_c, thresholds t_c fitted on the validation split",
        "argmax": {k: argmax[k] for k in ("accuracy", "macro_f1", "per_class_f1", *SEGMENT_KEYS)},
        "val_macro_f1": split_scores(val_seq, rule)["macro_f1"],
        "skipped_samples": int((val["ok"] == 0).sum() + (test["ok"] == 0).sum()),
        "n_test_frames": int(test_labels.size),
        "n_test_trials": len(test_seq),
    }
    if "kp_pred" in test:
        metrics["keypoint_mae_px"] = predictions_keypoint_mae_px(test)
        # For scale: predicting each keypoint's mean position on the validation animals.
        seen = val["kp_mask"][..., None] * (val["ok"][:, None, None, None] > 0)
        mean_position = (val["kp_true"] * seen).sum((0, 1)) / np.maximum(seen.sum((0, 1)), 1)
        metrics["keypoint_baseline_mae_px"] = predictions_keypoint_mae_px(test, np.broadcast_to(mean_position, test["kp_true"].shape))
    return metrics, {i: (trues[i], preds[i]) for i in test_seq}


# ---------------------------------------------------------------------------- cross-validation


COUNT_KEYS = ("skipped_samples", "n_test_frames", "n_test_trials")  # summed over folds


def _ci95_of_defined(values: list) -> dict | None:
    """``ci95`` over the finite values (None where a fold has no score), with their count."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return {**ci95(finite), "n_folds": len(finite)} if finite else None


def summarize_folds(per_fold: list[dict]) -> dict:
    """Cross-validation summary of per-fold test metrics (each as ``final_metrics`` writes it).

    ``summary[metric] = {"mean", "ci95"}`` (t-based 95% CI over folds) for every scalar
    metric, the segmental scores with rest as background and the argmax scores;
    ``summary["per_class_f1"][name]`` adds ``n_folds``. Beside it, the means as top-level
    values (what the report's summary table shows), per-class F1 means, the summed
    confusion matrix and summed counts.
    """
    if not per_fold:
        raise ValueError("no folds to summarise")
    first = per_fold[0]
    scalars = [k for k, v in first.items() if k != "fold" and k not in COUNT_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)]
    summary = {k: _ci95_of_defined([f[k] for f in per_fold]) for k in scalars}
    summary["per_class_f1"] = {name: _ci95_of_defined([f["per_class_f1"][name] for f in per_fold]) for name in CLASS_NAMES}
    summary["segmental_rest_as_background"] = summarize([f["segmental_rest_as_background"] for f in per_fold])
    summary["argmax"] = summarize([{k: v for k, v in f["argmax"].items() if k != "per_class_f1"} for f in per_fold])
    out = {k: (None if summary[k] is None else summary[k]["mean"]) for k in scalars}
    out["per_class_f1"] = {name: (None if s is None else s["mean"]) for name, s in summary["per_class_f1"].items()}
    out.update({k: int(sum(f[k] for f in per_fold)) for k in COUNT_KEYS if k in first})
    out["confusion_matrix"] = np.sum([f["confusion_matrix"] for f in per_fold], axis=0).tolist()
    out["segment_background"] = list(first.get("segment_background", []))
    out["n_folds"] = len(per_fold)
    out["summary"] = summary
    return out
