"""Score predictions against true labels: how many images are exactly right, and the accuracy per label.

``edgecls predict BUNDLE IMAGES --truth labels.csv`` uses it: :func:`read_truth` reads the label file through
:func:`edgecls.data.load_dataset` (any label file, ``data.yaml`` or COCO json it reads), in the bundle's class order,
and :func:`score_predictions` compares each prediction with its image's row. Unknown (NA) labels are left out of both
counts; an image without a row, or one that could not be read, is counted as not scored.

Only numpy and the standard library here (and the dataset reader): this runs on devices without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from edgecls.data import Sample
    from edgecls.runtime.classifier import Prediction

__all__ = ["TruthScore", "read_truth", "score_predictions"]


@dataclass(frozen=True)
class TruthScore:
    """Predictions compared with true labels.

    Attributes:
        labels_file: The label file the truth came from.
        images: Images scored (predicted, readable, and with a row in the label file).
        exact: Of those, images whose predicted labels equal the true ones on every known label.
        labels_right: Known (image, class) labels predicted right.
        labels_known: Known (image, class) labels scored.
        not_scored: Predicted images left out: no row in the label file, or unreadable.
    """

    labels_file: str
    images: int
    exact: int
    labels_right: int
    labels_known: int
    not_scored: int = 0

    @property
    def exact_match(self) -> float:
        return self.exact / self.images if self.images else float("nan")

    @property
    def label_accuracy(self) -> float:
        return self.labels_right / self.labels_known if self.labels_known else float("nan")

    def format(self) -> str:
        text = (f"against {self.labels_file}: {self.exact} of {self.images} images exactly right, label accuracy "
                f"{self.label_accuracy:.3f} ({self.labels_right}/{self.labels_known} labels)")
        if self.not_scored:
            text += f"; {self.not_scored} image(s) not scored (unreadable or not in the label file)"
        return text


def read_truth(labels_file: str | Path, class_names: Sequence[str]) -> dict[Path, "Sample"]:
    """The true labels of ``labels_file``, by resolved image path, in the order of ``class_names``.

    Raises:
        DataError: The file cannot be read, or its classes are not ``class_names`` (the message names the file).
    """
    from edgecls.data import load_dataset
    from edgecls.errors import DataError

    names = tuple(class_names)

    def load(classes: tuple[str, ...] | None) -> Any:
        try:
            return load_dataset(labels_file, classes=classes, test_fraction=0.0, verify_images=False)
        except DataError as exc:
            raise DataError(f"--truth: {exc}") from None

    dataset = load(None)
    found = tuple(dataset.class_names)
    unnamed = found == tuple(f"attr{i + 1}" for i in range(len(found)))  # a label file without a header row
    if found != names and (set(found) == set(names) or (unnamed and len(found) == len(names))):
        dataset = load(names)  # the bundle's class order (or its names for the columns of a headerless file)
    elif found != names:
        raise DataError(f"--truth {labels_file}: its classes ({', '.join(found)}) are not the bundle's "
                        f"({', '.join(names)}); give a label file with a header row of the bundle's class names")
    return {Path(s.path).resolve(): s for split in dataset.splits.values() for s in split.samples}


def score_predictions(predictions: Iterable["Prediction"], truth: Mapping[Path, "Sample"], *,
                      labels_file: str | Path = "") -> TruthScore:
    """Compare each prediction (its labels at the artifact's thresholds) with its image's row in ``truth``."""
    images = exact = right = known_total = not_scored = 0
    for pred in predictions:
        sample = truth.get(Path(pred.source).resolve()) if pred.ok else None
        if sample is None:
            not_scored += 1
            continue
        names = pred.class_names
        predicted = np.array([name in pred.labels for name in names], dtype=bool)
        target = np.asarray(sample.target) > 0.5
        known = np.asarray(sample.known, dtype=bool)
        agree = (predicted == target) & known
        images += 1
        exact += bool(agree.sum() == known.sum())
        right += int(agree.sum())
        known_total += int(known.sum())
    return TruthScore(str(labels_file), images, exact, right, known_total, not_scored)
