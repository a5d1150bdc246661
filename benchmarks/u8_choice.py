"""Pixel-input (-u8) artifacts against their float-input twins, end to end, per backend: what `auto` should pick.

For each (backend, float artifact, pixel artifact) pair of one bundle, interleaved over --rounds (order alternating),
all in one run so the ratios hold on a shared machine:
  infer      ``backend.infer`` on a prepared batch of --batch (what the artifact takes: float NCHW or uint8 NHWC), in
             the throughput mode (folder predict's)
  batch      ``Classifier.predict_batch`` on --batch decoded BGR frames (resize + normalisation on the CPU for the
             float artifact, resize only for the pixel one; the server's and the Ray actors' path), throughput mode
  predict    folder ``predict_paths`` (decode pool + engine, batch --batch) on the aquarium photos, JSONL to /dev/null
Prints img/s per row and the pixel/float ratio; --out writes the samples as JSON.

Run:  .venv/bin/python benchmarks/u8_choice.py --bundle B [--pair onnxruntime:onnx-int8:onnx-int8-u8 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = next((p / "shared" for p in (REPO.parent, REPO.parent.parent) if (p / "shared").is_dir()),
              REPO.parent / "shared")
DEFAULT_IMAGES = SHARED / "datasets" / "aquarium" / "train" / "images"
PAIRS = ("onnxruntime:onnx-int8:onnx-int8-u8", "openvino:openvino-int8:openvino-int8-u8")


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _rate(fn, n: int, seconds: float) -> tuple[float, float]:
    """(images/s of wall time, CPU ms of this process per image): on a shared machine the CPU cost per image is the
    steadier of the two (others' processes take wall time, not this process's CPU time)."""
    fn()
    count, start, cpu0 = 0, time.perf_counter(), _cpu()
    while time.perf_counter() - start < seconds:
        fn()
        count += n
    return count / (time.perf_counter() - start), 1e3 * (_cpu() - cpu0) / count


def main(argv: list[str] | None = None) -> int:
    import cv2

    from edgecls.bench._machine import CpuMeter
    from edgecls.runtime import Classifier
    from edgecls.runtime.commands import predict_paths

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--pair", action="append", help=f"backend:float:pixels [default: {', '.join(PAIRS)}]")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--num-images", type=int, default=448)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    files = files[: args.num_images]
    frames = [cv2.imread(str(p)) for p in files[: args.batch]]
    rows = []
    for pair in args.pair or PAIRS:
        backend, *arts = pair.split(":")
        for art in arts:
            clf = Classifier(args.bundle, backend, artifact=art, mode="throughput")
            x = clf.new_input(args.batch)
            pre = clf.preprocessor()
            for i, p in enumerate(files[: args.batch]):
                pre(p, x[i])
            rows.append({"backend": backend, "artifact": art, "clf": clf, "x": x,
                         "samples": {k: [] for k in ("infer", "batch", "predict", "infer_cpu_ms", "batch_cpu_ms",
                                                       "predict_cpu_ms")}})
    meter = CpuMeter().start()
    with open(os.devnull, "w") as devnull:
        for r in range(args.rounds):
            for row in (rows if r % 2 == 0 else rows[::-1]):
                clf, x, s = row["clf"], row["x"], row["samples"]
                print(f"round {r + 1}/{args.rounds}: {row['backend']} {row['artifact']}", flush=True)
                for key, fn in (("infer", lambda clf=clf, x=x: clf.backend.infer(x)),
                                ("batch", lambda clf=clf: clf.predict_batch(frames, batch_size=args.batch))):
                    ips, cpu_ms = _rate(fn, args.batch, args.seconds)
                    s[key].append(ips)
                    s[key + "_cpu_ms"].append(cpu_ms)
                cpu0 = _cpu()
                p = predict_paths(args.bundle, [str(f) for f in files], backend=row["backend"],
                                  artifact=row["artifact"], batch=args.batch, fmt="jsonl", stdout=devnull,
                                  progress=False)
                s["predict"].append(p.images_per_second)
                s["predict_cpu_ms"].append(1e3 * (_cpu() - cpu0) / max(1, p.images))
    share = meter.stop()
    for row in rows:
        row["clf"].close()
        del row["clf"], row["x"]
        row["median"] = {k: round(float(np.median(v)), 3) for k, v in row["samples"].items()}
        row["best"] = {k: round(float(max(v) if "cpu" not in k else min(v)), 3) for k, v in row["samples"].items()}
    print(share.summary() if share else "")
    keys = ("infer", "batch", "predict")
    print(f"{'backend':<12s} {'artifact':<18s} " + " ".join(f"{k + ' img/s':>13s}" for k in keys) + " "
          + " ".join(f"{k + ' CPU ms':>14s}" for k in keys) + "   pixel/float (best img/s; median CPU ms)")
    for i, row in enumerate(rows):
        b, m = row["best"], row["median"]
        ratio = ""
        if i % 2 == 1:
            fb, fm = rows[i - 1]["best"], rows[i - 1]["median"]
            ratio = ("   img/s " + " ".join(f"{b[k] / fb[k]:.3f}" for k in keys) + "; CPU "
                     + " ".join(f"{m[k + '_cpu_ms'] / fm[k + '_cpu_ms']:.3f}" for k in keys))
        print(f"{row['backend']:<12s} {row['artifact']:<18s} " + " ".join(f"{b[k]:13.1f}" for k in keys) + " "
              + " ".join(f"{m[k + '_cpu_ms']:14.3f}" for k in keys) + ratio)
    if args.out:
        args.out.write_text(json.dumps({"cpu_share": share.to_dict() if share else None, "rows": rows,
                                        "batch": args.batch}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
