"""Cross-validation on Ray Tune: every fold is a Tune trial, every trial a Ray Train run.

Folds run in parallel as far as the cluster allows. Each fold's ``final`` checkpoint (the
weights selected on its inner validation split, their metrics and the predictions of every
evaluation split) is copied to ``<output>/fold_<k>/``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import tune

from affectlab.train.run import fit
from affectlab.train.tracking import tune_callbacks
from affectlab.workloads import get_workload
from affectlab.workloads.base import config_to_dict

TRIAL_CPUS = 0.25  # the trial itself only drives its Train run


@dataclass(frozen=True)
class FoldResult:
    fold: int
    checkpoint_dir: Path
    metrics: dict


def fold_trainable(config: dict) -> None:
    """A Tune trial: train one fold (and resume it, when Tune retries the trial)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    workload = get_workload(config["workload"])
    cfg = workload.make_config(config["config"])
    fold = config["fold"]
    datasets = workload.datasets(cfg, fold)
    name = f"{config['run_name']}-fold{fold}"
    fit(workload, cfg, datasets, config["storage_path"], name, callbacks=[TuneReportCallback()])


def max_concurrent_folds(cfg, n_folds: int) -> int:
    """Tune does not see Train's resources (ray#54305): size concurrency from the cluster."""
    total = ray.cluster_resources()
    if cfg.use_gpu:
        per_trial = cfg.num_workers
        return max(1, min(n_folds, int(total.get("GPU", 0) // per_trial)))
    per_trial = cfg.num_workers * cfg.cpus_per_worker + TRIAL_CPUS + 0.25  # + a Data task slot
    return max(1, min(n_folds, int(total.get("CPU", 1) // per_trial)))


def run_cv(
    workload_name: str,
    cfg,
    folds: list[int],
    output_dir: str | Path,
    run_name: str,
    storage_path: str | None = None,
    wandb: str = "offline",
    max_concurrent: int | None = None,
) -> list[FoldResult]:
    """Train ``folds`` as parallel Tune trials; return each fold's final checkpoint and metrics."""
    workload = get_workload(workload_name)
    output = Path(output_dir).resolve()
    storage = storage_path or str(output / "ray_results")
    param_space = {
        "fold": tune.grid_search(list(folds)),
        "workload": workload.name,
        "config": config_to_dict(cfg),
        "storage_path": storage,
        "run_name": run_name,
    }
    tuner = tune.Tuner(
        tune.with_resources(fold_trainable, {"CPU": TRIAL_CPUS}),
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or max_concurrent_folds(cfg, len(folds))),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=storage,
            callbacks=tune_callbacks(wandb, f"affectlab-{workload.name}", run_name, output),
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )
    grid = tuner.fit()
    return collect_folds(grid, output)


def collect_folds(grid, output: Path) -> list[FoldResult]:
    errors = [f"fold {r.config['fold']}: {r.error}" for r in grid if r.error]
    if errors:
        raise RuntimeError("cross-validation failed:\n" + "\n".join(errors))
    results = []
    for r in sorted(grid, key=lambda r: r.config["fold"]):
        fold = r.config["fold"]
        if not r.metrics or not r.metrics.get("final") or "checkpoint_path" not in r.metrics:
            raise RuntimeError(f"fold {fold} ended without its final checkpoint (last metrics: {r.metrics})")
        dest = output / f"fold_{fold}"
        if dest.exists():
            shutil.rmtree(dest)
        ray.train.Checkpoint(r.metrics["checkpoint_path"]).to_directory(str(dest))
        results.append(FoldResult(fold, dest, dict(r.metrics)))
    return results
