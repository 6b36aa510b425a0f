"""Search-space files: hand-written YAML → a validated Ray Tune ``param_space``.

A space names the workload, the objective (an inner-validation metric and its direction),
settings every trial shares (``fixed``) and the hyper-parameters to search (``params``)::

    workload: pain
    metric: val_pearson        # optional: default is the workload's selection metric
    mode: max
    fixed: {epochs: 6, backbone: tiny}
    params:
      lr: {distribution: loguniform, low: 1e-5, high: 1e-2}
      w_au: {distribution: uniform, low: 0.0, high: 1.0}
      lora_r: {distribution: int, low: 4, high: 16}      # both bounds included
      finetune: {distribution: choice, values: [lora, full]}

Everything is checked before any work starts, against the workload's config dataclass,
and each error names the file, the line and the key (``x.yaml:7: params.lr: ...``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from ray import tune


DISTRIBUTIONS = {
    "loguniform": ("low", "high"),
    "uniform": ("low", "high"),
    "int": ("low", "high"),
    "choice": ("values",),
}
TOP_KEYS = ("workload", "description", "metric", "mode", "fixed", "params")
# Where and how a trial runs comes from the command line, never from a space file.
COMMAND_LINE_FIELDS = ("data_dir", "use_gpu", "num_workers", "cpus_per_worker")


class SpaceError(ValueError):
    """A search-space file that cannot be used, with the file, line and key at fault."""


@dataclass(frozen=True)
class Param:
    """One searched hyper-parameter."""

    name: str
    distribution: str
    low: float | int | None = None
    high: float | int | None = None
    values: tuple = ()

    def domain(self):
        """The Tune domain (OptunaSearch converts it to an Optuna distribution)."""
        if self.distribution == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.distribution == "uniform":
            return tune.uniform(self.low, self.high)
        if self.distribution == "int":
            return tune.randint(self.low, self.high + 1)  # Tune's upper bound is exclusive
        return tune.choice(list(self.values))

    def optuna_distribution(self):
        """The same distribution for Optuna (the sweep report rebuilds the study from trials.csv)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.distribution in ("loguniform", "uniform"):
            return FloatDistribution(self.low, self.high, log=self.distribution == "loguniform")
        if self.distribution == "int":
            return IntDistribution(self.low, self.high)
        return CategoricalDistribution(list(self.values))


@dataclass(frozen=True)
class SearchSpace:
    source: str
    workload: str
    metric: str
    mode: str
    fixed: dict = field(default_factory=dict)
    params: dict[str, Param] = field(default_factory=dict)

    def param_space(self) -> dict:
        return {name: p.domain() for name, p in self.params.items()}

    def to_dict(self) -> dict:
        """Plain data (JSON-able), to record what a sweep searched."""
        params = {}
        for name, p in self.params.items():
            spec = {"distribution": p.distribution}
            spec.update({"values": list(p.values)} if p.distribution == "choice" else {"low": p.low, "high": p.high})
            params[name] = spec
        return {"workload": self.workload, "metric": self.metric, "mode": self.mode, "fixed": dict(self.fixed), "params": params}


