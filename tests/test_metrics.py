"""edgecls.metrics against sklearn on random data (with ties), unknown-label masking and threshold tuning."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgecls._io import to_json
from edgecls.errors import ConfigError
from edgecls.metrics import (
    ClassMetrics,
    MetricsReport,
    average_precision,
    compute_metrics,
    labels_per_image,
    mean_average_precision,
    pr_curve,
    sigmoid,
    tune_thresholds,
)

skm = pytest.importorskip("sklearn.metrics")


def _random_problem(seed: int, n: int = 200, k: int = 6, decimals: int | None = 2, unknown: float = 0.0):
    """Scores correlated with the targets; rounding makes plenty of tied scores."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, k)) < rng.uniform(0.05, 0.5, size=k)).astype(np.int64)
    scores = np.clip(0.35 * targets + rng.random((n, k)) * 0.75, 0.0, 1.0)
    if decimals is not None:
        scores = np.round(scores, decimals)
    known = rng.random((n, k)) >= unknown
    return scores, targets, known


def _f1(scores: np.ndarray, targets: np.ndarray, threshold: float) -> float:
    pred = scores >= threshold
    tp = int((pred & (targets == 1)).sum())
    den = 2 * tp + int((pred & (targets == 0)).sum()) + int((~pred & (targets == 1)).sum())
    return 2 * tp / den if den else 0.0


# ---------------------------------------------------------------------------------------------------------------------
# sigmoid


def test_sigmoid_stable_and_dtype_preserving():
    x = np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0])
    with np.errstate(over="raise"):
        y64 = sigmoid(x)
        y32 = sigmoid(x.astype(np.float32))
    assert y64.dtype == np.float64 and y32.dtype == np.float32
    np.testing.assert_allclose(y64, [0.0, 1 / (1 + math.exp(30)), 0.5, 1 / (1 + math.exp(-30)), 1.0], rtol=1e-12)
    assert np.isfinite(y32).all()
    z = np.linspace(-8, 8, 33)
    np.testing.assert_allclose(sigmoid(z), 1 / (1 + np.exp(-z)), rtol=1e-12)
    assert sigmoid(np.array([1, 2])).dtype == np.float64


# ---------------------------------------------------------------------------------------------------------------------
# ranking metrics vs sklearn


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("decimals", [None, 1, 2])
def test_average_precision_matches_sklearn(seed, decimals):
    scores, targets, _ = _random_problem(seed, decimals=decimals)
    for j in range(targets.shape[1]):
        if targets[:, j].sum() == 0:
            continue
        ours = average_precision(scores[:, j], targets[:, j])
        assert ours == pytest.approx(skm.average_precision_score(targets[:, j], scores[:, j]), abs=1e-12)


def test_average_precision_edge_cases():
    assert math.isnan(average_precision(np.array([0.1, 0.9]), np.array([0, 0])))
    assert math.isnan(average_precision(np.array([]), np.array([])))
    assert average_precision(np.array([0.3, 0.3, 0.3]), np.array([1, 0, 0])) == pytest.approx(1 / 3)
    assert average_precision(np.array([0.9, 0.1]), np.array([True, False])) == 1.0


def test_pr_curve_matches_sklearn():
    scores, targets, _ = _random_problem(7, decimals=1)
    precision, recall = pr_curve(scores[:, 0], targets[:, 0])
    sk_p, sk_r, _ = skm.precision_recall_curve(targets[:, 0], scores[:, 0])
    np.testing.assert_allclose(precision, sk_p)
    np.testing.assert_allclose(recall, sk_r)


@pytest.mark.parametrize("seed", range(3))
def test_mean_average_precision_matches_sklearn_per_class(seed):
    scores, targets, known = _random_problem(seed, unknown=0.3)
    expected = []
    for j in range(targets.shape[1]):
        m = known[:, j]
        if targets[m, j].sum():
            expected.append(skm.average_precision_score(targets[m, j], scores[m, j]))
    assert mean_average_precision(scores, targets, known) == pytest.approx(np.mean(expected), abs=1e-12)
    # all known: the same as sklearn's macro average
    assert mean_average_precision(scores, targets) == pytest.approx(
        skm.average_precision_score(targets, scores, average="macro"), abs=1e-12
    )


