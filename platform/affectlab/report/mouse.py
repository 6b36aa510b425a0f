"""The mouse behaviour report: summary, per-class F1, confusion matrix and ethograms.

Numbers come straight from the metrics dict the workload computed (the same one written
to ``metrics.json``); this module only draws and formats them.
"""

from __future__ import annotations

import html

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from affectlab.constants.mouse import CLASS_NAMES, FPS
from affectlab.report.html import Section, new_figure, write_report

__all__ = ["confusion_figure", "ethogram_figure", "write_mouse_report"]

# One colour per class, rest in light grey so the behaviours stand out.
CLASS_COLOURS = ("#dddddd", "#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
MAX_ETHOGRAMS = 24


def confusion_figure(matrix):
    """Row-normalised confusion matrix (rows: true class), with frame counts in the cells."""
    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    fig = new_figure(figsize=(6.4, 5.4))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            colour = "white" if share[i, j] > 0.6 else "black"
            ax.text(j, i, f"{share[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES, rotation=35, ha="right")
    ax.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class's frames")
    fig.tight_layout()
    return fig


def ethogram_figure(sequences: list[dict], fps: float = FPS):
    """True vs predicted action timeline, two bands per trial (``{"name", "true", "pred"}``)."""
    sequences = sequences[:MAX_ETHOGRAMS]
    cmap = ListedColormap(CLASS_COLOURS)
    fig = new_figure(figsize=(11, 0.9 * len(sequences) + 0.9))
    axes = fig.subplots(len(sequences), 1, squeeze=False)[:, 0]
    for ax, seq in zip(axes, sequences):
        bands = np.stack([np.asarray(seq["true"]), np.asarray(seq["pred"])])
        seconds = bands.shape[1] / fps
        ax.imshow(bands, aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(CLASS_NAMES) - 0.5,
                  interpolation="nearest", extent=(0, seconds, 1.5, -0.5))  # fmt: skip
        ax.set_yticks([0, 1], ["true", "predicted"], fontsize=7)
        ax.set_title(seq["name"], fontsize=8, loc="left")
        ax.tick_params(axis="x", labelsize=7)
    axes[-1].set_xlabel("seconds from the first annotated frame")
    fig.legend(handles=[Patch(color=c, label=n) for c, n in zip(CLASS_COLOURS, CLASS_NAMES)],
               loc="upper center", ncol=len(CLASS_NAMES), fontsize=8, frameon=False)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (0.9 * len(sequences) + 0.9)))
    return fig


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _with_ci(metrics: dict, key: str, digits: int = 3) -> str:
    """``mean ± ci95`` under cross-validation (``summary``), else the plain value."""
    value = metrics.get(key)
    if value is None:
        return "n/a"
    spread = (metrics.get("summary", {}).get(key) or {}).get("ci95")
    return f"{value:.{digits}f}" + ("" if spread is None else f" ± {spread:.{digits}f}")


def _summary_rows(metrics: dict) -> list[dict]:
    rows = [
        {"metric": "accuracy (frames)", "value": _with_ci(metrics, "accuracy")},
        {"metric": "macro F1", "value": _with_ci(metrics, "macro_f1")},
        {"metric": "majority-class baseline macro F1", "value": _with_ci(metrics, "majority_baseline_macro_f1")},
        {"metric": "macro F1, plain argmax (no thresholds)", "value": _fmt(metrics.get("argmax", {}).get("macro_f1"))},
    ]
    for key in ("edit", "f1@10", "f1@25", "f1@50"):
        rows.append({"metric": f"{key} (MS-TCN, 0-100, rest counted)", "value": _with_ci(metrics, key, 1)})
    if "keypoint_mae_px" in metrics:
        rows.append({"metric": "keypoint MAE (px)", "value": _with_ci(metrics, "keypoint_mae_px", 2)})
    if "keypoint_baseline_mae_px" in metrics:
        rows.append({"metric": "keypoint MAE of the mean validation position (px)", "value": _with_ci(metrics, "keypoint_baseline_mae_px", 2)})
    rows.append({"metric": "skipped samples", "value": str(metrics["skipped_samples"])})
    if "summary" in metrics:
        rows.append({"metric": "folds", "value": f"{metrics['n_folds']} (mean ± t-based 95% CI over folds)"})
    return rows


def write_mouse_report(path, metrics: dict, sequences: list[dict], title: str = "Mouse behaviour recognition"):
    """``report.html``: summary, per-class F1 and thresholds, confusion matrix, ethograms."""
    animals = metrics.get("animals", {})
    intro = "<p>Test animals never appear in training or checkpoint selection. "
    if animals:
        intro += html.escape("; ".join(f"{split}: {', '.join(a)}" for split, a in animals.items())) + ". "
    intro += (
        f"Decision rule: {html.escape(metrics.get('decision_rule', 'argmax'))}. "
        f"Majority class of the training split: {html.escape(str(metrics.get('majority_class', '')))}.</p>"
    )
    per_class = [
        {"class": name, "F1": _fmt(metrics["per_class_f1"][name]),
         "F1 (argmax)": _fmt(metrics.get("argmax", {}).get("per_class_f1", {}).get(name)),
         "threshold": _fmt(metrics.get("thresholds", {}).get(name))}
        for name in CLASS_NAMES
    ]  # fmt: skip
    sections = [
        Section("Test split", html=intro, table=_summary_rows(metrics)),
        Section("Per-class F1 (n/a: class absent from truth and prediction)", table=per_class),
        Section("Confusion matrix", figures=[confusion_figure(metrics["confusion_matrix"])]),
    ]
    if "folds" in metrics:
        rows = [{"fold": f["fold"], "macro F1": _fmt(f["macro_f1"]), "baseline": _fmt(f["majority_baseline_macro_f1"]),
                 "accuracy": _fmt(f["accuracy"]), "edit": f"{f['edit']:.1f}", "F1@50": f"{f['f1@50']:.1f}"}
                for f in metrics["folds"]]  # fmt: skip
        sections.insert(1, Section("Folds", table=rows))
    if sequences:
        note = f'<p class="note">Showing {min(len(sequences), MAX_ETHOGRAMS)} of {len(sequences)} test trials.</p>'
        sections.append(Section("Ethogram: true vs predicted actions per test trial", html=note, figures=[ethogram_figure(sequences)]))
    return write_report(path, title, sections)
