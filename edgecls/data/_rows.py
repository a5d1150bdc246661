"""What the format readers share: parsed rows, paths for messages, text reading and matching class names."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgecls.errors import DataError


class _Row(NamedTuple):
    path: Path
    target: np.ndarray
    known: np.ndarray
    origin: str  # where it came from, for messages: "labels.csv line 4"


@dataclass
class _Parsed:
    format: str
    root: Path
    class_names: tuple[str, ...]
    rows: dict[str | None, list[_Row]]  # split name -> rows; the key None means "not split by the dataset"


def _abs(path: Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def _display(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` where possible (short messages), else as it is."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _match_classes(
    found: tuple[str, ...], classes: tuple[str, ...] | None, where: str
) -> tuple[tuple[str, ...], np.ndarray | None]:
    """Class names to use and the column order (None when unchanged) given the names the data declares."""
    if classes is None or classes == found:
        return found, None
    if len(classes) != len(found):
        raise DataError(
            f"{where}: the data has {len(found)} classes ({', '.join(found)}) but classes= gives {len(classes)} "
            f"({', '.join(classes)})"
        )
    if set(classes) != set(found):
        extra = [c for c in classes if c not in found]
        raise DataError(
            f"{where}: classes= names {', '.join(extra)} not in the data's classes ({', '.join(found)}); "
            "leave classes= out or give the same names (their order sets the class order)"
        )
    order = np.array([found.index(c) for c in classes], dtype=np.int64)
    return classes, order


def _reorder(rows: dict[str | None, list[_Row]], order: np.ndarray | None) -> dict[str | None, list[_Row]]:
    if order is None:
        return rows
    return {k: [r._replace(target=r.target[order], known=r.known[order]) for r in v] for k, v in rows.items()}


def _read_text(path: Path, root: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{_display(path, root)}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{_display(path, root)}: cannot read ({exc.strerror or exc})") from None
