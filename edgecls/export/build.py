"""The whole export: check the request, load the checkpoint and images, build every target into a temporary bundle,
measure each artifact against PyTorch, embed thresholds and metadata, write the manifest, parity report, reference
logits and model card, and rename the bundle into place (:func:`export`)."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecls._deps import library_versions
from edgecls._io import sha256_file, write_json
from edgecls.bundle import (
    CONFIG_NAME,
    MANIFEST_NAME,
    META_PREFIX,
    README_NAME,
    folder_files,
    sha256_path,
    size_mb,
    write_parity,
    write_reference,
)
from edgecls.errors import EdgeclsError, MissingDependency, ParityError, UnsupportedOption
from edgecls.export.check import artifact_report
from edgecls.export.config import ExportConfig, ExportResult, _check_options
from edgecls.export.context import ExportContext
from edgecls.export.fixes import Measured, fix_int8, needs_fix
from edgecls.export.parity import ParityReport, format_table
from edgecls.export.targets import ALL, Target, expand_targets, get_target, list_targets
from edgecls.export.writer import BundleWriter, model_card
from edgecls.manifest import Artifact, Manifest, precision_name
from edgecls.metrics import mean_average_precision, sigmoid

log = logging.getLogger("edgecls.export")


def _metadata(manifest: Any, artifact: Any) -> dict[str, str]:
    """String metadata embedded in a model file: class names, this artifact's thresholds, preprocessing, output
    activation and precision, plus the whole manifest reduced to this artifact (what the runtime reads from a bare
    model file)."""
    import json

    own = replace(manifest, artifacts=(replace(artifact, path=Path(artifact.path).name, sha256=""),))
    return {
        f"{META_PREFIX}class_names": json.dumps(list(manifest.class_names)),
        f"{META_PREFIX}thresholds": json.dumps([float(t) for t in artifact.thresholds]),
        f"{META_PREFIX}preprocess": json.dumps(manifest.preprocess.to_dict()),
        f"{META_PREFIX}output_activation": manifest.output_activation,
        f"{META_PREFIX}precision": artifact.precision,
        f"{META_PREFIX}manifest": own.to_json(),
    }


def _torch_latency(model: Any, image: np.ndarray) -> float | None:
    import torch

    from edgecls.export.parity import time_backend

    def infer(x: np.ndarray) -> Any:
        with torch.no_grad():
            return model(torch.from_numpy(x))

    return time_backend(infer, image)


def export(config: "ExportConfig") -> "ExportResult":
    """Export ``config.checkpoint`` to every target in ``config.targets`` as one bundle at ``config.out``.

    Steps: check the targets, options and destination (nothing is written when one is wrong); load the checkpoint,
    the parity split and (for INT8) the calibration images through the shared preprocessing; build each artifact
    into a temporary bundle; run each one that can run here on the parity split and compare it with PyTorch;
    re-tune its thresholds and embed them with the class names and preprocessing; write the manifest, parity
    report, reference logits and model card; rename the bundle into place.

    Raises:
        ConfigError: Unknown target or option value, existing or unwritable destination.
        UnsupportedOption: An option no chosen target uses; ``require_engine`` without a GPU.
        MissingDependency: A chosen target's libraries are not installed (names the extra).
        CheckpointError: The checkpoint is missing, corrupt or does not fit its backbone.
        DataError: The dataset or a split has no readable images.
        ParityError: An artifact broke its budget (without ``allow_parity_failure``); the bundle is kept at
            ``<out>.parity-failed`` (``-2``, ``-3`` ... when that exists) for inspection; the message holds the report.
    """
    targets = expand_targets(config.targets)
    if not targets:
        first = get_target("onnx")  # which every other target builds on
        raise UnsupportedOption(f"no export target can be produced on this machine ({first.name}: "
                                f"{first.available()[1]}); see `edgecls export --help`")
    skipped = []
    if ALL in config.targets:
        chosen = {t.name for t in targets}
        skipped = [f"{t.name}: not produced here ({t.available()[1]})" for t in list_targets() if t.name not in chosen]
    _check_options(config, targets)
    for target in targets:
        ok, reason = target.available()
        if not ok:
            raise MissingDependency(f"target {target.name}: {reason}")
        target.require()
        if target.preflight is not None:
            target.preflight(config)
    writer = BundleWriter(Path(os.path.abspath(os.path.expanduser(config.out))), force=config.force)
    writer.check()

    from edgecls.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(config.checkpoint)
    if config.resize_numerics is not None and config.resize_numerics != ckpt.preprocess.resize_numerics:
        log.info("export: resize numerics %s (the checkpoint's: %s)", config.resize_numerics,
                 ckpt.preprocess.resize_numerics)
        ckpt = replace(ckpt, preprocess=ckpt.preprocess.replace(resize_numerics=config.resize_numerics))
    model = ckpt.build_model().cpu().eval()
    with writer.workdir() as work:
        ctx = ExportContext(config, ckpt, model, work)
        log.info("export: preprocessing the %s split for the parity check", config.parity_split)
        ctx.validation()
        if any(t.accepts("calib_size") for t in targets):
            calib = ctx.calibration()
            log.info("export: preprocessed %d of the %d %s images for calibration", len(calib), calib.total,
                     config.calib_split)
        tmp = writer.open()
        try:
            result = _export_into(ctx, targets, tmp, skipped)
        except BaseException:
            writer.discard()
            raise
    if result.passed or config.allow_parity_failure:
        result.bundle = writer.commit()
        return result
    kept = writer.park(".parity-failed")
    failed = [r.summary() for r in result.reports.values() if not r.passed]
    raise ParityError(
        f"{len(failed)} artifact(s) broke their parity budget: {'; '.join(failed)}. Nothing was written to "
        f"{writer.out}; the bundle and its report are kept at {kept} for inspection (pass --allow-parity-failure to "
        f"accept them).\n{result.table}"
    )


def _export_into(ctx: ExportContext, targets: Sequence[Target], tmp: Path, skipped: list[str]) -> "ExportResult":
    config, ckpt = ctx.config, ctx.checkpoint
    val = ctx.validation()
    reference = ctx.reference_logits()
    ref_thresholds = ctx.reference_thresholds()
    budgets = config.budgets
    artifacts: list[Any] = []
    reports: dict[str, ParityReport] = {}
    not_run: dict[str, str] = {}
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    finalizers: dict[str, Any] = {}
    for i, target in enumerate(targets, 1):
        log.info("export: [%d/%d] %s", i, len(targets), target.name)

        def attempt(context: ExportContext, accuracy_aware: bool = False, target: Target = target) -> Measured:
            return _build_and_measure(context, target, tmp, accuracy_aware=accuracy_aware)

        measured = attempt(ctx)
        if needs_fix(target, measured, config):
            measured = fix_int8(ctx, target, measured, attempt, tmp / target.name)
        built, artifact, report, info = measured.built, measured.artifact, measured.report, measured.info
        notes.extend(built.notes)
        row: dict[str, Any] = {"artifact": target.name, "precision": precision_name(artifact)}
        if report is None:
            not_run[target.name] = measured.reason
            row["not_run"] = measured.reason
        else:
            reports[target.name] = report
            row.update(report=report.to_dict(), latency_ms=info.get("latency_ms"))
        artifacts.append(artifact)
        rows.append(row)
        finalizers[target.name] = built.finalize

    versions = library_versions()
    k = len(ckpt.class_names)
    reference_map = mean_average_precision(sigmoid(reference), val.targets, val.known)
    metrics = {"split": config.parity_split, "num_samples": len(val), "reference": "pytorch fp32 (cpu)",
               "map": reference_map, "reference_latency_ms": _torch_latency(ctx.model, val.images[:1])}
    manifest = Manifest(
        class_names=tuple(ckpt.class_names), preprocess=ckpt.preprocess, backbone=ckpt.model_spec.backbone,
        thresholds=tuple(float(t) for t in ref_thresholds),
        source_checkpoint_sha256=sha256_file(ckpt.path) if ckpt.path else "",
        input_name=ctx.input_name, output_name=ctx.output_name,
        input_shape=("batch", 3, ctx.img_size, ctx.img_size), output_shape=("batch", k),
        metrics=metrics, versions=versions, artifacts=(),
        created=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
    )
    final = []
    for artifact in artifacts:
        finalize = finalizers[artifact.name]
        if finalize is not None:
            finalize(tmp / artifact.path, _metadata(manifest, artifact))
        details = dict(artifact.details)
        details["files"] = folder_files(tmp, artifact.name)
        final.append(replace(artifact, sha256=sha256_path(tmp / artifact.path), details=details))
    manifest = replace(manifest, artifacts=tuple(final))
    manifest.save(tmp / MANIFEST_NAME)
    parity_doc = {
        "split": config.parity_split,
        "num_samples": len(val),
        "data": _data_settings(config, ckpt),
        "budgets": budgets.to_dict(),
        "reference": {"backend": "pytorch", "precision": "fp32", "map": reference_map,
                      "thresholds": [float(t) for t in ref_thresholds]},
        "artifacts": {r["artifact"]: (r["report"] if "report" in r else {"not_run": r["not_run"]}) for r in rows},
        "passed": all(r.passed for r in reports.values()),
    }
    write_parity(tmp, parity_doc)
    write_reference(tmp, val.names, reference, val.targets, val.known)
    write_json(tmp / CONFIG_NAME, config.to_dict())
    notes.extend(skipped)
    sizes = {a.name: size_mb(tmp / a.name) for a in final}
    (tmp / README_NAME).write_text(model_card(manifest, parity_doc, sizes=sizes, notes=notes), encoding="utf-8")
    return ExportResult(tmp, manifest, reports, not_run, notes, format_table(rows))


def _build_and_measure(ctx: ExportContext, target: Target, tmp: Path, *, accuracy_aware: bool = False) -> Measured:
    """Build ``target``'s artifact into ``tmp/<name>`` (replacing an earlier attempt's files) and measure it against
    the reference on the parity split, where this machine can run it."""
    import shutil
    import time

    start = time.perf_counter()
    config = ctx.config
    folder = tmp / target.name
    if folder.exists():
        shutil.rmtree(folder)  # an earlier attempt of this export (see edgecls.export.fixes)
    val, reference, ref_thresholds = ctx.validation(), ctx.reference_logits(), ctx.reference_thresholds()
    try:
        built = target.export(ctx, folder, accuracy_aware=accuracy_aware)
    except EdgeclsError:
        raise
    except Exception as exc:
        raise EdgeclsError(f"target {target.name} failed: {type(exc).__name__}: {str(exc)[:400]}") from exc
    details = dict(built.details)
    artifact = Artifact(name=target.name, path=built.path, format=target.format, precision=built.precision,
                        sha256="", thresholds=tuple(float(t) for t in ref_thresholds), parent=built.parent,
                        calibration=built.calibration, details=details, input=built.input)
    runner, reason = target.runner(artifact, tmp)
    if runner is None:
        return Measured(built, replace(artifact, parity={"not_run": reason}), None, {}, reason,
                        time.perf_counter() - start)
    try:
        logits, info = target.run(tmp / (runner.path or built.path), val.inputs(artifact.input), runner)
    except EdgeclsError:
        raise
    except Exception as exc:
        raise EdgeclsError(f"target {target.name}: {runner.backend} could not run the artifact "
                           f"({type(exc).__name__}: {str(exc)[:300]})") from exc
    report = artifact_report(target.name, details, built.precision, info, reference, logits, val, config.budgets,
                             ref_thresholds, config.parity_split, runner)
    details["latency_ms"] = info.get("latency_ms")
    details["latency_p90_ms"] = info.get("latency_p90_ms")
    details["parity_runner"] = runner.to_dict()
    if "inference_precision" in info:
        details["inference_precision"] = info["inference_precision"]
    artifact = replace(artifact, thresholds=report.thresholds, parity=report.to_dict(), details=details)
    return Measured(built, artifact, report, info, seconds=time.perf_counter() - start)


def _data_settings(config: "ExportConfig", ckpt: Any) -> dict[str, Any]:
    """How the parity split was loaded (the checkpoint's DataSpec, read from ``config.data``), so ``check_bundle``
    and bench can load the same images without the checkpoint."""
    return replace(ckpt.data_spec, source=str(Path(config.data).expanduser().absolute())).to_dict()
