"""Where training runs: device choice, distributed set-up, mixed precision and seeding."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch

from edgecls.errors import UnsupportedOption

log = logging.getLogger("edgecls.train")

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
KEEP_FREED_MEMORY_ENV = "EDGECLS_KEEP_FREED_MEMORY"  # 0 leaves glibc's malloc as it is


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def available_devices() -> list[str]:
    out = ["cpu"]
    if torch.cuda.is_available():
        out += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> cuda (this process's local rank), then mps, then cpu; an unavailable explicit choice is an error."""
    name = name.strip().lower()
    valid = available_devices()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if "mps" in valid:
            return torch.device("mps")
        return torch.device("cpu")
    if name not in valid:
        raise UnsupportedOption(f"--device {name} is not available here; available: {', '.join(valid)} (or auto)")
    if name == "cuda":
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


def init_distributed(device_name: str) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): nccl on CUDA, gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name.lower() in ("auto", "cuda") or device_name.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank)


def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 instructions (AVX512_BF16 or AMX), where CPU autocast pays off."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class Precision:
    """Autocast settings for the training forward pass."""

    enabled: bool
    device_type: str
    dtype: torch.dtype
    scaler: bool  # fp16 on CUDA needs a gradient scaler

    @property
    def name(self) -> str:
        return str(self.dtype).replace("torch.", "") if self.enabled else "float32"

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def choose_precision(device: torch.device, amp: bool) -> Precision:
    if amp and device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(True, "cuda", torch.bfloat16, scaler=False)
        return Precision(True, "cuda", torch.float16, scaler=True)
    if amp and device.type == "cpu" and cpu_has_bf16():
        return Precision(True, "cpu", torch.bfloat16, scaler=False)
    return Precision(False, device.type, torch.float32, scaler=False)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for one epoch: resuming at an epoch boundary replays exactly what an uninterrupted run does."""
    return (seed * 1_000_003 + epoch * 7_919) % (2**31)


def default_workers(device: torch.device | None = None) -> int:
    """Data-loading processes when ``--workers`` is not given: half the cores, at most 4; none for training on a CPU.

    A worker is forked from the training process at every epoch, and while it lives every page the training step
    writes is copied on first write (copy-on-write): on a 2-core Zen 3, one Lite0 epoch over aquarium took 1.2
    million more page faults and 12 s more kernel time with one worker than with none, for 32.4 s against 26.5 s
    per epoch (benchmarks/RESULTS.md). The copies scale with the memory the step writes, not with the cores, while
    decoding and augmenting in the training process costs a few ms an image; ``--workers N`` still overrides.
    """
    if device is not None and device.type == "cpu":
        return 0
    return min(4, max(1, (os.cpu_count() or 2) // 2))


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of giving it back to the kernel after every free.

    A CPU training step allocates and frees activations of tens of MB; glibc serves each block above its mmap
    threshold (32 MB at most) with a fresh ``mmap``, so every step page-faults and zero-fills them again: on a 2-core
    Zen 3, a Lite0 batch-32 step spent 2.1 CPU s of ~10 in the kernel (530,000 page faults); with mmap off and a 1 GB
    trim threshold 0.1-0.17 s (30,000 faults) for 0.2-0.8 GB more peak memory (benchmarks/RESULTS.md). Process-wide,
    for later allocations; does nothing off glibc or with ``EDGECLS_KEEP_FREED_MEMORY=0``. True when it applied.
    """
    if os.environ.get(KEEP_FREED_MEMORY_ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    log.debug("glibc malloc keeps freed memory: %s", applied)
    return applied
