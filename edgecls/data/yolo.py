"""YOLO datasets: a ``data.yaml``; class k is positive when the image has at least one box of class k."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgecls.data._rows import _abs, _display, _match_classes, _Parsed, _read_text, _reorder, _Row
from edgecls.errors import DataError
from edgecls.preprocess import IMAGE_EXTENSIONS


def _load_yaml(path: Path, root: Path) -> dict:
    import yaml

    name = _display(path, root)
    try:
        data = yaml.safe_load(_read_text(path, root))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DataError(f"{name}{where}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise DataError(f"{name}: expected a mapping with names, train and val keys, got {type(data).__name__}")
    return data


def _yolo_names(data: dict, name: str) -> tuple[str, ...]:
    names = data["names"]
    if isinstance(names, dict):
        try:
            by_index = {int(k): str(v).strip() for k, v in names.items()}
        except (TypeError, ValueError):
            raise DataError(f"{name}: 'names' keys must be class indices 0..N-1, got {list(names)}") from None
        if sorted(by_index) != list(range(len(by_index))):
            raise DataError(f"{name}: 'names' indices must be 0..{len(by_index) - 1}, got {sorted(by_index)}")
        result = tuple(by_index[i] for i in range(len(by_index)))
    elif isinstance(names, (list, tuple)):
        result = tuple(str(v).strip() for v in names)
    else:
        raise DataError(f"{name}: 'names' must be a list or an index->name mapping, got {type(names).__name__}")
    if not result or any(not n for n in result):
        raise DataError(f"{name}: 'names' must list at least one non-empty class name")
    dupes = sorted({n for n in result if result.count(n) > 1})
    if dupes:
        raise DataError(f"{name}: class name(s) {', '.join(dupes)} repeated in 'names'")
    nc = data.get("nc")
    if nc is not None and nc != len(result):
        raise DataError(f"{name}: nc is {nc} but 'names' lists {len(result)} classes")
    return result


def _list_images(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        found.extend(Path(dirpath) / f for f in sorted(filenames) if Path(f).suffix.lower() in IMAGE_EXTENSIONS)
    return [_abs(p) for p in found]


def _yolo_images(entry: object, key: str, base: Path, folder: Path, name: str) -> list[Path]:
    entries = entry if isinstance(entry, (list, tuple)) else [entry]
    images: list[Path] = []
    for item in entries:
        if not isinstance(item, str) or not item.strip():
            raise DataError(f"{name}: {key!r} must be a folder (or a list of folders), got {item!r}")
        rel = Path(os.path.expanduser(item.strip()))
        candidates = [rel] if rel.is_absolute() else [base / rel, folder / rel]
        if not rel.is_absolute() and item.strip().startswith("../"):
            # Roboflow exports write "../train/images" for a data.yaml that sits beside train/.
            candidates.append(folder / item.strip()[3:])
        target = next((_abs(c) for c in candidates if c.exists()), None)
        if target is None:
            raise DataError(f"{name}: {key} path {item!r} not found (looked in {_abs(candidates[0])})")
        if target.is_dir():
            images.extend(_list_images(target))
        else:  # a .txt list of image paths, relative to the list's folder
            for line in _read_text(target, folder).splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    p = Path(line)
                    images.append(_abs(p if p.is_absolute() else target.parent / p))
    return images


def _yolo_label_path(image: Path) -> Path:
    """Standard YOLO layout: the last ``/images/`` folder of the path becomes ``/labels/``, suffix ``.txt``."""
    text = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in text:
        head, tail = text.rsplit(sa, 1)
        text = head + sb + tail
    return Path(text).with_suffix(".txt")


def _yolo_target(label: Path, num_classes: int, root: Path) -> np.ndarray:
    target = np.zeros(num_classes, dtype=np.float32)
    if not label.is_file():
        return target
    name = _display(label, root)
    for line_no, line in enumerate(_read_text(label, root).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 5:
            raise DataError(f"{name} line {line_no}: expected 'class cx cy w h' (5 fields), got {len(fields)}")
        try:
            cls = int(fields[0])
        except ValueError:
            raise DataError(f"{name} line {line_no}: class index {fields[0]!r} is not an integer") from None
        if not 0 <= cls < num_classes:
            raise DataError(
                f"{name} line {line_no}: class index {cls} out of range; data.yaml names {num_classes} classes "
                f"(0-{num_classes - 1})"
            )
        target[cls] = 1.0
    return target


def _parse_yolo(path: Path, classes: tuple[str, ...] | None) -> _Parsed:
    folder = path.parent
    name = path.name
    data = _load_yaml(path, folder)
    missing = [k for k in ("names", "train", "val") if data.get(k) in (None, "", [])]
    if missing:
        raise DataError(
            f"{name}: missing key(s) {', '.join(missing)}; a YOLO data.yaml needs names, train and val "
            "(test is optional)"
        )
    found = _yolo_names(data, name)
    base = folder
    if data.get("path"):
        p = Path(os.path.expanduser(str(data["path"])))
        base = p if p.is_absolute() else folder / p
    rows: dict[str | None, list[_Row]] = {}
    for key, split in (("train", "train"), ("val", "valid"), ("test", "test")):
        if data.get(key) in (None, "", []):
            continue
        images = _yolo_images(data[key], key, base, folder, name)
        items = []
        for image in images:
            target = _yolo_target(_yolo_label_path(image), len(found), folder)
            items.append(_Row(image, target, np.ones(len(found), dtype=bool), f"{name} {key}"))
        rows[split] = items
    class_names, order = _match_classes(found, classes, f"{name} names")
    return _Parsed("yolo", folder, class_names, _reorder(rows, order))
