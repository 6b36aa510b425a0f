"""Pain (PSPI) metrics as the ViTPain paper reports them.

Pure functions on numpy arrays of PSPI values on the 0-16 scale (predictions already
multiplied back from the model's 0-1 output). Definitions follow
`reference/pain.md` section 7.2 (the original `scripts/evaluate_unbc.py`), with two
deliberate differences, both noted where they apply:

- the 95% CI uses the exact Student-t quantile for every n (the original used 2.776 at
  n = 5 and 1.96 otherwise, which is too narrow for small n other than 5);
- which predictions the F1 thresholds are calibrated on is the caller's choice: pass
  un-augmented train or inner-validation predictions, never the test fold (defect 7).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

from affectlab.constants.pain import PSPI_THRESHOLDS
from affectlab.metrics.summary import ci95, summarize

DEFAULT_GRID = np.linspace(0, 6, 200)  # the original's calibration grid, PSPI units

__all__ = [
    "PSPI_THRESHOLDS",
    "mae",
    "pearson",
    "auroc",
    "calibrate_threshold",
    "f1_at",
    "calibrated_f1",
    "ci95",
    "fold_metrics",
    "summarize_folds",
]


def _check(pred, target) -> tuple[np.ndarray, np.ndarray]:
    """Flatten to float arrays and fail loudly on mismatched or non-finite input.

    A silent NaN would turn every downstream metric into NaN (or, worse, into a
    plausible-looking number after sklearn drops it), so it is rejected here.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    target = np.asarray(target, dtype=np.float64).reshape(-1)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same length, got {pred.size} predictions "
            f"and {target.size} targets"
        )
    if not np.all(np.isfinite(pred)):
        bad = int(np.count_nonzero(~np.isfinite(pred)))
        raise ValueError(f"pred must be finite, found {bad} NaN/inf value(s) of {pred.size}")
    if not np.all(np.isfinite(target)):
        bad = int(np.count_nonzero(~np.isfinite(target)))
        raise ValueError(f"target must be finite, found {bad} NaN/inf value(s) of {target.size}")
    return pred, target


def mae(pred, target) -> float:
    """Mean absolute error in PSPI units."""
    pred, target = _check(pred, target)
    if pred.size == 0:
        raise ValueError("mae needs at least one prediction, got none")
    return float(np.mean(np.abs(pred - target)))


def pearson(pred, target) -> float:
    """Pearson correlation; 0.0 where it is undefined, as the reference does.

    Undefined means fewer than 2 points, a constant side (e.g. a collapsed model that
    predicts one value), or a non-finite result.
    """
    pred, target = _check(pred, target)
    if pred.size < 2 or np.ptp(pred) == 0 or np.ptp(target) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # near-constant input warns; the check below decides
        r = stats.pearsonr(pred, target)[0]
    return float(r) if np.isfinite(r) else 0.0


def auroc(pred, target, threshold) -> float:
    """Binary AUROC of continuous predictions against `target >= threshold`.

    Returns 0.0 when only one class is present. That is the reference's convention
    (AUROC is undefined there); it drags a fold mean down, so reports say when it
    happened rather than hiding it.
    """
    pred, target = _check(pred, target)
    labels = target >= threshold
    if labels.all() or not labels.any():
        return 0.0
    from sklearn.metrics import roc_auc_score  # sklearn imports pandas: only where it is used

    return float(roc_auc_score(labels, pred))


def f1_at(pred, target, threshold, decision_threshold) -> float:
    """F1 of `pred >= decision_threshold` against `target >= threshold` (0 if undefined)."""
    pred, target = _check(pred, target)
    from sklearn.metrics import f1_score

    return float(f1_score(target >= threshold, pred >= decision_threshold, zero_division=0))


def calibrate_threshold(pred, target, threshold, grid=None) -> float | None:
    """Decision threshold on `grid` that maximises F1 at PSPI >= `threshold`.

    Regression outputs shrink toward the mean, so `pred >= threshold` under-detects
    pain; the reference picks the cut-off on training predictions instead. Ties go to
    the smallest maximising grid value (np.argmax returns the first). ``None`` when the
    calibration side has no frame at PSPI >= `threshold`: every cut-off scores F1 = 0
    there, so no threshold is better than another (it is undefined, not 0).
    """
    pred, target = _check(pred, target)
    grid = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64).reshape(-1)
    if grid.size == 0:
        raise ValueError("calibration grid is empty")
    labels = target >= threshold
    if not labels.any():
        return None
    from sklearn.metrics import f1_score

    scores = [f1_score(labels, pred >= thr, zero_division=0) for thr in grid]
    return float(grid[int(np.argmax(scores))])


def calibrated_f1(train_pred, train_target, test_pred, test_target) -> tuple[dict, dict]:
    """Train-calibrated F1 at PSPI >= 1, 2, 3 and their macro mean (the headline metric).

    Thresholds are fitted on the train-side predictions and applied unchanged to the
    test fold, so the test fold never influences its own score.

    Returns `(f1s, thresholds)`: f1s keyed "1", "2", "3", "macro"; thresholds keyed
    "1", "2", "3". Where the train side has no frame at PSPI >= t, the threshold and F1@t
    are ``None`` and the macro mean is over the defined ones, as the original evaluator
    skips them (``None`` if none is defined).
    """
    train_pred, train_target = _check(train_pred, train_target)
    test_pred, test_target = _check(test_pred, test_target)
    f1s, thresholds = {}, {}
    for t in PSPI_THRESHOLDS:
        thr = calibrate_threshold(train_pred, train_target, t)
        thresholds[str(t)] = thr
        f1s[str(t)] = None if thr is None else f1_at(test_pred, test_target, t, thr)
    defined = [f1s[str(t)] for t in PSPI_THRESHOLDS if f1s[str(t)] is not None]
    f1s["macro"] = float(np.mean(defined)) if defined else None
    return f1s, thresholds


def undefined_notes(fold_metrics: dict) -> list[str]:
    """Human-readable notes on the thresholds a fold could not calibrate."""
    missing = [t for t, thr in fold_metrics["thresholds"].items() if thr is None]
    if not missing:
        return []
    at = ", ".join(f"PSPI >= {t}" for t in missing)
    return [f"no calibration frame at {at}: the calibrated threshold and F1 there are undefined (null) and left out of the macro F1"]


def fold_metrics(test_pred, test_target, train_pred, train_target) -> dict:
    """Every per-fold number the pain CV reports, as plain floats (JSON-ready)."""
    test_pred, test_target = _check(test_pred, test_target)
    f1s, thresholds = calibrated_f1(train_pred, train_target, test_pred, test_target)
    return {
        "mae": mae(test_pred, test_target),
        "pearson": pearson(test_pred, test_target),
        "auroc": {str(t): auroc(test_pred, test_target, t) for t in PSPI_THRESHOLDS},
        "f1_train_calibrated": f1s,
        "thresholds": thresholds,
    }


_NOT_SUMMARISED = ("fold", "thresholds")  # identifiers and fitted parameters, not scores


def summarize_folds(folds: list[dict]) -> dict:
    """Mean ± 95% CI of each fold metric, keeping the nesting of `fold_metrics`.

    `summary["auroc"]["1"] == {"mean": ..., "ci95": ...}`. The `fold` index and the
    fitted `thresholds` are skipped.
    """
    return summarize(folds, skip=_NOT_SUMMARISED)
