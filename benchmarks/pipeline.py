"""Pipelining benchmark: does the runtime keep the inference engine busy while it decodes and writes?

Steps:
  [1/5] bundles: --bundle BUNDLE (repeatable), or built here: EfficientNet-Lite0 (random weights, 224 px, 7 labels)
        as fp32 ONNX + a Q/DQ INT8 ONNX and, with openvino installed, their OpenVINO IRs; plus a tiny 2-conv net
  [2/5] pure backend batch-1 FPS: one preprocessed frame, ``backend.infer`` in a loop
  [3/5] `edgecls run --source video.mp4 --no-show` FPS (``run_stream``; JSON lines to /dev/null)
  [4/5] pure batched throughput: ``backend.infer`` on batches of --batch preprocessed images, in the engine's
        latency mode and (where the runtime has it) its throughput mode; the ratios use the faster
  [5/5] folder `edgecls predict` throughput (``predict_paths``; JSONL to /dev/null) on real images: the aquarium
        photos as they are (320 px), enlarged to 1024 px on the long side, and enlarged to 4000x3000 camera stills
  report: per bundle, backend/device/precision, the rates and the ratios against the targets
          (run >= 75 % of pure batch-1 FPS; predict on 1024 px >= 85 %, on 4000 px >= 70 % of pure batched
          throughput), and two bounds for each pipeline row: the serial one, 1/(1/inference + 1/decode) (decoding
          and inference taking turns on the whole machine), and the work-conserving one, cores / (decode CPU-s +
          inference CPU-s per image), capped by each side's own rate (no core ever idle while there is work): what
          a perfect overlap reaches. CPU-seconds are the process's own (user + system, os.times), so they depend
          far less on other jobs than the rates do; each pipeline row's own CPU-s per image is reported too.

Run:  .venv/bin/python benchmarks/pipeline.py [--bundle BUNDLE] [--images DIR] [--frames 300] [--out report.json]
      [--stills 1024,4000] [--num-stills 256] [--artifact openvino-int8 --artifact openvino-int8-u8]
      ``--artifact`` (repeatable) measures those artifacts of each bundle side by side, e.g. a float-input artifact
      and its pixel-input (``-u8``) twin, which takes uint8 pixels and normalises in the engine: before/after in one
      run; by default the one ``auto`` picks.
Requirements: the `runtime` extra (+ `openvino` for the OpenVINO rows); building the default bundles needs the
`train` extra (torch, onnx) — the runtime being measured never imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# ../shared beside the repository (a main checkout) or two levels up (a worktree under wt/)
SHARED = next((p / "shared" for p in (REPO.parent, REPO.parent.parent) if (p / "shared").is_dir()),
              REPO.parent / "shared")
DEFAULT_IMAGES = SHARED / "datasets" / "aquarium" / "train" / "images"
CLASSES = ("fish", "jellyfish", "penguin", "puffin", "shark", "starfish", "stingray")


# ---------------------------------------------------------------------------------------------------------------------
# [1/5] bundles


def _calibration(n: int, size: int) -> list[np.ndarray]:
    return [np.random.default_rng(i).standard_normal((1, 3, size, size)).astype(np.float32) for i in range(n)]


def build_bundle(root: Path, model, size: int, *, name: str) -> Path:
    """Export ``model`` like the exporter does (onnx, onnx-int8 and OpenVINO IRs when available) into ``root``."""
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgecls._deps import has
    from edgecls._io import sha256_file
    from edgecls.manifest import Artifact, Manifest
    from edgecls.preprocess import PreprocessSpec

    onnx_path = root / "onnx" / "model.onnx"
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model.eval(), torch.zeros(1, 3, size, size), str(onnx_path), input_names=["images"],
                      output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter({"images": x} for x in _calibration(16, size))

        def get_next(self):
            return next(self.it, None)

    int8_path = root / "onnx-int8" / "model.onnx"
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(str(onnx_path), str(int8_path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    thr = (0.5,) * len(CLASSES)
    arts = [Artifact("onnx", "onnx/model.onnx", "onnx", "fp32", sha256_file(onnx_path), thr),
            Artifact("onnx-int8", "onnx-int8/model.onnx", "onnx", "int8", sha256_file(int8_path), thr, parent="onnx")]
    if has("openvino"):
        import openvino as ov

        ov.save_model(ov.convert_model(str(onnx_path)), str(root / "openvino" / "model.xml"))
        ov.save_model(ov.convert_model(str(int8_path)), str(root / "openvino-int8" / "model.xml"),
                      compress_to_fp16=False)
        arts += [Artifact("openvino", "openvino/model.xml", "openvino", "fp16",
                          sha256_file(root / "openvino/model.xml"), thr),
                 Artifact("openvino-int8", "openvino-int8/model.xml", "openvino", "int8",
                          sha256_file(root / "openvino-int8/model.xml"), thr, parent="openvino")]
    Manifest(class_names=CLASSES, preprocess=PreprocessSpec(img_size=size), backbone=name, thresholds=thr,
             input_shape=("batch", 3, size, size), output_shape=("batch", len(CLASSES)),
             artifacts=tuple(arts)).save(root)
    return root


def default_bundles(workdir: Path) -> list[Path]:
    import logging

    import torch
    from torch import nn

    from edgecls.train.backbones import ModelSpec, build_model

    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    lite0 = build_model(ModelSpec("efficientnet_lite0", CLASSES), pretrained=False)
    tiny = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, len(CLASSES)))
    return [build_bundle(workdir / "lite0-224", lite0, 224, name="efficientnet_lite0"),
            build_bundle(workdir / "tiny-64", tiny, 64, name="tiny")]


# ---------------------------------------------------------------------------------------------------------------------
# inputs


def real_images(folder: Path | None, workdir: Path, n: int) -> list[Path]:
    """Up to ``n`` real images from ``folder`` (the aquarium training set by default), else generated 640x480 jpgs."""
    import cv2

    if folder is not None and folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
        if files:
            return files
    out = workdir / "images"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = cv2.GaussianBlur((rng.random((480, 640, 3)) * 255).astype(np.uint8), (9, 9), 3)
        paths.append(out / f"{i:04d}.jpg")
        cv2.imwrite(str(paths[-1]), img)
    return paths


def enlarged_images(images: list[Path], out: Path, long_side: int, n: int) -> list[Path]:
    """``n`` of ``images`` enlarged (cubic) to ``long_side`` px on the long side (4000 -> 4000x3000 for a 4:3 photo)
    and saved as quality-90 JPEGs: the size phones and industrial cameras deliver."""
    import cv2

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, src in enumerate(images[:n]):
        img = cv2.imread(str(src))
        h, w = img.shape[:2]
        s = long_side / max(h, w)
        big = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_CUBIC)
        paths.append(out / f"{i:04d}.jpg")
        cv2.imwrite(str(paths[-1]), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return paths


def make_video(path: Path, images: list[Path], frames: int, size=(640, 480), fps: float = 30.0) -> Path:
    """A 640x480 mp4 (mp4v) cycling through the real images, like a camera recording."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    pics = [cv2.resize(cv2.imread(str(p)), size) for p in images[: min(len(images), 60)]]
    for i in range(frames):
        writer.write(pics[i % len(pics)])
    writer.release()
    return path


