"""Experiment tracking: Weights & Biases through Ray Tune's logger callback.

Offline by default (runs are written under the output directory and can be synced later
with ``wandb sync``); ``online`` needs ``WANDB_API_KEY`` or a ``wandb login``.
"""

from __future__ import annotations

import os
from pathlib import Path

WANDB_MODES = ("off", "offline", "online")


def tune_callbacks(mode: str, project: str, group: str, output_dir: str | Path) -> list:
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb mode must be one of {WANDB_MODES}, got {mode!r}")
    if mode == "off":
        return []
    from ray.air.integrations.wandb import WandbLoggerCallback

    wandb_dir = Path(output_dir).resolve() / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_MODE"] = mode  # read by Ray's integration before any API-key lookup
    os.environ.setdefault("WANDB_SILENT", "true")
    return [WandbLoggerCallback(project=project, group=group, mode=mode, dir=str(wandb_dir), log_config=True)]
