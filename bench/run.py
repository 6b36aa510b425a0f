"""`make bench`: every figure is a ratio against a baseline measured in the same run.

    python bench/run.py --output bench/results/bench.json [--only pain,serving,mouse]
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

SUITES = ("pain", "serving", "mouse")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", default="bench/results/bench.json", help="where the JSON goes")
    p.add_argument("--only", default=",".join(SUITES), help=f"comma-separated suites out of {SUITES}")
    args = p.parse_args()
    suites = args.only.split(",")
    unknown = set(suites) - set(SUITES)
    if unknown:
        p.error(f"unknown suites {sorted(unknown)}; choose from {SUITES}")

    results = {"machine": {"cpus": os.cpu_count(), "python": stdlib_platform.python_version(),
                           "load_average_1m": os.getloadavg()[0], "started": time.strftime("%Y-%m-%d %H:%M:%S")}}  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        if "pain" in suites:
            from pain_bench import run_pain_bench

            results["pain"] = run_pain_bench(Path(work) / "pain")
        if "serving" in suites:
            from serve_bench import run_serving_bench

            results["serving"] = run_serving_bench()
        if "mouse" in suites:
            from mouse_bench import run_mouse_bench

            results["mouse"] = run_mouse_bench()
    # the headline figures first
    headline = {}
    if "pain" in results:
        headline["ray_data_feed_vs_plain_h5py"] = results["pain"]["feed"]["ratio_ray_data_vs_plain"]
        headline["platform_step_vs_bare_pytorch"] = results["pain"]["train_step"]["ratio_platform_vs_bare"]
    if "mouse" in results:
        headline["mouse_windows_ray_data_vs_one_process"] = results["mouse"]["mouse_video_pipeline"]["ratio_ray_data_vs_single_process"]
    results = {"headline": headline, **results}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps(results, indent=2, default=float))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
