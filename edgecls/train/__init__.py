"""Training: backbones, the fit loop, checkpoints and evaluation (needs the `train` extra).

Public names are loaded on first use, so importing one submodule does not pull in the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "TrainConfig": "config", "Evaluation": "evaluate",
    "FitResult": "loop", "fit": "loop", "resume": "loop", "format_report": "_report", "is_run_folder": "run_folder",
    "QATResult": "qat", "quantization_aware_finetune": "qat",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgecls.train' has no attribute {name!r}")
    from edgecls._deps import require

    require("torch", extra="train")
    return getattr(importlib.import_module(f"edgecls.train.{_EXPORTS[name]}"), name)
