"""Mouse behaviour recognition on the serving layer: ``POST /v1/mouse/segment``.

    serve run affectlab.serving.mouse:build checkpoint=runs/mouse_demo
    serve run serve/mouse.yaml

A bottom-view video (and optionally its single-animal DeepLabCut CSV or H5) → per-frame
labels, per-frame class probabilities and the merged segments (the ethogram). Choices
made here:

- **Streaming.** The model replica decodes the video once, front to back, in windows of
  the model's evaluation length with half overlap (``iter_video_windows``), and never
  holds more than one step of decoded windows; overlapping frames average their
  probabilities, as in evaluation. The upload itself is held compressed (the upload limit
  bounds it).
- **Decisions** use the per-class thresholds fitted on the validation animals when the
  model was trained (``thresholds.json`` beside the checkpoint), unchanged:
  ``argmax_c p_c / t_c``. Without that file the rule is the plain argmax
  (``thresholds_source`` says which). An ensemble averages its folds' probabilities and
  thresholds.
- **Pose.** The DLC file must have one row per video frame (frames 0, 1, 2, ...). Its
  bodyparts are found by the serving argument ``bodyparts`` (ours=theirs), else by the
  model's training config; ``individual`` picks the animal of a multi-animal file. Points
  under the model's likelihood cut are interpolated over the whole video. Without a DLC file, a model
  that uses pose sees all keypoints as missing (features zero, as under temporal dropout)
  and the response says ``"pose": "absent"``: expect lower accuracy than with the file.
- **No pickles.** An uploaded H5 is read with h5py by ``affectlab.data.dlc`` and never
  reaches pandas or PyTables, which unpickle object columns and node attributes: only
  numeric pose tables are read, anything else is a 422 saying why.
- **Errors.** Anything wrong with the upload is a 4xx naming the field: not a video, a
  video that stops decoding before its header's frame count (truncated), a DLC file that
  is multi-animal, malformed, holds pickled objects or has the wrong number of rows. A
  fault of the server (a full disk, a failing model) is a 500 whose body carries only a
  request id, the traceback being in the server log under it: the layer's answer for
  faults while decoding, a ``ServerFault`` item for a video whose model run fails (one item
  of a batch, so the videos batched with it still get their answers).
"""

from __future__ import annotations

import json
import logging
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

from affectlab.constants.mouse import CLASS_NAMES, DEFAULT_IMAGE_SIZE, NUM_BODYPARTS, POSE_MODELS
from affectlab.data.dlc import MouseDataError, parse_bodypart_map, read_dlc
from affectlab.data.mouse_preprocess import prepare
from affectlab.data.mouse_windows import iter_video_windows
from affectlab.data.pose import interpolate_low_likelihood
from affectlab.metrics.mouse import apply_thresholds, stitch_trials
from affectlab.models.mouse import build_mouse_model
from affectlab.metrics.segments import segments
from affectlab.serving.layer import BadInput, Payload, build_app, server_fault
from affectlab.serving.registry import Member, ModelEntry, load_members

logger = logging.getLogger("ray.serve")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
WINDOWS_PER_STEP = 4  # windows per forward pass


@dataclass
class MouseInput:
    video: bytes  # the upload, still compressed
    n_frames: int  # from the container header; decoding must reach it
    fps: float
    size: tuple[int, int]  # width, height in pixels
    keypoints: np.ndarray | None  # float32 [n_frames, 6, 2] px, low-likelihood points interpolated
    kp_missing: np.ndarray | None  # float32 [6], 1 for a keypoint never confident in the video
    pose: str  # "given", "absent" or "unused" (a video-only model)
    request_id: str  # names this request in the server log


@dataclass
class MouseModel:
    model_id: str
    nets: list
    cfg: object  # the first member's run config (a namespace of MouseConfig's fields; members agree on inputs)
    thresholds: np.ndarray  # [6]
    thresholds_source: str
    device: str


@dataclass
class MouseOutput:
    model_id: str
    probs: np.ndarray  # [n_frames, 6], mean over members
    thresholds: np.ndarray
    thresholds_source: str
    fps: float
    pose: str
    window: int
    members: int


