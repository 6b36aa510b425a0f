"""The serving layer: any workload's predictor behind HTTP on Ray Serve.

A workload supplies a ``Predictor`` (load a checkpoint, decode a request, predict a batch,
encode an output). The layer gives it the rest, the same for every workload:

- ``POST /v1/<workload>/<route>``: multipart upload, JSON with base64 files, or a raw
  image body; a size limit (413); an optional bearer token (401); model choice per
  request by id (``?model_id=`` or a ``model_id`` field; unknown → 404);
- a model deployment that loads one model per id with ``@serve.multiplexed`` and runs
  requests in dynamic batches with ``@serve.batch``, counting the batch sizes it ran;
- ``GET /healthz``, ``GET /v1/<workload>/models``, ``GET /v1/<workload>/stats`` and the
  OpenAPI docs at ``/docs``.

Two deployments, so that decoding (CPU, per request) scales apart from the model (batched,
GPU when there is one): ``<Workload>Ingress`` → ``<Workload>Model``.

A workload with several verbs (infant: ``classify`` and ``generate``) gives several
predictors, one per route: one ingress serves every route, each route has its own model
deployment ``<Workload><Route>Model`` and its own checkpoint (a predictor's ``checkpoint``
attribute, else the ``checkpoint`` argument).

No ``from __future__ import annotations`` here: FastAPI must see the route parameters'
real types (``Request``) through Serve's class-based views.
"""

import asyncio
import base64
import binascii
import hmac
import ipaddress
import json
import logging
import os
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from ray import serve
from starlette.concurrency import run_in_threadpool
from python_multipart.exceptions import DecodeError, MultipartParseError, QuerystringParseError
from starlette.formparsers import MultiPartException, MultiPartParser

import affectlab
from affectlab.serving.registry import ModelEntry, ModelRegistry, UnknownModel

TOKEN_ENV = "AFFECTLAB_API_TOKEN"  # set where the ingress runs → every API route needs "Authorization: Bearer <token>"
MAX_UPLOAD_ENV = "AFFECTLAB_MAX_UPLOAD_MB"
DEFAULT_MAX_UPLOAD_MB = 10.0
MAX_MODELS_PER_REPLICA = 8  # an ensemble plus its folds fit at once
MAX_FILES = 16  # per multipart request
LAYER_RESPONSES = {  # what the layer itself answers, for every workload's /docs
    "400": {"description": "empty body, invalid JSON or malformed multipart"},
    "401": {"description": "missing or wrong bearer token"},
    "404": {"description": "unknown model id"},
    "413": {"description": "upload over the size limit"},
    "415": {"description": "unsupported content type"},
    "500": {"description": "server fault: the body holds only a request_id to quote (details are in the server log)"},
}
logger = logging.getLogger("ray.serve")


class BadInput(Exception):
    """A request the server cannot use; ``status`` is the 4xx it answers with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message

    def __reduce__(self):  # crosses from the model replica back to the ingress
        return BadInput, (self.status, self.message)


@dataclass(frozen=True)
class ServerFault:
    """One item of a batch that failed on the server's side, the others still answered: the
    predictor logged its traceback under ``request_id``; the client gets a 500 with the id."""

    request_id: str


def server_fault(request_id: str, doing: str) -> ServerFault:
    """For a predictor's ``except`` block: log the exception being handled under the id."""
    logger.exception("request %s: failed while %s", request_id, doing)
    return ServerFault(request_id)


@dataclass(frozen=True)
class Binary:
    """A response body that is not JSON (``.npy``, ``.npz``, ``.mp4``, ``.gif``): a predictor's
    ``encode`` may return one; it is sent as a download with its media type."""

    content: bytes
    media_type: str
    filename: str

    def response(self) -> Response:
        headers = {"Content-Disposition": f'attachment; filename="{self.filename}"'}
        return Response(self.content, media_type=self.media_type, headers=headers)


