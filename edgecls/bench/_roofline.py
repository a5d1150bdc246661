"""The fastest a model can run on this CPU: a roofline bound from its ONNX graph, node by node.

Each node of the float ONNX graph costs the longer of its arithmetic at the rate of the unit that can run it and its
bytes at the memory bandwidth measured here (:func:`measure_triad_gbs`, a STREAM-style triad); the bound is the sum
over nodes. The ISA peak of :mod:`edgecls.bench._machine` assumes every multiply-add runs on the widest unit, which
depthwise convolutions and elementwise layers cannot use; this bound does not.

Units (per core per cycle, from the CPU's flags; ``ops`` = 2 per multiply-add):

* ``matrix``: dense and pointwise convolutions, Gemm and MatMul (a reduction over channels, which AMX tiles and VNNI
  dot products are built for): AMX where the CPU has it, else the VNNI (INT8) or FMA (float) vector rate, i.e. the
  ISA peak of the row's precision.
* ``vector``: depthwise and grouped convolutions (a reduction over the kernel window only, accumulated in 32-bit
  lanes: one multiply-add per 32-bit lane per FMA pipe, even for INT8), and every elementwise node (activations,
  adds, pooling, resizing), one operation per output element at that lane rate.

Bytes: each node reads its inputs and writes its output once (activations at the row's element size: 1 byte for
INT8, 2 for BF16/F16, 4 for FP32; weights at that size too, read once per batch). An activation, batch-norm or
residual add right after a convolution is fused into it by every engine (a post-op): it adds its arithmetic but
moves no bytes beyond a residual's second input. Bytes move at the triad bandwidth measured on arrays that fit the
last-level cache when the node's working set at the batch (activations x batch + weights) fits that cache, else at
the DRAM triad bandwidth. Shape-only nodes (Shape, Reshape, Flatten, Squeeze...) and the Q/DQ pairs an INT8 engine
fuses away cost nothing.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

_FREE = {"Shape", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Constant", "Gather", "Concat",
         "QuantizeLinear", "DequantizeLinear", "Cast", "Dropout", "Transpose", "Pad"}  # a Pad: the next conv's border
_SHAPE_OF = {"Shape", "Size"}  # their outputs depend on shapes alone: the arithmetic on them (dynamic "same" padding)
_MATRIX = {"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"}
_CONVS = {"Conv", "ConvInteger", "QLinearConv"}
_REDUCE = {"GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool", "ReduceMean", "ReduceSum", "ReduceMax"}
# elementwise nodes an engine folds into the convolution or GEMM before them (oneDNN / OpenVINO / ORT post-ops)
_POST_OPS = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "BatchNormalization", "Add",
             "Mul", "Elu", "Gelu"}
ELEMENT_BYTES = {"int8": 1, "bf16": 2, "f16": 2}  # anything else: 4 (fp32)


@dataclass(frozen=True)
class NodeCost:
    """One graph node's work per image: multiply-adds (or elementwise operations), the unit, and the bytes moved."""

    name: str
    op: str
    unit: str  # matrix | vector
    macs: int  # multiply-adds; an elementwise node's operations count as one each
    activation_elems: int  # input and output activation elements moved, per image (0 for a fused post-op)
    weight_elems: int  # parameter elements, read once per batch
    fused: bool = False  # a post-op of the convolution / GEMM before it
    layer: str = ""  # a convolution's or GEMM's weight, less ".weight": the model's own name for the layer

    @property
    def label(self) -> str:
        """The layer's name where the graph keeps it (exporters number their nodes: node_Conv_865), else the node's."""
        return self.layer or self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Rates:
    """Per-core-per-cycle rates of the two units, in operations (2 per multiply-add), and where they come from."""

    matrix: float
    vector: float
    how: str


