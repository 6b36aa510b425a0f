"""Readers of the native mouse pain-behaviour files: MP4 videos, per-trial action CSVs and
DeepLabCut pose (CSV or H5).

Layout of a dataset directory::

    Videos/<video>.mp4                                   3 trials x 360 frames, 30 fps
    Videos/<video stem>DLC_<scorer>.{csv,h5}             one pose row per video frame
    Annotations/prediction_<video>.mp4_<trial>.csv       columns Frame,Action (raw 0-7)

The one alignment rule (every stream uses it, see ``trial_frame_range``): row ``r`` of
trial ``t`` is video frame ``(t-1)*360 + r``, or ``(t-1)*360 + 15 + r`` for the 345-row files
written by the annotation model with its 15-frame context window. The original pipelines
offset trials by the trials present in the same split, or ignored the trial number; both
misalign video, pose and labels for trials 2 and 3.

Splits are grouped by animal (``group_split``, ``group_kfold``) so no mouse and hence no
video appears on two sides, and discovery is sorted so every process sees the same order.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

CLASS_NAMES = ("rest", "paw_withdraw", "paw_lick", "paw_shake", "walk", "active")
RAW_NAMES = ("rest", "paw_withdraw", "paw_lick", "paw_guard", "paw_shake", "flinch", "walk", "active")
# paw_guard (3) and flinch (5) are merged into paw_withdraw: too rare to learn apart.
RAW_TO_MERGED = {0: 0, 1: 1, 2: 2, 3: 1, 4: 3, 5: 1, 6: 4, 7: 5}
TRIAL_FRAMES = 360
CONTEXT_OFFSET = 15  # 345-row annotation files start 15 frames into the trial
BODYPARTS = ("mouth", "L_frontpaw", "R_frontpaw", "L_hindpaw", "R_hindpaw", "tail_base")

_MERGE_LUT = np.array([RAW_TO_MERGED[r] for r in range(len(RAW_TO_MERGED))], dtype=np.int64)
_ANNOTATION_RE = re.compile(r"^prediction_(?P<video>.+\.mp4)_(?P<trial>\d+)\.csv$")
_ANIMAL_RE = re.compile(r"^\d+[MF]$")
# DLC marks multi-animal tracklet/assembly outputs with these suffixes; never single-animal pose.
_MULTI_ANIMAL_SUFFIXES = ("_el", "_bx", "_sk", "_tr")


class MouseDataError(ValueError):
    """A native mouse file is missing, malformed or inconsistent with its video."""


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


# ---------------------------------------------------------------------------- DeepLabCut


def _dlc_kind(path: Path, video_stem: str) -> tuple[str, bool] | None:
    """(scorer, filtered) for a single-animal DLC pose file of this video, else None."""
    if path.suffix not in (".h5", ".csv"):
        return None
    rest = path.stem[len(video_stem):]
    if not path.stem.startswith(video_stem) or not rest.startswith(("DLC", "DeepCut")):
        return None
    filtered = rest.endswith("_filtered")
    scorer = rest[: -len("_filtered")] if filtered else rest
    if scorer.endswith(_MULTI_ANIMAL_SUFFIXES) or scorer.endswith("_meta"):
        return None
    return scorer, filtered


def find_dlc_file(videos_dir, video_stem: str, prefer_filtered: bool = False) -> Path | None:
    """The DLC pose file of one video, or None.

    Matches ``<stem>DLC...`` exactly, so ``video1`` never picks up ``video10DLC...``, and
    works for TF-era (``DLC_resnet50_...``) and DLC 3 (``DLC_Resnet50_..._snapshot_010``)
    scorers. Unfiltered output is used unless ``prefer_filtered`` (then filtered when it
    exists). H5 wins over CSV for the same scorer; two different scorers are ambiguous.
    """
    videos_dir = Path(videos_dir)
    found: dict[tuple[str, bool], list[Path]] = {}
    for path in sorted(videos_dir.iterdir()):
        kind = _dlc_kind(path, video_stem)
        if kind is not None:
            found.setdefault(kind, []).append(path)
    if not found:
        return None
    want_filtered = prefer_filtered and any(filtered for _, filtered in found)
    chosen = {k: v for k, v in found.items() if k[1] == want_filtered}
    if not chosen:
        return None
    if len(chosen) > 1:
        names = sorted(p.name for paths in chosen.values() for p in paths)
        raise MouseDataError(
            f"{videos_dir}: several DLC scorers for video {video_stem}: {names}; keep one"
        )
    (paths,) = chosen.values()
    return min(paths, key=lambda p: (p.suffix != ".h5", p.name))


def _csv_header_rows(path: Path) -> list[str]:
    """First cell of each header row, to tell single- from multi-animal before parsing."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        firsts = []
        for row in reader:
            if not row or row[0] not in ("scorer", "individuals", "bodyparts", "coords"):
                break
            firsts.append(row[0])
    return firsts


