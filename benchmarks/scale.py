"""Scale benchmark: local `edgecls predict` against `edgecls predict --engine ray` with 1 and 2 workers, same 2 cores.

Steps:
  [1/6] inputs: N JPEGs (default 2,000): ../shared/datasets/aquarium's 638 photos copied round-robin (distinct files,
        the same bytes), or synthetic 1024x768 JPEGs when the dataset is absent
  [2/6] local: `edgecls predict BUNDLE IMAGES --format jsonl --out FILE` through the library (predict_paths), in this
        process, after one untimed run (imports done, page cache warm); timed: the call (model load included)
  [3/6] a local Ray of 2 CPUs: ray.init timed (what a command without --address pays when no Ray runs), then Ray
        Data's own floor: a do-nothing job on a pool of 2 actors, timed to its first row
  [4/6] ray: edgecls.scale.run with 1 worker x 2 threads, 2 workers x 1 thread and 2 workers x 2 threads (fresh
        output folders), in this process on the running Ray; timed: the call (listing, the bundle check, the
        workers' start and model load, every block written); each checked against the local rows (max |dp|, labels)
  [5/6] a larger job (--large, default 10,000 images): local and ray 2 x 1, 2 x 2 on it, to show where the
        whole-run ratio goes as the fixed start is spread over more images
  [6/6] report: img/s of each (whole run, and steady: from the first row back to the last), the fixed start and
        where it went (driver steps; per worker: process start, Ray Data/unpickling, runtime import, model load,
        first batch), per-worker rates, read/write bytes per image, CPU shares, and the 10M-image projection

The target (issue 13): Ray with 2 workers >= 85% of local predict's img/s on the same 2 cores (2,000 images, whole
run). img_s_with_ray_start adds this run's ray.init to the Ray rows (no Ray running before the command).

Run:  .venv/bin/python benchmarks/scale.py --bundle /tmp/scale-bench/lite0 [--images 2000] [--large 10000]
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


def _system() -> tuple[float, float]:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    ticks = [int(v) for v in fields[1:9]]
    hz = os.sysconf("SC_CLK_TCK")
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]
    return busy / hz, sum(ticks) / hz


def _own_cpu() -> dict[int, float]:
    """utime + stime (s) of each process of this tree, this one included (no children's times: each is counted as
    itself)."""
    procs: dict[int, tuple[int, float]] = {}
    hz = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        procs[int(pid)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / hz)
    me, out = os.getpid(), {}
    for pid, (_, cpu) in procs.items():
        p, hops = pid, 0
        while p not in (0, 1) and hops < 64:
            if p == me:
                out[pid] = cpu
                break
            p = procs.get(p, (0, 0.0))[0]
            hops += 1
    return out


class Meter:
    """Share of all CPUs used by this process tree and by everything else between start and stop, and the CPU
    seconds of this tree: sampled every 0.2 s, so Ray's worker processes that exit before the end still count."""

    def __enter__(self) -> "Meter":
        import threading

        self.t0, (self.busy0, self.total0) = time.perf_counter(), _system()
        self._first = _own_cpu()
        self._last = dict(self._first)
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.2):
                self._last.update(_own_cpu())

        self._sampler = threading.Thread(target=sample, daemon=True)
        self._sampler.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._sampler.join()
        self._last.update(_own_cpu())
        busy, total = _system()
        span = max(1e-9, total - self.total0)
        self.seconds = time.perf_counter() - self.t0
        self.own_s = sum(cpu - self._first.get(pid, 0.0) for pid, cpu in self._last.items())
        self.own = self.own_s / span
        self.others = max(0.0, (busy - self.busy0) / span - self.own)

    def to_dict(self) -> dict[str, float]:
        return {"wall_s": round(self.seconds, 3), "own_cpu_s": round(self.own_s, 2),
                "own_cpu_share": round(self.own, 3), "others_cpu_share": round(self.others, 3)}


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


class _Noop:
    def __call__(self, batch: Any) -> Any:
        return batch


def ray_data_floor(ray: Any) -> float:
    """Seconds from building to the first row of a Ray Data job that does nothing on a pool of 2 actors (0.75 CPU
    each, as the 2 x 1 rows): Ray Data's own start (actor processes, its imports, its scheduling) on this machine."""
    t0 = time.perf_counter()
    ds = ray.data.from_items([{"x": i} for i in range(4)]).map_batches(
        _Noop, batch_size=1, compute=ray.data.ActorPoolStrategy(size=2), num_cpus=0.75)
    next(iter(ds.iter_batches(batch_size=None)))
    return time.perf_counter() - t0


