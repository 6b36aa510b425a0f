"""The sweep report, drawn by Optuna's own matplotlib plots from the trials table.

The trials are put back into an Optuna study (completed trials with their final metric,
early-stopped ones as pruned at the epoch they stopped), then: the optimisation history,
the parameter importances (Optuna's fANOVA: with a handful of trials an indication, not a
test) and a slice plot of the metric against each parameter.
"""

from __future__ import annotations

import html
import json
import math
import warnings

import optuna
import pandas as pd
from optuna.visualization import matplotlib as optuna_plots

from affectlab.report.html import Section, write_report

__all__ = ["study_from_trials", "write_sweep_report"]


def study_from_trials(trials: pd.DataFrame, space) -> optuna.Study:
    """An in-memory Optuna study holding the sweep's trials (``trials.csv`` rows)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if space.mode == "max" else "minimize")
    distributions = {name: p.optuna_distribution() for name, p in space.params.items()}
    for _, row in trials.iterrows():
        value = pd.to_numeric(row[space.metric], errors="coerce")
        if not math.isfinite(value) or row["status"] not in ("COMPLETED", "EARLY_STOPPED"):
            continue
        params = {name: _plain(row[name]) for name in distributions}
        if row["status"] == "COMPLETED":
            trial = optuna.trial.create_trial(params=params, distributions=distributions, value=float(value))
        else:
            trial = optuna.trial.create_trial(params=params, distributions=distributions, state=optuna.trial.TrialState.PRUNED,
                                              intermediate_values={int(row["reports"]): float(value)})  # fmt: skip
        study.add_trial(trial)
    return study


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _figure(plot, study, **kwargs):
    """The figure of one Optuna matplotlib plot, or None when the study cannot support it."""
    if not study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        try:
            axes = plot(study, **kwargs)
        except (ValueError, RuntimeError):  # e.g. importances need two completed trials that differ
            return None
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.figure


def write_sweep_report(path, trials: pd.DataFrame, space, objective: str, best: dict | None):
    """``space`` is the sweep's ``SearchSpace``; ``best`` what best.json holds (None: no
    trial completed)."""
    metric, mode = space.metric, space.mode
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
    study = study_from_trials(trials, space)
    sections = [Section("Summary", "\n".join(summary))]
    plots = [
        (f"{metric} by trial", optuna_plots.plot_optimization_history, "Completed trials in start order and the best so far."),
        ("Parameter importance", optuna_plots.plot_param_importances,
         "Optuna's fANOVA importances over the completed trials: with a handful of trials an indication, not a test."),
        (f"{metric} against each parameter", optuna_plots.plot_slice, "Every completed trial, coloured by trial number."),
    ]  # fmt: skip
    for title, plot, note in plots:
        fig = _figure(plot, study, target_name=metric)
        text = f'<p class="note">{html.escape(note)}</p>'
        if fig is None:
            text = '<p class="note">Not enough completed trials for this plot.</p>'
        sections.append(Section(title, text, figures=[fig] if fig is not None else []))
    sections.append(Section("Trials", table=trials.drop(columns=[c for c in trials if c.endswith("_checkpoint")])))
    return write_report(path, f"Sweep of {space.workload}: {metric}", sections)
