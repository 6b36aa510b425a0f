"""The ProbTalk3D evaluation stage (reference/talking_heads.md §4.5): its own Ray Train
per-worker function, fed by Ray Data, reporting through a platform checkpoint.

Per test sequence of the stage-2 split (seen identities, unseen sentences), rank 0:

1. generates ``n_samples`` (10) motions at ``temperature`` from the audio and the
   sequence's style with ``generate_samples``' machinery (the server's function), seeded
   from the run seed and the sequence name;
2. turns truth and samples into FLAME vertices with zero shape and pose (expression = 50
   generated + 50 zeros, generated jaw; the truth truncated to 50 coefficients the same way);
3. scores MVE, LVE (squared max lip error), MEE, CE, signed FDD, sample diversity and the
   Pearson r of the jaw opening with the audio envelope, and the same for the **mean-motion
   baseline** (the training sequences' mean motion at each frame, played for the sequence);
4. repeats the draw at each of ``eval_temperatures`` for diversity, and with
   ``sample=False`` (its diversity must be exactly 0).

On the first few test sequences it also changes only the emotion (then only the
intensity) of the style and records the generated expression (style control), and it keeps
jaw curves and the vertices of one sequence (truth and two samples) for the report's plot
and video. Records are pooled in name order (``metrics.probtalk3d_eval``).

Geometry: with a real FLAME (5023 vertices) the regions and template are the dataset's
``regions/lve.txt``, ``regions/fdd.txt`` and ``flame_zero_pose.npy``; with a smaller model
(the tiny stand-in of the synthetic demo) its own ``lips`` / ``upper_face`` regions and its
zero-pose mesh.
"""

from __future__ import annotations

import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch

from affectlab.constants import probtalk3d as C
from affectlab.data.mead import discover_mead, params_from_motion, read_region, read_zero_pose, unscale_motion
from affectlab.data.probtalk3d_dataset import TIME_AXES, mean_motion_per_frame, play_mean_motion, stage_sequences
from affectlab.data.sequences import SequenceCollate
from affectlab.metrics.probtalk3d_eval import pool_sequence_scores, score_sequence
from affectlab.metrics.talking_heads import expression_stats_by_emotion, sample_diversity
from affectlab.models.probtalk3d_generate import generate_from_input, model_input

EVALUATION_FILE = "evaluation.json"
REPORT_ARRAYS_FILE = "report_data.npz"
REPORT_SEQUENCES = 3  # jaw-curve panels in the report; the first one is rendered
STYLE_SEQUENCES = 4  # test sequences whose style is swapped (style control)
JAW_SAMPLES = 3  # samples drawn in the jaw plots
CHUNK = 1024  # frames per FLAME evaluation


@dataclass
class Geometry:
    """A FLAME layer and the regions / template the metrics use."""

    layer: object
    lip_idx: np.ndarray
    upper_idx: np.ndarray
    template: np.ndarray
    faces: np.ndarray
    source: str

    @classmethod
    def load(cls, flame_dir: str, data_dir: str) -> "Geometry":
        from affectlab.body.models import flame_layer, flame_regions

        if not flame_dir:
            raise ValueError("the evaluation needs flame_dir: a converted FLAME 2020 directory (or the tiny stand-in)")
        layer = flame_layer(flame_dir, n_shape=300, n_expression=100)
        faces = np.asarray(layer.faces, np.int64)
        n_vertices = int(layer.v_template.shape[0])
        if n_vertices == C.NUM_FLAME_VERTICES:
            layout = discover_mead(data_dir)
            lip = read_region(layout.side_file(C.LIP_REGION_FILE))
            upper = read_region(layout.side_file(C.UPPER_FACE_REGION_FILE))
            template = read_zero_pose(layout.side_file(C.ZERO_POSE_FILE))
            source = f"FLAME {flame_dir}; regions and zero pose from {layout.root}"
        else:
            regions = flame_regions(flame_dir)
            lip, upper = regions["lips"], regions["upper_face"]
            template = _flame(layer, np.zeros((1, 100), np.float32), np.zeros((1, 3), np.float32))[0]
            source = f"FLAME stand-in {flame_dir} ({n_vertices} vertices; its own lips/upper_face regions and zero-pose mesh)"
        return cls(layer, lip, upper, template, faces, source)

    def vertices(self, motion: np.ndarray) -> np.ndarray:
        """Scaled motion ``(..., T, 53)`` → vertices ``(..., T, V, 3)`` with zero shape and pose."""
        params = params_from_motion(motion)
        flat = params.reshape(-1, C.PARAM_DIM)
        verts = _flame(self.layer, flat[:, slice(*C.EXPRESSION_SLICE)], flat[:, slice(*C.JAW_SLICE)])
        return verts.reshape(*motion.shape[:-1], *verts.shape[1:])


