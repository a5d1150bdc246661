"""ExecuTorch targets: ``executorch`` (FP32 ``.pte``) and ``executorch-int8`` (int8 weights and activations), both
lowered to the XNNPACK delegate: PyTorch's own on-device runtime for Android, iOS and embedded C++ (ARM and x86
CPUs through XNNPACK).

Both are made from the PyTorch model itself (``torch.export`` -> ``to_edge_transform_and_lower`` with the
``XnnpackPartitioner`` -> ``to_executorch``), with the NCHW float32 input and logits output every other artifact has,
at batch 1 (the program is static-shaped: a device runs it one image at a time). INT8 goes through PyTorch's PT2E
flow (torchao's ``prepare_pt2e``/``convert_pt2e``) with ExecuTorch's ``XNNPACKQuantizer``: symmetric int8,
per-channel weights, histogram-calibrated activations, calibrated on the calibration images through the shared
preprocessing like every other INT8 target.

A ``.pte`` does not run in edgecls's runtime: ExecuTorch's Python runtime (``executorch.runtime``) imports torch, and
the runtime is torch-free. The parity check therefore runs it in the exporter's environment through
``executorch.runtime.Runtime`` (:func:`execute`), and the manifest marks the artifact as one for devices
(:func:`edgecls.manifest.device_only`): ``predict``, ``run``, ``serve`` and ``bench`` never choose it, and asking for it
is a one-line error.

``executorch`` 1.5.1 installs beside torch 2.14.1, but pins ``antlr4-python3-runtime==4.9.*`` (through hydra-core
and omegaconf), which downgrades the 4.13 that ``moto[server]`` (``dev``) runs its generated parsers with: it is its
own extra, ``executorch``, outside ``all``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecls.errors import EdgeclsError
from edgecls.export.targets.registry import Built, Runner, Target, register

if TYPE_CHECKING:  # pragma: no cover
    from edgecls.export.context import ExportContext

log = logging.getLogger("edgecls.export")

MODEL_FILE = "model.pte"
BACKEND = "executorch"
_REQUIRES = ("torch", "executorch")
_DELEGATE = "XnnpackBackend"


def _executorch_runner(artifact: Any, bundle: Path) -> tuple[Runner | None, str]:
    from edgecls._deps import has

    missing = [m for m in _REQUIRES if not has(m)]
    if missing:
        return None, (f"{', '.join(missing)} not installed: the .pte is checked through ExecuTorch's Python runtime "
                      'in the exporter\'s environment (pip install "edgecls[executorch]")')
    return Runner(BACKEND, "cpu", "int8" if artifact.precision == "int8" else "f32", artifact.path), ""


def execute(model_path: Path, images: np.ndarray, runner: Runner, *, timing_runs: int = 10) -> tuple[np.ndarray, dict]:
    """Run ``images`` one by one through the ``.pte`` on ExecuTorch's Python runtime (XNNPACK delegate, CPU).

    Returns the logits and what ran them (``name``, ``device``, ``precision``, ``latency_ms`` ...), as
    :func:`edgecls.export.parity.run_backend` does for the runtime's backends.
    """
    import torch
    from executorch.runtime import Runtime

    from edgecls.export.parity import time_backend

    runtime = Runtime.get()
    if not runtime.backend_registry.is_available(_DELEGATE):
        raise EdgeclsError(f"ExecuTorch's runtime here has no {_DELEGATE} (registered: "
                           f"{', '.join(runtime.backend_registry.registered_backend_names) or 'none'})")
    method = runtime.load_program(Path(model_path)).load_method("forward")
    if method is None:
        raise EdgeclsError(f"{model_path}: the ExecuTorch program has no forward method")

    def infer(x: np.ndarray) -> np.ndarray:
        outs = [method.execute([torch.from_numpy(np.ascontiguousarray(x[i : i + 1]))])[0] for i in range(len(x))]
        return torch.cat(outs).float().numpy() if outs else np.zeros((0, 0), np.float32)

    logits = infer(images).astype(np.float32)
    p50, p90 = time_backend(infer, images[:1], runs=timing_runs, p90=True) if timing_runs else (None, None)
    import importlib.metadata

    info = {"name": BACKEND, "device": "cpu", "precision": runner.precision_hint or "f32", "delegate": "XNNPACK",
            "executorch": importlib.metadata.version("executorch"), "latency_ms": p50, "latency_p90_ms": p90}
    return logits, info


def _sample(ctx: "ExportContext") -> Any:
    import torch

    return (torch.zeros(1, 3, ctx.img_size, ctx.img_size),)


def _lower(program: Any, folder: Path) -> dict[str, Any]:
    """Lower an exported program to XNNPACK, write the ``.pte`` and say how much of the graph was delegated."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    start = time.perf_counter()
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    graph = edge.exported_program().graph
    calls = [n for n in graph.nodes if n.op == "call_function"]
    delegated = sum("executorch_call_delegate" in str(n.target) for n in calls)
    left = sorted({str(n.target) for n in calls if "executorch_call_delegate" not in str(n.target)
                   and "getitem" not in str(n.target)})
    if not delegated:
        raise EdgeclsError("the XNNPACK partitioner delegated nothing: the .pte would run on portable kernels only")
    program_manager = edge.to_executorch()
    (folder / MODEL_FILE).write_bytes(program_manager.buffer)
    return {"delegate": "XNNPACK (XnnpackPartitioner)", "delegate_calls": delegated, "not_delegated": left,
            "lower_s": round(time.perf_counter() - start, 1)}


