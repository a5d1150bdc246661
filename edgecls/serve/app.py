"""`create_app`: the FastAPI app of `edgecls serve`; its routes only parse, call the runtime and shape the answer.

Routes (OpenAPI at ``/docs`` and ``/openapi.json``):

* ``POST /v1/classify``: one image, as a multipart ``file`` field or the raw body with an ``image/*`` type;
  ``POST /v1/classify/batch``: several ``files`` fields, one result each, in order (an unreadable one is an error
  entry); ``GET /v1/model``: classes, thresholds, preprocessing, artifact, precision, parity, bundle sha256.
* KServe v2: ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2/models/{name}``,
  ``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer`` (the preprocessed FP32 tensor in, logits and
  probabilities out).
* ``GET /healthz`` (alive), ``GET /readyz`` (warmed up), ``GET /metrics`` (Prometheus).

Errors are JSON ``{"error": "..."}``: 401 (API key), 404 (unknown model), 413 (body over ``max_upload_mb``, checked
as it streams in), 415 (not an image type), 422 (not a readable image, bad fields), 503 with ``Retry-After`` (queue
full), 504 (``request_timeout``). Decoding and preprocessing run in a thread pool; the engine runs on the
:class:`DynamicBatcher`'s one thread.
"""

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

import numpy as np

from edgecls._deps import require
from edgecls.errors import DataError, EdgeclsError
from edgecls.metrics import sigmoid
from edgecls.preprocess import FLOAT_INPUT, Preprocessor
from edgecls.serve.auth import Unauthorized, require_key
from edgecls.serve.batcher import BatcherClosed, DynamicBatcher, QueueFull
from edgecls.serve.config import ServeConfig
from edgecls.serve.metrics import CONTENT_TYPE, Metrics

if TYPE_CHECKING:
    from fastapi import FastAPI

    from edgecls.runtime import Classifier

log = logging.getLogger("edgecls.serve")

RETRY_AFTER_S = 1
HEALTH_PATHS = ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready")
INPUT_NAME = "images"
OUTPUTS = ("logits", "probabilities")


def default_workers() -> int:
    from edgecls.runtime.backends import usable_cpus

    return max(1, min(4, usable_cpus()))


@dataclass
class _State:
    classifier: Any
    cfg: ServeConfig
    batcher: DynamicBatcher
    pool: ThreadPoolExecutor
    metrics: Metrics
    ready: threading.Event
    model_name: str
    model_info: dict[str, Any]


