"""Where the time goes: py-spy on the Ray Train worker, the Serve proxy, ingress and model replica.

    python bench/profile_platform.py train  [--seconds 20] [--out DIR]
    python bench/profile_platform.py serve  [--seconds 15] [--clients 32] [--out DIR]

``train`` runs the pain workload's platform path (``PainWorkload.datasets`` → ``fit``) on
synthetic UNBC data and samples the Train worker while it trains; ``serve`` deploys the
pain app, drives it with concurrent clients and samples the proxy, the ingress and the
model replica at once. py-spy records with ``--idle`` (a thread waiting for data or for a
lock is sampled too) and the raw stacks are folded into the categories of
``TRAIN_CATEGORIES`` / ``SERVE_CATEGORIES``: the share of each process's samples in each.
The raw stacks are kept under ``--out`` for a flame graph (``py-spy`` ``--format raw``
output is the collapsed-stack format flamegraph tools read).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "platform")]

# (category, function, file): a frame ``function (…file…:line)`` matches; None matches any
# function. The first rule matching any frame of a stack wins: specific rules come first.
TRAIN_CATEGORIES = [
    ("validation", "predict", "affectlab/train/loop.py"),
    ("validation", "evaluate", "affectlab/workloads/"),
    ("wait for data (Ray Data → worker)", "__next__", "affectlab/train/loop.py"),
    ("optimizer step", "step", "torch/optim/"),
    ("gradient clipping", "clip_grad_norm_", "torch/nn/utils/"),
    ("backward", "backward", "torch/"),
    ("augmentation", "augment_faces", "affectlab/data/augment.py"),
    ("forward", None, "affectlab/models/"),
    ("loss, targets, .item()", "train_step", "affectlab/workloads/"),
    ("checkpoint + report", "report", "ray/train/"),
    ("other loop code", "train_loop_per_worker", "affectlab/train/loop.py"),
]
SERVE_CATEGORIES = [
    ("multipart parsing", "read_payload", "affectlab/serving/layer.py"),
    ("image decode + resize", "decode", "affectlab/serving/pain.py"),
    ("model forward", None, "affectlab/models/"),
    ("predict_batch (tensors, heads)", "predict_batch", "affectlab/serving/pain.py"),
    ("encode response", "encode", "affectlab/serving/pain.py"),
    ("FastAPI / Starlette", None, "starlette/"),
    ("uvicorn HTTP", None, "uvicorn/"),
    ("Serve batching", None, "serve/batching.py"),
    ("Serve router / handle", None, "serve/_private/router.py"),
    ("Serve replica request path", None, "serve/_private/replica.py"),
    ("Serve proxy", None, "serve/_private/proxy"),
    ("pickling (serialization)", None, "serialization.py"),
    ("Ray core worker", None, "ray/_private/worker.py"),
    ("asyncio event loop", None, "asyncio/"),
]


def _matches(frame: str, function: str | None, path: str) -> bool:
    """py-spy names a method ``Class.method`` and a file by its path under sys.path."""
    name, _, where = frame.partition(" (")
    return path in where and (function is None or name.rsplit(".", 1)[-1] == function)


def fold_stacks(raw: str, categories: list[tuple[str, str | None, str]], keep: str | None = None) -> dict:
    """Collapsed stacks (``frame;frame;... count`` lines) → share of samples per category.

    ``keep``: only stacks with a frame containing it (one thread's work); what matches no
    rule is ``other / idle``."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit() or (keep and keep not in stack):
            continue
        frames = stack.split(";")
        name = next((c for c, fn, path in categories if any(_matches(f, fn, path) for f in frames)), "other / idle")
        counts[name] += int(n)
    total = sum(counts.values())
    return {"samples": total, "share": {k: v / total for k, v in counts.most_common()} if total else {}}


def record(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100", "--idle",
                             "--format", "raw", "--output", str(out), "--nonblocking"],  # fmt: skip
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip


def _actor_pid(class_prefix: str, timeout_s: float = 180) -> int:
    import ray
    from ray.util.state import list_actors

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for actor in list_actors(address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")], limit=1000):
            if actor.class_name.startswith(class_prefix) and actor.pid:
                return actor.pid
        time.sleep(1)
    raise RuntimeError(f"no live actor of class {class_prefix}* within {timeout_s} s")


def profile_train(out: Path, seconds: float) -> dict:
    from affectlab.data.synthetic_pain import write_synthetic_unbc
    from affectlab.ray_utils import init_ray
    from affectlab.train.run import fit
    from affectlab.workloads import get_workload
    from affectlab.workloads.pain import PRESETS

    work = Path(tempfile.mkdtemp(prefix="profile-train-"))
    data_dir = write_synthetic_unbc(work / "unbc", sequences_per_subject=3, frames_per_sequence=20, size=64)
    workload = get_workload("pain")
    cfg = workload.make_config({**PRESETS["tiny"], "data_dir": str(data_dir), "epochs": 40, "cpus_per_worker": 1.0})
    init_ray()
    datasets = workload.datasets(cfg, 0)
    done = threading.Event()
    error: list[BaseException] = []

    def train():
        try:
            fit(workload, cfg, {"train": datasets["train"], "val": datasets["val"]}, str(work / "ray_results"), f"profile-{time.time_ns()}")
        except BaseException as e:  # noqa: BLE001 - reported below
            error.append(e)
        finally:
            done.set()

    threading.Thread(target=train, daemon=True).start()
    pid = _actor_pid("RayTrainWorker")
    time.sleep(25)  # past start-up and epoch 0
    raw = out / "train_worker.txt"
    proc = record(pid, seconds, raw)
    proc.wait()
    if error:
        raise error[0]
    return {"train_worker": fold_stacks(raw.read_text(), TRAIN_CATEGORIES, keep="train_loop_per_worker"), "pid": pid}


def profile_serve(out: Path, seconds: float, clients: int, max_batch_size: int, wait_s: float) -> dict:
    from ray import serve

    from affectlab.ray_utils import init_ray
    from affectlab.serving.pain import build
    from serve_bench import _load, _serve_pids, _wait_until_up, face_png, free_port, tiny_checkpoint, warm_up

    work = Path(tempfile.mkdtemp(prefix="profile-serve-"))
    checkpoint = tiny_checkpoint(work / "ckpt", 48)
    init_ray()
    port = free_port()
    quiet = {"enable_access_log": False}  # as in the benchmark
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=quiet)
    args = {"checkpoint": str(checkpoint), "max_batch_size": max_batch_size, "batch_wait_timeout_s": wait_s, "num_cpus": 1}
    serve.run(build(args), name="profiled", route_prefix="/profiled", blocking=False, logging_config=quiet)
    base = f"http://127.0.0.1:{port}/profiled"
    _wait_until_up(f"{base}/healthz")
    pids = _serve_pids(["profiled"])["profiled"]
    image = face_png(96)
    warm_up(f"{base}/v1/pain/score", image, clients)
    procs = {}

    async def drive():
        load = asyncio.create_task(_load(f"{base}/v1/pain/score", image, clients, seconds + 4, 2.0, pids))
        await asyncio.sleep(3)
        for name, pid in pids.items():
            procs[name] = record(pid, seconds, out / f"serve_{name}.txt")
        return await load

    try:
        phase = asyncio.run(drive())
        for p in procs.values():
            p.wait()
    finally:
        serve.shutdown()
    folded = {name: fold_stacks((out / f"serve_{name}.txt").read_text(), SERVE_CATEGORIES) for name in pids}
    return {"load": phase, "processes": folded, "max_batch_size": max_batch_size, "batch_wait_timeout_s": wait_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("train", "serve"))
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--batch-wait-timeout-s", type=float, default=0.01)
    p.add_argument("--out", default="bench/results/profile")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import ray

    try:
        if args.what == "train":
            result = profile_train(out, args.seconds)
        else:
            result = profile_serve(out, args.seconds, args.clients, args.max_batch_size, args.batch_wait_timeout_s)
    finally:
        ray.shutdown()
    (out / f"{args.what}.json").write_text(json.dumps(result, indent=2, default=float))
    print(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