# ---------------------------------------------------------------------------------------------------------------------
# measurements


def _cpu_seconds() -> float:
    """This process's CPU time so far, every thread (user + system)."""
    t = os.times()
    return t.user + t.system


def _rate(fn, items_per_call: int, *, min_seconds: float, warmup: int = 10, cpu: list | None = None) -> float:
    """Items/s of ``fn``; with ``cpu`` (a list), the process's CPU-seconds per item are appended to it."""
    for _ in range(warmup):
        fn()
    calls, start, cpu0 = 0, time.perf_counter(), _cpu_seconds()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and calls >= 20:
            if cpu is not None:
                cpu.append((_cpu_seconds() - cpu0) / (calls * items_per_call))
            return calls * items_per_call / elapsed


def _preprocessor(spec, kind: str):
    from edgecls.preprocess import Preprocessor

    try:
        return Preprocessor(spec, output=kind)
    except TypeError:  # before pixel-input artifacts: one kind of output
        return Preprocessor(spec)


def _decode_rate(images: list[Path], spec, workers: int, kind: str = "float32-nchw",
                 cpu: list | None = None) -> float:
    """Images/s of decode + preprocess alone in the same thread pool predict uses (no inference), making what the
    artifact takes (``kind``: the float tensor, or a -u8 artifact's uint8 pixels); CPU-s per image appended to
    ``cpu``."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    local = threading.local()

    def load(path: Path):
        if not hasattr(local, "pre"):
            local.pre = _preprocessor(spec, kind)
        return local.pre(path)

    start, cpu0 = time.perf_counter(), _cpu_seconds()
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(load, images):
            pass
    if cpu is not None:
        cpu.append((_cpu_seconds() - cpu0) / len(images))
    return len(images) / (time.perf_counter() - start)


def _video_prep_rate(video: Path, spec, kind: str = "float32-nchw", cpu: list | None = None) -> float:
    """Frames/s of reading (decoding) and preprocessing the video alone, one thread: the ceiling for a stream that
    keeps every frame; CPU-s per frame appended to ``cpu``."""
    import cv2

    pre = _preprocessor(spec, kind)
    cap = cv2.VideoCapture(str(video))
    frames, start, cpu0 = 0, time.perf_counter(), _cpu_seconds()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        pre(frame)
        frames += 1
    cap.release()
    if cpu is not None:
        cpu.append((_cpu_seconds() - cpu0) / max(1, frames))
    return frames / (time.perf_counter() - start)


def measure(bundle: Path, images: list[Path], video: Path, *, batch: int, backend: str, seconds: float,
            rounds: int, stills: dict[str, list[Path]] | None = None, artifact: str | None = None) -> dict:
    """Interleave the four measurements ``rounds`` times and keep the medians (the machine may be shared).
    ``artifact``: this artifact of the bundle (None: the one ``auto`` picks)."""
    import cv2

    from edgecls.preprocess import preprocess, preprocess_batch
    from edgecls.runtime import Classifier
    from edgecls.runtime.backends import usable_cpus
    from edgecls.runtime.commands import predict_paths, run_stream

    row: dict = {"bundle": bundle.name}
    samples: dict[str, list[float]] = {k: [] for k in ("pure_batch1_fps", "stream_fps", "pure_batched_ips",
                                                        "pure_batched_latency_ips", "predict_ips", "decode_ips",
                                                        "video_prep_fps", "load_cpu_s")}
    stills = stills or {}
    for label in stills:
        samples[f"predict_{label}_ips"] = []
        samples[f"decode_{label}_ips"] = []
    # CPU-seconds per image (this process, every thread): inference alone, decode alone and the pipelines
    cpu: dict[str, list[float]] = {k: [] for k in ("infer_b1", "infer_batched", "video_prep", "decode", "stream",
                                                    "predict", *(f"{p}_{label}" for label in stills
                                                                 for p in ("decode", "predict")))}
    cap = cv2.VideoCapture(str(video))
    frame = cap.read()[1]
    cap.release()
    workers = min(4, os.cpu_count() or 1)
    import contextlib
    import inspect

    modes = "mode" in inspect.signature(Classifier).parameters  # the engine modes (absent before issue 15)
    with contextlib.ExitStack() as stack:
        clf = stack.enter_context(Classifier(bundle, backend, artifact=artifact))
        devnull = stack.enter_context(open(os.devnull, "w"))
        # pure batched inference in the engine's best set-up for batches: the throughput mode where there is one
        batched = stack.enter_context(Classifier(bundle, backend, mode="throughput", artifact=artifact)) if modes \
            else clf
        info = clf.info()
        kind = getattr(clf, "input_kind", "float32-nchw")  # a -u8 artifact takes uint8 pixels
        row.update(backend=info["backend"]["name"], device=info["backend"]["device"],
                   precision=info["backend"]["precision"], artifact=info["artifact"]["name"], input=kind)
        if hasattr(clf, "preprocessor"):  # the batches the engine is timed on: what the artifact takes
            pre = clf.preprocessor()
            one = clf.new_input(1)
            pre(frame, one[0])
            many = clf.new_input(batch)
            for i, path in enumerate(images[:batch]):
                pre(path, many[i])
        else:
            one = preprocess(frame, clf.spec)[None]
            many = preprocess_batch(images[:batch], clf.spec)
        def load_cpu() -> float:
            """CPU-s of opening the bundle as run/predict do (engine compile, file check): taken off their CPU-s."""
            cpu0 = _cpu_seconds()
            kw = {"mode": "throughput"} if modes else {}
            with Classifier(bundle, backend, artifact=artifact, **kw):
                pass
            return _cpu_seconds() - cpu0

        def pipeline_cpu(key: str, fn, items):
            """``fn()`` (run or predict); its CPU-s per image (``items(result)`` images), less opening the bundle,
            appended to ``cpu[key]``."""
            cpu0 = _cpu_seconds()
            out = fn()
            cpu[key].append(max(0.0, _cpu_seconds() - cpu0 - samples["load_cpu_s"][-1]) / max(1, items(out)))
            return out

        for r in range(1, rounds + 1):
            tag = f"{bundle.name} round {r}/{rounds}"
            print(f"[2/5] {tag}: pure batch-1 inference ({row['backend']}/{row['device']}, {row['precision']})")
            samples["pure_batch1_fps"].append(_rate(lambda: clf.backend.infer(one), 1, min_seconds=seconds,
                                                    cpu=cpu["infer_b1"]))
            print(f"[3/5] {tag}: run --source video --no-show")
            samples["load_cpu_s"].append(load_cpu())
            s = pipeline_cpu("stream", lambda: run_stream(bundle, source=str(video), backend=backend,
                                                          artifact=artifact, show=False, stdout=devnull),
                             lambda out: out.frames)
            samples["stream_fps"].append(s.fps)
            samples["video_prep_fps"].append(_video_prep_rate(video, clf.spec, kind, cpu=cpu["video_prep"]))
            row.update(stream_frames=s.frames, stream_latency_ms=s.mean_latency_ms, stream_dropped=s.dropped)
            print(f"[4/5] {tag}: pure batched inference (batch {batch})")
            lat_cpu: list[float] = []
            latency_rate = _rate(lambda: clf.backend.infer(many), batch, min_seconds=seconds, cpu=lat_cpu)
            samples["pure_batched_latency_ips"].append(latency_rate)
            best, best_cpu = latency_rate, lat_cpu[-1]
            if batched is not clf:
                thr_cpu: list[float] = []
                thr_rate = _rate(lambda: batched.backend.infer(many), batch, min_seconds=seconds, cpu=thr_cpu)
                if thr_rate > latency_rate:
                    best, best_cpu = thr_rate, thr_cpu[-1]
            samples["pure_batched_ips"].append(best)
            cpu["infer_batched"].append(best_cpu)
            print(f"[5/5] {tag}: predict on {len(images)} images (batch {batch}); decode-only rate")
            p = pipeline_cpu("predict", lambda: predict_paths(bundle, [str(i) for i in images], backend=backend,
                                                              artifact=artifact, batch=batch, fmt="jsonl",
                                                              stdout=devnull, progress=False),
                             lambda out: out.images)
            samples["predict_ips"].append(p.images_per_second)
            row.update(predict_images=p.images, predict_errors=p.errors)
            samples["decode_ips"].append(_decode_rate(images, clf.spec, workers, kind, cpu=cpu["decode"]))
            for label, files in stills.items():
                print(f"[5/5] {tag}: predict on {len(files)} {label}-px stills")
                p = pipeline_cpu(f"predict_{label}",
                                 lambda files=files: predict_paths(bundle, [str(i) for i in files], backend=backend,
                                                       artifact=artifact, batch=batch, fmt="jsonl", stdout=devnull,
                                                       progress=False), lambda out: out.images)
                samples[f"predict_{label}_ips"].append(p.images_per_second)
                samples[f"decode_{label}_ips"].append(_decode_rate(files, clf.spec, workers, kind,
                                                                   cpu=cpu[f"decode_{label}"]))
    for key, values in samples.items():
        row[key] = float(np.median(values))
        row[key + "_all"] = [round(v, 1) for v in values]
    for key, values in cpu.items():  # CPU-seconds per image -> ms
        row[f"{key}_cpu_ms"] = float(np.median(values)) * 1000.0
        row[f"{key}_cpu_ms_all"] = [round(v * 1000.0, 3) for v in values]
    cores = row["cores"] = usable_cpus()
    row["stream_ratio"] = row["stream_fps"] / row["pure_batch1_fps"]
    row["predict_ratio"] = row["predict_ips"] / row["pure_batched_ips"]
    # serial bound: decoding and inference taking turns, each on the whole machine: 1 / (1/infer + 1/decode)
    row["predict_cpu_bound_ips"] = 1.0 / (1.0 / row["pure_batched_ips"] + 1.0 / row["decode_ips"])
    # the same for a video: every frame is decoded and preprocessed (one thread) on the cores inference uses
    row["stream_cpu_bound_fps"] = 1.0 / (1.0 / row["pure_batch1_fps"] + 1.0 / row["video_prep_fps"])
    # work-conserving bound: no core idle while there is work, so the cores' time goes to the CPU-seconds each
    # image costs (decode + inference, as measured alone), and neither side runs faster than it does alone. The
    # video is inferred in batches (run batches decoded frames in the throughput mode): the batched inference cost.
    row["stream_wc_bound_fps"] = work_conserving(cores, row["video_prep_cpu_ms"], row["infer_batched_cpu_ms"],
                                                 row["video_prep_fps"], row["pure_batched_ips"])
    row["predict_wc_bound_ips"] = work_conserving(cores, row["decode_cpu_ms"], row["infer_batched_cpu_ms"],
                                                  row["decode_ips"], row["pure_batched_ips"])
    for label in stills:
        row[f"predict_{label}_ratio"] = row[f"predict_{label}_ips"] / row["pure_batched_ips"]
        row[f"predict_{label}_cpu_bound_ips"] = 1.0 / (1.0 / row["pure_batched_ips"]
                                                      + 1.0 / row[f"decode_{label}_ips"])
        row[f"predict_{label}_wc_bound_ips"] = work_conserving(cores, row[f"decode_{label}_cpu_ms"],
                                                               row["infer_batched_cpu_ms"],
                                                               row[f"decode_{label}_ips"], row["pure_batched_ips"])
    return row


def work_conserving(cores: int, decode_cpu_ms: float, infer_cpu_ms: float, decode_rate: float,
                    infer_rate: float) -> float:
    """Images/s when every core works all the time on decode + inference (``cores`` / CPU-s per image), capped by
    each side's own rate (a video decodes on one thread; the engine alone runs no faster than alone)."""
    per_image = (decode_cpu_ms + infer_cpu_ms) / 1000.0
    full = cores / per_image if per_image > 0 else float("inf")
    return min(full, decode_rate, infer_rate)