class ApiError(Exception):
    """An answer other than 200: the status, a message naming the problem, and headers (Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


# ---------------------------------------------------------------------------------------------------------------------
# the one ASGI middleware: request metrics and the body limit (checked while the body streams in)


class _Guard:
    def __init__(self, app: Any, *, limit: int, limit_mb: float, metrics: Metrics,
                 too_large: Callable[[str], Exception]) -> None:
        self.app = app
        self.limit = limit
        self.limit_mb = limit_mb
        self.metrics = metrics
        self.too_large = too_large  # an HTTPException 413: the app's handlers (FastAPI's body reading too) pass it on

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = False
        self.metrics.in_progress.inc()
        too_large = f"the request body is over --max-upload-mb {self.limit_mb:g} MB"

        async def send_tracking(message: dict) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
            await send(message)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > self.limit:
                await _send_json(send_tracking, 413, {"error": f"{too_large} (Content-Length {declared})"},
                                 close=True)
                return
            seen = 0

            async def receive_limited() -> dict:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > self.limit:
                        raise self.too_large(too_large)
                return message

            try:
                await self.app(scope, receive_limited, send_tracking)
            except Exception as exc:
                if started or getattr(exc, "status_code", None) != 413:
                    raise
                await _send_json(send_tracking, 413, {"error": too_large}, close=True)
        finally:
            self.metrics.in_progress.dec()
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(path, scope.get("method", ""), status, time.perf_counter() - start)


def _content_length(scope: dict) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send: Callable, status: int, body: dict, *, close: bool = False) -> None:
    import json

    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


# ---------------------------------------------------------------------------------------------------------------------
# request bodies


@dataclass(frozen=True)
class _Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes


async def _read_body(request: Any) -> bytes:
    chunks = []
    async for chunk in request.stream():  # the guard's receive counts the bytes and stops at the limit
        if chunk:
            chunks.append(chunk)
    return b"".join(chunks)


def _media_type(request: Any) -> tuple[str, dict[str, str]]:
    mp = require("python_multipart.multipart", extra="serve", package="python-multipart")
    raw = request.headers.get("content-type", "")
    kind, params = mp.parse_options_header(raw)
    return kind.decode("latin-1").lower(), {k.decode("latin-1").lower(): v.decode("latin-1")
                                            for k, v in params.items()}


def _parse_multipart(body: bytes, boundary: str) -> list[_Part]:
    mp = require("python_multipart.multipart", extra="serve", package="python-multipart")
    parts: list[_Part] = []
    state: dict[str, Any] = {}

    def on_part_begin() -> None:
        state.update(headers={}, field=b"", value=b"", data=[])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["data"].append(data[start:end])

    def on_part_end() -> None:
        _, disposition = mp.parse_options_header(state["headers"].get("content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        ctype = state["headers"].get("content-type", b"").decode("latin-1").lower()
        parts.append(_Part(name, filename.decode("utf-8", "replace") if filename is not None else None, ctype,
                           b"".join(state["data"])))

    callbacks = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end, "on_part_data": on_part_data,
                 "on_part_end": on_part_end}
    try:
        parser = mp.MultipartParser(boundary.encode("latin-1"), callbacks)
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # noqa: BLE001  (python-multipart raises several kinds on bad input)
        raise ApiError(422, f"malformed multipart/form-data body ({exc})") from None
    return parts


_NOT_AN_IMAGE_TYPE = ("send the image as multipart/form-data (a 'file' field) or as the raw body with an image/* "
                      "Content-Type")


async def _images_of(request: Any, *, field_names: tuple[str, ...], many: bool) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image a request carries."""
    kind, params = _media_type(request)
    if kind == "multipart/form-data":
        boundary = params.get("boundary")
        if not boundary:
            raise ApiError(422, "multipart/form-data without a boundary parameter in its Content-Type")
        parts = _parse_multipart(await _read_body(request), boundary)
        files = [p for p in parts if p.name in field_names]
        if not files:
            found = ", ".join(repr(p.name) for p in parts) or "none"
            raise ApiError(422, f"the multipart body has no {' or '.join(map(repr, field_names))} field (fields "
                                f"found: {found})")
        if not many and len(files) > 1:
            raise ApiError(422, f"{len(files)} files in one /v1/classify request; send several to /v1/classify/batch")
        return [(_display_name(p.filename, i), p.data) for i, p in enumerate(files)]
    if kind.startswith("image/") and not many:
        body = await _read_body(request)
        return [("body", body)]
    if not kind:
        raise ApiError(415, f"no Content-Type; {_NOT_AN_IMAGE_TYPE}")
    if many:
        raise ApiError(415, f"unsupported Content-Type {kind!r} for a batch: send multipart/form-data with one "
                            "'files' field per image")
    raise ApiError(415, f"unsupported Content-Type {kind!r}; {_NOT_AN_IMAGE_TYPE}")


def _display_name(filename: str | None, index: int) -> str:
    """A client's file name, shown in answers only (never used as a path): printable, at most 200 characters."""
    if not filename:
        return f"file {index}"
    clean = "".join(c if c.isprintable() else "?" for c in filename)
    return clean[:200]


# ---------------------------------------------------------------------------------------------------------------------
# the app


