"""CoreML targets: ``coreml`` (ML Program, FP16) and ``coreml-int8`` (8-bit weights; 8-bit activations too on macOS).

Conversion runs anywhere coremltools installs: ``torch.export`` (dynamic batch 1..max_batch) ->
``coremltools.convert(convert_to="mlprogram", compute_precision=FLOAT16)``. Predictions need macOS, so on Linux the
artifact's spec is validated instead (inputs, outputs, metadata, weight dtypes) and the parity check is left for
``edgecls parity`` on a Mac.

INT8: ``coremltools.optimize.coreml.linear_quantize_weights`` (linear_symmetric, int8, per channel; the classifier
head's ``linear`` ops stay FP16). Activation quantization (``linear_quantize_activations``) calibrates by running the
model, which needs CoreML predictions: it is tried on macOS only, and the manifest says which one the artifact got.
coremltools computes weight scales in the weights' FP16, so a channel whose weights are all zero or below ~4e-6
(Lite0 has dozens) gets scale 0 and NaN weights; :func:`fix_zero_scales` gives those channels scale 1 and zero
weights (what they were, to FP16 precision).
"""

from __future__ import annotations

import logging
import shutil
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecls.errors import EdgeclsError
from edgecls.export.targets.registry import Built, Runner, Target, register

if TYPE_CHECKING:  # pragma: no cover
    from edgecls.export.context import ExportContext

log = logging.getLogger("edgecls.export")

MODEL_FILE = "model.mlpackage"
_NOT_MACOS = "CoreML predictions need macOS (spec validated here); measure it with `edgecls parity` on a Mac"
_DEQUANT_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")


def _ct() -> Any:
    from edgecls._deps import require

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("coremltools").setLevel(logging.ERROR)
        return require("coremltools", extra="coreml")


