"""One Ray Train run of a workload: a TorchTrainer fed by the workload's Ray Datasets.

A run is named within its storage path; started again under the same name it continues
from its latest checkpoint. ``run_state`` and ``final_report`` read what Ray Train itself
recorded as done (its checkpoint-manager snapshot), never the mere presence of files: a
checkpoint interrupted mid-upload is never taken for the latest.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pyarrow.fs
import ray.train
from ray.train import CheckpointConfig, DataConfig, FailureConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from affectlab.train.config import config_to_dict
from affectlab.train.loop import train_loop_per_worker
from affectlab.train.outputs import disk_full_error, is_disk_full, publish, storage_filesystem

SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Ray Train's record of a run's checkpoints


def _with_workload(loop, workload, loop_config: dict) -> None:
    loop({**loop_config, "workload": workload})


def make_trainer(workload, cfg, datasets: dict, storage_path: str, name: str, callbacks=(), max_failures: int = 1) -> TorchTrainer:
    """``datasets["train"]`` is split across workers; the others are read by rank 0 only.

    A run started again with the same ``storage_path`` and ``name`` resumes from its
    latest checkpoint; ``max_failures`` restarts crashed workers from it within one fit.
    Workers that cannot be placed yet (a busy cluster, GPU nodes still starting) are waited
    for: Train retries the worker-group start without limit, and its pending placement
    group is the demand the autoscaler sees. A local storage path is written through
    ``AtomicLocalFileSystem``: a killed writer or a full disk never truncates a file there.

    The workload travels inside the training function, which Train keeps in the object
    store for the workers alone. Train's controller deserialises ``train_loop_config``: a
    workload there made every controller import the workload's libraries (torch, timm,
    scipy, wandb), 5-6 s on the critical path of each run (docs/performance.md).
    """
    eval_splits = [s for s in workload.eval_splits if s in datasets]
    storage, filesystem = storage_filesystem(storage_path)
    return TorchTrainer(
        functools.partial(_with_workload, workload.train_loop_per_worker or train_loop_per_worker, workload),
        train_loop_config={"config": config_to_dict(cfg), "eval_splits": eval_splits},
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cfg.cpus_per_worker}
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=max_failures, controller_failure_limit=-1),
            callbacks=list(callbacks),
            # Train's per-report INFO lines repeat every metric; the epoch lines say what matters.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )


def fit(workload, cfg, datasets: dict, storage_path: str, name: str, callbacks=(), max_failures: int = 1):
    """Train and return the Ray Train ``Result`` (its ``checkpoint`` is the ``final`` one).

    A run that fails because its storage (or a worker's temporary directory) is full raises
    ``DiskFullError`` saying so; its latest complete checkpoint stays, and running it again
    once there is room continues from there."""
    try:
        return make_trainer(workload, cfg, datasets, storage_path, name, callbacks, max_failures).fit()
    except Exception as error:
        if not is_disk_full(error):
            raise
        try:
            latest = latest_checkpoint_name(storage_path, name)
        except Exception:  # the record itself unreadable: say so rather than hide the disk-full error
            latest = "(unreadable record)"
        kept = f"its latest complete checkpoint, {latest}, is kept: run it again with room to continue" if latest else "it had no complete checkpoint yet"
        raise disk_full_error(f"{str(storage_path).rstrip('/')}/{name}", f"run {name} wrote a checkpoint", kept) from error


def _result(storage_path: str, name: str):
    """Ray Train's recorded ``Result`` of a run, or None if it has recorded nothing."""
    fs, root = pyarrow.fs.FileSystem.from_uri(str(storage_path) if "://" in str(storage_path) else str(Path(storage_path).resolve()))
    run = f"{root.rstrip('/')}/{name}"
    if fs.get_file_info(f"{run}/{SNAPSHOT_FILE}").type != pyarrow.fs.FileType.File:
        return None
    manager_log = logging.getLogger("ray.train.v2._internal.execution.checkpoint.checkpoint_manager")
    level = manager_log.level
    manager_log.setLevel(logging.WARNING)  # reading a record is not resuming the run: no "snapshot found" notice
    try:
        return ray.train.Result.from_path(run, storage_filesystem=fs)
    finally:
        manager_log.setLevel(level)


def latest_checkpoint_name(storage_path: str, name: str) -> str | None:
    """The directory name of the run's latest recorded checkpoint (``epoch_003``, ``final``)."""
    result = _result(storage_path, name)
    return Path(result.checkpoint.path).name if result is not None and result.checkpoint is not None else None


def run_state(storage_path: str, name: str) -> str:
    """``fresh`` (nothing recorded), ``resumed`` (an epoch checkpoint is recorded: the run
    continues from it) or ``finished`` (its ``final`` checkpoint is recorded)."""
    latest = latest_checkpoint_name(storage_path, name)
    return "fresh" if latest is None else "finished" if latest == "final" else "resumed"


def final_report(storage_path: str, name: str) -> dict:
    """A finished run's final metrics, with ``checkpoint_path`` as Tune reports carry it."""
    result = _result(storage_path, name)
    if result is None or result.checkpoint is None or not (result.metrics or {}).get("final"):
        raise RuntimeError(f"run {name} in {storage_path} has not recorded its final checkpoint")
    return {**result.metrics, "final": 1, "checkpoint_path": f"{str(storage_path).rstrip('/')}/{name}/final"}


def fit_to_directory(workload, cfg, datasets: dict, output_dir, name: str, storage_path: str | None = None, callbacks=()):
    """One run whose final checkpoint is published as ``output_dir/checkpoint``; returns (Result, path)."""
    output = Path(output_dir).resolve()
    result = fit(workload, cfg, datasets, storage_path or str(output / "ray_results"), name, callbacks)
    if result.checkpoint is None or not (result.metrics or {}).get("final"):
        raise RuntimeError(f"run {name} ended without its final checkpoint (error: {result.error})")
    dest = publish(lambda tmp: result.checkpoint.to_directory(str(tmp)), output / "checkpoint")
    return result, dest
