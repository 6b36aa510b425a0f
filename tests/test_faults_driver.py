"""The CV jobs' driver killed mid-run (SIGKILL to the job process, and the local Ray
instance it started with it), then ``--resume``: only what had not finished runs again.
Folds that had finished are neither retrained nor rewritten (executions log, checkpoint
mtimes); an interrupted fold continues from its epoch checkpoint; metrics.json has every
fold. The jobs run as subprocesses with their own Ray instance, HOME in a temp dir."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from affectlab.train.run import SNAPSHOT_FILE, run_state
from affectlab.tune.cv import EXECUTIONS_FILE, SETTINGS_FILE

from conftest import MOUSE_JOB_ARGS, kill_tree

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[1]
FOLDS = (0, 1)
EPOCHS = 2


def _env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**env, "HOME": str(home)}


def _states(output: Path) -> dict[int, str]:
    """Each fold's Train run state as Ray Train recorded it (fresh / resumed / finished)."""
    try:
        settings = json.loads((output / SETTINGS_FILE).read_text())
        return {f: run_state(settings["storage_path"], f"{settings['run_name']}-fold{f}") for f in FOLDS}
    except Exception:  # nothing recorded yet, or a record being replaced
        return {}


def _run_files(output: Path, fold: int) -> dict[str, float]:
    """mtime of every file of a fold's Train run (its checkpoints), by relative path."""
    settings = json.loads((output / SETTINGS_FILE).read_text())
    run = Path(settings["storage_path"]) / f"{settings['run_name']}-fold{fold}"
    return {str(p.relative_to(run)): p.stat().st_mtime for p in run.rglob("*") if p.is_file() and p.parent != run}


def _recorded_reports(output: Path, fold: int) -> int:
    """How many reports Ray Train recorded for a fold's run over all its attempts (the
    report index its checkpoint manager restores on every resume)."""
    settings = json.loads((output / SETTINGS_FILE).read_text())
    snapshot = Path(settings["storage_path"]) / f"{settings['run_name']}-fold{fold}" / SNAPSHOT_FILE
    return json.loads(snapshot.read_text())["current_report_index"]


def _interrupt_and_resume(cmd: list[str], output: Path, tmp_path: Path) -> dict:
    """Start the job, SIGKILL it once a fold has finished and another is mid-training (an
    epoch checkpoint recorded, no final one), then run it again with --resume."""
    env = _env(tmp_path)
    started = time.time()
    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=tmp_path)
        try:
            deadline = time.time() + 420
            while driver.poll() is None and time.time() < deadline:
                states = _states(output)
                if "finished" in states.values() and "resumed" in states.values():
                    break
                time.sleep(0.5)
            assert driver.poll() is None, "the job ended before it could be interrupted:\n" + (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, f"no fold finished in time: {_states(output)}"
        finally:
            kill_tree(driver)
    killed_at = time.time()
    states = _states(output)
    finished = sorted(f for f, s in states.items() if s == "finished")
    interrupted = sorted(f for f, s in states.items() if s == "resumed")
    files_before = {f: _run_files(output, f) for f in finished + interrupted}

    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=480, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    executions = [json.loads(line) for line in (output / EXECUTIONS_FILE).read_text().splitlines()]
    after = [e for e in executions if e["time"] > killed_at]
    trainings = {f: sum(e["fold"] == f and e["state"] != "finished" for e in executions) for f in FOLDS}
    print(f"\nkilled after {killed_at - started:.0f} s: finished {finished}, interrupted {interrupted}; resumed run "
          f"{time.time() - killed_at:.0f} s; after the kill: {[(e['fold'], e['state']) for e in after]}; trainings per fold {trainings}")  # fmt: skip

    assert finished and interrupted
    for f in finished:  # not trained again, its checkpoints untouched
        assert trainings[f] == 1 and not [e for e in after if e["fold"] == f and e["state"] != "finished"]
        assert _run_files(output, f) == files_before[f]
    for f in interrupted:  # continued from its epoch checkpoint: no epoch recorded twice
        assert [e["state"] for e in after if e["fold"] == f] == ["resumed"] and trainings[f] == 2
    for f in FOLDS:  # Ray Train recorded each fold's epochs and its final report exactly once
        assert _recorded_reports(output, f) == EPOCHS + 1
    for f in set(FOLDS) - set(finished) - set(interrupted):  # had not started: trained once, after the kill
        assert trainings[f] == 1
    return json.loads((output / "metrics.json").read_text())


def test_unbc_cv_resumes_after_its_driver_is_killed(unbc_dir, tmp_path):
    output = tmp_path / "cv"
    cmd = [sys.executable, str(ROOT / "jobs" / "unbc_cv.py"), "--data-dir", str(unbc_dir), "--folds", ",".join(map(str, FOLDS)),
           "--max-concurrent", "1", "--preset", "tiny", "--epochs", str(EPOCHS), "--cpus-per-worker", "0.5", "--wandb", "off",
           "--output", str(output)]  # fmt: skip
    metrics = _interrupt_and_resume(cmd, output, tmp_path)
    assert [f["fold"] for f in metrics["folds"]] == list(FOLDS)
    assert all((output / f"fold_{f}" / "model.safetensors").is_file() for f in FOLDS)


def test_mouse_cv_resumes_after_its_driver_is_killed(mouse_dir, tmp_path):
    output = tmp_path / "mouse"
    cmd = [sys.executable, str(ROOT / "jobs" / "mouse_actions.py"), "--data-dir", str(mouse_dir), "--model", "multitask", "--preset", "tiny",
           "--cv", str(len(FOLDS)), "--max-concurrent", "1", "--epochs", str(EPOCHS), *MOUSE_JOB_ARGS, "--wandb", "off",
           "--output", str(output)]  # fmt: skip
    metrics = _interrupt_and_resume(cmd, output, tmp_path)
    assert [f["fold"] for f in metrics["folds"]] == list(FOLDS)
    assert all((output / f"fold_{f}" / "thresholds.json").is_file() for f in FOLDS)
