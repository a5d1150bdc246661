"""The bench's roofline bound: per-node work and unit from an ONNX graph, the bound's arithmetic, the triad."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")


def _model(path):
    """images (1x8x16x16) -> 1x1 conv (dense, 16 ch) -> Relu (fused) -> 3x3 depthwise conv -> Add (residual of the
    first conv's output) -> GlobalAveragePool -> Flatten -> Gemm (16 -> 4)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name) for name, shape in
             (("w_pw", (16, 8, 1, 1)), ("w_dw", (16, 1, 3, 3)), ("w_fc", (4, 16)), ("b_fc", (4,)))]
    nodes = [
        helper.make_node("Conv", ["images", "w_pw"], ["pw"], name="pw"),
        helper.make_node("Relu", ["pw"], ["act"], name="act"),
        helper.make_node("Conv", ["act", "w_dw"], ["dw"], name="dw", group=16, pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["dw", "act"], ["res"], name="res"),
        helper.make_node("GlobalAveragePool", ["res"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "w_fc", "b_fc"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                           ["batch", 8, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_node_costs_put_each_layer_on_its_unit(tmp_path):
    from edgecls.bench._flops import count_macs
    from edgecls.bench._roofline import node_costs

    path = _model(tmp_path / "m.onnx")
    costs = {c.name: c for c in node_costs(path)}
    assert set(costs) == {"pw", "act", "dw", "res", "pool", "fc"}  # Flatten is free
    assert costs["pw"].unit == "matrix" and costs["pw"].macs == 16 * 16 * 16 * 8
    assert costs["dw"].unit == "vector" and costs["dw"].macs == 16 * 16 * 16 * 9
    assert costs["fc"].unit == "matrix" and costs["fc"].macs == 4 * 16
    assert (costs["pw"].label, costs["fc"].label, costs["act"].label) == ("w_pw", "w_fc", "act")
    assert costs["act"].fused and costs["act"].activation_elems == 0  # a post-op moves no bytes
    assert costs["res"].fused and costs["res"].activation_elems == 16 * 16 * 16  # only the residual's other input
    assert not costs["pool"].fused and costs["pool"].macs == 16 * 16 * 16
    assert costs["pw"].activation_elems == 8 * 256 + 16 * 256 and costs["pw"].weight_elems == 16 * 8
    # the counted convolutions and GEMM are exactly count_macs's
    assert sum(c.macs for c in costs.values() if c.op in ("Conv", "Gemm")) == count_macs(path)


def test_the_bound_is_the_slower_side_of_each_layer(tmp_path):
    from edgecls.bench._roofline import Rates, node_costs, roofline

    costs = node_costs(_model(tmp_path / "m.onnx"))
    rates = Rates(matrix=256.0, vector=64.0, how="test")
    fast_memory = roofline(costs, rates=rates, ghz=1.0, cores=1, gbs=1e6, precision="int8", batch=8)
    assert fast_memory.bound == "compute" and fast_memory.memory_seconds == 0
    expected = (2 * (16 * 16 * 16 * 8 + 64) / 256 + 2 * 16 * 16 * 16 * 9 / 64 + 3 * 16 * 16 * 16 / 32) / 1e9
    assert fast_memory.compute_seconds == pytest.approx(expected)
    assert fast_memory.images_per_second == pytest.approx(1 / expected)
    slow_memory = roofline(costs, rates=rates, ghz=1.0, cores=1, gbs=1e-3, precision="f32", batch=8)
    assert slow_memory.bound == "memory" and slow_memory.images_per_second < fast_memory.images_per_second
    assert dict(fast_memory.shares)["depthwise / grouped conv (vector)"] > 0.5  # 9 MACs per output on 4x slower lanes
    assert fast_memory.top[0][0] == "w_dw" and "depthwise" in fast_memory.summary()  # named by the layer's weight
    # within the last-level cache the same bytes move at the cache's bandwidth
    cached = roofline(costs, rates=rates, ghz=1.0, cores=1, gbs=1e-3, precision="f32", batch=8, cache_gbs=1e6,
                      cache_bytes=1 << 30)
    assert cached.bound == "compute"


def test_node_bounds_are_what_the_bound_sums_and_scale_with_the_clock(tmp_path):
    from edgecls.bench._roofline import Rates, node_bounds, node_costs, roofline

    costs = node_costs(_model(tmp_path / "m.onnx"))
    rates = Rates(matrix=256.0, vector=64.0, how="test")
    kw = dict(rates=rates, cores=2, gbs=1e6, precision="int8", batch=8)
    nodes = node_bounds(costs, ghz=2.6, **kw)
    assert [n.cost for n in nodes] == costs and all(n.side == "compute" for n in nodes)
    assert sum(n.seconds for n in nodes) == pytest.approx(1 / roofline(costs, ghz=2.6, **kw).images_per_second)
    assert {n.cost.name: n.kind for n in nodes}["dw"].startswith("depthwise")
    # a compute-bound model's bound scales with the clock the micro-kernels measure (2.6 -> 3.9 GHz: 1.5x)
    assert roofline(costs, ghz=3.9, **kw).images_per_second == pytest.approx(
        1.5 * roofline(costs, ghz=2.6, **kw).images_per_second)
    assert "clock 3.90 GHz" in roofline(costs, ghz=3.9, **kw).how


def test_unit_rates_follow_the_isa():
    from edgecls.bench._machine import Machine
    from edgecls.bench._roofline import unit_rates

    def machine(isa):
        return Machine(cpu="test", vendor="AuthenticAMD", arch="x86_64", family="26", cores=2, ghz=2.6,
                       ghz_source="", isa=isa, os="Linux", python="3")

    vnni = unit_rates(machine(("avx2", "fma", "avx512f", "avx512_vnni")), "int8")
    assert (vnni.matrix, vnni.vector) == (256.0, 64.0) and "VNNI" in vnni.how
    amx = unit_rates(machine(("avx2", "fma", "avx512f", "avx512_vnni", "amx_tile", "amx_int8")), "int8")
    assert amx.matrix == 2048.0 and amx.vector == 64.0 and "AMX" in amx.how
    assert unit_rates(machine(("avx2", "fma", "avx512f")), "f32").matrix == 64.0


def test_triad_bandwidth_is_measured():
    from edgecls.bench._roofline import measure_triad_gbs

    assert measure_triad_gbs(threads=2, mb=4, seconds=0.05) > 0.1


def _same_padding_model(path):
    """images (1x8x16x16) -> Pad whose pads are computed from Shape (Cast, Div, Ceil, as timm's dynamic "same"
    padding exports) -> 3x3 conv (8 -> 16): onnx's shape inference leaves the conv's output unknown."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name, value, dtype):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, dtype), name))

    nodes = [
        helper.make_node("Shape", ["images"], ["shape"]),
        const("two", 2, np.int64), const("half", [2.0], np.float32), const("zeros", [0, 0], np.int64),
        const("axes", [0], np.int64),
        helper.make_node("Gather", ["shape", "two"], ["h"]),
        helper.make_node("Unsqueeze", ["h", "axes"], ["h1"]),
        helper.make_node("Cast", ["h1"], ["hf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["hf", "half"], ["q"]),
        helper.make_node("Ceil", ["q"], ["c"]),
        helper.make_node("Div", ["c", "c"], ["one_f"]),  # 1.0, from the shape
        helper.make_node("Cast", ["one_f"], ["one"], to=TensorProto.INT64),
        helper.make_node("Concat", ["zeros", "one", "one", "zeros", "one", "one"], ["pads"], axis=0),
        helper.make_node("Pad", ["images", "pads"], ["padded"], name="pad"),
        helper.make_node("Conv", ["padded", "w"], ["logits"], name="conv"),
    ]
    w = numpy_helper.from_array(np.ones((16, 8, 3, 3), np.float32), "w")
    graph = helper.make_graph(nodes, "same", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                           ["batch", 8, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_shapes_onnx_cannot_infer_come_from_one_run_and_shape_arithmetic_is_free(tmp_path):
    pytest.importorskip("onnxruntime")
    from edgecls.bench._flops import count_macs
    from edgecls.bench._roofline import node_costs

    path = _same_padding_model(tmp_path / "same.onnx")
    costs = node_costs(path)
    assert [(c.name, c.op, c.unit, c.macs) for c in costs] == [("conv", "Conv", "matrix", 16 * 16 * 16 * 8 * 9)]
    assert count_macs(path) == 16 * 16 * 16 * 8 * 9  # the bench's GOP/s and % peak count that conv too
