"""The benchmark's table (terminal and Markdown) with the verdicts of its speed targets, and its bar chart."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgecls.bench.results import BenchResult

LEGEND = ("p50/p90/p99: batch-1 latency; +-%: half the range of the rounds' p50 over their median; "
          "img/s bN: throughput at batch N; RSS: the row's peak resident memory; "
          "dmAP: this row's mAP minus PyTorch's on the same images; parity: the export's verdict, and dmAP within the "
          "bundle's mAP budget here; x eager: batch-1 speed-up over PyTorch eager FP32; GOP/s: 2 x multiply-adds x "
          "best img/s; % peak: of the CPU's estimated peak at that precision; % roof: best img/s of the model's "
          "roofline bound at that precision and batch (each layer at the rate of the unit that runs it, bytes at the "
          "measured triad bandwidth), bound: which side dominates it")
NO_TARGETS = "none judged: no --targets file given (the bench only reports the rows)"
_KEY_LIBS = ("edgecls", "python", "numpy", "onnxruntime", "openvino", "torch", "tensorrt", "coremltools",
             "ai_edge_litert")


# ---------------------------------------------------------------------------------------------------------------------
# text


def _num(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _columns(result: BenchResult) -> list[tuple[str, Any]]:
    cols: list[tuple[str, Any]] = [
        ("row", lambda r: r.label),
        ("prec", lambda r: r.precision),
        ("p50 ms", lambda r: _num(r.latency_ms.get("p50"), ".2f")),
        ("p90 ms", lambda r: _num(r.latency_ms.get("p90"), ".2f")),
        ("p99 ms", lambda r: _num(r.latency_ms.get("p99"), ".2f")),
    ]
    if result.config.rounds > 1:
        cols.append(("+-%", lambda r: _num(None if r.spread is None else 100 * r.spread, ".0f")))
    for b in result.config.batch:
        cols.append((f"img/s b{b}", lambda r, b=b: _num(r.throughput.get(b), ".1f")))
    cols += [
        ("load s", lambda r: _num(r.load_seconds, ".2f")),
        ("RSS MB", lambda r: _num(r.peak_rss_mb, ".0f")),
        ("size MB", lambda r: _num(r.size_mb, ".2f")),
        ("mAP", lambda r: _num(r.map, ".4f")),
        ("dmAP", lambda r: _num(None if r.map_drop is None else 0.0 - r.map_drop + 0.0, "+.4f")),
        ("parity", lambda r: {True: "ok", False: "FAIL", None: "-"}[r.parity_passed]),
        ("F1 mi", lambda r: _num(r.f1_micro, ".3f")),
        ("F1 ma", lambda r: _num(r.f1_macro, ".3f")),
        ("x eager", lambda r: _num(r.speedup, ".2f")),
        ("GOP/s", lambda r: _num(r.gops, ".1f")),
        ("% peak", lambda r: _num(None if r.peak_fraction is None else 100 * r.peak_fraction, ".1f")),
        ("% roof", lambda r: _num(None if r.roofline_fraction is None else 100 * r.roofline_fraction, ".1f")),
        ("bound", lambda r: r.roofline_bound or "-"),
    ]
    return cols


def _cells(result: BenchResult) -> tuple[list[str], list[list[str]]]:
    cols = _columns(result)
    header = [name for name, _ in cols]
    body = []
    for r in result.rows:
        if r.ok:
            body.append([str(get(r)) for _, get in cols])
        else:
            body.append([r.label, r.precision or "-", f"FAILED: {r.error}"] + [""] * (len(cols) - 3))
    return header, body


def _preamble(result: BenchResult) -> list[str]:
    m, p = result.machine, result.peak
    where = "its own process" if result.config.isolate else "this process"
    libs = ", ".join(f"{k} {result.versions[k]}" for k in _KEY_LIBS if k in result.versions)
    lines = [
        f"bundle: {result.bundle}   ({result.created})",
        f"machine: {m.summary()}",
        f"threads: {result.config.thread_count} per engine; warm-up {result.config.warmup}, {result.config.iters} "
        f"timed batch-1 calls (monotonic clock), each row in {where}"
        + (f"; medians of {result.config.rounds} interleaved rounds" if result.config.rounds > 1 else ""),
        f"peak estimate: FP32 {p.fp32_gflops:.0f} GFLOP/s, BF16 {_num(p.bf16_gflops, '.0f')} GFLOP/s, INT8 "
        f"{p.int8_gops:.0f} GOP/s = {p.assumption}; measured numpy FP32 GEMM: {result.gemm_gflops:.0f} GFLOP/s",
        *(["measured vector units (micro-kernels, all threads): "
           + ", ".join(f"{k} {v:.0f} GOP/s" for k, v in result.vector_rates["kernels"].items())]
          if result.vector_rates else []),
        f"model: {_num(None if result.macs is None else result.macs / 1e6, '.1f')} M multiply-adds per image",
        *([f"memory: STREAM-style triad {result.bandwidth['dram_gbs']:.1f} GB/s (DRAM), "
           f"{result.bandwidth['cache_gbs']:.1f} GB/s within the {result.bandwidth['cache_bytes'] / 2**20:.0f} MiB "
           f"last-level cache, {result.bandwidth['threads']} threads"] if result.bandwidth else []),
        *[f"roofline {key}: {bound['summary']}" for key, bound in sorted(result.rooflines.items())],
        *([f"load average (1 min) before/after: {result.load_average[0]:.2f} / {result.load_average[1]:.2f} "
           "(the benchmark's own threads count in it)"] if result.load_average else []),
        *([result.cpu_share.summary() + (" - others took CPU time from these rows: compare ratios within this run, "
                                         "not absolute times" if result.cpu_share.disturbed else "")]
          if result.cpu_share else []),
        f"libraries: {libs}",
    ]
    if result.data:
        d = result.data
        lines.append(f"accuracy on: {d['data']} split {d['split']} ({d['images']} images, at each artifact's "
                     f"thresholds)")
    else:
        lines.append("accuracy: not measured (no --data); timing on random inputs")
    return lines


def format_table(result: BenchResult) -> str:
    header, body = _cells(result)
    widths = [max(len(row[i]) for row in [header] + [b for b in body if len(b) > i]) for i in range(len(header))]
    widths[2] = min(widths[2], 12)

    def line(cells: list[str]) -> str:
        if cells and cells[2].startswith("FAILED"):
            return f"{cells[0]:<{widths[0]}}  {cells[1]:<{widths[1]}}  {cells[2]}"
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = _preamble(result) + ["", line(header), line(["-" * w for w in widths])] + [line(b) for b in body]
    out += ["", LEGEND]
    if result.not_run:
        out += ["", "not run here:"] + [f"  {row}: {why}" for row, why in result.not_run]
    out += ["", "targets:"] + ([f"  {c.line()}" for c in result.checks] if result.config.targets else
                               [f"  {NO_TARGETS}"])
    return "\n".join(out)


def format_markdown(result: BenchResult) -> str:
    header, body = _cells(result)
    rule = "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"
    out = [f"- {line}" for line in _preamble(result)] + ["", "| " + " | ".join(header) + " |", rule]
    out += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in body]
    out += ["", LEGEND]
    if result.not_run:
        out += ["", "Not run here: " + "; ".join(f"{row}: {why}" for row, why in result.not_run)]
    out += ["", "| target | measured | goal | verdict | detail |", "|---|---:|---|---|---|"]
    if not result.config.targets:
        return "\n".join(out + [f"| {NO_TARGETS} | - | - | - | - |"]) + "\n"
    verdicts = {True: "pass", False: "miss", None: "n/a"}
    out += [f"| {c.name} | {_num(c.value, '.2f')} | {c.target} | "
            f"{verdicts[c.passed] if c.busy is None else f'not judged: machine busy ({100 * c.busy:.0f}%)'} | "
            f"{c.detail} |" for c in result.checks]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# chart


def plot_rows(result: BenchResult, path: Path) -> Path:
    """A horizontal bar chart of batch-1 p50 latency per row, each bar annotated with its mAP and speed-up."""
    from edgecls._deps import require
    from edgecls._io import atomic_save

    matplotlib = require("matplotlib", extra="train")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result.rows if r.ok and r.p50]
    colors = {"pytorch": "#d62728", "onnxruntime": "#1f77b4", "openvino": "#2ca02c", "tensorrt": "#9467bd",
              "coreml": "#8c564b", "litert": "#ff7f0e"}
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.6))
    y = range(len(rows))
    ax.barh(list(y), [r.p50 for r in rows], color=[colors.get(r.backend, "#7f7f7f") for r in rows])
    ax.set_yticks(list(y), [r.label for r in rows], fontsize=8)
    ax.invert_yaxis()
    top = max((r.p50 for r in rows), default=1.0)
    low = min((r.p50 for r in rows), default=1.0)
    log_scale = top / low > 20  # a PyTorch eager bar would otherwise flatten every engine's bar to nothing
    for i, r in enumerate(rows):
        note = f"{r.p50:.2f} ms"
        if r.map is not None:
            note += f"  mAP {r.map:.3f}"
        if r.speedup is not None:
            note += f"  {r.speedup:.1f}x"
        ax.text(r.p50 * 1.08 if log_scale else r.p50 + top * 0.01, i, note, va="center", fontsize=8)
    if log_scale:
        ax.set_xscale("log")
        ax.set_xlim(low * 0.5, top * 12)
    else:
        ax.set_xlim(0, top * 1.45)
    ax.set_xlabel(f"batch-1 latency, p50 (ms{', log scale' if log_scale else ''}), "
                  f"{result.config.thread_count} threads")
    ax.set_title(f"{result.bundle.resolve().name}: {result.machine.cpu}", fontsize=10)
    fig.tight_layout()
    try:
        return atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)
