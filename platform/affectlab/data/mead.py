"""Reader of 3DMEAD as ProbTalk3D prepares it (reference/talking_heads.md §2.1).

Layout under the ``datasets`` directory (a repository root holding ``datasets/`` works too)::

    mead/param/{SUBJ}_{seq}_{e}_{i}.npy   float (1, T, 403): shape[0:300] expression[300:400] jaw[400:403], 25 fps
    mead/wav/{SUBJ}_{seq}_{e}_{i}.wav     speech, any rate (resampled to 16 kHz mono)
    regions/lve.txt, regions/fdd.txt      lip (428) / upper-face (1501) vertex indices
    flame_zero_pose.npy                   (5023, 3) zero-shape, zero-pose FLAME mesh
    templates_mead_vert.pkl               {subject: (5023, 3)} neutral vertices

e.g. ``M003_001_0_0``: subject M003, sentence 1, emotion 0 (neutral), intensity 0 (level_1).

The model's 53-d motion is expression[0:50] + jaw, each min-max scaled over a fixed range
(``affectlab.constants.probtalk3d``; the shipped scaler pickles hold the same numbers and are
never unpickled). ``params_from_motion`` inverts it into ProbTalk3D's generated-output
layout: zero shape, 50 predicted + 50 zero expression coefficients, predicted jaw.

Splits are named for what they hold (defect 4): ``identity_disjoint`` (stage 1, the prior:
32 / 7 / 8 identities) and ``seen_identities_unseen_sentences`` (stage 2, the predictor: the
32 training identities throughout, parts by sentence; its test set has *seen* identities).

The driver only lists files and reads ``.npy`` headers (``discover_mead``): a missing
directory or wav, a file name that does not parse and a parameter array of the wrong shape
are fatal there, before any work starts. Ray Data tasks read the sequences
(``mead_dataset``); a sample that cannot be read (undecodable or truncated wav, corrupt
array, NaN) is skipped with a warning, and counted as the rows asked for minus the rows read.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import ray

from affectlab.constants import probtalk3d as C
from affectlab.data.audio import log_mel, read_wav
from affectlab.data.safe_pickle import load_pickle

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^([MW]\d{3})_(\d{3})_(\d)_(\d)$")
# One time axis for SequenceCollate: motion (and mel) frames, 640 audio samples per frame.
MEAD_TIME_AXES = {"frame": {"motion": 1, "mel": 1, "audio": C.SAMPLES_PER_FRAME}}


class MeadDataError(ValueError):
    """A 3DMEAD directory, file name or array is not what the layout requires."""


# ---------------------------------------------------------------------------- names and files


@dataclass(frozen=True)
class MeadSequence:
    """One sequence of the dataset, as its file name describes it."""

    name: str  # "M003_001_0_0"
    subject: str  # "M003"
    sentence: int  # 1..40 (neutral) / 1..30 (emotional)
    emotion: int  # index into EMOTIONS
    intensity: int  # index into INTENSITIES
    n_frames: int = 0  # from the .npy header; 0 if it could not be read

    @property
    def identity(self) -> int:
        """Index into ``SUBJECTS``; 0-31 are the training identities (the style one-hot's slots)."""
        return C.SUBJECTS.index(self.subject)


def parse_name(stem: str) -> MeadSequence:
    """``'M003_001_0_0'`` → subject, sentence, emotion, intensity (validated)."""
    match = NAME_PATTERN.match(stem)
    if not match:
        raise MeadDataError(f"file name {stem!r} is not of the form SUBJ_seq_e_i (e.g. M003_001_0_0)")
    subject, sentence, emotion, intensity = match.group(1), int(match.group(2)), int(match.group(3)), int(match.group(4))
    if subject not in C.SUBJECTS:
        raise MeadDataError(f"file name {stem!r}: subject {subject} is not one of the 47 3DMEAD subjects")
    if sentence < 1:
        raise MeadDataError(f"file name {stem!r}: sentence numbers start at 001")
    if emotion >= len(C.EMOTIONS):
        raise MeadDataError(f"file name {stem!r}: emotion {emotion} is not in 0-{len(C.EMOTIONS) - 1} {C.EMOTIONS}")
    if intensity >= len(C.INTENSITIES):
        raise MeadDataError(f"file name {stem!r}: intensity {intensity} is not in 0-{len(C.INTENSITIES) - 1}")
    if emotion == C.NEUTRAL and intensity != 0:
        raise MeadDataError(f"file name {stem!r}: neutral sequences have intensity 0 only")
    return MeadSequence(stem, subject, sentence, emotion, intensity)


def sequence_name(subject: str, sentence: int, emotion: int, intensity: int) -> str:
    return f"{subject}_{sentence:03d}_{emotion}_{intensity}"


@dataclass(frozen=True)
class MeadLayout:
    """An opened 3DMEAD ``datasets`` directory: its sequences and the side files present."""

    root: Path
    sequences: tuple[MeadSequence, ...]

    def param_path(self, name: str) -> Path:
        return self.root / C.PARAM_DIR / f"{name}.npy"

    def wav_path(self, name: str) -> Path:
        return self.root / C.WAV_DIR / f"{name}.wav"

    def side_file(self, relative: str) -> Path:
        """A side file (``C.LIP_REGION_FILE``, ``C.ZERO_POSE_FILE``, ...); fatal if missing."""
        path = self.root / relative
        if not path.is_file():
            raise MeadDataError(f"missing 3DMEAD file {path}")
        return path


def discover_mead(root: str | Path) -> MeadLayout:
    """List and check every sequence before any work starts (see the module docstring)."""
    root = _datasets_dir(root)
    for sub in (C.PARAM_DIR, C.WAV_DIR):
        if not (root / sub).is_dir():
            raise MeadDataError(f"{root}: missing directory {sub}/ (expected the layout of reference §2.1)")
    problems, sequences = [], []
    for path in sorted((root / C.PARAM_DIR).glob("*.npy")):
        try:
            seq = parse_name(path.stem)
        except MeadDataError as error:
            problems.append(f"{path}: {error}")
            continue
        if not (root / C.WAV_DIR / f"{path.stem}.wav").is_file():
            problems.append(f"{path}: no matching {C.WAV_DIR}/{path.stem}.wav")
            continue
        header = _npy_header(path)
        n_frames = 0  # an unreadable header is a corrupt sample: the reading task skips it
        if header is not None:
            shape, dtype = header
            if len(shape) != 3 or shape[0] != 1 or shape[2] != C.PARAM_DIM or not np.issubdtype(dtype, np.floating):
                problems.append(f"{path}: {dtype} array of shape {shape}; expected float (1, T, {C.PARAM_DIM})")
                continue
            n_frames = shape[1]
        sequences.append(MeadSequence(seq.name, seq.subject, seq.sentence, seq.emotion, seq.intensity, n_frames))
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise MeadDataError(f"{root}: {len(problems)} unusable sequence files{more}:\n  " + "\n  ".join(problems[:10]))
    if not sequences:
        raise MeadDataError(f"{root / C.PARAM_DIR}: no .npy sequences")
    return MeadLayout(root, tuple(sequences))


def _datasets_dir(root: str | Path) -> Path:
    """The ``datasets`` directory: ``root`` itself, or ``root/datasets`` for a repository root."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise MeadDataError(f"3DMEAD directory {root} does not exist")
    if not (root / C.PARAM_DIR).is_dir() and (root / "datasets" / C.PARAM_DIR).is_dir():
        return root / "datasets"
    return root


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) from a .npy header without reading the data; None if unreadable."""
    try:
        return _read_npy_header(path)[:2]
    except MeadDataError:
        return None


def _read_npy_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes after the header) of a .npy file; ``MeadDataError`` if it has no valid header."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0), (3, 0)):
                raise ValueError(f"unknown .npy format version {version}")
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(f)
            payload = os.fstat(f.fileno()).st_size - f.tell()
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as error:  # numpy parses the header as Python
        raise MeadDataError(f"{path}: not a readable .npy array ({error})") from None
    return tuple(shape), dtype, payload