def load_space(path: str | Path, registry: Callable[[str], Any], workload: str | None = None) -> SearchSpace:
    """Read and validate a space file; ``workload`` (from the command line) must agree with it.

    ``registry`` maps a workload name to the workload (``affectlab.workloads.get_workload``).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpaceError(f"{path}: cannot read the search-space file ({e.strerror})") from e
    return parse_space(text, registry, str(path), workload)


def parse_space(text: str, registry: Callable[[str], Any], source: str = "<space>", workload: str | None = None) -> SearchSpace:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpaceError(f"{source}: not valid YAML ({e})") from e
    return _Validator(source, _key_lines(root, source)).space(data, workload, registry)


def _key_lines(node, source: str, prefix: tuple = ()) -> dict[tuple, int]:
    """Line number of every mapping key, by its path; duplicate keys are errors
    (``yaml.safe_load`` would silently keep the last one)."""
    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = prefix + (str(key_node.value),)
            line = key_node.start_mark.line + 1
            if path in lines:
                raise SpaceError(f"{source}:{line}: {'.'.join(path)}: duplicate key (first at line {lines[path]})")
            lines[path] = line
            lines.update(_key_lines(value_node, source, path))
    return lines


class _Validator:
    def __init__(self, source: str, lines: dict[tuple, int]):
        self.source, self.lines = source, lines

    def error(self, path: tuple, message: str) -> SpaceError:
        where = self.source
        for n in range(len(path), 0, -1):  # the nearest key that has a line
            if path[:n] in self.lines:
                where = f"{self.source}:{self.lines[path[:n]]}"
                break
        return SpaceError(f"{where}: {'.'.join(map(str, path)) or '(top level)'}: {message}")

    def mapping(self, value, path: tuple) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping of keys to values, got {value!r}")
        return value

    def space(self, data, workload: str | None, registry: Callable[[str], Any]) -> SearchSpace:
        if data is None:
            raise SpaceError(f"{self.source}: the search-space file is empty")
        data = self.mapping(data, ())
        for key in data:
            if key not in TOP_KEYS:
                raise self.error((key,), f"unknown key; expected one of {list(TOP_KEYS)}")
        name = data.get("workload", workload)
        if name is None:
            raise SpaceError(f"{self.source}: workload: missing (name the workload in the file or on the command line)")
        if workload is not None and name != workload:
            raise self.error(("workload",), f"the file is for workload {name!r}, but the sweep is for {workload!r}")
        try:
            config_class = registry(name).config_class
        except ValueError as e:
            raise self.error(("workload",), str(e)) from None

        settings = {f.name: f for f in fields(config_class)}
        fixed = self.mapping(data.get("fixed"), ("fixed",))
        for key, value in fixed.items():
            self.check_field(("fixed", key), value, settings)
        try:
            base = config_class(**fixed)
        except (TypeError, ValueError) as e:
            raise self.error(("fixed",), f"rejected by {config_class.__name__}: {e}") from None

        params = {}
        for key, spec in self.mapping(data.get("params"), ("params",)).items():
            if key in fixed:
                raise self.error(("params", key), "is both fixed and searched; keep one")
            params[key] = self.param(key, spec, settings)
            for value in (params[key].low, params[key].high, *params[key].values):
                if value is None:
                    continue
                try:
                    config_class(**{**fixed, key: value})
                except (TypeError, ValueError) as e:
                    raise self.error(("params", key), f"value {value!r} rejected by {config_class.__name__}: {e}") from None
        if not params:
            raise self.error(("params",), "no hyper-parameters to search")

        metric, mode = self.objective(data, base)
        return SearchSpace(self.source, name, metric, mode, dict(fixed), params)

    def check_field(self, path: tuple, value, settings: dict) -> None:
        """The key is a config setting the file may set, and the value has its kind."""
        key = path[-1]
        if key not in settings:
            raise self.error(path, f"unknown setting; known settings: {sorted(settings)}")
        if key in COMMAND_LINE_FIELDS:
            raise self.error(path, "is a data/cluster setting: give it on the command line, not in a space file")
        default = settings[key].default
        if default is MISSING or default is None or value is None:
            return
        kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(type(default))
        if kinds and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
            raise self.error(path, f"expected a {type(default).__name__} (like the default {default!r}), got {value!r}")

    def param(self, key: str, spec, settings: dict) -> Param:
        path = ("params", key)
        if key not in settings:
            raise self.error(path, f"unknown hyper-parameter; known settings: {sorted(settings)}")
        spec = self.mapping(spec, path)
        dist = spec.get("distribution")
        if dist not in DISTRIBUTIONS:
            raise self.error(path + ("distribution",), f"expected one of {list(DISTRIBUTIONS)}, got {dist!r}")
        allowed = ("distribution",) + DISTRIBUTIONS[dist]
        for k in spec:
            if k not in allowed:
                raise self.error(path + (k,), f"unknown key for a {dist} distribution; expected {list(allowed)}")
        for k in DISTRIBUTIONS[dist]:
            if k not in spec:
                raise self.error(path, f"a {dist} distribution needs {k!r}")

        if dist == "choice":
            values = spec["values"]
            if not isinstance(values, list) or not values:
                raise self.error(path + ("values",), f"expected a non-empty list, got {values!r}")
            for v in values:
                if not isinstance(v, (bool, int, float, str)):
                    raise self.error(path + ("values",), f"choices must be numbers, strings or booleans, got {v!r}")
            if len(set(map(repr, values))) != len(values):
                raise self.error(path + ("values",), f"repeated choice in {values}")
            values = [_number(v) if isinstance(v, str) and isinstance(settings[key].default, float) else v for v in values]
            for v in values:
                self.check_field(path, v, settings)
            return Param(key, dist, values=tuple(values))

        low, high = (self.number(path + (k,), spec[k], integer=dist == "int") for k in ("low", "high"))
        if not low < high:
            raise self.error(path, f"low ({low}) must be below high ({high})")
        if dist == "loguniform" and low <= 0:
            raise self.error(path + ("low",), f"a loguniform distribution needs low > 0, got {low}")
        default = settings[key].default
        if dist != "int" and isinstance(default, int) and not isinstance(default, bool):
            raise self.error(path, f"{key} is an integer setting: use distribution 'int'")
        self.check_field(path, low, settings)
        return Param(key, dist, low, high)

    def number(self, path: tuple, value, integer: bool):
        # YAML 1.1 (PyYAML) reads `1e-5` as a string: accept any string float() reads.
        number = _number(value) if isinstance(value, str) else value
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise self.error(path, f"expected a finite number, got {value!r}")
        if integer:
            if float(number) != int(number):
                raise self.error(path, f"an int distribution needs whole-number bounds, got {value!r}")
            return int(number)
        return float(number)

    def objective(self, data: dict, base) -> tuple[str, str]:
        metric = data.get("metric", base.select_metric)
        if not isinstance(metric, str) or not metric.startswith("val_"):
            raise self.error(("metric",), f"must be an inner-validation metric named val_*, got {metric!r}")
        if "mode" in data:
            mode = data["mode"]
        elif metric == base.select_metric:
            mode = base.select_mode
        else:
            raise self.error(("metric",), f"say whether {metric} is better high or low with mode: max or mode: min")
        if mode not in ("min", "max"):
            raise self.error(("mode",), f"expected 'min' or 'max', got {mode!r}")
        return metric, mode


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text
