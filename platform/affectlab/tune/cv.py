"""Cross-validation on Ray Tune: every fold is a Tune trial, every trial a Ray Train run.

Every fold is queued at once. A trial only drives its Train run, so it asks for one unit of
the head node's ``trial_driver`` resource where the cluster declares it (keeping drivers
off spot GPU nodes), else a sliver of a CPU; the Train run asks for its workers' real
resources as a placement group. Folds whose workers do not fit yet wait for them — Train
retries the worker start without limit — and their pending placement groups are the
demand the autoscaler sees, so folds start as nodes arrive. Each fold's ``final``
checkpoint (the weights selected on its inner validation split, their metrics and the
predictions of every evaluation split) is published to ``<output>/fold_<k>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ray
from ray import tune

from affectlab.train.config import config_to_dict
from affectlab.train.outputs import publish
from affectlab.train.run import fit
from affectlab.train.tracking import tune_callbacks

TRIAL_DRIVER = "trial_driver"  # custom resource cluster.yaml gives the (non-spot) head node


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


def fold_trainable(config: dict, workload) -> None:
    """A Tune trial: train one fold (and resume it, when Tune retries the trial)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg = workload.make_config(config["config"])
    fold = config["fold"]
    datasets = workload.datasets(cfg, fold)
    name = f"{config['run_name']}-fold{fold}"
    fit(workload, cfg, datasets, config["storage_path"], name, callbacks=[TuneReportCallback()])


def run_cv(
    workload,
    cfg,
    folds: list[int],
    output_dir: str | Path,
    run_name: str,
    storage_path: str | None = None,
    wandb: str = "offline",
    max_concurrent: int | None = None,
) -> list[FoldResult]:
    """Train ``folds`` as parallel Tune trials; return each fold's final checkpoint and metrics.

    ``max_concurrent`` caps the folds training at once (default: all of them, each waiting
    for its workers' resources).
    """
    output = Path(output_dir).resolve()
    storage = storage_path or str(output / "ray_results")
    param_space = {
        "fold": tune.grid_search(list(folds)),
        "config": config_to_dict(cfg),
        "storage_path": storage,
        "run_name": run_name,
    }
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(fold_trainable, workload=workload), trial_resources()),
        param_space=param_space,
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


def collect_folds(grid, output: Path) -> list[FoldResult]:
    errors = [f"fold {r.config['fold']}: {r.error}" for r in grid if r.error]
    if errors:
        raise RuntimeError("cross-validation failed:\n" + "\n".join(errors))
    results = []
    for r in sorted(grid, key=lambda r: r.config["fold"]):
        fold = r.config["fold"]
        if not r.metrics or not r.metrics.get("final") or "checkpoint_path" not in r.metrics:
            raise RuntimeError(f"fold {fold} ended without its final checkpoint (last metrics: {r.metrics})")
        checkpoint = ray.train.Checkpoint(r.metrics["checkpoint_path"])
        dest = publish(lambda tmp: checkpoint.to_directory(str(tmp)), output / f"fold_{fold}")
        results.append(FoldResult(fold, dest, dict(r.metrics)))
    return results
