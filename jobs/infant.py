"""InfAGenC on infant pose sequences: ST-GCN recogniser, transformer CVAE, refinement rounds, evaluation.

    python jobs/infant.py --synthetic --output runs/infant                        # laptop demo, all five stages
    python jobs/infant.py --data-dir /data/infant --dataset primitive --body-model models/smil --output runs/prim
    python jobs/infant.py --data-dir /data/infant --stage refine --init-recognizer runs/prim/recognizer \\
        --init-cvae runs/prim/cvae --body-model models/smil --output runs/refine2     # one stage alone
    python jobs/infant.py --synthetic --cv 5 --output runs/infant_cv              # grouped k-fold CV of the recogniser
    ray job submit --working-dir . -- python jobs/infant.py --data-dir /data/infant --body-model /data/smil --gpu --output /data/runs/infant

DATA_DIR holds the original layout (InfActPrimitive/Data/primitive_{train,test}.pkl or
InfActPlus/{train,test}_trans_data.pkl), read through the restricted unpickler. The body
model is an SMPL/SMIL file converted by affectlab.body.convert (or the released .pkl).
Stages: (1) recognizer, (2) cvae, (3) refine, (4) final, (5) eval; each is a Ray Train run
that reads the earlier stages' checkpoints by path. Writes OUTPUT/metrics.json,
OUTPUT/report.html, OUTPUT/<stage>/ checkpoints, OUTPUT/models.json and OUTPUT/animations/.
"""

import _bootstrap  # noqa: F401  (makes affectlab importable without installing it)

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

from _cli import HelpFormatter, add_cluster_options, add_output_options, cluster_values, given, resolve_paths

from affectlab.data.infant import InfantDataError
from affectlab.train.checkpoint import CheckpointError
from affectlab.train.outputs import OutputExistsError, claim_output
from affectlab.workloads.infant import PRESETS, STAGES, SYNTHETIC_DATA, preset_values

_COMMON = ("dataset", "num_frames", "batch_size", "lr", "seed", "val_fraction", "stgcn_preset", "cvae_preset",
           "lambda_kl", "lambda_velxyz", "round_every", "finetune_epochs", "eval_seeds", "generation_seeds")  # fmt: skip
_STAGE_EPOCHS = {"recognizer": "recognizer_epochs", "cvae": "cvae_epochs", "refine": "refine_epochs", "final": "final_epochs"}
_CHECKPOINTS = ("init_recognizer", "init_cvae", "synthetic_samples", "final_recognizer")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter,
                                epilog="Options left unset take the preset's value (affectlab.workloads.infant.PRESETS), then InfantConfig's defaults.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", help="folder with the InfAct pkls in the original layout")
    src.add_argument("--synthetic", action="store_true", help="write synthetic InfActPrimitive pkls and a tiny SMPL stand-in under OUTPUT and run on them")
    add_output_options(p, "directory for metrics.json, report.html and the stage checkpoints")
    p.add_argument("--dataset", choices=("primitive", "plus"), help="primitive: 5 postures (60 frames); plus: 4 transitions (90 frames); default primitive")
    p.add_argument("--body-model", help="SMPL/SMIL body model (.npz from affectlab.body.convert, or the released .pkl) for the CVAE's joint losses")
    p.add_argument("--preset", choices=sorted(PRESETS), help="starting settings: 'paper' (the original recipe) or 'tiny' (minutes on a 2-core laptop); default: tiny with --synthetic, paper otherwise")
    p.add_argument("--stage", choices=STAGES, help="run this stage alone, from the checkpoints given below (default: every stage)")
    p.add_argument("--cv", type=int, metavar="K", help="grouped K-fold CV of the recogniser on the training file (folds as parallel Ray Tune trials), instead of the stages")
    p.add_argument("--max-concurrent", type=int, help="with --cv: folds trained at once (default: all)")
    c = p.add_argument_group("checkpoints a stage starts from (each one is used)")
    c.add_argument("--init-recognizer", help="recogniser checkpoint: --stage recognizer/final start from it, refine refines it, eval scores it as the real-data recogniser; a full run uses it instead of stage 1")
    c.add_argument("--init-cvae", help="CVAE checkpoint (cvae or refine stage): --stage cvae continues it, refine refines it, eval measures it; a full run uses it instead of stage 2")
    c.add_argument("--synthetic-samples", help="--stage final/eval: generated_samples .npz (or the original .npy), or a refine checkpoint directory")
    c.add_argument("--final-recognizer", help="--stage eval: the recogniser trained with the synthetic samples")
    m = p.add_argument_group("models and data")
    m.add_argument("--stgcn-preset", choices=("paper", "tiny"), help="ST-GCN size")
    m.add_argument("--cvae-preset", choices=("paper", "tiny"), help="CVAE size")
    m.add_argument("--num-frames", type=int, help="frames per item (longer clips: a window; shorter: the last frame repeated)")
    m.add_argument("--val-fraction", type=float, help="share of the training subjects (or clips) held out to select checkpoints")
    t = p.add_argument_group("training")
    for stage, name in _STAGE_EPOCHS.items():
        t.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"epochs of the {stage} stage")
    t.add_argument("--batch-size", type=int, help="clips per step, every stage")
    t.add_argument("--lr", type=float, help="AdamW learning rate, every stage")
    t.add_argument("--seed", type=int, help="seed of splits, initialisation, windows and sampling")
    t.add_argument("--lambda-kl", type=float, help="weight of the KL term (summed over batch and latent dims)")
    t.add_argument("--lambda-velxyz", type=float, help="weight of the joint-velocity term")
    t.add_argument("--round-every", type=int, help="refinement: a data-adding round every this many epochs")
    t.add_argument("--finetune-epochs", type=int, help="refinement: recogniser epochs after a round that added data")
    t.add_argument("--eval-seeds", type=int, help="evaluation: recognisers per recipe (seed 0 = the stage checkpoints)")
    t.add_argument("--generation-seeds", type=int, help="evaluation: generated sets for the generation metrics")
    add_cluster_options(p, wandb_help="Weights & Biases tracking of every stage")
    return p


