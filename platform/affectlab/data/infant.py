"""Readers of the infant pose-sequence datasets (reference/infant.md §1).

Three native formats, all pickles, all read through the one restricted unpickler
(``affectlab.data.safe_pickle.load_pickle``: numpy arrays, str, numbers, lists, dicts;
anything else is refused before it runs):

- the InfActPrimitive / InfActPlus pkls (§1.2): a list of dicts, one per clip, with
  ``pose`` ((1, T, 24, 3) or (T, 72) SMPL/SMIL axis-angle, joint 0 = global orientation),
  optional ``keypoint`` ((1, T, 17, 3) H36M-17 joints), ``frame_dir`` (clip id), the label
  string under ``pos_label`` (primitive) or ``action_label`` (plus) and, in the
  transitional pkls, ``subject_id``;
- the MMAction2 ``PoseDataset`` pickle of the benchmark repository (§1.3):
  ``{"split": {name: [frame_dir, ...]}, "annotations": [dict, ...]}`` with integer labels
  and ``keypoint`` (M, T, V, C);
- the refinement loop's ``generated_samples.npy`` (§1.6), a dict that ``np.save`` pickled.
  affectlab writes the same fields without pickles, as an ``.npz`` of arrays.

Labels are matched as exact strings against ``affectlab.constants.infant.CLASSES``. A
clip whose label is unknown is skipped and counted, with its pose (the original appended
the pose but not the label and so shifted every later pair, defect 5). A malformed clip is
skipped and counted; a missing file or a missing required key is fatal.

Subjects: ``subject_id`` when the clip has one, else a ``Dxx`` prefix of ``frame_dir``
(``subject_pattern``), else none: such a clip is its own group, so splits are by subject
where ids exist and by clip otherwise. The validation split that checkpoint selection
uses is carved from the training file (defects 3, 4); the test file is reported once.
"""

from __future__ import annotations

import os
import re
import tempfile
import tokenize
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold, GroupShuffleSplit

from affectlab.constants.infant import CLASSES, INFACT_FILES, LABEL_KEYS, NUM_SMPL_JOINTS
from affectlab.data.safe_pickle import UnsafePickleError, load_pickle

SUBJECT_PATTERN = r"^(D\d+)[_\-]"  # "D07_clip12" -> subject "D07"
POSE_REPS = {"rotvec": 3, "rotmat": 9, "rot6d": 6, "xyz": 3}


class InfantDataError(ValueError):
    """An infant data file, key or value is not what the format requires."""


@dataclass(frozen=True)
class InfantClip:
    """One clip. ``pose`` (T, 24, 3) float32 axis-angle and/or ``keypoint`` (T, V, C) float32."""

    clip_id: str
    label: int
    subject: str | None  # None: the file names no subject for this clip
    pose: np.ndarray | None
    keypoint: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return len(self.pose if self.pose is not None else self.keypoint)

    @property
    def group(self) -> str:
        """The unit that must not straddle a split: the subject, or the clip itself."""
        return self.subject if self.subject is not None else f"clip:{self.clip_id}"


@dataclass
class InfantSplit:
    """The usable clips of one file (or one named split) and what was skipped, and why."""

    source: str
    clips: list[InfantClip]
    unknown_labels: Counter = field(default_factory=Counter)  # label -> number of clips skipped
    corrupt: list[str] = field(default_factory=list)  # one message per malformed clip skipped

    @property
    def n_skipped(self) -> int:
        return sum(self.unknown_labels.values()) + len(self.corrupt)

    def labels(self) -> np.ndarray:
        return np.array([c.label for c in self.clips], dtype=np.int64)


# ---------------------------------------------------------------------------- InfAct pkls


def _load(path: Path, what: str) -> Any:
    """``load_pickle`` of an infant file: a refused global stays an ``UnsafePickleError``; a
    truncated or corrupt pickle is an ``InfantDataError`` naming the file."""
    try:
        return load_pickle(path)
    except UnsafePickleError:
        raise
    except ValueError as error:
        raise InfantDataError(f"{path}: not a readable {what} ({str(error).split(': ', 1)[-1]})") from None