def _convert(ctx: "ExportContext", *, target: Any) -> Any:
    ct = _ct()
    size = ctx.img_size
    shape = ct.Shape(shape=(ct.RangeDim(lower_bound=1, upper_bound=int(ctx.config.max_batch), default=1), 3, size,
                            size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ct.convert(
            ctx.exported_program(),
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16,
            inputs=[ct.TensorType(name=ctx.input_name, shape=shape, dtype=np.float32)],
            outputs=[ct.TensorType(name=ctx.output_name, dtype=np.float32)],
            minimum_deployment_target=target,
            skip_model_load=sys.platform != "darwin",
        )


def _quantize_weights(ml: Any) -> Any:
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(
        global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel"),
        op_type_configs={"linear": None},  # the classifier head stays FP16
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the zero-scale channels divide by zero; fixed below
        return cto.linear_quantize_weights(ml, config=config)


def _quantize_activations(ml: Any, images: np.ndarray, input_name: str) -> Any:
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(
        global_config=cto.experimental.OpActivationLinearQuantizerConfig(mode="linear_symmetric"),
    )
    sample = [{input_name: images[i : i + 1]} for i in range(len(images))]
    return cto.experimental.linear_quantize_activations(ml, config, sample)


def fix_zero_scales(ml: Any, *, target: Any) -> tuple[Any, int]:
    """Replace per-channel scales that are 0 or not finite by 1 (and those channels' int8 weights by the zero point).

    Works on the model's MIL program and converts it back, keeping the original model description (inputs with
    their batch range, outputs, metadata). Returns the model and the number of channels fixed.
    """
    ct = _ct()
    from coremltools.converters.mil import Builder as mb

    prog = getattr(ml, "_mil_program", None)
    if prog is None:
        raise EdgeclsError("coremltools returned a model without its MIL program; cannot check its weight scales")
    fixed = 0
    for func in prog.functions.values():
        for op in list(func.operations):
            if op.op_type != "constexpr_affine_dequantize":
                continue
            scale = np.array(op.scale.val)
            bad = ~np.isfinite(scale) | (scale <= 0)
            if not bad.any():
                continue
            data = np.array(op.quantized_data.val)
            zero = np.array(op.zero_point.val)
            axis = int(op.axis.val)
            scale[bad] = 1
            for channel in np.flatnonzero(bad):
                index = [slice(None)] * data.ndim
                index[axis] = int(channel)
                data[tuple(index)] = zero[channel] if zero.ndim else zero
            fixed += int(bad.sum())
            with func:
                new = mb.constexpr_affine_dequantize(quantized_data=data, zero_point=zero, scale=scale, axis=axis,
                                                     before_op=op, name=f"{op.name}_fixed")
            func.replace_uses_of_var_after_op(anchor_op=op, old_var=op.outputs[0], new_var=new, force_replace=True)
            func.remove_ops([op])
    if not fixed:
        return ml, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rebuilt = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=target,
                             pass_pipeline=ct.PassPipeline.EMPTY, skip_model_load=True)
    spec = rebuilt.get_spec()
    spec.description.CopyFrom(ml.get_spec().description)
    model = ct.models.MLModel(spec, weights_dir=rebuilt.weights_dir, skip_model_load=sys.platform != "darwin")
    model._mil_program = prog  # noqa: SLF001 - keep it for the scale check below
    return model, fixed


def check_scales(ml: Any) -> int:
    """Raise if any quantized weight has a zero or non-finite scale; return the number of quantized weights."""
    prog = getattr(ml, "_mil_program", None)
    count = 0
    if prog is None:
        return count
    for func in prog.functions.values():
        for op in func.operations:
            if op.op_type in _DEQUANT_OPS:
                count += 1
                scale = np.asarray(op.scale.val)
                if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
                    raise EdgeclsError(f"CoreML weight {op.name} has a zero or non-finite quantization scale")
    return count


def validate_spec(path: Path, *, input_name: str, output_name: str, img_size: int, max_batch: int,
                  metadata_keys: tuple[str, ...] = (), int8: bool = False) -> dict[str, Any]:
    """Validate a saved ML package without running it (works on Linux).

    Checks: ML Program; one float32 input ``(1..max_batch, 3, S, S)`` and the logits output; the user metadata keys;
    conv/linear weights in FP16, or INT8 (quantized) where ``int8``. Returns weight dtype counts.
    """
    ct = _ct()
    from coremltools.proto import FeatureTypes_pb2, MIL_pb2

    where = path.name
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    problems: list[str] = []
    if spec.WhichOneof("Type") != "mlProgram":
        problems.append(f"type is {spec.WhichOneof('Type')}, not mlProgram")
    inputs, outputs = list(spec.description.input), list(spec.description.output)
    if [i.name for i in inputs] != [input_name] or [o.name for o in outputs] != [output_name]:
        problems.append(f"inputs {[i.name for i in inputs]} / outputs {[o.name for o in outputs]}")
    else:
        arr = inputs[0].type.multiArrayType
        ranges = [(r.lowerBound, r.upperBound) for r in arr.shapeRange.sizeRanges]
        want = [(1, max_batch), (3, 3), (img_size, img_size), (img_size, img_size)]
        if arr.dataType != FeatureTypes_pb2.ArrayFeatureType.FLOAT32 or ranges != want:
            problems.append(f"input {input_name} has ranges {ranges}, expected {want} float32")
    meta = dict(spec.description.metadata.userDefined)
    missing = [k for k in metadata_keys if k not in meta]
    if missing:
        problems.append(f"metadata lacks {missing}")
    dtypes: dict[str, str] = {}
    blocks = [b for f in spec.mlProgram.functions.values() for b in f.block_specializations.values()]
    for block in blocks:
        for op in block.operations:
            out = op.outputs[0].name if op.outputs else ""
            if op.type == "const":
                dtypes[out] = MIL_pb2.DataType.Name(op.outputs[0].type.tensorType.dataType)
            elif op.type in _DEQUANT_OPS:
                data = op.attributes.get("quantized_data") or op.attributes.get("data")
                dtypes[out] = MIL_pb2.DataType.Name(data.type.tensorType.dataType) if data is not None else "INT8"
    counts: dict[str, int] = {}
    for block in blocks:
        for op in block.operations:
            if op.type in ("conv", "linear") and "weight" in op.inputs:
                name = op.inputs["weight"].arguments[0].name
                kind = dtypes.get(name, "UNKNOWN")
                counts[kind] = counts.get(kind, 0) + 1
    if not counts:
        problems.append("no conv/linear weights found")
    if int8 and not (counts.get("INT8", 0) or counts.get("UINT8", 0)):
        problems.append(f"no INT8 weights (weight dtypes {counts})")
    if "FLOAT32" in counts:
        problems.append(f"{counts['FLOAT32']} weights are FLOAT32, expected FP16")
    if problems:
        raise EdgeclsError(f"{where}: CoreML spec check failed: {'; '.join(problems)}")
    return {"spec_validated": True, "weight_dtypes": counts, "spec_version": int(spec.specificationVersion)}


def write_user_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Set the package's user-defined metadata (and short descriptions) and save it in place."""
    ct = _ct()
    model = ct.models.MLModel(str(path), skip_model_load=True)
    for key, value in metadata.items():
        model.user_defined_metadata[key] = str(value)
    model.short_description = "edgecls multi-label classifier: logits out, apply a sigmoid per label"
    model.author = "edgecls"
    tmp = path.with_name(f".tmp.{path.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save(str(tmp))
    saved = dict(ct.models.MLModel(str(tmp), skip_model_load=True).get_spec().description.metadata.userDefined)
    missing = [k for k in metadata if saved.get(k) != str(metadata[k])]
    if missing:
        shutil.rmtree(tmp)
        raise EdgeclsError(f"{path.name}: user metadata {missing} did not survive saving the package")
    shutil.rmtree(path)
    tmp.replace(path)


def _runner(artifact: Any, bundle: Path) -> tuple[Runner | None, str]:
    from edgecls.runtime.backends import probe

    status = probe("coreml")
    if not status.usable:
        return None, _NOT_MACOS
    return Runner("coreml", None, None, artifact.path), ""


def _finish(ctx: "ExportContext", ml: Any, folder: Path, *, int8: bool) -> dict[str, Any]:
    path = folder / MODEL_FILE
    ml.save(str(path))
    return validate_spec(path, input_name=ctx.input_name, output_name=ctx.output_name, img_size=ctx.img_size,
                         max_batch=int(ctx.config.max_batch), int8=int8)


def _build_coreml(ctx: "ExportContext", folder: Path) -> Built:
    ct = _ct()
    ml = _convert(ctx, target=ct.target.iOS16)
    details = {"converter": "coremltools.convert(torch.export program, mlprogram, FLOAT16)",
               "coremltools": ct.__version__, "minimum_deployment_target": "iOS16 / macOS13",
               "compute_precision": "fp16"}
    details.update(_finish(ctx, ml, folder, int8=False))
    return Built(path=f"{folder.name}/{MODEL_FILE}", precision="fp16", details=details,
                 finalize=write_user_metadata)


def _build_coreml_int8(ctx: "ExportContext", folder: Path) -> Built:
    ct = _ct()
    calibration = None
    activations_reason = ("activation quantization calibrates by running the model, and CoreML predictions need "
                          "macOS: this artifact has 8-bit weights and FP16 activations")
    mode = "w8 (8-bit weights, FP16 activations)"
    precision = "int8-weights"
    target = ct.target.iOS16
    ml = None
    if sys.platform == "darwin":
        target = ct.target.iOS17  # quantize/dequantize activation ops need iOS17
        calib = ctx.calibration()
        try:
            ml = _quantize_activations(_convert(ctx, target=target), calib.images, ctx.input_name)
            mode, precision, activations_reason = "w8a8 (8-bit weights and activations)", "int8", ""
            calibration = calib.summary(method="coremltools linear_quantize_activations (linear_symmetric)")
        except Exception as exc:  # noqa: BLE001 - recorded in the manifest and logged, never silent
            activations_reason = f"linear_quantize_activations failed ({type(exc).__name__}: {str(exc)[:200]})"
            log.warning("coreml-int8: %s; keeping 8-bit weights only", activations_reason)
            ml = None
    if ml is None:
        ml = _convert(ctx, target=target)
    ml = _quantize_weights(ml)
    ml, fixed = fix_zero_scales(ml, target=target)
    quantized = check_scales(ml)
    details = {
        "converter": "coremltools.convert(torch.export program, mlprogram, FLOAT16)",
        "coremltools": ct.__version__,
        "quantization": mode,
        "weights": "int8 linear_symmetric per-channel (coremltools.optimize.coreml.linear_quantize_weights); "
                   "linear (head) ops and weights under 2048 values stay FP16",
        "quantized_weights": quantized,
        "zero_scale_channels_fixed": fixed,
        "minimum_deployment_target": "iOS17 / macOS14" if target == ct.target.iOS17 else "iOS16 / macOS13",
    }
    if activations_reason:
        details["activations"] = activations_reason
    details.update(_finish(ctx, ml, folder, int8=True))
    return Built(path=f"{folder.name}/{MODEL_FILE}", precision=precision, parent="coreml", calibration=calibration,
                 details=details, finalize=write_user_metadata)


_REQUIRES = ("torch", "coremltools")

COREML = register(Target(
    name="coreml",
    format="coreml",
    suffix=".mlpackage",
    extra="coreml",
    precision="fp16",
    options=frozenset({"max_batch", "fp16_tolerance", "fp16_min_agreement", "fp16_max_map_drop"}),
    doc="CoreML ML Program (.mlpackage) in FP16, converted from torch.export with a batch range 1..max_batch; "
        "class names, thresholds and preprocessing in its user metadata. Converts anywhere; predictions (and "
        "so the parity check) need macOS, elsewhere the spec is validated.",
    requires=_REQUIRES,
    build=_build_coreml,
    runner=_runner,
))

COREML_INT8 = register(Target(
    name="coreml-int8",
    format="coreml",
    suffix=".mlpackage",
    extra="coreml",
    precision="int8-weights",
    options=frozenset({"max_batch", "calib_split", "calib_size", "max_map_drop", "int8_min_agreement"}),
    doc="CoreML ML Program with int8 per-channel weights (linear_symmetric); on macOS also 8-bit activations "
        "calibrated on real images (the manifest's 'quantization' says which). The classifier head stays FP16.",
    requires=_REQUIRES,
    build=_build_coreml_int8,
    runner=_runner,
))
