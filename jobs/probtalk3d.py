"""ProbTalk3D: speech + style → stochastic FLAME animation — prior, predictor and evaluation.

    python jobs/probtalk3d.py --synthetic --output runs/p3d                      # laptop demo, all three stages
    python jobs/probtalk3d.py --synthetic --model vae --output runs/p3d_vae       # the VAE variant
    python jobs/probtalk3d.py --data-dir /data/datasets --flame-dir /models/flame --output /data/runs/p3d --gpu
    python jobs/probtalk3d.py --data-dir D --stage pred --prior-checkpoint runs/p3d/prior --output runs/p3d_pred
    python jobs/probtalk3d.py --data-dir D --stage eval --pred-checkpoint runs/p3d/pred --flame-dir F --output runs/p3d_eval
    ray job submit --working-dir . -- python jobs/probtalk3d.py --data-dir /data/datasets --flame-dir /models/flame --output /data/runs/p3d --gpu

DATA_DIR is ProbTalk3D's ``datasets`` folder (mead/param/*.npy (1, T, 403) + mead/wav/*.wav,
regions/lve.txt, regions/fdd.txt, flame_zero_pose.npy). Each stage is a Ray Train run fed
by Ray Data; a stage reads the previous one's checkpoint by path. Writes OUTPUT/prior/ and
OUTPUT/pred/ (checkpoints), OUTPUT/eval/, OUTPUT/metrics.json and OUTPUT/report.html.
"""

import _bootstrap  # noqa: F401  (makes affectlab importable without installing it)

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from _cli import HelpFormatter, add_cluster_options, add_output_options, cluster_values, given, resolve_paths

from affectlab.data.mead import MeadDataError, discover_mead
from affectlab.data.probtalk3d_dataset import vocabulary
from affectlab.metrics.probtalk3d_eval import TEST_KEYS
from affectlab.train.checkpoint import write_json
from affectlab.train.outputs import OutputExistsError, claim_output
from affectlab.workloads.probtalk3d import (
    GENERATION_FILE, SYNTHETIC_SIZES, ProbTalk3DConfig, ProbTalk3DWorkload, generation_info, prior_settings, read_stage_config,
    train_stage,
)  # fmt: skip

STAGES = ("prior", "pred", "eval")
# options named as the ProbTalk3DConfig field they set (every stage that has the field)
_FIELDS = ("preset", "audio", "hubert_path", "mel_per_frame", "n_codes", "tokens_per_frame", "batch_size", "seed",
           "n_samples", "temperature", "top_k", "fact")  # fmt: skip
