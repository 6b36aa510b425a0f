"""Serving benchmark: the pain app on Ray Serve, with and without dynamic batching.

    python bench/serve_bench.py          # prints JSON; bench/run.py calls run_serving_bench()

Measured in one run, on a local Ray instance, with a tiny random-init pain model (the
`tiny` preset's shape, 48 px), so the numbers compare settings rather than hardware:

- ``batched`` / ``unbatched``: throughput, p50 and p99 latency of ``POST /v1/pain/score``
  with ``clients`` concurrent HTTP clients on 127.0.0.1, against the same app deployed
  with ``@serve.batch`` ``max_batch_size`` = ``max_batch_size`` and = 1;
- ``in_process``: the same predictor (decode → predict_batch → encode) called directly
  in batches of ``max_batch_size``, with the model replica's thread count — the ceiling
  Serve's HTTP, routing and batching overheads are measured against.

Every request loop is bounded by time and count and talks to 127.0.0.1 only.
"""

import asyncio
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    import affectlab  # noqa: F401
except ImportError:  # not installed: use the source root, as the jobs do
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

MAX_REQUESTS = 20_000  # per phase, whatever the duration


def _tiny_checkpoint(directory: Path, image_size: int) -> Path:
    import torch

    from affectlab.train.checkpoint import save_checkpoint
    from affectlab.workloads.base import config_to_dict
    from affectlab.workloads.pain import PRESETS, PainConfig, PainWorkload

    torch.manual_seed(0)
    cfg = PainConfig(**{**PRESETS["tiny"], "image_size": image_size})
    model = PainWorkload().build_model(cfg, pretrained=False)
    return save_checkpoint(directory, model.state_dict(), "pain", config_to_dict(cfg), {})


def _face_png(size: int) -> bytes:
    import cv2

    from affectlab.data.synthetic_faces import FaceIdentity, draw_face

    rng = np.random.default_rng(0)
    face = draw_face(np.array([2, 1, 1, 0, 1, 0], float), FaceIdentity.random(rng), size, rng)
    return cv2.imencode(".png", cv2.cvtColor(face, cv2.COLOR_RGB2BGR))[1].tobytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process(checkpoint: Path, image: bytes, batch_size: int, duration_s: float, threads: int) -> dict:
    """Items/s of decode → predict_batch → encode, called directly, ``batch_size`` at a time."""
    import torch

    from affectlab.serving.layer import Payload
    from affectlab.serving.pain import PainPredictor
    from affectlab.serving.registry import ModelRegistry

    predictor = PainPredictor()
    entry = ModelRegistry(checkpoint, "pain").get(None)
    model = predictor.load(entry)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:

        def one_batch():
            inputs = [predictor.decode(Payload({"image": [image]}, "multipart"), entry) for _ in range(batch_size)]
            return [predictor.encode(o) for o in predictor.predict_batch(model, inputs)]

        one_batch()  # warm-up
        start, items = time.perf_counter(), 0
        while time.perf_counter() - start < duration_s and items < MAX_REQUESTS:
            items += len(one_batch())
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    return {"batch_size": batch_size, "torch_threads": threads, "items": items, "throughput_per_s": items / elapsed}


async def _load(url: str, image: bytes, clients: int, duration_s: float, warmup_s: float) -> dict:
    """``clients`` concurrent clients, each sending its next request when the last returns."""
    import httpx

    latencies: list[float] = []
    errors = 0
    files = {"image": ("face.png", image, "image/png")}
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

        await asyncio.gather(*(client() for _ in range(clients)))
    lat = np.array(latencies) * 1000
    return {
        "requests": len(lat),
        "errors": errors,
        "throughput_per_s": len(lat) / duration_s,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
    }


def run_serving_bench(clients: int = 32, max_batch_size: int = 16, duration_s: float = 6.0, image_size: int = 48) -> dict:
    """Serve throughput and latency with and without batching, and against in-process calls."""
    import httpx
    import ray
    from ray import serve

    from affectlab.ray_utils import init_ray
    from affectlab.serving.pain import build

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = _tiny_checkpoint(Path(tmp) / "ckpt", image_size)
        image = _face_png(96)
        replica_cpus = 1  # the model replica's num_cpus: Ray gives it that many torch threads
        results = {"clients": clients, "max_batch_size": max_batch_size, "duration_s": duration_s, "image_size": image_size}
        results["load_average_1m_at_start"] = os.getloadavg()[0]  # other work on the machine skews every figure
        results["in_process"] = in_process(checkpoint, image, max_batch_size, duration_s / 2, replica_cpus)

        owns_ray = not ray.is_initialized()
        init_ray()
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            settings = {"batched": max_batch_size, "unbatched": 1}
            for name, size in settings.items():
                args = {"checkpoint": str(checkpoint), "max_batch_size": size, "batch_wait_timeout_s": 0.005, "num_cpus": replica_cpus}
                serve.run(build(args), name=f"bench_{name}", route_prefix=f"/{name}", blocking=False)
            for name in settings:
                base = f"http://127.0.0.1:{port}/{name}"
                results[name] = asyncio.run(_load(f"{base}/v1/pain/score", image, clients, duration_s, warmup_s=1.5))
                stats = httpx.get(f"{base}/v1/pain/stats", timeout=30).json()
                batches = sum(stats["batches"].values())
                results[name]["mean_batch_size"] = stats["requests"] / batches if batches else None
                results[name]["largest_batch"] = stats["largest_batch"]
        finally:
            serve.shutdown()
            if owns_ray:
                ray.shutdown()

    batched, unbatched, direct = results["batched"], results["unbatched"], results["in_process"]
    results["ratios"] = {
        "batched_vs_unbatched_throughput": batched["throughput_per_s"] / max(unbatched["throughput_per_s"], 1e-9),
        "unbatched_vs_batched_p99": (unbatched["p99_ms"] or 0) / max(batched["p99_ms"] or 1e-9, 1e-9),
        "serve_batched_vs_in_process_throughput": batched["throughput_per_s"] / max(direct["throughput_per_s"], 1e-9),
    }
    return results


if __name__ == "__main__":
    print(json.dumps(run_serving_bench(), indent=2))
