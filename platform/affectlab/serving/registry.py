"""Which models a served directory offers, by id.

A served directory is one of:

- a checkpoint (``model.safetensors`` + ``config.json``): id ``best``;
- a single run's job output holding ``checkpoint/``: id ``best``;
- a sweep output holding ``best_checkpoint/``: id ``best`` (and, for a sweep over CV
  folds, the fold ids below from ``best_checkpoint/fold_<k>/``);
- a CV output holding ``fold_<k>/`` checkpoints: ids ``fold<k>`` and ``ensemble`` (every
  fold at once, averaged).

The table of ids is built once from the directory. A request's id is matched against a
strict pattern and then looked up in that table; it never becomes part of a path, so no id
can reach outside the directory.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from affectlab.train.checkpoint import CONFIG_FILE, MODEL_FILE, CheckpointError

MODEL_ID = re.compile(r"(best|ensemble|fold\d{1,4})")
FOLD_DIR = re.compile(r"fold_(\d{1,4})")
SWEEP_BEST = "best_checkpoint"
RUN_CHECKPOINT = "checkpoint"  # where a single-run job copies its final checkpoint


class UnknownModel(LookupError):
    """A request named a model id the served directory does not have."""


@dataclass(frozen=True)
class Member:
    """One checkpoint directory; ``fold`` is its CV fold, when it is one."""

    path: Path
    fold: int | None = None


@dataclass(frozen=True)
class ModelEntry:
    """A servable model: one checkpoint, or every fold of a CV output (``ensemble``)."""

    model_id: str
    root: Path  # the served directory (a CV output keeps its fold thresholds there)
    members: tuple[Member, ...]
    config: dict  # the first member's hyper-parameters (``config.json`` → ``config``)

    @property
    def is_ensemble(self) -> bool:
        return self.model_id == "ensemble"


def is_checkpoint(path: Path) -> bool:
    return (path / MODEL_FILE).is_file() and (path / CONFIG_FILE).is_file()


def _read_config(path: Path, workload: str) -> dict:
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: not readable JSON ({e})") from e
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise CheckpointError(f"{path / CONFIG_FILE}: expected an object with keys 'workload' and 'config'")
    if config.get("workload") != workload:
        raise CheckpointError(f"{path} is a {config.get('workload')!r} checkpoint; this server serves {workload!r}")
    return config["config"]


def _folds(directory: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := FOLD_DIR.fullmatch(p.name)) and is_checkpoint(p)]
    return sorted(found)


class ModelRegistry:
    """The ids a served directory offers and the checkpoints behind each."""

    def __init__(self, root: str | Path, workload: str, default_model: str | None = None):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise CheckpointError(f"{root}: no such directory (give a checkpoint, CV or sweep output directory)")
        self.workload = workload
        self.entries: dict[str, ModelEntry] = {}

        candidates = (self.root, self.root / SWEEP_BEST, self.root / RUN_CHECKPOINT)
        best = next((p for p in candidates if is_checkpoint(p)), self.root / SWEEP_BEST)
        if is_checkpoint(best):
            self._add("best", (Member(best),))
        folds = _folds(self.root) or (_folds(best) if best.is_dir() else [])
        for k, path in folds:
            self._add(f"fold{k}", (Member(path, k),))
        if folds:
            self._add("ensemble", tuple(Member(p, k) for k, p in folds))
        if not self.entries:
            raise CheckpointError(
                f"{self.root}: nothing to serve; expected a checkpoint ({MODEL_FILE} + {CONFIG_FILE}), "
                f"a job output with {RUN_CHECKPOINT}/ or fold_<k>/ checkpoints, or a sweep output with {SWEEP_BEST}/"
            )
        self.default_id = default_model or ("best" if "best" in self.entries else "ensemble")
        if self.default_id not in self.entries:
            raise CheckpointError(f"default model {default_model!r} is not in {self.root}; available: {self.ids()}")

    def _add(self, model_id: str, members: tuple[Member, ...]) -> None:
        self.entries[model_id] = ModelEntry(model_id, self.root, members, _read_config(members[0].path, self.workload))

    def ids(self) -> list[str]:
        return list(self.entries)

    def get(self, model_id: str | None) -> ModelEntry:
        """The entry for ``model_id`` (``None`` or empty: the default model)."""
        if not model_id:
            return self.entries[self.default_id]
        if not isinstance(model_id, str) or not MODEL_ID.fullmatch(model_id):
            raise UnknownModel(f"invalid model id {str(model_id)[:64]!r}; available: {self.ids()}")
        if model_id not in self.entries:
            raise UnknownModel(f"unknown model id {model_id!r}; available: {self.ids()}")
        return self.entries[model_id]


def load_members(entry: ModelEntry, build, agree_on: tuple[str, ...]) -> tuple[list, object, str]:
    """Every member's model, on CUDA when there is one, and the first member's config.

    Read from safetensors + JSON only, never a pickle; ``build(run config dict)`` returns
    ``(model, config)`` (see ``train.checkpoint.load_model``). The members of an ensemble
    must agree on the config fields ``agree_on`` (what decoding depends on), else
    ``CheckpointError``. Returns ``(models, config, device)``.
    """
    import torch

    from affectlab.train.checkpoint import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = [load_model(member.path, build, device)[:2] for member in entry.members]
    if len({tuple(getattr(cfg, name) for name in agree_on) for _, cfg in loaded}) > 1:
        raise CheckpointError(f"{entry.root}: the folds differ in {', '.join(agree_on)}; serve them one by one")
    return [net for net, _ in loaded], loaded[0][1], device
