"""What machine a benchmark ran on, and an estimate of how fast its CPU could possibly go.

The peak estimate is ``cores x clock x operations per cycle per core``, with operations per cycle taken from the
widest instructions this CPU's flags show (FMA units x vector lanes x 2 for a multiply-add). It is an upper bound
that no real network reaches; it tells how far a row is from the physical limit, not what to expect.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecls.runtime.backends import (
    arm_core,
    cpu_flags,
    cpu_name,
    cpuinfo_field,
    emulated_arm64,
    is_arm64,
    is_x86,
)

# ISA flags worth reporting (x86 /proc/cpuinfo names, then Arm's)
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile",
              "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "sve", "sve2", "bf16")


@dataclass(frozen=True)
class Peak:
    """Estimated peak throughput of the CPU cores a benchmark used, in giga-operations per second."""

    fp32_gflops: float
    bf16_gflops: float | None
    int8_gops: float
    cores: int
    ghz: float
    assumption: str

    def for_precision(self, precision: str) -> float | None:
        """The peak that bounds a row computing in ``precision`` (int8 / bf16 / anything else as fp32)."""
        if precision == "int8":
            return self.int8_gops
        if precision == "bf16":
            return self.bf16_gflops
        return self.fp32_gflops

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lifted(self, achieved: Sequence[tuple[str, str, float]]) -> "Peak":
        """This estimate, or one at a higher clock when a measured row went faster than it allows.

        ``achieved`` holds (row label, precision, GOP/s). A virtual machine's /proc/cpuinfo gives the base clock, and
        the cores boost above it: a row beyond 100% of the estimate proves the clock is at least
        ``GOP/s / (cores x operations per cycle)``. The estimate then takes the highest such clock, and says so: it
        is a lower bound of the true peak from there on, and every fraction of it an upper bound.
        """
        best, why = self.ghz, ""
        for label, precision, gops in achieved:
            bound = self.for_precision(precision)
            if not bound or not gops:
                continue
            needed = self.ghz * gops / bound
            if needed > best * 1.0001:
                best, why = needed, f"{label} reached {gops:.0f} GOP/s at {precision}"
        if not why:
            return self
        scale = best / self.ghz
        return Peak(
            fp32_gflops=round(self.fp32_gflops * scale, 1),
            bf16_gflops=round(self.bf16_gflops * scale, 1) if self.bf16_gflops else None,
            int8_gops=round(self.int8_gops * scale, 1), cores=self.cores, ghz=round(best, 3),
            assumption=f"{self.assumption}; clock raised from {self.ghz:.2f} to {best:.2f} GHz, the least that the "
                       f"fastest row needs ({why}): the cores boost above the reported clock",
        )


@dataclass(frozen=True)
class Machine:
    """The CPU, its ISA flags, core count and clock, the OS and Python of one benchmark run."""

    cpu: str
    vendor: str
    arch: str
    family: str
    cores: int  # CPUs this process may run on
    ghz: float
    ghz_source: str
    isa: tuple[str, ...]
    os: str
    python: str

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["isa"] = list(self.isa)
        return data

    @property
    def kind(self) -> str:
        """A short name for the kind of machine, for results kept apart per kind (zen3, zen5, xeon-amx, arm64 ...)."""
        isa = set(self.isa)
        if self.vendor == "AuthenticAMD" and self.family in ("25", "26"):
            return "zen5" if self.family == "26" else ("zen4" if "avx512f" in isa else "zen3")
        if self.vendor == "GenuineIntel":
            return "xeon-amx" if "amx_int8" in isa else ("intel-avx512" if "avx512f" in isa else "intel")
        return self.arch

    def summary(self) -> str:
        return (f"{self.cpu} ({self.arch}, {self.cores} cores usable, {self.ghz:.2f} GHz {self.ghz_source}), "
                f"ISA: {' '.join(self.isa) or 'none of note'}; {self.os}, Python {self.python}")


_ARM_IMPLEMENTERS = {"0x41": "Arm", "0x4e": "NVIDIA", "0x51": "Qualcomm", "0x61": "Apple", "0x48": "HiSilicon",
                     "0xc0": "Ampere"}


def _cpuinfo_field(name: str) -> str:
    return cpuinfo_field(name)


def _clock_ghz() -> tuple[float, str]:
    """The highest clock this machine admits to, and where the figure came from."""
    try:
        khz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text().strip())
        return khz / 1e6, "(cpufreq maximum)"
    except (OSError, ValueError):
        pass
    mhz = _cpuinfo_field("cpu mhz")
    if mhz:
        try:
            return float(mhz) / 1000.0, "(/proc/cpuinfo 'cpu MHz'; boost clocks may be higher)"
        except ValueError:
            pass
    if platform.system() == "Darwin":
        return 3.2, "(assumed for Apple silicon performance cores)"
    return 3.0, "(assumed: the clock could not be read)"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def machine_info() -> Machine:
    flags = cpu_flags()
    ghz, source = _clock_ghz()
    isa = tuple(f for f in _ISA_FLAGS if f in flags)
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        isa = ("asimd", "asimddp")
    if is_arm64():  # /proc/cpuinfo's vendor_id and cpu family are x86's (qemu-user shows the host's)
        vendor, family = _ARM_IMPLEMENTERS.get(_cpuinfo_field("cpu implementer").lower(), platform.machine()), ""
        if emulated_arm64():
            source += " (of the x86 host: this arm64 process is emulated)"
    else:
        vendor, family = _cpuinfo_field("vendor_id") or platform.machine(), _cpuinfo_field("cpu family")
    return Machine(
        cpu=cpu_name(), vendor=vendor, arch=platform.machine(),
        family=family, cores=usable_cores(), ghz=round(ghz, 3), ghz_source=source, isa=isa,
        os=f"{platform.system()} {platform.release()}", python=platform.python_version(),
    )


def _ops_per_cycle(machine: Machine) -> tuple[float, float | None, float, str]:
    """(fp32, bf16 or None, int8) operations per cycle per core, and the assumption behind them."""
    isa = set(machine.isa)
    amd = "amd" in machine.vendor.lower()
    if is_x86() or machine.arch.lower() in ("x86_64", "amd64"):
        if "avx512f" in isa:
            # Zen 4 runs 512-bit FMAs on two 256-bit pipes; Zen 5 and Intel server cores have two full 512-bit FMAs
            width = 256 if amd and machine.family == "25" else 512
            fp32 = 2 * (width // 32) * 2
            bf16 = 2 * fp32 if "avx512_bf16" in isa else None
            int8 = 4 * fp32 if "avx512_vnni" in isa else 2 * fp32
            how = (f"2 FMA pipes of {width} bits: {fp32} FP32 FLOP/cycle; "
                   f"{'VNNI' if 'avx512_vnni' in isa else 'no VNNI'}: {int8} INT8 OP/cycle")
            if "amx_int8" in isa:
                int8, how = 2048, how + "; AMX tiles: 2048 INT8 OP/cycle"
            if "amx_bf16" in isa:
                bf16 = 1024
            return fp32, bf16, int8, how
        if "avx2" in isa and "fma" in isa:
            fp32 = 32  # two 256-bit FMA pipes
            int8 = 128 if "avx_vnni" in isa else 64  # without VNNI: vpmaddubsw + vpmaddwd, half the VNNI rate
            return fp32, None, int8, (f"2 FMA pipes of 256 bits: 32 FP32 FLOP/cycle; "
                                      f"{'AVX-VNNI' if int8 == 128 else 'AVX2 without VNNI'}: {int8} INT8 OP/cycle")
        return 16, None, 32, "SSE/AVX without FMA: 16 FP32 FLOP/cycle, 32 INT8 OP/cycle"
    # Arm: NEON is 128 bits; the FMA pipes per core from the core's part number (1 on A53/A55-class little cores, 2 on
    # A7x/Neoverse N, 4 on X-class/Neoverse V/Apple), 2 when the core is unknown. Never x86 flags: qemu-user shows the
    # host's /proc/cpuinfo, and cpu_flags() reads arm64 features from HWCAP there.
    core = arm_core()
    if core:
        name, pipes = core
        where = f"{name}: {pipes}"
    elif platform.system() == "Darwin":
        pipes, where = 4, "Apple silicon: 4"
    else:
        pipes, where = 2, "unknown core, assumed 2"
    fp32 = pipes * 4 * 2
    # sdot: 4 int8 multiply-adds per 32-bit lane (4x FP32); smmla (i8mm): twice that; without either, widening
    # multiply-adds at 2x
    int8 = fp32 * (8 if "i8mm" in isa else 4 if "asimddp" in isa else 2)
    bf16 = 2 * fp32 if "bf16" in isa else None
    return fp32, bf16, int8, (f"{where} NEON FMA pipes of 128 bits: {fp32} FP32 FLOP/cycle; "
                              f"{'i8mm' if 'i8mm' in isa else 'dot product' if 'asimddp' in isa else 'no dot product'}"
                              f": {int8} INT8 OP/cycle")


def peak_estimate(machine: Machine, cores: int | None = None) -> Peak:
    """Peak FP32 / BF16 / INT8 throughput of ``cores`` cores (all usable ones by default) at the machine's clock."""
    n = cores or machine.cores
    fp32, bf16, int8, how = _ops_per_cycle(machine)
    scale = n * machine.ghz
    return Peak(
        fp32_gflops=round(fp32 * scale, 1), bf16_gflops=round(bf16 * scale, 1) if bf16 else None,
        int8_gops=round(int8 * scale, 1), cores=n, ghz=machine.ghz,
        assumption=f"{n} cores x {machine.ghz:.2f} GHz {machine.ghz_source} x per-core rate ({how})",
    )


