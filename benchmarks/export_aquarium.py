"""Export benchmark: a trained checkpoint on the real aquarium dataset to every target this machine can produce.

Trains nothing: give it a checkpoint (or run folder) trained on ../shared/datasets/aquarium, e.g. the one
`benchmarks/training.py` leaves in runs/bench-training/<strategy>/.

Steps:
  [1/3] `edgecls export CKPT --target all --data DATA --out OUT --force` through the library (export.export)
  [2/3] `edgecls parity OUT DATA --no-write` through the library (export.check_bundle): must reproduce parity.json
  [3/3] report: the parity table (max |dp|, mAP drop, decision agreement, batch-1 latency per artifact), file
        sizes, and the INT8 artifacts' speed against FP32 (measured, never assumed)

Run:  .venv/bin/python benchmarks/export_aquarium.py runs/bench-training/freeze [--data ../shared/datasets/aquarium]
      [--out runs/bench-export] [--max-map-drop 0.01]
Requirements: the `train`, `runtime`, `openvino` and `coreml` extras (CoreML is converted and spec-checked on
Linux; TensorRT gets its portable ONNX unless this machine has TensorRT and an NVIDIA GPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "aquarium"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint file or training run folder (aquarium)")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-export"))
    parser.add_argument("--max-map-drop", type=float, default=None,
                        help="INT8 budget; setting it makes openvino-int8 accuracy-aware")
    args = parser.parse_args(argv)

    from edgecls.bundle import size_mb
    from edgecls.export import ExportConfig, check_bundle, export

    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print("[1/3] export --target all")
    started = time.perf_counter()
    result = export(ExportConfig(checkpoint=args.checkpoint, targets=("all",), data=args.data, out=args.out,
                                 force=True, max_map_drop=args.max_map_drop, allow_parity_failure=True))
    export_s = time.perf_counter() - started
    print(f"      {export_s:.0f} s -> {result.bundle}")

    print("[2/3] parity re-run from the bundle alone")
    started = time.perf_counter()
    check = check_bundle(result.bundle, args.data, write=False)
    stored = json.loads((result.bundle / "parity.json").read_text())["artifacts"]
    mismatches = []
    for name, report in check.reports.items():
        old = stored[name]
        for key in ("max_abs_diff", "map_artifact", "agreement"):
            if abs(float(old[key]) - float(getattr(report, key))) > 1e-6:
                mismatches.append(f"{name}.{key}: {old[key]} vs {getattr(report, key)}")
    print(f"      {time.perf_counter() - started:.0f} s, "
          f"{'reproduces parity.json' if not mismatches else 'DIFFERS: ' + '; '.join(mismatches)}")

    print("[3/3] report")
    manifest = result.manifest
    print(f"reference: PyTorch FP32 mAP {manifest.metrics['map']:.4f} on {manifest.metrics['num_samples']} "
          f"{manifest.metrics['split']} images, batch-1 {manifest.metrics['reference_latency_ms']} ms")
    print(result.table)
    print()
    fp32 = {a.name: a for a in manifest.artifacts}
    for art in manifest.artifacts:
        ms = art.details.get("latency_ms")
        base = {"onnx-int8": "onnx", "openvino-int8": "openvino", "tensorrt-int8": "tensorrt"}.get(art.name)
        speed = ""
        if ms and base in fp32 and fp32[base].details.get("latency_ms"):
            ratio = fp32[base].details["latency_ms"] / ms
            speed = f"  {ratio:.2f}x {'faster' if ratio > 1 else 'SLOWER'} than {base}"
        print(f"{art.name:14s} {size_mb(result.bundle / art.name):7.2f} MB  {art.precision:12s}{speed}")
    for note in result.notes:
        print(f"note: {note}")
    failed = [r.summary() for r in result.reports.values() if not r.passed]
    if failed:
        print("PARITY FAILED: " + "; ".join(failed))
    return 1 if failed or mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
