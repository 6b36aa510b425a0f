"""The sweep report: metric per trial, parameter importances, metric against each parameter.

Importance here is deliberately simple and stated in the report: for a numeric parameter,
|Spearman ρ| between its value and the metric; for a choice of strings or booleans, the
correlation ratio η (how much of the metric's variance the choice explains). Both lie in
[0, 1]. With a handful of trials they are indications, not tests; Optuna's fANOVA needs
far more trials than a laptop sweep runs.
"""

from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator, NullFormatter
from scipy.stats import spearmanr

from affectlab.report.html import Section, new_figure, write_report

__all__ = ["parameter_importance", "write_sweep_report"]

STATUS_STYLE = {  # marker, colour
    "COMPLETED": ("o", "tab:blue"),
    "EARLY_STOPPED": ("x", "tab:orange"),
    "ERROR": ("s", "tab:red"),
    "NO_RESULT": ("s", "tab:gray"),
}


def _is_numeric(values: pd.Series) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) for v in values)


def _scored(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Trials with a finite metric (early-stopped ones at the epoch they were stopped)."""
    values = pd.to_numeric(trials[metric], errors="coerce")
    return trials[np.isfinite(values)].assign(**{metric: values})


def parameter_importance(trials: pd.DataFrame, params: list[str], metric: str) -> dict[str, float]:
    """|Spearman ρ| (numeric) or η (categorical) of each parameter with the metric; NaN
    when fewer than 3 trials have a metric or the parameter never varied."""
    scored = _scored(trials, metric)
    out = {}
    for name in params:
        x, y = scored[name], scored[metric].to_numpy(float)
        if len(scored) < 3 or x.nunique() < 2:
            out[name] = float("nan")
        elif _is_numeric(x):
            out[name] = float(abs(spearmanr(x.to_numpy(float), y).statistic))
        else:
            total = ((y - y.mean()) ** 2).sum()
            between = sum(len(g) * (g.mean() - y.mean()) ** 2 for _, g in pd.Series(y).groupby(x.astype(str).to_numpy()))
            out[name] = float(np.sqrt(between / total)) if total > 0 else float("nan")
    return out


def metric_by_trial_figure(trials: pd.DataFrame, metric: str, mode: str):
    fig = new_figure((7, 4))
    ax = fig.add_subplot()
    for status, (marker, colour) in STATUS_STYLE.items():
        part = _scored(trials[trials["status"] == status], metric)
        if len(part):
            ax.scatter(part["number"], part[metric], marker=marker, color=colour, label=status.lower().replace("_", " "))
    done = _scored(trials[trials["status"] == "COMPLETED"], metric).sort_values("number")
    if len(done):
        best = done[metric].cummax() if mode == "max" else done[metric].cummin()
        ax.step(done["number"], best, where="post", color="tab:green", label="best completed so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial (in start order)")
    ax.set_ylabel(metric)
    ax.legend(fontsize="small")
    return fig


def importance_figure(importance: dict[str, float]):
    names = [n for n in importance if np.isfinite(importance[n])]
    fig = new_figure((6, 0.5 + 0.4 * max(1, len(names))))
    ax = fig.add_subplot()
    names.sort(key=lambda n: importance[n])
    ax.barh(names, [importance[n] for n in names], color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_xlabel("|Spearman ρ| (numeric) or η (choice) with the metric")
    return fig


def parameter_figure(trials: pd.DataFrame, params: dict, metric: str):
    """One panel per parameter: the metric against its value (log axis for loguniform)."""
    scored = _scored(trials, metric)
    n = len(params)
    cols = min(3, n)
    rows = -(-n // cols)
    fig = new_figure((4 * cols, 3.2 * rows))
    for i, (name, distribution) in enumerate(params.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        x = scored[name]
        if not _is_numeric(x):  # categories at 0, 1, 2 ...
            labels = sorted(x.astype(str).unique())
            ax.set_xticks(range(len(labels)), labels)
            x = x.astype(str).map({label: k for k, label in enumerate(labels)})
        elif distribution == "loguniform" or (distribution == "choice" and len(x) and (x > 0).all() and x.max() / x.min() > 100):
            ax.set_xscale("log")
            if len(x):  # a few labelled ticks: matplotlib's minor labels collide on short ranges
                ticks = np.geomspace(x.min(), x.max(), 3) if x.max() > x.min() else [x.min()]
                ax.set_xticks(ticks, [f"{t:.2g}" for t in ticks])
                ax.xaxis.set_minor_formatter(NullFormatter())
        for status, (marker, colour) in STATUS_STYLE.items():
            part = scored["status"] == status
            if part.any():
                ax.scatter(x[part], scored.loc[part, metric], marker=marker, color=colour, label=status.lower().replace("_", " "))
        if i == 0:
            ax.legend(fontsize="small")
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
    fig.tight_layout()
    return fig


def write_sweep_report(path, trials: pd.DataFrame, space, objective: str, best: dict | None):
    """``space`` is the sweep's ``SearchSpace``; ``best`` what best.json holds (None: no
    trial completed)."""
    metric, mode = space.metric, space.mode
    params = {name: p.distribution for name, p in space.params.items()}
    counts = trials["status"].value_counts().to_dict()
    summary = [
        f"<p>Objective: {html.escape(objective)} ({mode}). {len(trials)} trials: "
        + ", ".join(f"{n} {html.escape(s.lower().replace('_', ' '))}" for s, n in counts.items()) + ".</p>"
    ]
    if best:
        summary.append(
            f"<p>Best completed trial <code>{html.escape(str(best['trial_id']))}</code>: {metric} = {best['value']:.4g}; "
            f"checkpoint <code>{html.escape(best['checkpoint'])}</code>.</p>"
            f"<pre>{html.escape(json.dumps(best['params'], indent=2))}</pre>"
        )
    else:
        summary.append('<p class="note">No trial completed: there is no best checkpoint.</p>')
    importance = parameter_importance(trials, list(params), metric)
    sections = [
        Section("Summary", "\n".join(summary)),
        Section(f"{metric} by trial", figures=[metric_by_trial_figure(trials, metric, mode)]),
        Section(
            "Parameter importance",
            '<p class="note">|Spearman ρ| between a numeric parameter and the metric, or the correlation '
            "ratio η for a choice of names, over every trial with a metric (early-stopped trials at the "
            "epoch they stopped). A few trials give an indication, not a test.</p>",
            figures=[importance_figure(importance)],
        ),
        Section(f"{metric} against each parameter", figures=[parameter_figure(trials, params, metric)]),
        Section("Trials", table=trials.drop(columns=[c for c in trials if c.endswith("_checkpoint")])),
    ]
    return write_report(path, f"Sweep of {space.workload}: {metric}", sections)
