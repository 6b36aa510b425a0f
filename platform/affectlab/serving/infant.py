"""Infant actions on the serving layer: ``POST /v1/infant/classify`` and ``POST /v1/infant/generate``.

    serve run affectlab.serving.infant:build checkpoint=runs/infant
    serve run serve/infant.yaml

Two predictors of one application (one route each, ``serving.layer``): the ST-GCN
recogniser classifies a pose sequence; the CVAE generates sequences of a class. Both models
come from a ``jobs/infant.py`` output (its ``models.json``: the final recogniser, else the
real-data one; the refined CVAE, else the pretrained one), or from one checkpoint directory
(its stage says which route it serves). Choices made here:

- **Classify** takes ``pose`` (SMPL axis-angle ``(T, 24, 3)``, ``(T, 72)`` or ``(1, T, 24, 3)``)
  or ``keypoint`` (an MMAction2-style ``M×T×V×C`` array, or ``T×V×C``: Human3.6M-17 3D joints,
  the first person), as an ``.npy`` upload (read with pickling refused) or JSON nested lists,
  whichever the model was trained on (``pose_rep``: ``xyz`` models take keypoints, the others
  axis-angle). Like the evaluation, a sequence longer than the model's ``num_frames`` is
  classified on its centred window and a shorter one is padded by repeating its last frame.
  Requests are batched across clients (``@serve.batch``); an ensemble (a CV output's folds)
  averages its members' probabilities.
- **Generate** draws ``n_samples`` sequences of a class with ``frames`` frames from one
  ``torch.Generator`` seeded with ``seed`` (``models.infant_inference.generate_sequences``):
  the same request gives the same bytes. ``format``: ``npz`` (``pose`` axis-angle and
  ``joints`` root-relative SMPL joints, ``(N, T, 24, 3)`` each, plus ``y`` and ``classes``),
  ``npy`` (the axis-angle poses), ``json``, or a skeleton animation (``gif``/``mp4``,
  ``body.render.render_skeleton_animation``; several samples side by side). Joints need a
  body model: the ``body_model`` argument, else the one the run trained with; with none,
  ``npz``/``json`` carry only the poses and ``gif``/``mp4`` answer 409.
- **Errors**: a malformed array (wrong joint count, NaN, too many frames, not numeric, a
  pickled ``.npy``), an unknown class or a count out of range is a 4xx naming the field.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from affectlab.constants.infant import NUM_H36M_JOINTS, NUM_SMPL_JOINTS, SMPL_PARENTS
from affectlab.data.infant import as_keypoint, as_pose, sample_frames
from affectlab.serving.layer import BadInput, Binary, Payload, build_app, server_fault
from affectlab.serving.registry import ModelEntry, ModelRegistry, is_checkpoint, load_members

logger = logging.getLogger("ray.serve")
MANIFEST_FILE = "models.json"  # written by jobs/infant.py: which checkpoint serves what
CLASSIFY_STAGES = ("recognizer", "final")  # stages whose model.safetensors is the ST-GCN
GENERATE_STAGES = ("cvae", "refine")  # stages whose model.safetensors is the CVAE
DEFAULT_MAX_FRAMES = 600
DEFAULT_MAX_SAMPLES = 32
MAX_ANIMATED_SAMPLES = 4  # skeletons side by side in one GIF/MP4
ANIMATION_FPS = 15
ANIMATION_SIZE = 256  # pixels: one square canvas, the samples side by side in it
GENERATE_FORMATS = ("npz", "npy", "json", "gif", "mp4")
MAX_SEED = 2**63 - 1


# -- uploaded arrays -----------------------------------------------------------------------
def read_array(payload: Payload, name: str, max_elements: int) -> np.ndarray:
    """Field ``name`` as a float32 array: an ``.npy`` file (its header checked before any data
    is read; pickled object arrays refused) or JSON nested lists of numbers."""
    values = payload.fields.get(name, [])
    if payload.source == "json" and not (len(values) == 1 and isinstance(values[0], str)):
        value = values  # a JSON list is the field's values: here, the array itself
    elif len(values) != 1:
        raise BadInput(422, f"field {name!r} must be given once, got {len(values)}")
    else:
        value = payload.file(name) if payload.source == "json" else values[0]  # JSON: a base64 .npy
    if isinstance(value, bytes):
        return _read_npy(value, name, max_elements)
    if not isinstance(value, list):
        raise BadInput(422, f"field {name!r} must be an .npy file or nested lists of numbers, got {type(value).__name__}")
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        raise BadInput(422, f"field {name!r} is not a rectangular array of numbers") from None
    if array.size > max_elements:
        raise BadInput(422, f"field {name!r} holds {array.size} values, more than the limit of {max_elements}")
    return array


def _read_npy(data: bytes, name: str, max_elements: int) -> np.ndarray:
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(stream, max_header_size=10_000)
    except (ValueError, SyntaxError, EOFError, OSError) as error:
        raise BadInput(422, f"field {name!r} is not an .npy file ({error})") from None
    if dtype.kind not in "fiub":
        raise BadInput(422, f"field {name!r}: .npy of dtype {dtype.str} refused; expected numbers (no pickled objects)")
    count = int(np.prod(shape, dtype=np.int64))
    if count > max_elements:
        raise BadInput(422, f"field {name!r}: .npy of shape {shape} holds more than the limit of {max_elements} values")
    if len(data) - stream.tell() != count * dtype.itemsize:
        raise BadInput(422, f"field {name!r}: .npy of shape {shape} needs {count * dtype.itemsize} data bytes, "
                            f"{len(data) - stream.tell()} are present (truncated?)")  # fmt: skip
    stream.seek(0)
    return np.load(stream, allow_pickle=False).astype(np.float32)


def _one(payload: Payload, name: str):
    values = payload.fields.get(name, [])
    if len(values) > 1:
        raise BadInput(422, f"field {name!r} must be given once, got {len(values)}")
    value = values[0] if values else None
    if isinstance(value, bytes):
        raise BadInput(422, f"field {name!r} must be a value, not a file upload")
    return value


def _integer(payload: Payload, name: str, default: int, lo: int, hi: int) -> int:
    value = _one(payload, name)
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise BadInput(422, f"field {name!r} must be an integer, got {value[:20]!r}") from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(422, f"field {name!r} must be an integer, got {str(value)[:20]!r}")
    if not lo <= value <= hi:
        raise BadInput(422, f"field {name!r} must be in {lo}..{hi}, got {value}")
    return value


# -- classify ------------------------------------------------------------------------------
@dataclass
class ClassifyInput:
    poses: np.ndarray  # (num_frames, V, 3) float32: the window the model sees
    n_frames: int  # frames sent
    request_id: str


@dataclass
class ClassifyOutput:
    model_id: str
    class_names: list[str]
    probs: np.ndarray  # (C,), mean over members
    n_frames: int
    frames_used: int
    pose_rep: str
    members: int


@dataclass
class RecognizerModel:
    model_id: str
    nets: list  # one ST-GCN per member
    class_names: list[str]
    pose_rep: str
    device: str


CLASSIFY_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "pose": {"type": "string", "format": "binary", "description": ".npy float array (T, 24, 3) SMPL axis-angle, or (T, 72), or (1, T, 24, 3)"},
                        "keypoint": {"type": "string", "format": "binary", "description": ".npy MMAction2-style keypoint array (M, T, 17, 3) or (T, 17, 3), for keypoint (xyz) models"},
                        "model_id": {"type": "string"},
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "pose": {"type": "array", "description": "nested lists (T, 24, 3), or a base64 .npy string"},
                        "keypoint": {"type": "array", "description": "nested lists (M, T, 17, 3) or (T, 17, 3)"},
                        "model_id": {"type": "string"},
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary", "description": "a raw .npy body is the field pose"}},
        },
    },
    "responses": {
        "200": {
            "description": "class probabilities",
            "content": {"application/json": {"example": {
                "model_id": "best", "label": "Sitting", "label_index": 2,
                "probabilities": {"Supine": 0.02, "Prone": 0.01, "Sitting": 0.9, "Standing": 0.05, "All-fours": 0.02},
                "classes": ["Supine", "Prone", "Sitting", "Standing", "All-fours"], "frames": 75, "frames_used": 60,
                "input": "pose", "members": 1,
            }}},  # fmt: skip
        },
        "422": {"description": "wrong joint count or shape, NaN/inf, too many frames, not numeric, a pickled .npy, both or neither of pose and keypoint"},
    },
}


class InfantClassifier:
    """The infant recogniser's predictor: ``POST /v1/infant/classify``."""

    workload = "infant"
    route = "classify"
    raw_field, raw_media = "pose", ("application/x-npy",)
    openapi = CLASSIFY_OPENAPI
    description = "Infant actions: classify an SMPL pose sequence (ST-GCN), generate sequences of a class (CVAE)."

    def __init__(self, checkpoint: str, max_frames: int = DEFAULT_MAX_FRAMES):
        self.checkpoint, self.max_frames = checkpoint, int(max_frames)

    def load(self, entry: ModelEntry) -> RecognizerModel:
        nets, cfg, device = load_members(entry, build_recognizer, agree_on=("pose_rep", "num_frames", "dataset"))
        return RecognizerModel(entry.model_id, nets, list(cfg.class_names), cfg.pose_rep, device)

    def predict_batch(self, model: RecognizerModel, inputs: list[ClassifyInput]) -> list:
        """Every request of the batch in one forward pass per member (same window length)."""
        from affectlab.models.infant_inference import classify

        try:
            poses = np.stack([x.poses for x in inputs])
            probs = np.mean([classify(net, poses, model.pose_rep).numpy() for net in model.nets], axis=0)
        except Exception:
            return [server_fault(x.request_id, f"classifying with model {model.model_id}") for x in inputs]
        return [ClassifyOutput(model.model_id, model.class_names, p, x.n_frames, len(x.poses), model.pose_rep, len(model.nets))
                for x, p in zip(inputs, probs)]  # fmt: skip

    def encode(self, out: ClassifyOutput) -> dict:
        best = int(np.argmax(out.probs))
        return {
            "model_id": out.model_id,
            "label": out.class_names[best],
            "label_index": best,
            "probabilities": {name: round(float(p), 6) for name, p in zip(out.class_names, out.probs)},
            "classes": out.class_names,
            "frames": out.n_frames,
            "frames_used": out.frames_used,
            "input": "keypoint" if out.pose_rep == "xyz" else "pose",
            "members": out.members,
        }

    def decode(self, payload: Payload, entry: ModelEntry) -> ClassifyInput:
        payload.expect(required=(), optional=("pose", "keypoint"))
        given = [n for n in ("pose", "keypoint") if n in payload.names]
        if len(given) != 1:
            raise BadInput(422, f"send exactly one of the fields 'pose' (SMPL axis-angle) and 'keypoint' (Human3.6M-17 joints), got {given or 'neither'}")
        name = given[0]
        pose_rep, num_frames = entry.config["pose_rep"], int(entry.config["num_frames"])
        wanted = "keypoint" if pose_rep == "xyz" else "pose"
        if name != wanted:
            shape = f"(T, {NUM_H36M_JOINTS}, 3)" if wanted == "keypoint" else f"(T, {NUM_SMPL_JOINTS}, 3)"
            raise BadInput(422, f"field {name!r}: this model (pose_rep {pose_rep}) classifies {wanted} sequences; send {wanted!r} {shape}")
        array = read_array(payload, name, max_elements=self.max_frames * NUM_SMPL_JOINTS * 3 * 4)
        try:
            poses = as_keypoint(array) if name == "keypoint" else as_pose(array)
        except ValueError as error:
            raise BadInput(422, f"field {name!r}: {error}") from None
        if name == "keypoint" and poses.shape[1:] != (NUM_H36M_JOINTS, 3):
            raise BadInput(422, f"field 'keypoint': {poses.shape[1]} joints × {poses.shape[2]} coordinates a frame; expected Human3.6M-17 3D joints ({NUM_H36M_JOINTS}, 3)")
        if len(poses) > self.max_frames:
            raise BadInput(422, f"field {name!r}: {len(poses)} frames, more than the limit of {self.max_frames}")
        return ClassifyInput(sample_frames(poses, num_frames), len(poses), uuid.uuid4().hex[:12])


