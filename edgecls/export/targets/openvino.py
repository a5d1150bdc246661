"""OpenVINO targets: ``openvino`` (IR with FP16-compressed weights) and ``openvino-int8`` (NNCF post-training
quantization, accuracy-aware with ``max_map_drop``).

Both are converted from the exported FP32 ONNX (``openvino.convert_model``), so every artifact of a bundle comes
from one graph. The CPU plugin's inference precision is not the file's precision: on CPUs with AVX512_BF16/AMX it
defaults to bf16 (and an f16 hint becomes bf16). The parity check therefore sets ``INFERENCE_PRECISION_HINT``
explicitly (``openvino_precision``, f32 by default) and the manifest records the hint and what it resolved to, so
the runtime can use the same one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from edgecls.errors import EdgeclsError
from edgecls.export.targets.registry import Built, Runner, Target, register

if TYPE_CHECKING:  # pragma: no cover
    from edgecls.export.context import ExportContext

log = logging.getLogger("edgecls.export")

MODEL_FILE = "model.xml"
PRECISIONS = ("f32", "bf16", "f16")


def _ov() -> Any:
    from edgecls._deps import require

    return require("openvino", extra="openvino")


def head_ops(model: Any, onnx_head: Sequence[str]) -> list[str]:
    """Friendly names of the OpenVINO ops made from the ONNX head nodes (``node`` or ``node/...``)."""
    names = set(onnx_head)
    found = []
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        if name in names or name.split("/")[0] in names:
            found.append(name)
    return found


def write_rt_info(path: Path, metadata: dict[str, str]) -> None:
    """Store ``metadata`` under ``rt_info/edgecls`` of the IR, leaving the weights (``.bin``) byte for byte as is."""
    from edgecls._io import sha256_file

    ov = _ov()
    bin_path = path.with_suffix(".bin")
    before = sha256_file(bin_path)
    model = ov.Core().read_model(str(path))
    for key, value in metadata.items():
        model.set_rt_info(str(value), ["edgecls", key.replace(".", "_")])
    tmp = path.with_name(f".tmp.{path.name}")
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    tmp_bin = tmp.with_suffix(".bin")
    if sha256_file(tmp_bin) != before:
        tmp.unlink()
        tmp_bin.unlink()
        raise EdgeclsError(f"{path.name}: re-saving the IR with its metadata changed the weights; not writing it")
    tmp.replace(path)
    tmp_bin.unlink()


def _ov_runner(artifact: Any, bundle: Path) -> tuple[Runner | None, str]:
    from edgecls.runtime.backends import probe

    status = probe("openvino")
    if not status.usable:
        return None, f"openvino cannot run here ({status.reason or 'no device'})"
    hint = (artifact.details or {}).get("inference_precision_hint", "f32")
    return Runner("openvino", "CPU", hint, artifact.path), ""


def _details(ctx: "ExportContext", ov: Any) -> dict[str, Any]:
    return {
        "converter": "openvino.convert_model from the exported FP32 ONNX",
        "weights": "fp16 (ov.save_model compress_to_fp16=True)",
        "inference_precision_hint": ctx.config.openvino_precision,
        "openvino": ov.__version__,
    }


def _build_openvino(ctx: "ExportContext", folder: Path) -> Built:
    from edgecls.export.targets.onnx import float_onnx

    ov = _ov()
    src, _ = float_onnx(ctx)
    model = ov.convert_model(str(src))
    ov.save_model(model, str(folder / MODEL_FILE), compress_to_fp16=True)
    return Built(path=f"{folder.name}/{MODEL_FILE}", precision="fp16", parent="onnx", details=_details(ctx, ov),
                 finalize=write_rt_info)


def _advanced(nncf: Any) -> Any:
    """NNCF settings of ``openvino-int8``, beyond the PERFORMANCE preset.

    * ``overflow_fix=ENABLE``: 7-bit weights in every layer (NNCF's default does the first only). x86 CPUs without
      VNNI (AVX2, AVX-512F) compute u8 x s8 products with VPMADDUBSW, whose 16-bit pair sums saturate with 8-bit
      weights, so the IR's accuracy would depend on the CPU that runs it: MobileNetV3-Large on an AVX2 CPU lost
      0.041 mAP with 8-bit weights and 0.016 with 7-bit (Lite0: -0.002 and +0.005).
    * absolute min/max activation ranges (``RangeEstimatorParametersSet.MINMAX``, as onnxruntime's MinMax) instead
      of NNCF's default mean of the per-image minima and maxima, which clips the long upper tail of HardSwish
      activations: MobileNetV3-Large 0.016 -> 0.006 mAP drop; Lite0 unchanged.
    """
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    return nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix.ENABLE,
                                               activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)


def _build_openvino_int8(ctx: "ExportContext", folder: Path) -> Built:
    """NNCF post-training quantization (the first INT8 attempt)."""
    return _quantize_openvino(ctx, folder, accuracy_aware=False)


def _build_openvino_int8_accuracy_aware(ctx: "ExportContext", folder: Path) -> Built:
    """NNCF's accuracy-aware quantization (the first fix, see :mod:`edgecls.export.fixes`)."""
    return _quantize_openvino(ctx, folder, accuracy_aware=True)


def _quantize_openvino(ctx: "ExportContext", folder: Path, *, accuracy_aware: bool) -> Built:
    from edgecls._deps import require
    from edgecls.export.fixes import reverted_layers, validation_fn, validation_items
    from edgecls.export.targets.onnx import float_head_nodes, float_onnx

    ov = _ov()
    nncf = require("nncf", extra="train")
    nncf.set_log_level(logging.ERROR)
    cfg = ctx.config
    src, _ = float_onnx(ctx)
    # convert_model, not Core.read_model: read_model leaves each depthwise weight behind a Reshape, where NNCF does
    # not find it, so those convolutions stayed float (Lite0: 16 of 49 ran bf16/f32 on the CPU, 1.8x slower than
    # with all 49 in int8). The in-memory model is FP32 (compression to FP16 happens only on save).
    model = ov.convert_model(str(src))
    calib = ctx.calibration()
    calibration = nncf.Dataset([calib.images[i : i + 1] for i in range(len(calib))])
    ignored = head_ops(model, float_head_nodes(ctx))
    scope = nncf.IgnoredScope(names=ignored, validate=False)
    details = _details(ctx, ov)
    details.update({"quantizer": "nncf", "nncf": nncf.__version__, "preset": "performance (symmetric int8)",
                    "weights": "int8 per-channel, 7-bit range (overflow_fix: no saturation on x86 without VNNI)",
                    "activation_ranges": "min/max over the calibration images", "float_ops": ignored})
    if not accuracy_aware:
        quantized = nncf.quantize(model, calibration, preset=nncf.QuantizationPreset.PERFORMANCE,
                                  subset_size=len(calib), ignored_scope=scope, advanced_parameters=_advanced(nncf))
        details["method"] = "nncf.quantize (post-training)"
    else:
        validation = nncf.Dataset(validation_items(ctx), lambda item: item[0])
        with reverted_layers() as reverted:
            quantized = nncf.quantize_with_accuracy_control(
                model, calibration, validation, validation_fn(ctx, lambda compiled, x: compiled(x)[0]),
                max_drop=float(cfg.map_budget), drop_type=nncf.DropType.ABSOLUTE,
                preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(calib), ignored_scope=scope,
                advanced_quantization_parameters=_advanced(nncf),
            )
        details["method"] = "nncf.quantize_with_accuracy_control"
        details["accuracy_control"] = _accuracy_control(cfg)
        details.update(reverted)
    fq = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ordered_ops())
    if fq == 0:
        from edgecls.export.fixes import NothingQuantized

        raise NothingQuantized("NNCF left no quantized layer in the model (every layer reverted to float)")
    details["fake_quantize_ops"] = int(fq)
    ov.save_model(quantized, str(folder / MODEL_FILE), compress_to_fp16=True)
    return Built(path=f"{folder.name}/{MODEL_FILE}", precision="int8", parent="openvino",
                 calibration=calib.summary(method="nncf min-max statistics + fast bias correction"),
                 details=details, finalize=write_rt_info)


def _accuracy_control(cfg: Any) -> dict[str, Any]:
    """What the accuracy-aware step held (see :func:`edgecls.export.fixes.decision_metric`)."""
    return {"metric": f"mAP on the {cfg.parity_split} split, lowered by any decision-agreement shortfall under "
                      f"{cfg.int8_min_agreement:g}", "max_drop": cfg.map_budget, "drop_type": "absolute"}


_REQUIRES = ("torch", "onnx", "onnxscript", "onnxslim", "openvino")

OPENVINO = register(Target(
    name="openvino",
    format="openvino",
    suffix=".xml",
    extra="openvino",
    precision="fp16",
    options=frozenset({"opset", "fp16_tolerance", "fp16_min_agreement", "fp16_max_map_drop", "openvino_precision"}),
    doc="OpenVINO IR (model.xml + model.bin) converted from the FP32 ONNX, weights compressed to FP16. The parity "
        "check runs it with an explicit INFERENCE_PRECISION_HINT (openvino_precision, f32 by default; bf16 is "
        "faster on AVX512_BF16/AMX CPUs but moves probabilities by up to ~0.04) and records what it resolved to.",
    requires=_REQUIRES,
    build=_build_openvino,
    runner=_ov_runner,
))

OPENVINO_INT8 = register(Target(
    name="openvino-int8",
    format="openvino",
    suffix=".xml",
    extra="openvino",
    precision="int8",
    options=frozenset({"opset", "calib_split", "calib_size", "max_map_drop", "int8_min_agreement",
                       "openvino_precision", "int8_fixes", "qat_epochs"}),
    doc="OpenVINO IR quantized to INT8 by NNCF post-training quantization (PERFORMANCE preset: symmetric int8, "
        "7-bit weights so x86 CPUs without VNNI do not saturate, min/max ranges on real calibration images through "
        "the shared preprocessing, classifier head kept float). When that breaks the INT8 budget, NNCF's "
        "accuracy-aware quantization reverts the layers that cost the most (validation mAP and decision agreement) "
        "to float until it holds, then (with qat_epochs) a quantization-aware fine-tune is tried.",
    requires=(*_REQUIRES, "nncf"),
    build=_build_openvino_int8,
    runner=_ov_runner,
    accuracy_aware=_build_openvino_int8_accuracy_aware,
))
