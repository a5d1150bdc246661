"""OpenVINO backend: CPU, GPU and NPU; loads OpenVINO IR (.xml) and ONNX files.

OpenVINO picks the inference precision per device: on CPUs with AVX512_BF16 or AMX the CPU default is bf16, so a
float artifact whose predictions must match its parity run asks for ``precision="f32"`` explicitly. The precision the
compiled model really uses is read back from ``INFERENCE_PRECISION_HINT`` and kept in :attr:`precision`; a quantized
model (FakeQuantize layers, as NNCF and ONNX Q/DQ produce) reports ``int8``. An explicit precision the device
resolves to something else (f16 on a CPU without native f16 becomes bf16) is an error, never a silent change.

Modes (:func:`compile_config` holds their settings): ``latency`` compiles with OpenVINO's defaults and runs a batch on
one infer request; ``throughput`` compiles with ``PERFORMANCE_HINT=THROUGHPUT`` (OpenVINO picks the streams, on a CPU
about one single-threaded stream per core) and ``ENABLE_CPU_PINNING=NO`` on a CPU: the decode threads of ``run`` and
``predict`` share the cores with the streams, and a stream pinned to a core that decoding holds cannot move to the one
it left idle. :meth:`~OpenVinoBackend.infer` splits a batch over the ``OPTIMAL_NUMBER_OF_INFER_REQUESTS`` async
requests, one sub-batch each; :meth:`~OpenVinoBackend.submit` runs a whole batch on the next request (a lane) and
returns at once, so a pipeline keeps every stream busy without a barrier at the end of each batch.

Dynamic batch: a model whose batch dimension is static is reshaped to a dynamic one on CPU/GPU; NPUs need static
shapes, so there the model is compiled for batch 1 and batches are run image by image.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, UnsupportedOption
from edgecls.runtime.backends import (
    LATENCY,
    RANK_OPENVINO_CPU_OTHER,
    RANK_OPENVINO_CPU_X86,
    RANK_OPENVINO_GPU,
    RANK_OPENVINO_NPU,
    Backend,
    BackendStatus,
    Candidate,
    Done,
    EngineCache,
    as_input,
    check_mode,
    check_model_file,
    cpu_int8_support,
    is_x86,
    one_line,
    split_batch,
)

NAME = "openvino"
EXTRA = "openvino"
SUFFIXES = (".xml", ".onnx")
FORMATS = ("openvino", "onnx")

log = logging.getLogger("edgecls.runtime")

_PRECISION_CAPS = {"f32": "FP32", "f16": "FP16", "bf16": "BF16"}
_VIRTUAL = ("AUTO", "MULTI", "HETERO", "BATCH")


def _ov():
    from edgecls._deps import require

    return require("openvino", extra=EXTRA)


@functools.lru_cache(maxsize=1)
def core():
    """One shared ``ov.Core`` (creating one per model costs time and plugin loads)."""
    return _ov().Core()


def _caps(device: str) -> list[str]:
    try:
        return [str(c) for c in core().get_property(device, "OPTIMIZATION_CAPABILITIES")]
    except Exception:
        return []


def precision_caps(device: str) -> list[str]:
    """The float inference precisions (f32, f16, bf16) OpenVINO's ``device`` computes in (``GPU.1`` -> GPU's)."""
    caps = _caps(device.split(":")[0].split(".")[0])
    return [p for p, cap in _PRECISION_CAPS.items() if cap in caps]


def _full_name(device: str) -> str:
    try:
        return str(core().get_property(device, "FULL_DEVICE_NAME"))
    except Exception:
        return device


def probe() -> BackendStatus:
    from edgecls._deps import has

    if not has("openvino"):
        return BackendStatus(NAME, False, reason="openvino is not installed", extra=EXTRA)
    ov = _ov()
    devices = tuple(core().available_devices)
    details = {d: {"name": _full_name(d), "capabilities": _caps(d)} for d in devices}
    return BackendStatus(NAME, True, devices, "" if devices else "OpenVINO found no device", version=ov.__version__,
                         extra=EXTRA, details=details)


# OpenVINO's Arm CPU plugin (pass FallbackUnsupportedLPConvToFP16) runs every INT8 convolution whose input and output
# quantizers differ in signedness (u8 in, i8 out: each MBConv block's projection) or that has a zero point in FP16,
# with the dequantization scale folded into FP16 weights, whatever INFERENCE_PRECISION_HINT says: 7 of Lite0's 49
# convolutions (`compiled.get_runtime_model()` under emulated Cortex-A76; x86 runs all 49 in u8). Measured against x86
# on identical pixels: max |dp| 0.14-0.69, decisions agree 0.96, mAP -0.058 on a fine-tuned Lite0
# (benchmarks/RESULTS.md, "openvino-int8 on Arm"). NNCF's CPU hardware config allows no signed-activation scheme
# that would avoid the pattern, so on Arm the float IR (and onnx-int8 on ONNX Runtime, which agrees with x86) come
# first; openvino-int8 runs only when asked for (--artifact), and `edgecls parity` there reports what it gives.
ARM_INT8 = ("its Arm plugin computes part of an INT8 IR in FP16 (decisions differ from the parity run), so the "
            "float IR comes first")


def candidates(status: BackendStatus) -> list[Candidate]:
    found = []
    for dev in status.devices:
        caps = status.details.get(dev, {}).get("capabilities", [])
        name = status.details.get(dev, {}).get("name", dev)
        if dev.startswith("GPU"):
            found.append(Candidate(NAME, dev, "gpu", RANK_OPENVINO_GPU, FORMATS, "INT8" in caps,
                                   f"OpenVINO GPU {name}"))
        elif dev.startswith("NPU"):
            found.append(Candidate(NAME, dev, "npu", RANK_OPENVINO_NPU, FORMATS, True, f"OpenVINO NPU {name}"))
        elif dev == "CPU":
            fast, why = cpu_int8_support(avx2=True)
            if is_x86():
                found.append(Candidate(NAME, dev, "cpu", RANK_OPENVINO_CPU_X86, FORMATS, fast,
                                       f"OpenVINO is installed and is the fastest CPU engine on x86 ({name}; {why})"))
            else:  # float first: an INT8 IR does not compute here what its parity measured (see ARM_INT8)
                found.append(Candidate(NAME, dev, "cpu", RANK_OPENVINO_CPU_OTHER, FORMATS, False,
                                       f"OpenVINO on a non-x86 CPU ({name}; {why}; {ARM_INT8})"))
    return found


def _resolve_device(device: str | None, available: list[str]) -> str:
    if device is None or device.lower() == "auto":
        gpus = [d for d in available if d.startswith("GPU")]
        return gpus[0] if gpus else "CPU"
    dev = device.strip().upper()
    base = dev.split(".")[0].split(":")[0]
    if base in _VIRTUAL:
        return dev
    bases = {d.split(".")[0] for d in available}
    if dev in available or (dev in bases):
        return dev
    raise UnsupportedOption(f"openvino has no device {device!r} on this machine; available: {', '.join(available)}")


def _type_name(value: Any) -> str:
    name = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    return {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}.get(name, name)


def compile_config(mode: str, device: str, *, threads: int | None = None, precision: str | None = None) -> dict:
    """The ``compile_model`` properties for ``mode`` on ``device``: the one place the engine's latency and throughput
    settings are written (the backend reads them back from the compiled model into :meth:`~Backend.info`)."""
    config: dict[str, Any] = {}
    cpu = device.upper().startswith("CPU")
    if precision in _PRECISION_CAPS:
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads is not None and cpu:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if check_mode(mode) != LATENCY:
        config["PERFORMANCE_HINT"] = "THROUGHPUT"
        if cpu:  # decode threads share these cores: let the scheduler move a stream to whichever core is free
            config["ENABLE_CPU_PINNING"] = False
    return config


class _Pending:
    """One batch running on one infer request (a lane): :meth:`result` waits for it and copies its logits out."""

    __slots__ = ("_lock", "_req", "_x", "_out")

    def __init__(self, lock: threading.RLock, req: Any, x: np.ndarray) -> None:
        self._lock, self._req, self._x, self._out = lock, req, x, None  # x: the engine reads it in place

    def result(self) -> np.ndarray:
        with self._lock:
            if self._out is None:
                self._req.wait()
                self._out = np.array(self._req.get_output_tensor(0).data, dtype=np.float32, copy=True)
                self._x = None
            return self._out

    def done(self) -> bool:
        return self._out is not None


class OpenVinoBackend(Backend):
    name = NAME

    def __init__(self, path: Path, *, device: str | None, threads: int | None, precision: str | None,
                 mode: str = LATENCY) -> None:
        ov = _ov()
        self.mode = check_mode(mode)
        start = time.perf_counter()
        available = list(core().available_devices)
        dev = _resolve_device(device, available)
        check_model_file(path, NAME)
        config = compile_config(self.mode, dev, threads=threads, precision=precision)
        cache = compiled_cache(path, dev, config)
        self.cache_file: Path | None = cache.blob if cache is not None else None
        self.cache_hit = False
        found = _import_cached(cache, dev, config)
        if found is not None:
            self.compiled, meta = found
            self.cache_hit = True
        else:
            try:
                model = core().read_model(str(path))
            except Exception as exc:
                raise ConfigError(f"{path}: openvino cannot read this model file ({one_line(exc)}); re-export the "
                                  "bundle") from None
            inp = model.input(0)
            meta = {
                "quantized": any(op.get_type_name() == "FakeQuantize" for op in model.get_ops()),
                "input_shape": [d.get_length() if d.is_static else None for d in inp.get_partial_shape()]
                if inp.get_partial_shape().rank.is_static else [],
                "input_name": inp.get_any_name(),
                "pixels": inp.get_element_type() == ov.Type.u8,
                "output_name": model.output(0).get_any_name(),
            }
        quantized = bool(meta["quantized"])
        if precision == "int8" and not quantized:  # before compiling: a wrong request costs no compile
            raise UnsupportedOption(f"{path.name} has no quantized layers; int8 needs the int8 artifact")
        if found is None:
            meta["static_batch"] = self._fix_batch(ov, model, dev)
            self.compiled = core().compile_model(model, dev, config)
            if cache is not None:
                _export(cache, self.compiled, meta)
        self.input_shape = tuple(meta["input_shape"])
        self.input_name = str(meta["input_name"])
        self.pixels = bool(meta["pixels"])
        self.output_name = str(meta["output_name"])
        self._static_batch = meta["static_batch"]
        try:
            resolved = _type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        except Exception:  # virtual devices (AUTO, MULTI) do not report it
            resolved = precision or "unknown"
        if precision in _PRECISION_CAPS and resolved != precision:
            caps = _caps(dev.split(":")[0])
            valid = [p for p, cap in _PRECISION_CAPS.items() if cap in caps] or ["f32"]
            raise UnsupportedOption(
                f"OpenVINO on {dev} cannot run {precision} here (it resolved to {resolved}); valid: {', '.join(valid)}"
            )
        self.inference_precision = resolved
        self.precision = "int8" if quantized else resolved
        self.device = dev
        self.threads = threads
        self.model_path = path
        self._request = self.compiled.create_infer_request()
        self._requests = [self._request]
        self.streams = 1
        if self.mode != LATENCY and self._static_batch is None:
            try:
                self.streams = int(self.compiled.get_property("NUM_STREAMS"))
                count = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            except Exception:  # a device that does not report them: one request
                count = 1
            self._requests += [self.compiled.create_infer_request() for _ in range(max(1, count) - 1)]
        self.lanes = len(self._requests)
        self._busy: list[_Pending | None] = [None] * self.lanes  # the batch each request runs for submit()
        self._next = 0
        self.settings = self._settings(config)
        self._out = self.compiled.output(0)
        self._lock = threading.RLock()
        self._version = ov.__version__
        self.load_seconds = time.perf_counter() - start

    @staticmethod
    def _fix_batch(ov, model, dev: str) -> int | None:
        """Make the batch dimension dynamic (or 1 on NPU); return the static batch size when it stays static."""
        shape = model.input(0).get_partial_shape()
        if dev.startswith("NPU"):
            if shape[0].is_dynamic or shape[0].get_length() != 1:
                dims = [1] + [d.get_length() for d in list(shape)[1:]]
                model.reshape({model.input(0): ov.PartialShape(dims)})
            return 1
        if shape[0].is_dynamic:
            return None
        dims = [ov.Dimension(-1)] + list(shape)[1:]
        try:
            model.reshape({model.input(0): ov.PartialShape(dims)})
            return None
        except Exception as exc:
            batch = shape[0].get_length()
            log.info("openvino: %s keeps its static batch %d (%s); batches run in chunks", dev, batch, exc)
            return batch

    def _settings(self, config: dict[str, Any]) -> dict[str, Any]:
        """What the compiled model runs with (the asked-for properties as OpenVINO resolved them)."""
        out: dict[str, Any] = {}
        for key in ("PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS", "ENABLE_CPU_PINNING", *config):
            try:
                value = self.compiled.get_property(key)
            except Exception:
                continue
            out[key] = value if isinstance(value, (bool, int, float)) else str(value)
        return out

    def submit(self, batch: np.ndarray) -> Any:
        """Start the whole ``batch`` on the next infer request (one stream) and return a handle at once; see
        :meth:`Backend.submit`. Without async lanes (the latency mode, a static batch) it runs now."""
        x = as_input(batch, pixels=self.pixels)
        if self.lanes == 1 or self._static_batch is not None or x.shape[0] == 0:
            return Done(self.infer(x))
        with self._lock:
            i = self._next
            self._next = (i + 1) % self.lanes
            if self._busy[i] is not None:
                self._busy[i].result()  # the request's previous batch: its result is kept for its caller
            req = self._requests[i]
            req.start_async({0: x}, share_inputs=True)
            self._busy[i] = pending = _Pending(self._lock, req, x)
            return pending

    def _drain(self) -> None:
        """Finish the batches :meth:`submit` started (their results stay with their handles)."""
        for i, pending in enumerate(self._busy):
            if pending is not None:
                pending.result()
                self._busy[i] = None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = as_input(batch, pixels=self.pixels)
        n = x.shape[0]
        if n == 0:
            return self.infer(np.zeros((1, *x.shape[1:]), dtype=x.dtype))[:0]
        with self._lock:
            self._drain()
            if self._static_batch is None:
                return self._run(x)
            step = self._static_batch
            outs = []
            for i in range(0, n, step):
                chunk = x[i : i + step]
                if chunk.shape[0] < step:
                    pad = np.zeros((step - chunk.shape[0], *chunk.shape[1:]), dtype=x.dtype)
                    chunk = np.concatenate([chunk, pad])
                outs.append(self._run(chunk))
            return np.concatenate(outs)[:n]

    def _run(self, x: np.ndarray) -> np.ndarray:
        if len(self._requests) == 1 or x.shape[0] == 1:
            result = self._request.infer({0: x}, share_inputs=True, share_outputs=False)
            return np.array(result[self._out], dtype=np.float32, copy=True)
        parts = split_batch(x.shape[0], len(self._requests))
        for req, (a, b) in zip(self._requests, parts):
            req.start_async({0: x[a:b]}, share_inputs=True)
        outs = []
        for req, _ in zip(self._requests, parts):
            req.wait()
            outs.append(np.array(req.get_output_tensor(0).data, dtype=np.float32, copy=True))
        return np.concatenate(outs)

    def _extra_info(self) -> dict[str, Any]:
        return {
            "inference_precision": self.inference_precision,
            "threads": self.threads,
            "static_batch": self._static_batch,
            "streams": self.streams,
            "infer_requests": len(self._requests),
            "lanes": self.lanes,
            "settings": self.settings,
            "device_name": _full_name(self.device.split(":")[0]),
            "version": self._version,
            "engine_cache": str(self.cache_file) if self.cache_file else None,
            "engine_cache_hit": self.cache_hit,
        }

    def close(self) -> None:
        if getattr(self, "_busy", None):
            with self._lock:
                self._drain()
        self._request = None
        self._requests = []
        self.compiled = None


def compiled_cache(path: Path, device: str, config: dict[str, Any]) -> EngineCache | None:
    """Where the compiled model of ``path`` on ``device`` with ``config`` is cached, or None when it is not: an ONNX
    file (its weights may live in files the key would not cover), a virtual device (AUTO, MULTI: no export), or
    ``EDGECLS_OPENVINO_CACHE=0``. The key holds the sha256 of the IR's .xml and .bin, OpenVINO's version, the
    device's name and architecture and the compile settings."""
    import os
    import platform

    from edgecls._io import sha256_file

    if os.environ.get("EDGECLS_OPENVINO_CACHE", "1").strip().lower() in ("0", "no", "false", "off"):
        return None
    base = device.split(":")[0].split(".")[0]
    if path.suffix.lower() != ".xml" or base not in ("CPU", "GPU"):
        return None
    weights = path.with_suffix(".bin")
    try:
        key = {"model_sha256": sha256_file(path),
               "weights_sha256": sha256_file(weights) if weights.is_file() else None,
               "openvino": _ov().__version__, "device": device, "device_name": _full_name(device),
               "architecture": _property(device, "DEVICE_ARCHITECTURE"), "capabilities": _caps(base),
               "machine": platform.machine(), "config": {k: str(v) for k, v in sorted(config.items())},
               "dynamic_batch": _BATCH_RULES}
    except OSError:
        return None
    return EngineCache("openvino", path.stem, key)


