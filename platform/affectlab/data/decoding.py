"""How many decode tasks Ray Data runs at once.

Decode tasks ask for a quarter of a CPU (``num_cpus=0.25``) so that they still find a
slot beside Train workers and Tune trials that hold whole CPUs. On a laptop that slack is
made by ``affectlab.ray_utils.init_ray``, which declares at least 4 logical CPUs: on 2
cores Ray Data would then run up to 12 decode processes at once. They fight the Train
worker for the cores, and Ray kills the idle ones above its soft limit (one per logical
CPU) between epochs, so every epoch starts and imports fresh worker processes again:
epochs 1-5 of a short pain run read 330-700 rows/s where, with as many tasks as cores,
every epoch from the second on reads 1700-2000 (docs/performance.md).

On such a single-node instance the decode operators are therefore capped at the
machine's cores. A cluster's nodes declare their real CPUs and may join while a job runs;
there Ray schedules decode tasks by what is free, uncapped.

A split whose decoded rows fit in a tenth of the cluster's object store is decoded once
and kept there (``cache_decoded``): every epoch after the first then reads blocks instead
of running decode tasks beside the Train worker. The decode is deterministic and all
randomness (augmentation, the weighted draw, the shuffle) happens in the worker, so the
cache changes no row a step sees (docs/performance.md).
"""

from __future__ import annotations

import os

import ray


def decode_compute() -> ray.data.TaskPoolStrategy | None:
    """``compute=`` for a decode ``map_batches``: at most one task per core on a local
    instance that declares more CPUs than the machine has; None (Ray's default) elsewhere."""
    if not ray.is_initialized():
        return None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cores = os.cpu_count() or 1
    if len(nodes) != 1 or nodes[0].get("Resources", {}).get("CPU", 0) <= cores:
        return None
    return ray.data.TaskPoolStrategy(size=cores)


CACHE_SHARE = 0.1  # of the cluster's object store, for one split's decoded rows
EPOCH_SPLITS = ("train", "val")  # read every epoch; the other splits once, at the end


def split_cache(split: str, cache: bool | None) -> bool | None:
    """The ``cache`` argument of ``cache_decoded`` for ``split``: a config's ``cache_data``
    for the splits read every epoch, False for those read once (caching them saves nothing)."""
    return cache if split in EPOCH_SPLITS else False


def cache_decoded(ds: ray.data.Dataset, nbytes: int, cache: bool | None = None) -> ray.data.Dataset:
    """``ds`` decoded once and held in the object store (``Dataset.materialize``) when
    ``cache`` is True, or None and ``nbytes`` (the decoded split's size) fits in
    ``CACHE_SHARE`` of the cluster's object store; otherwise streamed, decoded every epoch."""
    if cache is None:
        store = ray.cluster_resources().get("object_store_memory", 0) if ray.is_initialized() else 0
        cache = nbytes <= CACHE_SHARE * store
    return ds.materialize() if cache else ds
