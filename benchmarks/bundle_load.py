"""Bundle load time: what verifying the model files' sha256 at load costs (issue 10: within 10% of loading unverified).

Steps:
  [1/2] for each artifact x backend: `Classifier(bundle, backend, artifact=...)` three ways, --rounds times each,
        interleaved (odd rounds in reverse order) so a machine that gets busier shifts them alike:
          verify      the default: files this user verified before and that are unchanged are not hashed again
          full hash   EDGECLS_VERIFY_CACHE=0: every file hashed on every load (in a thread beside the engine's load)
          no-verify   ``verify=False`` (what a load cost before the check existed)
  [2/2] report: median load ms of each, their ratios to no-verify, the artifact folder's MB, and the CPU time other
        processes took meanwhile (from /proc/stat: above ~10% the ratios say more about the machine than the code)

Run:  .venv/bin/python benchmarks/bundle_load.py BUNDLE [--rounds 30] [--out report.json]
Requirements: the `runtime` extra (+ `openvino` for the OpenVINO rows). The runtime measured never imports torch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    from edgecls._io import write_json
    from edgecls.bench._machine import CpuMeter
    from edgecls.manifest import Manifest
    from edgecls.runtime import Classifier
    from edgecls.runtime.backends import probe

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    bundle = Path(args.bundle)
    manifest = Manifest.load(bundle)
    pairs = [(a.name, b) for a in manifest.artifacts for b in ("onnxruntime", "openvino")
             if probe(b).usable and ((a.format == "onnx") or (a.format == "openvino" and b == "openvino"))]
    print(f"[1/2] {bundle}: {len(pairs)} artifact x backend pairs, {args.rounds} rounds each way")
    rows = []
    for artifact, backend in pairs:
        art = manifest.artifact(artifact)
        hashed = sum(p.stat().st_size for p in (bundle / art.path).parent.iterdir() if p.is_file())

        def load(way: str, artifact: str = artifact, backend: str = backend) -> float:
            os.environ["EDGECLS_VERIFY_CACHE"] = "0" if way == "full hash" else "1"
            t0 = time.perf_counter()
            clf = Classifier(bundle, backend, artifact=artifact, verify=way != "no-verify")
            seconds = time.perf_counter() - t0
            clf.close()
            return seconds

        load("verify")  # the first load pays for imports and the page cache, and records the verified files
        ways = ("verify", "full hash", "no-verify")
        times: dict[str, list[float]] = {w: [] for w in ways}
        meter = CpuMeter().start()
        for i in range(args.rounds):
            for way in (ways if i % 2 == 0 else ways[::-1]):
                times[way].append(load(way))
        share = meter.stop()
        ms = {w: statistics.median(v) * 1000 for w, v in times.items()}
        rows.append({"artifact": artifact, "backend": backend, **{f"{w}_ms": round(v, 2) for w, v in ms.items()},
                     "verify_ratio": round(ms["verify"] / ms["no-verify"], 3),
                     "full_hash_ratio": round(ms["full hash"] / ms["no-verify"], 3), "mb": round(hashed / 1e6, 1),
                     "others_cpu": None if share is None else round(share.others, 3)})
    print("[2/2] median load time (ms)")
    print(f"{'artifact':14s} {'backend':12s} {'verify':>8s} {'full hash':>10s} {'no-verify':>10s} {'verify/no':>10s} "
          f"{'full/no':>8s} {'MB':>6s} {'others':>7s}")
    for r in rows:
        others = "-" if r["others_cpu"] is None else f"{100 * r['others_cpu']:.0f}%"
        print(f"{r['artifact']:14s} {r['backend']:12s} {r['verify_ms']:8.2f} {r['full hash_ms']:10.2f} "
              f"{r['no-verify_ms']:10.2f} {r['verify_ratio']:10.3f} {r['full_hash_ratio']:8.3f} {r['mb']:6.1f} "
              f"{others:>7s}")
    if args.out:
        write_json(args.out, {"bundle": str(bundle), "rounds": args.rounds, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