def _flame(layer, expression: np.ndarray, jaw: np.ndarray) -> np.ndarray:
    """FLAME vertices (N, V, 3) for expression (N, 100) and jaw (N, 3), in chunks of frames."""
    from affectlab.body.models import flame_vertices

    out = []
    with torch.no_grad():
        for i in range(0, len(expression), CHUNK):
            out.append(flame_vertices(layer, expression[i : i + CHUNK], jaw[i : i + CHUNK]).numpy())
    return np.concatenate(out).astype(np.float32)


def sequence_seed(seed: int, name: str) -> int:
    """A seed per test sequence that does not depend on the order Ray Data delivers them."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**62)


def report_choices(names: list[str], emotions: dict[str, int]) -> list[str]:
    """Up to ``REPORT_SEQUENCES`` test sequences with different emotions, in name order
    (emotional ones at the highest intensity first, so the plots show a style)."""
    chosen, seen = [], set()
    for name in sorted(names, key=lambda n: (-int(n.split("_")[3]), n)):
        if emotions[name] not in seen:
            chosen.append(name)
            seen.add(emotions[name])
        if len(chosen) == REPORT_SEQUENCES:
            break
    return chosen


def _rows(shard, batch_size: int = 8):
    """Unpadded per-sequence rows (numpy, names kept) from a test shard."""
    collate = SequenceCollate(TIME_AXES, to_torch=False)
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
        batch = collate(batch)
        for i, t in enumerate(batch["frame_length"]):
            t = int(t)
            yield {
                "name": str(batch["name"][i]), "motion": batch["motion"][i, :t], "envelope": batch["envelope"][i, :t],
                "audio": batch["audio"][i, : t * C.SAMPLES_PER_FRAME],
                "style": (int(batch["identity"][i]), int(batch["emotion"][i]), int(batch["intensity"][i])),
            }  # fmt: skip


def _style_sweeps(model, x, style, vocab: dict, seed: int) -> dict:
    """Mean generated expression (50 raw coefficients) with only the emotion changed (each
    trained emotion; emotional ones at the highest trained intensity, neutral at 0), and
    with only the intensity changed (the first trained non-neutral emotion)."""
    identity = style[0]
    emotions = [C.EMOTIONS.index(e) for e in vocab["emotions"]]
    levels = [C.INTENSITIES.index(i) for i in vocab["intensities"]]

    def mean_expression(s) -> np.ndarray:
        motion = generate_from_input(model, x, s, n_samples=1, sample=False, seed=seed)[0]
        return unscale_motion(motion)[:, : C.NUM_EXPRESSION].mean(0)

    out = {"emotion": {}, "intensity": {}}
    for e in emotions:
        out["emotion"][C.EMOTIONS[e]] = mean_expression((identity, e, max(levels) if e != C.NEUTRAL else 0))
    emotional = [e for e in emotions if e != C.NEUTRAL]
    if emotional:
        out["intensity_emotion"] = C.EMOTIONS[emotional[0]]
        for level in levels:
            out["intensity"][C.INTENSITIES[level]] = mean_expression((identity, emotional[0], level))
    return out


def evaluate_test_set(model, rows, geometry: Geometry, baseline: np.ndarray, cfg, vocab: dict, chosen: list[str], style_names: set[str]):
    """(evaluation dict, report arrays) over the test rows; see the module docstring."""
    top_k = cfg.top_k or None
    records, base_records = {}, {}
    diversity = {f"{t:g}": {} for t in cfg.eval_temperatures}
    argmin_diversity, truth_exp, gen_exp, emotion_of = {}, {}, {}, {}
    sweeps, arrays = [], {}
    for row in rows:
        name, style = row["name"], row["style"]
        seed = sequence_seed(cfg.seed, name)
        x = model_input(model, row["audio"])
        draw = dict(top_k=top_k, fact=cfg.fact, seed=seed)
        samples = generate_from_input(model, x, style, n_samples=cfg.n_samples, temperature=cfg.temperature, **draw)
        t = samples.shape[1]
        truth = row["motion"]
        gt_vertices, sample_vertices = geometry.vertices(truth), geometry.vertices(samples)
        jaw = unscale_motion(samples)[..., C.NUM_EXPRESSION]  # jaw opening (radians), (S, T)
        envelope = row["envelope"]
        kw = dict(lip_idx=geometry.lip_idx, upper_idx=geometry.upper_idx, template=geometry.template, seed=seed)
        records[name] = score_sequence(gt_vertices, sample_vertices, jaw[0], envelope, **kw)
        base = play_mean_motion(baseline, t)
        base_vertices = np.repeat(geometry.vertices(base)[None], 2, axis=0)  # one deterministic motion, twice
        base_records[name] = score_sequence(gt_vertices, base_vertices, unscale_motion(base)[:, C.NUM_EXPRESSION], envelope, **kw)
        for key in diversity:
            if float(key) == cfg.temperature:
                diversity[key][name] = records[name]["diversity"]
            else:
                drawn = generate_from_input(model, x, style, n_samples=cfg.n_samples, temperature=float(key), **draw)
                diversity[key][name] = sample_diversity([geometry.vertices(drawn)], seed)
        argmin = generate_from_input(model, x, style, n_samples=2, sample=False, seed=seed)
        argmin_diversity[name] = sample_diversity([geometry.vertices(argmin)], seed)
        truth_exp[name] = unscale_motion(truth)[:, : C.NUM_EXPRESSION]
        gen_exp[name] = unscale_motion(samples[0])[:, : C.NUM_EXPRESSION]
        emotion_of[name] = style[1]
        if name in style_names:
            sweeps.append((name, _style_sweeps(model, x, style, vocab, seed)))
        if name in chosen:
            k = chosen.index(name)
            arrays[f"jaw_truth_{k}"] = unscale_motion(truth)[:, C.NUM_EXPRESSION]
            arrays[f"jaw_samples_{k}"] = jaw[:JAW_SAMPLES]
            arrays[f"envelope_{k}"] = envelope
            if k == 0:
                arrays["render_vertices"] = np.stack([gt_vertices[:t], sample_vertices[0], sample_vertices[1]])
                arrays["render_audio"] = row["audio"][: t * C.SAMPLES_PER_FRAME]
    if not records:
        raise ValueError("the test split delivered no sequence")
    names = sorted(records)
    evaluation = {
        "test": pool_sequence_scores(records),
        "baseline_mean_motion": pool_sequence_scores(base_records),
        "temperatures": {k: {"diversity": float(np.mean([v[n] for n in names]))} for k, v in diversity.items()},
        "sample_false": {"diversity": float(np.mean([argmin_diversity[n] for n in names]))},
        "style_control": _mean_sweeps([s for _, s in sorted(sweeps, key=lambda item: item[0])]),
        "expression_stats": {
            "truth": expression_stats_by_emotion([truth_exp[n] for n in names], [emotion_of[n] for n in names], C.EMOTIONS),
            "generated": expression_stats_by_emotion([gen_exp[n] for n in names], [emotion_of[n] for n in names], C.EMOTIONS),
        },
        "n_test_sequences": len(names),
        "report": {"sequences": [n for n in chosen if n in records], "render": chosen[0] if chosen and chosen[0] in records else None},
        "per_sequence": {n: {"model": records[n], "baseline": base_records[n]} for n in names},
    }
    arrays["faces"] = geometry.faces
    return evaluation, arrays


def _mean_sweeps(sweeps: list[dict]) -> dict:
    if not sweeps:
        return {}
    out = {"sequences": len(sweeps), "emotion": {}, "intensity": {}, "intensity_emotion": sweeps[0].get("intensity_emotion")}
    for part in ("emotion", "intensity"):
        for key in sweeps[0][part]:
            out[part][key] = np.mean([s[part][key] for s in sweeps], axis=0).tolist()
    return out


def evaluation_loop_per_worker(loop_config: dict) -> None:
    """Ray Train's per-worker function for ``stage="eval"``: rank 0 evaluates; the final
    checkpoint holds ``evaluation.json``, ``report_data.npz`` and the flat metrics."""
    from affectlab.train.checkpoint import CONFIG_FILE, METRICS_FILE, write_json
    from affectlab.train.config import config_to_dict
    from affectlab.workloads.probtalk3d import load_predictor

    workload = loop_config["workload"]
    cfg = workload.make_config(loop_config["config"])
    torch.manual_seed(cfg.seed)
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report({"final": 1})  # a barrier: every rank reports once
        return
    device = ray.train.torch.get_device()
    model, pred_config, _ = load_predictor(cfg.pred_checkpoint, device)
    vocab = {k: pred_config[k] for k in ("identities", "emotions", "intensities")}
    geometry = Geometry.load(cfg.flame_dir, cfg.data_dir)
    test = stage_sequences(discover_mead(cfg.data_dir), "eval", "test")
    chosen = report_choices([s.name for s in test], {s.name: s.emotion for s in test})
    style_names = {s.name for s in sorted(test, key=lambda s: s.name)[:STYLE_SEQUENCES]}

    collate = SequenceCollate(TIME_AXES, to_torch=False)
    train = ray.train.get_dataset_shard("train").iter_batches(batch_size=32, batch_format="numpy")
    baseline = mean_motion_per_frame(collate(b) for b in train)
    rows = _rows(ray.train.get_dataset_shard("test"))
    evaluation, arrays = evaluate_test_set(model, rows, geometry, baseline, cfg, vocab, chosen, style_names)
    evaluation.update(geometry=geometry.source, settings={
        "n_samples": cfg.n_samples, "temperature": cfg.temperature, "top_k": cfg.top_k, "fact": cfg.fact,
        "model": pred_config["model"], "audio": pred_config["audio"], "audio_source": pred_config.get("audio_source", ""),
        "pred_checkpoint": cfg.pred_checkpoint,
    })  # fmt: skip
    flat = {"final": 1, "n_test_sequences": evaluation["n_test_sequences"]}
    for part in ("test", "baseline_mean_motion"):
        flat.update({f"{part}_{k}": v for k, v in evaluation[part].items()})
    flat.update({f"diversity_t{k}": v["diversity"] for k, v in evaluation["temperatures"].items()})
    with tempfile.TemporaryDirectory() as d:
        write_json(Path(d) / EVALUATION_FILE, evaluation)
        write_json(Path(d) / METRICS_FILE, flat)
        write_json(Path(d) / CONFIG_FILE, {"workload": workload.name, "config": config_to_dict(cfg)})
        np.savez(Path(d) / REPORT_ARRAYS_FILE, **arrays)
        ray.train.report(flat, checkpoint=ray.train.Checkpoint.from_directory(d), checkpoint_dir_name="final")