class Predictor(Protocol):
    """What a workload gives the layer. ``decode`` runs in the ingress, the rest in the
    model replicas; inputs and outputs cross between them, so keep them plain (numpy)."""

    workload: str  # served under /v1/<workload>/...
    route: str  # the verb: POST /v1/<workload>/<route>
    raw_field: str  # the field a raw (non-form, non-JSON) body fills, e.g. "image"
    raw_media: tuple[str, ...]  # content types taken as a raw body, e.g. ("image/",)

    def load(self, entry: ModelEntry) -> Any: ...  # safetensors + JSON only, never a pickle

    def decode(self, payload: "Payload", entry: ModelEntry) -> Any: ...  # raise BadInput for bad requests

    def predict_batch(self, model: Any, inputs: list) -> list: ...  # an item may be a BadInput (its 4xx) or a ServerFault

    def encode(self, output: Any) -> "dict | Binary": ...  # JSON-ready, or a binary body


# -- request payloads ----------------------------------------------------------------------
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off", ""}


class Payload:
    """A request's fields, read the same whether they came as a multipart form, as JSON
    (files base64-encoded) or as a raw body (the predictor's ``raw_field``)."""

    def __init__(self, fields: dict[str, list], source: str):
        self.fields, self.source = fields, source

    @property
    def names(self) -> set[str]:
        return set(self.fields)

    def expect(self, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
        """Unknown or missing field names → 422 naming them and the expected ones."""
        expected = ", ".join([f"{n} (required)" for n in required] + list(optional))
        unknown = sorted(self.names - set(required) - set(optional))
        if unknown:
            raise BadInput(422, f"unknown field(s) {unknown}; expected: {expected}")
        missing = [n for n in required if n not in self.fields]
        if missing:
            raise BadInput(422, f"missing field(s) {missing}; expected: {expected}")

    def files(self, name: str) -> list[bytes]:
        out = []
        for i, value in enumerate(self.fields.get(name, [])):
            label = name if len(self.fields[name]) == 1 else f"{name}[{i}]"
            if isinstance(value, bytes):
                out.append(value)
            elif self.source == "json" and isinstance(value, str):
                out.append(_b64decode(value, label))
            elif self.source == "json":
                raise BadInput(422, f"field {label!r} must be a base64 string, got {type(value).__name__}")
            else:
                raise BadInput(422, f"field {label!r} must be a file upload (curl: -F {name}=@file.png)")
        return out

    def file(self, name: str) -> bytes:
        files = self.files(name)
        if len(files) != 1:
            raise BadInput(422, f"field {name!r} must be given exactly once, got {len(files)}")
        return files[0]

    def text(self, name: str) -> str | None:
        values = self.fields.get(name, [])
        if not values:
            return None
        if len(values) > 1 or not isinstance(values[0], str):
            raise BadInput(422, f"field {name!r} must be one string")
        return values[0]

    def flag(self, name: str, default: bool = False) -> bool:
        values = self.fields.get(name, [])
        if not values:
            return default
        value = values[0]
        if isinstance(value, bool) and len(values) == 1:
            return value
        if isinstance(value, str) and len(values) == 1 and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise BadInput(422, f"field {name!r} must be true or false, got {str(value)[:20]!r}")

    def pop(self, name: str) -> str | None:
        value = self.text(name)
        self.fields.pop(name, None)
        return value


def _b64decode(value: str, label: str) -> bytes:
    if value.startswith("data:"):  # data URLs too: data:<type>;base64,<data>
        _, comma, data = value.partition(",")
        if not comma:
            raise BadInput(422, f"field {label!r} is a data URL without data (expected data:<type>;base64,<base64>)")
    else:
        data = value
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(422, f"field {label!r} is not valid base64") from None


async def _replay(body: bytes):
    yield body
    yield b""


async def read_payload(request: Request, max_bytes: int, raw_field: str = "image", raw_media: tuple[str, ...] = ("image/",)) -> Payload:
    """The request body as a ``Payload``, read no further than ``max_bytes`` (413 past it).

    A body whose content type starts with one of ``raw_media`` (or is
    ``application/octet-stream``) is the single field ``raw_field``."""
    too_large = f"request body exceeds the upload limit of {max_bytes / 1e6:g} MB"
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:  # str.isdigit() also takes '²'
        raise BadInput(413, too_large)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BadInput(413, too_large)
    if not body:
        raise BadInput(400, f"empty request body; send the {raw_field} as a multipart field {raw_field!r}, as JSON {{\"{raw_field}\": \"<base64>\"}} or as a raw body")
    body = bytes(body)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        try:
            form = await MultiPartParser(request.headers, _replay(body), max_files=MAX_FILES, max_fields=MAX_FILES).parse()
        except (MultiPartException, MultipartParseError, DecodeError, QuerystringParseError) as e:  # the client's fault
            raise BadInput(400, f"malformed multipart body ({e})") from None
        fields: dict[str, list] = {}
        for name, value in form.multi_items():
            fields.setdefault(name, []).append(await value.read() if hasattr(value, "read") else value)
        await form.close()
        return Payload(fields, "multipart")
    if kind == "application/json":
        try:
            data = json.loads(body)
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer over Python's 4300 digits
            raise BadInput(400, f"body is not valid JSON ({e})") from None
        except RecursionError:
            raise BadInput(400, "body is not valid JSON (nested too deeply)") from None
        if not isinstance(data, dict):
            raise BadInput(422, f"JSON body must be an object of fields, got {type(data).__name__}")
        return Payload({k: v if isinstance(v, list) else [v] for k, v in data.items()}, "json")
    if kind.startswith(raw_media) or kind == "application/octet-stream":
        return Payload({raw_field: [body]}, "raw")
    accepted = ", ".join(["multipart/form-data", "application/json", *(f"{m}*" for m in raw_media)])
    raise BadInput(415, f"unsupported content type {kind or '(none)'!r}; use {accepted}")


# -- the model deployment ------------------------------------------------------------------
@serve.deployment(max_ongoing_requests=64)
class ModelServer:
    """Loads models by id (LRU, ``@serve.multiplexed``) and runs requests in dynamic
    batches (``@serve.batch``; Serve keeps one batch to one model id)."""

    def __init__(self, predictor: Predictor, registry: ModelRegistry, max_batch_size: int = 16, batch_wait_timeout_s: float = 0.01):
        self.predictor, self.registry = predictor, registry
        self.max_batch_size = max_batch_size
        self.predict.set_max_batch_size(max_batch_size)
        self.predict.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.batch_sizes: Counter[int] = Counter()

    @serve.multiplexed(max_num_models_per_replica=MAX_MODELS_PER_REPLICA)
    async def get_model(self, model_id: str):
        entry = self.registry.get(model_id)
        logger.info("loading model %s from %s", model_id, [str(m.path) for m in entry.members])
        return await asyncio.to_thread(self.predictor.load, entry)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def predict(self, inputs: list) -> list[dict]:
        model = await self.get_model(serve.get_multiplexed_model_id())
        self.batch_sizes[len(inputs)] += 1
        # off the event loop, so health checks and stats still answer during a forward pass
        outputs = await asyncio.to_thread(self.predictor.predict_batch, model, inputs)
        return [o if isinstance(o, (BadInput, ServerFault)) else self.predictor.encode(o) for o in outputs]

    def stats(self) -> dict:
        """This replica's batches, counted by size: proof that batching happened."""
        batches = dict(sorted(self.batch_sizes.items()))
        return {
            "max_batch_size": self.max_batch_size,
            "batches": {str(k): v for k, v in batches.items()},
            "requests": sum(k * v for k, v in batches.items()),
            "largest_batch": max(batches, default=0),
        }


# -- the HTTP ingress ----------------------------------------------------------------------
def make_ingress(predictors: "Predictor | Sequence[Predictor]"):
    """A FastAPI ingress deployment whose routes carry the workload's name: ``POST
    /v1/<workload>/<route>`` for each predictor (one workload, distinct routes)."""
    predictors = [predictors] if not isinstance(predictors, Sequence) else list(predictors)
    predictor = predictors[0]
    if len({p.workload for p in predictors}) > 1 or len({p.route for p in predictors}) < len(predictors):
        raise ValueError(f"one application serves one workload, one predictor per route; got {[(p.workload, p.route) for p in predictors]}")
    single = len(predictors) == 1  # the ops routes answer per route only when there are several
    prefix = f"/v1/{predictor.workload}"
    app = FastAPI(
        title=f"affectlab {predictor.workload}",
        version=affectlab.__version__,
        description=getattr(predictor, "description", ""),
    )
    bearer = Depends(HTTPBearer(auto_error=False))  # shows the token box in /docs; checked below

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def server_fault(request: Request, exc: Exception):
        return internal_error(exc, f"{request.method} {request.url.path}")

    @serve.deployment(max_ongoing_requests=256)
    @serve.ingress(app)
    class Ingress:
        async def __init__(self, models: list, registries: list[ModelRegistry], max_upload_bytes: list[int], auth: "AuthSettings"):
            # route → (predictor, model handle, registry, upload limit)
            self.routes = {p.route: (p, m, r, b) for p, m, r, b in zip(predictors, models, registries, max_upload_bytes)}
            # the token is read here, at replica start, never passed in: Serve stores init arguments
            self.auth = ApiAuth(predictor.workload, auth, await serve_http_host())

        def authorize(self, request: Request) -> None:
            self.auth.check(request)

        def per_route(self, answer) -> dict:
            """``answer(predictor, model, registry)`` for the one route, else ``{route: answer}``."""
            answers = {route: answer(p, m, r) for route, (p, m, r, _) in self.routes.items()}
            return next(iter(answers.values())) if single else answers

        @app.get("/healthz", tags=["ops"])
        async def healthz(self) -> dict:
            return {"status": "ok", "workload": predictor.workload, "default_model": self.per_route(lambda p, m, r: r.default_id)}

        @app.get(f"{prefix}/models", tags=["ops"], dependencies=[bearer])
        async def models(self, request: Request) -> dict:
            self.authorize(request)
            return self.per_route(lambda p, m, r: {"default": r.default_id, "models": {i: len(e.members) for i, e in r.entries.items()}})

        @app.get(f"{prefix}/stats", tags=["ops"], dependencies=[bearer])
        async def stats(self, request: Request) -> dict:
            self.authorize(request)
            stats = {route: await m.stats.remote() for route, (_, m, _, _) in self.routes.items()}
            return next(iter(stats.values())) if single else stats

        async def predict(self, request: Request, model_id: str | None = None) -> dict:
            self.authorize(request)
            route = request.url.path.rstrip("/").rsplit("/", 1)[-1]  # only this workload's routes reach here
            predictor, model, registry, max_upload_bytes = self.routes[route]
            payload = await read_payload(request, max_upload_bytes, predictor.raw_field, predictor.raw_media)
            body_id = payload.pop("model_id")
            try:
                entry = registry.get(body_id or model_id)
            except UnknownModel as e:
                raise HTTPException(404, str(e)) from None
            item = await run_in_threadpool(predictor.decode, payload, entry)
            try:
                result = await model.options(multiplexed_model_id=entry.model_id).predict.remote(item)
            except Exception as e:
                return internal_error(getattr(e, "cause", None) or e, f"model {entry.model_id}")
            if isinstance(result, BadInput):  # found only while predicting (e.g. a video truncated midway)
                raise result
            if isinstance(result, ServerFault):
                return _fault_response(result.request_id)
            return result.response() if isinstance(result, Binary) else result

        for _p in predictors:  # one POST route per predictor, every one answered by `predict`
            predict = app.post(
                f"{prefix}/{_p.route}",
                tags=[_p.workload],
                dependencies=[bearer],
                openapi_extra=_with_layer_responses(getattr(_p, "openapi", None) or {}),
            )(predict)
        del _p

    return Ingress


def internal_error(exc: BaseException, where: str) -> JSONResponse:
    """A server fault: logged here in full under a request id; the client gets only the id
    (no exception text, no paths)."""
    request_id = uuid.uuid4().hex[:12]
    logger.error("request %s: %s failed", request_id, where, exc_info=(type(exc), exc, exc.__traceback__))
    return _fault_response(request_id)


def _fault_response(request_id: str) -> JSONResponse:
    return JSONResponse({"detail": "internal server error", "request_id": request_id}, status_code=500)


def _with_layer_responses(openapi: dict) -> dict:
    return {**openapi, "responses": {**LAYER_RESPONSES, **openapi.get("responses", {})}}


# -- auth ----------------------------------------------------------------------------------
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


class OpenAPIRefused(RuntimeError):
    """The ingress would answer without a token where other machines can reach it."""


def is_loopback(host: str | None) -> bool:
    """Whether Serve's ``http_options.host`` takes connections from this machine only.
    Unknown (``None``), ``0.0.0.0``, ``::``, interface addresses and other host names are
    reachable from elsewhere: the check fails closed."""
    if not host:
        return False
    host = host.strip().strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


async def serve_http_host() -> str | None:
    """The address Serve's HTTP proxies listen on (``http_options.host``), asked of the
    Serve controller; ``None`` when it cannot be asked. No public API answers this inside a
    replica (``serve.status()`` omits the HTTP options; the REST API's
    ``ServeInstanceDetails.http_options`` needs the dashboard), so this uses the controller
    client that ``serve.start``/``serve.status`` use."""
    from ray.serve.context import _get_global_client

    try:
        client = await asyncio.to_thread(_get_global_client)
        return client.http_config.host
    except Exception as e:  # treated as reachable from elsewhere (is_loopback(None) is False)
        logger.warning("could not ask the Serve controller for its HTTP host (%s: %s)", type(e).__name__, e)
        return None


def read_api_token(token_file: str = "") -> str | None:
    """The bearer token: the contents of ``token_file`` when one is named, else
    ``$AFFECTLAB_API_TOKEN`` of this process. Called where the ingress runs, at its start,
    so that the token is never an argument Serve stores with the application."""
    if not token_file:
        return os.environ.get(TOKEN_ENV, "").strip() or None
    try:
        token = Path(token_file).read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise OpenAPIRefused(f"token_file {token_file!r} cannot be read on this node ({getattr(e, 'strerror', None) or type(e).__name__})") from None
    if not token:
        raise OpenAPIRefused(f"token_file {token_file!r} is empty; it must hold the bearer token")
    return token


@dataclass(frozen=True)
class AuthSettings:
    """What the ingress needs to set up its token check. Nothing here is secret: Serve keeps
    it with the application's other arguments."""

    token_file: str = ""  # a file holding the token (a mounted secret), read by the ingress
    allow_open: bool = False  # the explicit opt-in to serve without a token on a reachable address
    token_at_build: bool = False  # AFFECTLAB_API_TOKEN was set where the application was built


class ApiAuth:
    """The ingress's bearer-token check, set up once when the replica starts.

    Without a token the API is open, which is refused (``OpenAPIRefused``, so the replica
    never starts) when Serve listens on an address other machines can reach, unless the
    application was given ``allow_open=true``; and refused as well when the token was set
    where the application was built but is missing here, rather than serving open by
    surprise. The token is compared in constant time and never logged."""

    def __init__(self, workload: str, settings: AuthSettings, http_host: str | None):
        self.token = read_api_token(settings.token_file)
        where = f"Serve's HTTP host {http_host!r}" if http_host else "Serve's HTTP host (unknown)"
        if self.token:
            logger.info("the %s API needs a bearer token on every route but /healthz and the docs", workload)
        elif settings.token_at_build:
            raise OpenAPIRefused(
                f"{TOKEN_ENV} was set where the {workload} application was built, but this ingress replica has no token: "
                f"set {TOKEN_ENV} in the environment of the Ray processes that run the replicas (or give token_file=PATH)"
            )
        elif not is_loopback(http_host):
            if not settings.allow_open:
                raise OpenAPIRefused(
                    f"refusing to serve the {workload} API without a token on {where}, which other machines can reach: "
                    f"set {TOKEN_ENV} in the environment of the Ray processes that run the replicas (or give token_file=PATH), "
                    f"bind http_options.host to 127.0.0.1, or pass allow_open=true to serve it open on purpose"
                )
            logger.warning("allow_open=true: the %s API is served without a token on %s", workload, where)
        else:
            logger.warning("%s is not set: the %s API is open to anyone on this machine (%s)", TOKEN_ENV, workload, where)

    def check(self, request: Request) -> None:
        """401 unless the request carries ``Authorization: Bearer <token>`` (when there is one)."""
        if self.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


# -- the application -----------------------------------------------------------------------
@dataclass
class ServeOptions:
    """The application's arguments (``serve run … key=value`` or ``args:`` in a Serve config)."""

    checkpoint: str = ""  # a checkpoint, CV output or sweep output directory
    default_model: str = ""  # id served when a request names none (default: best, else ensemble)
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.01
    max_upload_mb: float = 0.0  # 0: $AFFECTLAB_MAX_UPLOAD_MB, else the predictor's default_upload_mb (10 when it has none)
    num_replicas: int = 1  # model replicas (the config file's autoscaling_config overrides)
    num_cpus: float = 1.0  # per model replica
    num_gpus: float = 0.0  # per model replica; the model runs on CUDA whenever it sees a GPU
    token_file: str = ""  # a file holding the bearer token, read by the ingress at start (else its $AFFECTLAB_API_TOKEN)
    allow_open: bool = False  # serve without a token even where other machines can reach Serve (explicit opt-in)

    @classmethod
    def from_args(cls, args: dict) -> "ServeOptions":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(args) - set(known))
        if unknown:
            raise ValueError(f"unknown serving argument(s) {unknown}; known: {sorted(known)}")
        values = {}
        for name, value in args.items():
            kind = type(getattr(cls(), name))
            try:
                if kind is bool:  # bool("false") is True
                    values[name] = _flag_argument(value)
                else:
                    values[name] = kind(value) if kind is not str else str(value)
            except (TypeError, ValueError):
                raise ValueError(f"serving argument {name}={value!r} is not a {kind.__name__}") from None
        options = cls(**values)
        if not options.checkpoint:
            raise ValueError("serving needs checkpoint=DIR (a checkpoint, CV output or sweep output directory)")
        if options.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be ≥ 1, got {options.max_batch_size}")
        return options

    def upload_bytes(self, default_mb: float = DEFAULT_MAX_UPLOAD_MB) -> int:
        mb = self.max_upload_mb or float(os.environ.get(MAX_UPLOAD_ENV) or default_mb)
        return int(mb * 1_000_000)


