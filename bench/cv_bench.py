"""Cross-validation: 5 folds as concurrent Tune trials against the same 5 folds one after
the other in one process.

    python bench/cv_bench.py [--quick]     # prints JSON; bench/run.py calls run_cv_bench()

- ``platform``: ``affectlab.tune.cv.run_cv`` (every fold a Tune trial driving a Ray Train
  run, all five at once), the ``tiny`` preset on synthetic UNBC data, ``epochs`` epochs;
- ``sequential``: a plain PyTorch loop in this process (``DataLoader`` over h5py, the same
  model, step, per-epoch validation and selection, final predictions of every split), the
  five folds one after the other, the same epochs.

Wall time of each; and the platform's overhead = wall − Σ(trial's own training time) ÷
concurrency, as a share of the wall time, where a trial's own time is what its Train
worker reports spending on the work the sequential loop also does: its epochs (training
and validation, ``epoch_seconds``) and its final predictions (``predict_seconds``). The
rest — starting trial, controller and worker processes, Ray Data pipelines, persisting
checkpoints, waiting for CPU — is the platform's.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

try:
    import affectlab  # noqa: F401
except ImportError:  # not installed: use the source root, as the jobs do
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_utils import cv_overhead, load_average, median, ratio, summary  # noqa: E402

FOLDS = [0, 1, 2, 3, 4]


def trial_own_seconds(experiment_dir: Path) -> list[float]:
    """Per trial: Σ ``epoch_seconds`` + ``predict_seconds`` from Tune's ``result.json`` lines."""
    own = []
    for result in sorted(experiment_dir.glob("*/result.json")):
        reports = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        own.append(sum(r.get("epoch_seconds", 0.0) for r in reports) + sum(r.get("predict_seconds", 0.0) for r in reports))
    return own


def platform_cv(workload, cfg, work: Path, name: str) -> dict:
    from affectlab.tune.cv import run_cv

    storage = work / "ray_results"
    started = time.perf_counter()
    folds = run_cv(workload, cfg, FOLDS, work / "out", name, storage_path=str(storage), wandb="off", max_concurrent=len(FOLDS))
    wall = time.perf_counter() - started
    own = trial_own_seconds(storage / name)
    if len(own) != len(FOLDS):
        raise RuntimeError(f"found {len(own)} trial result files under {storage / name}, expected {len(FOLDS)}")
    figures = cv_overhead(wall, own, concurrency=len(FOLDS))
    figures["trial_own_seconds"] = own
    figures["test_pearson"] = [f.metrics.get("test_pearson") for f in folds]
    return figures


def sequential_cv(workload, cfg, out_dir: Path) -> dict:
    """The five folds one after the other in this process, with all its threads."""
    import torch
    from torch.utils.data import DataLoader

    from affectlab.data import pain as pain_data
    from affectlab.data.unbc import UNBC
    from affectlab.train.checkpoint import save_checkpoint
    from affectlab.train.config import config_to_dict
    from affectlab.train.loop import cosine_factor, is_better
    from pain_bench import UNBCFrames, make_loader, plain_epoch

    unbc = UNBC.open(cfg.data_dir, cfg.protocol)
    started = time.perf_counter()
    per_fold = []
    for fold in FOLDS:
        fold_started = time.perf_counter()
        tables = unbc.fold_tables(fold, cfg.inner_val_fraction, cfg.seed)
        train = tables["train"]
        refs = pain_data.training_references(train, 1, cfg.seed)
        loader = make_loader(UNBCFrames(unbc.paths.frames, train, refs, cfg.image_size), pain_data.sample_weights(train),
                             cfg.batch_size, 0, cfg.seed)  # fmt: skip
        evaluation = {
            split: DataLoader(UNBCFrames(unbc.paths.frames, table, pain_data.evaluation_references(
                table, cfg.n_shots, cfg.reference_policy, cfg.seed), cfg.image_size), batch_size=cfg.batch_size)
            for split, table in (("train_eval", train), ("val", tables["val"]), ("test", tables["test"]))
        }  # fmt: skip
        torch.manual_seed(cfg.seed)
        model = workload.build_model(cfg)
        optimizer = torch.optim.AdamW(workload.param_groups(model, cfg))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: cosine_factor(e, cfg.epochs))
        generator = torch.Generator().manual_seed(cfg.seed)
        best_value, best_state = None, None
        for _ in range(cfg.epochs):
            plain_epoch(workload, model, optimizer, loader, cfg, generator)
            scheduler.step()
            model.eval()
            value = workload.evaluate(workload.predict(model, evaluation["val"], cfg))[cfg.select_metric.removeprefix("val_")]
            if is_better(value, best_value, cfg.select_mode) or best_state is None:
                best_value, best_state = value, {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_state)
        model.eval()
        final = {f"{split}_{k}": v for split, batches in evaluation.items()
                 for k, v in workload.evaluate(workload.predict(model, batches, cfg)).items()}  # fmt: skip
        save_checkpoint(out_dir / f"fold_{fold}", best_state, workload.name, config_to_dict(cfg), final)
        per_fold.append({"seconds": time.perf_counter() - fold_started, "test_pearson": final["test_pearson"]})
    return {"wall_s": time.perf_counter() - started, "folds": per_fold, "torch_threads": torch.get_num_threads()}


def run_cv_bench(workdir: Path, quick: bool = False) -> dict:
    from affectlab.data.synthetic_pain import write_synthetic_unbc
    from affectlab.ray_utils import init_ray
    from affectlab.workloads import get_workload
    from affectlab.workloads.pain import PRESETS

    repeats = 1 if quick else 3
    epochs = 1 if quick else 3
    data_dir = write_synthetic_unbc(workdir / "unbc", sequences_per_subject=2, frames_per_sequence=20, size=64)
    workload = get_workload("pain")
    cfg = workload.make_config({**PRESETS["tiny"], "data_dir": str(data_dir), "epochs": epochs, "cpus_per_worker": 0.5})
    results = {"load_average_1m_at_start": load_average(), "repeats": repeats, "folds": len(FOLDS), "epochs": epochs,
               "concurrency": len(FOLDS), "cpus_per_worker": cfg.cpus_per_worker}  # fmt: skip
    sequential = [sequential_cv(workload, cfg, workdir / f"sequential_{r}") for r in range(repeats)]
    init_ray()
    platform = [platform_cv(workload, cfg, workdir / f"platform_{r}", f"bench-cv-{r}-{time.time_ns()}") for r in range(repeats)]
    results["sequential"] = {"wall_s": summary([s["wall_s"] for s in sequential]), "runs": sequential}
    results["platform"] = {
        "wall_s": summary([p["wall_s"] for p in platform]),
        "overhead_s": summary([p["overhead_s"] for p in platform]),
        "overhead_fraction": summary([p["overhead_fraction"] for p in platform]),
        "runs": platform,
    }
    results["ratios"] = {
        "cv_overhead_fraction": median([p["overhead_fraction"] for p in platform]),
        "cv_platform_vs_sequential_wall": ratio(median([p["wall_s"] for p in platform]), median([s["wall_s"] for s in sequential])),
    }
    return results


if __name__ == "__main__":
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        try:
            print(json.dumps(run_cv_bench(Path(tmp), quick="--quick" in sys.argv), indent=2, default=float))
        finally:
            ray.shutdown()
