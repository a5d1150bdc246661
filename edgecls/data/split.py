"""Seeded iterative-stratification split (Sechidis et al., 2011) for datasets without their own splits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgecls.data._rows import _Row
from edgecls.data.spec import DEFAULT_SEED


def _seeded_split(rows: Sequence[_Row], *, seed: int, val_fraction: float, test_fraction: float) -> np.ndarray:
    """Split index per row (0 train, 1 valid, 2 test) by iterative stratification."""
    positives = np.stack([r.target > 0.5 for r in rows]) & np.stack([r.known for r in rows])
    fractions = [1.0 - val_fraction - test_fraction, val_fraction, test_fraction]
    return iterative_stratification(positives, fractions, seed=seed)


def iterative_stratification(labels: np.ndarray, fractions: Sequence[float], *, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Assign each row of a multi-label matrix to a subset, keeping each label's share close to ``fractions``.

    Iterative stratification (Sechidis, Tsoumakas and Vlahavas, 2011): labels are handled from the rarest, each
    example going to the subset that most lacks that label (ties: the subset that most lacks examples, then
    random). Afterwards every label with at least two positives is made present in subsets 0 and 1 (train and
    valid), and subsets with a non-zero fraction are made non-empty where there are enough rows.

    Args:
        labels: ``(N, K)`` bool, True where the label is positive.
        fractions: Share of each subset; they should sum to 1.
        seed: Seed of ``numpy.random.default_rng`` for the order and the ties.

    Returns:
        ``(N,)`` int64 subset index per row.
    """
    y = np.asarray(labels, dtype=bool)
    n = y.shape[0]
    rng = np.random.default_rng(seed)
    r = np.asarray(fractions, dtype=np.float64)
    desired = r * n
    label_desired = np.outer(r, y.sum(axis=0)).astype(np.float64)
    assign = np.full(n, -1, dtype=np.int64)
    order = rng.permutation(n)
    remaining = np.ones(n, dtype=bool)

    def pick(scores: np.ndarray, tie: np.ndarray) -> int:
        best = np.flatnonzero(scores == scores.max())
        if len(best) > 1:
            t = tie[best]
            best = best[t == t.max()]
        return int(best[rng.integers(len(best))]) if len(best) > 1 else int(best[0])

    while True:
        counts = y[remaining].sum(axis=0)
        labelled = np.flatnonzero(counts > 0)
        if not len(labelled):
            break
        rarest = labelled[counts[labelled] == counts[labelled].min()]
        label = int(rarest[rng.integers(len(rarest))]) if len(rarest) > 1 else int(rarest[0])
        for i in order[remaining[order] & y[order, label]]:
            s = pick(label_desired[:, label], desired)
            assign[i] = s
            remaining[i] = False
            label_desired[s, y[i]] -= 1
            desired[s] -= 1
    for i in order[remaining[order]]:
        s = pick(desired, desired)
        assign[i] = s
        desired[s] -= 1

    _ensure_train_valid(y, assign, rng)
    for s in range(1, len(r)):
        if r[s] > 0 and not (assign == s).any() and (assign == 0).sum() >= 2:
            donors = np.flatnonzero(assign == 0)
            assign[_least_damaging(y, assign, donors, rng)] = s
    return assign


def _damage(y: np.ndarray, assign: np.ndarray, i: int, required: np.ndarray) -> int:
    """How many required labels would lose their last positive in row ``i``'s subset if it moved (train/valid)."""
    src = assign[i]
    if src not in (0, 1):
        return 0
    counts = y[assign == src].sum(axis=0)
    return int(np.sum(y[i] & (counts == 1) & required))


def _least_damaging(y: np.ndarray, assign: np.ndarray, donors: np.ndarray, rng: np.random.Generator) -> int:
    required = y.sum(axis=0) >= 2
    best, best_key = -1, None
    for i in rng.permutation(donors)[:256]:  # a random sample of candidates is plenty and keeps this O(N)
        key = (_damage(y, assign, int(i), required), 0 if assign[i] == 2 else 1, int(y[i].sum()))
        if best_key is None or key < best_key:
            best, best_key = int(i), key
    return best


def _ensure_train_valid(y: np.ndarray, assign: np.ndarray, rng: np.random.Generator) -> None:
    required = np.flatnonzero(y.sum(axis=0) >= 2)
    for _ in range(4 * len(required) + 4):
        changed = False
        for c in required:
            for target in (0, 1):
                if y[assign == target, c].any():
                    continue
                donors = np.flatnonzero(y[:, c] & (assign != target))
                assign[_least_damaging(y, assign, donors, rng)] = target
                changed = True
        if not changed:
            return
