"""Video, camera and network streams, frame by frame: parsing a source, opening it, reading it and reopening it.

A capture thread reads the source. For a camera, a network stream or a GStreamer pipeline it keeps only the
newest frame in a one-slot buffer (older unread frames are dropped and counted), so inference always sees the latest
picture; cameras are opened with ``CAP_PROP_BUFFERSIZE=1``. A GStreamer pipeline string (anything containing ``!``)
goes to ``cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)``; end it with ``appsink drop=true max-buffers=1`` so
GStreamer itself drops stale frames, e.g. on a Jetson::

    nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720 ! nvvidconv ! video/x-raw,format=BGRx !
    videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1

A video file is not real time: every frame is processed in order (read and preprocessed ahead in worker threads)
unless ``realtime=True``, which paces reading at the file's frame rate and drops like a camera. A live source that
stops delivering is reopened with back-off (0.5, 1, 2 s by default: :func:`backoff_delays`); when that fails the
loop raises :class:`edgecls.errors.DataError`. A try counts as failed until the source delivers a frame: a stream that
opens but whose reads fail, or that sends no frame within ``frame_timeout``, uses up the next, longer, delay, and so
does a network stream that does not open at all (a URL is also opened with ``frame_timeout`` as OpenCV's open and
read timeouts, so a server that accepts and stays silent cannot hold a try for OpenCV's default 30 s).
"""

from __future__ import annotations

import functools
import logging
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from edgecls.errors import ConfigError, DataError
from edgecls.preprocess import FLOAT_INPUT, Preprocessor, limit_text, new_input, size_text

if TYPE_CHECKING:
    from edgecls.runtime.classifier import Classifier, Prediction

log = logging.getLogger("edgecls.runtime")

DEFAULT_BACKOFF = (0.5, 1.0, 2.0)
DEFAULT_FRAME_TIMEOUT = 10.0


def backoff_delays(tries: int, first: float = 0.5) -> tuple[float, ...]:
    """The waits before each of ``tries`` reopen tries: ``first``, doubling (3 tries: 0.5, 1, 2 s)."""
    if isinstance(tries, bool) or not isinstance(tries, int) or tries < 0:
        raise ConfigError(f"--reconnect-tries must be an integer >= 0, got {tries!r}")
    return tuple(first * 2.0 ** i for i in range(tries))


def _cv2():
    from edgecls._deps import require

    return require("cv2", extra="runtime", package="opencv-python-headless")


@dataclass(frozen=True)
class Source:
    """Where frames come from: a camera index, a video file, a network stream URL or a GStreamer pipeline."""

    kind: str  # camera | file | stream | gstreamer
    target: int | str
    label: str

    @property
    def live(self) -> bool:
        return self.kind != "file"


def parse_source(camera: int | str | None = None, source: str | None = None) -> Source:
    """Build a :class:`Source` from ``--camera N`` or ``--source FILE_OR_URL`` (exactly one)."""
    if (camera is None) == (source is None):
        raise ConfigError("give exactly one of --camera INDEX and --source FILE_OR_URL")
    if camera is not None:
        text = str(camera).strip()
        if not text.lstrip("-").isdigit():
            raise ConfigError(f"--camera takes a device index (0, 1, ...), got {camera!r}; use --source for paths/URLs")
        return Source("camera", int(text), f"camera {int(text)}")
    text = str(source).strip()
    if text.isdigit():
        return Source("camera", int(text), f"camera {text}")
    if "!" in text:
        return Source("gstreamer", text, "GStreamer pipeline")
    if "://" in text and not text.startswith("file://"):
        return Source("stream", text, text.split("@")[-1] if "@" in text else text)
    path = Path(text[len("file://"):] if text.startswith("file://") else text)
    if not path.is_file():
        raise DataError(f"{path}: video file not found")
    return Source("file", str(path), str(path))


