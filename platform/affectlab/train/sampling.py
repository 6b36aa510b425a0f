"""Weighted sampling that is redrawn every epoch, seeded, and stays streaming.

A workload that wants rows drawn with unequal probability (pain: PSPI ≥ 1 frames twice as
often, as the original's ``WeightedRandomSampler``) gives its training rows a
``sample_weight`` column (mean 1) and a unique ``sample_id``. Every epoch each arriving row
is then repeated ``m ~ Poisson(sample_weight)`` times, where ``m`` comes from a hash of
``(seed, epoch, sample_id)``: the streaming ("Poisson bootstrap") form of drawing N rows
with replacement, redrawn every epoch, identical for the same seed whatever order Ray Data
delivers the rows in, and needing no look at the whole table.

Repeated rows are spread through a buffer of a few batches before the fixed-size batches
are cut, so a row's copies rarely share a batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from scipy.stats import poisson

WEIGHT_KEY, ID_KEY = "sample_weight", "sample_id"
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash (SplitMix64's finaliser), vectorised."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def draw_counts(sample_ids: np.ndarray, rates: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """How often each row is used this epoch: Poisson(rate), a pure function of its id."""
    key = _splitmix64(np.uint64(seed & 0xFFFFFFFF) << np.uint64(32) | np.uint64(epoch & 0xFFFFFFFF))
    with np.errstate(over="ignore"):
        h = _splitmix64(np.asarray(sample_ids).astype(np.uint64) ^ key)
    uniform = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53  # in [0, 1)
    return poisson.ppf(uniform, np.asarray(rates, np.float64)).astype(np.int64)


def weighted_epoch(
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    generator: torch.Generator,
    buffer_batches: int = 4,
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches without a ``sample_weight`` column pass through unchanged. Otherwise:
    re-cut ``batches`` into batches of ``batch_size`` with each row repeated by its draw.

    ``sample_weight`` must have mean 1 over the training set (the workload divides by the
    mean), so an epoch has the training set's size in expectation. The last, short batch
    is kept.
    """
    buffer: list[dict[str, torch.Tensor]] = []
    rows = 0
    for batch in batches:
        if WEIGHT_KEY not in batch:
            yield batch
            continue
        rates = batch[WEIGHT_KEY].detach().cpu().numpy()
        counts = draw_counts(batch[ID_KEY].detach().cpu().numpy(), rates, seed, epoch)
        index = torch.from_numpy(np.repeat(np.arange(len(counts)), counts)).to(batch[ID_KEY].device)
        buffer.append({k: v.index_select(0, index) for k, v in batch.items()})
        rows += len(index)
        if rows >= buffer_batches * batch_size:
            merged = _shuffled(buffer, generator)
            full = rows - rows % batch_size
            for start in range(0, full, batch_size):
                yield {k: v[start:start + batch_size] for k, v in merged.items()}
            buffer, rows = [{k: v[full:] for k, v in merged.items()}], rows - full
    if rows:
        merged = _shuffled(buffer, generator)
        for start in range(0, rows, batch_size):
            yield {k: v[start:start + batch_size] for k, v in merged.items()}


def _shuffled(parts: list[dict[str, torch.Tensor]], generator: torch.Generator) -> dict[str, torch.Tensor]:
    merged = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    n = len(merged[ID_KEY])
    order = torch.randperm(n, generator=generator, device=generator.device).to(merged[ID_KEY].device)
    return {k: v.index_select(0, order) for k, v in merged.items()}
