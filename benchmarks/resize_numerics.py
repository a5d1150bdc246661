"""Resize numerics across machines (issue 16, FP32 parity on ARM): how far x86 and arm64 resize the same pixels
apart for each candidate resize, what an FP32 model makes of that, and what each candidate costs on x86.

    .venv/bin/python benchmarks/resize_numerics.py --data ../shared/datasets/aquarium [--bundle B] [--arm] [--out F]

``--arm`` runs the candidates inside the arm64 root of ``benchmarks/arm64_check.py`` (needs root and that root,
built by ``make arm64-check``; qemu-user emulating ``--qemu-cpu``), on the same decoded pixels, with this checkout's
edgecls copied in. ``--bundle``: a bundle with an FP32 ``onnx`` artifact: the ARM pixels and the x86 pixels of each
candidate go through it (ONNX Runtime here; its ARM kernels agree with x86 to 4e-7), giving the max |dp| that the
resize alone causes, and ``Classifier.predict_batch`` is timed with the bundle's spec native and portable.
Timings: medians of interleaved rounds; under load compare the ratios, not the milliseconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SIZE = 224


def candidates() -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """name -> (BGR uint8 image -> SIZE x SIZE result); '(float)' ones return float32 (not rounded to a level)."""
    import cv2

    from edgecls.preprocess import exact_resize

    def u8(flag: int) -> Callable[[np.ndarray], np.ndarray]:
        return lambda img: cv2.resize(img, (SIZE, SIZE), interpolation=flag)

    def wide(flag: int, dtype: Any, rounded: bool = True) -> Callable[[np.ndarray], np.ndarray]:
        def f(img: np.ndarray) -> np.ndarray:
            out = cv2.resize(img.astype(dtype), (SIZE, SIZE), interpolation=flag)
            return np.clip(np.rint(out), 0, 255).astype(np.uint8) if rounded else out.astype(np.float32)
        return f

    return {
        "linear uint8 (native)": u8(cv2.INTER_LINEAR),
        "linear INTER_LINEAR_EXACT (portable)": u8(cv2.INTER_LINEAR_EXACT),
        "linear float32, rounded": wide(cv2.INTER_LINEAR, np.float32),
        "cubic uint8 (native)": u8(cv2.INTER_CUBIC),
        "cubic float32 (float)": wide(cv2.INTER_CUBIC, np.float32, rounded=False),
        "cubic float32, rounded": wide(cv2.INTER_CUBIC, np.float32),
        "cubic float64, rounded": wide(cv2.INTER_CUBIC, np.float64),
        "cubic exact_resize (portable)": lambda img: exact_resize(img, SIZE, SIZE, "cubic"),
        "area uint8 (native)": u8(cv2.INTER_AREA),
        "area float64, rounded": wide(cv2.INTER_AREA, np.float64),
        "area exact_resize (portable)": lambda img: exact_resize(img, SIZE, SIZE, "area"),
        "nearest uint8 (both)": u8(cv2.INTER_NEAREST),
    }


def make_inputs(data: Path) -> dict[str, np.ndarray]:
    """Five aquarium validation photos (320x240 class), a 1024x768 JPEG and a 640x480 frame made from them (with
    sensor-like noise), and a 160x120 one (upscaled to SIZE): decoded here, the same pixels for both machines."""
    import cv2

    rng = np.random.default_rng(0)
    paths = sorted((data / "valid" / "images").glob("*.jpg"))[::25][:5]
    if len(paths) < 4:
        raise SystemExit(f"{data}/valid/images: need at least 4 JPEGs")
    imgs = {f"aquarium-{i}": cv2.imread(str(p)) for i, p in enumerate(paths)}

    def noisy(img: np.ndarray, size: tuple[int, int], amp: int) -> np.ndarray:
        big = cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)
        return np.clip(big.astype(np.int16) + rng.integers(-amp, amp + 1, big.shape), 0, 255).astype(np.uint8)

    jpeg = cv2.imencode(".jpg", noisy(imgs["aquarium-1"], (1024, 768), 6), [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
    imgs["jpeg-1024x768"] = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    imgs["frame-640x480"] = noisy(imgs["aquarium-2"], (640, 480), 4)
    imgs["small-160x120"] = cv2.resize(imgs["aquarium-3"], (160, 120), interpolation=cv2.INTER_AREA)
    return imgs


def emit(inputs: Path, out: Path) -> None:
    """Every candidate on every image of ``inputs`` (.npz) -> ``out`` (.npz): what runs on each machine."""
    import platform

    import cv2

    with np.load(inputs) as f:
        imgs = {k: f[k] for k in f.files}
    results = {f"{c}/{name}": fn(img) for c, fn in candidates().items() for name, img in imgs.items()}
    np.savez(out, **results)
    print(f"{platform.machine()} opencv {cv2.__version__} numpy {np.__version__}: {len(results)} results")


def run_on_arm(inputs: Path, qemu_cpu: str) -> tuple[Path, str]:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import arm64_check as a

    root = a.default_root()
    if not (root / a.STAMP).is_file():
        raise SystemExit(f"{root}: no arm64 root; build it with `make arm64-check` first")
    a.ensure_binfmt()
    a.QEMU_CPU[0] = qemu_cpu
    work = root / "tmp" / "resize-numerics"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(REPO / "edgecls", work / "pkg" / "edgecls", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(Path(__file__), work / "pkg" / "resize_numerics.py")
    shutil.copy(inputs, work / "inputs.npz")
    inside = "/tmp/resize-numerics"
    with a.mounted(root, qemu_cpu):
        proc, took = a.in_root(root, f"PYTHONPATH={inside}/pkg {a.VENV}/bin/python {inside}/pkg/resize_numerics.py "
                                     f"--emit {inside}/inputs.npz {inside}/arm.npz", timeout=3600)
    return work / "arm.npz", f"{proc.stdout.strip()} ({took:.0f} s)"


def compare(arm: Path, x86: Path) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    with np.load(arm) as a, np.load(x86) as b:
        for key in a.files:
            cand, name = key.split("/", 1)
            d = np.abs(a[key].astype(np.float64) - b[key].astype(np.float64))
            r = rows.setdefault(cand, {"values": 0, "differ": 0, "max_levels": 0.0, "images_differing": []})
            r["values"] += d.size
            r["differ"] += int((d > 0).sum())
            r["max_levels"] = max(r["max_levels"], float(d.max()))
            if d.max() > 0:
                r["images_differing"].append(name)
    for r in rows.values():
        r["share"] = r["differ"] / r["values"]
    return rows


def model_dp(bundle: Path, arm: Path, x86: Path) -> dict[str, float]:
    """max |dp| of the bundle's FP32 onnx artifact between the ARM and the x86 result of each candidate."""
    import onnxruntime as ort

    from edgecls.manifest import Manifest
    from edgecls.metrics import sigmoid
    from edgecls.preprocess import PIXELS_BGR, pixels_to_tensor

    manifest = Manifest.load(bundle)
    spec = manifest.preprocess
    mean = np.asarray(spec.mean, np.float32).reshape(1, 3, 1, 1) / np.float32(spec.scale)
    inv = np.float32(spec.scale) / np.asarray(spec.std, np.float32).reshape(1, 3, 1, 1)
    session = ort.InferenceSession(str(bundle / manifest.artifact("onnx").path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out: dict[str, float] = {}
    with np.load(arm) as a, np.load(x86) as b:
        for cand in sorted({k.split("/", 1)[0] for k in a.files}):
            keys = [k for k in a.files if k.startswith(cand + "/")]

            def tensors(f: Any, keys: list[str] = keys) -> np.ndarray:
                batch = np.stack([f[k] for k in keys])
                if batch.dtype == np.uint8:
                    return pixels_to_tensor(batch, spec, PIXELS_BGR)
                rgb = batch[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)
                return (rgb - mean) * inv

            pa = sigmoid(session.run(None, {name: tensors(a)})[0])
            pb = sigmoid(session.run(None, {name: tensors(b)})[0])
            out[cand] = float(np.abs(pa - pb).max())
    return out


def timings(imgs: dict[str, np.ndarray], rounds: int) -> dict[str, dict[str, float]]:
    import cv2

    picked = {"jpeg-1024x768": imgs["jpeg-1024x768"], "frame-640x480": imgs["frame-640x480"],
              "aquarium 320x240": imgs["aquarium-0"]}
    cands = candidates()
    raw: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for iname, img in picked.items():
            for cname, fn in cands.items():
                start = time.perf_counter()
                for _ in range(10):
                    fn(img)
                raw.setdefault((iname, cname), []).append((time.perf_counter() - start) / 10 * 1e3)
    print(f"x86 resize cost (ms, median of {rounds} rounds; cv2 threads {cv2.getNumThreads()})")
    table: dict[str, dict[str, float]] = {}
    for iname in picked:
        table[iname] = {c: float(np.median(raw[(iname, c)])) for c in cands}
        print(f"  {iname}: " + ", ".join(f"{c} {v:.3f}" for c, v in table[iname].items()))
    return table


def predict_cost(bundle: Path, imgs: dict[str, np.ndarray], data: Path, rounds: int) -> dict[str, Any]:
    """Classifier.predict_batch (decode, preprocess, inference) per image with the bundle's spec native, then
    portable, interleaved: the share of predict's time that portable numerics add."""
    import cv2

    from edgecls.runtime import Classifier

    jpeg = cv2.imencode(".jpg", imgs["jpeg-1024x768"], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    photos = [p.read_bytes() for p in sorted((data / "valid" / "images").glob("*.jpg"))[:32]]
    sets = {"jpeg-1024x768": [jpeg] * 32, "frame-640x480": [imgs["frame-640x480"]] * 32,
            "aquarium JPEGs": photos}
    out: dict[str, Any] = {}
    with Classifier(bundle) as clf:
        base = clf.spec
        out["artifact"], out["backend"] = clf.artifact.name, clf.backend.name
        for interp in ("cubic", "linear"):
            raw: dict[tuple[str, str], list[float]] = {}
            for _ in range(rounds):
                for sname, batch in sets.items():
                    for mode in ("native", "portable"):
                        clf.spec = base.replace(interpolation=interp, resize_numerics=mode)
                        start = time.perf_counter()
                        clf.predict_batch(batch, batch_size=32)
                        raw.setdefault((sname, mode), []).append((time.perf_counter() - start) / len(batch) * 1e3)
            for sname in sets:
                n, p = (float(np.median(raw[(sname, m)])) for m in ("native", "portable"))
                out[f"{interp} {sname}"] = {"native_ms": n, "portable_ms": p, "added": p / n - 1}
                print(f"  predict_batch {interp:<6} {sname:<16} native {n:.2f} ms/img, portable {p:.2f} "
                      f"({(p / n - 1) * 100:+.1f}%)")
        clf.spec = base
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="the aquarium dataset (its valid/images)")
    ap.add_argument("--bundle", type=Path, help="a bundle with an FP32 onnx artifact (model-level |dp|, predict cost)")
    ap.add_argument("--arm", action="store_true", help="run the candidates in the arm64 root too (root needed)")
    ap.add_argument("--qemu-cpu", default="cortex-a76")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--out", type=Path, help="write the report here (JSON)")
    ap.add_argument("--emit", nargs=2, type=Path, metavar=("INPUTS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.emit:
        emit(*args.emit)
        return 0
    if args.data is None:
        ap.error("--data is required")
    import tempfile

    report: dict[str, Any] = {}
    imgs = make_inputs(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        inputs, x86 = Path(tmp) / "inputs.npz", Path(tmp) / "x86.npz"
        np.savez(inputs, **imgs)
        emit(inputs, x86)
        if args.arm:
            arm, said = run_on_arm(inputs, args.qemu_cpu)
            report["arm"] = said
            report["arm_vs_x86"] = compare(arm, x86)
            print(f"ARM ({args.qemu_cpu}, {said}) vs x86, {len(imgs)} images:")
            for c, r in report["arm_vs_x86"].items():
                print(f"  {c:<40} {r['differ']:>7} of {r['values']} values differ ({r['share']:.3%}), "
                      f"max {r['max_levels']:.3g} levels")
            if args.bundle:
                report["model_max_dp"] = model_dp(args.bundle, arm, x86)
                for c, v in report["model_max_dp"].items():
                    print(f"  FP32 max |dp| {c:<40} {v:.2e}")
    if not args.no_timing:
        report["x86_resize_ms"] = timings(imgs, args.rounds)
        if args.bundle:
            report["predict_cost"] = predict_cost(args.bundle, imgs, args.data, max(3, args.rounds // 2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
