"""OpenVINO targets: ``openvino`` (IR with FP16-compressed weights) and ``openvino-int8`` (NNCF post-training
quantization, accuracy-aware with ``max_map_drop``), and their pixel-input variants ``openvino-u8`` and
``openvino-int8-u8``: the same IRs with OpenVINO's ``PrePostProcessor`` in front (:func:`add_pixel_input`), taking
the resized uint8 BGR pixels, NHWC.

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


def add_pixel_input(model: Any, spec: Any, *, kind: str) -> tuple[Any, dict[str, Any]]:
    """``model`` (float32 NCHW in) with OpenVINO's PrePostProcessor in front: it takes uint8 pixels (N, S, S, 3) in
    ``kind``'s channel order and computes the float32 NCHW tensor :func:`edgecls.preprocess.preprocess` makes
    (convert to f32, BGR->RGB, minus mean, divided by std / scale per channel, NHWC->NCHW). Returns the new model and
    what was done."""
    from openvino.preprocess import PrePostProcessor

    from edgecls.preprocess import PIXELS_BGR, PIXELS_RGB

    if kind not in (PIXELS_BGR, PIXELS_RGB):
        raise EdgeclsError(f"pixel input must be {PIXELS_BGR} or {PIXELS_RGB}, got {kind!r}")
    ov = _ov()
    ppp = PrePostProcessor(model)
    inp = ppp.input()
    inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    inp.model().set_layout(ov.Layout("NCHW"))
    steps = inp.preprocess().convert_element_type(ov.Type.f32)
    if kind == PIXELS_BGR:
        steps.reverse_channels()
    mean = [float(m) / float(spec.scale) for m in spec.mean]
    std = [float(d) / float(spec.scale) for d in spec.std]
    steps.mean(mean).scale(std)
    return ppp.build(), {"input": kind, "input_prefix": "openvino.preprocess.PrePostProcessor: u8 NHWC -> f32, "
                         + ("reverse_channels, " if kind == PIXELS_BGR else "") + "mean, scale, NHWC->NCHW",
                         "input_note": "uint8 pixels (N, S, S, 3) after the resize/crop; scaling, mean/std, channel "
                                       "order and NHWC->NCHW run in the engine"}


def _float_model(ctx: "ExportContext") -> Any:
    """The FP32 ONNX converted to an in-memory OpenVINO model (a fresh one per call: the pixel variant edits it)."""
    from edgecls.export.targets.onnx import float_onnx

    return _ov().convert_model(str(float_onnx(ctx)[0]))


def _save(ctx: "ExportContext", folder: Path, model: Any, precision: str, parent: str, details: dict[str, Any],
          calibration: dict[str, Any] | None, pixels: bool) -> Built:
    from edgecls.preprocess import FLOAT_INPUT, PIXELS_BGR

    ov = _ov()
    kind = FLOAT_INPUT
    details = dict(details)
    if not pixels:
        ov.save_model(model, str(folder / MODEL_FILE), compress_to_fp16=True)
    else:
        # The weights are compressed to FP16 first, exactly as in the float-input IR, and the prefix is added to
        # that: saved with compression, its mean/std constants would be rounded to FP16 too (~5e-4 in probability)
        kind = PIXELS_BGR
        compressed = ctx.workdir / f"{folder.name}.compressed.xml"
        ov.save_model(model, str(compressed), compress_to_fp16=True)
        model, how = add_pixel_input(ov.Core().read_model(str(compressed)), ctx.preprocess, kind=kind)
        details.update(how)
        ov.save_model(model, str(folder / MODEL_FILE), compress_to_fp16=False)
    return Built(path=f"{folder.name}/{MODEL_FILE}", precision=precision, parent=parent, calibration=calibration,
                 details=details, finalize=write_rt_info, input=kind)


def _build_openvino(ctx: "ExportContext", folder: Path, *, pixels: bool = False) -> Built:
    return _save(ctx, folder, _float_model(ctx), "fp16", "onnx", _details(ctx, _ov()), None, pixels)


def _build_openvino_pixels(ctx: "ExportContext", folder: Path) -> Built:
    return _build_openvino(ctx, folder, pixels=True)


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


def _int8_model(ctx: "ExportContext", accuracy_aware: bool = False) -> tuple[Any, dict[str, Any]]:
    """The NNCF-quantized model and how it was made, once per export and method (``openvino-int8`` and
    ``openvino-int8-u8`` are this model)."""
    key = "openvino_int8_accuracy_aware" if accuracy_aware else "openvino_int8"
    return ctx.once(key, lambda: _quantize(ctx, accuracy_aware=accuracy_aware))


def _build_openvino_int8(ctx: "ExportContext", folder: Path, *, pixels: bool = False,
                         accuracy_aware: bool = False) -> Built:
    """NNCF post-training quantization (the first INT8 attempt), or with ``accuracy_aware`` NNCF's accuracy-aware
    quantization (the first fix, see :mod:`edgecls.export.fixes`)."""
    model, details = _int8_model(ctx, accuracy_aware)
    calibration = ctx.calibration().summary(method="nncf min-max statistics + fast bias correction")
    return _save(ctx, folder, model, "int8", "openvino", details, calibration, pixels)


def _build_openvino_int8_pixels(ctx: "ExportContext", folder: Path) -> Built:
    return _build_openvino_int8(ctx, folder, pixels=True)


def _build_openvino_int8_accuracy_aware(ctx: "ExportContext", folder: Path) -> Built:
    return _build_openvino_int8(ctx, folder, accuracy_aware=True)


def _build_openvino_int8_pixels_accuracy_aware(ctx: "ExportContext", folder: Path) -> Built:
    return _build_openvino_int8(ctx, folder, pixels=True, accuracy_aware=True)


def _quantize(ctx: "ExportContext", *, accuracy_aware: bool) -> tuple[Any, dict[str, Any]]:
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
    return quantized, details


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


def _pixel_variant(target: Target, build: Any, accuracy_aware: Any = None) -> Target:
    from edgecls.export.targets.onnx import pixel_variant

    return pixel_variant(target, build, accuracy_aware)


OPENVINO_U8 = register(_pixel_variant(OPENVINO, _build_openvino_pixels))
OPENVINO_INT8_U8 = register(_pixel_variant(OPENVINO_INT8, _build_openvino_int8_pixels,
                                           _build_openvino_int8_pixels_accuracy_aware))
