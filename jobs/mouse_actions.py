"""Mouse pain-behaviour recognition: train and evaluate per-frame action models on video + pose.

    python jobs/mouse_actions.py --synthetic --model multitask --output runs/mouse       # laptop demo
    python jobs/mouse_actions.py --data-dir /data/mice --model c3d_light --output runs/c3d --cv 5
    python jobs/mouse_actions.py ...the same options... --resume      # after a --cv driver was interrupted
    ray job submit --working-dir . -- python jobs/mouse_actions.py --data-dir /data/mice --output /data/runs/mouse --gpu

DATA_DIR holds Videos/*.mp4 (3 trials x 360 frames), Videos/<stem>DLC_*.csv|h5 (DeepLabCut
pose, one row per video frame) and Annotations/prediction_<video>.mp4_<trial>.csv
(Frame,Action with raw labels 0-7). Splits are by animal; the test animals are never seen
in training or checkpoint selection. Writes OUTPUT/metrics.json, OUTPUT/report.html and the
selected checkpoint(s) with their decision thresholds (OUTPUT/checkpoint/ or
OUTPUT/fold_<k>/, each with thresholds.json).
"""

import _bootstrap  # noqa: F401  (makes affectlab importable without installing it)

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

from _cli import HelpFormatter, add_cluster_options, add_output_options, add_resume_option, cluster_values, given, resolve_paths

from affectlab.constants.mouse import MODELS
from affectlab.data.mouse import MouseDataError
from affectlab.data.synthetic_mouse import write_synthetic_mouse
from affectlab.workloads.mouse import PRESETS, MouseConfig, preset_values

