"""Stage 3 of ViTPain: the production model, trained on every UNBC subject.

    python jobs/unbc_production.py --synthetic --output runs/production
    ray job submit --working-dir . -- python jobs/unbc_production.py --data-dir /data/unbc \
        --pretrained-checkpoint /data/runs/pain3d/checkpoint --output /data/runs/production --gpu

A subject-disjoint inner validation set is still held back for checkpoint selection, so
the reported validation figures come from people the model did not train on. Writes
OUTPUT/checkpoint/ (servable), metrics.json and report.html.
"""

import _bootstrap  # noqa: F401  (makes affectlab importable without installing it)
from pathlib import Path

import _pain_args
from _cli import parse_output_args

from affectlab.data.synthetic_pain import write_synthetic_unbc
from affectlab.data.unbc import UNBC


def main(argv=None) -> None:
    p = _pain_args.parser(__doc__.split("\n")[0], "folder with the UNBC frames and annotations HDF5 files (no folds file needed)")
    args = parse_output_args(p, argv)

    output = Path(args.output)
    data_dir = Path(args.data_dir) if args.data_dir else write_synthetic_unbc(output / "data")
    cfg = _pain_args.config(args, data_dir=str(data_dir), dataset="unbc", protocol="all")
    UNBC.open(data_dir, "all")  # validates every file and key before any work
    metrics = _pain_args.train_one_run(cfg, output, "unbc-production", args.storage, args.wandb, "UNBC production model")
    print(f"inner validation subjects: MAE {metrics['val_mae']:.3f}, Pearson {metrics['val_pearson']:.3f}")


if __name__ == "__main__":
    main()
