"""The mouse application on the serving layer: a held-out animal's video over HTTP on
127.0.0.1, served by the model that ``jobs/mouse_actions.py`` trained (``mouse_run``)."""

import base64
import json
import logging

import cv2
import httpx
import numpy as np
import pandas as pd
import pytest

from affectlab.data.mouse import MouseDataError, discover, read_annotation, read_video_frames
from affectlab.data.synthetic_mouse import write_synthetic_mouse
from affectlab.data.mouse_windows import iter_video_windows, window_starts
from affectlab.metrics.mouse import apply_thresholds, frame_scores, stitch_trials
from affectlab.serving.layer import BadInput, Payload, ServerFault
from affectlab.serving.mouse import MousePredictor
from affectlab.serving.registry import ModelRegistry
from affectlab.train.loop import read_predictions
from affectlab.workloads.mouse import MouseWorkload


# -- files ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def held_out(mouse_run):
    """The trials of the first test animal's video (all of them: one video per animal)."""
    out, metrics = mouse_run
    animal = metrics["animals"]["test"][0]
    trials = [t for t in discover(out / "data") if t.animal_id == animal]
    assert len({t.video_id for t in trials}) == 1 and len(trials) == 3
    return trials


def dlc_table(path) -> pd.DataFrame:
    if path.suffix == ".h5":
        return pd.read_hdf(path, key="df_with_missing")
    return pd.read_csv(path, header=[0, 1, 2], index_col=0)


def csv_bytes(table: pd.DataFrame) -> bytes:
    return table.to_csv().encode()


def h5_bytes(table: pd.DataFrame, tmp_path) -> bytes:
    path = tmp_path / "pose.h5"
    table.to_hdf(path, key="df_with_missing", format="table", mode="w")
    return path.read_bytes()


def multi_animal_csv(table: pd.DataFrame) -> bytes:
    """The same pose with DLC's multi-animal header (an ``individuals`` row)."""
    lines = csv_bytes(table).decode().splitlines()
    individuals = "individuals," + ",".join(["mouse1"] * (len(lines[0].split(",")) - 1))
    return "\n".join([lines[0], individuals, *lines[1:]]).encode()


def truncated_avi(tmp_path, frames: int = 100) -> bytes:
    """An MJPG AVI cut at 60%: its header still promises every frame, decoding stops early."""
    path = tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 64))
    for i in range(frames):
        writer.write(np.full((64, 64, 3), 2 * i, np.uint8))
    writer.release()
    data = path.read_bytes()
    return data[: int(len(data) * 0.6)]


# -- no Serve: streaming and decoding ------------------------------------------------------------
def test_video_windows_stream_the_whole_video(held_out, tmp_path):
    video = held_out[0].video_path
    windows = list(iter_video_windows(video, 48, 24, 32))
    assert [s for s, _ in windows] == window_starts(1080, 48, 24)
    for start, frames in windows[:3] + windows[-2:]:
        np.testing.assert_array_equal(frames, read_video_frames(video, start, start + 48, 32))
    ((start, frames),) = iter_video_windows(video, 2000, 1000, 32)  # a video shorter than a window
    assert start == 0 and frames.shape == (1080, 32, 32)
    uneven = [s for s, _ in iter_video_windows(video, 100, 70, 32)]
    assert uneven == window_starts(1080, 100, 70) and uneven[-1] == 980  # the last window ends on the last frame
    with pytest.raises(MouseDataError, match="after 1080 of 1100 frames"):
        list(iter_video_windows(video, 48, 24, 32, expected_frames=1100))
    cut = tmp_path / "cut.avi"
    cut.write_bytes(truncated_avi(tmp_path))
    with pytest.raises(MouseDataError, match="truncated"):
        list(iter_video_windows(cut, 16, 8, 32, expected_frames=100))


