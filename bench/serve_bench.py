"""Serving: the pain predictor on Ray Serve against the same predictor on plain uvicorn.

    python bench/serve_bench.py [--quick]     # prints JSON; bench/run.py calls run_serving_bench()

Measured in one run with a tiny random-init pain model (the ``tiny`` preset's shape, 48 px)
and one 96 px PNG face sent as multipart, by ``clients`` concurrent HTTP clients on
127.0.0.1 (each sends its next request when the last returns), at 1, 8, 32 and 64 clients:

- ``uvicorn``: ``bench/uvicorn_app.py``, a plain FastAPI app in one process, the same
  request parsing and decode, batch size 1 (what a lab would write instead);
- ``serve_unbatched``: ``affectlab.serving.pain.build`` with ``max_batch_size=1``;
- ``serve_batched``: the same app with ``@serve.batch`` at the batch size and wait the
  ``ceiling`` measurement picks (below);
- ``ceiling``: the predictor called in this process on already-decoded inputs
  (``predict_batch`` + ``encode``) at batch sizes 1-64, one torch thread as a 1-CPU replica
  has: what the model alone can do on this CPU, and so what batching can buy.

Every phase is warmed up, then timed; throughput, p50 and p99 per phase; ``repeats``
rounds of every phase, interleaved, and the median of each figure. ``cpu_ms_per_request``
splits the CPU time of each process (client, proxy, ingress, model replica, uvicorn) by the
requests answered in the phase: where each millisecond of a request goes.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    import affectlab  # noqa: F401
except ImportError:  # not installed: use the source root, as the jobs do
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_utils import load_average, median, percentile, ratio, time_calls, torch_threads  # noqa: E402

MAX_REQUESTS = 50_000  # per phase, whatever the duration
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
GOOD_ENOUGH = 0.9  # the smallest batch reaching this share of the best throughput is chosen


def tiny_checkpoint(directory: Path, image_size: int) -> Path:
    import torch

    from affectlab.train.checkpoint import save_checkpoint
    from affectlab.workloads.base import config_to_dict
    from affectlab.workloads.pain import PRESETS, PainConfig, PainWorkload

    torch.manual_seed(0)
    cfg = PainConfig(**{**PRESETS["tiny"], "image_size": image_size})
    model = PainWorkload().build_model(cfg, pretrained=False)
    return save_checkpoint(directory, model.state_dict(), "pain", config_to_dict(cfg), {})


def face_png(size: int) -> bytes:
    import cv2

    from affectlab.data.synthetic_faces import FaceIdentity, draw_face

    rng = np.random.default_rng(0)
    face = draw_face(np.array([2, 1, 1, 0, 1, 0], float), FaceIdentity.random(rng), size, rng)
    return cv2.imencode(".png", cv2.cvtColor(face, cv2.COLOR_RGB2BGR))[1].tobytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the ceiling: the predictor in this process ---------------------------------------------
def ceiling(checkpoint: Path, image: bytes, seconds: float, threads: int = 1) -> dict:
    """Items/s of ``predict_batch`` + ``encode`` on decoded inputs per batch size, and the
    per-request decode time, in this process with ``threads`` torch threads."""
    from affectlab.serving.layer import Payload
    from affectlab.serving.pain import PainPredictor
    from affectlab.serving.registry import ModelRegistry

    predictor = PainPredictor()
    entry = ModelRegistry(checkpoint, "pain").get(None)
    model = predictor.load(entry)
    with torch_threads(threads):
        decode_s = time_calls(lambda: predictor.decode(Payload({"image": [image]}, "multipart"), entry), seconds / 4)
        item = predictor.decode(Payload({"image": [image]}, "multipart"), entry)
        out = {"torch_threads": threads, "decode_ms": decode_s * 1000, "batch_sizes": {}}
        for size in BATCH_SIZES:
            inputs = [item] * size
            s = time_calls(lambda: [predictor.encode(o) for o in predictor.predict_batch(model, inputs)], seconds / len(BATCH_SIZES))
            out["batch_sizes"][str(size)] = {"ms_per_batch": s * 1000, "items_per_s": size / s}
    return out


def choose_batching(ceiling_figures: dict) -> tuple[int, float]:
    """``max_batch_size``: the smallest batch whose in-process throughput is within
    ``GOOD_ENOUGH`` of the best (larger batches only add latency); ``batch_wait_timeout_s``:
    one request's model time at batch 1, so a lone request waits at most as long again,
    while under load the queue fills a batch during the previous one anyway."""
    sizes = {int(b): f["items_per_s"] for b, f in ceiling_figures["batch_sizes"].items()}
    best = max(sizes.values())
    chosen = min(b for b, v in sizes.items() if v >= GOOD_ENOUGH * best)
    wait = round(ceiling_figures["batch_sizes"]["1"]["ms_per_batch"] / 1000, 4)
    return chosen, max(0.001, wait)


# -- load -------------------------------------------------------------------------------------
class CpuMeter:
    """CPU seconds used by a set of processes (``psutil``) between two readings."""

    def __init__(self, pids: dict[str, int]):
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        out = {}
        for name, proc in self.procs.items():
            times = proc.cpu_times()
            out[name] = times.user + times.system
        return out

    def per_request_ms(self, requests: int) -> dict[str, float]:
        end = self._read()
        return {name: (end[name] - self.start[name]) * 1000 / max(1, requests) for name in end}


async def _load(url: str, image: bytes, clients: int, duration_s: float, warmup_s: float, pids: dict[str, int]) -> dict:
    """``clients`` closed-loop clients for ``warmup_s`` + ``duration_s``; the timed part counts."""
    import httpx

    latencies: list[float] = []
    errors = 0
    files = {"image": ("face.png", image, "image/png")}
    meter = None
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        warm_end = time.perf_counter() + warmup_s
        end = warm_end + duration_s

        async def client():
            nonlocal errors
            while (now := time.perf_counter()) < end and len(latencies) < MAX_REQUESTS:
                r = await http.post(url, files=files)
                done = time.perf_counter()
                if now >= warm_end:
                    if r.status_code == 200:
                        latencies.append(done - now)
                    else:
                        errors += 1

        async def start_meter():
            nonlocal meter
            await asyncio.sleep(warmup_s)
            meter = CpuMeter({"client": os.getpid(), **pids})

        await asyncio.gather(start_meter(), *(client() for _ in range(clients)))
    ms = [s * 1000 for s in latencies]
    return {
        "requests": len(ms), "errors": errors, "throughput_per_s": len(ms) / duration_s,
        "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
        "cpu_ms_per_request": meter.per_request_ms(len(ms)) if meter else {},
    }  # fmt: skip


def _wait_until_up(url: str, timeout_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


def warm_up(url: str, image: bytes, clients: int, timeout_s: float = 300) -> None:
    """Until one request succeeds (the model replica loads its model on the first one), then
    one burst of ``clients`` concurrent requests: no phase pays for loading or first calls."""
    import httpx

    files = {"image": ("face.png", image, "image/png")}
    deadline = time.monotonic() + timeout_s
    while httpx.post(url, files=files, timeout=timeout_s).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} answered no request successfully within {timeout_s} s")
        time.sleep(1)

    async def burst():
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            await asyncio.gather(*(http.post(url, files=files) for _ in range(clients)))

    asyncio.run(burst())


def _serve_pids(apps: list[str]) -> dict[str, dict[str, int]]:
    """Each app's front-end processes (the Python proxy; in Serve's high-throughput mode also
    the HAProxy manager actor and its ``haproxy`` process) and its ingress and model replica."""
    import psutil
    import ray
    from ray.util.state import list_actors

    alive = list_actors(address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")], limit=1000)
    front = {"proxy": next(a.pid for a in alive if a.class_name == "ProxyActor")}
    manager = [a.pid for a in alive if a.class_name == "HAProxyManager"]
    if manager:
        front["haproxy_manager"] = manager[0]
        haproxy = [c.pid for c in psutil.Process(manager[0]).children(recursive=True) if c.name() == "haproxy"]
        if not haproxy:
            raise RuntimeError(f"Serve's HAProxyManager (pid {manager[0]}) has no haproxy process: HAProxy did not start, see its log under the Ray session's logs/serve/")
        front["haproxy"] = haproxy[0]
    out = {}
    for app in apps:
        replicas = {a.class_name: a.pid for a in alive if a.class_name.startswith(f"ServeReplica:{app}:")}
        out[app] = {**front, **{("ingress" if k.endswith("Ingress") else "model"): v for k, v in replicas.items()}}
    return out


def run_serving_bench(quick: bool = False, image_size: int = 48) -> dict:
    import httpx
    import ray
    from ray import serve

    from affectlab.ray_utils import init_ray
    from affectlab.serving.pain import build

    repeats = 1 if quick else 3
    levels = (1, 32) if quick else (1, 8, 32, 64)
    duration, warmup = (2.0, 1.0) if quick else (4.0, 1.0)
    replica_cpus = 1  # the model replica's num_cpus: Ray gives it that many torch threads
    results = {"load_average_1m_at_start": load_average(), "repeats": repeats, "clients": list(levels),
               "duration_s": duration, "image_size": image_size, "replica_cpus": replica_cpus}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = tiny_checkpoint(Path(tmp) / "ckpt", image_size)
        image = face_png(96)
        results["ceiling"] = ceiling(checkpoint, image, 4.0 if quick else 10.0, replica_cpus)
        max_batch, wait = choose_batching(results["ceiling"])
        results["batching"] = {"max_batch_size": max_batch, "batch_wait_timeout_s": wait}

        port = free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "platform"), os.environ.get("PYTHONPATH", "")])}
        plain = subprocess.Popen(
            [sys.executable, str(HERE / "uvicorn_app.py"), "--checkpoint", str(checkpoint), "--port", str(port),
             "--threads", str(replica_cpus)], env=env,
        )  # fmt: skip
        owns_ray = not ray.is_initialized()
        init_ray()
        serve_port = free_port()
        quiet = {"enable_access_log": False}  # as uvicorn's access_log=False: no per-request log line
        serve.start(http_options={"host": "127.0.0.1", "port": serve_port}, logging_config=quiet)
        try:
            _wait_until_up(f"http://127.0.0.1:{port}/healthz")
            settings = {"serve_unbatched": (1, 0.0), "serve_batched": (max_batch, wait)}
            for name, (size, timeout) in settings.items():
                args = {"checkpoint": str(checkpoint), "max_batch_size": size, "batch_wait_timeout_s": timeout, "num_cpus": replica_cpus}
                serve.run(build(args), name=name, route_prefix=f"/{name}", blocking=False, logging_config=quiet)
            urls = {"uvicorn": f"http://127.0.0.1:{port}", **{n: f"http://127.0.0.1:{serve_port}/{n}" for n in settings}}
            for url in urls.values():
                _wait_until_up(f"{url}/healthz")
                warm_up(f"{url}/v1/pain/score", image, max(levels))
            pids = {"uvicorn": {"uvicorn": plain.pid}, **_serve_pids(list(settings))}
            runs: dict[str, dict[int, list[dict]]] = {n: {c: [] for c in levels} for n in urls}
            for _ in range(repeats):  # rounds interleaved: a noisy minute hits every target alike
                for name, url in urls.items():
                    for clients in levels:
                        before = httpx.get(f"{url}/v1/pain/stats", timeout=30).json() if name != "uvicorn" else None
                        phase = asyncio.run(_load(f"{url}/v1/pain/score", image, clients, duration, warmup, pids[name]))
                        if before is not None:
                            after = httpx.get(f"{url}/v1/pain/stats", timeout=30).json()
                            phase["mean_batch_size"] = _mean_batch(before, after)
                        runs[name][clients].append(phase)
        finally:
            plain.terminate()
            plain.wait(timeout=30)
            serve.shutdown()
            if owns_ray:
                ray.shutdown()

    results["phases"] = runs
    table = {n: {str(c): _median_phase(runs[n][c]) for c in levels} for n in runs}
    results["median"] = table
    at = str(32 if 32 in levels else max(levels))
    u, sb, su = table["uvicorn"][at], table["serve_batched"][at], table["serve_unbatched"][at]
    results["ratios"] = {
        f"serve_vs_uvicorn_{at}": ratio(sb.get("throughput_per_s"), u.get("throughput_per_s")),
        f"serve_p99_vs_uvicorn_{at}": ratio(sb.get("p99_ms"), u.get("p99_ms")),
        f"serve_unbatched_vs_uvicorn_{at}": ratio(su.get("throughput_per_s"), u.get("throughput_per_s")),
        f"serve_unbatched_p99_vs_uvicorn_{at}": ratio(su.get("p99_ms"), u.get("p99_ms")),
        f"serve_batched_vs_unbatched_{at}": ratio(sb.get("throughput_per_s"), su.get("throughput_per_s")),
        f"uvicorn_vs_ceiling_batch1_{at}": ratio(u.get("throughput_per_s"), results["ceiling"]["batch_sizes"]["1"]["items_per_s"]),
        "ceiling_batched_vs_batch1": ratio(results["ceiling"]["batch_sizes"][str(max_batch)]["items_per_s"],
                                           results["ceiling"]["batch_sizes"]["1"]["items_per_s"]),  # fmt: skip
    }
    return results


def _mean_batch(before: dict, after: dict) -> float | None:
    requests = after["requests"] - before["requests"]
    batches = sum(after["batches"].values()) - sum(before["batches"].values())
    return requests / batches if batches else None


def _median_phase(phases: list[dict]) -> dict:
    keys = ("throughput_per_s", "p50_ms", "p99_ms", "mean_batch_size")
    out = {k: median([p.get(k) for p in phases]) for k in keys if any(p.get(k) is not None for p in phases)}
    cpu = [p["cpu_ms_per_request"] for p in phases if p["cpu_ms_per_request"]]
    if cpu:
        out["cpu_ms_per_request"] = {k: median([c[k] for c in cpu]) for k in cpu[0]}
    return out


if __name__ == "__main__":
    print(json.dumps(run_serving_bench(quick="--quick" in sys.argv), indent=2, default=float))