# -- generate ------------------------------------------------------------------------------
@dataclass
class GenerateInput:
    class_index: int
    n_samples: int
    frames: int
    seed: int
    format: str
    request_id: str


@dataclass
class GeneratorModel:
    model_id: str
    cvae: object
    class_names: list[str]
    body: object | None  # smplx.SMPLLayer for the joints


@dataclass
class GenerateOutput:
    model_id: str
    class_name: str
    class_index: int
    seed: int
    format: str
    pose: np.ndarray  # (N, T, 24, 3) axis-angle
    joints: np.ndarray | None  # (N, T, 24, 3) root-relative
    animation: bytes | None = None


GENERATE_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            media: {
                "schema": {
                    "type": "object",
                    "required": ["class"],
                    "properties": {
                        "class": {"type": "string", "description": "class name (see the checkpoint's classes) or index"},
                        "n_samples": {"type": "integer", "default": 1, "description": "1..max_samples (gif/mp4: at most 4, side by side)"},
                        "frames": {"type": "integer", "description": "frames per sequence, 1..max_frames (default: the model's num_frames)"},
                        "seed": {"type": "integer", "default": 0, "description": "the same seed gives the same sequences"},
                        "format": {"type": "string", "enum": list(GENERATE_FORMATS), "default": "npz"},
                        "model_id": {"type": "string"},
                    },
                }
            }
            for media in ("multipart/form-data", "application/json")
        },
    },
    "responses": {
        "200": {
            "description": "npz (pose, joints, y, classes), npy (pose), json, or a GIF/MP4 skeleton animation",
            "content": {"application/octet-stream": {}, "application/json": {}, "image/gif": {}, "video/mp4": {}},
        },
        "409": {"description": "joints or an animation asked of a server without a body model"},
        "422": {"description": "unknown class; n_samples, frames or seed out of range; unknown format"},
    },
}