_BATCH_RULES = 1  # the version of _fix_batch's rules (a change there changes the compiled models)


def _property(device: str, name: str) -> str | None:
    try:
        return str(core().get_property(device, name))
    except Exception:
        return None


def _import_cached(cache: EngineCache | None, device: str, config: dict[str, Any]) -> tuple[Any, dict] | None:
    """The cached compiled model and its record, or None (a miss, or a blob this OpenVINO cannot import)."""
    import io

    found = cache.read() if cache is not None else None
    if found is None:
        return None
    blob, meta = found
    if not {"quantized", "input_shape", "input_name", "pixels", "output_name", "static_batch"} <= set(meta):
        return None
    try:
        compiled = core().import_model(io.BytesIO(blob), device, config)
    except Exception as exc:
        log.warning("openvino: the cached model %s does not import (%s); compiling it again", cache.blob,
                    one_line(exc))
        return None
    log.debug("openvino: using the cached compiled model %s", cache.blob)
    return compiled, meta


def _export(cache: EngineCache, compiled: Any, meta: dict[str, Any]) -> None:
    try:
        blob = compiled.export_model()
    except Exception as exc:  # a device that cannot export: no cache, the model runs
        log.info("openvino: cannot export the compiled model for the cache (%s)", one_line(exc))
        return
    cache.write(blob.getvalue() if hasattr(blob, "getvalue") else bytes(blob), meta)


def load(path: Path, *, device: str | None, threads: int | None, precision: str | None,
         mode: str = LATENCY) -> Backend:
    return OpenVinoBackend(Path(path), device=device, threads=threads, precision=precision, mode=mode)
