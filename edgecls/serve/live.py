"""The live view: the camera loop of ``edgecls run`` inside the server, its MJPEG stream, its events and its page.

:class:`LiveView` drives :func:`edgecls.runtime.stream.stream_frames` (the newest frame of a camera or stream, reopened
with back-off; a video file played in real time, and from the start again when it ends) in one thread, with
inference through the ``infer`` callable it is given (the server's batcher, so the camera and the HTTP requests share
one engine thread). Per frame it keeps:

* the state (:meth:`LiveView.stats`): frames, FPS, latency, dropped frames, reconnects, labels and probabilities;
* label-change events, debounced by ``min_duration`` (a new label set counts once it has held that long), given to
  every subscriber's own bounded :class:`EventQueue` (a slow subscriber loses its oldest events, never blocks the loop);
* while somebody watches, the frame with the overlay of ``edgecls run`` (:func:`edgecls.runtime.video.draw_overlay`)
  as one JPEG with a sequence number: each MJPEG viewer sends the newest one when its connection is ready, so a slow
  viewer skips frames and never slows inference.

:func:`live_router` serves them: ``GET /`` (the page), ``GET /static/live.js``, ``GET /v1/live`` (the state),
``GET /v1/stream.mjpg`` (multipart/x-mixed-replace) and ``GET /v1/events`` (Server-Sent Events: ``labels`` events and
a ``state`` event every ``state_interval`` seconds). The streams end when :attr:`LiveView.closed` is set, so a
server's graceful shutdown is not held up by open viewers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator, Sequence

import numpy as np

from edgecls._deps import require
from edgecls.errors import ConfigError, DataError
from edgecls.preprocess import DEFAULT_MAX_PIXELS, FLOAT_INPUT, PreprocessSpec, check_input_kind
from edgecls.runtime.classifier import Classifier
from edgecls.runtime.stream import (
    DEFAULT_FRAME_TIMEOUT,
    FrameResult,
    Source,
    StreamStats,
    backoff_delays,
    limit_frames,
    open_capture,
    stream_frames,
)
from edgecls.runtime.video import draw_overlay

if TYPE_CHECKING:
    from fastapi import APIRouter

log = logging.getLogger("edgecls.serve")

Infer = Callable[[np.ndarray], np.ndarray]

STATIC_FILES = {"live.js": "text/javascript; charset=utf-8"}  # what GET /static/{name} serves; nothing else
ENGINE_RETRY = 0.05  # seconds between tries of a failed inference call
STALE_AFTER = 2.0  # seconds without a frame after which the view says it is not connected
FPS_WINDOW = 2.0  # seconds of frames the FPS is counted over (a file that starts again does not reset it)
PAGE_CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self'; style-src 'unsafe-inline'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class _AsyncWaiters:
    """asyncio Events of any event loop, set from any thread when something new is there."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    @contextlib.contextmanager
    def listen(self) -> Iterator[asyncio.Event]:
        item = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._items.add(item)
        try:
            yield item[1]
        finally:
            with self._lock:
                self._items.discard(item)

    def __len__(self) -> int:
        return len(self._items)

    def fire(self) -> None:
        with self._lock:
            items = list(self._items)
        for loop, event in items:
            with contextlib.suppress(RuntimeError):  # that loop is closed: its listener is gone
                loop.call_soon_threadsafe(event.set)


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


