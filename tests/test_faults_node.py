"""A worker node lost mid-CV and mid-sweep: on a 3-node local cluster
(``ray.cluster_utils.Cluster``: a head without CPUs, so every trial driver and Train worker
runs on the two worker nodes), SIGKILL the node that runs a fold once another fold has
finished. Every fold still finishes — the Train run restarts its workers on the surviving
node, or Tune retries the trial whose driver died with the node, and either continues from
the fold's epoch checkpoint — the CV's metrics.json has every fold, and no finished fold
runs again. Runs in its own interpreter: it needs its own Ray cluster."""

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 2

SCRIPT = r"""
import json, os, socket, sys, threading, time
os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = "5"  # waiting folds retry their start often
import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from affectlab.data.synthetic_pain import write_synthetic_unbc
from affectlab.ray_utils import runtime_env
from affectlab.train.run import SNAPSHOT_FILE, run_state

mode, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, os.path.join(os.getcwd(), "jobs"))

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def ports():  # other Ray instances on this machine hold the default ports
    return {"dashboard_agent_listen_port": free_port(), "metrics_export_port": free_port(), "runtime_env_agent_port": free_port()}

fast_failure_detection = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": True, "dashboard_port": free_port(),
                                                        "_system_config": fast_failure_detection, **ports()})
nodes = [cluster.add_node(num_cpus=2, **ports()) for _ in range(2)]
cluster.wait_for_nodes()
ray.init(address=cluster.address, runtime_env=runtime_env(), log_to_driver=False)
ray.data.DataContext.get_current().enable_progress_bars = False
data = write_synthetic_unbc(out + "/data", sequences_per_subject=2, frames_per_sequence=8, size=48)  # small: faults, not learning
common = {"epochs": epochs, "cpus_per_worker": 1.0}

events = {}
def run():  # in a thread: Cluster.remove_node must run in the main thread
    try:
        if mode == "cv":
            import unbc_cv
            unbc_cv.main(["--data-dir", str(data), "--folds", "0,1,2", "--max-concurrent", "2", "--preset", "tiny", "--epochs",
                          str(epochs), "--cpus-per-worker", "1", "--wandb", "off", "--output", out + "/cv"])
        else:
            from affectlab.tune.space import parse_space
            from affectlab.tune.sweep import run_sweep
            from affectlab.workloads import get_workload
            from affectlab.workloads.pain import PRESETS
            space = parse_space("workload: pain\nfixed: {epochs: %d}\nparams:\n  lr: {distribution: loguniform, low: 3e-4, high: 3e-3}\n" % epochs,
                                get_workload, "lost_node.yaml")
            run_sweep(get_workload("pain"), space, {**PRESETS["tiny"], "data_dir": str(data), **common}, out + "/sweep", num_samples=3,
                      max_concurrent=2, wandb="off", grace_period=epochs + 1)
    except BaseException as e:  # reported in the output, not lost in a thread
        events["error"] = repr(e)

storage = out + ("/cv/ray_results" if mode == "cv" else "/sweep/ray_results")
def runs():  # each fold's (cv) or trial's (sweep) Train run, by name, as Ray Train recorded it
    names = [n for n in (os.listdir(storage) if os.path.isdir(storage) else []) if "-fold" in n]
    states = {}
    for n in names:
        try:
            states[n] = run_state(storage, n)
        except Exception:  # a record being written
            pass
    return states

def final_mtime(name):
    path = os.path.join(storage, name, "final", "model.safetensors")
    return os.path.getmtime(path) if os.path.exists(path) else None

started = time.time()
worker = threading.Thread(target=run)
worker.start()
victim = None
while worker.is_alive() and time.time() < started + 600:
    states = runs()
    finished = [n for n, s in states.items() if s == "finished"]
    running = [n for n, s in states.items() if s != "finished"]
    if finished and running and all(states[n] == "resumed" for n in running):
        alive = list_actors(address=cluster.address, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")], detail=True)
        if alive:
            victim = alive[0].node_id
            break
    time.sleep(0.5)
if victim is None:
    json.dump({"error": f"no moment with a finished run and a running one on a worker node: {runs()}, {events}"}, open(out + "/events.json", "w"))
    sys.exit(0)
events["finished_before"] = finished
events["interrupted"] = running
events["final_mtimes_before"] = {n: final_mtime(n) for n in finished}
drivers = list_actors(address=cluster.address, filters=[("state", "=", "ALIVE")], detail=True, limit=10_000)
events["trial_drivers_on_victim"] = sorted({a.class_name for a in drivers if a.node_id == victim and "Train" not in a.class_name and a.class_name != "RayTrainWorker"})
[node] = [n for n in nodes if n.node_id == victim]
events["killed_at"] = time.time()
cluster.remove_node(node, allow_graceful=False)  # SIGKILL: the node's raylet and every worker on it
events["killed_after_s"] = events["killed_at"] - started
while worker.is_alive():  # when the interrupted runs record their next checkpoint
    for n in running:
        if n not in events.get("recovered_s", {}) and run_state(storage, n) == "finished":
            events.setdefault("recovered_s", {})[n] = time.time() - events["killed_at"]
    time.sleep(0.5)
worker.join()
events["total_s"] = time.time() - started
states = runs()
events["states"] = states
events["final_mtimes_after"] = {n: final_mtime(n) for n in events["finished_before"]}
events["reports"] = {n: json.load(open(os.path.join(storage, n, SNAPSHOT_FILE)))["current_report_index"] for n in states}
json.dump(events, open(out + "/events.json", "w"))
ray.shutdown()
cluster.shutdown()
"""


