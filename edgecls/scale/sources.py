"""What a job reads and where it writes: sources (folders, globs, CSV/Parquet listings, filesystem URIs) expanded into
one sorted list of inputs, and output locations, on pyarrow filesystems.

A local path goes through the runtime's :func:`edgecls.runtime.files.collect_images` (the same folders, globs and
links as local ``edgecls predict``); a URI (``s3://``, ``gs://``, ``file://``, ``hdfs://``) through
``pyarrow.fs.FileSystem.from_uri``. S3 settings (endpoint, region, keys) come from the usual AWS environment variables
and files (``AWS_ENDPOINT_URL`` for an S3-compatible store). Each input is listed once (sorted by the path it is
reported under), so the same sources always make the same blocks.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

from edgecls._deps import require
from edgecls.errors import ConfigError, DataError
from edgecls.preprocess import IMAGE_EXTENSIONS

LISTING_SUFFIXES = (".csv", ".parquet", ".pq")
_MAGIC = re.compile(r"[*?\[]")


def _fs() -> Any:
    return require("pyarrow.fs", extra="ray", package="pyarrow")


def is_uri(text: str) -> bool:
    """``scheme://...`` (a Windows drive letter is not a scheme)."""
    scheme = urlsplit(str(text)).scheme
    return len(scheme) > 1 and "://" in str(text)


@dataclass(frozen=True)
class Inputs:
    """The inputs of a job, sorted by ``paths``: ``paths[i]`` is how input i is reported (as local ``predict``
    reports a local file, or the URI), read as ``locations[i]`` on ``filesystems[fs_index[i]]``."""

    paths: tuple[str, ...]
    fs_index: tuple[int, ...]
    locations: tuple[str, ...]
    filesystems: tuple[Any, ...]

    def __len__(self) -> int:
        return len(self.paths)


class _Collector:
    def __init__(self) -> None:
        self.filesystems: list[Any] = []
        self._fs_ids: dict[Any, int] = {}
        self.items: dict[tuple[int, str], str] = {}  # (fs, location) -> reported path; the first name wins

    def fs_id(self, key: Any, make: Any) -> int:
        if key not in self._fs_ids:
            self._fs_ids[key] = len(self.filesystems)
            self.filesystems.append(make())
        return self._fs_ids[key]

    def add(self, fs_id: int, location: str, path: str) -> None:
        self.items.setdefault((fs_id, location), path)

    def local(self) -> int:
        return self.fs_id("local", lambda: _fs().LocalFileSystem())

    def inputs(self) -> Inputs:
        rows = sorted(((path, fs, loc) for (fs, loc), path in self.items.items()), key=lambda r: (r[0], r[1], r[2]))
        return Inputs(tuple(r[0] for r in rows), tuple(r[1] for r in rows), tuple(r[2] for r in rows),
                      tuple(self.filesystems))


def resolve_uri(uri: str, collector: _Collector | None = None) -> tuple[Any, str, int | None]:
    """(filesystem, location on it, its id in ``collector``) for a URI; one filesystem per scheme and host."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    try:
        if scheme == "file":
            location = parts.path
            make = lambda: _fs().LocalFileSystem()  # noqa: E731
        else:
            location = (parts.netloc + parts.path).rstrip("/") if parts.path not in ("", "/") else parts.netloc
            make = lambda: _fs().FileSystem.from_uri(f"{scheme}://{parts.netloc}")[0]  # noqa: E731
        if collector is None:
            return make(), location, None
        fs_id = collector.fs_id("local" if scheme == "file" else (scheme, parts.netloc), make)
        return collector.filesystems[fs_id], location, fs_id
    except ConfigError:
        raise
    except Exception as exc:  # pyarrow: an unknown scheme, a filesystem not built in, bad credentials
        raise ConfigError(f"{uri}: cannot open this filesystem ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A glob over ``/``-separated locations: ``**`` crosses folders, ``*`` and ``?`` do not."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _add_uri(collector: _Collector, source: str, path_column: str) -> None:
    fs_mod = _fs()
    filesystem, location, fs_id = resolve_uri(source, collector)
    prefix = source[: len(source) - len(urlsplit(source).path)] if urlsplit(source).scheme == "file" else \
        f"{urlsplit(source).scheme}://"

    def shown(loc: str) -> str:
        return prefix + loc

    if _MAGIC.search(location):
        base = _MAGIC.split(location, 1)[0].rsplit("/", 1)[0]
        regex = _pattern_regex(location)
        found = [info.path for info in _list(filesystem, base, source)
                 if info.type == fs_mod.FileType.File and regex.match(info.path)]
        for loc in found:
            collector.add(fs_id, loc, shown(loc))
        return
    info = _info(filesystem, location, source)
    if info.type == fs_mod.FileType.Directory:
        for entry in _list(filesystem, location, source):
            if entry.type == fs_mod.FileType.File and _is_image(entry.path):
                collector.add(fs_id, entry.path, shown(entry.path))
    elif info.type == fs_mod.FileType.File and location.lower().endswith(LISTING_SUFFIXES):
        _add_listing(collector, filesystem, location, source, path_column)
    else:  # an image, or missing: a missing one becomes an error row, as for local predict
        collector.add(fs_id, location, source)


def _info(filesystem: Any, location: str, source: str) -> Any:
    try:
        return filesystem.get_file_info(location)
    except Exception as exc:
        raise ConfigError(f"{source}: cannot read this source ({_short(exc)})") from None


def _list(filesystem: Any, base: str, source: str) -> list[Any]:
    fs_mod = _fs()
    try:
        return sorted(filesystem.get_file_info(fs_mod.FileSelector(base, recursive=True, allow_not_found=True)),
                      key=lambda i: i.path)
    except Exception as exc:
        raise ConfigError(f"{source}: cannot list this source ({_short(exc)})") from None


def _read_listing(filesystem: Any, location: str, source: str, path_column: str) -> list[str]:
    pa = require("pyarrow", extra="ray")
    try:
        if location.lower().endswith(".csv"):
            csv = require("pyarrow.csv", extra="ray", package="pyarrow")
            with filesystem.open_input_stream(location) as f:
                table = csv.read_csv(f, convert_options=csv.ConvertOptions(column_types={path_column: pa.string()}))
        else:
            pq = require("pyarrow.parquet", extra="ray", package="pyarrow")
            table = pq.read_table(location, filesystem=filesystem)
    except Exception as exc:
        raise DataError(f"{source}: cannot read this listing ({_short(exc)})") from None
    if path_column not in table.column_names:
        raise ConfigError(f"{source}: no column {path_column!r} (columns: {', '.join(table.column_names)}); name the "
                          "column of image paths with --path-column")
    values = table.column(path_column).to_pylist()
    return [str(v) for v in values if v is not None and str(v).strip()]


def _add_listing(collector: _Collector, filesystem: Any, location: str, source: str, path_column: str) -> None:
    """A CSV or Parquet file of paths or URIs; a relative path is relative to the listing's folder."""
    here = source.rsplit("/", 1)[0] if "/" in source else "."
    for value in _read_listing(filesystem, location, source, path_column):
        if is_uri(value):
            _, loc, fs_id = resolve_uri(value, collector)
            collector.add(fs_id, loc, value)
        elif is_uri(source):
            full = value if value.startswith("/") and urlsplit(source).scheme == "file" else f"{here}/{value}"
            _, loc, fs_id = resolve_uri(full if is_uri(full) else "file://" + full, collector)
            collector.add(fs_id, loc, full)
        else:
            path = value if os.path.isabs(value) else os.path.normpath(os.path.join(here, value))
            collector.add(collector.local(), os.path.abspath(path), path)


