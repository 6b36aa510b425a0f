"""The serving layer and the pain application, over HTTP on 127.0.0.1.

Checkpoints are built directly (tiny random-init ViTPain models, no training) and laid
out as a CV output: ``fold_0``, ``fold_1`` and ``metrics.json`` with fold thresholds. The
two folds' PSPI heads are given different biases so that their predictions, and so the
ensemble's mean and spread, are far apart.
"""

import base64
import json
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from affectlab.data.synthetic_faces import FaceIdentity, draw_face
from affectlab.constants.pain import PSPI_MAX
from affectlab.serving.layer import BadInput, Payload, ServeOptions
from affectlab.serving.pain import PainPredictor, build_model, member_thresholds
from affectlab.serving.registry import ModelRegistry, UnknownModel
from affectlab.train.checkpoint import CheckpointError, load_model, save_checkpoint, write_json
from affectlab.train.config import config_to_dict
from affectlab.workloads.pain import PainConfig, PainWorkload

FOLD_THRESHOLDS = [{"1": 0.5, "2": 1.5, "3": 2.5}, {"1": 1.0, "2": 2.0, "3": 3.0}]
TOKEN = "test-token-7f3a"


# -- checkpoints and images ------------------------------------------------------------------
def tiny_checkpoint(path: Path, seed: int, pspi_bias: float = 0.0, **overrides) -> Path:
    cfg = PainConfig(backbone="tiny", image_size=48, pretrained=False, finetune="full", fusion_heads=4, dropout=0.1, **overrides)
    torch.manual_seed(seed)
    model = PainWorkload().build_model(cfg, pretrained=False)
    with torch.no_grad():
        model.pspi_head[-1].bias.fill_(pspi_bias)  # moves this model's PSPI away from 8
    return save_checkpoint(path, model.state_dict(), "pain", config_to_dict(cfg), {"val_pearson": 0.0})


def png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def face_png(aus=(2, 1, 1, 0, 1, 0), seed=0, size=96) -> bytes:
    rng = np.random.default_rng(seed)
    return png(draw_face(np.asarray(aus, float), FaceIdentity.random(rng), size, rng))


def photo_with_face(seed=0) -> np.ndarray:
    """A 'raw photo': a synthetic face placed off-centre on a larger, textured canvas."""
    rng = np.random.default_rng(seed)
    canvas = rng.integers(90, 140, (300, 420, 3), dtype=np.uint8)
    canvas[60:220, 200:360] = draw_face(np.zeros(6), FaceIdentity.random(rng), 160, rng)
    return canvas


@pytest.fixture(scope="module")
def cv_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cv")
    for k, bias in enumerate((-1.5, 1.5)):
        tiny_checkpoint(root / f"fold_{k}", seed=k, pspi_bias=bias)
    write_json(root / "metrics.json", {"folds": [{"fold": k, "thresholds": t} for k, t in enumerate(FOLD_THRESHOLDS)]})
    return root


@pytest.fixture(scope="module")
def single_dir(tmp_path_factory) -> Path:
    """One checkpoint with train predictions, so its thresholds are calibrated from them."""
    path = tiny_checkpoint(tmp_path_factory.mktemp("single") / "ckpt", seed=3)
    target = np.array([0, 0, 0, 1, 2, 3, 4, 5], np.float32)
    np.savez(path / "predictions.npz", **{"train_eval/pred": target * 0.5, "train_eval/target": target})
    return path


