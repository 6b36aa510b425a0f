"""The benchmark's pure helpers, checked against hand-worked figures (no timing asserted)."""

import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_utils  # noqa: E402
import run as bench_run  # noqa: E402
from serve_bench import choose_batching  # noqa: E402


def test_percentile_interpolates_between_ranks():
    values = [40, 10, 30, 20]  # sorted 10 20 30 40; rank = 3 q / 100
    assert bench_utils.percentile(values, 0) == 10
    assert bench_utils.percentile(values, 50) == 25  # rank 1.5: halfway from 20 to 30
    assert bench_utils.percentile(values, 99) == pytest.approx(39.7)  # rank 2.97: 30 + 0.97 × 10
    assert bench_utils.percentile(values, 100) == 40
    assert bench_utils.percentile([7.0], 99) == 7.0
    assert bench_utils.percentile([], 50) is None
    with pytest.raises(ValueError):
        bench_utils.percentile(values, 101)


def test_median_skips_repeats_that_measured_nothing():
    assert bench_utils.median([3.0, float("nan"), 1.0, 2.0]) == 2.0
    assert bench_utils.median([None, 5.0]) == 5.0
    assert bench_utils.ratio(3.0, 0.0) != bench_utils.ratio(3.0, 0.0)  # NaN, not an exception


def test_cv_overhead_on_a_worked_example():
    # five folds at once took 100 s; each trial's own work was 40 s: a perfect scheduler
    # finishes in 5 × 40 / 5 = 40 s, so 60 s (60 %) is the platform's
    figures = bench_utils.cv_overhead(100.0, [40.0] * 5, concurrency=5)
    assert figures["ideal_s"] == 40.0
    assert figures["overhead_s"] == 60.0
    assert figures["overhead_fraction"] == pytest.approx(0.6)
    # one after the other (concurrency 1) the same trials leave nothing to the platform
    assert bench_utils.cv_overhead(200.0, [40.0] * 5, concurrency=1)["overhead_s"] == 0.0
    with pytest.raises(ValueError):
        bench_utils.cv_overhead(1.0, [1.0], concurrency=0)


def test_forward_flops_of_a_linear_layer_is_two_multiply_adds_per_weight_and_row():
    layer = torch.nn.Linear(8, 4)
    # [3, 8] @ [8, 4]: 3 × 4 outputs, each 8 multiply-adds = 2 FLOPs → 2 × 3 × 8 × 4
    assert bench_utils.forward_flops(layer, torch.zeros(3, 8)) == 192
    two = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    assert bench_utils.forward_flops(two, torch.zeros(3, 8)) == 192 + 2 * 3 * 4 * 2  # element-wise ReLU is free


def test_forward_flops_of_a_convolution():
    conv = torch.nn.Conv2d(2, 3, kernel_size=3, padding=1, bias=False)
    # every one of 3 × 5 × 5 outputs is a 2 × 3 × 3 dot product
    assert bench_utils.forward_flops(conv, torch.zeros(1, 2, 5, 5)) == 2 * (3 * 5 * 5) * (2 * 3 * 3)


def test_time_calls_runs_at_least_the_asked_calls():
    calls = []
    seconds = bench_utils.time_calls(lambda: calls.append(1), min_seconds=0.0, min_calls=4, warmup=2)
    assert len(calls) == 6 and seconds >= 0


def test_batching_is_chosen_from_the_ceiling():
    ceiling = {"batch_sizes": {"1": {"items_per_s": 100, "ms_per_batch": 10.0}, "2": {"items_per_s": 180, "ms_per_batch": 11.1},
                               "4": {"items_per_s": 290, "ms_per_batch": 13.8}, "8": {"items_per_s": 300, "ms_per_batch": 26.7}}}  # fmt: skip
    size, wait = choose_batching(ceiling)
    assert size == 4  # the smallest batch within 90 % of the best (300 items/s)
    assert wait == 0.01  # one request's model time at batch 1


def test_headline_picks_the_suite_figures():
    results = {"pain": {"ratios": {"epoch_vs_dataloader": 1.1, "feed_vs_dataloader": 1.3}},
               "probtalk3d": {"generation": {"tiny": {"rtf_1_samples": 40.0}, "paper": {"rtf_1_samples": 2.0}},
                              "feed": {"ratio_ray_data_vs_plain": 0.9}}}  # fmt: skip
    figures = bench_run.headline(results)
    assert figures == {"epoch_vs_dataloader": 1.1, "feed_vs_dataloader": 1.3, "probtalk3d_generation_rtf_tiny": 40.0,
                       "probtalk3d_generation_rtf_paper": 2.0, "probtalk3d_feed_ray_data_vs_plain": 0.9}  # fmt: skip
    json.dumps(figures)  # plain numbers
    required = {"epoch_vs_dataloader", "feed_vs_dataloader", "mouse_feed_vs_dataloader", "serve_vs_uvicorn_32",
                "serve_p99_vs_uvicorn_32", "serve_batched_vs_unbatched_32", "cv_overhead_fraction", "forward_vs_matmul"}  # fmt: skip
    assert required <= set(bench_run.HEADLINE)
    assert "probtalk3d" in bench_run.SUITES


def test_profile_stacks_fold_into_the_first_matching_category():
    from profile_platform import TRAIN_CATEGORIES, fold_stacks

    loop = "train_loop_per_worker (/x/platform/affectlab/train/loop.py:96)"
    raw = "\n".join([
        f"thread;{loop};__next__ (/x/platform/affectlab/train/loop.py:180);iter (/x/ray/data/iterator.py:9) 6",
        f"thread;{loop};train_step (/x/platform/affectlab/workloads/pain.py:170);forward (/x/platform/affectlab/models/vitpain.py:150) 3",
        f"thread;{loop};predict (/x/platform/affectlab/train/loop.py:85);forward (/x/platform/affectlab/models/vitpain.py:150) 1",
        "thread;poll (/x/grpc/_channel.py:5) 90",  # another thread: left out by keep=
    ])  # fmt: skip
    folded = fold_stacks(raw, TRAIN_CATEGORIES, keep="train_loop_per_worker")
    assert folded["samples"] == 10
    assert folded["share"] == {"wait for data (Ray Data → worker)": 0.6, "forward": 0.3, "validation": 0.1}
