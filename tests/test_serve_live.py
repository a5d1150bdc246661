"""The live view on real parts: a tiny real bundle classifying a generated video file, a real uvicorn on 127.0.0.1,
a real headless Chromium (Playwright) on the page, a real Mosquitto broker killed and restarted mid-stream."""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_runtime import FakeCamera, build_bundle

from edgecls.errors import ConfigError

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
MOSQUITTO = Path("/usr/sbin/mosquitto")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KEY = "test-key-0123"
FPS = 24.0
# Solid BGR colours the tiny net (fp32 "onnx" artifact) labels with a margin of 0.07-0.1 to its thresholds.
DOG, CAT, NONE = (255, 64, 0), (0, 0, 128), (128, 128, 255)


def make_colour_video(path: Path, segments: list[tuple[tuple[int, int, int], int]], size=(320, 240),
                      noise: int = 12) -> Path:
    """A video of solid-colour segments (colour, frames), with +-``noise`` so each JPEG has some weight."""
    import cv2

    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, size)
    for colour, frames in segments:
        for _ in range(frames):
            img = np.clip(np.full((size[1], size[0], 3), colour, np.int16)
                          + rng.integers(-noise, noise + 1, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
            writer.write(img)
    writer.release()
    return path


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from edgecls.runtime import Classifier

    bundle = build_bundle(tmp_path_factory.mktemp("live") / "bundle", openvino=False)["root"]
    with Classifier(bundle, "onnxruntime", artifact="onnx") as clf:
        yield clf


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_colour_video(tmp_path_factory.mktemp("video") / "colours.mp4", [(DOG, 12), (CAT, 12), (NONE, 12)])


def make_live(classifier, video: Path, **extra):
    from edgecls.runtime.stream import parse_source
    from edgecls.serve.live import LiveView

    return LiveView(parse_source(source=str(video)), spec=classifier.spec, class_names=classifier.class_names,
                    thresholds=classifier.thresholds, **{"infer": classifier.probs, "min_duration": 0.1, **extra})


def wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def api_key_check(key: str):
    """The server's rule (serve-api's auth): ``Authorization: Bearer KEY`` or the ``edgecls_api_key`` cookie."""
    from fastapi import HTTPException, Request

    def check(request: Request) -> None:
        given = request.headers.get("authorization", "")
        cookie = request.cookies.get("edgecls_api_key", "")
        if not (hmac.compare_digest(given.encode(), f"Bearer {key}".encode())
                or hmac.compare_digest(cookie.encode(), key.encode())):
            raise HTTPException(401, "an API key is needed", headers={"WWW-Authenticate": "Bearer"})

    check.__annotations__ = {"request": Request, "return": None}  # resolvable: this module defers annotations
    return check


class Server:
    """A real uvicorn serving a minimal FastAPI app with live_router (guarded by an API key like the server's: a
    Bearer header or the edgecls_api_key cookie) on an ephemeral 127.0.0.1 port, in a thread."""

    def __init__(self, live, *, key: str | None = None) -> None:
        import uvicorn
        from fastapi import Depends, FastAPI

        from edgecls.serve.live import live_router

        app = FastAPI()
        guard = [] if key is None else [Depends(api_key_check(key))]
        app.include_router(live_router(live, dependencies=guard, state_interval=0.25))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        wait_for(lambda: self.server.started, 10, "uvicorn to start")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@contextlib.contextmanager
def serving(classifier, video: Path, **extra):
    live = make_live(classifier, video, **extra).start()
    server = Server(live, key=KEY).__enter__()
    try:
        yield live, server
    finally:
        live.stop()  # first: it ends the open streams, so uvicorn's graceful shutdown has nothing to wait for
        server.__exit__()


@pytest.fixture
def served(classifier, video):
    with serving(classifier, video) as both:
        yield both


@pytest.fixture
def served_heavy(classifier, tmp_path):
    """Frames of ~0.3 MB (640x480 noise at JPEG quality 95): a 2 s stall is more than a loopback socket buffers."""
    clip = make_colour_video(tmp_path / "heavy.mp4", [(DOG, 24), (NONE, 24)], size=(640, 480), noise=90)
    with serving(classifier, clip, jpeg_quality=95) as both:
        yield both


class Parts:
    """Reads the parts (X-Frame, JPEG) of an MJPEG response streamed by httpx."""

    def __init__(self, response) -> None:
        self.chunks = response.iter_raw()
        self.buf = b""

    def read(self, count: int) -> list[tuple[int, bytes]]:
        parts: list[tuple[int, bytes]] = []
        while len(parts) < count:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end >= 0:
                headers = dict(line.split(b": ", 1) for line in self.buf[:head_end].split(b"\r\n")[1:])
                size = int(headers[b"Content-Length"])
                end = head_end + 4 + size
                if len(self.buf) >= end + 2:
                    parts.append((int(headers[b"X-Frame"]), self.buf[head_end + 4:end]))
                    self.buf = self.buf[end + 2:]
                    continue
            self.buf += next(self.chunks)
        return parts


# ---------------------------------------------------------------------------------------------------------------------
# the loop and its events


def test_label_changes_are_debounced_by_min_duration(classifier, tmp_path):
    """A 4-frame (1/6 s) 'cat' blip inside 'dog' is an event with min_duration 0 and none with 0.35 s."""
    clip = make_colour_video(tmp_path / "blip.mp4", [(DOG, 16), (CAT, 4), (DOG, 16), (NONE, 16)])
    seen = {}
    for min_duration in (0.0, 0.35):
        live = make_live(classifier, clip, min_duration=min_duration, loop_file=False)
        sub = live.subscribe(100)
        live.start()
        try:
            wait_for(lambda: live.stats().error == "the video file ended", 15, "the clip to end")  # noqa: B023
        finally:
            live.stop()
        events = []
        while (event := sub.get_nowait()) is not None:
            events.append(event)
        seen[min_duration] = [tuple(e["labels"]) for e in events]
        assert [e["id"] for e in events] == list(range(1, len(events) + 1))
        assert events[0]["previous"] is None and all(a["labels"] == b["previous"] for a, b in zip(events, events[1:]))
        end = live.stats()
        assert end.frames + end.dropped_frames == 52 and end.frames > 40, end  # each frame classified or skipped
    assert seen[0.0] == [("dog",), ("cat",), ("dog",), ()], seen
    assert seen[0.35] == [("dog",), ()], seen


def test_a_subscriber_that_does_not_read_loses_its_oldest_events_not_the_loop(classifier, video):
    live = make_live(classifier, video, min_duration=0.0)
    slow = live.subscribe(2)
    live.start()
    try:
        wait_for(lambda: live.stats().events >= 7, 15, "7 label changes")
    finally:
        live.stop()
    assert slow.dropped >= 5 and len(slow) == 2
    kept = [slow.get_nowait()["id"], slow.get_nowait()["id"]]
    assert kept[1] == kept[0] + 1 and kept[0] > 1  # the newest two, the oldest were dropped


def test_a_busy_engine_delays_frames_and_never_reopens_the_source(classifier, video):
    """The shared batcher refusing a few calls (queue full) costs those tries, not a reopen of the camera."""
    calls = []

    def busy_then_fine(batch):
        calls.append(len(batch))
        if len(calls) % 10 < 3:  # 3 of every 10 calls fail
            raise RuntimeError("queue full")
        return classifier.probs(batch)

    live = make_live(classifier, video, infer=busy_then_fine).start()
    try:
        stats = wait_for(lambda: (s := live.stats()).frames >= 20 and s, 15, "20 frames")
    finally:
        live.stop()
    assert stats.engine_errors >= 6 and stats.reconnects == 0 and stats.error is None, stats


def test_bad_settings_are_one_line_errors(classifier, video):
    for extra, needle in [({"min_duration": -1}, "--min-duration"), ({"jpeg_quality": 0}, "JPEG quality"),
                          ({"frame_timeout": 0}, "--frame-timeout"), ({"reconnect_tries": -2}, "--reconnect-tries")]:
        with pytest.raises(ConfigError, match=needle):
            make_live(classifier, video, **extra)


def test_an_oversized_source_is_refused_like_edgecls_run(classifier, video):
    live = make_live(classifier, video, max_pixels=1000).start()
    try:
        wait_for(lambda: live.stats().error, 10, "the refusal")
        assert "over --max-pixels 1000" in live.stats().error and live.stats().frames == 0
    finally:
        assert live.stop()


def make_camera_live(classifier, opener, **extra):
    from edgecls.runtime.stream import parse_source
    from edgecls.serve.live import LiveView

    return LiveView(parse_source(camera=0), spec=classifier.spec, class_names=classifier.class_names,
                    thresholds=classifier.thresholds, infer=classifier.probs, opener=opener, **extra)


def test_a_camera_that_drops_is_reopened_with_back_off(classifier):
    opened = []

    def opener(src):
        opened.append(FakeCamera(frames=5, delay=0.01))  # 5 frames, then read() fails like an unplugged camera
        return opened[-1]

    live = make_camera_live(classifier, opener, reconnect_tries=3).start()
    try:
        stats = wait_for(lambda: (s := live.stats()).reconnects >= 2 and s.frames >= 10 and s, 15, "two reopens")
        assert stats.error is None and len(opened) >= 3
    finally:
        assert live.stop()
    assert all(cam.released for cam in opened)


def test_stop_is_prompt_even_while_the_camera_is_frozen(classifier):
    """A camera whose read() hangs, and a frame timeout of 60 s: stop() still ends the loop in a few seconds."""
    live = make_camera_live(classifier, lambda src: FakeCamera(frames=10, delay=30.0), frame_timeout=60.0).start()
    time.sleep(0.5)
    assert live.stats().frames == 0 and not live.stats().connected
    assert live.stop(timeout=3.0)


# ---------------------------------------------------------------------------------------------------------------------
# HTTP: state, MJPEG, SSE, auth


def test_the_data_routes_need_the_key_the_page_does_not(served):
    live, server = served
    with httpx.Client(base_url=server.url, timeout=5) as http:
        assert http.get("/v1/live").status_code == 401
        assert http.get("/v1/stream.mjpg").status_code == 401
        assert http.get("/v1/events").status_code == 401
        assert http.get("/v1/live", headers={"Authorization": "Bearer wrong"}).status_code == 401
        page = http.get("/")
        assert page.status_code == 200 and '<img id="stream"' in page.text
        assert "://" not in page.text and "://" not in http.get("/static/live.js").text  # no CDN: works offline
        assert "script-src 'self'" in page.headers["content-security-policy"]
        js = http.get("/static/live.js")
        assert js.status_code == 200 and "EventSource" in js.text and js.headers["content-type"].startswith(
            "text/javascript")
        for name in ("index.html", "..%2Flive.py", "../live.py", "%2e%2e/mqtt.py"):
            assert http.get(f"/static/{name}").status_code == 404
        state = http.get("/v1/live", cookies={"edgecls_api_key": KEY}).json()
        assert state["class_names"] == ["cat", "dog", "fish"] and state["source"].endswith("colours.mp4")
        assert set(state) >= {"frames", "fps", "latency_ms", "dropped_frames", "reconnects", "connected", "labels",
                              "probabilities"}


def test_several_viewers_and_a_slow_one_never_slows_inference(served_heavy):
    """A viewer that stops reading (its socket buffers fill) skips frames; inference keeps its rate and another
    viewer, reading all along, keeps getting every new frame."""
    live, server = served_heavy
    auth = {"Authorization": f"Bearer {KEY}"}
    wait_for(lambda: live.stats().frames > 5, 10, "frames")
    slow = socket.socket()
    slow.connect(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
    slow.sendall(f"GET /v1/stream.mjpg HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
    head = slow.recv(1024)
    assert head.startswith(b"HTTP/1.1 200") and b"multipart/x-mixed-replace; boundary=frame" in head
    fast_seqs: list[int] = []
    done = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http, \
                http.stream("GET", "/v1/stream.mjpg", headers=auth) as fast:
            parts = Parts(fast)
            while not done.is_set():
                seq, jpeg = parts.read(1)[0]
                assert jpeg[:2] == b"\xff\xd8"
                fast_seqs.append(seq)

    fast = threading.Thread(target=watch, daemon=True)
    fast.start()
    wait_for(lambda: len(fast_seqs) > 3, 10, "the second viewer's first frames")
    t0, f0 = time.monotonic(), live.stats().frames
    time.sleep(1.0)
    rate_before = (live.stats().frames - f0) / (time.monotonic() - t0)
    t1, f1, n1 = time.monotonic(), live.stats().frames, len(fast_seqs)
    time.sleep(2.0)  # the slow viewer reads nothing all this time
    rate_stalled = (live.stats().frames - f1) / (time.monotonic() - t1)
    got_stalled, frames_stalled = len(fast_seqs) - n1, live.stats().frames - f1
    done.set()
    fast.join(5)
    # the frame counter kept rising at the same rate while a viewer stalled (generous bound: shared CPUs)
    assert rate_before > 5 and rate_stalled > 0.6 * rate_before, (rate_before, rate_stalled)
    assert got_stalled > 0.6 * frames_stalled, (got_stalled, frames_stalled)  # the reading viewer kept up
    assert fast_seqs == sorted(set(fast_seqs))  # never a frame twice or backwards
    wait_for(lambda: live.stats().viewers == 1, 5, "the closed viewer to be let go (the slow one stays open)")
    # what the slow viewer gets now: the frames that were in the buffers (socket, transport), then a jump to the
    # newest frame (all the frames of the stall in between were skipped for it)
    seqs: list[int] = []
    slow.settimeout(5)
    data = b""
    while not any(b - a > 10 for a, b in zip(seqs, seqs[1:])):
        chunk = slow.recv(1 << 20)
        assert chunk and len(seqs) < 100, seqs
        data += chunk
        seqs = [int(x.split(b"\r\n")[0]) for x in data.split(b"X-Frame: ")[1:] if b"\r\n" in x]
    slow.close()
    jumps = [b - a for a, b in zip(seqs, seqs[1:])]
    assert min(jumps) >= 1 and max(jumps) > 0.5 * frames_stalled, (seqs, frames_stalled)
    print(f"slow viewer: {jumps.index(max(jumps)) + 1} frames buffered, then a jump of {max(jumps)} frames "
          f"({frames_stalled} classified in the stall); {len(data) / len(seqs) / 1000:.0f} kB a frame; "
          f"{rate_before:.1f} FPS before, {rate_stalled:.1f} FPS during the stall, the other viewer got "
          f"{got_stalled} of {frames_stalled}")


def test_sse_sends_state_and_label_changes_and_streams_end_when_the_view_closes(served):
    live, server = served
    cookies = {"edgecls_api_key": KEY}
    with httpx.Client(base_url=server.url, timeout=10, cookies=cookies) as http, \
            http.stream("GET", "/v1/events") as events, http.stream("GET", "/v1/stream.mjpg") as mjpeg:
        assert events.headers["content-type"].startswith("text/event-stream")
        got: dict[str, list] = {"state": [], "labels": []}
        kind = None
        lines = events.iter_lines()
        while len(got["labels"]) < 3 or len(got["state"]) < 3:
            line = next(lines)
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                got[kind].append(json.loads(line[6:]))
        assert got["state"][-1]["frames"] > got["state"][0]["frames"]
        assert {tuple(e["labels"]) for e in got["labels"]} <= {("dog",), ("cat",), ()}
        parts = Parts(mjpeg)
        assert len(parts.read(2)) == 2
        assert live.stop()
        list(lines)  # both streams end now that the view is closed (else the client's 10 s read timeout fails this)
        for _ in parts.chunks:
            pass


# ---------------------------------------------------------------------------------------------------------------------
# the page in a real browser


def test_the_page_in_headless_chromium_asks_for_the_key_then_shows_the_stream(served, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} absent (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is needed to drive Chromium")
    live, server = served
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 560})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}") if "127.0.0.1" not in r.url
                    else None)
            page.goto(server.url + "/")
            page.wait_for_selector("#keyform", state="visible", timeout=10_000)
            assert page.is_hidden("#live")
            page.fill("#key", KEY)
            page.click("button[type=submit]")
            page.wait_for_selector("#live", state="visible", timeout=10_000)
            cookie = next(c for c in page.context.cookies() if c["name"] == "edgecls_api_key")
            assert cookie["value"] == KEY and cookie["sameSite"] == "Strict"
            page.wait_for_function("() => document.getElementById('stream').naturalWidth > 0", timeout=10_000)
            assert page.evaluate("document.getElementById('stream').naturalWidth") == 320
            first = int(page.text_content("#frames"))
            page.wait_for_function(f"() => Number(document.getElementById('frames').textContent) > {first + 10}",
                                   timeout=10_000)
            assert float(page.text_content("#fps")) > 0
            page.wait_for_function("() => document.querySelectorAll('#bars .row').length === 3", timeout=10_000)
            page.wait_for_function("() => document.querySelectorAll('#feed li').length >= 2", timeout=10_000)
            page.wait_for_function("() => ['dog', 'cat'].includes(document.getElementById('labels').textContent)",
                                   timeout=10_000)
            feed = page.text_content("#feed")
            assert "dog" in feed or "cat" in feed
            page.screenshot(path=str(tmp_path / "live.png"))
            assert not errors, errors
        finally:
            browser.close()
    assert (tmp_path / "live.png").stat().st_size > 5000
    if os.environ.get("EDGECLS_DOCS_SCREENSHOT") == "1":  # the README's picture (a normal run leaves git clean)
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "live.png", REPO / "docs" / "serve-live.png")


