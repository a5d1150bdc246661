"""MQTT events of the live view: a JSON message when the label set changes (debounced) and every heartbeat.

:class:`MqttPublisher` subscribes to a :class:`edgecls.serve.live.LiveView`, numbers every message (``seq``, from 1,
label changes and heartbeats alike) into one bounded queue and publishes it at QoS 1 with paho-mqtt from its own
thread. While the broker is away the messages wait in that queue (the oldest is dropped, and counted, only when it is
full); paho reconnects with back-off and resends what was in flight, then the queue drains, so a consumer sees every
``seq`` after a broker restart. A label-change message::

    {"type": "labels", "seq": 7, "time": 1796193133.377, "source": "camera 0", "labels": ["dog"], "previous": [],
     "probabilities": {"cat": 0.38, "dog": 0.5, "fish": 0.41}, "frame": 412}

(``previous`` is null in the first one) and a heartbeat carries the state: ``labels`` (the debounced set, as the
last label message said; null before the first), ``frame_labels`` and ``probabilities`` (of the newest frame),
``fps``, ``latency_ms``, ``frames``, ``dropped_frames``, ``reconnects``, ``connected``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from edgecls._deps import require
from edgecls.errors import ConfigError

if TYPE_CHECKING:
    from edgecls.serve.live import LiveView

log = logging.getLogger("edgecls.serve")

SCHEMES = {"mqtt": 1883, "mqtts": 8883}
DEFAULT_TOPIC = "edgecls/events"


@dataclass(frozen=True)
class MqttTarget:
    """A broker and a topic, from ``mqtt://[USER[:PASSWORD]@]HOST[:PORT]/TOPIC`` (``mqtts://`` for TLS)."""

    host: str
    port: int
    topic: str
    tls: bool = False
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:  # never the password
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}/{self.topic}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt://HOST[:PORT]/TOPIC`` -> :class:`MqttTarget`; a one-line :class:`ConfigError` for anything else.

    The port defaults to 1883 (8883 for ``mqtts://``), the topic to ``edgecls/events``; a topic may have levels
    (``site/cam1/labels``) but no wildcard (``+``, ``#``).
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"--mqtt takes mqtt://HOST[:PORT]/TOPIC, got {url!r}")
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme not in SCHEMES:
        raise ConfigError(f"--mqtt {text!r}: the URL starts with mqtt:// or mqtts:// (mqtt://HOST[:PORT]/TOPIC)")
    if parts.query or parts.fragment:
        raise ConfigError(f"--mqtt {text!r}: no ?query or #fragment in the URL (a topic with # is a wildcard, "
                          "and events are published to one topic)")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"--mqtt {text!r}: the port is a number from 1 to 65535") from None
    host = parts.hostname
    if not host:
        raise ConfigError(f"--mqtt {text!r}: no broker host (mqtt://HOST[:PORT]/TOPIC)")
    if port == 0:
        raise ConfigError(f"--mqtt {text!r}: the port is a number from 1 to 65535")
    topic = unquote(parts.path.lstrip("/")) or DEFAULT_TOPIC
    if "+" in topic or "#" in topic or "\0" in topic or len(topic.encode()) > 65535:
        raise ConfigError(f"--mqtt {text!r}: the topic {topic!r} may not hold + or # (wildcards) or NUL")
    return MqttTarget(host, port or SCHEMES[parts.scheme], topic, tls=parts.scheme == "mqtts",
                      username=unquote(parts.username) if parts.username else None,
                      password=unquote(parts.password) if parts.password else None)


@dataclass
class MqttStats:
    published: int = 0  # acknowledged by the broker
    queued: int = 0  # waiting to be sent
    inflight: int = 0  # sent, not yet acknowledged (paho resends them after a reconnect)
    dropped: int = 0  # oldest messages dropped because the queue was full
    connected: bool = False
    connects: int = 0  # successful connections (1 + reconnects)
    last_error: str | None = None


