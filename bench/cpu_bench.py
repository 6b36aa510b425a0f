"""The CPU's own limit: how close the models' forward passes come to the machine's matmul rate.

    python bench/cpu_bench.py [--quick]     # prints JSON; bench/run.py calls run_cpu_bench()

- ``matmul``: GFLOP/s of a square float32 ``torch.mm`` (2 n³ FLOPs) on one thread and on all
  of them, measured in this run — the most this CPU does with PyTorch's own kernels;
- ``models``: forward FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` and
  forward time, as GFLOP/s, for the models at the batch sizes the benchmarks and the
  laptop presets train with (ViTPain ``tiny``: 16 × 48 px faces + references; C3D ``tiny``
  mouse preset: 8 windows × 48 frames × 48 px), and in the full run for shapes nearer the
  papers' (ViTPain ``small`` backbone at 224 px, standard C3D on a 16-frame 112 px clip).

Forward passes are timed in evaluation mode without autograd (``forward``) and in training
mode with autograd recording (``forward_train``, what a training step pays before its
backward), median of ``repeats`` timings, each at least ``seconds`` long.

``ops``: where one forward's time goes, from ``torch.profiler``: the share of the operators'
own CPU time by kind (matrix multiplies, attention, convolution, the rest), and the GFLOP/s
the matrix multiplies alone reach at the model's own shapes — whether the gap to the
1024² matmul is in the multiplies or around them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

try:
    import affectlab  # noqa: F401
except ImportError:  # not installed: use the source root, as the jobs do
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_utils import forward_flop_counts, forward_flops, load_average, ratio, summary, time_calls, torch_threads  # noqa: E402


def matmul_gflops(n: int, threads: int, seconds: float, repeats: int) -> dict:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    with torch_threads(threads):
        rates = [2 * n**3 / time_calls(lambda: torch.mm(a, b), seconds) / 1e9 for _ in range(repeats)]
    return {"n": n, "threads": threads, "gflops": summary(rates)}


def vitpain_case(backbone: str, image_size: int, batch: int):
    import torch

    from affectlab.workloads.pain import PRESETS, PainConfig, PainWorkload

    values = {**PRESETS["tiny"], "image_size": image_size, "batch_size": batch}
    if backbone != "tiny":
        values.update(backbone=backbone, fusion_heads=6)
    cfg = PainConfig(**values)
    torch.manual_seed(0)
    model = PainWorkload().build_model(cfg, pretrained=False)
    image = torch.rand(batch, 3, image_size, image_size)
    return model, (image, torch.rand(batch, 3, image_size, image_size))


def c3d_case(light: bool, width: float, frames: int, size: int, batch: int):
    import torch

    from affectlab.models.mouse_c3d import build_c3d

    torch.manual_seed(0)
    return build_c3d(light=light, width=width), (torch.rand(batch, frames, size, size),)


def model_rate(model, inputs, threads: int, seconds: float, repeats: int) -> dict:
    import torch

    flops = forward_flops(model.eval(), *inputs)

    def infer():
        with torch.no_grad():
            model(*inputs)

    with torch_threads(threads):
        forward = [flops / time_calls(infer, seconds) / 1e9 for _ in range(repeats)]
        model.train()
        train = [flops / time_calls(lambda: model(*inputs), seconds) / 1e9 for _ in range(repeats)]
    model.eval()
    return {"forward_gflop": flops / 1e9, "threads": threads, "forward_gflops": summary(forward), "forward_train_gflops": summary(train)}


# aten operator → kind; what is not listed is element-wise or data movement ("other")
OP_KINDS = {
    "aten::mm": "matmul", "aten::addmm": "matmul", "aten::bmm": "matmul", "aten::baddbmm": "matmul",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention", "aten::_scaled_dot_product_attention_math": "attention",
    "aten::mkldnn_convolution": "convolution", "aten::convolution": "convolution", "aten::_convolution": "convolution",
}  # fmt: skip


def op_breakdown(model, inputs, threads: int = 1, calls: int = 10) -> dict:
    """Share of one forward's operator self-time by kind, and the matmuls' own GFLOP/s."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    matmul_flops = sum(n for op, n in forward_flop_counts(model.eval(), *inputs).items() if OP_KINDS.get(op) == "matmul")
    with torch_threads(threads), torch.no_grad():
        model(*inputs)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                model(*inputs)
    seconds: dict[str, float] = {}
    for event in prof.key_averages():
        kind = OP_KINDS.get(event.key, "other")
        seconds[kind] = seconds.get(kind, 0.0) + event.self_cpu_time_total / 1e6 / calls
    total = sum(seconds.values())
    return {
        "share": {k: v / total for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])},
        "ms_per_forward": total * 1e3,
        "matmul_gflops": matmul_flops / seconds["matmul"] / 1e9 if seconds.get("matmul") else None,
    }


