"""The ProbTalk3D application on the serving layer: WAVs over HTTP on 127.0.0.1 to a
stage-2 checkpoint in the layout ``jobs/probtalk3d.py`` writes as ``OUTPUT/pred``.

The checkpoint is built by the workload's own builders and writers (prior → predictor over
the frozen prior loaded by path, ``generation.json``, the FLAME stand-in in ``pred/flame``),
its weights left at their seeded initialisation: training it is the job's business (its
minutes are spent in tests/test_probtalk3d_job.py), serving needs the files and their layout.
The served numbers are checked against the workload's generation run in this process."""

import base64
import io
import subprocess
from pathlib import Path

import cv2
import httpx
import imageio_ffmpeg
import numpy as np
import pytest
import soundfile as sf
import torch

from affectlab.body.standin import write_tiny_flame
from affectlab.data.audio import read_wav
from affectlab.data.mead import params_from_motion, unscale_motion
from affectlab.models.probtalk3d_generate import generate_samples, style_indices
from affectlab.serving.layer import BadInput, Payload
from affectlab.serving.probtalk3d import ProbTalk3DAnimator, build, resolve_flame
from affectlab.serving.registry import ModelRegistry
from affectlab.train.checkpoint import save_checkpoint, write_json
from affectlab.train.config import config_to_dict
from affectlab.workloads.probtalk3d import GENERATION_FILE, ProbTalk3DConfig, ProbTalk3DWorkload, generation_info, load_predictor

ROOT = Path(__file__).resolve().parents[1]
VOCAB = {"identities": ["M003", "M005"], "emotions": ["neutral", "happy", "angry"], "intensities": ["level_1", "level_2", "level_3"]}
MAX_SECONDS, MAX_SAMPLES = 3.0, 4


