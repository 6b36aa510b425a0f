"""Pain scoring on the serving layer: ``POST /v1/pain/score``.

    serve run affectlab.serving.pain:build checkpoint=runs/demo_unbc_cv
    serve run serve/pain.yaml

A face image (and optionally neutral reference images of the same person) → PSPI, the
six AU intensities and pain decisions at PSPI ≥ 1, 2, 3. Choices made here:

- **Pain decisions** use the thresholds calibrated on the fold's own training predictions
  (CV ``metrics.json``), else calibrated from the checkpoint's ``predictions.npz``
  ``train_eval`` split, else the PSPI threshold itself (``thresholds_source`` says
  which). ``decision`` is ``pspi ≥ threshold``; ``probability`` is the sigmoid of the
  binary PSPI ≥ t head, the model's separate estimate of P(PSPI ≥ t).
- **References**: several are averaged (multi-shot). A model trained with references but
  asked without one gets the query image as its own reference (``reference: "self"``),
  the closest to "no change from neutral" it can see; a model trained without references
  ignores any that are sent (``reference: "unused"``).
- **Ensemble** (a CV output's ``ensemble`` id): every fold model scores the same input;
  the response is their mean, ``pspi_std``/``aus_std`` their spread (population standard
  deviation across folds), and decisions compare the mean with the mean fold threshold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from affectlab.data.pain import model_inputs, to_chw
from affectlab.constants.pain import AU_NAMES, PSPI_MAX
from affectlab.serving.faces import FaceDetector, crop_square
from affectlab.serving.images import decode_image
from affectlab.serving.layer import BadInput, Payload, build_app
from affectlab.serving.registry import Member, ModelEntry, load_members

THRESHOLDS = ("1", "2", "3")
MAX_REFERENCES = 8


@dataclass
class PainInput:
    image: np.ndarray  # uint8 [3, S, S]
    references: np.ndarray | None  # uint8 [N, 3, S, S]
    reference: str  # "given", "self", "unused" or "none"


@dataclass
class PainModel:
    model_id: str
    nets: list  # one ViTPain per member (folds of an ensemble)
    thresholds: dict[str, float]
    thresholds_source: str
    device: str
    ensemble: bool = False


@dataclass
class PainOutput:
    model_id: str
    pspi: np.ndarray  # [M] one per member, PSPI scale
    aus: np.ndarray  # [M, 6]
    probability: np.ndarray  # [M, 3] sigmoid of the binary heads
    thresholds: dict[str, float]
    thresholds_source: str
    reference: str
    n_references: int
    ensemble: bool = False


def build_model(config: dict):
    """A checkpoint's ViTPain (random init: its weights are loaded next) and its run config."""
    from types import SimpleNamespace

    from affectlab.models.vitpain import ViTPainConfig, build_vitpain

    return build_vitpain(ViTPainConfig.from_run_config(config), pretrained=False), SimpleNamespace(**config)


def member_thresholds(member: Member) -> tuple[dict[str, float], str]:
    """The decision thresholds (PSPI scale) calibrated when ``member`` was trained; a fold's
    are in its CV output's ``metrics.json``, one directory up."""
    from affectlab.metrics.pain import calibrate_threshold
    from affectlab.train.loop import PREDICTIONS_FILE, read_predictions

    cv_metrics = member.path.parent / "metrics.json"
    if member.fold is not None and cv_metrics.is_file():
        cv = json.loads(cv_metrics.read_text())
        folds = cv.get("folds") if isinstance(cv, dict) else None
        for f in folds if isinstance(folds, list) else []:
            if isinstance(f, dict) and f.get("fold") == member.fold and _valid(f.get("thresholds")):
                return {t: float(f["thresholds"][t]) for t in THRESHOLDS}, "cv_metrics"
    own_metrics = member.path / "metrics.json"
    if own_metrics.is_file():
        own = json.loads(own_metrics.read_text())
        if isinstance(own, dict) and _valid(own.get("thresholds")):
            return {t: float(own["thresholds"][t]) for t in THRESHOLDS}, "checkpoint_metrics"
    if (member.path / PREDICTIONS_FILE).is_file():
        train = read_predictions(member.path).get("train_eval")
        if train is not None and len(train.get("pred", [])):
            fitted = {t: calibrate_threshold(train["pred"], train["target"], int(t)) for t in THRESHOLDS}
            # undefined where training had no frame at PSPI ≥ t: the uncalibrated cut-off t
            return {t: float(t) if thr is None else thr for t, thr in fitted.items()}, "train_predictions"
    return {t: float(t) for t in THRESHOLDS}, "uncalibrated"


