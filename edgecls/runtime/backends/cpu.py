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


def is_arm64() -> bool:
    return platform.machine().lower() in ("aarch64", "arm64")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _cpuinfo_values(text: str, key: str) -> list[str]:
    """The values of ``key`` (lower case) in /proc/cpuinfo text, one per processor (or one for the machine)."""
    out = []
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == key:
            out.append(value.strip())
    return out


# arm64 Linux HWCAP bits (the kernel's uapi asm/hwcap.h) of the features the INT8 choice and the peak estimate use,
# named as /proc/cpuinfo's "Features" names them
_HWCAP = {1: "asimd", 9: "fphp", 10: "asimdhp", 20: "asimddp", 22: "sve"}
_HWCAP2 = {1: "sve2", 13: "i8mm", 14: "bf16"}
_AT_HWCAP, _AT_HWCAP2 = 16, 26


def _arm_hwcaps() -> set[str]:
    """The arm64 features the kernel (or qemu-user, which emulates the auxiliary vector but passes the host's
    /proc/cpuinfo through) grants this process, from getauxval(AT_HWCAP/AT_HWCAP2); empty where it cannot be read."""
    import ctypes

    try:
        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):
        return set()
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    found = set()
    for at, bits in ((_AT_HWCAP, _HWCAP), (_AT_HWCAP2, _HWCAP2)):
        value = int(getauxval(at))
        found.update(name for bit, name in bits.items() if value >> bit & 1)
    return found


def cpuinfo_field(name: str) -> str:
    """The first value of field ``name`` (lower case, e.g. ``cpu implementer``) in /proc/cpuinfo, or ""."""
    return next(iter(_cpuinfo_values(_cpuinfo(), name)), "")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """CPU feature flags of this process's architecture: x86 ``flags`` of /proc/cpuinfo; on arm64 its ``Features``
    and the kernel's HWCAP bits (a /proc/cpuinfo of another architecture, as under qemu-user, is ignored); empty where
    there is none."""
    text = _cpuinfo()
    flags: set[str] = set()
    if is_x86():
        for value in _cpuinfo_values(text, "flags"):
            flags.update(value.split())
    elif is_arm64():
        for value in _cpuinfo_values(text, "features"):
            flags.update(value.split())
        if platform.system() == "Linux":
            flags.update(_arm_hwcaps())
    return frozenset(flags)


def emulated_arm64() -> bool:
    """An arm64 process whose /proc/cpuinfo describes an x86 host: user-mode emulation (qemu-user)."""
    return is_arm64() and bool(_cpuinfo_values(_cpuinfo(), "vendor_id"))


# arm64 cores by (implementer, part) of /proc/cpuinfo: name and 128-bit FP/NEON FMA pipes per core (the peak estimate)
ARM_CORES = {
    (0x41, 0xD03): ("Cortex-A53", 1), (0x41, 0xD04): ("Cortex-A35", 1), (0x41, 0xD05): ("Cortex-A55", 1),
    (0x41, 0xD07): ("Cortex-A57", 2), (0x41, 0xD08): ("Cortex-A72", 2), (0x41, 0xD09): ("Cortex-A73", 2),
    (0x41, 0xD0A): ("Cortex-A75", 2), (0x41, 0xD0B): ("Cortex-A76", 2), (0x41, 0xD0C): ("Neoverse N1", 2),
    (0x41, 0xD0D): ("Cortex-A77", 2), (0x41, 0xD40): ("Neoverse V1", 4), (0x41, 0xD41): ("Cortex-A78", 2),
    (0x41, 0xD42): ("Cortex-A78AE", 2), (0x41, 0xD44): ("Cortex-X1", 4), (0x41, 0xD46): ("Cortex-A510", 1),
    (0x41, 0xD47): ("Cortex-A710", 2), (0x41, 0xD48): ("Cortex-X2", 4), (0x41, 0xD49): ("Neoverse N2", 2),
    (0x41, 0xD4B): ("Cortex-A78C", 2), (0x41, 0xD4F): ("Neoverse V2", 4), (0x41, 0xD80): ("Cortex-A520", 1),
    (0x41, 0xD81): ("Cortex-A720", 2), (0x41, 0xD82): ("Cortex-X4", 4), (0x41, 0xD84): ("Neoverse V3", 4),
    (0x4E, 0x004): ("NVIDIA Carmel", 2), (0x61, 0x000): ("Apple", 4),
}


