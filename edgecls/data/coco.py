"""COCO datasets: an instances ``.json``; class k is positive when the image has at least one annotation of it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from edgecls.data._rows import _abs, _match_classes, _Parsed, _read_text, _reorder, _Row
from edgecls.errors import DataError


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