def _valid(thresholds) -> bool:
    return isinstance(thresholds, dict) and all(isinstance(thresholds.get(t), (int, float)) for t in THRESHOLDS)


OPENAPI = {  # the request and response of /v1/pain/score in /docs
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary", "description": "the face (or a photo, with crop_face)"},
                        "reference": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "neutral image(s) of the same person; several are averaged"},
                        "crop_face": {"type": "boolean", "default": False, "description": "detect and crop the largest face first"},
                        "model_id": {"type": "string", "description": "best, ensemble or fold<k> (see /v1/pain/models)"},
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "byte", "description": "base64 image bytes"},
                        "reference": {"oneOf": [{"type": "string", "format": "byte"}, {"type": "array", "items": {"type": "string", "format": "byte"}}]},
                        "crop_face": {"type": "boolean", "default": False},
                        "model_id": {"type": "string"},
                    },
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "responses": {
        "200": {
            "description": "scores",
            "content": {
                "application/json": {
                    "example": {
                        "model_id": "ensemble", "pspi": 2.4,
                        "aus": {"AU4": 1.1, "AU6": 0.8, "AU7": 0.9, "AU9": 0.2, "AU10": 0.3, "AU43": 0.1},
                        "pain": {"1": {"probability": 0.81, "decision": True, "threshold": 0.9},
                                 "2": {"probability": 0.55, "decision": True, "threshold": 1.8},
                                 "3": {"probability": 0.31, "decision": False, "threshold": 2.7}},
                        "reference": "given", "n_references": 2, "thresholds_source": "cv_metrics",
                        "members": 5, "pspi_std": 0.35,
                    }  # fmt: skip
                }
            },
        },
        "422": {"description": "not an image, truncated image, wrong field names, or no face found"},
        "501": {"description": "crop_face asked for, but this server has no face detector"},
    },
}


