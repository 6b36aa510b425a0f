"""Sweeps end to end on synthetic UNBC data: Optuna + ASHA, cross-validated trials, resume."""

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from affectlab.serving.pain import build_model
from affectlab.train.checkpoint import load_model
from affectlab.train.run import run_state
from affectlab.tune.space import parse_space
from affectlab.tune.sweep import EXECUTIONS_FILE, EXPERIMENT, run_sweep
from affectlab.workloads import get_workload
from affectlab.workloads.pain import PRESETS
from conftest import kill_tree

ROOT = Path(__file__).resolve().parents[1]
TINY_FIXED = "backbone: tiny, image_size: 48, pretrained: false, finetune: full, fusion_heads: 4, backbone_lr_mult: 1.0, epochs: 2, batch_size: 16"


def _base(data_dir) -> dict:
    return {**PRESETS["tiny"], "data_dir": str(data_dir), "cpus_per_worker": 0.5}


@pytest.fixture()
def cluster(ray_cluster):
    """The session cluster; placement groups a sweep's Train runs leave behind are released
    afterwards. Train's own cleaner finds the cluster through the State API, which gives up
    when several local Ray clusters share a machine (a busy CI box): stopped trials then keep
    their CPUs, and later tests in the session must not inherit that."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    before = set(ray_cluster.util.placement_group_table())
    yield ray_cluster
    for pg_id, info in ray_cluster.util.placement_group_table().items():
        if pg_id not in before and info["state"] == "CREATED":
            remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pg_id))))


def _executions(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / EXECUTIONS_FILE).read_text().splitlines()]


def test_sweep_avoids_a_learning_rate_that_cannot_learn(cluster, unbc_dir, tmp_path):
    """lr 1e-9 cannot move the weights; Optuna (seed 9) proposes 1e-3 for the first two
    trials and 1e-9 for the last two, which ASHA should stop early. Four epochs: the tiny
    model on these subjects needs three to move its validation Pearson off noise."""
    space = parse_space(
        f"""
workload: pain
fixed: {{{TINY_FIXED.replace("batch_size: 16", "batch_size: 8").replace("epochs: 2", "epochs: 4")}}}
params:
  lr: {{distribution: choice, values: [1e-9, 1e-3]}}
  dropout: {{distribution: uniform, low: 0.0, high: 0.3}}
""",
        get_workload,
        "bad_lr.yaml",
    )
    output = tmp_path / "sweep"
    result = run_sweep(get_workload("pain"), space, _base(unbc_dir), output, num_samples=4, max_concurrent=2, wandb="off", seed=9, grace_period=1, reduction_factor=2)

    trials = pd.read_csv(output / "trials.csv", dtype={"trial_id": str})  # an all-digit id is still an id
    print("\n" + trials[["number", "trial_id", "status", "lr", "dropout", "val_pearson", "reports", "wall_time_s"]].to_string())
    assert len(trials) == 4 and {"status", "val_pearson", "lr", "dropout", "wall_time_s"} <= set(trials.columns)
    assert set(trials["lr"]) == {1e-9, 1e-3}

    # The best trial avoids the learning rate that cannot learn, which scores worse.
    best = json.loads((output / "best.json").read_text())
    assert best["params"]["lr"] == 1e-3 and best["metric"] == "val_pearson"
    stuck, learning = trials[trials["lr"] == 1e-9], trials[trials["lr"] == 1e-3]
    assert stuck["val_pearson"].max() < learning["val_pearson"].max() == pytest.approx(best["value"])

    # ASHA stopped some trials before their last epoch: fewer reports, no final checkpoint.
    stopped = trials[trials["status"] == "EARLY_STOPPED"]
    assert len(stopped) >= 1 and (stopped["reports"] < 5).all()
    assert (trials.loc[trials["status"] == "COMPLETED", "reports"] == 5).all()  # 4 epochs + final

    # Trials ran concurrently (max_concurrent=2): some time spans overlap, never more than 2.
    spans = trials[["started_at", "ended_at"]].to_numpy()
    peak = max(int(((spans[:, 0] <= t) & (t < spans[:, 1])).sum()) for t in spans[:, 0])
    assert peak == 2

    # The best checkpoint can be served; each trial trained once.
    checkpoint = output / "best_checkpoint"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "config.json").is_file()
    _, cfg, _ = load_model(checkpoint, build_model)
    assert cfg.lr == best["params"]["lr"] and best["checkpoint"] == str(checkpoint)
    assert sorted(e["trial_id"] for e in _executions(output)) == sorted(trials["trial_id"])
    report = (output / "report.html").read_text()
    assert report.count("data:image/png") >= 3 and "Parameter importance" in report
    assert result.best["trial_id"] == best["trial_id"]


def test_cv_sweep_scores_the_mean_over_folds(cluster, unbc_dir, tmp_path):
    space = parse_space(
        f"""
workload: pain
fixed: {{{TINY_FIXED.replace("epochs: 2", "epochs: 1")}}}
params:
  lr: {{distribution: loguniform, low: 1e-4, high: 3e-3}}