def _details(**more: Any) -> dict[str, Any]:
    import importlib.metadata

    return {"converter": "torch.export -> executorch.exir.to_edge_transform_and_lower -> to_executorch",
            "layout": "NCHW input", "batch": 1, "edgecls_runtime": False,
            "executorch": importlib.metadata.version("executorch"),
            "runs_on": "ExecuTorch's runtime (Android, iOS, embedded C++; executorch.runtime in Python), not the "
                       "edgecls runtime", **more}


def _build_executorch(ctx: "ExportContext", folder: Path) -> Built:
    import torch

    program = torch.export.export(ctx.model.eval(), _sample(ctx))
    lowered = _lower(program, folder)
    return Built(path=f"{folder.name}/{MODEL_FILE}", precision="fp32", details=_details(**lowered))


def _build_executorch_int8(ctx: "ExportContext", folder: Path) -> Built:
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    calib = ctx.calibration()
    sample = _sample(ctx)
    captured = torch.export.export(ctx.model.eval(), sample).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(captured, quantizer)
    with torch.no_grad():
        for i in range(len(calib)):
            prepared(torch.from_numpy(np.ascontiguousarray(calib.images[i : i + 1])))
    quantized = convert_pt2e(prepared)
    program = torch.export.export(quantized, sample)
    lowered = _lower(program, folder)
    details = _details(quantizer="executorch XNNPACKQuantizer (torchao prepare_pt2e/convert_pt2e)",
                       scheme="symmetric int8, per-channel weights, histogram activation ranges, float32 I/O",
                       **lowered)
    return Built(path=f"{folder.name}/{MODEL_FILE}", precision="int8", parent="executorch",
                 calibration=calib.summary(method="PT2E HistogramObserver on the calibration images"),
                 details=details)


EXECUTORCH = register(Target(
    name="executorch",
    format="executorch",
    suffix=".pte",
    extra="executorch",
    precision="fp32",
    options=frozenset({"fp32_tolerance"}),
    doc="FP32 ExecuTorch program (.pte) lowered to the XNNPACK delegate from the PyTorch model (torch.export), NCHW "
        "float32 in, logits out, batch 1; runs on-device through ExecuTorch's runtime (Android, iOS, embedded C++), "
        "not edgecls's; parity is checked with ExecuTorch's Python runtime at export.",
    requires=_REQUIRES,
    build=_build_executorch,
    runner=_executorch_runner,
    execute=execute,
))

EXECUTORCH_INT8 = register(Target(
    name="executorch-int8",
    format="executorch",
    suffix=".pte",
    extra="executorch",
    precision="int8",
    options=frozenset({"calib_split", "calib_size", "max_map_drop", "int8_min_agreement"}),
    doc="INT8 ExecuTorch program (.pte, XNNPACK delegate): int8 weights (per-channel, symmetric) and int8 "
        "activations calibrated on real images through the shared preprocessing (PT2E with ExecuTorch's "
        "XNNPACKQuantizer), float32 in and out; runs on-device through ExecuTorch's runtime, not edgecls's.",
    requires=_REQUIRES,
    build=_build_executorch_int8,
    runner=_executorch_runner,
    execute=execute,
))
