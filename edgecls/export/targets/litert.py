"""LiteRT (TensorFlow Lite) targets: ``litert`` (FP32 ``.tflite``) and ``litert-int8`` (full-integer ``.tflite``:
int8 weights and activations, calibrated on the calibration images through the shared preprocessing).

Both are converted from the PyTorch model itself with Google's ``litert-torch`` (``torch.export`` -> LiteRT, no
TensorFlow), with the NCHW float32 input and logits output every other artifact has (batch 1 in the file; the
runtime resizes it per batch). INT8 goes through PyTorch's PT2E flow with ``litert-torch``'s quantizer (symmetric
int8, per-channel weights, histogram-calibrated activations), so the ops it emits are LiteRT's own int8 kernels
(XNNPACK's on ARM and x86). The runtime side is :mod:`edgecls.runtime.backends.litert` (``ai-edge-litert``, no torch).

``litert-torch`` 0.10 pins ``typing-extensions<4.13`` (through ``xdsl``), which downgrades pydantic in an
environment that has a newer one: it is its own extra, ``litert-export``, outside ``all``.
"""

from __future__ import annotations

import logging
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


def _litert_runner(artifact: Any, bundle: Path) -> tuple[Runner | None, str]:
    from edgecls.runtime.backends import probe

    status = probe("litert")
    if not status.usable:
        return None, f"litert cannot run here ({status.reason or 'no device'})"
    return Runner("litert", "cpu", "int8" if artifact.precision == "int8" else "f32", artifact.path), ""


def _sample(ctx: "ExportContext") -> Any:
    import torch

    return (torch.zeros(1, 3, ctx.img_size, ctx.img_size),)


def _details(litert_torch: Any, **more: Any) -> dict[str, Any]:
    import importlib.metadata

    return {"converter": "litert_torch.convert from the PyTorch model (torch.export)", "layout": "NCHW input",
            "litert_torch": importlib.metadata.version("litert-torch"),
            "ai_edge_litert": importlib.metadata.version("ai-edge-litert"), **more}


def _build_litert(ctx: "ExportContext", folder: Path) -> Built:
    import litert_torch

    model = litert_torch.convert(ctx.model.eval(), _sample(ctx))
    model.export(str(folder / MODEL_FILE))
    return Built(path=f"{folder.name}/{MODEL_FILE}", precision="fp32", details=_details(litert_torch))


def _build_litert_int8(ctx: "ExportContext", folder: Path) -> Built:
    import litert_torch
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    calib = ctx.calibration()
    sample = _sample(ctx)
    program = torch.export.export(ctx.model.eval(), sample).module()
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    prepared = quantize_pt2e.prepare_pt2e(program, quantizer)
    with torch.no_grad():
        for i in range(len(calib)):
            prepared(torch.from_numpy(np.ascontiguousarray(calib.images[i : i + 1])))
    quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    # quant_config makes the converter fuse each Q/DQ pair into LiteRT's int8 op (without it the file keeps float
    # weights and float ops between QUANTIZE/DEQUANTIZE pairs: the accuracy of int8, the speed of worse than float)
    model = litert_torch.convert(quantized, sample, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    path = folder / MODEL_FILE
    model.export(str(path))
    ops = _int8_ops(path)
    if not ops:
        raise EdgeclsError("litert-torch wrote no int8 operator into the model (nothing was quantized)")
    details = _details(litert_torch, quantizer="litert_torch PT2EQuantizer (torchao prepare_pt2e/convert_pt2e)",
                       scheme="symmetric int8, per-channel weights, histogram activation ranges, float32 I/O",
                       int8_tensors=ops)
    return Built(path=f"{folder.name}/{MODEL_FILE}", precision="int8", parent="litert",
                 calibration=calib.summary(method="PT2E HistogramObserver on the calibration images"),
                 details=details)


def _int8_ops(path: Path) -> int:
    """Tensors of the model stored as quantized int8 (weights and activations)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return sum(np.dtype(d["dtype"]) == np.int8 and d["quantization"][0] != 0.0
               for d in interpreter.get_tensor_details())


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

LITERT_INT8 = register(Target(
    name="litert-int8",
    format="litert",
    suffix=".tflite",
    extra="litert-export",
    precision="int8",
    options=frozenset({"calib_split", "calib_size", "max_map_drop"}),
    doc="Full-integer LiteRT (.tflite): int8 weights (per-channel, symmetric) and int8 activations calibrated on real "
        "images through the shared preprocessing (PyTorch PT2E with litert-torch's quantizer), float32 in and out; "
        "XNNPACK's int8 kernels run it on ARM and x86 CPUs.",
    requires=_REQUIRES,
    build=_build_litert_int8,
    runner=_litert_runner,
))
