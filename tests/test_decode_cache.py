"""Decoded splits that fit are decoded once and kept in the object store; the rows are the
same either way, and a split too large for the store streams."""

import numpy as np
import pytest
import ray
from ray.data.dataset import MaterializedDataset

from affectlab.data.decoding import CACHE_SHARE, cache_decoded
from affectlab.workloads.mouse import PRESETS, MouseConfig, MouseWorkload
from affectlab.workloads.pain import PainWorkload


def _rows(ds, keys: tuple[str, ...], columns: list[str]) -> dict[str, np.ndarray]:
    """``ds``'s columns as arrays, its rows ordered by ``keys`` (the pipeline's order varies)."""
    rows = ds.select_columns([*keys, *columns]).take_all()
    arrays = {c: np.stack([r[c] for r in rows]) for c in [*keys, *columns]}
    order = np.lexsort([arrays[k] for k in reversed(keys)])
    return {c: v[order] for c, v in arrays.items()}


def test_pain_splits_are_cached_when_they_fit_with_the_same_rows(ray_cluster, tiny_pain_config):
    workload = PainWorkload()
    cached = workload.datasets(tiny_pain_config, fold=0)
    tiny_pain_config.cache_data = False
    streamed = workload.datasets(tiny_pain_config, fold=0)
    assert set(cached) == set(streamed) == {"train", "train_eval", "val", "test"}
    for split in cached:
        # train and val are read every epoch; train_eval and test once, at the end
        assert isinstance(cached[split], MaterializedDataset) == (split in ("train", "val")), split
        assert not isinstance(streamed[split], MaterializedDataset), split
        a, b = (_rows(d[split], ("sample_id",), ["image", "reference", "pspi"]) for d in (cached, streamed))
        assert len(a["sample_id"]) > 100
        for column in a:
            np.testing.assert_array_equal(a[column], b[column], err_msg=f"{split}.{column}")


def test_mouse_training_windows_are_cached_with_the_same_windows(ray_cluster, mouse_dir):
    workload = MouseWorkload()
    cfg = MouseConfig(**{**PRESETS["tiny"], "data_dir": str(mouse_dir), "window": 16, "train_stride": 64, "image_size": 16})
    cached = workload.datasets(cfg, None)["train"]
    cfg.cache_data = False
    streamed = workload.datasets(cfg, None)["train"]
    assert isinstance(cached, MaterializedDataset) and not isinstance(streamed, MaterializedDataset)
    # oversampling repeats windows: the same multiset of (trial, row), each with the same content
    a, b = (_rows(d, ("trial_id", "row"), ["frames", "keypoints", "labels"]) for d in (cached, streamed))
    assert len(a["row"]) > 20
    for column in a:
        np.testing.assert_array_equal(a[column], b[column], err_msg=column)


@pytest.mark.parametrize("cache, share_of_store, materialized", [
    (None, 0.5 * CACHE_SHARE, True),  # fits: cached
    (None, 2.0 * CACHE_SHARE, False),  # too large for its share of the store: streamed
    (True, 2.0 * CACHE_SHARE, True),  # asked for: cached (Ray spills what does not fit)
    (False, 0.0, False),  # refused: streamed
])  # fmt: skip
def test_the_cache_decision_follows_the_object_store(ray_cluster, cache, share_of_store, materialized):
    store = ray.cluster_resources()["object_store_memory"]
    ds = ray.data.range(10).map_batches(lambda b: {"id": b["id"] * 2})
    out = cache_decoded(ds, int(share_of_store * store), cache)
    assert isinstance(out, MaterializedDataset) == materialized
    assert sorted(r["id"] for r in out.take_all()) == list(range(0, 20, 2))
