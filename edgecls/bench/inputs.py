"""The images the rows are timed and scored on, with their labels: a split of the bundle's dataset, loaded the way
the bundle's export loaded it and preprocessed as the bundle's manifest says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, DataError


def load_eval_data(root: Path, manifest: Any, data: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Preprocessed images, targets and known-masks of ``split``, loaded the way the bundle's export loaded its data."""
    from edgecls.bundle import read_parity
    from edgecls.data import DataSpec, load_from_spec
    from edgecls.preprocess import preprocess_paths

    try:
        settings = read_parity(root).get("data", {})
    except ConfigError:
        settings = {}
    dataset = load_from_spec(DataSpec.from_bundle(settings), data=data, class_names=manifest.class_names,
                             owner="bundle")
    part = dataset.split(split)
    if not part.samples:
        raise DataError(f"{data}: the {split!r} split has no readable images; pick another with --split")
    images = preprocess_paths([s.path for s in part.samples], manifest.preprocess, what="the benchmark")
    targets = np.stack([s.target for s in part.samples]).astype(np.float32)
    known = np.stack([s.known for s in part.samples]).astype(bool)
    return images, targets, known, len(dataset.skipped)
