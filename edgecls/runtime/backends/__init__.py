"""Inference backends behind one small interface, and the automatic choice between them.

Each backend is one module in this package (``onnxruntime``, ``openvino``, ``tensorrt``, ``coreml``) that exposes:

* ``NAME``, ``EXTRA`` (the pip extra that installs it), ``SUFFIXES`` (model files it loads) and ``FORMATS`` (bundle
  artifact formats it runs, preferred first);
* ``probe() -> BackendStatus``: is it installed, which devices does this machine give it (never raises);
* ``candidates(status) -> list[Candidate]``: the (backend, device) pairs ``auto`` may pick, each with a rank;
* ``load(path, *, device, threads, precision) -> Backend``.

``auto`` walks the candidates of every installed backend from the lowest rank (fastest) up and takes the first one
that loads the model; the ranks below encode the preference TensorRT > CUDA > OpenVINO GPU > CoreML > OpenVINO CPU
(x86) > ONNX Runtime CPU. Heavy libraries are imported only inside the backend modules' functions.
"""

from __future__ import annotations

import abc
import contextlib
import difflib
import functools
import importlib
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import numpy as np

from edgecls.errors import ConfigError, EdgeclsError, MissingDependency, UnsupportedOption

log = logging.getLogger("edgecls.runtime")

BACKEND_NAMES = ("tensorrt", "onnxruntime", "openvino", "coreml")

# auto preference: lower is tried first
RANK_TENSORRT = 10
RANK_ORT_TENSORRT = 20
RANK_ORT_CUDA = 30
RANK_OPENVINO_GPU = 40
RANK_COREML = 50
RANK_ORT_COREML = 55
RANK_OPENVINO_NPU = 58
RANK_OPENVINO_CPU_X86 = 60
RANK_ORT_CPU = 70
RANK_OPENVINO_CPU_OTHER = 80

PRECISIONS = ("f32", "f16", "bf16", "int8")
_PRECISION_ALIASES = {
    "fp32": "f32", "float32": "f32", "f32": "f32",
    "fp16": "f16", "float16": "f16", "f16": "f16", "half": "f16",
    "bf16": "bf16", "bfloat16": "bf16",
    "int8": "int8", "i8": "int8",
}


@dataclass(frozen=True)
class BackendStatus:
    """What :func:`available_backends` reports for one backend on this machine."""

    name: str
    installed: bool
    devices: tuple[str, ...] = ()
    reason: str = ""
    version: str | None = None
    extra: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.installed and bool(self.devices)


@dataclass(frozen=True)
class Candidate:
    """One (backend, device) pair ``auto`` may choose, with what it is good at."""

    backend: str
    device: str  # passed to the backend's load()
    kind: str  # cpu | gpu | npu | ane: what ``device="cpu"`` etc. match in auto mode
    rank: int
    formats: tuple[str, ...]  # artifact formats it runs, preferred first
    int8_fast: bool  # runs INT8 faster than float on this hardware
    why: str  # one line: why this is a good choice here


