"""Infant recognition and generation metrics, and the refinement loop's sample selection.

Pure functions on numpy arrays (reference/infant.md §5.3, §6.3, §7.2):

- ``accuracy`` / ``confusion`` / ``per_class_accuracy`` of a recogniser (trace / total);
- ``fid``: ``‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2·sqrtm(Σ1·Σ2))`` on 256-d ST-GCN features, with
  ``np.cov(rowvar=False)``, ``scipy.linalg.sqrtm``, an ``eps·I`` offset on both covariances
  when the square root is not finite, and the imaginary part dropped;
- ``diversity``: mean L2 distance over 200 random index pairs (with replacement);
- ``multimodality``: per class, 20 random same-class pairs; the sum of their L2
  distances / (20 · number of classes);
- ``mean_ci95``: mean ± 1.96 · std / √n over seeds (the original printed 1.96 · var,
  defect 9).

Refinement (§6.3): ``confident`` (softmax argmax = label and max ≥ 0.75),
``feature_ratio`` (within/between-class distances to the training features, min-max
normalised per class, guarded against zero ranges, defect 8), ``select_middle`` and
``select_by_feature_ratio`` (one round's choice, or why the round is skipped), and
``BestGeneration``, the cache of the best-recognised generation epoch, which resets
whether or not a round adds data (defect 6).

Random pair draws are ``np.random.default_rng(seed)`` draws, documented per function, so
a report names the seed it used and reproduces exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.linalg import sqrtm
from scipy.spatial.distance import cdist
from scipy.special import softmax

from affectlab.constants.infant import (
    BETWEEN_WEIGHT,
    CONFIDENCE_THRESHOLD,
    DIVERSITY_PAIRS,
    FID_EPS,
    MULTIMODALITY_PAIRS,
    SELECT_FRACTION,
    WITHIN_WEIGHT,
)

RATIO_EPS = 1e-6  # keeps the within/between ratio finite when a normalised distance is 0

__all__ = [
    "accuracy",
    "confusion",
    "per_class_accuracy",
    "fid",
    "frechet_distance",
    "diversity",
    "multimodality",
    "mean_ci95",
    "confident",
    "feature_ratio",
    "select_middle",
    "select_by_feature_ratio",
    "RoundSelection",
    "BestGeneration",
]


def _labels(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
    y_pred = np.asarray(y_pred).reshape(-1).astype(np.int64)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"need equally many true and predicted labels (>= 1), got {y_true.size} and {y_pred.size}")
    return y_true, y_pred


def _features(features, name: str = "features") -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError(f"{name} hold {int((~np.isfinite(f)).sum())} NaN/inf values")
    return f


# ---------------------------------------------------------------------------- recognition


def confusion(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = true class, columns = predicted."""
    y_true, y_pred = _labels(y_true, y_pred)
    from sklearn.metrics import confusion_matrix  # sklearn imports pandas: only where it is used

    return confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))


def accuracy(y_true, y_pred) -> float:
    """Top-1 accuracy, trace(confusion) / total."""
    y_true, y_pred = _labels(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def per_class_accuracy(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Recall of each class; NaN for a class with no samples."""
    cm = confusion(y_true, y_pred, num_classes)
    totals = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(cm) / totals, np.nan)


# ---------------------------------------------------------------------------- generation (§7.2)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = FID_EPS) -> float:
    """Fréchet distance of two Gaussians, as ACTOR's evaluation computes it."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    diff = mu1 - mu2
    covmean = sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product: retry with eps on both diagonals
        offset = np.eye(len(sigma1)) * eps
        covmean = sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)  # numerical error can leave a tiny imaginary part
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid(features1, features2, eps: float = FID_EPS) -> float:
    """FID between two feature sets (N, D): means and ``np.cov(rowvar=False)`` covariances."""
    stats = []
    for name, f in (("features1", features1), ("features2", features2)):
        f = _features(f, name)
        if len(f) < 2:
            raise ValueError(f"{name}: FID needs at least 2 samples for a covariance, got {len(f)}")
        stats += [f.mean(axis=0), np.cov(f, rowvar=False)]
    return frechet_distance(*stats, eps=eps)


def diversity(features, num_pairs: int = DIVERSITY_PAIRS, seed: int = 0) -> float:
    """Mean L2 distance of ``num_pairs`` random pairs: ``first = rng.integers(0, N, num_pairs)``,
    then ``second`` likewise, ``rng = np.random.default_rng(seed)``. A pair may repeat an index."""
    f = _features(features)
    if len(f) == 0 or num_pairs < 1:
        raise ValueError(f"diversity needs samples and num_pairs >= 1, got {len(f)} and {num_pairs}")
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(f), num_pairs)
    second = rng.integers(0, len(f), num_pairs)
    return float(np.linalg.norm(f[first] - f[second], axis=1).mean())


