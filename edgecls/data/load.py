"""Loading a dataset: :func:`load_dataset` from a path (finding its format), and :func:`load_from_spec`, the one way
to load a dataset again the way a checkpoint's training run or a bundle's export loaded it."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edgecls.data._rows import _abs, _display, _Parsed, _Row
from edgecls.data.coco import _parse_coco
from edgecls.data.dataset import SPLITS, Dataset, Sample, SkippedImage, Split
from edgecls.data.labels import LABEL_EXTENSIONS, _parse_label_files
from edgecls.data.spec import DEFAULT_SEED, DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION, DataSpec, check_fractions
from edgecls.data.split import _seeded_split
from edgecls.data.yolo import _parse_yolo
from edgecls.errors import ConfigError, DataError

log = logging.getLogger("edgecls.data")

_CLASSES_FIX = {  # what to do when the data's classes differ from the model's, by whose model it is
    "checkpoint": "evaluate on data with the same classes in the same order",
    "bundle": "pass the dataset the bundle was exported with",
}


def load_dataset(
    path: str | Path,
    *,
    classes: Sequence[str] | None = None,
    seed: int = DEFAULT_SEED,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
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
    check_fractions(val_fraction, test_fraction)
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
        spec=DataSpec(source=str(_abs(Path(path))), format=parsed.format, classes=classes, seed=seed,
                      val_fraction=val_fraction, test_fraction=test_fraction, splits=tuple(splits)),
    )


def load_from_spec(
    spec: DataSpec,
    *,
    data: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    owner: str = "checkpoint",
    strict: bool = False,
) -> Dataset:
    """Load a dataset the way ``spec`` says it was loaded: the same ``classes=``, seed and fractions, so the same
    splits. Evaluation, the export's calibration and parity check, ``edgecls parity`` and bench all load through here.

    Args:
        spec: How the data was loaded (a checkpoint's or a bundle's :class:`DataSpec`).
        data: The dataset to load; default: ``spec.source``.
        class_names: The classes the model predicts, in its order; the data must give exactly these.
        owner: Whose classes ``class_names`` are (``"checkpoint"`` or ``"bundle"``): the message says what to do.
        strict: Missing or unreadable images raise :class:`DataError` instead of being skipped.

    Raises:
        ConfigError: No ``data`` and the spec records no source.
        DataError: The data cannot be loaded, or its classes differ from ``class_names``.
    """
    path = data if data is not None else spec.source
    if not str(path):
        raise ConfigError("no dataset given and the data spec records none; pass the dataset's path")
    dataset = load_dataset(path, classes=spec.classes, seed=spec.seed, val_fraction=spec.val_fraction,
                           test_fraction=spec.test_fraction, strict=strict)
    if class_names is not None and tuple(dataset.class_names) != tuple(class_names):
        raise DataError(f"{path}: classes {list(dataset.class_names)} differ from the {owner}'s {list(class_names)}; "
                        f"{_CLASSES_FIX.get(owner, 'pass data with the same classes in the same order')}")
    return dataset


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
    if not path.is_file():  # a FIFO or a device is never opened: reading one would block or never end
        return "not a regular file; skipped" if path.exists() else "file not found"
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
