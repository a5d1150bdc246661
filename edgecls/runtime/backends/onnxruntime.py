"""ONNX Runtime backend: TensorRT, CUDA, CoreML and CPU execution providers, in that order of preference.

``device`` picks the provider: ``cpu``, ``cuda`` / ``cuda:N``, ``tensorrt`` / ``tensorrt:N``, ``coreml`` or a full
provider name such as ``CUDAExecutionProvider``; None uses every available accelerator with CPU last. After the
session is made, the providers it really uses are compared with the ones asked for and a silent fallback is logged.

``emulate_qdq`` runs a Q/DQ graph by its ONNX definition (DequantizeLinear -> float op -> QuantizeLinear, no fusion
into int8 kernels). The exporter uses it to measure a Q/DQ file meant for another engine (TensorRT): ONNX Runtime's
fused x86 int8 kernels sum u8 x s8 pairs in 16 bits (VPMADDUBSW) on CPUs without VNNI, and with symmetric int8
activations (shifted by 128 to u8) those sums saturate, so the fused result says more about this CPU than about the
model. Emulation gives the same answer on every machine, which is what TensorRT's int32 accumulation computes.

Modes on the CPU provider (:func:`session_settings` holds their settings): ``latency`` is ONNX Runtime's default (one
run uses ``threads`` intra-op threads, which spin between operators); ``throughput`` makes the session
single-threaded without spinning (``session.intra_op.allow_spinning=0``) and runs ``threads`` (default: every usable
CPU) lanes side by side from a small thread pool (``session.run`` releases the GIL): :meth:`~OrtBackend.infer`
splits a batch into one sub-batch per lane, :meth:`~OrtBackend.submit` runs a whole batch on the next lane and
returns at once. No thread waits at an operator's barrier and idle cores go to decoding. GPU providers run a batch
as it comes in either mode.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, UnsupportedOption
from edgecls.runtime.backends import (
    LATENCY,
    RANK_ORT_COREML,
    RANK_ORT_CPU,
    RANK_ORT_CUDA,
    RANK_ORT_TENSORRT,
    Backend,
    BackendStatus,
    Candidate,
    Done,
    as_input,
    check_mode,
    check_model_file,
    cpu_int8_support,
    has_qdq,
    one_line,
    split_batch,
    usable_cpus,
    user_cache_dir,
)

NAME = "onnxruntime"
EXTRA = "runtime"
SUFFIXES = (".onnx",)
FORMATS = ("onnx",)

log = logging.getLogger("edgecls.runtime")

TRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
COREML = "CoreMLExecutionProvider"
CPU = "CPUExecutionProvider"
PREFERENCE = (TRT, CUDA, COREML, CPU)
_WORDS = {"tensorrt": TRT, "cuda": CUDA, "gpu": CUDA, "coreml": COREML, "cpu": CPU}


def _ort():
    from edgecls._deps import require

    return require("onnxruntime", extra=EXTRA)


def _device_word(provider: str) -> str:
    return {TRT: "tensorrt", CUDA: "cuda", COREML: "coreml", CPU: "cpu"}.get(provider, provider)


def probe() -> BackendStatus:
    from edgecls._deps import has

    if not has("onnxruntime"):
        return BackendStatus(NAME, False, reason="onnxruntime is not installed", extra=EXTRA)
    ort = _ort()
    providers = [p for p in ort.get_available_providers() if p in PREFERENCE]
    return BackendStatus(
        NAME, True, tuple(_device_word(p) for p in PREFERENCE if p in providers), version=ort.__version__, extra=EXTRA,
        details={"providers": ort.get_available_providers()},
    )


def candidates(status: BackendStatus) -> list[Candidate]:
    found = []
    if "tensorrt" in status.devices:
        found.append(Candidate(NAME, "tensorrt", "gpu", RANK_ORT_TENSORRT, FORMATS, True,
                               "ONNX Runtime's TensorRT execution provider is available"))
    if "cuda" in status.devices:
        found.append(Candidate(NAME, "cuda", "gpu", RANK_ORT_CUDA, FORMATS, False,
                               "ONNX Runtime's CUDA execution provider is available"))
    if "coreml" in status.devices:
        found.append(Candidate(NAME, "coreml", "ane", RANK_ORT_COREML, FORMATS, False,
                               "ONNX Runtime's CoreML execution provider is available"))
    if "cpu" in status.devices:
        fast, why = cpu_int8_support()
        found.append(Candidate(NAME, "cpu", "cpu", RANK_ORT_CPU, FORMATS, fast, f"ONNX Runtime on the CPU ({why})",
                               pixels_first=False))
    return found


def _parse_device(device: str | None, available: list[str]) -> tuple[list[str], int]:
    """Providers to ask for (preferred first) and the GPU index."""
    if device is None or device.lower() == "auto":
        return [p for p in PREFERENCE if p in available], 0
    word, _, index = device.partition(":")
    provider = word if word in PREFERENCE else _WORDS.get(word.lower())
    valid = ", ".join(sorted({_device_word(p) for p in available if p in PREFERENCE})) or "none"
    if provider is None or (index and not index.isdigit()):
        raise UnsupportedOption(f"onnxruntime: unknown device {device!r}; available here: {valid}")
    if provider not in available:
        raise UnsupportedOption(
            f"onnxruntime has no {_device_word(provider)} execution provider on this machine; available: {valid}"
        )
    chain = {TRT: [TRT, CUDA, CPU], CUDA: [CUDA, CPU], COREML: [COREML, CPU], CPU: [CPU]}[provider]
    return [p for p in chain if p in available], int(index or 0)


def _provider_options(provider: str, gpu: int, precision: str | None) -> dict[str, Any]:
    if provider == TRT:
        cache = user_cache_dir("onnxruntime-trt")
        cache.mkdir(parents=True, exist_ok=True)
        return {
            "device_id": gpu,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_fp16_enable": precision == "f16",
            "trt_int8_enable": precision == "int8",  # Q/DQ (explicit) quantization: no calibration table needed
        }
    if provider == CUDA:
        return {"device_id": gpu}
    return {}


def session_settings(mode: str, provider: str, threads: int | None) -> dict[str, Any]:
    """The session options for ``mode`` on ``provider``: the one place the engine's latency and throughput settings
    are written. ``lanes``: sessions runs side by side (throughput on the CPU); the rest are ``SessionOptions``
    fields, and ``config`` its session config entries."""
    if check_mode(mode) != LATENCY and provider == CPU:
        return {"lanes": threads or usable_cpus(), "intra_op_num_threads": 1, "inter_op_num_threads": 1,
                "config": {"session.intra_op.allow_spinning": "0"}}
    if threads is not None:
        return {"lanes": 1, "intra_op_num_threads": threads, "inter_op_num_threads": 1, "config": {}}
    return {"lanes": 1, "config": {}}


class OrtBackend(Backend):
    name = NAME

    def __init__(self, path: Path, *, device: str | None, threads: int | None, precision: str | None,
                 emulate_qdq: bool = False, mode: str = LATENCY) -> None:
        ort = _ort()
        self.mode = check_mode(mode)
        start = time.perf_counter()
        check_model_file(path, NAME)
        available = ort.get_available_providers()
        providers, gpu = _parse_device(device, available)
        quantized = has_qdq(path)
        if precision == "int8" and not quantized:
            raise UnsupportedOption(f"{path.name} has no quantized (Q/DQ) layers; int8 needs the int8 artifact")
        if precision in ("f16", "bf16") and not (precision == "f16" and providers[0] == TRT):
            raise UnsupportedOption(
                f"onnxruntime runs {path.name} in f32 on {_device_word(providers[0])}; valid precisions: f32"
                + (", int8" if quantized else "") + " (f16 only with the tensorrt provider)"
            )
        if emulate_qdq and not quantized:
            raise UnsupportedOption(f"{path.name} has no quantized (Q/DQ) layers to emulate")
        opts = ort.SessionOptions()
        # BASIC folds constants but fuses no Q/DQ pairs into int8 kernels (that happens from EXTENDED on)
        opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if emulate_qdq else
                                         ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        self.emulate_qdq = bool(emulate_qdq)
        opts.log_severity_level = 3
        settings = session_settings(self.mode, providers[0], threads)
        self.streams = self.lanes = int(settings["lanes"])
        for key in ("intra_op_num_threads", "inter_op_num_threads"):
            if key in settings:
                setattr(opts, key, int(settings[key]))
        for key, value in settings["config"].items():
            opts.add_session_config_entry(key, value)
        self.settings = settings
        self._threads = threads
        self._pool = None
        asked = [(p, _provider_options(p, gpu, precision)) for p in providers]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=asked)
        except Exception as exc:
            if any(code in str(exc) for code in ("INVALID_PROTOBUF", "INVALID_GRAPH", "NO_SUCHFILE")):
                raise ConfigError(f"{path}: onnxruntime cannot load this file as an ONNX model ({one_line(exc)}); "
                                  "re-export the bundle") from None
            raise
        used = self.session.get_providers()
        if used[0] != providers[0]:
            log.warning("onnxruntime: asked for %s but the session runs on %s (silent fallback; check the %s "
                        "install and drivers)", providers[0], used[0], _device_word(providers[0]))
        self.providers = used
        self.requested_providers = providers
        self.device = used[0] if used[0] not in (CUDA, TRT) else f"{used[0]}:{gpu}"
        self.precision = "int8" if quantized else ("f16" if precision == "f16" and used[0] == TRT else "f32")
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        self.input_shape = tuple(inp.shape)
        self.pixels = inp.type == "tensor(uint8)"
        self.model_path = path
        self.load_seconds = time.perf_counter() - start
        self._version = ort.__version__

    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = as_input(batch, pixels=self.pixels)
        if x.shape[0] == 0:
            return self.infer(np.zeros((1, *x.shape[1:]), dtype=x.dtype))[:0]
        if self.streams > 1 and x.shape[0] > 1:
            parts = split_batch(x.shape[0], self.streams)
            outs = list(self._lane_pool().map(lambda ab: self._run(x[ab[0]:ab[1]]), parts))
            return np.concatenate(outs)
        return self._run(x)

    def _lane_pool(self) -> Any:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="edgecls-ort")
        return self._pool

    def submit(self, batch: np.ndarray) -> Any:
        """Run the whole ``batch`` on the next free lane (a single-threaded session run in the lane pool) and return
        a future of its logits at once; see :meth:`Backend.submit`. With one lane it runs now."""
        x = as_input(batch, pixels=self.pixels)
        if self.lanes == 1 or x.shape[0] == 0:
            return Done(self.infer(x))
        return self._lane_pool().submit(self._run, x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        return np.asarray(out, dtype=np.float32)

    def _extra_info(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "providers": list(self.providers),
            "requested_providers": list(self.requested_providers),
            "threads": self._threads,
            "streams": self.streams,
            "lanes": self.lanes,
            "settings": {k: v for k, v in self.settings.items() if k != "lanes"},
            "version": self._version,
        }
        if self.emulate_qdq:
            data["qdq"] = "emulated: the ONNX definition on float kernels"
        return data

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.session = None  # type: ignore[assignment]


def load(path: Path, *, device: str | None, threads: int | None, precision: str | None,
         emulate_qdq: bool = False, mode: str = LATENCY) -> Backend:
    return OrtBackend(Path(path), device=device, threads=threads, precision=precision, emulate_qdq=emulate_qdq,
                      mode=mode)
