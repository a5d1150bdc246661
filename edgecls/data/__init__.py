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

Datasets without their own splits get a seeded iterative-stratification split (Sechidis et al., 2011). How a
dataset was loaded is a :class:`DataSpec` (checkpoints and bundles store it), and :func:`load_from_spec` loads the
same splits again from it. Everything here is numpy, OpenCV and the standard library; no torch.

Modules: ``dataset`` (the data model), ``spec`` (:class:`DataSpec` and the split defaults), ``load`` (finding the
format, image checks, :func:`load_dataset`, :func:`load_from_spec`), ``labels``, ``yolo`` and ``coco`` (the format
readers), ``split`` (iterative stratification), ``stats`` (``edgecls data inspect``).
"""

from edgecls.data.dataset import SPLITS, Dataset, Sample, SkippedImage, Split
from edgecls.data.load import load_dataset, load_from_spec
from edgecls.data.spec import DEFAULT_SEED, DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION, DataSpec
from edgecls.data.split import iterative_stratification
from edgecls.data.stats import ClassStats, DatasetStats, format_stats, inspect_dataset, label_priors, pos_weight_from
from edgecls.preprocess import IMAGE_EXTENSIONS

__all__ = [
    "DEFAULT_SEED",
    "DEFAULT_TEST_FRACTION",
    "DEFAULT_VAL_FRACTION",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "ClassStats",
    "DataSpec",
    "Dataset",
    "DatasetStats",
    "Sample",
    "SkippedImage",
    "Split",
    "format_stats",
    "inspect_dataset",
    "iterative_stratification",
    "label_priors",
    "load_dataset",
    "load_from_spec",
    "pos_weight_from",
]