class InfantGenerator:
    """The infant CVAE's predictor: ``POST /v1/infant/generate``."""

    workload = "infant"
    route = "generate"
    raw_field, raw_media = "class", ()
    openapi = GENERATE_OPENAPI

    def __init__(self, checkpoint: str, body_model: str | None, max_frames: int = DEFAULT_MAX_FRAMES, max_samples: int = DEFAULT_MAX_SAMPLES):
        self.checkpoint, self.body_model = checkpoint, body_model
        self.max_frames, self.max_samples = int(max_frames), int(max_samples)

    def load(self, entry: ModelEntry) -> GeneratorModel:
        (cvae,), cfg, _ = load_members(entry, build_generator, agree_on=())
        body = None
        if self.body_model:
            from affectlab.body.models import smpl_layer

            body = smpl_layer(self.body_model)
        return GeneratorModel(entry.model_id, cvae.cpu(), list(cfg.class_names), body)  # sampled on the CPU: seeded bytes

    def predict_batch(self, model: GeneratorModel, inputs: list[GenerateInput]) -> list:
        """Each request on its own generator (its seed); a fault is that request's 500."""
        from affectlab.models.infant_inference import generate_sequences

        outputs = []
        for x in inputs:
            try:
                out = generate_sequences(model.cvae, [x.class_index], x.n_samples, x.frames, x.seed, model.body)
                joints = out["joints"].numpy() if "joints" in out else None
                result = GenerateOutput(model.model_id, model.class_names[x.class_index], x.class_index, x.seed, x.format,
                                        out["pose"].numpy().astype(np.float32), joints)  # fmt: skip
                if x.format in ("gif", "mp4"):
                    result.animation = render_animation(joints, x.format)
                outputs.append(result)
            except Exception:
                outputs.append(server_fault(x.request_id, f"generating with model {model.model_id}"))
        return outputs

    def encode(self, out: GenerateOutput) -> dict | Binary:
        stem = f"infant_{out.class_name.lower().replace(' ', '_').replace('-', '_')}_seed{out.seed}"
        if out.format == "npz":
            arrays = {"pose": out.pose, "y": np.full(len(out.pose), out.class_index, np.int64), "classes": np.array([out.class_name])}
            if out.joints is not None:
                arrays["joints"] = out.joints
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            return Binary(buffer.getvalue(), "application/octet-stream", f"{stem}.npz")
        if out.format == "npy":
            buffer = io.BytesIO()
            np.save(buffer, out.pose, allow_pickle=False)
            return Binary(buffer.getvalue(), "application/octet-stream", f"{stem}.npy")
        if out.format in ("gif", "mp4"):
            return Binary(out.animation, "image/gif" if out.format == "gif" else "video/mp4", f"{stem}.{out.format}")
        return {
            "model_id": out.model_id,
            "class": out.class_name,
            "class_index": out.class_index,
            "n_samples": int(len(out.pose)),
            "frames": int(out.pose.shape[1]),
            "seed": out.seed,
            "layout": "pose: (N, T, 24, 3) SMPL axis-angle, joint 0 the root; joints: (N, T, 24, 3) root-relative SMPL joints",
            "pose": np.round(out.pose.astype(np.float64), 6).tolist(),
            "joints": None if out.joints is None else np.round(out.joints.astype(np.float64), 6).tolist(),
        }

    def decode(self, payload: Payload, entry: ModelEntry) -> GenerateInput:
        payload.expect(required=("class",), optional=("n_samples", "frames", "seed", "format"))
        names = list(entry.config["class_names"])
        fmt = str(_one(payload, "format") or "npz").strip().lower()
        if fmt not in GENERATE_FORMATS:
            raise BadInput(422, f"field 'format' must be one of {list(GENERATE_FORMATS)}, got {fmt[:20]!r}")
        if fmt in ("gif", "mp4") and not self.body_model:
            raise BadInput(409, f"field 'format': a {fmt} animation needs the SMPL joints and this server has no body model "
                                "configured (start it with body_model=PATH); use npz, npy or json")  # fmt: skip
        value = _one(payload, "class")
        text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        if text in names:
            class_index = names.index(text)
        elif text is not None and text.isdigit() and int(text) < len(names):
            class_index = int(text)
        else:
            raise BadInput(422, f"field 'class': {str(value)[:32]!r} is not one of the model's classes {names} (or 0-{len(names) - 1})")
        limit = MAX_ANIMATED_SAMPLES if fmt in ("gif", "mp4") else self.max_samples
        n_samples = _integer(payload, "n_samples", 1, 1, limit)
        frames = _integer(payload, "frames", int(entry.config["num_frames"]), 1, self.max_frames)
        seed = _integer(payload, "seed", 0, 0, MAX_SEED)
        return GenerateInput(class_index, n_samples, frames, seed, fmt, uuid.uuid4().hex[:12])