def infact_paths(data_dir: str | Path, dataset: str) -> dict[str, Path]:
    """The train and test pkls of ``dataset`` under ``data_dir``, in the original layout."""
    files = INFACT_FILES.get(dataset)
    if files is None:
        raise InfantDataError(f"unknown infant dataset {dataset!r}; expected one of {sorted(INFACT_FILES)}")
    paths = {split: Path(data_dir) / rel for split, rel in files.items()}
    for split, path in paths.items():
        if not path.is_file():
            raise InfantDataError(f"missing {dataset} {split} file {path} (layout: <data_dir>/{files[split]})")
    return paths


def read_infact(path: str | Path, dataset: str, subject_pattern: str = SUBJECT_PATTERN) -> InfantSplit:
    """Read an InfActPrimitive (``dataset="primitive"``) or InfActPlus (``"plus"``) pkl."""
    if dataset not in CLASSES:
        raise InfantDataError(f"unknown infant dataset {dataset!r}; expected one of {sorted(CLASSES)}")
    path = Path(path)
    if not path.is_file():
        raise InfantDataError(f"missing infant pkl {path}")
    data = _load(path, "InfAct pkl")
    if not isinstance(data, list):
        raise InfantDataError(f"{path}: expected a list of clip dicts (reference §1.2), got {type(data).__name__}")
    label_key, index = LABEL_KEYS[dataset], {name: i for i, name in enumerate(CLASSES[dataset])}
    split = InfantSplit(str(path), [])
    for i, sample in enumerate(data):
        if not isinstance(sample, dict):
            split.corrupt.append(f"item {i}: a {type(sample).__name__}, not a clip dict")
            continue
        for key in ("pose", label_key):
            if key not in sample:
                raise InfantDataError(f"{path}: clip {i} has no key {key!r} (keys: {sorted(map(str, sample))})")
        clip_id = _text(sample.get("frame_dir", f"{i:05d}"))
        label = _text(sample[label_key])
        if label not in index:
            split.unknown_labels[label] += 1
            continue
        try:
            pose = as_pose(sample["pose"])
            keypoint = as_keypoint(sample["keypoint"], len(pose)) if "keypoint" in sample else None
        except ValueError as error:
            split.corrupt.append(f"clip {i} ({clip_id}): {error}")
            continue
        subject = _subject(sample.get("subject_id"), clip_id, subject_pattern)
        split.clips.append(InfantClip(clip_id, index[label], subject, pose, keypoint))
    return split


def as_pose(value: Any) -> np.ndarray:
    """An SMPL axis-angle sequence as (T, 24, 3) float32: person 0 of (M, T, 24, 3) or
    (M, T, 72), or (T, 24, 3), or (T, 72)."""
    a = _float_array(value, "pose")
    if a.ndim == 4 or (a.ndim == 3 and a.shape[-1] == 3 * NUM_SMPL_JOINTS):
        a = a[0] if len(a) else a  # the first person, as the original loaders do
    if a.ndim == 2 and a.shape[-1] == 3 * NUM_SMPL_JOINTS:
        a = a.reshape(len(a), NUM_SMPL_JOINTS, 3)
    if a.ndim != 3 or a.shape[1:] != (NUM_SMPL_JOINTS, 3) or len(a) == 0:
        raise ValueError(f"pose has shape {np.shape(value)}; expected (1, T, 24, 3), (T, 24, 3) or (T, 72) with T >= 1")
    return a


def as_keypoint(value: Any, n_frames: int | None = None) -> np.ndarray:
    """3D joints as (T, V, C) float32: person 0 of (M, T, V, C), or (T, V, C)."""
    a = _float_array(value, "keypoint")
    if a.ndim == 4:
        a = a[0] if len(a) else a
    if a.ndim != 3 or len(a) == 0:
        raise ValueError(f"keypoint has shape {np.shape(value)}; expected (M, T, V, C) or (T, V, C)")
    if n_frames is not None and len(a) != n_frames:
        raise ValueError(f"keypoint has {len(a)} frames but pose has {n_frames}")
    return a


def _float_array(value: Any, name: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"{name} is not a numeric array ({error})") from None
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(a)).sum())} NaN/inf values")
    return np.ascontiguousarray(a)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.item())
    return str(value)


def _subject(subject_id: Any, clip_id: str, pattern: str) -> str | None:
    if subject_id is not None and _text(subject_id).strip():
        return _text(subject_id).strip()
    match = re.match(pattern, clip_id) if pattern else None
    return match.group(1) if match else None


# ---------------------------------------------------------------------------- MMAction2 PoseDataset