def _get(r: dict, key: str) -> float:
    return float(r.get(key, float("nan")))


def report(rows: list[dict]) -> str:
    """Two tables: `run` on the video against pure batch-1 inference, and folder `predict` (the 320-px photos and
    each size of stills) against pure batched inference, each with its serial and work-conserving bounds."""
    head = (f"{'bundle':<10s} {'backend/device (precision, artifact)':<46s} {'b1 FPS':>7s} {'run FPS':>7s} "
            f"{'ratio':>5s} {'run CPU ms':>10s} {'decode FPS':>10s} {'dec ms':>6s} {'inf ms':>6s} "
            f"{'serial bound':>13s} {'work-cons. bound':>16s} {'run/wc':>6s}")
    lines = ["`run` on the video (CPU ms: this process's CPU-seconds per frame; dec: decode + prep alone, one thread;"
             " inf: batched inference alone)", head, "-" * len(head)]
    for r in rows:
        what = f"{r['backend']}/{r['device']} ({r['precision']}, {r['artifact']})"
        b1, sb, wc = r["pure_batch1_fps"], r["stream_cpu_bound_fps"], _get(r, "stream_wc_bound_fps")
        lines.append(
            f"{r['bundle']:<10s} {what:<46s} {b1:7.1f} {r['stream_fps']:7.1f} {r['stream_ratio']:5.0%} "
            f"{_get(r, 'stream_cpu_ms'):10.3f} {r['video_prep_fps']:10.1f} {_get(r, 'video_prep_cpu_ms'):6.3f} "
            f"{_get(r, 'infer_batched_cpu_ms'):6.3f} {sb:7.1f} ({sb / b1:3.0%}) {wc:9.1f} ({wc / b1:4.0%}) "
            f"{r['stream_fps'] / wc:6.0%}")
    labels = sorted({k[len("predict_"):-len("_ips")] for r in rows for k in r
                     if k.startswith("predict_") and k.endswith("_ips")
                     and k[len("predict_"):-len("_ips")].isdigit()}, key=int)
    head = (f"{'bundle':<10s} {'backend/device (precision, artifact)':<46s} {'images':>6s} {'batched':>8s} "
            f"{'predict':>8s} {'ratio':>5s} {'CPU ms':>7s} {'decode/s':>8s} {'dec ms':>6s} {'inf ms':>6s} "
            f"{'serial bound':>13s} {'work-cons. bound':>16s} {'pred/wc':>7s}")
    lines += ["", "folder `predict` (img/s; ratio and bounds against pure batched inference; decode: the pool alone)",
              head, "-" * len(head)]
    for r in rows:
        what = f"{r['backend']}/{r['device']} ({r['precision']}, {r['artifact']})"
        full = r["pure_batched_ips"]
        for label in ["", *labels]:
            sfx = f"_{label}" if label else ""
            if f"predict{sfx}_ips" not in r:
                continue
            got, sb = r[f"predict{sfx}_ips"], r[f"predict{sfx}_cpu_bound_ips"]
            wc = _get(r, f"predict{sfx}_wc_bound_ips")
            lines.append(
                f"{r['bundle']:<10s} {what:<46s} {label or 'photos':>6s} {full:8.1f} {got:8.1f} {got / full:5.0%} "
                f"{_get(r, f'predict{sfx}_cpu_ms'):7.3f} {r[f'decode{sfx}_ips']:8.1f} "
                f"{_get(r, f'decode{sfx}_cpu_ms'):6.3f} {_get(r, 'infer_batched_cpu_ms'):6.3f} "
                f"{sb:7.1f} ({sb / full:3.0%}) {wc:9.1f} ({wc / full:4.0%}) {got / wc:7.0%}")
    lines.append("medians of interleaved rounds; targets: run >= 75% of pure batch-1 FPS; predict on 1024-px JPEGs >= "
                 "85%, on 4000-px stills >= 70% of pure batched throughput (ResNet-50: run >= 90%, predict >= 85%)")
    lines.append("serial bound: 1/(1/inference + 1/decode), decoding and inference taking turns on the whole machine "
                 "(what a pipeline without overlap reaches)")
    lines.append("work-conserving bound: cores / (decode CPU-s + inference CPU-s per image), at most each side's rate "
                 "alone: every core busy with the work each image costs (what a perfect overlap reaches); when decode "
                 "alone already uses every core (the predict pool), the two bounds are nearly the same")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", action="append", type=Path, help="bundle(s) to measure [default: build two]")
    parser.add_argument("--backend", action="append", help="backend(s) to measure [default: auto]")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of real images")
    parser.add_argument("--num-images", type=int, default=448)
    parser.add_argument("--frames", type=int, default=300, help="frames in the generated 640x480 video")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum time per pure-inference measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (medians are reported)")
    parser.add_argument("--stills", default="1024,4000",
                        help="long sides (px) of enlarged JPEG stills to run predict on too ('' for none)")
    parser.add_argument("--num-stills", type=int, default=256,
                        help="1024-px stills (the aquarium's first ones); larger sizes get fewer: n * (1024/size)^1.5")
    parser.add_argument("--artifact", action="append",
                        help="artifact(s) of each bundle to measure, side by side (e.g. openvino-int8 and its "
                             "pixel-input twin openvino-int8-u8) [default: the one auto picks]")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="edgecls-bench-"))
    try:
        print("[1/5] bundles and inputs")
        bundles = args.bundle or default_bundles(workdir)
        images = real_images(args.images, workdir, args.num_images)
        video = make_video(workdir / "video.mp4", images, args.frames)
        stills = {size: enlarged_images(images, workdir / f"stills-{size}", int(size),
                                         max(8, round(args.num_stills * (1024 / int(size)) ** 1.5)))
                  for size in (s.strip() for s in args.stills.split(",")) if size}
        from edgecls.bench._machine import CpuMeter

        meter = CpuMeter().start()
        rows = [measure(b, images, video, batch=args.batch, backend=be, seconds=args.seconds, rounds=args.rounds,
                        stills=stills, artifact=art)
                for b in bundles for be in (args.backend or ["auto"]) for art in (args.artifact or [None])]
        share = meter.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs (load average {load:.1f}), "
          f"python {platform.python_version()}; "
          f"{len(images)} images from {args.images if args.images.is_dir() else 'generated 640x480 jpgs'}, "
          f"video {args.frames} frames 640x480")
    if share is not None:
        print(share.summary())
    if args.out:  # before the report: the measurements outlive a bug in it
        args.out.write_text(json.dumps({"cpu_share": share.to_dict() if share else None, "rows": rows}, indent=2)
                            + "\n")
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
