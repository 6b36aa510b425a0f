"""Interrupted writes: a checkpoint or output directory (or a file of Ray Train's storage)
interrupted mid-write — its process SIGKILLed, or the disk full — never becomes the latest
or the served one; the previous one stays readable, and the error says the disk is full.

A full disk is a small tmpfs mounted for the test (root, or CAP_SYS_ADMIN). Where mounting
is refused, the unit tests write through ``/dev/full`` instead, which fails every write with
a real ENOSPC; each test prints which one ran. The Ray run on a full disk needs the tmpfs:
it runs in its own interpreter (and Ray instance), in a user + mount namespace where plain
mounting is refused, and is skipped where neither works.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs
import pytest
import torch

from affectlab.serving.registry import ModelRegistry
from affectlab.train import checkpoint as checkpoint_module
from affectlab.train.checkpoint import read_checkpoint, save_checkpoint, write_json
from affectlab.train import outputs as outputs_module
from affectlab.train.outputs import PARTIAL, STAGING_DIR, AtomicLocalFileSystem, DiskFullError, publish

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "platform")}


@dataclass
class Disk:
    path: Path
    mode: str  # "tmpfs" (a small mounted tmpfs) or "/dev/full" (writes go through /dev/full)


@pytest.fixture
def disk(tmp_path):
    """A directory whose file system can be filled: a 1 MiB tmpfs, else a plain directory
    whose tests write through /dev/full."""
    path = tmp_path / "disk"
    path.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], capture_output=True).returncode == 0
    except OSError:  # no mount command
        mounted = False
    print(f"\nfull disk: {'1 MiB tmpfs' if mounted else 'writes through /dev/full (mount refused)'}")
    yield Disk(path, "tmpfs" if mounted else "/dev/full")
    if mounted:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system is full."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def _checkpoint(directory: Path, value: float) -> Path:
    return save_checkpoint(directory, {"w": torch.full((4,), value)}, "pain", {"tag": value}, {"final": 1})


def _partials(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if PARTIAL in p.name)


# -- publish: output directories --------------------------------------------------------
KILLED_PUBLISHER = r"""
import os, signal, sys
from pathlib import Path
from affectlab.train.outputs import publish

def write(tmp):
    tmp.mkdir()
    (tmp / "config.json").write_text('{"workload": "pain", "config": {"tag": 2.0}}')
    with open(tmp / "model.safetensors", "wb") as f:
        f.write(b"half a mod")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-write

publish(write, Path(sys.argv[1]))
"""


def test_a_publisher_killed_mid_write_leaves_the_previous_fold_served(tmp_path):
    cv = tmp_path / "cv"
    publish(lambda tmp: _checkpoint(tmp, 1.0), cv / "fold_0")
    killed = subprocess.run([sys.executable, "-c", KILLED_PUBLISHER, str(cv / "fold_0")], env=ENV, capture_output=True)
    assert killed.returncode == -9, killed.stderr

    state, config, _ = read_checkpoint(cv / "fold_0")  # the previous fold, whole
    assert config["config"] == {"tag": 1.0} and torch.equal(state["w"], torch.full((4,), 1.0))
    assert len(_partials(cv)) == 1  # the killed writer's hidden leftover ...
    registry = ModelRegistry(cv, "pain")  # ... is never served
    assert registry.ids() == ["fold0", "ensemble"] and registry.get("fold0").members[0].path == (cv / "fold_0").resolve()

    publish(lambda tmp: _checkpoint(tmp, 3.0), cv / "fold_0")  # the next publish replaces it and clears the leftover
    assert read_checkpoint(cv / "fold_0")[1]["config"] == {"tag": 3.0} and _partials(cv) == []


def test_publishing_on_a_full_disk_says_so_and_keeps_the_previous_checkpoint(disk):
    dest = disk.path / "checkpoint"
    publish(lambda tmp: _checkpoint(tmp, 1.0), dest)
    before = {p.name: p.read_bytes() for p in dest.iterdir()}

    def write(tmp: Path) -> None:
        _checkpoint(tmp, 2.0)
        target = tmp / "predictions.npz"
        if disk.mode == "/dev/full":
            target.symlink_to("/dev/full")
        with open(target, "wb") as f:
            f.write(os.urandom(2 << 20))  # more than the tmpfs holds

    with pytest.raises(DiskFullError, match="the disk is full: no space left on device while writing checkpoint") as full:
        publish(write, dest)
    print(f"error: {full.value}")
    assert full.value.errno == errno.ENOSPC and "the previous checkpoint is kept" in str(full.value)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before and _partials(disk.path) == []
    assert read_checkpoint(dest)[1]["config"] == {"tag": 1.0}


def test_write_json_on_a_full_disk_keeps_the_old_file(disk, monkeypatch):
    path = disk.path / "metrics.json"
    write_json(path, {"folds": [1, 2]})
    if disk.mode == "tmpfs":
        fill(disk.path)
    else:  # the hidden file write_json writes first goes to /dev/full
        partial = disk.path / ".metrics.json.partial-dev-full"
        partial.symlink_to("/dev/full")
        monkeypatch.setattr(checkpoint_module, "partial_path", lambda dest: partial)
    with pytest.raises(DiskFullError, match="the disk is full.*metrics.json.*the previous metrics.json is kept"):
        write_json(path, {"folds": list(range(100_000))})
    assert json.loads(path.read_text()) == {"folds": [1, 2]} and _partials(disk.path) == []


# -- Ray Train's storage: every file whole or absent ------------------------------------
KILLED_STORAGE_WRITER = r"""
import os, signal, sys
import pyarrow.fs
from affectlab.train.outputs import AtomicLocalFileSystem

