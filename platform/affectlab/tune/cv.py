"""Cross-validation on Ray Tune: every fold is a Tune trial, every trial a Ray Train run.

Every fold is queued at once. A trial only drives its Train run, so it asks for one unit of
the head node's ``trial_driver`` resource where the cluster declares it (keeping drivers
off spot GPU nodes), else a sliver of a CPU; the Train run asks for its workers' real
resources as a placement group. Folds whose workers do not fit yet wait for them — Train
retries the worker start without limit — and their pending placement groups are the
demand the autoscaler sees, so folds start as nodes arrive. Each fold's ``final``
checkpoint (the weights selected on its inner validation split, their metrics and the
predictions of every evaluation split) is published to ``<output>/fold_<k>/``.

Faults: a fold's Train run is named after the CV run and the fold, in the CV's storage.
Workers that die (a killed process, a lost node) are restarted by Train from the latest
epoch checkpoint; a trial that dies with its node is retried by Tune, and its Train run,
started again under the same name, continues from that checkpoint too. A CV whose driver
died is continued with ``resume=True`` (``Tuner.restore`` of the run recorded in
``<output>/cv.json``): finished folds are kept, a fold whose Train run had finished but
whose trial was not yet recorded reports its final result without training again, and
interrupted folds continue from their latest epoch. ``<output>/executions.jsonl`` has one
line per fold a trial started (``fresh``, ``resumed`` or ``finished``).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import tune

from affectlab.train.checkpoint import as_json, write_json
from affectlab.train.config import config_to_dict
from affectlab.train.outputs import publish
from affectlab.train.run import final_report, fit, run_state
from affectlab.train.tracking import tune_callbacks

TRIAL_DRIVER = "trial_driver"  # custom resource cluster.yaml gives the (non-spot) head node
SETTINGS_FILE = "cv.json"  # the run name and settings a resumed CV must continue with
EXECUTIONS_FILE = "executions.jsonl"


class CVError(RuntimeError):
    """A cross-validation that cannot start, resume or produce a result."""


@dataclass(frozen=True)
class FoldResult:
    fold: int
    checkpoint_dir: Path
    metrics: dict


TRIAL_CPUS = 0.01  # a trial only waits on its Train run (Tune refuses an empty request)


def trial_resources() -> dict:
    """What a trial that only drives Train runs reserves: a ``trial_driver`` slot where the
    cluster has them (the head node in cluster.yaml), else a sliver of a CPU."""
    if ray.cluster_resources().get(TRIAL_DRIVER, 0) >= 1:
        return {TRIAL_DRIVER: 1}
    return {"CPU": TRIAL_CPUS}


def log_execution(log_path: str | None, trial_id: str, fold: int, state: str) -> None:
    """One line per fold a trial starts: how often training really ran (tests, audits).

    Written where the trial runs: on a multi-node cluster give an output directory every
    node can see (NFS), or read the lines of the head node's trials only.
    """
    if not log_path:
        return
    line = {"trial_id": trial_id, "fold": fold, "state": state, "time": time.time(), "host": socket.gethostname(), "pid": os.getpid()}
    with open(log_path, "a") as f:
        f.write(json.dumps(line) + "\n")


def fold_trainable(config: dict, workload, log_path: str | None = None) -> None:
    """A Tune trial: train one fold (and resume it, when Tune retries the trial)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    fold, storage = config["fold"], config["storage_path"]
    name = f"{config['run_name']}-fold{fold}"
    state = run_state(storage, name)
    log_execution(log_path, tune.get_context().get_trial_id(), fold, state)
    if state == "finished":  # trained before an interruption; only its trial's result was lost
        tune.report(final_report(storage, name))
        return
    cfg = workload.make_config(config["config"])
    fit(workload, cfg, workload.datasets(cfg, fold), storage, name, callbacks=[TuneReportCallback()])


