"""The CPU this runs on: usable cores (``--threads`` is checked against them), ISA flags and whether INT8 is faster
than float here (the automatic choice and the bench use it)."""

from __future__ import annotations

import functools
import logging
import platform
from pathlib import Path

from edgecls.errors import ConfigError

log = logging.getLogger("edgecls.runtime")


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
