"""The contract a workload fulfils so the platform can train, sweep and serve it.

The platform (``train``, ``tune``, ``serving``) never imports a workload: jobs look one up
in the registry (``affectlab.workloads.get_workload``) and hand the object down. Every
registered workload passes ``tests/test_workload_contract.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from affectlab.train.config import TrainConfig, config_to_dict, make_config

__all__ = ["Workload", "WorkloadDefaults", "TrainConfig", "make_config", "config_to_dict"]


@runtime_checkable
class Workload(Protocol):
    """What the platform calls. ``cfg`` is always an instance of ``config_class``."""

    name: str
    config_class: type[TrainConfig]  # a dataclass whose defaults are the original system's
    eval_splits: tuple[str, ...]  # predicted once, with the selected weights, at the end of a run
    metric_names: tuple[str, ...]  # the keys ``evaluate`` returns; ``select_metric`` is "val_" + one

    def make_config(self, values: dict | None = None) -> TrainConfig:
        """A config from a dict, naming any unknown key."""

    def datasets(self, cfg: Any, fold: int | None) -> dict:
        """Ray Datasets: ``train`` (split across workers; may carry ``sample_weight`` with mean 1
        and a unique ``sample_id`` for a per-epoch weighted draw), ``val`` (inner validation
        split, for checkpoint selection) and the ``eval_splits`` the data has.
        ``fold=None``: no folds (production, or a dataset with a fixed split)."""

    def build_model(self, cfg: Any, pretrained: bool | None = None) -> torch.nn.Module:
        """The model; ``pretrained=False`` never downloads or reads weights (loading a checkpoint)."""

    def param_groups(self, model: torch.nn.Module, cfg: Any) -> list[dict]:
        """AdamW parameter groups (learning rates, weight decay)."""

    def train_step(self, model: torch.nn.Module, batch: dict, cfg: Any, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one batch and the terms to log. ``generator`` seeds every random choice."""

    def predict(self, model: torch.nn.Module, batches: Iterable[dict], cfg: Any) -> dict[str, np.ndarray]:
        """Predictions (and targets) over a split, as numpy arrays."""

    def evaluate(self, predictions: dict[str, np.ndarray]) -> dict[str, float]:
        """Metrics of a split's predictions, keyed by ``metric_names``."""

    def synthetic_config(self, data_dir: Any, write: bool = True) -> dict:
        """Config values for a laptop run on synthetic data written in the native format."""

    def n_folds(self, cfg: Any) -> int | None:
        """How many CV folds the data has (None: no folds)."""

    def collate_fn(self, cfg: Any) -> Callable[[dict[str, np.ndarray]], dict] | None:
        """A Ray Data ``collate_fn`` (variable-length rows: pad and mask), or None for the default."""

    train_loop_per_worker: ClassVar[Callable[[dict], None] | None]
    """A stage whose training is not one model / one optimizer brings its own per-worker
    function; None uses the platform's loop (``affectlab.train.loop``)."""


class WorkloadDefaults:
    """Defaults for the optional parts of ``Workload``; workloads inherit them."""

    train_loop_per_worker: ClassVar[Callable[[dict], None] | None] = None

    def collate_fn(self, cfg) -> None:
        return None
