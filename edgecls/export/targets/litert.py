"""LiteRT (TensorFlow Lite) targets: ``litert`` (FP32 ``.tflite``), ``litert-fp16`` (FP16 weights, float compute) and
``litert-int8`` (full-integer ``.tflite``: int8 weights and activations, calibrated on the calibration images through
the shared preprocessing).

The FP32 file is converted from the PyTorch model itself with Google's ``litert-torch`` (``torch.export`` -> LiteRT,
no TensorFlow), with the NCHW float32 input and logits output every other artifact has (batch 1 in the file; the
runtime resizes it per batch); it is converted once per export. The two others are made from that file by Google's
``ai-edge-quantizer``:

* ``litert-fp16``: its float16 weight-only recipe (``FLOAT_CASTING``): conv and fully connected weights stored as
  float16 with a DEQUANTIZE op each, computed in float32 (half the file; XNNPACK unpacks the weights once at load).
* ``litert-int8``: its static ``wi8_ai8`` recipe (int8 symmetric per-channel weights, int8 asymmetric activations),
  calibrated with the global min/max of each tensor over the calibration images (the quantizer's own
  ``min_max_update``, as onnx-int8's MinMax calibration; its default moving average over batch-1 samples keeps
  about the last twenty images' range and clipped the logits of confident images: mAP drop 0.020 vs 0.001 on the
  aquarium Lite0). The file takes int8 input and gives int8 logits, each with a scale and zero point that the
  runtime backend applies (:mod:`edgecls.runtime.backends.litert`).

``litert-torch``'s own PT2E int8 flow is not used: on the aquarium Lite0 it gave mAP 0.29 against 0.86 in FP32.

``litert-torch`` 0.10 pins ``typing-extensions<4.13`` (through ``xdsl``), which downgrades pydantic in an environment
that has a newer one: it is its own extra, ``litert-export``, outside ``all``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecls.errors import EdgeclsError
from edgecls.export.targets.registry import Built, Runner, Target, register

if TYPE_CHECKING:  # pragma: no cover
    from edgecls.export.context import ExportContext

log = logging.getLogger("edgecls.export")

MODEL_FILE = "model.tflite"
_REQUIRES = ("torch", "litert_torch", "ai_edge_litert")
_QUANTIZER_REQUIRES = (*_REQUIRES, "ai_edge_quantizer")


def _litert_runner(artifact: Any, bundle: Path) -> tuple[Runner | None, str]:
    from edgecls.runtime.backends import probe

    status = probe("litert")
    if not status.usable:
        return None, f"litert cannot run here ({status.reason or 'no device'})"
    return Runner("litert", "cpu", "int8" if artifact.precision == "int8" else "f32", artifact.path), ""


def _versions(**more: Any) -> dict[str, Any]:
    import importlib.metadata

    found = {"litert_torch": importlib.metadata.version("litert-torch"),
             "ai_edge_litert": importlib.metadata.version("ai-edge-litert")}
    return {"converter": "litert_torch.convert from the PyTorch model (torch.export)", "layout": "NCHW input",
            **found, **more}


def float_tflite(ctx: "ExportContext") -> Path:
    """The FP32 ``.tflite`` litert-torch converts from the PyTorch model (batch 1, NCHW float32 in, logits out), in the
    export's work folder; converted once per export (the litert, litert-fp16 and litert-int8 artifacts share it)."""

    def make() -> Path:
        import litert_torch
        import torch

        path = ctx.workdir / "float.tflite"
        model = litert_torch.convert(ctx.model.eval(), (torch.zeros(1, 3, ctx.img_size, ctx.img_size),))
        model.export(str(path))
        return path

    return ctx.once("float_tflite", make)