def stage_values(args, data_dir: Path, body_model: str | None) -> dict[str, dict]:
    """Per stage: the preset, then the user's options, then what the job fixes."""
    preset = args.preset or ("tiny" if args.synthetic else "paper")
    shared = {**given(args, _COMMON), **cluster_values(args), "data_dir": str(data_dir), "body_model": body_model}
    out = {}
    for stage in STAGES:
        values = {**preset_values(preset, stage), **shared}
        epochs = getattr(args, _STAGE_EPOCHS.get(stage, ""), None)
        if epochs is not None:
            values["epochs"] = epochs
        if stage in ("refine", "eval"):
            values["num_workers"] = 1  # these loops score against the whole training set on one worker
        out[stage] = values
    return out


def main(argv: list[str] | None = None) -> Path:
    """Run the job; returns the path of metrics.json."""
    args = resolve_paths(parser().parse_args(argv))
    for name in _CHECKPOINTS:  # resolved before Ray Train workers change directory
        if getattr(args, name):
            setattr(args, name, str(Path(getattr(args, name)).expanduser().resolve()))
    if args.body_model:
        args.body_model = str(Path(args.body_model).expanduser().resolve())
    started = time.perf_counter()
    if args.cv is not None and (args.stage or any(getattr(args, n) for n in _CHECKPOINTS)):
        sys.exit("error: --cv cross-validates the recogniser from scratch; it takes no --stage or checkpoint options")
    checkpoints = {name: getattr(args, name) for name in _CHECKPOINTS if getattr(args, name)}

    from affectlab.workloads import get_workload
    from affectlab.workloads import infant_pipeline as pipeline

    workload = get_workload("infant")
    try:
        stages = pipeline.stage_plan(args.stage, checkpoints) if args.cv is None else ["recognizer"]
        pipeline.check_inputs(checkpoints)
        output = claim_output(args.output, args.overwrite)
    except (ValueError, CheckpointError, OutputExistsError) as error:
        sys.exit(f"error: {error}")

    if args.synthetic:
        from affectlab.body.standin import write_tiny_smpl
        from affectlab.data.synthetic_infant import write_synthetic_infant

        data_dir = write_synthetic_infant(output / "data", args.dataset or "primitive", seed=0, **SYNTHETIC_DATA)
        body_model = args.body_model or str(write_tiny_smpl(output / "body_model"))
    else:
        data_dir, body_model = Path(args.data_dir), args.body_model
    values = stage_values(args, data_dir, body_model)
    try:  # every file, label and split is checked before Ray starts
        configs = {stage: workload.make_config(values[stage]) for stage in STAGES}
        cfg = configs[stages[0]]
        files = workload.read_files(cfg)
        parts = workload.clips(cfg, None, files)
        for split, f in files.items():
            skipped = f" ({f.n_skipped} skipped: unknown labels {dict(f.unknown_labels)}, {len(f.corrupt)} malformed)" if f.n_skipped else ""
            print(f"{split} file {f.source}: {len(f.clips)} clips{skipped}")
        print("splits: " + ", ".join(f"{s} {len(c)} clips / {len({x.group for x in c})} groups" for s, c in parts.items()))
        if any(s in stages for s in ("cvae", "refine")):
            if not body_model:
                raise ValueError("the cvae and refine stages need --body-model (an SMPL/SMIL model for the joint losses)")
            from affectlab.body.models import smpl_layer

            smpl_layer(body_model)
    except (InfantDataError, ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")

    from affectlab.ray_utils import init_ray
    from affectlab.report.infant import write_infant_cv_report, write_infant_report
    from affectlab.train.checkpoint import write_json
    from affectlab.train.outputs import new_run_name
    from affectlab.train.tracking import train_callbacks

    init_ray()
    run_name = new_run_name("infant")
    names = cfg.class_names
    data_summary = {"files": {s: {"clips": len(f.clips), "skipped": f.n_skipped, "unknown_labels": dict(f.unknown_labels)} for s, f in files.items()},
                    "splits": {s: len(c) for s, c in parts.items()}}  # fmt: skip

    if args.cv is not None:
        from affectlab.tune.cv import run_cv

        cv_cfg = workload.make_config({**values["recognizer"], "cv_folds": args.cv})
        try:
            workload.clips(cv_cfg, 0, files)
        except (InfantDataError, ValueError) as error:
            sys.exit(f"error: {error}")
        results = run_cv(workload, cv_cfg, list(range(args.cv)), output, run_name, args.storage, args.wandb, args.max_concurrent)
        cv, pooled = pipeline.summarize_cv(results)
        metrics = {"cv": cv, "majority_baseline_accuracy": cv["summary"]["majority_baseline_accuracy"], "data": data_summary,
                   "config": asdict(cv_cfg), "checkpoints": [str(r.checkpoint_dir) for r in results],
                   "seconds": time.perf_counter() - started}  # fmt: skip
        write_json(output / "metrics.json", metrics)
        report = write_infant_cv_report(output / "report.html", cv, names, pooled)
        for f in cv["folds"]:
            print(f"fold {f['fold']}: test accuracy {f['test_accuracy']:.3f} on {f['n_test']} clips (majority {f['majority_baseline_accuracy']:.3f})")
        s = cv["summary"]
        print(f"\nCV test accuracy {s['test_accuracy']['mean']:.3f} ± {s['test_accuracy']['ci95']:.3f} (95% CI over {args.cv} folds), "
              f"majority baseline {s['majority_baseline_accuracy']:.3f}")  # fmt: skip
        print(f"metrics: {output / 'metrics.json'}\nreport:  {report}\nfinished in {metrics['seconds']:.0f} s")
        return output / "metrics.json"

    def callbacks(stage):
        return train_callbacks(args.wandb, "affectlab-infant", f"{run_name}-{stage}", output)

    paths = pipeline.run_pipeline(workload, values, stages, checkpoints, output, run_name, args.storage, callbacks)
    metrics = pipeline.run_metrics(paths)
    metrics["stage_metrics"] = {s: _flat(pipeline.read_json(paths[s] / "metrics.json")) for s in stages}
    metrics.update(stages=stages, data=data_summary, config={s: asdict(configs[s]) for s in stages}, seconds=time.perf_counter() - started)
    write_json(output / "metrics.json", metrics)
    pipeline.write_manifest(output, paths)
    generator = paths.get("refine") or paths.get("cvae")
    animations = pipeline.render_class_animations(generator, output / "animations", seed=cfg.seed) if generator else {}
    refinement, round_features = pipeline.refinement_of(paths)
    notes = [f"{s}: {paths[s]}" for s in paths] + [f"finished in {metrics['seconds']:.0f} s"]
    report = write_infant_report(output / "report.html", metrics, names, refinement, round_features, animations, notes)

    _print_summary(metrics, names)
    print(f"metrics: {output / 'metrics.json'}\nreport:  {report}\ncheckpoints: " + ", ".join(f"{s} {p}" for s, p in paths.items()))
    print(f"finished in {metrics['seconds']:.0f} s")
    return output / "metrics.json"


def _flat(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _print_summary(metrics: dict, names: list[str]) -> None:
    if "rounds" in metrics:
        print("\nrefinement: " + (f"{len(metrics['rounds'])} data-adding rounds, {len(metrics['skipped_rounds'])} skipped"))
        for r in metrics["rounds"]:
            print(f"  round {r['round']} (epoch {r['epoch']}): accepted " + ", ".join(f"{n} {r['accepted_per_class'][n]}" for n in names))
    if "recognizer_test_accuracy" in metrics:
        acc = metrics["recognizer_test_accuracy"]
        print(f"\ntest accuracy (mean ± 95% CI over seeds): real only {acc['real_only']['mean']:.3f} ± {acc['real_only']['ci95']:.3f}, "
              f"with synthetic {acc['with_synthetic']['mean']:.3f} ± {acc['with_synthetic']['ci95']:.3f}, "
              f"majority baseline {metrics['majority_baseline_accuracy']:.3f}")  # fmt: skip
        g, ci = metrics["generation"], metrics["generation_ci95"]
        print(f"generation: FID(generated, test) {g['fid_test']:.2f} ± {ci['fid_test']:.2f}, FID(noise, test) {g['fid_noise_test']:.1f}, "
              f"FID(train, test) {g['fid_train_test']:.2f}, accuracy_gen {g['accuracy_gen']:.3f} ± {ci['accuracy_gen']:.3f}, "
              f"diversity {g['diversity']:.3f} (real {g['diversity_real_test']:.3f}), multimodality {g['multimodality']:.3f} "
              f"(real {g['multimodality_real_test']:.3f})")  # fmt: skip
        per_class = metrics.get("generation_accuracy_per_class", {})
        print("accuracy_gen per class: " + ", ".join(f"{n} {per_class[n]:.2f}" for n in names if n in per_class))


if __name__ == "__main__":
    main()
