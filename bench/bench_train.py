"""Ray Train helpers the benchmarks share (kept apart from ``bench_utils``, which tests
import without Ray)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ray.cloudpickle
import ray.train

# Train's controller and workers run these; bench/ is on their path only when the driver
# script lives in bench/ (Ray adds the script's directory), so ship them by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class MetricsLog(ray.train.UserCallback):
    """Appends every report's rank-0 metrics to a JSON-lines file: Train keeps only the
    checkpointed reports it was told to keep, the benchmark wants every epoch's."""

    def __init__(self, path: str):
        self.path = path

    def after_report(self, run_context, metrics, checkpoint):
        numbers = {k: v for k, v in metrics[0].items() if isinstance(v, (int, float, str))}
        with open(self.path, "a") as f:
            f.write(json.dumps(numbers) + "\n")

    @staticmethod
    def read(path: str | Path) -> list[dict]:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def feed_loop(config: dict) -> None:
    """A Train worker reading its shard exactly as ``train_loop_per_worker`` does
    (``affectlab.train.loop.epoch_batches``), with no step: rows/s delivered per epoch."""
    import tempfile
    import time

    import torch

    from affectlab.train.loop import batch_rows, epoch_batches

    workload = config["workload"]
    cfg = workload.make_config(config["config"])
    shard = ray.train.get_dataset_shard("train")
    rates, first = [], []
    prefetch = config.get("prefetch_batches") or [None] * config["epochs"]
    for epoch in range(config["epochs"]):
        generator = torch.Generator().manual_seed(epoch)
        options = {} if prefetch[epoch] is None else {"prefetch_batches": prefetch[epoch]}
        started, rows = time.perf_counter(), 0
        for batch in epoch_batches(shard, cfg, workload.collate_fn(cfg), torch.device("cpu"), epoch, generator, **options):
            if not rows:
                first.append(time.perf_counter() - started)
            rows += batch_rows(batch)
        rates.append(rows / (time.perf_counter() - started))
    with tempfile.TemporaryDirectory() as d:
        ray.train.report({"rows_per_s": rates, "first_batch_s": first}, checkpoint=ray.train.Checkpoint.from_directory(d))


def platform_feed(workload, cfg, dataset, storage: str, epochs: int, prefetch_batches: list[int] | None = None) -> dict:
    """Rows/s per epoch (and seconds to the first batch) that ``dataset`` delivers into one
    Train worker of the workload's size; ``prefetch_batches``: one value per epoch."""
    import time

    from ray.train import DataConfig
    from ray.train.torch import TorchTrainer

    from affectlab.train.config import config_to_dict

    trainer = TorchTrainer(
        feed_loop,
        train_loop_config={"workload": workload, "config": config_to_dict(cfg), "epochs": epochs, "prefetch_batches": prefetch_batches},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": cfg.cpus_per_worker}),
        datasets={"train": dataset},
        dataset_config=DataConfig(datasets_to_split=["train"]),
        run_config=ray.train.RunConfig(name=f"bench-feed-{time.time_ns()}", storage_path=storage,
                                       logging_config=ray.train.LoggingConfig(log_level="WARNING")),  # fmt: skip
    )
    return trainer.fit().metrics


def cached_and_streamed_feeds(workload, cfg, fold, storage: str, epochs: int) -> dict:
    """The training split's feed as the workload builds it (decoded once and cached where it
    fits, ``affectlab.data.decoding``), with ``datasets_seconds`` (building and decoding
    every split), and ``streamed``: the same split with ``cache_data=False``, decoded every epoch."""
    import time

    from affectlab.train.config import config_to_dict

    started = time.perf_counter()
    train = workload.datasets(cfg, fold)["train"]
    datasets_seconds = time.perf_counter() - started
    cached = platform_feed(workload, cfg, train, storage, epochs)
    streaming = workload.make_config({**config_to_dict(cfg), "cache_data": False})
    streamed = platform_feed(workload, streaming, workload.datasets(streaming, fold)["train"], storage, epochs)
    return {**cached, "datasets_seconds": datasets_seconds, "streamed": streamed}