def read_pose_dataset(
    path: str | Path, num_classes: int | None = None, subject_pattern: str = SUBJECT_PATTERN
) -> dict[str, InfantSplit]:
    """Read an MMAction2 ``PoseDataset`` pickle into one ``InfantSplit`` per named split.

    Clips carry ``keypoint`` (T, V, C) of person 0 and no ``pose``. Integer labels outside
    ``[0, num_classes)`` (when given) are skipped and counted, under ``"label <n>"``.
    """
    path = Path(path)
    if not path.is_file():
        raise InfantDataError(f"missing PoseDataset pickle {path}")
    data = _load(path, "PoseDataset pickle")
    if not isinstance(data, dict) or "split" not in data or "annotations" not in data:
        raise InfantDataError(f"{path}: expected a dict with keys 'split' and 'annotations' (MMAction2 PoseDataset)")
    if not isinstance(data["split"], dict) or not isinstance(data["annotations"], list):
        raise InfantDataError(f"{path}: 'split' must map split names to id lists and 'annotations' must be a list")

    clips: dict[str, InfantClip] = {}
    skipped: dict[str, tuple[str, str]] = {}  # frame_dir -> ("label", "label <n>") or ("corrupt", message)
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise InfantDataError(f"{path}: annotation {i} is a {type(ann).__name__}, not a dict")
        for key in ("frame_dir", "label", "keypoint"):
            if key not in ann:
                raise InfantDataError(f"{path}: annotation {i} has no key {key!r}")
        clip_id, label = _text(ann["frame_dir"]), ann["label"]
        if not isinstance(label, (int, np.integer)) or label < 0 or (num_classes is not None and label >= num_classes):
            skipped[clip_id] = ("label", f"label {label}")
            continue
        try:
            keypoint = as_keypoint(ann["keypoint"])
        except ValueError as error:
            skipped[clip_id] = ("corrupt", f"annotation {i} ({clip_id}): {error}")
            continue
        clips[clip_id] = InfantClip(clip_id, int(label), _subject(None, clip_id, subject_pattern), None, keypoint)

    splits = {}
    for name, ids in data["split"].items():
        split = InfantSplit(f"{path}:{_text(name)}", [])
        for clip_id in map(_text, ids):
            if clip_id in clips:
                split.clips.append(clips[clip_id])
            elif clip_id not in skipped:
                raise InfantDataError(f"{path}: split {name!r} names {clip_id!r}, which has no annotation")
            elif skipped[clip_id][0] == "label":
                split.unknown_labels[skipped[clip_id][1]] += 1
            else:
                split.corrupt.append(skipped[clip_id][1])
        splits[_text(name)] = split
    return splits


# ---------------------------------------------------------------------------- splits


