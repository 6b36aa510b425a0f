"""A Ray Train worker killed mid-epoch (SIGKILL to its process, found through Ray's state
API): the run restarts from its last epoch checkpoint (``FailureConfig``) and finishes
with the requested epochs, each reported exactly once. For pain and mouse, on the
session cluster."""

import json
import os
import signal
import sys
import threading
import time

import pytest
from ray.train import UserCallback

from affectlab.train.checkpoint import read_checkpoint
from affectlab.train.run import fit
from affectlab.workloads import get_workload

pytestmark = pytest.mark.reliability

EPOCHS = 2


class ReportLog(UserCallback):
    """One JSON line per report the run records: epoch (or final) and when (runs in the
    Train controller, so it writes a file)."""

    def __init__(self, path):
        self.path = str(path)

    def after_report(self, run_context, metrics, checkpoint):
        line = {"epoch": metrics[0].get("epoch", "final"), "time": time.time(), "checkpoint": bool(checkpoint)}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")


def _reports(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _train_workers(state: str | None = None) -> list:
    """The session cluster's Ray Train worker actors (named by address: other Ray
    instances on this machine would make the state API's own lookup ambiguous)."""
    import ray
    from ray.util.state import list_actors

    filters = [("class_name", "=", "RayTrainWorker")] + ([("state", "=", state)] if state else [])
    return list_actors(address=ray.get_runtime_context().gcs_address, filters=filters, detail=True, limit=10_000)


def _config(workload_name: str, unbc_dir, mouse_dir):
    workload = get_workload(workload_name)
    if workload_name == "pain":
        from affectlab.workloads.pain import PRESETS

        return workload, workload.make_config({**PRESETS["tiny"], "data_dir": str(unbc_dir), "epochs": EPOCHS, "cpus_per_worker": 0.5}), 0
    from affectlab.workloads.mouse import preset_values

    values = {**preset_values("tiny", "multitask"), "data_dir": str(mouse_dir), "epochs": EPOCHS, "image_size": 32, "window": 32,
              "train_stride": 32, "eval_window": 48, "cpus_per_worker": 1.0, "cv_folds": 3}  # fmt: skip
    return workload, workload.make_config(values), 0


@pytest.mark.parametrize("workload_name", ["pain", "mouse"])
def test_a_worker_killed_mid_epoch_resumes_from_its_last_checkpoint(workload_name, ray_cluster, unbc_dir, mouse_dir, tmp_path):
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # ship ReportLog by value
    workload, cfg, fold = _config(workload_name, unbc_dir, mouse_dir)
    log = tmp_path / "reports.jsonl"
    before = {a.actor_id for a in _train_workers()}
    outcome = {}

    def train():
        try:
            outcome["result"] = fit(workload, cfg, workload.datasets(cfg, fold), str(tmp_path / "storage"), "killed", callbacks=[ReportLog(log)])
        except Exception as error:  # surfaced by the assertions below
            outcome["error"] = error

    runner = threading.Thread(target=train)
    started = time.time()
    runner.start()
    deadline = started + 240
    while runner.is_alive() and not _reports(log) and time.time() < deadline:
        time.sleep(0.2)
    assert [r["epoch"] for r in _reports(log)] == [0], f"epoch 0 was not reported in time: {outcome}"
    time.sleep(1.0)  # into epoch 1
    [victim] = [a for a in _train_workers("ALIVE") if a.actor_id not in before]
    assert len(_reports(log)) == 1, "epoch 1 ended before the kill: not mid-epoch"
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.time()

    replacement_at = None
    while runner.is_alive() and time.time() < killed_at + 300:
        if replacement_at is None and any(a.actor_id not in before and a.actor_id != victim.actor_id for a in _train_workers("ALIVE")):
            replacement_at = time.time()
        time.sleep(0.5)
    runner.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]

    reports = _reports(log)
    epochs = [r["epoch"] for r in reports]
    next_report = next(r["time"] for r in reports if r["epoch"] == 1)
    print(f"\n{workload_name}: killed worker pid {victim.pid} {killed_at - reports[0]['time']:.1f} s into epoch 1; "
          f"replacement worker alive after {(replacement_at or float('nan')) - killed_at:.1f} s; epoch 1 reported "
          f"{next_report - killed_at:.1f} s after the kill; run {time.time() - started:.0f} s; reports {epochs}")  # fmt: skip
    assert epochs == [0, 1, "final"]  # every epoch exactly once: epoch 0 was not trained again
    assert next_report > killed_at and replacement_at is not None
    assert result.error is None and result.metrics["final"] == 1
    kept_epochs = [m["epoch"] for _, m in result.best_checkpoints if "epoch" in m]
    assert len(kept_epochs) == len(set(kept_epochs))

    ours = [a for a in _train_workers() if a.actor_id not in before]
    assert len(ours) == 2 and victim.actor_id in {a.actor_id for a in ours}  # the killed worker and its replacement
    _, config, metrics = read_checkpoint(result.checkpoint.path)
    assert config["config"]["epochs"] == EPOCHS and metrics["final"] == 1
