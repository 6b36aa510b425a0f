"""ProbTalk3D on the serving layer: ``POST /v1/probtalk3d/animate``.

    serve run affectlab.serving.probtalk3d:build checkpoint=runs/p3d/pred
    serve run serve/probtalk3d.yaml

A WAV and a style (``id``, ``emotion``, ``intensity``) → ``n_samples`` stochastic FLAME
expression + jaw animations at 25 fps from a stage-2 checkpoint (``jobs/probtalk3d.py``'s
``OUTPUT/pred``). Choices made here:

- **Generation** is the workload's own (``models.probtalk3d_generate.generate_samples``):
  the audio is encoded once, each sample draws its codes from one ``torch.Generator``
  seeded with ``seed`` (default 0), so the same request gives the same bytes on CPU;
  ``sample=false`` takes the nearest codes (VAE: the mean) and every sample is the same.
  ``top_k`` and the VAE's ``fact`` are the checkpoint's generation settings.
- **Style** is validated against the vocabularies the checkpoint was trained on
  (``config.json``: ``identities``, ``emotions``, ``intensities``); an intensity is
  ``level_<n>`` or the level number ``n``; neutral speech exists only at ``level_1``.
- **Formats**: ``json`` (the motion in raw FLAME units: expression[0:50] then the jaw
  axis-angle in radians, per sample and frame), ``npy`` (``K×T×403`` float32 in
  ProbTalk3D's generated-output layout, ``data.mead.params_from_motion``, a download) and
  ``mp4`` (the K samples side by side as FLAME meshes, zero shape and pose, with the input
  audio: ``body.render.render_mesh_video``). The video needs a FLAME model: the ``flame``
  argument, else the one the checkpoint's ``generation.json`` names (the job copies its
  tiny stand-in into ``pred/flame``); with none, ``format=mp4`` is a 409.
- **Errors**: every fault of the request is a 4xx naming the field (a WAV that is not one,
  truncated, empty or too long: ``data.audio.read_wav``'s ``AudioError``); a fault of the
  server is the layer's 500 with a request id.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectlab.constants import probtalk3d as C
from affectlab.data.audio import AudioError, read_wav
from affectlab.data.mead import params_from_motion, unscale_motion
from affectlab.serving.layer import BadInput, Binary, Payload, build_app, server_fault
from affectlab.serving.registry import ModelEntry, ModelRegistry, load_members

GENERATION_FILE = "generation.json"  # beside a stage-2 checkpoint (workloads.probtalk3d writes it)
FORMATS = ("json", "npy", "mp4")
DEFAULT_MAX_SAMPLES = 16
DEFAULT_MAX_SECONDS = 30.0
MAX_VIDEO_SAMPLES = 4  # panels side by side in one MP4
VIDEO_SIZE = 256  # pixels per panel
MAX_SEED = 2**63 - 1
FIELDS = ("id", "emotion", "intensity", "temperature", "n_samples", "seed", "sample", "format")
LAYOUT = "expression[0:50] then jaw axis-angle[3]: raw FLAME units (the jaw in radians), zero shape and pose"


@dataclass
class AnimateInput:
    audio: np.ndarray  # float32 16 kHz mono in [-1, 1]
    style: tuple[int, int, int]  # (identity, emotion, intensity) slots
    style_names: dict  # {"id", "emotion", "intensity"} as named in the request
    temperature: float
    n_samples: int
    seed: int
    sample: bool
    format: str
    request_id: str


@dataclass
class AnimateModel:
    model_id: str
    net: object  # models.probtalk3d.ProbTalk3DPredictor, eval mode
    kind: str  # vqvae | vae
    top_k: int | None
    fact: float
    flame: object | None  # smplx.FLAME (CPU) for format=mp4
    faces: np.ndarray | None


@dataclass
class AnimateOutput:
    model_id: str
    kind: str
    motion: np.ndarray  # (K, T, 53) scaled, as the model generates it
    style_names: dict
    temperature: float
    seed: int
    sample: bool
    format: str
    video: bytes | None = None


def vocabulary(config: dict) -> dict[str, list[str]]:
    """The style names a stage-2 checkpoint was trained on (its slots when it names none)."""
    return {
        "id": list(config.get("identities") or C.TRAIN_SUBJECTS),
        "emotion": list(config.get("emotions") or C.EMOTIONS),
        "intensity": list(config.get("intensities") or C.INTENSITIES),
    }


def checkpoint_flame_dir(checkpoint: Path) -> Path | None:
    """The FLAME directory the checkpoint's ``generation.json`` names (relative: inside the
    checkpoint), when it exists."""
    path = checkpoint / GENERATION_FILE
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    where = info.get("flame_dir") if isinstance(info, dict) else None
    if not where or not isinstance(where, str):
        return None
    flame_dir = (checkpoint / where).resolve()
    return flame_dir if flame_dir.is_dir() else None


OPENAPI = {  # the request and responses of /v1/probtalk3d/animate in /docs
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["audio"],
                    "properties": {
                        "audio": {"type": "string", "format": "binary", "description": "speech, a WAV (any rate, mono or not: resampled to 16 kHz mono)"},
                        "id": {"type": "string", "description": "speaking-style identity, one the checkpoint was trained on (default: its first)"},
                        "emotion": {"type": "string", "description": "one of the checkpoint's emotions (default: neutral)"},
                        "intensity": {"type": "string", "description": "level_1..level_3 or 1..3 (default: level_1)"},
                        "temperature": {"type": "number", "description": "> 0, code-sampling temperature (default: the checkpoint's, 0.2)"},
                        "n_samples": {"type": "integer", "description": "samples to draw, 1..max_samples (mp4: at most 4)", "default": 1},
                        "seed": {"type": "integer", "description": "seed of the sampling: the same seed gives the same output", "default": 0},
                        "sample": {"type": "boolean", "description": "false: the nearest codes (VAE: the mean), every sample the same", "default": True},
                        "format": {"type": "string", "enum": list(FORMATS), "default": "json"},
                        "model_id": {"type": "string", "description": "best (see /v1/probtalk3d/models)"},
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["audio"],
                    "properties": {
                        "audio": {"type": "string", "format": "byte", "description": "base64 WAV bytes"},
                        "id": {"type": "string"}, "emotion": {"type": "string"},
                        "intensity": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                        "temperature": {"type": "number"}, "n_samples": {"type": "integer"}, "seed": {"type": "integer"},
                        "sample": {"type": "boolean"}, "format": {"type": "string", "enum": list(FORMATS)},
                        "model_id": {"type": "string"},
                    },  # fmt: skip
                }
            },
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "responses": {
        "200": {
            "description": "the animation: JSON, a K×T×403 .npy download (format=npy) or an MP4 (format=mp4)",
            "content": {
                "application/json": {
                    "example": {
                        "model_id": "best", "model": "vqvae", "fps": 25, "n_frames": 50, "duration_s": 2.0, "n_samples": 2,
                        "style": {"id": "M003", "emotion": "happy", "intensity": "level_2"},
                        "temperature": 0.2, "seed": 0, "sample": True, "layout": LAYOUT, "motion": [[[0.1] * 53]],
                    }  # fmt: skip
                },
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "video/mp4": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "409": {"description": "format=mp4 on a server with no FLAME model configured"},
        "422": {"description": "not a WAV, truncated, empty or too long; unknown id or emotion; intensity, temperature or n_samples out of range; unknown format"},
    },
}


class ProbTalk3DAnimator:
    """The probtalk3d workload's predictor for ``affectlab.serving.layer``."""

    workload = "probtalk3d"
    route = "animate"
    raw_field, raw_media = "audio", ("audio/",)
    default_upload_mb = 20.0
    openapi = OPENAPI
    description = "Speech + speaking style → stochastic FLAME expression and jaw animation (ProbTalk3D)."

    def __init__(self, flame_dir: str | None = None, max_samples: int = DEFAULT_MAX_SAMPLES, max_seconds: float = DEFAULT_MAX_SECONDS):
        """``flame_dir``: the FLAME model for ``format=mp4`` (None: no video)."""
        self.flame_dir = flame_dir
        self.max_samples, self.max_seconds = int(max_samples), float(max_seconds)

    # -- model replicas --------------------------------------------------------------------
    def load(self, entry: ModelEntry) -> AnimateModel:
        (net,), config, _ = load_members(entry, build_model, agree_on=())
        flame, faces = None, None
        if self.flame_dir:
            from affectlab.body.models import flame_layer

            flame = flame_layer(self.flame_dir, n_shape=300, n_expression=100)
            faces = np.asarray(flame.faces, np.int64)
        top_k = int(config.get("top_k") or 0) or None
        return AnimateModel(entry.model_id, net, net.kind, top_k, float(config.get("fact", 20.0)), flame, faces)

    def predict_batch(self, model: AnimateModel, inputs: list[AnimateInput]) -> list:
        """One output per request (each is already a batch of its ``n_samples``); a fault of
        the server is that request's 500, the others still answered."""
        from affectlab.models.probtalk3d_generate import generate_samples

        outputs = []
        for x in inputs:
            try:
                motion = generate_samples(
                    model.net, x.audio, x.style, n_samples=x.n_samples, temperature=x.temperature, sample=x.sample,
                    seed=x.seed, top_k=model.top_k, fact=model.fact,
                )  # fmt: skip
                out = AnimateOutput(model.model_id, model.kind, motion, x.style_names, x.temperature, x.seed, x.sample, x.format)
                if x.format == "mp4":
                    out.video = render_video(model, motion, x.audio)
                outputs.append(out)
            except Exception:
                outputs.append(server_fault(x.request_id, f"animating with model {model.model_id}"))
        return outputs

    def encode(self, out: AnimateOutput) -> dict | Binary:
        if out.format == "npy":
            buffer = io.BytesIO()
            np.save(buffer, params_from_motion(out.motion), allow_pickle=False)
            return Binary(buffer.getvalue(), "application/octet-stream", "probtalk3d_motion.npy")
        if out.format == "mp4":
            return Binary(out.video, "video/mp4", "probtalk3d.mp4")
        n_samples, n_frames = out.motion.shape[:2]
        return {
            "model_id": out.model_id,
            "model": out.kind,
            "fps": C.FPS,
            "n_frames": int(n_frames),
            "duration_s": n_frames / C.FPS,
            "n_samples": int(n_samples),
            "style": out.style_names,
            "temperature": out.temperature,
            "seed": out.seed,
            "sample": out.sample,
            "layout": LAYOUT,
            "motion": np.round(unscale_motion(out.motion).astype(np.float64), 6).tolist(),
        }

    # -- ingress ---------------------------------------------------------------------------
    def decode(self, payload: Payload, entry: ModelEntry) -> AnimateInput:
        """The request as an ``AnimateInput``; every fault of it is a ``BadInput`` naming the field."""
        payload.expect(required=("audio",), optional=FIELDS)
        fmt = (payload.text("format") or "json").strip().lower()
        if fmt not in FORMATS:
            raise BadInput(422, f"field 'format' must be one of {list(FORMATS)}, got {fmt[:20]!r}")
        if fmt == "mp4" and not self.flame_dir:
            raise BadInput(409, "field 'format': mp4 needs a FLAME model and this server has none configured "
                                "(start it with flame=DIR, a FLAME folder converted by affectlab.body.convert); "
                                "use format=json or npy")  # fmt: skip
        n_samples = _integer(payload, "n_samples", 1, 1, MAX_VIDEO_SAMPLES if fmt == "mp4" else self.max_samples)
        vocab = vocabulary(entry.config)
        identity = _choice(payload, "id", vocab["id"], vocab["id"][0])
        emotion = _choice(payload, "emotion", vocab["emotion"], "neutral" if "neutral" in vocab["emotion"] else vocab["emotion"][0])
        intensity = _intensity(payload, vocab["intensity"])
        if emotion == C.EMOTIONS[C.NEUTRAL] and intensity != C.INTENSITIES[0]:
            raise BadInput(422, f"field 'intensity': neutral speech exists only at {C.INTENSITIES[0]}, got {intensity!r}")
        temperature = _real(payload, "temperature", float(entry.config.get("temperature", 0.2)))
        if not temperature > 0:
            raise BadInput(422, f"field 'temperature' must be > 0, got {temperature:g}")
        seed = _integer(payload, "seed", 0, 0, MAX_SEED)
        sample = payload.flag("sample", True)
        try:
            audio = read_wav(payload.file("audio"), max_seconds=self.max_seconds, name="field 'audio'")
        except AudioError as error:
            raise BadInput(422, str(error)) from None
        if len(audio) < C.SAMPLES_PER_FRAME:
            raise BadInput(422, f"field 'audio': {len(audio) / C.AUDIO_SAMPLE_RATE:.3f} s is shorter than one {C.FPS} fps frame")
        style = (C.TRAIN_SUBJECTS.index(identity), C.EMOTIONS.index(emotion), C.INTENSITIES.index(intensity))
        names = {"id": identity, "emotion": emotion, "intensity": intensity}
        return AnimateInput(audio, style, names, temperature, n_samples, seed, sample, fmt, uuid.uuid4().hex[:12])


