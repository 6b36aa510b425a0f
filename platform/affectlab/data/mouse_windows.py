"""Aligned windows of video, pose and labels, streamed as Ray Datasets.

The driver holds only a table of windows (which trial, which annotation rows, the labels
of those rows); Ray Data tasks on CPU workers decode the window's frames from the MP4
(seek once, read ``length`` frames, grayscale, resize) and slice the same rows of the
DeepLabCut pose, so video, pose and labels share identical frame indices (the trial
offset of ``affectlab.data.mouse.trial_frame_range``; defects 1-4 of the original). No
process ever holds a whole video.

A row leaving the pipeline::

    frames      uint8   [T, S, S]   grayscale, resized
    keypoints   float32 [T, 6, 2]   x / width, y / height; low-likelihood points interpolated
    visible     float32 [T, 6]      1 where DLC likelihood >= min_likelihood (keypoint-loss mask)
    kp_missing  float32 [6]         1 for a keypoint never confident in the trial
    labels      int64   [T]         merged classes 0-5
    weights     float32 [T]         per-frame loss weight (inverse class frequency; 0 if skipped)
    video_wh    float32 [2]         video width and height in pixels
    trial_id, row, ok  int64        trial index, first annotation row, 0 if the window was skipped

A window whose video cannot be decoded is not fatal: it comes out with ``ok = 0`` and
zeros, is left out of losses and metrics, and is counted (``skipped_samples``). Files that
are missing or malformed are caught earlier, by ``discover``, before any work starts.

Pose features are computed from the keypoints on the training device, after augmentation
(``affectlab.data.mouse_preprocess``).
"""

from __future__ import annotations

import collections
import functools
import logging
import math
from collections.abc import Iterator

import cv2
import numpy as np
import ray

from affectlab.data.decoding import cache_decoded, decode_compute
from affectlab.data.mouse import MouseDataError, Trial, gray_frame, read_annotation, read_dlc, read_video_frames
from affectlab.data.pose import interpolate_low_likelihood

log = logging.getLogger(__name__)

_POSE_BYTES_PER_FRAME = 4 * (6 * 2 + 6) + 8 + 4  # keypoints, visible, label, weight of a decoded frame

# ---------------------------------------------------------------------------- window table


def window_starts(n_rows: int, length: int, stride: int) -> list[int]:
    """First rows of windows tiling ``n_rows`` frames; the last window ends on the last row."""
    if length > n_rows:
        raise ValueError(f"a window of {length} frames does not fit a trial of {n_rows} annotated frames")
    if stride < 1:
        raise ValueError(f"window stride must be >= 1, got {stride}")
    starts = list(range(0, n_rows - length + 1, stride))
    if starts[-1] != n_rows - length:
        starts.append(n_rows - length)
    return starts


def trial_labels(trials: list[Trial]) -> list[np.ndarray]:
    """The merged labels of each trial (the driver reads only these small CSVs)."""
    return [read_annotation(t.annotation_path) for t in trials]


def window_items(trials: list[Trial], trial_ids: list[int], labels: list[np.ndarray], length: int, stride: int) -> list[dict]:
    """One item per window: where to read it and the labels of its rows."""
    items = []
    for trial, trial_id, rows in zip(trials, trial_ids, labels):
        for row in window_starts(len(rows), length, stride):
            items.append({
                "video": str(trial.video_path), "dlc": str(trial.dlc_path), "trial_id": trial_id,
                "trial_start": trial.start, "trial_stop": trial.stop, "row": row,
                "labels": rows[row : row + length].astype(np.int64),
            })  # fmt: skip
    return items


def window_dataset(
    items: list[dict], image_size: int, min_likelihood: float = 0.9, class_weights=None, windows_per_task: int = 8,
    bodyparts: dict[str, str] | None = None, individual: str | None = None, cache: bool | None = None,
):  # fmt: skip
    """A Ray Dataset of decoded windows (see the module docstring for the columns).

    ``bodyparts`` (ours=theirs) and ``individual`` say where the six keypoints are in the
    DLC files (``affectlab.data.dlc.read_dlc``). Blocks hold consecutive items: order the
    items so that every stretch mixes trials (``affectlab.data.mouse_dataset``). Decoded once
    and cached as ``affectlab.data.decoding.cache_decoded`` decides.
    """
    if not items:
        raise ValueError("no windows to read")
    n_blocks = max(1, math.ceil(len(items) / (2 * windows_per_task)))
    weights = None if class_weights is None else np.asarray(class_weights, dtype=np.float32)
    pose_kwargs = {"bodyparts": dict(bodyparts or {}), "individual": individual}
    ds = ray.data.from_items(items, override_num_blocks=n_blocks).map_batches(
        load_windows,
        fn_kwargs={"image_size": image_size, "min_likelihood": min_likelihood, "class_weights": weights, **pose_kwargs},
        batch_size=windows_per_task,
        num_cpus=0.25,
        compute=decode_compute(),
    )
    frames = sum(len(item["labels"]) for item in items)
    return cache_decoded(ds, frames * (image_size * image_size + _POSE_BYTES_PER_FRAME), cache)


# ---------------------------------------------------------------------------- decoding


