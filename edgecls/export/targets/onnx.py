"""ONNX targets: ``onnx`` (FP32) and ``onnx-int8`` (static Q/DQ quantization for ONNX Runtime), and their pixel-input
variants ``onnx-u8`` and ``onnx-int8-u8``: the same graphs behind a prefix (:func:`add_pixel_input`) that takes the
resized uint8 BGR pixels, NHWC, and does the scaling, mean/std, BGR->RGB and NHWC->NCHW in the engine.

The FP32 graph is the root every other ONNX-based artifact (OpenVINO, TensorRT) is made from, so this module also
holds the helpers they share: :func:`float_onnx` (made once per export), :func:`export_float_onnx`, :func:`head_nodes`,
:func:`quantize_qdq`, :func:`check_qdq` and :func:`write_metadata`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgecls.errors import ConfigError, EdgeclsError, UnsupportedOption
from edgecls.export.targets.registry import Built, Runner, Target, register

if TYPE_CHECKING:  # pragma: no cover
    from edgecls.export.context import ExportContext

log = logging.getLogger("edgecls.export")

MIN_OPSET = 17
DYNAMO_MIN_OPSET = 18  # torch's dynamo exporter turns 17 into 18; 17 goes through the TorchScript exporter
MODEL_FILE = "model.onnx"
_CALIB_BATCH = 16


# ---------------------------------------------------------------------------------------------------------------------
# FP32 export


def check_opset(opset: int) -> None:
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= int(opset) <= newest:
        raise ConfigError(f"opset must be between {MIN_OPSET} and {newest} (this onnx {onnx.__version__}), got {opset}")


def export_float_onnx(model: Any, img_size: int, path: Path, *, opset: int, input_name: str,
                      output_name: str) -> dict[str, Any]:
    """Export ``model`` (logits out) to an FP32 ONNX file with a dynamic batch, simplified and checked.

    Opset >= 18 uses torch's dynamo exporter (``torch.export``; needs onnxscript) as one self-contained file;
    opset 17 uses the TorchScript exporter, since dynamo would silently produce 18. Either graph then goes
    through onnxslim and ``onnx.checker`` (full check). Returns what was done, for the manifest.
    """
    import onnx
    import torch

    check_opset(opset)
    example = torch.zeros(2, 3, img_size, img_size)
    out = io.StringIO()
    try:
        # The exporters print progress to stdout and warn about deprecations; keep the CLI output to our report.
        with contextlib.redirect_stdout(out), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if opset >= DYNAMO_MIN_OPSET:
                exporter = "torch.onnx.export(dynamo=True)"
                torch.onnx.export(
                    model, (example,), str(path), dynamo=True, opset_version=int(opset),
                    input_names=[input_name], output_names=[output_name],
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), external_data=False, verbose=False,
                )
            else:
                exporter = "torch.onnx.export(dynamo=False)"
                torch.onnx.export(
                    model, (example,), str(path), dynamo=False, opset_version=int(opset),
                    input_names=[input_name], output_names=[output_name], do_constant_folding=True,
                    dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                )
    except EdgeclsError:
        raise
    except Exception as exc:
        raise UnsupportedOption(
            f"torch could not export this model to ONNX opset {opset} ({type(exc).__name__}: {str(exc)[:300]})"
        ) from exc
    proto = onnx.load(str(path))
    exported_nodes = len(proto.graph.node)
    proto = _simplify(proto)
    got = _default_opset(proto)
    if got != int(opset):
        raise UnsupportedOption(f"torch exported ONNX opset {got} when {opset} was asked for; use --opset {got}")
    _check_io(proto, input_name, output_name)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return {"exporter": exporter, "opset": got, "nodes_exported": exported_nodes, "nodes": len(proto.graph.node),
            "simplifier": "onnxslim"}


def _simplify(proto: Any) -> Any:
    import onnxslim

    with contextlib.redirect_stdout(io.StringIO()):
        slim = onnxslim.slim(proto)
    return slim if slim is not None else proto


def _default_opset(proto: Any) -> int:
    return next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _check_io(proto: Any, input_name: str, output_name: str) -> None:
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [input_name] or outputs != [output_name]:
        raise EdgeclsError(f"exported ONNX has inputs {inputs} and outputs {outputs}; expected [{input_name!r}] and "
                           f"[{output_name!r}]")
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if dim0.HasField("dim_value"):
        raise EdgeclsError(f"exported ONNX input has a static batch of {dim0.dim_value}; expected a dynamic batch")


# ---------------------------------------------------------------------------------------------------------------------
# the classifier head


def head_nodes(proto: Any, *, prefix: str = "head.") -> list[str]:
    """Names of the classifier head's nodes: they stay float in every quantized artifact.

    The head is :class:`~edgecls.train.backbones.MultiLabelNet`'s ``head`` module: the nodes after the global pooling
    that use its parameters (initializers named ``head.*``, as both torch exporters name them) and everything between
    them and the output. Without such initializers (a graph from elsewhere), every node after the pooling is taken:
    the walk back from the output through nodes whose outputs are at most 2-D (batch, features).
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    rank: dict[str, int] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        if vi.type.tensor_type.HasField("shape"):
            rank[vi.name] = len(vi.type.tensor_type.shape.dim)
    producer = {out: node for node in inferred.graph.node for out in node.output}
    initializers = {i.name for i in inferred.graph.initializer}
    pooled: dict[str, Any] = {}
    stack = [o.name for o in inferred.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in pooled:
            continue
        if not all(rank.get(o, 99) <= 2 for o in node.output if o):
            continue
        pooled[node.name] = node
        stack.extend(i for i in node.input if i and i not in initializers)
    seeds = [n for n in pooled.values() if any(i.startswith(prefix) and i in initializers for i in n.input)]
    if not seeds:
        return sorted(pooled)
    consumers: dict[str, list[Any]] = {}
    for node in inferred.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    head = {n.name for n in seeds}
    frontier = list(seeds)
    while frontier:
        for out in frontier.pop().output:
            for nxt in consumers.get(out, []):
                if nxt.name in pooled and nxt.name not in head:
                    head.add(nxt.name)
                    frontier.append(nxt)
    return sorted(head)


_GATES = ("HardSigmoid", "Sigmoid")


def gate_nodes(proto: Any) -> list[str]:
    """Names of the gating nodes that stay float in a Q/DQ model: HardSigmoid/Sigmoid/HardSwish nodes and the Mul
    that applies a gate (``x * hardsigmoid(x)``: HardSwish once pre-processing has decomposed it; SiLU; the
    ``x * gate`` of a squeeze-excitation block).

    Quantizing them adds two roundings per block (the [0, 1] gate, the product), and with symmetric int8
    activations the non-negative gate keeps only 7 of its 8 bits. On MobileNetV3-Large (aquarium, TensorRT-style
    symmetric Q/DQ computed exactly) that cost 0.013 mAP; with the gates float, 0.008. The convolutions around
    them stay INT8, so nearly all the compute does too.
    """
    producer = {out: node for node in proto.graph.node for out in node.output}
    gated = []
    for node in proto.graph.node:
        if node.op_type in (*_GATES, "HardSwish"):
            gated.append(node.name)
        elif node.op_type == "Mul" and any(producer.get(i) is not None and producer[i].op_type in _GATES
                                           for i in node.input):
            gated.append(node.name)
    return gated


def _name_nodes(path: Path) -> None:
    """Give every unnamed node a unique name (onnxruntime's pre-processing decomposes HardSwish into unnamed
    HardSigmoid + Mul nodes), so quantization exclusions name exactly the nodes they mean."""
    import onnx

    proto = onnx.load(str(path))
    taken = {n.name for n in proto.graph.node}
    changed = False
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            changed = True
    if changed:
        onnx.save(proto, str(path))


# ---------------------------------------------------------------------------------------------------------------------
# INT8 (Q/DQ)


def quantize_qdq(float_path: Path, out_path: Path, images: np.ndarray, *, input_name: str,
                 symmetric_activations: bool, reduce_range: bool, workdir: Path) -> dict[str, Any]:
    """Static INT8 quantization of an FP32 ONNX into Q/DQ format, calibrated with MinMax on ``images``.

    Weights: int8, per output channel, symmetric; with ``reduce_range`` in 7 bits ([-64, 63]). Activations: uint8
    asymmetric (ONNX Runtime's fast U8S8 path on x86) or, with ``symmetric_activations``, int8 symmetric (zero
    point 0), which is what TensorRT's explicit quantization accepts. The classifier head (:func:`head_nodes`) stays
    float, so the sigmoid input is an FP32 logit. Channels whose weights are all (near) zero get scale 1 and zero
    weights from onnxruntime, never scale 0.

    Why ``reduce_range`` for a file ONNX Runtime runs on CPUs: x86 CPUs without VNNI (AVX2, AVX-512F) multiply u8
    activations by s8 weights with VPMADDUBSW, which adds pairs of products in 16 bits and saturates at 32767;
    255 * 127 * 2 overflows, 255 * 64 * 2 does not. With 8-bit weights a model's INT8 accuracy then depends on the
    CPU it runs on (Lite0 fine-tuned on the synthetic data: mAP drop 0.014 on an AVX2 CPU, -0.002 computed exactly);
    with 7-bit weights it is the same on every CPU, at a small cost (~0.002 mAP). GPUs (TensorRT) do not saturate.

    The gates (:func:`gate_nodes`: HardSwish/SiLU and squeeze-excitation products) stay float too.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.pos = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.pos >= len(images):
                return None
            batch = np.ascontiguousarray(images[self.pos : self.pos + _CALIB_BATCH], dtype=np.float32)
            self.pos += _CALIB_BATCH
            return {input_name: batch}

        def rewind(self) -> None:
            self.pos = 0

    prepared = prepared_float(float_path, workdir)
    proto = onnx.load(str(prepared))
    head = head_nodes(proto)
    gates = gate_nodes(proto)
    exclude = [*head, *gates]
    activation = QuantType.QInt8 if symmetric_activations else QuantType.QUInt8
    quantize_static(
        str(prepared), str(out_path), Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=bool(reduce_range),
        activation_type=activation,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=exclude,
        extra_options={"ActivationSymmetric": bool(symmetric_activations), "WeightSymmetric": True},
    )
    stats = check_qdq(out_path, exclude=head, symmetric_activations=symmetric_activations)
    return {
        "quantizer": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "weights": "int8 per-channel symmetric" + (", 7-bit range (no u8s8 saturation on x86 without VNNI)"
                                                  if reduce_range else ""),
        "activations": "int8 symmetric" if symmetric_activations else "uint8 asymmetric",
        "calibration_method": "minmax",
        "float_nodes": head,
        "float_gates": len(gates),
        **stats,
    }


def prepared_float(float_path: Path, workdir: Path) -> Path:
    """The FP32 ONNX after onnxruntime's quantization pre-processing (shape inference, HardSwish decomposed), every
    node named: what the INT8 quantizers start from; made once per work folder."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = workdir / "float.preprocessed.onnx"
    if not prepared.is_file():
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=False)
        _name_nodes(prepared)
    return prepared


