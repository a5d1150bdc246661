"""Benchmark a bundle: every artifact on every backend that runs here, speed and accuracy side by side.

``run(BenchConfig(bundle=...))`` measures, for each artifact x backend x device (x inference precision, for OpenVINO
float IRs) this machine can run, plus PyTorch rows built from the bundle's source checkpoint when torch is installed:
load time, batch-1 latency percentiles, throughput at each batch size, peak RSS, file size, mAP and F1 at the
artifact's thresholds on a data split, speed-up against PyTorch eager FP32, and achieved GOP/s against this CPU's
estimated peak. Each row runs in a fresh interpreter with a fixed thread count (``isolate``), all rows in one run so
their ratios hold on a noisy machine.

    from edgecls.bench import BenchConfig, run
    result = run(BenchConfig(bundle="bundles/lite0", data="data.yaml"))
    print(result.table())
    print(compare(result.to_dict(), load_baseline("bench.json"), baseline="bench.json").table())
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecls.bench._compare import Comparison, RowDiff, compare, load_baseline
from edgecls.bench._machine import (
    CpuMeter,
    CpuShare,
    Machine,
    Peak,
    machine_info,
    measure_gemm_gflops,
    peak_estimate,
    usable_cores,
)
from edgecls.bench._report import DEFAULT_MAX_BUSY, Check, check_targets, format_markdown, format_table, plot_rows
from edgecls.bench._worker import PYTORCH, TORCH_VARIANTS, RowSpec, child_env, measure
from edgecls.config import field as config_field
from edgecls.errors import ConfigError, DataError

__all__ = ["BenchConfig", "BenchResult", "BenchRow", "Check", "Comparison", "CpuShare", "Machine", "Peak", "RowDiff",
           "compare", "load_baseline", "run"]

log = logging.getLogger("edgecls.bench")



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

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle), "created": self.created, "config": self.config.to_dict(),
            "load_average": self.load_average, "cpu_share": self.cpu_share.to_dict() if self.cpu_share else None,
            "machine": self.machine.to_dict(), "peak": self.peak.to_dict(), "gemm_fp32_gflops": self.gemm_gflops,
            "macs_per_image": self.macs, "data": self.data, "versions": self.versions,
            "rows": [r.to_dict() for r in self.rows], "not_run": [{"row": r, "reason": why} for r, why in self.not_run],
            "checks": [c.to_dict() for c in self.checks],
        }

    def table(self) -> str:
        return format_table(self)

    def markdown(self) -> str:
        return format_markdown(self)

    def plot(self, path: str | Path) -> Path:
        return plot_rows(self, Path(path))


# ---------------------------------------------------------------------------------------------------------------------
# what to run


@dataclass(frozen=True)
class _Planned:
    spec: RowSpec
    size_mb: float | None
    thresholds: np.ndarray
    parity_passed: bool | None
    int8: bool


def _model_size_mb(path: Path) -> float:
    from edgecls.bundle import size_mb

    total = size_mb(path)
    if path.suffix.lower() == ".xml" and path.with_suffix(".bin").is_file():
        total += size_mb(path.with_suffix(".bin"))
    if path.suffix.lower() == ".onnx":
        total += sum(size_mb(p) for p in path.parent.glob(path.name + ".data"))
    return round(total, 3)


def _parity_passed(art: Any) -> bool | None:
    parity = art.parity or {}
    return parity.get("passed") if "not_run" not in parity else None


def _plan_artifacts(manifest: Any, root: Path, cfg: BenchConfig, base: dict[str, Any],
                    not_run: list[tuple[str, str]]) -> list[_Planned]:
    from edgecls.runtime.plan import plan_all

    choices, skipped = plan_all(manifest, root, backends=cfg.backends, artifacts=cfg.artifacts, verify=cfg.verify)
    not_run.extend(skipped)
    planned = []
    for c in choices:
        art = c.artifact
        shown = "int8" if art.precision == "int8" else c.precision or "default"
        label = f"{art.name} · {c.backend} {str(c.device).lower()} {shown}"
        spec = RowSpec(label=label, kind="backend", model=str(c.path), backend=c.backend, device=c.device,
                       precision=c.precision, artifact=art.name, **base)
        thresholds = np.asarray(art.thresholds or manifest.thresholds, dtype=np.float64)
        planned.append(_Planned(spec, _model_size_mb(c.path), thresholds, _parity_passed(art),
                                art.precision == "int8"))
    return planned


def _find_checkpoint(root: Path, manifest: Any, given: str | None) -> tuple[Path | None, str]:
    """The checkpoint of the PyTorch rows and, when there is none, why."""
    from edgecls._io import sha256_file
    from edgecls.bundle import CONFIG_NAME

    if given:
        path = Path(given)
        candidates = [path]
    else:
        try:
            recorded = json.loads((root / CONFIG_NAME).read_text(encoding="utf-8")).get("checkpoint")
        except (OSError, ValueError):
            recorded = None
        if not recorded:
            return None, f"no source checkpoint recorded in {root / CONFIG_NAME}; pass --checkpoint"
        path = Path(recorded)
        candidates = [path] if path.is_absolute() else [Path.cwd() / path, root.parent / path]
    for cand in candidates:
        file = cand / "best.pt" if cand.is_dir() else cand
        if not file.is_file():
            continue
        if manifest.source_checkpoint_sha256 and sha256_file(file) != manifest.source_checkpoint_sha256:
            if given:
                raise ConfigError(f"--checkpoint {given}: not the checkpoint this bundle was exported from (sha256 "
                                  "differs); pass the bundle's own checkpoint or drop --checkpoint")
            return None, f"{file} has changed since the export (sha256 differs); pass --checkpoint"
        return file, ""
    if given:
        raise ConfigError(f"--checkpoint {given}: no such checkpoint file or run folder")
    return None, f"the source checkpoint {path} is not here; pass --checkpoint"


def _plan_torch(manifest: Any, root: Path, cfg: BenchConfig, base: dict[str, Any],
                not_run: list[tuple[str, str]]) -> list[_Planned]:
    from edgecls._deps import has

    if (cfg.backends and PYTORCH not in cfg.backends) or not cfg.torch_variants:
        return []
    if not has("torch"):
        not_run.append((PYTORCH, 'torch is not installed (pip install "edgecls[train]")'))
        return []
    ckpt, why = _find_checkpoint(root, manifest, cfg.checkpoint)
    if ckpt is None:
        not_run.append((PYTORCH, why))
        return []
    thresholds = np.asarray(manifest.thresholds, dtype=np.float64)
    planned = []
    for variant in cfg.torch_variants:
        spec = RowSpec(label=f"pytorch {variant.replace('_', '-')} fp32", kind=PYTORCH, model=str(ckpt),
                       backend=PYTORCH, device="cpu", precision="f32", artifact=PYTORCH, variant=variant, **base)
        planned.append(_Planned(spec, round(ckpt.stat().st_size / 1e6, 3), thresholds, None, False))
    return planned


# ---------------------------------------------------------------------------------------------------------------------
# data


def _eval_data(root: Path, manifest: Any, data: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Preprocessed images, targets and known-masks of ``split``, loaded the way the bundle's export loaded its data."""
    from edgecls.bundle import read_parity
    from edgecls.data import DataSpec, load_from_spec
    from edgecls.preprocess import preprocess_paths

    try:
        settings = read_parity(root).get("data", {})
    except ConfigError:
        settings = {}
    dataset = load_from_spec(DataSpec.from_bundle(settings), data=data, class_names=manifest.class_names,
                             owner="bundle")
    part = dataset.split(split)
    if not part.samples:
        raise DataError(f"{data}: the {split!r} split has no readable images; pick another with --split")
    images = preprocess_paths([s.path for s in part.samples], manifest.preprocess, what="the benchmark")
    targets = np.stack([s.target for s in part.samples]).astype(np.float32)
    known = np.stack([s.known for s in part.samples]).astype(bool)
    return images, targets, known, len(dataset.skipped)


