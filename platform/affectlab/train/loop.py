"""The platform's training loop, run by every Ray Train worker.

Reads top to bottom: build the workload's model and optimizer, resume if Ray Train hands
back a checkpoint, then per epoch train on this worker's shard, validate on rank 0, keep
the best weights by the inner-validation metric, and report a checkpoint. At the end,
rank 0 predicts every evaluation split once with the selected weights and reports a
``final`` checkpoint holding the model, its metrics and the predictions.

A checkpoint's ``model.safetensors`` always holds the best weights so far, so any
checkpoint can be served; the latest weights for resuming sit beside it.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
import tokenize
import zipfile
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch
from safetensors.torch import load_file, save_file

from affectlab.train.config import config_to_dict
from affectlab.train.checkpoint import STATE_FILE, CheckpointError, read_checkpoint, save_checkpoint
from affectlab.train.sampling import weighted_epoch

PREFETCH_BATCHES = 1  # batches Ray Data fetches and formats ahead of the step, in a thread
LAST_MODEL_FILE = "last_model.safetensors"
PREDICTIONS_FILE = "predictions.npz"


def cosine_factor(epoch: int, epochs: int, floor: float = 0.01) -> float:
    """LR multiplier: cosine from 1 to ``floor`` over the run (stepped once per epoch)."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * epoch / max(1, epochs)))


def is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None or not np.isfinite(best):
        return bool(np.isfinite(value))
    return value > best if mode == "max" else value < best