def _read_dlc_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        header = _csv_header_rows(path)
        if "individuals" in header:
            raise MouseDataError(
                f"{path}: multi-animal DLC file (4 header rows {header}); "
                "expected single-animal output with header rows scorer/bodyparts/coords"
            )
        if header != ["scorer", "bodyparts", "coords"]:
            raise MouseDataError(
                f"{path}: header rows {header}, expected scorer/bodyparts/coords"
            )
        return pd.read_csv(path, header=[0, 1, 2], index_col=0)
    if path.suffix == ".h5":
        with pd.HDFStore(path, mode="r") as store:
            keys = store.keys()
            if "/df_with_missing" in keys:
                key = "/df_with_missing"
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise MouseDataError(f"{path}: expected key df_with_missing, found {keys}")
            return store[key]
    raise MouseDataError(f"{path}: DLC pose must be .csv or .h5")


def read_dlc(path, expected_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read single-animal DLC pose: (xy float32 [T,6,2], likelihood float32 [T,6]).

    Bodyparts are picked by name in ``BODYPARTS`` order (extra bodyparts are ignored), so a
    project that lists them in another order still reads correctly. Non-finite values get
    likelihood 0 so that pose interpolation treats them as unseen.
    """
    path = Path(path)
    if not path.is_file():
        raise MouseDataError(f"{path}: DLC pose file not found")
    table = _read_dlc_table(path)
    columns = table.columns
    if columns.nlevels == 4:
        raise MouseDataError(
            f"{path}: multi-animal DLC file (4 column levels {list(columns.names)}); "
            "expected single-animal scorer/bodyparts/coords"
        )
    if columns.nlevels != 3:
        raise MouseDataError(f"{path}: {columns.nlevels} column levels, expected 3 (scorer/bodyparts/coords)")
    scorers = list(dict.fromkeys(columns.get_level_values(0)))
    if len(scorers) != 1:
        raise MouseDataError(f"{path}: expected one scorer, found {scorers}")
    if expected_frames is not None and len(table) != expected_frames:
        raise MouseDataError(
            f"{path}: has {len(table)} pose rows, expected {expected_frames} (one per video frame)"
        )
    present = set(columns.get_level_values(1))
    missing = [bp for bp in BODYPARTS if bp not in present]
    if missing:
        raise MouseDataError(f"{path}: missing bodyparts {missing}; expected {list(BODYPARTS)}")
    values = np.empty((len(table), len(BODYPARTS), 3), dtype=np.float32)
    for i, bodypart in enumerate(BODYPARTS):
        for j, coord in enumerate(("x", "y", "likelihood")):
            key = (scorers[0], bodypart, coord)
            if key not in columns:
                raise MouseDataError(f"{path}: bodypart {bodypart} has no {coord!r} column")
            values[:, i, j] = pd.to_numeric(table[key], errors="coerce").to_numpy(np.float32)
    xy, likelihood = values[..., :2], values[..., 2]
    bad = ~np.isfinite(values).all(axis=-1)
    xy[bad] = 0.0
    likelihood[bad] = 0.0
    return np.ascontiguousarray(xy), np.ascontiguousarray(likelihood)


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


def discover(data_dir, prefer_filtered: bool = False, require_pose: bool = True) -> list[Trial]:
    """Find and validate every annotated trial under ``data_dir`` (sorted, deterministic).

    Everything is checked before any work starts: each annotation names an existing video,
    parses, and its frame range lies inside the video; each video's DLC file exists (when
    ``require_pose``) and has exactly one row per video frame.
    """
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
                read_dlc(dlc_path, expected_frames=n_frames)
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


def _animals_in_order(trials, seed: int) -> list[str]:
    animals = sorted({t.animal_id for t in trials})
    order = np.random.default_rng(seed).permutation(len(animals))
    return [animals[i] for i in order]


def _count(fraction: float, n: int) -> int:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split fractions must be in [0, 1), got {fraction}")
    return 0 if fraction == 0 else max(1, round(fraction * n))


def group_split(
    trials, test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0
) -> dict[str, list[Trial]]:
    """Split trials into train/val/test by animal, so no mouse (or video) is on two sides."""
    animals = _animals_in_order(trials, seed)
    n_test, n_val = _count(test_fraction, len(animals)), _count(val_fraction, len(animals))
    if n_test + n_val >= len(animals):
        raise ValueError(
            f"{len(animals)} animals cannot give {n_test} test and {n_val} val animals and a training set"
        )
    side = {a: "test" for a in animals[:n_test]}
    side.update({a: "val" for a in animals[n_test : n_test + n_val]})
    splits = {"train": [], "val": [], "test": []}
    for trial in trials:
        splits[side.get(trial.animal_id, "train")].append(trial)
    return splits


def group_kfold(trials, k: int = 5, seed: int = 0) -> list[tuple[list[Trial], list[Trial]]]:
    """k (train_val, test) folds grouped by animal; every animal is tested exactly once."""
    animals = _animals_in_order(trials, seed)
    if not 2 <= k <= len(animals):
        raise ValueError(f"k must be between 2 and the number of animals ({len(animals)}), got {k}")
    folds = []
    for held_out in np.array_split(np.array(animals, dtype=object), k):
        held_out = set(held_out)
        test = [t for t in trials if t.animal_id in held_out]
        train_val = [t for t in trials if t.animal_id not in held_out]
        folds.append((train_val, test))
    return folds
