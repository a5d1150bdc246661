"""What ``edgecls bench`` measures (:class:`BenchConfig`); its flags map one to one to the fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgecls.bench._machine import usable_cores
from edgecls.bench._worker import PYTORCH, TORCH_VARIANTS
from edgecls.bench.targets import DEFAULT_MAX_BUSY
from edgecls.config import field as config_field
from edgecls.errors import ConfigError


@dataclass(frozen=True)
class BenchConfig:
    """What ``edgecls bench`` measures; its flags map one to one to these fields.

    Attributes:
        bundle: An ``edgecls export`` bundle folder.
        data: Dataset for the accuracy columns (the bundle's dataset); None times on random inputs only.
        split: Split of ``data`` the accuracy columns (and the timing inputs) come from.
        backends: Keep only these backends (onnxruntime, openvino, tensorrt, coreml, litert, pytorch); empty keeps all.
        artifacts: Keep only these artifacts of the bundle; empty keeps all.
        batch: Batch sizes whose throughput is measured (batch-1 latency is always measured).
        warmup: Untimed calls before timing.
        iters: Timed batch-1 calls at least (a quarter of that, at least 5, for larger batches).
        min_seconds: Each timed loop goes on until it has lasted this long too (a fast model's ``iters`` calls take
            milliseconds, too short a window on a shared machine); ``max_seconds`` still ends it.
        max_seconds: Time budget of one timed loop; it stops early once 5 calls are in.
        threads: CPU threads of every engine (and of PyTorch); None means every core this process may use.
        modes: Engine modes each artifact row is timed in (latency, throughput; see
            :data:`edgecls.runtime.backends.MODES`): one row per mode, the throughput one labelled so.
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

    bundle: str = config_field(help="an edgecls export bundle folder", flag=False)
    data: str | None = config_field(None, help="dataset of the bundle, for the mAP/F1 columns", shown="none")
    split: str = config_field("valid", help="split of --data to measure on")
    backends: tuple[str, ...] = config_field((), help="comma-separated backend names", shown="all here")
    artifacts: tuple[str, ...] = config_field((), help="only this artifact of the bundle (repeatable)",
                                              cli_name="--artifact", multiple=True)
    batch: tuple[int, ...] = config_field((1, 8, 32), help="batch sizes whose throughput is measured")
    warmup: int = config_field(10, help="untimed calls before timing")
    iters: int = config_field(50, help="timed batch-1 calls, at least")
    min_seconds: float = config_field(1.0, help="each timed loop also lasts at least this long (--max-seconds still "
                                                "ends it)")
    max_seconds: float = config_field(10.0, help="time budget of one timed loop")
    threads: int | None = config_field(None, help="CPU threads per engine", shown="all usable cores")
    modes: tuple[str, ...] = config_field(("latency", "throughput"),
                                          help="engine modes, one row each: latency, throughput")
    torch_variants: tuple[str, ...] = config_field(
        TORCH_VARIANTS, help=f"PyTorch reference rows ({', '.join(TORCH_VARIANTS)}), or none")
    checkpoint: str | None = config_field(None, help="checkpoint of the PyTorch rows", shown="the bundle's source")
    isolate: bool = config_field(True, help="run each row in a fresh interpreter", flag=False)
    row_timeout: float = config_field(900.0, help="seconds one isolated row may take", flag=False)
    rounds: int = config_field(1, help="measure every row this many times, interleaved; report the medians")
    max_busy: float = config_field(
        DEFAULT_MAX_BUSY, help="share of all CPUs other processes may take during the rows a speed target compares; "
                               "above it the target reads 'not judged: machine busy (N%)'")
    verify: bool = config_field(
        True, help="check the model files against the sha256 in the bundle's manifest before timing them")
    targets: str | None = config_field(
        None, help="a targets file (e.g. benchmarks/targets.yaml) whose speed targets the run judges",
        shown="none: report the rows, judge nothing")

    def __post_init__(self) -> None:
        from edgecls.runtime.backends import BACKEND_NAMES, check_threads

        for name in ("backends", "artifacts", "batch", "torch_variants", "modes"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, (str, int)) else tuple(value))
        valid = (*BACKEND_NAMES, PYTORCH)
        for name in self.backends:
            if name not in valid:
                raise ConfigError(f"--backends: unknown backend {name!r}; valid: {', '.join(valid)}")
        if not self.modes:
            raise ConfigError("--modes needs at least one of latency, throughput")
        for name in self.modes:
            if name not in ("latency", "throughput"):
                raise ConfigError(f"--modes: unknown engine mode {name!r}; valid: latency, throughput")
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