def test_mean_average_precision_skips_classes_without_positives():
    scores, targets, _ = _random_problem(3, k=4)
    targets[:, 2] = 0
    with_empty = mean_average_precision(scores, targets)
    without = mean_average_precision(scores[:, [0, 1, 3]], targets[:, [0, 1, 3]])
    assert with_empty == pytest.approx(without)
    assert math.isnan(mean_average_precision(scores, np.zeros_like(targets)))


# ---------------------------------------------------------------------------------------------------------------------
# compute_metrics vs sklearn


@pytest.mark.parametrize("seed", range(4))
def test_compute_metrics_matches_sklearn(seed):
    scores, targets, _ = _random_problem(seed, k=7)
    targets[:, 5] = 0  # a class without positives (still predicted positive sometimes)
    targets[:, 6] = 0
    scores[:, 6] = 0.0  # ...and one neither present nor predicted
    thr = np.linspace(0.3, 0.7, 7)
    names = [f"c{j}" for j in range(7)]
    rep = compute_metrics(scores, targets, None, names, thr)
    pred = (scores >= thr).astype(int)

    p, r, f, s = skm.precision_recall_fscore_support(targets, pred, average=None, zero_division=np.nan)
    for j, c in enumerate(rep.per_class):
        assert c.name == names[j] and c.support == s[j] and c.threshold == pytest.approx(thr[j])
        for ours, theirs in ((c.precision, p[j]), (c.recall, r[j]), (c.f1, f[j])):
            assert (math.isnan(ours) and math.isnan(theirs)) or ours == pytest.approx(theirs, abs=1e-12)
    assert math.isnan(rep.per_class[5].recall) and rep.per_class[5].f1 == 0.0  # predicted but absent
    assert math.isnan(rep.per_class[6].f1) and math.isnan(rep.per_class[6].ap)  # absent and never predicted

    assert rep.f1_micro == pytest.approx(skm.f1_score(targets, pred, average="micro"))
    assert rep.precision_micro == pytest.approx(skm.precision_score(targets, pred, average="micro"))
    assert rep.recall_micro == pytest.approx(skm.recall_score(targets, pred, average="micro"))
    assert rep.f1_macro == pytest.approx(skm.f1_score(targets, pred, average="macro", zero_division=np.nan))
    assert rep.hamming_loss == pytest.approx(skm.hamming_loss(targets, pred))
    assert rep.subset_accuracy == pytest.approx(skm.accuracy_score(targets, pred))
    assert rep.map == pytest.approx(
        np.mean([skm.average_precision_score(targets[:, j], scores[:, j]) for j in range(5)])
    )
    assert rep.num_samples == scores.shape[0]
    assert rep.thresholds == pytest.approx(tuple(thr))


def test_hamming_and_subset_accuracy_by_hand():
    probs = np.array(
        [
            [0.9, 0.2, 0.7],  # pred 1 0 1
            [0.1, 0.8, 0.4],  # pred 0 1 0
            [0.6, 0.6, 0.6],  # pred 1 1 1
            [0.3, 0.3, 0.9],  # pred 0 0 1
        ]
    )
    targets = np.array(
        [
            [1, 0, 0],  # wrong at col 2, but col 2 unknown -> image correct
            [0, 1, 1],  # wrong at col 2 (known) -> image wrong
            [1, 0, 1],  # wrong at col 1 (known) -> image wrong
            [0, 0, 0],  # wrong at col 2, all unknown -> image excluded
        ]
    )
    known = np.array(
        [
            [True, True, False],
            [True, True, True],
            [True, True, True],
            [False, False, False],
        ]
    )
    rep = compute_metrics(probs, targets, known, ["a", "b", "c"])
    # known entries: 2 + 3 + 3 = 8, wrong known: row1 col2, row2 col1 -> 2
    assert rep.hamming_loss == pytest.approx(2 / 8)
    # images with known entries: rows 0, 1, 2; all-correct: row 0 only
    assert rep.subset_accuracy == pytest.approx(1 / 3)
    # class b: known rows 0..2, pred 0 1 1, target 0 1 0 -> tp 1, fp 1, fn 0
    b = rep.per_class[1]
    assert (b.precision, b.recall, b.f1, b.support) == (0.5, 1.0, pytest.approx(2 / 3), 1)
    # micro over known: tp = a:2 + b:1 + c:1 = 4, fp = b:1 = 1, fn = c:1 = 1
    assert rep.precision_micro == pytest.approx(4 / 5) and rep.recall_micro == pytest.approx(4 / 5)
    assert rep.f1_micro == pytest.approx(8 / 10)