def render_animation(joints: np.ndarray, fmt: str) -> bytes:
    """(N, T, 24, 3) root-relative joints → one skeleton animation, the N samples side by side."""
    from affectlab.body.render import render_skeleton_animation

    width = float(np.ptp(joints[..., 0])) * 1.2 or 1.0
    shifted = joints + np.arange(len(joints))[:, None, None, None] * np.array([width, 0.0, 0.0])
    side_by_side = np.concatenate(list(shifted), axis=1)  # (T, N·24, 3)
    parents = [p + k * NUM_SMPL_JOINTS if p >= 0 else -1 for k in range(len(joints)) for p in SMPL_PARENTS]
    with tempfile.TemporaryDirectory(prefix="affectlab-infant-") as tmp:
        path = Path(tmp) / f"animation.{fmt}"
        render_skeleton_animation(side_by_side, parents, path, fps=ANIMATION_FPS, size=ANIMATION_SIZE)
        return path.read_bytes()


# -- models from a checkpoint's config ------------------------------------------------------
def build_recognizer(config: dict):
    from affectlab.models.infant_inference import build_recognizer as build

    if config.get("stage") not in CLASSIFY_STAGES:
        raise ValueError(f"a {config.get('stage')!r} checkpoint's model.safetensors is not a recogniser")
    return build(config), SimpleNamespace(**config)


