"""TensorRT targets: ``tensorrt`` (FP16 engine from the FP32 ONNX) and ``tensorrt-int8`` (INT8 engine from a Q/DQ
ONNX with symmetric int8 activations: explicit quantization, no calibrator).

An engine only builds on an NVIDIA GPU and only runs on the GPU model and TensorRT version that built it. So each
target writes the portable part first: ``model.onnx`` (the graph the engine is built from) and ``engine.json``
(build settings: precision, the batch profile 1..max_batch, workspace; plus, once built, the GPU name, compute
capability and TensorRT version; never a header inside the engine file). Where TensorRT and a GPU are present the
engine is built too (``model.engine``, with the runtime's :func:`edgecls.runtime.backends.tensorrt.build_engine`);
elsewhere the bundle says how to build it on the device, and ``require_engine`` turns that into an error.

TensorRT API notes (10.x): networks are explicit-batch (``create_network(0)``); a Q/DQ network is built with the
INT8 flag (and FP16 so the float layers may use it) or, from 10.12 on, as a strongly typed network; TensorRT 11
removed the FP16/INT8 builder flags (strong typing only), so there an FP16 engine needs an FP16 ONNX. The INT8
calibrator classes are deprecated since 10.1 in favour of explicit quantization, which is what this uses.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecls.bundle import ENGINE_SETTINGS_NAME
from edgecls.errors import UnsupportedOption
from edgecls.export.targets.registry import Built, Runner, Target, register

if TYPE_CHECKING:  # pragma: no cover
    from edgecls.export.context import ExportContext

log = logging.getLogger("edgecls.export")

ONNX_FILE = "model.onnx"
ENGINE_FILE = "model.engine"
BUILD_FILE = "BUILD.md"
OPT_BATCH = 16
WORKSPACE_MB = 1024


def engine_support() -> tuple[bool, str]:
    """Whether this machine can build a TensorRT engine (tensorrt installed and a CUDA GPU), and why not."""
    from edgecls._deps import has

    if not has("tensorrt"):
        return False, "TensorRT is not installed (pip install \"edgecls[tensorrt]\" on a machine with an NVIDIA GPU)"
    from edgecls.runtime.backends import probe

    status = probe("tensorrt")
    if not status.usable:
        return False, f"TensorRT cannot use a GPU here ({status.reason or 'no CUDA device'})"
    return True, ""


def _check() -> tuple[bool, str]:
    ok, reason = engine_support()
    if ok:
        return True, ""
    return True, f"no engine here ({reason}): the bundle gets the portable ONNX and its build settings"


def _preflight(config: Any) -> None:
    if not config.require_engine:
        return
    ok, reason = engine_support()
    if not ok:
        raise UnsupportedOption(
            f"--require-engine: cannot build a TensorRT engine on this machine: {reason}. Engines are built on the "
            "device that runs them: run the same `edgecls export ... --target tensorrt[-int8] --require-engine` "
            "there, or drop --require-engine to get the portable ONNX with build instructions"
        )


def _settings(ctx: "ExportContext", precision: str, *, pixels: bool = False) -> dict[str, Any]:
    size = ctx.img_size
    max_batch = int(ctx.config.max_batch)
    opt = min(OPT_BATCH, max_batch)

    def dims(n: int) -> list[int]:
        return [n, size, size, 3] if pixels else [n, 3, size, size]

    return {
        "precision": precision,
        "min_batch": 1,
        "opt_batch": opt,
        "max_batch": max_batch,
        "workspace_mb": WORKSPACE_MB,
        "input_name": ctx.input_name,
        "output_name": ctx.output_name,
        "shapes": {"min": dims(1), "opt": dims(opt), "max": dims(max_batch)},
        "input": "uint8 NHWC pixels (normalised in the engine)" if pixels else "float32 NCHW",
        "onnx": ONNX_FILE,
        "quantization": "explicit (Q/DQ nodes in model.onnx, symmetric int8)" if precision == "int8" else None,
    }


def trtexec_command(folder: str, settings: dict[str, Any]) -> str:
    """The trtexec line that builds the same engine as edgecls does (TensorRT 10.x, weakly typed)."""
    name = settings["input_name"]
    dims = {k: "x".join(str(d) for d in v) for k, v in settings["shapes"].items()}
    flags = "--int8 --fp16" if settings["precision"] == "int8" else "--fp16"
    return (f"trtexec --onnx={folder}/{ONNX_FILE} --saveEngine={folder}/{ENGINE_FILE} "
            f"--minShapes={name}:{dims['min']} --optShapes={name}:{dims['opt']} --maxShapes={name}:{dims['max']} "
            f"--memPoolSize=workspace:{settings['workspace_mb']}M {flags}")


def _instructions(folder: str, settings: dict[str, Any], reason: str) -> str:
    int8 = settings["precision"] == "int8"
    target = "tensorrt-int8" if int8 else "tensorrt"
    typed = ("TensorRT >= 10.12 (and 11, where the precision flags are gone): replace `--int8 --fp16` with "
             "`--stronglyTyped`; the Q/DQ nodes carry the precision." if int8 else
             "TensorRT 11 builds strongly typed networks only: an FP16 engine there needs an FP16 ONNX; with "
             "this FP32 ONNX and `--stronglyTyped` the engine runs in FP32.")
    return "\n".join([
        f"# Building the {target} engine",
        "",
        f"No engine was built with this bundle: {reason}.",
        "A TensorRT engine only runs on the GPU model and TensorRT version that built it, so build it on the device.",
        f"`{folder}/{ONNX_FILE}` is the graph to build from and `{folder}/{ENGINE_SETTINGS_NAME}` holds the settings "
        f"(precision {settings['precision']}, batch {settings['min_batch']}..{settings['max_batch']}, "
        f"optimised for {settings['opt_batch']}).",
        "",
        "1. With edgecls on the device (`pip install \"edgecls[tensorrt]\"`): `edgecls parity BUNDLE DATA` builds the "
        "engine from these two files on first use (cached under ~/.cache/edgecls/tensorrt), measures it against "
        "the stored PyTorch reference and updates parity.json; `edgecls run` uses the same cache.",
        f"2. Or re-export there: `edgecls export CKPT --target {target} --data DATA --out BUNDLE --require-engine` "
        f"writes `{folder}/{ENGINE_FILE}` and the GPU details into `{folder}/{ENGINE_SETTINGS_NAME}`.",
        "3. Or with trtexec (TensorRT 10.x):",
        "",
        f"       {trtexec_command(folder, settings)}",
        "",
        f"   {typed}",
        "",
    ])


def _symmetric_int8_onnx(ctx: "ExportContext") -> tuple[Path, dict[str, Any]]:
    """The Q/DQ ONNX with symmetric int8 activations TensorRT builds from, made once per export (``tensorrt-int8``
    and ``tensorrt-int8-u8`` both start from it)."""
    from edgecls.export.targets.onnx import float_onnx, quantize_qdq

    def make() -> tuple[Path, dict[str, Any]]:
        path = ctx.workdir / "int8-symmetric.onnx"
        return path, quantize_qdq(float_onnx(ctx)[0], path, ctx.calibration().images, input_name=ctx.input_name,
                                  symmetric_activations=True, reduce_range=False, workdir=ctx.workdir)

    return ctx.once("symmetric_int8_onnx", make)


def _build(ctx: "ExportContext", folder: Path, *, int8: bool, pixels: bool = False) -> Built:
    from edgecls._io import write_json
    from edgecls.export.targets.onnx import add_pixel_input, float_onnx
    from edgecls.preprocess import FLOAT_INPUT, PIXELS_BGR

    src, float_details = float_onnx(ctx)
    onnx_path = folder / ONNX_FILE
    details: dict[str, Any] = {"opset": float_details["opset"]}
    calibration = None
    if int8:
        quantized, how = _symmetric_int8_onnx(ctx)
        shutil.copyfile(quantized, onnx_path)
        details.update(how)
        calibration = ctx.calibration().summary(method="minmax (onnxruntime quantize_static, symmetric activations)")
    else:
        shutil.copyfile(src, onnx_path)
    kind = FLOAT_INPUT
    if pixels:  # before any engine is built: the engine normalises the uint8 pixels itself
        kind = PIXELS_BGR
        details.update(add_pixel_input(onnx_path, ctx.preprocess, kind=kind))
    settings = _settings(ctx, "int8" if int8 else "fp16", pixels=pixels)
    ok, reason = engine_support()
    notes: list[str] = []
    path = f"{folder.name}/{ONNX_FILE}"
    if ok:
        from edgecls.runtime.backends import probe
        from edgecls.runtime.backends.tensorrt import build_engine

        status = probe("tensorrt")
        gpu = status.details.get(status.devices[0], {})
        runtime_settings = {k: settings[k] for k in ("min_batch", "opt_batch", "max_batch", "workspace_mb")}
        runtime_settings["precision"] = "int8" if int8 else "f16"
        (folder / ENGINE_FILE).write_bytes(build_engine(onnx_path, runtime_settings))
        cc = tuple(gpu.get("cc", (0, 0)))
        settings.update({"engine": ENGINE_FILE, "built": True, "gpu": gpu.get("name"),
                         "compute_capability": f"{cc[0]}.{cc[1]}", "tensorrt": status.version})
        path = f"{folder.name}/{ENGINE_FILE}"
        details["engine_built"] = True
    else:
        settings.update({"engine": None, "built": False, "gpu": None, "compute_capability": None, "tensorrt": None,
                         "not_built_because": reason})
        (folder / BUILD_FILE).write_text(_instructions(folder.name, settings, reason), encoding="utf-8")
        details["engine_built"] = False
        notes.append(f"{folder.name}: no TensorRT engine built here ({reason}); the bundle has {folder.name}/"
                     f"{ONNX_FILE} and {folder.name}/{ENGINE_SETTINGS_NAME}. Build it on the device with `edgecls "
                     f"parity BUNDLE DATA` there, or: {trtexec_command(folder.name, settings)} (see {folder.name}/"
                     f"{BUILD_FILE})")
    settings["trtexec"] = trtexec_command(folder.name, settings)
    write_json(folder / ENGINE_SETTINGS_NAME, settings)
    details["onnx"] = f"{folder.name}/{ONNX_FILE}"
    details["file_precision"] = "int8" if int8 else "fp32"
    details["settings"] = f"{folder.name}/{ENGINE_SETTINGS_NAME}"

    def finalize(model_path: Path, metadata: dict[str, str]) -> None:
        from edgecls.export.targets.onnx import write_metadata

        write_metadata(onnx_path, metadata)  # the portable ONNX carries the metadata; the engine has none

    return Built(path=path, precision="int8" if int8 else "fp16", parent="onnx", calibration=calibration,
                 details=details, notes=notes, finalize=finalize, input=kind)


def _build_fp16(ctx: "ExportContext", folder: Path) -> Built:
    return _build(ctx, folder, int8=False)


def _build_int8(ctx: "ExportContext", folder: Path) -> Built:
    return _build(ctx, folder, int8=True)


def _build_fp16_pixels(ctx: "ExportContext", folder: Path) -> Built:
    return _build(ctx, folder, int8=False, pixels=True)


def _build_int8_pixels(ctx: "ExportContext", folder: Path) -> Built:
    return _build(ctx, folder, int8=True, pixels=True)


def _runner(artifact: Any, bundle: Path) -> tuple[Runner | None, str]:
    """The engine where this machine has TensorRT and a GPU, else the portable ONNX on ONNX Runtime's CPU."""
    import json

    details = artifact.details or {}
    onnx_rel = details.get("onnx", artifact.path)
    ok, reason = engine_support()
    if ok:
        from edgecls.runtime.backends import probe

        status = probe("tensorrt")
        gpu = status.details.get(status.devices[0], {}).get("name")
        settings_path = bundle / details.get("settings", "")
        built: dict[str, Any] = {}
        if settings_path.is_file():
            built = json.loads(settings_path.read_text(encoding="utf-8"))
        if artifact.path.endswith(".engine") and (built.get("gpu"), built.get("tensorrt")) == (gpu, status.version):
            return Runner("tensorrt", None, None, artifact.path), ""
        return Runner("tensorrt", None, None, onnx_rel), ""
    from edgecls.runtime.backends import probe

    if not probe("onnxruntime").installed:
        return None, f"{reason}; and onnxruntime is not installed to check the portable ONNX"
    # The Q/DQ ONNX stands in for an INT8 engine: run it by its definition, as TensorRT's int32 accumulation does,
    # not through this CPU's fused int8 kernels (which saturate on x86 without VNNI).
    return Runner("onnxruntime", "cpu", None, onnx_rel, emulate_qdq=artifact.precision == "int8"), ""


