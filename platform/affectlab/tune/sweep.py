"""Hyper-parameter sweeps on Ray Tune: Optuna (TPE) proposes settings, ASHA stops laggards.

Every trial is a Ray Train driver: it merges its sampled hyper-parameters into the
workload config and trains one fold (fast screening) or K folds at once in threads
(``cv``, reference/ray.md §2.2 option C). After every epoch the trial reports the
folds' mean inner-validation metric to Tune, so ASHA can compare trials epoch by epoch
and stop a poor one — all of its folds with it. Trials never see the test fold: they
train on ``train`` and are scored on ``val``, a split carved from training subjects.

The experiment lives under a fixed name in the output directory, so ``resume=True``
restores it (``Tuner.restore``): finished trials are kept, interrupted ones restart and
their Train runs continue from their latest epoch checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import ray.train
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch
from ray.util.queue import Empty, Queue

from affectlab.train.checkpoint import write_json
from affectlab.train.outputs import publish
from affectlab.train.run import final_report, fit, run_state
from affectlab.train.tracking import tune_callbacks
from affectlab.tune.cv import EXECUTIONS_FILE, log_execution, trial_resources
from affectlab.tune.space import SearchSpace

EXPERIMENT = "sweep"  # fixed within an output directory, so a sweep can be resumed
DATA_CPUS = 0.25  # room for one Ray Data task per Train run (reference/ray.md §3.3)
SETTINGS_FILE = "sweep.json"
FINAL_KEY = math.inf  # the final report sorts after every epoch


class SweepError(RuntimeError):
    """A sweep that cannot start, resume or produce a result."""


@dataclass(frozen=True)
class Objective:
    """What a trial is scored on: ``metric`` on the inner validation split of ``folds``
    (one fold: screening; several: their mean)."""

    metric: str
    mode: str
    folds: tuple[int, ...]

    def describe(self) -> str:
        if len(self.folds) == 1:
            return f"{self.metric} on the inner validation split of fold {self.folds[0]}"
        return f"mean {self.metric} over the inner validation splits of folds {list(self.folds)}"


@dataclass(frozen=True)
class SweepResult:
    trials: pd.DataFrame
    best: dict
    output_dir: Path


# -- the trial ----------------------------------------------------------------------------
class _FoldReports(ray.train.UserCallback):
    """Forwards one fold's Train reports to its trial (runs in the Train controller)."""

    def __init__(self, fold: int, queue: Queue):
        self.fold, self.queue = fold, queue

    def after_report(self, run_context, metrics, checkpoint):
        report = dict(metrics[0])
        if checkpoint:
            report["checkpoint_path"] = checkpoint.path
        self.queue.put((self.fold, report))


def sweep_trial(params: dict, *, workload, base: dict, objective: Objective, storage: str, log_path: str | None) -> None:
    """One Tune trial: train the objective's folds with ``params`` and report their mean."""
    cfg = workload.make_config({**base, **params})
    trial_id = tune.get_context().get_trial_id()
    queue = Queue(actor_options={"num_cpus": 0})
    pool = ThreadPoolExecutor(len(objective.folds))
    running = []
    for fold in objective.folds:
        name = f"{EXPERIMENT}-{trial_id}-fold{fold}"
        state = run_state(storage, name)
        log_execution(log_path, trial_id, fold, state)
        if state == "finished":  # trained before an interruption; its result was not recorded
            queue.put((fold, final_report(storage, name)))
            continue
        datasets = {k: v for k, v in workload.datasets(cfg, fold).items() if k in ("train", "val")}
        running.append(pool.submit(fit, workload, cfg, datasets, storage, name, [_FoldReports(fold, queue)]))
    try:
        _report_fold_means(queue, running, objective)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _report_fold_means(queue: Queue, running: list, objective: Objective) -> None:
    """Report to Tune once every fold has reported the same epoch (or its final result).

    Folds resumed from different epochs skip the epochs some of them did before.
    """
    pending: dict[float, dict[int, dict]] = defaultdict(dict)
    while True:
        try:
            fold, report = queue.get(timeout=1.0)
        except Empty:
            for future in running:
                if future.done():
                    future.result()  # a failed fold fails the trial now
            if all(f.done() for f in running) and queue.empty():
                return
            continue
        key = FINAL_KEY if report.get("final") else report["epoch"]
        pending[key][fold] = report
        if len(pending[key]) == len(objective.folds):
            tune.report(_mean_report(pending[key], objective.metric))
            for stale in [k for k in pending if k <= key]:
                del pending[stale]