def build_generator(config: dict):
    from affectlab.models.infant_inference import build_generator as build

    if config.get("stage") not in GENERATE_STAGES:
        raise ValueError(f"a {config.get('stage')!r} checkpoint's model.safetensors is not a CVAE")
    return build(config), SimpleNamespace(**config)


# -- the application -----------------------------------------------------------------------
def served_checkpoints(directory: str | Path) -> tuple[Path | None, Path | None, str | None]:
    """(classifier directory, generator directory, body model) of a served directory: a
    ``jobs/infant.py`` output (``models.json``; its stage folders when that is missing or
    names folders that moved with the output), or one checkpoint (or CV output) of a stage."""
    root = Path(directory).expanduser().resolve()
    manifest = root / MANIFEST_FILE
    if manifest.is_file():
        info = json.loads(manifest.read_text())
        classifier, generator = (_moved(root, info.get(role)) for role in ("classifier", "generator"))
        return classifier, generator, _existing(info.get("body_model"))
    stages = [(s, root / s) for s in ("final", "recognizer", "refine", "cvae") if is_checkpoint(root / s)]
    classifier = next((p for s, p in stages if s in CLASSIFY_STAGES), None)
    generator = next((p for s, p in stages if s in GENERATE_STAGES), None)
    if classifier or generator:
        body = ModelRegistry(generator, "infant").get(None).config.get("body_model") if generator else None
        return classifier, generator, _existing(body)
    entry = ModelRegistry(root, "infant").get(None)  # a checkpoint, CV or sweep output of one stage
    stage = entry.config.get("stage")
    if stage in CLASSIFY_STAGES:
        return root, None, None
    if stage in GENERATE_STAGES:
        return None, root, _existing(entry.config.get("body_model"))
    raise ValueError(f"{root}: a {stage!r} checkpoint serves neither route; give a jobs/infant.py output or a "
                     f"{'/'.join(CLASSIFY_STAGES + GENERATE_STAGES)} checkpoint")  # fmt: skip


