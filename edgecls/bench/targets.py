"""Speed targets: the comparisons the bench knows how to judge, and the file that says which to judge and how hard.

The library holds only the vocabulary; the thresholds and names are data about a benchmark, kept beside it (ours:
``benchmarks/targets.yaml``) and passed with ``edgecls bench --targets FILE`` (``BenchConfig.targets``). Without a
file the bench reports its rows and judges nothing. A targets file is YAML::

    targets:
      - name: fastest artifact within its parity budget vs PyTorch eager FP32
        kind: speedup_vs_pytorch
        min: 10

Every entry has a ``name`` (shown in the report; unique in the file) and a ``kind``, one of :data:`KINDS`:

``speedup_vs_pytorch``
    The fastest engine row within its parity budget against one PyTorch row (``variant``, default ``eager``), on
    batch-1 p50 latency. Keys: ``min`` (the speed-up to reach, e.g. 10 for 10x), ``variant``.
``speedup_vs_best_pytorch``
    The same against the fastest PyTorch row (any variant). Keys: ``min``.
``engine_ratio``
    The fastest row of one kind (``fast``) against the fastest row of another (``slow``), on batch-1 p50: e.g.
    OpenVINO INT8 against OpenVINO f32. ``fast`` and ``slow`` each take ``backend`` (required), ``precision``
    (required: int8, f32, f16, bf16, or ``float`` for any precision but int8) and ``device`` (optional, a prefix of
    the device the row ran on, e.g. CPU); rows that failed parity do not count. Keys: ``min``, ``fast``, ``slow``.
``peak_share``
    The best throughput at a batch >= ``min_batch`` (default 8) of the rows computing in ``precision`` (default
    int8), in GOP/s, against the CPU's peak estimate for that precision. Keys: ``min`` (a share: 0.4 = 40%),
    ``precision``, ``min_batch``.
``batching``
    Every row's throughput at its best batch >= ``min_batch`` (default 8) beats its batch-1 throughput. Keys:
    ``min_batch``. Left out of the report when the run measured no batch that large.

A target whose rows ran while other processes took more than ``BenchConfig.max_busy`` of the CPUs is not judged
(``Check.passed`` None, ``Check.busy`` set): under load a PyTorch row once took 1,676 ms against 50 ms alone, a 965x
"speed-up".
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from edgecls.bench._worker import PYTORCH, TORCH_VARIANTS
from edgecls.errors import ConfigError

if TYPE_CHECKING:
    from edgecls.bench.results import BenchResult, BenchRow

DEFAULT_MAX_BUSY = 0.10  # a target is not judged when other processes took more of the CPUs during its rows

# kind -> the keys an entry of that kind takes besides name and kind (the required ones first: see _REQUIRED)
KINDS: dict[str, tuple[str, ...]] = {
    "speedup_vs_pytorch": ("min", "variant"),
    "speedup_vs_best_pytorch": ("min",),
    "engine_ratio": ("min", "fast", "slow"),
    "peak_share": ("min", "precision", "min_batch"),
    "batching": ("min_batch",),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "speedup_vs_pytorch": ("min",),
    "speedup_vs_best_pytorch": ("min",),
    "engine_ratio": ("min", "fast", "slow"),
    "peak_share": ("min",),
    "batching": (),
}
ROW_KEYS = ("backend", "precision", "device")
PRECISIONS = ("int8", "f32", "f16", "bf16", "float")


@dataclass(frozen=True)
class RowFilter:
    """Which rows one side of an ``engine_ratio`` target compares: a backend, a precision and a device prefix."""

    backend: str
    precision: str  # one of PRECISIONS; "float": anything but int8
    device: str | None = None

    def matches(self, row: BenchRow) -> bool:
        if row.backend != self.backend or row.parity_passed is False:
            return False
        if self.precision == "float":
            if row.precision == "int8":
                return False
        elif row.precision != self.precision:
            return False
        return self.device is None or str(row.info.get("device", row.device)).upper().startswith(self.device.upper())

    def describe(self) -> str:
        return f"{self.backend} {self.precision}" + (f" on {self.device}" if self.device else "")


@dataclass(frozen=True)
class Target:
    """One entry of a targets file (see the module docstring for what each kind compares)."""

    name: str
    kind: str  # one of KINDS
    min: float | None = None
    variant: str = "eager"
    fast: RowFilter | None = None
    slow: RowFilter | None = None
    precision: str = "int8"
    min_batch: int = 8


@dataclass(frozen=True)
class Check:
    """One speed target: what was measured against what it should reach (``passed`` None: cannot be judged here).

    ``busy`` is set when the target was not judged because other processes took more than ``BenchConfig.max_busy``
    of the CPUs while one of its rows ran: the largest such share of its rows.
    """

    name: str
    target: str
    value: float | None
    passed: bool | None
    detail: str
    busy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        verdict = {True: "PASS", False: "MISS", None: "n/a "}[self.passed]
        if self.busy is not None:
            verdict = f"not judged: machine busy ({100 * self.busy:.0f}%)"
        shown = "-" if self.value is None else f"{self.value:.2f}"
        return f"[{verdict}] {self.name}: {shown} (target {self.target}); {self.detail}"


# ---------------------------------------------------------------------------------------------------------------------
# the file


def _unknown(key: Any, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(key), list(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}; valid: {', '.join(valid)}"


def _number(value: Any, key: str, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0 \
            or (integer and not float(value).is_integer()):
        what = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{key} must be {what}, got {value!r}")
    return int(value) if integer else float(value)


def _row_filter(value: Any, key: str) -> RowFilter:
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a mapping such as {{backend: openvino, precision: int8}}, got {value!r}")
    for k in value:
        if k not in ROW_KEYS:
            raise ValueError(f"{key}: {_unknown(k, ROW_KEYS)}")
    for k in ("backend", "precision"):
        if not isinstance(value.get(k), str) or not value[k]:
            raise ValueError(f"{key}: {k} is required (a name such as {'openvino' if k == 'backend' else 'int8'})")
    if value["precision"] not in PRECISIONS:
        raise ValueError(f"{key}: unknown precision {value['precision']!r}; valid: {', '.join(PRECISIONS)}")
    device = value.get("device")
    if device is not None and not isinstance(device, str):
        raise ValueError(f"{key}: device must be a name such as CPU, got {device!r}")
    return RowFilter(value["backend"], value["precision"], device)


def _target(entry: Any) -> Target:
    if not isinstance(entry, dict):
        raise ValueError(f"must be a mapping with a name and a kind, got {entry!r}")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}" if kind is not None else
                         f"kind is required; valid: {', '.join(KINDS)}")
    valid = ("name", "kind", *KINDS[kind])
    for key in entry:
        if key not in valid:
            raise ValueError(f"{kind}: {_unknown(key, valid)}")
    missing = [k for k in _REQUIRED[kind] if k not in entry]
    if missing:
        raise ValueError(f"{kind} needs {', '.join(missing)}")
    fields: dict[str, Any] = {}
    if "min" in entry:
        fields["min"] = _number(entry["min"], "min")
        if kind == "peak_share" and fields["min"] > 1:
            raise ValueError(f"min of a peak_share is a share of the peak (0.4 = 40%), got {entry['min']!r}")
    if "min_batch" in entry:
        fields["min_batch"] = _number(entry["min_batch"], "min_batch", integer=True)
    for key, choices in (("variant", TORCH_VARIANTS), ("precision", PRECISIONS[:-1])):
        if key in entry:
            if entry[key] not in choices:
                raise ValueError(f"unknown {key} {entry[key]!r}; valid: {', '.join(choices)}")
            fields[key] = entry[key]
    for key in ("fast", "slow"):
        if key in entry:
            fields[key] = _row_filter(entry[key], key)
    return Target(name=entry["name"], kind=kind, **fields)


def load_targets(path: str | Path) -> tuple[Target, ...]:
    """The targets of a targets file (see the module docstring).

    Raises:
        ConfigError: The file cannot be read, is not YAML, or an entry has an unknown kind or key or a bad number;
            the message names the file and the entry.
    """
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--targets {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"--targets {path}: not valid YAML{where}; see benchmarks/targets.yaml for the form") \
            from None
    if not isinstance(doc, dict) or not isinstance(doc.get("targets"), list):
        raise ConfigError(f"--targets {path}: expected a mapping with a 'targets:' list of entries "
                          "(see benchmarks/targets.yaml)")
    for key in doc:
        if key != "targets":
            raise ConfigError(f"--targets {path}: {_unknown(key, ('targets',))}")
    targets: list[Target] = []
    for i, entry in enumerate(doc["targets"], 1):
        name = entry.get("name") if isinstance(entry, dict) else None
        label = f"target {i}" + (f" ({name!r})" if isinstance(name, str) else "")
        if isinstance(entry, dict) and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"--targets {path}: {label}: name is required (the line the report shows)")
        try:
            target = _target(entry)
        except ValueError as exc:
            raise ConfigError(f"--targets {path}: {label}: {exc}") from None
        if any(t.name == target.name for t in targets):
            raise ConfigError(f"--targets {path}: {label}: a second target with this name; names must be unique")
        targets.append(target)
    return tuple(targets)


# ---------------------------------------------------------------------------------------------------------------------
# judging


def _fastest(rows: list[BenchRow]) -> BenchRow | None:
    timed = [r for r in rows if r.ok and r.p50]
    return min(timed, key=lambda r: r.p50) if timed else None


def _ratio_check(name: str, target: float, fast: BenchRow | None, slow: BenchRow | None, missing: str) -> Check:
    if fast is None or slow is None:
        return Check(name, f">= {target:g}x", None, None, missing)
    value = slow.p50 / fast.p50
    detail = f"{fast.label} {fast.p50:.2f} ms vs {slow.label} {slow.p50:.2f} ms (batch-1 p50)"
    if value < 1:
        detail += "; slower than the float model on this machine"
    return Check(name, f">= {target:g}x", round(value, 2), value >= target, detail)


def _unless_busy(check: Check, rows: Sequence[BenchRow | None], limit: float) -> Check:
    """``check`` without a verdict when other processes took more than ``limit`` of the CPUs during one of ``rows``
    (the rows it compares): their times then say more about the machine than about the engines."""
    shares = [r.busy for r in rows if r is not None and r.busy is not None]
    if check.passed is None or not shares or max(shares) <= limit:
        return check
    busiest = max((r for r in rows if r is not None and r.busy is not None), key=lambda r: r.busy)
    return replace(check, passed=None, busy=max(shares),
                   detail=f"{check.detail}; other processes took {100 * max(shares):.0f}% of the CPUs during "
                          f"{busiest.label} (more than --max-busy {100 * limit:.0f}%)")


def _judge(t: Target, result: BenchResult, limit: float) -> Check | None:
    rows = [r for r in result.rows if r.ok]
    torch_rows = [r for r in rows if r.backend == PYTORCH]
    engines = [r for r in rows if r.backend != PYTORCH]
    if t.kind in ("speedup_vs_pytorch", "speedup_vs_best_pytorch"):
        if t.kind == "speedup_vs_pytorch":
            ref = next((r for r in torch_rows if r.variant == t.variant), None)
        else:
            ref = _fastest(torch_rows)
        passing = _fastest([r for r in engines if r.parity_passed])
        no_torch = "no PyTorch row (torch not installed or no checkpoint)"
        return _unless_busy(_ratio_check(t.name, t.min, passing, ref,
                                         no_torch if passing else "no artifact that passed parity ran"),
                            [passing, ref], limit)
    if t.kind == "engine_ratio":
        fast, slow = t.fast or RowFilter("", ""), t.slow or RowFilter("", "")  # load_targets requires both
        pair = [_fastest([r for r in engines if fast.matches(r)]), _fastest([r for r in engines if slow.matches(r)])]
        missing = f"needs a row of {fast.describe()} and one of {slow.describe()}"
        return _unless_busy(_ratio_check(t.name, t.min, *pair, missing), pair, limit)
    big = [b for b in result.config.batch if b >= t.min_batch]
    if t.kind == "peak_share":
        goal = f">= {100 * t.min:g}%"
        bound = result.peak.for_precision(t.precision)
        picked = [r for r in engines if r.precision == t.precision and r.gops and big]
        if picked and result.macs and bound:
            top = max(picked, key=lambda r: max(r.throughput.get(b, 0.0) for b in big))
            gops = 2.0 * result.macs * max(top.throughput.get(b, 0.0) for b in big) / 1e9
            frac = gops / bound
            return _unless_busy(Check(t.name, goal, round(100 * frac, 1), frac >= t.min,
                                      f"{top.label}: {gops:.1f} GOP/s of {bound:.0f}"), [top], limit)
        return Check(t.name, goal, None, None, f"needs an {t.precision} row, a batch >= {t.min_batch} and the model's "
                                               "multiply-add count (onnx installed)")
    # batching
    if not big:
        return None
    worse = [r for r in rows if 1 in r.throughput and max(r.throughput.get(b, 0.0) for b in big) <= r.throughput[1]]
    judged = [r for r in rows if 1 in r.throughput and any(b in r.throughput for b in big)]
    detail = ("every row" if not worse else "not on: " + ", ".join(
        f"{r.label} ({max(r.throughput.get(b, 0.0) for b in big):.1f} vs {r.throughput[1]:.1f} img/s)"
        for r in worse))
    return _unless_busy(Check(t.name, "every row", float(len(judged) - len(worse)), not worse if judged else None,
                              f"{len(judged) - len(worse)} of {len(judged)} rows; {detail}"), judged, limit)


def check_targets(result: BenchResult, targets: Sequence[Target]) -> list[Check]:
    """``targets`` (from :func:`load_targets`) judged on this run, in their order; see the module docstring."""
    limit = getattr(result.config, "max_busy", DEFAULT_MAX_BUSY)
    return [c for c in (_judge(t, result, limit) for t in targets) if c is not None]
