"""The `edgecls serve` configuration: one frozen dataclass; CLI flags and YAML keys map one-to-one to its fields.

It holds every key of the command, the live view's and MQTT's too, so a YAML file and the flags share one definition.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from edgecls.config import field
from edgecls.errors import ConfigError
from edgecls.preprocess import DEFAULT_MAX_PIXELS

API_KEY_ENV = "EDGECLS_API_KEY"


@dataclass(frozen=True)
class ServeConfig:
    """Everything one `edgecls serve` needs (see the README's "Serve" section)."""

    bundle: str = field(help="the bundle folder (or one of its model files) to serve", flag=False)
    # network
    host: str = field("127.0.0.1", help="address to bind; a non-loopback one needs --api-key (or --insecure)")
    port: int = field(8000, help="TCP port (0: any free port, printed at start)")
    api_key: str | None = field(None, help=f"every route but the health checks needs `Authorization: Bearer KEY` "
                                           f"(or the cookie edgecls_api_key) [default: ${API_KEY_ENV}]")
    insecure: bool = field(False, switch=True, help="allow a non-loopback --host without an API key")
    # engine
    backend: str = field("auto", help="inference engine; auto picks the fastest that works here")
    device: str | None = field(None, help="cpu, gpu/cuda[:N], npu, or the backend's device name (GPU.1)")
    artifact: str | None = field(None, help="force one artifact of the bundle, e.g. onnx-int8")
    threads: int | None = field(None, help="CPU inference threads (backend default when not given)")
    verify: bool = field(True, help="check the model files against the sha256 in the bundle's manifest before loading")
    # batching and limits
    max_batch: int = field(8, help="most images in one engine call (1: no dynamic batching)")
    max_wait_ms: float = field(5.0, help="longest a request waits for others to join its batch (only while more "
                                         "requests are arriving)")
    max_queue: int = field(64, help="requests waiting for the engine; one more is answered 503 with Retry-After")
    max_upload_mb: float = field(20.0, help="largest request body in MB; a larger one is answered 413")
    max_files: int = field(64, help="most images in one /v1/classify/batch request")
    max_pixels: int = field(DEFAULT_MAX_PIXELS, help="refuse images declaring more pixels, before decoding (0: none)")
    request_timeout: float = field(30.0, help="seconds a request may take (decode, queue, engine) before a 504")
    workers: int | None = field(None, help="decode and preprocess threads [default: the CPUs, at most 4]")
    # live view and MQTT (edgecls.serve.live, edgecls.serve.mqtt)
    camera: str | None = field(None, help="camera index: adds the live view (GET /) of that camera")
    source: str | None = field(None, help="video file or stream URL: adds the live view (GET /) of that source")
    mqtt: str | None = field(None, help="mqtt://HOST:PORT/TOPIC: publish the live view's label changes there")
    min_duration: float = field(0.5, help="seconds a label set must hold before it counts as a change (events, MQTT)")
    heartbeat: float = field(30.0, help="MQTT: publish the current state every this many seconds too (0: never)")
    frame_timeout: float = field(10.0, help="seconds without a frame after which a live source counts as stalled")
    reconnect_tries: int = field(3, help="a live source that stops is reopened this many times in a row")
    log_level: str = field("info", choices=("debug", "info", "warning", "error"), help="server log level")
    access_log: bool = field(False, help="log every request (costs throughput)")

    def __post_init__(self) -> None:
        def at_least(name: str, low: float, *, strict: bool = False) -> None:
            value = getattr(self, name)
            if value is None:
                return
            bad = value <= low if strict else value < low
            if bad:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be {'>' if strict else '>='} {low:g}, got {value}")

        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be 0..65535, got {self.port}")
        for name in ("max_batch", "max_queue", "max_files", "workers", "threads"):
            at_least(name, 1)
        for name in ("max_wait_ms", "max_pixels", "reconnect_tries", "heartbeat"):
            at_least(name, 0)
        for name in ("max_upload_mb", "request_timeout", "frame_timeout"):
            at_least(name, 0, strict=True)
        at_least("min_duration", 0)
        if self.camera is not None and self.source is not None:
            raise ConfigError("give --camera or --source, not both")
        if self.mqtt is not None:
            if self.camera is None and self.source is None:
                raise ConfigError("--mqtt publishes the live view's label changes: give --camera N or --source "
                                  "URL_OR_FILE too")
            from edgecls.serve.mqtt import parse_mqtt_url  # the URL's rules live beside the publisher (no paho)

            parse_mqtt_url(self.mqtt)
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("--api-key is empty; give a key, or leave it out to serve without one")
        if not self.host.strip():
            raise ConfigError("--host is empty; 127.0.0.1 serves this machine only, 0.0.0.0 every interface")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def live(self) -> bool:
        """A live view is configured (a camera or a source)."""
        return self.camera is not None or self.source is not None


def is_loopback(host: str) -> bool:
    """``host`` only reaches this machine: localhost, 127.0.0.0/8 or ::1 (a name other than localhost is not
    resolved here: it counts as reachable from outside)."""
    name = host.strip().strip("[]")
    if name.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_exposure(cfg: ServeConfig) -> None:
    """Refuse a non-loopback --host without an API key unless --insecure says so."""
    if cfg.api_key or cfg.insecure or is_loopback(cfg.host):
        return
    raise ConfigError(f"--host {cfg.host} is reachable from other machines and no API key is set: give --api-key KEY "
                      f"(or ${API_KEY_ENV}), or --insecure to serve without one")
