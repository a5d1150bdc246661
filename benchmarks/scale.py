"""Scale benchmark: local `edgecls predict` against `edgecls predict --engine ray` with 1 and 2 workers, same 2 cores.

Steps:
  [1/5] inputs: N JPEGs (default 2,000): ../shared/datasets/aquarium's 638 photos copied round-robin (distinct files,
        the same bytes), or synthetic 1024x768 JPEGs when the dataset is absent
  [2/5] local: `edgecls predict BUNDLE IMAGES --format jsonl --out FILE` through the library (predict_paths)
  [3/5] a local Ray of 2 CPUs (ray.init, timed once: a cluster starts once for millions of images)
  [4/5] ray: edgecls.scale.run with 1 worker x 2 threads, 2 workers x 1 thread and 2 workers x 2 threads (fresh
        output folders), each checked against the local rows (max |dp|, labels)
  [5/5] report: img/s of each (the whole run, and steady: from the first row back to the last), per-worker rates,
        read/write bytes per image, CPU time of other processes while each row ran, and the 10M-image projection

The target (issue 13): Ray with 2 workers >= 85% of local predict's img/s on the same 2 cores.

Run:  .venv/bin/python benchmarks/scale.py --bundle /tmp/scale-bench/lite0 [--images 2000]
      [--work /tmp/scale-bench/work] [--out benchmarks/results/scale-<machine>.json]
Requirements: the `runtime`, `openvino` and `ray` extras (benchmarks/requirements.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "aquarium"
if not DEFAULT_DATA.is_dir() and Path("/work/shared/datasets/aquarium").is_dir():
    DEFAULT_DATA = Path("/work/shared/datasets/aquarium")
TARGET = 0.85
PROJECT_IMAGES = 10_000_000


# ---------------------------------------------------------------------------------------------------------------------
# CPU time of this process tree (Ray's workers are children of its raylet, which ray.init starts) and of all others


def _ticks(pid: str) -> tuple[int, float] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / os.sysconf(
        "SC_CLK_TCK")


def _tree_cpu() -> float:
    procs = {pid: _ticks(pid) for pid in os.listdir("/proc") if pid.isdigit()}
    procs = {int(k): v for k, v in procs.items() if v is not None}
    me, total = os.getpid(), 0.0
    for pid, (_, cpu) in procs.items():
        p, seen = pid, 0
        while p not in (0, 1) and seen < 64:
            if p == me:
                total += cpu
                break
            p = procs.get(p, (0, 0.0))[0]
            seen += 1
    return total


def _system() -> tuple[float, float]:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    ticks = [int(v) for v in fields[1:9]]
    hz = os.sysconf("SC_CLK_TCK")
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]
    return busy / hz, sum(ticks) / hz


class Meter:
    """Share of all CPUs used by this process tree and by everything else between start and stop."""

    def __enter__(self) -> "Meter":
        self.t0, self.own0, (self.busy0, self.total0) = time.perf_counter(), _tree_cpu(), _system()
        return self

    def __exit__(self, *exc: Any) -> None:
        own, (busy, total) = _tree_cpu(), _system()
        span = max(1e-9, total - self.total0)
        self.seconds = time.perf_counter() - self.t0
        self.own = (own - self.own0) / span
        self.others = max(0.0, (busy - self.busy0 - (own - self.own0)) / span)

    def to_dict(self) -> dict[str, float]:
        return {"wall_s": round(self.seconds, 3), "own_cpu_share": round(self.own, 3),
                "others_cpu_share": round(self.others, 3)}


# ---------------------------------------------------------------------------------------------------------------------


def make_inputs(folder: Path, n: int, data: Path) -> tuple[Path, str]:
    photos = sorted(p for split in ("train", "valid", "test") for p in (data / split / "images").glob("*.jpg"))
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == n:
        return folder, "aquarium (repeated)" if photos else "synthetic"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if photos:
        for i in range(n):
            shutil.copyfile(photos[i % len(photos)], folder / f"{i:05d}.jpg")
        return folder, f"aquarium ({len(photos)} photos, repeated)"
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(n):
        img = cv2.GaussianBlur((rng.random((768, 1024, 3)) * 255).astype(np.uint8), (0, 0), 3)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder, "synthetic 1024x768 JPEGs (aquarium absent)"


def local_rows(path: Path) -> dict[str, dict]:
    return {r["source"]: r for r in map(json.loads, path.read_text().splitlines())}


def compare(out: Path, reference: dict[str, dict]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    rows = pq.read_table(out).to_pylist()
    worst, labels = 0.0, 0
    for row in rows:
        ref = reference[row["path"]]
        labels += row["labels"] != ref["labels"]
        for name, p in ref.get("probabilities", {}).items():
            worst = max(worst, abs(row[f"prob_{name}"] - p))
    return {"rows": len(rows), "unique": len({r["path"] for r in rows}), "max_abs_diff": worst,
            "label_mismatches": labels}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="an `edgecls export` bundle (EfficientNet-Lite0)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--work", default="/tmp/scale-bench/work")
    parser.add_argument("--block-size", type=int, default=250)
    parser.add_argument("--machine", default=None, help="name in the results file [default: the CPU model's]")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    import logging

    logging.getLogger("edgecls").setLevel(logging.WARNING)
    from edgecls.bench._machine import machine_info
    from edgecls.runtime.commands import predict_paths
    from edgecls.scale import ScaleConfig, run

    machine = machine_info()
    name = args.machine or ("zen5" if machine.family == "26" else platform.machine())
    work = Path(args.work)
    print(f"machine: {machine}")
    print(f"[1/5] inputs: {args.images} JPEGs")
    images, kind = make_inputs(work / "images", args.images, Path(args.data))
    sizes = [p.stat().st_size for p in images.glob("*.jpg")]
    mean_bytes = sum(sizes) / len(sizes)
    print(f"      {kind}, mean {mean_bytes / 1e3:.0f} kB")

    print("[2/5] local edgecls predict")
    local_out = work / "local.jsonl"
    predict_paths(args.bundle, [images], fmt="jsonl", out=local_out)  # warm the page cache and the verify record
    with Meter() as m:
        local = predict_paths(args.bundle, [images], fmt="jsonl", out=local_out)
    local_ips = local.images / m.seconds
    backend = local.backend["backend"]
    rows: list[dict[str, Any]] = [{"engine": "local", "workers": 1, "threads": None, "img_s": round(local_ips, 1),
                                   "backend": f"{local.backend['artifact']['name']} on {backend['name']}",
                                   **m.to_dict()}]
    print(f"      {local_ips:.1f} img/s ({m.seconds:.2f} s) with {rows[0]['backend']}; other processes "
          f"{100 * m.others:.0f}% of the CPUs")
    reference = local_rows(local_out)

    print("[3/5] a local Ray (2 CPUs)")
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray_start_s = time.perf_counter() - t0
    print(f"      {ray_start_s:.1f} s")

    print("[4/5] --engine ray")
    for workers, threads in ((1, 2), (2, 1), (2, 2)):
        out = work / f"ray-{workers}x{threads}"
        shutil.rmtree(out, ignore_errors=True)
        cfg = ScaleConfig(out=str(out), workers=str(workers), threads_per_worker=threads,
                          block_size=args.block_size, progress=False)
        with Meter() as m:
            s = run(args.bundle, [str(images)], cfg)
        steady = s.written / max(1e-9, s.seconds - (s.first_row_s or 0.0))  # from the first row back to the end
        out_bytes = sum(p.stat().st_size for p in out.glob("part-*"))
        check = compare(out, reference)
        row = {"engine": "ray", "workers": workers, "threads": threads, "img_s": round(s.written / m.seconds, 1),
               "steady_img_s": round(steady, 1), "first_row_s": round(s.first_row_s or 0.0, 2),
               "worker_cpus_requested": s.plan.cpus if s.plan else None,
               "per_worker_img_s": {w: round(st.images_per_second, 1) for w, st in s.workers.items()},
               "per_worker_images": {w: st.images for w, st in s.workers.items()},
               "backend": ", ".join(s.engines), "output_bytes_per_row": round(out_bytes / max(1, s.written), 1),
               "vs_local": round(s.written / m.seconds / local_ips, 3),
               "steady_vs_local": round(steady / local_ips, 3), **check, **m.to_dict()}
        rows.append(row)
        print(f"      {workers} worker(s) x {threads} thread(s): {row['img_s']} img/s whole run "
              f"({row['vs_local']:.0%} of local), steady {row['steady_img_s']} img/s ({row['steady_vs_local']:.0%}); "
              f"first row after {row['first_row_s']} s; per worker {row['per_worker_img_s']}; max |dp| "
              f"{check['max_abs_diff']:.2e}, {check['label_mismatches']} label mismatches; other processes "
              f"{100 * m.others:.0f}% of the CPUs")
    ray.shutdown()

    print("[5/5] report")
    two = next(r for r in rows if r["engine"] == "ray" and r["workers"] == 2 and r["threads"] == 1)
    # the projection's unit: one worker of one thread (one core), at its measured rate while busy
    per_core = sum(two["per_worker_img_s"].values()) / max(1, len(two["per_worker_img_s"]))
    out_row = two["output_bytes_per_row"]
    projection = []
    for nodes in (10, 100):
        for cores in (2, 16):
            rate = per_core * cores * nodes
            projection.append({"nodes": nodes, "cores_per_node": cores, "img_s": round(rate),
                               "minutes": round(PROJECT_IMAGES / rate / 60, 1),
                               "read_MB_s": round(rate * mean_bytes / 1e6, 1),
                               "read_MB_s_per_node": round(rate * mean_bytes / 1e6 / nodes, 1),
                               "write_MB_s": round(rate * out_row / 1e6, 2), "driver_rows_s": round(rate)})
    verdict = "met" if two["vs_local"] >= TARGET else "not met"
    print(f"      ray 2 workers / local: {two['vs_local']:.0%} whole run, {two['steady_vs_local']:.0%} steady "
          f"(target {TARGET:.0%}: {verdict} on the whole run)")
    for p in projection:
        print(f"      10M images on {p['nodes']} nodes x {p['cores_per_node']} cores: {p['img_s']:,} img/s, "
              f"{p['minutes']} min, reads {p['read_MB_s']} MB/s ({p['read_MB_s_per_node']} MB/s per node), "
              f"writes {p['write_MB_s']} MB/s")
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": str(machine),
              "python": platform.python_version(), "images": args.images, "inputs": kind,
              "mean_jpeg_bytes": round(mean_bytes), "bundle": str(args.bundle), "block_size": args.block_size,
              "ray_start_s": round(ray_start_s, 2), "rows": rows, "target": TARGET, "verdict": verdict,
              "per_core_img_s": round(per_core, 1), "projection_10M": projection}
    out = Path(args.out or REPO / "benchmarks" / "results" / f"scale-{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"      wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
