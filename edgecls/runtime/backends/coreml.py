"""CoreML backend (macOS): ``coremltools.models.MLModel(path).predict`` on the CPU, GPU and Neural Engine.

coremltools installs on Linux too, but only converts there; loading a model for predictions needs macOS, so on other
systems this backend reports no device and ``load`` raises :class:`UnsupportedOption`. ``device`` maps to CoreML
compute units: ``all`` (default), ``cpu``, ``gpu`` (CPU and GPU), ``ane`` (CPU and Neural Engine).

Note: ``import coremltools`` also imports torch when torch is installed (for its converters), so on a Mac used for
training as well, this backend is the one place the runtime may pull torch in; the other backends never do.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import UnsupportedOption
from edgecls.runtime.backends import RANK_COREML, Backend, BackendStatus, Candidate, as_input

NAME = "coreml"
EXTRA = "coreml"
SUFFIXES = (".mlpackage", ".mlmodel")
FORMATS = ("coreml",)

_UNITS = {"all": "ALL", "cpu": "CPU_ONLY", "gpu": "CPU_AND_GPU", "ane": "CPU_AND_NE", "cpu_and_ne": "CPU_AND_NE",
          "cpu_only": "CPU_ONLY", "cpu_and_gpu": "CPU_AND_GPU"}
_NOT_MACOS = "CoreML predictions need macOS (coremltools on {system} can only convert models)"


def probe() -> BackendStatus:
    from edgecls._deps import has

    if not has("coremltools"):
        return BackendStatus(NAME, False, reason="coremltools is not installed", extra=EXTRA)
    if sys.platform != "darwin":
        return BackendStatus(NAME, True, reason=_NOT_MACOS.format(system=sys.platform), extra=EXTRA)
    return BackendStatus(NAME, True, ("all", "cpu", "gpu", "ane"), extra=EXTRA)


def candidates(status: BackendStatus) -> list[Candidate]:
    if "all" not in status.devices:
        return []
    return [Candidate(NAME, "all", "ane", RANK_COREML, FORMATS, False, "CoreML on macOS (CPU, GPU and Neural Engine)")]


def _flexible_batch(spec: Any) -> bool:
    arr = spec.description.input[0].type.multiArrayType
    if arr.WhichOneof("ShapeFlexibility") == "shapeRange":
        batch = arr.shapeRange.sizeRanges[0]
        return batch.upperBound == -1 or batch.upperBound > 1
    if arr.WhichOneof("ShapeFlexibility") == "enumeratedShapes":
        return any(s.shape[0] != 1 for s in arr.enumeratedShapes.shapes)
    return bool(arr.shape) and arr.shape[0] != 1


class CoreMLBackend(Backend):
    name = NAME

    def __init__(self, path: Path, *, device: str | None, threads: int | None, precision: str | None) -> None:
        if sys.platform != "darwin":
            raise UnsupportedOption(_NOT_MACOS.format(system=sys.platform) + "; use onnxruntime or openvino here")
        from edgecls._deps import require

        ct = require("coremltools", extra=EXTRA)
        start = time.perf_counter()
        unit = _UNITS.get((device or "all").lower())
        if unit is None:
            raise UnsupportedOption(f"coreml: unknown device {device!r}; valid: all, cpu, gpu, ane")
        self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, unit))
        spec = self.model.get_spec()
        self.input_name = spec.description.input[0].name
        self.output_name = spec.description.output[0].name
        self._batched = _flexible_batch(spec)
        self.device = unit
        self.precision = precision or ("f16" if spec.WhichOneof("Type") == "mlProgram" else "f32")
        self.model_path = path
        self._lock = threading.Lock()
        self._version = ct.__version__
        self.load_seconds = time.perf_counter() - start

    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = as_input(batch)
        with self._lock:
            if self._batched:
                return np.asarray(self.model.predict({self.input_name: x})[self.output_name], dtype=np.float32)
            outs = [self.model.predict({self.input_name: x[i : i + 1]})[self.output_name] for i in range(len(x))]
        return np.concatenate([np.asarray(o, dtype=np.float32).reshape(1, -1) for o in outs]) if outs else \
            np.zeros((0, 0), dtype=np.float32)

    def _extra_info(self) -> dict[str, Any]:
        return {"compute_units": self.device, "batched": self._batched, "version": self._version}


def load(path: Path, *, device: str | None, threads: int | None, precision: str | None,
         mode: str = "latency") -> Backend:
    """A :class:`CoreMLBackend`; ``mode`` changes nothing (Core ML runs each batch as it comes)."""
    return CoreMLBackend(Path(path), device=device, threads=threads, precision=precision)