def speech_wav(seconds: float, sr: int = 16000, channels: int = 1, seed: int = 0) -> bytes:
    """Speech-like audio (voiced bursts of a harmonic tone, with pauses) as 16-bit WAV bytes."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    voiced = (np.sin(2 * np.pi * 2.5 * t + rng.uniform(0, 6)) > -0.2).astype(np.float32)
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420), start=1))
    mono = (0.3 * voiced * tone + 0.01 * rng.normal(size=len(t))).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([mono] * channels, 1) if channels > 1 else mono, sr, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pred_dir(tmp_path_factory) -> Path:
    """``OUTPUT/pred`` as the synthetic job leaves it: checkpoint, generation.json, flame/."""
    root = tmp_path_factory.mktemp("p3d_serve")
    workload = ProbTalk3DWorkload()
    prior_cfg = ProbTalk3DConfig(preset="tiny", audio="logmel", stage="prior")
    torch.manual_seed(0)
    prior = workload.build_model(prior_cfg)
    save_checkpoint(root / "prior", prior.state_dict(), "probtalk3d", config_to_dict(prior_cfg), {})
    cfg = ProbTalk3DConfig(preset="tiny", audio="logmel", stage="pred", prior_checkpoint=str(root / "prior"), **VOCAB)
    net = workload.build_model(cfg)
    pred = save_checkpoint(root / "pred", net.state_dict(), "probtalk3d", config_to_dict(cfg), {})
    write_tiny_flame(pred / "flame")
    write_json(pred / GENERATION_FILE, generation_info(cfg, "flame"))
    return pred


@pytest.fixture(scope="module")
def generated(pred_dir):
    """The workload's generation for a request's settings, in this process: (K, T, 53) scaled."""
    model, _, _ = load_predictor(pred_dir)

    def generate(wav: bytes, style=("M003", "neutral", "level_1"), **kw) -> np.ndarray:
        settings = {"n_samples": 1, "temperature": 0.2, "sample": True, "seed": 0, **kw}
        return generate_samples(model, read_wav(wav), style_indices(*style), top_k=None, fact=20.0, **settings)

    return generate


@pytest.fixture(scope="module")
def p3d_url(serve_url, pred_dir):
    from ray import serve

    args = {"checkpoint": str(pred_dir), "max_upload_mb": "1", "max_samples": str(MAX_SAMPLES), "max_seconds": str(MAX_SECONDS),
            "num_cpus": "0.5"}  # fmt: skip
    serve.run(build(args), name="probtalk3d", route_prefix="/", blocking=False)
    yield serve_url
    serve.delete("probtalk3d")


def animate(url, timeout=180, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/v1/probtalk3d/animate", timeout=timeout, **kwargs)


def form(wav: bytes, **fields) -> dict:
    return {"files": {"audio": ("speech.wav", wav, "audio/wav")}, "data": {k: str(v) for k, v in fields.items()}}


# -- over HTTP -----------------------------------------------------------------------------------
def test_json_motion_is_the_workloads_generation_multipart_or_base64(p3d_url, generated):
    wav = speech_wav(1.2)
    r = animate(p3d_url, **form(wav, id="M005", emotion="happy", intensity=2, temperature=0.5, n_samples=3, seed=7))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["fps"], body["n_frames"], body["n_samples"], body["duration_s"]) == (25, 30, 3, 1.2)  # 1.2 s × 25 fps
    assert body["style"] == {"id": "M005", "emotion": "happy", "intensity": "level_2"} and body["model"] == "vqvae"
    assert (body["temperature"], body["seed"], body["sample"], body["model_id"]) == (0.5, 7, True, "best")
    motion = np.array(body["motion"])
    assert motion.shape == (3, 30, 53) and np.isfinite(motion).all()
    expected = unscale_motion(generated(wav, ("M005", "happy", "level_2"), n_samples=3, temperature=0.5, seed=7))
    np.testing.assert_allclose(motion, expected, atol=1e-6)  # raw FLAME units: expression[0:50] + jaw
    assert not np.allclose(motion[0], motion[1])  # each sample draws its own codes

    as_json = {"audio": base64.b64encode(wav).decode(), "id": "M005", "emotion": "happy", "intensity": 2, "temperature": 0.5,
               "n_samples": 3, "seed": 7}  # fmt: skip
    r = animate(p3d_url, json=as_json)
    assert r.status_code == 200, r.text
    assert r.json()["motion"] == body["motion"]

    stereo = speech_wav(1.0, sr=44100, channels=2)  # mixed down and resampled: T = 1.0 s × 25
    r = animate(p3d_url, content=stereo, headers={"content-type": "audio/wav"})  # a raw body is the field "audio"
    assert r.status_code == 200, r.text
    assert r.json()["n_frames"] == 25 and r.json()["style"] == {"id": "M003", "emotion": "neutral", "intensity": "level_1"}


def test_npy_download_is_seeded_and_in_the_generated_output_layout(p3d_url, generated):
    wav = speech_wav(1.2, seed=1)
    r = animate(p3d_url, **form(wav, format="npy", n_samples=2, seed=3, emotion="angry", intensity="level_3"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"] == 'attachment; filename="probtalk3d_motion.npy"'
    params = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert params.shape == (2, 30, 403) and params.dtype == np.float32
    np.testing.assert_array_equal(params, params_from_motion(generated(wav, ("M003", "angry", "level_3"), n_samples=2, seed=3)))
    assert not params[..., :300].any() and not params[..., 350:400].any()  # zero shape, expression[50:100] zero
    assert params[..., 300:350].any() and params[..., 400:403].any()

    again = animate(p3d_url, **form(wav, format="npy", n_samples=2, seed=3, emotion="angry", intensity="level_3"))
    other = animate(p3d_url, **form(wav, format="npy", n_samples=2, seed=4, emotion="angry", intensity="level_3"))
    assert again.content == r.content  # same seed → the same bytes
    assert other.status_code == 200 and other.content != r.content


def test_sample_false_gives_identical_samples_whatever_the_seed(p3d_url):
    wav = speech_wav(0.8, seed=2)
    bodies = [animate(p3d_url, **form(wav, sample="false", n_samples=3, seed=seed)).json() for seed in (1, 2)]
    motion = np.array(bodies[0]["motion"])
    assert motion.shape == (3, 20, 53) and bodies[0]["sample"] is False
    assert np.array_equal(motion[0], motion[1]) and np.array_equal(motion[0], motion[2])
    assert bodies[1]["motion"] == bodies[0]["motion"]


def test_mp4_is_the_rendered_mesh_with_the_audio(p3d_url, tmp_path):
    wav = speech_wav(1.2, seed=3)
    r = animate(p3d_url, **form(wav, format="mp4", n_samples=2, seed=5))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4" and 'filename="probtalk3d.mp4"' in r.headers["content-disposition"]
    video = tmp_path / "animation.mp4"
    video.write_bytes(r.content)
    capture = cv2.VideoCapture(str(video))
    frames = []
    while (ok := capture.read())[0]:
        frames.append(ok[1])
    capture.release()
    assert len(frames) == 30 and frames[0].shape == (256, 512, 3)  # T frames; two samples side by side
    assert np.abs(frames[0].astype(int) - 255).sum() > 0  # a mesh is drawn, not a blank page
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(video)], capture_output=True, text=True).stderr
    assert "Video: h264" in probe and "Audio: aac" in probe
    assert imageio_ffmpeg.count_frames_and_secs(str(video))[1] == pytest.approx(1.2, abs=0.1)


def test_bad_requests_get_4xx_naming_the_field_and_the_server_keeps_answering(p3d_url):
    wav = speech_wav(1.0)
    cases = {
        "not a wav": (form(b"this is a text file, not audio\n" * 40), 422, "field 'audio': not a WAV"),
        "truncated wav": (form(wav[: len(wav) // 2]), 422, "field 'audio': truncated WAV"),
        "empty body": (dict(content=b"", headers={"content-type": "audio/wav"}), 400, "empty request body"),
        "empty wav": (form(b""), 422, "field 'audio': empty file"),
        "too long": (form(speech_wav(MAX_SECONDS + 0.5)), 422, "longer than the limit of 3 s"),
        "too short": (form(speech_wav(0.02)), 422, "shorter than one 25 fps frame"),
        "unknown id": (form(wav, id="M999"), 422, "field 'id'"),
        "untrained id": (form(wav, id="W029"), 422, "field 'id'"),  # a slot of the model, not in its training data
        "unknown emotion": (form(wav, emotion="joy"), 422, "field 'emotion'"),
        "untrained emotion": (form(wav, emotion="sad"), 422, "field 'emotion'"),
        "intensity 4": (form(wav, emotion="happy", intensity="level_4"), 422, "field 'intensity'"),
        "intensity 0": (form(wav, emotion="happy", intensity="0"), 422, "field 'intensity'"),
        "neutral level 3": (form(wav, emotion="neutral", intensity="3"), 422, "field 'intensity'"),
        "temperature 0": (form(wav, temperature="0"), 422, "field 'temperature' must be > 0"),
        "temperature < 0": (form(wav, temperature="-0.5"), 422, "field 'temperature' must be > 0"),
        "temperature nan": (form(wav, temperature="nan"), 422, "field 'temperature'"),
        "n_samples over": (form(wav, n_samples=MAX_SAMPLES + 1), 422, "field 'n_samples' must be in 1..4"),
        "n_samples 0": (form(wav, n_samples=0), 422, "field 'n_samples'"),
        "n_samples text": (form(wav, n_samples="many"), 422, "field 'n_samples' must be an integer"),
        "seed < 0": (form(wav, seed=-1), 422, "field 'seed'"),
        "sample": (form(wav, sample="maybe"), 422, "field 'sample'"),
        "format": (form(wav, format="gif"), 422, "field 'format'"),
        "json number as id": (dict(json={"audio": base64.b64encode(wav).decode(), "id": 3}), 422, "field 'id'"),
        "bad base64": (dict(json={"audio": "not base64!"}), 422, "field 'audio' is not valid base64"),
        "unknown field": (form(wav, speaker="M003"), 422, "unknown field"),
        "wrong type": (dict(content=b"hello", headers={"content-type": "text/plain"}), 415, "audio/*"),
        "too large": (dict(content=b"\x00" * 1_100_000, headers={"content-type": "audio/wav"}), 413, "upload limit"),
        "unknown model": (dict(**form(wav), params={"model_id": "fold3"}), 404, "unknown model id"),
    }
    for name, (kwargs, status, message) in cases.items():
        r = animate(p3d_url, **kwargs)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert message in r.json()["detail"], (name, r.json())
        assert "/tmp" not in r.json()["detail"], (name, r.json())
        assert httpx.get(f"{p3d_url}/healthz", timeout=10).json()["workload"] == "probtalk3d"
    r = animate(p3d_url, **form(wav, n_samples=2))
    assert r.status_code == 200 and np.array(r.json()["motion"]).shape == (2, 25, 53)


def test_models_and_docs(p3d_url):
    assert httpx.get(f"{p3d_url}/v1/probtalk3d/models", timeout=10).json() == {"default": "best", "models": {"best": 1}}
    spec = httpx.get(f"{p3d_url}/openapi.json", timeout=10).json()
    route = spec["paths"]["/v1/probtalk3d/animate"]["post"]
    assert {"audio", "id", "emotion", "intensity", "temperature", "n_samples", "seed", "sample", "format"} <= set(
        route["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    )
    assert {"400", "404", "409", "413", "415", "422"} <= set(route["responses"])


# -- no Serve --------------------------------------------------------------------------------------
def test_mp4_without_a_flame_model_is_a_409_naming_the_format(pred_dir):
    entry = ModelRegistry(pred_dir, "probtalk3d").get(None)
    assert resolve_flame(None, pred_dir) == str(pred_dir / "flame")  # the checkpoint's own (generation.json)
    assert resolve_flame("none", pred_dir) is None
    payload = Payload({"audio": [speech_wav(0.5)], "format": ["mp4"]}, "multipart")
    with pytest.raises(BadInput) as caught:
        ProbTalk3DAnimator(flame_dir=None).decode(payload, entry)
    assert caught.value.status == 409 and "field 'format'" in caught.value.message and "flame=DIR" in caught.value.message
    x = ProbTalk3DAnimator(flame_dir=None).decode(Payload({"audio": [speech_wav(0.5)], "format": ["npy"]}, "multipart"), entry)
    assert (x.format, x.n_samples, x.seed, x.sample, x.temperature, x.style) == ("npy", 1, 0, True, 0.2, (0, 0, 0))


def test_build_refuses_what_it_cannot_serve(pred_dir, tmp_path):
    with pytest.raises(ValueError, match="stage-'prior' checkpoint"):
        build({"checkpoint": str(pred_dir.parent / "prior")})
    with pytest.raises(ValueError, match="flame=.*not a usable FLAME model folder"):
        build({"checkpoint": str(pred_dir), "flame": str(tmp_path)})
    with pytest.raises(ValueError, match="max_samples"):
        build({"checkpoint": str(pred_dir), "max_samples": "0"})
    with pytest.raises(ValueError, match="unknown serving argument"):
        build({"checkpoint": str(pred_dir), "n_sample": "3"})


def test_serve_config_file_is_valid():
    """serve/probtalk3d.yaml passes Serve's own schema, and its deployments are the app's."""
    import importlib

    import yaml
    from ray.serve.schema import ServeDeploySchema

    (app,) = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve" / "probtalk3d.yaml").read_text())).applications
    module, _, attr = app.import_path.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert {d.name for d in app.deployments} == {"Probtalk3dIngress", "Probtalk3dModel"}
    assert app.args["checkpoint"] == "runs/p3d/pred" and app.args["max_samples"] == 16
