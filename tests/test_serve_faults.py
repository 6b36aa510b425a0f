"""A model replica crashes under load: Serve replaces it, the requests it held fail as 5xx
with a request id (or a broken connection), none hangs, and afterwards every request
succeeds again.

64 concurrent clients post faces to the pain app on the session's Serve (127.0.0.1); the
PainModel replica's process, found through Ray's State API, gets SIGKILL. The figures
(requests failed, time from the kill to the first success on the new replica and to the
last failure) are printed as JSON (``pytest -s``) and recorded in docs/reliability.md.

Also the load-test helpers ``tests/test_soak.py`` uses.
"""

import asyncio
import json
import os
import signal
import time
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from test_serving_pain import face_png, tiny_checkpoint

pytestmark = pytest.mark.reliability

CLIENTS = 64
REQUEST_TIMEOUT_S = 60  # a request without an answer by then is a hang, and fails the test
WARMUP_S = 5  # of steady load before the kill
STEADY_AFTER_S = 10  # of failure-free load after the first success on the new replica, to call it recovered
RECOVERY_LIMIT_S = 120  # from the kill


# -- helpers (test_soak.py uses them too) ------------------------------------------------------
@dataclass
class Outcome:
    kind: str
    start: float  # time.monotonic() when sent
    end: float  # ... when answered or failed
    status: int | None  # None: no HTTP answer (connection error or timeout)
    error: str = ""  # the transport exception's class name
    body: str = ""  # the first 300 characters of a non-200 answer

    @property
    def request_id(self) -> str | None:
        try:
            return json.loads(self.body).get("request_id")
        except (ValueError, AttributeError):
            return None


async def send(client: httpx.AsyncClient, kind: str, method: str, url: str, **kwargs) -> Outcome:
    start = time.monotonic()
    try:
        r = await client.request(method, url, **kwargs)
    except httpx.TimeoutException as e:
        return Outcome(kind, start, time.monotonic(), None, f"timeout ({type(e).__name__})")
    except httpx.TransportError as e:
        return Outcome(kind, start, time.monotonic(), None, type(e).__name__)
    return Outcome(kind, start, time.monotonic(), r.status_code, body="" if r.status_code == 200 else r.text[:300])


def replicas(app: str, deployment: str) -> dict[str, int]:
    """{actor id: pid} of the deployment's live replicas, from Ray's State API."""
    import ray
    from ray.util.state import list_actors

    filters = [("class_name", "=", f"ServeReplica:{app}:{deployment}"), ("state", "=", "ALIVE")]
    alive = list_actors(filters=filters, address=ray.get_runtime_context().gcs_address)  # this cluster, not another one here
    return {a.actor_id: a.pid for a in alive}


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    p50, p99 = np.percentile(np.asarray(seconds) * 1000, [50, 99])
    return {"p50_ms": round(float(p50), 1), "p99_ms": round(float(p99), 1), "max_ms": round(max(seconds) * 1000, 1)}


def pain_app(serve_url: str, root, name: str, route_prefix: str, **args) -> str:
    """A tiny pain checkpoint (id ``best``) served open on the session's loopback Serve."""
    from ray import serve

    from affectlab.serving.pain import build

    checkpoint = tiny_checkpoint(root / "ckpt", seed=0)
    old = os.environ.pop("AFFECTLAB_API_TOKEN", None)
    try:
        app = build({"checkpoint": str(checkpoint), "max_batch_size": "8", "num_cpus": "0.5", **args})
    finally:
        if old is not None:
            os.environ["AFFECTLAB_API_TOKEN"] = old
    serve.run(app, name=name, route_prefix=route_prefix, blocking=False)
    return f"{serve_url}{route_prefix}"


# -- the test -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def crash_url(serve_url, tmp_path_factory):
    from ray import serve

    yield pain_app(serve_url, tmp_path_factory.mktemp("crash"), "pain_crash", "/crash")
    serve.delete("pain_crash")