def _mean_report(reports: dict[int, dict], metric: str) -> dict:
    folds = sorted(reports)
    shared = set.intersection(*(set(r) for r in reports.values()))
    out = {}
    for key in sorted(shared):
        values = [reports[f][key] for f in folds]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = float(np.nanmean(values)) if any(np.isfinite(values)) else float("nan")
    for f in folds:
        out[f"fold{f}_{metric}"] = reports[f].get(metric, float("nan"))
        if "checkpoint_path" in reports[f]:
            out[f"fold{f}_checkpoint_path"] = reports[f]["checkpoint_path"]
    return out


# -- the sweep ----------------------------------------------------------------------------
def max_concurrent_trials(cfg, runs_per_trial: int) -> int:
    """Trials that fit the cluster at its largest: Tune does not see the resources of the
    Train runs inside a trial (ray#54305). An autoscaling cluster counts the nodes it may
    still add (cluster.yaml starts with no GPU node); trials beyond what is there now wait
    for their workers."""
    from ray._private.state import state

    total = state.get_max_resources_from_cluster_config() or ray.cluster_resources()
    if cfg.use_gpu:
        return max(1, int(total.get("GPU", 0) // (runs_per_trial * cfg.num_workers)))
    per_trial = runs_per_trial * (cfg.num_workers * cfg.cpus_per_worker + DATA_CPUS)
    return max(1, int(total.get("CPU", 1) // per_trial))


def run_sweep(
    workload,
    space: SearchSpace,
    base: dict,
    output_dir: str | Path,
    num_samples: int,
    folds: tuple[int, ...] | list[int] = (0,),
    resume: bool = False,
    max_concurrent: int | None = None,
    wandb: str = "offline",
    storage_path: str | None = None,
    seed: int = 0,
    grace_period: int = 1,
    reduction_factor: float = 2,
) -> SweepResult:
    """Run (or resume) a sweep and write trials.csv, best.json, best_checkpoint/ and report.html.

    ``base`` holds the config values every trial starts from (preset, data location,
    cluster settings); the space's ``fixed`` values go on top, then each trial's sample.
    """
    if space.workload != workload.name:
        raise SweepError(f"the space is for workload {space.workload!r}, not {workload.name!r}")
    output = Path(output_dir).resolve()
    output.mkdir(parents=True, exist_ok=True)
    storage = storage_path or str(output / "ray_results")
    values = {**base, **space.fixed}
    cfg = workload.make_config(values)  # a bad base fails here, before Ray does anything
    objective = Objective(space.metric, space.mode, tuple(int(f) for f in folds))
    settings = {"space": space.to_dict(), "base": values, "folds": list(objective.folds), "num_samples": num_samples}
    _check_settings(output / SETTINGS_FILE, settings, resume)

    trainable = tune.with_resources(
        tune.with_parameters(
            sweep_trial, workload=workload, base=values, objective=objective, storage=storage,
            log_path=str(output / EXECUTIONS_FILE),
        ),
        trial_resources(),
    )  # fmt: skip
    experiment = f"{storage.rstrip('/')}/{EXPERIMENT}"
    if resume:
        if not tune.Tuner.can_restore(experiment):
            raise SweepError(f"nothing to resume: no sweep in {experiment}")
        tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=True)
    else:
        if tune.Tuner.can_restore(experiment):
            raise SweepError(f"{output} already holds a sweep: continue it with resume (--resume) or choose another output directory")
        write_json(output / SETTINGS_FILE, settings)
        reports_per_run = _max_epochs(space, cfg) + 1  # each epoch, then the final one
        tuner = tune.Tuner(
            trainable,
            param_space=space.param_space(),
            tune_config=tune.TuneConfig(
                metric=space.metric,
                mode=space.mode,
                search_alg=OptunaSearch(seed=seed),
                scheduler=ASHAScheduler(
                    time_attr="training_iteration", max_t=reports_per_run,
                    grace_period=min(grace_period, reports_per_run), reduction_factor=reduction_factor,
                ),
                num_samples=num_samples,
                max_concurrent_trials=max_concurrent or max_concurrent_trials(cfg, len(objective.folds)),
            ),
            run_config=tune.RunConfig(
                name=EXPERIMENT,
                storage_path=storage,
                callbacks=tune_callbacks(wandb, f"affectlab-{workload.name}-sweep", output.name, output),
                failure_config=tune.FailureConfig(max_failures=1),
            ),
        )  # fmt: skip
    grid = tuner.fit()
    return write_outputs(grid, space, objective, values, output)


def _max_epochs(space: SearchSpace, cfg) -> int:
    p = space.params.get("epochs")
    if p is None:
        return cfg.epochs
    return int(max(p.values) if p.distribution == "choice" else p.high)


def _check_settings(path: Path, settings: dict, resume: bool) -> None:
    """A resumed sweep must continue with the settings it started with."""
    if not resume or not path.exists():
        return
    recorded = json.loads(path.read_text())
    now = json.loads(json.dumps(settings))  # the same JSON normalisation as the record
    changed = sorted(k for k in now if recorded.get(k) != now[k])
    if changed:
        raise SweepError(f"{path}: the sweep was started with other {', '.join(changed)}; resume it with the same options")


# -- outputs ------------------------------------------------------------------------------
def trials_table(grid, space: SearchSpace, objective: Objective) -> pd.DataFrame:
    """One row per trial: parameters, status, metric, wall time and time span.

    ``status`` is COMPLETED (trained to the end and reported its final checkpoint),
    EARLY_STOPPED (ASHA stopped it: its last report is an epoch, not the final one),
    ERROR, or NO_RESULT (it never reported).
    """
    rows = []
    for r in grid:
        m = r.metrics or {}
        if r.error:
            status = "ERROR"
        elif m.get("final"):
            status = "COMPLETED"
        elif m:
            status = "EARLY_STOPPED"
        else:
            status = "NO_RESULT"
        ended = m.get("timestamp", float("nan"))
        row = {"trial_id": m.get("trial_id") or Path(r.path).name, "status": status}
        row.update({name: r.config.get(name) for name in space.params})
        row[objective.metric] = m.get(objective.metric, float("nan"))
        row.update(
            reports=m.get("training_iteration", 0),
            wall_time_s=m.get("time_total_s", float("nan")),
            started_at=ended - m.get("time_total_s", float("nan")),
            ended_at=ended,
            error=str(r.error).splitlines()[0] if r.error else "",
        )
        for f in objective.folds:
            if len(objective.folds) > 1:
                row[f"fold{f}_{objective.metric}"] = m.get(f"fold{f}_{objective.metric}", float("nan"))
            row[f"fold{f}_checkpoint"] = m.get(f"fold{f}_checkpoint_path", "") if status == "COMPLETED" else ""
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["started_at", "trial_id"], na_position="last").reset_index(drop=True)
    table.insert(0, "number", range(len(table)))
    return table


def best_trial(trials: pd.DataFrame, objective: Objective) -> pd.Series:
    """The best trial that completed: only completed trials have a final checkpoint, and an
    early-stopped trial's last value comes from an earlier epoch than the others'."""
    done = trials[(trials["status"] == "COMPLETED") & trials[objective.metric].notna()]
    if done.empty:
        raise SweepError(f"no trial completed with a finite {objective.metric}; see trials.csv")
    ordered = done[objective.metric].astype(float)
    return done.loc[ordered.idxmax() if objective.mode == "max" else ordered.idxmin()]


def write_outputs(grid, space: SearchSpace, objective: Objective, base: dict, output: Path) -> SweepResult:
    from affectlab.report.sweep import write_sweep_report

    trials = trials_table(grid, space, objective)
    trials.to_csv(output / "trials.csv", index=False)
    try:
        best = best_trial(trials, objective)
    except SweepError:
        write_sweep_report(output / "report.html", trials, space, objective.describe(), None)
        raise
    checkpoint = _copy_best_checkpoint(best, objective, output / "best_checkpoint")
    params = {name: _plain(best[name]) for name in space.params}
    summary = {
        "params": params,
        "metric": objective.metric,
        "mode": objective.mode,
        "value": float(best[objective.metric]),
        "checkpoint": str(checkpoint),
        "trial_id": best["trial_id"],
        "objective": objective.describe(),
        "selected_among": "completed trials (early-stopped trials have no final checkpoint)",
        "trials": {s: int(n) for s, n in trials["status"].value_counts().items()},
        "config": {**base, **params},
    }
    if len(objective.folds) > 1:
        summary["fold_checkpoints"] = {str(f): str(checkpoint / f"fold_{f}") for f in objective.folds}
    write_json(output / "best.json", summary)
    write_sweep_report(output / "report.html", trials, space, objective.describe(), summary)
    return SweepResult(trials, summary, output)


def _copy_best_checkpoint(best: pd.Series, objective: Objective, dest: Path) -> Path:
    """One fold: its final checkpoint. CV: every fold's under ``fold_<k>/``, and at the top
    the fold that scored best on its own inner validation split (one model to serve).
    Published whole or not at all: an earlier ``best_checkpoint`` stays until then."""
    folds = objective.folds

    def write(tmp: Path) -> None:
        if len(folds) == 1:
            ray.train.Checkpoint(best[f"fold{folds[0]}_checkpoint"]).to_directory(str(tmp))
            return
        for f in folds:
            ray.train.Checkpoint(best[f"fold{f}_checkpoint"]).to_directory(str(tmp / f"fold_{f}"))
        scores = {f: float(best[f"fold{f}_{objective.metric}"]) for f in folds}
        sign = 1 if objective.mode == "max" else -1
        top = max(folds, key=lambda f: sign * scores[f] if math.isfinite(scores[f]) else -math.inf)
        for item in (tmp / f"fold_{top}").iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)

    return publish(write, dest)


def _plain(value):
    return value.item() if hasattr(value, "item") else value
