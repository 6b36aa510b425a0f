"""Checkpoints: ``model.safetensors`` + ``config.json`` + ``metrics.json``.

Loading never unpickles, so serving can be pointed at a checkpoint from anywhere. The
optional ``train_state.pt`` (optimizer, schedule, epoch) is only read to resume a run the
platform wrote itself, and even then with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import affectlab
from affectlab.train.outputs import disk_full_error, is_disk_full, partial_path

MODEL_FILE, CONFIG_FILE, METRICS_FILE, STATE_FILE = "model.safetensors", "config.json", "metrics.json", "train_state.pt"


class CheckpointError(ValueError):
    """A checkpoint directory is missing a file or holds something unexpected."""


def versions() -> dict[str, str]:
    import ray
    import timm

    return {"affectlab": affectlab.__version__, "torch": torch.__version__, "timm": timm.__version__, "ray": ray.__version__}


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def as_json(value):
    """``value`` as it reads back from ``write_json`` (tuples → lists, NaN → None, keys → str)."""
    return json.loads(json.dumps(_jsonable(value)))


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` atomically: a reader finds the old file or the new
    one, never a part; on a full disk the old file stays and ``DiskFullError`` says so."""
    path = Path(path)
    tmp = partial_path(path)
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(_jsonable(data), indent=2, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, Exception) and is_disk_full(error):
            raise disk_full_error(path, f"writing {path.name}", f"the previous {path.name} is kept" if path.exists() else "") from error
        raise


def save_checkpoint(directory: str | Path, state_dict: dict[str, torch.Tensor], workload: str, config: dict, metrics: dict) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    save_file(tensors, str(d / MODEL_FILE), metadata={"workload": workload})
    write_json(d / CONFIG_FILE, {"workload": workload, "config": config, "versions": versions()})
    write_json(d / METRICS_FILE, metrics)
    return d


def read_checkpoint(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(state dict, config.json, metrics.json) — safetensors and JSON only."""
    d = Path(directory)
    for name in (MODEL_FILE, CONFIG_FILE):
        if not (d / name).is_file():
            raise CheckpointError(f"{d} is not a checkpoint: missing {name}")
    try:
        config = json.loads((d / CONFIG_FILE).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{d / CONFIG_FILE}: not valid JSON ({e})") from e
    if not isinstance(config, dict) or "workload" not in config or "config" not in config:
        raise CheckpointError(f"{d / CONFIG_FILE}: expected keys 'workload' and 'config'")
    metrics = json.loads((d / METRICS_FILE).read_text()) if (d / METRICS_FILE).is_file() else {}
    try:
        state = load_file(str(d / MODEL_FILE))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{d / MODEL_FILE}: not a readable safetensors file ({e})") from e
    return state, config, metrics


def load_model(directory: str | Path, build: Callable[[dict], tuple[torch.nn.Module, Any]], device: str | torch.device = "cpu"):
    """(model, config, metrics) of a checkpoint: ``build(config.json's "config")`` returns the
    model (no weight download) and the config object the caller reads; the weights are then
    loaded into the model. The platform names no workload here: the caller knows its own."""
    state, config, metrics = read_checkpoint(directory)
    model, cfg = build(config["config"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{directory}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.to(device).eval(), cfg, metrics


def load_matching_weights(model: torch.nn.Module, directory: str | Path) -> tuple[int, int]:
    """Copy the weights whose names and shapes match (stage 1 → stage 2 fine-tuning)."""
    state, _, _ = read_checkpoint(directory)
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matched, strict=False)
    return len(matched), len(own)
