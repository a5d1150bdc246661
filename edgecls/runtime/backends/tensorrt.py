"""TensorRT backend (NVIDIA GPUs and Jetson): builds an engine from the bundle's ONNX on first use and caches it.

Written against the TensorRT 10 Python API (``trt.Builder``, ``create_network(0)`` since networks are always explicit
batch in TensorRT 10, ``trt.OnnxParser.parse_from_file``, ``IBuilderConfig.set_memory_pool_limit``, an optimization
profile for batch ``min..max``, ``build_serialized_network``, ``Runtime.deserialize_cuda_engine`` and the name-based
execution API ``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``), following NVIDIA's own
``samples/python/common_runtime.py``.

Why ``cuda-python`` for memory: TensorRT only runs engines on device buffers; ``cuda.bindings.runtime`` (the
``cuda-python`` package, NVIDIA's official bindings) gives cudaMalloc / cudaMemcpyAsync / streams without torch,
pycuda or polygraphy. Where ``cuda-python`` is missing, loading is an error naming the extra and what runs here;
ONNX Runtime's TensorRT execution provider is asked for as ``--backend onnxruntime --device tensorrt``.

Precision: ``f32`` (TF32 disabled, for parity), ``f16`` (``BuilderFlag.FP16``), ``int8`` (the ONNX must hold Q/DQ
nodes, i.e. the bundle's onnx-int8 / tensorrt artifact; ``BuilderFlag.INT8`` plus ``FP16`` for the layers left in
float). Without a precision the sibling ``engine.json`` decides, else int8 for a Q/DQ model and f16 otherwise.
TensorRT 11 removed the weak-typing flags (FP16/INT8): networks are strongly typed, so Q/DQ int8 still works and an
f16 engine needs an f16 ONNX.

``engine.json`` (written by the exporter next to ``tensorrt/model.onnx``) may set ``precision``, ``min_batch``,
``opt_batch``, ``max_batch`` and ``workspace_mb``. Engines are cached under the user cache dir
(``~/.cache/edgecls/tensorrt``, or ``$EDGECLS_CACHE_DIR``) keyed by the ONNX content hash, GPU name, compute
capability, TensorRT version, precision and shapes, so a new GPU, driver stack or model gets a fresh build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.bundle import ENGINE_SETTINGS_NAME
from edgecls.errors import ConfigError, MissingDependency, UnsupportedOption
from edgecls.runtime.backends import (
    RANK_TENSORRT,
    Backend,
    BackendStatus,
    Candidate,
    as_input,
    has_qdq,
    user_cache_dir,
)

NAME = "tensorrt"
EXTRA = "tensorrt"
SUFFIXES = (".onnx", ".engine", ".plan")
FORMATS = ("tensorrt", "onnx")

log = logging.getLogger("edgecls.runtime")

DEFAULT_MIN_BATCH = 1
DEFAULT_OPT_BATCH = 16
DEFAULT_MAX_BATCH = 32
DEFAULT_WORKSPACE_MB = 1024
_ENGINE_SETTINGS = ("precision", "min_batch", "opt_batch", "max_batch", "workspace_mb")


def _trt():
    from edgecls._deps import require

    return require("tensorrt", extra=EXTRA)


def _cudart():
    """``cuda.bindings.runtime`` (cuda-python >= 12.6) or the older ``cuda.cudart`` spelling."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError as exc:
            raise MissingDependency(
                f"cuda-python is needed to run TensorRT engines and is not installed ({exc}); install it with: "
                "pip install \"edgecls[tensorrt]\" (or pip install cuda-python)"
            ) from exc
    return cudart