def render_video(model: AnimateModel, motion: np.ndarray, audio: np.ndarray) -> bytes:
    """The K samples side by side as FLAME meshes (zero shape and pose), with the audio, as MP4 bytes."""
    from affectlab.body.render import render_mesh_video

    vertices = flame_vertices_of(model.flame, motion)
    with tempfile.TemporaryDirectory(prefix="affectlab-p3d-") as tmp:
        path = Path(tmp) / "animation.mp4"
        titles = [f"sample {k + 1}" for k in range(len(vertices))]
        render_mesh_video(list(vertices), model.faces, C.FPS, path, audio=audio, sample_rate=C.AUDIO_SAMPLE_RATE,
                          size=VIDEO_SIZE, titles=titles)  # fmt: skip
        return path.read_bytes()


def flame_vertices_of(layer, motion: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Scaled motion ``(K, T, 53)`` → FLAME vertices ``(K, T, V, 3)``: expression = the 50
    generated + 50 zeros, the generated jaw, zero shape and pose (as the evaluation builds them)."""
    import torch

    from affectlab.body.models import flame_vertices

    params = params_from_motion(motion).reshape(-1, C.PARAM_DIM)
    expression, jaw = params[:, slice(*C.EXPRESSION_SLICE)], params[:, slice(*C.JAW_SLICE)]
    with torch.no_grad():
        verts = [flame_vertices(layer, expression[i : i + chunk], jaw[i : i + chunk]).numpy() for i in range(0, len(params), chunk)]
    return np.concatenate(verts).reshape(*motion.shape[:2], -1, 3)


# -- request fields ------------------------------------------------------------------------
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


def _real(payload: Payload, name: str, default: float) -> float:
    value = _one(payload, name)
    if value is None or value == "":
        return default
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise BadInput(422, f"field {name!r} must be a number, got {str(value)[:20]!r}") from None
    if not math.isfinite(number):
        raise BadInput(422, f"field {name!r} must be a finite number, got {number}")
    return number


def _choice(payload: Payload, name: str, allowed: list[str], default: str) -> str:
    value = _one(payload, name)
    if value is None or value == "":
        return default
    if not isinstance(value, str) or value.strip() not in allowed:
        raise BadInput(422, f"field {name!r}: {str(value)[:32]!r} is not one the model was trained on; expected one of {allowed}")
    return value.strip()


def _intensity(payload: Payload, allowed: list[str]) -> str:
    """``level_<n>`` or the level number ``n`` (JSON: a number), checked against ``allowed``."""
    value = _one(payload, "intensity")
    if value is None or value == "":
        return C.INTENSITIES[0] if C.INTENSITIES[0] in allowed else allowed[0]
    text = str(value).strip()
    if isinstance(value, bool) or isinstance(value, float):
        text = "?"
    level = f"level_{text}" if text.isdigit() else text
    if level not in allowed:
        numbers = [a.removeprefix("level_") for a in allowed]
        raise BadInput(422, f"field 'intensity': {str(value)[:20]!r} is out of range; expected one of {allowed} (or {', '.join(numbers)})")
    return level


def build_model(config: dict):
    """A stage-2 checkpoint's predictor (random init: its weights are loaded next) and its config."""
    from affectlab.models.probtalk3d_generate import predictor_from_config

    if config.get("stage") != "pred":
        raise ValueError(f"a {config.get('stage')!r} checkpoint; serve the stage-2 one (OUTPUT/pred of jobs/probtalk3d.py)")
    return predictor_from_config(config), config


def resolve_flame(flame: str | None, checkpoint: Path) -> str | None:
    """The FLAME directory for ``format=mp4``: ``flame`` (``none``: no video), else the one the
    checkpoint's ``generation.json`` names. A directory given is checked to load now."""
    if flame is not None and str(flame).strip().lower() in ("none", "off", ""):
        return None
    if flame is None:
        found = checkpoint_flame_dir(checkpoint)
        return str(found) if found else None
    flame_dir = Path(flame).expanduser().resolve()
    from affectlab.body.models import flame_layer

    try:
        flame_layer(flame_dir, n_shape=300, n_expression=100)
    except (OSError, ValueError) as error:
        raise ValueError(f"flame={flame}: not a usable FLAME model folder ({error})") from None
    return str(flame_dir)


def build(args: dict):
    """The Serve application builder: ``serve run affectlab.serving.probtalk3d:build checkpoint=DIR/pred``.

    ``args``: every ``ServeOptions`` field, plus ``flame`` (a FLAME folder for ``format=mp4``;
    default: the checkpoint's own, if it names one; ``none``: no video), ``max_samples``
    (16) and ``max_seconds`` of audio (30). ``max_batch_size`` defaults to 1: one request is
    already a batch of its samples.
    """
    args = dict(args)
    flame = args.pop("flame", None)
    try:
        max_samples, max_seconds = int(args.pop("max_samples", DEFAULT_MAX_SAMPLES)), float(args.pop("max_seconds", DEFAULT_MAX_SECONDS))
    except ValueError as error:
        raise ValueError(f"max_samples must be an integer and max_seconds a number ({error})") from None
    if max_samples < 1 or not 0 < max_seconds < math.inf:
        raise ValueError(f"max_samples must be >= 1 and max_seconds > 0, got {max_samples} and {max_seconds}")
    if not args.get("checkpoint"):
        raise ValueError("serving needs checkpoint=DIR: the stage-2 checkpoint (OUTPUT/pred of jobs/probtalk3d.py)")
    entry = ModelRegistry(args["checkpoint"], ProbTalk3DAnimator.workload, args.get("default_model") or None).get(None)
    if entry.config.get("stage") != "pred":
        raise ValueError(f"{entry.members[0].path} is a stage-{entry.config.get('stage')!r} checkpoint; serve the stage-2 one (OUTPUT/pred)")
    predictor = ProbTalk3DAnimator(resolve_flame(flame, entry.members[0].path), max_samples, max_seconds)
    return build_app(predictor, {"max_batch_size": 1, **args})