@functools.lru_cache(maxsize=16)
def _video_wh(path: str) -> tuple[int, int]:
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise MouseDataError(f"{path}: cannot open video (missing, truncated or not a video)")
        return int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        capture.release()


@functools.lru_cache(maxsize=32)
def _trial_pose(dlc_path: str, start: int, stop: int, min_likelihood: float, pose_key: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keypoints px [n,6,2], visible [n,6], missing [6]) of one trial, interpolated over the trial."""
    xy, likelihood = _read_dlc_cached(dlc_path, pose_key)
    xy, likelihood = xy[start:stop], likelihood[start:stop]
    points, missing = interpolate_low_likelihood(xy, likelihood, min_likelihood)
    visible = (likelihood >= min_likelihood) & ~missing[None, :]
    return points, visible.astype(np.float32), missing.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _read_dlc_cached(dlc_path: str, pose_key: tuple):
    bodyparts, individual = pose_key
    return read_dlc(dlc_path, bodyparts=dict(bodyparts), individual=individual)


def _pose_key(bodyparts: dict[str, str] | None, individual: str | None) -> tuple:
    """Where the keypoints are in a DLC file, hashable (a cache key)."""
    return tuple(sorted((bodyparts or {}).items())), individual


def read_window(
    video: str, dlc: str, trial_start: int, trial_stop: int, row: int, length: int, image_size: int,
    min_likelihood: float = 0.9, bodyparts: dict[str, str] | None = None, individual: str | None = None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Decode one window: rows ``row .. row+length`` of the trial starting at video frame ``trial_start``."""
    first = trial_start + row
    if first + length > trial_stop:
        raise MouseDataError(f"{video}: window rows {row}-{row + length - 1} run past the trial's last frame")
    frames = read_video_frames(video, first, first + length, image_size)
    width, height = _video_wh(video)
    points, visible, missing = _trial_pose(dlc, trial_start, trial_stop, min_likelihood, _pose_key(bodyparts, individual))
    keypoints = points[row : row + length] / np.array([width, height], dtype=np.float32)
    return {
        "frames": frames,
        "keypoints": keypoints.astype(np.float32),
        "visible": visible[row : row + length],
        "kp_missing": missing,
        "video_wh": np.array([width, height], dtype=np.float32),
    }


def load_windows(
    batch: dict, image_size: int, min_likelihood: float = 0.9, class_weights=None,
    bodyparts: dict[str, str] | None = None, individual: str | None = None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Ray Data ``map_batches`` function: window items -> decoded, aligned windows."""
    n, length = batch["labels"].shape
    out = {
        "frames": np.zeros((n, length, image_size, image_size), np.uint8),
        "keypoints": np.zeros((n, length, 6, 2), np.float32),
        "visible": np.zeros((n, length, 6), np.float32),
        "kp_missing": np.zeros((n, 6), np.float32),
        "video_wh": np.ones((n, 2), np.float32),
        "labels": batch["labels"].astype(np.int64),
        "trial_id": batch["trial_id"].astype(np.int64),
        "row": batch["row"].astype(np.int64),
        "ok": np.ones(n, np.int64),
    }
    for i in range(n):
        try:
            window = read_window(
                str(batch["video"][i]), str(batch["dlc"][i]), int(batch["trial_start"][i]), int(batch["trial_stop"][i]),
                int(batch["row"][i]), length, image_size, min_likelihood, bodyparts, individual,
            )  # fmt: skip
        except (MouseDataError, cv2.error) as error:  # one corrupt sample: skip and count
            log.warning("skipping window (trial %s, row %s): %s", batch["trial_id"][i], batch["row"][i], error)
            out["ok"][i] = 0
            continue
        for key, value in window.items():
            out[key][i] = value
    weights = np.ones((n, length), np.float32) if class_weights is None else np.asarray(class_weights)[out["labels"]]
    out["weights"] = (weights * out["ok"][:, None]).astype(np.float32)
    return out


def iter_video_windows(path, length: int, stride: int, size: int, expected_frames: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Stream a whole video as windows: ``(first_frame, frames uint8 [length, size, size])``.

    One decoder reads the video once, front to back, holding at most ``length`` decoded
    frames. Windows start every ``stride`` frames and the last one ends on the last frame
    (``window_starts``' tiling); a video shorter than ``length`` gives one shorter window.
    A video that yields fewer frames than ``expected_frames`` (its header's count) is
    truncated: ``MouseDataError``.
    """
    if length < 1 or stride < 1:
        raise ValueError(f"window length and stride must be >= 1, got {length} and {stride}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise MouseDataError(f"{path}: cannot open video (truncated, corrupt or not a video)")
    buffer: collections.deque = collections.deque(maxlen=length)
    n_read, last_start = 0, None
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            buffer.append(gray_frame(frame, size))
            n_read += 1
            start = n_read - length
            if start >= 0 and start % stride == 0:
                last_start = start
                yield start, np.stack(buffer)
    finally:
        capture.release()
    if n_read == 0 or (expected_frames is not None and n_read < expected_frames):
        raise MouseDataError(
            f"{path}: decoding stopped after {n_read} of {expected_frames or '?'} frames; the video is truncated or corrupt"
        )
    final = max(0, n_read - length)
    if final != last_start:
        yield final, np.stack(buffer)
