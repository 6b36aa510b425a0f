"""The infant application on the serving layer: two routes of one app (classify with the
ST-GCN, generate with the CVAE) over HTTP on 127.0.0.1, from a directory in the layout
``jobs/infant.py`` writes (stage checkpoints, ``models.json`` by the pipeline's own writer,
the tiny SMPL stand-in as the run's body model).

The checkpoints are the workload's tiny models at their seeded initialisation: training them
is the job's business (tests of the job), serving needs the files. The served numbers are
checked against the models run in this process."""

import base64
import io
from dataclasses import asdict
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from affectlab.body.models import smpl_layer
from affectlab.body.standin import write_tiny_smpl
from affectlab.data.infant import sample_frames
from affectlab.models.infant_inference import build_generator, build_recognizer, classify, generate_sequences
from affectlab.serving.infant import InfantClassifier, InfantGenerator, build, served_checkpoints
from affectlab.serving.layer import BadInput, Payload
from affectlab.serving.registry import ModelEntry, ModelRegistry
from affectlab.train.checkpoint import load_model, save_checkpoint
from affectlab.workloads.infant import InfantConfig
from affectlab.workloads.infant_pipeline import write_manifest

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["Supine", "Prone", "Sitting", "Standing", "All-fours"]
MAX_FRAMES, MAX_SAMPLES = 120, 8


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """recognizer/ and cvae/ checkpoints, the body model and models.json, as the job leaves them."""
    root = tmp_path_factory.mktemp("infant_serve")
    body = write_tiny_smpl(root / "body_model")
    torch.manual_seed(0)
    paths = {}
    for stage, build_net in (("recognizer", build_recognizer), ("cvae", build_generator)):
        cfg = asdict(InfantConfig(stage=stage, stgcn_preset="tiny", cvae_preset="tiny", body_model=str(body)))
        paths[stage] = save_checkpoint(root / stage, build_net(cfg).state_dict(), "infant", cfg, {})
    write_manifest(root, paths)
    return root


@pytest.fixture(scope="module")
def local(run_dir):
    """The served models, run in this process: (ST-GCN, CVAE, SMPL layer)."""
    stgcn, _, _ = load_model(run_dir / "recognizer", lambda c: (build_recognizer(c), c))
    cvae, _, _ = load_model(run_dir / "cvae", lambda c: (build_generator(c), c))
    return stgcn, cvae, smpl_layer(run_dir / "body_model")


@pytest.fixture(scope="module")
def infant_url(serve_url, run_dir):
    from ray import serve

    args = {"checkpoint": str(run_dir), "max_frames": str(MAX_FRAMES), "max_samples": str(MAX_SAMPLES), "max_upload_mb": "1",
            "num_cpus": "0.5"}  # fmt: skip
    serve.run(build(args), name="infant", route_prefix="/", blocking=False)
    yield serve_url
    serve.delete("infant")