def validation_split(clips: list[InfantClip], val_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """(train, val) carved from training clips, disjoint by ``InfantClip.group`` (subject, or
    clip where the file names none), seeded. ``val`` is for checkpoint selection only."""
    groups = [c.group for c in clips]
    n_groups = len(set(groups))
    if not 0.0 < val_fraction < 1.0:
        raise InfantDataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if n_groups < 2 or int(np.ceil(val_fraction * n_groups)) >= n_groups:
        raise InfantDataError(
            f"{n_groups} subject/clip groups cannot give a {val_fraction:.0%} validation split and a training set"
        )
    splitter = GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    train_idx, val_idx = next(splitter.split(np.zeros(len(clips)), groups=groups))
    return [clips[i] for i in sorted(train_idx)], [clips[i] for i in sorted(val_idx)]


def group_folds(clips: list[InfantClip], k: int = 5, seed: int = 0) -> list[tuple[list, list]]:
    """k (train, test) folds disjoint by group; every group is tested exactly once."""
    groups = [c.group for c in clips]
    if not 2 <= k <= len(set(groups)):
        raise InfantDataError(f"k must be between 2 and the number of groups ({len(set(groups))}), got {k}")
    splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [
        ([clips[i] for i in train], [clips[i] for i in test])
        for train, test in splitter.split(np.zeros(len(clips)), groups=groups)
    ]


# ---------------------------------------------------------------------------- items (§1.5)


def frame_indices(n_total: int, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Frames of one item (``--sampling conseq --sampling_step 1``).

    Longer clips: a window of ``num_frames`` consecutive frames, at a shift drawn uniformly
    from every possible start when ``rng`` is given (the original's
    ``randint(0, shift_max - 1)`` never drew the last window), centred when it is not
    (evaluation). Shorter clips: every frame, then the last one repeated.
    """
    if n_total < 1 or num_frames < 1:
        raise ValueError(f"need n_total >= 1 and num_frames >= 1, got {n_total} and {num_frames}")
    if n_total <= num_frames:
        return np.concatenate([np.arange(n_total), np.full(num_frames - n_total, n_total - 1)])
    shift_max = n_total - num_frames
    shift = int(rng.integers(0, shift_max + 1)) if rng is not None else shift_max // 2
    return shift + np.arange(num_frames)


def sample_frames(x: np.ndarray, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """``x[frame_indices(len(x), num_frames, rng)]``: a window, or the clip padded by repetition."""
    return x[frame_indices(len(x), num_frames, rng)]


def pose_features(pose: np.ndarray, pose_rep: str = "rot6d", glob: bool = True) -> np.ndarray:
    """(T, 24, 3) axis-angle -> (T, J, F) float32 in ``pose_rep`` (``rotvec`` 3, ``rotmat`` 9,
    ``rot6d`` 6 = the first two rows of the rotation matrix, §2). ``glob=False`` drops the
    root (J = 23)."""
    import torch  # only where features are computed, so the readers stay light

    from affectlab.body.rotations import axis_angle_to_matrix

    if pose_rep not in ("rotvec", "rotmat", "rot6d"):
        raise ValueError(f"pose_rep must be rotvec, rotmat or rot6d for an axis-angle pose, got {pose_rep!r}")
    pose = np.asarray(pose, dtype=np.float32)
    if not glob:
        pose = pose[:, 1:]
    if pose_rep == "rotvec":
        return np.ascontiguousarray(pose)
    rotmat = axis_angle_to_matrix(torch.from_numpy(pose)).numpy()
    rows = rotmat if pose_rep == "rotmat" else rotmat[..., :2, :]
    return np.ascontiguousarray(rows.reshape(*pose.shape[:-1], -1), dtype=np.float32)


def infant_rows(
    clips: list[InfantClip],
    num_frames: int,
    pose_rep: str = "rot6d",
    glob: bool = True,
    seed: int | None = None,
) -> list[dict]:
    """One row per clip: ``pose`` (num_frames, J, F) float32 features, ``label``, ``subject``
    ('' when unknown), ``clip_id`` and ``n_frames`` (real frames before padding). ``seed``
    draws the training windows; ``None`` takes the centred window of every clip."""
    if pose_rep not in POSE_REPS:
        raise ValueError(f"pose_rep must be one of {sorted(POSE_REPS)}, got {pose_rep!r}")
    rng = np.random.default_rng(seed) if seed is not None else None
    rows = []
    for clip in clips:
        idx = frame_indices(clip.n_frames, num_frames, rng)
        if pose_rep == "xyz":
            if clip.keypoint is None:
                raise InfantDataError(f"clip {clip.clip_id} has no keypoint, which pose_rep='xyz' needs")
            features = np.ascontiguousarray(clip.keypoint[idx], dtype=np.float32)
        else:
            if clip.pose is None:
                raise InfantDataError(f"clip {clip.clip_id} has no axis-angle pose, which pose_rep={pose_rep!r} needs")
            features = pose_features(clip.pose[idx], pose_rep, glob)
        rows.append(
            {
                "pose": features,
                "label": np.int64(clip.label),
                "subject": clip.subject or "",
                "clip_id": clip.clip_id,
                "n_frames": np.int64(min(clip.n_frames, num_frames)),
            }
        )
    return rows


def infant_dataset(
    clips: list[InfantClip],
    num_frames: int,
    pose_rep: str = "rot6d",
    glob: bool = True,
    seed: int | None = None,
    rows_per_block: int = 128,
):
    """``infant_rows`` as a ``ray.data.Dataset`` (clips are small: a few KB of floats each)."""
    import ray

    rows = infant_rows(clips, num_frames, pose_rep, glob, seed)
    if not rows:
        raise InfantDataError("no clips to build an infant dataset from")
    return ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // rows_per_block))


def actor_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A batch of rows in ACTOR's layout (§1.5): ``x`` (B, J, F, T), ``y`` (B,), ``mask``
    (B, T) bool and ``lengths`` (B,). Padding repeats real frames, so every frame is valid,
    as in the original, where lengths are the padded item lengths."""
    pose = np.asarray(batch["pose"], dtype=np.float32)
    b, t = pose.shape[:2]
    return {
        "x": np.ascontiguousarray(pose.transpose(0, 2, 3, 1)),
        "y": np.asarray(batch["label"], dtype=np.int64),
        "mask": np.ones((b, t), dtype=bool),
        "lengths": np.full(b, t, dtype=np.int64),
    }


# ---------------------------------------------------------------------------- generated samples (§1.6)


@dataclass
class GeneratedSamples:
    """Synthetic samples a refinement round adds: one entry per sample in every field.

    ``pose`` (T, 24, 3) axis-angle with the root, ``keypoint`` (T, J, 3) root-centred
    joints, ``y`` labels, ``score`` max softmax, ``epoch_idx`` the generator epoch of the
    round, ``feat`` the recogniser's features. ``score`` and ``feat`` may be absent (None),
    as in ``synthetic_samples.npy``. Every field must hold one entry per sample: the
    original extended ``epoch_idx`` by the batch size instead of by the samples kept
    (defect 11); here a mismatch is an error.
    """

    pose: list[np.ndarray]
    keypoint: list[np.ndarray]
    y: np.ndarray
    epoch_idx: np.ndarray
    score: np.ndarray | None = None
    feat: np.ndarray | None = None

    def __post_init__(self):
        self.pose = [np.asarray(p, dtype=np.float32) for p in self.pose]
        self.keypoint = [np.asarray(k, dtype=np.float32) for k in self.keypoint]
        self.y = np.asarray(self.y, dtype=np.int64).reshape(-1)
        self.epoch_idx = np.asarray(self.epoch_idx, dtype=np.int64).reshape(-1)
        if self.score is not None:
            self.score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        if self.feat is not None:
            self.feat = np.asarray(self.feat, dtype=np.float32).reshape(len(self.feat), -1)
        n = len(self.pose)
        for name in ("keypoint", "y", "epoch_idx", "score", "feat"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise InfantDataError(f"generated samples: {name!r} has {len(value)} entries for {n} poses")
        for i, (p, k) in enumerate(zip(self.pose, self.keypoint)):
            if p.ndim != 3 or p.shape[1:] != (NUM_SMPL_JOINTS, 3) or k.ndim != 3 or len(k) != len(p):
                raise InfantDataError(
                    f"generated sample {i}: pose {p.shape} must be (T, 24, 3) and keypoint {k.shape} (T, J, 3)"
                )

    def __len__(self) -> int:
        return len(self.pose)

    def concat(self, other: "GeneratedSamples") -> "GeneratedSamples":
        def join(a, b, name):
            if (a is None) != (b is None):
                raise InfantDataError(f"cannot append generated samples: {name!r} is present in only one of them")
            return None if a is None else np.concatenate([a, b])

        return GeneratedSamples(
            self.pose + other.pose,
            self.keypoint + other.keypoint,
            np.concatenate([self.y, other.y]),
            np.concatenate([self.epoch_idx, other.epoch_idx]),
            join(self.score, other.score, "score"),
            join(self.feat, other.feat, "feat"),
        )

    def clips(self, max_epoch: int | None = None) -> list[InfantClip]:
        """As clips for the mix datasets (``mixtrans`` keeps ``epoch_idx <= 200``: pass 200)."""
        keep = range(len(self)) if max_epoch is None else np.flatnonzero(self.epoch_idx <= max_epoch)
        return [InfantClip(f"generated:{i}", int(self.y[i]), None, self.pose[i], self.keypoint[i]) for i in keep]


def write_generated_samples(path: str | Path, samples: GeneratedSamples) -> Path:
    """Write ``samples`` to an ``.npz`` of plain arrays (no pickles), atomically: ragged
    sequences are concatenated along time, with per-sample ``lengths``."""
    path = Path(path)
    arrays = {
        "pose": np.concatenate(samples.pose) if len(samples) else np.zeros((0, NUM_SMPL_JOINTS, 3), np.float32),
        "keypoint": np.concatenate(samples.keypoint) if len(samples) else np.zeros((0, NUM_SMPL_JOINTS, 3), np.float32),
        "lengths": np.array([len(p) for p in samples.pose], dtype=np.int64),
        "y": samples.y,
        "epoch_idx": samples.epoch_idx,
    }
    for name in ("score", "feat"):
        if getattr(samples, name) is not None:
            arrays[name] = getattr(samples, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)  # a failed write never replaces what was there
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def append_generated_samples(path: str | Path, samples: GeneratedSamples) -> int:
    """Append a round's samples to the ``.npz`` at ``path`` (created if absent); return the total."""
    path = Path(path)
    total = read_generated_samples(path).concat(samples) if path.exists() else samples
    write_generated_samples(path, total)
    return len(total)


def read_generated_samples(path: str | Path) -> GeneratedSamples:
    """Read affectlab's ``.npz`` or the original's ``generated_samples.npy`` (a pickled dict,
    through the restricted unpickler; nothing in it is run). A truncated or corrupt file is an
    ``InfantDataError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise InfantDataError(f"missing generated-samples file {path}")
    with open(path, "rb") as f:
        magic = f.read(6)
    try:
        return _read_original_npy(path) if magic == b"\x93NUMPY" else _read_npz(path)
    except (InfantDataError, UnsafePickleError):
        raise
    except (ValueError, TypeError, OSError, EOFError, KeyError, SyntaxError, tokenize.TokenError, zipfile.BadZipFile,
            zlib.error, NotImplementedError) as error:  # fmt: skip
        # numpy (which parses .npy headers as Python), zipfile and zlib's ways of saying truncated
        # or corrupt, and arrays of the wrong kind
        raise InfantDataError(f"{path}: not a readable generated-samples file ({type(error).__name__}: {error})") from None


_NPZ_ARRAYS = {"pose": 3, "keypoint": 3, "lengths": 1, "y": 1, "epoch_idx": 1, "score": 1, "feat": 2}  # name: ndim


def _read_npz(path: Path) -> GeneratedSamples:
    with np.load(path, allow_pickle=False) as z:
        missing = {"pose", "keypoint", "lengths", "y", "epoch_idx"} - set(z.files)
        if missing:
            raise InfantDataError(f"{path}: missing arrays {sorted(missing)}")
        arrays = {name: z[name] for name in _NPZ_ARRAYS if name in z.files}
    for name, array in arrays.items():
        if array.ndim != _NPZ_ARRAYS[name] or array.dtype.kind not in "biuf":
            expected = f"expected {_NPZ_ARRAYS[name]}-D numbers"
            raise InfantDataError(f"{path}: array {name!r} is {array.dtype} of shape {array.shape}; {expected}")
    lengths, n_frames = arrays["lengths"], len(arrays["pose"])
    if lengths.dtype.kind not in "iu" or (lengths < 1).any() or lengths.sum() != n_frames or len(arrays["keypoint"]) != n_frames:
        raise InfantDataError(
            f"{path}: 'lengths' must be positive frame counts summing to the {len(arrays['pose'])} pose and "
            f"{len(arrays['keypoint'])} keypoint frames, got {lengths.tolist()[:10]}"
        )
    cuts = np.cumsum(lengths)[:-1]
    return GeneratedSamples(
        list(np.split(arrays["pose"], cuts)) if len(lengths) else [],
        list(np.split(arrays["keypoint"], cuts)) if len(lengths) else [],
        arrays["y"],
        arrays["epoch_idx"],
        arrays.get("score"),
        arrays.get("feat"),
    )


def _read_original_npy(path: Path) -> GeneratedSamples:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _, _, dtype = read_header(f)
        if not dtype.hasobject:
            raise InfantDataError(f"{path}: a plain {dtype} array, not the dict of generated samples np.save writes")
        obj = load_pickle(f.read())
    data = obj.item() if isinstance(obj, np.ndarray) and obj.shape == () else obj
    if not isinstance(data, dict):
        raise InfantDataError(f"{path}: expected a dict of generated samples, got {type(data).__name__}")
    for key in ("pose", "keypoint", "y"):
        if key not in data:
            raise InfantDataError(f"{path}: no key {key!r} (keys: {sorted(map(str, data))})")
    n = len(data["pose"])
    epoch_idx = data.get("epoch_idx", np.full(n, -1))  # synthetic_samples.npy: -1 (§1.6)
    return GeneratedSamples(
        [as_pose(p) for p in data["pose"]],
        [as_keypoint(k) for k in data["keypoint"]],
        np.asarray(data["y"]),
        np.broadcast_to(np.asarray(epoch_idx), (n,)) if np.ndim(epoch_idx) == 0 else np.asarray(epoch_idx),
        np.asarray(data["score"]) if "score" in data else None,
        np.asarray(data["feat"]) if "feat" in data else None,
    )
