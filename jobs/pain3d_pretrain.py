"""Stage 1 of ViTPain: pretraining on the 3D-Pain synthetic faces.

    python jobs/pain3d_pretrain.py --synthetic --output runs/pain3d
    ray job submit --working-dir . -- python jobs/pain3d_pretrain.py --data-dir /data/pain_faces --output /data/runs/pain3d --gpu

The data directory holds the extracted shards: ``meshes_inpainted/``, ``annotations/`` and
``uniform_data_70_20_10_split.csv`` (identity-disjoint 70/20/10). Selection is on the
validation identities' PSPI MAE; the test identities are predicted once at the end.
Writes OUTPUT/checkpoint/ (pass it to unbc_cv.py --pretrained-checkpoint), metrics.json
and report.html.
"""

import _bootstrap  # noqa: F401  (makes affectlab importable without installing it)
from pathlib import Path

import _pain_args
from _cli import parse_output_args

from affectlab.data.synthetic_pain import write_synthetic_pain3d

# The original stage-1 recipe (reference/pain.md §6.2).
STAGE1 = {"lr": 1e-4, "weight_decay": 0.1, "batch_size": 48, "epochs": 150, "w_au": 1.0, "weighted_sampling": False,
          "select_metric": "val_mae", "select_mode": "min"}  # fmt: skip


def main(argv=None) -> None:
    p = _pain_args.parser(__doc__.split("\n")[0], "3D-Pain folder with meshes_inpainted/, annotations/ and the split CSV")
    p.add_argument("--split-csv", help="split file (default: DATA_DIR/uniform_data_70_20_10_split.csv; without one, a seeded identity-disjoint 70/20/10 split)")
    args = parse_output_args(p, argv)

    output = Path(args.output)
    data_dir = Path(args.data_dir) if args.data_dir else write_synthetic_pain3d(output / "data")
    cfg = _pain_args.config(args, STAGE1, data_dir=str(data_dir), dataset="pain3d", split_csv=args.split_csv,
                            select_metric="val_mae", select_mode="min")  # fmt: skip
    metrics = _pain_args.train_one_run(cfg, output, "pain3d", args.storage, args.wandb, "3D-Pain pretraining")
    print(f"test identities: MAE {metrics['test_mae']:.3f}, Pearson {metrics['test_pearson']:.3f}; "
          f"validation MAE {metrics['val_mae']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