def _ck(result: Any) -> Any:
    """Unpack a cuda-python ``(err, *values)`` tuple, raising on an error code."""
    cudart = _cudart()
    err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if err != cudart.cudaError_t.cudaSuccess:
        _, text = cudart.cudaGetErrorString(err)
        raise RuntimeError(f"CUDA error {int(err)}: {text.decode() if isinstance(text, bytes) else text}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def _gpus() -> list[dict[str, Any]]:
    cudart = _cudart()
    count = _ck(cudart.cudaGetDeviceCount())
    gpus = []
    for i in range(count):
        prop = _ck(cudart.cudaGetDeviceProperties(i))
        name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
        gpus.append({"index": i, "name": name, "cc": (int(prop.major), int(prop.minor)),
                     "memory_mb": int(prop.totalGlobalMem) // (1 << 20)})
    return gpus


def probe() -> BackendStatus:
    from edgecls._deps import has

    if not has("tensorrt"):
        return BackendStatus(NAME, False, reason="tensorrt is not installed", extra=EXTRA)
    try:
        gpus = _gpus()
    except MissingDependency as exc:
        return BackendStatus(NAME, True, reason=str(exc).split(";")[0], extra=EXTRA)
    except Exception as exc:  # no driver, no GPU
        return BackendStatus(NAME, True, reason=f"no usable CUDA GPU ({exc})", extra=EXTRA)
    if not gpus:
        return BackendStatus(NAME, True, reason="no CUDA GPU found", extra=EXTRA)
    trt = _trt()
    return BackendStatus(NAME, True, tuple(f"cuda:{g['index']}" for g in gpus), version=trt.__version__, extra=EXTRA,
                         details={f"cuda:{g['index']}": g for g in gpus})


def candidates(status: BackendStatus) -> list[Candidate]:
    found = []
    for i, dev in enumerate(status.devices):
        gpu = status.details.get(dev, {})
        cc = tuple(gpu.get("cc", (0, 0)))
        found.append(Candidate(
            NAME, dev, "gpu", RANK_TENSORRT + i, FORMATS, cc >= (6, 1),
            f"TensorRT {status.version} on {gpu.get('name', dev)} (compute capability {cc[0]}.{cc[1]})",
        ))
    return found


def _parse_device(device: str | None) -> tuple[str, int]:
    """('cuda'|'dla', index) from None, cuda, gpu, cuda:N or dla:N (Jetson's deep-learning accelerator)."""
    if device is None:
        return "cuda", 0
    word, _, index = device.strip().lower().partition(":")
    if word in ("gpu", "tensorrt"):
        word = "cuda"
    if word not in ("cuda", "dla") or (index and not index.isdigit()):
        raise UnsupportedOption(f"tensorrt: unknown device {device!r}; use cuda, cuda:N or dla:N")
    return word, int(index or 0)


def engine_settings(onnx_path: Path, precision: str | None) -> dict[str, Any]:
    """Build settings: ``engine.json`` next to the ONNX, then the explicit precision, then defaults."""
    from edgecls.runtime.backends import normalize_precision

    settings: dict[str, Any] = {}
    sidecar = onnx_path.with_name(ENGINE_SETTINGS_NAME)
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{sidecar}: not valid JSON ({exc.msg})") from None
        settings = {k: data[k] for k in _ENGINE_SETTINGS if k in data}
        settings["precision"] = normalize_precision(settings.get("precision"))
    if precision is not None:
        settings["precision"] = precision
    if settings.get("precision") is None:
        settings["precision"] = "int8" if has_qdq(onnx_path) else "f16"
    settings.setdefault("max_batch", DEFAULT_MAX_BATCH)
    settings.setdefault("min_batch", DEFAULT_MIN_BATCH)
    settings.setdefault("opt_batch", min(DEFAULT_OPT_BATCH, int(settings["max_batch"])))
    settings.setdefault("workspace_mb", DEFAULT_WORKSPACE_MB)
    if not 1 <= int(settings["min_batch"]) <= int(settings["opt_batch"]) <= int(settings["max_batch"]):
        raise ConfigError(f"{sidecar}: need 1 <= min_batch <= opt_batch <= max_batch, got {settings}")
    return settings


def _cache_key(onnx_path: Path, gpu: dict[str, Any], trt_version: str, settings: dict[str, Any],
               dla: int | None) -> str:
    """The engine's identity; the ONNX hash fixes the input shape (C, H, W), the settings fix the batch profile."""
    from edgecls._io import sha256_file

    key = {
        "onnx_sha256": sha256_file(onnx_path),
        "gpu": gpu["name"],
        "compute_capability": list(gpu["cc"]),
        "tensorrt": trt_version,
        "precision": settings["precision"],
        "batch": [int(settings["min_batch"]), int(settings["opt_batch"]), int(settings["max_batch"])],
        "dla": dla,
    }
    return json.dumps(key, sort_keys=True)


def build_engine(onnx_path: Path, settings: dict[str, Any], *, dla: int | None = None) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine with ``settings`` (precision, batch profile, workspace)."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: every network is explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UnsupportedOption(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings["workspace_mb"]) << 20)
    inp = network.get_input(0)
    shape = tuple(inp.shape)
    if shape[0] == -1:
        profile = builder.create_optimization_profile()
        rest = tuple(int(d) for d in shape[1:])
        profile.set_shape(inp.name, (int(settings["min_batch"]), *rest), (int(settings["opt_batch"]), *rest),
                          (int(settings["max_batch"]), *rest))
        config.add_optimization_profile(profile)
    precision = settings["precision"]
    flags = trt.BuilderFlag
    if precision == "f32" and hasattr(flags, "TF32"):
        config.clear_flag(flags.TF32)  # bit-for-bit closer to the ONNX reference
    elif precision == "f16":
        if not hasattr(flags, "FP16"):
            raise UnsupportedOption(
                f"TensorRT {trt.__version__} builds strongly typed networks only; an f16 engine needs an f16 ONNX "
                "(or use precision f32 / the int8 artifact)"
            )
        config.set_flag(flags.FP16)
    elif precision == "bf16":
        if not hasattr(flags, "BF16"):
            raise UnsupportedOption(f"TensorRT {trt.__version__} has no bf16 builder flag; valid: f32, f16, int8")
        config.set_flag(flags.BF16)
    elif precision == "int8":
        if not has_qdq(onnx_path):
            raise UnsupportedOption(
                f"{onnx_path.name} has no Q/DQ nodes; TensorRT int8 here needs the bundle's quantized ONNX "
                "(onnx-int8 / tensorrt artifact), calibration at build time is not supported"
            )
        if hasattr(flags, "INT8"):  # TensorRT 10: Q/DQ networks still need the INT8 flag (weakly typed)
            config.set_flag(flags.INT8)
            config.set_flag(flags.FP16)
    if dla is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla
        config.set_flag(flags.GPU_FALLBACK)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UnsupportedOption(f"TensorRT failed to build an engine for {onnx_path} (see the TensorRT log above)")
    log.info("tensorrt: built a %s engine for %s in %.1f s", precision, onnx_path.name, time.perf_counter() - start)
    return bytes(serialized)


class TensorRTBackend(Backend):
    name = NAME

    def __init__(self, path: Path, *, device: str | None, threads: int | None, precision: str | None) -> None:
        trt = _trt()
        cudart = _cudart()
        start = time.perf_counter()
        kind, index = _parse_device(device)
        gpus = _gpus()
        gpu_index = 0 if kind == "dla" else index
        if gpu_index >= len(gpus):
            raise UnsupportedOption(f"tensorrt has no device {device!r}; available: "
                                    + ", ".join(f"cuda:{g['index']}" for g in gpus))
        gpu = gpus[gpu_index]
        self.gpu = gpu_index
        _ck(cudart.cudaSetDevice(gpu_index))
        self.model_path = path
        self.cache_file: Path | None = None
        self.settings: dict[str, Any] = {}
        if path.suffix.lower() == ".onnx":
            blob = self._cached_engine(trt, path, gpu, precision, dla=index if kind == "dla" else None)
        else:
            if precision is not None:
                log.info("tensorrt: %s is a built engine; its precision is fixed at build time", path.name)
            blob = path.read_bytes()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(blob)
        if self.engine is None and self.cache_file is not None and self.cache_file.is_file():
            log.warning("tensorrt: the cached engine %s does not load; rebuilding it", self.cache_file)
            self.cache_file.unlink()
            blob = self._cached_engine(trt, path, gpu, precision, dla=index if kind == "dla" else None)
            self.engine = self._runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise UnsupportedOption(
                f"TensorRT {trt.__version__} cannot load the engine for {path.name} (built by another TensorRT version "
                f"or for another GPU?); delete {self.cache_file or path} to rebuild"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.input_name, self.output_name = ins[0], outs[0]
        self._in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self._out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self.pixels = self._in_dtype == np.uint8  # a -u8 artifact's ONNX: the normalisation runs in the engine
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        self.input_shape = tuple(int(d) for d in shape)
        if shape[0] == -1:
            max_shape = tuple(self.engine.get_tensor_profile_shape(self.input_name, 0)[2])
        else:
            max_shape = shape
        self.max_batch = int(max_shape[0])
        self.context.set_input_shape(self.input_name, max_shape)
        out_max = tuple(self.context.get_tensor_shape(self.output_name))
        self._stream = _ck(cudart.cudaStreamCreate())
        self._d_in = _ck(cudart.cudaMalloc(int(np.prod(max_shape)) * self._in_dtype.itemsize))
        self._d_out = _ck(cudart.cudaMalloc(int(np.prod(out_max)) * self._out_dtype.itemsize))
        self._lock = threading.Lock()
        self.device = f"dla:{index}" if kind == "dla" else f"cuda:{gpu_index}"
        self.gpu_name = gpu["name"]
        self.precision = self.settings.get("precision") or precision or "engine"
        self._version = trt.__version__
        self.load_seconds = time.perf_counter() - start

    def _cached_engine(self, trt, onnx_path: Path, gpu: dict[str, Any], precision: str | None, *,
                       dla: int | None) -> bytes:
        from edgecls._io import atomic_write_bytes, atomic_write_text

        self.settings = engine_settings(onnx_path, precision)
        key = _cache_key(onnx_path, gpu, trt.__version__, self.settings, dla)
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        cache = user_cache_dir("tensorrt") / f"{onnx_path.stem}-{digest}.engine"
        self.cache_file = cache
        if cache.is_file():
            log.info("tensorrt: using the cached engine %s", cache)
            return cache.read_bytes()
        log.info("tensorrt: building a %s engine for %s on %s (first use; cached afterwards in %s)",
                 self.settings["precision"], onnx_path.name, gpu["name"], cache.parent)
        blob = build_engine(onnx_path, self.settings, dla=dla)
        atomic_write_bytes(cache, blob)
        atomic_write_text(cache.with_suffix(".json"), key + "\n")
        return blob

    def infer(self, batch: np.ndarray) -> np.ndarray:
        cudart = _cudart()
        x = as_input(batch, pixels=self.pixels)
        n = x.shape[0]
        if n == 0:
            return self.infer(np.zeros((1, *x.shape[1:]), dtype=x.dtype))[:0]
        if x.dtype != self._in_dtype:
            x = x.astype(self._in_dtype)
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        outs = []
        with self._lock:
            _ck(cudart.cudaSetDevice(self.gpu))  # the current device is per host thread
            for i in range(0, n, self.max_batch):
                chunk = np.ascontiguousarray(x[i : i + self.max_batch])
                if not self.context.set_input_shape(self.input_name, chunk.shape):
                    raise UnsupportedOption(f"tensorrt: the engine does not accept input shape {chunk.shape}")
                out = np.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self._out_dtype)
                _ck(cudart.cudaMemcpyAsync(self._d_in, chunk.ctypes.data, chunk.nbytes, h2d, self._stream))
                self.context.set_tensor_address(self.input_name, int(self._d_in))
                self.context.set_tensor_address(self.output_name, int(self._d_out))
                if not self.context.execute_async_v3(int(self._stream)):
                    raise RuntimeError("TensorRT execute_async_v3 failed")
                _ck(cudart.cudaMemcpyAsync(out.ctypes.data, self._d_out, out.nbytes, d2h, self._stream))
                _ck(cudart.cudaStreamSynchronize(self._stream))
                outs.append(out)
        return np.concatenate(outs).astype(np.float32, copy=False)

    def _extra_info(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu_name,
            "engine_cache": str(self.cache_file) if self.cache_file else None,
            "build_settings": self.settings,
            "max_batch": self.max_batch,
            "version": self._version,
        }

    def close(self) -> None:
        cudart = _cudart()
        for ptr in (getattr(self, "_d_in", None), getattr(self, "_d_out", None)):
            if ptr is not None:
                cudart.cudaFree(ptr)
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)
        self._d_in = self._d_out = self._stream = None
        self.context = self.engine = None


def load(path: Path, *, device: str | None, threads: int | None, precision: str | None,
         mode: str = "latency") -> Backend:
    """A :class:`TensorRTBackend`; without cuda-python a :class:`MissingDependency` that names the extra and what
    runs here (never a switch to another engine: ONNX Runtime's TensorRT provider is ``--backend onnxruntime
    --device tensorrt``). ``mode`` changes nothing: one execution context runs each batch as it comes."""
    path = Path(path)
    try:
        _cudart()
    except MissingDependency as exc:
        from edgecls.runtime.backends import available_text

        raise MissingDependency(f"backend 'tensorrt' needs cuda-python, which is not installed; install it with: "
                                f"pip install \"edgecls[tensorrt]\" (or pip install cuda-python); available here: "
                                f"{available_text()}") from exc
    if threads is not None:
        log.debug("tensorrt: threads=%s has no effect on a GPU engine", threads)
    return TensorRTBackend(path, device=device, threads=threads, precision=precision)
