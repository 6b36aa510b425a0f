"""Command-line options the three pain jobs share (the library itself never reads argv)."""

import argparse
from pathlib import Path

from _cli import HelpFormatter, add_cluster_options, add_output_options, cluster_values, given

from affectlab.workloads.pain import PRESETS, PainConfig

# options named as the PainConfig field they set
_FIELDS = (
    "backbone", "image_size", "finetune", "weights_path", "epochs", "batch_size", "lr", "weight_decay", "w_pspi", "w_au",
    "w_binary", "backbone_lr_mult", "n_shots", "reference_policy", "seed", "pretrained_checkpoint", "lora_r", "dropout",
)  # fmt: skip


def parser(description: str, data_help: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=description,
        formatter_class=HelpFormatter,
        epilog="Model and training options left unset take the preset's value (affectlab.workloads.pain.PRESETS: "
        "'paper' = the original recipe, 'tiny' = a 2-core laptop), then PainConfig's defaults.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", help=data_help)
    src.add_argument("--synthetic", action="store_true", help="write a small synthetic dataset in the native layout under OUTPUT/data and run on it")
    add_output_options(p, "directory for metrics.json, report.html and checkpoints")
    p.add_argument("--preset", choices=sorted(PRESETS), help="starting settings: 'paper' (the original recipe, DINOv3-L + LoRA) or 'tiny' (2-core laptop); default: tiny with --synthetic, paper otherwise")
    m = p.add_argument_group("model")
    m.add_argument("--backbone", choices=["tiny", "small", "base", "large", "large_sat493m"], help="DINOv3 size (tiny: random init only)")
    m.add_argument("--image-size", type=int, help="input size in pixels (224 for the real backbones)")
    m.add_argument("--finetune", choices=["lora", "full", "frozen"], help="how the backbone trains")
    m.add_argument("--lora-r", type=int, help="LoRA rank")
    m.add_argument("--dropout", type=float, help="dropout of the PSPI and binary heads")
    m.add_argument("--no-pretrained", action="store_true", help="random initialisation instead of the timm weights")
    m.add_argument("--weights-path", help="local timm weights file for the backbone (offline machines)")
    m.add_argument("--pretrained-checkpoint", help="an affectlab checkpoint directory to start from (e.g. the 3D-Pain stage); weights with matching names and shapes are copied")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, help="training epochs (the cosine schedule spans them)")
    t.add_argument("--batch-size", type=int, help="batch size per Train worker")
    t.add_argument("--lr", type=float, help="learning rate of the heads (the backbone gets lr × backbone-lr-mult)")
    t.add_argument("--backbone-lr-mult", type=float, help="learning-rate multiplier of the backbones (LoRA or full)")
    t.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    t.add_argument("--w-pspi", type=float, help="weight of the PSPI MSE (0–1 scale)")
    t.add_argument("--w-au", type=float, help="weight of the AU MSE (raw AU units)")
    t.add_argument("--w-binary", type=float, help="weight of the PSPI ≥ 1/2/3 BCE")
    t.add_argument("--seed", type=int, help="seed of every random choice: splits, references, sampling, augmentation, init")
    e = p.add_argument_group("references")
    e.add_argument("--n-shots", type=int, help="neutral references averaged at evaluation (multi-shot)")
    e.add_argument("--reference-policy", choices=["first_frames", "oracle"], help="evaluation references: first frames of the subject (label-free) or PSPI=0 frames chosen with labels (oracle, the original protocol)")
    add_cluster_options(p, cache=True)
    return p


def check_pretrained(cfg: PainConfig) -> dict | None:
    """Load ``--pretrained-checkpoint`` into the model here, before anything is submitted:
    a checkpoint that fits nothing fails now. Returns what was transferred."""
    if not cfg.pretrained_checkpoint:
        return None
    from affectlab.train.checkpoint import load_matching_weights
    from affectlab.workloads import get_workload

    model = get_workload("pain").build_model(cfg.__class__(**{**vars(cfg), "pretrained_checkpoint": None}), pretrained=False)
    loaded, total = load_matching_weights(model, cfg.pretrained_checkpoint)
    if loaded == 0:
        raise SystemExit(f"error: {cfg.pretrained_checkpoint}: none of its tensors fits this model (different backbone or sizes?)")
    print(f"pretrained checkpoint {cfg.pretrained_checkpoint}: {loaded} of {total} tensors fit the model and start it")
    return {"path": cfg.pretrained_checkpoint, "tensors_loaded": loaded, "tensors_total": total}


def config(args, defaults: dict | None = None, **fixed) -> PainConfig:
    """Preset, then the job's own defaults, then the user's options, then what the job fixes."""
    preset = args.preset or ("tiny" if args.synthetic else "paper")
    values = {**(defaults or {}), **PRESETS[preset]} if preset == "tiny" else {**PRESETS[preset], **(defaults or {})}
    values.update(given(args, _FIELDS), **cluster_values(args))
    if args.no_pretrained:
        values["pretrained"] = False
    values.update(fixed)
    return PainConfig(**values)


def train_one_run(cfg: PainConfig, output: Path, name: str, storage: str | None, wandb: str, title: str) -> dict:
    """One Ray Train run (no folds): train, copy the final checkpoint to OUTPUT/checkpoint,
    write OUTPUT/metrics.json and OUTPUT/report.html; returns the evaluation metrics."""
    from affectlab.ray_utils import init_ray
    from affectlab.report.pain import write_run_report
    from affectlab.train.checkpoint import write_json
    from affectlab.train.loop import read_predictions
    from affectlab.train.outputs import new_run_name
    from affectlab.train.run import fit_to_directory
    from affectlab.train.tracking import train_callbacks
    from affectlab.workloads import get_workload

    pretrained = check_pretrained(cfg)
    init_ray()
    workload = get_workload("pain")
    datasets = workload.datasets(cfg, fold=None)  # validates the data before any training
    run = new_run_name(name)
    callbacks = train_callbacks(wandb, f"affectlab-{workload.name}", run, output)
    result, checkpoint = fit_to_directory(workload, cfg, datasets, output, run, storage, callbacks)
    splits = tuple(f"{s}_" for s in workload.eval_splits) + ("best_",)
    metrics = {k: v for k, v in result.metrics.items() if k.startswith(splits)}
    write_json(output / "metrics.json", {**metrics, "checkpoint": str(checkpoint), "config": vars(cfg), "pretrained_checkpoint": pretrained})
    report = write_run_report(output / "report.html", title, metrics, read_predictions(checkpoint))
    print(f"checkpoint: {checkpoint}\nmetrics: {output / 'metrics.json'}\nreport:  {report}")
    return metrics