def test_the_live_view_imports_no_torch(classifier, video):
    """LiveView, live_router and MqttPublisher on the runtime in a fresh interpreter: torch stays out."""
    code = textwrap.dedent(f"""
        import sys, time
        from edgecls.runtime import Classifier
        from edgecls.runtime.stream import parse_source
        from edgecls.serve.live import LiveView, live_router
        from edgecls.serve.mqtt import MqttPublisher
        clf = Classifier({str(classifier.root)!r}, "onnxruntime")
        live = LiveView(parse_source(source={str(video)!r}), spec=clf.spec, class_names=clf.class_names,
                        thresholds=clf.thresholds, infer=clf.probs).start()
        live_router(live)
        MqttPublisher("mqtt://127.0.0.1:1/t", live)
        while live.stats().frames < 3:
            time.sleep(0.05)
        live.stop()
        print("torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------------------------------
# MQTT


def test_mqtt_urls():
    from edgecls.serve.mqtt import parse_mqtt_url

    t = parse_mqtt_url("mqtt://broker.local/site/cam1")
    assert (t.host, t.port, t.topic, t.tls) == ("broker.local", 1883, "site/cam1", False)
    t = parse_mqtt_url("mqtts://me:s%40cret@10.0.0.2:9999")
    assert (t.host, t.port, t.topic, t.tls, t.username, t.password) == ("10.0.0.2", 9999, "edgecls/events", True,
                                                                        "me", "s@cret")
    assert "s@cret" not in str(t)
    for bad, needle in [("http://x/t", "mqtt://"), ("mqtt:///t", "no broker host"), ("mqtt://x:99999/t", "port"),
                        ("mqtt://x:0/t", "port"), ("mqtt://x/a/+/b", "wildcards"), ("mqtt://x/a?b=1", "query"),
                        ("", "mqtt://HOST"), ("mqtt://x:port/t", "port")]:
        with pytest.raises(ConfigError, match=needle):
            parse_mqtt_url(bad)


def mqtt_subscriber(port: int, topic: str, received: list, lock: threading.Lock):
    """A paho client subscribed (durably, QoS 1) to ``topic``, once the broker acknowledged the subscription."""
    import paho.mqtt.client as mqtt

    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edgecls-test-{topic.replace('/', '-')}",
                      protocol=mqtt.MQTTv311, clean_session=False)

    def on_message(client, userdata, msg):
        with lock:
            received.append(json.loads(msg.payload))

    sub.on_connect = lambda client, userdata, flags, reason_code, properties: client.subscribe(topic, qos=1)
    sub.on_subscribe = lambda client, userdata, mid, reason_codes, properties: subscribed.set()
    sub.on_message = on_message
    sub.reconnect_delay_set(min_delay=0.2, max_delay=0.5)
    sub.connect_async("127.0.0.1", port)
    sub.loop_start()
    assert subscribed.wait(10), "the test's subscriber did not subscribe"
    return sub


class Broker:
    """A real Mosquitto on 127.0.0.1:port with persistence in ``folder`` (it keeps a durable subscriber's messages
    over a restart, as a production broker would)."""

    def __init__(self, folder: Path, port: int) -> None:
        self.port = port
        self.conf = folder / "mosquitto.conf"
        (folder / "db").mkdir(exist_ok=True)
        self.log = folder / "mosquitto.log"
        self.conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {folder / 'db'}/\nuser root\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(self.conf)], stdout=log, stderr=log)

        def up() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
            assert self.proc.poll() is None, self.log.read_text()
            return False

        wait_for(up, 10, "mosquitto to listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


@pytest.fixture
def broker(tmp_path):
    if not MOSQUITTO.exists():
        pytest.skip(f"{MOSQUITTO} absent (apt-get install mosquitto)")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the serve extra) is needed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = Broker(tmp_path, port)
    b.start()
    yield b
    b.stop()


def test_mqtt_events_arrive_and_survive_a_broker_restart(classifier, video, broker, tmp_path):
    from edgecls.serve.mqtt import MqttPublisher

    topic = "edgecls/test/cam"
    received: list[dict] = []
    lock = threading.Lock()
    # a durable subscriber (clean_session=False): the broker keeps its messages while it is away
    sub = mqtt_subscriber(broker.port, topic, received, lock)
    live = make_live(classifier, video).start()
    pub = MqttPublisher(f"mqtt://127.0.0.1:{broker.port}/{topic}", live, heartbeat=0.25, reconnect_delay=(0.3, 0.6))
    try:
        pub.start()

        def seqs() -> set[int]:
            with lock:
                return {m["seq"] for m in received}

        def kinds() -> set[str]:
            with lock:
                return {m["type"] for m in received}

        wait_for(lambda: {"labels", "heartbeat"} <= kinds() and len(seqs()) >= 5, 15, "label and heartbeat events")
        broker.stop()  # mid-stream
        wait_for(lambda: pub.stats().queued >= 4, 10, "events to queue while the broker is away")
        queued_at_restart = pub.stats().queued
        last_before = max(seqs())
        broker.start()  # same port, same persistence
        target = last_before + queued_at_restart + 3
        wait_for(lambda: set(range(1, target + 1)) <= seqs(), 20, f"every seq up to {target} after the restart")
        stats = pub.stats()
        assert stats.connects >= 2 and stats.dropped == 0, stats
        with lock:
            messages = sorted({m["seq"]: m for m in received}.values(), key=lambda m: m["seq"])
        after = [m for m in messages if m["seq"] > last_before]
        assert {m["type"] for m in after} == {"labels", "heartbeat"}  # both kinds resumed after the restart
        labels = [m for m in messages if m["type"] == "labels"]
        assert {tuple(m["labels"]) for m in labels} <= {("dog",), ("cat",), ()}
        assert all(a["labels"] == b["previous"] for a, b in zip(labels, labels[1:]))
        beat = next(m for m in messages if m["type"] == "heartbeat" and m["frames"] > 0)
        assert set(beat) >= {"seq", "time", "source", "labels", "probabilities", "fps", "frames", "connected"}
        (tmp_path / "example-events.json").write_text(json.dumps([labels[1], beat], indent=1))
    finally:
        assert pub.stop(timeout=5)
        live.stop()
        sub.loop_stop()
        sub.disconnect()


def test_edgecls_serve_with_a_source_and_mqtt_end_to_end(tmp_path, video, broker):
    """The real command: `edgecls serve BUNDLE --source VIDEO --mqtt ... --api-key K` classifies the video through the
    server's one inference thread while answering HTTP, publishes to a real Mosquitto, counts camera frames in
    /metrics, and exits 0 on SIGTERM with the stream closed."""
    import httpx
    import paho.mqtt.client as mqtt
    from prometheus_client.parser import text_string_to_metric_families
    from test_serve import _start_cli_server

    bundle = build_bundle(tmp_path / "bundle", openvino=False)["root"]
    topic = "edgecls/e2e/cam"
    received: list[dict] = []
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edgecls-e2e-sub")
    sub.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda c, u, msg: received.append(json.loads(msg.payload))
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    proc = None
    try:
        assert subscribed.wait(10)
        proc, url = _start_cli_server(bundle, "--source", str(video), "--api-key", "k3y",
                                      "--mqtt", f"mqtt://127.0.0.1:{broker.port}/{topic}", "--heartbeat", "0.5")
        key = {"authorization": "Bearer k3y"}
        with httpx.Client(base_url=url, headers=key, timeout=10) as c:
            assert c.get("/v1/live", headers={"authorization": "Bearer wrong"}).status_code == 401
            wait_for(lambda: c.get("/v1/live").json()["frames"] >= 5, 30, "the live view to classify frames")
            ok, _ = cv2_png()
            answer = c.post("/v1/classify", content=ok, headers={"content-type": "image/png"})
            assert answer.status_code == 200 and set(answer.json()["probabilities"]) == {"cat", "dog", "fish"}
            metrics = {s.name: s.value for f in text_string_to_metric_families(c.get("/metrics").text)
                       for s in f.samples}
            assert metrics["edgecls_camera_frames_total"] >= 5 and metrics["edgecls_camera_connected"] == 1, metrics
            assert metrics["edgecls_camera_fps"] > 0
            wait_for(lambda: any(m["type"] == "heartbeat" for m in received), 20, "an MQTT heartbeat")
            assert all(Path(m["source"]).name == "colours.mp4" for m in received), received[:2]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "Traceback" not in out
    finally:
        sub.loop_stop()
        sub.disconnect()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def cv2_png() -> tuple[bytes, None]:
    import cv2

    return cv2.imencode(".png", np.full((24, 24, 3), 128, np.uint8))[1].tobytes(), None
# ---------------------------------------------------------------------------------------------------------------------
# the whole of edgecls serve with a source


def test_edgecls_serve_with_a_source_the_key_metrics_mqtt_and_a_stop_with_viewers_open(classifier, video, broker):
    from conftest import serve_bundle

    topic = "edgecls/test/served"
    received: list[dict] = []
    lock = threading.Lock()
    sub = mqtt_subscriber(broker.port, topic, received, lock)
    auth = {"Authorization": f"Bearer {KEY}"}
    ended: list[str] = []
    try:
        with serve_bundle(classifier.root, artifact="onnx", source=str(video), api_key=KEY, min_duration=0.1,
                          heartbeat=0.3, mqtt=f"mqtt://127.0.0.1:{broker.port}/{topic}") as served:
            c = served.client
            assert c.get("/v1/live").status_code == 401 and c.get("/v1/stream.mjpg").status_code == 401
            assert c.get("/").status_code == 200 and c.get("/static/live.js").status_code == 200
            state = wait_for(lambda: (s := c.get("/v1/live", headers=auth).json())["frames"] > 10 and s, 15,
                             "frames through the server's batcher")
            assert state["connected"] and state["engine_errors"] == 0
            metrics = c.get("/metrics", headers=auth).text
            assert re.search(r"^edgecls_camera_fps [1-9]", metrics, re.M), metrics
            assert re.search(r"^edgecls_camera_frames_total [1-9]", metrics, re.M)

            def hold(path: str) -> None:  # a viewer that stays until the server ends the stream
                with httpx.Client(base_url=served.url, timeout=20, headers=auth) as http, \
                        http.stream("GET", path) as r:
                    assert r.status_code == 200
                    for _ in r.iter_raw():
                        pass
                ended.append(path)

            viewers = [threading.Thread(target=hold, args=(p,), daemon=True) for p in ("/v1/stream.mjpg",
                                                                                     "/v1/events")]
            for v in viewers:
                v.start()
            wait_for(lambda: c.get("/v1/live", headers=auth).json()["viewers"] == 1, 10, "the MJPEG viewer")
            wait_for(lambda: {"labels", "heartbeat"} <= {m["type"] for m in list(received)}, 15, "MQTT messages")
        # serve_bundle's exit stopped the server (asserting its thread ended) with both streams open
        for v in viewers:
            v.join(10)
        assert sorted(ended) == ["/v1/events", "/v1/stream.mjpg"]
        assert served.service.live.closed.is_set()
    finally:
        sub.loop_stop()
        sub.disconnect()
    with lock:
        labels = [m for m in received if m["type"] == "labels"]
    assert {tuple(m["labels"]) for m in labels} <= {("dog",), ("cat",), ()}


def test_mqtt_settings_are_checked_before_anything_starts(runner, video, tmp_path):
    """--mqtt without a live source, or with a bad URL, is one line before the bundle is opened (the bundle here is
    an empty folder: opening it would be another error)."""
    from edgecls.cli import cli

    empty = tmp_path / "not-a-bundle"
    empty.mkdir()
    result = runner.invoke(cli, ["serve", str(empty), "--mqtt", "mqtt://127.0.0.1:1883/t"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--mqtt publishes the live view's label changes: give --camera N or --source" in result.output
    result = runner.invoke(cli, ["serve", str(empty), "--source", str(video), "--mqtt", "mqtt://x/a/+/b"])
    assert result.exit_code == 1 and "wildcards" in result.output and "manifest" not in result.output, result.output
