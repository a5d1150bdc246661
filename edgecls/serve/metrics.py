"""Prometheus metrics of one app, in a registry of its own (two apps in one process never share counters).

``edgecls_http_requests_total{route,method,status}``, ``edgecls_http_request_seconds{route}`` (histogram),
``edgecls_batch_size`` (images per engine call), ``edgecls_engine_seconds`` (engine time per call),
``edgecls_queue_wait_seconds`` (how long a batch's oldest request waited), ``edgecls_queue_depth`` and
``edgecls_requests_in_progress`` (gauges), ``edgecls_images_total``; with a live view attached, ``edgecls_camera_fps``,
``edgecls_camera_dropped_frames_total``, ``edgecls_camera_frames_total``, ``edgecls_camera_reconnects_total`` and
``edgecls_camera_connected``, read from ``live.stats()`` at each scrape.
"""

from __future__ import annotations

from typing import Any, Callable

from edgecls._deps import require
from edgecls.serve.batcher import BatchStats

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The app's collectors; :meth:`render` is the /metrics body."""

    def __init__(self, *, queue_depth: Callable[[], float], live: Any = None) -> None:
        prom = require("prometheus_client", extra="serve", package="prometheus-client")
        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = prom.Counter("edgecls_http_requests", "HTTP requests by route, method and status",
                                     ("route", "method", "status"), registry=r)
        self.latency = prom.Histogram("edgecls_http_request_seconds", "HTTP request latency by route", ("route",),
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = prom.Histogram("edgecls_batch_size", "images per engine call", buckets=BATCH_BUCKETS,
                                         registry=r)
        self.engine = prom.Histogram("edgecls_engine_seconds", "engine time per call", buckets=LATENCY_BUCKETS,
                                     registry=r)
        self.queue_wait = prom.Histogram("edgecls_queue_wait_seconds", "time a batch's oldest request waited for "
                                         "the engine", buckets=LATENCY_BUCKETS, registry=r)
        self.images = prom.Counter("edgecls_images", "images through the engine", registry=r)
        self.depth = prom.Gauge("edgecls_queue_depth", "requests waiting for the engine", registry=r)
        self.depth.set_function(queue_depth)
        self.in_progress = prom.Gauge("edgecls_requests_in_progress", "HTTP requests being handled", registry=r)
        if live is not None:
            r.register(_LiveCollector(prom, live))

    def on_batch(self, stats: BatchStats) -> None:
        self.batch_size.observe(stats.size)
        self.engine.observe(stats.engine_s)
        self.queue_wait.observe(stats.wait_s)
        self.images.inc(stats.size)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return self._prom.generate_latest(self.registry)


class _LiveCollector:
    """Camera figures read from ``live.stats()`` (a LiveStats) at each scrape."""

    def __init__(self, prom: Any, live: Any) -> None:
        self._core = require("prometheus_client.core", extra="serve", package="prometheus-client")
        self._live = live

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        core = self._core
        try:
            stats = self._live.stats()
        except Exception:  # noqa: BLE001  (a scrape never fails because of the camera)
            return
        yield core.GaugeMetricFamily("edgecls_camera_fps", "frames per second of the live view", value=stats.fps)
        yield core.GaugeMetricFamily("edgecls_camera_latency_seconds", "engine latency of the live view's last frame",
                                     value=stats.latency_ms / 1000.0)
        yield core.GaugeMetricFamily("edgecls_camera_connected", "1 while the live source delivers frames",
                                     value=1.0 if stats.connected else 0.0)
        yield core.CounterMetricFamily("edgecls_camera_frames", "frames classified by the live view",
                                       value=stats.frames)
        yield core.CounterMetricFamily("edgecls_camera_dropped_frames", "frames the live view skipped (newest frame "
                                       "wins)", value=stats.dropped_frames)
        yield core.CounterMetricFamily("edgecls_camera_reconnects", "times the live source was reopened",
                                       value=stats.reconnects)
