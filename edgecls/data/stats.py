"""Dataset statistics: label counts, cardinality, co-occurrence, suggested ``pos_weight`` and problems."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from edgecls.data._rows import _display
from edgecls.data.dataset import Dataset, Split

_MIN_POSITIVES = 5
_POS_WEIGHT_RANGE = (1.0, 100.0)


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


def label_priors(split: Split, default: float = 0.1) -> np.ndarray:
    """Each class's share of positives among its known entries (unknown/NA entries excluded); ``default`` for a class
    with no known entry. float64 ``(K,)``."""
    targets, known = split.targets(), split.known()
    pos = ((targets > 0.5) & known).sum(axis=0).astype(np.float64)
    seen = known.sum(axis=0).astype(np.float64)
    return np.divide(pos, seen, out=np.full_like(pos, default), where=seen > 0)


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
