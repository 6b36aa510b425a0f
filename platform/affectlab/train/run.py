"""One Ray Train run of a workload: a TorchTrainer fed by the workload's Ray Datasets."""

from __future__ import annotations

from pathlib import Path

import ray.train
from ray.train import CheckpointConfig, DataConfig, FailureConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from affectlab.train.config import config_to_dict
from affectlab.train.loop import train_loop_per_worker
from affectlab.train.outputs import publish


def make_trainer(workload, cfg, datasets: dict, storage_path: str, name: str, callbacks=(), max_failures: int = 1) -> TorchTrainer:
    """``datasets["train"]`` is split across workers; the others are read by rank 0 only.

    A run started again with the same ``storage_path`` and ``name`` resumes from its
    latest checkpoint; ``max_failures`` restarts crashed workers from it within one fit.
    Workers that cannot be placed yet (a busy cluster, GPU nodes still starting) are waited
    for: Train retries the worker-group start without limit, and its pending placement
    group is the demand the autoscaler sees.
    """
    eval_splits = [s for s in workload.eval_splits if s in datasets]
    return TorchTrainer(
        workload.train_loop_per_worker or train_loop_per_worker,
        train_loop_config={"workload": workload, "config": config_to_dict(cfg), "eval_splits": eval_splits},
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cfg.cpus_per_worker}
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=max_failures, controller_failure_limit=-1),
            callbacks=list(callbacks),
            # Train's per-report INFO lines repeat every metric; the epoch lines say what matters.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )


def fit(workload, cfg, datasets: dict, storage_path: str, name: str, callbacks=(), max_failures: int = 1):
    """Train and return the Ray Train ``Result`` (its ``checkpoint`` is the ``final`` one)."""
    return make_trainer(workload, cfg, datasets, storage_path, name, callbacks, max_failures).fit()


def fit_to_directory(workload, cfg, datasets: dict, output_dir, name: str, storage_path: str | None = None, callbacks=()):
    """One run whose final checkpoint is published as ``output_dir/checkpoint``; returns (Result, path)."""
    output = Path(output_dir).resolve()
    result = fit(workload, cfg, datasets, storage_path or str(output / "ray_results"), name, callbacks)
    if result.checkpoint is None or not (result.metrics or {}).get("final"):
        raise RuntimeError(f"run {name} ended without its final checkpoint (error: {result.error})")
    dest = publish(lambda tmp: result.checkpoint.to_directory(str(tmp)), output / "checkpoint")
    return result, dest