def multimodality(
    features, labels, num_pairs: int = MULTIMODALITY_PAIRS, seed: int = 0, num_classes: int | None = None
) -> float:
    """Sum over classes of the L2 distances of ``num_pairs`` random same-class pairs, divided
    by ``num_pairs · number of classes``. Classes are ``range(num_classes)`` (each must have
    a sample: the original looped forever otherwise) or, without it, the labels present.
    Draws, class by class in increasing order: ``first = members[rng.integers(0, n_c,
    num_pairs)]``, then ``second`` likewise, ``rng = np.random.default_rng(seed)``."""
    f = _features(features)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(labels) != len(f) or len(f) == 0 or num_pairs < 1:
        raise ValueError(f"need one label per feature row (>= 1) and num_pairs >= 1, got {len(labels)}, {len(f)}, {num_pairs}")
    classes = np.unique(labels) if num_classes is None else np.arange(num_classes)
    missing = [int(c) for c in classes if not (labels == c).any()]
    if missing:
        raise ValueError(f"multimodality: classes {missing} have no samples")
    rng = np.random.default_rng(seed)
    total = 0.0
    for c in classes:
        members = np.flatnonzero(labels == c)
        first = members[rng.integers(0, len(members), num_pairs)]
        second = members[rng.integers(0, len(members), num_pairs)]
        total += np.linalg.norm(f[first] - f[second], axis=1).sum()
    return float(total / (num_pairs * len(classes)))


def mean_ci95(values) -> tuple[float, float]:
    """(mean, half-width) with half-width ``1.96 · std(ddof=1) / √n``: the normal-approximation
    95% interval of the mean over seeds, with the sample (n − 1) standard deviation. One value
    gives a half-width of 0.0 (no spread to estimate; read it as "no interval")."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("mean_ci95 needs at least one value, got none")
    if not np.isfinite(v).all():
        raise ValueError(f"mean_ci95 values must be finite, got {v.tolist()}")
    half = 1.96 * v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else 0.0
    return float(v.mean()), float(half)


# ---------------------------------------------------------------------------- refinement (§6.3)


def confident(logits, labels, threshold: float = CONFIDENCE_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """(keep, score): keep where ``argmax softmax(logits) == label`` and its max ≥ ``threshold``;
    ``score`` is the max softmax of every sample."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"need logits (N, C) and N labels, got {logits.shape} and {labels.shape}")
    probs = softmax(logits, axis=1)
    score = probs.max(axis=1)
    return (probs.argmax(axis=1) == labels) & (score >= threshold), score


def _minmax(v: np.ndarray) -> np.ndarray:
    span = v.max() - v.min()
    return (v - v.min()) / span if span > 0 else np.zeros_like(v)  # one sample, or all equal: 0