def arm_core() -> tuple[str, int] | None:
    """(core name, 128-bit FMA pipes per core) of this arm64 CPU's first known core from /proc/cpuinfo, or None
    (another architecture, emulation, or a core not in :data:`ARM_CORES`)."""
    if not is_arm64() or emulated_arm64():
        return None
    text = _cpuinfo()
    for imp, part in zip(_cpuinfo_values(text, "cpu implementer"), _cpuinfo_values(text, "cpu part")):
        try:
            known = ARM_CORES.get((int(imp, 16), int(part, 16)))
        except ValueError:
            continue
        if known:
            return known
    return None


_X86_INT8 = ("amx_int8", "avx512_vnni", "avx_vnni", "avx512vnni")
_ARM_INT8 = ("i8mm", "asimddp")


def cpu_int8_support(*, avx2: bool = False) -> tuple[bool, str]:
    """Whether this CPU runs INT8 convolutions faster than float, and the evidence.

    x86: VNNI/AMX; with ``avx2`` (an engine whose AVX2 int8 kernels beat its float ones: OpenVINO) AVX2 without VNNI
    counts too. `edgecls bench` on a 2-core Zen 3 without VNNI (EfficientNet-Lite0, 3 interleaved rounds, loaded
    machine): OpenVINO INT8 1.4-2.9x faster than its f32, ONNX Runtime INT8 between 0.5x and 1.4x of its FP32, so ONNX
    Runtime keeps the float artifact there. Arm: dot-product instructions (``asimddp``, ``i8mm``: ONNX Runtime's
    MLAS picks its sdot/udot and smmla kernels by them); never x86 flags, which qemu-user's /proc/cpuinfo shows.
    """
    flags = cpu_flags()
    if is_x86():
        found = [f for f in _X86_INT8 if f in flags]
        if found:
            return True, f"CPU has {'/'.join(found)}"
        if avx2 and "avx2" in flags:
            return True, "CPU has AVX2 without VNNI (OpenVINO's int8 kernels still beat its f32 there)"
        return False, "CPU has no VNNI/AMX (INT8 would not be faster than float)"
    if is_arm64():
        if platform.system() == "Darwin":
            return True, "Apple silicon (dot-product instructions)"
        found = [f for f in _ARM_INT8 if f in flags]
        if found:
            return True, f"CPU has {'/'.join(found)}"
        return False, "Arm CPU without dot-product instructions (INT8 would not be faster than float)"
    return False, f"unknown CPU architecture {platform.machine()}"


def cpu_name() -> str:
    """The CPU's name: x86 ``model name``; on arm64 Linux the board (device tree) and core, and under user-mode
    emulation says so (qemu-user shows the host's /proc/cpuinfo)."""
    text = _cpuinfo()
    if is_arm64() and platform.system() == "Linux":
        if emulated_arm64():
            host = next(iter(_cpuinfo_values(text, "model name")), "an x86 CPU")
            return f"aarch64 under user-mode emulation (qemu-user on {host})"
        core = arm_core()
        try:
            board = Path("/sys/firmware/devicetree/base/model").read_text(errors="replace").strip("\x00 \n")
        except OSError:
            board = ""
        name = core[0] if core else "arm64 CPU"
        return f"{board} ({name})" if board else name
    names = _cpuinfo_values(text, "model name")
    if names:
        return names[0]
    return platform.processor() or platform.machine()
