"""INT8 that keeps decisions: when post-training quantization breaks an INT8 budget (mAP drop or decision agreement,
see :mod:`edgecls.export.parity`), the export tries the fixes the libraries offer, in order of cost, and records in
the artifact's ``details["int8_fix"]`` which one made it pass (:func:`fix_int8`):

1. ``ptq``: the target's own post-training quantization (what every INT8 artifact starts as).
2. ``accuracy-aware``: NNCF's ``quantize_with_accuracy_control`` (targets with an ``accuracy_aware`` build:
   openvino-int8 on the OpenVINO model, onnx-int8 on the ONNX model). It quantizes, then reverts the layers that
   cost the most back to float, group by group, until its metric is within ``max_drop`` of the float model's. The
   metric is :func:`decision_metric`: the validation mAP, lowered further when decision agreement at the tuned
   thresholds is under its budget, so one number holds both budgets and ``max_drop`` is the mAP budget itself.
3. ``qat``: with ``qat_epochs`` > 0, a quantization-aware fine-tune of the checkpoint on its training split
   (:func:`edgecls.train.qat.quantization_aware_finetune`, NNCF's fake quantizers in the PyTorch model), whose
   weights then go through the target's own quantizer (and, should that still break a budget, through its
   accuracy-aware build: ``qat+accuracy-aware``).

Every attempt is judged by the normal parity check on the parity split, against the original FP32 reference. When
all fail, the last attempt is kept with its failing report, as any artifact that breaks its budget (the export
raises ``ParityError`` unless ``allow_parity_failure``). The accuracy-aware step tunes on the parity split it is
judged on (there is no other labelled split at export time), so its figures there are a selection on that split.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from edgecls.errors import EdgeclsError
from edgecls.export.parity import check_parity

if TYPE_CHECKING:  # pragma: no cover
    from edgecls.export.context import ExportContext
    from edgecls.export.targets.registry import Built, Target

log = logging.getLogger("edgecls.export")

STEPS = ("ptq", "accuracy-aware", "qat", "qat+accuracy-aware")
INT8_PRECISIONS = ("int8",)


class NothingQuantized(EdgeclsError):
    """The accuracy-aware quantization reverted every layer to float: no INT8 artifact came out of it."""


@dataclass
class Measured:
    """One built artifact and its parity report (None when it cannot run here, with ``reason``)."""

    built: "Built"
    artifact: Any
    report: Any
    info: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    seconds: float = 0.0  # building and measuring it


def needs_fix(target: "Target", measured: Measured, config: Any) -> bool:
    """Whether ``measured`` is an INT8 artifact measured here (passing or not: its record is written either way)."""
    return measured.report is not None and measured.built.precision in INT8_PRECISIONS


def _attempt_record(step: str, measured: Measured, seconds: float, **extra: Any) -> dict[str, Any]:
    report = measured.report
    return {"step": step, "passed": bool(report.passed), "map_drop": _num(report.map_drop),
            "agreement": _num(report.agreement), "broken": report.broken, "seconds": round(seconds, 2), **extra}


def _num(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def fix_int8(ctx: "ExportContext", target: "Target", measured: Measured, attempt: Callable[..., Measured],
             folder: Path) -> Measured:
    """Run the fixes after a post-training INT8 artifact (``measured``, built in ``folder``) until one passes its
    budget; return the artifact that passed, else the post-training one (restored into ``folder``), with
    ``details["int8_fix"]`` saying what was tried and which step made it pass (``passed_with``: ``ptq``,
    ``accuracy-aware``, ``qat``, ``qat+accuracy-aware``, or None when none did)."""
    config = ctx.config
    tried = [_attempt_record("ptq", measured, measured.seconds, **_layers(measured))]
    current = measured
    if not measured.report.passed and config.int8_fixes:
        steps: list[tuple[str, Callable[[], Measured]]] = []
        if target.accuracy_aware is not None:
            steps.append(("accuracy-aware", lambda: attempt(ctx, accuracy_aware=True)))
        if config.qat_epochs > 0:
            steps.append(("qat", lambda: attempt(_qat_context(ctx))))
            if target.accuracy_aware is not None:
                steps.append(("qat+accuracy-aware", lambda: attempt(_qat_context(ctx), accuracy_aware=True)))
        aside = folder.with_name(f".{folder.name}.ptq")
        folder.rename(aside)  # the post-training artifact, kept should every fix fail
        for step, run in steps:
            log.info("export: %s broke its budget (%s); trying %s", target.name, tried[-1]["broken"], step)
            start = time.perf_counter()
            try:
                current = run()
            except NothingQuantized as exc:
                tried.append({"step": step, "passed": False, "broken": str(exc),
                              "seconds": round(time.perf_counter() - start, 2)})
                current = measured
                continue
            extra = _layers(current)
            if step.startswith("qat"):
                extra["qat"] = ctx.once("qat", lambda: None).to_dict()
            # a first QAT step's seconds include the fine-tune
            tried.append(_attempt_record(step, current, time.perf_counter() - start, **extra))
            if current.report.passed:
                break
        if current.report is not None and current.report.passed:
            shutil.rmtree(aside)
        else:
            if folder.exists():
                shutil.rmtree(folder)
            aside.rename(folder)
            current = measured
    passed_with = next((t["step"] for t in tried if t["passed"]), None)
    record = {"passed_with": passed_with, "attempts": tried,
              "fixes": "on" if config.int8_fixes else "off (--no-int8-fixes)", "qat_epochs": config.qat_epochs}
    if passed_with is None:
        record["kept"] = "ptq (every fix failed)" if len(tried) > 1 else "ptq"
        if config.int8_fixes and config.qat_epochs == 0:
            record["hint"] = "--qat-epochs N adds a quantization-aware fine-tune to the fixes"
    details = {**current.artifact.details, "int8_fix": record}
    return replace(current, artifact=replace(current.artifact, details=details))


def _layers(measured: Measured) -> dict[str, Any]:
    """How many layers an artifact keeps in float beyond the head (what the accuracy-aware step reverted)."""
    details = measured.built.details
    keys = ("reverted_to_float", "quantized_operations")
    return {k: details[k] for k in keys if k in details}


def _qat_context(ctx: "ExportContext") -> "ExportContext":
    """The export context of the quantization-aware fine-tuned model (fine-tuned once per export, shared by every
    INT8 target)."""
    from edgecls.export.targets.registry import quiet
    from edgecls.train.qat import quantization_aware_finetune

    def make() -> Any:
        config = ctx.config
        log.info("export: quantization-aware fine-tune, %d epoch(s) on the train split", config.qat_epochs)
        with quiet("the quantization-aware fine-tune"):
            return quantization_aware_finetune(ctx.checkpoint, config.data, epochs=config.qat_epochs,
                                               calibration=ctx.calibration().images, seed=config.seed)

    result = ctx.once("qat", make)
    return ctx.once("qat_context", lambda: ctx.derived(result.model, "qat"))


# ---------------------------------------------------------------------------------------------------------------------
# what NNCF's accuracy control measures


def decision_metric(ctx: "ExportContext") -> Callable[[np.ndarray, list[int]], float]:
    """``metric(logits, index)`` for NNCF's accuracy control, on the parity images ``index``: their mAP, minus (when
    decision agreement at the tuned thresholds is under ``int8_min_agreement``) the mAP budget plus the shortfall.

    Its drop from the float model's value is then ``max(mAP drop, max_map_drop + shortfall)`` whenever agreement is
    short, and the plain mAP drop otherwise, so ``max_drop = max_map_drop`` holds exactly when both budgets hold
    (the float model itself has agreement 1), and a larger shortfall is a larger drop for NNCF to work on.
    """
    config = ctx.config
    budgets = config.budgets
    val = ctx.validation()
    reference = ctx.reference_logits()
    thresholds = ctx.reference_thresholds()

    def metric(logits: np.ndarray, index: list[int]) -> float:
        report = check_parity(reference[index], logits, val.targets[index], val.known[index], precision="int8",
                              budgets=budgets, reference_thresholds=thresholds)
        if not math.isfinite(report.map_artifact):
            return 0.0
        value = report.map_artifact
        shortfall = budgets.int8_min_agreement - report.agreement
        if shortfall > 0:
            value = min(value, report.map_reference - budgets.max_map_drop - shortfall)
        return float(value)

    return metric


def validation_fn(ctx: "ExportContext", infer: Callable[[Any, np.ndarray], np.ndarray],
                  prepare: Callable[[Any], Any] | None = None, *, per_item_scores: bool = False) -> Callable[..., Any]:
    """NNCF's ``validation_fn(model, items)``: ``items`` are ``(image, index)`` pairs of the parity split; returns
    :func:`decision_metric` and, per item, its output (NNCF ranks the layers to revert by how those move) or, with
    ``per_item_scores`` (NNCF's ONNX backend, which cannot compare outputs), a score: minus its mean |delta p| from
    the reference; NNCF then picks the items that moved most and ranks layers by :func:`decision_metric` on them.
    ``prepare(model)`` makes what ``infer(prepared, batch)`` runs (e.g. an ONNX Runtime session)."""
    from edgecls.metrics import sigmoid

    metric = decision_metric(ctx)
    reference = sigmoid(ctx.reference_logits())

    def run(model: Any, items: Any) -> tuple[float, list[Any]]:
        images, index = [], []
        for image, i in items:
            images.append(image)
            index.append(int(i))
        batch = np.concatenate(images)
        runnable = prepare(model) if prepare is not None else model
        logits = np.concatenate([np.asarray(infer(runnable, batch[j : j + 32]), dtype=np.float32)
                                 for j in range(0, len(batch), 32)])
        if per_item_scores:
            moved = np.abs(sigmoid(logits) - reference[index]).mean(axis=1)
            return metric(logits, index), [-float(m) for m in moved]
        return metric(logits, index), [[logits[j : j + 1]] for j in range(len(logits))]

    return run


def validation_items(ctx: "ExportContext") -> list[tuple[np.ndarray, int]]:
    val = ctx.validation()
    return [(val.images[i : i + 1], i) for i in range(len(val))]


_REVERTED = re.compile(r"(\d+) out of (\d+) were reverted")


@contextlib.contextmanager
def reverted_layers() -> Iterator[dict[str, int]]:
    """Collect from NNCF's log how many quantized operations its accuracy control reverted to float (it says so
    only in its log): ``{"reverted_to_float": N, "quantized_operations": M}``; ``N`` = 0 when the first
    quantization was already within ``max_drop``."""
    from nncf.common.logging import nncf_logger

    found: dict[str, int] = {}

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            match = _REVERTED.search(record.getMessage())
            if match:
                found.update(reverted_to_float=int(match.group(1)), quantized_operations=int(match.group(2)))
            elif "Algorithm completed" in record.getMessage() and "reverted_to_float" not in found:
                found.setdefault("reverted_to_float", 0)

    handler = Catch(logging.INFO)
    level = nncf_logger.level
    nncf_logger.addHandler(handler)
    nncf_logger.setLevel(logging.INFO)
    try:
        yield found
    finally:
        nncf_logger.removeHandler(handler)
        nncf_logger.setLevel(level)
