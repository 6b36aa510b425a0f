"""Pain training against what a lab would write instead: a PyTorch ``DataLoader`` over an
h5py ``Dataset``.

    python bench/pain_bench.py [--quick]     # prints JSON; bench/run.py calls run_pain_bench()

Both sides train the same fold of the same synthetic UNBC data (HDF5 layout), the same
``tiny`` ViTPain, batch, references and decode (``affectlab.data.pain.to_chw``), one torch
thread each (a 1-CPU Train worker has one):

- ``dataloader``: ``torch.utils.data.DataLoader`` over ``UNBCFrames`` (one h5py read per
  item, opened lazily in each loader worker), ``WeightedRandomSampler`` as the original
  did, ``num_workers`` 0, 1 and 2 (persistent workers); the best is the baseline;
- ``platform``: the workload's own path, ``PainWorkload.datasets`` → ``affectlab.train.run.fit``
  → ``train_loop_per_worker`` in a Ray Train worker (Ray Data decodes in its tasks).

Figures: an epoch's training time per row (``train_seconds / train_rows``, so the
Poisson-drawn epoch length of the platform does not matter), and the feed alone (rows/s
delivered, no step: ``affectlab.train.loop.epoch_batches`` in a Train worker against
iterating the ``DataLoader``). Epoch 0 of each is discarded (start-up); the next
``repeats`` epochs are the repeats, their median the figure.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    import affectlab  # noqa: F401
except ImportError:  # not installed: use the source root, as the jobs do
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_utils import load_average, median, ratio, summary, torch_threads  # noqa: E402

FOLD = 0


# -- the baseline: what a lab writes with torch.utils.data ---------------------------------
class UNBCFrames:
    """A map-style ``torch.utils.data.Dataset`` of UNBC training samples: one h5py read and
    ``to_chw`` decode per face and per reference, as a hand-written loader does it."""

    def __init__(self, frames_path: str, table, refs: np.ndarray, size: int):
        from affectlab.constants.pain import AU_NAMES

        self.frames_path, self.size = str(frames_path), size
        self.frame = table["frame"].to_numpy(np.int64)
        self.refs = refs.astype(np.int64)
        self.pspi = table["pspi"].to_numpy(np.float32)
        self.aus = table[list(AU_NAMES)].to_numpy(np.float32)
        self.subject = table["subject_id"].to_numpy(np.int64)
        self._file, self._pid = None, None

    def __len__(self) -> int:
        return len(self.frame)

    def _images(self):
        import h5py

        if self._file is None or self._pid != os.getpid():  # h5py handles do not survive a fork
            self._file, self._pid = h5py.File(self.frames_path, "r"), os.getpid()
        return self._file["image"]

    def __getitem__(self, i: int) -> dict:
        from affectlab.data.pain import to_chw

        images = self._images()
        return {
            "image": to_chw(images[int(self.frame[i])], self.size),
            "reference": np.stack([to_chw(images[int(r)], self.size) for r in self.refs[i]]),
            "pspi": self.pspi[i], "aus": self.aus[i], "subject_id": self.subject[i], "sample_id": self.frame[i],
        }  # fmt: skip

    def __getstate__(self):  # loader workers open their own handle
        return {**self.__dict__, "_file": None, "_pid": None}


def fold_training_data(workload, cfg):
    """The fold's training table, its training references and draw weights, as the workload
    builds them (``PainWorkload.datasets``)."""
    from affectlab.data import pain as pain_data
    from affectlab.data.unbc import UNBC

    unbc = UNBC.open(cfg.data_dir, cfg.protocol)
    train = unbc.fold_tables(FOLD, cfg.inner_val_fraction, cfg.seed)["train"]
    refs = pain_data.training_references(train, 1, cfg.seed)
    return unbc.paths.frames, train, refs, pain_data.sample_weights(train)


def make_loader(dataset, weights: np.ndarray, batch_size: int, num_workers: int, seed: int, pin_memory: bool = False):
    import torch
    from torch.utils.data import DataLoader, WeightedRandomSampler

    sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(weights), replacement=True,
                                    generator=torch.Generator().manual_seed(seed))  # fmt: skip
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      persistent_workers=num_workers > 0, pin_memory=pin_memory)  # fmt: skip


def plain_epoch(workload, model, optimizer, loader, cfg, generator) -> dict:
    """One training epoch, the step written as the platform loop writes it (AMP is off on CPU)."""
    import torch

    model.train()
    started, waited, rows, steps = time.perf_counter(), 0.0, 0, 0
    batches = iter(loader)
    while True:
        t0 = time.perf_counter()
        batch = next(batches, None)
        waited += time.perf_counter() - t0
        if batch is None:
            break
        loss, _ = workload.train_step(model, batch, cfg, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
        optimizer.step()
        loss.item()
        rows += len(batch["pspi"])
        steps += 1
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": rows, "steps": steps, "data_seconds": waited, "s_per_row": seconds / rows}


def dataloader_side(workload, cfg, repeats: int, worker_counts: tuple[int, ...], with_epochs: bool = True) -> dict:
    """Feed and (``with_epochs``) training epochs of the DataLoader baseline, for each ``num_workers``."""
    import torch

    frames, train, refs, weights = fold_training_data(workload, cfg)
    dataset = UNBCFrames(frames, train, refs, cfg.image_size)
    out = {"rows": len(dataset)}
    with torch_threads(1):
        for workers in worker_counts:
            loader = make_loader(dataset, weights, cfg.batch_size, workers, cfg.seed)
            feed = []
            for _ in range(repeats + 1):
                started, n = time.perf_counter(), 0
                for batch in loader:
                    n += len(batch["pspi"])
                feed.append(n / (time.perf_counter() - started))
            out[f"num_workers_{workers}"] = {"feed_rows_per_s": summary(feed[1:])}
            if not with_epochs:
                continue
            torch.manual_seed(cfg.seed)
            model = workload.build_model(cfg)
            optimizer = torch.optim.AdamW(workload.param_groups(model, cfg))
            generator = torch.Generator().manual_seed(cfg.seed)
            epochs = [plain_epoch(workload, model, optimizer, loader, cfg, generator) for _ in range(repeats + 1)]
            del loader  # stops its persistent workers
            out[f"num_workers_{workers}"].update({
                "epoch_s_per_row": summary([e["s_per_row"] for e in epochs[1:]]),
                "epoch_seconds": summary([e["seconds"] for e in epochs[1:]]),
                "data_wait_fraction": summary([e["data_seconds"] / e["seconds"] for e in epochs[1:]]),
                "steps_per_epoch": epochs[-1]["steps"],
            })
    by_feed = max(worker_counts, key=lambda w: out[f"num_workers_{w}"]["feed_rows_per_s"]["median"])
    out["best_feed_num_workers"] = by_feed
    out["best_feed_rows_per_s"] = out[f"num_workers_{by_feed}"]["feed_rows_per_s"]["median"]
    if with_epochs:
        by_epoch = min(worker_counts, key=lambda w: out[f"num_workers_{w}"]["epoch_s_per_row"]["median"])
        out["best_epoch_num_workers"] = by_epoch
        out["best_epoch_s_per_row"] = out[f"num_workers_{by_epoch}"]["epoch_s_per_row"]["median"]
    return out


# -- the platform: the workload's datasets, the platform's Train worker ---------------------
def platform_epochs(workload, cfg, storage: str, log_path: Path) -> list[dict]:
    """Every epoch's metrics of one platform run (``fit``) on the fold's train and val splits."""
    from affectlab.train.run import fit
    from bench_train import MetricsLog

    datasets = workload.datasets(cfg, FOLD)
    fit(workload, cfg, {"train": datasets["train"], "val": datasets["val"]}, storage, f"bench-epochs-{time.time_ns()}",
        callbacks=[MetricsLog(str(log_path))])  # fmt: skip
    return [m for m in MetricsLog.read(log_path) if "train_seconds" in m]


def run_pain_bench(workdir: Path, quick: bool = False) -> dict:
    from affectlab.data.synthetic_pain import write_synthetic_unbc
    from affectlab.ray_utils import init_ray
    from affectlab.workloads import get_workload
    from affectlab.workloads.pain import PRESETS
    from bench_train import cached_and_streamed_feeds

    repeats = 1 if quick else 3
    workers = (0, 2) if quick else (0, 1, 2)
    sequences = 2 if quick else 3
    data_dir = write_synthetic_unbc(workdir / "unbc", sequences_per_subject=sequences, frames_per_sequence=20, size=64)
    workload = get_workload("pain")
    cfg = workload.make_config({**PRESETS["tiny"], "data_dir": str(data_dir), "epochs": repeats + 1, "cpus_per_worker": 1.0})
    results = {"load_average_1m_at_start": load_average(), "repeats": repeats, "fold": FOLD,
               "config": {k: getattr(cfg, k) for k in ("backbone", "image_size", "batch_size", "cpus_per_worker")}}  # fmt: skip
    results["dataloader"] = dataloader_side(workload, cfg, repeats, workers)

    init_ray()
    storage = str((workdir / "ray_results").resolve())
    feed_run = cached_and_streamed_feeds(workload, cfg, FOLD, storage, repeats + 1)
    feed, streamed = feed_run["rows_per_s"], feed_run["streamed"]["rows_per_s"]
    epochs = platform_epochs(workload, cfg, storage, workdir / "epochs.jsonl")[1:]
    s_per_row = [e["train_seconds"] / max(1, e["train_rows"]) for e in epochs]
    results["platform"] = {
        "feed_rows_per_s": summary(feed[1:]),
        "feed_rows_per_s_epoch0": feed[0],
        "datasets_seconds": feed_run["datasets_seconds"],
        "streamed_feed_rows_per_s": summary(streamed[1:]),
        "streamed_feed_first_batch_s": summary(feed_run["streamed"]["first_batch_s"][1:]),
        "feed_first_batch_s": summary(feed_run["first_batch_s"][1:]),
        "epoch_s_per_row": summary(s_per_row),
        "epoch_seconds": summary([e["train_seconds"] for e in epochs]),
        "data_wait_fraction": summary([e["train_data_seconds"] / e["train_seconds"] for e in epochs]),
        "validation_seconds": summary([e["epoch_seconds"] - e["train_seconds"] for e in epochs]),
        "steps_per_epoch": [e["train_steps"] for e in epochs],
    }
    dl = results["dataloader"]
    results["ratios"] = {
        "epoch_vs_dataloader": ratio(median(s_per_row), dl["best_epoch_s_per_row"]),
        "feed_vs_dataloader": ratio(median(feed[1:]), dl["best_feed_rows_per_s"]),
        "streamed_feed_vs_dataloader": ratio(median(streamed[1:]), dl["best_feed_rows_per_s"]),
    }
    if not quick:
        results["feed_4x_rows"] = feed_at_4x_rows(workload, cfg, workdir, repeats, workers, storage)
        results["ratios"]["feed_vs_dataloader_4x_rows"] = results["feed_4x_rows"]["ratio"]
        results["ratios"]["streamed_feed_vs_dataloader_4x_rows"] = results["feed_4x_rows"]["streamed_ratio"]
    return results


def feed_at_4x_rows(workload, cfg, workdir: Path, repeats: int, workers: tuple[int, ...], storage: str) -> dict:
    """The feed, cached and streamed, on 4× the rows per epoch (twice the sequences, twice
    their length): a streamed split's pipeline starts again every epoch (~0.3 s to the first
    batch on 2 cores), a cost that the small benchmark epoch (under a second) magnifies and a
    real UNBC fold (~38k frames) does not."""
    from affectlab.data.synthetic_pain import write_synthetic_unbc
    from affectlab.train.config import config_to_dict
    from bench_train import cached_and_streamed_feeds

    data_dir = write_synthetic_unbc(workdir / "unbc_4x", sequences_per_subject=2 * 3, frames_per_sequence=2 * 20, size=64)
    big = workload.make_config({**config_to_dict(cfg), "data_dir": str(data_dir)})
    dl = dataloader_side(workload, big, repeats, workers, with_epochs=False)
    run = cached_and_streamed_feeds(workload, big, FOLD, storage, repeats + 1)
    streamed = run["streamed"]
    return {
        "rows": dl["rows"],
        "dataloader_best_rows_per_s": dl["best_feed_rows_per_s"],
        "dataloader_best_num_workers": dl["best_feed_num_workers"],
        "platform_rows_per_s": summary(run["rows_per_s"][1:]),
        "platform_first_batch_s": summary(run["first_batch_s"][1:]),
        "streamed_rows_per_s": summary(streamed["rows_per_s"][1:]),
        "streamed_first_batch_s": summary(streamed["first_batch_s"][1:]),
        "ratio": ratio(median(run["rows_per_s"][1:]), dl["best_feed_rows_per_s"]),
        "streamed_ratio": ratio(median(streamed["rows_per_s"][1:]), dl["best_feed_rows_per_s"]),
    }


if __name__ == "__main__":
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        try:
            print(json.dumps(run_pain_bench(Path(tmp), quick="--quick" in sys.argv), indent=2, default=float))
        finally:
            ray.shutdown()