class MqttPublisher:
    """Publishes the live view's label changes and a heartbeat to one MQTT topic (see the module docstring).

    Args:
        url: ``mqtt://HOST[:PORT]/TOPIC`` (:func:`parse_mqtt_url`).
        live: the :class:`LiveView` whose events are published.
        heartbeat: seconds between heartbeats (the first is sent at start); 0: none.
        queue_size: messages kept while the broker is away; when full, the oldest is dropped.
        qos: 1 (at least once, the default) or 2; 0 is refused because QoS 0 messages are lost on a reconnect.
        max_inflight: messages sent and not yet acknowledged at most.
        client_id: the MQTT client id (default ``edgecls-<host pid>-<random>``).
    """

    def __init__(self, url: str, live: "LiveView", *, heartbeat: float = 30.0, queue_size: int = 1000, qos: int = 1,
                 max_inflight: int = 20, keepalive: int = 30, client_id: str | None = None,
                 reconnect_delay: tuple[float, float] = (1.0, 10.0)) -> None:
        self.target = parse_mqtt_url(url)
        if isinstance(heartbeat, bool) or not isinstance(heartbeat, (int, float)) or heartbeat < 0:
            raise ConfigError(f"--heartbeat must be a number of seconds >= 0 (0: none), got {heartbeat!r}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ConfigError(f"the MQTT queue holds at least 1 message, got {queue_size!r}")
        if qos not in (1, 2):
            raise ConfigError(f"the MQTT QoS is 1 or 2 (QoS 0 loses messages on a reconnect), got {qos!r}")
        self.live = live
        self.heartbeat = float(heartbeat)
        self.queue_size = queue_size
        self.qos = qos
        self.max_inflight = max_inflight
        mqtt = require("paho.mqtt.client", extra="serve", package="paho-mqtt")
        self._mqtt = mqtt
        client_id = client_id or f"edgecls-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                                   clean_session=True)
        self._client.reconnect_delay_set(min_delay=reconnect_delay[0], max_delay=reconnect_delay[1])
        self._client.max_inflight_messages_set(max_inflight)
        if self.target.username:
            self._client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            self._client.tls_set()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._keepalive = keepalive
        self._lock = threading.Lock()
        self._queue: deque[dict[str, Any]] = deque()
        self._inflight: set[int] = set()
        self._early: set[int] = set()  # acknowledged before publish() returned its mid
        self._stats = MqttStats()
        self._seq = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._sub = None
        self._thread: threading.Thread | None = None

    # -- paho's thread -----------------------------------------------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            with self._lock:
                self._stats.last_error = f"the broker refused the connection: {reason_code}"
            log.warning("mqtt: %s refused the connection: %s", self.target, reason_code)
            return
        with self._lock:
            self._stats.connected = True
            self._stats.connects += 1
            self._stats.last_error = None
        log.info("mqtt: connected to %s", self.target)
        self._wake.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._lock:
            was = self._stats.connected
            self._stats.connected = False
            if not self._stop.is_set():
                self._stats.last_error = f"disconnected: {reason_code}"
        if was and not self._stop.is_set():
            log.warning("mqtt: lost %s (%s); reconnecting", self.target, reason_code)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._lock:
            if mid in self._inflight:
                self._inflight.discard(mid)
            else:
                self._early.add(mid)
            self._stats.published += 1
        self._wake.set()

    # -- ours --------------------------------------------------------------------------------------------------------
    def start(self) -> "MqttPublisher":
        if self._thread is not None:
            raise RuntimeError("this publisher has already been started")
        self._sub = self.live.subscribe(self.queue_size)
        self._client.connect_async(self.target.host, self.target.port, keepalive=self._keepalive)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="edgecls-mqtt", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop taking events, send what is queued for up to ``timeout`` seconds, disconnect; True when everything
        queued was acknowledged."""
        deadline = time.monotonic() + timeout
        if self._sub is not None:
            self.live.unsubscribe(self._sub)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            self._halt.set()  # out of time: leave the rest (it is counted as queued)
            self._thread.join(1.0)
        with self._lock:
            done = not self._queue and not self._inflight
        self._client.disconnect()
        self._client.loop_stop()
        return done

    def stats(self) -> MqttStats:
        with self._lock:
            return MqttStats(**{**self._stats.__dict__, "queued": len(self._queue), "inflight": len(self._inflight)})

    def _enqueue(self, message: dict[str, Any]) -> None:
        with self._lock:
            self._seq += 1
            message = {"type": message.pop("type"), "seq": self._seq, **message}
            message.pop("id", None)  # the live view's own count of label changes; seq numbers every message
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self._stats.dropped += 1
            self._queue.append(message)

    def _heartbeat(self) -> dict[str, Any]:
        s = self.live.stats()
        return {"type": "heartbeat", "time": round(time.time(), 3), "source": s.source, "labels": s.stable_labels,
                "frame_labels": s.labels, "probabilities": {k: round(v, 4) for k, v in s.probabilities.items()},
                "fps": round(s.fps, 2), "latency_ms": round(s.latency_ms, 3), "frames": s.frames,
                "dropped_frames": s.dropped_frames, "reconnects": s.reconnects, "connected": s.connected}

    def _send(self) -> None:
        """Hand queued messages to paho while connected and fewer than ``max_inflight`` wait for their ack."""
        while True:
            with self._lock:
                if not self._stats.connected or not self._queue or len(self._inflight) >= self.max_inflight:
                    return
                message = self._queue[0]
            info = self._client.publish(self.target.topic, json.dumps(message, separators=(",", ":")), qos=self.qos)
            if info.rc == self._mqtt.MQTT_ERR_QUEUE_SIZE:
                return
            # Any other rc (even NO_CONN, when the connection dropped just now): paho keeps a QoS>0 message and
            # sends it once connected again, so it is in flight from here.
            with self._lock:
                self._queue.popleft()
                if info.mid in self._early:
                    self._early.discard(info.mid)
                else:
                    self._inflight.add(info.mid)

    def _run(self) -> None:
        sub = self._sub
        next_beat = time.monotonic()
        while sub is not None and not self._halt.is_set():
            stopping = self._stop.is_set()
            while (event := sub.get_nowait()) is not None:
                self._enqueue(dict(event))
            if self.heartbeat and not stopping and time.monotonic() >= next_beat:
                self._enqueue(self._heartbeat())
                next_beat = time.monotonic() + self.heartbeat
            try:
                self._send()
            except Exception as exc:  # a bug or a closed client: keep the queue, try again
                log.warning("mqtt: publish failed: %s", exc)
            if stopping:
                with self._lock:
                    if not self._queue and not self._inflight:
                        return
            self._wake.wait(0.05)
            self._wake.clear()