def _load_npy(path: str | Path) -> np.ndarray:
    """A numeric .npy array; its header is checked against the file size first, so a corrupt or
    hostile header is a ``MeadDataError``, never a huge allocation, and object arrays are refused."""
    shape, dtype, payload = _read_npy_header(path)
    if dtype.hasobject:
        raise MeadDataError(f"{path}: holds Python objects (a pickle); expected a numeric array")
    declared = math.prod(shape) * dtype.itemsize
    if declared > payload:
        raise MeadDataError(f"{path}: truncated: the header declares {shape} {dtype} ({declared} bytes), {payload} are present")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise MeadDataError(f"{path}: not a readable .npy array ({error})") from None


def read_region(path: str | Path) -> np.ndarray:
    """Vertex indices of a region file (``lve.txt``/``fdd.txt``: integers separated by commas or spaces)."""
    path = Path(path)
    if not path.is_file():
        raise MeadDataError(f"missing region file {path}")
    tokens = [t for t in re.split(r"[,\s]+", path.read_text()) if t]
    try:
        indices = np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError as error:
        raise MeadDataError(f"{path}: region files hold integer vertex indices ({error})") from error
    if len(indices) == 0 or indices.min() < 0 or indices.max() >= C.NUM_FLAME_VERTICES:
        raise MeadDataError(f"{path}: expected vertex indices in 0-{C.NUM_FLAME_VERTICES - 1}, got {len(indices)} values")
    return indices


