"""The infant report: recogniser accuracy with vs without synthetic data (per class,
confusion matrices), the refinement rounds (accepted samples per class per round,
generated-sample accuracy over epochs), t-SNE of real vs accepted synthetic features per
round, and skeleton animations of generated samples per class.

Numbers come from the dicts the job writes to ``metrics.json``; this module draws them.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from affectlab.report.html import Section, new_figure, write_report

__all__ = ["write_infant_report", "write_infant_cv_report", "tsne_2d"]

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def _pm(stat: dict | None, digits: int = 3) -> str:
    if not stat:
        return "n/a"
    return f"{stat['mean']:.{digits}f} ± {stat['ci95']:.{digits}f}"


def tsne_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE (scikit-learn) of (N, D) features; perplexity 30 as the original, lowered
    for small sets (it must stay below N)."""
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 3:
        return np.zeros((n, 2))
    perplexity = min(30.0, max(1.0, (n - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, learning_rate=200.0, init="pca", random_state=seed).fit_transform(features)


def confusion_figure(matrices: dict[str, np.ndarray], names: list[str]):
    """Row-normalised confusion matrices side by side (rows: true class)."""
    fig = new_figure(figsize=(5.2 * len(matrices), 4.6))
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    for ax, (title, counts) in zip(axes, matrices.items()):
        counts = np.asarray(counts, dtype=np.int64)
        totals = counts.sum(axis=1, keepdims=True)
        share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{share[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.6 else "black")  # fmt: skip
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
    fig.tight_layout()
    return fig


def per_class_figure(per_class: dict[str, dict[str, float]], names: list[str]):
    fig = new_figure(figsize=(7.5, 3.8))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(per_class))
    for k, (label, values) in enumerate(per_class.items()):
        ax.bar(np.arange(len(names)) + k * width, [values.get(n) or 0.0 for n in names], width, label=label, color=COLOURS[k])
    ax.set_xticks(np.arange(len(names)) + width * (len(per_class) - 1) / 2, names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy (mean over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def rounds_figure(rounds: list[dict], names: list[str]):
    """Accepted samples per class, stacked, one bar per round (skipped rounds empty)."""
    fig = new_figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot()
    bottom = np.zeros(len(rounds))
    labels = [f"{r['round']} (ep {r['epoch']})" for r in rounds]
    for c, name in enumerate(names):
        counts = np.array([r["accepted_per_class"].get(name, 0) for r in rounds], dtype=float)
        ax.bar(labels, counts, bottom=bottom, label=name, color=COLOURS[c % len(COLOURS)])
        bottom += counts
    ax.set_xlabel("round (refinement epoch)")
    ax.set_ylabel("samples accepted")
    ax.legend(fontsize=8, ncol=len(names))
    fig.tight_layout()
    return fig


def history_figure(history: list[dict], rounds: list[dict], names: list[str]):
    """Recogniser accuracy on the generated samples (all and per class) and on real
    validation clips over the refinement epochs; dashed lines mark rounds that added data."""
    fig = new_figure(figsize=(8.5, 4.0))
    ax = fig.add_subplot()
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["accuracy_gen"] for h in history], "k-o", lw=2, ms=4, label="generated, all classes")
    for c, name in enumerate(names):
        values = [h["accuracy_gen_per_class"].get(name) for h in history]
        ax.plot(epochs, [np.nan if v is None else v for v in values], "-", lw=1, color=COLOURS[c % len(COLOURS)], label=f"generated {name}")
    ax.plot(epochs, [h["val_accuracy"] for h in history], "k--", lw=1.5, label="real validation")
    for r in rounds:
        if not r["skipped"]:
            ax.axvline(r["epoch"], color="grey", ls=":", lw=1)
    ax.set_xlabel("refinement epoch")
    ax.set_ylabel("recogniser accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    return fig


def tsne_figure(features: dict[str, np.ndarray], rounds: list[dict], names: list[str], seed: int = 0):
    """Per round that added data: real training features (dots) and the accepted synthetic
    ones (stars), coloured by class, in one t-SNE embedding per round."""
    added = [r for r in rounds if not r["skipped"] and f"round{r['round']}/real_feat" in features]
    if not added:
        return None
    cols = min(3, len(added))
    rows = int(np.ceil(len(added) / cols))
    fig = new_figure(figsize=(4.2 * cols, 3.9 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax, r in zip(axes, added):
        k = r["round"]
        real, syn = features[f"round{k}/real_feat"], features[f"round{k}/synthetic_feat"]
        ry, sy = features[f"round{k}/real_y"], features[f"round{k}/synthetic_y"]
        xy = tsne_2d(np.concatenate([real, syn]), seed)
        for c, name in enumerate(names):
            colour = COLOURS[c % len(COLOURS)]
            ax.scatter(*xy[: len(real)][ry == c].T, s=10, alpha=0.5, color=colour, label=f"real {name}")
            ax.scatter(*xy[len(real) :][sy == c].T, s=70, marker="*", edgecolor="black", lw=0.4, color=colour, label=f"synthetic {name}")
        ax.set_title(f"round {k} (epoch {r['epoch']}): {len(syn)} accepted", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(added) :]:
        ax.axis("off")
    axes[0].legend(fontsize=6, ncol=2, loc="best")
    fig.tight_layout()
    return fig


def _gif_uri(path: Path) -> str:
    return "data:image/gif;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _recognition_sections(metrics: dict, names: list[str]) -> list[Section]:
    acc = metrics["recognizer_test_accuracy"]
    seeds = metrics.get("recognizer_test_accuracy_per_seed", {})
    rows = [
        {"recogniser": "real data only", "test accuracy (mean ± 95% CI)": _pm(acc["real_only"]),
         "per seed": ", ".join(f"{v:.3f}" for v in seeds.get("real_only", []))},
        {"recogniser": "real + accepted synthetic", "test accuracy (mean ± 95% CI)": _pm(acc["with_synthetic"]),
         "per seed": ", ".join(f"{v:.3f}" for v in seeds.get("with_synthetic", []))},
        {"recogniser": "majority class", "test accuracy (mean ± 95% CI)": f"{metrics['majority_baseline_accuracy']:.3f}", "per seed": ""},
    ]  # fmt: skip
    note = (f'<p class="note">Held-out real test set of {metrics.get("n_test", "?")} clips; {metrics.get("n_synthetic", "?")} '
            "accepted synthetic samples. Seed 0 of each recipe is the stage's checkpoint; later seeds retrain it with the "
            "recipe in its config.json. CI: 1.96 · std / √n over the seeds.</p>")  # fmt: skip
    sections = [Section("Recogniser accuracy: with vs without synthetic data", note, table=rows)]
    figures = []
    if metrics.get("recognizer_test_accuracy_per_class"):
        labels = {"real_only": "real only", "with_synthetic": "with synthetic"}
        figures.append(per_class_figure({labels[k]: v for k, v in metrics["recognizer_test_accuracy_per_class"].items()}, names))
    if metrics.get("confusion"):
        figures.append(confusion_figure({"real only (all seeds)": metrics["confusion"]["real_only"],
                                         "with synthetic (all seeds)": metrics["confusion"]["with_synthetic"]}, names))  # fmt: skip
    if figures:
        sections.append(Section("Per class and confusion matrices", figures=figures))
    return sections


def _generation_section(metrics: dict, names: list[str]) -> Section:
    g, ci = metrics["generation"], metrics.get("generation_ci95", {})
    shown = [
        ("fid_test", "FID(generated, real test)"), ("fid_noise_test", "FID(noise sequences, real test)"),
        ("fid_train_test", "FID(real train, real test): the floor"), ("accuracy_gen", "accuracy on generated samples"),
        ("accuracy_gen_shuffled_labels", "accuracy on generated samples vs shuffled labels (chance)"),
        ("accuracy_real_test", "accuracy on the real test set"), ("diversity", "diversity (generated)"),
        ("diversity_real_test", "diversity (real test)"), ("multimodality", "multimodality (generated)"),
        ("multimodality_real_test", "multimodality (real test)"),
    ]  # fmt: skip
    rows = [{"metric": label, "value": f"{g[k]:.3f}" + (f" ± {ci[k]:.3f}" if k in ci else "")} for k, label in shown if k in g]
    per_class = metrics.get("generation_accuracy_per_class", {})
    if per_class:
        rows.append({"metric": "accuracy on generated samples, per class",
                     "value": ", ".join(f"{n} {per_class[n]:.2f}" for n in names if n in per_class)})  # fmt: skip
    note = (f'<p class="note">ACTOR protocol: {metrics.get("generation_seeds", "?")} generated sets with the real test set\'s '
            "labels and durations, features of the recogniser trained on real data only; mean ± 95% CI over the sets.</p>")
    return Section("Generation metrics", note, table=rows)


def _refinement_sections(refinement: dict, features: dict, names: list[str]) -> list[Section]:
    rounds = refinement["rounds"]
    rows = [
        {"round": r["round"], "epoch": r["epoch"], "best generation epoch": r["generation_epoch"],
         "its accuracy": r["accuracy_gen"], "confident survivors": ", ".join(f"{n} {r['survivors_per_class'][n]}" for n in names),
         "accepted": "skipped: " + r["reason"] if r["skipped"] else ", ".join(f"{n} {r['accepted_per_class'][n]}" for n in names),
         "synthetic total": r["synthetic_total"]}
        for r in rounds
    ]  # fmt: skip
    init = refinement.get("init", {})
    note = "".join(
        f'<p class="note">{html.escape(k)} started from {html.escape(v["path"])} ({v["tensors"]} tensors, sha256 {v["fingerprint"][:12]}…)</p>'
        for k, v in init.items()
    )
    figures = [rounds_figure(rounds, names), history_figure(refinement["history"], rounds, names)] if rounds else []
    sections = [Section("Refinement rounds", note, figures=figures, table=rows)]
    tsne = tsne_figure(features, rounds, names)
    if tsne is not None:
        sections.append(Section("t-SNE of real vs accepted synthetic features, per round", figures=[tsne]))
    return sections


def write_infant_report(
    path,
    metrics: dict,
    names: list[str],
    refinement: dict | None = None,
    round_features: dict | None = None,
    animations: dict[str, Path] | None = None,
    notes: list[str] | None = None,
    title: str = "Infant action recognition and generation (InfAGenC)",
) -> Path:
    """Write ``report.html`` from whatever the run produced (a full run has every section)."""
    sections = []
    if "recognizer_test_accuracy" in metrics:
        sections += _recognition_sections(metrics, names)
    if "generation" in metrics:
        sections.append(_generation_section(metrics, names))
    if refinement is not None:
        sections += _refinement_sections(refinement, round_features or {}, names)
    if animations:
        cells = "".join(
            f'<figure style="display:inline-block;margin:.5em"><img src="{_gif_uri(p)}" alt="{html.escape(n)}" '
            f'style="width:192px"><figcaption>{html.escape(n)}</figcaption></figure>'
            for n, p in animations.items()
        )
        sections.append(Section("Generated samples, one per class (skeleton animations)", f"<div>{cells}</div>"))
    if metrics.get("stage_metrics"):
        sections.append(Section("Stage checkpoints", table=[{"stage": k, **v} for k, v in metrics["stage_metrics"].items()]))
    if notes:
        sections.append(Section("Notes", "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)))
    return write_report(path, title, sections)


def write_infant_cv_report(path, cv: dict, names: list[str], confusion: np.ndarray | None = None, notes: list[str] | None = None) -> Path:
    """The recogniser's grouped k-fold cross-validation: per fold, the mean ± CI, the pooled confusion."""
    summary = cv["summary"]["test_accuracy"]
    html_note = (f"<p>Test accuracy over {len(cv['folds'])} folds: <b>{_pm(summary)}</b> "
                 f"(majority class {cv['summary']['majority_baseline_accuracy']:.3f}).</p>")  # fmt: skip
    sections = [Section("Grouped cross-validation of the recogniser", html_note, table=cv["folds"])]
    if confusion is not None:
        sections.append(Section("Confusion matrix (every fold's held-out clips)", figures=[confusion_figure({"all folds": confusion}, names)]))
    if notes:
        sections.append(Section("Notes", "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)))
    return write_report(path, "Infant recogniser: grouped k-fold CV", sections)