@dataclass(frozen=True)
class CpuShare:
    """How the machine's CPU time was spent while a benchmark ran, as fractions of all its CPUs (Linux /proc/stat).

    ``others`` is what processes outside this benchmark (and its row processes) used, ``steal`` what the hypervisor
    gave to other virtual machines: both slow every row that ran meanwhile, which the load average cannot tell apart
    from the benchmark's own threads.
    """

    seconds: float
    own: float
    others: float
    steal: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"CPU time during the rows ({self.seconds:.0f} s): this benchmark {100 * self.own:.0f}%, other "
                f"processes {100 * self.others:.1f}%, hypervisor steal {100 * self.steal:.1f}% of all CPUs")

    @property
    def disturbed(self) -> bool:
        return self.others > 0.10 or self.steal > 0.05


def _proc_stat() -> tuple[float, float, float] | None:
    """(busy, steal, total) CPU seconds of all CPUs since boot, or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal guest guest_nice (guest time is already in user/nice)
    ticks = [int(v) for v in fields[1:9]] + [0] * max(0, 9 - len(fields))
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
    busy = user + nice + system + irq + softirq
    return busy / hz, steal / hz, (busy + idle + iowait + steal) / hz


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system  # row processes count once they are reaped


class CpuMeter:
    """Measures :class:`CpuShare` between ``start()`` and ``stop()`` (``stop`` returns None off Linux)."""

    def __init__(self) -> None:
        self._start: tuple[float, float, float, float, float] | None = None

    def start(self) -> "CpuMeter":
        stat = _proc_stat()
        self._start = (*stat, _own_cpu_seconds(), time.perf_counter()) if stat else None
        return self

    def stop(self) -> CpuShare | None:
        stat = _proc_stat()
        if self._start is None or stat is None:
            return None
        busy0, steal0, total0, own0, wall0 = self._start
        total = stat[2] - total0
        if total <= 0:
            return None
        own = _own_cpu_seconds() - own0
        return CpuShare(seconds=round(time.perf_counter() - wall0, 1), own=round(min(1.0, own / total), 4),
                        others=round(max(0.0, (stat[0] - busy0 - own) / total), 4),
                        steal=round((stat[1] - steal0) / total, 4))


def measure_gemm_gflops(size: int = 1024, seconds: float = 0.5) -> float:
    """Achieved FP32 GFLOP/s of numpy's BLAS on a square matrix product (a sanity check of the peak estimate)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # warm-up
    runs, start = 0, time.perf_counter()
    while True:
        a @ b
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and runs >= 3:
            break
    return round(2.0 * size**3 * runs / elapsed / 1e9, 1)
