"""One benchmark run: the rows of :mod:`edgecls.bench.plan` measured in interleaved rounds (each in its own
interpreter unless ``isolate`` is off), scored on :mod:`edgecls.bench.inputs`, with the figures derived from them
(speed-up over PyTorch eager, GOP/s, share of the CPU's peak, mAP drop) and the verdicts of the targets file, if one
was given."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import tempfile
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgecls.bench._machine import CpuMeter, Peak, machine_info, measure_gemm_gflops, peak_estimate
from edgecls.bench._worker import PYTORCH, RowSpec, child_env, measure
from edgecls.bench.inputs import load_eval_data
from edgecls.bench.plan import PlannedRow, plan_rows
from edgecls.bench.results import BenchResult, BenchRow
from edgecls.bench.targets import check_targets, load_targets
from edgecls.errors import ConfigError
from edgecls.runtime.backends import cpu_flags

if TYPE_CHECKING:
    from edgecls.bench.config import BenchConfig

log = logging.getLogger("edgecls.bench")


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


def _row(plan: PlannedRow, raw: dict[str, Any], logits: np.ndarray | None, targets: np.ndarray | None,
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


def _bandwidth(threads: int) -> Any:
    from edgecls.bench._roofline import measure_bandwidth

    try:
        return measure_bandwidth(threads)
    except MemoryError:  # a small device: no roofline rather than no benchmark
        log.warning("bench: not enough memory to measure the bandwidth; no roofline columns")
        return None


def _vector_rates(threads: int, machine: Any) -> Any:
    """The FMA / VNNI rates ``threads`` threads reach here (:mod:`edgecls.bench._kernels`), None where none runs."""
    from edgecls.bench._kernels import measure_vector_rates

    return measure_vector_rates(threads, set(machine.isa) | set(cpu_flags()))


def _lifted_by_kernels(peak: Peak, vector: Any) -> Peak:
    """The peak at the clock the micro-kernels prove (the reported clock of a VM is often its base clock; the cores
    run vector code at their boost clock): never lower than the estimate, so the roofline built on it stays a bound."""
    if vector is None:
        return peak
    evidence = [(f"a micro-kernel of {name}", "int8" if name.startswith("int8") else "f32", gops)
                for name, gops in vector.kernels.items()]
    return peak.lifted(evidence)


def _with_roofline(rows: list[BenchRow], manifest: Any, root: Path, machine: Any, peak: Peak,
                   bandwidth: Any) -> tuple[list[BenchRow], dict[str, dict[str, Any]]]:
    """Each row's roofline bound (its precision, its best batch) and its share of it; the bounds by "prec bN"."""
    from edgecls._deps import has

    float_onnx = [a for a in manifest.artifacts if a.format == "onnx" and a.precision == "fp32"]
    if bandwidth is None or not float_onnx or not has("onnx"):
        return rows, {}
    from edgecls.bench._roofline import node_costs, roofline, unit_rates

    try:
        costs = node_costs(root / float_onnx[0].path)
    except Exception as exc:  # an odd graph must not cost the whole benchmark
        log.warning("bench: no roofline (%s)", exc)
        return rows, {}
    bounds: dict[str, Any] = {}
    out = []
    for r in rows:
        if not r.ok or not r.throughput or r.backend == PYTORCH:
            out.append(r)
            continue
        batch, ips = max(r.throughput.items(), key=lambda kv: kv[1])
        key = f"{r.precision} b{batch}"
        if key not in bounds:
            bounds[key] = roofline(costs, rates=unit_rates(machine, r.precision), ghz=peak.ghz, cores=peak.cores,
                                   gbs=bandwidth.dram_gbs, precision=r.precision, batch=int(batch),
                                   cache_gbs=bandwidth.cache_gbs, cache_bytes=bandwidth.cache_bytes)
        bound = bounds[key]
        out.append(replace(r, roofline_ips=round(bound.images_per_second, 1),
                           roofline_fraction=round(ips / bound.images_per_second, 4) if bound.images_per_second
                           else None, roofline_bound=bound.bound))
    return out, {k: v.to_dict() | {"summary": v.summary()} for k, v in bounds.items()}


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
    """Measure every row of ``config.bundle`` that runs here; see :mod:`edgecls.bench`.

    Raises:
        ConfigError: Not a bundle, an unknown artifact, a --checkpoint that is not the bundle's, or a bad targets
            file.
        DataError: ``data`` has other classes than the bundle, or the split has no readable image.
    """
    from edgecls._deps import library_versions
    from edgecls.manifest import Manifest

    speed_targets = load_targets(config.targets) if config.targets else ()  # a bad file fails before measuring
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
            images, targets, known, skipped = load_eval_data(root, manifest, config.data, config.split)
            np.save(work / "images.npy", images)
            data_info = {"data": str(config.data), "split": config.split, "images": int(len(images)),
                         "skipped": skipped}
        base = dict(threads=threads, batches=config.batch, warmup=config.warmup, iters=config.iters,
                    min_seconds=config.min_seconds, max_seconds=config.max_seconds,
                    images=str(work / "images.npy") if images is not None else None,
                    input_shape=tuple(int(d) for d in manifest.input_shape[1:]))
        not_run: list[tuple[str, str]] = []
        planned = plan_rows(manifest, root, config, base, not_run)
        if not planned:
            reasons = "; ".join(f"{r}: {why}" for r, why in not_run) or "the filters left nothing"
            raise ConfigError(f"bundle {root}: nothing to benchmark here ({reasons})")
        load_before = _load_average()
        meter = CpuMeter().start()
        gemm = measure_gemm_gflops()
        vector = _vector_rates(peak.cores, machine)
        peak = _lifted_by_kernels(peak, vector)
        bandwidth = _bandwidth(threads)
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
    rows, rooflines = _with_roofline(rows, manifest, root, machine, peak, bandwidth)
    result = BenchResult(
        bundle=root, config=config, machine=machine, peak=peak, gemm_gflops=gemm, macs=macs, rows=rows,
        not_run=not_run, versions=library_versions(), data=data_info,
        created=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        load_average=(load_before, _load_average()) if load_before is not None else None, cpu_share=cpu_share,
        bandwidth=bandwidth.to_dict() if bandwidth else None, rooflines=rooflines,
        vector_rates=vector.to_dict() if vector else None,
    )
    result.checks = check_targets(result, speed_targets)
    return result
