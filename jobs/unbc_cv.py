"""ViTPain cross-validation on UNBC-McMaster: every fold a parallel Ray Tune trial.

    python jobs/unbc_cv.py --synthetic --output runs/cv          # laptop demo
    ray job submit --working-dir . -- python jobs/unbc_cv.py --data-dir /data/unbc --output /data/runs/cv --gpu
    python jobs/unbc_cv.py ...the same options... --resume      # after the driver was interrupted

Writes OUTPUT/metrics.json (per-fold and summary metrics), OUTPUT/report.html and each
fold's selected checkpoint in OUTPUT/fold_<k>/.
"""

import _bootstrap  # noqa: F401  (makes affectlab importable without installing it)
import sys
from pathlib import Path

import _pain_args
from _cli import add_resume_option, parse_output_args

from affectlab.data.synthetic_pain import write_synthetic_unbc
from affectlab.data.unbc import UNBC
from affectlab.ray_utils import init_ray
from affectlab.report.pain import write_cv_report
from affectlab.train.checkpoint import write_json
from affectlab.train.outputs import new_run_name
from affectlab.tune.cv import CVError, recorded_run, run_cv
from affectlab.workloads import get_workload


def main(argv=None) -> None:
    p = _pain_args.parser(__doc__.split("\n")[0], "folder with the three UNBC HDF5 files (frames, annotations, CV folds)")
    p.add_argument("--protocol", choices=["5fold", "loso"], default="5fold", help="5fold: the fold-k groups of the folds file; loso: leave one subject out")
    p.add_argument("--folds", help="comma-separated fold numbers to run (default: all)")
    p.add_argument("--max-concurrent", type=int, help="folds trained at once (default: as many as the cluster fits)")
    add_resume_option(p, "cross-validation")
    args = parse_output_args(p, argv)

    output = Path(args.output)
    if args.data_dir:
        data_dir = Path(args.data_dir)
    elif args.resume and (output / "data").is_dir():
        data_dir = output / "data"  # the synthetic data the interrupted run trained on
    else:
        data_dir = write_synthetic_unbc(output / "data")
    cfg = _pain_args.config(args, data_dir=str(data_dir), protocol=args.protocol, dataset="unbc")
    unbc = UNBC.open(data_dir, args.protocol)  # validates every file and key before any work
    folds = [int(f) for f in args.folds.split(",")] if args.folds else list(range(len(unbc.folds)))
    for f in folds:
        unbc.fold_tables(f, cfg.inner_val_fraction, cfg.seed)  # unknown folds fail here
    print(f"UNBC: {len(unbc.table)} annotated frames, {unbc.table['subject_id'].nunique()} subjects, "
          f"{len(folds)} folds; {unbc.dropped_rows} annotation rows point past the last frame and were dropped")  # fmt: skip

    pretrained = _pain_args.check_pretrained(cfg)
    workload = get_workload("pain")
    if args.resume:  # a run to continue, started with these options: checked before Ray starts
        try:
            recorded_run(output, workload, cfg, folds, args.storage)
        except CVError as e:
            sys.exit(f"error: {e}")
    init_ray()
    try:
        results = run_cv(workload, cfg, folds, output, new_run_name("unbc-cv"), args.storage, args.wandb, args.max_concurrent, resume=args.resume)
    except CVError as e:
        sys.exit(f"error: {e}")
    metrics, predictions = workload.summarize_cv(results)
    metrics.update(config=vars(cfg), pretrained_checkpoint=pretrained)
    write_json(output / "metrics.json", metrics)
    report = write_cv_report(output / "report.html", metrics["folds"], metrics["summary"], predictions, notes=metrics["notes"])

    print("\nfold  n_test    MAE  Pearson  AUROC@1  AUROC@2  AUROC@3  F1@1   F1@2   F1@3   F1-macro")
    for f in metrics["folds"]:
        a, c = f["auroc"], f["f1_train_calibrated"]
        print(f"{f['fold']:>4}  {f['n_test']:>6}  {f['mae']:5.2f}  {f['pearson']:7.3f}  {a['1']:7.3f}  {a['2']:7.3f}  {a['3']:7.3f}"
              f"  {_f(c['1'])}  {_f(c['2'])}  {_f(c['3'])}  {_f(c['macro'])}")  # fmt: skip
    s = metrics["summary"]
    print(f"\nsummary (mean ± 95% CI over {len(folds)} folds): MAE {s['mae']['mean']:.3f} ± {s['mae']['ci95']:.3f}, "
          f"Pearson {s['pearson']['mean']:.3f} ± {s['pearson']['ci95']:.3f}, AUROC@1 {s['auroc']['1']['mean']:.3f} ± {s['auroc']['1']['ci95']:.3f}, "
          f"F1-macro {_f(s['f1_train_calibrated']['macro']['mean'])} ± {_f(s['f1_train_calibrated']['macro']['ci95'])}")  # fmt: skip
    for note in metrics["notes"]:
        print(f"note: {note}")
    print(f"metrics: {output / 'metrics.json'}\nreport:  {report}\ncheckpoints: {', '.join(str(r.checkpoint_dir) for r in results)}")


def _f(x: float | None) -> str:
    return "  n/a" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    main()