def member_thresholds(member: Member) -> np.ndarray | None:
    """The thresholds fitted on validation for this checkpoint (``thresholds.json``), if any."""
    path = member.path / "thresholds.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if not isinstance(saved, dict) or saved.get("classes") != list(CLASS_NAMES) or len(saved.get("thresholds", [])) != len(CLASS_NAMES):
        raise ValueError(f"{path}: expected classes {list(CLASS_NAMES)} and one threshold each")
    return np.asarray(saved["thresholds"], np.float64)


OPENAPI = {  # the request and response of /v1/mouse/segment in /docs
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["video"],
                    "properties": {
                        "video": {"type": "string", "format": "binary", "description": "bottom-view video (MP4 or anything OpenCV decodes)"},
                        "dlc": {"type": "string", "format": "binary", "description": "its single-animal DeepLabCut output, CSV or H5, one row per frame"},
                        "model_id": {"type": "string", "description": "best, ensemble or fold<k> (see /v1/mouse/models)"},
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["video"],
                    "properties": {
                        "video": {"type": "string", "format": "byte", "description": "base64 video bytes"},
                        "dlc": {"type": "string", "format": "byte", "description": "base64 DLC CSV or H5"},
                        "model_id": {"type": "string"},
                    },
                }
            },
            "video/*": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "responses": {
        "200": {
            "description": "per-frame labels, probabilities and segments",
            "content": {
                "application/json": {
                    "example": {
                        "model_id": "best", "n_frames": 720, "fps": 30.0, "classes": list(CLASS_NAMES),
                        "labels": [0, 0, 4], "probabilities": [[0.9, 0.01, 0.01, 0.01, 0.05, 0.02]],
                        "segments": [{"label": "rest", "start": 0, "stop": 130, "start_s": 0.0, "duration_s": 4.33}],
                        "frames_per_class": {"rest": 400, "paw_withdraw": 0, "paw_lick": 60, "paw_shake": 10, "walk": 200, "active": 50},
                        "thresholds": {"rest": 0.5}, "thresholds_source": "validation", "pose": "given", "window": 240, "members": 1,
                    }  # fmt: skip
                }
            },
        },
        "422": {"description": "not a video, truncated video, DLC file malformed, multi-animal, holding pickled objects or with the wrong row count"},
    },
}


