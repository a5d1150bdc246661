"""The data model of a loaded dataset: :class:`Sample`, :class:`Split`, :class:`Dataset` and :class:`SkippedImage`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecls.data.spec import DataSpec
from edgecls.errors import DataError

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
        spec: How it was loaded (path, format, ``classes=``, seed and fractions, split names): what a checkpoint
            and a bundle store to load the same splits again (None when the dataset was built by hand).
    """

    root: Path
    format: str
    class_names: tuple[str, ...]
    splits: dict[str, Split]
    skipped: list[SkippedImage] = field(default_factory=list)
    split_source: str = "dataset"
    spec: DataSpec | None = None

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
