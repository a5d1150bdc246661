"""Multiply-accumulates of one image through an ONNX model, from its graph and inferred shapes.

Counts Conv, ConvTranspose, Gemm and MatMul (where a classifier spends all but a rounding error of its arithmetic):
each costs ``numel(output) x K`` multiply-adds, K being the length of the reduction. Needs the ``onnx`` package.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def load_at_batch_1(path: str | Path) -> tuple[Any, Any]:
    """``(onnx, model)``: the ONNX model at ``path`` (no external data) with a dynamic batch dimension fixed to 1, for
    shape inference. Needs ``onnx`` (the train extra)."""
    from edgecls._deps import require

    onnx = require("onnx", extra="train")
    model = onnx.load(str(path), load_external_data=False)
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    return onnx, model


def count_macs(path: str | Path) -> int:
    """Multiply-accumulates per image of the ONNX model at ``path`` (batch fixed to 1).

    Raises:
        MissingDependency: onnx is not installed.
        ValueError: A counted node's shapes cannot be inferred.
    """
    onnx, model = load_at_batch_1(path)
    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes: dict[str, tuple[int, ...]] = {}
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    for value in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)

    counted = ("Conv", "ConvTranspose", "Gemm", "MatMul")
    if any(o not in shapes for n in inferred.node if n.op_type in counted for o in n.output[:1]):
        from edgecls.bench._roofline import _shapes_by_running  # shapes onnx cannot infer: dynamic "same" padding

        shapes.update(_shapes_by_running(model, {init.name: tuple(init.dims) for init in graph.initializer}))

    def shape(name: str, node: object) -> tuple[int, ...]:
        if name not in shapes:
            raise ValueError(f"{path}: no inferred shape for {name!r} of node {getattr(node, 'name', '?')}")
        return shapes[name]

    total = 0
    for node in inferred.node:
        op = node.op_type
        if op not in counted:
            continue
        out = math.prod(shape(node.output[0], node))
        if op == "Conv":
            k = math.prod(shape(node.input[1], node)[1:])
        elif op == "ConvTranspose":
            w = shape(node.input[1], node)
            groups = next((a.i for a in node.attribute if a.name == "group"), 1)
            k = w[0] // groups * math.prod(w[2:])
        elif op == "Gemm":
            trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
            a = shape(node.input[0], node)
            k = a[0] if trans_a else a[1]
        else:
            k = shape(node.input[0], node)[-1]
        total += out * k
    return int(total)
