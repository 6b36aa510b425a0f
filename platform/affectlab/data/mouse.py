"""Readers of the native mouse pain-behaviour files: MP4 videos and per-trial action CSVs;
DeepLabCut pose (CSV or H5) is read by ``affectlab.data.dlc``. Class names, bodyparts and
trial lengths are in ``affectlab.constants.mouse``.

Layout of a dataset directory::

    Videos/<video>.mp4                                   3 trials x 360 frames, 30 fps
    Videos/<video stem>DLC_<scorer>.{csv,h5}             one pose row per video frame
    Annotations/prediction_<video>.mp4_<trial>.csv       columns Frame,Action (raw 0-7)

The one alignment rule (every stream uses it, see ``trial_frame_range``): row ``r`` of
trial ``t`` is video frame ``(t-1)*360 + r``, or ``(t-1)*360 + 15 + r`` for the 345-row files
written by the annotation model with its 15-frame context window. The original pipelines
offset trials by the trials present in the same split, or ignored the trial number; both
misalign video, pose and labels for trials 2 and 3.

Splits are grouped by animal (``group_split``, ``group_kfold``: scikit-learn's
``GroupShuffleSplit`` and ``GroupKFold``, seeded from the config) so no mouse and hence no
video appears on two sides, and discovery is sorted so every process sees the same order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, GroupShuffleSplit

from affectlab.constants.mouse import CONTEXT_OFFSET, RAW_TO_MERGED, TRIAL_FRAMES
from affectlab.data.dlc import MouseDataError, find_dlc_file, parse_bodypart_map, read_dlc

_MERGE_LUT = np.array([RAW_TO_MERGED[r] for r in range(len(RAW_TO_MERGED))], dtype=np.int64)
_ANNOTATION_RE = re.compile(r"^prediction_(?P<video>.+\.mp4)_(?P<trial>\d+)\.csv$")
_ANIMAL_RE = re.compile(r"^\d+[MF]$")


@dataclass(frozen=True)
class Trial:
    """One annotated trial: where its files are and which video frames it covers."""

    video_path: Path
    video_id: str  # video file stem
    animal_id: str
    trial: int  # 1-based
    annotation_path: Path
    dlc_path: Path | None
    start: int  # first video frame of the annotated rows
    stop: int  # one past the last

    @property
    def n_frames(self) -> int:
        return self.stop - self.start


# ---------------------------------------------------------------------------- annotations


def parse_annotation_name(path) -> tuple[str, int]:
    """``prediction_<video>.mp4_<trial>.csv`` -> (video file name, trial number)."""
    name = Path(path).name
    match = _ANNOTATION_RE.match(name)
    if match is None:
        raise MouseDataError(
            f"{path}: annotation file name must look like prediction_<video>.mp4_<trial>.csv"
        )
    trial = int(match["trial"])
    if trial < 1:
        raise MouseDataError(f"{path}: trial numbers are 1-based, got {trial}")
    return match["video"], trial


def read_annotation(path) -> np.ndarray:
    """Read one trial's ``Frame,Action`` CSV and return merged labels (int64, 360 or 345)."""
    path = Path(path)
    table = pd.read_csv(path)
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("Frame", "Action") if c not in table.columns]
    if missing:
        raise MouseDataError(f"{path}: missing column(s) {missing}; expected Frame,Action")
    n = len(table)
    if n not in (TRIAL_FRAMES, TRIAL_FRAMES - CONTEXT_OFFSET):
        raise MouseDataError(
            f"{path}: has {n} rows, expected {TRIAL_FRAMES} or {TRIAL_FRAMES - CONTEXT_OFFSET}"
        )
    frames = pd.to_numeric(table["Frame"], errors="coerce").to_numpy()
    bad = np.flatnonzero(frames != np.arange(n))
    if bad.size:
        r = int(bad[0])
        raise MouseDataError(f"{path}: row {r} has Frame {table['Frame'].iloc[r]}, expected {r}")
    actions = pd.to_numeric(table["Action"], errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(actions) & (actions == np.round(actions)) & (actions >= 0) & (actions <= 7)
    bad = np.flatnonzero(~ok)
    if bad.size:
        r = int(bad[0])
        raise MouseDataError(
            f"{path}: row {r} (Frame {r}) has Action {table['Action'].iloc[r]}, "
            "expected an integer raw label 0-7"
        )
    return _MERGE_LUT[actions.astype(np.int64)]


def trial_frame_range(trial: int, n_rows: int) -> tuple[int, int]:
    """Video frames [start, stop) covered by a trial's annotation rows (the alignment rule)."""
    if trial < 1:
        raise MouseDataError(f"trial numbers are 1-based, got {trial}")
    if n_rows not in (TRIAL_FRAMES, TRIAL_FRAMES - CONTEXT_OFFSET):
        raise MouseDataError(
            f"a trial has {TRIAL_FRAMES} or {TRIAL_FRAMES - CONTEXT_OFFSET} rows, got {n_rows}"
        )
    start = (trial - 1) * TRIAL_FRAMES + (CONTEXT_OFFSET if n_rows != TRIAL_FRAMES else 0)
    return start, start + n_rows


# ---------------------------------------------------------------------------- videos


def video_frame_count(path) -> int:
    """Frame count from the container header (cv2.CAP_PROP_FRAME_COUNT)."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise MouseDataError(f"{path}: cannot open video (missing, truncated or not a video)")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    if count <= 0:
        raise MouseDataError(f"{path}: video reports {count} frames (truncated or unreadable?)")
    return count


def read_video_frames(path, start: int, stop: int, size: int | None = None) -> np.ndarray:
    """Decode frames [start, stop) as grayscale uint8 [T, size, size], seeking once."""
    if not 0 <= start < stop:
        raise MouseDataError(f"{path}: bad frame range [{start}, {stop})")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise MouseDataError(f"{path}: cannot open video (missing, truncated or not a video)")
        if start > 0:
            capture.set(cv2.CAP_PROP_POS_FRAMES, start)
        frames = []
        for index in range(start, stop):
            ok, frame = capture.read()
            if not ok:
                raise MouseDataError(
                    f"{path}: could not decode frame {index} (wanted frames {start}-{stop - 1}); "
                    "the video is truncated or corrupt"
                )
            frames.append(gray_frame(frame, size))
    finally:
        capture.release()
    return np.stack(frames)


def gray_frame(frame: np.ndarray, size: int | None = None) -> np.ndarray:
    """One decoded BGR (or gray) frame as grayscale uint8, resized to ``size`` x ``size``."""
    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if size is not None and gray.shape != (size, size):
        interpolation = cv2.INTER_AREA if size < min(gray.shape) else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (size, size), interpolation=interpolation)
    return gray


# ---------------------------------------------------------------------------- discovery


def animal_id_from_name(video_stem: str) -> str:
    """Animal id token (e.g. ``267M``) in a video name; the stem itself when there is none."""
    for token in video_stem.split("_"):
        if _ANIMAL_RE.match(token):
            return token
    return video_stem


def discover(
    data_dir,
    prefer_filtered: bool = False,
    require_pose: bool = True,
    bodyparts: Mapping[str, str] | str | None = None,
    individual: str | None = None,
) -> list[Trial]:
    """Find and validate every annotated trial under ``data_dir`` (sorted, deterministic).

    Everything is checked before any work starts: each annotation names an existing video,
    parses, and its frame range lies inside the video; each video's DLC file exists (when
    ``require_pose``), has exactly one row per video frame (frames 0, 1, 2, ...) and the six
    bodyparts under the names of the bodypart map ``bodyparts`` (ours=theirs; see
    ``affectlab.data.dlc``), for ``individual`` in a multi-animal file.
    """
    parse_bodypart_map(bodyparts)  # a bad map fails before any file is read
    data_dir = Path(data_dir)
    videos_dir, annotations_dir = data_dir / "Videos", data_dir / "Annotations"
    for folder in (videos_dir, annotations_dir):
        if not folder.is_dir():
            raise MouseDataError(f"{folder}: folder not found (expected Videos/ and Annotations/)")
    annotation_paths = sorted(annotations_dir.glob("prediction_*.csv"))
    if not annotation_paths:
        raise MouseDataError(f"{annotations_dir}: no prediction_<video>.mp4_<trial>.csv files")

    parsed = [(path, *parse_annotation_name(path)) for path in annotation_paths]
    missing = sorted({name for _, name, _ in parsed if not (videos_dir / name).is_file()})
    if missing:
        raise MouseDataError(f"{videos_dir}: annotated video(s) not found: {missing}")

    trials = []
    video_info: dict[str, tuple[int, Path | None]] = {}
    for annotation_path, video_name, trial in parsed:
        video_path = videos_dir / video_name
        stem = video_path.stem
        if video_name not in video_info:
            n_frames = video_frame_count(video_path)
            dlc_path = find_dlc_file(videos_dir, stem, prefer_filtered=prefer_filtered)
            if dlc_path is None and require_pose:
                raise MouseDataError(f"{videos_dir}: no DeepLabCut file {stem}DLC*.h5/.csv for {video_name}")
            if dlc_path is not None:
                read_dlc(dlc_path, expected_frames=n_frames, bodyparts=bodyparts, individual=individual)
            video_info[video_name] = (n_frames, dlc_path)
        n_frames, dlc_path = video_info[video_name]
        start, stop = trial_frame_range(trial, len(read_annotation(annotation_path)))
        if stop > n_frames:
            raise MouseDataError(
                f"{annotation_path}: trial {trial} needs video frames {start}-{stop - 1} "
                f"but {video_path} has {n_frames} frames"
            )
        trials.append(
            Trial(video_path, stem, animal_id_from_name(stem), trial, annotation_path, dlc_path, start, stop)
        )
    return sorted(trials, key=lambda t: (t.video_id, t.trial))


# ---------------------------------------------------------------------------- splits


def _count(fraction: float, n: int) -> int:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split fractions must be in [0, 1), got {fraction}")
    return 0 if fraction == 0 else max(1, round(fraction * n))


def group_split(
    trials, test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0
) -> dict[str, list[Trial]]:
    """Split trials into train/val/test by animal, so no mouse (or video) is on two sides.

    ``round(fraction x animals)`` animals (at least one when the fraction is not 0) are
    drawn for test, then for validation from the rest, by scikit-learn's
    ``GroupShuffleSplit`` seeded with ``seed``. Each split keeps the trials' order.
    """
    groups = np.array([t.animal_id for t in trials])
    n_animals = len(set(groups))
    n_test, n_val = _count(test_fraction, n_animals), _count(val_fraction, n_animals)
    if n_test + n_val >= n_animals:
        raise ValueError(f"{n_animals} animals cannot give {n_test} test and {n_val} val animals and a training set")
    side = np.full(len(trials), "train", dtype=object)
    for name, n in (("test", n_test), ("val", n_val)):
        if n:
            rest = np.flatnonzero(side == "train")
            _, held = next(GroupShuffleSplit(n_splits=1, test_size=n, random_state=seed).split(rest, groups=groups[rest]))
            side[rest[held]] = name
    return {name: [t for t, s in zip(trials, side) if s == name] for name in ("train", "val", "test")}


def group_kfold(trials, k: int = 5, seed: int = 0) -> list[tuple[list[Trial], list[Trial]]]:
    """k (train_val, test) folds grouped by animal; every animal is tested exactly once
    (scikit-learn's ``GroupKFold``, animals shuffled with ``seed``)."""
    groups = np.array([t.animal_id for t in trials])
    n_animals = len(set(groups))
    if not 2 <= k <= n_animals:
        raise ValueError(f"k must be between 2 and the number of animals ({n_animals}), got {k}")
    folds = []
    for train_index, test_index in GroupKFold(n_splits=k, shuffle=True, random_state=seed).split(groups, groups=groups):
        folds.append(([trials[i] for i in train_index], [trials[i] for i in test_index]))
    return folds
