"""Shared fixtures: one local Ray cluster (and Serve on it) for the whole session, small
synthetic datasets, and one trained mouse model that several modules check."""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
# The suite's clusters use a token of their own, so no test reads or writes ~/.ray/auth_token
# (a new machine has none; `ray.init()` would otherwise create one there).
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "jobs"))  # job modules (argument parsing) are tested too


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray instance: 4 logical CPUs so Data tasks find slots beside Train
    workers on 2 cores, and the dashboard that Train's placement-group cleaner needs."""
    import ray

    from affectlab.ray_utils import runtime_env

    ray.init(address="local", num_cpus=4, include_dashboard=True, log_to_driver=False, runtime_env=runtime_env(local=True))
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def unbc_dir(tmp_path_factory):
    """25 synthetic subjects in the UNBC HDF5 layout, 5 folds."""
    from affectlab.data.synthetic_pain import write_synthetic_unbc

    return write_synthetic_unbc(tmp_path_factory.mktemp("unbc"), sequences_per_subject=2, frames_per_sequence=16, size=48)


@pytest.fixture(scope="session")
def pain3d_dir(tmp_path_factory):
    from affectlab.data.synthetic_pain import write_synthetic_pain3d

    return write_synthetic_pain3d(tmp_path_factory.mktemp("pain3d"), n_identities=12, n_pain=4, n_views=2, size=48)


@pytest.fixture()
def tiny_pain_config(unbc_dir):
    """A PainConfig small enough for a CPU test run."""
    from affectlab.workloads.pain import PRESETS, PainConfig

    return PainConfig(**{**PRESETS["tiny"], "data_dir": str(unbc_dir), "epochs": 2, "cpus_per_worker": 0.5})


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two busy cores: one intra-op thread is faster than two fighting over them."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def serve_url(ray_cluster):
    """Ray Serve's HTTP proxy on 127.0.0.1 at a free port; applications come and go per module."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


@pytest.fixture(scope="session")
def mouse_dir(tmp_path_factory):
    """Six synthetic animals, one 3-trial video each, 64 px, in the original's folder layout."""
    from affectlab.data.synthetic_mouse import write_synthetic_mouse

    return write_synthetic_mouse(tmp_path_factory.mktemp("mice"), n_animals=6, size=64, seed=5)


MOUSE_JOB_ARGS = ("--image-size", "32", "--window", "32", "--train-stride", "32", "--eval-window", "48", "--cpus-per-worker", "1")


@pytest.fixture(scope="session")
def mouse_run(ray_cluster, tmp_path_factory):
    """``python jobs/mouse_actions.py --synthetic --model multitask --output OUT``, its
    defaults untouched: (OUT, metrics.json). The synthetic data is in OUT/data.

    Its 48-frame evaluation windows at stride 24 tile each 360-frame trial as they tile the
    whole video, so the served model's windows are the evaluation's windows, except the
    ones the server also averages across a trial's edge (within 24 frames of it)."""
    import mouse_actions

    out = tmp_path_factory.mktemp("mouse_run") / "out"
    return out, json.loads(mouse_actions.main(["--synthetic", "--model", "multitask", "--output", str(out)]).read_text())


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a driver started with ``start_new_session=True`` and every process it started
    (its local Ray instance): what a killed ``ray job submit`` or a lost terminal leaves."""
    if process.poll() is not None:
        return
    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    os.killpg(process.pid, signal.SIGKILL)
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait(timeout=30)