# options named as the MouseConfig field they set
_FIELDS = (
    "model", "backbone", "weights_path", "image_size", "hidden", "dropout", "c3d_width", "window", "eval_window",
    "train_stride", "test_fraction", "val_fraction", "min_likelihood", "epochs", "batch_size", "lr", "weight_decay",
    "backbone_lr_mult", "focal_gamma", "label_smoothing", "oversample_max", "ema_decay", "keypoint_jitter",
    "temporal_dropout", "seed", "bodyparts", "individual",
)  # fmt: skip
_ON = ("ema", "rotate90", "prefer_filtered")  # flags that switch a field on
_OFF = {"no_pretrained": "pretrained", "no_class_weights": "class_weights", "no_oversample": "oversample", "no_augment": "augment"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter,
                                epilog="Options left unset take the preset's value (affectlab.workloads.mouse.PRESETS), then MouseConfig's defaults.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", help="folder with Videos/ (MP4 + DeepLabCut CSV/H5) and Annotations/ (prediction_<video>.mp4_<trial>.csv)")
    src.add_argument("--synthetic", action="store_true", help="write a synthetic dataset in exactly the native formats under OUTPUT/data and run on it")
    add_output_options(p, "directory for metrics.json, report.html and checkpoints")
    p.add_argument("--model", choices=MODELS, default="multitask", help="c3d / c3d_light: 3D CNN on video; dual_stream: video + pose MLP with temporal attention; multitask: per-frame image backbone + pose graph + dilated TCN + keypoint head")
    p.add_argument("--preset", choices=sorted(PRESETS), help="starting settings: 'paper' (the original multi-task recipe) or 'tiny' (a few minutes on a 2-core laptop; 64 px frames and 12 epochs for the video-only 3D CNNs); default: tiny with --synthetic, paper otherwise")
    p.add_argument("--cv", type=int, metavar="K", help="K folds grouped by animal, trained as parallel Ray Tune trials (default: one train/val/test split)")
    p.add_argument("--max-concurrent", type=int, help="with --cv: folds trained at once (default: as many as the cluster fits)")
    add_resume_option(p, "--cv run")
    d = p.add_argument_group("data")
    d.add_argument("--window", type=int, help="training window length, frames")
    d.add_argument("--eval-window", type=int, help="validation/test window length, frames (tiled with half overlap)")
    d.add_argument("--train-stride", type=int, help="step between training windows, frames (default: window // 2)")
    d.add_argument("--image-size", type=int, help="frames are resized to this square size (default: 112 for the 3D CNNs, 224 for multitask)")
    d.add_argument("--test-fraction", type=float, help="share of animals held out for test (single split)")
    d.add_argument("--val-fraction", type=float, help="share of animals held out for validation (checkpoint selection, thresholds)")
    d.add_argument("--min-likelihood", type=float, help="DLC likelihood below which a keypoint is interpolated and not a keypoint target")
    d.add_argument("--prefer-filtered", action="store_true", help="use DeepLabCut's *_filtered pose files where they exist (a video with only filtered output uses it anyway)")
    d.add_argument("--bodyparts", metavar="OURS=THEIRS,...", help="the DLC project's names of affectlab's bodyparts (mouth, L_frontpaw, R_frontpaw, L_hindpaw, R_hindpaw, tail_base), e.g. 'mouth=Snout,L_frontpaw=Front Paw L,...'; unmapped ones are looked up under their own name")
    d.add_argument("--individual", help="multi-animal DLC files: the individual to read (an error lists the file's individuals)")
    d.add_argument("--synthetic-animals", type=int, default=8, help="with --synthetic: number of animals (one 3-trial video each)")
    d.add_argument("--synthetic-size", type=int, default=128, help="with --synthetic: video width and height, pixels")
    m = p.add_argument_group("model")
    m.add_argument("--backbone", help="multitask: timm model name (e.g. vit_small_patch14_dinov2.lvd142m) or tiny_resnet / tiny_vit")
    m.add_argument("--no-pretrained", action="store_true", help="random initialisation instead of the timm weights")
    m.add_argument("--weights-path", help="local timm weights file for the backbone (offline machines)")
    m.add_argument("--hidden", type=int, help="temporal model width (multitask TCN; dual_stream uses half)")
    m.add_argument("--dropout", type=float, help="dropout of the pose branch, temporal model and heads")
    m.add_argument("--c3d-width", type=float, help="channel multiplier of the 3D CNNs")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, help="training epochs (cosine learning-rate schedule over them)")
    t.add_argument("--batch-size", type=int, help="windows per step")
    t.add_argument("--lr", type=float, help="AdamW learning rate")
    t.add_argument("--backbone-lr-mult", type=float, help="multitask: backbone lr = lr x this")
    t.add_argument("--weight-decay", type=float, help="AdamW weight decay (not on norms and biases)")
    t.add_argument("--focal-gamma", type=float, help="focal loss gamma (0: cross-entropy)")
    t.add_argument("--label-smoothing", type=float, help="label smoothing of the focal-loss targets")
    t.add_argument("--no-class-weights", action="store_true", help="no inverse-frequency class weights")
    t.add_argument("--no-oversample", action="store_true", help="no repetition of training windows that show rare classes")
    t.add_argument("--oversample-max", type=float, help="most repeats of one window")
    t.add_argument("--ema", action="store_true", help="evaluate and keep an exponential moving average of the weights")
    t.add_argument("--ema-decay", type=float, help="with --ema: decay of the weight average")
    t.add_argument("--no-augment", action="store_true", help="no temporal roll, brightness/contrast, temporal dropout or keypoint jitter")
    t.add_argument("--keypoint-jitter", type=float, help="std of the noise added to input keypoints (normalised units); targets stay clean")
    t.add_argument("--temporal-dropout", type=float, help="probability that a frame's video and pose inputs are blanked")
    t.add_argument("--seed", type=int, help="seed of splits, initialisation, sampling and augmentation (and of --synthetic data)")
    t.add_argument("--rotate90", action="store_true", help="augment: rotate each training window's frames and keypoint targets by k x 90 degrees")
    add_cluster_options(p, wandb_help="with --cv: Weights & Biases tracking", cache=True)
    return p


def config(args, data_dir: Path) -> MouseConfig:
    """Preset, then the user's options, then what the job fixes."""
    values = preset_values(args.preset or ("tiny" if args.synthetic else "paper"), args.model)
    values.update(given(args, _FIELDS), **cluster_values(args))
    values.update({field: True for field in _ON if getattr(args, field)})
    values.update({field: False for flag, field in _OFF.items() if getattr(args, flag)})
    if args.cv:
        values["cv_folds"] = args.cv
    return MouseConfig(**values, data_dir=str(data_dir))