_PRIOR_KEYS = ("model", "preset", "n_codes", "tokens_per_frame")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter,
                                epilog="Training settings left unset take the preset's value for the stage "
                                       "(affectlab.workloads.probtalk3d.STAGE_TRAINING), then ProbTalk3DConfig's defaults.")  # fmt: skip
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", help="ProbTalk3D's datasets folder: mead/param/*.npy, mead/wav/*.wav, regions/, flame_zero_pose.npy")
    src.add_argument("--synthetic", action="store_true", help="write a synthetic 3DMEAD in the native layout under OUTPUT/data (and a tiny FLAME stand-in under OUTPUT/flame) and run on it")
    add_output_options(p, "directory for prior/, pred/, eval/, metrics.json and report.html")
    p.add_argument("--stage", choices=("all",) + STAGES, default="all", help="run every stage, or one from a previous stage's checkpoint")
    p.add_argument("--prior-checkpoint", help="--stage pred: the stage-1 checkpoint directory (OUTPUT/prior of a prior run)")
    p.add_argument("--pred-checkpoint", help="--stage eval: the stage-2 checkpoint directory (OUTPUT/pred of a pred run)")
    p.add_argument("--synthetic-size", choices=sorted(SYNTHETIC_SIZES), default="medium",
                   help="with --synthetic: small = 84 sequences (4 identities, 3 sentences), medium = 252 (6 identities, "
                        "6 sentences), demo = 480 (8 identities, 6 sentences, 4 emotions)")  # fmt: skip
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=("vqvae", "vae"), help="the VQ-VAE prior (default) or the VAE variant; stage 2 takes its prior's")
    m.add_argument("--preset", choices=("paper", "tiny"), help="model sizes and training settings; default: tiny with --synthetic, paper otherwise")
    m.add_argument("--audio", choices=("hubert", "logmel"), help="speech front-end: HuBERT-base (random init unless --hubert-path) or the log-mel substitute; default: logmel with --synthetic, hubert otherwise")
    m.add_argument("--hubert-path", help="local HuBERT folder (from_pretrained: weights, config and preprocessor_config.json); without it HuBERT is randomly initialised, as config.json and the report say")
    m.add_argument("--mel-per-frame", type=int, help="log-mel frames stacked per 25 fps motion frame")
    m.add_argument("--n-codes", type=int, help="VQ codebook size")
    m.add_argument("--tokens-per-frame", type=int, help="code tokens per frame (each a slice of one frame's latent channels)")
    m.add_argument("--flame-dir", help="FLAME model folder (FLAME_NEUTRAL.npz + flame_static_embedding.pkl, from affectlab.body.convert) for the evaluation's vertices and video; --synthetic writes a tiny stand-in")
    t = p.add_argument_group("training")
    t.add_argument("--prior-epochs", type=int, help="stage-1 epochs")
    t.add_argument("--pred-epochs", type=int, help="stage-2 epochs")
    t.add_argument("--prior-lr", type=float, help="stage-1 learning rate")
    t.add_argument("--pred-lr", type=float, help="stage-2 learning rate")
    t.add_argument("--batch-size", type=int, help="whole sequences per step (both stages)")
    t.add_argument("--seed", type=int, help="seed of initialisation, shuffling, sampling and the synthetic data")
    e = p.add_argument_group("generation and evaluation")
    e.add_argument("--n-samples", type=int, help="samples per test sentence (10 in the paper)")
    e.add_argument("--temperature", type=float, help="code-sampling temperature of the reported samples")
    e.add_argument("--temperatures", help="comma-separated temperatures whose diversity is reported (default 0.1,0.2,0.5)")
    e.add_argument("--top-k", type=int, help="sample among the k nearest codes (0: all)")
    e.add_argument("--fact", type=float, help="VAE: noise scale at generation")
    add_cluster_options(p)
    return p


def fail(message: str):
    sys.exit(f"error: {message}")