def run_cpu_bench(quick: bool = False) -> dict:
    repeats = 1 if quick else 3
    seconds = 0.5 if quick else 1.5
    cpus = os.cpu_count() or 1
    out = {"load_average_1m_at_start": load_average(), "repeats": repeats, "cpus": cpus}
    out["matmul"] = {"one_thread": matmul_gflops(1024, 1, seconds, repeats), "all_threads": matmul_gflops(1024, cpus, seconds, repeats)}
    one, every = out["matmul"]["one_thread"]["gflops"]["median"], out["matmul"]["all_threads"]["gflops"]["median"]
    cases = {
        "vitpain_tiny_48px_batch16": (vitpain_case, ("tiny", 48, 16)),
        "c3d_tiny_preset_48f_48px_batch8": (c3d_case, (False, 0.125, 48, 48, 8)),
    }
    if not quick:
        cases["vitpain_small_224px_batch4"] = (vitpain_case, ("small", 224, 4))
        cases["c3d_standard_16f_112px_batch1"] = (c3d_case, (False, 1.0, 16, 112, 1))
    out["models"] = {}
    for name, (build, args) in cases.items():
        model, inputs = build(*args)
        figures = model_rate(model, inputs, 1, seconds, repeats)
        figures["ops"] = op_breakdown(model, inputs)
        figures["ops"]["matmul_vs_matmul_1024"] = ratio(figures["ops"]["matmul_gflops"], one)
        figures["forward_vs_matmul_one_thread"] = ratio(figures["forward_gflops"]["median"], one)
        figures["forward_train_vs_matmul_one_thread"] = ratio(figures["forward_train_gflops"]["median"], one)
        every_threads = model_rate(model, inputs, cpus, seconds, 1) if cpus > 1 else None
        if every_threads:
            figures["all_threads_forward_gflops"] = every_threads["forward_gflops"]["median"]
            figures["all_threads_forward_vs_matmul"] = ratio(every_threads["forward_gflops"]["median"], every)
        out["models"][name] = figures
    out["ratios"] = {
        "forward_vs_matmul": out["models"]["vitpain_tiny_48px_batch16"]["forward_vs_matmul_one_thread"],
        "c3d_forward_vs_matmul": out["models"]["c3d_tiny_preset_48f_48px_batch8"]["forward_vs_matmul_one_thread"],
        "matmul_all_vs_one_thread": ratio(every, one),
        # the tiny ViTPain's own matrix multiplies, at its shapes, against the 1024² one
        "forward_matmuls_vs_matmul": out["models"]["vitpain_tiny_48px_batch16"]["ops"]["matmul_vs_matmul_1024"],
    }
    if "vitpain_small_224px_batch4" in out["models"]:
        out["ratios"]["vitpain_small_224_forward_vs_matmul"] = out["models"]["vitpain_small_224px_batch4"]["forward_vs_matmul_one_thread"]
    return out


if __name__ == "__main__":
    print(json.dumps(run_cpu_bench(quick="--quick" in sys.argv), indent=2, default=float))