def _swagger_files() -> dict[str, str]:
    """The Swagger UI files /docs serves, by name (from the swagger-ui-bundle package of the serve extra)."""
    import os

    swagger_ui_bundle = require("swagger_ui_bundle", extra="serve", package="swagger-ui-bundle")
    root = swagger_ui_bundle.swagger_ui_path
    return {n: os.path.join(root, n) for n in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")}


def create_app(classifier: "Classifier", cfg: ServeConfig, *, batcher: DynamicBatcher | None = None,
               live: Any = None, ready: threading.Event | None = None) -> "FastAPI":
    """The FastAPI app serving ``classifier``.

    Args:
        classifier: the loaded :class:`edgecls.runtime.Classifier`.
        cfg: the server's settings (batching, limits, API key).
        batcher: the engine's batcher (:func:`edgecls.serve.server.run_server` makes one that the live view shares);
            without one the app makes its own, stopped with the app.
        live: a live view (``edgecls.serve.live.LiveView``): its router (``/``, ``/v1/stream.mjpg``, ``/v1/events``,
            ``/v1/live``, ``/static``) is added behind the API key, and its camera figures go to /metrics.
        ready: set once the engine is warmed up (/readyz answers 503 until then); without one the app counts as ready.
    """
    fastapi = require("fastapi", extra="serve")
    from fastapi import Depends, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect

    own_batcher = batcher is None
    metrics_box: list[Metrics] = []
    if batcher is None:
        batcher = DynamicBatcher(classifier.backend.infer, num_classes=len(classifier.class_names),
                                 max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms, max_queue=cfg.max_queue,
                                 on_batch=lambda s: metrics_box[0].on_batch(s) if metrics_box else None)
    metrics = Metrics(queue_depth=lambda: batcher.depth, live=live)
    metrics_box.append(metrics)
    if ready is None:
        ready = threading.Event()
        ready.set()
    pool = ThreadPoolExecutor(max_workers=cfg.workers or default_workers(), thread_name_prefix="edgecls-decode")
    state = _State(classifier, cfg, batcher, pool, metrics, ready, _model_name(classifier), _model_info(classifier))

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        pool.shutdown(wait=False, cancel_futures=True)
        if own_batcher:
            batcher.stop()

    app = fastapi.FastAPI(
        title="edgecls serve", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
        openapi_url=None,
        description=f"Multi-label classifier {state.model_name!r}: {', '.join(classifier.class_names)}. Labels at "
                    f"the artifact's tuned thresholds; the same preprocessing as `edgecls predict`.",
    )
    app.state.edgecls = state
    auth = Depends(require_key(cfg.api_key))
    protected = fastapi.APIRouter(dependencies=[auth])
    public = fastapi.APIRouter(tags=["health"])
    spec = classifier.spec

    # -- errors --------------------------------------------------------------------------------------------------
    def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error(exc.status, exc.message, exc.headers)

    @app.exception_handler(Unauthorized)
    async def _unauthorized(request: Request, exc: Unauthorized) -> Response:
        return error(401, "missing or wrong API key: send `Authorization: Bearer KEY` (or the edgecls_api_key "
                          "cookie)", {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for e in exc.errors()[:5]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {e.get('msg', 'invalid')}")
        status = 400 if request.url.path.startswith("/v2/") else 422
        return error(status, "invalid request: " + "; ".join(problems))

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        return error(400, "the client closed the connection before its request was complete")

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed: %r", request.method, request.url.path, exc)
        return error(500, f"internal error ({type(exc).__name__}); see the server log")

    # -- running one request ---------------------------------------------------------------------------------------
    async def bounded(work: Any) -> Any:
        try:
            return await asyncio.wait_for(work, cfg.request_timeout)
        except asyncio.TimeoutError:
            raise ApiError(504, f"no answer within --request-timeout {cfg.request_timeout:g} s (queue depth "
                                f"{batcher.depth}); try again or raise the timeout") from None

    async def prepare(name: str, data: bytes) -> np.ndarray:
        if not data:
            raise DataError(f"{name}: empty image")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, _preprocess, data, spec, name, cfg.max_pixels or None,
                                          classifier.input_kind)

    def submit(x: np.ndarray, *, logits: bool = False) -> "asyncio.Future[np.ndarray]":
        """Queue ``x`` for the engine now (inside the request's announce block); await the answer later."""
        try:
            return asyncio.wrap_future(batcher.submit(x, logits=logits))
        except (QueueFull, BatcherClosed) as exc:
            raise ApiError(503, str(exc), {"Retry-After": str(RETRY_AFTER_S)}) from None

    def result(probs: np.ndarray, source: str) -> dict[str, Any]:
        pred = classifier.predictions(probs[None], [source])[0]  # the runtime's one thresholding rule
        return {"source": source, "labels": list(pred.labels), "probabilities": pred.probabilities}

    def common() -> dict[str, Any]:
        b = classifier.backend
        return {"thresholds": {n: float(t) for n, t in zip(classifier.class_names, classifier.thresholds)},
                "artifact": classifier.artifact.name, "backend": b.name, "device": b.device,
                "precision": classifier.precision_name}

    # -- /v1 -----------------------------------------------------------------------------------------------------
    one_image_body = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"}}}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
    }}}

    @protected.post("/v1/classify", tags=["v1"], openapi_extra=one_image_body, responses=_ERRORS,
                    summary="Classify one image (multipart `file`, or the raw body with an image/* type)")
    async def classify(request: Request) -> Response:
        start = time.perf_counter()

        async def work() -> dict[str, Any]:
            with batcher.announce():
                ((name, data),) = await _images_of(request, field_names=("file",), many=False)
                try:
                    x = await prepare(name, data)
                except DataError as exc:
                    raise ApiError(422, str(exc)) from None
                prepared = time.perf_counter()
                answer = submit(x)
            probs = await answer
            done = time.perf_counter()
            return {**result(probs, name), **common(),
                    "server_ms": {"total": _ms(done - start), "read_and_preprocess": _ms(prepared - start),
                                  "queue_and_engine": _ms(done - prepared)}}

        return JSONResponse(await bounded(work()))

    batch_body = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}

    @protected.post("/v1/classify/batch", tags=["v1"], openapi_extra=batch_body, responses=_ERRORS,
                    summary="Classify several images (multipart `files` fields): one result each, in order; an "
                            "unreadable image is an error entry")
    async def classify_batch(request: Request) -> Response:
        start = time.perf_counter()

        async def work() -> dict[str, Any]:
            with batcher.announce():
                images = await _images_of(request, field_names=("files", "file"), many=True)
                if len(images) > cfg.max_files:
                    raise ApiError(413, f"{len(images)} files in one request, over --max-files {cfg.max_files}")
                outcomes = await asyncio.gather(*(prepare(n, d) for n, d in images), return_exceptions=True)
                for out in outcomes:
                    if isinstance(out, BaseException) and not isinstance(out, DataError):
                        raise out
                good = [o for o in outcomes if isinstance(o, np.ndarray)]
                answer = submit(np.stack(good)) if good else None
            probs = iter(await answer) if answer is not None else iter(())
            rows = []
            for (name, _), out in zip(images, outcomes):
                if isinstance(out, np.ndarray):
                    rows.append(result(next(probs), name))
                else:
                    rows.append({"source": name, "error": str(out), "labels": [], "probabilities": {}})
            return {"results": rows, **common(), "server_ms": {"total": _ms(time.perf_counter() - start)}}

        return JSONResponse(await bounded(work()))

    @protected.get("/v1/model", tags=["v1"], summary="The model: classes, thresholds, preprocessing, artifact, "
                   "precision, parity, bundle sha256")
    async def model() -> Response:
        return JSONResponse(state.model_info)

    # -- KServe v2 -----------------------------------------------------------------------------------------------
    models = _kserve_models()

    @protected.get("/v2", tags=["kserve v2"], summary="Server metadata")
    async def v2_server() -> Response:
        return JSONResponse({"name": "edgecls", "version": _version(), "extensions": []})

    def check_name(name: str) -> None:
        if name != state.model_name:
            raise ApiError(404, f"unknown model {name!r}; this server serves {state.model_name!r}")

    @protected.get("/v2/models/{name}", tags=["kserve v2"], summary="Model metadata")
    async def v2_model(name: str) -> Response:
        check_name(name)
        size = spec.img_size
        return JSONResponse({
            "name": state.model_name, "versions": [], "platform": f"edgecls_{classifier.backend.name}",
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 3, size, size]}],
            "outputs": [{"name": o, "datatype": "FP32", "shape": [-1, len(classifier.class_names)]} for o in OUTPUTS],
            "parameters": {"class_names": list(classifier.class_names), "preprocess": spec.to_dict(),
                           "thresholds": [float(t) for t in classifier.thresholds]},
        })

    @protected.get("/v2/models/{name}/ready", tags=["kserve v2"], summary="Model readiness")
    async def v2_model_ready(name: str) -> Response:
        check_name(name)
        if not ready.is_set():
            raise ApiError(503, "warming up")
        return JSONResponse({"name": state.model_name, "ready": True})

    async def v2_infer(name: str, body: Any) -> Response:
        check_name(name)

        async def work() -> dict[str, Any]:
            with batcher.announce():
                loop = asyncio.get_running_loop()  # a large tensor takes milliseconds to convert: not on the loop
                x = await loop.run_in_executor(pool, lambda: classifier.to_input(  # pixels for a -u8 artifact
                    _tensor_of(body, spec.img_size, cfg.max_files)))
                wanted = _wanted_outputs(body)
                answer = submit(x, logits=True)
            logits = await answer
            values = {"logits": logits, "probabilities": sigmoid(logits)}
            out: dict[str, Any] = {"model_name": state.model_name, "outputs": [
                {"name": o, "datatype": "FP32", "shape": list(values[o].shape),
                 "data": values[o].ravel().tolist()} for o in wanted]}
            if body.id is not None:
                out["id"] = body.id
            return out

        return JSONResponse(await bounded(work()))

    v2_infer.__annotations__["body"] = models["InferRequest"]  # a class made at run time: FastAPI reads it here
    protected.post("/v2/models/{name}/infer", tags=["kserve v2"], responses=_ERRORS,
                   summary="Inference on the preprocessed FP32 tensor [N, 3, H, W]: logits and probabilities")(v2_infer)

    # -- health, metrics, docs -------------------------------------------------------------------------------------
    @public.get("/healthz", summary="Alive")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    def readiness() -> Response:
        if not batcher.alive:
            return error(503, "the inference thread has stopped")
        if not ready.is_set():
            return error(503, "warming up")
        return JSONResponse({"status": "ready", "model": state.model_name})

    @public.get("/readyz", summary="Model loaded and warmed up")
    async def readyz() -> Response:
        return readiness()

    @public.get("/v2/health/live", summary="KServe v2: alive")
    async def v2_live() -> Response:
        return JSONResponse({"live": True})

    @public.get("/v2/health/ready", summary="KServe v2: ready")
    async def v2_ready() -> Response:
        answer = readiness()
        return JSONResponse({"ready": answer.status_code == 200}, status_code=answer.status_code)

    @protected.get("/metrics", tags=["metrics"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @protected.get("/openapi.json", include_in_schema=False)
    async def openapi() -> Response:
        return JSONResponse(app.openapi())

    @protected.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        from fastapi.openapi.docs import get_swagger_ui_html

        # Swagger UI's script and style from the swagger-ui-bundle package, not a CDN: the page works offline
        return get_swagger_ui_html(openapi_url="/openapi.json", title="edgecls serve",
                                   swagger_js_url="/docs/swagger-ui-bundle.js", swagger_css_url="/docs/swagger-ui.css",
                                   swagger_favicon_url="/docs/favicon-32x32.png")

    @protected.get("/docs/{name}", include_in_schema=False)
    async def docs_file(name: str) -> Response:
        path = _swagger_files().get(name)  # a fixed set of names: no request value becomes a path
        if path is None:
            return JSONResponse({"error": f"no such file: /docs/{name}"}, status_code=404)
        return FileResponse(path, headers={"Cache-Control": "max-age=86400"})

    app.include_router(public)
    app.include_router(protected)
    if live is not None:  # the page and its script stay open; the live data routes need the key
        app.include_router(_live_router(live, auth))
    app.add_middleware(_Guard, limit=cfg.max_upload_bytes, limit_mb=cfg.max_upload_mb, metrics=metrics,
                       too_large=lambda message: fastapi.HTTPException(413, message))
    return app


def _live_router(live: Any, auth: Any) -> Any:
    try:
        from edgecls.serve.live import live_router  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise EdgeclsError(f"the live view needs edgecls.serve.live, which this install lacks ({exc})") from None
    return live_router(live, dependencies=[auth])


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong API key"},
    413: {"description": "body over --max-upload-mb (or too many files)"},
    415: {"description": "not an image Content-Type"},
    422: {"description": "not a readable image, or a malformed body"},
    503: {"description": "queue full (Retry-After) or shutting down"},
    504: {"description": "no answer within --request-timeout"},
}


_local = threading.local()


def _preprocess(data: bytes, spec: Any, name: str, max_pixels: int | None, kind: str = FLOAT_INPUT) -> np.ndarray:
    """One image -> what the artifact takes (``kind``), by a :class:`Preprocessor` kept per decode thread (its
    resize buffer is reused); the result is the caller's own array."""
    pre = getattr(_local, "pre", None)
    if pre is None or pre.spec != spec or pre.output != kind:
        pre = _local.pre = Preprocessor(spec, output=kind)
    return pre(data, name=name, max_pixels=max_pixels)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _version() -> str:
    import edgecls

    return edgecls.__version__


def _model_name(classifier: Any) -> str:
    """The bundle folder's name (what KServe clients address), reduced to URL-safe characters."""
    import re

    raw = classifier.root.name if classifier.root is not None else "model"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw) or "model"


