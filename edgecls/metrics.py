"""Multi-label classification metrics in plain numpy, with per-entry "unknown" labels.

Shared by training (validation, reports), export parity checks and the torch-free runtime, so this module imports
numpy only.

Conventions used everywhere below:

* ``probs`` is ``(N, K)`` scores (sigmoid probabilities), ``targets`` is ``(N, K)`` with 0/1 (or bool) on the
  known entries, and ``known`` is an optional ``(N, K)`` bool mask; ``None`` means every entry is known. Entries
  with ``known == False`` are ignored by every count, whatever their score or target value.
* A label is predicted positive when ``prob >= threshold``.
* Undefined ratios are ``nan``, never a silent 0: precision with no predicted positives, recall and AP with no known
  positives, F1 when there are neither known nor predicted positives.
* Averages over classes skip the ``nan`` entries: ``map`` averages AP over classes with at least one known positive;
  ``f1_macro`` averages F1 over classes with at least one known positive OR at least one predicted positive. This is
  ``sklearn.metrics.f1_score(average="macro", zero_division=np.nan)``; a class that is absent and never predicted
  does not pull the average down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from edgecls.config import check_keys
from edgecls.errors import ConfigError

__all__ = [
    "DEFAULT_THRESHOLD",
    "DEFAULT_THRESHOLD_RULE",
    "THRESHOLD_RULES",
    "ClassMetrics",
    "MetricsReport",
    "average_precision",
    "compute_metrics",
    "mean_average_precision",
    "pr_curve",
    "sigmoid",
    "labels_per_image",
    "tune_thresholds",
]

DEFAULT_THRESHOLD = 0.5  # the untuned decision threshold (the "at 0.5" reports, a class without known positives)
# How tune_thresholds turns validation scores into per-class thresholds (benchmarks/thresholds.py compares them):
#   per-class  each class's own F1-optimal threshold (chases a handful of positives on rare classes)
#   global     one F1-optimal threshold for all classes (micro F1 over every known entry)
#   shrink     per-class pulled toward global by support: w = n / (n + strength), n = the class's known positives
#   floor      per-class where a class has at least `strength` known positives, else global
THRESHOLD_RULES = ("per-class", "global", "shrink", "floor")
DEFAULT_THRESHOLD_RULE = "shrink"
DEFAULT_THRESHOLD_STRENGTH = {"shrink": 20.0, "floor": 20.0}


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow for large ``|x|``; float32 stays float32, other input becomes float64."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    e = np.exp(-np.abs(x))  # in (0, 1], never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


# ---------------------------------------------------------------------------------------------------------------------
# input checks


def _as_scores(scores: Any, name: str, ndim: int) -> np.ndarray:
    arr = np.asarray(scores)
    if arr.ndim != ndim:
        want = "(N,)" if ndim == 1 else "(N, K)"
        raise ConfigError(f"{name} must have shape {want}, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
        raise ConfigError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    return arr


def _as_targets(targets: Any, shape: tuple[int, ...], known: np.ndarray | None) -> np.ndarray:
    """Targets as bool, checking that every known entry is 0 or 1 (unknown entries may hold anything)."""
    arr = np.asarray(targets)
    if arr.shape != shape:
        raise ConfigError(f"targets must have the same shape as the scores {shape}, got {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if not np.issubdtype(arr.dtype, np.number):
        raise ConfigError(f"targets must be 0/1 or bool, got dtype {arr.dtype}")
    ok = (arr == 0) | (arr == 1)
    if known is not None:
        ok |= ~known
    if not ok.all():
        bad = np.argwhere(~ok)[0]
        raise ConfigError(
            f"targets must be 0 or 1 on known entries; found {arr[tuple(bad)]!r} at index {tuple(int(i) for i in bad)}"
            " (mark missing labels with the `known` mask instead)"
        )
    return arr == 1


def _as_known(known: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if known is None:
        return None
    arr = np.asarray(known)
    if arr.shape != shape:
        raise ConfigError(f"known must have the same shape as the scores {shape}, got {arr.shape}")
    if arr.dtype != np.bool_:
        if not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all():
            raise ConfigError(f"known must be a bool (or 0/1) mask, got dtype {arr.dtype}")
        arr = arr.astype(bool)
    return arr


def _check_finite(scores: np.ndarray, known: np.ndarray | None, name: str) -> None:
    bad = ~np.isfinite(scores)
    if known is not None:
        bad &= known
    if bad.any():
        raise ConfigError(
            f"{name} has {int(bad.sum())} non-finite value(s) (NaN/inf) on known entries; "
            "the model output diverged or the scores were not computed for every sample"
        )


def _prepare(probs: Any, targets: Any, known: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate ``(N, K)`` inputs and return float64 probs, bool targets and a bool known mask."""
    p = _as_scores(probs, "probs", 2)
    k = _as_known(known, p.shape)
    _check_finite(p, k, "probs")
    t = _as_targets(targets, p.shape, k)
    if k is None:
        k = np.ones(p.shape, dtype=bool)
    return p, t, k


