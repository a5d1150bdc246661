"""Where an OpenVINO CPU model loses against its roofline: each layer's measured time beside its bound.

Steps: the float ONNX's per-node work (``edgecls.bench._roofline.node_costs``) -> each node's bound on --threads cores
at --batch (``node_bounds``: the FMA/VNNI micro-kernels' clock, the triad bandwidth measured here; a post-op the engine
fuses is charged to the convolution it follows) -> the IR compiled with ``PERF_COUNT`` on --threads threads, one
infer request at --batch, --runs timed calls -> per executed layer, the least ``real_time`` over the runs (the run
nobody interrupted, on a shared machine) -> the table by kind of layer (share of the measured time, % of its own
bound) and the costliest layers. Layer names: OpenVINO keeps the ONNX node's name ahead of a '/'.

Run:  .venv/bin/python benchmarks/layer_profile.py --bundle B [--artifact openvino-int8] [--batch 8] [--threads 1]
      [--runs 100] [--out profile.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _kind(node_type: str, exec_type: str) -> str:
    if node_type == "GroupConvolution":
        return "depthwise conv"
    if node_type == "Convolution":
        return "pointwise conv (1x1)" if "1x1" in exec_type else "dense conv kxk (the stem)"
    if node_type == "FullyConnected":
        return "fully connected (head)"
    if node_type == "Reorder":
        return "reorder (layout / precision)"
    return f"other ({node_type})"


def profile(xml: Path, batch: int, threads: int, runs: int) -> tuple[dict, list[float]]:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(xml))
    dims = [d.get_length() for d in list(model.input(0).get_partial_shape())[1:]]
    model.reshape({model.input(0): ov.PartialShape([batch] + dims)})
    compiled = core.compile_model(model, "CPU", {"PERF_COUNT": True, "INFERENCE_PRECISION_HINT": "f32",
                                                "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, [batch] + dims).astype(np.uint8) if model.input(0).get_element_type() == ov.Type.u8 \
        else rng.standard_normal([batch] + dims).astype(np.float32)
    for _ in range(5):
        request.infer({0: x})
    layers: dict[str, dict] = {}
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer({0: x})
        walls.append(time.perf_counter() - t0)
        for p in request.get_profiling_info():
            if p.status != p.Status.EXECUTED:
                continue
            seconds = p.real_time.total_seconds()
            entry = layers.setdefault(p.node_name, {"type": p.node_type, "exec": p.exec_type, "min": seconds})
            entry["min"] = min(entry["min"], seconds)
    return layers, walls


def main(argv: list[str] | None = None) -> int:
    import onnx

    from edgecls.bench._kernels import measure_vector_rates
    from edgecls.bench._machine import CpuMeter, machine_info, peak_estimate
    from edgecls.bench._roofline import measure_bandwidth, node_bounds, node_costs, unit_rates
    from edgecls.manifest import Manifest
    from edgecls.runtime.backends import cpu_flags

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--artifact", default="openvino-int8")
    parser.add_argument("--onnx", type=Path, help="float ONNX the bound counts [default: the bundle's fp32 onnx]")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    manifest = Manifest.load(args.bundle)
    art = manifest.artifact(args.artifact)
    float_onnx = args.onnx or next((args.bundle / a.path for a in manifest.artifacts
                                    if a.format == "onnx" and a.precision == "fp32"), None)
    if float_onnx is None:
        parser.error("the bundle has no fp32 onnx artifact: give --onnx")
    machine = machine_info()
    peak = peak_estimate(machine, cores=args.threads)
    vector = measure_vector_rates(args.threads, set(machine.isa) | set(cpu_flags()))
    if vector is not None:
        peak = peak.lifted([(f"a micro-kernel of {k}", "int8" if k.startswith("int8") else "f32", v)
                            for k, v in vector.kernels.items()])
    bandwidth = measure_bandwidth(args.threads)
    precision = "int8" if art.precision == "int8" else "f32"
    costs = node_costs(float_onnx)
    bounds = node_bounds(costs, rates=unit_rates(machine, precision), ghz=peak.ghz, cores=args.threads,
                         gbs=bandwidth.dram_gbs, precision=precision, batch=args.batch,
                         cache_gbs=bandwidth.cache_gbs, cache_bytes=bandwidth.cache_bytes)
    graph = onnx.load(str(float_onnx), load_external_data=False).graph
    alias = {n.output[0]: n.name for n in graph.node if n.output and n.name}  # OpenVINO may name a node by its output
    per_node: dict[str, float] = defaultdict(float)  # ONNX node -> bound seconds per batch, fused post-ops included
    label: dict[str, str] = {}
    owner = None
    for b in bounds:
        if b.cost.unit == "matrix" or b.cost.op in ("Conv", "ConvInteger", "QLinearConv"):
            owner = b.cost.name
        name = owner if b.cost.fused and owner else b.cost.name
        per_node[name] += b.seconds * args.batch
        label.setdefault(name, b.cost.label)

    meter = CpuMeter().start()
    layers, walls = profile(args.bundle / art.path, args.batch, args.threads, args.runs)
    share = meter.stop()
    rows = []
    for name, entry in layers.items():
        base = name.split("/")[0]
        base = base if base in per_node else alias.get(base, base)
        bound = per_node.get(base) if name.endswith("WithoutBiases") or "/" not in name else None
        rows.append({"layer": label.get(base, name), "node": name, "type": entry["type"], "exec": entry["exec"],
                     "kind": _kind(entry["type"], entry["exec"]), "seconds": entry["min"], "bound": bound})
    measured = sum(r["seconds"] for r in rows)
    bound_total = sum(per_node.values())
    print(f"{args.artifact} at batch {args.batch} on {args.threads} thread(s); {machine.cpu}, clock {peak.ghz:.2f} GHz "
          f"({'micro-kernels: ' + vector.summary() if vector else 'reported'}); triad {bandwidth.dram_gbs:.1f} GB/s "
          f"DRAM, {bandwidth.cache_gbs:.1f} GB/s in the last-level cache")
    if share:
        print(share.summary())
    print(f"wall: least {1e3 * min(walls):.2f} ms, median {1e3 * float(np.median(walls)):.2f} ms per batch; sum of the "
          f"layers' least times {1e3 * measured:.2f} ms = {args.batch / measured:.0f} img/s; roofline "
          f"{1e3 * bound_total:.2f} ms = {args.batch / bound_total:.0f} img/s: {100 * bound_total / measured:.0f}% of "
          "the bound")
    kinds: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for r in rows:
        k = kinds[r["kind"]]
        k[0] += r["seconds"]
        k[1] += r["bound"] or 0.0
        k[2] += 1
    print("\n| kind of layer | layers | share of the time | ms per batch | bound ms | % of its own bound |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, (t, b, n) in sorted(kinds.items(), key=lambda kv: -kv[1][0]):
        own = "- (no node of its own in the bound)" if not b else f"{100 * b / t:.0f}%" if b >= 0.01 * t else "<1%"
        print(f"| {kind} | {n} | {100 * t / measured:.1f}% | {1e3 * t:.3f} | {1e3 * b:.3f} | {own} |")
    print("\n| costliest layers | kind | OpenVINO kernel | ms per batch | share | bound ms | % of its bound |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: -r["seconds"])[:12]:
        b, seconds = r["bound"], r["seconds"]
        print(f"| {r['layer']} | {r['kind']} | {r['exec']} | {1e3 * r['seconds']:.3f} | "
              f"{100 * r['seconds'] / measured:.1f}% | {'-' if b is None else f'{1e3 * b:.3f}'} | "
              f"{'-' if not b else f'{100 * b / seconds:.0f}%'} |")
    if args.out:
        args.out.write_text(json.dumps({"artifact": args.artifact, "batch": args.batch, "threads": args.threads,
                                        "ghz": peak.ghz, "vector": vector.to_dict() if vector else None,
                                        "bandwidth": bandwidth.to_dict(), "walls": walls, "rows": rows,
                                        "bound_seconds": bound_total, "cpu_share": share.to_dict() if share else None},
                                       indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