def _existing(body_model: str | None) -> str | None:
    """The body model a run trained with, when it is still there (else: poses only)."""
    if body_model and Path(body_model).exists():
        return body_model
    if body_model:
        logger.warning("the run's body model %s is gone: generated sequences carry poses only (give body_model=PATH)", body_model)
    return None


def _moved(root: Path, path: str | None) -> Path | None:
    if not path:
        return None
    for candidate in (Path(path), root / path, root / Path(path).name):
        if candidate.is_dir():
            return candidate.resolve()
    raise ValueError(f"{root / MANIFEST_FILE} names {path}, which is not a directory (here or in {root})")


def build(args: dict):
    """The Serve application builder: ``serve run affectlab.serving.infant:build checkpoint=DIR``.

    ``args``: every ``ServeOptions`` field, plus ``body_model`` (an SMPL/SMIL file or folder
    for the generated joints and animations; default: the one the run trained with; ``none``:
    poses only), ``max_frames`` (600, both routes) and ``max_samples`` (32).
    """
    args = dict(args)
    body_arg = args.pop("body_model", None)
    try:
        max_frames = int(args.pop("max_frames", DEFAULT_MAX_FRAMES))
        max_samples = int(args.pop("max_samples", DEFAULT_MAX_SAMPLES))
    except ValueError as error:
        raise ValueError(f"max_frames and max_samples must be integers ({error})") from None
    if max_frames < 1 or max_samples < 1:
        raise ValueError(f"max_frames and max_samples must be >= 1, got {max_frames} and {max_samples}")
    if not args.get("checkpoint"):
        raise ValueError("serving needs checkpoint=DIR: a jobs/infant.py output, or a recognizer/final/cvae/refine checkpoint")
    classifier, generator, body_model = served_checkpoints(args["checkpoint"])
    if body_arg is not None:
        body_model = None if str(body_arg).strip().lower() in ("none", "off", "") else str(Path(body_arg).expanduser().resolve())
    if body_model:
        from affectlab.body.models import smpl_layer

        try:
            smpl_layer(body_model)
        except (OSError, ValueError) as error:
            raise ValueError(f"body_model={body_model}: not a usable SMPL/SMIL model ({error})") from None
    predictors = []
    if classifier:
        predictors.append(InfantClassifier(str(classifier), max_frames))
    if generator:
        predictors.append(InfantGenerator(str(generator), body_model, max_frames, max_samples))
    return build_app(predictors, {"max_batch_size": 16, **args})
