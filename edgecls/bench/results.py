"""What one benchmark run found: a :class:`BenchRow` per artifact x backend x device x precision (and PyTorch
setting), gathered with the machine they ran on and the verdicts of the targets in a :class:`BenchResult`, which
turns itself into JSON, a terminal table, Markdown and a bar chart."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecls.bench._machine import CpuShare, Machine, Peak
from edgecls.bench._report import format_markdown, format_table, plot_rows
from edgecls.bench.targets import Check

if TYPE_CHECKING:
    from edgecls.bench.config import BenchConfig


@dataclass(frozen=True)
class BenchRow:
    """One measured (or failed) row: an artifact on a backend, device and precision."""

    label: str
    artifact: str
    backend: str
    device: str
    precision: str  # what the engine computed in: f32, bf16, f16, int8
    variant: str = ""
    load_seconds: float | None = None
    first_call_seconds: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50 p90 p99 mean runs
    p50_rounds: tuple[float, ...] = ()  # batch-1 p50 of each round (rounds > 1): how much the machine moved it
    throughput: dict[int, float] = field(default_factory=dict)  # batch -> images/s
    peak_rss_mb: float | None = None
    size_mb: float | None = None
    map: float | None = None
    f1_micro: float | None = None
    f1_macro: float | None = None
    map_drop: float | None = None  # reference mAP (PyTorch, same images) minus this row's
    parity_passed: bool | None = None  # the bundle's parity verdict, and this row's mAP drop within the INT8 budget
    busy: float | None = None  # share of all CPUs other processes (+ steal) took while this row ran (worst round)
    speedup: float | None = None  # PyTorch eager batch-1 p50 / this row's
    gops: float | None = None  # achieved giga-operations/s at the best batch
    peak_fraction: float | None = None  # gops / the CPU's peak for this precision
    roofline_ips: float | None = None  # the model's roofline bound at this row's precision and best batch (img/s)
    roofline_fraction: float | None = None  # best img/s / roofline_ips
    roofline_bound: str | None = None  # compute | memory: what dominates that bound
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def p50(self) -> float | None:
        return self.latency_ms.get("p50")

    @property
    def spread(self) -> float | None:
        """Half the range of the rounds' p50 over their median (0.1: the rounds lay within +-10%)."""
        if len(self.p50_rounds) < 2:
            return None
        return (max(self.p50_rounds) - min(self.p50_rounds)) / 2 / float(np.median(self.p50_rounds))

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["throughput"] = {str(k): v for k, v in self.throughput.items()}
        return data


@dataclass
class BenchResult:
    """Every row of one run, the machine it ran on and the targets they meet."""

    bundle: Path
    config: BenchConfig
    machine: Machine
    peak: Peak
    gemm_gflops: float
    macs: int | None
    rows: list[BenchRow]
    not_run: list[tuple[str, str]]
    versions: dict[str, str]
    data: dict[str, Any]
    created: str
    checks: list[Check] = field(default_factory=list)
    load_average: tuple[float, float] | None = None  # 1-minute load average before and after the rows
    cpu_share: CpuShare | None = None  # who used the CPUs while the rows ran (Linux)
    bandwidth: dict[str, Any] | None = None  # triad GB/s (DRAM and last-level cache) measured before the rows
    rooflines: dict[str, dict[str, Any]] = field(default_factory=dict)  # "int8 b8" -> Roofline.to_dict()
    vector_rates: dict[str, Any] | None = None  # FMA / VNNI micro-kernel GOP/s on the bench's threads (x86)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle), "created": self.created, "config": self.config.to_dict(),
            "load_average": self.load_average, "cpu_share": self.cpu_share.to_dict() if self.cpu_share else None,
            "machine": self.machine.to_dict(), "peak": self.peak.to_dict(), "gemm_fp32_gflops": self.gemm_gflops,
            "macs_per_image": self.macs, "data": self.data, "versions": self.versions,
            "rows": [r.to_dict() for r in self.rows], "not_run": [{"row": r, "reason": why} for r, why in self.not_run],
            "checks": [c.to_dict() for c in self.checks],
            "bandwidth": self.bandwidth, "rooflines": self.rooflines, "vector_rates": self.vector_rates,
        }

    def table(self) -> str:
        return format_table(self)

    def markdown(self) -> str:
        return format_markdown(self)

    def plot(self, path: str | Path) -> Path:
        return plot_rows(self, Path(path))