# -- no Serve needed: ids, thresholds, decoding, no pickles -------------------------------------
def test_registry_ids_and_validation(cv_dir, single_dir, tmp_path):
    cv = ModelRegistry(cv_dir, "pain")
    assert cv.ids() == ["fold0", "fold1", "ensemble"] and cv.default_id == "ensemble"
    assert [m.fold for m in cv.get("ensemble").members] == [0, 1]
    assert cv.get(None).model_id == "ensemble"
    for bad in ["fold7", "best", "../fold_0", "fold_0", "fold0/../../etc", "/etc/passwd", "ensemble\n", "x" * 500]:
        with pytest.raises(UnknownModel):
            cv.get(bad)

    single = ModelRegistry(single_dir, "pain")
    assert single.ids() == ["best"] and single.default_id == "best"

    sweep = tmp_path / "sweep"
    tiny_checkpoint(sweep / "best_checkpoint", seed=4)
    assert ModelRegistry(sweep, "pain").ids() == ["best"]
    for k in (0, 1):  # a sweep over CV folds keeps every fold under best_checkpoint/
        tiny_checkpoint(sweep / "best_checkpoint" / f"fold_{k}", seed=k)
    for root in (sweep, sweep / "best_checkpoint"):
        cv_sweep = ModelRegistry(root, "pain")
        assert cv_sweep.ids() == ["best", "fold0", "fold1", "ensemble"] and cv_sweep.default_id == "best"

    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="nothing to serve"):
        ModelRegistry(tmp_path / "empty", "pain")
    with pytest.raises(CheckpointError, match="'pain' checkpoint"):
        ModelRegistry(single_dir, "mouse")


def test_ensemble_members_must_agree_on_inputs(tmp_path):
    tiny_checkpoint(tmp_path / "fold_0", seed=0)
    tiny_checkpoint(tmp_path / "fold_1", seed=1, use_reference=False)
    registry = ModelRegistry(tmp_path, "pain")
    with pytest.raises(CheckpointError, match="use_reference"):
        PainPredictor().load(registry.get("ensemble"))
    assert len(PainPredictor().load(registry.get("fold1")).nets) == 1  # each fold alone is servable


def test_thresholds_come_from_training(cv_dir, single_dir, tmp_path):
    cv = ModelRegistry(cv_dir, "pain")
    assert member_thresholds(cv.get("fold1").members[0]) == (FOLD_THRESHOLDS[1], "cv_metrics")
    single = ModelRegistry(single_dir, "pain").get("best")
    thresholds, source = member_thresholds(single.members[0])
    assert source == "train_predictions" and thresholds["1"] < 1.0  # shrunk predictions → lower cut-off
    bare = tiny_checkpoint(tmp_path / "bare", seed=5)
    assert member_thresholds(ModelRegistry(bare, "pain").get("best").members[0]) == (
        {"1": 1.0, "2": 2.0, "3": 3.0},
        "uncalibrated",
    )
    model = PainPredictor().load(cv.get("ensemble"))
    assert model.thresholds == {t: (FOLD_THRESHOLDS[0][t] + FOLD_THRESHOLDS[1][t]) / 2 for t in "123"}


def test_checkpoints_are_never_unpickled(cv_dir, tmp_path):
    """A pickle posing as model.safetensors is refused without running its payload."""
    import shutil

    bad = tmp_path / "evil"
    shutil.copytree(cv_dir / "fold_0", bad)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (bad / "model.safetensors").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError, match="safetensors"):
        PainPredictor().load(ModelRegistry(bad, "pain").get("best"))
    assert not marker.exists()


