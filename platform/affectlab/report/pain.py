"""The pain cross-validation report: per-fold table, scatter plots and ROC curves.

Inputs are exactly what `affectlab.metrics.pain` returns, so the numbers in the report
are the numbers in `metrics.json`; this module only draws and formats them.
"""

from __future__ import annotations

import html
import math

import numpy as np
from sklearn.metrics import roc_curve

from affectlab.constants.pain import PSPI_MAX, PSPI_THRESHOLDS
from affectlab.report.html import Section, new_figure, write_report

__all__ = ["cv_table_rows", "scatter_figure", "roc_figure", "write_cv_report", "write_run_report"]



def _fmt(x: float | None) -> str:
    return "undefined" if x is None else f"{x:.3f}"


def _fmt_ci(stat: dict) -> str:
    if stat["mean"] is None:
        return "undefined"
    return f"{stat['mean']:.3f} ± {stat['ci95']:.3f}"


def _fold_id(fold: dict, index: int):
    return fold.get("fold", index)


def cv_table_rows(folds: list[dict], summary: dict) -> list[dict]:
    """One row per fold plus a final "mean ± ci95" row, values formatted to 3 decimals."""
    ts = [str(t) for t in PSPI_THRESHOLDS]
    rows = []
    for i, f in enumerate(folds):
        row = {"fold": str(_fold_id(f, i)), "MAE": _fmt(f["mae"]), "Pearson": _fmt(f["pearson"])}
        row.update({f"AUROC@{t}": _fmt(f["auroc"][t]) for t in ts})
        row.update({f"F1@{t}": _fmt(f["f1_train_calibrated"][t]) for t in ts})
        row["F1 macro"] = _fmt(f["f1_train_calibrated"]["macro"])
        rows.append(row)
    s = summary
    row = {"fold": "mean ± ci95", "MAE": _fmt_ci(s["mae"]), "Pearson": _fmt_ci(s["pearson"])}
    row.update({f"AUROC@{t}": _fmt_ci(s["auroc"][t]) for t in ts})
    row.update({f"F1@{t}": _fmt_ci(s["f1_train_calibrated"][t]) for t in ts})
    row["F1 macro"] = _fmt_ci(s["f1_train_calibrated"]["macro"])
    rows.append(row)
    return rows