def feature_ratio(
    features,
    labels,
    train_features,
    train_labels,
    within_weight: float = WITHIN_WEIGHT,
    between_weight: float = BETWEEN_WEIGHT,
    eps: float = RATIO_EPS,
) -> np.ndarray:
    """Per generated sample: ``(w · within_n) / (b · between_n + eps)``.

    ``within`` / ``between``: mean L2 distance to the training samples of the same / the other
    classes; ``_n``: min-max normalised over the generated samples of the same class (0 when
    the class has one sample or no spread). The original divided by ``between_n`` alone, which
    is 0 at every class's minimum and for single-sample classes (defect 8).
    """
    f, t = _features(features), _features(train_features, "train_features")
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    train_labels = np.asarray(train_labels).reshape(-1).astype(np.int64)
    if len(labels) != len(f) or len(train_labels) != len(t):
        raise ValueError("need one label per feature row, for the generated and the training features")
    distances = cdist(f, t)
    ratio = np.empty(len(f))
    for c in np.unique(labels):
        rows, same = labels == c, train_labels == c
        if not same.any() or same.all():
            raise ValueError(f"class {c}: the training features need samples of this class and of others")
        within = distances[np.ix_(rows, same)].mean(axis=1)
        between = distances[np.ix_(rows, ~same)].mean(axis=1)
        ratio[rows] = within_weight * _minmax(within) / (between_weight * _minmax(between) + eps)
    return ratio


def select_middle(ratio, labels, num_classes: int, fraction: float = SELECT_FRACTION) -> np.ndarray:
    """Indices of the middle ``n = int(fraction · min class count)`` samples of each class when
    sorted by ``ratio`` ascending: ``start = len // 2 − n // 2``, ``end = start + n``."""
    ratio = np.asarray(ratio, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    counts = np.bincount(labels, minlength=num_classes)[:num_classes]
    n = int(fraction * counts.min())
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        ranked = members[np.argsort(ratio[members], kind="stable")]
        start = len(ranked) // 2 - n // 2
        chosen.append(ranked[start : start + n])
    return np.concatenate(chosen).astype(np.int64)


@dataclass(frozen=True)
class RoundSelection:
    """One data-adding round: ``indices`` into the generated set (empty when ``skipped``),
    their ``scores`` (max softmax), the per-class ``survivors`` of the confidence filter."""

    indices: np.ndarray
    scores: np.ndarray
    survivors: np.ndarray
    skipped: bool
    reason: str = ""


def select_by_feature_ratio(
    logits,
    labels,
    features,
    train_features,
    train_labels,
    num_classes: int,
    threshold: float = CONFIDENCE_THRESHOLD,
    fraction: float = SELECT_FRACTION,
) -> RoundSelection:
    """Confidence filter, balance check (skip when any class has ≤ 1 survivor), feature-ratio
    ranking against the training features and middle selection (§6.3 steps 1-4)."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    keep, score = confident(logits, labels, threshold)
    survivors = np.bincount(labels[keep], minlength=num_classes)[:num_classes]
    empty = np.zeros(0, dtype=np.int64)
    if (survivors <= 1).any():
        short = np.flatnonzero(survivors <= 1).tolist()
        return RoundSelection(empty, empty.astype(np.float64), survivors, True, f"classes {short} have <= 1 confident sample")
    kept = np.flatnonzero(keep)
    ratio = feature_ratio(np.asarray(features)[kept], labels[kept], train_features, train_labels)
    indices = kept[select_middle(ratio, labels[kept], num_classes, fraction)]
    return RoundSelection(indices, score[indices], survivors, False)


@dataclass
class BestGeneration:
    """The best-recognised generation epoch since the last data-adding round (§6.2 step 4).

    ``offer`` keeps ``outputs`` when ``accuracy`` beats the best so far; ``take`` returns the
    cached ``(epoch, outputs)`` and resets, used at every round whether it adds data or is
    skipped (the original left a skipped round's best accuracy in place, defect 6).
    """

    max_acc: float = -np.inf
    epoch: int | None = None
    outputs: Any = field(default=None, repr=False)

    def offer(self, accuracy: float, epoch: int, outputs: Any) -> bool:
        if accuracy > self.max_acc:
            self.max_acc, self.epoch, self.outputs = float(accuracy), epoch, outputs
            return True
        return False

    def take(self) -> tuple[int | None, Any]:
        epoch, outputs = self.epoch, self.outputs
        self.max_acc, self.epoch, self.outputs = -np.inf, None, None
        return epoch, outputs
