"""Small I/O helpers: atomic writes, JSON, hashing. Nothing already written is left half-done."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once, at import: os.umask is process-wide, so it is not toggled while threads write


def temp_prefix(name: str) -> str:
    """Prefix of the temporary files and folders written beside ``name``: ``.{name}.{pid}-`` (``tempfile`` adds
    eight random characters and a suffix such as ``.tmp`` or ``.partial``). The pid lets a later run tell the
    leftovers of a killed process (see :func:`remove_stale_temps`) from the temporaries of one still running."""
    return f".{name}.{os.getpid()}-"


_STALE_AGE_S = 24 * 3600  # where a process cannot be probed (Windows), a leftover this old counts as stale


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there; age decides instead
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def remove_stale_temps(folder: str | Path, names: Sequence[str] | None,
                       suffixes: tuple[str, ...]) -> list[Path]:
    """Remove the leftovers of a killed edgecls process in ``folder``: entries named like :func:`temp_prefix`
    makes them (``.{name}.{pid}-XXXXXXXX{suffix}``, or ``.{name}.XXXXXXXX{suffix}`` from versions before the pid)
    for one of ``names`` (any name when None) and one of ``suffixes``, whose process is no longer running.

    Only entries matching exactly that pattern are touched; the ones of a running process are kept.
    Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    name_re = "(?P<name>.+)" if names is None else "(?P<name>" + "|".join(re.escape(n) for n in names) + ")"
    suffix_re = "|".join(re.escape(s) for s in suffixes)
    pattern = re.compile(rf"^\.{name_re}\.(?:(?P<pid>\d+)-)?[a-z0-9_]{{8}}(?:{suffix_re})$")
    removed = []
    for entry in sorted(folder.iterdir()):
        match = pattern.match(entry.name)
        if match is None:
            continue
        pid = match.group("pid")
        try:
            if pid is not None and _process_alive(int(pid)):
                if os.name != "nt" or time.time() - entry.lstat().st_mtime < _STALE_AGE_S:
                    continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue  # not ours to fight over: another process may have just removed or renamed it
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; the file should get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_save(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` only when it succeeded."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(data: Any) -> str:
    """JSON text with numpy scalars/arrays and paths converted; NaN written as null."""
    return json.dumps(_nan_to_none(data), indent=2, default=_json_default, allow_nan=False) + "\n"


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    try:
        import numpy as np

        if isinstance(obj, np.ndarray):
            return _nan_to_none(obj.tolist())
        if isinstance(obj, np.floating):
            return None if np.isnan(obj) else float(obj)
    except ImportError:  # pragma: no cover - numpy is a core dependency
        pass
    return obj


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, to_json(data))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file read in ``chunk``-byte blocks into one reused buffer."""
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def user_cache_dir(*parts: str) -> Path:
    """``$EDGECLS_CACHE_DIR`` or the platform's user cache folder (XDG on Linux), with ``parts`` appended."""
    import sys

    root = os.environ.get("EDGECLS_CACHE_DIR")
    if root:
        base = Path(root)
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches" / "edgecls"
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "edgecls" / "Cache"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgecls"
    return base.joinpath(*parts)
