"""Running the InfAGenC recipe: one Ray Train run per stage, each reading the checkpoints
of earlier stages by path, then the run's ``metrics.json`` inputs and its animations.

Output layout (``DIR``)::

    DIR/recognizer/   stage 1: ST-GCN on real data     (model.safetensors, config.json, metrics.json, predictions.npz)
    DIR/cvae/         stage 2: the pretrained CVAE      (model.safetensors = CVAE)
    DIR/refine/       stage 3: the refined CVAE         (model.safetensors = CVAE, recognizer.safetensors,
                                                       generated_samples.npz, refinement.json, round_features.npz)
    DIR/final/        stage 4: ST-GCN on real + synthetic
    DIR/eval/         stage 5: evaluation.json (model.safetensors = the real-data recogniser of the metrics)
    DIR/models.json   which checkpoint serves what (classifier, generator, body model, classes)
    DIR/animations/   one skeleton GIF per class from the generator
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from affectlab.train.checkpoint import write_json
from affectlab.train.outputs import publish
from affectlab.train.run import fit
from affectlab.workloads.infant import GENERATED_FILE, STAGES, read_infant_config, synthetic_samples_path

MANIFEST_FILE = "models.json"
# the checkpoint fields each stage reads, and the earlier stage that fills each in a full run
STAGE_INPUTS = {
    "recognizer": {"init_recognizer": None},
    "cvae": {"init_cvae": None},
    "refine": {"init_recognizer": "recognizer", "init_cvae": "cvae"},
    "final": {"synthetic_samples": "refine", "init_recognizer": None},
    "eval": {"init_recognizer": "recognizer", "final_recognizer": "final", "init_cvae": "refine", "synthetic_samples": "refine"},
}
REQUIRED_INPUTS = {
    "refine": ("init_recognizer", "init_cvae"),
    "final": ("synthetic_samples",),
    "eval": ("init_recognizer", "final_recognizer", "init_cvae"),
}


def stage_plan(stage: str | None, given: dict[str, str]) -> list[str]:
    """The stages to run: one (``stage``), or all five minus those an init checkpoint
    replaces (``init_recognizer`` replaces stage 1, ``init_cvae`` stage 2)."""
    if stage is not None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        missing = [name for name in REQUIRED_INPUTS.get(stage, ()) if not given.get(name)]
        init_cvae = given.get("init_cvae")
        if stage == "eval" and not given.get("synthetic_samples") and init_cvae and (Path(init_cvae) / GENERATED_FILE).is_file():
            given["synthetic_samples"] = init_cvae  # a refine checkpoint holds its samples
        if missing:
            raise ValueError(f"--stage {stage} needs {', '.join('--' + m.replace('_', '-') for m in missing)}")
        return [stage]
    extra = sorted(set(given) - {"init_recognizer", "init_cvae"})
    if extra:
        raise ValueError(f"a full run takes only --init-recognizer / --init-cvae (they replace stages 1 / 2); {extra} belong to --stage runs")
    skip = {"recognizer"} if given.get("init_recognizer") else set()
    skip |= {"cvae"} if given.get("init_cvae") else set()
    return [s for s in STAGES if s not in skip]


def check_inputs(given: dict[str, str]) -> None:
    """Every checkpoint given exists and is an infant checkpoint (before Ray starts)."""
    for name, path in given.items():
        if name == "synthetic_samples":
            if not synthetic_samples_path(path).is_file():
                raise ValueError(f"--synthetic-samples {path}: no generated-samples file (.npz / .npy) or refine checkpoint directory with {GENERATED_FILE}")
            continue
        read_infant_config(path)


def is_checkpoint(path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def run_stage(workload, cfg, output: Path, run_name: str, storage: str | None = None, callbacks=()) -> Path:
    """Train one stage and publish its final checkpoint as ``output/<stage>``."""
    datasets = workload.datasets(cfg, None)
    result = fit(workload, cfg, datasets, storage or str(output / "ray_results"), f"{run_name}-{cfg.stage}", callbacks)
    if result.checkpoint is None or not (result.metrics or {}).get("final"):
        raise RuntimeError(f"stage {cfg.stage} ended without its final checkpoint (error: {result.error})")
    return publish(lambda tmp: result.checkpoint.to_directory(str(tmp)), output / cfg.stage)


def run_pipeline(
    workload,
    stage_values: dict[str, dict],
    stages: list[str],
    given: dict[str, str],
    output: Path,
    run_name: str,
    storage: str | None = None,
    callbacks=lambda stage: (),
) -> dict[str, Path]:
    """Run ``stages`` in order; each reads the checkpoints its ``STAGE_INPUTS`` name, from
    this run or from ``given``. Returns ``{stage: checkpoint directory}`` (given ones too)."""
    paths: dict[str, Path] = {}
    if given.get("init_recognizer") and "recognizer" not in stages:
        paths["recognizer"] = Path(given["init_recognizer"])
    if given.get("init_cvae") and "cvae" not in stages:
        paths["cvae"] = Path(given["init_cvae"])
    for stage in stages:
        inputs = {}
        for field, source in STAGE_INPUTS[stage].items():
            # a stage run alone reads the checkpoints given; a full run the ones it made
            value = given.get(field) if len(stages) == 1 else (paths.get(source) if source else None)
            if value:
                inputs[field] = str(value)
        cfg = workload.make_config({**stage_values[stage], **inputs})
        size = f"{cfg.eval_seeds} recogniser seed(s), {cfg.generation_seeds} generated set(s)" if stage == "eval" else f"{cfg.epochs} epoch(s)"
        print(f"\n== stage {stage}: {size}" + "".join(f", {k}={v}" for k, v in inputs.items()), flush=True)
        started = time.perf_counter()
        paths[stage] = run_stage(workload, cfg, output, run_name, storage, callbacks(stage))
        print(f"== stage {stage} finished in {time.perf_counter() - started:.0f} s: {paths[stage]}", flush=True)
    if len(stages) == 1:  # the checkpoints a stage alone read count as the run's (a samples file does not)
        for field, source in STAGE_INPUTS[stages[0]].items():
            if source and given.get(field) and source not in paths and is_checkpoint(given[field]):
                paths[source] = Path(given[field])
    return paths


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def refinement_of(paths: dict[str, Path]) -> tuple[dict | None, dict[str, np.ndarray]]:
    """``refinement.json`` and the round features of the run's refine checkpoint, if any."""
    refine = paths.get("refine")
    if refine is None or not (Path(refine) / "refinement.json").is_file():
        return None, {}
    features = {}
    if (Path(refine) / "round_features.npz").is_file():
        with np.load(Path(refine) / "round_features.npz", allow_pickle=False) as f:
            features = {k: f[k] for k in f.files}
    return read_json(Path(refine) / "refinement.json"), features