def check_qdq(path: Path, *, exclude: Sequence[str] = (), symmetric_activations: bool = False) -> dict[str, int]:
    """Check a Q/DQ model: Q/DQ nodes present, per-channel weight scales, every scale finite and > 0, zero points
    0 where activations are symmetric, and the ``exclude`` nodes fed by float weights. Returns counts."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    producer = {out: node for node in proto.graph.node for out in node.output}
    q = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    if not q or not dq:
        raise EdgeclsError(f"{path.name}: no QuantizeLinear/DequantizeLinear nodes after quantization")
    per_channel = 0
    for node in q + dq:
        scale = numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else None
        if scale is not None:
            if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
                raise EdgeclsError(f"{path.name}: {node.name} has a zero or non-finite quantization scale")
            data = inits.get(node.input[0])
            if node.op_type == "DequantizeLinear" and data is not None and scale.size > 1 and data.data_type in (
                onnx.TensorProto.INT8, onnx.TensorProto.UINT8
            ):
                per_channel += 1  # an int8 weight with one scale per output channel (biases are int32)
        if symmetric_activations and len(node.input) > 2 and node.input[2] in inits:
            zp = numpy_helper.to_array(inits[node.input[2]])
            if np.any(zp != 0):
                raise EdgeclsError(f"{path.name}: {node.name} has a non-zero zero point (TensorRT needs symmetric)")
    if per_channel == 0:
        raise EdgeclsError(f"{path.name}: no per-channel weight scales found")
    onnx.checker.check_model(proto, full_check=True)
    names = {n.name: n for n in proto.graph.node}
    for name in exclude:
        node = names.get(name)
        if node is None:
            continue
        for inp in node.input:
            src = producer.get(inp)
            if src is not None and src.op_type == "DequantizeLinear" and src.input[0] in inits:
                raise EdgeclsError(f"{path.name}: head node {name} was quantized; it must stay float")
    return {"quantize_nodes": len(q), "dequantize_nodes": len(dq), "per_channel_weights": per_channel,
            "nodes": len(proto.graph.node)}


# ---------------------------------------------------------------------------------------------------------------------
# pixel input (uint8 NHWC): the normalisation inside the graph


def add_pixel_input(path: Path, spec: Any, *, kind: str) -> dict[str, Any]:
    """Put a prefix in front of the ONNX graph at ``path`` (in place): its input becomes uint8 pixels (N, S, S, 3) in
    ``kind``'s channel order (edgecls.preprocess.PIXELS_BGR or PIXELS_RGB), and the prefix computes the float32 NCHW
    tensor the graph took before, as :func:`edgecls.preprocess.preprocess` does on the CPU: Cast to float (first: the
    only layer TensorRT feeds a uint8 input into), NHWC -> NCHW (Transpose), the channel order reversed when it is BGR
    (a Gather of whole planes), minus the mean and times scale / std per
    channel (Sub, Mul: the same float32 operations in the same order, so the tensor is the CPU's bit for bit).

    Works for any graph with one image input (the FP32 ONNX and the Q/DQ INT8 ONNX alike: the prefix feeds the first
    QuantizeLinear). Returns what was done, for the manifest.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgecls.preprocess import PIXELS_BGR, PIXELS_RGB, _norm_constants

    if kind not in (PIXELS_BGR, PIXELS_RGB):
        raise ConfigError(f"pixel input must be {PIXELS_BGR} or {PIXELS_RGB}, got {kind!r}")
    proto = onnx.load(str(path))
    graph = proto.graph
    if len(graph.input) != 1:
        raise EdgeclsError(f"{path.name}: expected one graph input, got {len(graph.input)}")
    old = graph.input[0]
    name = old.name
    dims = old.type.tensor_type.shape.dim
    batch = dims[0].dim_param or (str(dims[0].dim_value) if dims[0].HasField("dim_value") else "batch")
    size = int(spec.img_size)
    taken = {o for n in graph.node for o in (*n.input, *n.output)} | {i.name for i in graph.initializer}

    def fresh(stem: str) -> str:
        out = f"edgecls_pre/{stem}"
        while out in taken:
            out += "_"
        taken.add(out)
        return out

    tensor = fresh("tensor")
    for node in graph.node:  # every consumer of the old input reads the prefix's output instead
        for i, inp in enumerate(node.input):
            if inp == name:
                node.input[i] = tensor
    mean, inv_std = _norm_constants(spec)
    c_mean, c_inv, c_order = fresh("mean"), fresh("scale_over_std"), fresh("rgb_order")
    graph.initializer.extend([
        numpy_helper.from_array(mean.reshape(1, 3, 1, 1), c_mean),
        numpy_helper.from_array(inv_std.reshape(1, 3, 1, 1), c_inv),
        numpy_helper.from_array(np.array([2, 1, 0], dtype=np.int64), c_order),
    ])
    # Cast first: TensorRT takes a uint8 network input only into a Cast. The channel order is reversed after the
    # transpose, where a Gather copies whole planes (on ONNX Runtime 4x faster than gathering along the last axis)
    as_float, nchw = fresh("float"), fresh("nchw")
    nodes = [helper.make_node("Cast", [name], [as_float], to=TensorProto.FLOAT, name="edgecls_pre/to_float"),
             helper.make_node("Transpose", [as_float], [nchw], perm=[0, 3, 1, 2], name="edgecls_pre/nhwc_to_nchw")]
    src = nchw
    if kind == PIXELS_BGR:
        rgb = fresh("rgb")
        nodes.append(helper.make_node("Gather", [src, c_order], [rgb], axis=1, name="edgecls_pre/bgr_to_rgb"))
        src = rgb
    centred = fresh("centred")
    nodes += [
        helper.make_node("Sub", [src, c_mean], [centred], name="edgecls_pre/minus_mean"),
        helper.make_node("Mul", [centred, c_inv], [tensor], name="edgecls_pre/times_scale_over_std"),
    ]
    kept = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *kept])
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(name, TensorProto.UINT8, [batch, size, size, 3]))
    onnx.checker.check_model(proto, full_check=True)
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    return {"input": kind, "input_prefix": [n.op_type for n in nodes],
            "input_note": "uint8 pixels (N, S, S, 3) after the resize/crop; scaling, mean/std, channel order and "
                          "NHWC->NCHW run in the graph"}


