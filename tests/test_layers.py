"""The dependency direction: data → models → metrics → train → tune → serving, with the
workloads on top tying them together. Each check runs in a fresh interpreter, so what an
import drags in is exactly what it needs."""

import json
import subprocess
import sys

import pytest

PROBE = """
import importlib, json, pkgutil, sys
import affectlab
loaded = []
for package in {packages}:
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(info.name)
        loaded.append(info.name)
print(json.dumps({{"loaded": loaded, "modules": sorted(sys.modules)}}))
"""
IO_AND_RAY = ("ray", "cv2", "pandas", "h5py", "tables", "soundfile", "fastapi")


def modules_after_importing(*packages: str) -> tuple[list[str], set[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(packages=list(packages))], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["loaded"], {m.split(".")[0] if not m.startswith("affectlab.") else ".".join(m.split(".")[:2]) for m in out["modules"]}


def test_models_and_metrics_are_pure():
    loaded, modules = modules_after_importing("affectlab.models", "affectlab.metrics")
    assert "affectlab.models.vitpain" in loaded and "affectlab.metrics.pain" in loaded  # it did import them all
    assert not modules & set(IO_AND_RAY), sorted(modules & set(IO_AND_RAY))
    higher = {"affectlab.train", "affectlab.tune", "affectlab.serving", "affectlab.workloads", "affectlab.report"}
    assert not modules & higher, sorted(modules & higher)


def test_data_pulls_in_no_higher_layer():
    loaded, modules = modules_after_importing("affectlab.data")
    assert "affectlab.data.unbc" in loaded
    higher = {"affectlab.models", "affectlab.metrics", "affectlab.train", "affectlab.tune", "affectlab.serving",
              "affectlab.workloads", "affectlab.report"}  # fmt: skip
    assert not modules & higher, sorted(modules & higher)


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("affectlab.train", {"affectlab.tune", "affectlab.serving", "affectlab.workloads"}),
        ("affectlab.tune", {"affectlab.serving", "affectlab.workloads"}),
        ("affectlab.serving", {"affectlab.workloads", "affectlab.tune"}),
        ("affectlab.constants", {"affectlab.data", "affectlab.models", "affectlab.metrics", "torch", "numpy"}),
    ],
)
def test_platform_layers_never_import_upwards(package, forbidden):
    _, modules = modules_after_importing(package)
    assert not modules & forbidden, sorted(modules & forbidden)
