"""Summaries across folds, seeds or runs: one convention for every workload.

Mean with a 95% confidence interval from Student's t (``t_{0.975, n-1} · std(ddof=1) /
√n``), named ``ci95`` in every output, so pain, mouse and the rest report alike.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def ci95(values) -> dict:
    """Mean and 95% CI half-width across folds: t_{0.975, n-1} * std(ddof=1) / sqrt(n).

    The exact t quantile equals the reference's 2.776 at n = 5. With a single value the
    spread is unknown; the half-width is reported as 0.0 (not NaN) so results stay
    JSON-serialisable — read it as "no interval", not "no uncertainty".
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    n = values.size
    if n == 0:
        raise ValueError("ci95 needs at least one value, got none")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"ci95 values must be finite, got {values.tolist()}")
    mean = float(np.mean(values))
    if n == 1:
        return {"mean": mean, "ci95": 0.0}
    half = stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / np.sqrt(n)
    return {"mean": mean, "ci95": float(half)}


def _summarize(values: list, name: str):
    """ci95 over a list of numbers, or recursively over a list of same-keyed dicts.

    Undefined values (``None``) are left out; ``n`` says how many values were summarised.
    """
    if any(isinstance(v, dict) for v in values):
        keys = list(values[0])
        for v in values:
            if not isinstance(v, dict) or list(v) != keys:
                raise ValueError(f"folds disagree on the keys of {name!r}: {keys} vs {v!r}")
        return {k: _summarize([v[k] for v in values], f"{name}.{k}") for k in keys}
    defined = [v for v in values if v is not None]
    if not defined:
        return {"mean": None, "ci95": None, "n": 0}
    return {**ci95(defined), "n": len(defined)}


def summarize(folds: list[dict], skip: tuple[str, ...] = ()) -> dict:
    """``ci95`` of every metric of same-keyed (possibly nested) per-fold dicts.

    ``summary["auroc"]["1"] == {"mean": ..., "ci95": ..., "n": ...}``; keys in ``skip`` (fold
    indices, fitted parameters) are left out.
    """
    if not folds:
        raise ValueError("summarize needs at least one fold, got none")
    keys = [k for k in folds[0] if k not in skip]
    for i, fold in enumerate(folds):
        missing = [k for k in keys if k not in fold]
        if missing:
            raise ValueError(f"fold {i} is missing metric(s) {missing}")
    return {k: _summarize([fold[k] for fold in folds], k) for k in keys}