def run_metrics(paths: dict[str, Path]) -> dict:
    """The run's ``metrics.json`` content: the evaluation (interface keys first) and the
    data-adding rounds of the refinement (skipped rounds listed apart)."""
    out: dict = {}
    if "eval" in paths:
        evaluation = read_json(Path(paths["eval"]) / "evaluation.json")
        out.update({k: evaluation[k] for k in ("recognizer_test_accuracy", "majority_baseline_accuracy", "generation")})
        out.update({k: v for k, v in evaluation.items() if k not in out and k != "seeds"})
    refinement, _ = refinement_of(paths)
    if refinement is not None:
        keep = ("round", "epoch", "generation_epoch", "accuracy_gen", "survivors_per_class", "accepted_per_class", "synthetic_total")
        out["rounds"] = [{k: r[k] for k in keep} for r in refinement["rounds"] if not r["skipped"]]
        out["skipped_rounds"] = [{k: r[k] for k in ("round", "epoch", "reason", "survivors_per_class")} for r in refinement["rounds"] if r["skipped"]]
        out["refinement_init"] = refinement["init"]
    out["checkpoints"] = {stage: str(path) for stage, path in paths.items()}
    return out


def write_manifest(output: Path, paths: dict[str, Path]) -> Path | None:
    """``models.json``: the checkpoints a server loads (classifier: the final recogniser, or
    the real-data one; generator: the refined CVAE, or the pretrained one)."""
    classifier = paths.get("final") or paths.get("recognizer")
    generator = paths.get("refine") or paths.get("cvae")
    if classifier is None and generator is None:
        return None
    config = read_infant_config(classifier or generator)
    manifest = {
        "classifier": str(classifier) if classifier else None,
        "generator": str(generator) if generator else None,
        "body_model": config.get("body_model"),
        "class_names": config["class_names"],
        "num_frames": config["num_frames"],
        "pose_rep": config["pose_rep"],
    }
    write_json(output / MANIFEST_FILE, manifest)
    return output / MANIFEST_FILE