async def crash_under_load(url: str) -> dict:
    """Load, kill, load until recovered; every request's outcome and the times that matter."""
    outcomes: list[Outcome] = []
    stop = asyncio.Event()
    image = face_png()
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as client:

        async def one_client():
            while not stop.is_set():
                outcomes.append(await send(client, "face", "POST", f"{url}/v1/pain/score", content=image, headers={"content-type": "image/png"}))

        clients = [asyncio.create_task(one_client()) for _ in range(CLIENTS)]
        while sum(o.status == 200 for o in outcomes) < 2 * CLIENTS:  # the model is loaded, every client has had answers
            await asyncio.sleep(0.2)
        await asyncio.sleep(WARMUP_S)
        ((old_id, pid),) = (await asyncio.to_thread(replicas, "pain_crash", "PainModel")).items()
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)

        new_replica, replaced_at = None, None
        while time.monotonic() - killed_at < RECOVERY_LIMIT_S:
            await asyncio.sleep(0.5)
            if new_replica is None:
                found = await asyncio.to_thread(replicas, "pain_crash", "PainModel")
                if found and old_id not in found:
                    new_replica, replaced_at = found, time.monotonic()
            first_new = min((o.end for o in outcomes if o.status == 200 and o.start > killed_at), default=None)
            last_failure = max((o.end for o in outcomes if o.status != 200), default=killed_at)
            if new_replica and first_new and time.monotonic() - max(first_new, last_failure) > STEADY_AFTER_S:
                break
        stop.set()
        await asyncio.gather(*clients)
    return {"outcomes": outcomes, "killed_at": killed_at, "old": (old_id, pid), "new": new_replica, "replaced_at": replaced_at}


def test_replica_killed_under_load_is_replaced_and_requests_succeed_again(crash_url):
    run = asyncio.run(crash_under_load(crash_url))
    outcomes, killed_at = run["outcomes"], run["killed_at"]
    old_id, old_pid = run["old"]
    assert run["new"], f"no new PainModel replica within {RECOVERY_LIMIT_S} s of the kill"
    ((new_id, new_pid),) = run["new"].items()
    assert new_id != old_id and new_pid != old_pid

    failed = [o for o in outcomes if o.status != 200]
    hangs = [o for o in failed if o.error.startswith("timeout")]
    server_faults = [o for o in failed if o.status is not None and o.status >= 500 and o.request_id]
    dropped = [o for o in failed if o.status is None and not o.error.startswith("timeout")]
    other = [o for o in failed if o not in server_faults and o not in dropped and o not in hangs]
    before_kill = [o for o in failed if o.end < killed_at]
    after_kill = [o for o in outcomes if o.start > killed_at]
    first_new = min(o.end for o in after_kill if o.status == 200)
    last_failure = max((o.end for o in failed), default=killed_at)
    recovered = [o for o in outcomes if o.start > max(first_new, last_failure)]  # sent once the new replica answered
    held = [o for o in outcomes if o.status == 200 and o.start < first_new and o.end > first_new]  # waited for it
    figures = {
        "clients": CLIENTS,
        "requests": len(outcomes),
        "failed": len(failed),
        "failed_5xx_with_request_id": len(server_faults),
        "failed_connection": len(dropped),
        "hangs": len(hangs),
        "failed_other": len(other),
        "kill_to_replacement_replica_s": round(run["replaced_at"] - killed_at, 2),
        "kill_to_first_success_on_new_replica_s": round(first_new - killed_at, 2),
        "kill_to_last_failure_s": round(last_failure - killed_at, 2),
        "kill_to_all_succeed_s": round(max(first_new, last_failure) - killed_at, 2),
        "held_until_new_replica": len(held),
        "requests_after_recovery": len(recovered),
        "latency_before_kill": percentiles([o.end - o.start for o in outcomes if o.end < killed_at and o.status == 200]),
        "latency_after_recovery": percentiles([o.end - o.start for o in recovered]),
    }
    print("replica crash under load:", json.dumps(figures))
    assert hangs == [] and other == [], [(o.status, o.error, o.body) for o in (hangs + other)[:5]]
    assert before_kill == [], [(o.status, o.body) for o in before_kill[:5]]
    assert all(o.status == 500 and "internal server error" in o.body for o in server_faults)
    assert all(o.status == 200 for o in recovered) and len(recovered) >= CLIENTS
    assert first_new - killed_at < RECOVERY_LIMIT_S