def _signature(path: Path) -> tuple[str, str]:
    """The model's signature key and its one input's name (what ai-edge-quantizer's calibration data is keyed by)."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_path=str(path)).get_signature_list()
    if len(signatures) != 1:
        raise EdgeclsError(f"{path.name}: expected one signature, litert-torch wrote {sorted(signatures)}")
    key, io = next(iter(signatures.items()))
    if len(io["inputs"]) != 1:
        raise EdgeclsError(f"{path.name}: expected one input, the signature has {io['inputs']}")
    return key, io["inputs"][0]


def calibrate_min_max(path: Path, recipe: Any, images: np.ndarray) -> dict[str, Any]:
    """ai-edge-quantizer's calibration of the float ``path`` for ``recipe`` over ``images`` (N, 3, H, W), one at a
    time (the file's batch), each tensor's range the global min/max over all of them (``qsv_utils.min_max_update``)."""
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    key, name = _signature(path)
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    calib = calibrator.Calibrator(path.read_bytes(), num_threads=1, qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate({key: [{name: np.ascontiguousarray(images[i : i + 1], dtype=np.float32)}
                           for i in range(len(images))]}, manager)
    return calib.get_model_qsvs()


def quantize_int8(src: Path, dst: Path, images: np.ndarray) -> dict[str, Any]:
    """Full-integer ``dst`` from the float ``src``: ai-edge-quantizer's static int8 recipe calibrated on ``images``
    (global min/max); what was made, for the manifest."""
    from ai_edge_quantizer import quantizer, recipe

    chosen = recipe.static_wi8_ai8()
    q = quantizer.Quantizer(str(src), chosen)
    result = q.quantize(calibrate_min_max(src, chosen, images), enable_progress_report=False)
    dst.write_bytes(bytes(result.quantized_model))
    return {"quantizer": "ai_edge_quantizer recipe.static_wi8_ai8 (min_max_uniform_quantize)",
            "scheme": "int8 symmetric per-channel weights, int8 asymmetric activations (global min/max over the "
                      "calibration images), int8 input and output with scale and zero point",
            **_io_details(dst)}


def quantize_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """``dst``: ``src`` with float16 weights (ai-edge-quantizer's FLOAT_CASTING weight-only recipe, float compute)."""
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    q = quantizer.Quantizer(str(src))
    q.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                             algorithm_key=AlgorithmName.FLOAT_CASTING)
    result = q.quantize(enable_progress_report=False)
    dst.write_bytes(bytes(result.quantized_model))
    return {"quantizer": "ai_edge_quantizer weight-only FLOAT_CASTING, 16 bits",
            "scheme": "float16 weights (conv, depthwise conv, fully connected) dequantized to float32 at load; float32 "
                      "compute, input and output", **_io_details(dst)}


def _io_details(path: Path) -> dict[str, Any]:
    """The tensor types of a written model: its input and output dtype (and int8 scale) and its quantized tensors."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = interpreter.get_tensor_details()

    def io(d: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"dtype": np.dtype(d["dtype"]).name}
        if np.dtype(d["dtype"]) != np.float32:
            out["scale"], out["zero_point"] = float(d["quantization"][0]), int(d["quantization"][1])
        return out

    return {"input": io(interpreter.get_input_details()[0]), "output": io(interpreter.get_output_details()[0]),
            "int8_tensors": sum(np.dtype(d["dtype"]) == np.int8 and _has_scale(d) for d in tensors),
            "float16_tensors": sum(np.dtype(d["dtype"]) == np.float16 for d in tensors)}


def _has_scale(d: dict[str, Any]) -> bool:
    """Whether a tensor is quantized: a per-tensor scale, or per-channel scales (weights)."""
    return bool(d["quantization"][0]) or np.size(d.get("quantization_parameters", {}).get("scales", ())) > 0


def _build_litert(ctx: "ExportContext", folder: Path) -> Built:
    shutil.copyfile(float_tflite(ctx), folder / MODEL_FILE)
    return Built(path=f"{folder.name}/{MODEL_FILE}", precision="fp32", details=_versions())


def _build_litert_fp16(ctx: "ExportContext", folder: Path) -> Built:
    details = quantize_fp16(float_tflite(ctx), folder / MODEL_FILE)
    if not details["float16_tensors"]:
        raise EdgeclsError("ai-edge-quantizer wrote no float16 weight into the model (nothing was converted)")
    return Built(path=f"{folder.name}/{MODEL_FILE}", precision="fp16", parent="litert",
                 details=_versions(**details, ai_edge_quantizer=_quantizer_version()))


def _build_litert_int8(ctx: "ExportContext", folder: Path) -> Built:
    calib = ctx.calibration()
    details = quantize_int8(float_tflite(ctx), folder / MODEL_FILE, calib.images)
    if not details["int8_tensors"]:
        raise EdgeclsError("ai-edge-quantizer wrote no int8 tensor into the model (nothing was quantized)")
    return Built(path=f"{folder.name}/{MODEL_FILE}", precision="int8", parent="litert",
                 calibration=calib.summary(method="min/max (ai-edge-quantizer static_wi8_ai8, min_max_update)"),
                 details=_versions(**details, ai_edge_quantizer=_quantizer_version()))


def _quantizer_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("ai-edge-quantizer")


LITERT = register(Target(
    name="litert",
    format="litert",
    suffix=".tflite",
    extra="litert-export",
    precision="fp32",
    options=frozenset({"fp32_tolerance"}),
    doc="FP32 LiteRT (.tflite) converted from the PyTorch model by litert-torch (torch.export, no TensorFlow), NCHW "
        "float32 in, logits out; runs on ai-edge-litert's interpreter with XNNPACK (Android, Raspberry Pi, x86).",
    requires=_REQUIRES,
    build=_build_litert,
    runner=_litert_runner,
))

LITERT_FP16 = register(Target(
    name="litert-fp16",
    format="litert",
    suffix=".tflite",
    extra="litert-export",
    precision="fp16",
    options=frozenset({"fp16_tolerance", "fp16_min_agreement", "fp16_max_map_drop"}),
    doc="LiteRT (.tflite) with float16 weights (half the FP32 file), made from the litert artifact by "
        "ai-edge-quantizer's float16 weight-only recipe; float32 compute, input and output.",
    requires=_QUANTIZER_REQUIRES,
    build=_build_litert_fp16,
    runner=_litert_runner,
))

LITERT_INT8 = register(Target(
    name="litert-int8",
    format="litert",
    suffix=".tflite",
    extra="litert-export",
    precision="int8",
    options=frozenset({"calib_split", "calib_size", "max_map_drop", "int8_min_agreement"}),
    doc="Full-integer LiteRT (.tflite), made from the litert artifact by ai-edge-quantizer's static int8 recipe: int8 "
        "per-channel weights and int8 activations calibrated (global min/max) on real images through the shared "
        "preprocessing, int8 input and output with a scale (applied by the runtime); XNNPACK's int8 kernels run it on "
        "ARM and x86 CPUs.",
    requires=_QUANTIZER_REQUIRES,
    build=_build_litert_int8,
    runner=_litert_runner,
))
