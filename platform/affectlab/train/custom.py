"""What a workload's own per-worker loop needs to behave like the platform's loop.

A stage whose training is not "one model, one optimizer, one loss" (InfAGenC's
generator <-> recogniser rounds: two models, two optimizers) brings its own
``train_loop_per_worker`` (``Workload.train_loop_per_worker``). These helpers keep the
guarantees of ``affectlab.train.loop``:

- resume from the checkpoint Ray Train hands back (``restored_checkpoint``), reading
  optimizer state with ``torch.load(weights_only=True)`` (``load_state``);
- one ``ray.train.report`` per epoch from every rank — a barrier — with rank 0's
  checkpoint under ``epoch_{e:03d}`` (``report_epoch``);
- a ``final`` checkpoint whose metrics hold ``{"final": 1}``, beside ``predictions.npz``
  (``report_final``); model weights only as safetensors + JSON
  (``affectlab.train.checkpoint.save_checkpoint``, ``load_weights``).

Nothing here knows a workload.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import ray.train
import torch
from safetensors.torch import load_file

from affectlab.train.checkpoint import MODEL_FILE, STATE_FILE, CheckpointError
from affectlab.train.loop import PREDICTIONS_FILE

__all__ = [
    "restored_checkpoint",
    "save_state",
    "load_state",
    "report_epoch",
    "report_final",
    "load_weights",
    "cpu_state",
    "state_fingerprint",
    "epoch_seed",
    "world",
]


def world() -> tuple[int, int]:
    """(rank, world size) of this Train worker."""
    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size()


def epoch_seed(seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> int:
    """The seed of one epoch on one rank, as the platform's loop derives it."""
    return seed * 1_000_003 + epoch * world_size + rank


@contextmanager
def restored_checkpoint() -> Iterator[Path | None]:
    """The directory of the checkpoint Ray Train hands back when it resumes a run (workers
    restarted, or the run started again under its name), or None on a fresh start."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as d:
        yield Path(d)


def save_state(directory: str | Path, state: dict) -> None:
    """Optimizer states, counters and tensors resuming needs (``train_state.pt``); only
    tensors, numbers, strings and containers, so ``load_state`` can refuse anything else."""
    torch.save(state, Path(directory) / STATE_FILE)


def load_state(directory: str | Path) -> dict:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {STATE_FILE} to resume from")
    return torch.load(path, map_location="cpu", weights_only=True)


def report_epoch(epoch: int, metrics: dict, write: Callable[[Path], None]) -> None:
    """Report one epoch. Every rank calls this once per epoch (``report`` is a barrier);
    rank 0 fills a fresh directory with ``write(directory)`` and reports it as the
    checkpoint ``epoch_{epoch:03d}``; the other ranks report the metrics alone."""
    rank, _ = world()
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        write(Path(d))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d), checkpoint_dir_name=f"epoch_{epoch:03d}")


def report_final(metrics: dict, write: Callable[[Path], None], predictions: dict[str, np.ndarray]) -> None:
    """Report the ``final`` checkpoint: ``write(directory)`` (weights, config, metrics),
    then ``predictions.npz`` (keys ``"<split>/<name>"``, read by
    ``affectlab.train.loop.read_predictions``). Metrics gain ``final = 1``."""
    rank, _ = world()
    if rank != 0:
        ray.train.report({"final": 1})
        return
    with tempfile.TemporaryDirectory() as d:
        write(Path(d))
        np.savez(Path(d) / PREDICTIONS_FILE, **predictions)
        ray.train.report({**metrics, "final": 1}, checkpoint=ray.train.Checkpoint.from_directory(d), checkpoint_dir_name="final")


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module``'s state (a snapshot later steps do not change)."""
    module = getattr(module, "module", module)  # under DDP
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def load_weights(module: torch.nn.Module, directory: str | Path, filename: str = MODEL_FILE) -> dict[str, torch.Tensor]:
    """Load ``directory/filename`` (safetensors: nothing is unpickled) into ``module``,
    strictly: every tensor must exist in the module with the same shape. Returns the
    loaded state (for ``state_fingerprint``)."""
    path = Path(directory) / filename
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {filename} (a checkpoint directory holds it)")
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or reshaped:
        raise CheckpointError(
            f"{path}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"other shapes {reshaped[:5]})"
        )
    module.load_state_dict(state)
    return state


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a state dict: equal exactly when
    the weights are equal (a run records which weights it started from)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
