"""Shared fixtures: one local Ray cluster for the whole session, and small synthetic datasets."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "jobs"))  # job modules (argument parsing) are tested too


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray instance: 4 logical CPUs so Data tasks find slots beside Train
    workers on 2 cores, and the dashboard that Train's placement-group cleaner needs."""
    import ray

    from affectlab.ray_utils import runtime_env

    ray.init(address="local", num_cpus=4, include_dashboard=True, log_to_driver=False, runtime_env=runtime_env())
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def unbc_dir(tmp_path_factory):
    """25 synthetic subjects in the UNBC HDF5 layout, 5 folds."""
    from affectlab.data.synthetic_pain import write_synthetic_unbc

    return write_synthetic_unbc(tmp_path_factory.mktemp("unbc"), sequences_per_subject=2, frames_per_sequence=16, size=48)


@pytest.fixture(scope="session")
def pain3d_dir(tmp_path_factory):
    from affectlab.data.synthetic_pain import write_synthetic_pain3d

    return write_synthetic_pain3d(tmp_path_factory.mktemp("pain3d"), n_identities=12, n_pain=4, n_views=2, size=48)


@pytest.fixture()
def tiny_pain_config(unbc_dir):
    """A PainConfig small enough for a CPU test run."""
    from affectlab.workloads.pain import PRESETS, PainConfig

    return PainConfig(**{**PRESETS["tiny"], "data_dir": str(unbc_dir), "epochs": 2, "cpus_per_worker": 0.5})
