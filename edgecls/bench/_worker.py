"""Measure one benchmark row: load the model, time batch-1 latency and batched throughput, run the eval images.

A row normally runs in a fresh interpreter (``python -m edgecls.bench._worker SPEC.json RESULT.json``) so that its
peak RSS is its own, thread settings apply before any engine is imported, and one engine's state cannot slow
another's. ``measure`` is the same code for in-process runs. Only the PyTorch rows import torch.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

PYTORCH = "pytorch"  # the backend name of the PyTorch reference rows
TORCH_VARIANTS = ("eager", "channels_last", "compile")


@dataclass(frozen=True)
class RowSpec:
    """What one row runs: an artifact on a backend (or the source checkpoint on PyTorch) and how to time it."""

    label: str
    kind: str  # "backend" | "pytorch"
    model: str  # model file, or the checkpoint for PyTorch rows
    backend: str  # onnxruntime | openvino | tensorrt | coreml | pytorch
    device: str | None
    precision: str | None  # asked of the backend (None: its default)
    artifact: str  # the bundle artifact, or "pytorch"
    variant: str = ""  # PyTorch: eager | channels_last | compile
    threads: int = 1
    batches: tuple[int, ...] = (1, 8, 32)
    warmup: int = 10
    iters: int = 50
    min_seconds: float = 1.0
    max_seconds: float = 10.0
    images: str | None = None  # .npy of preprocessed eval images (N, 3, H, W)
    input_shape: tuple[int, ...] = (3, 224, 224)
    logits_out: str | None = None  # where to save the eval logits (.npy)
    mode: str = "latency"  # the engine's: latency | throughput (edgecls.runtime.backends.MODES)
    input: str = "float32-nchw"  # what the artifact takes (edgecls.preprocess.INPUT_KINDS): pixels for a -u8 one
    preprocess: dict[str, Any] | None = None  # the manifest's spec: turns the eval tensors into a -u8 one's pixels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RowSpec":
        data = dict(data)
        data["batches"] = tuple(data["batches"])
        data["input_shape"] = tuple(data["input_shape"])
        return cls(**data)


@dataclass
class Timing:
    """Per-call wall times of one input size, in seconds (monotonic clock)."""

    batch: int
    times: list[float] = field(default_factory=list)

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.times, q)) * 1000.0

    @property
    def images_per_second(self) -> float:
        return self.batch / float(np.median(self.times))


def _time(fn: Callable[[np.ndarray], Any], x: np.ndarray, *, warmup: int, iters: int, min_seconds: float,
          max_seconds: float) -> Timing:
    """``warmup`` untimed calls, then timed ones until ``iters`` are in and ``min_seconds`` have passed (a fast model's
    50 calls last a few milliseconds, too short a window on a shared machine), cut short after ``max_seconds`` once 5
    are in."""
    for _ in range(warmup):
        fn(x)
    timing = Timing(batch=int(x.shape[0]))
    begin = time.perf_counter()
    deadline = begin + max_seconds
    while (len(timing.times) < iters or time.perf_counter() - begin < min_seconds) \
            and (len(timing.times) < 5 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn(x)
        timing.times.append(time.perf_counter() - start)
    return timing


def _peak_rss_mb() -> float:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def _open_backend(spec: RowSpec) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any], Callable[[], None]]:
    from edgecls.runtime.backends import open_backend

    runner = open_backend(spec.model, backend=spec.backend, device=spec.device, threads=spec.threads,
                          precision_hint=spec.precision, mode=spec.mode)
    return runner.infer, dict(runner.info()), runner.close


def _open_torch(spec: RowSpec) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any], Callable[[], None]]:
    import torch

    from edgecls.train.checkpoint import load_checkpoint

    torch.set_num_threads(spec.threads)
    model = load_checkpoint(spec.model).build_model().cpu().eval()
    memory_format = torch.channels_last if spec.variant == "channels_last" else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    if spec.variant == "compile":
        model = torch.compile(model)

    def infer(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(memory_format=memory_format)
            return model(t).float().numpy()

    info = {"name": PYTORCH, "device": "cpu", "precision": "f32", "variant": spec.variant,
            "threads": torch.get_num_threads(), "version": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    return infer, info, lambda: None


def _inputs(spec: RowSpec) -> tuple[np.ndarray | None, Callable[[int], np.ndarray]]:
    """The eval images (memory-mapped) and ``batch_of(n)``, as the row's artifact takes them: the float tensors, or
    for a pixel-input (``-u8``) artifact the uint8 pixels they were made from (converted once, before any timing)."""
    from edgecls.preprocess import PreprocessSpec, is_pixels, tensor_to_pixels

    images = np.load(spec.images, mmap_mode="r") if spec.images else None
    pixels = is_pixels(spec.input)
    if pixels and images is not None:
        images = tensor_to_pixels(images, PreprocessSpec.from_dict(spec.preprocess or {}), spec.input)
    dtype = np.uint8 if pixels else np.float32

    def batch_of(n: int) -> np.ndarray:
        if images is not None and len(images):
            idx = np.arange(n) % len(images)
            return np.ascontiguousarray(images[idx], dtype=dtype)
        rng = np.random.default_rng(0)
        if pixels:
            c, h, w = spec.input_shape
            return rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
        return rng.standard_normal((n, *spec.input_shape), dtype=np.float32)

    return images, batch_of


def measure(spec: RowSpec) -> dict[str, Any]:
    """Load, time and evaluate one row; returns the figures as plain JSON-ready values."""
    images, batch_of = _inputs(spec)
    start = time.perf_counter()
    infer, info, close = (_open_torch if spec.kind == PYTORCH else _open_backend)(spec)
    load_seconds = time.perf_counter() - start
    try:
        x1 = batch_of(1)
        start = time.perf_counter()
        infer(x1)  # the first call: lazy compilation (torch.compile, some engines) shows up here
        first_call = time.perf_counter() - start
        latency = _time(infer, x1, warmup=spec.warmup, iters=spec.iters, min_seconds=spec.min_seconds,
                        max_seconds=spec.max_seconds)
        throughput: dict[str, float] = {}
        timings: dict[str, int] = {}
        for b in spec.batches:
            if b == 1:
                t = latency
            else:
                xb = batch_of(b)
                t = _time(infer, xb, warmup=max(1, min(spec.warmup, 3)), iters=max(5, spec.iters // 4),
                          min_seconds=spec.min_seconds, max_seconds=spec.max_seconds)
            throughput[str(b)] = round(t.images_per_second, 3)
            timings[str(b)] = len(t.times)
        if images is not None and spec.logits_out:
            chunk = 32
            outs = [infer(np.array(images[i : i + chunk], dtype=images.dtype))  # a writable copy of the mapped file
                    for i in range(0, len(images), chunk)]
            np.save(spec.logits_out, np.concatenate(outs).astype(np.float32))
    finally:
        close()
    return {
        "load_seconds": round(load_seconds, 4),
        "first_call_seconds": round(first_call, 4),
        "latency_ms": {**{f"p{q}": round(latency.percentile_ms(q), 4) for q in (50, 90, 99)},
                       "mean": round(float(np.mean(latency.times)) * 1e3, 4), "runs": len(latency.times)},
        "throughput": throughput,
        "timed_runs": timings,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "info": info,
    }


def child_env(threads: int) -> dict[str, str]:
    """The environment of a row's interpreter: the thread count fixed for every OpenMP/BLAS pool."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    return env


def main(argv: list[str]) -> int:
    spec_path, result_path = argv
    spec = RowSpec.from_dict(json.loads(Path(spec_path).read_text(encoding="utf-8")))
    try:
        result = measure(spec)
    except Exception as exc:  # reported as the row's error by the parent
        result = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    from edgecls._io import atomic_write_text

    atomic_write_text(result_path, json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