class Backend(abc.ABC):
    """A loaded model on one engine and device: float32 NCHW in, logits float32 (N, K) out."""

    name: str = ""
    device: str = ""
    precision: str = ""
    input_name: str = ""
    output_name: str = ""
    input_shape: tuple[Any, ...] = ()  # (N, C, H, W) as the model declares it; None, -1 or a name for a dynamic dim
    model_path: Path
    load_seconds: float = 0.0
    reason: str = ""  # why auto chose it (empty when asked for explicitly)

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on a float32 (N, 3, H, W) batch (any N) and return float32 logits (N, K)."""

    def info(self) -> dict[str, Any]:
        """Name, device, precision, providers, model path, load seconds and backend specifics."""
        data: dict[str, Any] = {
            "name": self.name,
            "device": self.device,
            "precision": self.precision,
            "input_name": self.input_name,
            "output_name": self.output_name,
            "model": str(self.model_path),
            "load_seconds": round(self.load_seconds, 4),
        }
        data.update(self._extra_info())
        if self.reason:
            data["reason"] = self.reason
        return data

    def _extra_info(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release the engine (optional; garbage collection does it too)."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.device} ({self.precision}) {self.model_path}>"


# ---------------------------------------------------------------------------------------------------------------------
# helpers shared by the backend modules


def normalize_precision(value: str | None) -> str | None:
    """``fp32``/``f32``/``float32`` -> ``f32`` and so on; None stays None (the device's default)."""
    if value is None:
        return None
    key = str(value).strip().lower()
    if key in ("", "auto", "default"):
        return None
    if key not in _PRECISION_ALIASES:
        raise ConfigError(f"unknown precision {value!r}; valid: {', '.join(PRECISIONS)} (or fp32, fp16)")
    return _PRECISION_ALIASES[key]


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else os.cpu_count())."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_threads(threads: int | None, *, option: str = "--threads") -> int | None:
    """``threads`` when it is None or 1..the CPUs present; a ConfigError naming ``option`` and the maximum otherwise."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"{option} must be at least 1, got {threads!r}")
    most = usable_cpus()
    if threads > most:
        raise ConfigError(f"{option} {threads} is more than the {most} CPU(s) this process can use; "
                          f"use {option} {most} or fewer (or leave it out for the backend's default)")
    return threads


def check_input_size(backend: "Backend", img_size: int, *, where: str) -> None:
    """The model's input (N, 3, H, W) must take ``img_size`` (the manifest's preprocessing); dynamic dims pass."""
    shape = tuple(getattr(backend, "input_shape", ()) or ())
    if len(shape) != 4:
        return
    fixed = [d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else None for d in shape]
    channels, height, width = fixed[1:]
    if (channels not in (None, 3)) or (height not in (None, img_size)) or (width not in (None, img_size)):
        dims = "x".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in shape)
        raise ConfigError(f"{where}: the manifest's preprocess.img_size is {img_size}, but the model "
                          f"{Path(str(backend.model_path)).name} takes input {dims} (N, C, H, W); the manifest and the "
                          "model disagree, re-export the bundle")


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An engine's exception as one short line (its type unless ours, whitespace and newlines collapsed)."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, EdgeclsError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_input(batch: np.ndarray) -> np.ndarray:
    """Check a batch is (N, C, H, W) and make it C-contiguous float32 (no copy when it already is)."""
    arr = np.asarray(batch)
    if arr.ndim != 4:
        raise ConfigError(f"expected a (N, 3, H, W) batch, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def has_qdq(path: str | Path) -> bool:
    """True when an ONNX file holds QuantizeLinear/DequantizeLinear nodes (an explicitly quantized model).

    Op types are plain strings inside the protobuf, so a memory-mapped byte search finds them without the onnx
    package and without reading the whole file into memory.
    """
    import mmap

    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return mm.find(b"DequantizeLinear") >= 0 or mm.find(b"QLinearConv") >= 0
    except (OSError, ValueError):
        return False


def check_model_file(path: str | Path, backend: str) -> None:
    """A ConfigError (one line) when ``path`` cannot be the model its suffix says: an ONNX file must parse as a
    protobuf ModelProto with a graph, an OpenVINO IR .xml must be XML. Cheap (the top-level fields only), and it keeps
    engines from trying every frontend they have on random bytes."""
    import mmap

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".onnx", ".xml") or not path.is_file():
        return
    kind = "an ONNX model" if suffix == ".onnx" else "an OpenVINO IR (.xml)"
    try:
        with open(path, "rb") as f:
            if suffix == ".xml":
                ok = f.read(512).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")
            elif path.stat().st_size == 0:
                ok = False
            else:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    ok = _protobuf_has_graph(mm)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None
    if not ok:
        raise ConfigError(f"{path}: not {kind} (its bytes do not parse as one), so {backend} cannot load it; "
                          "the file is damaged or is not a model: re-export the bundle")


def _protobuf_has_graph(buf: Any) -> bool:
    """Walk a protobuf message's top-level fields; True when they parse to the end and field 7 (graph) is there."""
    pos, end, graph = 0, len(buf), False
    try:
        while pos < end:
            tag, pos = _varint(buf, pos)
            number, wire = tag >> 3, tag & 7
            if number == 0:
                return False
            if wire == 0:
                _, pos = _varint(buf, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                size, pos = _varint(buf, pos)
                pos += size
                graph = graph or number == 7
            else:
                return False
            if pos > end:
                return False
    except IndexError:
        return False
    return graph


def _varint(buf: Any, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def user_cache_dir(*parts: str) -> Path:
    """``$EDGECLS_CACHE_DIR`` or the platform's user cache folder (XDG on Linux), with ``parts`` appended."""
    import os
    import sys

    root = os.environ.get("EDGECLS_CACHE_DIR")
    if root:
        base = Path(root)
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches" / "edgecls"
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "edgecls" / "Cache"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgecls"
    return base.joinpath(*parts)


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (x86 ``flags``, Arm ``Features``); empty where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return frozenset(flags)


_X86_INT8 = ("amx_int8", "avx512_vnni", "avx_vnni", "avx512vnni")
_ARM_INT8 = ("i8mm", "asimddp")


def cpu_int8_support(*, avx2: bool = False) -> tuple[bool, str]:
    """Whether this CPU runs INT8 convolutions faster than float, and the evidence.

    x86: VNNI/AMX; with ``avx2`` (an engine whose AVX2 int8 kernels beat its float ones: OpenVINO) AVX2 without VNNI
    counts too. `edgecls bench` on a 2-core Zen 3 without VNNI (EfficientNet-Lite0, 3 interleaved rounds, loaded
    machine): OpenVINO INT8 1.4-2.9x faster than its f32, ONNX Runtime INT8 between 0.5x and 1.4x of its FP32, so ONNX
    Runtime keeps the float artifact there. Arm: dot-product instructions.
    """
    flags = cpu_flags()
    if is_x86():
        found = [f for f in _X86_INT8 if f in flags]
        if found:
            return True, f"CPU has {'/'.join(found)}"
        if avx2 and "avx2" in flags:
            return True, "CPU has AVX2 without VNNI (OpenVINO's int8 kernels still beat its f32 there)"
        return False, "CPU has no VNNI/AMX (INT8 would not be faster than float)"
    if platform.machine().lower() in ("aarch64", "arm64"):
        if platform.system() == "Darwin":
            return True, "Apple silicon (dot-product instructions)"
        found = [f for f in _ARM_INT8 if f in flags]
        if found:
            return True, f"CPU has {'/'.join(found)}"
        return False, "Arm CPU without dot-product instructions"
    return False, f"unknown CPU architecture {platform.machine()}"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------------------------------------------------
# registry


def backend_module(name: str):
    """The module of backend ``name``; an unknown name is a ConfigError listing the valid ones."""
    if name not in BACKEND_NAMES:
        close = difflib.get_close_matches(str(name), BACKEND_NAMES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown backend {name!r}; valid: auto, {', '.join(BACKEND_NAMES)}{hint}")
    return importlib.import_module(f"edgecls.runtime.backends.{name}")


@functools.lru_cache(maxsize=None)
def _probe(name: str) -> BackendStatus:
    module = backend_module(name)
    try:
        return module.probe()
    except Exception as exc:  # a broken install must not break listing
        return BackendStatus(name, True, (), f"probe failed: {type(exc).__name__}: {exc}", extra=module.EXTRA)


def probe(name: str, *, refresh: bool = False) -> BackendStatus:
    """The (cached) status of one backend on this machine."""
    if refresh:
        _probe.cache_clear()
    return _probe(name)


def available_backends() -> list[BackendStatus]:
    """Every known backend: whether it is installed, the devices it can use here and why not when it can't."""
    return [probe(name) for name in BACKEND_NAMES]


def backends_for_file(path: str | Path) -> list[str]:
    """Backends that can load this model file, by its suffix."""
    suffix = Path(path).suffix.lower()
    return [name for name in BACKEND_NAMES if suffix in backend_module(name).SUFFIXES]


def auto_candidates(*, kind: str | None = None, backends: Sequence[str] = BACKEND_NAMES) -> list[Candidate]:
    """All (backend, device) pairs usable here, fastest first; ``kind`` keeps only cpu/gpu/npu/ane ones."""
    found: list[Candidate] = []
    for name in backends:
        status = probe(name)
        if not status.usable:
            continue
        found.extend(backend_module(name).candidates(status))
    if kind is not None:
        found = [c for c in found if c.kind == kind]
    return sorted(found, key=lambda c: c.rank)


def device_kind(device: str | None) -> str | None:
    """Map a user's device word to a candidate kind: cpu, gpu (cuda, cuda:1, gpu.0), npu, ane; None if unsure."""
    if device is None:
        return None
    d = device.strip().lower()
    if d.startswith("cpu"):
        return "cpu"
    if d.startswith(("cuda", "gpu", "tensorrt")):
        return "gpu"
    if d.startswith("npu"):
        return "npu"
    if d in ("ane", "coreml", "neural_engine", "all", "cpu_and_ne"):
        return "ane"
    return None


def available_text() -> str:
    """What runs here, for error messages: ``onnxruntime (cpu), openvino (CPU)``, or ``none`` when nothing does."""
    usable = [f"{s.name} ({', '.join(s.devices)})" for s in available_backends() if s.usable]
    return ", ".join(usable) or "none"


def missing_backend(name: str, status: BackendStatus) -> MissingDependency:
    """The error for an explicitly requested backend that is not installed: the extra to install and what runs here."""
    module = backend_module(name)
    why = f" ({status.reason})" if status.reason else ""
    return MissingDependency(
        f"backend {name!r} is not installed{why}; install it with: pip install \"edgecls[{module.EXTRA}]\"; "
        f"available here: {available_text()}"
    )


@dataclass(frozen=True)
class Attempt:
    """One load :func:`open_first` may try: a model file on a backend and device, at a precision.

    ``why`` becomes the loaded backend's ``reason``; ``label`` names the attempt in failure messages and
    ``artifact`` the bundle artifact it runs, if any.
    """

    backend: str
    path: Path
    device: str | None
    precision: str | None
    why: str = ""
    label: str = ""
    artifact: str | None = None


def open_backend(
    model_path: str | Path,
    *,
    backend: str = "auto",
    device: str | None = None,
    threads: int | None = None,
    precision_hint: str | None = None,
    emulate_qdq: bool = False,
) -> Backend:
    """Load ``model_path`` (.onnx, OpenVINO .xml, .mlpackage, TensorRT .engine) on a backend.

    ``backend="auto"`` tries the fastest installed backend that can load this file and works on this machine and
    logs what it chose and why; ``device`` narrows auto to cpu/gpu/npu or names a backend's device exactly.
    An explicit backend that is not installed raises :class:`MissingDependency` naming the extra (and what runs here);
    an explicit device it does not have raises :class:`UnsupportedOption` listing the available ones.
    ``emulate_qdq`` (backend ``onnxruntime`` only) runs a Q/DQ ONNX by its ONNX definition on float kernels instead of
    this CPU's fused int8 kernels (what the TensorRT export's parity run uses).
    """
    path = Path(model_path)
    if not path.exists():
        raise ConfigError(f"{path}: model file not found")
    precision = normalize_precision(precision_hint)
    check_threads(threads, option="threads")
    options = backend_options(backend, emulate_qdq=emulate_qdq)
    loaders = backends_for_file(path)
    if not loaders:
        raise UnsupportedOption(
            f"{path}: no backend loads {path.suffix or 'this'} files; use .onnx, .xml (OpenVINO), .mlpackage or .engine"
        )
    if backend != "auto":
        backend_module(backend)
        if backend not in loaders:
            raise UnsupportedOption(
                f"backend {backend!r} cannot load {path.name}; backends for it: {', '.join(loaders)}"
            )
        status = probe(backend)
        if not status.installed:
            raise missing_backend(backend, status)
        loaded, _, _ = open_first([Attempt(backend, path, device, precision)], threads=threads, explicit=True,
                                  wrap=False, options=options, subject=f"load {path.name}")
        return loaded

    kind = device_kind(device)
    candidates = auto_candidates(kind=kind, backends=loaders)
    if device is not None and kind is None:
        raise UnsupportedOption(f"with backend='auto', device must be cpu, gpu/cuda[:N], npu or ane, got {device!r}")
    if not candidates:
        statuses = "; ".join(f"{s.name}: {s.reason or 'no device'}" for s in map(probe, loaders))
        where = f" with a {kind} device" if kind else ""
        raise UnsupportedOption(f"no installed backend can run {path.name}{where} on this machine ({statuses})")
    # device_override (e.g. cuda:1) replaces the candidates' default device when it names an index
    indexed = device if device and any(c in device for c in ":.") else None
    attempts = [Attempt(c.backend, path, indexed or c.device, precision, c.why, f"{c.backend} on {indexed or c.device}")
                for c in candidates]
    start = time.perf_counter()
    loaded, _, failures = open_first(attempts, threads=threads, options=options, subject=f"load {path.name}")
    if failures:
        loaded.reason = f"{loaded.reason} (skipped: {' | '.join(failures)})"
    log.info("auto: chose %s on %s (%s) for %s, loaded in %.2f s: %s", loaded.name, loaded.device,
             loaded.precision, path.name, time.perf_counter() - start, loaded.reason)
    return loaded


def backend_options(backend: str, *, emulate_qdq: bool = False) -> dict[str, Any]:
    """The backend-specific load options :func:`open_backend` and the Classifier pass on; a ConfigError when the
    backend does not take one (``emulate_qdq`` is onnxruntime's)."""
    if not emulate_qdq:
        return {}
    if backend != "onnxruntime":
        raise ConfigError(f"emulate_qdq needs the onnxruntime backend, not {backend!r}")
    return {"emulate_qdq": True}


def open_first(
    attempts: Sequence[Attempt],
    *,
    threads: int | None,
    subject: str,
    explicit: bool = False,
    wrap: bool = True,
    options: dict[str, Any] | None = None,
    guard: Callable[[Attempt], ContextManager[Callable[[], None]]] | None = None,
    accept: Callable[[Backend, Attempt], None] | None = None,
) -> tuple[Backend, int, list[str]]:
    """The one fallback loop: load the first attempt that works; returns it, its index and the failures before it.

    A :class:`ConfigError` (bad input) ends the search at once; with ``explicit`` (the user named the backend: one
    attempt) any failure is raised, an engine's own exception as :class:`UnsupportedOption` when ``wrap``; otherwise a
    failure is logged and the next attempt is tried. ``guard(attempt)`` is entered around each load and yields a
    ``verdict()`` that raises what a check running beside the load found (the Classifier's sha256 check), raised
    before the load's own error; ``accept(backend, attempt)`` checks a loaded backend (a ConfigError closes it and
    ends the search). The loaded backend's ``reason`` is the attempt's ``why``. ``subject`` ends the final error:
    "no backend could {subject} here".
    """
    failures: list[str] = []
    for index, att in enumerate(attempts):
        with (guard(att) if guard is not None else contextlib.nullcontext(_no_verdict)) as verdict:
            try:
                loaded = backend_module(att.backend).load(att.path, device=att.device, threads=threads,
                                                          precision=att.precision, **(options or {}))
            except Exception as exc:  # not installed properly, no such device here, engine build failed ...
                verdict()  # a changed file explains a failed load best
                if isinstance(exc, ConfigError) or (explicit and (isinstance(exc, EdgeclsError) or not wrap)):
                    raise
                if explicit:
                    of = f" (artifact {att.artifact!r})" if att.artifact else ""
                    raise UnsupportedOption(f"{att.backend} cannot load {att.path}{of}: {one_line(exc)}") from exc
                text = one_line(exc)
                failures.append(f"{att.label}: {text}")
                log.warning("auto: %s cannot run %s (%s); trying the next choice", att.label, att.path.name, text)
                continue
        try:
            verdict()
            if accept is not None:
                accept(loaded, att)
        except ConfigError:
            loaded.close()
            raise
        loaded.reason = att.why
        return loaded, index, failures
    raise UnsupportedOption(f"no backend could {subject} here: " + " | ".join(failures))


def _no_verdict() -> None:
    return None


__all__ = [
    "BACKEND_NAMES",
    "Attempt",
    "Backend",
    "BackendStatus",
    "Candidate",
    "auto_candidates",
    "available_backends",
    "backend_module",
    "cpu_int8_support",
    "missing_backend",
    "normalize_precision",
    "open_backend",
    "open_first",
    "probe",
]
