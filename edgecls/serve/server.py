"""`run_server(cfg)`: open the bundle, warm it up, batch, serve with uvicorn; SIGTERM finishes the requests in
flight, closes the live view and returns 0.

:class:`Service` holds the running parts (classifier, batcher, live view, MQTT publisher, app, uvicorn server) so a
test can run the real thing in a thread on a socket of its own and stop it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from typing import Any, Iterator

import numpy as np

from edgecls._deps import require
from edgecls.errors import ConfigError, EdgeclsError
from edgecls.serve.config import ServeConfig, check_exposure

log = logging.getLogger("edgecls.serve")

GRACEFUL_SHUTDOWN_S = 30.0
WARMUP_CALLS = 3


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one); a one-line error when it cannot bind."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port (0: any free "
                          "one) or --host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Service:
    """The running server's parts, opened in order: classifier, batcher (warmed up), live view and MQTT publisher
    when configured, app, uvicorn server. :meth:`serve` blocks until :meth:`stop` (or SIGTERM in the main thread);
    :meth:`close` releases everything."""

    def __init__(self, cfg: ServeConfig) -> None:
        require("fastapi", extra="serve")
        uvicorn = require("uvicorn", extra="serve")
        from edgecls.runtime import Classifier
        from edgecls.serve.app import create_app
        from edgecls.serve.batcher import DynamicBatcher

        self.cfg = cfg
        self.live: Any = None
        self.mqtt: Any = None
        self.ready = threading.Event()
        self.classifier = Classifier(cfg.bundle, backend=cfg.backend, device=cfg.device, artifact=cfg.artifact,
                                     threads=cfg.threads, verify=cfg.verify, max_pixels=cfg.max_pixels or None)
        self._metrics: Any = None
        try:
            self.batcher = DynamicBatcher(self.classifier.backend.infer, num_classes=len(self.classifier.class_names),
                                          max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms,
                                          max_queue=cfg.max_queue, on_batch=self._on_batch)
            self.warm_up()
            if cfg.live:
                self.live = self._open_live()
            self.app = create_app(self.classifier, cfg, batcher=self.batcher, live=self.live, ready=self.ready)
            self._metrics = self.app.state.edgecls.metrics
            loop = "uvloop" if _has("uvloop") else "asyncio"
            http = "httptools" if _has("httptools") else "h11"
            config = uvicorn.Config(self.app, host=cfg.host, port=cfg.port, workers=1, loop=loop, http=http,
                                    log_level=cfg.log_level, access_log=cfg.access_log, server_header=False,
                                    timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S), lifespan="on",
                                    timeout_keep_alive=30)
            self.server = _Server(config, on_exit=self._begin_shutdown)
        except BaseException:
            self.close()
            raise
        self.ready.set()

    def _on_batch(self, stats: Any) -> None:
        if self._metrics is not None:
            self._metrics.on_batch(stats)

    def warm_up(self) -> None:
        """A few engine calls through the batcher (the first ones pay for allocations and kernel choices)."""
        x = np.zeros_like(self.classifier.new_input(1))  # what the artifact takes (uint8 pixels for a -u8 one)
        start = time.perf_counter()
        for n in (1, min(self.cfg.max_batch, 8), 1)[:WARMUP_CALLS]:
            self.batcher.infer(np.repeat(x, n, axis=0), timeout=120.0)
        log.info("warmed up in %.0f ms", (time.perf_counter() - start) * 1000)

    def _open_live(self) -> Any:
        try:
            from edgecls.serve.live import LiveView  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise EdgeclsError(f"--camera/--source need the live view (edgecls.serve.live), which this install lacks "
                               f"({exc})") from None
        from edgecls.runtime.stream import parse_source

        cfg = self.cfg
        source = parse_source(camera=cfg.camera, source=cfg.source)
        clf = self.classifier
        live = LiveView(source, spec=clf.spec, class_names=clf.class_names, thresholds=clf.thresholds,
                        input_kind=clf.input_kind,
                        infer=lambda batch: self.batcher.infer(batch, timeout=cfg.request_timeout),
                        min_duration=cfg.min_duration, frame_timeout=cfg.frame_timeout,
                        reconnect_tries=cfg.reconnect_tries, max_pixels=cfg.max_pixels or None)
        live.start()
        if cfg.mqtt:
            try:
                from edgecls.serve.mqtt import MqttPublisher  # type: ignore[import-not-found,unused-ignore]
            except ImportError as exc:
                live.stop(5.0)
                raise EdgeclsError(f"--mqtt needs edgecls.serve.mqtt, which this install lacks ({exc})") from None
            self.mqtt = MqttPublisher(cfg.mqtt, live, heartbeat=cfg.heartbeat)
            self.mqtt.start()
        return live

    def _begin_shutdown(self) -> None:
        """First step of a shutdown (on the event loop's thread): the live view's streams end so uvicorn's wait for
        open connections is not held up by MJPEG viewers; requests in flight still get their answers."""
        if self.live is not None:
            threading.Thread(target=self.live.stop, args=(5.0,), name="edgecls-live-stop", daemon=True).start()

    def serve(self, sock: socket.socket | None = None) -> None:
        """Serve on ``sock`` (bound to the config's host and port when None) until stopped."""
        own = sock is None
        if sock is None:
            sock = bind_socket(self.cfg.host, self.cfg.port)
        log.info("serving %s (%s on %s, %s) on %s  [docs: %s/docs]", self.app.state.edgecls.model_name,
                 self.classifier.artifact.name, self.classifier.backend.name, self.classifier.precision_name,
                 url_of(sock), url_of(sock))
        try:
            self.server.run(sockets=[sock])
        finally:
            if own:
                sock.close()

    def stop(self) -> None:
        """Ask the server to finish the requests in flight and return from :meth:`serve`."""
        self._begin_shutdown()
        self.server.should_exit = True

    def close(self) -> None:
        for part, how in ((self.mqtt, "stop"), (self.live, "stop"), (getattr(self, "batcher", None), "stop"),
                          (self.classifier, "close")):
            if part is None:
                continue
            try:
                getattr(part, how)(5.0) if how == "stop" else getattr(part, how)()
            except Exception as exc:  # noqa: BLE001  (closing goes on with the next part)
                log.warning("closing %s: %s", type(part).__name__, exc)


def _has(module: str) -> bool:
    from edgecls._deps import has

    return has(module)


class _Server:
    """uvicorn.Server whose SIGTERM/SIGINT handling finishes in-flight requests and then returns normally (uvicorn
    re-raises the signal after its graceful shutdown, which would end the process with the signal's status)."""

    def __new__(cls, config: Any, *, on_exit: Any) -> Any:
        uvicorn = require("uvicorn", extra="serve")

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                if not self.should_exit:
                    log.info("%s: finishing the requests in flight, then stopping",
                             signal.Signals(sig).name if sig else "stop")
                    on_exit()
                super().handle_exit(sig, frame)

            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                handled = (signal.SIGINT, signal.SIGTERM)
                original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
                try:
                    yield
                finally:
                    for sig, handler in original.items():
                        signal.signal(sig, handler)

        return Server(config)


def run_server(cfg: ServeConfig) -> int:
    """Serve until SIGTERM or Ctrl-C; returns the exit status (0 after a graceful stop)."""
    check_exposure(cfg)
    sock = bind_socket(cfg.host, cfg.port)  # before loading: a port in use fails in a second, not after the model
    try:
        service = Service(cfg)
        try:
            service.serve(sock)
        finally:
            service.close()
    finally:
        sock.close()
    log.info("stopped")
    return 0
