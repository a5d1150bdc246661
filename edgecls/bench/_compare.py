"""Compare a benchmark run with a stored one (``edgecls bench --baseline FILE``): does it match within noise?

Rows are matched by label. Speed is judged per row on batch-1 p50 latency and on the time per image at every larger
batch size both runs measured: a row whose time grew by more than ``tolerance`` is *slower*, one whose time shrank
by more than that is *faster* (the stored figures are stale). Speed is only judged when both runs used the same CPU,
ISA and thread count; otherwise only accuracy is. Accuracy: mAP within ``map_tolerance`` and the same parity verdict.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecls.bench._report import _num
from edgecls.errors import ConfigError

# a row's status, and whether it makes the comparison fail
FAILING = ("slower", "accuracy", "missing", "failed")
STATUSES = ("ok", "faster", "new", *FAILING)


@dataclass(frozen=True)
class RowDiff:
    """One row of the run against the same row of the baseline."""

    label: str
    status: str  # one of STATUSES
    p50_ratio: float | None = None  # this run's batch-1 p50 / the baseline's (> 1: slower)
    time_ratios: dict[int, float] = field(default_factory=dict)  # batch > 1 -> time per image, this run / baseline
    map_delta: float | None = None  # this run's mAP minus the baseline's
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["time_ratios"] = {str(k): v for k, v in self.time_ratios.items()}
        return data


@dataclass(frozen=True)
class Comparison:
    """Every row of a run against a stored run, and whether they agree within the tolerances."""

    baseline: str
    baseline_created: str
    speed_judged: bool
    machine_note: str
    tolerance: float
    map_tolerance: float
    rows: tuple[RowDiff, ...]

    @property
    def passed(self) -> bool:
        return not any(r.status in FAILING for r in self.rows)

    @property
    def failures(self) -> list[RowDiff]:
        return [r for r in self.rows if r.status in FAILING]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rows"] = [r.to_dict() for r in self.rows]
        data["passed"] = self.passed
        return data

    def table(self) -> str:
        batches = sorted({b for r in self.rows for b in r.time_ratios})
        header = ["row", "status", "p50 x", *[f"t/img b{b} x" for b in batches], "dmAP", "detail"]
        body = []
        for r in self.rows:
            body.append([r.label, r.status.upper() if r.status in FAILING else r.status, _num(r.p50_ratio, ".2f"),
                         *[_num(r.time_ratios.get(b), ".2f") for b in batches], _num(r.map_delta, "+.4f"), r.detail])
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header) - 1)]

        def line(cells: list[str]) -> str:
            return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) \
                + "  " + cells[-1]

        counts = {s: sum(r.status == s for r in self.rows) for s in STATUSES}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        out = [f"against {self.baseline} ({self.baseline_created}): {self.machine_note}",
               f"tolerance: time within x{1 + self.tolerance:.2f} either way, |dmAP| <= {self.map_tolerance:g}; "
               "ratios are this run / the baseline (> 1: slower)",
               "", line(header), line(["-" * w for w in widths] + ["-" * 6]), *[line(b) for b in body], "",
               f"{'MATCHES' if self.passed else 'DIFFERS'}: {summary}"]
        return "\n".join(out)


def check_tolerances(tolerance: float, map_tolerance: float) -> None:
    """Refuse tolerances that cannot be meant (before a long benchmark starts)."""
    if not tolerance > 0:
        raise ConfigError(f"--tolerance must be positive (0.25 accepts x0.8 to x1.25), got {tolerance!r}")
    if not map_tolerance >= 0:
        raise ConfigError(f"--map-tolerance must be >= 0 (e.g. 0.002), got {map_tolerance!r}")


def load_baseline(path: str | Path) -> dict[str, Any]:
    """A stored ``edgecls bench --json`` file; a clear error when it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--baseline {path}: cannot read it ({exc.strerror or exc}); give an "
                          "`edgecls bench --json` file") from None
    except ValueError as exc:
        raise ConfigError(f"--baseline {path}: not JSON ({exc}); give an `edgecls bench --json` file") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or "machine" not in data:
        raise ConfigError(f"--baseline {path}: not an `edgecls bench --json` file (no rows and machine); write one "
                          "with `edgecls bench BUNDLE --json FILE`")
    return data


def _machine_key(run: dict[str, Any]) -> tuple[Any, ...]:
    m = run.get("machine", {})
    return (m.get("cpu"), m.get("family"), tuple(m.get("isa", ())), run.get("config", {}).get("threads"))


