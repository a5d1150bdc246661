"""Re-checking a bundle on any machine from the bundle alone (``edgecls parity``, no torch): load the parity images
again, run every artifact that can run here, and update the bundle's parity report (:func:`check_bundle`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecls.bundle import MANIFEST_NAME, read_manifest, read_parity, read_reference, write_parity
from edgecls.errors import DataError
from edgecls.export.context import dataset_root, relative_names
from edgecls.export.parity import Budgets, ParityReport, budget_precision, check_parity, format_table
from edgecls.export.targets import get_target
from edgecls.manifest import precision_name
from edgecls.preprocess import (
    PIXELS_BGR,
    PIXELS_RGB,
    is_pixels,
    pixels_to_tensor,
    portability_note,
    preprocess_paths,
)

log = logging.getLogger("edgecls.export")


def artifact_report(name: str, details: dict[str, Any], precision: str, info: dict[str, Any], reference: np.ndarray,
                    logits: np.ndarray, images: Any, budgets: Budgets, ref_thresholds: np.ndarray, split: str,
                    runner: Any) -> ParityReport:
    """The parity report of one artifact run by ``runner`` (its budget chosen by the precision that ran), as the export
    and :func:`check_bundle` both make it."""
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


@dataclass
class BundleCheck:
    """What :func:`check_bundle` measured."""

    bundle: Path
    reports: dict[str, ParityReport]
    not_run: dict[str, str]
    table: str
    logits: dict[str, np.ndarray] = field(default_factory=dict)  # what each measured artifact output, per image
    names: tuple[str, ...] = ()  # the parity images, in the order of the logits' rows
    note: str | None = None  # why this machine's numbers differ from the reference's (see portability_note)

    def save_logits(self, path: str | Path) -> Path:
        """Write the measured logits to ``path`` (.npz: ``names`` and one array per artifact), atomically: compare
        devices with it (``edgecls parity --logits``)."""
        from edgecls._io import atomic_save

        arrays = {f"logits/{name}": value for name, value in self.logits.items()}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, names=np.asarray(self.names, dtype=str), **arrays)

        return atomic_save(path, write)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.reports.values())


def _load_parity_images(bundle: Path, data: str | Path, doc: dict[str, Any], names: np.ndarray,
                        manifest: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from edgecls.data import DataSpec, load_from_spec

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
    pixels = preprocess_paths([s.path for s in samples], manifest.preprocess, what="the parity check",
                              output=PIXELS_BGR)
    images = pixels_to_tensor(pixels, manifest.preprocess, PIXELS_BGR)  # preprocess()'s tensor, bit for bit
    targets = np.stack([s.target for s in samples]).astype(np.float32)
    known = np.stack([s.known for s in samples]).astype(bool)
    return images, pixels, targets, known


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
    from edgecls.runtime.classifier import check_artifact_files

    root = Path(bundle)
    manifest = read_manifest(root)
    doc = read_parity(root)
    ref = read_reference(root)
    budgets = budgets or Budgets.from_dict(doc.get("budgets", {}))
    names = [a.name for a in manifest.artifacts]
    chosen = list(artifacts) if artifacts else names
    for name in chosen:
        manifest.artifact(name)  # unknown: ConfigError listing the bundle's artifacts
    images, pixels, targets, known = _load_parity_images(root, data, doc, ref["names"], manifest)
    if not (np.array_equal(targets, ref["targets"]) and np.array_equal(known, ref["known"])):
        raise DataError(f"{data}: the labels of the parity images differ from those the bundle was checked with")
    ref_thresholds = np.asarray(manifest.thresholds, dtype=np.float32)
    split = doc.get("split", "")
    reports: dict[str, ParityReport] = {}
    measured: dict[str, np.ndarray] = {}
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
        inputs = images if not is_pixels(artifact.input) else \
            np.ascontiguousarray(pixels[..., ::-1]) if artifact.input == PIXELS_RGB else pixels
        logits, info = target.run(model, inputs, runner)
        report = artifact_report(artifact.name, artifact.details, artifact.precision, info, ref["logits"], logits,
                         _Images(targets, known), budgets, ref_thresholds, split, runner)
        reports[artifact.name] = report
        measured[artifact.name] = logits
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
        replace(manifest, artifacts=tuple(updated)).save(root / MANIFEST_NAME)
    note = portability_note(manifest.preprocess) if not all(r.passed for r in reports.values()) else None
    return BundleCheck(root, reports, not_run, format_table(rows), measured, tuple(str(n) for n in ref["names"]),
                       note)


@dataclass
class _Images:
    targets: np.ndarray
    known: np.ndarray
