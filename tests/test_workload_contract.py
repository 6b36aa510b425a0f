"""Every registered workload fulfils the contract the platform drives (workloads/base.py)."""

import dataclasses
import inspect

import pytest

from affectlab.train.config import TrainConfig
from affectlab.workloads import get_workload, workload_names
from affectlab.workloads.base import Workload

METHODS = [name for name, member in vars(Workload).items() if inspect.isfunction(member) and not name.startswith("_")]


def test_the_contract_names_the_platforms_calls():
    assert {"datasets", "build_model", "train_step", "predict", "evaluate", "collate_fn", "synthetic_config", "n_folds"} <= set(METHODS)


@pytest.mark.parametrize("name", workload_names())
def test_registered_workload_conforms(name, tmp_path):
    workload = get_workload(name)
    assert isinstance(workload, Workload) and workload.name == name
    for method in METHODS:  # same parameters as the contract, in the same order
        want = list(inspect.signature(getattr(Workload, method)).parameters)[1:]
        have = list(inspect.signature(getattr(workload, method)).parameters)
        assert have == want, f"{name}.{method}{tuple(have)} != contract {tuple(want)}"
    assert dataclasses.is_dataclass(workload.config_class) and issubclass(workload.config_class, TrainConfig)
    assert isinstance(workload.eval_splits, tuple) and all(isinstance(s, str) for s in workload.eval_splits)
    assert workload.metric_names and len(set(workload.metric_names)) == len(workload.metric_names)
    assert workload.train_loop_per_worker is None or callable(workload.train_loop_per_worker)

    # the default config and the laptop config both select on a metric evaluate() produces
    cfg = workload.make_config(workload.synthetic_config(tmp_path / "data", write=False))
    for config in (workload.config_class(), cfg):
        assert config.select_metric.startswith("val_"), config.select_metric
        assert config.select_metric[len("val_"):] in workload.metric_names
        assert config.select_mode in ("min", "max")
    assert not (tmp_path / "data").exists()  # write=False writes nothing
    collate = workload.collate_fn(cfg)
    assert collate is None or callable(collate)
    with pytest.raises(ValueError, match="no_such_field"):
        workload.make_config({"no_such_field": 1})