def _run(mode: str, tmp_path: Path) -> dict:
    home = tmp_path / "home"
    home.mkdir()
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, mode, str(tmp_path), str(EPOCHS)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=900)
    finally:  # a hung run: stop this test's processes (its cluster), never anyone else's
        if proc.poll() is None:
            for p in psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]:
                p.kill()
    (tmp_path / "cluster.log").write_text(output)
    assert proc.returncode == 0 and (tmp_path / "events.json").is_file(), output[-5000:]
    events = json.loads((tmp_path / "events.json").read_text())
    print(f"\n{mode}: killed a node {events['killed_after_s']:.0f} s in (trial drivers there: {events['trial_drivers_on_victim']}); "
          f"finished before: {events['finished_before']}; interrupted: {events['interrupted']}; "
          f"interrupted runs finished {events.get('recovered_s')} s after the kill; total {events['total_s']:.0f} s")  # fmt: skip
    assert "error" not in events, events["error"]
    assert events["finished_before"] and events["interrupted"]
    assert set(events["states"].values()) == {"finished"}  # every fold / trial finished
    assert events["final_mtimes_after"] == events["final_mtimes_before"]  # no finished run trained again
    assert set(events["reports"].values()) == {EPOCHS + 1}  # each run recorded every epoch and its final report once
    return events


def _executions(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "executions.jsonl").read_text().splitlines()]


def test_cv_survives_a_lost_node(tmp_path):
    events = _run("cv", tmp_path)
    metrics = json.loads((tmp_path / "cv" / "metrics.json").read_text())
    assert [f["fold"] for f in metrics["folds"]] == [0, 1, 2]
    settings = json.loads((tmp_path / "cv" / "cv.json").read_text())
    fold_of = {f"{settings['run_name']}-fold{k}": k for k in range(3)}
    executions = _executions(tmp_path / "cv")
    for name in events["finished_before"]:  # trained once; a trial that died with the node after its
        # Train run finished (its result not yet with Tune) is retried and only reports that result
        states = [e["state"] for e in executions if e["fold"] == fold_of[name]]
        print(f"fold {fold_of[name]} (finished before the kill): trial starts {states}")
        assert states in (["fresh"], ["fresh", "finished"])
    for name in events["interrupted"]:  # retried by Tune from its checkpoint, or its workers restarted by Train
        states = [e["state"] for e in executions if e["fold"] == fold_of[name]]
        print(f"fold {fold_of[name]} (interrupted): trial starts {states}")
        assert states in (["fresh"], ["fresh", "resumed"])


def test_sweep_survives_a_lost_node(tmp_path):
    import pandas as pd

    events = _run("sweep", tmp_path)
    trials = pd.read_csv(tmp_path / "sweep" / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == 3 and (trials["status"] == "COMPLETED").all()
    executions = _executions(tmp_path / "sweep")
    for name in events["finished_before"]:  # as in the CV: trained once, at most re-reported
        states = [e["state"] for e in executions if e["trial_id"] == name.split("-")[1]]
        print(f"trial {name.split('-')[1]} (finished before the kill): starts {states}")
        assert states in (["fresh"], ["fresh", "finished"])
    for name in events["interrupted"]:  # retried by Tune from its checkpoint, or its workers restarted by Train
        states = [e["state"] for e in executions if e["trial_id"] == name.split("-")[1]]
        print(f"trial {name.split('-')[1]} (interrupted): starts {states}")
        assert states in (["fresh"], ["fresh", "resumed"])
    assert (tmp_path / "sweep" / "best_checkpoint" / "model.safetensors").is_file()