class PainPredictor:
    """The pain workload's predictor for ``affectlab.serving.layer``."""

    workload = "pain"
    route = "score"
    raw_field, raw_media = "image", ("image/",)
    openapi = OPENAPI
    description = "Pain (PSPI 0–16), AU intensities and pain decisions from a face and neutral references of the same person."

    def __init__(self, face_cascade: str | None = None):
        self.face_cascade = face_cascade
        self._detector: FaceDetector | None = None  # built on first use, where decoding runs

    # -- model replicas --------------------------------------------------------------------
    def load(self, entry: ModelEntry) -> PainModel:
        nets, _, device = load_members(entry, build_model, agree_on=("image_size", "use_reference"))
        found = [member_thresholds(m) for m in entry.members]
        thresholds = {t: float(np.mean([f[0][t] for f in found])) for t in THRESHOLDS}
        sources = sorted({f[1] for f in found})
        return PainModel(entry.model_id, nets, thresholds, "+".join(sources), device, entry.is_ensemble)

    def predict_batch(self, model: PainModel, inputs: list[PainInput]) -> list[PainOutput]:
        """Inputs are grouped by how many references they carry (multi-shot needs equal N)."""
        import torch

        outputs: list[PainOutput | None] = [None] * len(inputs)
        groups: dict[int, list[int]] = {}
        for i, x in enumerate(inputs):
            groups.setdefault(0 if x.references is None else len(x.references), []).append(i)
        with torch.inference_mode():
            for n_refs, rows in groups.items():
                image = torch.from_numpy(np.stack([inputs[i].image for i in rows])).to(model.device)
                refs = torch.from_numpy(np.stack([inputs[i].references for i in rows])).to(model.device) if n_refs else None
                image, reference = model_inputs(image, refs)  # as in training and evaluation
                results = [net(image, reference) for net in model.nets]
                pspi = torch.stack([r["pspi"] for r in results]).float().cpu().numpy() * PSPI_MAX  # [M, B]
                aus = torch.stack([r["aus"] for r in results]).float().cpu().numpy()  # [M, B, 6]
                prob = torch.stack([torch.sigmoid(r["binary_logits"]) for r in results]).float().cpu().numpy()
                for j, i in enumerate(rows):
                    x = inputs[i]
                    given = 0 if x.references is None or x.reference == "self" else len(x.references)
                    outputs[i] = PainOutput(
                        model.model_id, pspi[:, j], aus[:, j], prob[:, j], model.thresholds, model.thresholds_source,
                        x.reference, given, model.ensemble,
                    )  # fmt: skip
        return outputs

    def encode(self, out: PainOutput) -> dict:
        pspi = float(out.pspi.mean())
        aus = out.aus.mean(0)
        prob = out.probability.mean(0)
        response = {
            "model_id": out.model_id,
            "pspi": pspi,
            "aus": {name: float(v) for name, v in zip(AU_NAMES, aus)},
            "pain": {
                t: {"probability": float(prob[k]), "decision": bool(pspi >= out.thresholds[t]), "threshold": out.thresholds[t]}
                for k, t in enumerate(THRESHOLDS)
            },
            "reference": out.reference,
            "n_references": out.n_references,
            "thresholds_source": out.thresholds_source,
        }
        if out.ensemble:
            response["members"] = len(out.pspi)
            response["pspi_std"] = float(out.pspi.std())
            response["aus_std"] = {name: float(v) for name, v in zip(AU_NAMES, out.aus.std(0))}
        return response

    # -- ingress ---------------------------------------------------------------------------
    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(self.face_cascade)
        return self._detector

    def __getstate__(self):  # OpenCV's classifier does not pickle; each process builds its own
        return {**self.__dict__, "_detector": None}

    def decode(self, payload: Payload, entry: ModelEntry) -> PainInput:
        payload.expect(required=("image",), optional=("reference", "crop_face"))
        crop = payload.flag("crop_face")
        if crop and not self.detector.available:
            raise BadInput(501, f"crop_face is not available on this server: {self.detector.unavailable_reason}")
        blobs = payload.files("reference")
        if len(blobs) > MAX_REFERENCES:
            raise BadInput(422, f"at most {MAX_REFERENCES} reference images, got {len(blobs)}")
        size = int(entry.config.get("image_size", 224))
        image = self._face(decode_image(payload.file("image"), "image"), "image", crop, size)
        refs = [self._face(decode_image(b, f"reference[{i}]"), f"reference[{i}]", crop, size) for i, b in enumerate(blobs)]
        if not entry.config.get("use_reference", True):
            return PainInput(image, None, "unused" if refs else "none")
        if not refs:
            return PainInput(image, image[None], "self")
        return PainInput(image, np.stack(refs), "given")

    def _face(self, rgb: np.ndarray, field: str, crop: bool, size: int) -> np.ndarray:
        if crop:
            box = self.detector.largest_face(rgb)
            if box is None:
                raise BadInput(422, f"no face found in {field!r}; send a face crop, or a photo with a frontal face")
            rgb = crop_square(rgb, box)
        return to_chw(rgb, size)


def build(args: dict):
    """The Serve application builder: ``serve run affectlab.serving.pain:build checkpoint=DIR``.

    ``args``: ``checkpoint`` (required), ``face_cascade`` and every ``ServeOptions`` field.
    """
    args = dict(args)
    return build_app(PainPredictor(face_cascade=args.pop("face_cascade", None)), args)
