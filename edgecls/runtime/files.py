"""Image files through a decode thread pool: collecting them from paths, folders and globs, predicting them in input
order, and a terminal progress bar.

Decoding and preprocessing run in a ``ThreadPoolExecutor`` (OpenCV releases the GIL) a bounded number of images ahead
of inference, which runs on the calling thread in batches; results come back in input order and an unreadable image
becomes an error row without stopping the run.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from edgecls.errors import ConfigError, DataError
from edgecls.preprocess import DEFAULT_MAX_PIXELS, FLOAT_INPUT, IMAGE_EXTENSIONS, Preprocessor

if TYPE_CHECKING:
    from edgecls.runtime.classifier import Classifier, Prediction

log = logging.getLogger("edgecls.runtime")


def collect_images(inputs: Sequence[str | Path]) -> list[str]:
    """Expand files, folders (recursively, sorted) and glob patterns into image paths, in the order given.

    A folder contributes only files with an image extension; a file named explicitly is kept whatever its
    extension (it becomes an error row if it is not an image). A path that does not exist and is not a pattern is
    kept too, so it is reported as an error row. A pattern that matches nothing is logged.

    Symbolic links to folders are followed, but a folder reached twice (a link loop, or two links to one folder) is
    walked once, and each file (by device and inode: symlinks and hard links to it) is listed once per input. A
    FIFO, socket or device file is kept so that it becomes a "not a regular file" error row; it is never opened.
    """
    found: list[str] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            files = _unique(sorted((p for _, p in _walk(text) if Path(p).suffix.lower() in IMAGE_EXTENSIONS),
                                   key=lambda s: s.split(os.sep)))
            if not files:
                log.warning("%s: no images (%s) in this folder", text, ", ".join(IMAGE_EXTENSIONS))
            found.extend(files)
        elif path.exists():
            found.append(text)
        elif glob.has_magic(text):
            matches = _unique(sorted(_glob(text)))
            if not matches:
                log.warning("%s: the pattern matches no file", text)
            found.extend(matches)
        else:
            found.append(text)
    return found


def file_key(path: str | Path) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` points to, so a symlink or hard link is the same file; None when it is missing
    (a dangling link), unusable as a path or a folder."""
    import stat

    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return None if stat.S_ISDIR(st.st_mode) else (st.st_dev, st.st_ino)


def _unique(paths: list[str]) -> list[str]:
    """Existing non-folder paths, each file once (the first of its names), in the given order."""
    seen: set[tuple[int, int]] = set()
    out = []
    for p in paths:
        key = file_key(p)
        if key is None or key in seen:
            continue
        seen.add(key)
        out.append(p)
    return out


def _walk(root: str) -> Iterator[tuple[str, str]]:
    """(path relative to ``root`` with ``/``, path) of every non-folder entry under ``root``, folders in sorted
    order; links to folders are followed, but each real folder is entered once, so link loops end."""
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == os.curdir else rel.replace(os.sep, "/") + "/"
        for name in sorted(filenames):
            yield prefix + name, os.path.join(dirpath, name)


