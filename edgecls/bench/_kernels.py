"""What this CPU's vector units really do: micro-kernels of FMAs and VNNI dot products, timed on the bench's cores.

The peak estimate of :mod:`edgecls.bench._machine` and the roofline of :mod:`edgecls.bench._roofline` are
``operations per cycle x clock``, and the clock comes from cpufreq or ``/proc/cpuinfo``. A virtual machine reports its
base clock there (a Zen 5 EPYC VM: 2.60 GHz) while its cores run AVX-512 at the boost clock (3.9 GHz measured), so a
bound built on the reported clock sits 1.5x below what the hardware does and stops being a bound. These kernels
measure the rate itself: a loop of 12 independent register-only ``vfmadd231ps`` (or ``vpdpbusd``) per iteration, on
``threads`` threads at once, the best of a few repeats; the bench lifts its clock to the one these rates prove
(:meth:`edgecls.bench._machine.Peak.lifted`), never lowers it.

The loops are x86-64 machine code (System V ABI, ``void kernel(long iterations)``, no memory access), copied into an
executable page and called through ctypes (which releases the GIL, so the threads run side by side). They run only
where the CPU's flags list the instructions they use; elsewhere (Arm, a CPU without FMA, a system that refuses
executable pages) :func:`measure_vector_rates` returns None and the estimates stay as they were.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

# name -> (flags it needs, operations per loop iteration, machine code). Each is
#   zero two source registers (and the FMA accumulators); loop: 12 independent multiply-accumulates into
#   zmm0-zmm11 (ymm0-ymm11) from zmm30/zmm31 (ymm14/ymm15); dec rdi; jnz loop; vzeroupper; ret
# assembled with GNU as from the Intel-syntax source in benchmarks/kernels.S.
_KERNELS: dict[str, tuple[frozenset[str], int, str]] = {
    "fp32 FMA zmm": (frozenset({"avx512f"}), 12 * 16 * 2, (
        "62010d40eff662010540efff62f17d48efc062f17548efc962f16d48efd262f16548efdb62f15d48efe462f15548efed62f14d48eff6"
        "62f14548efff62513d48efc062513548efc962512d48efd262512548efdb62920d40b8c762920d40b8cf62920d40b8d762920d40b8df"
        "62920d40b8e762920d40b8ef62920d40b8f762920d40b8ff62120d40b8c762120d40b8cf62120d40b8d762120d40b8df48ffcf75b3c5"
        "f877c3")),
    "int8 VNNI zmm": (frozenset({"avx512f", "avx512_vnni"}), 12 * 64 * 2, (
        "62010d40eff662010540efff62920d4050c762920d4050cf62920d4050d762920d4050df62920d4050e762920d4050ef62920d4050f7"
        "62920d4050ff62120d4050c762120d4050cf62120d4050d762120d4050df48ffcf75b3c5f877c3")),
    "fp32 FMA ymm": (frozenset({"avx", "fma"}), 12 * 8 * 2, (
        "c4410c57f6c4410457ffc5fc57c0c5f457c9c5ec57d2c5e457dbc5dc57e4c5d457edc5cc57f6c5c457ffc4413c57c0c4413457c9c441"
        "2c57d2c4412457dbc4c20db8c7c4c20db8cfc4c20db8d7c4c20db8dfc4c20db8e7c4c20db8efc4c20db8f7c4c20db8ffc4420db8c7c4"
        "420db8cfc4420db8d7c4420db8df48ffcf75bfc5f877c3")),
    "int8 AVX-VNNI ymm": (frozenset({"avx", "avx_vnni"}), 12 * 32 * 2, (
        "c4410c57f6c4410457ffc4c20d50c7c4c20d50cfc4c20d50d7c4c20d50dfc4c20d50e7c4c20d50efc4c20d50f7c4c20d50ffc4420d50"
        "c7c4420d50cfc4420d50d7c4420d50df48ffcf75bfc5f877c3")),
}


@dataclass(frozen=True)
class VectorRates:
    """Measured giga-operations per second of all ``threads`` threads together (2 per multiply-add)."""

    fp32_gflops: float | None
    int8_gops: float | None
    threads: int
    kernels: dict[str, float]  # kernel name -> GOP/s over all threads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return ", ".join(f"{k} {v:.0f} GOP/s" for k, v in self.kernels.items()) + f" ({self.threads} threads)"


def runnable_kernels(flags: set[str] | frozenset[str]) -> list[str]:
    """The kernels this CPU's flags allow, widest first within each kind."""
    return [name for name, (needs, _, _) in _KERNELS.items() if needs <= flags]


class _Code:
    """A kernel's machine code in an executable page, callable as ``void f(long)``."""

    def __init__(self, hexcode: str) -> None:
        code = bytes.fromhex(hexcode)
        self._page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self._page.write(code)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._page))
        self.call = ctypes.CFUNCTYPE(None, ctypes.c_long)(address)


def _rate(code: _Code, ops_per_iteration: int, threads: int, seconds: float) -> float:
    """GOP/s of ``threads`` threads running the kernel at once, the best of repeats within about ``seconds``."""
    iters = 200_000
    code.call(1000)  # fault the page in
    while True:  # size one call to a few ms: long enough that thread start-up is noise, short enough to fit between
        # the time slices other processes take on a shared machine (the best repeat is the one nobody interrupted)
        t0 = time.perf_counter()
        code.call(iters)
        if time.perf_counter() - t0 > 0.003 or iters > 1 << 30:
            break
        iters *= 2
    best = float("inf")
    start = time.perf_counter()
    runs = 0
    while runs < 3 or time.perf_counter() - start < seconds:
        workers = [threading.Thread(target=code.call, args=(iters,)) for _ in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return round(ops_per_iteration * iters * threads / best / 1e9, 1)


def measure_vector_rates(threads: int, flags: set[str] | frozenset[str], *, seconds: float = 0.3) -> VectorRates | None:
    """The FP32 FMA and INT8 dot-product rates ``threads`` threads reach here (the widest kernel the flags allow of
    each kind), or None where no kernel can run (not x86-64, no FMA, no executable pages)."""
    from edgecls.runtime.backends import is_x86

    if not is_x86() or ctypes.sizeof(ctypes.c_void_p) != 8 or not hasattr(mmap, "PROT_EXEC"):
        return None
    measured: dict[str, float] = {}
    for name in runnable_kernels(set(flags)):
        kind = name.split()[0]
        if any(m.split()[0] == kind for m in measured):  # the widest of each kind only
            continue
        _, ops, hexcode = _KERNELS[name]
        try:
            measured[name] = _rate(_Code(hexcode), ops, max(1, threads), seconds)
        except (OSError, ValueError, AttributeError, TypeError):  # executable pages refused (SELinux, PaX)
            return None
    if not measured:
        return None
    fp32 = next((v for k, v in measured.items() if k.startswith("fp32")), None)
    int8 = next((v for k, v in measured.items() if k.startswith("int8")), None)
    return VectorRates(fp32, int8, max(1, threads), measured)