_REQUIRES = ("torch", "onnx", "onnxscript", "onnxslim")

TENSORRT = register(Target(
    name="tensorrt",
    format="tensorrt",
    suffix=".engine",
    extra="tensorrt",
    precision="fp16",
    options=frozenset({"opset", "max_batch", "fp16_tolerance", "fp16_min_agreement", "fp16_max_map_drop",
                       "fp32_tolerance", "require_engine"}),
    doc="TensorRT FP16 engine built from the FP32 ONNX with an optimization profile for batch 1..max_batch and "
        "an engine.json sidecar (GPU, compute capability, TensorRT version, precision, shapes). Without an NVIDIA "
        "GPU here: the portable ONNX, engine.json build settings and BUILD.md instructions (parity of the ONNX "
        "measured with onnxruntime).",
    requires=_REQUIRES,
    build=_build_fp16,
    runner=_runner,
    check=_check,
    preflight=_preflight,
))

TENSORRT_INT8 = register(Target(
    name="tensorrt-int8",
    format="tensorrt",
    suffix=".engine",
    extra="tensorrt",
    precision="int8",
    options=frozenset({"opset", "max_batch", "calib_split", "calib_size", "max_map_drop", "int8_min_agreement",
                       "int8_fixes", "qat_epochs", "require_engine"}),
    doc="TensorRT INT8 engine by explicit quantization: a Q/DQ ONNX with int8 per-channel symmetric weights and "
        "symmetric int8 activations (zero point 0) calibrated on real images; the head stays float; no deprecated "
        "INT8 calibrator. Without an NVIDIA GPU here: that ONNX, engine.json and BUILD.md (its INT8 parity "
        "measured with onnxruntime).",
    requires=(*_REQUIRES, "onnxruntime"),
    build=_build_int8,
    runner=_runner,
    check=_check,
    preflight=_preflight,
))


def _pixel_variant(target: Target, build: Any) -> Target:
    from edgecls.export.targets.onnx import pixel_variant

    return pixel_variant(target, build)


TENSORRT_U8 = register(_pixel_variant(TENSORRT, _build_fp16_pixels))
TENSORRT_INT8_U8 = register(_pixel_variant(TENSORRT_INT8, _build_int8_pixels))