def main(argv: list[str] | None = None) -> Path:
    """Run the job; returns the path of metrics.json."""
    from affectlab.train.outputs import OutputExistsError, claim_output, new_run_name

    args = resolve_paths(parser().parse_args(argv))  # absolute: Train workers change directory
    started = time.perf_counter()
    if args.data_dir and not Path(args.data_dir).is_dir():
        sys.exit(f"error: --data-dir {args.data_dir}: folder not found")
    if args.resume and (args.overwrite or not args.cv):
        sys.exit("error: --resume continues an interrupted --cv run in OUTPUT (same options, no --overwrite)")
    try:
        output = claim_output(args.output, args.overwrite, args.resume)
    except OutputExistsError as error:
        sys.exit(f"error: {error}")
    if args.synthetic and args.resume and (output / "data").is_dir():
        data_dir = output / "data"  # the synthetic data the interrupted run trained on
    elif args.synthetic:
        data_dir = write_synthetic_mouse(output / "data", n_animals=args.synthetic_animals, size=args.synthetic_size, seed=args.seed or 0)
    else:
        data_dir = Path(args.data_dir).resolve()
    try:
        cfg = config(args, data_dir)
    except ValueError as error:
        sys.exit(f"error: {error}")

    from affectlab.ray_utils import init_ray
    from affectlab.report.mouse import write_mouse_report
    from affectlab.train.checkpoint import write_json
    from affectlab.workloads import get_workload

    workload = get_workload("mouse")
    folds = list(range(args.cv)) if args.cv else [None]
    try:  # every file, label and split is checked before Ray starts
        for fold in folds:
            parts = workload.splits(cfg, fold)
            summary = ", ".join(f"{s} {len(p)} trials / {len({t.animal_id for _, t in p})} animals" for s, p in parts.items())
            print(f"{'split' if fold is None else f'fold {fold}'}: {summary}")
    except (MouseDataError, ValueError) as error:
        sys.exit(f"error: {error}")

    if args.resume:  # a run to continue, started with these options: checked before Ray starts
        from affectlab.tune.cv import CVError, recorded_run

        try:
            recorded_run(output, workload, cfg, folds, args.storage)
        except CVError as error:
            sys.exit(f"error: {error}")
    init_ray()
    run_name = new_run_name(f"mouse-{cfg.model}")
    if args.cv:
        from affectlab.tune.cv import CVError, run_cv

        try:
            results = run_cv(workload, cfg, folds, output, run_name, args.storage, args.wandb, args.max_concurrent, resume=args.resume)
        except CVError as error:
            sys.exit(f"error: {error}")
        metrics, sequences = workload.summarize_cv(results)
        checkpoints = [r.checkpoint_dir for r in results]
        for fold_metrics, directory in zip(metrics["folds"], checkpoints):
            write_json(directory / "thresholds.json", {"classes": list(fold_metrics["thresholds"]), **_thresholds(fold_metrics)})
    else:
        from affectlab.train.loop import read_predictions
        from affectlab.train.run import fit_to_directory

        _, checkpoint = fit_to_directory(workload, cfg, workload.datasets(cfg, None), output, run_name, args.storage)
        metrics, sequences = workload.final_metrics(cfg, None, read_predictions(checkpoint))
        write_json(checkpoint / "thresholds.json", {"classes": list(metrics["thresholds"]), **_thresholds(metrics)})
        checkpoints = [checkpoint]

    metrics.update(seconds=time.perf_counter() - started, config=asdict(cfg), checkpoints=[str(c) for c in checkpoints])
    write_json(output / "metrics.json", metrics)
    report = write_mouse_report(output / "report.html", metrics, sequences, f"Mouse behaviour recognition: {cfg.model}")
    per_class = ", ".join(f"{k} {'n/a' if v is None else f'{v:.2f}'}" for k, v in metrics["per_class_f1"].items())
    spread = f" ± {metrics['summary']['macro_f1']['ci95']:.3f} (95% CI)" if args.cv else ""
    print(f"\ntest ({'mean over ' + str(args.cv) + ' folds' if args.cv else 'held-out animals'}): macro F1 {metrics['macro_f1']:.3f}{spread} "
          f"(majority baseline {metrics['majority_baseline_macro_f1']:.3f}), accuracy {metrics['accuracy']:.3f}, "
          f"Edit {metrics['edit']:.1f}, F1@10/25/50 {metrics['f1@10']:.1f}/{metrics['f1@25']:.1f}/{metrics['f1@50']:.1f}"
          + (f", keypoint MAE {metrics['keypoint_mae_px']:.2f} px" if "keypoint_mae_px" in metrics else "")
          + f", skipped samples {metrics['skipped_samples']}")  # fmt: skip
    print(f"per-class F1: {per_class}")
    print(f"metrics: {output / 'metrics.json'}\nreport:  {report}\ncheckpoints: {', '.join(map(str, checkpoints))}")
    print(f"finished in {metrics['seconds']:.0f} s")
    return output / "metrics.json"


def _thresholds(metrics: dict) -> dict:
    return {"thresholds": list(metrics["thresholds"].values()), "decision_rule": metrics["decision_rule"]}


if __name__ == "__main__":
    main()