def _machine_note(new: dict[str, Any], old: dict[str, Any]) -> tuple[bool, str]:
    if _machine_key(new) != _machine_key(old):
        def desc(run: dict[str, Any]) -> str:
            m = run.get("machine", {})
            return (f"{m.get('cpu')} family {m.get('family')} [{' '.join(m.get('isa', ()))}], "
                    f"{run.get('config', {}).get('threads')} threads")

        return False, f"other machine or threads ({desc(new)} vs {desc(old)}): speed not judged, accuracy only"
    libs = [k for k in ("onnxruntime", "openvino", "torch", "numpy")
            if new.get("versions", {}).get(k) != old.get("versions", {}).get(k)]
    note = "same CPU, ISA and threads"
    if libs:
        note += "; library versions differ: " + ", ".join(
            f"{k} {old.get('versions', {}).get(k)} -> {new.get('versions', {}).get(k)}" for k in libs)
    return True, note


def _ratios(new: dict[str, Any], old: dict[str, Any]) -> tuple[float | None, dict[int, float]]:
    p50 = old.get("latency_ms", {}).get("p50"), new.get("latency_ms", {}).get("p50")
    p50_ratio = round(p50[1] / p50[0], 3) if p50[0] and p50[1] else None
    old_tp = {int(k): v for k, v in (old.get("throughput") or {}).items()}
    new_tp = {int(k): v for k, v in (new.get("throughput") or {}).items()}
    # batch 1's throughput is the inverse of the same median as p50: its ratio would repeat p50's
    times = {b: round(old_tp[b] / new_tp[b], 3) for b in sorted(set(old_tp) & set(new_tp))
             if b != 1 and old_tp[b] and new_tp[b]}
    return p50_ratio, times


def _diff(label: str, new: dict[str, Any], old: dict[str, Any], *, speed: bool, tolerance: float,
          map_tolerance: float) -> RowDiff:
    if new.get("error"):
        return RowDiff(label, "failed", detail=f"failed in this run: {str(new['error'])[:200]}")
    if old.get("error"):
        return RowDiff(label, "new", detail="failed in the baseline, runs now")
    p50_ratio, times = _ratios(new, old)
    delta = None
    if new.get("map") is not None and old.get("map") is not None:
        delta = round(float(new["map"]) - float(old["map"]), 4)
    why = []
    if delta is not None and abs(delta) > map_tolerance:
        why.append(f"mAP {old['map']:.4f} -> {new['map']:.4f}")
    if old.get("parity_passed") is not None and new.get("parity_passed") != old.get("parity_passed"):
        why.append(f"parity {old['parity_passed']} -> {new.get('parity_passed')}")
    if why:
        return RowDiff(label, "accuracy", p50_ratio, times, delta, "; ".join(why))
    if not speed:
        return RowDiff(label, "ok", p50_ratio, times, delta, "accuracy matches")
    judged = {"p50": p50_ratio, **{f"b{b}": t for b, t in times.items()}}
    judged = {k: v for k, v in judged.items() if v is not None}
    slow = {k: v for k, v in judged.items() if v > 1 + tolerance}
    fast = {k: v for k, v in judged.items() if v < 1 / (1 + tolerance)}
    if slow:
        return RowDiff(label, "slower", p50_ratio, times, delta,
                       "slower at " + ", ".join(f"{k} x{v:.2f}" for k, v in slow.items()))
    if fast:
        return RowDiff(label, "faster", p50_ratio, times, delta,
                       "faster at " + ", ".join(f"{k} x{v:.2f}" for k, v in fast.items()) + "; refresh the baseline")
    return RowDiff(label, "ok", p50_ratio, times, delta, "")


def compare(new: dict[str, Any], old: dict[str, Any], *, baseline: str = "baseline", tolerance: float = 0.25,
            map_tolerance: float = 0.002) -> Comparison:
    """Judge the run ``new`` against the stored run ``old`` (both ``BenchResult.to_dict()`` documents).

    Args:
        new: This run.
        old: The stored run, e.g. ``load_baseline(path)``.
        baseline: How to name the stored run in the report (its path).
        tolerance: Largest relative change of a row's time (batch-1 p50, time per image at each batch) that still
            counts as noise: 0.25 accepts anything between x0.8 and x1.25.
        map_tolerance: Largest |mAP change| of a row that still counts as the same accuracy.
    """
    check_tolerances(tolerance, map_tolerance)
    speed, note = _machine_note(new, old)
    new_rows = {r["label"]: r for r in new.get("rows", [])}
    old_rows = {r["label"]: r for r in old.get("rows", [])}
    rows = []
    for label, row in new_rows.items():
        if label not in old_rows:
            rows.append(RowDiff(label, "new", detail="not in the baseline"))
        else:
            rows.append(_diff(label, row, old_rows[label], speed=speed, tolerance=tolerance,
                              map_tolerance=map_tolerance))
    rows += [RowDiff(label, "missing", detail="in the baseline, not measured in this run")
             for label in old_rows if label not in new_rows]
    return Comparison(baseline=str(baseline), baseline_created=str(old.get("created", "?")), speed_judged=speed,
                      machine_note=note, tolerance=tolerance, map_tolerance=map_tolerance, rows=tuple(rows))
