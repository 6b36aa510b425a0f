"""Mouse video pipeline benchmark: aligned windows per second, Ray Data vs one process.

    python bench/mouse_bench.py          # prints JSON; bench/run.py calls run_mouse_bench()

Measured in one run on a freshly written synthetic dataset (native MP4 + DLC CSV/H5 +
annotation files), decoding the same windows both ways with the same function
(``affectlab.data.mouse_windows.read_window``: seek, read, grayscale, resize, slice pose):

- ``single_process``: a plain loop in this process;
- ``ray_data``: ``window_dataset(...)`` (``from_items`` -> ``map_batches(load_windows,
  num_cpus=0.25)``) read through ``iter_torch_batches``, as the training loop reads it.

Each is timed over ``passes`` passes and the first ``warmup_passes`` are discarded: Ray
Data's first epochs start its worker processes (each imports OpenCV and pandas and reads
its DLC files once), which on a busy 2-core machine takes more than one pass.
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

try:
    import affectlab  # noqa: F401
except ImportError:  # not installed: use the source root, as the jobs do
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))


def run_mouse_bench(n_animals: int = 3, video_size: int = 128, image_size: int = 64, window: int = 32,
                    passes: int = 5, warmup_passes: int = 2, batch_size: int = 8) -> dict:  # fmt: skip
    import numpy as np
    import ray

    from affectlab.data.mouse import discover
    from affectlab.data.mouse_windows import read_window, trial_labels, window_dataset, window_items
    from affectlab.data.synthetic_mouse import write_synthetic_mouse
    from affectlab.ray_utils import init_ray

    results = {"load_average_1m_at_start": os.getloadavg()[0], "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_synthetic_mouse(Path(tmp), n_animals=n_animals, size=video_size, seed=0)
        trials = discover(data)
        items = window_items(trials, list(range(len(trials))), trial_labels(trials), window, window)
        results.update(windows=len(items), window_frames=window, video_size=video_size, image_size=image_size)

        rates = []
        for _ in range(passes):
            started = time.perf_counter()
            for it in items:
                read_window(it["video"], it["dlc"], it["trial_start"], it["trial_stop"], it["row"], window, image_size)
            rates.append(len(items) / (time.perf_counter() - started))
        single = float(np.mean(rates[warmup_passes:]))

        owns_ray = not ray.is_initialized()
        init_ray()
        try:
            dataset = window_dataset(items, image_size)
            ray_rates = []
            for _ in range(passes):
                started, n = time.perf_counter(), 0
                for batch in dataset.iter_torch_batches(batch_size=batch_size):
                    n += len(batch["ok"])
                if n != len(items):
                    raise RuntimeError(f"Ray Data returned {n} windows, expected {len(items)}")
                ray_rates.append(n / (time.perf_counter() - started))
        finally:
            if owns_ray:
                ray.shutdown()
    ray_data = float(np.mean(ray_rates[warmup_passes:]))
    results.update(
        single_process_windows_per_s=single,
        ray_data_windows_per_s=ray_data,
        ray_data_warmup_windows_per_s=ray_rates[:warmup_passes],
        passes=passes, warmup_passes=warmup_passes,
        ratio_ray_data_vs_single_process=ray_data / single,
        frames_per_s={"single_process": single * window, "ray_data": ray_data * window},
    )
    return {"mouse_video_pipeline": results}


if __name__ == "__main__":
    print(json.dumps(run_mouse_bench(), indent=2))
