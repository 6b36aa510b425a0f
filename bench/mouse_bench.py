"""Mouse video windows: the platform's Ray Data feed against a PyTorch ``DataLoader``.

    python bench/mouse_bench.py [--quick]     # prints JSON; bench/run.py calls run_mouse_bench()

Both read the training windows of the same synthetic dataset (native MP4 + DLC pose +
annotation CSVs) with the same decode, ``affectlab.data.mouse_windows.load_windows`` (seek,
read, grayscale, resize, slice and interpolate the pose, class weights):

- ``dataloader``: a map-style ``Dataset`` of the same window table (one window per item),
  shuffled, ``num_workers`` 0, 1 and 2 (persistent workers); the best is the baseline;
- ``platform``: ``MouseWorkload.datasets(...)["train"]`` read by a Ray Train worker through
  ``affectlab.train.loop.epoch_batches``, as the training loop reads it.

Windows/s per epoch; the first epoch of each is discarded (worker start-up), the next
``repeats`` are the repeats and their median the figure.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

try:
    import affectlab  # noqa: F401
except ImportError:  # not installed: use the source root, as the jobs do
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_utils import load_average, median, ratio, summary, torch_threads  # noqa: E402


class MouseWindows:
    """A map-style ``torch.utils.data.Dataset``: one decoded window per item, by the same
    ``load_windows`` the Ray Data pipeline maps over its batches."""

    def __init__(self, items: list[dict], image_size: int, min_likelihood: float, class_weights):
        self.items, self.image_size, self.min_likelihood, self.class_weights = items, image_size, min_likelihood, class_weights

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        import numpy as np

        from affectlab.data.mouse_windows import load_windows

        item = self.items[i]
        batch = {k: np.asarray([v]) for k, v in item.items()}
        window = load_windows(batch, self.image_size, self.min_likelihood, self.class_weights)
        return {k: v[0] for k, v in window.items()}


def training_items(workload, cfg) -> tuple[list[dict], object]:
    """The training window table and class weights, as ``MouseWorkload.datasets`` builds them."""
    from affectlab.data.mouse_dataset import training_windows
    from affectlab.data.mouse_windows import trial_labels

    parts = workload.splits(cfg, None)
    labels = trial_labels([t for _, t in parts["train"]])
    return training_windows(
        parts["train"], labels, cfg.window, cfg.train_stride or max(1, cfg.window // 2),
        oversample=cfg.oversample, oversample_max=cfg.oversample_max, class_weights=cfg.class_weights, seed=cfg.seed,
    )  # fmt: skip


def dataloader_rates(dataset, batch_size: int, num_workers: int, epochs: int, seed: int) -> list[float]:
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                        persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed))  # fmt: skip
    rates = []
    for _ in range(epochs):
        started, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch["ok"])
        rates.append(n / (time.perf_counter() - started))
    return rates


def run_mouse_bench(workdir: Path, quick: bool = False, n_animals: int = 6, video_size: int = 128, model: str = "c3d") -> dict:
    from affectlab.data.synthetic_mouse import write_synthetic_mouse
    from affectlab.ray_utils import init_ray
    from affectlab.workloads import get_workload
    from affectlab.workloads.mouse import preset_values
    from bench_train import cached_and_streamed_feeds

    repeats = 1 if quick else 3
    worker_counts = (0, 2) if quick else (0, 1, 2)
    data = write_synthetic_mouse(workdir / "mice", n_animals=n_animals, size=video_size, seed=0)
    workload = get_workload("mouse")
    cfg = workload.make_config({**preset_values("tiny", model), "data_dir": str(data), "cpus_per_worker": 1.0})
    items, weights = training_items(workload, cfg)
    results = {"load_average_1m_at_start": load_average(), "repeats": repeats, "windows": len(items), "model": model,
               "window_frames": cfg.window, "video_size": video_size, "image_size": cfg.input_size, "batch_size": cfg.batch_size}  # fmt: skip

    dataset = MouseWindows(items, cfg.input_size, cfg.min_likelihood, weights)
    with torch_threads(1):  # as in a 1-CPU Train worker
        dl = {w: dataloader_rates(dataset, cfg.batch_size, w, repeats + 1, cfg.seed) for w in worker_counts}
    results["dataloader"] = {f"num_workers_{w}": summary(r[1:]) for w, r in dl.items()}
    best = max(worker_counts, key=lambda w: median(dl[w][1:]))
    results["dataloader"].update(best_num_workers=best, best_windows_per_s=median(dl[best][1:]))

    init_ray()
    storage = str((workdir / "ray_results").resolve())
    run = cached_and_streamed_feeds(workload, cfg, None, storage, repeats + 1)
    feed, streamed = run["rows_per_s"], run["streamed"]["rows_per_s"]
    results["platform"] = {"windows_per_s": summary(feed[1:]), "windows_per_s_epoch0": feed[0],
                           "datasets_seconds": run["datasets_seconds"], "streamed_windows_per_s": summary(streamed[1:])}  # fmt: skip
    best = results["dataloader"]["best_windows_per_s"]
    results["ratios"] = {"mouse_feed_vs_dataloader": ratio(median(feed[1:]), best),
                         "mouse_streamed_feed_vs_dataloader": ratio(median(streamed[1:]), best)}  # fmt: skip
    return results


if __name__ == "__main__":
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        try:
            print(json.dumps(run_mouse_bench(Path(tmp), quick="--quick" in sys.argv), indent=2, default=float))
        finally:
            ray.shutdown()
