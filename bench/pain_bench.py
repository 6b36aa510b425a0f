"""Pain benchmarks, each a ratio against a baseline measured in the same run.

1. Feed rate: UNBC frames (with their neutral references) delivered by Ray Data into a
   Ray Train worker, against a plain single-process h5py read + decode loop over the same
   rows. Epoch 0 is discarded (pipeline start-up).
2. Step time: the platform's training step (inside a Ray Train worker, `train_loop_per_worker`)
   against a bare PyTorch loop on the same model and the same batch, both on one thread.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


def _feed_loop(config: dict) -> None:
    import ray.train

    shard = ray.train.get_dataset_shard("train")
    rates = []
    for _ in range(config["epochs"]):
        start, rows = time.perf_counter(), 0
        for batch in shard.iter_torch_batches(batch_size=config["batch_size"]):
            rows += len(batch["pspi"])
        rates.append(rows / (time.perf_counter() - start))
    with tempfile.TemporaryDirectory() as d:
        ray.train.report({"rows_per_s": rates}, checkpoint=ray.train.Checkpoint.from_directory(d))


def feed_rate(data_dir: Path, storage: str, epochs: int = 3, batch_size: int = 32) -> dict:
    import ray.train
    from ray.train.torch import TorchTrainer

    from affectlab.data import pain as pain_data
    from affectlab.data.unbc import UNBC

    unbc = UNBC.open(data_dir)
    table = unbc.table
    refs = pain_data.training_references(table, 1, seed=0)
    size = 48

    start = time.perf_counter()
    for i in range(0, len(table), batch_size):  # the baseline: h5py + decode, one process
        rows = table.iloc[i : i + batch_size]
        pain_data.read_unbc_images(str(unbc.paths.frames), np.concatenate([rows["frame"], refs[i : i + batch_size].ravel()]), size)
    plain = len(table) / (time.perf_counter() - start)
    pain_data._OPEN_FILES.clear()

    ds = pain_data.unbc_dataset(table, refs, unbc.paths.frames, size, batch_size)
    trainer = TorchTrainer(
        _feed_loop,
        train_loop_config={"epochs": epochs, "batch_size": batch_size},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        datasets={"train": ds},
        run_config=ray.train.RunConfig(name="bench-feed", storage_path=storage),
    )
    rates = trainer.fit().metrics["rows_per_s"]
    ray_rate = float(np.mean(rates[1:]))
    return {"rows": len(table), "plain_h5py_rows_per_s": plain, "ray_data_rows_per_s_per_epoch": rates,
            "ray_data_rows_per_s": ray_rate, "ratio_ray_data_vs_plain": ray_rate / plain}  # fmt: skip


def step_time(data_dir: Path, storage: str, epochs: int = 3, steps: int = 40) -> dict:
    import ray.data
    import torch

    from affectlab.train.run import fit
    from affectlab.workloads import get_workload
    from affectlab.workloads.pain import PRESETS

    workload = get_workload("pain")
    cfg = workload.make_config({**PRESETS["tiny"], "data_dir": str(data_dir), "epochs": epochs, "augment": True})
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randint(0, 255, (cfg.batch_size, 3, 48, 48), dtype=torch.uint8, generator=g),
        "reference": torch.randint(0, 255, (cfg.batch_size, 1, 3, 48, 48), dtype=torch.uint8, generator=g),
        "pspi": torch.rand(cfg.batch_size, generator=g) * 16,
        "aus": torch.rand(cfg.batch_size, 6, generator=g) * 5,
        "subject_id": torch.zeros(cfg.batch_size, dtype=torch.int64),
        "sample_id": torch.arange(cfg.batch_size),
    }

    # the bare loop, one thread like a 1-CPU Train worker
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = workload.build_model(cfg)
    opt = torch.optim.AdamW(workload.param_groups(model, cfg))
    times = []
    for i in range(steps + 5):
        start = time.perf_counter()
        loss, _ = workload.train_step(model, batch, cfg, g)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        times.append(time.perf_counter() - start)
    torch.set_num_threads(threads)
    bare = float(np.median(times[5:]))

    # the platform loop on the same batch, repeated, through Ray Data and Ray Train
    rows = [{k: v[i].numpy() for k, v in batch.items()} for i in range(cfg.batch_size)] * (steps // 2)
    train = ray.data.from_items(rows).materialize()
    val = ray.data.from_items(rows[: cfg.batch_size]).materialize()
    result = fit(workload, cfg, {"train": train, "val": val}, storage, "bench-step")
    per_epoch = [m["train_seconds"] / m["train_steps"] for _, m in result.best_checkpoints if "train_steps" in m]
    platform = float(np.median(per_epoch[-2:])) if per_epoch else float("nan")
    return {"batch_size": cfg.batch_size, "bare_pytorch_s_per_step": bare, "platform_s_per_step": platform,
            "ratio_platform_vs_bare": platform / bare}  # fmt: skip


def run_pain_bench(workdir: Path) -> dict:
    import ray

    from affectlab.data.synthetic_pain import write_synthetic_unbc
    from affectlab.ray_utils import init_ray

    data_dir = write_synthetic_unbc(workdir / "unbc", sequences_per_subject=2, frames_per_sequence=20, size=64)
    init_ray()
    try:
        storage = str((workdir / "ray_results").resolve())
        return {"feed": feed_rate(data_dir, storage), "train_step": step_time(data_dir, storage)}
    finally:
        ray.shutdown()