def train_loop_per_worker(loop_config: dict) -> None:
    workload = loop_config["workload"]  # the workload object itself: train never imports workloads
    cfg = workload.make_config(loop_config["config"])
    eval_splits = loop_config.get("eval_splits", [])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    use_amp = cfg.amp and device.type == "cuda"
    torch.manual_seed(cfg.seed)

    model = workload.build_model(cfg)
    optimizer = torch.optim.AdamW(workload.param_groups(model, cfg))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: cosine_factor(e, cfg.epochs))
    start_epoch, best_value, best_state = 0, None, None

    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # resume: Ray restarted the workers, or the run was started again by name
        with checkpoint.as_directory() as d:
            best_state, state = load_train_state(d, model)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_value = state["epoch"] + 1, state["best_value"]

    model = ray.train.torch.prepare_model(model)
    module = model.module if hasattr(model, "module") else model
    params = [p for p in module.parameters() if p.requires_grad]
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    train_shard = ray.train.get_dataset_shard("train")
    collate = workload.collate_fn(cfg)  # None: Ray's default tensors; sequences pad and mask here

    def predict(split: str) -> dict[str, np.ndarray]:
        module.eval()
        batches = ray.train.get_dataset_shard(split).iter_torch_batches(batch_size=cfg.batch_size, device=device, collate_fn=collate)
        with torch.autocast(device.type, enabled=use_amp):
            return workload.predict(module, batches, cfg)

    def begin_epoch(epoch: int) -> tuple[torch.Generator, NextEpoch]:
        """The epoch's generator and its batches, the first one already being fetched."""
        generator = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + epoch * world + rank)
        return generator, NextEpoch(epoch_batches(train_shard, cfg, collate, device, epoch, generator))

    upcoming = None
    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        model.train()
        generator, batches = upcoming or begin_epoch(epoch)
        sums, steps, rows = defaultdict(float), 0, 0
        batches = Waited(lockstep(batches, device) if world > 1 else batches)
        for batch in batches:
            with torch.autocast(device.type, enabled=use_amp):
                loss, terms = workload.train_step(model, batch, cfg, generator)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            sums["train_loss"] += loss.item()
            for k, v in terms.items():
                sums[f"train_{k}"] += v
            steps += 1
            rows += batch_rows(batch)
        # the next epoch's pipeline starts while this one is validated and reported
        upcoming = begin_epoch(epoch + 1) if epoch + 1 < cfg.epochs else None
        scheduler.step()
        metrics = {k: v / max(1, steps) for k, v in sums.items()}
        metrics.update(epoch=epoch, lr=optimizer.param_groups[-1]["lr"], train_steps=steps, train_rows=rows,
                       train_seconds=time.perf_counter() - started, train_data_seconds=batches.seconds)  # fmt: skip

        if rank != 0:
            ray.train.report(metrics)  # a barrier: every rank reports as often as rank 0
            continue
        metrics.update({f"val_{k}": v for k, v in workload.evaluate(predict("val")).items()})
        if cfg.select_metric not in metrics:
            raise KeyError(f"select_metric {cfg.select_metric!r} is not among the validation metrics {sorted(k for k in metrics if k.startswith('val_'))}")
        if is_better(metrics[cfg.select_metric], best_value, cfg.select_mode):
            best_value = metrics[cfg.select_metric]
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
            metrics["best_epoch"] = epoch
        if best_state is None:  # the metric is not finite yet: keep the current weights
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        metrics[f"best_{cfg.select_metric}"] = best_value if best_value is not None else float("nan")
        metrics["epoch_seconds"] = time.perf_counter() - started
        print(_epoch_line(epoch, cfg.epochs, metrics, cfg.select_metric), flush=True)
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(d, best_state, workload.name, config_to_dict(cfg), metrics)
            save_train_state(d, module, optimizer, scheduler, epoch, best_value, weights_are_best=metrics.get("best_epoch") == epoch)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d), checkpoint_dir_name=f"epoch_{epoch:03d}")

    # The selected weights predict every evaluation split once.
    if rank != 0:
        ray.train.report({"final": 1})
        return
    if best_state is None:
        raise RuntimeError("training finished without a single validated epoch (epochs must be ≥ 1)")
    with tempfile.TemporaryDirectory() as d:
        # resumable too: a later run with more epochs continues from here
        save_train_state(d, module, optimizer, scheduler, max(start_epoch, cfg.epochs) - 1, best_value, weights_are_best=False)
        module.load_state_dict(best_state)
        final = {"final": 1, f"best_{cfg.select_metric}": best_value}
        arrays, predicting = {}, time.perf_counter()
        for split in eval_splits:
            predictions = predict(split)
            final.update({f"{split}_{k}": v for k, v in workload.evaluate(predictions).items()})
            arrays.update({f"{split}/{k}": v for k, v in predictions.items()})
        final["predict_seconds"] = time.perf_counter() - predicting
        save_checkpoint(d, best_state, workload.name, config_to_dict(cfg), final)
        np.savez(Path(d) / PREDICTIONS_FILE, **arrays)
        ray.train.report(final, checkpoint=ray.train.Checkpoint.from_directory(d), checkpoint_dir_name="final")


def epoch_batches(shard, cfg, collate, device, epoch: int, generator: torch.Generator, prefetch_batches: int = PREFETCH_BATCHES):
    """This worker's training batches of one epoch, as the loop steps through them.

    Ray Data re-runs the pipeline every epoch; the shuffle buffer and the weighted draw are
    seeded per epoch, so each epoch sees another order and another draw.
    """
    batches = shard.iter_torch_batches(
        batch_size=cfg.batch_size, device=device, local_shuffle_buffer_size=cfg.shuffle_buffer or 4 * cfg.batch_size,
        local_shuffle_seed=cfg.seed * 1_000_003 + epoch, collate_fn=collate, prefetch_batches=prefetch_batches,
        pin_memory=device.type == "cuda",
    )  # fmt: skip
    return weighted_epoch(batches, batch_size=cfg.batch_size, seed=cfg.seed, epoch=epoch, generator=generator)