def _prepare_1d(scores: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _as_scores(scores, "scores", 1)
    _check_finite(s, None, "scores")
    return s, _as_targets(targets, s.shape, None)


# ---------------------------------------------------------------------------------------------------------------------
# ranking metrics


def _binary_curve(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true/false positives at each distinct score, highest score first (ties form one step)."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    y = targets[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y, dtype=np.int64)[last_of_group]
    fps = (last_of_group + 1) - tps
    return tps, fps, s[last_of_group]


def _ap(scores: np.ndarray, targets: np.ndarray) -> float:
    if scores.size == 0:
        return math.nan
    tps, fps, _ = _binary_curve(scores, targets)
    if tps[-1] == 0:
        return math.nan
    precision = tps / (tps + fps)
    recall_step = np.diff(np.r_[0, tps]) / tps[-1]
    return float(np.sum(recall_step * precision))


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Average precision of one class: ``sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds, no interpolation.

    Same definition as ``sklearn.metrics.average_precision_score``; tied scores form a single step.

    Args:
        scores: ``(N,)`` scores, higher means more likely positive.
        targets: ``(N,)`` 0/1 or bool ground truth.

    Returns:
        AP in ``[0, 1]``, or ``nan`` when there are no positives.
    """
    s, t = _prepare_1d(scores, targets)
    return _ap(s, t)


def _per_class_ap(p: np.ndarray, t: np.ndarray, k: np.ndarray) -> np.ndarray:
    return np.array([_ap(p[k[:, j], j], t[k[:, j], j]) for j in range(p.shape[1])], dtype=np.float64)


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def mean_average_precision(probs: np.ndarray, targets: np.ndarray, known: np.ndarray | None = None) -> float:
    """Mean AP over the classes with at least one known positive; unknown entries are left out of each class.

    Returns:
        The mean, or ``nan`` when no class has a known positive.
    """
    p, t, k = _prepare(probs, targets, known)
    return _nanmean(_per_class_ap(p, t, k))


def pr_curve(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct threshold, laid out like ``sklearn.metrics.precision_recall_curve``.

    Ordered by increasing threshold (recall decreasing) and ending with the point ``precision=1, recall=0``.
    With no positives the recall is undefined and returned as ``nan`` (sklearn sets it to 1 with a warning).

    Returns:
        ``(precision, recall)``, two float64 arrays of the same length.
    """
    s, t = _prepare_1d(scores, targets)
    if s.size == 0:
        return np.array([1.0]), np.array([0.0])
    tps, fps, _ = _binary_curve(s, t)
    precision = tps / (tps + fps)
    recall = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0]


# ---------------------------------------------------------------------------------------------------------------------
# threshold tuning


def _best_threshold(scores: np.ndarray, targets: np.ndarray) -> float:
    """Threshold maximising F1 for ``scores >= threshold`` (see :func:`tune_thresholds`)."""
    tps, fps, uniq = _binary_curve(scores, targets)  # uniq is descending
    positives = int(tps[-1])
    if positives == 0:
        return DEFAULT_THRESHOLD
    # Candidate i predicts the top i+1 score groups positive.
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (predicted + positives);
    # equal rationals divide to equal floats, so ties are exact.
    f1 = 2.0 * tps / ((tps + fps) + positives)
    best = np.flatnonzero(f1 == f1.max())
    i = int(best[(best.size - 1) // 2])  # middle of the tied candidates: deterministic, away from the plateau edges
    upper = uniq[i]
    if i == uniq.size - 1:  # every sample predicted positive: threshold at the lowest score
        t = np.float32(upper)
        return float(t if t <= upper else np.nextafter(t, np.float32(-np.inf)))
    lower = uniq[i + 1]
    t = np.float32((upper + lower) / 2.0)
    # Keep the float32 threshold strictly above the next group and at most the included one.
    if t <= lower:
        t = np.nextafter(np.float32(lower), np.float32(np.inf))
        if t <= lower:  # float32(lower) rounded down; one more step
            t = np.nextafter(t, np.float32(np.inf))
    if t > upper:  # scores closer than float32 resolution: nothing representable in between
        t = np.float32(upper)
    return float(t)


def tune_thresholds(
    probs: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray | None = None,
    *,
    rule: str = DEFAULT_THRESHOLD_RULE,
    strength: float | None = None,
) -> np.ndarray:
    """Per-class decision thresholds from validation scores: the one place thresholds are tuned (training, export
    parity and ``evaluate`` all call it).

    An F1-optimal threshold is found by one sort: the candidates are the midpoints between consecutive distinct sorted
    scores (each splits the ranking between two score groups), plus the lowest score itself (everything predicted
    positive); "nothing positive" never wins since its F1 is 0. When several candidates reach the same best F1, the
    middle one of them (by rank) is taken, which is deterministic. ``rule`` says how the per-class ones are combined
    with the global one (all known entries of all classes pooled), see :data:`THRESHOLD_RULES`:

    * ``per-class``: each class's own F1-optimal threshold.
    * ``global``: the pooled one for every class.
    * ``shrink`` (default): ``w * own + (1 - w) * global`` with ``w = n / (n + strength)``, ``n`` the class's known
      positives, ``strength`` 20 by default: a class with 5 validation positives keeps a fifth of its own.
    * ``floor``: the class's own where it has at least ``strength`` (20) known positives, else the global one.

    The thresholds are rounded to float32 so that ``probs >= threshold`` gives the same decisions on the float32
    scores that models and runtimes produce.

    Returns:
        ``(K,)`` float32 thresholds; a class without known positives gets the global one (0.5 under ``per-class``,
        or when no class has a known positive).
    """
    if rule not in THRESHOLD_RULES:
        raise ConfigError(f"unknown threshold rule {rule!r}; valid: {', '.join(THRESHOLD_RULES)}")
    if strength is None:
        strength = DEFAULT_THRESHOLD_STRENGTH.get(rule, 0.0)
    if not (math.isfinite(strength) and strength >= 0):
        raise ConfigError(f"threshold strength must be a finite number >= 0, got {strength!r}")
    p, t, k = _prepare(probs, targets, known)
    positives = (t & k).sum(axis=0)
    pooled = _best_threshold(p[k], t[k]) if rule != "per-class" and k.any() else DEFAULT_THRESHOLD
    out = np.full(p.shape[1], pooled, dtype=np.float64)
    if rule == "global":
        return out.astype(np.float32)
    for j in range(p.shape[1]):
        m = k[:, j]
        n = int(positives[j])
        if n == 0:
            continue
        own = _best_threshold(p[m, j], t[m, j])
        if rule == "per-class" or (rule == "floor" and n >= strength):
            out[j] = own
        elif rule == "shrink":
            w = n / (n + strength)
            out[j] = w * own + (1.0 - w) * pooled
    return out.astype(np.float32)


def labels_per_image(probs: np.ndarray, thresholds: float | Sequence[float] | np.ndarray) -> float:
    """Mean number of labels predicted per image (``probs >= threshold``), to compare with the truth's cardinality."""
    p = _as_scores(probs, "probs", 2)
    if p.shape[0] == 0:
        return math.nan
    return float((p >= _thresholds_array(thresholds, p.shape[1])[None, :]).sum(axis=1).mean())


# ---------------------------------------------------------------------------------------------------------------------
# reports


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else math.nan


def _clean_float(value: Any, key: str) -> float:
    if value is None:  # JSON has no NaN; _io.to_json writes it as null
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"metrics field {key!r} must be a number or null, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ClassMetrics:
    """Metrics for one class at its threshold; ``nan`` where undefined (see the module docstring)."""

    name: str
    precision: float
    recall: float
    f1: float
    ap: float
    support: int  # known positives
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassMetrics:
        check_keys(cls, d, "per-class metrics", required=[f.name for f in fields(cls)])
        support = d["support"]
        if isinstance(support, bool) or not isinstance(support, int):
            raise ConfigError(f"metrics field 'support' must be an integer, got {support!r}")
        return cls(
            name=str(d["name"]),
            precision=_clean_float(d["precision"], "precision"),
            recall=_clean_float(d["recall"], "recall"),
            f1=_clean_float(d["f1"], "f1"),
            ap=_clean_float(d["ap"], "ap"),
            support=support,
            threshold=_clean_float(d["threshold"], "threshold"),
        )


@dataclass(frozen=True)
class MetricsReport:
    """Dataset-level metrics plus one :class:`ClassMetrics` per class, in label order."""

    map: float
    f1_micro: float
    f1_macro: float
    precision_micro: float
    recall_micro: float
    hamming_loss: float
    subset_accuracy: float
    num_samples: int
    per_class: tuple[ClassMetrics, ...]

    @property
    def thresholds(self) -> tuple[float, ...]:
        return tuple(c.threshold for c in self.per_class)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.per_class)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of Python floats/ints/strings; ``nan`` stays ``float('nan')`` (``_io.to_json`` writes null)."""
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "per_class"}
        d["per_class"] = [c.to_dict() for c in self.per_class]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MetricsReport:
        """Inverse of :meth:`to_dict`; accepts ``None`` for ``nan`` and rejects unknown or missing fields."""
        check_keys(cls, d, "metrics report", required=[f.name for f in fields(cls)])
        num_samples = d["num_samples"]
        if isinstance(num_samples, bool) or not isinstance(num_samples, int):
            raise ConfigError(f"metrics field 'num_samples' must be an integer, got {num_samples!r}")
        per_class = d["per_class"]
        if not isinstance(per_class, (list, tuple)):
            raise ConfigError(f"metrics field 'per_class' must be a list, got {type(per_class).__name__}")
        scalars = {
            f.name: _clean_float(d[f.name], f.name) for f in fields(cls) if f.name not in ("num_samples", "per_class")
        }
        return cls(
            **scalars,
            num_samples=num_samples,
            per_class=tuple(ClassMetrics.from_dict(c) for c in per_class),
        )


def _thresholds_array(thresholds: float | Sequence[float] | np.ndarray, num_classes: int) -> np.ndarray:
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.ndim == 0:
        thr = np.full(num_classes, float(thr))
    if thr.shape != (num_classes,):
        raise ConfigError(f"thresholds must be one number or one per class ({num_classes}), got shape {thr.shape}")
    if not np.isfinite(thr).all():
        raise ConfigError(f"thresholds must be finite numbers, got {thr.tolist()}")
    return thr


def compute_metrics(
    probs: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray | None,
    class_names: Sequence[str],
    thresholds: float | Sequence[float] | np.ndarray = DEFAULT_THRESHOLD,
) -> MetricsReport:
    """All metrics of one evaluation, counting known entries only.

    Args:
        probs: ``(N, K)`` scores.
        targets: ``(N, K)`` 0/1 or bool; values at unknown entries are ignored.
        known: ``(N, K)`` bool mask of labelled entries, or ``None`` when all are known.
        class_names: ``K`` names, in column order.
        thresholds: one threshold for all classes or one per class; predicted positive means ``prob >= threshold``.

    Returns:
        A :class:`MetricsReport`. ``hamming_loss`` is wrong known entries / known entries; ``subset_accuracy`` is the
        fraction of images whose known entries are all correct, over the images with at least one known entry.
    """
    p, t, k = _prepare(probs, targets, known)
    n, num_classes = p.shape
    names = [str(c) for c in class_names] if not isinstance(class_names, str) else [class_names]
    if len(names) != num_classes:
        raise ConfigError(f"got {len(names)} class names for {num_classes} score columns; they must match")
    thr = _thresholds_array(thresholds, num_classes)

    pred = p >= thr[None, :]
    tp = (pred & t & k).sum(axis=0)
    fp = (pred & ~t & k).sum(axis=0)
    fn = (~pred & t & k).sum(axis=0)
    aps = _per_class_ap(p, t, k)

    per_class = tuple(
        ClassMetrics(
            name=names[j],
            precision=_ratio(tp[j], tp[j] + fp[j]),
            recall=_ratio(tp[j], tp[j] + fn[j]),
            f1=_ratio(2 * tp[j], 2 * tp[j] + fp[j] + fn[j]),
            ap=float(aps[j]),
            support=int(tp[j] + fn[j]),
            threshold=float(thr[j]),
        )
        for j in range(num_classes)
    )

    wrong = (pred != t) & k
    rows_known = k.any(axis=1)
    rows_right = ~wrong.any(axis=1)
    big_tp, big_fp, big_fn = int(tp.sum()), int(fp.sum()), int(fn.sum())
    return MetricsReport(
        map=_nanmean(aps),
        f1_micro=_ratio(2 * big_tp, 2 * big_tp + big_fp + big_fn),
        f1_macro=_nanmean(np.array([c.f1 for c in per_class], dtype=np.float64)),
        precision_micro=_ratio(big_tp, big_tp + big_fp),
        recall_micro=_ratio(big_tp, big_tp + big_fn),
        hamming_loss=_ratio(int(wrong.sum()), int(k.sum())),
        subset_accuracy=_ratio(int((rows_right & rows_known).sum()), int(rows_known.sum())),
        num_samples=int(n),
        per_class=per_class,
    )
