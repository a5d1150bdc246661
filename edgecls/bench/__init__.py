"""Benchmark a bundle: every artifact on every backend that runs here, speed and accuracy side by side.

``run(BenchConfig(bundle=...))`` measures, for each artifact x backend x device (x inference precision, for OpenVINO
float IRs) this machine can run, plus PyTorch rows built from the bundle's source checkpoint when torch is installed:
load time, batch-1 latency percentiles, throughput at each batch size, peak RSS, file size, mAP and F1 at the
artifact's thresholds on a data split, speed-up against PyTorch eager FP32, and achieved GOP/s against this CPU's
estimated peak. Each row runs in a fresh interpreter with a fixed thread count (``isolate``), all rows in one run so
their ratios hold on a noisy machine. With ``targets`` (a file such as ``benchmarks/targets.yaml``) the run also
judges speed targets; without one it only reports.

    from edgecls.bench import BenchConfig, run
    result = run(BenchConfig(bundle="bundles/lite0", data="data.yaml", targets="benchmarks/targets.yaml"))
    print(result.table())
    print(compare(result.to_dict(), load_baseline("bench.json"), baseline="bench.json").table())

Modules: ``plan`` (which rows run here), ``inputs`` (the images they are timed and scored on), ``runner`` (``run``:
the rounds, the rows and the figures derived from them), ``results`` (``BenchRow``, ``BenchResult``), ``targets``
(the kinds of speed target and their file); ``_worker`` times one row, ``_machine`` reads the CPU and its peak,
``_report`` writes the table and chart, ``_compare`` compares with a stored run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgecls.bench._compare import Comparison, RowDiff, compare, load_baseline
from edgecls.bench._machine import CpuShare, Machine, Peak, usable_cores
from edgecls.bench._worker import PYTORCH, TORCH_VARIANTS
from edgecls.bench.results import BenchResult, BenchRow
from edgecls.bench.runner import run
from edgecls.bench.targets import DEFAULT_MAX_BUSY, KINDS, Check, Target, check_targets, load_targets
from edgecls.errors import ConfigError

__all__ = ["KINDS", "BenchConfig", "BenchResult", "BenchRow", "Check", "Comparison", "CpuShare", "Machine", "Peak",
           "RowDiff", "Target", "check_targets", "compare", "load_baseline", "load_targets", "run"]


@dataclass(frozen=True)
class BenchConfig:
    """What ``edgecls bench`` measures; its flags map one to one to these fields.

    Attributes:
        bundle: An ``edgecls export`` bundle folder.
        data: Dataset for the accuracy columns (the bundle's dataset); None times on random inputs only.
        split: Split of ``data`` the accuracy columns (and the timing inputs) come from.
        backends: Keep only these backends (onnxruntime, openvino, tensorrt, coreml, pytorch); empty keeps all.
        artifacts: Keep only these artifacts of the bundle; empty keeps all.
        batch: Batch sizes whose throughput is measured (batch-1 latency is always measured).
        warmup: Untimed calls before timing.
        iters: Timed batch-1 calls at least (a quarter of that, at least 5, for larger batches).
        min_seconds: Each timed loop goes on until it has lasted this long too (a fast model's ``iters`` calls take
            milliseconds, too short a window on a shared machine); ``max_seconds`` still ends it.
        max_seconds: Time budget of one timed loop; it stops early once 5 calls are in.
        threads: CPU threads of every engine (and of PyTorch); None means every core this process may use.
        torch_variants: PyTorch rows to add: eager (NCHW), channels_last, compile (torch.compile).
        checkpoint: The PyTorch rows' checkpoint; default: the one the bundle was exported from (export.json).
        isolate: Run each row in a fresh interpreter (its own peak RSS, no state shared between engines).
        row_timeout: Seconds one isolated row may take.
        rounds: Measure every row this many times, the rounds interleaved (odd rounds in reverse order) so that a
            machine that gets busier or quieter during the run shifts every row alike; figures are the medians.
        max_busy: A speed target is not judged when other processes (and hypervisor steal) took more than this
            share of all CPUs while one of the rows it compares ran (0.1: 10%; 1 judges whatever the load).
        verify: Check each artifact's files against the sha256 in the bundle's manifest before timing it (a file
            that differs, or a path that leaves the bundle, ends the bench with an error).
    """

    bundle: str
    data: str | None = None
    split: str = "valid"
    backends: tuple[str, ...] = ()
    artifacts: tuple[str, ...] = ()
    batch: tuple[int, ...] = (1, 8, 32)
    warmup: int = 10
    iters: int = 50
    min_seconds: float = 1.0
    max_seconds: float = 10.0
    threads: int | None = None
    torch_variants: tuple[str, ...] = TORCH_VARIANTS
    checkpoint: str | None = None
    isolate: bool = True
    row_timeout: float = 900.0
    rounds: int = 1
    max_busy: float = DEFAULT_MAX_BUSY
    verify: bool = True
    targets: str | None = None

    def __post_init__(self) -> None:
        from edgecls.runtime.backends import BACKEND_NAMES, check_threads

        for name in ("backends", "artifacts", "batch", "torch_variants"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, (str, int)) else tuple(value))
        valid = (*BACKEND_NAMES, PYTORCH)
        for name in self.backends:
            if name not in valid:
                raise ConfigError(f"--backends: unknown backend {name!r}; valid: {', '.join(valid)}")
        for name in self.torch_variants:
            if name not in TORCH_VARIANTS:
                raise ConfigError(f"--torch-variants: unknown variant {name!r}; valid: {', '.join(TORCH_VARIANTS)}")
        if not self.batch or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.batch):
            raise ConfigError(f"--batch takes positive batch sizes such as 1,8,32, got {self.batch!r}")
        for name, low in (("warmup", 0), ("iters", 1), ("rounds", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"--{name} must be an integer >= {low}, got {value!r}")
        check_threads(self.threads)
        if not self.max_seconds > 0 or not self.row_timeout > 0:
            raise ConfigError("--max-seconds and row_timeout must be positive")
        if not self.min_seconds >= 0:
            raise ConfigError(f"--min-seconds must be >= 0, got {self.min_seconds!r}")
        if isinstance(self.max_busy, bool) or not isinstance(self.max_busy, (int, float)) \
                or not 0 <= self.max_busy <= 1:
            raise ConfigError(f"--max-busy is a share of all CPUs, 0 to 1 (0.1 = 10%), got {self.max_busy!r}")
        object.__setattr__(self, "batch", tuple(sorted(set(self.batch))))

    @property
    def thread_count(self) -> int:
        return self.threads or usable_cores()

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}