def render_class_animations(generator_dir: Path, out_dir: Path, seed: int = 0, size: int = 192) -> dict[str, Path]:
    """One skeleton GIF per class from the generator checkpoint (its body model gives the
    joints), seeded; ``{class name: path}``."""
    from affectlab.body.models import smpl_layer
    from affectlab.body.render import render_skeleton_animation
    from affectlab.constants.infant import SMPL_PARENTS
    from affectlab.models.infant_inference import build_generator, generate_sequences, weights_file
    from affectlab.train.custom import load_weights

    config = read_infant_config(generator_dir)
    if not config.get("body_model"):
        return {}
    cvae = build_generator(config)
    load_weights(cvae, generator_dir, weights_file(config["stage"], "cvae"))
    names = config["class_names"]
    sequences = generate_sequences(cvae, range(len(names)), 1, config["num_frames"], seed, smpl_layer(config["body_model"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    gifs = {}
    for c, name in enumerate(names):
        path = out_dir / f"{c}_{name.lower().replace(' ', '_')}.gif"
        gifs[name] = render_skeleton_animation(sequences["joints"][c].numpy(), SMPL_PARENTS, path, fps=15, size=size)
    return gifs


def stage_configs(workload, stage_values: dict[str, dict]) -> dict[str, dict]:
    """Each stage's full config as a dict (validated), for metrics.json."""
    return {stage: asdict(workload.make_config(values)) for stage, values in stage_values.items()}


def summarize_cv(results) -> tuple[dict, np.ndarray]:
    """Per fold: test accuracy of the weights selected on the fold's inner validation split,
    and the majority-class baseline; mean ± ci95 (1.96 · std / √n) over the folds. Also the
    confusion matrix pooled over every fold's held-out clips."""
    from affectlab.metrics.infant import accuracy, confusion, mean_ci95
    from affectlab.train.loop import read_predictions

    folds, pooled = [], None
    for r in results:
        test = read_predictions(r.checkpoint_dir)["test"]
        labels, pred, num_classes = test["label"], test["logits"].argmax(1), test["logits"].shape[1]
        folds.append({
            "fold": r.fold, "n_test": int(len(labels)), "test_accuracy": accuracy(labels, pred),
            "best_val_accuracy": r.metrics.get("best_val_accuracy"),
            "majority_baseline_accuracy": float(np.bincount(labels, minlength=num_classes).max() / len(labels)),
        })  # fmt: skip
        matrix = confusion(labels, pred, num_classes)
        pooled = matrix if pooled is None else pooled + matrix
    mean, half = mean_ci95([f["test_accuracy"] for f in folds])
    summary = {
        "test_accuracy": {"mean": mean, "ci95": half},
        "majority_baseline_accuracy": float(np.mean([f["majority_baseline_accuracy"] for f in folds])),
    }
    return {"folds": folds, "summary": summary}, pooled
