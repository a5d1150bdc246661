"""Export a checkpoint to deployable artifacts with proven parity, as one self-describing bundle.

``export(ExportConfig(...))`` writes ONNX, INT8 ONNX, OpenVINO, CoreML and TensorRT artifacts (see
:func:`list_targets`), runs each one that can run here through its runtime backend on the validation split, compares
it with PyTorch (:func:`check_parity`), re-tunes its thresholds, and writes ``manifest.json``, ``parity.json`` and a
model card beside them. ``check_bundle`` re-runs the parity check on any machine from the bundle alone (no torch).

Importing this package is cheap: torch, onnx, openvino, coremltools and tensorrt are imported where they are used.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecls.config import field as config_field
from edgecls.errors import ConfigError, DataError, EdgeclsError, MissingDependency, ParityError, UnsupportedOption
from edgecls.export.parity import (
    DEFAULT_FP16_MAX_MAP_DROP,
    DEFAULT_FP16_MIN_AGREEMENT,
    DEFAULT_FP16_TOLERANCE,
    DEFAULT_FP32_TOLERANCE,
    DEFAULT_MAX_MAP_DROP,
    Budgets,
    ParityReport,
    budget_precision,
    check_parity,
    format_table,
)
from edgecls.export.targets import ALL, Target, expand_targets, get_target, list_targets

__all__ = [
    "BundleCheck",
    "Budgets",
    "ExportConfig",
    "ExportResult",
    "ParityReport",
    "Target",
    "check_bundle",
    "check_parity",
    "export",
    "list_targets",
]

log = logging.getLogger("edgecls.export")

OPENVINO_PRECISIONS = ("f32", "bf16", "f16")
# Keys of the metadata embedded in model files (ONNX metadata_props, CoreML user metadata; OpenVINO rt_info/edgecls
# with the dot written as an underscore). "edgecls.manifest" is this artifact's own manifest as JSON.
META_PREFIX = "edgecls."
_VERSION_DISTS = {
    "torch": "torch", "torchvision": "torchvision", "timm": "timm", "onnx": "onnx", "onnxscript": "onnxscript",
    "onnxslim": "onnxslim", "onnxruntime": "onnxruntime", "openvino": "openvino", "nncf": "nncf",
    "coremltools": "coremltools", "tensorrt": "tensorrt", "numpy": "numpy", "opencv": "opencv-python-headless",
}


@dataclass(frozen=True)
class ExportConfig:
    """What ``edgecls export`` does; flags map one to one to these fields.

    Attributes:
        checkpoint: A checkpoint file or a training run folder (its best.pt).
        targets: Target names (see :func:`list_targets`) or ``all`` (every target this machine can produce).
        data: The dataset the checkpoint was trained on: calibration and parity images come from it.
        out: The bundle folder to create.
        calib_split: Split the INT8 calibration images come from.
        calib_size: Calibration images (a seeded random sample of the split; all of it when smaller).
        opset: ONNX opset (17 uses the TorchScript exporter, 18+ the dynamo exporter).
        max_batch: Largest batch of the TensorRT optimization profile and the CoreML batch range.
        max_map_drop: INT8 budget: largest validation mAP drop (absolute). None means 0.01 with plain post-training
            quantization; a value also makes openvino-int8 use NNCF's accuracy-aware quantization with it.
        fp32_tolerance: FP32 budget: largest |delta probability|.
        fp16_tolerance: FP16/BF16 opt-in budget: largest |delta probability| (None: reported, not judged).
        fp16_min_agreement: FP16/BF16 budget: smallest share of decisions agreeing with the reference's, each at
            its tuned thresholds.
        fp16_max_map_drop: FP16/BF16 budget: largest validation mAP drop (absolute).
        allow_parity_failure: Write the bundle even when an artifact breaks its budget (the report says so).
        force: Replace an existing bundle at ``out``.
        require_engine: Fail unless TensorRT engines can be built here (else the portable ONNX is bundled).
        parity_split: Split the parity check (and the threshold re-tuning) runs on.
        seed: Seed of the calibration sample.
        openvino_precision: INFERENCE_PRECISION_HINT the OpenVINO artifacts are checked (and meant to run) with.
    """

    checkpoint: str = config_field(help="checkpoint file or training run folder", flag=False)
    targets: tuple[str, ...] = config_field(
        help="target names, or all (every target this machine can produce); repeat for several",
        cli_name="--target", short="-t", multiple=True, required=True)
    data: str = config_field(help="dataset of the checkpoint: calibration and parity images", required=True)
    out: str = config_field(help="bundle folder to create", short="-o", required=True)
    calib_split: str = config_field("train", help="split of the INT8 calibration images")
    calib_size: int = config_field(300, help="calibration images")
    opset: int = config_field(18, help="ONNX opset, >= 17")
    max_batch: int = config_field(32, help="largest batch of TensorRT/CoreML")
    max_map_drop: float | None = config_field(
        None, help="INT8 budget (absolute mAP drop); setting it also makes openvino-int8 accuracy-aware",
        shown=f"{DEFAULT_MAX_MAP_DROP}, plain quantization")
    fp32_tolerance: float = config_field(DEFAULT_FP32_TOLERANCE, help="FP32 budget: max |delta p|")
    fp16_tolerance: float | None = config_field(
        DEFAULT_FP16_TOLERANCE, help="FP16/BF16 extra budget on max |delta p| (always reported)",
        shown="none")
    fp16_min_agreement: float = config_field(
        DEFAULT_FP16_MIN_AGREEMENT, help="FP16/BF16 budget: share of decisions agreeing with PyTorch's")
    fp16_max_map_drop: float = config_field(DEFAULT_FP16_MAX_MAP_DROP, help="FP16/BF16 budget: absolute mAP drop")
    allow_parity_failure: bool = config_field(False, help="write the bundle even if a budget breaks", switch=True)
    force: bool = config_field(False, help="replace an existing bundle", switch=True)
    require_engine: bool = config_field(False, help="fail unless TensorRT engines can be built here", switch=True)
    parity_split: str = config_field("valid", help="split the parity check runs on")
    seed: int = config_field(0, help="seed of the calibration sample")
    openvino_precision: str = config_field(
        "f32", help="OpenVINO inference precision hint the IRs are checked with", choices=OPENVINO_PRECISIONS)

    def __post_init__(self) -> None:
        targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        object.__setattr__(self, "targets", tuple(str(t).strip().lower() for t in targets))
        for name in ("checkpoint", "data", "out", "calib_split", "parity_split"):
            value = getattr(self, name)
            if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
                raise ConfigError(f"{name} must be a non-empty path or name, got {value!r}")
            object.__setattr__(self, name, str(value))
        for name in self.targets:
            if name != ALL:
                get_target(name)  # unknown name: ConfigError with the closest valid one
        if not self.targets:
            raise ConfigError(f"no export target given; valid: {', '.join(t.name for t in list_targets())}, {ALL}")
        for name, low in (("calib_size", 1), ("max_batch", 1), ("opset", 17)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        _ = self.budgets  # finite, >= 0
        if self.openvino_precision not in OPENVINO_PRECISIONS:
            raise ConfigError(f"openvino_precision must be one of {', '.join(OPENVINO_PRECISIONS)}, got "
                              f"{self.openvino_precision!r}")

    @property
    def map_budget(self) -> float:
        return DEFAULT_MAX_MAP_DROP if self.max_map_drop is None else float(self.max_map_drop)

    @property
    def budgets(self) -> Budgets:
        return Budgets(self.fp32_tolerance, self.fp16_tolerance, self.map_budget,
                       fp16_min_agreement=self.fp16_min_agreement, fp16_max_map_drop=self.fp16_max_map_drop)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["targets"] = list(self.targets)
        return data


@dataclass
class ExportResult:
    """What :func:`export` made.

    Attributes:
        bundle: Where the bundle is (``out``, or ``<out>.parity-failed`` when a budget broke and that was allowed
            to raise).
        manifest: The bundle's manifest.
        reports: Parity report per artifact that ran here.
        not_run: Why each other artifact was not measured here.
        notes: Things to tell the user (e.g. how to build a TensorRT engine on the device).
        table: The parity table as text.
    """

    bundle: Path
    manifest: Any
    reports: dict[str, ParityReport]
    not_run: dict[str, str]
    notes: list[str] = field(default_factory=list)
    table: str = ""

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.reports.values())


def _defaults() -> dict[str, Any]:
    return {f.name: f.default for f in fields(ExportConfig) if f.default is not dataclasses.MISSING}


def _check_options(config: ExportConfig, targets: Sequence[Target]) -> None:
    """An option changed from its default that no chosen target uses is an error, never silently ignored."""
    for name, default in _defaults().items():
        value = getattr(config, name)
        if value == default or any(t.accepts(name) for t in targets):
            continue
        users = [t.name for t in list_targets() if t.accepts(name)]
        flag = "--" + name.replace("_", "-")
        raise UnsupportedOption(
            f"{flag} does not apply to target(s) {', '.join(t.name for t in targets)}; it is used by: "
            f"{', '.join(users)}"
        )


def library_versions() -> dict[str, str]:
    """Versions of edgecls, Python and every installed library an export can touch (without importing them)."""
    import platform
    from importlib import metadata

    import edgecls

    versions = {"edgecls": edgecls.__version__, "python": platform.python_version()}
    for name, dist in _VERSION_DISTS.items():
        try:
            versions[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


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


def export(config: ExportConfig) -> ExportResult:
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
    from edgecls.export.bundle import BundleWriter

    targets = expand_targets(config.targets)
    if not targets:
        first = list_targets()[0]  # onnx, which every other target builds on
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

    from edgecls.export._calibration import ExportContext
    from edgecls.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(config.checkpoint)
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


def _export_into(ctx: Any, targets: Sequence[Target], tmp: Path, skipped: list[str]) -> ExportResult:
    from edgecls._io import sha256_file, write_json
    from edgecls.export.bundle import (
        CONFIG_NAME,
        README_NAME,
        folder_files,
        model_card,
        sha256_path,
        size_mb,
        write_parity,
        write_reference,
    )
    from edgecls.export.parity import run_backend
    from edgecls.manifest import Artifact, Manifest, precision_name

    config, ckpt = ctx.config, ctx.checkpoint
    val = ctx.validation()
    reference = ctx.reference_logits()
    from edgecls.metrics import mean_average_precision, sigmoid, tune_thresholds

    ref_thresholds = (np.asarray(ckpt.thresholds, dtype=np.float32) if ckpt.thresholds is not None
                      else tune_thresholds(sigmoid(reference), val.targets, val.known))
    budgets = config.budgets
    artifacts: list[Any] = []
    reports: dict[str, ParityReport] = {}
    not_run: dict[str, str] = {}
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    finalizers: dict[str, Any] = {}
    for i, target in enumerate(targets, 1):
        log.info("export: [%d/%d] %s", i, len(targets), target.name)
        try:
            built = target.export(ctx, tmp / target.name)
        except EdgeclsError:
            raise
        except Exception as exc:
            raise EdgeclsError(f"target {target.name} failed: {type(exc).__name__}: {str(exc)[:400]}") from exc
        notes.extend(built.notes)
        details = dict(built.details)
        artifact = Artifact(name=target.name, path=built.path, format=target.format, precision=built.precision,
                            sha256="", thresholds=tuple(float(t) for t in ref_thresholds), parent=built.parent,
                            calibration=built.calibration, details=details)
        runner, reason = target.runner(artifact, tmp)
        row: dict[str, Any] = {"artifact": target.name, "precision": precision_name(artifact)}
        if runner is None:
            not_run[target.name] = reason
            artifact = replace(artifact, parity={"not_run": reason})
            row["not_run"] = reason
        else:
            try:
                logits, info = run_backend(tmp / (runner.path or built.path), val.images, backend=runner.backend,
                                           device=runner.device, precision_hint=runner.precision_hint,
                                           emulate_qdq=runner.emulate_qdq)
            except EdgeclsError:
                raise
            except Exception as exc:
                raise EdgeclsError(f"target {target.name}: {runner.backend} could not run the artifact "
                                   f"({type(exc).__name__}: {str(exc)[:300]})") from exc
            report = _report(target.name, details, built.precision, info, reference, logits, val, budgets,
                             ref_thresholds, config.parity_split, runner)
            reports[target.name] = report
            details["latency_ms"] = info.get("latency_ms")
            details["latency_p90_ms"] = info.get("latency_p90_ms")
            details["parity_runner"] = runner.to_dict()
            if "inference_precision" in info:
                details["inference_precision"] = info["inference_precision"]
            artifact = replace(artifact, thresholds=report.thresholds, parity=report.to_dict(), details=details)
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
    manifest.save(tmp / "manifest.json")
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


def _report(name: str, details: dict[str, Any], precision: str, info: dict[str, Any], reference: np.ndarray,
            logits: np.ndarray, images: Any, budgets: Budgets, ref_thresholds: np.ndarray, split: str,
            runner: Any) -> ParityReport:
    file_precision = details.get("file_precision", precision)
    if runner.backend != "tensorrt":  # the portable ONNX stands in for an engine that was not built here
        precision_judged = budget_precision(file_precision, info.get("precision"))
    else:
        precision_judged = budget_precision(precision, info.get("precision"))
    report = check_parity(reference, logits, images.targets, images.known, precision=precision_judged,
                          budgets=budgets, reference_thresholds=ref_thresholds, artifact=name, split=split)
    note = report.note
    if runner.backend != "tensorrt" and details.get("engine_built") is False:
        how = " (Q/DQ emulated: the ONNX definition, not this CPU's int8 kernels)" if info.get("qdq") else ""
        note = (f"portable ONNX measured with onnxruntime{how} (no TensorRT engine here); re-run `edgecls parity` on "
                "the device for the engine") + (f"; {note}" if note else "")
    return replace(report, backend=str(info.get("name", runner.backend)), device=str(info.get("device", "")),
                   backend_precision=str(info.get("precision", "")), note=note)


def _data_settings(config: ExportConfig, ckpt: Any) -> dict[str, Any]:
    """How the parity split was loaded (the checkpoint's DataSpec, read from ``config.data``), so ``check_bundle``
    and bench can load the same images without the checkpoint."""
    return replace(ckpt.data_spec, source=str(Path(config.data).expanduser().absolute())).to_dict()


# ---------------------------------------------------------------------------------------------------------------------
# re-checking a bundle (edgecls parity)


@dataclass
class BundleCheck:
    """What :func:`check_bundle` measured."""

    bundle: Path
    reports: dict[str, ParityReport]
    not_run: dict[str, str]
    table: str

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.reports.values())


def _load_parity_images(bundle: Path, data: str | Path, doc: dict[str, Any], names: np.ndarray,
                        manifest: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from edgecls.data import DataSpec, load_from_spec
    from edgecls.export._calibration import dataset_root, preprocess_paths, relative_names

    settings = doc.get("data", {})
    dataset = load_from_spec(DataSpec.from_bundle(settings), data=data, class_names=manifest.class_names,
                             owner="bundle")
    split = dataset.split(doc.get("split") or settings.get("split", "valid"))
    root = dataset_root(data)
    by_name = dict(zip(relative_names([s.path for s in split.samples], root), split.samples))
    wanted = [str(n) for n in names]
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise DataError(
            f"{data}: {len(missing)} of the {len(wanted)} images the bundle was checked on are not in its "
            f"{split.name!r} split (e.g. {missing[0]}); pass the dataset the bundle was exported with"
        )
    samples = [by_name[n] for n in wanted]
    images = preprocess_paths([s.path for s in samples], manifest.preprocess, what="the parity check")
    targets = np.stack([s.target for s in samples]).astype(np.float32)
    known = np.stack([s.known for s in samples]).astype(bool)
    return images, targets, known


def check_bundle(bundle: str | Path, data: str | Path, *, artifacts: Sequence[str] | None = None,
                 budgets: Budgets | None = None, write: bool = True, verify: bool = True) -> BundleCheck:
    """Re-run the parity check of an exported bundle on this machine, from the bundle alone (no torch needed).

    Loads the stored PyTorch reference logits and the same parity images from ``data``, runs every artifact (or
    those named) that can run here through its runtime backend (a TensorRT artifact through an engine where this
    machine has TensorRT and a GPU, CoreML on macOS), re-tunes its thresholds, and, with ``write``, updates each
    measured artifact's entry in ``parity.json`` and its parity and thresholds in ``manifest.json``. Each file is
    checked before it runs as the runtime checks it (:func:`edgecls.runtime.classifier.check_artifact_files`: inside
    the bundle and, with ``verify``, equal to the sha256 the manifest records).

    Raises:
        ConfigError: Not a bundle, or an unknown artifact name.
        IntegrityError: A file leaves the bundle or differs from the manifest's sha256.
        DataError: ``data`` lacks images the bundle was checked on, or has other classes.
    """
    from edgecls.export.bundle import read_parity, read_reference, write_parity
    from edgecls.export.parity import run_backend
    from edgecls.manifest import Manifest, precision_name
    from edgecls.runtime.classifier import check_artifact_files

    root = Path(bundle)
    manifest = Manifest.load(root)
    doc = read_parity(root)
    ref = read_reference(root)
    budgets = budgets or Budgets.from_dict(doc.get("budgets", {}))
    names = [a.name for a in manifest.artifacts]
    chosen = list(artifacts) if artifacts else names
    for name in chosen:
        manifest.artifact(name)  # unknown: ConfigError listing the bundle's artifacts
    images, targets, known = _load_parity_images(root, data, doc, ref["names"], manifest)
    if not (np.array_equal(targets, ref["targets"]) and np.array_equal(known, ref["known"])):
        raise DataError(f"{data}: the labels of the parity images differ from those the bundle was checked with")
    ref_thresholds = np.asarray(manifest.thresholds, dtype=np.float32)
    split = doc.get("split", "")
    reports: dict[str, ParityReport] = {}
    not_run: dict[str, str] = {}
    rows = []
    updated = []
    for artifact in manifest.artifacts:
        if artifact.name not in chosen:
            updated.append(artifact)
            continue
        target = get_target(artifact.name)
        runner, reason = target.runner(artifact, root)
        if runner is None:
            not_run[artifact.name] = reason
            rows.append({"artifact": artifact.name, "precision": precision_name(artifact), "not_run": reason})
            updated.append(artifact)
            continue
        log.info("parity: %s on %s", artifact.name, runner.backend)
        model = check_artifact_files(root, artifact, root / (runner.path or artifact.path), verify=verify)
        logits, info = run_backend(model, images, backend=runner.backend,
                                   device=runner.device, precision_hint=runner.precision_hint,
                                   emulate_qdq=runner.emulate_qdq)
        report = _report(artifact.name, artifact.details, artifact.precision, info, ref["logits"], logits,
                         _Images(targets, known), budgets, ref_thresholds, split, runner)
        reports[artifact.name] = report
        rows.append({"artifact": artifact.name, "precision": precision_name(artifact), "report": report.to_dict(),
                     "latency_ms": info.get("latency_ms")})
        updated.append(replace(artifact, parity=report.to_dict(), thresholds=report.thresholds))
    if write and reports:
        entries = dict(doc.get("artifacts", {}))
        for name, report in reports.items():
            entries[name] = report.to_dict()
        doc["artifacts"] = entries
        doc["budgets"] = budgets.to_dict()
        doc["passed"] = all(e.get("passed", True) for e in entries.values() if "not_run" not in e)
        doc.pop("schema_version", None)
        write_parity(root, doc)
        replace(manifest, artifacts=tuple(updated)).save(root / "manifest.json")
    return BundleCheck(root, reports, not_run, format_table(rows))


@dataclass
class _Images:
    targets: np.ndarray
    known: np.ndarray