def test_unknown_entries_never_change_any_metric():
    scores, targets, known = _random_problem(11, n=150, k=5, unknown=0.35)
    thr = tune_thresholds(scores, targets, known)
    base = compute_metrics(scores, targets, known, list("abcde"), thr)
    base_map = mean_average_precision(scores, targets, known)

    rng = np.random.default_rng(0)
    scores2, targets2 = scores.copy(), targets.copy()
    hidden = ~known
    scores2[hidden] = rng.random(int(hidden.sum()))  # any prediction
    targets2[hidden] = 1 - targets2[hidden]  # flipped targets
    targets3 = targets.copy()
    targets3[hidden] = -1  # placeholder values are ignored too
    for s, t in ((scores2, targets2), (scores, targets3), (scores2, targets3)):
        rep = compute_metrics(s, t, known, list("abcde"), thr)
        assert json.loads(to_json(rep.to_dict())) == json.loads(to_json(base.to_dict()))
        assert mean_average_precision(s, t, known) == base_map
        np.testing.assert_array_equal(tune_thresholds(s, t, known), thr)


def test_all_known_mask_equals_none():
    scores, targets, _ = _random_problem(5)
    a = compute_metrics(scores, targets, None, list("abcdef"))
    b = compute_metrics(scores, targets, np.ones(scores.shape, dtype=bool), list("abcdef"))
    assert to_json(a.to_dict()) == to_json(b.to_dict())


# ---------------------------------------------------------------------------------------------------------------------
# tune_thresholds


@pytest.mark.parametrize("seed", range(4))
def test_tuned_thresholds_beat_a_fine_grid(seed):
    scores, targets, known = _random_problem(seed, n=300, k=5, unknown=0.2)
    targets[:, 4] = 0  # no positives -> 0.5
    thr = tune_thresholds(scores, targets, known, rule="per-class")
    assert thr.dtype == np.float32 and thr.shape == (5,)
    assert thr[4] == np.float32(0.5)
    grid = np.linspace(-0.01, 1.01, 1021)
    for j in range(4):
        m = known[:, j]
        s, t = scores[m, j], targets[m, j]
        tuned = _f1(s, t, thr[j])
        best_grid = max(_f1(s, t, g) for g in grid)
        assert tuned >= best_grid - 1e-12
        # the reported F1 at the tuned threshold is that same number
        rep = compute_metrics(scores, targets, known, list("abcde"), thr)
        assert rep.per_class[j].f1 == pytest.approx(tuned)


def test_tuned_threshold_beats_every_distinct_score_with_float32_scores():
    rng = np.random.default_rng(3)
    targets = (rng.random((500, 3)) < 0.3).astype(int)
    scores = sigmoid((targets * 1.5 + rng.normal(size=(500, 3))).astype(np.float32))
    thr = tune_thresholds(scores, targets, rule="per-class")
    for j in range(3):
        best = max(_f1(scores[:, j], targets[:, j], u) for u in np.unique(scores[:, j]))
        assert _f1(scores[:, j], targets[:, j], thr[j]) == pytest.approx(best, abs=0)