def test_decode_errors_name_the_field(cv_dir):
    entry = ModelRegistry(cv_dir, "pain").get("fold0")
    p = PainPredictor()
    good = face_png()
    cases = [
        ({"img": [good]}, 422, "unknown field"),
        ({}, 422, "missing field"),
        ({"image": [b"not an image"]}, 422, "not an image"),
        ({"image": [good[: len(good) // 2]]}, 422, "truncated"),
        ({"image": [good], "reference": [b"GIF89a..."]}, 422, "reference"),
        ({"image": [good], "crop_face": ["maybe"]}, 422, "true or false"),
        ({"image": [good, good]}, 422, "exactly once"),
    ]
    for fields, status, words in cases:
        with pytest.raises(BadInput, match=words) as e:
            p.decode(Payload(fields, "multipart"), entry)
        assert e.value.status == status
    x = p.decode(Payload({"image": [good]}, "multipart"), entry)
    assert x.image.shape == (3, 48, 48) and x.reference == "self"


def test_serve_options_are_checked():
    assert ServeOptions.from_args({"checkpoint": "d", "max_batch_size": "4"}).max_batch_size == 4
    with pytest.raises(ValueError, match="unknown serving argument"):
        ServeOptions.from_args({"checkpoint": "d", "batchsize": "4"})
    with pytest.raises(ValueError, match="checkpoint=DIR"):
        ServeOptions.from_args({})


def test_face_crop_function():
    """The Haar cascade finds the synthetic face in a photo (needs OpenCV's cascade files)."""
    from affectlab.serving.faces import FaceDetector, crop_square

    detector = FaceDetector()
    if not detector.available:
        pytest.skip(f"no face detector in this OpenCV: {detector.unavailable_reason}")
    photo = photo_with_face()
    x, y, w, h = detector.largest_face(photo)
    assert 170 <= x + w / 2 <= 390 and 30 <= y + h / 2 <= 250  # inside the placed face
    crop = crop_square(photo, (x, y, w, h))
    assert crop.shape[0] == crop.shape[1] and crop.shape[0] > w
    assert detector.largest_face(np.full((300, 420, 3), 120, np.uint8)) is None


# -- over HTTP (serve_url: conftest) ----------------------------------------------------------
@pytest.fixture(scope="module")
def cv_url(serve_url, cv_dir):
    """The CV output, open, with a 1 MB upload limit; batches of up to 8."""
    from ray import serve

    from affectlab.serving.pain import build

    args = {"checkpoint": str(cv_dir), "max_upload_mb": "1", "max_batch_size": "8", "batch_wait_timeout_s": "0.05", "num_cpus": "0.5"}
    old = os.environ.pop("AFFECTLAB_API_TOKEN", None)
    try:
        serve.run(build(args), name="pain_cv", route_prefix="/", blocking=False)
    finally:
        if old is not None:
            os.environ["AFFECTLAB_API_TOKEN"] = old
    yield serve_url
    serve.delete("pain_cv")


@pytest.fixture(scope="module")
def secure_url(serve_url, single_dir, tmp_path_factory):
    """One checkpoint behind a bearer token, which the ingress reads from a file at replica start."""
    from ray import serve

    from affectlab.serving.pain import build

    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN)
    app = build({"checkpoint": str(single_dir), "num_cpus": "0.25", "token_file": str(token_file)})
    serve.run(app, name="pain_secure", route_prefix="/secure", blocking=False)
    yield f"{serve_url}/secure"
    serve.delete("pain_secure")


def score(url, timeout=60, **kwargs):
    import httpx

    return httpx.post(f"{url}/v1/pain/score", timeout=timeout, **kwargs)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def check_schema(body: dict):
    assert isinstance(body["pspi"], float) and 0 <= body["pspi"] <= PSPI_MAX
    assert set(body["aus"]) == {"AU4", "AU6", "AU7", "AU9", "AU10", "AU43"}
    assert set(body["pain"]) == {"1", "2", "3"}
    for t, p in body["pain"].items():
        assert 0 <= p["probability"] <= 1 and isinstance(p["decision"], bool)
        assert p["decision"] == (body["pspi"] >= p["threshold"])
    assert isinstance(body["model_id"], str)


def test_score_multipart_single_image(cv_url):
    r = score(cv_url, files={"image": ("face.png", face_png(), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    check_schema(body)
    assert body["model_id"] == "ensemble" and body["reference"] == "self" and body["members"] == 2
    assert body["pspi_std"] > 0.1  # the two folds disagree by construction


def test_score_json_with_references_is_multishot(cv_url, cv_dir):
    """Three references over JSON give what the model gives in-process for the 3-shot input."""
    face, refs = face_png(seed=1), [face_png((0,) * 6, seed=1), face_png((0,) * 6, seed=1), face_png((0.5,) * 6, seed=1)]
    r = score(cv_url, json={"image": b64(face), "reference": [b64(x) for x in refs], "model_id": "fold0"})
    assert r.status_code == 200, r.text
    body = r.json()
    check_schema(body)
    assert body["model_id"] == "fold0" and body["reference"] == "given" and body["n_references"] == 3
    assert "pspi_std" not in body and body["thresholds_source"] == "cv_metrics"
    assert body["pain"]["1"]["threshold"] == FOLD_THRESHOLDS[0]["1"]

    predictor, entry = PainPredictor(), ModelRegistry(cv_dir, "pain").get("fold0")
    x = predictor.decode(Payload({"image": [face], "reference": refs}, "multipart"), entry)
    net, _, _ = load_model(cv_dir / "fold_0", build_model)
    with torch.no_grad():
        out = net(torch.from_numpy(x.image[None]).float() / 255, torch.from_numpy(x.references[None]).float() / 255)
    assert body["pspi"] == pytest.approx(float(out["pspi"][0]) * PSPI_MAX, abs=1e-4)

    single = score(cv_url, json={"image": b64(face), "reference": b64(refs[0]), "model_id": "fold0"}).json()
    assert single["n_references"] == 1 and single["pspi"] != body["pspi"]


def test_ensemble_is_the_mean_of_its_folds(cv_url):
    files = {"image": ("face.png", face_png(seed=2), "image/png"), "reference": ("ref.png", face_png((0,) * 6, seed=2), "image/png")}
    got = {m: score(cv_url, files=files, params={"model_id": m}).json() for m in ("fold0", "fold1", "ensemble")}
    folds = np.array([got["fold0"]["pspi"], got["fold1"]["pspi"]])
    assert abs(folds[0] - folds[1]) > 1.0
    assert got["ensemble"]["pspi"] == pytest.approx(folds.mean(), abs=1e-4)
    assert got["ensemble"]["pspi_std"] == pytest.approx(folds.std(), abs=1e-4)
    for au in got["ensemble"]["aus"]:
        assert got["ensemble"]["aus"][au] == pytest.approx((got["fold0"]["aus"][au] + got["fold1"]["aus"][au]) / 2, abs=1e-4)
    p1 = got["ensemble"]["pain"]["1"]["probability"]
    assert p1 == pytest.approx((got["fold0"]["pain"]["1"]["probability"] + got["fold1"]["pain"]["1"]["probability"]) / 2, abs=1e-5)


def test_model_ids_are_validated(cv_url):
    import httpx

    listed = httpx.get(f"{cv_url}/v1/pain/models", timeout=30).json()
    assert listed == {"default": "ensemble", "models": {"fold0": 1, "fold1": 1, "ensemble": 2}}
    files = {"image": ("face.png", face_png(), "image/png")}
    for bad in ["fold7", "best", "../fold_0", "..%2F..%2Fetc%2Fpasswd", "fold0/../../x"]:
        r = score(cv_url, files=files, params={"model_id": bad})
        assert r.status_code == 404 and "model id" in r.json()["detail"], (bad, r.text)
    r = score(cv_url, json={"image": b64(face_png()), "model_id": "../../etc"})
    assert r.status_code == 404


MALFORMED = {
    "not an image": (dict(files={"image": ("x.png", b"hello, not a png", "image/png")}), 422, "not an image"),
    "truncated image": (dict(files={"image": ("x.png", face_png()[:300], "image/png")}), 422, "truncated"),
    "empty body": (dict(content=b"", headers={"content-type": "application/json"}), 400, "empty"),
    "oversized upload": (dict(files={"image": ("big.png", b"\x89PNG" + os.urandom(1_100_000), "image/png")}), 413, "limit"),
    "oversized chunked upload": (dict(content=iter([b"\x89PNG" + bytes(600_000)] * 2), headers={"content-type": "image/png"}), 413, "limit"),
    "wrong field name": (dict(files={"img": ("x.png", face_png(), "image/png")}), 422, "unknown field"),
    "wrong JSON field": (dict(json={"picture": "aGVsbG8="}), 422, "unknown field"),
    "bad base64": (dict(json={"image": "***not base64***"}), 422, "base64"),
    "invalid JSON": (dict(content=b"{image:", headers={"content-type": "application/json"}), 400, "JSON"),
    "JSON not an object": (dict(json=["a", "b"]), 422, "object"),
    "unsupported type": (dict(content=b"image=abc", headers={"content-type": "text/plain"}), 415, "content type"),
    "text instead of file": (dict(data={"image": "abc"}, files={"reference": ("r.png", face_png(), "image/png")}), 422, "file upload"),
    "too many references": (dict(json={"image": b64(face_png()), "reference": [b64(face_png())] * 9}), 422, "at most"),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_requests_get_4xx_and_the_server_keeps_answering(cv_url, kind):
    kwargs, status, words = MALFORMED[kind]
    r = score(cv_url, **kwargs)
    assert r.status_code == status, (kind, r.status_code, r.text)
    assert words.lower() in r.json()["detail"].lower()
    ok = score(cv_url, content=face_png(), headers={"content-type": "image/png"})  # raw body works too
    assert ok.status_code == 200, ok.text


def test_face_crop_over_http(cv_url):
    from affectlab.serving.faces import FaceDetector

    photo = png(photo_with_face())
    r = score(cv_url, files={"image": ("photo.png", photo, "image/png")}, data={"crop_face": "true"})
    if not FaceDetector().available:  # OpenCV 5: no cascade; the API says so instead of guessing
        assert r.status_code == 501 and "opencv" in r.json()["detail"].lower()
        pytest.skip("no face detector in this OpenCV; the 501 answer was checked")
    assert r.status_code == 200, r.text
    check_schema(r.json())
    blank = png(np.full((300, 420, 3), 120, np.uint8))
    r = score(cv_url, files={"image": ("wall.png", blank, "image/png")}, data={"crop_face": "true"})
    assert r.status_code == 422 and "no face" in r.json()["detail"]


def test_healthz_and_docs(cv_url):
    import httpx

    assert httpx.get(f"{cv_url}/healthz", timeout=30).json()["status"] == "ok"
    assert "swagger" in httpx.get(f"{cv_url}/docs", timeout=30).text.lower()
    spec = httpx.get(f"{cv_url}/openapi.json", timeout=30).json()
    score_op = spec["paths"]["/v1/pain/score"]["post"]
    assert {"multipart/form-data", "application/json"} <= set(score_op["requestBody"]["content"])


def test_bearer_token(secure_url):
    import httpx

    files = {"image": ("face.png", face_png(), "image/png")}
    assert score(secure_url, files=files).status_code == 401
    assert score(secure_url, files=files, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{secure_url}/v1/pain/stats", timeout=30).status_code == 401
    r = score(secure_url, files=files, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    body = r.json()
    check_schema(body)
    assert body["model_id"] == "best" and body["thresholds_source"] == "train_predictions"
    assert httpx.get(f"{secure_url}/healthz", timeout=30).status_code == 200  # probes need no token


def test_concurrent_burst_is_batched(cv_url):
    import httpx

    before = httpx.get(f"{cv_url}/v1/pain/stats", timeout=30).json()["batches"]
    images = [face_png(seed=s) for s in range(48)]

    def one(data: bytes):
        return score(cv_url, files={"image": ("f.png", data, "image/png")}, params={"model_id": "fold1"}, timeout=120)

    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(one, images))
    assert [r.status_code for r in responses] == [200] * len(images)
    assert all(r.json()["model_id"] == "fold1" for r in responses)
    after = httpx.get(f"{cv_url}/v1/pain/stats", timeout=30).json()
    new = {int(k): v - before.get(k, 0) for k, v in after["batches"].items() if v - before.get(k, 0) > 0}
    print("batch sizes during the burst (size: count):", json.dumps(new))
    assert sum(k * v for k, v in new.items()) == len(images)
    assert max(new) > 1 and max(new) <= 8
