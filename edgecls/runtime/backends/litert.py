"""LiteRT (TensorFlow Lite) backend: ``ai-edge-litert``'s interpreter with its default XNNPACK delegate, on the CPU.

No torch and no TensorFlow: the ``ai-edge-litert`` wheel alone (x86_64, aarch64 Linux and macOS wheels on PyPI).
A ``.tflite`` artifact takes the same float32 NCHW input and returns the same logits as every other artifact (the
exporter converts the PyTorch model with its NCHW signature; a full-integer model either quantizes its input and
dequantizes its output inside the graph, or takes and gives int8 with a scale, which this backend applies). The
interpreter's input is resized to each batch's size (LiteRT models have fixed shapes; XNNPACK re-plans on resize),
and a model whose shape cannot change runs the batch one image at a time.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, UnsupportedOption
from edgecls.runtime.backends import (
    RANK_LITERT_CPU,
    Backend,
    BackendStatus,
    Candidate,
    as_input,
    cpu_int8_support,
    one_line,
)

NAME = "litert"
EXTRA = "litert"
SUFFIXES = (".tflite",)
FORMATS = ("litert",)

log = logging.getLogger("edgecls.runtime")


def _interpreter_module() -> Any:
    from edgecls._deps import require

    return require("ai_edge_litert.interpreter", extra=EXTRA, package="ai-edge-litert")


def probe() -> BackendStatus:
    from edgecls._deps import has

    if not has("ai_edge_litert"):
        return BackendStatus(NAME, False, reason="ai-edge-litert is not installed", extra=EXTRA)
    import importlib.metadata

    try:
        version = importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return BackendStatus(NAME, True, ("cpu",), version=version, extra=EXTRA)


def candidates(status: BackendStatus) -> list[Candidate]:
    if "cpu" not in status.devices:
        return []
    fast, why = cpu_int8_support()
    return [Candidate(NAME, "cpu", "cpu", RANK_LITERT_CPU, FORMATS, fast, f"LiteRT with XNNPACK on the CPU ({why})")]


def _check_file(path: Path) -> None:
    """A ConfigError for a file that is not a LiteRT flatbuffer (its identifier ``TFL3`` sits at bytes 4-8)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise ConfigError(f"{path}: not a LiteRT (.tflite) model (no TFL3 flatbuffer identifier), so litert cannot "
                          "load it; the file is damaged or is not a model: re-export the bundle")


def _quantized(details: list[dict[str, Any]]) -> bool:
    return any(np.dtype(d["dtype"]) in (np.int8, np.uint8) and d.get("quantization", (0.0, 0))[0] != 0.0
               for d in details)


class LiteRTBackend(Backend):
    name = NAME

    def __init__(self, path: Path, *, device: str | None, threads: int | None, precision: str | None) -> None:
        start = time.perf_counter()
        if device not in (None, "cpu", "CPU", "auto"):
            raise UnsupportedOption(f"litert: unknown device {device!r}; available here: cpu")
        _check_file(path)
        module = _interpreter_module()
        try:
            self.interpreter = module.Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"{path}: LiteRT cannot load this model ({one_line(exc)}); re-export the bundle") \
                from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ConfigError(f"{path}: expected one input and one output, the model has {len(inputs)} and "
                              f"{len(outputs)}")
        self._in, self._out = inputs[0], outputs[0]
        for what, d in (("input", self._in), ("output", self._out)):
            if np.dtype(d["dtype"]) not in (np.float32, np.int8, np.uint8):
                raise ConfigError(f"{path}: the model's {what} is {np.dtype(d['dtype'])}; edgecls artifacts take "
                                  "float32 (or int8 with a scale: full-integer models) in and out")
            if np.dtype(d["dtype"]) != np.float32 and not d["quantization"][0]:
                raise ConfigError(f"{path}: the model's int8 {what} has no quantization scale")
        quantized = _quantized(self.interpreter.get_tensor_details())
        if precision == "int8" and not quantized:
            raise UnsupportedOption(f"{path.name} has no int8 tensors; int8 needs the litert-int8 artifact")
        if precision in ("f16", "bf16"):
            raise UnsupportedOption(f"litert runs {path.name} in {'int8' if quantized else 'f32'}; valid precisions: "
                                    + ("int8" if quantized else "f32"))
        self.precision = "int8" if quantized else "f32"
        self.device = "cpu"
        self.input_name, self.output_name = str(self._in["name"]), str(self._out["name"])
        self.input_shape = tuple(int(d) for d in self._in["shape"])
        self._batch = self.input_shape[0]
        self._resizable = True
        self._threads = threads
        self.model_path = path
        self.load_seconds = time.perf_counter() - start

    def _resize(self, n: int) -> bool:
        if n == self._batch:
            return True
        if not self._resizable:
            return False
        try:
            self.interpreter.resize_tensor_input(self._in["index"], [n, *self.input_shape[1:]], strict=False)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            log.info("litert: %s cannot take a batch of %d (%s); running one image at a time", self.model_path.name,
                     n, one_line(exc))
            self._resizable = False
            self.interpreter.resize_tensor_input(self._in["index"], list(self.input_shape), strict=False)
            self.interpreter.allocate_tensors()
            self._batch = self.input_shape[0]
            return False
        self._batch = n
        self._out = self.interpreter.get_output_details()[0]
        return True

    def _run(self, x: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self._in["dtype"])
        if dtype != np.float32:  # a full-integer model: quantize the input as its first op would
            scale, zero = self._in["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
        self.interpreter.set_tensor(self._in["index"], x)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self._out["index"])
        if np.dtype(self._out["dtype"]) != np.float32:
            scale, zero = self._out["quantization"]
            return ((out.astype(np.float32) - zero) * scale).astype(np.float32)
        return np.array(out, dtype=np.float32)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = as_input(batch)
        if tuple(x.shape[1:]) != self.input_shape[1:]:
            raise ConfigError(f"litert: {self.model_path.name} takes (N, {', '.join(map(str, self.input_shape[1:]))}) "
                              f"input, got {tuple(x.shape)}")
        if x.shape[0] == 0:
            return self.infer(np.zeros((1, *x.shape[1:]), dtype=np.float32))[:0]
        if self._resize(x.shape[0]):
            return self._run(x)
        one = self.input_shape[0]
        return np.concatenate([self._run(x[i : i + one]) for i in range(0, x.shape[0], one)])

    def _extra_info(self) -> dict[str, Any]:
        return {"delegate": "XNNPACK (default)", "threads": self._threads, "version": probe().version}

    def close(self) -> None:
        self.interpreter = None  # type: ignore[assignment]


def load(path: Path, *, device: str | None, threads: int | None, precision: str | None,
         mode: str = "latency") -> Backend:
    """A :class:`LiteRTBackend`; ``mode`` changes nothing (one interpreter runs each batch as it comes, on
    ``threads`` XNNPACK threads)."""
    return LiteRTBackend(Path(path), device=device, threads=threads, precision=precision)