def list_inputs(sources: Sequence[str | Path], *, path_column: str = "path") -> Inputs:
    """Expand sources into one sorted, de-duplicated list of inputs.

    A local folder or glob expands as for local ``edgecls predict`` (recursive, image extensions, links followed
    once); a file ending in .csv, .parquet or .pq is a listing whose ``path_column`` holds paths or URIs (relative
    ones are relative to the listing's folder); a URI folder (prefix) lists every image under it, a URI pattern
    (``s3://bucket/photos/**/*.jpg``) the files it matches. A named file that does not exist is kept, so it becomes
    an error row. Raises :class:`ConfigError` when nothing is found.
    """
    from edgecls.runtime.files import collect_images

    if not sources:
        raise ConfigError("no SOURCE given: name image files, folders, globs, CSV/Parquet listings or URIs")
    collector = _Collector()
    held = _HeldWarnings()  # "no images in this folder": said only when others were found (else the error says it)
    logging.getLogger("edgecls.runtime").addFilter(held)
    try:
        _collect(collector, sources, path_column, collect_images)
    finally:
        logging.getLogger("edgecls.runtime").removeFilter(held)
    inputs = collector.inputs()
    if not len(inputs):
        raise ConfigError(f"no images found in {', '.join(map(str, sources))} (extensions: "
                          f"{', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)}; listings: .csv, .parquet)")
    for record in held.records:
        logging.getLogger(record.name).handle(record)
    return inputs


class _HeldWarnings(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


def _collect(collector: _Collector, sources: Sequence[str | Path], path_column: str, collect_images: Any) -> None:
    for source in map(str, sources):
        if is_uri(source):
            _add_uri(collector, source, path_column)
        elif source.lower().endswith(LISTING_SUFFIXES) and os.path.isfile(source):
            local = collector.filesystems[collector.local()]
            _add_listing(collector, local, os.path.abspath(source), source, path_column)
        else:
            for path in collect_images([source]):
                collector.add(collector.local(), os.path.abspath(path), path)


# ---------------------------------------------------------------------------------------------------------------------
# output


@dataclass(frozen=True)
class Output:
    """Where a job's files go: ``location`` (a folder) on ``filesystem``; ``local`` when it is this machine's disk
    (files are written to a temporary name and renamed; an object store's PUT is atomic by itself)."""

    uri: str
    filesystem: Any
    location: str
    local: bool

    def path(self, name: str) -> str:
        return f"{self.location.rstrip('/')}/{name}"


def open_output(out: str | Path) -> Output:
    """Resolve ``--out``; a local folder is created. Raises :class:`ConfigError` when it cannot be a folder."""
    text = str(out)
    if is_uri(text) and urlsplit(text).scheme.lower() != "file":
        filesystem, location, _ = resolve_uri(text)
        info = _info(filesystem, location, text)
        if info.type == _fs().FileType.File:
            raise ConfigError(f"--out {text}: is a file; give a folder (prefix) for the output files")
        return Output(text, filesystem, location, local=False)
    path = Path(urlsplit(text).path if is_uri(text) else text).absolute()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {text}: is a file; give a folder for the output files")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else (exc.strerror or str(exc))
        raise ConfigError(f"--out {text}: cannot write there ({why}); give a folder you can write to") from None
    return Output(text, _fs().LocalFileSystem(), str(path), local=True)