@dataclass(frozen=True)
class Roofline:
    """The bound of one model at one precision and batch on ``cores`` cores: images/s, and what limits it."""

    images_per_second: float
    compute_seconds: float  # per image: the nodes whose arithmetic takes longer than their bytes
    memory_seconds: float  # per image: the nodes whose bytes take longer
    bound: str  # compute | memory: the side holding the larger share of the time
    top: tuple[tuple[str, str, float], ...]  # (node, op, share of the bound's time), the costliest first
    how: str
    shares: tuple[tuple[str, float], ...] = ()  # (kind of layer, share of the bound's time), largest first

    def summary(self) -> str:
        """One line: the bound, its side, where its time goes and the costliest layers."""
        kinds = ", ".join(f"{k} {100 * v:.0f}%" for k, v in self.shares)
        top = ", ".join(f"{n} ({op}, {100 * v:.1f}%)" for n, op, v in self.top[:3])
        return f"{self.images_per_second:.0f} img/s, {self.bound}-bound; time: {kinds}; costliest: {top}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def node_costs(path: str | Path) -> list[NodeCost]:
    """Per-node work of one image through the ONNX model at ``path`` (batch fixed to 1). Needs ``onnx``."""
    from edgecls.bench._flops import load_at_batch_1

    onnx, model = load_at_batch_1(path)
    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
    weights = {init.name: tuple(init.dims) for init in graph.initializer}
    shapes: dict[str, tuple[int, ...]] = dict(weights)
    for value in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    if any(o not in shapes for n in inferred.node for o in n.output if o and n.op_type in _CONVS | _MATRIX):
        shapes.update(_shapes_by_running(model, weights))  # shapes onnx cannot infer (a Pad computed from Shape)
    constant = set(weights)  # tensors computed from parameters alone (a DequantizeLinear of a weight)
    made_by: dict[str, str] = {}  # tensor -> the op that produced it, through shape-only and Q/DQ nodes
    costs = []
    for node in inferred.node:
        op = node.op_type
        ins = [n for n in node.input if n]
        if op in _SHAPE_OF or all(n in constant for n in ins):
            constant.update(node.output)
            continue
        if op in _FREE:
            src = next((made_by[n] for n in ins if n in made_by), None)
            for o in node.output:
                if src is not None:
                    made_by[o] = src
            continue
        for o in node.output:
            made_by[o] = op if op not in _POST_OPS else made_by.get(next(iter(ins), ""), op)
        if not node.output or node.output[0] not in shapes:
            continue
        out = math.prod(shapes[node.output[0]])
        acts = [n for n in ins if n not in constant and n in shapes]
        params = [n for n in ins if n in constant and n in shapes]
        act_elems = out + sum(math.prod(shapes[n]) for n in acts)
        weight_elems = sum(math.prod(shapes[n]) for n in params)
        if op in _CONVS:
            w = shapes.get(ins[1 if op != "QLinearConv" else 3], ())
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            k = math.prod(w[1:]) if len(w) > 1 else 1
            unit = "matrix" if group == 1 else "vector"  # depthwise / grouped: no channel reduction to tile
            costs.append(NodeCost(node.name or node.output[0], op, unit, out * k, act_elems, weight_elems,
                                  layer=_layer(ins[1 if op != "QLinearConv" else 3])))
        elif op in _MATRIX:
            a = shapes.get(ins[0], ())
            trans_a = next((x.i for x in node.attribute if x.name == "transA"), 0)
            k = (a[0] if trans_a else a[-1]) if a else 1
            costs.append(NodeCost(node.name or node.output[0], op, "matrix", out * k, act_elems, weight_elems,
                                  layer=next((_layer(n) for n in ins[1:] if n in weights), "")))
        else:
            # one operation per output element; a pooling or reduction, one per input element
            work = sum(math.prod(shapes[n]) for n in acts) if op in _REDUCE else out
            # a post-op whose (first) input a convolution or GEMM made, possibly through other post-ops, is fused
            fused = op in _POST_OPS and bool(acts) and made_by.get(acts[0]) in (_CONVS | _MATRIX)
            if fused:  # it only reads what the kernel did not already hold: a residual's other operand
                act_elems = sum(math.prod(shapes[n]) for n in acts[1:])
            costs.append(NodeCost(node.name or node.output[0], op, "vector", work, act_elems, weight_elems, fused))
    return costs


def _layer(weight: str) -> str:
    """``encoder.blocks.1.0.conv_pw`` for the initializer ``encoder.blocks.1.0.conv_pw.weight``."""
    return weight.removesuffix(".weight")


