"""How a dataset was read and split: the :class:`DataSpec` a checkpoint and a bundle carry, and the split defaults.

The spec is what it takes to load the very same splits again: the seed and fractions of the seeded split, the
``classes=`` that named or ordered the columns, and, for the record, where the data was and what it looked like.
Checkpoints and bundles made before the spec existed stored these settings as plain dicts (the training config in
the checkpoint, ``parity.json``'s ``data`` entry in the bundle); :meth:`DataSpec.from_legacy` reads both.

Only the standard library here (no numpy, no torch): the runtime and bench may use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgecls.errors import ConfigError

__all__ = ["DEFAULT_SEED", "DEFAULT_TEST_FRACTION", "DEFAULT_VAL_FRACTION", "FORMATS", "DataSpec", "check_fractions"]

DEFAULT_SEED = 0
DEFAULT_VAL_FRACTION = 0.2
DEFAULT_TEST_FRACTION = 0.1
FORMATS = ("labels", "yolo", "coco")


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Refuse split fractions that leave no training images.

    Raises:
        ConfigError: ``val_fraction`` is not in (0, 1), ``test_fraction`` not in [0, 1), or their sum reaches 1.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"test_fraction must be in [0, 1) and val_fraction + test_fraction below 1, got {test_fraction}"
        )


@dataclass(frozen=True)
class DataSpec:
    """Where a dataset came from and how it was split; loading with the same spec gives the same splits.

    Attributes:
        source: The dataset path it was read from (absolute where it was known; empty when not recorded).
        format: ``"labels"``, ``"yolo"`` or ``"coco"`` as it was read; None when not recorded (older files).
        classes: The ``classes=`` given when loading (names a header-less label file's columns, or orders the
            data's classes); None: the data's own names in its order.
        seed: Seed of the split made for datasets without their own splits.
        val_fraction: Share of ``valid`` in that split.
        test_fraction: Share of ``test`` in that split (0: no test split).
        splits: Names of the splits the dataset had (empty when not recorded).
    """

    source: str = ""
    format: str | None = None
    classes: tuple[str, ...] | None = None
    seed: int = DEFAULT_SEED
    val_fraction: float = DEFAULT_VAL_FRACTION
    test_fraction: float = DEFAULT_TEST_FRACTION
    splits: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_fractions(self.val_fraction, self.test_fraction)
        if self.format is not None and self.format not in FORMATS:
            raise ConfigError(f"unknown dataset format {self.format!r}; valid: {', '.join(FORMATS)}")
        if self.classes is not None:
            classes = tuple(str(c) for c in self.classes)
            object.__setattr__(self, "classes", classes or None)
        object.__setattr__(self, "splits", tuple(str(s) for s in self.splits))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "val_fraction", float(self.val_fraction))
        object.__setattr__(self, "test_fraction", float(self.test_fraction))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples as lists)."""
        return {
            "source": self.source,
            "format": self.format,
            "classes": None if self.classes is None else list(self.classes),
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "splits": list(self.splits),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "data spec") -> "DataSpec":
        """The spec :meth:`to_dict` wrote; missing keys take their defaults.

        Raises:
            ConfigError: Not a mapping, an unknown key (the message names the closest valid one) or a bad value.
        """
        from edgecls.config import config_from_mapping

        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping of data spec fields, got {type(data).__name__}")
        return cls(**config_from_mapping(cls, data, source=where))

    @classmethod
    def from_legacy(cls, settings: Mapping[str, Any]) -> "DataSpec":
        """The spec of a file written before :class:`DataSpec` existed.

        ``settings`` is an old checkpoint's training config (``data``, ``classes``, ``seed``, ``val_fraction``,
        ``test_fraction`` among its other keys) or an old bundle's ``parity.json`` ``data`` entry (``path``,
        ``split``, ``classes``, ``seed``, ``val_fraction``, ``test_fraction``). Other keys are ignored, and a missing
        setting takes the default it had when the file was written (the same defaults as today's).
        """
        source = settings.get("path", settings.get("data")) or ""
        classes = settings.get("classes")
        return cls(
            source=str(source),
            classes=tuple(classes) if classes else None,
            seed=int(settings.get("seed", DEFAULT_SEED)),
            val_fraction=float(settings.get("val_fraction", DEFAULT_VAL_FRACTION)),
            test_fraction=float(settings.get("test_fraction", DEFAULT_TEST_FRACTION)),
        )

    @classmethod
    def from_bundle(cls, settings: Mapping[str, Any], *, where: str = "parity.json data") -> "DataSpec":
        """The spec stored in a bundle's ``parity.json`` ``data`` entry, written by this or an older edgecls.

        An old bundle's entry (it has ``path``) goes through :meth:`from_legacy`; an empty one (no ``parity.json``)
        gives the defaults.
        """
        if "path" in settings:
            return cls.from_legacy(settings)
        return cls.from_dict(settings, where=where)