# ---------------------------------------------------------------------------------------------------------------------
# metadata


def write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace the model's ``metadata_props`` with ``metadata`` (strings), leaving the graph untouched."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    proto.producer_name = "edgecls"
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------------------------------
# targets


def ort_runner(artifact: Any, bundle: Path) -> tuple[Runner | None, str]:
    """ONNX Runtime on the CPU: deterministic FP32 (or the file's INT8) kernels, comparable across machines."""
    from edgecls.runtime.backends import probe

    status = probe("onnxruntime")
    if not status.installed:
        return None, f"onnxruntime is not installed ({status.reason}); pip install \"edgecls[runtime]\""
    return Runner("onnxruntime", "cpu", None, artifact.path), ""


def float_onnx(ctx: "ExportContext") -> tuple[Path, dict[str, Any]]:
    """The FP32 ONNX every other artifact is made from (exported, simplified, checked) in the export's work folder,
    and how it was made; made once per export."""

    def make() -> tuple[Path, dict[str, Any]]:
        path = ctx.workdir / "float.onnx"
        details = export_float_onnx(ctx.model, ctx.img_size, path, opset=ctx.config.opset,
                                    input_name=ctx.input_name, output_name=ctx.output_name)
        return path, details

    return ctx.once("float_onnx", make)


