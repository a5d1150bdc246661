"""Inference backends behind one small interface, and the automatic choice between them.

Each backend is one module in this package (``onnxruntime``, ``openvino``, ``tensorrt``, ``coreml``, ``litert``)
that exposes:

* ``NAME``, ``EXTRA`` (the pip extra that installs it), ``SUFFIXES`` (model files it loads) and ``FORMATS`` (bundle
  artifact formats it runs, preferred first);
* ``probe() -> BackendStatus``: is it installed, which devices does this machine give it (never raises);
* ``candidates(status) -> list[Candidate]``: the (backend, device) pairs ``auto`` may pick, each with a rank;
* ``load(path, *, device, threads, precision, mode) -> Backend`` (``mode``: :data:`LATENCY` or :data:`THROUGHPUT`).

``auto`` walks the candidates of every installed backend from the lowest rank (fastest) up and takes the first one
that loads the model; the ranks below encode the preference TensorRT > CUDA > OpenVINO GPU > CoreML > OpenVINO CPU
(x86) > ONNX Runtime CPU > LiteRT CPU. Heavy libraries are imported only inside the backend modules' functions.
"""

from __future__ import annotations

from edgecls.runtime.backends.base import (
    LATENCY,
    MODES,
    PRECISIONS,
    THROUGHPUT,
    Backend,
    BackendStatus,
    Candidate,
    Done,
    EngineCache,
    as_input,
    check_input_size,
    check_mode,
    check_model_file,
    has_qdq,
    normalize_precision,
    one_line,
    split_batch,
    user_cache_dir,
)
from edgecls.runtime.backends.cpu import (
    ARM_CORES,
    arm_core,
    check_threads,
    cpu_flags,
    cpu_int8_support,
    cpu_name,
    cpuinfo_field,
    emulated_arm64,
    is_arm64,
    is_x86,
    usable_cpus,
)
from edgecls.runtime.backends.registry import (
    BACKEND_NAMES,
    RANK_COREML,
    RANK_LITERT_CPU,
    RANK_OPENVINO_CPU_OTHER,
    RANK_OPENVINO_CPU_X86,
    RANK_OPENVINO_GPU,
    RANK_OPENVINO_NPU,
    RANK_ORT_COREML,
    RANK_ORT_CPU,
    RANK_ORT_CUDA,
    RANK_ORT_TENSORRT,
    RANK_TENSORRT,
    Attempt,
    auto_candidates,
    available_backends,
    available_text,
    backend_module,
    backend_options,
    backends_for_file,
    device_kind,
    missing_backend,
    open_backend,
    open_first,
    probe,
)

__all__ = [
    "ARM_CORES", "Attempt", "BACKEND_NAMES", "Backend", "BackendStatus", "Candidate", "Done", "EngineCache",
    "LATENCY", "MODES", "PRECISIONS",
    "RANK_COREML", "RANK_LITERT_CPU", "THROUGHPUT", "check_mode", "split_batch",
    "RANK_OPENVINO_CPU_OTHER", "RANK_OPENVINO_CPU_X86", "RANK_OPENVINO_GPU", "RANK_OPENVINO_NPU",
    "RANK_ORT_COREML", "RANK_ORT_CPU", "RANK_ORT_CUDA", "RANK_ORT_TENSORRT", "RANK_TENSORRT", "as_input",
    "arm_core", "auto_candidates", "available_backends", "available_text", "backend_module", "backend_options",
    "backends_for_file", "check_input_size", "check_model_file", "check_threads", "cpu_flags", "cpu_int8_support",
    "cpu_name", "cpuinfo_field", "device_kind", "emulated_arm64", "has_qdq", "is_arm64", "is_x86", "missing_backend",
    "normalize_precision", "one_line", "open_backend", "open_first", "probe", "usable_cpus", "user_cache_dir",
]
