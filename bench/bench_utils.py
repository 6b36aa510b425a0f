"""Pure helpers the benchmarks share: medians of repeats, percentiles, the CV overhead
formula, FLOP counts and the load on the machine. No Ray here (tests import this module)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation between the two nearest
    ranks (numpy's default): for n sorted values, rank ``(n - 1) * q / 100``. None if empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    ordered = sorted(float(v) for v in values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """The median of repeats, ignoring NaNs (a repeat that measured nothing)."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.median(finite)) if finite else float("nan")


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or not denominator or not np.isfinite(denominator):
        return float("nan")
    return float(numerator) / float(denominator)


def summary(samples: Sequence[float]) -> dict:
    """``{"median": …, "samples": […]}``: every figure keeps its repeats beside the median."""
    return {"median": median(samples), "samples": [float(s) for s in samples]}


def cv_overhead(wall_s: float, trial_seconds: Sequence[float], concurrency: int) -> dict:
    """The platform's overhead in a CV run: ``wall − Σ(trial's own training time) ÷ concurrency``.

    With ``concurrency`` folds training at once, a perfect scheduler finishes in
    ``Σ own / concurrency``; everything above that (process and actor start-up, Ray Data
    pipeline start, checkpoint persistence, waiting for a slot) is the platform's cost.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    ideal = float(sum(trial_seconds)) / concurrency
    overhead = float(wall_s) - ideal
    return {"wall_s": float(wall_s), "ideal_s": ideal, "overhead_s": overhead, "overhead_fraction": overhead / float(wall_s)}


def forward_flop_counts(model, *inputs, **kwargs) -> dict[str, int]:
    """FLOPs of one forward pass of ``model(*inputs)`` per aten operator (``"aten::mm"``…),
    counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add is
    2 FLOPs; matmuls, convolutions and attention are counted, element-wise work is not)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs, **kwargs)
    return {str(op).replace(".", "::", 1): int(n) for op, n in counter.get_flop_counts()["Global"].items()}


def forward_flops(model, *inputs, **kwargs) -> int:
    """Total FLOPs of one forward pass (``forward_flop_counts`` summed)."""
    return sum(forward_flop_counts(model, *inputs, **kwargs).values())


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """PyTorch's intra-op thread count set to ``threads`` inside the block, restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_calls(fn: Callable[[], object], min_seconds: float, min_calls: int = 3, warmup: int = 1) -> float:
    """Seconds per call of ``fn``: the median of calls timed until both ``min_calls`` calls
    and ``min_seconds`` have passed, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def load_average() -> float:
    """The 1-minute load average: other work on the machine skews every figure."""
    return os.getloadavg()[0]
