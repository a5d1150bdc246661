"""Serving benchmark: what `edgecls serve` costs over calling the runtime in-process (issue 12).

Steps:
  [1/4] bundle: --bundle BUNDLE, else bundles/aq-lite0 when present, else EfficientNet-Lite0 (random weights, 224 px,
        7 labels) exported like the exporter does (fp32 + Q/DQ INT8 ONNX, and OpenVINO IRs when installed); images:
        --images DIR, else the aquarium JPEGs (../shared/datasets/aquarium/{valid,test}/images), else generated
        640x480 JPEGs. Every image is held in memory as its encoded bytes (both sides decode them).
  [2/4] in-process: ``Classifier.predict_batch(jpeg_bytes, batch_size=32)`` over all the images (img/s, decode and
        preprocess included), and ``Classifier.predict(jpeg_bytes)`` one by one (the batch-1 time, p50)
  [3/4] served: `edgecls serve` in a subprocess, dynamic batching on (--max-batch 8) and off (--max-batch 1); a load
        generator in this process (asyncio, keep-alive HTTP/1.1 connections, the raw JPEG as the body of
        POST /v1/classify) at concurrency 1, 8 and 32: throughput, p50 and p99 latency, errors
  [4/4] report: the targets (2 cores: concurrency-32 served throughput >= 80% of in-process batched; concurrency-1
        p50 within 3 ms of in-process batch-1), the CPU time other processes took meanwhile, and
        benchmarks/results/serve-<machine>.json

Rounds (--rounds) interleave [2/4] and [3/4] and keep the medians, so a machine that gets busier shifts both alike.

Run:  .venv/bin/python benchmarks/serve.py [--bundle BUNDLE] [--images DIR] [--requests 400] [--rounds 2]
      [--threads N] [--out benchmarks/results]
Requirements: the `runtime` and `serve` extras (+ `openvino` for OpenVINO); building the default bundle needs the
`train` extra (torch, onnx); the server being measured never imports torch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
AQUARIUM = REPO.parent / "shared" / "datasets" / "aquarium"
RESULTS = REPO / "benchmarks" / "results"
CONCURRENCY = (1, 8, 32)
MODES = {"batching": 8, "no batching": 1}  # --max-batch
THROUGHPUT_TARGET = 0.80
LATENCY_TARGET_MS = 3.0
IN_PROCESS_KEYS = ("batched_img_s", "batch1_p50_ms", "batched_cpu_ms_per_img", "batch1_cpu_ms_per_img")


# ---------------------------------------------------------------------------------------------------------------------
# [1/4] bundle and images


def find_bundle(given: Path | None, workdir: Path) -> Path:
    if given is not None:
        return given
    trained = REPO / "bundles" / "aq-lite0"
    if (trained / "manifest.json").is_file():
        return trained
    import logging

    import pipeline  # benchmarks/pipeline.py: the same export-like bundle builder
    import torch

    from edgecls.train.backbones import ModelSpec, build_model

    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    lite0 = build_model(ModelSpec("efficientnet_lite0", pipeline.CLASSES), pretrained=False)
    return pipeline.build_bundle(workdir / "lite0-224", lite0, 224, name="efficientnet_lite0")


def load_images(folder: Path | None, workdir: Path, n: int) -> tuple[list[bytes], str]:
    """Encoded JPEG bytes of up to ``n`` images, and where they came from."""
    if folder is None and (AQUARIUM / "data.yaml").is_file():
        files = sorted((AQUARIUM / "valid" / "images").glob("*.jpg")) + sorted((AQUARIUM / "test" / "images").glob(
            "*.jpg"))
        return [p.read_bytes() for p in files[:n]], f"aquarium valid+test JPEGs ({AQUARIUM})"
    import pipeline

    files = pipeline.real_images(folder, workdir, n)
    return [p.read_bytes() for p in files], str(folder) if folder else "generated 640x480 JPEGs"


# ---------------------------------------------------------------------------------------------------------------------
# [2/4] in-process


def in_process(bundle: Path, images: list[bytes], threads: int | None) -> dict:
    from edgecls.runtime import Classifier

    with Classifier(bundle, threads=threads) as clf:
        clf.predict_batch(images[:32], batch_size=32)  # warm-up
        cpu, start = time.process_time(), time.perf_counter()
        clf.predict_batch(images, batch_size=32)
        batched = len(images) / (time.perf_counter() - start)
        batched_cpu = 1000 * (time.process_time() - cpu) / len(images)
        single = []
        cpu = time.process_time()
        for data in images:
            t = time.perf_counter()
            clf.predict(data)
            single.append(time.perf_counter() - t)
        single_cpu = 1000 * (time.process_time() - cpu) / len(images)
        info = {"artifact": clf.artifact.name, "backend": clf.backend.name, "device": clf.backend.device,
                "precision": clf.precision_name}
    return {"batched_img_s": batched, "batch1_p50_ms": 1000 * statistics.median(single),
            "batched_cpu_ms_per_img": batched_cpu, "batch1_cpu_ms_per_img": single_cpu, **info}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its threads (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------------------------------
# [3/4] served


def start_server(bundle: Path, max_batch: int, threads: int | None) -> tuple[subprocess.Popen, str, int]:
    args = [sys.executable, "-m", "edgecls.cli", "serve", str(bundle), "--port", "0", "--max-batch", str(max_batch)]
    if threads:
        args += ["--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("EDGECLS_API_KEY", None)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        found = re.match(r"serving .* on http://([\d.]+):(\d+)", line)
        if found:
            return proc, found.group(1), int(found.group(2))
    proc.kill()
    raise RuntimeError("the server did not start:\n" + "".join(seen))


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


async def _one_connection(host: str, port: int, requests: list[bytes], latencies: list[float],
                          errors: list[int]) -> None:
    """Keep-alive HTTP/1.1 on one connection: send, read the whole answer, next (what a client pool does)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for request in requests:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


