"""The settings every workload's training shares, and building configs from dicts."""

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
    select_metric: str = ""  # "val_<metric>": each workload names one its evaluate() returns
    select_mode: str = "max"
    shuffle_buffer: int = 0  # rows in each worker's seeded local shuffle buffer (0: 4 batches)
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
