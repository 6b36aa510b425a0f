"""A soak of the pain and mouse apps: valid requests mixed with every malformed kind.

For ``SOAK_S`` seconds, 64 concurrent clients post to the pain app and 8 post videos to
the mouse app, both on the session's Serve (127.0.0.1), both behind a bearer token read
from a file. Each client takes the next request of a fixed rotation that alternates a
valid request with one of the malformed kinds (bad image or video bytes, truncated files,
wrong content type, oversize bodies, bad JSON or base64, unknown or missing fields,
unknown model ids, no or a wrong token, ...). Outcome: no 5xx and no failed connection,
every malformed request answered with its documented 4xx and message, ``/healthz`` of both
apps answering every probe, and the model replicas' RSS growing under 10% from the end of
the warm-up to the end. Figures (counts per kind, p50/p99, RSS) are printed as JSON
(``pytest -s``) and recorded in docs/reliability.md.
"""

import asyncio
import base64
import io
import itertools
import json
import os
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from affectlab.data.mouse import discover
from affectlab.data.synthetic_mouse import write_synthetic_mouse
from affectlab.train.checkpoint import save_checkpoint, write_json
from affectlab.train.config import config_to_dict
from test_serve_faults import Outcome, percentiles, replicas, rss_mb, send
from test_serving_pain import face_png, tiny_checkpoint

pytestmark = pytest.mark.reliability

SOAK_S = 60
WARMUP_S = 10  # of the same mixed load before the RSS baseline (every model id loaded)
PAIN_CLIENTS, MOUSE_CLIENTS = 64, 8
MAX_REQUESTS = 60_000  # per app: the soak is bounded in requests as well as in time
REQUEST_TIMEOUT_S = 60
PROBE_EVERY_S = 0.5
RSS_GROWTH_LIMIT = 0.10
PAIN_LIMIT_MB, MOUSE_LIMIT_MB = 1, 2  # upload limits: the oversize kinds stay cheap to send
TOKEN = "soak-" + os.urandom(16).hex()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def chunked(parts: list[bytes]):
    """A body sent without Content-Length: the limit must hold while it streams."""
    for part in parts:
        yield part


def giant_png() -> bytes:
    """A 48-megapixel PNG of a few kilobytes: over the 40 MP decode limit."""
    out = io.BytesIO()
    Image.new("1", (8000, 6000)).save(out, format="PNG")
    return out.getvalue()


# -- the request kinds: name → (httpx keyword arguments, expected status, words of the detail) --
def pain_kinds() -> tuple[dict, dict]:
    face, ref = face_png(seed=1), face_png((0,) * 6, seed=1)
    png = ("f.png", face, "image/png")
    valid = {
        "multipart face": lambda: dict(files={"image": png}),
        "multipart face + 2 references, fold0": lambda: dict(files=[("image", png), ("reference", ("r.png", ref, "image/png")), ("reference", ("r2.png", ref, "image/png"))], params={"model_id": "fold0"}),
        "json face + reference, fold1": lambda: dict(json={"image": b64(face), "reference": [b64(ref)], "model_id": "fold1"}),
        "raw png, ensemble": lambda: dict(content=face, headers={"content-type": "image/png"}, params={"model_id": "ensemble"}),
    }
    big, giant = b"\x89PNG" + os.urandom(PAIN_LIMIT_MB * 1_000_000 + 100_000), giant_png()
    malformed = {
        "not an image": (lambda: dict(files={"image": ("x.png", b"hello, not a png", "image/png")}), 422, "not an image"),
        "truncated image": (lambda: dict(files={"image": ("x.png", face[:300], "image/png")}), 422, "truncated"),
        "image over 40 MP": (lambda: dict(files={"image": ("g.png", giant, "image/png")}), 413, "pixels"),
        "empty body": (lambda: dict(content=b"", headers={"content-type": "application/json"}), 400, "empty"),
        "oversize body": (lambda: dict(files={"image": ("big.png", big, "image/png")}), 413, "upload limit"),
        "oversize chunked body": (lambda: dict(content=chunked([big[:600_000], big[600_000:]]), headers={"content-type": "image/png"}), 413, "upload limit"),
        "wrong content type": (lambda: dict(content=b"image=abc", headers={"content-type": "text/plain"}), 415, "content type"),
        "multipart without boundary": (lambda: dict(content=b"--x\r\n\r\n", headers={"content-type": "multipart/form-data"}), 400, "multipart"),
        "invalid JSON": (lambda: dict(content=b"{image:", headers={"content-type": "application/json"}), 400, "not valid JSON"),
        "JSON not an object": (lambda: dict(json=["a", "b"]), 422, "object"),
        "bad base64": (lambda: dict(json={"image": "***not base64***"}), 422, "base64"),
        "unknown field": (lambda: dict(files={"img": png}), 422, "unknown field"),
        "missing field": (lambda: dict(json={"reference": b64(ref)}), 422, "missing field"),
        "text instead of file": (lambda: dict(data={"image": "abc"}, files={"reference": ("r.png", ref, "image/png")}), 422, "file upload"),
        "bad flag": (lambda: dict(files={"image": png}, data={"crop_face": "maybe"}), 422, "true or false"),
        "too many references": (lambda: dict(json={"image": b64(face), "reference": [b64(ref)] * 9}), 422, "at most"),
        "unknown model id": (lambda: dict(files={"image": png}, params={"model_id": "fold7"}), 404, "model id"),
        "path as model id": (lambda: dict(json={"image": b64(face), "model_id": "../fold_0"}), 404, "model id"),
        "no token": (lambda: dict(files={"image": png}, headers={"authorization": ""}), 401, "token"),
        "wrong token": (lambda: dict(files={"image": png}, headers={"authorization": "Bearer " + TOKEN[:-1]}), 401, "token"),
    }
    return valid, malformed