def http_request(host: str, data: bytes) -> bytes:
    return (f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def load(host: str, port: int, images: list[bytes], total: int, concurrency: int) -> dict:
    requests = [http_request(host, images[i % len(images)]) for i in range(total)]
    per = [requests[i::concurrency] for i in range(concurrency)]
    latencies: list[float] = []
    errors: list[int] = []

    async def run() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(_one_connection(host, port, chunk, latencies, errors) for chunk in per if chunk))
        return time.perf_counter() - start

    seconds = asyncio.run(run())
    ms = np.asarray(latencies) * 1000
    return {"concurrency": concurrency, "requests": total, "img_s": total / seconds,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "errors": len(errors),
            "error_statuses": sorted(set(errors))}


def served(bundle: Path, images: list[bytes], max_batch: int, total: int, threads: int | None) -> list[dict]:
    proc, host, port = start_server(bundle, max_batch, threads)
    try:
        load(host, port, images, min(total, 64), 8)  # warm-up: pools, connections
        rows = []
        for conc in CONCURRENCY:
            n = max(total // 4, 100) if conc == 1 else total
            cpu = cpu_seconds(proc.pid)
            row = load(host, port, images, n, conc)
            row["server_cpu_ms_per_img"] = 1000 * (cpu_seconds(proc.pid) - cpu) / n
            rows.append(row)
        return rows
    finally:
        stop_server(proc)


# ---------------------------------------------------------------------------------------------------------------------
# [4/4] report


def machine_slug(machine) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", machine.cpu.lower()).strip("-")
    name = re.sub(r"-?\d+-core-processor$", "", name)
    return f"{name}-{machine.cores}c"


def report(result: dict) -> str:
    inp = result["in_process"]
    lines = [f"in-process ({inp['artifact']} on {inp['backend']} {inp['device']}, {inp['precision']}): "
             f"predict_batch {inp['batched_img_s']:.1f} img/s ({inp['batched_cpu_ms_per_img']:.2f} CPU ms/img), "
             f"predict() batch-1 p50 {inp['batch1_p50_ms']:.2f} ms ({inp['batch1_cpu_ms_per_img']:.2f} CPU ms/img)",
             "",
             "| mode | concurrency | img/s | vs in-process batched | p50 ms | p99 ms | server CPU ms/img | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, rows in result["served"].items():
        for row in rows:
            lines.append(f"| {mode} | {row['concurrency']} | {row['img_s']:.1f} | "
                         f"{row['img_s'] / inp['batched_img_s']:.0%} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                         f"{row['server_cpu_ms_per_img']:.2f} | {row['errors']} |")
    lines.append("")
    for name, verdict in result["targets"].items():
        lines.append(f"- {name}: {verdict}")
    return "\n".join(lines)


def judge(result: dict) -> dict[str, str]:
    inp = result["in_process"]
    on = {r["concurrency"]: r for r in result["served"]["batching"]}
    ratio = on[32]["img_s"] / inp["batched_img_s"]
    gap = on[1]["p50_ms"] - inp["batch1_p50_ms"]
    cpu_ratio = inp["batched_cpu_ms_per_img"] / on[32]["server_cpu_ms_per_img"]
    return {
        "CPU per image, in-process batched / served at concurrency 32 (what the throughput ratio tends to when the "
        "CPUs are saturated and quiet)": f"{cpu_ratio:.0%} ({inp['batched_cpu_ms_per_img']:.2f} vs "
                                         f"{on[32]['server_cpu_ms_per_img']:.2f} ms)",
        "concurrency-32 throughput >= 80% of in-process batched":
            f"{'MET' if ratio >= THROUGHPUT_TARGET else 'NOT MET'} ({on[32]['img_s']:.1f} vs "
            f"{inp['batched_img_s']:.1f} img/s = {ratio:.0%})",
        "concurrency-1 p50 within 3 ms of in-process batch-1":
            f"{'MET' if gap <= LATENCY_TARGET_MS else 'NOT MET'} ({on[1]['p50_ms']:.2f} vs "
            f"{inp['batch1_p50_ms']:.2f} ms = {gap:+.2f} ms)",
    }


def _median_rows(rounds: list[list[dict]]) -> list[dict]:
    out = []
    for rows in zip(*rounds):
        merged = dict(rows[0])
        for key in ("img_s", "p50_ms", "p99_ms", "server_cpu_ms_per_img"):
            merged[key] = statistics.median(r[key] for r in rows)
            merged[f"{key}_rounds"] = [round(r[key], 3) for r in rows]
        merged["errors"] = sum(r["errors"] for r in rows)
        out.append(merged)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--images", type=Path, default=None)
    parser.add_argument("--num-images", type=int, default=190)
    parser.add_argument("--requests", type=int, default=400, help="requests per concurrency level (1: a quarter)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="engine threads (backend default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from edgecls.bench._machine import CpuMeter, machine_info

    workdir = Path(tempfile.mkdtemp(prefix="edgecls-serve-bench-"))
    try:
        print("[1/4] bundle and images")
        bundle = find_bundle(args.bundle, workdir)
        images, where = load_images(args.images, workdir, args.num_images)
        print(f"      {bundle}; {len(images)} images from {where}, {sum(map(len, images)) / len(images) / 1024:.0f} "
              "KB each on average")
        meter = CpuMeter().start()
        inproc, modes = [], {m: [] for m in MODES}
        for r in range(args.rounds):
            print(f"[2/4] in-process (round {r + 1} of {args.rounds})")
            inproc.append(in_process(bundle, images, args.threads))
            print(f"      {inproc[-1]['batched_img_s']:.1f} img/s batched, batch-1 p50 "
                  f"{inproc[-1]['batch1_p50_ms']:.2f} ms")
            for mode, max_batch in MODES.items():
                print(f"[3/4] served, {mode} (--max-batch {max_batch}), round {r + 1}")
                modes[mode].append(served(bundle, images, max_batch, args.requests, args.threads))
                for row in modes[mode][-1]:
                    print(f"      concurrency {row['concurrency']:2d}: {row['img_s']:6.1f} img/s, p50 "
                          f"{row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, errors {row['errors']}")
        share = meter.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    machine = machine_info()
    result = {
        "machine": machine.to_dict(), "cpu_share": share.to_dict() if share else None,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "bundle": (str(bundle.resolve().relative_to(REPO)) if bundle.resolve().is_relative_to(REPO) else str(bundle))
        if args.bundle or bundle.resolve().is_relative_to(REPO) else "lite0-224 (random weights, built here)",
        "images": {"count": len(images), "source": where}, "requests": args.requests, "rounds": args.rounds,
        "in_process": {**inproc[0], **{k: statistics.median(r[k] for r in inproc) for k in IN_PROCESS_KEYS},
                       "rounds": [{k: round(r[k], 3) for k in IN_PROCESS_KEYS} for r in inproc]},
        "served": {mode: _median_rows(rounds) for mode, rounds in modes.items()},
    }
    result["targets"] = judge(result)
    print("[4/4] report")
    print(f"machine: {machine.summary()}")
    if share is not None:
        print(share.summary() + ("  <- DISTURBED: re-run on a quiet machine" if share.disturbed else ""))
    print(report(result))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"serve-{machine_slug(machine)}.json"
    from edgecls._io import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