def _shapes_by_running(model: Any, weights: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from one run of ``model`` on zeros with onnxruntime (batch 1), {} when it cannot run."""
    from edgecls._deps import has

    if not has("onnxruntime"):
        return {}
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    names = [o for n in probe.graph.node for o in n.output if o and o not in known]
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    feeds = {}
    for value in probe.graph.input:
        if value.name in weights:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in value.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        feeds[value.name] = np.zeros(dims, dtype=dtype)
    try:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every named tensor
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        outs = session.run(None, feeds)
    except Exception:  # an odd graph: the nodes without a shape are left out of the bound
        return {}
    return {o.name: tuple(np.shape(v)) for o, v in zip(session.get_outputs(), outs)}


def unit_rates(machine: Any, precision: str) -> Rates:
    """Operations per core per cycle of the matrix and vector units for ``precision`` on ``machine``."""
    from edgecls.bench._machine import _ops_per_cycle

    fp32, bf16, int8, how = _ops_per_cycle(machine)
    isa = set(machine.isa)
    lane = fp32  # one multiply-add per 32-bit lane per FMA pipe: depthwise and elementwise work at any precision
    if precision == "int8":
        matrix = int8
    elif precision == "bf16" and bf16:
        matrix = bf16
    else:
        matrix = fp32
    unit = "AMX tiles" if precision in ("int8", "bf16") and {"amx_int8", "amx_bf16"} & isa else \
        ("VNNI" if precision == "int8" and ({"avx512_vnni", "avx_vnni", "asimddp", "i8mm"} & isa) else "FMA")
    return Rates(float(matrix), float(lane), f"matrix ({unit}) {matrix:g} OP/cycle/core, vector (32-bit lanes, "
                                             f"depthwise and elementwise) {lane:g} OP/cycle/core; {how}")


@dataclass(frozen=True)
class NodeBound:
    """One node's share of the bound: its fastest time per image here and the side that sets it."""

    cost: NodeCost
    seconds: float  # per image: max(arithmetic / unit rate, bytes / bandwidth)
    side: str  # compute | memory
    kind: str  # the kind of layer (see :data:`KINDS`)


KINDS = ("dense conv / GEMM (matrix unit)", "depthwise / grouped conv (vector)", "fused activations / adds (vector)",
         "other elementwise / pooling (vector)")


def node_bounds(costs: Sequence[NodeCost], *, rates: Rates, ghz: float, cores: int, gbs: float, precision: str,
                batch: int, cache_gbs: float | None = None, cache_bytes: int = 0) -> list[NodeBound]:
    """Each node's fastest time per image on ``cores`` cores (what :func:`roofline` sums), in graph order."""
    size = ELEMENT_BYTES.get(precision, 4)
    hz = ghz * 1e9 * cores
    out = []
    for c in costs:
        if c.unit == "matrix":
            ops, rate = 2.0 * c.macs, rates.matrix
        elif c.op in _CONVS:  # depthwise / grouped: a multiply-add per 32-bit lane per pipe
            ops, rate = 2.0 * c.macs, rates.vector
        else:  # elementwise: one operation per lane per pipe
            ops, rate = float(c.macs), rates.vector / 2.0
        t_compute = ops / (rate * hz)
        in_cache = cache_gbs and (c.activation_elems * batch + c.weight_elems) * size <= cache_bytes
        t_memory = (c.activation_elems + c.weight_elems / batch) * size / ((cache_gbs if in_cache else gbs) * 1e9)
        kind = KINDS[0] if c.unit == "matrix" else KINDS[1] if c.op in _CONVS else KINDS[2] if c.fused else KINDS[3]
        out.append(NodeBound(c, max(t_compute, t_memory), "compute" if t_compute >= t_memory else "memory", kind))
    return out


def roofline(costs: Sequence[NodeCost], *, rates: Rates, ghz: float, cores: int, gbs: float, precision: str,
             batch: int, cache_gbs: float | None = None, cache_bytes: int = 0) -> Roofline:
    """The bound: per node max(arithmetic / unit rate, bytes / bandwidth), summed; weights read once per batch.

    ``gbs``: DRAM triad bandwidth; ``cache_gbs`` (with ``cache_bytes``, the last-level cache's size): the bandwidth of
    a node whose working set at ``batch`` fits that cache. ``ghz``: the clock the vector units run at (the bench
    lifts the reported clock to what its micro-kernels measure, :mod:`edgecls.bench._kernels`)."""
    size = ELEMENT_BYTES.get(precision, 4)
    nodes = node_bounds(costs, rates=rates, ghz=ghz, cores=cores, gbs=gbs, precision=precision, batch=batch,
                        cache_gbs=cache_gbs, cache_bytes=cache_bytes)
    compute = sum(n.seconds for n in nodes if n.side == "compute")
    memory = sum(n.seconds for n in nodes if n.side == "memory")
    by_kind: dict[str, float] = {}
    for n in nodes:
        by_kind[n.kind] = by_kind.get(n.kind, 0.0) + n.seconds
    total = compute + memory
    times = sorted(((n.cost.label, n.cost.op, n.seconds) for n in nodes), key=lambda t: -t[2])
    top = tuple((n, op, round(t / total, 4)) for n, op, t in times[:5]) if total else ()
    shares = tuple(sorted(((k, round(v / total, 4)) for k, v in by_kind.items()), key=lambda kv: -kv[1])) \
        if total else ()
    return Roofline(1.0 / total if total else 0.0, compute, memory, "compute" if compute >= memory else "memory",
                    top, f"{rates.how}; clock {ghz:.2f} GHz; memory: triad {gbs:.1f} GB/s"
                    + (f" (DRAM), {cache_gbs:.1f} GB/s within the {cache_bytes / 2**20:.0f} MiB last-level cache"
                       if cache_gbs else "") + f", {size} byte(s) per element, batch {batch}", shares)


def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache Linux reports (sysfs; the L3, shared by the cores), 0 when unknown."""
    best = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        try:
            best = max(best, int(text.rstrip("KMG")) * mult)
        except ValueError:
            continue
    return best


@dataclass(frozen=True)
class Bandwidth:
    """Triad bandwidths measured here: DRAM (arrays far beyond the caches) and within the last-level cache."""

    dram_gbs: float
    cache_gbs: float
    cache_bytes: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_bandwidth(threads: int) -> Bandwidth:
    """:func:`measure_triad_gbs` on 64 MB arrays (DRAM) and on three arrays that fill a quarter of the last-level
    cache each (sized from sysfs; 8 MiB assumed when unknown; never below the DRAM figure)."""
    llc = last_level_cache_bytes() or 8 << 20
    dram = measure_triad_gbs(threads, mb=64)
    # a cache is never slower than DRAM: a lower figure is noise (another process on the cores), not the cache
    return Bandwidth(dram, max(dram, measure_triad_gbs(threads, mb=max(1, llc // (4 << 20)))), llc, threads)


def measure_triad_gbs(threads: int = 1, mb: int = 64, seconds: float = 0.4) -> float:
    """Memory bandwidth in GB/s of a STREAM-style triad ``a = b + s * c`` on float32 arrays of ``mb`` MB each, split
    over ``threads`` threads (numpy releases the GIL). numpy runs it as two passes (``a = s * c``, ``a += b``), so the
    bytes counted are the five array transfers those passes make."""
    n = mb * (1 << 20) // 4
    b = np.ones(n, dtype=np.float32)
    c = np.full(n, 2.0, dtype=np.float32)
    a = np.empty(n, dtype=np.float32)
    bounds = [(n * i // threads, n * (i + 1) // threads) for i in range(threads)]

    def part(lo: int, hi: int) -> None:
        np.multiply(c[lo:hi], np.float32(3.0), out=a[lo:hi])
        np.add(a[lo:hi], b[lo:hi], out=a[lo:hi])

    def once() -> None:
        if threads == 1:
            part(0, n)
            return
        workers = [threading.Thread(target=part, args=bounds[i]) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    once()  # touch the pages
    runs, start = 0, time.perf_counter()
    best = float("inf")
    while runs < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return round(5 * n * 4 / best / 1e9, 1)
