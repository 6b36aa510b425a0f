"""`ray job submit` against a real head started with `ray start --head` on 127.0.0.1.

The cluster runs in a Python environment that has every dependency but not affectlab,
so the job only works if the uploaded working directory makes affectlab importable by
the driver and by every Ray worker.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def python_without_affectlab(tmp_path):
    """A venv whose site-packages points at ours through a plain path entry: the packages
    import, but our editable install of affectlab (a .pth hook) is not processed."""
    env_dir = tmp_path / "env"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(site, "affectlab_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    check = subprocess.run([python, "-c", "import ray, torch, timm; import affectlab"], capture_output=True, text=True, cwd=tmp_path)
    assert "No module named 'affectlab'" in check.stderr, check.stderr
    return python


def test_cv_job_submitted_to_a_ray_start_head(python_without_affectlab, tmp_path):
    python = python_without_affectlab
    port, dashboard = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
    # The cluster's own token and an empty home: nothing a previous Ray run left in ~/.ray
    # (a token file) may make this pass, as on a freshly set-up machine.
    home = tmp_path / "home"
    home.mkdir()
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), HOME=str(home),
               RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS="0", PATH=f"{python.parent}:{env['PATH']}")  # fmt: skip
    ray_cli = [str(python), "-m", "ray.scripts.scripts"]
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # Unix socket paths must stay short

    # the working directory a user would upload: the repository without build outputs
    work = tmp_path / "checkout"
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "__pycache__", "*.egg-info", "bench"))
    start = subprocess.run(
        ray_cli + ["start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", f"--dashboard-port={dashboard}",
                   "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=4", f"--temp-dir={temp_dir}",
                   # other Ray instances on this machine hold the default agent ports
                   f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                   f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                   "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        out = tmp_path / "cv_out"
        for _ in range(30):  # the dashboard's job agent comes up a little after `ray start` returns
            submit = subprocess.run(
                ray_cli + ["job", "submit", f"--address=http://127.0.0.1:{dashboard}", "--working-dir", str(work), "--",
                           "python", "jobs/unbc_cv.py", "--synthetic", "--output", str(out), "--folds", "0",
                           "--epochs", "1", "--wandb", "off"],
                env=env, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            if "No available agent" not in submit.stderr:
                break
            time.sleep(5)
        logs = submit.stdout + submit.stderr
        assert submit.returncode == 0, logs[-5000:]
        assert "succeeded" in logs
        metrics = json.loads((out / "metrics.json").read_text())
        assert [f["fold"] for f in metrics["folds"]] == [0]
        assert (out / "fold_0" / "model.safetensors").is_file() and (out / "report.html").is_file()
        assert not (home / ".ray" / "auth_token").exists()  # the token came from the environment
    finally:
        stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop_cluster(temp_dir: str) -> None:
    """Kill this test's Ray processes only: ``ray stop`` would kill every Ray instance on the
    machine, the suite's own session cluster included. They all name their temp dir."""
    import psutil

    mine = [p for p in psutil.process_iter(["cmdline"]) if any(temp_dir in part for part in p.info["cmdline"] or ())]
    for process in mine:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(mine, timeout=30)