fs = pyarrow.fs.PyFileSystem(AtomicLocalFileSystem(sys.argv[2]))
with fs.open_output_stream(sys.argv[1]) as f:  # as Ray Train writes its checkpoint-manager snapshot
    f.write(b'{"checkpoint_results": [')
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_storage_file_is_whole_or_absent_when_its_writer_is_killed(tmp_path):
    snapshot, staging = tmp_path / "run" / "checkpoint_manager_snapshot.json", tmp_path / STAGING_DIR
    snapshot.parent.mkdir()
    snapshot.write_text('{"latest": "epoch_000"}')
    killed = subprocess.run([sys.executable, "-c", KILLED_STORAGE_WRITER, str(snapshot), str(staging)], env=ENV, capture_output=True)
    assert killed.returncode == -9, killed.stderr
    assert snapshot.read_text() == '{"latest": "epoch_000"}'
    assert os.listdir(snapshot.parent) == [snapshot.name] and len(os.listdir(staging)) == 1  # the leftover lies in staging


def test_a_storage_file_written_on_a_full_disk_keeps_its_previous_content(disk, monkeypatch):
    """Ray's own local file system truncates the file first and loses it; the atomic one keeps it."""
    atomic = pyarrow.fs.PyFileSystem(AtomicLocalFileSystem(disk.path / STAGING_DIR))
    old, new = b'{"latest": "epoch_000"}' * 100, b'{"latest": "epoch_001"}' * 100_000
    for name in ("atomic.json", "plain.json"):
        with atomic.open_output_stream(str(disk.path / name)) as f:
            f.write(old)
    if disk.mode == "tmpfs":
        fill(disk.path)
    else:
        partial = disk.path / STAGING_DIR / ".atomic.json.partial-dev-full"
        partial.symlink_to("/dev/full")
        monkeypatch.setattr(outputs_module, "partial_path", lambda dest, staging: partial)
    with pytest.raises(OSError, match="No space left on device|errno 28"):
        with atomic.open_output_stream(str(disk.path / "atomic.json")) as f:
            f.write(new)
    assert (disk.path / "atomic.json").read_bytes() == old
    assert [p for p in (disk.path / STAGING_DIR).iterdir() if not p.is_symlink()] == []
    if disk.mode == "tmpfs":  # the defect the atomic file system exists for
        with pytest.raises(OSError):
            with pyarrow.fs.LocalFileSystem().open_output_stream(str(disk.path / "plain.json")) as f:
                f.write(new)
        assert (disk.path / "plain.json").read_bytes() != old