class MousePredictor:
    """The mouse workload's predictor for ``affectlab.serving.layer``."""

    workload = "mouse"
    route = "segment"
    raw_field, raw_media = "video", ("video/",)
    default_upload_mb = 200.0  # videos; $AFFECTLAB_MAX_UPLOAD_MB or max_upload_mb override it
    openapi = OPENAPI
    description = "Per-frame pain behaviours (rest, paw_withdraw, paw_lick, paw_shake, walk, active) from a bottom-view video and its DeepLabCut pose."

    def __init__(self, bodyparts: dict[str, str] | str | None = None, individual: str | None = None):
        """``bodyparts`` (ours=theirs) and ``individual`` say where the keypoints are in uploaded
        DLC files; unset, each model's training config decides (``MouseConfig.bodyparts``)."""
        self.bodyparts = parse_bodypart_map(bodyparts) if bodyparts else None
        self.individual = individual or None

    # -- model replicas --------------------------------------------------------------------
    def load(self, entry: ModelEntry) -> MouseModel:
        nets, cfg, device = load_members(entry, build_model, agree_on=("model", "input_size", "eval_window", "min_likelihood"))
        found = [member_thresholds(m) for m in entry.members]
        if all(t is not None for t in found):
            thresholds, source = np.mean(found, axis=0), "validation"
        else:
            thresholds, source = np.ones(len(CLASS_NAMES)), "argmax (no thresholds.json)"
        return MouseModel(entry.model_id, nets, cfg, thresholds, source, device)

    def predict_batch(self, model: MouseModel, inputs: list[MouseInput]) -> list:
        """One output per input: a ``MouseOutput``, a 422 for a video found broken while
        decoding it, or a 500 (logged with the request id) for a fault of the server."""
        outputs = []
        for x in inputs:
            try:
                outputs.append(self.predict_video(model, x))
            except MouseDataError as error:  # found only while decoding, e.g. truncated midway
                outputs.append(BadInput(422, f"field 'video': {_without_path(error)}"))
            except Exception:
                outputs.append(server_fault(x.request_id, f"running model {model.model_id}"))
        return outputs

    def predict_video(self, model: MouseModel, x: MouseInput) -> MouseOutput:
        """Stream the video through the model; per-frame probabilities averaged over overlaps."""
        cfg = model.cfg
        length, stride = cfg.eval_window, max(1, cfg.eval_window // 2)
        starts, probs, pending = [], [], []

        def flush():
            starts.extend(s for s, _ in pending)
            probs.extend(self._forward(model, x, pending, length))
            pending.clear()

        with tempfile.TemporaryDirectory(prefix="affectlab-video-") as tmp:
            path = Path(tmp) / "upload.mp4"
            path.write_bytes(x.video)
            for start, frames in iter_video_windows(path, length, stride, cfg.input_size, expected_frames=x.n_frames):
                if x.keypoints is not None and start + len(frames) > len(x.keypoints):
                    raise MouseDataError(f"decodes to more frames than the DLC file's {len(x.keypoints)} rows")
                pending.append((start, frames))
                if len(pending) == WINDOWS_PER_STEP:
                    flush()
                    if len(starts) % (25 * WINDOWS_PER_STEP) == 0:
                        logger.info("model %s: %d of %d frames", model.model_id, starts[-1] + length, x.n_frames)
            flush()
        n = len(starts)
        stitched = stitch_trials(np.zeros(n), np.array(starts), np.stack(probs), np.zeros((n, probs[0].shape[0])), np.ones(n))[0]
        return MouseOutput(model.model_id, stitched["probs"], model.thresholds, model.thresholds_source, x.fps, x.pose, length, len(model.nets))

    def _forward(self, model: MouseModel, x: MouseInput, windows: list[tuple[int, np.ndarray]], length: int) -> list[np.ndarray]:
        """Class probabilities ``[T, 6]`` of each window (members averaged). A window shorter
        than ``length`` (a short video) is padded with its last frame, and cut back after."""
        import torch

        if not windows:
            return []
        n_valid = [len(frames) for _, frames in windows]
        frames = np.stack([_pad(f, length) for _, f in windows])
        if x.keypoints is None:
            keypoints = np.zeros((len(windows), length, NUM_BODYPARTS, 2), np.float32)
            missing = np.ones(NUM_BODYPARTS, np.float32)
        else:
            keypoints = np.stack([_pad(x.keypoints[s : s + n], length) for (s, _), n in zip(windows, n_valid)])
            keypoints = keypoints / np.asarray(x.size, np.float32)
            missing = x.kp_missing
        batch = {
            "frames": frames, "keypoints": keypoints, "visible": np.ones(keypoints.shape[:3], np.float32),
            "kp_missing": np.broadcast_to(missing, (len(windows), NUM_BODYPARTS)).copy(),
            "labels": np.zeros((len(windows), length), np.int64),
            "video_wh": np.broadcast_to(np.asarray(x.size, np.float32), (len(windows), 2)).copy(),
        }  # fmt: skip
        with torch.inference_mode():
            tensors = {k: torch.from_numpy(v).to(model.device) for k, v in batch.items()}
            inputs = prepare(tensors, model.cfg)
            probs = torch.stack([torch.softmax(net(inputs["frames"], inputs["pose"])["logits"].float(), -1) for net in model.nets])
            probs = probs.mean(0).cpu().numpy()
        return [p[:n] for p, n in zip(probs, n_valid)]

    def encode(self, out: MouseOutput) -> dict:
        labels = apply_thresholds(out.probs, out.thresholds)
        fps = out.fps if out.fps > 0 else None
        runs = [
            {
                "label": CLASS_NAMES[c], "start": start, "stop": stop,
                "start_s": None if fps is None else round(start / fps, 3),
                "duration_s": None if fps is None else round((stop - start) / fps, 3),
            }
            for c, start, stop in segments(labels)
        ]  # fmt: skip
        counts = np.bincount(labels, minlength=len(CLASS_NAMES))
        return {
            "model_id": out.model_id,
            "n_frames": int(len(labels)),
            "fps": fps,
            "classes": list(CLASS_NAMES),
            "labels": labels.tolist(),
            "probabilities": np.round(out.probs, 4).tolist(),
            "segments": runs,
            "frames_per_class": {name: int(k) for name, k in zip(CLASS_NAMES, counts)},
            "thresholds": {name: float(t) for name, t in zip(CLASS_NAMES, out.thresholds)},
            "thresholds_source": out.thresholds_source,
            "decision_rule": "argmax_c p_c / t_c",
            "pose": out.pose,
            "window": out.window,
            "members": out.members,
        }

    # -- ingress ---------------------------------------------------------------------------
    def decode(self, payload: Payload, entry: ModelEntry) -> MouseInput:
        """The upload as a ``MouseInput``. Faults of the upload are 4xx (``BadInput``); any
        other exception is the server's and propagates: the layer answers 500 with a request id."""
        request_id = uuid.uuid4().hex[:12]
        payload.expect(required=("video",), optional=("dlc",))
        video = payload.file("video")
        dlc = payload.files("dlc")
        if len(dlc) > 1:
            raise BadInput(422, f"field 'dlc' must be given at most once, got {len(dlc)}")
        with tempfile.TemporaryDirectory(prefix="affectlab-upload-") as tmp:
            path = Path(tmp) / "upload.mp4"
            path.write_bytes(video)
            n_frames, fps, size = probe_video(path)
            if not dlc:
                uses_pose = entry.config.get("model") in POSE_MODELS
                return MouseInput(video, n_frames, fps, size, None, None, "absent" if uses_pose else "unused", request_id)
            pose_path = Path(tmp) / ("upload.h5" if dlc[0].startswith(HDF5_MAGIC) else "upload.csv")
            pose_path.write_bytes(dlc[0])
            bodyparts = self.bodyparts if self.bodyparts is not None else entry.config.get("bodyparts") or {}
            individual = self.individual or entry.config.get("individual")
            try:  # every fault of the file is a MouseDataError; anything else is the server's
                xy, likelihood = read_dlc(pose_path, expected_frames=n_frames, bodyparts=bodyparts, individual=individual)
            except MouseDataError as error:
                raise BadInput(422, f"field 'dlc': {_without_path(error)}") from None
        points, missing = interpolate_low_likelihood(xy, likelihood, float(entry.config.get("min_likelihood", 0.9)))
        pose = "given" if entry.config.get("model") in POSE_MODELS else "unused"
        return MouseInput(video, n_frames, fps, size, points, missing.astype(np.float32), pose, request_id)


def probe_video(path: Path) -> tuple[int, float, tuple[int, int]]:
    """(frame count, fps, (width, height)) of an uploaded video whose first frame decodes."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise BadInput(422, "field 'video' is not a readable video (truncated, corrupt or not a video container)")
        n_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        ok, frame = capture.read()
    finally:
        capture.release()
    if not ok or n_frames <= 0:
        raise BadInput(422, f"field 'video' is not a readable video: no frame decodes (its header counts {n_frames} frames)")
    height, width = frame.shape[:2]
    return n_frames, fps, (width, height)


def _pad(values: np.ndarray, length: int) -> np.ndarray:
    """``values`` along its first axis, padded to ``length`` by repeating the last entry."""
    if len(values) >= length:
        return values
    return np.concatenate([values, np.repeat(values[-1:], length - len(values), axis=0)])


def _without_path(error: Exception) -> str:
    """A data error's message without the server's temporary file name (``/tmp/...: ``)."""
    head, sep, tail = str(error).partition(": ")
    return tail if sep and Path(head).is_absolute() else str(error)


def build_model(config: dict):
    """A checkpoint's model (random init: its weights are loaded next) and its run config, as
    training built them (``models.mouse.build_mouse_model``); the config gains ``input_size``."""
    input_size = config.get("image_size") or DEFAULT_IMAGE_SIZE[config["model"]]
    cfg = SimpleNamespace(**config, input_size=input_size)
    return build_mouse_model(cfg, pretrained=False), cfg


def build(args: dict):
    """The Serve application builder: ``serve run affectlab.serving.mouse:build checkpoint=DIR``.

    ``args``: every ``ServeOptions`` field, plus ``bodyparts`` (``mouth=Snout,...`` or a
    mapping, validated here) and ``individual`` for uploads from other DLC projects.
    ``max_batch_size`` defaults to 1 here: one request is a whole video, already cut into
    batches of windows.
    """
    args = dict(args)
    predictor = MousePredictor(args.pop("bodyparts", None), args.pop("individual", None))
    return build_app(predictor, {"max_batch_size": 1, **args})