def read_zero_pose(path: str | Path) -> np.ndarray:
    """``flame_zero_pose.npy``: (5023, 3) float32 vertices (metres)."""
    return _vertices(_load_npy(path), path)


def read_templates(path: str | Path) -> dict[str, np.ndarray]:
    """``templates_mead_vert.pkl``: {subject: (5023, 3)}, through the restricted unpickler."""
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise MeadDataError(f"{path}: expected a dict of subject -> (5023, 3) vertices, got {type(data).__name__}")
    return {str(k): _vertices(np.asarray(v), f"{path}[{k!r}]") for k, v in data.items()}


def _vertices(array: np.ndarray, where) -> np.ndarray:
    array = np.asarray(array)
    if array.shape[-2:] != (C.NUM_FLAME_VERTICES, 3) or array.size != C.NUM_FLAME_VERTICES * 3:
        raise MeadDataError(f"{where}: vertices of shape {array.shape}; expected ({C.NUM_FLAME_VERTICES}, 3)")
    return array.reshape(C.NUM_FLAME_VERTICES, 3).astype(np.float32)


# ---------------------------------------------------------------------------- motion scaling


def _scale_params() -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension (scale, min_) of sklearn's MinMaxScaler fitted on the fixed ranges."""
    lo = np.array([C.EXPRESSION_RANGE[0]] * C.NUM_EXPRESSION + [C.JAW_RANGE[0]] * C.NUM_JAW)
    hi = np.array([C.EXPRESSION_RANGE[1]] * C.NUM_EXPRESSION + [C.JAW_RANGE[1]] * C.NUM_JAW)
    scale = 1.0 / (hi - lo)
    return scale, -lo * scale


SCALE, MIN_ = _scale_params()  # expression: 1/6, 0.5; jaw: 1/0.6, 1/6


def scale_motion(raw: np.ndarray) -> np.ndarray:
    """Raw (..., 53) [expression[0:50] | jaw] → scaled, ``x·scale + min_`` (no clipping)."""
    return (np.asarray(raw, np.float64) * SCALE + MIN_).astype(np.float32)


def unscale_motion(scaled: np.ndarray) -> np.ndarray:
    """Scaled (..., 53) → raw expression + jaw (radians)."""
    return ((np.asarray(scaled, np.float64) - MIN_) / SCALE).astype(np.float32)


def motion_from_params(params: np.ndarray) -> np.ndarray:
    """FLAME parameters (..., 403) → the model's scaled motion (..., 53)."""
    params = np.asarray(params)
    if params.shape[-1] != C.PARAM_DIM:
        raise MeadDataError(f"FLAME parameters of shape {params.shape}; expected (..., {C.PARAM_DIM})")
    e0, j0 = C.EXPRESSION_SLICE[0], C.JAW_SLICE[0]
    raw = np.concatenate([params[..., e0 : e0 + C.NUM_EXPRESSION], params[..., j0 : j0 + C.NUM_JAW]], axis=-1)
    return scale_motion(raw)


def params_from_motion(motion: np.ndarray) -> np.ndarray:
    """Scaled motion (..., 53) → (..., 403) in ProbTalk3D's generated-output layout.

    Zero shape, expression = the 50 predicted + 50 zeros, the predicted jaw; K samples of T
    frames come out (K, T, 403). Applied to ``motion_from_params(gt)`` it gives the ground
    truth as the evaluation builds it (expression truncated to 50).
    """
    motion = np.asarray(motion)
    if motion.shape[-1] != C.MOTION_DIM:
        raise MeadDataError(f"motion of shape {motion.shape}; expected (..., {C.MOTION_DIM})")
    raw = unscale_motion(motion)
    out = np.zeros(motion.shape[:-1] + (C.PARAM_DIM,), np.float32)
    e0, j0 = C.EXPRESSION_SLICE[0], C.JAW_SLICE[0]
    out[..., e0 : e0 + C.NUM_EXPRESSION] = raw[..., : C.NUM_EXPRESSION]
    out[..., j0 : j0 + C.NUM_JAW] = raw[..., C.NUM_EXPRESSION :]
    return out


# ---------------------------------------------------------------------------- splits


def split_sequences(sequences: Sequence[MeadSequence], protocol: str, part: str) -> list[MeadSequence]:
    """The sequences of one part (``train``/``val``/``test``) of a named split protocol.

    ``identity_disjoint``: the 32 / 7 / 8 identities of stage 1, every sequence.
    ``seen_identities_unseen_sentences``: the 32 training identities in every part; neutral
    sentences 1-32 / 33-36 / 37-40, emotional 1-24 / 25-27 / 28-30, all intensities.
    """
    if protocol not in C.SPLIT_PROTOCOLS:
        raise ValueError(f"split protocol must be one of {C.SPLIT_PROTOCOLS}, got {protocol!r}")
    if part not in C.SPLIT_PARTS:
        raise ValueError(f"split part must be one of {C.SPLIT_PARTS}, got {part!r}")
    if protocol == C.IDENTITY_DISJOINT:
        subjects = set(C.IDENTITY_SPLIT[part])
        return [s for s in sequences if s.subject in subjects]
    ranges = C.SENTENCE_SPLIT[part]
    train = set(C.TRAIN_SUBJECTS)

    def in_part(s: MeadSequence) -> bool:
        lo, hi = ranges["neutral" if s.emotion == C.NEUTRAL else "emotional"]
        return s.subject in train and lo <= s.sentence <= hi

    return [s for s in sequences if in_part(s)]