def _model_info(classifier: Any) -> dict[str, Any]:
    from edgecls._io import sha256_file
    from edgecls.manifest import MANIFEST_NAME

    art = classifier.artifact
    manifest = classifier.root / MANIFEST_NAME
    backend = classifier.backend
    return {
        "name": _model_name(classifier),
        "class_names": list(classifier.class_names),
        "thresholds": {n: float(t) for n, t in zip(classifier.class_names, classifier.thresholds)},
        "preprocess": classifier.spec.to_dict(),
        "artifact": {"name": art.name, "format": art.format, "precision": art.precision, "parent": art.parent},
        "backend": {"name": backend.name, "device": backend.device, "precision": backend.precision},
        "precision": classifier.precision_name,
        "reason": classifier.reason,
        "parity": art.parity,
        "backbone": classifier.manifest.backbone,
        "edgecls_version": _version(),
        "bundle_sha256": sha256_file(manifest) if manifest.is_file() else None,
    }


def _kserve_models() -> dict[str, type]:
    """The KServe v2 infer request, as pydantic models (the body FastAPI validates and documents)."""
    from pydantic import BaseModel, Field

    class InferInput(BaseModel):
        name: str
        shape: list[int]
        datatype: str
        parameters: dict[str, Any] | None = None
        data: list[Any] = Field(description="the tensor's values in row-major order, flat or nested")

    class RequestedOutput(BaseModel):
        name: str
        parameters: dict[str, Any] | None = None

    class InferRequest(BaseModel):
        id: str | None = None
        parameters: dict[str, Any] | None = None
        inputs: list[InferInput]
        outputs: list[RequestedOutput] | None = None

    return {"InferRequest": InferRequest}