def test_decode_rejects_bad_uploads_by_field(mouse_run, held_out, tmp_path):
    out, _ = mouse_run
    entry = ModelRegistry(out, "mouse").get(None)
    video = held_out[0].video_path.read_bytes()
    table = dlc_table(held_out[0].dlc_path)
    predictor = MousePredictor()

    def error(**fields) -> BadInput:
        with pytest.raises(BadInput) as caught:
            predictor.decode(Payload({k: [v] for k, v in fields.items()}, "multipart"), entry)
        assert caught.value.status == 422
        assert str(tmp_path) not in caught.value.message and "/tmp" not in caught.value.message
        return caught.value

    assert "expected 1080" in error(video=video, dlc=csv_bytes(table.iloc[:-1])).message
    assert "multi-animal" in error(video=video, dlc=multi_animal_csv(table)).message
    assert "scorer/bodyparts/coords" in error(video=video, dlc=b"\x00\x01garbage").message
    assert "not a readable video" in error(video=b"GIF89a not a video").message
    assert "not a readable video" in error(video=video[: len(video) // 2]).message  # truncated MP4: no index
    assert "unknown field" in error(video=video, pose=b"x").message
    x = predictor.decode(Payload({"video": [video], "dlc": [h5_bytes(table, tmp_path)]}, "multipart"), entry)
    assert (x.n_frames, x.size, x.pose, x.keypoints.shape) == (1080, (128, 128), "given", (1080, 6, 2))


def test_decode_reads_another_projects_dlc_through_the_bodypart_map(tmp_path):
    """No model needed: the serving map (build arg) wins over the model's training config."""
    from affectlab.constants.mouse import BODYPARTS
    from affectlab.serving.registry import ModelEntry

    data = write_synthetic_mouse(tmp_path / "data", n_animals=1, size=32, seed=1)
    (trial, *_) = discover(data)
    theirs = ["Snout", "FrontPawL", "FrontPawR", "HindPawL", "HindPawR", "Tail Base"]
    table = dlc_table(trial.dlc_path)
    table.columns = table.columns.set_levels([dict(zip(BODYPARTS, theirs))[b] for b in table.columns.levels[1]], level=1)
    video, upload = trial.video_path.read_bytes(), csv_bytes(table)
    their_map = dict(zip(BODYPARTS, theirs))
    payload = lambda: Payload({"video": [video], "dlc": [upload]}, "multipart")  # noqa: E731
    plain = ModelEntry("best", tmp_path, (), {"model": "multitask", "min_likelihood": 0.9})
    trained_with_map = ModelEntry("best", tmp_path, (), {"model": "multitask", "min_likelihood": 0.9, "bodyparts": their_map})

    with pytest.raises(BadInput) as caught:
        MousePredictor().decode(payload(), plain)
    message = caught.value.message
    assert caught.value.status == 422 and "'Snout', 'FrontPawL'" in message and "bodyparts argument" in message
    assert "/tmp" not in message and str(tmp_path) not in message
    expected = MousePredictor().decode(Payload({"video": [video], "dlc": [csv_bytes(dlc_table(trial.dlc_path))]}, "multipart"), plain)
    for predictor, entry in ((MousePredictor(), trained_with_map), (MousePredictor(bodyparts=",".join(f"{a}={b}" for a, b in their_map.items())), plain)):
        x = predictor.decode(payload(), entry)
        np.testing.assert_array_equal(x.keypoints, expected.keypoints)
    with pytest.raises(ValueError, match="unknown bodypart"):
        MousePredictor(bodyparts="nose=Snout")  # build(args) fails before anything is served


class LogRecords(logging.Handler):
    """Collects the serving logger's records (it does not propagate to pytest's caplog)."""

    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(self.format(r) for r in self.records)


@pytest.fixture()
def serve_log():
    handler = LogRecords()
    logging.getLogger("ray.serve").addHandler(handler)
    yield handler
    logging.getLogger("ray.serve").removeHandler(handler)


def test_server_faults_are_500s_with_a_request_id_and_no_internals(tmp_path, monkeypatch, serve_log):
    """A fault of the server is never a 4xx: while decoding it propagates (the layer answers
    500 with a request id); in the model replica it is that video's 500 carrying only a
    request id, the traceback logged under the same id."""
    import torch

    import affectlab.serving.mouse as served_module
    from affectlab.serving.mouse import MouseModel
    from affectlab.serving.registry import ModelEntry
    from affectlab.workloads.mouse import MouseConfig

    data = write_synthetic_mouse(tmp_path / "data", n_animals=1, size=32, seed=2)
    (trial, *_) = discover(data)
    video = trial.video_path.read_bytes()
    entry = ModelEntry("best", tmp_path, (), {"model": "dual_stream", "min_likelihood": 0.9})
    secret = "/srv/affectlab/secret/upload.h5"

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", secret)

    monkeypatch.setattr(served_module, "read_dlc", full_disk)
    with pytest.raises(OSError, match="No space"):  # not turned into a 4xx: the layer answers 500 + request id
        MousePredictor().decode(Payload({"video": [video], "dlc": [trial.dlc_path.read_bytes()]}, "multipart"), entry)

    class Broken(torch.nn.Module):
        def forward(self, frames, pose):
            raise RuntimeError(f"CUDA error: an illegal memory access at {secret}")

    monkeypatch.undo()
    x = MousePredictor().decode(Payload({"video": [video]}, "multipart"), entry)
    cfg = MouseConfig(model="dual_stream", image_size=32, window=48, eval_window=48)
    model = MouseModel("best", [Broken()], cfg, np.ones(6), "argmax", "cpu")
    (out,) = MousePredictor().predict_batch(model, [x])
    assert isinstance(out, ServerFault) and out.request_id == x.request_id  # the ingress answers it with a bare 500
    assert f"request {x.request_id}" in serve_log.text() and "illegal memory access" in serve_log.text()


# -- over HTTP -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mouse_url(serve_url, mouse_run):
    """The job's output directory (its checkpoint/ is id ``best``), a 3 MB upload limit."""
    from ray import serve

    from affectlab.serving.mouse import build

    out, _ = mouse_run
    serve.run(build({"checkpoint": str(out), "max_upload_mb": "3", "num_cpus": "0.5"}), name="mouse", route_prefix="/", blocking=False)
    yield serve_url
    serve.delete("mouse")


def segment(url, timeout=180, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/v1/mouse/segment", timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def served(mouse_url, held_out) -> dict:
    trial = held_out[0]
    files = {"video": (trial.video_path.name, trial.video_path.read_bytes(), "video/mp4"),
             "dlc": (trial.dlc_path.name, trial.dlc_path.read_bytes(), "application/octet-stream")}  # fmt: skip
    r = segment(mouse_url, files=files)
    assert r.status_code == 200, r.text
    return r.json()


def test_served_video_matches_the_evaluation(served, mouse_run, held_out):
    """The served per-frame labels are the job's test predictions on the same frames, and
    they beat the majority class on this held-out animal."""
    out, metrics = mouse_run
    body = served
    labels, probs = np.array(body["labels"]), np.array(body["probabilities"])
    assert body["n_frames"] == 1080 and labels.shape == (1080,) and probs.shape == (1080, 6)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-3)
    assert body["thresholds_source"] == "validation" and body["pose"] == "given" and body["model_id"] == "best"
    assert body["thresholds"] == metrics["thresholds"]
    thresholds = [metrics["thresholds"][name] for name in body["classes"]]  # metrics.json sorts its keys
    # the labels are the decision rule on the full-precision probabilities, which the response
    # rounds to 4 decimals: a frame may differ from the rule on the rounded ones only by a near-tie
    scores, rounding = probs / np.array(thresholds), 0.5e-4 / min(thresholds)
    near_tie = scores[np.arange(1080), labels] >= scores.max(1) - 2 * rounding
    assert near_tie.all() and (labels == apply_thresholds(probs, thresholds)).mean() > 0.99
    # the segments are the labels' runs, in order, covering every frame
    runs = [(body["classes"].index(s["label"]), s["start"], s["stop"]) for s in body["segments"]]
    assert runs[0][1] == 0 and runs[-1][2] == 1080 and all(a[2] == b[1] and a[0] != b[0] for a, b in zip(runs, runs[1:]))
    np.testing.assert_array_equal(np.concatenate([np.full(e - s, c) for c, s, e in runs]), labels)
    assert sum(body["frames_per_class"].values()) == 1080 and body["fps"] == 30.0

    workload = MouseWorkload()
    cfg = workload.make_config(metrics["config"])
    ids = {t.annotation_path: i for i, t in workload.splits(cfg, None)["test"]}
    p = read_predictions(out / "checkpoint")["test"]
    offline = stitch_trials(p["trial_id"], p["row"], p["probs"], p["labels"], p["ok"])
    truth, agree, same_input = [], [], []
    for trial in held_out:
        rows = read_annotation(trial.annotation_path)
        truth.append((rows, labels[trial.start : trial.stop]))
        if trial.n_frames == 360:  # 345-row trials start 15 frames in: the evaluation tiles them differently
            mine = offline[ids[trial.annotation_path]]
            agree.append(apply_thresholds(mine["probs"], thresholds) == labels[trial.start + mine["frames"]])
            same_input.append(_windows_within_the_trial(trial, body["n_frames"], cfg.eval_window)[mine["frames"]])
    agree, same_input = np.concatenate(agree), np.concatenate(same_input)
    true, pred = (np.concatenate(x) for x in zip(*truth))
    f1 = frame_scores(true, pred)["macro_f1"]
    print(f"served vs evaluation agreement {agree.mean():.4f} ({agree[same_input].mean():.4f} on the {same_input.mean():.0%} "
          f"of frames whose windows lie inside their trial); served macro F1 {f1:.3f} "
          f"(job test {metrics['macro_f1']:.3f}, majority baseline {metrics['majority_baseline_macro_f1']:.3f})")
    # where both see the same inputs, both make the same call (up to batch-size float noise)
    assert same_input.mean() > 0.5 and agree[same_input].mean() >= 0.99
    assert agree.mean() >= 0.9
    assert f1 > metrics["majority_baseline_macro_f1"] + 0.1


def _windows_within_the_trial(trial, n_frames: int, length: int) -> np.ndarray:
    """Per frame of ``trial``: True where every window the server averages over the frame
    (``window_starts`` over the whole video, stride ``length // 2``) lies inside the trial.
    The evaluation tiles each trial alone; near a trial's edge the server also averages a
    window reaching into the neighbouring trial, which the evaluation never sees."""
    inside = np.zeros(n_frames, int)
    covering = np.zeros(n_frames, int)
    for start in window_starts(n_frames, length, max(1, length // 2)):
        covering[start : start + length] += 1
        inside[start : start + length] += trial.start <= start and start + length <= trial.stop
    return (inside == covering)[trial.start : trial.stop]


def test_raw_body_json_and_h5_give_the_same_video(mouse_url, served, held_out, tmp_path):
    trial = held_out[0]
    video = trial.video_path.read_bytes()
    r = segment(mouse_url, content=video, headers={"content-type": "video/mp4"})  # no pose file
    assert r.status_code == 200, r.text
    assert r.json()["pose"] == "absent" and r.json()["n_frames"] == 1080
    h5 = h5_bytes(dlc_table(trial.dlc_path), tmp_path)
    body = {"video": base64.b64encode(video).decode(), "dlc": base64.b64encode(h5).decode(), "model_id": "best"}
    r = segment(mouse_url, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["labels"] == served["labels"]  # CSV or H5, multipart or JSON: the same answer


def test_malformed_requests_get_4xx_and_the_server_keeps_answering(mouse_url, held_out, tmp_path):
    trial = held_out[0]
    video = trial.video_path.read_bytes()
    table = dlc_table(trial.dlc_path)
    cases = {
        "empty": (dict(content=b"", headers={"content-type": "video/mp4"}), 400, "empty request body"),
        "not a video": (dict(files={"video": ("a.mp4", b"\x00" * 5000)}), 422, "not a readable video"),
        "truncated mp4": (dict(files={"video": ("a.mp4", video[: len(video) // 3])}), 422, "not a readable video"),
        "truncated avi": (dict(files={"video": ("a.avi", truncated_avi(tmp_path))}), 422, "truncated"),
        "dlc rows": (dict(files={"video": ("a.mp4", video), "dlc": ("d.csv", csv_bytes(table.iloc[:900]))}), 422, "expected 1080"),
        "multi-animal": (dict(files={"video": ("a.mp4", video), "dlc": ("d.csv", multi_animal_csv(table))}), 422, "multi-animal"),
        "two videos": (dict(files=[("video", ("a.mp4", video)), ("video", ("b.mp4", video))]), 422, "exactly once"),
        "unknown field": (dict(files={"video": ("a.mp4", video), "pose": ("p.csv", b"x")}), 422, "unknown field"),
        "wrong type": (dict(content=b"video", headers={"content-type": "text/plain"}), 415, "video/*"),
        "too large": (dict(content=b"\x00" * 3_100_000, headers={"content-type": "video/mp4"}), 413, "upload limit"),
        "unknown model": (dict(files={"video": ("a.mp4", video)}, params={"model_id": "fold9"}), 404, "unknown model id"),
    }
    for name, (kwargs, status, message) in cases.items():
        r = segment(mouse_url, **kwargs)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert message in r.json()["detail"], (name, r.json())
        assert httpx.get(f"{mouse_url}/healthz", timeout=10).json()["workload"] == "mouse"
    r = segment(mouse_url, files={"video": ("a.mp4", video)})
    assert r.status_code == 200 and len(r.json()["labels"]) == 1080


def test_pickle_bearing_h5_upload_is_refused_and_never_unpickled(mouse_url, held_out, tmp_path):
    """A DLC H5 that runs code when pandas/PyTables read it (an object column in fixed
    format; a pickled column-label attribute in table format): 422, and the code never ran."""
    from test_mouse_data import pickle_bearing_h5, poisoned_table_h5

    video = held_out[0].video_path.read_bytes()
    for make in (pickle_bearing_h5, poisoned_table_h5):
        marker = tmp_path / f"{make.__name__}_ran"
        evil = make(tmp_path / f"{make.__name__}.h5", marker, n=1080).read_bytes()
        r = segment(mouse_url, files={"video": ("a.mp4", video), "dlc": ("poseDLC_x.h5", evil)})
        assert r.status_code == 422, (make.__name__, r.status_code, r.text)
        assert "refused" in r.json()["detail"] and "/tmp" not in r.json()["detail"], r.json()
        assert not marker.exists(), f"{make.__name__}: the upload's pickle was run on the server"


def test_models_and_docs(mouse_url):
    assert httpx.get(f"{mouse_url}/v1/mouse/models", timeout=10).json() == {"default": "best", "models": {"best": 1}}
    spec = httpx.get(f"{mouse_url}/openapi.json", timeout=10).json()
    route = spec["paths"]["/v1/mouse/segment"]["post"]
    assert "video" in json.dumps(route["requestBody"])
    assert {"400", "401", "404", "413", "415", "422"} <= set(route["responses"])  # the layer's and the app's own


@pytest.mark.parametrize("name", ["pain", "mouse"])
def test_serve_config_files_are_valid(name):
    """serve/<name>.yaml passes Serve's own schema, and its deployments are the app's."""
    import importlib
    from pathlib import Path

    import yaml
    from ray.serve.schema import ServeDeploySchema

    path = Path(__file__).resolve().parents[1] / "serve" / f"{name}.yaml"
    (app,) = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text())).applications
    module, _, attr = app.import_path.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert {d.name for d in app.deployments} == {f"{name.capitalize()}Ingress", f"{name.capitalize()}Model"}


@pytest.mark.parametrize("name", ["pain", "mouse", "infant", "probtalk3d"])
def test_serve_config_files_run_serve_as_the_platform_does(name, monkeypatch):
    """Each serve/*.yaml starts Serve in the mode every platform-started Ray instance uses:
    the controller (which starts HAProxy) and the replicas see the same variables."""
    from pathlib import Path

    import yaml

    from affectlab.ray_utils import SERVE_HIGH_THROUGHPUT, runtime_env

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "serve" / f"{name}.yaml").read_text())
    (app,) = config["applications"]
    for variable in SERVE_HIGH_THROUGHPUT:
        monkeypatch.delenv(variable, raising=False)
    assert SERVE_HIGH_THROUGHPUT.items() <= runtime_env()["env_vars"].items()
    assert SERVE_HIGH_THROUGHPUT.items() <= app["runtime_env"]["env_vars"].items()
    controller = config["controller_options"]["runtime_env"]["env_vars"]
    assert controller["RAY_SERVE_ENABLE_HA_PROXY"] == controller["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
