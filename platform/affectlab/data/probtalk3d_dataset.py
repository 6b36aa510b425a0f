"""Ray Datasets of the three ProbTalk3D stages, built on the 3DMEAD reader (``data.mead``).

Each stage reads its own named split (reference/talking_heads.md §2.1, defect 4):

| stage | protocol | parts | columns besides the labels |
|---|---|---|---|
| ``prior`` | ``identity_disjoint`` | train / val / test | motion, envelope |
| ``pred`` | ``seen_identities_unseen_sentences`` | train / val / test | motion, envelope, mel (log-mel) or audio (HuBERT) |
| ``eval`` | ``seen_identities_unseen_sentences`` | test (+ train motion for the mean-motion baseline) | motion, envelope, audio, name |

``envelope`` is the per-frame RMS of the 16 kHz audio (``audio_envelope``), what the jaw is
scored against. Labels are ``identity``, ``emotion``, ``intensity``, ``sentence`` and
``n_frames``. Batch the rows with ``SequenceCollate(TIME_AXES)``: every column above shares
the frame axis (audio at 640 samples a frame).

``cache=True`` materialises a split once in the object store (log-mel features cost ~0.1 s
a sequence, and Ray Data otherwise recomputes them every epoch); the default streams, as
a real 3DMEAD does not fit a laptop's object store.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import ray

from affectlab.constants import probtalk3d as C
from affectlab.data.audio import audio_envelope
from affectlab.data.mead import MeadLayout, MeadSequence, mead_dataset, split_sequences

STAGES = ("prior", "pred", "eval")
STAGE_PROTOCOLS = {"prior": C.IDENTITY_DISJOINT, "pred": C.SEEN_IDENTITIES_UNSEEN_SENTENCES, "eval": C.SEEN_IDENTITIES_UNSEEN_SENTENCES}
AUDIO_FRONTENDS = ("hubert", "logmel")
TIME_AXES = {"frame": {"motion": 1, "mel": 1, "envelope": 1, "audio": C.SAMPLES_PER_FRAME}}
LABELS = ("identity", "emotion", "intensity", "sentence", "n_frames")


def stage_sequences(layout: MeadLayout, stage: str, part: str) -> list[MeadSequence]:
    """The sequences of one part of a stage's named split."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return split_sequences(layout.sequences, STAGE_PROTOCOLS[stage], part)


def _finish_row(row: dict, keep: tuple[str, ...]) -> dict:
    """Add the per-frame audio envelope; keep the labels and the ``keep`` columns only."""
    out = {k: row[k] for k in LABELS + keep if k in row}
    if "envelope" in keep:
        out["envelope"] = audio_envelope(row["audio"], C.AUDIO_SAMPLE_RATE, C.FPS, int(row["n_frames"]))
    return out


def sequence_dataset(
    layout: MeadLayout, rows: Sequence[MeadSequence], columns: tuple[str, ...], *, mel_per_frame: int = 4, cache: bool = False
) -> "ray.data.Dataset":
    """Rows with the labels and ``columns`` (out of motion, envelope, mel, audio, name)."""
    unknown = set(columns) - {"motion", "envelope", "mel", "audio", "name"}
    if unknown:
        raise ValueError(f"unknown columns {sorted(unknown)}")
    ds = mead_dataset(layout, rows, mel_per_frame=mel_per_frame if "mel" in columns else None)
    ds = ds.map(_finish_row, fn_kwargs={"keep": tuple(columns)}, num_cpus=0.25)
    return ds.materialize() if cache else ds


def stage_datasets(
    layout: MeadLayout, stage: str, *, audio: str = "logmel", mel_per_frame: int = 4, cache: bool = False
) -> dict[str, "ray.data.Dataset"]:
    """``{"train", "val", "test"}`` for the ``prior`` and ``pred`` stages, ``{"test", "train"}``
    for ``eval`` (its train part carries motion only). An empty part is fatal, naming it."""
    if audio not in AUDIO_FRONTENDS:
        raise ValueError(f"audio must be one of {AUDIO_FRONTENDS}, got {audio!r}")
    parts = {"prior": ("train", "val", "test"), "pred": ("train", "val", "test"), "eval": ("test", "train")}[stage]
    out = {}
    for part in parts:
        rows = stage_sequences(layout, stage, part)
        if not rows:
            raise ValueError(
                f"{layout.root}: the {part!r} part of the {STAGE_PROTOCOLS[stage]!r} split (stage {stage}) holds no sequence"
            )
        if stage == "prior":
            columns = ("motion", "envelope")
        elif stage == "pred":
            columns = ("motion", "envelope", "mel" if audio == "logmel" else "audio")
        else:
            columns = ("motion", "envelope", "audio", "name") if part == "test" else ("motion",)
        out[part] = sequence_dataset(layout, rows, columns, mel_per_frame=mel_per_frame, cache=cache)
    return out


def vocabulary(layout: MeadLayout) -> dict[str, list[str]]:
    """Identities, emotions and intensities the stage-2 training part holds (the styles a
    trained predictor has seen), as names in index order."""
    rows = stage_sequences(layout, "pred", "train")
    if not rows:
        raise ValueError(f"{layout.root}: the stage-2 training part holds no sequence")
    identities = sorted({s.identity for s in rows})
    return {
        "identities": [C.SUBJECTS[i] for i in identities],
        "emotions": [C.EMOTIONS[e] for e in sorted({s.emotion for s in rows})],
        "intensities": [C.INTENSITIES[i] for i in sorted({s.intensity for s in rows})],
    }


def mean_motion_per_frame(batches) -> np.ndarray:
    """The mean-motion baseline from numpy batches of padded ``motion`` with ``frame_mask``:
    ``(T_max + 1, 53)``, row t the mean over training sequences of their frame t, the last
    row the mean over every training frame (played past the longest sequence)."""
    sums, counts, total, n = None, None, None, 0
    for batch in batches:
        motion = np.asarray(batch["motion"], np.float64)
        mask = np.asarray(batch["frame_mask"], bool)
        t = motion.shape[1]
        if sums is None:
            sums, counts, total = np.zeros((t, motion.shape[2])), np.zeros(t), np.zeros(motion.shape[2])
        if t > len(sums):
            sums, counts = np.pad(sums, ((0, t - len(sums)), (0, 0))), np.pad(counts, (0, t - len(counts)))
        masked = motion * mask[..., None]
        sums[:t] += masked.sum(0)
        counts[:t] += mask.sum(0)
        total += masked.sum((0, 1))
        n += int(mask.sum())
    if not n:
        raise ValueError("no training frames to average for the mean-motion baseline")
    per_frame = sums / np.maximum(counts, 1)[:, None]
    return np.concatenate([per_frame, (total / n)[None]]).astype(np.float32)


def play_mean_motion(baseline: np.ndarray, n_frames: int) -> np.ndarray:
    """``(n_frames, 53)`` of the baseline: its frames, then the overall mean."""
    frames = baseline[:-1][:n_frames]
    if len(frames) < n_frames:
        frames = np.concatenate([frames, np.repeat(baseline[-1:], n_frames - len(frames), axis=0)])
    return frames