def main(argv: list[str] | None = None) -> Path:
    """Run the job; returns the path of metrics.json."""
    args = resolve_paths(parser().parse_args(argv))  # absolute: Train workers change directory
    stages = list(STAGES) if args.stage == "all" else [args.stage]
    if args.stage == "pred" and not args.prior_checkpoint:
        fail("--stage pred needs --prior-checkpoint (the prior/ directory of a stage-1 run)")
    if args.stage == "eval" and not args.pred_checkpoint:
        fail("--stage eval needs --pred-checkpoint (the pred/ directory of a stage-2 run)")
    if args.stage == "all" and (args.prior_checkpoint or args.pred_checkpoint):
        fail("--prior-checkpoint / --pred-checkpoint go with --stage pred / --stage eval; --stage all trains every stage")
    if "eval" in stages and not (args.flame_dir or args.synthetic):
        fail("the evaluation needs --flame-dir: a FLAME 2020 folder converted with affectlab.body.convert (the region files index its 5023 vertices)")
    if args.data_dir and not Path(args.data_dir).is_dir():
        fail(f"--data-dir {args.data_dir}: folder not found")

    try:  # the input checkpoints are checked before anything is written
        prior = prior_settings(args.prior_checkpoint) if args.prior_checkpoint else None
        pred = read_stage_config(args.pred_checkpoint, "pred") if args.pred_checkpoint else None
    except (OSError, ValueError) as error:
        fail(str(error))
    if prior and args.model and args.model != prior["model"]:
        fail(f"--model {args.model}: the prior checkpoint {args.prior_checkpoint} is a {prior['model']} prior")
    try:
        output = claim_output(args.output, args.overwrite)
    except OutputExistsError as error:
        fail(str(error))
    started = time.perf_counter()
    flame_dir, stand_in = args.flame_dir, False
    if args.synthetic:
        from affectlab.body.standin import write_tiny_flame
        from affectlab.data.synthetic_mead import write_synthetic_mead

        data_dir = write_synthetic_mead(output / "data", **SYNTHETIC_SIZES[args.synthetic_size], seed=args.seed or 0)
        if not flame_dir:
            flame_dir, stand_in = str(write_tiny_flame(output / "flame")), True
        print(f"synthetic 3DMEAD ({args.synthetic_size}) in {data_dir}, FLAME {'stand-in' if stand_in else ''} {flame_dir} "
              f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
    else:
        data_dir = Path(args.data_dir)
    try:  # every file name, array shape and split is checked before Ray starts
        layout = discover_mead(data_dir)
        vocab = vocabulary(layout)
    except (MeadDataError, ValueError) as error:
        fail(str(error))
    print(f"3DMEAD: {len(layout.sequences)} sequences; stage-2 training styles: {len(vocab['identities'])} identities, "
          f"emotions {vocab['emotions']}, intensities {vocab['intensities']}")  # fmt: skip

    base = {"data_dir": str(layout.root), "flame_dir": flame_dir or "", **given(args, _FIELDS), **cluster_values(args)}
    base.setdefault("preset", "tiny" if args.synthetic else "paper")
    base.setdefault("audio", "logmel" if args.synthetic else "hubert")
    if args.temperatures:
        base["eval_temperatures"] = [float(t) for t in args.temperatures.split(",")]
    if args.model:
        base["model"] = args.model
    try:
        configs = stage_configs(stages, base, args, prior, pred, vocab)
    except ValueError as error:
        fail(str(error))

    from affectlab.ray_utils import init_ray
    from affectlab.train.tracking import train_callbacks

    init_ray()
    finals, checkpoints = {}, {}
    if args.prior_checkpoint:
        checkpoints["prior"] = args.prior_checkpoint
    if args.pred_checkpoint:
        checkpoints["pred"] = args.pred_checkpoint
    for stage in stages:
        cfg = configs[stage]
        if stage == "pred":
            cfg.prior_checkpoint = cfg.prior_checkpoint or str(checkpoints["prior"])
            # built here once: the prior checkpoint is checked, and the audio encoder says where its weights came from
            cfg.audio_source = ProbTalk3DWorkload().build_model(cfg).audio_source
        if stage == "eval":
            cfg.pred_checkpoint = cfg.pred_checkpoint or str(checkpoints["pred"])
            pred_config = read_stage_config(cfg.pred_checkpoint, "pred")
            for key in ("model", "preset", "audio", "mel_per_frame", "n_codes", "tokens_per_frame", "identities", "emotions", "intensities"):
                setattr(cfg, key, pred_config[key])
        stage_started = time.perf_counter()
        callbacks = train_callbacks(args.wandb, "affectlab-probtalk3d", f"{output.name}-{stage}", output) if stage != "eval" else []
        extra = _stage_two_files(cfg, flame_dir, stand_in) if stage == "pred" else None
        finals[stage], checkpoints[stage] = train_stage(cfg, output, args.storage, callbacks, extra)
        print(f"stage {stage}: {checkpoints[stage]} ({time.perf_counter() - stage_started:.0f} s)")

    metrics = {"stages": {s: _final(m) for s, m in finals.items()}, "checkpoints": {k: str(v) for k, v in checkpoints.items()},
               "config": {s: vars(configs[s]) for s in stages}}  # fmt: skip
    if "eval" in stages:
        report = _evaluation_outputs(output, checkpoints["eval"], metrics, configs["eval"])
    else:
        from affectlab.report.probtalk3d import write_stage_report
        from affectlab.train.loop import read_predictions

        stage = stages[-1]
        write_json(output / "metrics.json", metrics)
        report = write_stage_report(output / "report.html", stage, metrics["stages"][stage], read_predictions(checkpoints[stage]),
                                    f"ProbTalk3D stage {stage} ({configs[stage].model}, {configs[stage].preset})")  # fmt: skip
        print(f"\nstage {stage}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics["stages"][stage].items() if k.startswith("test_")))
    print(f"\nmetrics: {output / 'metrics.json'}\nreport:  {report}\ncheckpoints: "
          + ", ".join(f"{k} {v}" for k, v in metrics["checkpoints"].items()) + f"\ntotal {time.perf_counter() - started:.0f} s")  # fmt: skip
    return output / "metrics.json"


def stage_configs(stages, base: dict, args, prior: dict | None, pred: dict | None, vocab: dict) -> dict[str, ProbTalk3DConfig]:
    """One config per stage: the shared values, each stage's own training options, and what
    the previous stage's checkpoint fixes (the prior's sizes, the predictor's vocabularies)."""
    configs = {}
    if "prior" in stages:
        configs["prior"] = ProbTalk3DConfig(**base, stage="prior", **_stage_options(args.prior_epochs, args.prior_lr))
    if "pred" in stages:
        fixed = prior or {k: getattr(configs["prior"], k) for k in _PRIOR_KEYS}
        values = {**base, **fixed, **vocab, "prior_checkpoint": args.prior_checkpoint or ""}
        configs["pred"] = ProbTalk3DConfig(**values, stage="pred", **_stage_options(args.pred_epochs, args.pred_lr))
    if "eval" in stages:
        source = pred or vars(configs["pred"])
        values = {**base, **{k: source[k] for k in _PRIOR_KEYS}, "pred_checkpoint": args.pred_checkpoint or "", "num_workers": 1}
        configs["eval"] = ProbTalk3DConfig(**values, stage="eval")
    return configs


def _stage_options(epochs, lr) -> dict:
    return {k: v for k, v in (("epochs", epochs), ("lr", lr)) if v is not None}


def _stage_two_files(cfg: ProbTalk3DConfig, flame_dir: str | None, stand_in: bool):
    """Files a server needs beside the stage-2 weights: generation.json and, for the tiny
    stand-in, a copy of that FLAME model (a real FLAME is licence-gated: referenced by path)."""

    def write(directory: Path) -> None:
        where = None
        if flame_dir:
            where = "flame" if stand_in else flame_dir
            if stand_in:
                shutil.copytree(flame_dir, directory / "flame")
        write_json(directory / GENERATION_FILE, generation_info(cfg, where))

    return write


def _final(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _evaluation_outputs(output: Path, eval_dir: Path, metrics: dict, cfg: ProbTalk3DConfig) -> Path:
    """metrics.json with the interface keys, the report with the MP4, and the figures printed."""
    from affectlab.report.probtalk3d import write_evaluation_report
    from affectlab.workloads.probtalk3d_eval import EVALUATION_FILE, REPORT_ARRAYS_FILE

    evaluation = json.loads((eval_dir / EVALUATION_FILE).read_text())
    with np.load(eval_dir / REPORT_ARRAYS_FILE, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    keys = ("test", "baseline_mean_motion", "temperatures", "sample_false", "style_control", "n_test_sequences")
    metrics = {**{k: evaluation[k] for k in keys}, **metrics, "geometry": evaluation["geometry"], "settings": evaluation["settings"]}
    write_json(output / "metrics.json", metrics)
    test, base = evaluation["test"], evaluation["baseline_mean_motion"]
    notes = [
        f"{evaluation['n_test_sequences']} test sequences of the seen_identities_unseen_sentences split (stage-2 test: identities "
        "seen in training, sentences not); metrics on FLAME vertices with zero shape and pose.",
        f"Geometry: {evaluation['geometry']}.",
        f"Audio: {evaluation['settings']['audio']} ({evaluation['settings'].get('audio_source') or 'n/a'}).",
        "Baseline: the training sequences' mean motion at each frame, played for every test sentence.",
    ]
    report = write_evaluation_report(output / "report.html", evaluation, arrays,
                                     f"ProbTalk3D ({cfg.model}, {cfg.preset}): evaluation", notes)  # fmt: skip

    print(f"\ntest sentences: {evaluation['n_test_sequences']} (seen identities, unseen sentences)")
    print(f"{'metric':<22}{'model':>12}{'baseline':>12}")
    for key in TEST_KEYS:
        print(f"{key:<22}{test[key]:>12.4g}{base[key]:>12.4g}")
    change = 100 * (test["lve"] / base["lve"] - 1)
    print(f"LVE {abs(change):.1f}% {'below' if change <= 0 else 'above'} the mean-motion baseline; "
          f"jaw-envelope Pearson {test['jaw_envelope_pearson']:.3f} (baseline {base['jaw_envelope_pearson']:.3f})")  # fmt: skip
    print("diversity by temperature: " + ", ".join(f"T={t} {v['diversity']:.4g}" for t, v in evaluation["temperatures"].items())
          + f"; sample=false {evaluation['sample_false']['diversity']:.4g}")  # fmt: skip
    return report


if __name__ == "__main__":
    main()