def test_tune_thresholds_midpoints_ties_and_determinism():
    # one positive at the top: best is "only 0.9 positive", threshold halfway to the next score
    thr = tune_thresholds(np.array([[0.9], [0.5], [0.1]]), np.array([[1], [0], [0]]))
    assert thr[0] == np.float32(0.7)
    # all scores equal: the only useful choice is "everything positive"
    thr = tune_thresholds(np.full((4, 1), 0.3), np.array([[1], [0], [1], [0]]))
    assert thr[0] <= 0.3
    # a tie: F1 = 2/3 both when cutting after 0.9 and after 0.4 -> the middle tied candidate by rank, deterministically
    scores = np.array([[0.9], [0.8], [0.6], [0.4], [0.2]])
    targets = np.array([[1], [0], [0], [1], [0]])
    first = tune_thresholds(scores, targets)
    assert first[0] == np.float32(0.85)
    assert _f1(scores[:, 0], targets[:, 0], first[0]) == pytest.approx(2 / 3)
    for _ in range(3):
        np.testing.assert_array_equal(tune_thresholds(scores, targets), first)
    # unknown everywhere or no positives -> 0.5
    thr = tune_thresholds(np.array([[0.9, 0.2], [0.1, 0.8]]), np.array([[1, 0], [0, 0]]), np.array([[0, 1], [0, 1]]))
    np.testing.assert_array_equal(thr, np.array([0.5, 0.5], dtype=np.float32))


def test_global_rule_is_the_pooled_f1_optimum_and_the_mixed_rules_sit_between():
    scores, targets, known = _random_problem(7, n=200, k=4, unknown=0.1)
    g = tune_thresholds(scores, targets, known, rule="global")
    assert len(set(g.tolist())) == 1
    pooled_s, pooled_t = scores[known], targets[known]
    best = max(_f1(pooled_s, pooled_t, u) for u in np.unique(pooled_s))
    assert _f1(pooled_s, pooled_t, g[0]) == pytest.approx(best, abs=1e-12)
    own = tune_thresholds(scores, targets, known, rule="per-class")
    support = ((targets == 1) & known).sum(axis=0)
    shrunk = tune_thresholds(scores, targets, known, rule="shrink", strength=10)
    w = support / (support + 10)
    np.testing.assert_allclose(shrunk, w * own + (1 - w) * g, rtol=1e-6)
    np.testing.assert_array_equal(tune_thresholds(scores, targets, known, rule="shrink", strength=0), own)
    floor = int(np.median(support))
    floored = tune_thresholds(scores, targets, known, rule="floor", strength=floor)
    np.testing.assert_array_equal(floored, np.where(support >= floor, own, g))
    with pytest.raises(ConfigError, match="unknown threshold rule 'perclass'; valid: per-class, global"):
        tune_thresholds(scores, targets, rule="perclass")


def _rare_class_problem(seed: int, n: int, rates: tuple[float, ...], separation: float = 1.5):
    """Calibrated scores (the exact posterior of a Gaussian score) for classes with the given positive rates."""
    rng = np.random.default_rng(seed)
    r = np.array(rates)
    targets = (rng.random((n, len(r))) < r).astype(int)
    score = separation * targets + rng.normal(size=targets.shape)
    return sigmoid(np.log(r / (1 - r)) + separation * score - separation**2 / 2), targets


def test_support_aware_rules_hold_better_on_held_out_data_than_per_class():
    """Classes with a handful of validation positives: their own F1-optimal thresholds over-fit the validation set;
    shrinking them toward the global one (or falling back to it) predicts fewer spurious labels on new data."""
    names = list("abcdef")
    rates = (0.5, 0.3, 0.04, 0.04, 0.03, 0.03)  # 120 validation images: about 4 positives for the rare classes
    f1 = {rule: [] for rule in ("per-class", "shrink", "floor")}
    labels = {rule: [] for rule in f1}
    truth = []
    for seed in range(20):
        val_s, val_t = _rare_class_problem(seed, 120, rates)
        test_s, test_t = _rare_class_problem(1000 + seed, 2000, rates)
        truth.append(test_t.sum(axis=1).mean())
        for rule in f1:
            thr = tune_thresholds(val_s, val_t, rule=rule)
            f1[rule].append(compute_metrics(test_s, test_t, None, names, thr).f1_micro)
            labels[rule].append(labels_per_image(test_s, thr))
    assert np.mean(f1["shrink"]) > np.mean(f1["per-class"]) + 0.01
    assert np.mean(f1["floor"]) > np.mean(f1["per-class"]) + 0.01
    over = {rule: abs(np.mean(labels[rule]) / np.mean(truth) - 1) for rule in f1}
    assert over["shrink"] < over["per-class"] and np.mean(labels["per-class"]) > np.mean(truth)  # per-class over-fires


