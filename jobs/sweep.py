"""Hyper-parameter sweep of a workload on Ray Tune: Optuna proposes, ASHA stops early.

    python jobs/sweep.py --workload pain --space search_spaces/vitpain_tiny.yaml --synthetic --num-samples 4 --output runs/sweep
    ray job submit --working-dir . -- python jobs/sweep.py --workload pain --space search_spaces/vitpain.yaml \\
        --data-dir /data/unbc --num-samples 64 --cv --gpu --output /data/runs/sweep
    python jobs/sweep.py ...the same options... --resume        # after an interruption

Writes OUTPUT/trials.csv, OUTPUT/best.json, OUTPUT/best_checkpoint/ and OUTPUT/report.html.
"""

import _bootstrap  # noqa: F401  (makes affectlab importable without installing it)
import argparse
import sys
from pathlib import Path

import yaml

from _cli import HelpFormatter, add_cluster_options, cluster_values, resolve_paths

from affectlab.ray_utils import init_ray
from affectlab.tune.space import SpaceError, load_space
from affectlab.tune.sweep import SweepError, run_sweep
from affectlab.workloads import get_workload, workload_names


def settings(pairs: list[str]) -> dict:
    """``--set FIELD=VALUE`` pairs: values read as YAML; those naming an existing path, made absolute."""
    out = {}
    for pair in pairs:
        field, sep, text = pair.partition("=")
        if not sep or not field:
            sys.exit(f"error: --set expects FIELD=VALUE, got {pair!r}")
        value = yaml.safe_load(text) if text else ""
        if isinstance(value, str) and "://" not in value and Path(value).expanduser().exists():
            value = str(Path(value).expanduser().resolve())
        out[field] = value
    return out


# Settings that make a model paper-sized; a space that fixes them away from the synthetic
# preset is made for a GPU cluster.
SIZE_FIELDS = ("backbone", "image_size", "hidden", "window", "preset")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--workload", required=True, choices=workload_names(), help="which workload to sweep")
    p.add_argument("--space", required=True, help="search-space YAML (see docs/sweeps.md)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", help="the workload's data in its native layout")
    src.add_argument("--synthetic", action="store_true", help="write a small synthetic dataset under OUTPUT/data and sweep on it (tiny preset)")
    p.add_argument("--output", required=True, help="directory for trials.csv, best.json, best_checkpoint/, report.html")
    p.add_argument("--num-samples", type=int, default=8, help="trials to run")
    p.add_argument("--cv", action="store_true", help="objective = mean over the folds (trained in parallel inside each trial)")
    p.add_argument("--folds", help="with --cv: comma-separated folds (default: all)")
    p.add_argument("--fold", type=int, default=0, help="without --cv: the fold whose inner validation split scores a trial")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep in OUTPUT (same options)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as the cluster's resources fit)")
    p.add_argument("--seed", type=int, default=0, help="seed of Optuna's sampler")
    p.add_argument("--grace-period", type=int, default=2, help="ASHA: epochs every trial trains before it can be stopped")
    p.add_argument("--reduction-factor", type=float, default=2, help="ASHA: keep the best 1/factor at each rung")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a config value every trial starts from (repeatable; YAML values; paths resolved), e.g. prior_checkpoint=runs/p3d/prior")
    p.add_argument("--allow-paper-scale", action="store_true", help="with --synthetic: run a space whose fixed settings replace the small synthetic preset (paper-size models need a GPU cluster)")
    add_cluster_options(p, wandb_help="Weights & Biases tracking of every trial")
    args = resolve_paths(p.parse_args(argv))

    try:
        space = load_space(args.space, get_workload, args.workload)
    except SpaceError as e:
        sys.exit(f"error: {e}")
    output = Path(args.output)
    workload = get_workload(args.workload)
    if args.synthetic:
        data_dir = output / "data"
        base = workload.synthetic_config(data_dir, write=False)
        bigger = {k: v for k, v in space.fixed.items() if k in SIZE_FIELDS and k in base and base[k] != v}
        if bigger and not args.allow_paper_scale:
            replaced = ", ".join(f"{k}={v}" for k, v in bigger.items())
            sys.exit(f"error: {args.space} replaces the synthetic preset's {replaced}: a paper-scale run, made for a "
                     f"GPU cluster. On a laptop use the _tiny space (e.g. search_spaces/{Path(args.space).stem}_tiny.yaml), "
                     "or pass --allow-paper-scale to run it anyway")  # fmt: skip
        if bigger:
            print(f"--allow-paper-scale: running {args.space} on synthetic data with {', '.join(f'{k}={v}' for k, v in bigger.items())}")
        if not (args.resume and data_dir.exists()):
            workload.synthetic_config(data_dir, write=True)
    else:
        base = {"data_dir": args.data_dir}
    base.update(cluster_values(args), **settings(args.set))

    cfg = workload.make_config({**base, **space.fixed})
    n_folds = workload.n_folds(cfg)  # also checks the data files before anything runs
    if args.cv:
        folds = [int(f) for f in args.folds.split(",")] if args.folds else list(range(n_folds or 0))
        if not folds:
            sys.exit(f"error: give --folds: workload {workload.name!r} cannot say how many folds its data has")
    else:
        folds = [args.fold]
    if n_folds is not None and any(not 0 <= f < n_folds for f in folds):
        sys.exit(f"error: folds {folds} outside the data's {n_folds} folds (0..{n_folds - 1})")

    init_ray()
    try:
        result = run_sweep(
            workload, space, base, output, args.num_samples, folds, resume=args.resume, max_concurrent=args.max_concurrent,
            wandb=args.wandb, storage_path=args.storage, seed=args.seed, grace_period=args.grace_period,
            reduction_factor=args.reduction_factor,
        )  # fmt: skip
    except SweepError as e:
        sys.exit(f"error: {e}")

    best, counts = result.best, result.best["trials"]
    print(f"\n{len(result.trials)} trials ({', '.join(f'{n} {s.lower()}' for s, n in counts.items())}); objective: {best['objective']}")
    print(f"best: {best['metric']} = {best['value']:.4f} with {best['params']}")
    print(f"trials:     {output / 'trials.csv'}\nbest:       {output / 'best.json'}")
    print(f"checkpoint: {best['checkpoint']}\nreport:     {output / 'report.html'}")


if __name__ == "__main__":
    main()