class NextEpoch:
    """An epoch's batches whose first one is fetched in a thread from the start.

    Each epoch Ray Data starts its pipeline again, and the first batch takes ~0.5 s to
    arrive (docs/performance.md): on short epochs most of a worker's wait for data. The
    loop begins the next epoch as soon as one ends, so that start overlaps validation and
    the checkpoint report. The generator is drawn from in the same order either way.
    """

    def __init__(self, batches):
        self._batches, self._first, self._error = iter(batches), [], None
        self._thread = threading.Thread(target=self._fetch_first, name="affectlab-next-epoch", daemon=True)
        self._thread.start()

    def _fetch_first(self) -> None:
        try:
            self._first.append(next(self._batches))
        except StopIteration:
            pass
        except BaseException as error:  # noqa: BLE001 - raised again in the loop's thread
            self._error = error

    def __iter__(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        yield from self._first
        yield from self._batches


class Waited:
    """Iterates ``batches``, summing the seconds spent waiting for each one in ``seconds``:
    an epoch whose ``train_data_seconds`` is a large part of ``train_seconds`` is feed-bound."""

    def __init__(self, batches):
        self.batches, self.seconds = iter(batches), 0.0

    def __iter__(self):
        return self

    def __next__(self):
        started = time.perf_counter()
        try:
            return next(self.batches)
        finally:
            self.seconds += time.perf_counter() - started


def batch_rows(batch) -> int:
    """Rows in a batch: the length of its first column (a collate may return any mapping)."""
    return len(next(iter(batch.values())))


def lockstep(batches, device):
    """Stop every rank at the first step some rank has no batch for (weighted draws make
    shard lengths differ; DDP hangs if ranks take different numbers of steps)."""
    batches = iter(batches)
    while True:
        batch = next(batches, None)
        have = torch.tensor([0 if batch is None else 1], device=device)
        torch.distributed.all_reduce(have, op=torch.distributed.ReduceOp.MIN)
        if not have.item():
            return
        yield batch


def save_train_state(d, module, optimizer, scheduler, epoch: int, best_value, weights_are_best: bool) -> None:
    """What resuming needs beside the best weights: the latest weights (unless they are
    the best ones), the optimizer and schedule, and where the run stood."""
    if not weights_are_best:
        save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, f"{d}/{LAST_MODEL_FILE}")
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch, "best_value": best_value,
             "latest_are_best": weights_are_best}  # fmt: skip
    torch.save(state, Path(d) / STATE_FILE)


def load_train_state(d, model: torch.nn.Module) -> tuple[dict, dict]:
    """Load a checkpoint's latest weights into ``model``; return (best weights, train state).

    The state says where the latest weights are: a checkpoint directory written again after
    a failed upload (a full disk) can still hold the failed attempt's ``last_model`` file."""
    best_state, _, _ = read_checkpoint(d)
    state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
    last = Path(d) / LAST_MODEL_FILE
    latest_are_best = state.get("latest_are_best", not last.exists())  # checkpoints before the key: by the file
    model.load_state_dict(best_state if latest_are_best else load_file(str(last)))
    return best_state, state


def _epoch_line(epoch: int, epochs: int, metrics: dict, select: str) -> str:
    shown = ["train_loss", select, f"best_{select}", "epoch_seconds"]
    parts = [f"{k}={metrics[k]:.4g}" for k in dict.fromkeys(shown) if k in metrics]
    return f"epoch {epoch + 1}/{epochs} " + " ".join(parts)


def read_predictions(checkpoint_dir: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """``{split: {array name: values}}`` from a final checkpoint (no pickles allowed).

    Serving reads this from checkpoints it is pointed at: a truncated or corrupt file is a
    ``CheckpointError`` naming it (numpy, zipfile and zlib each raise their own types)."""
    path = Path(checkpoint_dir) / PREDICTIONS_FILE
    out: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path}: holds a single array, not the .npz of predictions per split")
        with loaded as f:
            for key in f.files:
                split, sep, name = key.partition("/")
                if not (split and sep and name):
                    raise CheckpointError(f"{path}: array {key!r} is not named <split>/<name>")
                out[split][name] = f[key]
    except CheckpointError:
        raise
    except (ValueError, OSError, EOFError, KeyError, SyntaxError, tokenize.TokenError, zipfile.BadZipFile, zlib.error,
            NotImplementedError) as error:  # fmt: skip  # numpy parses each member's .npy header as Python
        raise CheckpointError(f"{path}: not a readable predictions file ({type(error).__name__}: {error})") from None
    return dict(out)
