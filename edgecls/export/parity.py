"""Parity: does an exported artifact agree with the PyTorch model it came from, within its budget?

:func:`check_parity` compares two sets of logits on the same preprocessed images (the export, ``edgecls parity`` and
the tests all use it): max and mean |delta probability|, decision agreement, mAP of each and the mAP drop, with
per-class thresholds re-tuned for the artifact. The budget depends on the precision that was measured:

* fp32: max |delta p| <= ``fp32_tolerance`` (1e-4): an FP32 artifact that differs more is a bug.
* fp16 / bf16: decision agreement >= ``fp16_min_agreement`` (0.99) and mAP drop <= ``fp16_max_map_drop`` (0.01
  absolute). Half precision moves probabilities by a hundredth or so without changing what the model decides, so
  the gate is the decisions and the metric, as for INT8; max and mean |delta p| are reported beside them, and
  ``fp16_tolerance`` adds a max |delta p| budget for whoever wants one (off by default).
* int8 / int8-weights: mAP drop <= ``max_map_drop`` (0.01 absolute) and decision agreement >=
  ``int8_min_agreement`` (0.95); probabilities legitimately move by a few hundredths under INT8, so the gate is the
  metric and the decisions (a ranking metric alone let 8% of decisions flip), not max |delta p|.

A broken budget's message names the ``edgecls export`` flag that sets it (:attr:`ParityReport.broken`).

Only numpy here (and the runtime backends in :func:`run_backend`): this runs on devices without torch.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgecls.bundle import (
    DEFAULT_FP16_MAX_MAP_DROP,
    DEFAULT_FP16_MIN_AGREEMENT,
    DEFAULT_FP16_TOLERANCE,
    DEFAULT_FP32_TOLERANCE,
    DEFAULT_INT8_MIN_AGREEMENT,
    DEFAULT_MAX_MAP_DROP,
)
from edgecls.config import check_keys
from edgecls.errors import ConfigError
from edgecls.manifest import artifact_precision as artifact_precision_of
from edgecls.metrics import mean_average_precision, sigmoid, tune_thresholds

__all__ = ["Budgets", "ParityReport", "budget_precision", "check_parity", "format_table", "run_backend"]

PRECISIONS = ("fp32", "fp16", "bf16", "int8-weights", "int8")
_RANK = {"fp32": 4, "fp16": 3, "bf16": 3, "int8-weights": 1, "int8": 0}


@dataclass(frozen=True)
class Budgets:
    """How far an artifact may be from the reference, per measured precision (see the module docstring).

    Attributes:
        fp32_tolerance: FP32: largest max |delta p| (``--fp32-tolerance``).
        fp16_tolerance: FP16/BF16: largest max |delta p|, or None for no such budget (``--fp16-tolerance``).
        max_map_drop: INT8: largest mAP drop, absolute (``--max-map-drop``).
        fp16_min_agreement: FP16/BF16: smallest share of decisions that agree with the reference's, each at its
            tuned thresholds (``--fp16-min-agreement``).
        fp16_max_map_drop: FP16/BF16: largest mAP drop, absolute (``--fp16-max-map-drop``).
        int8_min_agreement: INT8: smallest share of decisions that agree with the reference's, each at its tuned
            thresholds (``--int8-min-agreement``).
    """

    fp32_tolerance: float = DEFAULT_FP32_TOLERANCE
    fp16_tolerance: float | None = DEFAULT_FP16_TOLERANCE
    max_map_drop: float = DEFAULT_MAX_MAP_DROP
    fp16_min_agreement: float = DEFAULT_FP16_MIN_AGREEMENT
    fp16_max_map_drop: float = DEFAULT_FP16_MAX_MAP_DROP
    int8_min_agreement: float = DEFAULT_INT8_MIN_AGREEMENT

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name == "fp16_tolerance":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{f.name} must be a finite number >= 0, got {value!r}")
        for name in ("fp16_min_agreement", "int8_min_agreement"):
            if getattr(self, name) > 1:
                raise ConfigError(f"{name} is a share of decisions, 0 to 1, got {getattr(self, name)!r}")

    def describe(self, precision: str) -> str:
        if precision == "fp32":
            return f"max |dp| <= {self.fp32_tolerance:g}"
        if precision in ("fp16", "bf16"):
            text = f"agreement >= {self.fp16_min_agreement:g}, mAP drop <= {self.fp16_max_map_drop:g}"
            return text + ("" if self.fp16_tolerance is None else f", max |dp| <= {self.fp16_tolerance:g}")
        return f"mAP drop <= {self.max_map_drop:g}, agreement >= {self.int8_min_agreement:g}"

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Budgets":
        """Read ``parity.json``'s budgets; those of older bundles (without the FP16 or INT8 decision budgets) load
        with the defaults for the missing fields and keep the max |delta p| budget they were written with."""
        check_keys(cls, data, "parity budgets")
        return cls(**{k: None if v is None else float(v) for k, v in data.items()})


def budget_precision(artifact_precision: str, backend_precision: str | None = None) -> str:
    """The precision a measurement is judged at: the lower of what the file stores and what the backend computed in
    (an FP16 IR run in f32 is judged as fp16; an FP32 ONNX run by a bf16 plugin as bf16)."""
    if artifact_precision not in _RANK:
        raise ConfigError(f"unknown precision {artifact_precision!r}; valid: {', '.join(PRECISIONS)}")
    measured = artifact_precision_of(backend_precision) if backend_precision else None
    if measured is None or _RANK[measured] >= _RANK[artifact_precision]:
        return artifact_precision
    return measured


@dataclass(frozen=True)
class ParityReport:
    """How one artifact compares with the reference on the same images.

    Attributes:
        artifact: Target name of the artifact.
        precision: Precision the budget was chosen for (see :func:`budget_precision`).
        num_samples: Images compared.
        max_abs_diff: Max |p_artifact - p_reference| over every image and class (p = sigmoid(logit)).
        mean_abs_diff: Mean of the same.
        agreement: Share of (image, class) decisions that agree, each model at thresholds tuned the same way on
            these images (the artifact at its re-tuned thresholds, the reference re-tuned alike), so an artifact whose
            outputs equal the reference's agrees fully whatever split the reference's own thresholds came from.
        agreement_at_reference: The same with both at the reference thresholds.
        map_reference: mAP of the reference (known labels only).
        map_artifact: mAP of the artifact.
        map_drop: ``map_reference - map_artifact`` (negative: the artifact scored higher).
        thresholds: Per-class thresholds re-tuned (max F1) on these images for the artifact.
        passed: Whether the budget holds.
        budget: The budget, in words.
        broken: Each broken part of the budget with the measured value and the ``edgecls export`` flag that sets
            it ("" when it holds).
        backend: Runtime backend that ran the artifact; ``device`` and ``backend_precision`` as it reported them.
        split: Dataset split of the images.
        note: Anything the reader should know (e.g. "portable ONNX measured with onnxruntime").
    """

    artifact: str
    precision: str
    num_samples: int
    max_abs_diff: float
    mean_abs_diff: float
    agreement: float
    agreement_at_reference: float
    map_reference: float
    map_artifact: float
    map_drop: float
    thresholds: tuple[float, ...]
    passed: bool
    budget: str
    broken: str = ""
    backend: str = ""
    device: str = ""
    backend_precision: str = ""
    split: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["thresholds"] = [float(t) for t in self.thresholds]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ParityReport":
        check_keys(cls, data, "parity report")
        values = dict(data)
        for key in ("max_abs_diff", "mean_abs_diff", "agreement", "agreement_at_reference", "map_reference",
                    "map_artifact", "map_drop"):
            if key in values and values[key] is None:  # JSON null for NaN
                values[key] = math.nan
        values["thresholds"] = tuple(float(t) for t in values.get("thresholds", ()))
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"parity report: incomplete ({exc})") from None

    def summary(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        why = f"{self.broken}; " if self.broken else ""
        return (f"{self.artifact}: {verdict} ({why}{self.budget}; max |dp| {self.max_abs_diff:.2e}, mean |dp| "
                f"{self.mean_abs_diff:.2e}, mAP drop {self.map_drop:+.4f}, agreement {self.agreement:.4f})")


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b)) if a.size else math.nan


def _broken(precision: str, budgets: Budgets, max_diff: float, agreement: float, drop: float) -> list[str]:
    """The parts of the budget a measurement breaks, each with the flag that sets it."""
    broken = []
    if precision == "fp32":
        if not max_diff <= budgets.fp32_tolerance:
            broken.append(f"max |dp| {max_diff:.2e} > {budgets.fp32_tolerance:g} (--fp32-tolerance)")
    elif precision in ("fp16", "bf16"):
        if not (math.isfinite(agreement) and agreement >= budgets.fp16_min_agreement):
            broken.append(f"decision agreement {agreement:.4f} < {budgets.fp16_min_agreement:g} "
                          "(--fp16-min-agreement)")
        if math.isfinite(drop) and drop > budgets.fp16_max_map_drop:
            broken.append(f"mAP drop {drop:+.4f} > {budgets.fp16_max_map_drop:g} (--fp16-max-map-drop)")
        if budgets.fp16_tolerance is not None and not max_diff <= budgets.fp16_tolerance:
            broken.append(f"max |dp| {max_diff:.2e} > {budgets.fp16_tolerance:g} (--fp16-tolerance)")
    else:
        if not (math.isfinite(drop) and drop <= budgets.max_map_drop):
            broken.append(f"mAP drop {drop:+.4f} > {budgets.max_map_drop:g} (--max-map-drop)" if math.isfinite(drop)
                          else "mAP drop undefined (--max-map-drop cannot be checked)")
        if not (math.isfinite(agreement) and agreement >= budgets.int8_min_agreement):
            broken.append(f"decision agreement {agreement:.4f} < {budgets.int8_min_agreement:g} "
                          "(--int8-min-agreement)")
    return broken


def check_parity(
    reference_logits: np.ndarray,
    artifact_logits: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray | None,
    *,
    precision: str,
    budgets: Budgets,
    reference_thresholds: np.ndarray | None = None,
    artifact: str = "",
    split: str = "",
) -> ParityReport:
    """Compare an artifact's logits with the reference's on the same images and judge them by ``budgets``.

    Args:
        reference_logits: ``(N, K)`` logits of the reference (PyTorch FP32).
        artifact_logits: ``(N, K)`` logits of the artifact.
        targets: ``(N, K)`` 0/1 labels; ``known`` the ``(N, K)`` mask of known labels (None: all known).
        precision: Precision to judge at (fp32, fp16, bf16, int8, int8-weights).
        budgets: Tolerances.
        reference_thresholds: The reference's per-class thresholds; None re-tunes them on the reference.
        artifact: Name for the report; ``split`` the split the images came from.

    Returns:
        The report. Non-finite artifact outputs fail it (``max_abs_diff`` is inf).
    """
    ref = np.asarray(reference_logits, dtype=np.float64)
    art = np.asarray(artifact_logits, dtype=np.float64)
    if ref.shape != art.shape or ref.ndim != 2:
        raise ConfigError(f"reference logits {ref.shape} and artifact logits {art.shape} must have the same (N, K) "
                          "shape")
    if precision not in _RANK:
        raise ConfigError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    p_ref = sigmoid(ref)
    k = ref.shape[1]
    t_ref = (np.asarray(reference_thresholds, dtype=np.float64) if reference_thresholds is not None
             else tune_thresholds(p_ref, targets, known).astype(np.float64))
    if t_ref.shape != (k,):
        raise ConfigError(f"reference thresholds have shape {t_ref.shape}, expected ({k},)")
    map_ref = mean_average_precision(p_ref, targets, known)
    budget = budgets.describe(precision)
    if not np.all(np.isfinite(art)):
        bad = int((~np.isfinite(art)).sum())
        return ParityReport(artifact, precision, len(ref), math.inf, math.inf, 0.0, 0.0, map_ref, math.nan, math.nan,
                            tuple(float(t) for t in t_ref), False, budget, split=split,
                            broken=f"{bad} non-finite output value(s)", note=f"{bad} non-finite output value(s)")
    p_art = sigmoid(art)
    diff = np.abs(p_art - p_ref)
    t_art = tune_thresholds(p_art, targets, known)
    map_art = mean_average_precision(p_art, targets, known)
    drop = map_ref - map_art
    decisions_ref = p_ref >= t_ref
    max_diff = float(diff.max()) if diff.size else 0.0
    t_same = tune_thresholds(p_ref, targets, known) if reference_thresholds is not None else t_ref
    agreement = _agreement(p_art >= t_art, p_ref >= t_same)
    broken = _broken(precision, budgets, max_diff, agreement, drop)
    return ParityReport(
        artifact=artifact,
        precision=precision,
        num_samples=int(len(ref)),
        max_abs_diff=max_diff,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        agreement=agreement,
        agreement_at_reference=_agreement(p_art >= t_ref, decisions_ref),
        map_reference=float(map_ref),
        map_artifact=float(map_art),
        map_drop=float(drop),
        thresholds=tuple(float(t) for t in t_art),
        passed=not broken,
        budget=budget,
        broken="; ".join(broken),
        split=split,
        note="" if math.isfinite(drop) or precision in ("fp32", "fp16", "bf16") else
        "mAP undefined (no known positives): the INT8 budget cannot be checked",
    )


def run_backend(model_path: Path, images: np.ndarray, *, backend: str, device: str | None,
                precision_hint: str | None, emulate_qdq: bool = False, batch: int = 32,
                timing_runs: int = 10) -> tuple[np.ndarray, dict]:
    """Run ``images`` through a runtime backend in batches; return the logits and what ran them.

    ``emulate_qdq`` runs a Q/DQ ONNX by its definition on ONNX Runtime (see :class:`~edgecls.export.targets.Runner`).
    The returned info is the backend's ``info()`` plus ``latency_ms`` and ``latency_p90_ms``: median and 90th
    percentile batch-1 latency over ``timing_runs`` runs after two warm-up runs (0 skips the timing).
    """
    from edgecls.runtime.backends import open_backend

    runner = open_backend(model_path, backend=backend, device=device, precision_hint=precision_hint,
                          emulate_qdq=emulate_qdq)
    try:
        outs = [runner.infer(images[i : i + batch]) for i in range(0, len(images), batch)]
        logits = np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, 0), np.float32)
        info = dict(runner.info())
        timing = time_backend(runner.infer, images[:1], runs=timing_runs, p90=True) if timing_runs else (None, None)
        info["latency_ms"], info["latency_p90_ms"] = timing
    finally:
        runner.close()
    return logits, info


def time_backend(infer: Any, x: np.ndarray, *, runs: int = 10, p90: bool = False) -> Any:
    """Median wall time of ``infer(x)`` in milliseconds after two warm-up calls (and the 90th percentile with
    ``p90``: a ``(p50, p90)`` pair)."""
    if not len(x):
        return (None, None) if p90 else None
    for _ in range(2):
        infer(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        infer(x)
        times.append(time.perf_counter() - start)
    p50 = round(float(np.median(times)) * 1000.0, 3)
    return (p50, round(float(np.percentile(times, 90)) * 1000.0, 3)) if p90 else p50


def _fmt(value: float, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table of parity results. Each row: artifact, precision, backend, and either a report dict
    (``report``) or a ``not_run`` reason; optional ``latency_ms``."""
    header = ["artifact", "precision", "ran on", "max |dp|", "mean |dp|", "mAP", "mAP drop", "agree", "ms", "parity"]
    body = []
    for row in rows:
        rep = row.get("report")
        ms = row.get("latency_ms")
        if rep is None:
            body.append([row["artifact"], row.get("precision", ""), "-", "-", "-", "-", "-", "-", "-",
                         f"not run: {row.get('not_run', '')}"])
            continue
        ran_on = f"{rep['backend']}/{rep['device']}".strip("/")
        if rep.get("backend_precision"):
            ran_on += f" ({rep['backend_precision']})"
        body.append([  # the artifact's precision (edgecls.manifest.precision_name), as doctor and predict name it
            rep["artifact"], row.get("precision") or rep["precision"], ran_on, _fmt(rep["max_abs_diff"], ".2e"),
            _fmt(rep["mean_abs_diff"], ".2e"), _fmt(rep["map_artifact"], ".4f"), _fmt(rep["map_drop"], "+.4f"),
            _fmt(rep["agreement"], ".4f"), _fmt(ms, ".2f") if ms is not None else "-",
            ("ok" if rep["passed"] else "FAILED") + f" ({rep.get('broken') or rep['budget']})",
        ])
    table = [header, *body]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