def open_capture(src: Source, *, timeout: float = DEFAULT_FRAME_TIMEOUT) -> Any:
    """Open ``src`` with OpenCV; a :class:`DataError` saying what to check when it does not open.

    A network stream is opened with ``timeout`` seconds as OpenCV's open and read timeouts (where this OpenCV has
    them), so a server that accepts the connection and then sends nothing fails the open or the read in that time.
    """
    cv2 = _cv2()
    if src.kind == "camera":
        cap = cv2.VideoCapture(int(src.target))
    elif src.kind == "gstreamer":
        cap = cv2.VideoCapture(str(src.target), cv2.CAP_GSTREAMER)
    elif src.kind == "stream" and hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC"):
        ms = max(1, int(timeout * 1000))
        cap = cv2.VideoCapture(str(src.target), cv2.CAP_ANY,
                               [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    else:
        cap = cv2.VideoCapture(str(src.target))
    if not cap.isOpened():
        cap.release()
        if src.kind == "camera":
            hint = (f"check that /dev/video{src.target} exists and is not used by another program"
                    if sys.platform.startswith("linux") else "check that the camera is connected and not in use")
            raise DataError(f"cannot open camera {src.target}: {hint}")
        if src.kind == "gstreamer":
            gst = "YES" in _build_line(cv2, "GStreamer")
            extra = "" if gst else " (this OpenCV build has no GStreamer support; use a build with it, e.g. JetPack's)"
            raise DataError(f"cannot open the GStreamer pipeline{extra}: {src.target}")
        raise DataError(f"cannot open {src.label}: not a readable video or stream")
    if src.live:
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return cap


def limit_frames(opener: Callable[[Source], Any], max_pixels: int | None) -> Callable[[Source], Any]:
    """``opener`` that refuses a source whose reported frame size is over ``max_pixels`` (None or 0: no limit),
    before a frame is read (``edgecls run`` and the server's live view)."""
    if not max_pixels:
        return opener

    def guarded(src: Source) -> Any:
        cap = opener(src)
        try:
            cv2 = _cv2()
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        except Exception:
            w = h = 0
        if w * h > max_pixels:
            cap.release()
            raise DataError(f"{src.label}: frames of {size_text(w, h)}, over --max-pixels {limit_text(max_pixels)}; "
                            "raise --max-pixels to read it")
        return cap

    return guarded


def _build_line(cv2: Any, key: str) -> str:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith(key):
            return line
    return ""


class LatestFrame:
    """A capture thread that keeps only the newest frame (a one-slot buffer); stale frames are dropped and counted.

    ``pace_fps`` reads no faster than that rate (a video file played in real time).
    """

    def __init__(self, cap: Any, *, pace_fps: float | None = None) -> None:
        self.cap = cap
        self.dropped = 0
        self.read_count = 0
        self.ended = False
        self._slot: tuple[int, float, np.ndarray] | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._pace = pace_fps
        self._thread = threading.Thread(target=self._run, name="edgecls-capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            ok, frame = self.cap.read()
            if not ok or frame is None:
                break
            if self._pace:
                delay = start + self.read_count / self._pace - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            with self._cond:
                if self._slot is not None:
                    self.dropped += 1
                self._slot = (self.read_count, time.monotonic(), frame)
                self.read_count += 1
                self._cond.notify()
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    def get(self, timeout: float) -> tuple[int, float, np.ndarray] | None:
        """The newest unread frame; None when the source ended or nothing came within ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._slot is not None or self.ended, timeout=timeout):
                return None
            item, self._slot = self._slot, None
            return item

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


class OrderedFrames:
    """Reads a video file in a thread and preprocesses frames in a small pool ahead of inference; no frame dropped.

    Each frame's tensor is written into a slot of one ring of input tensors allocated once (``depth + lanes *
    max_batch + 2`` slots: the queue, the frame the reader holds and the ``lanes`` batches being inferred side by side
    never share one), by a :class:`~edgecls.preprocess.Preprocessor` per worker thread, so reading a file allocates no
    tensor per frame. A frame's future gives its slot index; :meth:`batch` turns a group of slots into one
    (N, 3, H, W) input (or (N, H, W, 3) uint8 pixels for an artifact that normalises in the engine: ``kind``).
    """

    def __init__(self, cap: Any, spec: Any, *, depth: int = 8, workers: int = 2, max_batch: int = 8,
                 kind: str = FLOAT_INPUT, lanes: int = 1) -> None:
        self.cap = cap
        self.dropped = 0
        self.read_count = 0
        self.ended = False
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgecls-prep")
        self._spec = spec
        self._kind = kind
        self.lanes = max(1, int(lanes))
        self._ring = new_input(spec, kind, depth + self.lanes * max_batch + 2)
        self._gather = [new_input(spec, kind, max_batch) for _ in range(self.lanes)]
        self._local = threading.local()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgecls-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cv2 = _cv2()
        try:
            while not self._stop.is_set():
                ok, frame = self.cap.read()
                if not ok or frame is None:
                    break
                ts = float(self.cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
                fut = self._pool.submit(self._prepare, frame, self.read_count % len(self._ring))
                item = (self.read_count, ts, frame, fut)
                self.read_count += 1
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        finally:
            self.ended = True
            self._q.put(None)

    def _prepare(self, frame: np.ndarray, slot: int) -> int:
        pre = getattr(self._local, "pre", None)
        if pre is None:
            pre = self._local.pre = Preprocessor(self._spec, output=self._kind)
        pre(frame, self._ring[slot])
        return slot

    def batch(self, slots: Sequence[int], lane: int = 0) -> np.ndarray:
        """The tensors of ``slots`` (frames in order) as one batch: a view of the ring when they lie side by side,
        else gathered into the buffer kept for that on ``lane`` (batches in flight side by side use different ones)."""
        first, n = slots[0], len(slots)
        if all(slot == first + i for i, slot in enumerate(slots)):
            return self._ring[first : first + n]
        return np.take(self._ring, slots, axis=0, out=self._gather[lane % self.lanes][:n])

    def get(self, timeout: float) -> tuple[int, float, np.ndarray, Future] | None:
        item = self._q.get(timeout=timeout)
        if item is None:
            self._q.put(None)  # stay ended for later calls
        return item

    def ready(self, limit: int) -> list[tuple[int, float, np.ndarray, Future]]:
        """Up to ``limit`` more frames that are already read, in order, without waiting for the reader."""
        items: list[tuple[int, float, np.ndarray, Future]] = []
        while len(items) < limit:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._q.put(None)
                break
            items.append(item)
        return items

    def stop(self) -> None:
        self._stop.set()
        while True:  # unblock the reader
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=1.0)
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class FrameResult:
    """One processed frame."""

    index: int  # frame number in the source (frames read so far, counting dropped ones)
    timestamp: float  # seconds: position in the file, or since the stream started
    prediction: "Prediction"
    latency_ms: float  # preprocess + inference of this frame (of its batch, when frames of a file were batched)
    fps: float  # processed frames per second (moving average)
    dropped: int  # stale frames dropped so far
    frame: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        pred = self.prediction
        return {
            "frame": self.index,
            "timestamp": round(self.timestamp, 4),
            "probabilities": {k: round(v, 6) for k, v in pred.probabilities.items()},
            "labels": list(pred.labels),
            "latency_ms": round(self.latency_ms, 3),
            "fps": round(self.fps, 2),
            "dropped": self.dropped,
        }


ENGINE_TIMES_KEPT = 10_000


@dataclass
class StreamStats:
    """Counts and timings of a stream run, updated in place by :func:`stream_frames`.

    ``engine_ms`` holds the engine time of each of the last ``ENGINE_TIMES_KEPT`` frames (``classifier.probs`` on
    the frame's batch, without decoding and preprocessing): :attr:`engine_p50_ms` is their median.
    """

    frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    latency_ms_total: float = 0.0
    source_fps: float = 0.0  # frame rate the source reports (0 when unknown)
    engine_ms: deque = field(default_factory=lambda: deque(maxlen=ENGINE_TIMES_KEPT))

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean_latency_ms(self) -> float:
        return self.latency_ms_total / self.frames if self.frames else 0.0

    @property
    def engine_p50_ms(self) -> float:
        return float(np.median(self.engine_ms)) if self.engine_ms else 0.0


def stream_frames(
    classifier: "Classifier",
    src: Source,
    *,
    realtime: bool = False,
    max_frames: int | None = None,
    backoff: Sequence[float] = DEFAULT_BACKOFF,
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
    stats: StreamStats | None = None,
    opener: Callable[[Source], Any] = open_capture,
    max_batch: int = 8,
    stop: threading.Event | None = None,
) -> Iterator[FrameResult]:
    """Yield a :class:`FrameResult` per processed frame until the source ends, ``max_frames`` or an error.

    A video file (not ``realtime``) keeps every frame, in order; frames that are already decoded when an engine lane is
    free are inferred together, up to ``max_batch`` (dynamic batching: when decoding is the slower side, batches stay
    at one frame and add no latency; when inference is, they grow and each frame costs less). An engine in its
    throughput mode has several lanes (``classifier.lanes``: OpenVINO streams, ONNX Runtime sessions): each gets its
    own batch (``max_batch`` is then shared: up to ``ceil(max_batch / lanes)`` frames per lane) with
    :meth:`Classifier.submit` and results are taken in order, so every lane stays busy while this generator's caller
    handles the results, and decoding uses what the engine leaves of the cores. Cameras, streams
    and ``realtime`` files infer the newest frame alone. ``stats`` (updated in place) holds counts and timings even when
    the caller stops early. ``opener`` opens the capture (the camera boundary; tests replace it with a fake camera).

    A live source is reopened after ``backoff[i]`` seconds on its i-th failed try in a row; a try fails until a frame
    arrives (the open fails, reads fail, or no frame comes within ``frame_timeout`` seconds), so a source that opens
    but never delivers ends with a :class:`DataError` after ``len(backoff)`` tries instead of reopening forever. A
    network stream that does not open at first is retried the same way; a camera, a pipeline or a file is not.

    ``stop`` (set from another thread) ends the generator within ``STOP_POLL`` seconds, even while it waits for a
    frame or between reopen tries (the server's live view stops this way).
    """
    if max_batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {max_batch}")
    if isinstance(frame_timeout, bool) or not isinstance(frame_timeout, (int, float)) or not frame_timeout > 0:
        raise ConfigError(f"--frame-timeout must be a number of seconds > 0, got {frame_timeout!r}")
    stats = stats if stats is not None else StreamStats()
    cv2 = _cv2()
    if opener is open_capture:
        opener = functools.partial(open_capture, timeout=frame_timeout)
    failures = 0  # reopen tries in a row that brought no frame
    try:
        cap = opener(src)
    except DataError as exc:
        if src.kind != "stream":
            raise
        cap, failures = _reopen(src, backoff, opener, stats, reason=f"did not open ({exc})", tried=0,
                                frame_timeout=frame_timeout, stop=stop)
        if cap is None:
            return
    try:
        stats.source_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    except Exception:
        stats.source_fps = 0.0
    ordered = src.kind == "file" and not realtime
    pace = None
    if src.kind == "file" and realtime:
        pace = stats.source_fps or 30.0

    kind = getattr(classifier, "input_kind", FLOAT_INPUT)  # uint8 pixels for a -u8 artifact

    lanes = min(classifier.lanes, max_batch) if ordered else 1
    lane_batch = -(-max_batch // lanes)  # max_batch frames in flight at most, shared by the lanes

    def start_reader(c: Any) -> Any:
        return OrderedFrames(c, classifier.spec, depth=max(8, 2 * max_batch), max_batch=lane_batch, kind=kind,
                             lanes=lanes) if ordered else LatestFrame(c, pace_fps=pace)

    # a live frame is preprocessed here, into one input tensor kept for the whole run (nothing allocated per frame)
    live_prep = None if ordered else Preprocessor(classifier.spec, output=kind)
    live_input = None if ordered else new_input(classifier.spec, kind, 1)

    reader = start_reader(cap)
    start = time.perf_counter()
    start_mono = time.monotonic()
    last = start
    fps = 0.0
    dropped_before = 0
    index_offset = 0
    try:
        if ordered:
            yield from _ordered_results(classifier, reader, stats, start, max_batch=lane_batch, max_frames=max_frames,
                                        frame_timeout=frame_timeout, stop=stop, label=src.label)
            return
        while max_frames is None or stats.frames < max_frames:
            item = _next_item(reader, frame_timeout, stop)
            if stop is not None and stop.is_set():
                break
            if item is None:
                if not src.live:
                    if not reader.ended:
                        raise DataError(f"{src.label}: no frame for {frame_timeout:.0f} s")
                    break
                dropped_before += reader.dropped
                index_offset += reader.read_count
                reader.stop()
                cap.release()
                reason = "ended" if reader.ended else f"sent no frame for {frame_timeout:g} s"
                new, failures = _reopen(src, backoff, opener, stats, reason=reason, tried=failures,
                                        frame_timeout=frame_timeout, stop=stop)
                if new is None:
                    break
                cap = new
                reader = start_reader(cap)
                continue
            failures = 0
            t0 = time.perf_counter()
            index, captured, frame = item
            batch = live_input
            live_prep(frame, batch[0])
            metas = [(index + index_offset, captured - start_mono, frame)]
            t_engine = time.perf_counter()
            probs = classifier.probs(batch)
            results, last, fps = _frame_results(classifier, probs, metas, stats, t0=t0, t_engine=t_engine,
                                                start=start, last=last, fps=fps,
                                                dropped=dropped_before + reader.dropped)
            yield from results
    finally:
        stats.seconds = time.perf_counter() - start
        stats.dropped = dropped_before + reader.dropped
        reader.stop()
        cap.release()


def _frame_results(classifier: "Classifier", probs: np.ndarray, metas: list, stats: StreamStats, *, t0: float,
                   t_engine: float, start: float, last: float, fps: float,
                   dropped: int) -> tuple[Iterator[FrameResult], float, float]:
    """One inferred batch of frames -> their results, with ``stats`` updated; also the new ``last`` time and the
    smoothed FPS (the live and the ordered loops share this bookkeeping)."""
    stats.engine_ms.extend([(time.perf_counter() - t_engine) * 1000.0] * len(metas))
    preds = classifier.predictions(probs, [f"frame {index}" for index, _, _ in metas])
    now = time.perf_counter()
    latency = (now - t0) * 1000.0
    dt = now - last
    inst = len(metas) / dt if dt > 0 else 0.0
    fps = inst if stats.frames == 0 else 0.9 * fps + 0.1 * inst
    stats.latency_ms_total += latency * len(metas)
    stats.dropped = dropped
    stats.seconds = now - start

    def results() -> Iterator[FrameResult]:  # frames are counted as they are taken, as before
        for (index, ts, frame), pred in zip(metas, preds):
            stats.frames += 1
            yield FrameResult(index, ts, pred, latency, fps, stats.dropped, frame)

    return results(), now, fps


STOP_POLL = 0.2  # seconds: how soon stream_frames notices its stop event


def _ordered_results(classifier: "Classifier", reader: OrderedFrames, stats: StreamStats, start: float, *,
                     max_batch: int, max_frames: int | None, frame_timeout: float, stop: threading.Event | None,
                     label: str) -> Iterator[FrameResult]:
    """Every frame of a file, in order, with up to ``reader.lanes`` batches in flight on the engine's lanes.

    The first batch in flight waits for a frame; the others take only frames already decoded (a lane left without a
    batch costs nothing: decoding is then the slower side). Results are taken oldest batch first."""
    inflight: deque = deque()  # (pending probabilities, [(index, timestamp, frame)], start, engine start)
    taken = submitted = 0
    ended = False
    last, fps = start, 0.0
    while True:
        while not ended and len(inflight) < reader.lanes and (max_frames is None or taken < max_frames):
            room = max_batch if max_frames is None else min(max_batch, max_frames - taken)
            if inflight:
                group = reader.ready(room)
                if not group:
                    break
            else:
                item = _next_item(reader, frame_timeout, stop)
                if stop is not None and stop.is_set():
                    return
                if item is None:
                    if not reader.ended:
                        raise DataError(f"{label}: no frame for {frame_timeout:.0f} s")
                    ended = True
                    break
                group = [item, *reader.ready(room - 1)]
            t0 = time.perf_counter()
            batch = reader.batch([fut.result() for *_, fut in group], lane=submitted)
            t_engine = time.perf_counter()
            inflight.append((classifier.submit(batch), [(i, ts, frame) for i, ts, frame, _ in group], t0, t_engine))
            taken += len(group)
            submitted += 1
        if not inflight:
            return
        pending, metas, t0, t_engine = inflight.popleft()
        probs = pending.result()
        results, last, fps = _frame_results(classifier, probs, metas, stats, t0=t0, t_engine=t_engine, start=start,
                                            last=last, fps=fps, dropped=reader.dropped)
        yield from results


def _next_item(reader: Any, timeout: float, stop: threading.Event | None) -> Any:
    """The reader's next frame within ``timeout`` seconds (None: none came, or the source ended); without waiting
    more than ``STOP_POLL`` at a time when there is a ``stop`` event."""
    if stop is None:
        try:
            return reader.get(timeout=timeout)
        except queue.Empty:
            return None
    end = time.monotonic() + timeout
    while not stop.is_set():
        left = end - time.monotonic()
        if left <= 0:
            return None
        try:
            item = reader.get(timeout=min(left, STOP_POLL))
        except queue.Empty:
            continue
        if item is not None or reader.ended:
            return item
    return None


def _reopen(src: Source, backoff: Sequence[float], opener: Callable[[Source], Any], stats: StreamStats, *,
            reason: str, tried: int, frame_timeout: float, stop: threading.Event | None = None) -> tuple[Any, int]:
    """Reopen ``src`` after ``tried`` failed tries in a row (each waits the next delay of ``backoff``); returns the
    capture and the tries used so far, or raises :class:`DataError` when every try is used. (None, tries) when
    ``stop`` is set while it waits."""
    last = reason
    for attempt in range(tried + 1, len(backoff) + 1):
        delay = backoff[attempt - 1]
        log.warning("%s %s; reopening in %.1f s (try %d of %d)", src.label, last, delay, attempt, len(backoff))
        if stop is None:
            time.sleep(delay)
        elif stop.wait(delay):
            return None, attempt
        try:
            cap = opener(src)
        except DataError as exc:
            last = f"did not open ({exc})"
            continue
        stats.reconnects += 1
        log.info("%s reopened", src.label)
        return cap, attempt
    delays = f" ({', '.join(f'{d:g}' for d in backoff)} s apart)" if backoff else ""
    raise DataError(f"{src.label} stopped delivering frames and could not be reopened after {len(backoff)} tries"
                    f"{delays}; last: {last}. A try fails unless a frame arrives within --frame-timeout "
                    f"({frame_timeout:g} s); more tries: --reconnect-tries")