def float_head_nodes(ctx: "ExportContext") -> list[str]:
    """ONNX node names of the classifier head in :func:`float_onnx` (kept float by every quantizer)."""
    import onnx

    return ctx.once("head", lambda: head_nodes(onnx.load(str(float_onnx(ctx)[0]))))


def _build_onnx(ctx: "ExportContext", folder: Path) -> Built:
    src, details = float_onnx(ctx)
    shutil.copyfile(src, folder / MODEL_FILE)
    return Built(path=f"{folder.name}/{MODEL_FILE}", precision="fp32", details=dict(details), finalize=write_metadata)


def int8_onnx(ctx: "ExportContext") -> tuple[Path, dict[str, Any]]:
    """The Q/DQ INT8 ONNX for ONNX Runtime (uint8 activations, 7-bit weights) in the work folder, made once per
    export (``onnx-int8`` and ``onnx-int8-u8`` are this file)."""

    def make() -> tuple[Path, dict[str, Any]]:
        src, float_details = float_onnx(ctx)
        path = ctx.workdir / "int8.onnx"
        details = quantize_qdq(src, path, ctx.calibration().images, input_name=ctx.input_name,
                               symmetric_activations=False, reduce_range=True, workdir=ctx.workdir)
        details["note"] = ("uint8 activations: ONNX Runtime's fast CPU path; TensorRT needs symmetric int8 "
                           "activations, see the tensorrt-int8 artifact")
        details["opset"] = float_details["opset"]
        return path, details

    return ctx.once("int8_onnx", make)


