"""`make bench`: the platform against what a lab would write instead, measured in one run.

    python bench/run.py --output bench/results/bench.json [--only cpu,pain,mouse,cv,serving,probtalk3d] [--quick]

Every figure is a ratio against a baseline measured in the same run, repeated 3 times
(``--quick``: once, with fewer rows and requests, for development) with the median
reported; ``headline`` collects the ratios the issue tracks. The machine's load average
is recorded at the start and end of every suite: other work on a shared machine skews
every figure. See docs/performance.md for what each figure means and the breakdowns.
"""

import argparse
import json
import os
import platform as stdlib_platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "platform")]

SUITES = ("cpu", "pain", "mouse", "cv", "serving", "probtalk3d")

# headline key → (suite, path of keys into that suite's results)
HEADLINE = {
    "epoch_vs_dataloader": ("pain", ("ratios", "epoch_vs_dataloader")),
    "feed_vs_dataloader": ("pain", ("ratios", "feed_vs_dataloader")),
    "feed_vs_dataloader_4x_rows": ("pain", ("ratios", "feed_vs_dataloader_4x_rows")),
    "streamed_feed_vs_dataloader": ("pain", ("ratios", "streamed_feed_vs_dataloader")),
    "streamed_feed_vs_dataloader_4x_rows": ("pain", ("ratios", "streamed_feed_vs_dataloader_4x_rows")),
    "mouse_feed_vs_dataloader": ("mouse", ("ratios", "mouse_feed_vs_dataloader")),
    "mouse_streamed_feed_vs_dataloader": ("mouse", ("ratios", "mouse_streamed_feed_vs_dataloader")),
    "serve_vs_uvicorn_32": ("serving", ("ratios", "serve_vs_uvicorn_32")),
    "serve_p99_vs_uvicorn_32": ("serving", ("ratios", "serve_p99_vs_uvicorn_32")),
    "serve_unbatched_vs_uvicorn_32": ("serving", ("ratios", "serve_unbatched_vs_uvicorn_32")),
    "serve_batched_vs_unbatched_32": ("serving", ("ratios", "serve_batched_vs_unbatched_32")),
    "serve_ceiling_batched_vs_batch1": ("serving", ("ratios", "ceiling_batched_vs_batch1")),
    "cv_overhead_fraction": ("cv", ("ratios", "cv_overhead_fraction")),
    "cv_platform_vs_sequential_wall": ("cv", ("ratios", "cv_platform_vs_sequential_wall")),
    "forward_vs_matmul": ("cpu", ("ratios", "forward_vs_matmul")),
    "forward_matmuls_vs_matmul": ("cpu", ("ratios", "forward_matmuls_vs_matmul")),
    "vitpain_small_224_forward_vs_matmul": ("cpu", ("ratios", "vitpain_small_224_forward_vs_matmul")),
    "c3d_forward_vs_matmul": ("cpu", ("ratios", "c3d_forward_vs_matmul")),
    "probtalk3d_generation_rtf_tiny": ("probtalk3d", ("generation", "tiny", "rtf_1_samples")),
    "probtalk3d_generation_rtf_paper": ("probtalk3d", ("generation", "paper", "rtf_1_samples")),
    "probtalk3d_feed_ray_data_vs_plain": ("probtalk3d", ("feed", "ratio_ray_data_vs_plain")),
}


def run_suite(name: str, work: Path, quick: bool) -> dict:
    if name == "cpu":
        from cpu_bench import run_cpu_bench

        return run_cpu_bench(quick)
    if name == "pain":
        from pain_bench import run_pain_bench

        return run_pain_bench(work, quick)
    if name == "mouse":
        from mouse_bench import run_mouse_bench

        return run_mouse_bench(work, quick)
    if name == "cv":
        from cv_bench import run_cv_bench

        return run_cv_bench(work, quick)
    if name == "serving":
        from serve_bench import run_serving_bench

        return run_serving_bench(quick)
    if name == "probtalk3d":
        from probtalk3d_bench import run_probtalk3d_bench

        if quick:
            return run_probtalk3d_bench(work, seconds=2.0, repeats=1, passes=2, warmup_passes=1)
        return run_probtalk3d_bench(work, repeats=3, passes=4, warmup_passes=1)
    raise ValueError(name)


def headline(results: dict) -> dict:
    out = {}
    for key, (suite, path) in HEADLINE.items():
        if suite not in results:
            continue
        value = results[suite]
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:  # a figure only the full run measures is absent from --quick
            out[key] = value
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", default="bench/results/bench.json", help="where the JSON goes")
    p.add_argument("--only", default=",".join(SUITES), help=f"comma-separated suites out of {SUITES}")
    p.add_argument("--quick", action="store_true", help="one repeat, fewer rows and requests (development only)")
    args = p.parse_args()
    suites = [s for s in args.only.split(",") if s]
    unknown = set(suites) - set(SUITES)
    if unknown:
        p.error(f"unknown suites {sorted(unknown)}; choose from {SUITES}")

    import ray

    machine = {"cpus": os.cpu_count(), "python": stdlib_platform.python_version(), "load_average_1m": os.getloadavg()[0],
               "started": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick}  # fmt: skip
    results, timings = {}, {}
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as work:
            for name in SUITES:  # a fixed order: the Ray-free baselines of each suite run before its platform side
                if name not in suites:
                    continue
                t0, load0 = time.perf_counter(), os.getloadavg()[0]
                print(f"bench: {name} ...", file=sys.stderr, flush=True)
                results[name] = run_suite(name, Path(work) / name, args.quick)
                timings[name] = {"seconds": time.perf_counter() - t0, "load_average_1m_start": load0, "load_average_1m_end": os.getloadavg()[0]}
    finally:
        ray.shutdown()
    machine.update(seconds=time.perf_counter() - started, load_average_1m_end=os.getloadavg()[0], suites=timings)
    results = {"headline": headline(results), "machine": machine, **results}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps({"headline": results["headline"], "machine": machine}, indent=2, default=float))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
