"""The library side of `edgecls predict` and `edgecls run`: load, run, write outputs, summarise (`edgecls doctor`'s is
:mod:`edgecls.runtime.doctor`).

No click here: the CLI parses flags, calls one of these and prints the summary. Outputs are written as results
arrive and flushed; Ctrl-C (KeyboardInterrupt) stops the run, closes every output properly (a JSON array is still
closed, the video file is finalised) and returns a summary with ``interrupted=True``.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Sequence

from edgecls.errors import ConfigError
from edgecls.preprocess import DEFAULT_MAX_PIXELS
from edgecls.runtime.backends import LATENCY, THROUGHPUT, check_mode
from edgecls.runtime.classifier import Classifier, Prediction
from edgecls.runtime.files import Progress, collect_images, file_key, predict_files
from edgecls.runtime.stream import (
    DEFAULT_BACKOFF,
    DEFAULT_FRAME_TIMEOUT,
    Source,
    StreamStats,
    limit_frames,
    open_capture,
    parse_source,
    stream_frames,
)
from edgecls.runtime.video import Display, VideoSink, draw_overlay

log = logging.getLogger("edgecls.runtime")

OUTPUT_FORMATS = ("table", "json", "jsonl", "csv")


# ---------------------------------------------------------------------------------------------------------------------
# writers


class RowWriter:
    """Writes :class:`Prediction` rows to a text stream as table, json (one array), jsonl or csv, as they come."""

    def __init__(self, stream: IO[str], fmt: str, class_names: Sequence[str], *, source_width: int = 40) -> None:
        if fmt not in OUTPUT_FORMATS:
            raise ConfigError(f"unknown output format {fmt!r}; valid: {', '.join(OUTPUT_FORMATS)}")
        self.stream, self.fmt, self.names = stream, fmt, list(class_names)
        self.count = 0
        self._width = max(6, min(source_width, 60))
        self._per_class = len(self.names) <= 6
        self._csv = csv.writer(stream) if fmt == "csv" else None
        if fmt == "json":
            stream.write("[")
        elif fmt == "csv":
            self._csv.writerow(["source", "error", "labels", *self.names])
        elif fmt == "table":
            cols = "  ".join(f"{n[:8]:>8s}" for n in self.names) if self._per_class else "top probabilities"
            stream.write(f"{'source':<{self._width}s}  {'labels':<24s}  {cols}\n")

    def write(self, pred: Prediction) -> None:
        fmt = self.fmt
        if fmt == "jsonl":
            self.stream.write(json.dumps(pred.to_dict()) + "\n")
        elif fmt == "json":
            self.stream.write(("\n" if self.count == 0 else ",\n") + "  " + json.dumps(pred.to_dict()))
        elif fmt == "csv":
            probs = [f"{p:.6f}" for p in pred.probs] if pred.probs is not None else [""] * len(self.names)
            self._csv.writerow([pred.source, pred.error or "", ";".join(pred.labels), *probs])
        else:
            self.stream.write(self._table_row(pred) + "\n")
        self.count += 1
        self.stream.flush()

    def _table_row(self, pred: Prediction) -> str:
        src = pred.source if len(pred.source) <= self._width else "..." + pred.source[-(self._width - 3):]
        if pred.error is not None:
            return f"{src:<{self._width}s}  ERROR: {pred.error}"
        labels = ",".join(pred.labels) or "-"
        if self._per_class:
            cols = "  ".join(f"{p:8.3f}" for p in pred.probs)
        else:
            top = sorted(pred.probabilities.items(), key=lambda kv: -kv[1])[:3]
            cols = " ".join(f"{k}={v:.3f}" for k, v in top)
        return f"{src:<{self._width}s}  {labels:<24s}  {cols}"

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n" if self.count else "]\n")
        self.stream.flush()


def _quietly(action: Callable[[], Any]) -> None:
    """Close/flush an output; a reader that went away (``| head``) is not an error at this point."""
    try:
        action()
    except (BrokenPipeError, ValueError):
        pass


def refuse_overwriting_inputs(outputs: Sequence[tuple[str, str | Path | None]], inputs: Sequence[str | Path],
                              bundle: str | Path | None = None) -> None:
    """Raise :class:`ConfigError` when an output (``(option, path)``) is the same file as an input (the same path,
    or a symlink or hard link to it), lies inside the bundle, or is named by two options; before anything is written.
    """
    given = [(opt, Path(out)) for opt, out in outputs if out is not None]
    by_key: dict[tuple[int, int], tuple[str, Path]] = {}
    by_real: dict[str, str] = {}
    for opt, out in given:
        real = os.path.realpath(out)
        if real in by_real:
            raise ConfigError(f"{opt} {out}: {by_real[real]} writes the same file; give them different paths")
        by_real[real] = opt
        key = file_key(out)
        if key is not None:  # a file that does not exist yet cannot be an input
            by_key[key] = (opt, out)
    if bundle is not None:
        root = os.path.realpath(bundle)
        for opt, out in given:
            real = os.path.realpath(out)
            if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
                raise ConfigError(f"{opt} {out}: is {'the bundle' if real == root else 'inside the bundle'} {bundle}; "
                                  "writing there would damage it. Choose another output path")
    if not by_key:
        return
    for item in inputs:
        hit = by_key.get(file_key(item))  # type: ignore[arg-type]
        if hit is not None:
            opt, out = hit
            raise ConfigError(f"{opt} {out}: is the same file as the input {item}; writing there would destroy it. "
                              "Choose another output path")


def _unwritable(path: Path, exc: OSError) -> ConfigError:
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    reason = f"{blocker} is a file, not a folder" if blocker is not None else (exc.strerror or str(exc))
    return ConfigError(f"{path}: cannot write there ({reason}); give a path in a folder you can write to")


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(path, exc) from None


def _open_out(out: str | Path | None, default: IO[str] | None) -> tuple[IO[str], bool]:
    if out is None:
        return (default or sys.stdout), False
    path = Path(out)
    _make_parent(path)
    try:
        return open(path, "w", encoding="utf-8", newline=""), True
    except OSError as exc:
        raise _unwritable(path, exc) from None


# ---------------------------------------------------------------------------------------------------------------------
# predict


@dataclass
class PredictSummary:
    images: int
    errors: int
    seconds: float
    backend: dict[str, Any]
    out: str | None = None
    interrupted: bool = False
    output_closed: bool = False  # stdout was closed by its reader (a pipe into `head`)
    score: Any = None  # a scoring.TruthScore when true labels were given

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        b = self.backend.get("backend", {})
        what = f"{self.images} images ({self.errors} unreadable) in {self.seconds:.2f} s, " \
               f"{self.images_per_second:.1f} img/s on {b.get('name')}/{b.get('device')}, " \
               f"precision {self.backend.get('precision') or b.get('precision')}"
        text = ("interrupted after " if self.interrupted else "") + what + (f"; wrote {self.out}" if self.out else "")
        return text + (f"\nscored {self.score.format()}" if self.score is not None else "")


def predict_paths(
    bundle: str | Path,
    paths: Sequence[str | Path],
    *,
    backend: str = "auto",
    device: str | None = None,
    artifact: str | None = None,
    threads: int | None = None,
    batch: int = 16,
    workers: int | None = None,
    fmt: str = "table",
    out: str | Path | None = None,
    progress: bool | None = None,
    stdout: IO[str] | None = None,
    truth: str | Path | None = None,
    verify: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    mode: str = THROUGHPUT,
) -> PredictSummary:
    """Classify images, folders (recursive) and globs with a bundle; write one row per image in input order.

    An unreadable image is an error row (counted in ``errors``) and the run goes on; so is one whose header declares
    more than ``max_pixels`` pixels (None or 0: no limit), refused before it is decoded. ``verify``: check the model
    files against the manifest's sha256 before loading them (see :class:`Classifier`). An ``out`` that is the same
    file as an input image (or lies inside the bundle) is refused before anything is written. ``truth``: a label
    file (any that ``edgecls.data.load_dataset`` reads, with the bundle's classes) to score the predictions against;
    the summary then holds a :class:`~edgecls.runtime.scoring.TruthScore` (exact matches and label accuracy).
    ``mode``: the engine's (see :class:`Classifier`); ``throughput`` by default, as only the total time counts.
    """
    import time

    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"unknown output format {fmt!r}; valid: {', '.join(OUTPUT_FORMATS)}")
    images = collect_images(paths)
    if not images:
        raise ConfigError(f"no images found in {', '.join(map(str, paths))} (extensions: jpg, jpeg, png, bmp, webp, "
                          "tif, tiff)")
    refuse_overwriting_inputs([("--out", out)], images, bundle)
    clf = Classifier(bundle, backend, device, artifact=artifact, threads=threads, verify=verify,
                     max_pixels=max_pixels, mode=mode)
    true_labels = None
    if truth is not None:
        from edgecls.runtime.scoring import read_truth

        try:
            true_labels = read_truth(truth, clf.class_names)
        except BaseException:
            clf.close()
            raise
    scored: list[Prediction] = []
    stream, owned = _open_out(out, stdout)
    bar = Progress(len(images), enabled=progress)
    writer = None
    count = errors = 0
    interrupted = output_closed = False
    start = time.perf_counter()
    try:
        writer = RowWriter(stream, fmt, clf.class_names, source_width=max(len(p) for p in images))
        for pred in predict_files(clf, images, batch=batch, workers=workers, on_batch=bar.update):
            writer.write(pred)
            count += 1
            errors += not pred.ok
            if true_labels is not None:
                scored.append(pred)
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:  # `edgecls predict ... | head`: the reader has all it wants
        output_closed = True
    finally:
        seconds = time.perf_counter() - start
        bar.close()
        if writer is not None:
            _quietly(writer.close)
        if owned:
            _quietly(stream.close)
        info = clf.info()
        clf.close()
    score = None
    if true_labels is not None:
        from edgecls.runtime.scoring import score_predictions

        score = score_predictions(scored, true_labels, labels_file=truth)
    return PredictSummary(count, errors, seconds, info, str(out) if out else None, interrupted, output_closed, score)


# ---------------------------------------------------------------------------------------------------------------------
# run (camera / video / stream)


@dataclass
class StreamSummary:
    source: str
    frames: int
    dropped: int
    reconnects: int
    seconds: float
    fps: float
    mean_latency_ms: float
    backend: dict[str, Any]
    outputs: list[str] = field(default_factory=list)
    interrupted: bool = False
    output_closed: bool = False
    engine_p50_ms: float = 0.0  # median engine time of a frame (its batch's, when frames were batched)

    def format(self) -> str:
        b = self.backend.get("backend", {})
        text = (f"{self.source}: {self.frames} frames in {self.seconds:.2f} s on {b.get('name')}/{b.get('device')}, "
                f"engine latency {self.engine_p50_ms:.1f} ms (p50), throughput {self.fps:.1f} FPS, "
                f"{self.dropped} stale frames dropped")
        if self.reconnects:
            text += f", reopened {self.reconnects}x"
        if self.outputs:
            text += f"; wrote {', '.join(self.outputs)}"
        return ("interrupted: " if self.interrupted else "") + text


def has_display() -> bool:
    """A GUI display is plausible: not Linux, or DISPLAY / WAYLAND_DISPLAY is set."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_stream(
    bundle: str | Path,
    *,
    camera: int | str | None = None,
    source: str | None = None,
    backend: str = "auto",
    device: str | None = None,
    artifact: str | None = None,
    threads: int | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    jsonl: str | Path | None = None,
    realtime: bool = False,
    max_frames: int | None = None,
    batch: int = 8,
    backoff: Sequence[float] = DEFAULT_BACKOFF,
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
    stdout: IO[str] | None = None,
    opener: Callable[[Source], Any] = open_capture,
    verify: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    mode: str | None = None,
) -> StreamSummary:
    """Classify a camera, video file, stream URL or GStreamer pipeline frame by frame.

    ``show=None`` shows a window only when a display is available. Headless without ``jsonl`` prints one JSON line per
    frame to stdout. ``save`` writes the overlaid frames to an mp4; ``save`` or ``jsonl`` that is the video file
    itself (or a link to it), inside the bundle, or both the same file, is refused before anything is written. A
    source that cannot open, or a live source that drops and cannot be reopened after ``backoff``, raises
    :class:`edgecls.errors.DataError`; a try that brings no frame within ``frame_timeout`` seconds counts as failed
    (see :func:`stream_frames`). ``batch``: the most
    frames of a video file inferred together when they are already decoded (see :func:`stream_frames`).
    ``max_pixels``: a source whose frames are larger (by the size it reports when opened) is refused; ``verify``: as
    for :func:`predict_paths`. ``mode``: the engine's (see :class:`Classifier`); None picks ``throughput`` for a
    video file read in full (its frames are batched) and ``latency`` for cameras, streams and ``realtime``.
    """
    src = parse_source(camera, source)
    mode = check_mode(mode) if mode is not None else (THROUGHPUT if src.kind == "file" and not realtime else LATENCY)
    refuse_overwriting_inputs([("--save", save), ("--jsonl", jsonl)], [src.target] if src.kind == "file" else [],
                              bundle)
    if show is None:
        show = has_display()
        log.debug("run: %s", "showing a window" if show else "headless (no display)")
    display = Display(f"edgecls - {src.label}") if show else None
    clf = Classifier(bundle, backend, device, artifact=artifact, threads=threads, verify=verify,
                     max_pixels=max_pixels, mode=mode)
    if opener is open_capture:  # bind --frame-timeout before wrapping: stream_frames only binds the bare open_capture
        opener = functools.partial(open_capture, timeout=frame_timeout)
    opener = limit_frames(opener, clf.max_pixels)
    stats = StreamStats()
    outputs: list[str] = []
    lines, owned = (None, False)
    if save:
        _make_parent(Path(save))
    sink = VideoSink(save, fps=0.0) if save else None
    interrupted = output_closed = False
    try:
        if jsonl is not None:
            lines, owned = _open_out(jsonl, None)
            outputs.append(str(jsonl))
        elif display is None:
            lines = stdout or sys.stdout
        if sink is not None:
            outputs.append(str(save))
        for result in stream_frames(clf, src, realtime=realtime, max_frames=max_frames, backoff=backoff,
                                    frame_timeout=frame_timeout, stats=stats, opener=opener, max_batch=batch):
            if lines is not None:
                lines.write(json.dumps(result.to_dict()) + "\n")
                lines.flush()
            if sink is None and display is None:
                continue
            frame = draw_overlay(result.frame, result)
            if sink is not None:
                if sink.frames == 0:
                    sink.fps = stats.source_fps if 0 < stats.source_fps <= 240 else 30.0
                sink.write(frame)
            if display is not None and not display.show(frame):
                break
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:
        output_closed = True
    finally:
        if sink is not None:
            sink.close()
        if display is not None:
            display.close()
        if lines is not None:
            _quietly(lines.close if owned else lines.flush)
        info = clf.info()
        clf.close()
    return StreamSummary(src.label, stats.frames, stats.dropped, stats.reconnects, stats.seconds, stats.fps,
                         stats.mean_latency_ms, info, outputs, interrupted, output_closed, stats.engine_p50_ms)
