"""Multi-label datasets: label files, YOLO and COCO layouts, seeded splits, image checks and statistics.

:func:`load_dataset` turns a path into a :class:`Dataset` of splits (``train``, ``valid``, ``test``) holding
:class:`Sample` rows: an absolute image path, a 0/1 target per class and a mask of which labels are known.
Supported inputs:

* **Label files**: ``labels.csv|tsv|txt`` (or any such file given directly), one row per image,
  ``filename v1 ... vK`` with values ``1``, ``0`` or unknown (``NA``, ``na``, empty, ``-1``), separated by commas,
  tabs or whitespace, with an optional header row of class names. A folder holding ``train.*``, ``valid.*``
  (or ``val.*``) and ``test.*`` label files gives its own splits.
* **YOLO**: a ``data.yaml`` (or its folder); class k is positive when the image has at least one box of class k.
* **COCO**: an instances ``.json``; class k is positive when the image has at least one annotation of category k.

Datasets without their own splits get a seeded iterative-stratification split (Sechidis et al., 2011).
Everything here is numpy, OpenCV and the standard library; no torch.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgecls.errors import ConfigError, DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ClassStats",
    "Dataset",
    "DatasetStats",
    "Sample",
    "SkippedImage",
    "Split",
    "format_stats",
    "inspect_dataset",
    "iterative_stratification",
    "load_dataset",
    "pos_weight_from",
]

log = logging.getLogger("edgecls.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
LABEL_EXTENSIONS = (".csv", ".tsv", ".txt")
SPLITS = ("train", "valid", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "test": "test",
    "testing": "test",
}
_POSITIVE = {"1"}
_NEGATIVE = {"0"}
_UNKNOWN = {"", "na", "-1"}
_MIN_POSITIVES = 5
_POS_WEIGHT_RANGE = (1.0, 100.0)


# ----------------------------------------------------------------------------------------------------------------
# public data model


@dataclass(frozen=True, eq=False)
class Sample:
    """One image and its labels.

    Attributes:
        path: Absolute image path.
        target: float32 ``(K,)``: 1.0 positive, 0.0 negative (also 0.0 where the label is unknown).
        known: bool ``(K,)``: False where the label is unknown (NA).
    """

    path: Path
    target: np.ndarray
    known: np.ndarray


@dataclass
class Split:
    """The samples of one split (``train``, ``valid`` or ``test``)."""

    name: str
    class_names: tuple[str, ...]
    samples: list[Sample]

    def __len__(self) -> int:
        return len(self.samples)

    def targets(self) -> np.ndarray:
        """``(N, K)`` float32 targets (0.0 where unknown)."""
        if not self.samples:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        return np.stack([s.target for s in self.samples]).astype(np.float32, copy=False)

    def known(self) -> np.ndarray:
        """``(N, K)`` bool mask of known labels."""
        if not self.samples:
            return np.zeros((0, len(self.class_names)), dtype=bool)
        return np.stack([s.known for s in self.samples]).astype(bool, copy=False)

    def paths(self) -> list[Path]:
        return [s.path for s in self.samples]


@dataclass(frozen=True)
class SkippedImage:
    """An image left out because it is missing or cannot be decoded."""

    path: Path
    reason: str


@dataclass
class Dataset:
    """A loaded dataset.

    Attributes:
        root: Absolute folder the dataset was read from (the folder of its label file, data.yaml or json).
        format: ``"labels"``, ``"yolo"`` or ``"coco"``.
        class_names: Ordered class names; targets follow this order.
        splits: ``"train"``, ``"valid"`` and (when present) ``"test"``.
        skipped: Images left out because they are missing or unreadable.
        split_source: ``"dataset"`` when the dataset defines its own splits, ``"seeded"`` when we made them.
    """

    root: Path
    format: str
    class_names: tuple[str, ...]
    splits: dict[str, Split]
    skipped: list[SkippedImage] = field(default_factory=list)
    split_source: str = "dataset"

    def split(self, name: str) -> Split:
        """The split called ``name``; ``val`` and ``validation`` mean ``valid``.

        Raises:
            DataError: The dataset has no such split; the message lists the available ones.
        """
        key = _SPLIT_ALIASES.get(name.strip().lower(), name)
        if key not in self.splits:
            available = ", ".join(self.splits) or "none"
            raise DataError(f"{self.root}: no {name!r} split in this dataset; available: {available}")
        return self.splits[key]


# ----------------------------------------------------------------------------------------------------------------
# loading


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


def load_dataset(
    path: str | Path,
    *,
    classes: Sequence[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.1,
    strict: bool = False,
    verify_images: bool = True,
) -> Dataset:
    """Read a label file, YOLO ``data.yaml`` or COCO json (or a folder holding one) into a :class:`Dataset`.

    Args:
        path: A label file (``.csv``, ``.tsv``, ``.txt``), a ``data.yaml``, a COCO ``.json``, or a folder holding
            ``labels.*``, per-split ``train.*``/``valid.*``/``test.*`` label files, a ``data.yaml`` or one ``.json``.
        classes: Class names. Needed to name the columns of a label file without a header (else ``attr1..attrK``);
            with a header, data.yaml or json they must be the same names, and their order sets the class order.
        seed: Seed of the split made for datasets without their own splits.
        val_fraction: Fraction of images for ``valid`` in a seeded split.
        test_fraction: Fraction for ``test`` in a seeded split; 0 gives no test split.
        strict: Missing or unreadable images raise :class:`DataError` instead of being skipped.
        verify_images: Decode every image to find corrupt files (in threads); False only checks that files exist.

    Returns:
        The dataset; images that were skipped are listed in ``Dataset.skipped``.

    Raises:
        DataError: The path or its content cannot be used; the message names the file (and line).
        ConfigError: The fractions or ``classes`` are invalid.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"test_fraction must be in [0, 1) and val_fraction + test_fraction below 1, got {test_fraction}"
        )
    if classes is not None:
        classes = tuple(str(c).strip() for c in classes)
        if not classes or any(not c for c in classes) or len(set(classes)) != len(classes):
            raise ConfigError(f"classes must be distinct, non-empty names, got {list(classes)}")

    parsed = _parse(Path(path), classes)
    _check_duplicates(parsed)
    total = sum(len(rows) for rows in parsed.rows.values())
    if total == 0:
        raise DataError(f"{path}: the dataset holds no images")

    rows, skipped = _check_images(parsed, strict=strict, decode=verify_images)
    if not any(rows.values()):
        raise DataError(
            f"{path}: none of the {total} images can be used (all missing or unreadable, e.g. {skipped[0].path})"
        )

    if None in rows:
        keep = rows[None]
        assign = _seeded_split(keep, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
        by_split = {name: [r for r, a in zip(keep, assign) if a == i] for i, name in enumerate(SPLITS)}
        by_split = {k: v for k, v in by_split.items() if v or k == "train"}
        split_source = "seeded"
    else:
        by_split = {name: rows[name] for name in SPLITS if name in rows}
        split_source = "dataset"

    splits = {
        name: Split(name, parsed.class_names, [Sample(r.path, r.target, r.known) for r in items])
        for name, items in by_split.items()
    }
    return Dataset(
        root=parsed.root,
        format=parsed.format,
        class_names=parsed.class_names,
        splits=splits,
        skipped=skipped,
        split_source=split_source,
    )


def _abs(path: Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def _display(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` where possible (short messages), else as it is."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _parse(path: Path, classes: tuple[str, ...] | None) -> _Parsed:
    given = path
    path = _abs(path)
    if not path.exists():
        raise DataError(f"{given}: no such file or folder")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in LABEL_EXTENSIONS:
            return _parse_label_files(path.parent, {None: path}, classes)
        if suffix in (".yaml", ".yml"):
            return _parse_yolo(path, classes)
        if suffix == ".json":
            return _parse_coco(path, classes)
        raise DataError(
            f"{given}: unsupported dataset file type {path.suffix!r}; "
            "use a .csv/.tsv/.txt label file, a YOLO data.yaml or a COCO .json file"
        )
    return _parse_folder(path, given, classes)


def _parse_folder(folder: Path, given: Path, classes: tuple[str, ...] | None) -> _Parsed:
    for name in ("data.yaml", "data.yml"):
        if (folder / name).is_file():
            return _parse_yolo(folder / name, classes)

    def files_named(stem: str) -> list[Path]:
        return [folder / f"{stem}{ext}" for ext in LABEL_EXTENSIONS if (folder / f"{stem}{ext}").is_file()]

    labels = files_named("labels")
    if len(labels) > 1:
        raise DataError(
            f"{given}: several label files ({', '.join(p.name for p in labels)}); keep one or pass its path"
        )
    if labels:
        return _parse_label_files(folder, {None: labels[0]}, classes)

    per_split: dict[str | None, Path] = {}
    for split, stems in (("train", ("train",)), ("valid", ("valid", "val")), ("test", ("test",))):
        found = [p for stem in stems for p in files_named(stem)]
        if len(found) > 1:
            raise DataError(f"{given}: several {split} label files ({', '.join(p.name for p in found)}); keep one")
        if found:
            per_split[split] = found[0]
    if per_split:
        if "train" not in per_split:
            raise DataError(
                f"{given}: per-split label files {', '.join(p.name for p in per_split.values())} but no train.csv "
                "(or .tsv/.txt)"
            )
        if len(per_split) == 1:  # only train.*: treat it as one label file and make our own split
            return _parse_label_files(folder, {None: per_split["train"]}, classes)
        return _parse_label_files(folder, per_split, classes)

    jsons = sorted(p for p in folder.glob("*.json") if p.is_file())
    if len(jsons) == 1:
        return _parse_coco(jsons[0], classes)
    hint = f" (found several .json files: {', '.join(p.name for p in jsons)}; pass one)" if jsons else ""
    raise DataError(
        f"{given}: no dataset found; expected labels.csv/.tsv/.txt, train/valid/test label files, "
        f"a YOLO data.yaml or a COCO .json file{hint}"
    )


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


# ---- label files


def _read_text(path: Path, root: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{_display(path, root)}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{_display(path, root)}: cannot read ({exc.strerror or exc})") from None


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


# ---- YOLO


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


# ---- COCO


def _parse_coco(path: Path, classes: tuple[str, ...] | None) -> _Parsed:
    folder = path.parent
    name = path.name
    try:
        data = json.loads(_read_text(path, folder))
    except json.JSONDecodeError as exc:
        raise DataError(f"{name} line {exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    if not isinstance(data, dict):
        raise DataError(f"{name}: expected a COCO instances object with images, annotations and categories")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise DataError(f"{name}: missing COCO key(s) {', '.join(missing)} (each a list)")

    try:
        categories = sorted(((int(c["id"]), str(c["name"]).strip()) for c in data["categories"]), key=lambda c: c[0])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{name}: every category needs an integer 'id' and a 'name' ({exc!r})") from None
    ids = [c[0] for c in categories]
    if len(set(ids)) != len(ids):
        raise DataError(f"{name}: category ids repeat ({sorted({i for i in ids if ids.count(i) > 1})})")
    found = tuple(c[1] for c in categories)
    dupes = sorted({n for n in found if found.count(n) > 1})
    if not found or dupes or any(not n for n in found):
        raise DataError(f"{name}: categories need distinct non-empty names (repeated: {', '.join(dupes) or '-'})")
    column = {cid: k for k, cid in enumerate(ids)}

    images_dir = folder / "images"
    image_index: dict[int, int] = {}
    entries: list[tuple[str, Path]] = []
    for n, img in enumerate(data["images"]):
        try:
            iid, file_name = int(img["id"]), str(img["file_name"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{name}: images[{n}] needs an integer 'id' and a 'file_name'") from None
        if iid in image_index:
            raise DataError(f"{name}: images[{n}] repeats image id {iid} (first at images[{image_index[iid]}])")
        image_index[iid] = n
        entries.append((file_name, _resolve_coco(file_name, folder, images_dir)))

    targets = np.zeros((len(entries), len(found)), dtype=np.float32)
    for n, ann in enumerate(data["annotations"]):
        try:
            iid, cid = int(ann["image_id"]), int(ann["category_id"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{name}: annotations[{n}] needs integer 'image_id' and 'category_id'") from None
        if iid not in image_index:
            raise DataError(f"{name}: annotations[{n}] refers to image_id {iid}, which is not in images")
        if cid not in column:
            raise DataError(
                f"{name}: annotations[{n}] has category_id {cid}, which is not in categories "
                f"({', '.join(map(str, ids))})"
            )
        targets[image_index[iid], column[cid]] = 1.0

    known = np.ones(len(found), dtype=bool)
    items = [
        _Row(p, targets[n].copy(), known.copy(), f"{name} images[{n}] ({file_name})")
        for n, (file_name, p) in enumerate(entries)
    ]
    class_names, order = _match_classes(found, classes, f"{name} categories")
    return _Parsed("coco", folder, class_names, _reorder({None: items}, order))


def _resolve_coco(file_name: str, folder: Path, images_dir: Path) -> Path:
    p = Path(os.path.expanduser(file_name))
    if p.is_absolute():
        return _abs(p)
    candidates = [images_dir / p, folder / p, p]
    for c in candidates:
        if c.exists():
            return _abs(c)
    return _abs(images_dir / p if images_dir.is_dir() else folder / p)


# ---- checks


def _check_duplicates(parsed: _Parsed) -> None:
    seen: dict[Path, str] = {}
    for rows in parsed.rows.values():
        for row in rows:
            if row.path in seen:
                raise DataError(
                    f"{row.origin}: image {_display(row.path, parsed.root)} is listed twice (also at {seen[row.path]})"
                )
            seen[row.path] = row.origin


def _image_problem(path: Path, decode: bool) -> str | None:
    if not path.is_file():
        return "file not found"
    if decode:
        from edgecls.preprocess import decode_image

        try:
            decode_image(path, name="image")
        except DataError as exc:
            return str(exc).removeprefix("image: ")
    return None


def _check_images(
    parsed: _Parsed, *, strict: bool, decode: bool
) -> tuple[dict[str | None, list[_Row]], list[SkippedImage]]:
    all_rows = [row for rows in parsed.rows.values() for row in rows]
    paths = [row.path for row in all_rows]
    workers = min(32, (os.cpu_count() or 1) + 4)
    if decode and len(paths) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            problems = list(pool.map(lambda p: _image_problem(p, True), paths, chunksize=16))
    else:
        problems = [_image_problem(p, decode) for p in paths]
    bad = {p: reason for p, reason in zip(paths, problems) if reason is not None}
    skipped = [SkippedImage(p, bad[p]) for p in paths if p in bad]
    if skipped and strict:
        shown = "; ".join(f"{_display(s.path, parsed.root)} ({s.reason})" for s in skipped[:5])
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        raise DataError(
            f"{parsed.root}: {len(skipped)} image(s) missing or unreadable: {shown}{more} "
            "(fix them, or drop strict to skip them)"
        )
    if skipped:
        shown = ", ".join(_display(s.path, parsed.root) for s in skipped[:3])
        more = ", ..." if len(skipped) > 3 else ""
        log.warning(
            "skipped %d of %d images that are missing or unreadable: %s%s", len(skipped), len(paths), shown, more
        )
    rows = {k: [r for r in v if r.path not in bad] for k, v in parsed.rows.items()}
    return rows, skipped


# ----------------------------------------------------------------------------------------------------------------
# seeded split


def _seeded_split(rows: Sequence[_Row], *, seed: int, val_fraction: float, test_fraction: float) -> np.ndarray:
    """Split index per row (0 train, 1 valid, 2 test) by iterative stratification."""
    positives = np.stack([r.target > 0.5 for r in rows]) & np.stack([r.known for r in rows])
    fractions = [1.0 - val_fraction - test_fraction, val_fraction, test_fraction]
    return iterative_stratification(positives, fractions, seed=seed)


def iterative_stratification(labels: np.ndarray, fractions: Sequence[float], *, seed: int = 0) -> np.ndarray:
    """Assign each row of a multi-label matrix to a subset, keeping each label's share close to ``fractions``.

    Iterative stratification (Sechidis, Tsoumakas and Vlahavas, 2011): labels are handled from the rarest, each
    example going to the subset that most lacks that label (ties: the subset that most lacks examples, then
    random). Afterwards every label with at least two positives is made present in subsets 0 and 1 (train and
    valid), and subsets with a non-zero fraction are made non-empty where there are enough rows.

    Args:
        labels: ``(N, K)`` bool, True where the label is positive.
        fractions: Share of each subset; they should sum to 1.
        seed: Seed of ``numpy.random.default_rng`` for the order and the ties.

    Returns:
        ``(N,)`` int64 subset index per row.
    """
    y = np.asarray(labels, dtype=bool)
    n = y.shape[0]
    rng = np.random.default_rng(seed)
    r = np.asarray(fractions, dtype=np.float64)
    desired = r * n
    label_desired = np.outer(r, y.sum(axis=0)).astype(np.float64)
    assign = np.full(n, -1, dtype=np.int64)
    order = rng.permutation(n)
    remaining = np.ones(n, dtype=bool)

    def pick(scores: np.ndarray, tie: np.ndarray) -> int:
        best = np.flatnonzero(scores == scores.max())
        if len(best) > 1:
            t = tie[best]
            best = best[t == t.max()]
        return int(best[rng.integers(len(best))]) if len(best) > 1 else int(best[0])

    while True:
        counts = y[remaining].sum(axis=0)
        labelled = np.flatnonzero(counts > 0)
        if not len(labelled):
            break
        rarest = labelled[counts[labelled] == counts[labelled].min()]
        label = int(rarest[rng.integers(len(rarest))]) if len(rarest) > 1 else int(rarest[0])
        for i in order[remaining[order] & y[order, label]]:
            s = pick(label_desired[:, label], desired)
            assign[i] = s
            remaining[i] = False
            label_desired[s, y[i]] -= 1
            desired[s] -= 1
    for i in order[remaining[order]]:
        s = pick(desired, desired)
        assign[i] = s
        desired[s] -= 1

    _ensure_train_valid(y, assign, rng)
    for s in range(1, len(r)):
        if r[s] > 0 and not (assign == s).any() and (assign == 0).sum() >= 2:
            donors = np.flatnonzero(assign == 0)
            assign[_least_damaging(y, assign, donors, rng)] = s
    return assign


def _damage(y: np.ndarray, assign: np.ndarray, i: int, required: np.ndarray) -> int:
    """How many required labels would lose their last positive in row ``i``'s subset if it moved (train/valid)."""
    src = assign[i]
    if src not in (0, 1):
        return 0
    counts = y[assign == src].sum(axis=0)
    return int(np.sum(y[i] & (counts == 1) & required))


def _least_damaging(y: np.ndarray, assign: np.ndarray, donors: np.ndarray, rng: np.random.Generator) -> int:
    required = y.sum(axis=0) >= 2
    best, best_key = -1, None
    for i in rng.permutation(donors)[:256]:  # a random sample of candidates is plenty and keeps this O(N)
        key = (_damage(y, assign, int(i), required), 0 if assign[i] == 2 else 1, int(y[i].sum()))
        if best_key is None or key < best_key:
            best, best_key = int(i), key
    return best


def _ensure_train_valid(y: np.ndarray, assign: np.ndarray, rng: np.random.Generator) -> None:
    required = np.flatnonzero(y.sum(axis=0) >= 2)
    for _ in range(4 * len(required) + 4):
        changed = False
        for c in required:
            for target in (0, 1):
                if y[assign == target, c].any():
                    continue
                donors = np.flatnonzero(y[:, c] & (assign != target))
                assign[_least_damaging(y, assign, donors, rng)] = target
                changed = True
        if not changed:
            return


# ----------------------------------------------------------------------------------------------------------------
# statistics


@dataclass(frozen=True)
class ClassStats:
    """Label counts of one class: positives, known negatives and unknown (NA) labels."""

    name: str
    positives: int
    negatives: int
    unknown: int


@dataclass(frozen=True)
class DatasetStats:
    """What ``edgecls data inspect`` reports.

    Attributes:
        format: Dataset format.
        num_images: Images over all splits (skipped ones excluded).
        split_sizes: Images per split.
        classes: Per-class counts over all splits.
        per_split: Per-class counts of each split.
        cardinality: Number of positive labels per image -> number of images.
        top_pairs: The (up to) 10 most frequent pairs of classes positive on the same image, with their count.
        pos_weight: Suggested BCE ``pos_weight`` per class from the train split (negatives / positives in
            [1, 100]; 1.0 without positives).
        problems: Things to look at before training.
        root: The dataset folder.
        split_source: ``"dataset"`` or ``"seeded"``.
        skipped: Number of images skipped as missing or unreadable.
    """

    format: str
    num_images: int
    split_sizes: dict[str, int]
    classes: tuple[ClassStats, ...]
    per_split: dict[str, tuple[ClassStats, ...]]
    cardinality: dict[int, int]
    top_pairs: tuple[tuple[str, str, int], ...]
    pos_weight: tuple[float, ...]
    problems: tuple[str, ...]
    root: str = ""
    split_source: str = "dataset"
    skipped: int = 0


def _class_stats(names: Sequence[str], targets: np.ndarray, known: np.ndarray) -> tuple[ClassStats, ...]:
    pos = ((targets > 0.5) & known).sum(axis=0)
    neg = ((targets <= 0.5) & known).sum(axis=0)
    unk = (~known).sum(axis=0)
    return tuple(ClassStats(n, int(p), int(q), int(u)) for n, p, q, u in zip(names, pos, neg, unk))


def pos_weight_from(split: Split) -> np.ndarray:
    """Suggested BCE ``pos_weight`` per class: known negatives / positives, clipped to [1, 100]; 1.0 without positives.

    Returns:
        float32 ``(K,)``.
    """
    targets, known = split.targets(), split.known()
    pos = ((targets > 0.5) & known).sum(axis=0).astype(np.float64)
    neg = ((targets <= 0.5) & known).sum(axis=0).astype(np.float64)
    ratio = np.divide(neg, pos, out=np.ones_like(pos), where=pos > 0)
    return np.clip(ratio, *_POS_WEIGHT_RANGE).astype(np.float32)


def inspect_dataset(ds: Dataset) -> DatasetStats:
    """Counts, label cardinality, co-occurrence, suggested ``pos_weight`` and problems of a loaded dataset."""
    names = ds.class_names
    splits = list(ds.splits.values())
    k = len(names)
    targets = np.concatenate([s.targets() for s in splits]) if splits else np.zeros((0, k), np.float32)
    known = np.concatenate([s.known() for s in splits]) if splits else np.zeros((0, k), bool)
    positive = (targets > 0.5) & known

    overall = _class_stats(names, targets, known)
    per_split = {s.name: _class_stats(names, s.targets(), s.known()) for s in splits}
    per_image = positive.sum(axis=1)
    values, counts = np.unique(per_image, return_counts=True)
    cardinality = {int(v): int(c) for v, c in zip(values, counts)}

    co = positive.T.astype(np.int64) @ positive.astype(np.int64)
    pairs = [(names[a], names[b], int(co[a, b])) for a in range(k) for b in range(a + 1, k) if co[a, b] > 0]
    pairs.sort(key=lambda p: -p[2])  # stable: ties keep class order
    train = ds.splits.get("train")
    pos_weight = tuple(float(w) for w in pos_weight_from(train)) if train is not None else (1.0,) * k

    problems: list[str] = []
    for s in splits:
        if len(s) == 0:
            problems.append(f"split {s.name!r} has no images")
    for c, stats in enumerate(overall):
        if stats.positives == 0:
            problems.append(f"class {stats.name!r} has no positives in any split")
            continue
        for split_name in ("train", "valid"):
            if split_name in per_split and per_split[split_name][c].positives == 0:
                problems.append(f"class {stats.name!r} has no positives in {split_name}")
        if stats.positives < _MIN_POSITIVES:
            problems.append(f"class {stats.name!r} has only {stats.positives} positive image(s) (fewer than 5)")
        if stats.negatives == 0:
            problems.append(f"class {stats.name!r} has no negatives (positive or unknown on every image)")
    empty = int(np.sum((per_image == 0) & known.any(axis=1)))
    if empty:
        problems.append(f"{empty} image(s) have no positive label")
    all_unknown = int(np.sum(~known.any(axis=1))) if k else 0
    if all_unknown:
        problems.append(f"{all_unknown} image(s) have every label unknown (they add nothing to training)")
    if ds.skipped:
        first = _display(ds.skipped[0].path, ds.root)
        problems.append(f"{len(ds.skipped)} image(s) skipped as missing or unreadable (e.g. {first})")

    return DatasetStats(
        format=ds.format,
        num_images=len(targets),
        split_sizes={s.name: len(s) for s in splits},
        classes=overall,
        per_split=per_split,
        cardinality=cardinality,
        top_pairs=tuple(pairs[:10]),
        pos_weight=pos_weight,
        problems=tuple(problems),
        root=str(ds.root),
        split_source=ds.split_source,
        skipped=len(ds.skipped),
    )


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    rows = [list(header)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_stats(stats: DatasetStats) -> str:
    """A multi-line text report of :func:`inspect_dataset` (what ``edgecls data inspect`` prints)."""
    sizes = ", ".join(f"{name} {n}" for name, n in stats.split_sizes.items())
    source = "the dataset's own splits" if stats.split_source == "dataset" else "seeded split"
    lines = []
    if stats.root:
        lines.append(f"dataset: {stats.root}")
    lines.append(f"format: {stats.format}, {len(stats.classes)} classes, {stats.num_images} images ({sizes}; {source})")
    if stats.skipped:
        lines.append(f"skipped: {stats.skipped} missing or unreadable image(s)")
    lines.append("")
    split_names = list(stats.per_split)
    header = ["class", "positives", "negatives", "unknown"] + [f"{s} +" for s in split_names] + ["pos_weight"]
    body = []
    for c, cs in enumerate(stats.classes):
        row = [cs.name, str(cs.positives), str(cs.negatives), str(cs.unknown)]
        row += [str(stats.per_split[s][c].positives) for s in split_names]
        row.append(f"{stats.pos_weight[c]:.2f}")
        body.append(row)
    lines += _table(header, body)
    lines.append("")
    card = ", ".join(f"{k}: {v}" for k, v in sorted(stats.cardinality.items()))
    lines.append(f"positive labels per image (labels: images): {card or '-'}")
    if stats.top_pairs:
        lines.append("most frequent pairs: " + ", ".join(f"{a}+{b} {n}" for a, b, n in stats.top_pairs))
    else:
        lines.append("most frequent pairs: none (no image has two positive classes)")
    lines.append("")
    if stats.problems:
        lines.append(f"problems ({len(stats.problems)}):")
        lines += [f"  - {p}" for p in stats.problems]
    else:
        lines.append("problems: none found")
    return "\n".join(lines)
