"""Bearer-token auth of the serving layer: read at replica start, never stored, refused open
where other machines can reach Serve.

The refusal rule (``ApiAuth``) is checked for every kind of address without Serve; over
the session's Serve (127.0.0.1) an app gets its token from a file at replica start, and the
token is then looked for, and must not be found, in Serve's stored state (``serve.status()``,
the controller's details, every value Serve keeps in the GCS), in the logs of every Serve
actor and of the ingress, and in ``/openapi.json`` and ``/docs``.
"""

import asyncio
import dataclasses
import json
import os
import secrets
from pathlib import Path

import httpx
import pytest
from fastapi import HTTPException
from starlette.requests import Request

import affectlab.serving.layer as layer
from affectlab.serving.layer import TOKEN_ENV, ApiAuth, AuthSettings, OpenAPIRefused, ServeOptions, is_loopback, serve_http_host
from test_serving_pain import face_png, tiny_checkpoint

REACHABLE = ["0.0.0.0", "::", "[::]", "10.1.2.3", "192.168.0.17", "2001:db8::1", "myhost.example.org", "", None]
LOOPBACK = ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"]


def request(authorization: str | None = None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization is not None else []
    return Request({"type": "http", "method": "POST", "path": "/v1/pain/score", "headers": headers})


def status_of(auth: ApiAuth, authorization: str | None = None) -> int:
    try:
        auth.check(request(authorization))
    except HTTPException as e:
        return e.status_code
    return 200


# -- the rule, without Serve ------------------------------------------------------------------
def test_loopback_addresses():
    assert [is_loopback(h) for h in LOOPBACK] == [True] * len(LOOPBACK)
    assert [is_loopback(h) for h in REACHABLE] == [False] * len(REACHABLE)


@pytest.mark.parametrize("host", REACHABLE)
def test_reachable_app_without_token_refuses_to_start(host, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(OpenAPIRefused) as refused:
        ApiAuth("pain", AuthSettings(), host)
    message = str(refused.value)
    assert TOKEN_ENV in message and "allow_open=true" in message and "token_file" in message and "127.0.0.1" in message


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", None])
def test_allow_open_is_the_explicit_opt_in(host, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    auth = ApiAuth("pain", AuthSettings(allow_open=True), host)
    assert auth.token is None and status_of(auth) == 200


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_app_may_run_open(host, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert status_of(ApiAuth("pain", AuthSettings(), host)) == 200


def test_token_from_the_replica_environment_is_compared_in_constant_time(monkeypatch):
    token = secrets.token_urlsafe(24)
    monkeypatch.setenv(TOKEN_ENV, f"  {token}\n")  # stripped, as a file's newline would be
    compared = []
    real = layer.hmac.compare_digest
    monkeypatch.setattr(layer.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    auth = ApiAuth("pain", AuthSettings(), "0.0.0.0")  # a token: a reachable address is fine
    assert status_of(auth) == 401
    assert status_of(auth, "Basic " + token) == 401
    assert status_of(auth, "Bearer " + token[:-1]) == 401
    assert status_of(auth, "Bearer " + token[:-1] + "x") == 401
    assert status_of(auth, "Bearer " + token) == 200
    assert status_of(auth, "bearer  " + token) == 200
    assert compared == [((token[:-1]).encode(), token.encode()), ((token[:-1] + "x").encode(), token.encode()), (token.encode(),) * 2, (token.encode(),) * 2]


def test_token_file(tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment")
    path = tmp_path / "token"
    path.write_text("from-the-file\n")
    auth = ApiAuth("pain", AuthSettings(token_file=str(path)), "0.0.0.0")
    assert status_of(auth, "Bearer from-the-file") == 200 and status_of(auth, "Bearer from-the-environment") == 401
    path.write_text("  \n")
    with pytest.raises(OpenAPIRefused, match="is empty"):
        ApiAuth("pain", AuthSettings(token_file=str(path)), "127.0.0.1")
    with pytest.raises(OpenAPIRefused, match="cannot be read"):
        ApiAuth("pain", AuthSettings(token_file=str(tmp_path / "missing")), "127.0.0.1")
    path.write_bytes(b"\xff\xfe not text")
    with pytest.raises(OpenAPIRefused, match="cannot be read") as refused:
        ApiAuth("pain", AuthSettings(token_file=str(path)), "127.0.0.1")
    assert "not text" not in str(refused.value)  # the file's contents are never echoed


def test_token_set_at_build_but_missing_at_the_replica_refuses_even_on_loopback(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(OpenAPIRefused, match=f"{TOKEN_ENV} was set where the pain application was built"):
        ApiAuth("pain", AuthSettings(token_at_build=True), "127.0.0.1")


def test_auth_arguments_are_parsed():
    options = ServeOptions.from_args({"checkpoint": "d", "allow_open": "true", "token_file": "/run/secrets/affectlab"})
    assert options.allow_open is True and options.token_file == "/run/secrets/affectlab"
    for value, parsed in (("false", False), ("0", False), ("yes", True), (True, True), (False, False)):
        assert ServeOptions.from_args({"checkpoint": "d", "allow_open": value}).allow_open is parsed
    assert ServeOptions.from_args({"checkpoint": "d"}).allow_open is False
    with pytest.raises(ValueError, match="allow_open='maybe' is not a bool"):
        ServeOptions.from_args({"checkpoint": "d", "allow_open": "maybe"})


# -- over the session's Serve (127.0.0.1) ------------------------------------------------------
TOKEN = "affectlab-test-" + secrets.token_hex(16)  # distinctive: any copy of it anywhere is found


@pytest.fixture(scope="module")
def token_app(serve_url, tmp_path_factory):
    """One tiny checkpoint behind the token, which the ingress reads from a file at start."""
    from ray import serve

    from affectlab.serving.pain import build

    root = tmp_path_factory.mktemp("auth")
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    args = {"checkpoint": str(tiny_checkpoint(root / "ckpt", seed=0)), "token_file": str(token_file), "num_cpus": "0.25"}
    old = os.environ.pop(TOKEN_ENV, None)
    try:
        serve.run(build(args), name="pain_auth", route_prefix="/auth", blocking=False)
    finally:
        if old is not None:
            os.environ[TOKEN_ENV] = old
    yield f"{serve_url}/auth", str(token_file)
    serve.delete("pain_auth")


def test_token_from_file_guards_the_api(token_app):
    url, _ = token_app
    files = {"image": ("face.png", face_png(), "image/png")}
    assert httpx.post(f"{url}/v1/pain/score", files=files, timeout=60).status_code == 401
    assert httpx.post(f"{url}/v1/pain/score", files=files, headers={"Authorization": "Bearer nope"}, timeout=60).status_code == 401
    assert httpx.get(f"{url}/v1/pain/models", timeout=30).status_code == 401
    r = httpx.post(f"{url}/v1/pain/score", files=files, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert r.status_code == 200 and r.json()["model_id"] == "best", r.text
    assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200


def test_the_replica_learns_the_host_serve_listens_on(serve_url):
    assert serve_url.startswith("http://127.0.0.1:")
    assert asyncio.run(serve_http_host()) == "127.0.0.1"


def serve_stored_state() -> list[bytes]:
    """Every value Serve keeps in the GCS: application and deployment checkpoints (with each
    deployment's pickled init arguments), configs, endpoints."""
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_list
    from ray.serve._private.storage.kv_store import SERVE_INTERNAL_KV_NAMESPACE

    keys = _internal_kv_list(b"", namespace=SERVE_INTERNAL_KV_NAMESPACE)
    return [_internal_kv_get(k, namespace=SERVE_INTERNAL_KV_NAMESPACE) or b"" for k in keys]


def serve_logs() -> dict[str, str]:
    """The text of every log file of this Ray session: Serve's (controller, proxies,
    replicas) and every worker's stdout and stderr."""
    import ray

    logs_dir = Path(ray._private.worker._global_node.get_logs_dir_path())  # no public API names it
    return {str(p.relative_to(logs_dir)): p.read_text(errors="replace") for p in logs_dir.rglob("*") if p.is_file()}


def test_token_is_never_stored_logged_or_documented(token_app):
    from ray import serve
    from ray.serve.context import _get_global_client

    url, token_file = token_app
    # Serve's stored state: searched for real (the token file's path is there, the token is not)
    stored = serve_stored_state()
    assert any(token_file.encode() in value for value in stored), "the app's init arguments were not among the values searched"
    assert not [value[:80] for value in stored if TOKEN.encode() in value]
    assert TOKEN not in json.dumps(dataclasses.asdict(serve.status()), default=str)
    assert TOKEN not in json.dumps(_get_global_client().get_serve_details(), default=str)
    # the logs: the ingress logged at start that a token guards the API, never the token
    logs = serve_logs()
    assert any("needs a bearer token" in text for name, text in logs.items() if "pain_auth" in name), sorted(logs)[:50]
    assert [name for name, text in logs.items() if TOKEN in text] == []
    # the docs
    spec = httpx.get(f"{url}/openapi.json", timeout=30)
    docs = httpx.get(f"{url}/docs", timeout=30)
    assert spec.status_code == docs.status_code == 200 and "HTTPBearer" in spec.text
    assert TOKEN not in spec.text and TOKEN not in docs.text


def test_token_set_only_where_the_app_is_built_refuses_the_replica(serve_url, tmp_path):
    """The old behaviour (a token in the builder's environment, passed to the replicas as an
    argument) now stops the app instead of serving it open: its replicas have no token."""
    from ray import serve

    from affectlab.serving.pain import build

    old = os.environ.get(TOKEN_ENV)
    os.environ[TOKEN_ENV] = TOKEN
    try:
        app = build({"checkpoint": str(tiny_checkpoint(tmp_path / "ckpt", seed=1)), "num_cpus": "0.25"})
    finally:
        os.environ.pop(TOKEN_ENV) if old is None else os.environ.__setitem__(TOKEN_ENV, old)
    try:
        with pytest.raises(RuntimeError, match="Deploying application pain_auth_refused failed"):
            serve.run(app, name="pain_auth_refused", route_prefix="/refused", blocking=False)
        why = serve.status().applications["pain_auth_refused"].deployments["PainIngress"].message  # what `serve status` shows
        assert f"{TOKEN_ENV} was set where the pain application was built" in why and "token_file" in why
        assert TOKEN not in why
    finally:
        serve.delete("pain_auth_refused")
    assert not [value[:80] for value in serve_stored_state() if TOKEN.encode() in value]