def _flag_argument(value: "bool | str") -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in _TRUE | _FALSE:
        raise ValueError(value)
    return text in _TRUE


def build_app(predictor: "Predictor | Sequence[Predictor]", args: dict) -> serve.Application:
    """Ingress → model deployment for ``predictor`` (or one per predictor of a list, each its
    own route), serving the directory in ``args`` (or a predictor's own ``checkpoint``).

    The bearer token is never an argument here (Serve stores those): the ingress reads it
    when its replica starts, from ``token_file`` or its own ``AFFECTLAB_API_TOKEN``, and
    refuses to start without one where other machines can reach Serve unless
    ``allow_open`` (``ApiAuth``).
    """
    predictors = [predictor] if not isinstance(predictor, Sequence) else list(predictor)
    options = ServeOptions.from_args(args)
    name = predictors[0].workload.capitalize()
    models, registries, upload_bytes = [], [], []
    for p in predictors:
        registry = ModelRegistry(getattr(p, "checkpoint", None) or options.checkpoint, p.workload, options.default_model or None)
        model_name = f"{name}Model" if len(predictors) == 1 else f"{name}{p.route.capitalize()}Model"
        models.append(ModelServer.options(
            name=model_name,
            num_replicas=options.num_replicas,
            max_ongoing_requests=max(64, 2 * options.max_batch_size),
            ray_actor_options={"num_cpus": options.num_cpus, "num_gpus": options.num_gpus},
        ).bind(p, registry, options.max_batch_size, options.batch_wait_timeout_s))  # fmt: skip
        registries.append(registry)
        upload_bytes.append(options.upload_bytes(getattr(p, "default_upload_mb", DEFAULT_MAX_UPLOAD_MB)))
    ingress = make_ingress(predictors).options(name=f"{name}Ingress", ray_actor_options={"num_cpus": 0.1})
    auth = AuthSettings(options.token_file, options.allow_open, token_at_build=bool(os.environ.get(TOKEN_ENV, "").strip()))
    return ingress.bind(models, registries, upload_bytes, auth)
