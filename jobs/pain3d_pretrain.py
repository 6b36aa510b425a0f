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

from affectlab.data.synthetic_pain import write_synthetic_pain3d
from affectlab.ray_utils import init_ray
from affectlab.report.pain import write_run_report
from affectlab.train.checkpoint import write_json
from affectlab.train.loop import read_predictions
from affectlab.train.run import fit_to_directory
from affectlab.workloads import get_workload

# The original stage-1 recipe (reference/pain.md §6.2).
STAGE1 = {"lr": 1e-4, "weight_decay": 0.1, "batch_size": 48, "epochs": 150, "w_au": 1.0, "weighted_sampling": False,
          "select_metric": "val_mae", "select_mode": "min"}  # fmt: skip


def main() -> None:
    p = _pain_args.parser(__doc__.split("\n")[0], "3D-Pain folder with meshes_inpainted/, annotations/ and the split CSV")
    p.add_argument("--split-csv", help="split file (default: DATA_DIR/uniform_data_70_20_10_split.csv; without one, a seeded identity-disjoint 70/20/10 split)")
    args = p.parse_args()

    output = Path(args.output).resolve()
    data_dir = Path(args.data_dir).resolve() if args.data_dir else write_synthetic_pain3d(output / "data")
    cfg = _pain_args.config(args, STAGE1, data_dir=str(data_dir), dataset="pain3d", split_csv=args.split_csv,
                            select_metric="val_mae", select_mode="min")  # fmt: skip
    init_ray()
    workload = get_workload("pain")
    datasets = workload.datasets(cfg, fold=None)  # validates the data before any training
    result, checkpoint = fit_to_directory(workload, cfg, datasets, output, _pain_args.run_name("pain3d"), args.storage)
    metrics = {k: v for k, v in result.metrics.items() if k.startswith(("val_", "test_", "best_"))}
    write_json(output / "metrics.json", {**metrics, "checkpoint": str(checkpoint), "config": vars(cfg)})
    report = write_run_report(output / "report.html", "3D-Pain pretraining", metrics, read_predictions(checkpoint))
    print(f"test identities: MAE {metrics['test_mae']:.3f}, Pearson {metrics['test_pearson']:.3f}; "
          f"validation MAE {metrics['val_mae']:.3f}")  # fmt: skip
    print(f"checkpoint: {checkpoint}\nmetrics: {output / 'metrics.json'}\nreport:  {report}")


if __name__ == "__main__":
    main()