# -- a Ray Train run whose storage fills up ---------------------------------------------
FULL_STORAGE_RUN = r"""
import json, os, subprocess, sys, time
storage, out = sys.argv[1], sys.argv[2]
try:
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", storage], capture_output=True).returncode == 0
except OSError:  # no mount command
    mounted = False
if not mounted:
    sys.exit(77)  # no tmpfs here: the test tries a user + mount namespace, else skips
try:
    import ray
    from ray.train import UserCallback
    from affectlab.data.synthetic_pain import write_synthetic_unbc
    from affectlab.ray_utils import runtime_env
    from affectlab.train.checkpoint import read_checkpoint
    from affectlab.train.outputs import DiskFullError
    from affectlab.train.run import SNAPSHOT_FILE, fit, latest_checkpoint_name
    from affectlab.workloads import get_workload
    from affectlab.workloads.pain import PRESETS

    class FillAfterFirstEpoch(UserCallback):
        # Runs in Train's controller: logs every recorded report; fills the disk after epoch 0.
        def __init__(self, log, filler):
            self.log, self.filler = log, filler

        def after_report(self, run_context, metrics, checkpoint):
            epoch = metrics[0].get("epoch", "final")
            with open(self.log, "a") as f:
                f.write(json.dumps({"epoch": epoch, "time": time.time()}) + "\n")
            if epoch == 0 and self.filler:
                with open(self.filler, "wb", buffering=0) as f:
                    try:
                        while True:
                            f.write(b"\0" * (1 << 16))
                    except OSError:
                        pass

    data = write_synthetic_unbc(out + "/data", sequences_per_subject=2, frames_per_sequence=16, size=48)
    ray.init(address="local", num_cpus=4, include_dashboard=True, log_to_driver=False, runtime_env=runtime_env())
    ray.data.DataContext.get_current().enable_progress_bars = False
    workload = get_workload("pain")
    cfg = workload.make_config({**PRESETS["tiny"], "data_dir": str(data), "epochs": 2, "cpus_per_worker": 0.5})
    log, filler = out + "/reports.jsonl", storage + "/filler"
    report = {}
    started = time.time()
    try:
        fit(workload, cfg, workload.datasets(cfg, 0), storage, "full", callbacks=[FillAfterFirstEpoch(log, filler)])
        report["error"] = None
    except DiskFullError as error:
        report["error"], report["error_type"] = str(error), type(error).__name__
    report["failed_after_s"] = time.time() - started
    report["latest_after_failure"] = latest_checkpoint_name(storage, "full")
    run = storage + "/full"
    report["snapshot_parses"] = bool(json.loads(open(run + "/" + SNAPSHOT_FILE).read()))
    report["latest_readable"] = read_checkpoint(run + "/" + report["latest_after_failure"])[2].get("epoch")
    report["files_in_run"] = sorted(os.path.relpath(os.path.join(d, f), run) for d, _, fs in os.walk(run) for f in fs)
    report["epochs_before_room"] = [json.loads(line)["epoch"] for line in open(log)]
    os.remove(filler)  # room again: the same run continues from its latest checkpoint
    resumed = fit(workload, cfg, workload.datasets(cfg, 0), storage, "full", callbacks=[FillAfterFirstEpoch(log, None)])
    report["epochs"] = [json.loads(line)["epoch"] for line in open(log)]
    report["final"] = bool(resumed.metrics.get("final"))
    ray.shutdown()
    json.dump(report, open(out + "/report.json", "w"))  # a file: Ray's warnings reach stdout too
finally:
    subprocess.run(["umount", "-l", storage])
"""


@pytest.mark.reliability
def test_a_run_whose_storage_fills_up_fails_saying_so_and_resumes_from_its_last_checkpoint(tmp_path):
    storage, out = tmp_path / "storage", tmp_path / "out"
    storage.mkdir()
    out.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = {**{k: v for k, v in ENV.items() if k != "RAY_ADDRESS"}, "HOME": str(home)}
    cmd = [sys.executable, "-c", FULL_STORAGE_RUN, str(storage), str(out)]
    mode = "tmpfs"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    if proc.returncode == 77 and shutil.which("unshare"):
        mode = "tmpfs in a user + mount namespace"
        proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", *cmd], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    if os.path.ismount(storage):
        subprocess.run(["umount", "-l", str(storage)])
    if proc.returncode == 77:
        pytest.skip("a tmpfs cannot be mounted here (needs root or unprivileged user namespaces)")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    report = json.loads((out / "report.json").read_text())
    print(f"\n{mode}: {json.dumps(report, indent=1)}")

    assert report["error_type"] == "DiskFullError" and "the disk is full" in report["error"]
    assert "its latest complete checkpoint, epoch_000, is kept" in report["error"]
    assert report["latest_after_failure"] == "epoch_000" and report["latest_readable"] == 0 and report["snapshot_parses"]
    assert report["epochs_before_room"] == [0]  # epoch 1's checkpoint never became the latest
    assert not [f for f in report["files_in_run"] if PARTIAL in f]  # no partial file inside the run
    assert report["epochs"] == [0, 1, "final"] and report["final"]  # resumed: every epoch recorded exactly once


def test_resume_reads_the_latest_weights_the_train_state_names(tmp_path):
    """A checkpoint directory written again after a failed upload can still hold the failed
    attempt's ``last_model.safetensors``: the train state, not the file's presence, says
    where the latest weights are."""
    from safetensors.torch import save_file

    from affectlab.train.loop import LAST_MODEL_FILE, load_train_state, save_train_state

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    with torch.no_grad():
        model.weight.fill_(1.0)
    best = {k: v.clone() for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path, best, "pain", {}, {"epoch": 1})
    save_train_state(tmp_path, model, optimizer, scheduler, 1, 0.5, weights_are_best=True)
    save_file({"weight": torch.full((1, 2), 7.0), "bias": torch.zeros(1)}, str(tmp_path / LAST_MODEL_FILE))  # a stale leftover

    fresh = torch.nn.Linear(2, 1)
    _, state = load_train_state(tmp_path, fresh)
    assert state["epoch"] == 1 and torch.equal(fresh.weight, best["weight"])  # not the leftover's 7s

    save_train_state(tmp_path, model, optimizer, scheduler, 1, 0.5, weights_are_best=False)  # the latest weights: their own file
    with torch.no_grad():
        model.weight.fill_(3.0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / LAST_MODEL_FILE))
    load_train_state(tmp_path, fresh)
    assert torch.equal(fresh.weight, torch.full((1, 2), 3.0))