# ---------------------------------------------------------------------------- reading (Ray Data tasks)


def read_sequence(param_path: str | Path, wav_path: str | Path, *, mel_per_frame: int | None = None) -> dict[str, np.ndarray]:
    """One sequence: scaled motion (T, 53), 16 kHz audio (T·640,), and mel (T, k·80) if asked.

    Motion and audio are cut to the frames both cover (ProbTalk3D truncates whichever is
    longer). Raises ``MeadDataError``/``AudioError`` for a sample that cannot be used.
    """
    params = _load_npy(param_path)
    if params.ndim != 3 or params.shape[0] != 1 or params.shape[2] != C.PARAM_DIM:
        raise MeadDataError(f"{param_path}: array of shape {params.shape}; expected (1, T, {C.PARAM_DIM})")
    if not np.isfinite(params).all():
        raise MeadDataError(f"{param_path}: FLAME parameters contain NaN or infinite values")
    audio = read_wav(wav_path, target_sr=C.AUDIO_SAMPLE_RATE)
    t = min(params.shape[1], len(audio) // C.SAMPLES_PER_FRAME)
    if t == 0:
        raise MeadDataError(f"{param_path}: no frame is covered by both motion ({params.shape[1]} frames) and audio")
    out = {"motion": motion_from_params(params[0, :t]), "audio": audio[: t * C.SAMPLES_PER_FRAME]}
    if mel_per_frame:
        out["mel"] = log_mel(out["audio"], C.AUDIO_SAMPLE_RATE, C.FPS, n_frames=t, per_frame=mel_per_frame)
    return out


def _load_rows(item: dict, root: str, mel_per_frame: int | None) -> list[dict]:
    """``flat_map`` function: a file row → [the sequence row], or [] for a corrupt sample."""
    base = Path(root)
    name = item["name"]
    try:
        data = read_sequence(base / C.PARAM_DIR / f"{name}.npy", base / C.WAV_DIR / f"{name}.wav", mel_per_frame=mel_per_frame)
    except (ValueError, OSError, EOFError) as error:  # MeadDataError, AudioError, corrupt .npy
        log.warning("skipping 3DMEAD sequence %s: %s", name, error)
        return []
    row = {"motion": data["motion"], "audio": data["audio"], "n_frames": len(data["motion"])}
    if "mel" in data:
        row["mel"] = data["mel"]
    row.update({k: item[k] for k in ("identity", "emotion", "intensity", "sentence", "name")})
    return [row]


def mead_dataset(
    root: str | Path | MeadLayout,
    rows: Sequence[MeadSequence],
    *,
    mel_per_frame: int | None = None,
    sequences_per_task: int = 8,
    num_cpus: float = 0.25,
) -> "ray.data.Dataset":
    """A Ray Dataset with one row per sequence, read inside Ray Data tasks.

    Row schema::

        motion     float32 [T, 53]      scaled expression[0:50] + jaw
        audio      float32 [T * 640]    16 kHz mono in [-1, 1]
        mel        float32 [T, k * 80]  only with mel_per_frame=k (log_mel, §3 substitute)
        n_frames   int64                T
        identity   int64                index into SUBJECTS (0-31: training identities)
        emotion    int64                index into EMOTIONS
        intensity  int64                index into INTENSITIES
        sentence   int64                sentence number
        name       str                  e.g. "M003_001_0_0"

    Batch it with ``SequenceCollate(MEAD_TIME_AXES)``. Corrupt samples are dropped: the
    number skipped is ``len(rows)`` minus the rows read.
    """
    base = root.root if isinstance(root, MeadLayout) else _datasets_dir(root)
    if not rows:
        raise MeadDataError(f"{base}: no sequences to read (is the split empty?)")
    items = [
        {"name": s.name, "identity": s.identity, "emotion": s.emotion, "intensity": s.intensity, "sentence": s.sentence}
        for s in rows
    ]
    n_blocks = max(1, min(len(items), math.ceil(len(items) / sequences_per_task)))
    return ray.data.from_items(items, override_num_blocks=n_blocks).flat_map(
        _load_rows, fn_kwargs={"root": str(base), "mel_per_frame": mel_per_frame}, num_cpus=num_cpus
    )
