"""The contract a workload fulfils so the platform can train, sweep and serve it.

A workload is a small object with:

- ``name`` and ``config_class`` (a dataclass derived from ``TrainConfig`` whose defaults
  are the original system's), plus ``make_config(dict)``;
- ``datasets(cfg, fold)`` → Ray Datasets: ``train`` (split across workers), ``val`` (the
  inner validation split, used for checkpoint selection) and any evaluation splits listed
  in ``eval_splits`` (predicted once, with the selected weights, at the end of a run);
- ``build_model(cfg, pretrained=None)`` and ``param_groups(model, cfg)``;
- ``train_step(model, batch, cfg, generator)`` → (loss, {term: value});
- ``predict(model, batches)`` → dict of numpy arrays, and ``evaluate(predictions)`` → metrics;
- ``synthetic_config(data_dir, write)`` → config values for a laptop run on synthetic data
  written in the native format, and ``n_folds(cfg)`` → how many CV folds the data has.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields


@dataclass
class TrainConfig:
    """Settings every workload's training shares. Workload configs extend it."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    seed: int = 42
    select_metric: str = "val_loss"  # checkpoint selection on the inner validation split
    select_mode: str = "min"
    num_workers: int = 1  # Ray Train workers per run (DDP when > 1)
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    amp: bool = True  # mixed precision when on GPU


def make_config(config_class: type, values: dict | None = None):
    """Build a config from a dict, naming any key the config does not have."""
    values = dict(values or {})
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {config_class.__name__} field(s) {unknown}; known fields: {sorted(known)}")
    return config_class(**values)


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
