"""Starting or joining Ray the same way from jobs, benchmarks and tests."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import ray

# The source root (`platform/`): where `affectlab` lives when it is not installed.
SOURCE_ROOT = Path(__file__).resolve().parents[1]
_JOB_CONFIG = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by the job manager for submitted drivers
HEALTH_CHECK_INTERVAL = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
# Ray Serve's high-throughput mode (Ray ≥ 2.56, docs: "Enable High Throughput on Ray Serve"):
# HAProxy, not the Python proxy, takes the HTTP requests and hands them straight to the
# ingress replica's own HTTP server; deployments talk over gRPC; user code runs on the
# replica's event loop. On 2 cores it took the pain app from 0.42× to 0.95× the throughput
# of plain uvicorn (docs/performance.md). Set either variable to 0 to turn it off.
# One of the mode's defaults is undone: it keeps up to 1,000 replica log lines in memory, so
# an ingress's start-up messages (token or open, random weights) reached its log late, or
# never if the replica died; one write per line is nothing next to a request's milliseconds.
SERVE_HIGH_THROUGHPUT = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
}
# An ingress replica that stops stays open this long so that HAProxy drops it first (Ray's
# default, 30 s, is for load balancers on other machines); on a local instance 2 s is enough.
DRAINING_PERIOD = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
# Every Train run starts an actor that watches for spot-node preemption notices; a local
# instance has no such nodes, and on 2 cores each extra process is start-up time (~2 s).
PREEMPTION_WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
LOCAL_ONLY = {DRAINING_PERIOD: "2", PREEMPTION_WATCHER: "0"}  # {variable: default} on a local instance


def quiet_train_pg_cleaner() -> None:
    """``worker_process_setup_hook``: silence the placement-group cleaner's polling noise.

    It runs in every worker process, most of which never use Ray Data: importing
    ``ray.data`` here cost each one ~0.6 s of CPU (a 5-fold CV starts ~40 such processes),
    so Ray Data's progress bars are turned off by ``RAY_DATA_DISABLE_PROGRESS_BARS`` in
    ``runtime_env`` instead."""
    # Train's placement-group cleaner finds the cluster through the State API; with more
    # than one Ray instance on a machine that lookup fails and stopped trials keep their CPUs.
    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def runtime_env(local: bool = False) -> dict:
    """What every Ray worker needs to import affectlab without installing it.

    Under ``ray job submit --working-dir .`` each node unpacks the repository and runs the
    workers inside it, so the relative source root ``platform`` goes on ``PYTHONPATH``;
    on a local instance the absolute path of this checkout's source root does.
    Keys the submitted job already sets (``--runtime-env-json``) are left to the job.
    Serve runs in its high-throughput mode (``SERVE_HIGH_THROUGHPUT``) wherever this job
    starts it; ``local``: a local instance, whose ingress replicas drain for 2 s only and
    whose Train runs start no preemption watcher.
    """
    job_env = json.loads(os.environ[_JOB_CONFIG]).get("runtime_env", {}) if _JOB_CONFIG in os.environ else None
    in_working_dir = bool(job_env and job_env.get("working_dir"))
    env = {
        "env_vars": {
            "PYTHONPATH": "platform" if in_working_dir else str(SOURCE_ROOT),
            "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
            "RAY_DATA_DISABLE_PROGRESS_BARS": "1",  # one bar per dataset and epoch; the epoch lines say what matters
            # Train's controller takes one report per poll of its workers, so every
            # `ray.train.report` after the first waits up to this long (2 s by default):
            # on the short epochs of small models that doubled the run time.
            HEALTH_CHECK_INTERVAL: os.environ.get(HEALTH_CHECK_INTERVAL, "0.1"),
            **{name: os.environ.get(name, default) for name, default in SERVE_HIGH_THROUGHPUT.items()},
            **{name: os.environ.get(name, default) for name, default in (LOCAL_ONLY.items() if local else ())},
        },
        "worker_process_setup_hook": "affectlab.ray_utils.quiet_train_pg_cleaner",
    }
    if job_env:
        env["env_vars"] = {k: v for k, v in env["env_vars"].items() if k not in job_env.get("env_vars", {})}
        env = {k: v for k, v in env.items() if k == "env_vars" or k not in job_env}
    return env


def init_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    """Join the cluster named by ``address``/``RAY_ADDRESS``, else start a local one.

    A local instance gets at least 4 logical CPUs, so Ray Data tasks still find a slot
    while Train workers hold theirs on a 2-core laptop (reference/ray.md §3.3), and the
    dashboard, which Ray Train's placement-group cleaner needs.
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=runtime_env())
    else:
        # "local": a fresh instance, never a `ray start` cluster found by chance (use RAY_ADDRESS=auto for that)
        ray.init(
            address="local", num_cpus=num_cpus or max(4, os.cpu_count() or 1), include_dashboard=True, runtime_env=runtime_env(local=True)
        )
    ray.data.DataContext.get_current().enable_progress_bars = False