def _build_onnx_int8(ctx: "ExportContext", folder: Path) -> Built:
    src, details = int8_onnx(ctx)
    shutil.copyfile(src, folder / MODEL_FILE)
    return Built(path=f"{folder.name}/{MODEL_FILE}", precision="int8", parent="onnx",
                 calibration=ctx.calibration().summary(method="minmax (onnxruntime quantize_static)"),
                 details=dict(details), finalize=write_metadata)


def pixel_build(build: Any) -> Any:
    """A ``build`` for the pixel-input variant of a target whose ``build`` writes one ONNX file: the same file
    behind :func:`add_pixel_input` (BGR, the decode order, so the CPU does no channel work)."""
    from edgecls.preprocess import PIXELS_BGR

    def build_pixels(ctx: "ExportContext", folder: Path) -> Built:
        built = build(ctx, folder)
        onnx_rel = built.details.get("onnx", built.path)
        built.details.update(add_pixel_input(folder.parent / onnx_rel, ctx.preprocess, kind=PIXELS_BGR))
        built.input = PIXELS_BGR
        return built

    build_pixels.__module__ = build.__module__
    build_pixels.__name__ = f"{build.__name__}_pixels"
    return build_pixels


PIXEL_DOC = (" This variant takes the resized and cropped uint8 BGR pixels, NHWC (N, S, S, 3), a quarter of the "
             "float tensor's bytes; the scaling, mean/std, BGR->RGB and NHWC->NCHW run inside the engine.")


