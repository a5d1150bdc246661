"""Benchmark a bundle: every artifact on every backend that runs here, speed and accuracy side by side.

``run(BenchConfig(bundle=...))`` measures, for each artifact x backend x device (x inference precision, for OpenVINO
float IRs) this machine can run, plus PyTorch rows built from the bundle's source checkpoint when torch is installed:
load time, batch-1 latency percentiles, throughput at each batch size, peak RSS, file size, mAP and F1 at the
artifact's thresholds on a data split, speed-up against PyTorch eager FP32, and achieved GOP/s against this CPU's
estimated peak. Each row runs in a fresh interpreter with a fixed thread count (``isolate``), all rows in one run so
their ratios hold on a noisy machine. With ``targets`` (a file such as ``benchmarks/targets.yaml``) the run also
judges speed targets; without one it only reports.

    from edgecls.bench import BenchConfig, run
    result = run(BenchConfig(bundle="bundles/lite0", data="data.yaml", targets="benchmarks/targets.yaml"))
    print(result.table())
    print(compare(result.to_dict(), load_baseline("bench.json"), baseline="bench.json").table())

Modules: ``config`` (``BenchConfig``), ``plan`` (which rows run here), ``inputs`` (the images they are timed and
scored on), ``runner`` (``run``: the rounds, the rows and the figures derived from them), ``results`` (``BenchRow``,
``BenchResult``), ``targets`` (the kinds of speed target and their file); ``_worker`` times one row, ``_machine``
reads the CPU and its peak, ``_report`` writes the table and chart, ``_compare`` compares with a stored run.
"""

from edgecls.bench._compare import Comparison, RowDiff, check_tolerances, compare, load_baseline
from edgecls.bench._machine import CpuShare, Machine, Peak
from edgecls.bench._worker import PYTORCH, TORCH_VARIANTS
from edgecls.bench.config import BenchConfig
from edgecls.bench.results import BenchResult, BenchRow
from edgecls.bench.runner import run
from edgecls.bench.targets import DEFAULT_MAX_BUSY, KINDS, Check, Target, check_targets, load_targets

__all__ = ["DEFAULT_MAX_BUSY", "KINDS", "PYTORCH", "TORCH_VARIANTS", "BenchConfig", "BenchResult", "BenchRow", "Check",
           "Comparison", "CpuShare", "Machine", "Peak", "RowDiff", "Target", "check_targets", "check_tolerances",
           "compare", "load_baseline", "load_targets", "run"]