# ---------------------------------------------------------------------------------------------------------------------
# measuring


def _measure_isolated(spec: RowSpec, work: Path, index: int, timeout: float) -> dict[str, Any]:
    spec_file, result_file = work / f"row{index}.json", work / f"row{index}.result.json"
    spec_file.write_text(json.dumps(spec.to_dict()), encoding="utf-8")
    try:
        proc = subprocess.run([sys.executable, "-m", "edgecls.bench._worker", str(spec_file), str(result_file)],
                              env=child_env(spec.threads), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if result_file.is_file():
        return json.loads(result_file.read_text(encoding="utf-8"))
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
    return {"error": f"the row's process died ({proc.returncode}): {tail[0][:300]}"}


def _row(plan: _Planned, raw: dict[str, Any], logits: np.ndarray | None, targets: np.ndarray | None,
         known: np.ndarray | None, class_names: Sequence[str]) -> BenchRow:
    spec = plan.spec
    if "error" in raw:
        return BenchRow(spec.label, spec.artifact, spec.backend, spec.device or "", spec.precision or "",
                        spec.variant, size_mb=plan.size_mb, parity_passed=plan.parity_passed, error=raw["error"])
    info = raw.get("info", {})
    precision = "int8" if plan.int8 else str(info.get("inference_precision") or info.get("precision") or "f32")
    scores: dict[str, float] = {}
    if logits is not None and targets is not None:
        from edgecls.metrics import compute_metrics, sigmoid

        report = compute_metrics(sigmoid(logits), targets, known, class_names, plan.thresholds)
        scores = {"map": report.map, "f1_micro": report.f1_micro, "f1_macro": report.f1_macro}
    return BenchRow(
        label=spec.label, artifact=spec.artifact, backend=spec.backend, device=str(info.get("device", spec.device)),
        precision=precision, variant=spec.variant, load_seconds=raw["load_seconds"],
        first_call_seconds=raw["first_call_seconds"], latency_ms=raw["latency_ms"],
        p50_rounds=tuple(raw.get("p50_rounds", ())),
        throughput={int(k): v for k, v in raw["throughput"].items()}, peak_rss_mb=raw.get("peak_rss_mb"),
        size_mb=plan.size_mb, parity_passed=plan.parity_passed, info=info, busy=raw.get("busy"),
        **{k: (None if v is None or math.isnan(v) else round(float(v), 4)) for k, v in scores.items()},
    )


def _median_of(raws: list[dict[str, Any]]) -> dict[str, Any]:
    """One row's figures over its rounds: medians of the timings, the largest peak RSS; an error only when every
    round failed."""
    ok = [r for r in raws if "error" not in r]
    if not ok:
        return raws[0]
    if len(ok) == 1:
        return ok[0]

    def med(values: list[float]) -> float:
        return round(float(np.median(values)), 4)

    out = dict(ok[0])
    out["rounds"] = len(ok)
    for key in ("load_seconds", "first_call_seconds"):
        out[key] = med([r[key] for r in ok])
    out["latency_ms"] = {k: med([r["latency_ms"][k] for r in ok]) for k in ok[0]["latency_ms"] if k != "runs"}
    out["latency_ms"]["runs"] = sum(r["latency_ms"]["runs"] for r in ok)
    out["p50_rounds"] = [r["latency_ms"]["p50"] for r in ok]
    out["throughput"] = {b: med([r["throughput"][b] for r in ok]) for b in ok[0]["throughput"]}
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
    busy = [r["busy"] for r in ok if r.get("busy") is not None]
    out["busy"] = max(busy) if busy else None
    return out


def _macs(manifest: Any, root: Path) -> int | None:
    """Multiply-accumulates per image, counted on the bundle's float ONNX (None without one or without onnx)."""
    from edgecls._deps import has

    float_onnx = [a for a in manifest.artifacts if a.format == "onnx" and a.precision == "fp32"]
    if not float_onnx or not has("onnx"):
        return None
    from edgecls.bench._flops import count_macs

    try:
        return count_macs(root / float_onnx[0].path)
    except Exception as exc:  # an odd graph must not cost the whole benchmark
        log.warning("bench: could not count the model's multiply-adds (%s); GOP/s columns stay empty", exc)
        return None


def _with_derived(rows: list[BenchRow], macs: int | None, peak: Peak, reference_map: float | None,
                  map_budget: float) -> tuple[list[BenchRow], Peak]:
    """Speed-up over PyTorch eager, GOP/s and share of the peak, and the mAP drop against the reference: a row whose
    drop on these images breaks the bundle's mAP budget does not count as within parity, whatever the export saw
    (e.g. a Q/DQ file meant for TensorRT on an engine whose int8 kernels saturate on this CPU). Returns the rows and
    the peak estimate, raised when a row went faster than it allows (:meth:`Peak.lifted`)."""
    achieved = [round(2.0 * macs * max(r.throughput.values()) / 1e9, 2) if r.ok and macs and r.throughput else None
                for r in rows]  # GOP/s at each row's best batch
    peak = peak.lifted([(r.label, r.precision, g) for r, g in zip(rows, achieved) if g is not None])
    eager = next((r for r in rows if r.ok and r.backend == PYTORCH and r.variant == "eager"), None)
    torch_map = next((r.map for r in rows if r.ok and r.backend == PYTORCH and r.map is not None), None)
    ref = torch_map if torch_map is not None else reference_map
    out = []
    for r, gops in zip(rows, achieved):
        if not r.ok:
            out.append(r)
            continue
        drop = round(ref - r.map, 4) if ref is not None and r.map is not None else None
        passed = r.parity_passed
        if passed is not None and drop is not None and drop > map_budget:
            passed = False
        speedup = round(eager.p50 / r.p50, 2) if eager and r.p50 else None
        fraction = None
        if gops is not None:
            bound = peak.for_precision(r.precision)
            fraction = round(gops / bound, 4) if bound else None
        out.append(replace(r, speedup=speedup, gops=gops, peak_fraction=fraction, map_drop=drop, parity_passed=passed))
    return out, peak


def _load_average() -> float | None:
    import os

    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # Windows
        return None


def _reference(root: Path, manifest: Any, config: BenchConfig) -> tuple[float | None, float]:
    """PyTorch's mAP on the parity split (when the bench scores that split) and the bundle's mAP budget."""
    from edgecls.bundle import DEFAULT_MAX_MAP_DROP, read_parity

    try:
        doc = read_parity(root)
    except ConfigError:
        doc = {}
    budget = float(doc.get("budgets", {}).get("max_map_drop", DEFAULT_MAX_MAP_DROP))
    same_split = config.data and manifest.metrics.get("split") == config.split
    ref = manifest.metrics.get("map") if same_split else None
    return (float(ref) if ref is not None else None), budget


def run(config: BenchConfig) -> BenchResult:
    """Measure every row of ``config.bundle`` that runs here; see the module docstring.

    Raises:
        ConfigError: Not a bundle, an unknown artifact, or a --checkpoint that is not the bundle's.
        DataError: ``data`` has other classes than the bundle, or the split has no readable image.
    """
    from edgecls._deps import library_versions
    from edgecls.manifest import Manifest

    root = Path(config.bundle)
    manifest = Manifest.load(root)
    threads = config.thread_count
    machine = machine_info()
    peak = peak_estimate(machine, cores=min(threads, machine.cores))
    with tempfile.TemporaryDirectory(prefix="edgecls-bench-") as tmp:
        work = Path(tmp)
        images = targets = known = None
        data_info: dict[str, Any] = {}
        if config.data:
            images, targets, known, skipped = _eval_data(root, manifest, config.data, config.split)
            np.save(work / "images.npy", images)
            data_info = {"data": str(config.data), "split": config.split, "images": int(len(images)),
                         "skipped": skipped}
        base = dict(threads=threads, batches=config.batch, warmup=config.warmup, iters=config.iters,
                    min_seconds=config.min_seconds, max_seconds=config.max_seconds,
                    images=str(work / "images.npy") if images is not None else None,
                    input_shape=tuple(int(d) for d in manifest.input_shape[1:]))
        not_run: list[tuple[str, str]] = []
        planned = _plan_torch(manifest, root, config, base, not_run) + _plan_artifacts(manifest, root, config, base,
                                                                                      not_run)
        if not planned:
            reasons = "; ".join(f"{r}: {why}" for r, why in not_run) or "the filters left nothing"
            raise ConfigError(f"bundle {root}: nothing to benchmark here ({reasons})")
        load_before = _load_average()
        meter = CpuMeter().start()
        gemm = measure_gemm_gflops()
        raws: list[list[dict[str, Any]]] = [[] for _ in planned]
        for rnd in range(config.rounds):
            order = list(range(len(planned)))
            for i in order[::-1] if rnd % 2 else order:
                first = rnd == 0
                logits_out = str(work / f"row{i}.logits.npy") if images is not None and first else None
                spec = replace(planned[i].spec, logits_out=logits_out)
                log.info("bench: [%d/%d]%s %s", i + 1, len(planned),
                         f" round {rnd + 1}/{config.rounds}" if config.rounds > 1 else "", spec.label)
                row_meter = CpuMeter().start()
                if config.isolate:
                    raw = _measure_isolated(spec, work, i, config.row_timeout)
                else:
                    try:
                        raw = measure(spec)
                    except Exception as exc:
                        raw = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
                share = row_meter.stop()
                raw["busy"] = round(share.others + share.steal, 4) if share is not None else None
                raws[i].append(raw)
        cpu_share = meter.stop()
        rows = []
        for i, plan in enumerate(planned):
            logits_file = work / f"row{i}.logits.npy"
            logits = np.load(logits_file) if images is not None and logits_file.is_file() else None
            row = _row(plan, _median_of(raws[i]), logits, targets, known, manifest.class_names)
            if row.error:
                log.warning("bench: %s failed: %s", plan.spec.label, row.error)
            rows.append(row)
    macs = _macs(manifest, root)
    reference_map, map_budget = _reference(root, manifest, config)
    rows, peak = _with_derived(rows, macs, peak, reference_map, map_budget)
    result = BenchResult(
        bundle=root, config=config, machine=machine, peak=peak, gemm_gflops=gemm, macs=macs, rows=rows,
        not_run=not_run, versions=library_versions(), data=data_info,
        created=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        load_average=(load_before, _load_average()) if load_before is not None else None, cpu_share=cpu_share,
    )
    result.checks = check_targets(result)
    return result
