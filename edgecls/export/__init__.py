"""Export a checkpoint to deployable artifacts with proven parity, as one self-describing bundle.

``export(ExportConfig(...))`` writes ONNX, INT8 ONNX, OpenVINO, CoreML and TensorRT artifacts (see
:func:`list_targets`), runs each one that can run here through its runtime backend on the validation split, compares
it with PyTorch (:func:`check_parity`), re-tunes its thresholds, and writes ``manifest.json``, ``parity.json`` and a
model card beside them. ``check_bundle`` re-runs the parity check on any machine from the bundle alone (no torch).

Modules: ``config`` (:class:`ExportConfig`, :class:`ExportResult`), ``build`` (:func:`export`), ``check``
(:func:`check_bundle`), ``context`` (``ExportContext``: what every target's build receives), ``writer`` (the bundle
written atomically, its model card), ``parity`` (budgets and :func:`check_parity`), ``targets/`` (one file per target
family). The bundle's layout and data files are :mod:`edgecls.bundle`'s.

Importing this package is cheap: torch, onnx, openvino, coremltools and tensorrt are imported where they are used.
"""

from edgecls.export.build import export
from edgecls.export.check import BundleCheck, check_bundle
from edgecls.export.config import ExportConfig, ExportResult
from edgecls.export.parity import Budgets, ParityReport, check_parity
from edgecls.export.targets import Target, list_targets

__all__ = [
    "BundleCheck",
    "Budgets",
    "ExportConfig",
    "ExportResult",
    "ParityReport",
    "Target",
    "check_bundle",
    "check_parity",
    "export",
    "list_targets",
]