class EventQueue:
    """A bounded queue of events for one subscriber: when full, the oldest event is dropped (and counted), so the
    producer never waits. Read it from a thread (:meth:`get`) or from asyncio (:meth:`aget`)."""

    def __init__(self, maxsize: int) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ConfigError(f"an event queue holds at least 1 event, got {maxsize!r}")
        self.maxsize = maxsize
        self.dropped = 0
        self.closed = False
        self._items: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._waiters = _AsyncWaiters()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event: dict[str, Any]) -> None:
        with self._cond:
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(event)
            self._cond.notify_all()
        self._waiters.fire()

    def get_nowait(self) -> dict[str, Any] | None:
        with self._cond:
            return self._items.popleft() if self._items else None

    def peek(self) -> dict[str, Any] | None:
        with self._cond:
            return self._items[0] if self._items else None

    def get(self, timeout: float) -> dict[str, Any] | None:
        """The oldest event, waiting up to ``timeout`` seconds; None when none came or the queue is closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self.closed, timeout=timeout)
            return self._items.popleft() if self._items else None

    async def aget(self, timeout: float) -> dict[str, Any] | None:
        """:meth:`get` for a coroutine: the event loop is never blocked."""
        deadline = time.monotonic() + timeout
        with self._waiters.listen() as wake:
            while True:
                wake.clear()
                item = self.get_nowait()
                remaining = deadline - time.monotonic()
                if item is not None or self.closed or remaining <= 0:
                    return item
                await _wait(wake, remaining)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self._waiters.fire()


@dataclass
class LiveStats:
    """The live view's state now (``GET /v1/live``, the page, the server's metrics)."""

    frames: int = 0  # frames classified since start (every loop of a file, every reconnect)
    fps: float = 0.0  # classified frames per second over the last FPS_WINDOW seconds
    latency_ms: float = 0.0  # preprocess + inference of the last frame
    dropped_frames: int = 0  # stale frames the camera reader skipped (the newest frame is always the one classified)
    reconnects: int = 0
    engine_errors: int = 0  # failed inference calls (each tried again for up to the frame timeout)
    connected: bool = False  # frames are arriving (one came within the last STALE_AFTER seconds)
    labels: list[str] = field(default_factory=list)  # the labels of the last frame
    probabilities: dict[str, float] = field(default_factory=dict)  # of the last frame
    stable_labels: list[str] | None = None  # the debounced label set (what the last label event said; None before)
    events: int = 0  # label-change events so far
    viewers: int = 0  # open MJPEG streams
    subscribers: int = 0  # open event queues (SSE clients, the MQTT publisher)
    source: str = ""
    error: str | None = None  # why the source is not delivering, while it is not

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fps"] = round(self.fps, 2)
        data["latency_ms"] = round(self.latency_ms, 3)
        data["probabilities"] = {k: round(v, 4) for k, v in self.probabilities.items()}
        return data


class _Engine:
    """What :func:`stream_frames` calls a classifier: the bundle's spec, names and thresholds with ``infer``.

    A failing ``infer`` (the shared batcher's queue is full, or it timed out) is tried again every
    ``ENGINE_RETRY`` seconds for up to ``retry_for`` seconds before the error ends the stream, so a burst of HTTP
    requests delays a frame instead of reopening the camera."""

    predictions = Classifier.predictions  # the one thresholding rule (probability >= the artifact's threshold)

    def __init__(self, spec: PreprocessSpec, class_names: Sequence[str], thresholds: Sequence[float],
                 infer: Infer, *, retry_for: float, stop: threading.Event, input_kind: str = FLOAT_INPUT) -> None:
        self.spec = spec
        self.input_kind = input_kind  # what stream_frames preprocesses frames into (the artifact's input)
        self.class_names = tuple(class_names)
        self.thresholds = np.asarray(thresholds, dtype=np.float32)
        if self.thresholds.shape != (len(self.class_names),):
            raise ConfigError(f"{len(self.thresholds)} thresholds for {len(self.class_names)} classes")
        self._infer = infer
        self._retry_for = retry_for
        self._stop = stop
        self.errors = 0  # failed infer calls so far

    def probs(self, batch: np.ndarray) -> np.ndarray:
        deadline = time.monotonic() + self._retry_for
        while True:
            try:
                out = np.asarray(self._infer(batch), dtype=np.float32)
                break
            except (ConfigError, DataError):
                raise
            except Exception as exc:
                self.errors += 1
                if time.monotonic() >= deadline or self._stop.is_set():
                    raise
                if self.errors == 1 or self.errors % 100 == 0:
                    log.warning("live view: inference failed (%s: %s; %d so far); trying again",
                                type(exc).__name__, exc, self.errors)
                self._stop.wait(ENGINE_RETRY)
        if out.shape != (len(batch), len(self.class_names)):
            raise DataError(f"inference returned shape {out.shape} for a batch of {len(batch)} and "
                            f"{len(self.class_names)} classes")
        return out


class LiveView:
    """The camera loop in a thread: state, debounced label events and the newest annotated JPEG.

    Args:
        source: from :func:`edgecls.runtime.stream.parse_source` (``--camera N`` or ``--source FILE_OR_URL``).
        spec, class_names, thresholds: the bundle's (``Classifier.spec``, ``.class_names``, ``.thresholds``).
        infer: preprocessed float32 ``(N, 3, H, W)`` -> probabilities ``(N, K)``, callable from this thread.
        input_kind: what ``infer`` takes (``Classifier.input_kind``): uint8 ``(N, H, W, 3)`` pixels for an artifact
            that normalises in the engine.
        min_duration: seconds a new label set must hold before it is an event (0: at once).
        frame_timeout: a try of the source fails when no frame comes in this many seconds; a failing ``infer`` is
            tried again for as long before the error counts.
        reconnect_tries: reopen tries (0.5, 1, 2 s ... apart) before the loop rests ``retry_delay`` and starts over.
        max_pixels: a source whose frames are larger is refused (None or 0: no limit).
        jpeg_quality: of the MJPEG frames (1-100).
        loop_file: play a video file again from the start when it ends.
        opener: opens the capture (the camera boundary), as for :func:`stream_frames`.
    """

    def __init__(
        self,
        source: Source,
        *,
        spec: PreprocessSpec,
        class_names: Sequence[str],
        thresholds: Sequence[float],
        infer: Infer,
        input_kind: str = FLOAT_INPUT,
        min_duration: float = 0.5,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        reconnect_tries: int = 3,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        jpeg_quality: int = 80,
        loop_file: bool = True,
        retry_delay: float = 5.0,
        opener: Callable[[Source], Any] = open_capture,
    ) -> None:
        if isinstance(min_duration, bool) or not isinstance(min_duration, (int, float)) or min_duration < 0:
            raise ConfigError(f"--min-duration must be a number of seconds >= 0, got {min_duration!r}")
        if isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, int) or not 1 <= jpeg_quality <= 100:
            raise ConfigError(f"the JPEG quality is a whole number from 1 to 100, got {jpeg_quality!r}")
        if isinstance(frame_timeout, bool) or not isinstance(frame_timeout, (int, float)) or not frame_timeout > 0:
            raise ConfigError(f"--frame-timeout must be a number of seconds > 0, got {frame_timeout!r}")
        self.source = source
        self.class_names = tuple(class_names)
        self.min_duration = float(min_duration)
        self.frame_timeout = float(frame_timeout)
        self.backoff = backoff_delays(reconnect_tries)
        self.jpeg_quality = jpeg_quality
        self.loop_file = loop_file
        self.retry_delay = retry_delay
        self.closed = threading.Event()  # set by stop(): streams and the loop end
        self._engine = _Engine(spec, class_names, thresholds, infer, retry_for=self.frame_timeout, stop=self.closed,
                               input_kind=check_input_kind(input_kind, where="LiveView input_kind"))
        if opener is open_capture:
            opener = functools.partial(open_capture, timeout=self.frame_timeout)
        self._opener = limit_frames(opener, max_pixels or None)
        self._lock = threading.Lock()
        self._stats = LiveStats(source=source.label)
        self._reconnects = 0
        self._dropped = 0
        self._candidate: tuple[tuple[str, ...], float] | None = None
        self._stable: tuple[str, ...] | None = None
        self._jpeg: tuple[int, bytes] | None = None
        self._times: deque[float] = deque()  # when the frames of the last FPS_WINDOW seconds were classified
        self._viewers = 0
        self._frame_waiters = _AsyncWaiters()
        self._subscribers: set[EventQueue] = set()
        self._thread: threading.Thread | None = None

    # -- the loop ------------------------------------------------------------------------------------------------
    def start(self) -> "LiveView":
        if self._thread is not None:
            raise RuntimeError("this live view has already been started")
        self._thread = threading.Thread(target=self._run, name="edgecls-live", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """End the streams at once and the camera loop soon after (it notices within 0.2 s, even while it waits for
        a frozen camera or between reopen tries; a capture thread stuck in the camera's read is left after 1 s);
        True when the loop has ended within ``timeout`` seconds."""
        self.closed.set()
        self._frame_waiters.fire()
        with self._lock:
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub.close()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self.closed.is_set():
            stats = StreamStats()
            try:
                frames = stream_frames(self._engine, self.source, realtime=True, backoff=self.backoff,
                                       frame_timeout=self.frame_timeout, stats=stats, opener=self._opener, max_batch=1,
                                       stop=self.closed)
                with contextlib.closing(frames):
                    for result in frames:
                        self._on_frame(result, stats)
                        if self.closed.is_set():
                            break
                error = None if self.closed.is_set() else "the video file ended" if not self.source.live \
                    else "the stream ended"
            except DataError as exc:
                error = str(exc)
            except Exception as exc:  # the engine failed (e.g. the batcher timed out): log, rest, go on
                log.exception("live view: %s", exc)
                error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._dropped += stats.dropped
                self._reconnects += stats.reconnects
                self._stats.connected = False
            if self.closed.is_set():
                break
            ended = error == "the video file ended"
            if ended and self.loop_file and stats.frames:
                continue  # the file again from its first frame
            with self._lock:
                self._stats.error = error
            if ended:
                log.info("live view: %s", error)
                break
            log.warning("live view: %s; starting over in %g s", error, self.retry_delay)
            if self.closed.wait(self.retry_delay):
                break
            with self._lock:
                self._reconnects += 1

    def _on_frame(self, result: FrameResult, stats: StreamStats) -> None:
        pred = result.prediction
        labels = tuple(pred.labels)
        probabilities = pred.probabilities
        now = time.monotonic()
        with self._lock:
            s = self._stats
            s.frames += 1
            times = self._times
            times.append(now)
            while len(times) > 2 and now - times[0] > FPS_WINDOW:
                times.popleft()
            s.fps = (len(times) - 1) / (now - times[0]) if now > times[0] else 0.0
            s.latency_ms = result.latency_ms
            s.dropped_frames = self._dropped + stats.dropped
            s.reconnects = self._reconnects + stats.reconnects
            s.engine_errors = self._engine.errors
            s.connected = True
            s.error = None
            s.labels = list(labels)
            s.probabilities = probabilities
            seq, fps = s.frames, s.fps
            previous = self._stable
            event = None
            if self._debounce(labels, now):
                s.events += 1
                s.stable_labels = list(labels)
                event = {"type": "labels", "id": s.events, "time": round(time.time(), 3), "source": self.source.label,
                         "labels": list(labels), "previous": None if previous is None else list(previous),
                         "probabilities": {k: round(v, 4) for k, v in probabilities.items()}, "frame": seq}
            subscribers = list(self._subscribers) if event is not None else []
            watched = self._viewers > 0
        for sub in subscribers:
            sub.put(event)
        if watched:
            cv2 = require("cv2", extra="runtime", package="opencv-python-headless")
            shown = dataclasses.replace(result, fps=fps)  # the view's FPS: the file's restarts do not reset it
            ok, buf = cv2.imencode(".jpg", draw_overlay(result.frame, shown),
                                   [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if ok:
                with self._lock:
                    self._jpeg = (seq, buf.tobytes())
                self._frame_waiters.fire()

    def _debounce(self, labels: tuple[str, ...], now: float) -> bool:
        """True (and ``labels`` become the announced set) when they differ from the last announced set and have held
        for ``min_duration`` seconds."""
        if labels == self._stable:
            self._candidate = None
            return False
        if self._candidate is None or self._candidate[0] != labels:
            self._candidate = (labels, now)
        if now - self._candidate[1] < self.min_duration:
            return False
        self._stable, self._candidate = labels, None
        return True

    # -- what the routes and the publisher read -----------------------------------------------------------------------
    def stats(self) -> LiveStats:
        with self._lock:
            s = self._stats
            copy = LiveStats(**{**asdict(s), "labels": list(s.labels), "probabilities": dict(s.probabilities)})
            copy.viewers = self._viewers
            copy.subscribers = len(self._subscribers)
            if self._times and time.monotonic() - self._times[-1] > min(STALE_AFTER, self.frame_timeout):
                copy.connected = False  # frames stopped (the loop may be reopening the source)
                copy.fps = 0.0
        return copy

    def state(self) -> dict[str, Any]:
        """:meth:`stats` as JSON, with the classes and the debounce time (``GET /v1/live``)."""
        return {**self.stats().to_dict(), "class_names": list(self.class_names),
                "thresholds": [round(float(t), 6) for t in self._engine.thresholds], "min_duration": self.min_duration}

    def subscribe(self, maxsize: int = 256) -> EventQueue:
        """A new bounded queue that gets every label-change event from now on; :meth:`unsubscribe` it when done."""
        sub = EventQueue(maxsize)
        with self._lock:
            if self.closed.is_set():
                sub.close()
            else:
                self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: EventQueue) -> None:
        with self._lock:
            self._subscribers.discard(sub)
        sub.close()

    def latest_jpeg(self) -> tuple[int, bytes] | None:
        """(sequence number, JPEG) of the newest annotated frame, while somebody watches; None before one."""
        with self._lock:
            return self._jpeg

    @contextlib.contextmanager
    def watching(self) -> Iterator[asyncio.Event]:
        """Count a viewer while the block runs (frames are drawn and encoded only while there is one); the asyncio
        Event is set on every new frame and when the view closes."""
        with self._lock:
            self._viewers += 1
        try:
            with self._frame_waiters.listen() as wake:
                yield wake
        finally:
            with self._lock:
                self._viewers -= 1
                if self._viewers == 0:
                    self._jpeg = None  # stale once nobody watches; the next viewer waits for a fresh frame

    async def frames(self) -> AsyncIterator[tuple[int, bytes]]:
        """The newest JPEG each time the consumer asks and one newer than the last it got exists; ends on close."""
        last = 0
        with self.watching() as wake:
            while not self.closed.is_set():
                wake.clear()
                item = self.latest_jpeg()
                if item is None or item[0] == last:
                    await _wait(wake, 1.0)
                    continue
                last = item[0]
                yield item

    async def events(self, *, state_interval: float, maxsize: int = 64) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """``("state", state)`` at once and every ``state_interval`` seconds, ``("labels", event)`` as they come."""
        sub = self.subscribe(maxsize)
        try:
            yield "state", self.state()
            next_state = time.monotonic() + state_interval
            while not self.closed.is_set():
                event = await sub.aget(max(0.0, next_state - time.monotonic()))
                if event is not None:
                    yield "labels", event
                if time.monotonic() >= next_state and not self.closed.is_set():
                    yield "state", self.state()
                    next_state = time.monotonic() + state_interval
        finally:
            self.unsubscribe(sub)


# ---------------------------------------------------------------------------------------------------------------------
# HTTP


def static_file(name: str) -> bytes:
    """A file of the page shipped in the package (``edgecls/serve/static``)."""
    return resources.files("edgecls.serve").joinpath("static", name).read_bytes()


def _sse(kind: str, data: dict[str, Any], ident: int | None = None) -> bytes:
    head = f"event: {kind}\n" + (f"id: {ident}\n" if ident is not None else "")
    return (head + f"data: {json.dumps(data, separators=(',', ':'))}\n\n").encode()


def live_router(live: LiveView, *, dependencies: Sequence[Any] = (), state_interval: float = 1.0,
                event_queue: int = 64) -> "APIRouter":
    """The live view's routes. ``dependencies`` (e.g. the API-key check) guard the data routes: ``/v1/live``,
    ``/v1/stream.mjpg`` and ``/v1/events``; the page and its script hold no data and stay open, so a browser without
    the key can load the page, which then asks for the key (401 from ``/v1/live``) and sets the
    ``edgecls_api_key`` cookie. The two streams are left out of the OpenAPI schema (they never end)."""
    require("fastapi", extra="serve")
    from fastapi import APIRouter, HTTPException
    from fastapi.responses import HTMLResponse, Response, StreamingResponse

    page = static_file("index.html")
    files = {name: (static_file(name), media) for name, media in STATIC_FILES.items()}
    no_store = {"Cache-Control": "no-store"}
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={**no_store, "Content-Security-Policy": PAGE_CSP,
                                           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in files:  # a fixed table: no request value ever becomes a path
            raise HTTPException(404, f"no static file {name!r}")
        body, media = files[name]
        return Response(body, media_type=media, headers={**no_store, "X-Content-Type-Options": "nosniff"})

    data = APIRouter(dependencies=list(dependencies), tags=["live"])

    @data.get("/v1/live", summary="The live view's state: labels, probabilities, FPS, latency, frames")
    def state() -> dict[str, Any]:
        return live.state()

    @data.get("/v1/stream.mjpg", include_in_schema=False)
    async def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            async for seq, jpeg in live.frames():
                yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\nX-Frame: %d\r\n\r\n"
                       % (len(jpeg), seq)) + jpeg + b"\r\n"

        return StreamingResponse(parts(), media_type="multipart/x-mixed-replace; boundary=frame",
                                 headers={**no_store, "X-Accel-Buffering": "no"})

    @data.get("/v1/events", include_in_schema=False)
    async def events() -> StreamingResponse:
        async def lines() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            async for kind, payload in live.events(state_interval=state_interval, maxsize=event_queue):
                yield _sse(kind, payload, payload.get("id") if kind == "labels" else None)

        return StreamingResponse(lines(), media_type="text/event-stream",
                                 headers={**no_store, "X-Accel-Buffering": "no"})

    router.include_router(data)
    return router
