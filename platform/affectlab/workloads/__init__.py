"""The registry of workloads the platform can drive (see ``base.py`` for the contract)."""

from __future__ import annotations

import importlib

_WORKLOADS = {
    "pain": "affectlab.workloads.pain:PainWorkload",
    "mouse": "affectlab.workloads.mouse:MouseWorkload",
    "infant": "affectlab.workloads.infant:InfantWorkload",
    "probtalk3d": "affectlab.workloads.probtalk3d:ProbTalk3DWorkload",
}


def get_workload(name: str):
    if name not in _WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; available: {sorted(_WORKLOADS)}")
    module, attr = _WORKLOADS[name].split(":")
    return getattr(importlib.import_module(module), attr)()


def workload_names() -> list[str]:
    return sorted(_WORKLOADS)