def run_cv(
    workload,
    cfg,
    folds: list[int],
    output_dir: str | Path,
    run_name: str,
    storage_path: str | None = None,
    wandb: str = "offline",
    max_concurrent: int | None = None,
    resume: bool = False,
) -> list[FoldResult]:
    """Train ``folds`` as parallel Tune trials; return each fold's final checkpoint and metrics.

    ``max_concurrent`` caps the folds training at once (default: all of them, each waiting
    for its workers' resources). ``resume=True`` continues the CV recorded in
    ``output_dir`` (its run name and storage; ``run_name`` is then not used), which must
    have been started with the same workload, folds and config.
    """
    output = Path(output_dir).resolve()
    output.mkdir(parents=True, exist_ok=True)
    trainable = tune.with_resources(
        tune.with_parameters(fold_trainable, workload=workload, log_path=str(output / EXECUTIONS_FILE)), trial_resources()
    )
    if resume:
        run_name, storage = recorded_run(output, workload, cfg, folds, storage_path)
    else:
        storage = storage_path or str(output / "ray_results")
        write_json(output / SETTINGS_FILE, {**_settings(workload, cfg, folds), "run_name": run_name, "storage_path": storage})
    experiment = f"{storage.rstrip('/')}/{run_name}"
    if resume and tune.Tuner.can_restore(experiment):
        tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=True)
    else:  # also a resume whose driver died before Tune saved its state: the folds' Train runs continue by name
        tuner = tune.Tuner(
            trainable,
            param_space={"fold": tune.grid_search(list(folds)), "config": config_to_dict(cfg), "storage_path": storage, "run_name": run_name},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or len(folds)),
            run_config=tune.RunConfig(
                name=run_name,
                storage_path=storage,
                callbacks=tune_callbacks(wandb, f"affectlab-{workload.name}", run_name, output),
                failure_config=tune.FailureConfig(max_failures=1),
            ),
        )
    grid = tuner.fit()
    return collect_folds(grid, output)


def _settings(workload, cfg, folds) -> dict:
    return {"workload": workload.name, "folds": [int(f) for f in folds], "config": config_to_dict(cfg)}


def recorded_run(output_dir: str | Path, workload, cfg, folds: list[int], storage_path: str | None = None) -> tuple[str, str]:
    """(run name, storage path) of the CV recorded in ``output_dir``, after checking that it
    was started with this workload, folds and config (and storage, when given); ``CVError``
    otherwise. Reads files only: jobs call it before Ray starts."""
    settings = _settings(workload, cfg, folds)
    path = Path(output_dir).resolve() / SETTINGS_FILE
    if not path.is_file():
        raise CVError(f"nothing to resume: {path.parent} holds no cross-validation ({SETTINGS_FILE} is missing)")
    recorded = json.loads(path.read_text())
    changed = sorted(k for k, v in as_json(settings).items() if recorded.get(k) != v)
    if storage_path and storage_path != recorded["storage_path"]:
        changed.append("storage")
    if changed:
        detail = ""
        if "config" in changed:
            fields = sorted(k for k, v in as_json(settings["config"]).items() if recorded["config"].get(k) != v)
            detail = f" (config fields {', '.join(fields)})"
        raise CVError(f"{path}: the cross-validation was started with other {', '.join(changed)}{detail}; resume it with the same options")
    return recorded["run_name"], recorded["storage_path"]


def collect_folds(grid, output: Path) -> list[FoldResult]:
    errors = [f"fold {r.config['fold']}: {r.error}" for r in grid if r.error]
    if errors:
        raise CVError("cross-validation failed:\n" + "\n".join(errors))
    results = []
    for r in sorted(grid, key=lambda r: r.config["fold"]):
        fold = r.config["fold"]
        if not r.metrics or not r.metrics.get("final") or "checkpoint_path" not in r.metrics:
            raise CVError(f"fold {fold} ended without its final checkpoint (last metrics: {r.metrics})")
        checkpoint = ray.train.Checkpoint(r.metrics["checkpoint_path"])
        dest = publish(lambda tmp: checkpoint.to_directory(str(tmp)), output / f"fold_{fold}")
        results.append(FoldResult(fold, dest, dict(r.metrics)))
    return results