def mouse_kinds(video: bytes, dlc: bytes) -> tuple[dict, dict]:
    mp4 = ("v.mp4", video, "video/mp4")
    valid = {
        "multipart video + dlc": lambda: dict(files={"video": mp4, "dlc": ("v.csv", dlc, "text/csv")}),
        "raw video": lambda: dict(content=video, headers={"content-type": "video/mp4"}),
        "json video": lambda: dict(json={"video": b64(video), "model_id": "best"}),
    }
    short_dlc = b"\n".join(dlc.split(b"\n")[:-100]) + b"\n"
    too_big = bytes(MOUSE_LIMIT_MB * 1_000_000 + 100_000)
    malformed = {
        "empty body": (lambda: dict(content=b"", headers={"content-type": "video/mp4"}), 400, "empty request body"),
        "not a video": (lambda: dict(files={"video": ("a.mp4", b"\x00" * 5000)}), 422, "not a readable video"),
        "truncated mp4": (lambda: dict(files={"video": ("a.mp4", video[: len(video) // 3])}), 422, "not a readable video"),
        "dlc with missing rows": (lambda: dict(files={"video": mp4, "dlc": ("d.csv", short_dlc)}), 422, "field 'dlc'"),
        "dlc not a pose file": (lambda: dict(files={"video": mp4, "dlc": ("d.csv", b"\x00\x01garbage")}), 422, "scorer/bodyparts/coords"),
        "two videos": (lambda: dict(files=[("video", mp4), ("video", mp4)]), 422, "exactly once"),
        "unknown field": (lambda: dict(files={"video": mp4, "pose": ("p.csv", b"x")}), 422, "unknown field"),
        "missing video": (lambda: dict(json={"dlc": b64(dlc)}), 422, "missing field"),
        "invalid JSON": (lambda: dict(content=b'{"video": ', headers={"content-type": "application/json"}), 400, "not valid JSON"),
        "bad base64": (lambda: dict(json={"video": "@@@"}), 422, "base64"),
        "wrong content type": (lambda: dict(content=b"video", headers={"content-type": "text/plain"}), 415, "video/*"),
        "oversize body": (lambda: dict(content=too_big, headers={"content-type": "video/mp4"}), 413, "upload limit"),
        "unknown model id": (lambda: dict(files={"video": mp4}, params={"model_id": "fold9"}), 404, "unknown model id"),
        "wrong token": (lambda: dict(files={"video": mp4}, headers={"authorization": "Bearer " + TOKEN + "x"}), 401, "token"),
    }
    return valid, malformed


def rotation(valid: dict, malformed: dict):
    """valid, malformed, valid, malformed, ...: every valid kind and every malformed kind in turn."""
    valid_names, bad_names = list(valid), list(malformed)
    period = max(len(valid_names), len(bad_names)) * len(valid_names)
    return itertools.cycle([name for i in range(period) for name in (valid_names[i % len(valid_names)], bad_names[i % len(bad_names)])])


# -- the apps ------------------------------------------------------------------------------------
def mouse_checkpoint(path):
    """A tiny multitask model with random weights: the soak checks the server, not accuracy."""
    import torch

    from affectlab.workloads.mouse import PRESETS, MouseConfig, MouseWorkload

    cfg = MouseConfig(**{**PRESETS["tiny"], "model": "multitask"})
    torch.manual_seed(0)
    return save_checkpoint(path, MouseWorkload().build_model(cfg, pretrained=False).state_dict(), "mouse", config_to_dict(cfg), {})


@pytest.fixture(scope="module")
def soak_apps(serve_url, tmp_path_factory):
    from ray import serve

    from affectlab.serving import mouse, pain

    root = tmp_path_factory.mktemp("soak")
    token_file = root / "token"
    token_file.write_text(TOKEN)
    for k, bias in enumerate((-1.5, 1.5)):
        tiny_checkpoint(root / "cv" / f"fold_{k}", seed=k, pspi_bias=bias)
    write_json(root / "cv" / "metrics.json", {"folds": [{"fold": k, "thresholds": {"1": 1.0, "2": 2.0, "3": 3.0}} for k in (0, 1)]})
    mouse_checkpoint(root / "mouse")
    (trial,) = discover(write_synthetic_mouse(root / "mice", n_animals=1, trials_per_video=1, size=64, seed=3))
    common = {"token_file": str(token_file), "num_cpus": "0.5"}
    old = os.environ.pop("AFFECTLAB_API_TOKEN", None)
    try:
        pain_app = pain.build({"checkpoint": str(root / "cv"), "max_upload_mb": str(PAIN_LIMIT_MB), "max_batch_size": "8", **common})
        mouse_app = mouse.build({"checkpoint": str(root / "mouse"), "max_upload_mb": str(MOUSE_LIMIT_MB), **common})
    finally:
        if old is not None:
            os.environ["AFFECTLAB_API_TOKEN"] = old
    serve.run(pain_app, name="pain_soak", route_prefix="/soak-pain", blocking=False)
    serve.run(mouse_app, name="mouse_soak", route_prefix="/soak-mouse", blocking=False)
    yield {"pain": f"{serve_url}/soak-pain", "mouse": f"{serve_url}/soak-mouse", "video": trial.video_path.read_bytes(), "dlc": trial.dlc_path.read_bytes()}
    serve.delete("pain_soak")
    serve.delete("mouse_soak")


# -- the soak ------------------------------------------------------------------------------------
async def soak(apps: dict) -> dict:
    headers = {"authorization": f"Bearer {TOKEN}"}
    plans = {
        "pain": (f"{apps['pain']}/v1/pain/score", PAIN_CLIENTS, *pain_kinds()),
        "mouse": (f"{apps['mouse']}/v1/mouse/segment", MOUSE_CLIENTS, *mouse_kinds(apps["video"], apps["dlc"])),
    }
    outcomes = {app: [] for app in plans}
    probes = {app: [] for app in plans}
    rss = {}
    phase = {"stop_at": float("inf")}

    def model_pids() -> dict[str, int]:
        found = {}
        for app, deployment in (("pain_soak", "PainModel"), ("mouse_soak", "MouseModel"), ("pain_soak", "PainIngress"), ("mouse_soak", "MouseIngress")):
            ((_, pid),) = replicas(app, deployment).items()
            found[deployment] = pid
        return found

    async def client(app: str, pool: httpx.AsyncClient, schedule):
        url, _, valid, malformed = plans[app]
        while time.monotonic() < phase["stop_at"] and len(outcomes[app]) < MAX_REQUESTS:
            kind = next(schedule)
            kwargs = valid[kind]() if kind in valid else malformed[kind][0]()
            kwargs["headers"] = {**headers, **kwargs.get("headers", {})}
            if not kwargs["headers"]["authorization"]:  # the "no token" kind
                del kwargs["headers"]["authorization"]
            outcomes[app].append(await send(pool, kind, "POST", url, **kwargs))

    async def probe(app: str, pool: httpx.AsyncClient):
        while time.monotonic() < phase["stop_at"]:
            probes[app].append(await send(pool, "healthz", "GET", f"{apps[app]}/healthz", timeout=10))
            await asyncio.sleep(PROBE_EVERY_S)

    limits = httpx.Limits(max_connections=PAIN_CLIENTS + MOUSE_CLIENTS, max_keepalive_connections=PAIN_CLIENTS + MOUSE_CLIENTS)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as pool, httpx.AsyncClient() as probe_pool:
        tasks = [asyncio.create_task(probe(app, probe_pool)) for app in plans]
        for app, (_, n, valid, malformed) in plans.items():
            schedule = rotation(valid, malformed)
            tasks += [asyncio.create_task(client(app, pool, schedule)) for _ in range(n)]
        await asyncio.sleep(WARMUP_S)
        pids = await asyncio.to_thread(model_pids)
        rss["before_mb"] = {name: rss_mb(pid) for name, pid in pids.items()}
        started = time.monotonic()
        phase["stop_at"] = started + SOAK_S
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
    after = await asyncio.to_thread(model_pids)
    assert after == pids, f"a replica was replaced during the soak: {pids} → {after}"
    rss["after_mb"] = {name: rss_mb(pid) for name, pid in pids.items()}
    return {"plans": plans, "outcomes": outcomes, "probes": probes, "rss": rss, "soak_s": elapsed, "started": started}


def detail(o: Outcome) -> str:
    try:
        return str(json.loads(o.body).get("detail", ""))
    except (ValueError, AttributeError):
        return ""


def test_soak_mixed_valid_and_malformed_requests(soak_apps):
    run = asyncio.run(soak(soak_apps))
    figures, wrong = {"soak_s": round(run["soak_s"], 1), "warmup_s": WARMUP_S}, []
    for app, (_, clients, valid, malformed) in run["plans"].items():
        outcomes = run["outcomes"][app]
        counts = {kind: sum(o.kind == kind for o in outcomes) for kind in [*valid, *malformed]}
        for o in outcomes:
            expected = 200 if o.kind in valid else malformed[o.kind][1]
            words = None if o.kind in valid else malformed[o.kind][2]
            if o.status != expected or (words and words.lower() not in detail(o).lower()):
                wrong.append((app, o.kind, o.status, o.error, o.body[:160]))
        ok = [o.end - o.start for o in outcomes if o.kind in valid and o.status == 200]
        probes = run["probes"][app]
        figures[app] = {
            "clients": clients,
            "requests": len(outcomes),
            "valid": sum(counts[k] for k in valid),
            "malformed": sum(counts[k] for k in malformed),
            "5xx": sum(1 for o in outcomes if o.status is not None and o.status >= 500),
            "no_answer": sum(1 for o in outcomes if o.status is None),
            "per_kind": counts,
            "valid_latency": percentiles(ok),
            "malformed_latency": percentiles([o.end - o.start for o in outcomes if o.kind in malformed]),
            "valid_per_s": round(len(ok) / run["soak_s"], 1),
            "healthz_probes": len(probes),
            "healthz_failed": sum(o.status != 200 for o in probes),
            "healthz_latency": percentiles([o.end - o.start for o in probes]),
        }
    before, after = run["rss"]["before_mb"], run["rss"]["after_mb"]
    figures["rss_mb"] = {name: {"before": round(before[name], 1), "after": round(after[name], 1), "growth": round(after[name] / before[name] - 1, 4)} for name in before}
    print("soak:", json.dumps(figures))

    for app in run["plans"]:
        assert figures[app]["5xx"] == 0 and figures[app]["no_answer"] == 0, figures[app]
        assert all(n > 0 for n in figures[app]["per_kind"].values()), figures[app]["per_kind"]  # every kind was sent
        assert figures[app]["healthz_failed"] == 0 and figures[app]["healthz_probes"] >= SOAK_S / PROBE_EVERY_S / 4, figures[app]
    assert wrong == [], f"{len(wrong)} answers not as documented, e.g. {wrong[:5]}"
    for name in ("PainModel", "MouseModel"):
        assert after[name] < before[name] * (1 + RSS_GROWTH_LIMIT), figures["rss_mb"]
