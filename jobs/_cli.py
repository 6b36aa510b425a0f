"""Command-line pieces every job shares (the library itself never reads argv)."""

import argparse
from pathlib import Path


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show a default only where the option has its own; the others come from a preset."""

    def _get_help_string(self, action):
        if action.default in (None, False, []):
            return action.help
        return super()._get_help_string(action)


_CACHE = {"auto": None, "on": True, "off": False}


def add_cluster_options(p: argparse.ArgumentParser, wandb_help: str = "Weights & Biases tracking", cache: bool = False) -> None:
    """--workers, --gpu, --cpus-per-worker, --storage, --wandb and (``cache``) --cache-data,
    read back by ``cluster_values``."""
    r = p.add_argument_group("cluster")
    r.add_argument("--workers", type=int, help="Ray Train workers per run (DDP when > 1)")
    r.add_argument("--gpu", action="store_true", help="one GPU per Train worker, mixed precision")
    r.add_argument("--cpus-per-worker", type=float, help="CPUs reserved by each Train worker (its torch thread count)")
    r.add_argument("--storage", help="Ray storage path for checkpoints and results (s3://... on a multi-node cluster); default OUTPUT/ray_results")
    r.add_argument("--wandb", choices=["off", "offline", "online"], default="offline", help=wandb_help)
    if cache:
        r.add_argument("--cache-data", choices=list(_CACHE), default="auto",
                       help="keep the decoded train and val splits in Ray's object store after their first read: auto = each when it fits in a "
                       "tenth of the store; off = decode every epoch")  # fmt: skip


def cluster_values(args: argparse.Namespace) -> dict:
    """The config fields (``TrainConfig``) the cluster options set; unset options are left out."""
    values = {"use_gpu": True if args.gpu else None, "num_workers": args.workers, "cpus_per_worker": args.cpus_per_worker}
    values = {k: v for k, v in values.items() if v is not None}
    if getattr(args, "cache_data", "auto") != "auto":
        values["cache_data"] = _CACHE[args.cache_data]
    return values


def given(args: argparse.Namespace, names) -> dict:
    """``{name: value}`` of the options in ``names`` the user set (options named as config fields)."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def add_output_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--output", required=True, help=what)
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in OUTPUT (refused otherwise)")


def add_resume_option(p: argparse.ArgumentParser, what: str = "run") -> None:
    """--resume: continue the interrupted run in OUTPUT (read back by ``parse_output_args``)."""
    p.add_argument("--resume", action="store_true",
                   help=f"continue the interrupted {what} in OUTPUT, started with the same options: what finished is kept, "
                   "what was interrupted continues from its latest epoch checkpoint")  # fmt: skip


def parse_output_args(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse, make every path absolute (Train workers change directory) and claim OUTPUT:
    a non-empty one only with --overwrite or --resume (exit status 2 otherwise)."""
    from affectlab.train.outputs import OutputExistsError, claim_output

    args = resolve_paths(p.parse_args(argv))
    resume = getattr(args, "resume", False)
    if resume and args.overwrite:
        p.exit(2, "error: --resume continues the run in OUTPUT and --overwrite replaces it: give one of them\n")
    try:
        claim_output(args.output, args.overwrite, resume)
    except OutputExistsError as e:
        p.exit(2, f"error: {e}\n")
    return args


PATH_OPTIONS = (
    "data_dir", "output", "storage", "space", "pretrained_checkpoint", "weights_path", "split_csv",  # pain, sweeps
    "prior_checkpoint", "pred_checkpoint", "flame_dir", "hubert_path",  # probtalk3d
    "init_recognizer", "init_cvae",  # infant
)  # fmt: skip


def resolve_paths(args: argparse.Namespace) -> argparse.Namespace:
    """Every path option made absolute against the caller's working directory, before
    anything is submitted: Ray Train workers run in directories of their own. URIs
    (``s3://…``) are left alone."""
    for name in PATH_OPTIONS:
        value = getattr(args, name, None)
        if value and "://" not in str(value):
            setattr(args, name, str(Path(value).expanduser().resolve()))
    return args
