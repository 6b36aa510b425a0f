"""Experiment tracking with Weights & Biases, through Ray's integrations.

Offline by default (runs are written under ``OUTPUT/wandb`` and can be synced later with
``wandb sync``); ``online`` needs ``WANDB_API_KEY`` or a ``wandb login``; ``off`` writes
nothing. Tune experiments (CV, sweeps) log through Tune's ``WandbLoggerCallback``; a single
Train run through ``WandbReports``, a Train callback.
"""

from __future__ import annotations

import os
from pathlib import Path

import ray.train

WANDB_MODES = ("off", "offline", "online")


def _wandb_dir(mode: str, output_dir: str | Path) -> Path | None:
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb mode must be one of {WANDB_MODES}, got {mode!r}")
    if mode == "off":
        return None
    wandb_dir = Path(output_dir).resolve() / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_MODE"] = mode  # read by Ray's integration before any API-key lookup
    os.environ.setdefault("WANDB_SILENT", "true")
    return wandb_dir


def tune_callbacks(mode: str, project: str, group: str, output_dir: str | Path) -> list:
    """Tune callbacks that log every trial (none for ``off``)."""
    wandb_dir = _wandb_dir(mode, output_dir)
    if wandb_dir is None:
        return []
    from ray.air.integrations.wandb import WandbLoggerCallback

    return [WandbLoggerCallback(project=project, group=group, mode=mode, dir=str(wandb_dir), log_config=True)]


class WandbReports(ray.train.UserCallback):
    """Logs every report of one Train run (runs in Train's controller)."""

    def __init__(self, mode: str, project: str, name: str, wandb_dir: Path):
        self.mode, self.project, self.name, self.dir = mode, project, name, str(wandb_dir)
        self._run = None

    def after_report(self, run_context, metrics, checkpoint):
        import wandb

        if self._run is None:
            self._run = wandb.init(project=self.project, name=self.name, dir=self.dir, mode=self.mode, reinit="create_new")
        report = metrics[0]
        self._run.log({k: v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        if report.get("final"):
            self._run.finish()
            self._run = None
            wandb.teardown()  # stop the wandb service now: its atexit hook fails once the controller's connection is gone


def train_callbacks(mode: str, project: str, name: str, output_dir: str | Path) -> list:
    """Train callbacks that log a single run (none for ``off``)."""
    wandb_dir = _wandb_dir(mode, output_dir)
    return [] if wandb_dir is None else [WandbReports(mode, project, name, wandb_dir)]
