"""Folds wait for nodes: on a local multi-node cluster (ray.cluster_utils.Cluster) the CV
job starts with room for one fold, a node joins later, and the waiting folds start on it
without restarting the job. Runs in its own interpreter: it needs its own Ray cluster."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, os, socket, sys, threading, time
os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = "5"  # waiting folds retry their start often
import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from affectlab.data.synthetic_pain import write_synthetic_unbc
from affectlab.ray_utils import runtime_env
from affectlab.tune.cv import run_cv
from affectlab.workloads import get_workload
from affectlab.workloads.pain import PRESETS

out = sys.argv[1]
data = write_synthetic_unbc(out + "/data", sequences_per_subject=2, frames_per_sequence=16, size=48)
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def ports():  # other Ray instances on this machine hold the default ports
    return {"dashboard_agent_listen_port": free_port(), "metrics_export_port": free_port(),
            "runtime_env_agent_port": free_port()}

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": True,
                                                        "dashboard_port": free_port(), **ports()})
ray.init(address=cluster.address, runtime_env=runtime_env(), log_to_driver=False)
ray.data.DataContext.get_current().enable_progress_bars = False
head = ray.get_runtime_context().get_node_id()
workload = get_workload("pain")
# 1.5 CPUs per Train worker: one fold fits on the 2-CPU head, the others must wait
cfg = workload.make_config({**PRESETS["tiny"], "data_dir": str(data), "epochs": 1, "cpus_per_worker": 1.5})

events, results = {}, []
def cross_validate():  # in a thread: Cluster.add_node must run in the main thread
    try:
        results.extend(run_cv(workload, cfg, [0, 1, 2], out + "/cv", "multinode", wandb="off"))
    except Exception as e:  # reported in the output, not lost in a thread
        events["cv_error"] = repr(e)

started = time.time()
cv = threading.Thread(target=cross_validate)
cv.start()
while cv.is_alive() and not list_actors(address=cluster.address, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]):
    time.sleep(1)
events["first_worker_alive"] = time.time()
time.sleep(10)  # the other folds are queued and retrying meanwhile
events["pending_before_join"] = cv.is_alive() and ray.available_resources().get("CPU", 0) < 1.5
events["new_node"] = cluster.add_node(num_cpus=2, **ports()).node_id
events["node_added"] = time.time()
cv.join()
workers = list_actors(address=cluster.address, filters=[("class_name", "=", "RayTrainWorker")], detail=True, limit=1000)
json.dump({  # a file: the raylet's warnings reach this process's stdout too
    "folds": [r.fold for r in results],
    "final": [bool(r.metrics.get("final")) for r in results],
    "worker_nodes": [w.node_id for w in workers],
    "head": head, "started": started, **events,
}, open(out + "/events.json", "w"))
ray.shutdown()
cluster.shutdown()
"""


def test_waiting_folds_start_on_a_node_that_joins_later(tmp_path):
    home = tmp_path / "home"  # a fresh machine's: nothing left in ~ by earlier runs
    home.mkdir()
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "HOME": str(home)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=900,
                          cwd=ROOT, env=env)  # fmt: skip
    assert proc.returncode == 0 and (tmp_path / "events.json").is_file(), (proc.stdout + proc.stderr)[-5000:]
    out = json.loads((tmp_path / "events.json").read_text())
    assert "cv_error" not in out, out["cv_error"]
    assert out["folds"] == [0, 1, 2] and all(out["final"])  # every fold finished, none errored
    assert out["pending_before_join"]  # the head was full while folds waited
    assert out["new_node"] in out["worker_nodes"]  # waiting folds ran on the node that joined
    assert out["head"] in out["worker_nodes"]
    assert out["node_added"] > out["first_worker_alive"] > out["started"]
    assert all((tmp_path / "cv" / f"fold_{k}" / "model.safetensors").is_file() for k in range(3))