""",
        get_workload,
        "cv.yaml",
    )
    output = tmp_path / "cv"
    run_sweep(get_workload("pain"), space, _base(unbc_dir), output, num_samples=1, folds=[0, 1], wandb="off", seed=0, grace_period=2)

    trials = pd.read_csv(output / "trials.csv", dtype={"trial_id": str})  # an all-digit id is still an id
    assert len(trials) == 1 and (trials["status"] == "COMPLETED").all()
    for _, t in trials.iterrows():
        assert t["val_pearson"] == pytest.approx(np.mean([t["fold0_val_pearson"], t["fold1_val_pearson"]]))

    # The trial trained both folds, at the same time: their first epochs overlap.
    runs = {}
    for e in _executions(output):
        runs.setdefault(e["trial_id"], []).append(e["fold"])
    assert {k: sorted(v) for k, v in runs.items()} == {t: [0, 1] for t in trials["trial_id"]}
    first_epochs = []  # (start, end) of each fold's first epoch, from its checkpoint
    for fold in (0, 1):
        metrics = output / "ray_results" / f"{EXPERIMENT}-{trials['trial_id'][0]}-fold{fold}" / "epoch_000" / "metrics.json"
        ended = metrics.stat().st_mtime
        first_epochs.append((ended - json.loads(metrics.read_text())["epoch_seconds"], ended))
    assert max(s for s, _ in first_epochs) < min(e for _, e in first_epochs), first_epochs

    best = json.loads((output / "best.json").read_text())
    checkpoint = Path(best["checkpoint"])
    assert set(best["fold_checkpoints"]) == {"0", "1"} and best["value"] == pytest.approx(trials["val_pearson"].max())
    for d in (checkpoint, checkpoint / "fold_0", checkpoint / "fold_1"):
        assert (d / "model.safetensors").is_file() and (d / "config.json").is_file()


def _terminated_trials(experiment: Path) -> set[str]:
    """Trials the sweep's saved state records as finished (what a restore will keep)."""
    from ray.tune import ExperimentAnalysis

    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    try:
        return {t.trial_id for t in ExperimentAnalysis(str(experiment)).trials if t.status == "TERMINATED"}
    except Exception:  # nothing saved yet, or a state file being replaced
        return set()


def _runs_mid_training(storage: Path) -> set[str]:
    """Trials whose Train run has recorded an epoch checkpoint but not its final one. Ray
    Train writes a checkpoint's directory before it records it: a run killed in between
    has an ``epoch_*`` directory and rightly starts afresh, so the directory is not enough."""
    runs = storage.glob(f"{EXPERIMENT}-*-fold0")
    return {d.name.split("-")[1] for d in runs if run_state(str(storage), d.name) == "resumed"}


@pytest.mark.reliability  # a killed driver and its cluster: minutes (make test-reliability)
def test_resume_after_the_driver_is_killed_does_not_rerun_finished_trials(unbc_dir, tmp_path):
    """The job starts its own local Ray. Kill it (driver and cluster) once a trial has
    finished and another is mid-training; ``--resume`` then finishes the sweep: finished
    trials do not run again, the interrupted one continues from its epoch checkpoint."""
    space = tmp_path / "space.yaml"
    space.write_text(f"workload: pain\nfixed: {{{TINY_FIXED}}}\nparams:\n  lr: {{distribution: loguniform, low: 3e-4, high: 3e-3}}\n")
    output = tmp_path / "sweep"
    cmd = [
        sys.executable, str(ROOT / "jobs" / "sweep.py"), "--workload", "pain", "--space", str(space),
        "--data-dir", str(unbc_dir), "--num-samples", "4", "--max-concurrent", "2", "--cpus-per-worker", "0.5",
        "--wandb", "off", "--output", str(output),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    storage = output / "ray_results"

    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.time() + 480
            while driver.poll() is None and time.time() < deadline:
                finished = _terminated_trials(storage / EXPERIMENT)
                if finished and _runs_mid_training(storage) - finished:
                    break
                time.sleep(1)
            assert driver.poll() is None, "the sweep ended before it could be interrupted:\n" + (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "no trial finished in time"
        finally:
            kill_tree(driver)
    killed_at = time.time()
    finished_before = _terminated_trials(storage / EXPERIMENT)
    interrupted = _runs_mid_training(storage) - finished_before
    assert 1 <= len(finished_before) < 4 and interrupted

    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=480)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    trials = pd.read_csv(output / "trials.csv", dtype={"trial_id": str})  # an all-digit id is still an id
    assert len(trials) == 4 and trials["status"].isin(["COMPLETED", "EARLY_STOPPED"]).all()
    executions = _executions(output)
    counts = {t: sum(e["trial_id"] == t for e in executions) for t in trials["trial_id"]}
    after = [(e["trial_id"], e["state"]) for e in executions if e["time"] > killed_at]
    print(f"\nfinished before the kill: {sorted(finished_before)}; interrupted: {sorted(interrupted)}; "
          f"executions per trial: {counts}; after the kill: {after}")  # fmt: skip
    for t in finished_before:  # a finished trial ran once, before the kill
        assert counts[t] == 1 and t not in dict(after)
    for t in interrupted:  # continued from its checkpoint, not trained again from scratch
        assert dict(after)[t] in ("resumed", "finished")
    for t in finished_before | interrupted:  # (a trial killed before its first checkpoint starts afresh)
        assert sum(e["trial_id"] == t and e["state"] == "fresh" for e in executions) == 1
    assert (output / "best_checkpoint" / "model.safetensors").is_file()
