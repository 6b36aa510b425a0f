"""The mouse workload's data on the driver: splits by animal, and the tables of windows
each split reads (``affectlab.data.mouse_windows`` decodes them on Ray Data workers).

Training windows, in this order:

1. **Tiling**: each training trial is cut into ``window``-frame windows every ``stride``
   frames (the last ending on the last annotated frame).
2. **Rare-class oversampling** (``oversample_repeats``): a window that shows a rare class
   in at least 5 frames is repeated up to ``oversample_max`` times, by per-frame presence.
3. **Class weights** (``inverse_frequency_weights``) are computed *after* oversampling,
   from the frames of the windows the loss actually sees each epoch. So the two
   corrections do not stack: whatever oversampling leaves of the imbalance, the weights
   remove, and every class carries the same total loss weight per epoch
   (``weight_c x frames_c = total / C``). Computing the weights before oversampling, as
   the code did, corrected rare classes twice.
4. **Order** (``mixed_order``): every trial's windows are spread evenly through the table,
   so any stretch of it (a Ray Data block is a stretch) mixes all trials and animals in
   proportion instead of holding one trial. The platform loop then reshuffles the rows in
   each worker's seeded local buffer (``MouseConfig.shuffle_buffer`` rows, seed from
   ``cfg.seed`` and the epoch), so each epoch sees every window in another order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from affectlab.constants.mouse import NUM_CLASSES
from affectlab.data.mouse import Trial, group_kfold, group_split
from affectlab.data.mouse_windows import window_items

TrialsById = list[tuple[int, Trial]]  # (trial_id: index in the sorted discovery, trial)


def split_trials(
    trials: list[Trial], fold: int | None, *, cv_folds: int, test_fraction: float, val_fraction: float, seed: int
) -> dict[str, TrialsById]:
    """``{"train", "val", "test": [(trial_id, Trial)]}`` grouped by animal.

    ``fold=None``: one split (``test_fraction`` and ``val_fraction`` of the animals); else
    fold ``fold`` of ``cv_folds`` grouped folds, validation animals carved from its
    training side. ``trial_id`` indexes ``trials`` (the sorted discovery).
    """
    ids = {t: i for i, t in enumerate(trials)}
    if fold is None:
        parts = group_split(trials, test_fraction, val_fraction, seed)
    else:
        train_val, test = group_kfold(trials, cv_folds, seed)[fold]
        parts = {**group_split(train_val, 0.0, val_fraction, seed), "test": test}
    for split, part in parts.items():
        if not part:
            raise ValueError(f"the {split} split has no trials; use more animals or other fractions")
    return {split: [(ids[t], t) for t in part] for split, part in parts.items()}


def class_counts(labels: list[np.ndarray]) -> np.ndarray:
    """Frames per merged class over a list of label arrays."""
    return np.bincount(np.concatenate(labels), minlength=NUM_CLASSES)[:NUM_CLASSES].astype(np.int64)


def inverse_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """``total / (count * C)`` per class (the reference's weighting); 1 for absent classes."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.ones(len(counts))
    present = counts > 0
    weights[present] = counts.sum() / (counts[present] * len(counts))
    return weights.astype(np.float32)


def oversample_repeats(window_labels: list[np.ndarray], counts: np.ndarray, max_boost: float, min_frames: int = 5) -> np.ndarray:
    """How often each training window is repeated, by the rare classes it actually shows.

    A window showing class ``c`` in at least ``min_frames`` frames is repeated
    ``round(min(max_boost, 1 / (C * f_c)))`` times, ``f_c`` being the per-frame frequency of
    ``c`` in the training split (the largest over its classes; classes at or above the
    uniform share ``1/C`` give 1). The original replicated trials by their *dominant*
    class, which almost never fires for brief pain behaviours (defect 21).
    """
    freq = np.asarray(counts, dtype=np.float64) / max(1, int(np.sum(counts)))
    boost = np.ones(len(freq))
    present = freq > 0
    boost[present] = np.clip(1.0 / (len(freq) * freq[present]), 1.0, max(1.0, max_boost))
    repeats = np.ones(len(window_labels), dtype=np.int64)
    for i, labels in enumerate(window_labels):
        shown = np.flatnonzero(np.bincount(labels, minlength=len(freq)) >= min_frames)
        if len(shown):
            repeats[i] = int(round(boost[shown].max()))
    return repeats


def mixed_order(groups: Sequence[int], seed: int) -> np.ndarray:
    """An order of items in which every stretch mixes the groups (trials) in proportion.

    Each group's items are permuted; item ``k`` of a group of ``n`` is placed at
    ``(k + u) / n``, with ``u ~ U(0, 1)`` drawn once per group, and the items are sorted by
    place. Every group is thus spread evenly over the whole order: ``b`` consecutive items
    hold about ``b n / N`` of a group of ``n`` (copies of an oversampled window land far
    apart too).
    """
    rng = np.random.default_rng(seed)
    groups = np.asarray(groups)
    place = np.empty(len(groups))
    for group in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == group))
        place[members] = (np.arange(len(members)) + rng.uniform()) / len(members)
    return np.argsort(place, kind="stable")


def training_windows(
    part: TrialsById, labels: list[np.ndarray], window: int, stride: int, *,
    oversample: bool, oversample_max: float, class_weights: bool, seed: int,
) -> tuple[list[dict], np.ndarray | None]:  # fmt: skip
    """The training split's window table (tiled, oversampled, mixed) and its class weights
    (computed from the sampled windows' frames; None without ``class_weights``)."""
    items = window_items([t for _, t in part], [i for i, _ in part], labels, window, stride)
    if oversample:
        repeats = oversample_repeats([it["labels"] for it in items], class_counts(labels), oversample_max)
        items = [it for it, r in zip(items, repeats) for _ in range(r)]
    weights = inverse_frequency_weights(class_counts([it["labels"] for it in items])) if class_weights else None
    order = mixed_order([it["trial_id"] for it in items], seed)
    return [items[i] for i in order], weights


def evaluation_windows(part: TrialsById, labels: list[np.ndarray], window: int) -> list[dict]:
    """A validation/test split tiled by ``window``-frame windows with half overlap."""
    return window_items([t for _, t in part], [i for i, _ in part], labels, window, max(1, window // 2))