def _tensor_of(body: Any, size: int, max_n: int) -> np.ndarray:
    if len(body.inputs) != 1:
        raise ApiError(400, f"expected one input {INPUT_NAME!r}, got {len(body.inputs)}")
    inp = body.inputs[0]
    if inp.name != INPUT_NAME:
        raise ApiError(400, f"unknown input {inp.name!r}; the model's input is {INPUT_NAME!r}")
    if inp.datatype != "FP32":
        raise ApiError(400, f"input datatype {inp.datatype!r}; the model takes FP32")
    if inp.parameters and "binary_data_size" in inp.parameters:
        raise ApiError(400, "the binary tensor extension is not supported; send the values as JSON data")
    shape = inp.shape
    if len(shape) != 4 or shape[1:] != [3, size, size] or not 1 <= shape[0] <= max_n:
        raise ApiError(400, f"input shape {shape}; the model takes [N, 3, {size}, {size}] with 1 <= N <= {max_n} "
                            "(--max-files), preprocessed as /v2/models/NAME's parameters.preprocess says")
    try:
        x = np.asarray(inp.data, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        raise ApiError(400, "input data must be numbers (flat, or nested as the shape)") from None
    expected = shape[0] * 3 * size * size
    if x.size != expected:
        raise ApiError(400, f"input data holds {x.size} values; shape {shape} needs {expected}")
    if not np.isfinite(x).all():
        raise ApiError(400, "input data holds NaN or infinite values")
    return x.reshape(shape)


def _wanted_outputs(body: Any) -> tuple[str, ...]:
    if not body.outputs:
        return OUTPUTS
    names = tuple(o.name for o in body.outputs)
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        raise ApiError(400, f"unknown output(s) {', '.join(map(repr, unknown))}; the model gives "
                            f"{', '.join(OUTPUTS)}")
    return names