def test_labels_per_image():
    probs = np.array([[0.9, 0.2, 0.6], [0.1, 0.1, 0.1]])
    assert labels_per_image(probs, 0.5) == 1.0
    assert labels_per_image(probs, [0.95, 0.05, 0.5]) == 1.5


def test_tuned_thresholds_separate_float32_neighbours():
    # two adjacent float32 scores: the threshold must land strictly above the lower one
    lo = np.float32(0.5)
    hi = np.nextafter(lo, np.float32(1))
    scores = np.array([[hi], [lo]], dtype=np.float32)
    thr = tune_thresholds(scores, np.array([[1], [0]]))
    assert scores[0, 0] >= thr[0] > scores[1, 0]


# ---------------------------------------------------------------------------------------------------------------------
# MetricsReport serialisation


def test_report_round_trips_through_json():
    scores, targets, known = _random_problem(2, k=4, unknown=0.2)
    targets[:, 3] = 0  # nan recall / AP
    rep = compute_metrics(
        scores, targets, known, ["cat", "dog", "car", "empty"], tune_thresholds(scores, targets, known)
    )
    text = to_json(rep.to_dict())
    loaded = json.loads(text)
    assert loaded["per_class"][3]["ap"] is None
    back = MetricsReport.from_dict(loaded)
    assert to_json(back.to_dict()) == text
    assert isinstance(back.per_class, tuple) and isinstance(back.per_class[0], ClassMetrics)
    assert math.isnan(back.per_class[3].ap)
    assert back.thresholds == rep.thresholds
    assert back.per_class[0] == rep.per_class[0]


def test_from_dict_rejects_unknown_and_missing_fields():
    rep = compute_metrics(np.array([[0.7], [0.2]]), np.array([[1], [0]]), None, ["a"])
    d = rep.to_dict()
    with pytest.raises(ConfigError, match="unknown field.*'mAP'"):
        MetricsReport.from_dict({**d, "mAP": 1.0})
    missing = {k: v for k, v in d.items() if k != "hamming_loss"}
    with pytest.raises(ConfigError, match="missing field.*hamming_loss"):
        MetricsReport.from_dict(missing)
    bad_class = {**d, "per_class": [{**d["per_class"][0], "extra": 1}]}
    with pytest.raises(ConfigError, match="per-class metrics: unknown field"):
        MetricsReport.from_dict(bad_class)


# ---------------------------------------------------------------------------------------------------------------------
# input validation


def test_shape_and_value_errors_are_clear():
    probs = np.zeros((4, 3))
    targets = np.zeros((4, 3), dtype=int)
    with pytest.raises(ConfigError, match=r"targets must have the same shape as the scores \(4, 3\), got \(4, 2\)"):
        compute_metrics(probs, targets[:, :2], None, list("abc"))
    with pytest.raises(ConfigError, match=r"known must have the same shape"):
        compute_metrics(probs, targets, np.ones((3, 3), bool), list("abc"))
    with pytest.raises(ConfigError, match="2 class names for 3 score columns"):
        compute_metrics(probs, targets, None, ["a", "b"])
    with pytest.raises(ConfigError, match=r"one per class \(3\)"):
        compute_metrics(probs, targets, None, list("abc"), [0.5, 0.5])
    with pytest.raises(ConfigError, match=r"probs must have shape \(N, K\)"):
        mean_average_precision(np.zeros(4), np.zeros(4))
    with pytest.raises(ConfigError, match="0 or 1 on known entries"):
        tune_thresholds(probs, targets + 2)
    bad = probs.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ConfigError, match="non-finite"):
        compute_metrics(bad, targets, None, list("abc"))
    known = np.ones((4, 3), bool)
    known[1, 1] = False  # NaN on an unknown entry is fine
    compute_metrics(bad, targets, known, list("abc"))
    with pytest.raises(ConfigError, match=r"scores must have shape \(N,\)"):
        average_precision(np.zeros((2, 2)), np.zeros((2, 2)))
