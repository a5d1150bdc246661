"""What ``edgecls export`` does (:class:`ExportConfig`, its flags map one to one to the fields) and what it made
(:class:`ExportResult`)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

from edgecls.bundle import (
    DEFAULT_FP16_MAX_MAP_DROP,
    DEFAULT_FP16_MIN_AGREEMENT,
    DEFAULT_FP16_TOLERANCE,
    DEFAULT_FP32_TOLERANCE,
    DEFAULT_INT8_MIN_AGREEMENT,
    DEFAULT_MAX_MAP_DROP,
)
from edgecls.config import field as config_field
from edgecls.errors import ConfigError, UnsupportedOption
from edgecls.export.parity import Budgets, ParityReport
from edgecls.export.targets import ALL, Target, get_target, list_targets
from edgecls.export.targets.openvino import PRECISIONS as OPENVINO_PRECISIONS
from edgecls.preprocess import RESIZE_NUMERICS


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
        max_map_drop: INT8 budget: largest validation mAP drop (absolute); None means 0.01.
        fp32_tolerance: FP32 budget: largest |delta probability|.
        fp16_tolerance: FP16/BF16 opt-in budget: largest |delta probability| (None: reported, not judged).
        fp16_min_agreement: FP16/BF16 budget: smallest share of decisions agreeing with the reference's, each at
            its tuned thresholds.
        fp16_max_map_drop: FP16/BF16 budget: largest validation mAP drop (absolute).
        int8_min_agreement: INT8 budget: smallest share of decisions agreeing with the reference's, each at its
            tuned thresholds.
        int8_fixes: When post-training quantization breaks an INT8 budget, try NNCF's accuracy-aware quantization
            (openvino-int8, onnx-int8), then the quantization-aware fine-tune (``qat_epochs``); see
            :mod:`edgecls.export.fixes`.
        qat_epochs: Epochs of the quantization-aware fine-tune on the checkpoint's training split, the last INT8
            fix (0: not tried; it needs ``data`` to hold the training split and costs minutes on a CPU).
        allow_parity_failure: Write the bundle even when an artifact breaks its budget (the report says so).
        force: Replace an existing bundle at ``out``.
        require_engine: Fail unless TensorRT engines can be built here (else the portable ONNX is bundled).
        parity_split: Split the parity check (and the threshold re-tuning) runs on.
        seed: Seed of the calibration sample.
        openvino_precision: INFERENCE_PRECISION_HINT the OpenVINO artifacts are checked (and meant to run) with.
        resize_numerics: Set the bundle's ``preprocess.resize_numerics`` (``portable``: the same resized pixels on
            x86 and ARM; ``native``: OpenCV's 8-bit kernels); None keeps the checkpoint's (a checkpoint made before
            the field existed is native). The parity reference and calibration use the bundle's preprocessing.
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
        None, help="INT8 budget (absolute mAP drop)", shown=f"{DEFAULT_MAX_MAP_DROP}")
    fp32_tolerance: float = config_field(DEFAULT_FP32_TOLERANCE, help="FP32 budget: max |delta p|")
    fp16_tolerance: float | None = config_field(
        DEFAULT_FP16_TOLERANCE, help="FP16/BF16 extra budget on max |delta p| (always reported)",
        shown="none")
    fp16_min_agreement: float = config_field(
        DEFAULT_FP16_MIN_AGREEMENT, help="FP16/BF16 budget: share of decisions agreeing with PyTorch's")
    fp16_max_map_drop: float = config_field(DEFAULT_FP16_MAX_MAP_DROP, help="FP16/BF16 budget: absolute mAP drop")
    int8_min_agreement: float = config_field(
        DEFAULT_INT8_MIN_AGREEMENT, help="INT8 budget: share of decisions agreeing with PyTorch's")
    int8_fixes: bool = config_field(
        True, help="when PTQ breaks an INT8 budget, try accuracy-aware quantization, then QAT (--qat-epochs)")
    qat_epochs: int = config_field(
        0, help="INT8 fix of last resort: epochs of quantization-aware fine-tuning on the training split (0: off)")
    allow_parity_failure: bool = config_field(False, help="write the bundle even if a budget breaks", switch=True)
    force: bool = config_field(False, help="replace an existing bundle", switch=True)
    require_engine: bool = config_field(False, help="fail unless TensorRT engines can be built here", switch=True)
    parity_split: str = config_field("valid", help="split the parity check runs on")
    seed: int = config_field(0, help="seed of the calibration sample")
    openvino_precision: str = config_field(
        "f32", help="OpenVINO inference precision hint the IRs are checked with", choices=OPENVINO_PRECISIONS)
    resize_numerics: str | None = config_field(
        None, help="the bundle's resize numerics: portable (the same pixels on x86 and ARM) or native (OpenCV's "
        "8-bit kernels, which round differently on ARM)", choices=RESIZE_NUMERICS, shown="the checkpoint's")

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
        for name, low in (("calib_size", 1), ("max_batch", 1), ("opset", 17), ("qat_epochs", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        _ = self.budgets  # finite, >= 0
        if self.resize_numerics is not None and self.resize_numerics not in RESIZE_NUMERICS:
            raise ConfigError(f"resize_numerics must be one of {', '.join(RESIZE_NUMERICS)}, got "
                              f"{self.resize_numerics!r}")
        if self.openvino_precision not in OPENVINO_PRECISIONS:
            raise ConfigError(f"openvino_precision must be one of {', '.join(OPENVINO_PRECISIONS)}, got "
                              f"{self.openvino_precision!r}")

    @property
    def map_budget(self) -> float:
        return DEFAULT_MAX_MAP_DROP if self.max_map_drop is None else float(self.max_map_drop)

    @property
    def budgets(self) -> Budgets:
        return Budgets(self.fp32_tolerance, self.fp16_tolerance, self.map_budget,
                       fp16_min_agreement=self.fp16_min_agreement, fp16_max_map_drop=self.fp16_max_map_drop,
                       int8_min_agreement=self.int8_min_agreement)

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