def scatter_figure(folds: list[dict], predictions: list[dict], label: str = "fold"):
    """Predicted vs true PSPI, one small panel per fold (or split), with the identity line."""
    n = len(folds)
    ncols = min(n, 5)
    nrows = math.ceil(n / ncols)
    fig = new_figure(figsize=(3.2 * ncols, 3.2 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i, (fold, p) in enumerate(zip(folds, predictions)):
        ax = axes[i]
        target, pred = np.asarray(p["test_target"]), np.asarray(p["test_pred"])
        # Targets are integers: a little jitter keeps stacked points visible.
        jitter = np.random.default_rng(i).uniform(-0.15, 0.15, size=target.shape)
        ax.scatter(target + jitter, pred, s=6, alpha=0.35, rasterized=True)
        hi = max(PSPI_MAX, float(np.max(pred, initial=0.0)))
        ax.plot([0, hi], [0, hi], "k--", lw=1, label="identity")
        ax.set(xlim=(-0.5, hi), ylim=(min(-0.5, float(np.min(pred, initial=0.0))), hi))
        ax.set_title(f"{label} {_fold_id(fold, i)}: r = {fold['pearson']:.3f}", fontsize=10)
        ax.set_xlabel("true PSPI")
        if i % ncols == 0:
            ax.set_ylabel("predicted PSPI")
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def roc_figure(folds: list[dict], predictions: list[dict]):
    """ROC at PSPI >= 1, 2, 3 (one panel each, one curve per fold).

    Returns `(fig, skipped)`: `skipped` lists `(fold, threshold)` pairs whose test fold
    has a single class at that threshold, so there is no curve to draw.
    """
    fig = new_figure(figsize=(4.0 * len(PSPI_THRESHOLDS), 4.0))
    axes = fig.subplots(1, len(PSPI_THRESHOLDS), squeeze=False).ravel()
    skipped = []
    for ax, t in zip(axes, PSPI_THRESHOLDS):
        for i, (fold, p) in enumerate(zip(folds, predictions)):
            k = _fold_id(fold, i)
            labels = np.asarray(p["test_target"]) >= t
            if labels.all() or not labels.any():
                skipped.append((k, t))
                ax.plot([], [], " ", label=f"fold {k}: one class, skipped")
                continue
            fpr, tpr, _ = roc_curve(labels, np.asarray(p["test_pred"]))
            # colour by fold index so a fold keeps its colour when a panel skips one
            label = f"fold {k} (AUC {fold['auroc'][str(t)]:.3f})"
            ax.plot(fpr, tpr, lw=1.2, color=f"C{i % 10}", label=label)
        ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", title=f"PSPI ≥ {t}")
        ax.legend(loc="lower right", fontsize=7)
    axes[0].set_ylabel("true positive rate")
    fig.tight_layout()
    return fig, skipped


def write_cv_report(
    path,
    folds: list[dict],
    summary: dict,
    predictions: list[dict],
    title: str = "Pain cross-validation report",
    notes: list[str] = (),
):
    """Write the cross-validation `report.html` and return its path.

    `folds` are `fold_metrics` dicts with a `"fold"` key, `summary` is
    `summarize_folds(folds)`, and `predictions[i]` holds fold i's `test_pred` and
    `test_target` arrays (PSPI 0-16).
    """
    if len(folds) != len(predictions):
        raise ValueError(
            f"got {len(folds)} fold metric dicts but {len(predictions)} prediction dicts"
        )
    if not folds:
        raise ValueError("write_cv_report needs at least one fold")
    for i, p in enumerate(predictions):
        missing = [k for k in ("test_pred", "test_target") if k not in p]
        if missing:
            raise ValueError(f"predictions[{i}] is missing {missing}")

    roc_fig, skipped = roc_figure(folds, predictions)
    roc_note = ""
    if skipped:
        items = ", ".join(f"fold {k} at PSPI ≥ {t}" for k, t in skipped)
        roc_note = (
            f'<p class="note">No ROC curve (single class in the test fold): '
            f"{html.escape(items)}. Their AUROC is reported as 0.0, the reference's "
            "convention, and counts in the mean.</p>"
        )
    n = len(folds)
    about = (
        f'<p class="note">{n}-fold subject-wise cross-validation. F1 thresholds are fitted '
        "on train-side predictions (grid 0–6) and applied to the test fold. Intervals are "
        "95% Student-t half-widths across folds.</p>"
    ) + "".join(f'<p class="note">{html.escape(note)}</p>' for note in notes)
    sections = [
        Section("Per-fold metrics", html=about, table=cv_table_rows(folds, summary)),
        Section("Predicted vs true PSPI", figures=[scatter_figure(folds, predictions)]),
        Section("ROC curves", html=roc_note, figures=[roc_fig]),
    ]
    return write_report(path, title, sections)


def write_run_report(path, title: str, metrics: dict, predictions: dict[str, dict]) -> "Path":
    """Report of one run (pretraining, production): a metrics table and, per evaluated
    split, predicted vs true PSPI. ``predictions`` maps split → arrays ``pred``, ``target``."""
    splits = list(predictions)
    panels = [{"fold": s, "pearson": metrics.get(f"{s}_pearson", float("nan"))} for s in splits]
    arrays = [{"test_pred": predictions[s]["pred"], "test_target": predictions[s]["target"]} for s in splits]
    rows = [{"metric": k, "value": _fmt(v) if isinstance(v, float) else str(v)} for k, v in sorted(metrics.items())]
    sections = [
        Section("Predicted vs true PSPI", figures=[scatter_figure(panels, arrays, label="split")]),
        Section("Metrics", table=rows),
    ]
    return write_report(path, title, sections)