def start_breakdown(s: Any) -> dict[str, Any]:
    """Where the fixed start of a run went (s), from its JobSummary: the driver's steps, then per worker (the
    median of the workers) how long each of its steps took."""
    t = getattr(s, "timeline", {})  # (edgecls before the breakdown existed: none)
    timeline = getattr(s, "worker_timeline", {})
    out: dict[str, Any] = {"driver_listing_s": t.get("listed"),
                           "connect_s": round(t.get("connected", 0) - t.get("listed", 0), 3),
                           "plan_s": round(t.get("planned", 0) - t.get("connected", 0), 3),
                           "bundle_check_s": round(t.get("checked", 0) - t.get("planned", 0), 3),
                           "first_row_s": t.get("first_row")}
    steps = {"worker_process_start_at_s": ("process", None),
             "worker_boot_and_ray_data_s": ("init", "process"),  # Ray's worker start, Ray Data, unpickling ours
             "worker_runtime_import_s": ("imported", "init"),
             "worker_model_load_s": ("loaded", "imported"),
             "worker_wait_for_first_batch_s": ("called", "loaded"),  # Ray Data: actor ready -> its first batch
             "worker_first_batch_s": ("first_batch", "called")}
    for name, (end, begin) in steps.items():
        values = sorted(w[end] - (w[begin] if begin else 0.0) for w in timeline.values()
                        if end in w and (begin is None or begin in w))
        out[name] = round(values[len(values) // 2], 3) if values else None
    for key in ("cpu_boot", "cpu_import", "cpu_load", "cpu_first_batch"):  # CPU seconds of each worker step
        values = sorted(w[key] for w in timeline.values() if key in w)
        out[f"worker_{key}_s"] = round(values[len(values) // 2], 3) if values else None
    out["worker_engine_cache_hit"] = [w.get("engine_cache_hit") for w in timeline.values()]
    out["first_batch_to_driver_s"] = round(t["first_row"] - min(w["first_batch"] for w in timeline.values()
                                                                if "first_batch" in w), 3) \
        if "first_row" in t and timeline else None
    return out


def ray_row(args: Any, images: Path, out: Path, workers: int, threads: int, local_ips: float,
            reference: dict[str, dict], ray_start_s: float, local_cpu_per_img: float) -> dict[str, Any]:
    from edgecls.scale import ScaleConfig, run

    shutil.rmtree(out, ignore_errors=True)
    cfg = ScaleConfig(out=str(out), workers=str(workers), threads_per_worker=threads, block_size=args.block_size,
                      progress=False)
    with Meter() as m:
        s = run(args.bundle, [str(images)], cfg)
    steady = s.written / max(1e-9, s.seconds - (s.first_row_s or 0.0))  # from the first row back to the end
    out_bytes = sum(p.stat().st_size for p in out.glob("part-*"))
    check = compare(out, reference)
    whole = s.written / m.seconds
    row = {"engine": "ray", "workers": workers, "threads": threads, "images": s.written, "img_s": round(whole, 1),
           "img_s_with_ray_start": round(s.written / (m.seconds + ray_start_s), 1),
           "steady_img_s": round(steady, 1), "start_s": round(s.first_row_s or 0.0, 3),
           "start_breakdown": start_breakdown(s),
           "worker_cpus_requested": s.plan.cpus if s.plan else None,
           "per_worker_img_s": {w: round(st.images_per_second, 1) for w, st in s.workers.items()},
           "per_worker_images": {w: st.images for w, st in s.workers.items()},
           "backend": ", ".join(s.engines), "output_bytes_per_row": round(out_bytes / max(1, s.written), 1),
           "vs_local": round(whole / local_ips, 3),
           "vs_local_with_ray_start": round(s.written / (m.seconds + ray_start_s) / local_ips, 3),
           "steady_vs_local": round(steady / local_ips, 3),
           # CPU seconds per image, local's over this row's: how much more CPU the Ray job spent for the same images
           # (less sensitive to other processes than wall-clock ratios on a shared machine)
           "cpu_vs_local": round(local_cpu_per_img / max(1e-9, m.own_s / max(1, s.written)), 3),
           **check, **m.to_dict()}
    b = row["start_breakdown"]
    print(f"      {workers} worker(s) x {threads} thread(s), {s.written} images: {row['img_s']} img/s whole run "
          f"({row['vs_local']:.0%} of local; {row['vs_local_with_ray_start']:.0%} with ray.init), steady "
          f"{row['steady_img_s']} img/s ({row['steady_vs_local']:.0%}); first row after {row['start_s']:.2f} s "
          f"(check {b['bundle_check_s']}, worker boot+Ray Data {b['worker_boot_and_ray_data_s']}, runtime import "
          f"{b['worker_runtime_import_s']}, model load {b['worker_model_load_s']}, wait for a batch "
          f"{b['worker_wait_for_first_batch_s']}, first batch {b['worker_first_batch_s']}, to the driver "
          f"{b['first_batch_to_driver_s']}; worker CPU s: boot+Ray Data {b['worker_cpu_boot_s']}, runtime import "
          f"{b['worker_cpu_import_s']}, model load {b['worker_cpu_load_s']} (cache hit "
          f"{b['worker_engine_cache_hit']}), first batch {b['worker_cpu_first_batch_s']}); CPU {m.own_s:.1f} s "
          f"(local's CPU per image / this one's: {row['cpu_vs_local']:.0%});"
          f" per worker {row['per_worker_img_s']}; max |dp| "
          f"{check['max_abs_diff']:.2e}, {check['label_mismatches']} label mismatches; other processes "
          f"{100 * m.others:.0f}% of the CPUs")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="an `edgecls export` bundle (EfficientNet-Lite0)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--work", default="/tmp/scale-bench/work")
    parser.add_argument("--block-size", type=int, default=250)
    parser.add_argument("--large", type=int, default=10_000, help="images of the larger job (0: skip it)")
    parser.add_argument("--machine", default=None, help="name in the results file [default: the CPU model's]")
    parser.add_argument("--out", default=None)
    parser.add_argument("--engine-cache", choices=("warm", "off"), default="warm",
                        help="warm: OpenVINO's compiled models cached (and the cache filled before the timed rows, "
                             "as on a node that has run the bundle once); off: every load compiles (the first run of "
                             "a bundle on a node)")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    if args.engine_cache == "off":
        os.environ["EDGECLS_OPENVINO_CACHE"] = "0"  # before ray.init: the workers inherit it

    import logging

    logging.getLogger("edgecls").setLevel(logging.WARNING)
    from edgecls.bench._machine import machine_info
    from edgecls.runtime.commands import predict_paths
    machine = machine_info()
    name = args.machine or machine.kind
    work = Path(args.work)
    print(f"machine: {machine}")
    print(f"[1/6] inputs: {args.images} JPEGs")
    images, kind = make_inputs(work / "images", args.images, Path(args.data))
    sizes = [p.stat().st_size for p in images.glob("*.jpg")]
    mean_bytes = sum(sizes) / len(sizes)
    print(f"      {kind}, mean {mean_bytes / 1e3:.0f} kB")

    print("[2/6] local edgecls predict")
    local_out = work / "local.jsonl"
    predict_paths(args.bundle, [images], fmt="jsonl", out=local_out)  # warm the page cache and the verify record
    with Meter() as m_local:
        local = predict_paths(args.bundle, [images], fmt="jsonl", out=local_out)
    m = m_local
    local_ips = local.images / m.seconds
    backend = local.backend["backend"]
    rows: list[dict[str, Any]] = [{"engine": "local", "workers": 1, "threads": None, "img_s": round(local_ips, 1),
                                   "backend": f"{local.backend['artifact']['name']} on {backend['name']}",
                                   **m.to_dict()}]
    print(f"      {local_ips:.1f} img/s ({m.seconds:.2f} s, CPU {m.own_s:.1f} s) with {rows[0]['backend']}; other "
          f"processes {100 * m.others:.0f}% of the CPUs")
    reference = local_rows(local_out)

    if args.engine_cache == "warm":  # the Ray workers' settings (1 and 2 threads, throughput mode), untimed
        from edgecls.runtime import Classifier

        for threads in (1, 2):
            Classifier(args.bundle, "auto", None, threads=threads, mode="throughput").close()
    print("[3/6] a local Ray (2 CPUs)")
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray_start_s = time.perf_counter() - t0
    first_job_s = ray_data_floor(ray)  # also starts Ray Data's actors of a cluster (stats, autoscaling, locations)
    floor_s = ray_data_floor(ray)
    print(f"      ray.init {ray_start_s:.2f} s; Ray Data's floor (a do-nothing job on 2 actors, to its first row) "
          f"{floor_s:.2f} s ({first_job_s:.2f} s for the first job on this Ray)")

    print("[4/6] --engine ray")
    for workers, threads in ((1, 2), (2, 1), (2, 2)):
        rows.append(ray_row(args, images, work / f"ray-{workers}x{threads}", workers, threads, local_ips, reference,
                            ray_start_s, m_local.own_s / local.images))

    large: list[dict[str, Any]] = []
    if args.large:
        print(f"[5/6] a larger job: {args.large} images")
        big, _ = make_inputs(work / f"images-{args.large}", args.large, Path(args.data))
        big_out = work / "local-large.jsonl"
        with Meter() as m:
            big_local = predict_paths(args.bundle, [big], fmt="jsonl", out=big_out)
        big_ips = big_local.images / m.seconds
        large.append({"engine": "local", "workers": 1, "threads": None, "images": big_local.images,
                      "img_s": round(big_ips, 1), **m.to_dict()})
        print(f"      local {big_ips:.1f} img/s ({m.seconds:.2f} s, CPU {m.own_s:.1f} s)")
        big_ref = local_rows(big_out)
        for workers, threads in ((2, 1), (2, 2)):
            large.append(ray_row(args, big, work / f"ray-large-{workers}x{threads}", workers, threads, big_ips,
                                 big_ref, ray_start_s, m.own_s / big_local.images))
    else:
        print("[5/6] a larger job: skipped (--large 0)")
    ray.shutdown()

    print("[6/6] report")
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
    four = next(r for r in rows if r["engine"] == "ray" and r["workers"] == 2 and r["threads"] == 2)
    verdict = "met" if two["vs_local"] >= TARGET else "not met"  # 2 workers x 1 thread: one core each, as local
    verdict_2x2 = "met" if four["vs_local"] >= TARGET else "not met"
    print(f"      ray 2 workers / local, whole run: {two['vs_local']:.0%} (2 x 1: target {TARGET:.0%} {verdict}), "
          f"{four['vs_local']:.0%} (2 x 2: {verdict_2x2}); steady {two['steady_vs_local']:.0%} / "
          f"{four['steady_vs_local']:.0%}; fixed start {two['start_s']:.2f} / {four['start_s']:.2f} s")
    for r in large:
        if r["engine"] == "ray":
            print(f"      {r['images']} images, {r['workers']} x {r['threads']}: {r['vs_local']:.0%} of local whole "
                  f"run, {r['steady_vs_local']:.0%} steady")
    for p in projection:
        print(f"      10M images on {p['nodes']} nodes x {p['cores_per_node']} cores: {p['img_s']:,} img/s, "
              f"{p['minutes']} min, reads {p['read_MB_s']} MB/s ({p['read_MB_s_per_node']} MB/s per node), "
              f"writes {p['write_MB_s']} MB/s")
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": str(machine),
              "python": platform.python_version(), "images": args.images, "inputs": kind,
              "mean_jpeg_bytes": round(mean_bytes), "bundle": str(args.bundle), "block_size": args.block_size,
              "engine_cache": args.engine_cache, "ray_start_s": round(ray_start_s, 2),
              "ray_data_floor_s": round(floor_s, 2),
              "ray_data_first_job_s": round(first_job_s, 2),
              "timed": {"local": "predict_paths(...) in this process after one untimed run: model load, decode, "
                                 "inference, the JSONL write",
                        "ray img_s": "edgecls.scale.run(...) in this process on the running local Ray: listing, "
                                     "output claim, bundle check, worker start and model load, every block written",
                        "ray img_s_with_ray_start": "the same plus this run's ray.init (no Ray running before)",
                        "steady_img_s": "rows / (end - first row back)",
                        "start_s": "the run's start to its first row back (the fixed start)"},
              "rows": rows, "large": large, "target": TARGET, "verdict": verdict,
              "verdict_2x2": verdict_2x2,
              "per_core_img_s": round(per_core, 1), "projection_10M": projection}
    out = Path(args.out or REPO / "benchmarks" / "results" / f"scale-{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"      wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
