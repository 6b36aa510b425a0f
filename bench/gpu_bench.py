"""Paper-size ViTPain on one GPU: the platform's epoch against a DataLoader loop, and Serve.

    bench/gpu.sh [OUTPUT_JSON]         # checks for CUDA first, then runs this

Random-init DINOv3-L ViTPain with LoRA (the ``paper`` preset: 224 px, batch 100, AMP),
trained on a synthetic UNBC dataset written at 224 px (speed does not depend on weights):

- ``dataloader``: ``UNBCFrames`` (bench/pain_bench.py) in a ``DataLoader`` with pinned
  memory and ``num_workers`` loader processes, batches copied with ``non_blocking``,
  autocast + ``GradScaler`` as the platform loop does; images/s per epoch, and GPU
  utilisation = Σ (CUDA-event time of each step) ÷ epoch wall time;
- ``platform``: ``PainWorkload.datasets`` → ``fit`` on one GPU Train worker; images/s
  from the loop's ``train_rows / train_seconds``, and GPU utilisation estimated as the
  DataLoader loop's measured GPU time per image × the platform's images ÷ its epoch time
  (the same model and batch do the same GPU work per image);
- ``serving``: the paper-size model behind ``affectlab.serving.pain`` on one GPU replica,
  batched and unbatched, 32 concurrent clients.

Epoch 0 of each side is discarded. Writes JSON to ``--output``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "platform")]

from bench_utils import load_average, ratio, summary  # noqa: E402

EPOCHS = 3  # epoch 0 discarded


def dataloader_epochs(workload, cfg, num_workers: int) -> list[dict]:
    import torch

    from pain_bench import UNBCFrames, fold_training_data, make_loader

    device = torch.device("cuda")
    frames, train, refs, weights = fold_training_data(workload, cfg)
    loader = make_loader(UNBCFrames(frames, train, refs, cfg.image_size), weights, cfg.batch_size, num_workers, cfg.seed, pin_memory=True)
    torch.manual_seed(cfg.seed)
    model = workload.build_model(cfg).to(device)
    optimizer = torch.optim.AdamW(workload.param_groups(model, cfg))
    scaler = torch.amp.GradScaler("cuda")
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    epochs = []
    for _ in range(EPOCHS):
        model.train()
        events, rows = [], 0
        torch.cuda.synchronize()
        started = time.perf_counter()
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            with torch.autocast("cuda"):
                loss, _ = workload.train_step(model, batch, cfg, generator)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            end.record()
            events.append((begin, end))
            rows += len(batch["pspi"])
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        gpu_seconds = sum(b.elapsed_time(e) for b, e in events) / 1000
        epochs.append({"images_per_s": rows / seconds, "gpu_utilisation": gpu_seconds / seconds, "gpu_s_per_image": gpu_seconds / rows})
    return epochs


def platform_epochs(workload, cfg, work: Path) -> list[dict]:
    from affectlab.train.run import fit
    from bench_train import MetricsLog

    datasets = workload.datasets(cfg, 0)
    log = work / "epochs.jsonl"
    fit(workload, cfg, {"train": datasets["train"], "val": datasets["val"]}, str(work / "ray_results"),
        f"gpu-epochs-{time.time_ns()}", callbacks=[MetricsLog(str(log))])  # fmt: skip
    return [m for m in MetricsLog.read(log) if "train_seconds" in m]


def serving(cfg, work: Path, clients: int, duration_s: float) -> dict:
    import torch
    from ray import serve

    from affectlab.serving.pain import build
    from affectlab.train.checkpoint import save_checkpoint
    from affectlab.train.config import config_to_dict
    from affectlab.workloads.pain import PainWorkload
    from serve_bench import _load, _serve_pids, _wait_until_up, face_png, free_port

    torch.manual_seed(0)
    model = PainWorkload().build_model(cfg, pretrained=False)
    checkpoint = save_checkpoint(work / "ckpt", model.state_dict(), "pain", config_to_dict(cfg), {})
    del model
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    out = {"clients": clients, "duration_s": duration_s}
    try:
        settings = {"gpu_unbatched": 1, "gpu_batched": 32}
        for name, size in settings.items():
            args = {"checkpoint": str(checkpoint), "max_batch_size": size, "batch_wait_timeout_s": 0.005, "num_cpus": 2, "num_gpus": 0.5}
            serve.run(build(args), name=name, route_prefix=f"/{name}", blocking=False)
            _wait_until_up(f"http://127.0.0.1:{port}/{name}/healthz", timeout_s=600)
        pids = _serve_pids(list(settings))
        image = face_png(cfg.image_size)
        for name in settings:
            url = f"http://127.0.0.1:{port}/{name}/v1/pain/score"
            out[name] = asyncio.run(_load(url, image, clients, duration_s, 3.0, pids[name]))
    finally:
        serve.shutdown()
    out["batched_vs_unbatched"] = ratio(out["gpu_batched"]["throughput_per_s"], out["gpu_unbatched"]["throughput_per_s"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", default="bench/results/gpu.json")
    p.add_argument("--num-workers", type=int, default=min(8, max(1, (os.cpu_count() or 2) // 2)), help="DataLoader processes")
    args = p.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit(f"bench/gpu_bench.py: no CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda}); run it on a GPU machine")
    import ray

    from affectlab.data.synthetic_pain import write_synthetic_unbc
    from affectlab.ray_utils import init_ray
    from affectlab.workloads import get_workload

    cpus = os.cpu_count() or 2
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cpus": cpus,
               "load_average_1m_at_start": load_average(), "loader_workers": args.num_workers}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_dir = write_synthetic_unbc(work / "unbc", sequences_per_subject=4, frames_per_sequence=20, size=224)
        workload = get_workload("pain")
        # the paper preset (DINOv3-L + LoRA, 224 px, batch 100, AMP), random weights; Ray Data keeps half the CPUs
        cfg = workload.make_config({"data_dir": str(data_dir), "pretrained": False, "epochs": EPOCHS, "use_gpu": True,
                                    "cpus_per_worker": max(1, cpus // 2)})  # fmt: skip
        results["config"] = {k: getattr(cfg, k) for k in ("backbone", "finetune", "image_size", "batch_size", "amp")}
        dl = dataloader_epochs(workload, cfg, args.num_workers)[1:]
        results["dataloader"] = {k: summary([e[k] for e in dl]) for k in dl[0]}
        torch.cuda.empty_cache()
        init_ray()
        try:
            epochs = platform_epochs(workload, cfg, work)[1:]
            gpu_per_image = results["dataloader"]["gpu_s_per_image"]["median"]
            results["platform"] = {
                "images_per_s": summary([e["train_rows"] / e["train_seconds"] for e in epochs]),
                "gpu_utilisation_estimate": summary([gpu_per_image * e["train_rows"] / e["train_seconds"] for e in epochs]),
                "data_wait_fraction": summary([e["train_data_seconds"] / e["train_seconds"] for e in epochs]),
            }
            results["ratios"] = {"platform_vs_dataloader_images_per_s": ratio(
                results["platform"]["images_per_s"]["median"], results["dataloader"]["images_per_s"]["median"])}  # fmt: skip
            results["serving"] = serving(cfg, work, clients=32, duration_s=10.0)
        finally:
            ray.shutdown()
    results["ratios"]["serve_gpu_batched_vs_unbatched_32"] = results["serving"]["batched_vs_unbatched"]
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