def pixel_variant(target: Target, build: Any, accuracy_aware: Any = None) -> Target:
    """The ``<name>-u8`` target of ``target``: the same artifact taking uint8 pixels (``build`` makes it;
    ``accuracy_aware`` makes it through NNCF's accuracy-aware quantization, None where this variant has none)."""
    from dataclasses import replace

    return replace(target, name=f"{target.name}-u8", doc=target.doc + PIXEL_DOC, build=build,
                   accuracy_aware=accuracy_aware)


def activations_to_uint8(proto: Any) -> int:
    """Rewrite the int8 activation Q/DQ pairs of ``proto`` (NNCF's ONNX quantizer writes asymmetric activations as
    int8 with a zero point) as uint8 with the zero point shifted by 128: ``q_u8 = q_s8 + 128`` gives the very same
    dequantized values, and uint8 x int8 is ONNX Runtime's fast CPU path (as ``quantize_static`` makes it). Weights
    (DequantizeLinear of an int8 initializer) are left alone. Returns how many zero points were rewritten."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    quantized_outputs: set[str] = set()
    weight_zps = {n.input[2] for n in proto.graph.node
                  if n.op_type == "DequantizeLinear" and n.input[0] in inits and len(n.input) > 2}
    activation = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                  and n.input[0] not in inits and len(n.input) > 2 and n.input[2] in inits]
    shifted: dict[str, str] = {}
    for node in activation:
        name = node.input[2]
        if name not in shifted:
            zp = numpy_helper.to_array(inits[name])
            if zp.dtype != np.int8:
                continue
            new = name if name not in weight_zps else f"{name}_u8"
            tensor = numpy_helper.from_array((zp.astype(np.int16) + 128).astype(np.uint8), new)
            if new == name:
                inits[name].CopyFrom(tensor)
            else:
                proto.graph.initializer.append(tensor)
            shifted[name] = new
        node.input[2] = shifted[name]
        if node.op_type == "QuantizeLinear":
            quantized_outputs.add(node.output[0])
    retyped = quantized_outputs | {name for name, new in shifted.items() if new == name}
    for info in proto.graph.value_info:  # the recorded types of the zero points and quantized tensors follow
        if info.name in retyped:
            info.type.tensor_type.elem_type = onnx.TensorProto.UINT8
    return len(shifted)


def weights_to_7bit(proto: Any) -> int:
    """Halve the range of int8 weights that use more than 7 bits (NNCF's ONNX quantizer applies its overflow fix to
    the first layer only): ``w7 = round(w / 2)`` with twice the scale, what ``reduce_range`` gives onnx-int8's PTQ,
    so u8 x s8 pair sums fit in 16 bits on x86 CPUs without VNNI. Returns how many weights were rewritten."""
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    done = 0
    for node in proto.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits or node.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[0]])
        if w.dtype != np.int8 or int(np.abs(w.astype(np.int32)).max()) <= 64:
            continue
        scale = numpy_helper.to_array(inits[node.input[1]])
        inits[node.input[0]].CopyFrom(numpy_helper.from_array(
            np.clip(np.round(w.astype(np.float32) / 2), -64, 64).astype(np.int8), node.input[0]))
        inits[node.input[1]].CopyFrom(numpy_helper.from_array((scale * 2).astype(scale.dtype), node.input[1]))
        done += 1
    return done


def _build_onnx_int8_accuracy_aware(ctx: "ExportContext", folder: Path) -> Built:
    """NNCF's accuracy-aware quantization of the ONNX model (the first INT8 fix, see :mod:`edgecls.export.fixes`).

    onnxruntime's quantizer has no accuracy control, so this one is NNCF's ONNX quantizer with the settings of
    ``onnx-int8``'s: Q/DQ, int8 per-channel symmetric weights in a 7-bit range (``overflow_fix``), uint8 asymmetric
    activations (MIXED preset) with min/max ranges, the head and the gates float; then the layers that cost the
    most are reverted to float until mAP and decision agreement hold.
    """
    import onnx
    import onnxruntime as ort
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    from edgecls._deps import require
    from edgecls.export.fixes import NothingQuantized, reverted_layers, validation_fn, validation_items

    nncf = require("nncf", extra="train")
    nncf.set_log_level(logging.ERROR)
    cfg = ctx.config
    src, float_details = float_onnx(ctx)
    proto = onnx.load(str(prepared_float(src, ctx.workdir)))
    head, gates = head_nodes(proto), gate_nodes(proto)
    calib = ctx.calibration()
    name = ctx.input_name
    calibration = nncf.Dataset([calib.images[i : i + 1] for i in range(len(calib))], lambda x: {name: x})
    validation = nncf.Dataset(validation_items(ctx), lambda item: {name: item[0]})

    def session(model: Any) -> Any:  # judged as it will be saved: 7-bit weights (see weights_to_7bit)
        seven = onnx.ModelProto()
        seven.CopyFrom(model)
        weights_to_7bit(seven)
        return ort.InferenceSession(seven.SerializeToString(), providers=["CPUExecutionProvider"])

    advanced = nncf.AdvancedQuantizationParameters(
        overflow_fix=nncf.OverflowFix.ENABLE, activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    with reverted_layers() as reverted:
        quantized = nncf.quantize_with_accuracy_control(
            proto, calibration, validation,
            validation_fn(ctx, lambda s, x: s.run(None, {name: x})[0], session, per_item_scores=True),
            max_drop=float(cfg.map_budget), drop_type=nncf.DropType.ABSOLUTE, preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(calib), ignored_scope=nncf.IgnoredScope(names=[*head, *gates], validate=False),
            advanced_quantization_parameters=advanced,
        )
    if not any(n.op_type == "QuantizeLinear" for n in quantized.graph.node):
        raise NothingQuantized("NNCF's accuracy control reverted every layer to float")
    shifted = activations_to_uint8(quantized)
    halved = weights_to_7bit(quantized)
    onnx.save(quantized, str(folder / MODEL_FILE))
    stats = check_qdq(folder / MODEL_FILE, exclude=head)
    details = {
        "quantizer": "nncf.quantize_with_accuracy_control (onnx)", "nncf": nncf.__version__, "format": "QDQ",
        "method": "nncf.quantize_with_accuracy_control",
        "weights": "int8 per-channel symmetric, 7-bit range (no u8s8 saturation on x86 without VNNI; NNCF's overflow "
                   f"fix, then {halved} weight(s) NNCF left in 8 bits halved)",
        "activations": f"uint8 asymmetric (MIXED preset; NNCF's int8 zero points shifted by 128 in {shifted} "
                       "activation Q/DQ pairs: the same values, ONNX Runtime's u8s8 path as onnx-int8)",
        "calibration_method": "minmax", "float_nodes": head,
        "float_gates": len(gates), "opset": float_details["opset"],
        "accuracy_control": {"metric": f"mAP on the {cfg.parity_split} split, lowered by any decision-agreement "
                                       f"shortfall under {cfg.int8_min_agreement:g}",
                             "max_drop": cfg.map_budget, "drop_type": "absolute"},
        **reverted, **stats,
    }
    return Built(path=f"{folder.name}/{MODEL_FILE}", precision="int8", parent="onnx",
                 calibration=calib.summary(method="nncf min-max statistics + fast bias correction"), details=details,
                 finalize=write_metadata)


_ONNX_REQUIRES = ("torch", "onnx", "onnxscript", "onnxslim")

ONNX = register(Target(
    name="onnx",
    format="onnx",
    suffix=".onnx",
    extra="train",
    precision="fp32",
    options=frozenset({"opset", "fp32_tolerance"}),
    doc="FP32 ONNX with a dynamic batch and logits out (the sigmoid is applied outside the model), exported with "
        "torch's dynamo exporter (opset >= 18; TorchScript exporter for 17), simplified with onnxslim and checked "
        "with onnx.checker. Class names, thresholds and preprocessing are in metadata_props.",
    requires=_ONNX_REQUIRES,
    build=_build_onnx,
    runner=ort_runner,
))

ONNX_INT8 = register(Target(
    name="onnx-int8",
    format="onnx",
    suffix=".onnx",
    extra="runtime",
    precision="int8",
    options=frozenset({"opset", "calib_split", "calib_size", "max_map_drop", "int8_min_agreement", "int8_fixes",
                       "qat_epochs"}),
    doc="Static INT8 ONNX in Q/DQ format for ONNX Runtime: int8 per-channel symmetric weights in a 7-bit range (so "
        "x86 CPUs without VNNI do not saturate and accuracy is the same on every CPU), uint8 activations "
        "calibrated (MinMax) on real images through the shared preprocessing; the classifier head stays float. "
        "For TensorRT (symmetric int8 activations) use tensorrt-int8. When that breaks the INT8 budget, NNCF's "
        "accuracy-aware ONNX quantization (same settings) reverts the costliest layers to float until it holds, "
        "then (with qat_epochs) a quantization-aware fine-tune is tried.",
    requires=(*_ONNX_REQUIRES, "onnxruntime"),
    build=_build_onnx_int8,
    runner=ort_runner,
    accuracy_aware=_build_onnx_int8_accuracy_aware,
))

ONNX_U8 = register(pixel_variant(ONNX, pixel_build(_build_onnx)))
ONNX_INT8_U8 = register(pixel_variant(ONNX_INT8, pixel_build(_build_onnx_int8),
                                     pixel_build(_build_onnx_int8_accuracy_aware)))
