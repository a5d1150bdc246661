"""The backend registry and the one way to open a model: ranks of the automatic choice, probing, candidates, and
:func:`open_first` (the one fallback loop that :func:`open_backend`, the Classifier and the bench all go through)."""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

from edgecls.errors import ConfigError, EdgeclsError, MissingDependency, UnsupportedOption
from edgecls.runtime.backends.base import (
    LATENCY,
    Backend,
    BackendStatus,
    Candidate,
    check_mode,
    normalize_precision,
    one_line,
)
from edgecls.runtime.backends.cpu import (
    check_threads,
)

log = logging.getLogger("edgecls.runtime")


BACKEND_NAMES = ("tensorrt", "onnxruntime", "openvino", "coreml", "litert")


# auto preference: lower is tried first
RANK_TENSORRT = 10


RANK_TENSORRT = 10
RANK_ORT_TENSORRT = 20


RANK_ORT_TENSORRT = 20
RANK_ORT_CUDA = 30


RANK_ORT_CUDA = 30
RANK_OPENVINO_GPU = 40


RANK_OPENVINO_GPU = 40
RANK_COREML = 50


RANK_COREML = 50
RANK_ORT_COREML = 55


RANK_ORT_COREML = 55
RANK_OPENVINO_NPU = 58


RANK_OPENVINO_NPU = 58
RANK_OPENVINO_CPU_X86 = 60


RANK_OPENVINO_CPU_X86 = 60
RANK_ORT_CPU = 70


RANK_ORT_CPU = 70
RANK_LITERT_CPU = 75
RANK_OPENVINO_CPU_OTHER = 80


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
    mode: str = LATENCY,
) -> Backend:
    """Load ``model_path`` (.onnx, OpenVINO .xml, .mlpackage, TensorRT .engine) on a backend.

    ``backend="auto"`` tries the fastest installed backend that can load this file and works on this machine and
    logs what it chose and why; ``device`` narrows auto to cpu/gpu/npu or names a backend's device exactly.
    An explicit backend that is not installed raises :class:`MissingDependency` naming the extra (and what runs here);
    an explicit device it does not have raises :class:`UnsupportedOption` listing the available ones.
    ``emulate_qdq`` (backend ``onnxruntime`` only) runs a Q/DQ ONNX by its ONNX definition on float kernels instead of
    this CPU's fused int8 kernels (what the TensorRT export's parity run uses). ``mode``: ``latency`` (one input at a
    time) or ``throughput`` (batches where only the total counts), see :data:`edgecls.runtime.backends.MODES`.
    """
    path = Path(model_path)
    mode = check_mode(mode)
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
                                  wrap=False, options=options, subject=f"load {path.name}", mode=mode)
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
    loaded, _, failures = open_first(attempts, threads=threads, options=options, subject=f"load {path.name}",
                                     mode=mode)
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
    mode: str = LATENCY,
) -> tuple[Backend, int, list[str]]:
    """The one fallback loop: load the first attempt that works; returns it, its index and the failures before it.

    A :class:`ConfigError` (bad input) ends the search at once; with ``explicit`` (the user named the backend: one
    attempt) any failure is raised, an engine's own exception as :class:`UnsupportedOption` when ``wrap``; otherwise a
    failure is logged and the next attempt is tried. ``guard(attempt)`` is entered around each load and yields a
    ``verdict()`` that raises what a check running beside the load found (the Classifier's sha256 check), raised
    before the load's own error; ``accept(backend, attempt)`` checks a loaded backend (a ConfigError closes it and
    ends the search). The loaded backend's ``reason`` is the attempt's ``why``. ``subject`` ends the final error:
    "no backend could {subject} here". ``mode`` (latency or throughput) goes to every backend's ``load``: the one
    place an engine learns whether it serves single inputs or batches.
    """
    mode = check_mode(mode)
    failures: list[str] = []
    for index, att in enumerate(attempts):
        with (guard(att) if guard is not None else contextlib.nullcontext(_no_verdict)) as verdict:
            try:
                loaded = backend_module(att.backend).load(att.path, device=att.device, threads=threads,
                                                          precision=att.precision, mode=mode, **(options or {}))
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