def post(url, route, timeout=120, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/v1/infant/{route}", timeout=timeout, **kwargs)


def form(**fields) -> dict:
    """Text fields as multipart/form-data (what ``curl -F`` sends)."""
    return {"files": {k: (None, str(v)) for k, v in fields.items()}}


def poses(n_frames: int = 75, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.3, (n_frames, 24, 3)).astype(np.float32)


# -- classify -------------------------------------------------------------------------------------
def test_classify_npy_json_and_raw_give_the_recognisers_probabilities(infant_url, local):
    stgcn, _, _ = local
    pose = poses(75)
    r = post(infant_url, "classify", files={"pose": ("clip.npy", npy(pose), "application/octet-stream")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["classes"] == CLASSES and (body["frames"], body["frames_used"], body["input"]) == (75, 60, "pose")
    probs = np.array([body["probabilities"][c] for c in CLASSES])
    expected = classify(stgcn, sample_frames(pose, 60)[None]).numpy()[0]  # the centred 60-frame window, as evaluated
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert probs.sum() == pytest.approx(1.0, abs=1e-4) and body["label"] == CLASSES[int(expected.argmax())]

    same = [
        post(infant_url, "classify", json={"pose": pose.tolist()}),  # nested lists
        post(infant_url, "classify", json={"pose": base64.b64encode(npy(pose.reshape(1, 75, 72))).decode()}),  # (M, T, 72)
        post(infant_url, "classify", content=npy(pose), headers={"content-type": "application/octet-stream"}),  # raw body
    ]
    for r in same:
        assert r.status_code == 200, r.text
        np.testing.assert_allclose([r.json()["probabilities"][c] for c in CLASSES], probs, atol=2e-6)
    short = post(infant_url, "classify", files={"pose": ("s.npy", npy(pose[:20]))})  # padded by its last frame
    assert short.status_code == 200 and short.json()["frames"] == 20 and short.json()["frames_used"] == 60


# -- generate -------------------------------------------------------------------------------------
def test_generate_in_each_format_is_the_seeded_cvae(infant_url, local, tmp_path):
    _, cvae, body = local
    fields = {"class": "Sitting", "n_samples": "2", "frames": "20", "seed": "3"}
    expected = generate_sequences(cvae, [2], 2, 20, 3, body)

    r = post(infant_url, "generate", **form(**fields))  # npz by default
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == 'attachment; filename="infant_sitting_seed3.npz"'
    with np.load(io.BytesIO(r.content), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert arrays["pose"].shape == arrays["joints"].shape == (2, 20, 24, 3)
    np.testing.assert_array_equal(arrays["pose"], expected["pose"].numpy())
    np.testing.assert_allclose(arrays["joints"], expected["joints"].numpy(), atol=1e-6)
    assert arrays["y"].tolist() == [2, 2] and arrays["classes"].tolist() == ["Sitting"]
    np.testing.assert_allclose(arrays["joints"][:, :, 0], 0, atol=1e-6)  # root-relative

    again = post(infant_url, "generate", **form(**fields))
    other = post(infant_url, "generate", **form(**{**fields, "seed": "4"}))
    assert again.content == r.content and other.status_code == 200 and other.content != r.content

    as_npy = post(infant_url, "generate", json={"class": 2, "n_samples": 2, "frames": 20, "seed": 3, "format": "npy"})
    assert as_npy.status_code == 200, as_npy.text
    np.testing.assert_array_equal(np.load(io.BytesIO(as_npy.content), allow_pickle=False), arrays["pose"])
    as_json = post(infant_url, "generate", json={**fields, "format": "json"}).json()
    assert (as_json["class"], as_json["class_index"], as_json["n_samples"], as_json["frames"]) == ("Sitting", 2, 2, 20)
    np.testing.assert_allclose(np.array(as_json["pose"]), arrays["pose"], atol=1e-6)
    np.testing.assert_allclose(np.array(as_json["joints"]), arrays["joints"], atol=1e-6)

    gif = post(infant_url, "generate", **form(**{**fields, "format": "gif"}))
    assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif", gif.text
    with Image.open(io.BytesIO(gif.content)) as image:
        assert image.n_frames == 20
    mp4 = post(infant_url, "generate", **form(**{**fields, "format": "mp4"}))
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4", mp4.text
    (tmp_path / "a.mp4").write_bytes(mp4.content)
    capture = cv2.VideoCapture(str(tmp_path / "a.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 20 and capture.read()[0]
    capture.release()


# -- errors ---------------------------------------------------------------------------------------
def test_malformed_requests_get_4xx_naming_the_field_and_the_server_keeps_answering(infant_url):
    pose = poses(40)
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"pose": 1}], dtype=object), allow_pickle=True)
    nan = pose.copy()
    nan[3, 5, 1] = np.nan
    classify_cases = {
        "wrong joint count": (dict(files={"pose": ("p.npy", npy(pose[:, :23]))}), 422, "field 'pose': pose has shape (40, 23, 3)"),
        "NaN": (dict(files={"pose": ("p.npy", npy(nan))}), 422, "field 'pose': pose holds 1 NaN/inf values"),
        "NaN in JSON": (dict(content='{"pose": [' + ",".join(["[NaN, 0, 0]"] * 24) + "]}", headers={"content-type": "application/json"}),
                        422, "field 'pose': pose holds 24 NaN/inf values"),  # Python's JSON reads NaN
        "too many frames": (dict(files={"pose": ("p.npy", npy(poses(MAX_FRAMES + 30)))}), 422, "150 frames, more than the limit of 120"),
        "not numbers": (dict(json={"pose": [["a", "b", "c"]]}), 422, "field 'pose' is not a rectangular array"),
        "ragged": (dict(json={"pose": [[[0, 0, 0]] * 24, [[0, 0]] * 24]}), 422, "field 'pose' is not a rectangular array"),
        "pickled npy": (dict(files={"pose": ("p.npy", pickled.getvalue())}), 422, "field 'pose': .npy of dtype |O refused"),
        "truncated npy": (dict(files={"pose": ("p.npy", npy(pose)[:-100])}), 422, "truncated"),
        "not an npy": (dict(files={"pose": ("p.npy", b"hello world, not an array")}), 422, "field 'pose' is not an .npy file"),
        "keypoints to a pose model": (dict(json={"keypoint": np.zeros((1, 40, 17, 3)).tolist()}), 422, "field 'keypoint'"),
        "both": (dict(files={"pose": ("p.npy", npy(pose)), "keypoint": ("k.npy", npy(pose[:, :17]))}), 422, "exactly one"),
        "neither": (dict(json={"model_id": "best"}), 422, "exactly one"),
        "unknown field": (dict(files={"pose": ("p.npy", npy(pose)), "betas": ("b.npy", npy(pose))}), 422, "unknown field"),
        "too large": (dict(content=b"\x00" * 1_100_000, headers={"content-type": "application/octet-stream"}), 413, "upload limit"),
    }
    generate_cases = {
        "unknown class": (form(**{"class": "Crawling"}), 422, "field 'class'"),
        "class index": (dict(json={"class": 5}), 422, "field 'class'"),
        "no class": (form(**{"n_samples": "2"}), 422, "missing field(s) ['class']"),
        "n_samples over": (form(**{"class": "Prone", "n_samples": str(MAX_SAMPLES + 1)}), 422, "field 'n_samples' must be in 1..8"),
        "n_samples 0": (form(**{"class": "Prone", "n_samples": "0"}), 422, "field 'n_samples'"),
        "animated samples": (form(**{"class": "Prone", "n_samples": "5", "format": "gif"}), 422, "field 'n_samples' must be in 1..4"),
        "too many frames": (form(**{"class": "Prone", "frames": str(MAX_FRAMES + 1)}), 422, "field 'frames' must be in 1..120"),
        "frames 0": (form(**{"class": "Prone", "frames": "0"}), 422, "field 'frames'"),
        "seed": (form(**{"class": "Prone", "seed": "-2"}), 422, "field 'seed'"),
        "format": (form(**{"class": "Prone", "format": "bmp"}), 422, "field 'format'"),
        "unknown model": (dict(**form(**{"class": "Prone"}), params={"model_id": "fold1"}), 404, "unknown model id"),
    }
    for route, cases in (("classify", classify_cases), ("generate", generate_cases)):
        for name, (kwargs, status, message) in cases.items():
            r = post(infant_url, route, **kwargs)
            assert r.status_code == status, (route, name, r.status_code, r.text)
            assert message in r.json()["detail"], (route, name, r.json())
            assert "/tmp" not in r.json()["detail"], (route, name, r.json())
            assert httpx.get(f"{infant_url}/healthz", timeout=10).json()["status"] == "ok"
    assert post(infant_url, "classify", files={"pose": ("p.npy", npy(pose))}).status_code == 200
    assert post(infant_url, "generate", **form(**{"class": "Prone", "frames": "8", "format": "npy"})).status_code == 200


def test_models_health_and_docs_per_route(infant_url):
    models = httpx.get(f"{infant_url}/v1/infant/models", timeout=10).json()
    assert models == {"classify": {"default": "best", "models": {"best": 1}}, "generate": {"default": "best", "models": {"best": 1}}}
    health = httpx.get(f"{infant_url}/healthz", timeout=10).json()
    assert health["workload"] == "infant" and health["default_model"] == {"classify": "best", "generate": "best"}
    stats = httpx.get(f"{infant_url}/v1/infant/stats", timeout=10).json()
    assert set(stats) == {"classify", "generate"} and stats["classify"]["requests"] >= 1
    paths = httpx.get(f"{infant_url}/openapi.json", timeout=10).json()["paths"]
    assert "pose" in str(paths["/v1/infant/classify"]["post"]["requestBody"])
    assert "class" in str(paths["/v1/infant/generate"]["post"]["requestBody"])
    assert {"409", "413", "422"} <= set(paths["/v1/infant/generate"]["post"]["responses"])


# -- no Serve -------------------------------------------------------------------------------------
def test_keypoint_models_take_mmaction2_arrays(run_dir):
    config = {**asdict(InfantConfig(stage="recognizer", pose_rep="xyz", stgcn_preset="tiny")), "stage": "recognizer"}
    entry = ModelEntry("best", run_dir, (), config)
    keypoints = np.random.default_rng(1).normal(size=(1, 70, 17, 3)).astype(np.float32)  # M×T×V×C, one person
    x = InfantClassifier(str(run_dir), MAX_FRAMES).decode(Payload({"keypoint": [npy(keypoints)]}, "multipart"), entry)
    assert x.poses.shape == (60, 17, 3) and x.n_frames == 70
    np.testing.assert_array_equal(x.poses, keypoints[0, 5:65])  # the centred window
    for bad, message in ((keypoints[..., :2], "expected Human3.6M-17 3D joints"), (poses(30), "classifies keypoint sequences")):
        name = "pose" if bad.shape[-2] == 24 else "keypoint"
        with pytest.raises(BadInput, match=message) as caught:
            InfantClassifier(str(run_dir), MAX_FRAMES).decode(Payload({name: [npy(bad)]}, "multipart"), entry)
        assert caught.value.status == 422 and f"field '{name}'" in caught.value.message


def test_animations_without_a_body_model_are_a_409(run_dir):
    entry = ModelRegistry(run_dir / "cvae", "infant").get(None)
    generator = InfantGenerator(str(run_dir / "cvae"), None)
    with pytest.raises(BadInput) as caught:
        generator.decode(Payload({"class": ["Prone"], "format": ["mp4"]}, "multipart"), entry)
    assert caught.value.status == 409 and "field 'format'" in caught.value.message and "body_model=PATH" in caught.value.message
    assert generator.decode(Payload({"class": ["Prone"]}, "multipart"), entry).format == "npz"  # poses only, no 409


def test_served_directories_and_refused_arguments(run_dir, tmp_path):
    assert served_checkpoints(run_dir) == (run_dir / "recognizer", run_dir / "cvae", str(run_dir / "body_model"))
    assert served_checkpoints(run_dir / "recognizer") == (run_dir / "recognizer", None, None)  # one route only
    assert served_checkpoints(run_dir / "cvae") == (None, run_dir / "cvae", str(run_dir / "body_model"))
    with pytest.raises(ValueError, match="body_model=.*not a usable SMPL/SMIL model"):
        build({"checkpoint": str(run_dir), "body_model": str(tmp_path)})
    with pytest.raises(ValueError, match="max_frames"):
        build({"checkpoint": str(run_dir), "max_frames": "0"})


def test_serve_config_file_is_valid():
    import importlib

    import yaml
    from ray.serve.schema import ServeDeploySchema

    (app,) = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve" / "infant.yaml").read_text())).applications
    module, _, attr = app.import_path.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert {d.name for d in app.deployments} == {"InfantIngress", "InfantClassifyModel", "InfantGenerateModel"}
    assert app.args["checkpoint"] == "runs/infant"
