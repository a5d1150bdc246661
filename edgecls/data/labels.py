"""Label files: ``labels.csv|tsv|txt`` (or per-split ``train.*``/``valid.*``/``test.*``), one row per image.

A row is ``filename v1 ... vK`` with values ``1``, ``0`` or unknown (``NA``, ``na``, empty, ``-1``), separated by
commas, tabs or whitespace, with an optional header row of class names.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgecls.data._rows import _abs, _display, _match_classes, _Parsed, _read_text, _reorder, _Row
from edgecls.errors import DataError
from edgecls.preprocess import IMAGE_EXTENSIONS

LABEL_EXTENSIONS = (".csv", ".tsv", ".txt")
_POSITIVE = {"1"}
_NEGATIVE = {"0"}
_UNKNOWN = {"", "na", "-1"}


def _sniff_delimiter(lines: Sequence[str]) -> str | None:
    """``"\\t"``, ``","`` or None (runs of whitespace): the first that splits the first lines of a file into
    the same number (two or more) of fields; when none does, the first one present, so that the error points
    at the odd line."""
    head = lines[:20]
    present = [d for d in ("\t", ",") if any(d in line for line in head)]
    for delimiter in [*present, None]:
        counts = {len(_split_fields(line, delimiter)) for line in head}
        if len(counts) == 1 and counts.pop() >= 2:
            return delimiter
    return present[0] if present else None


def _split_fields(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return line.split()
    return [f.strip() for f in next(csv.reader([line], delimiter=delimiter))]


def _is_label_value(text: str) -> bool:
    t = text.strip().lower()
    return t in _POSITIVE or t in _NEGATIVE or t in _UNKNOWN


def _looks_like_header(fields: list[str]) -> bool:
    values = fields[1:]
    if all(_is_label_value(v) for v in values):
        return False
    # "img.jpg,1,yes" is a data row with a typo rather than a header: an image name followed by label values.
    has_image_name = Path(fields[0]).suffix.lower() in IMAGE_EXTENSIONS
    return not (has_image_name and any(_is_label_value(v) for v in values))


def _parse_label_files(folder: Path, files: dict[str | None, Path], classes: tuple[str, ...] | None) -> _Parsed:
    root = folder
    header_names: tuple[str, ...] | None = None
    header_file = ""
    num_labels: int | None = None
    count_file = ""
    raw: dict[str | None, tuple[Path, list[tuple[int, list[str]]]]] = {}
    for split, path in files.items():
        name = _display(path, root)
        lines = [
            (i, line)
            for i, line in enumerate(_read_text(path, root).splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
        if not lines:
            raise DataError(f"{name}: no samples (the label file is empty)")
        delimiter = _sniff_delimiter([line for _, line in lines])
        rows = [(i, _split_fields(line, delimiter)) for i, line in lines]
        first_line, first = rows[0]
        if len(first) < 2:
            raise DataError(
                f"{name} line {first_line}: expected a filename and at least one label, got {len(first)} field(s)"
            )
        if _looks_like_header(first):
            names = tuple(first[1:])
            for col, cname in enumerate(names, 2):
                if not cname:
                    raise DataError(f"{name} line {first_line}: empty class name in column {col} of the header")
            dupes = sorted({c for c in names if names.count(c) > 1})
            if dupes:
                raise DataError(f"{name} line {first_line}: class name(s) {', '.join(dupes)} repeated in the header")
            if header_names is not None and names != header_names:
                raise DataError(
                    f"{name} line {first_line}: header classes ({', '.join(names)}) differ from those of "
                    f"{header_file} ({', '.join(header_names)})"
                )
            if header_names is None:
                header_names, header_file = names, name
            rows = rows[1:]
            if not rows:
                raise DataError(f"{name}: no samples (only a header)")
        width = len(header_names) if header_names is not None else len(rows[0][1]) - 1
        if num_labels is not None and width != num_labels:
            raise DataError(f"{name} line {rows[0][0]}: {width} label columns, but {count_file} has {num_labels}")
        num_labels, count_file = width, name
        raw[split] = (path, rows)

    assert num_labels is not None  # at least one file was read
    if header_names is not None:
        class_names, order = _match_classes(header_names, classes, f"{header_file} line 1")
    else:
        if classes is not None and len(classes) != num_labels:
            raise DataError(
                f"{count_file} line 1: {num_labels} label columns but classes= gives {len(classes)} names "
                f"({', '.join(classes)})"
            )
        class_names = classes if classes is not None else tuple(f"attr{k + 1}" for k in range(num_labels))
        order = None
    columns = header_names or class_names

    images_dir = folder / "images"
    has_images_dir = images_dir.is_dir()
    out: dict[str | None, list[_Row]] = {}
    for split, (path, rows) in raw.items():
        name = _display(path, root)
        expected = num_labels + 1
        seen: dict[str, int] = {}
        items: list[_Row] = []
        for line_no, fields in rows:
            if len(fields) != expected:
                raise DataError(
                    f"{name} line {line_no}: expected {expected} fields (filename + {num_labels} labels), "
                    f"got {len(fields)}"
                )
            filename = fields[0]
            if not filename:
                raise DataError(f"{name} line {line_no}: empty filename")
            key = os.path.normpath(filename)
            if key in seen:
                raise DataError(f"{name} line {line_no}: duplicate filename {filename!r} (already on line {seen[key]})")
            seen[key] = line_no
            target = np.zeros(num_labels, dtype=np.float32)
            known = np.ones(num_labels, dtype=bool)
            for k, value in enumerate(fields[1:]):
                v = value.strip().lower()
                if v in _POSITIVE:
                    target[k] = 1.0
                elif v in _UNKNOWN:
                    known[k] = False
                elif v not in _NEGATIVE:
                    raise DataError(
                        f"{name} line {line_no}: unknown label value {value!r} in column {columns[k]!r}; use 1, 0 or NA"
                    )
            items.append(
                _Row(
                    _resolve_listed(filename, folder, images_dir, has_images_dir),
                    target,
                    known,
                    f"{name} line {line_no}",
                )
            )
        out[split] = items
    return _Parsed("labels", root, class_names, _reorder(out, order))


def _resolve_listed(filename: str, folder: Path, images_dir: Path, has_images_dir: bool) -> Path:
    """The image a label row names: absolute as given, else under images/ when it is there, else beside the file."""
    p = Path(os.path.expanduser(filename))
    if p.is_absolute():
        return _abs(p)
    if has_images_dir:
        candidate = _abs(images_dir / p)
        if candidate.exists():
            return candidate
    beside = _abs(folder / p)
    if beside.exists() or not has_images_dir:
        return beside
    return _abs(images_dir / p)  # missing either way: report it where the images folder says it should be