def _component_regex(part: str) -> str:
    """One path component of a glob pattern as a regex that does not cross ``/`` (a leading dot must be matched
    literally, as :mod:`glob` does)."""
    out = [] if part.startswith(".") else [r"(?!\.)"]
    i = 0
    while i < len(part):
        c = part[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            j += part[j:j + 1] == "!"
            j += part[j:j + 1] == "]"
            j = part.find("]", j)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = part[i + 1:j]
                neg = body.startswith("!")
                body = (body[1:] if neg else body).replace("\\", "\\\\").replace("[", "\\[")
                if body.startswith("^"):
                    body = "\\" + body
                out.append("[" + ("^" if neg else "") + body + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _glob(pattern: str) -> list[str]:
    """:func:`glob.glob` (recursive ``**``) that follows links to folders but enters each real folder once, so a link
    loop does not repeat files or hang; non-folder matches only."""
    if "**" not in pattern:
        return [m for m in glob.glob(pattern) if not os.path.isdir(m)]
    parts = re.split(r"[\\/]", pattern) if os.name == "nt" else pattern.split("/")
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = "/".join(parts[:first])
    if first == 1 and parts[0] == "":
        base = "/"
    rest = [p for p in parts[first:] if p]
    regex = ""
    for i, part in enumerate(rest):
        last = i == len(rest) - 1
        if part == "**":
            regex += r"(?:(?!\.)[^/]+/)*" + (r"(?!\.)[^/]+" if last else "")
        else:
            regex += _component_regex(part) + ("" if last else "/")
    matcher = re.compile(regex + r"\Z", re.DOTALL)
    root = base or os.curdir
    if not os.path.isdir(root):
        return []
    return [os.path.join(base, rel) if base else rel.replace("/", os.sep)
            for rel, _ in _walk(root) if matcher.match(rel)]


def _not_regular(path: str) -> str | None:
    """Why ``path`` must not be opened (a FIFO would block, a device never ends), or None for a regular file or
    a missing one (the decoder reports that)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a socket"
            if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special")
    return f"{path}: not a regular file ({kind}); skipped"


_local = threading.local()


def _load(path: str, spec: Any, max_pixels: int | None = DEFAULT_MAX_PIXELS,
          kind: str = FLOAT_INPUT) -> tuple[np.ndarray | None, str | None]:
    why = _not_regular(path)
    if why is not None:
        return None, why
    pre = getattr(_local, "pre", None)
    if pre is None or pre.spec != spec or pre.output != kind:  # one per decode thread: its resize buffer is reused
        pre = _local.pre = Preprocessor(spec, output=kind)
    try:
        return pre(path, max_pixels=max_pixels), None
    except DataError as exc:
        return None, str(exc)
    except Exception as exc:  # a decoder crash on one odd file must not end the run
        return None, f"{path}: {type(exc).__name__}: {exc}"


def predict_files(
    classifier: "Classifier",
    paths: Sequence[str],
    *,
    batch: int = 16,
    workers: int | None = None,
    prefetch: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator["Prediction"]:
    """Yield one :class:`Prediction` per path, in order; unreadable images are error rows.

    ``workers`` decode threads (default: up to 4) keep ``prefetch`` images (default ``2 * batch``, at least
    ``batch + 2 * workers``) preprocessed ahead of inference; ``on_batch(n)`` is called after each batch of n rows
    (progress). An engine with several lanes (``classifier.lanes``: its throughput mode) shares ``batch`` between
    them: each lane gets its own batch of ``ceil(batch / lanes)`` images with :meth:`Classifier.submit`, side by side,
    so the engine keeps running while results are written and decoding takes the rest of the cores.
    """
    if batch < 1:
        raise ConfigError(f"batch must be at least 1, got {batch}")
    workers = workers or min(4, os.cpu_count() or 1)
    window = prefetch or max(2 * batch, batch + 2 * workers)
    lanes = min(classifier.lanes, batch)
    batch = -(-batch // lanes)  # per lane
    spec = classifier.spec
    kind = getattr(classifier, "input_kind", FLOAT_INPUT)  # uint8 pixels for a -u8 artifact: normalised in the engine
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgecls-decode")
    inflight: deque[tuple[str, Future]] = deque()
    todo = iter(paths)

    def fill() -> None:
        while len(inflight) < window:
            path = next(todo, None)
            if path is None:
                return
            inflight.append((path, pool.submit(_load, path, spec, classifier.max_pixels, kind)))

    Rows = list[tuple[str, np.ndarray | None, str | None]]
    running: deque[tuple[Rows, Any]] = deque()  # batches on the engine's lanes, oldest first

    def start(rows: Rows) -> None:
        tensors = [t for _, t, _ in rows if t is not None]
        running.append((rows, classifier.submit(np.stack(tensors)) if tensors else None))

    def finish() -> list["Prediction"]:
        rows, handle = running.popleft()
        preds = iter(classifier.predictions(handle.result(), [p for p, t, _ in rows if t is not None])
                     if handle is not None else [])
        out = [next(preds) if t is not None else classifier.error_row(p, err or "unreadable") for p, t, err in rows]
        if on_batch is not None:
            on_batch(len(out))
        return out

    try:
        fill()
        pending: Rows = []
        ready = 0
        while inflight:
            path, fut = inflight.popleft()
            fill()
            tensor, err = fut.result()
            pending.append((path, tensor, err))
            ready += tensor is not None
            if ready >= batch:
                start(pending)
                pending, ready = [], 0
                while len(running) >= lanes:
                    yield from finish()
        if pending:
            start(pending)
        while running:
            yield from finish()
    finally:
        for _, fut in inflight:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


class Progress:
    """tqdm when installed, else a plain counter on stderr; shown only when asked or stderr is a terminal."""

    def __init__(self, total: int, *, enabled: bool | None = None, desc: str = "images") -> None:
        tty = sys.stderr.isatty()
        self.enabled = (tty and total >= 32) if enabled is None else enabled
        self.total, self.done, self._bar, self._last = total, 0, None, 0.0
        self._tty = tty
        if not self.enabled:
            return
        try:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="img", desc=desc, dynamic_ncols=True, leave=False)
        except ImportError:
            self._bar = None

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= (0.2 if self._tty else 5.0) or self.done >= self.total:
            self._last = now
            end = "\r" if self._tty and self.done < self.total else "\n"
            sys.stderr.write(f"{self.done}/{self.total} images{end}")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

