"""The INT8 parity budget also bounds decision agreement (numpy only: no export run needed)."""

from __future__ import annotations

import numpy as np
import pytest

from edgecls.errors import ConfigError
from edgecls.export.parity import Budgets, check_parity


def _noisy_artifact(seed: int = 0):
    rng = np.random.default_rng(seed)
    targets = (rng.random((400, 4)) < 0.3).astype(int)
    reference = 2.0 * targets - 1.0 + rng.normal(size=targets.shape)
    artifact = reference + rng.normal(scale=0.6, size=targets.shape)  # INT8-like noise that flips decisions
    return reference, artifact, targets


def test_int8_budget_fails_on_flipped_decisions_and_names_the_flag():
    reference, artifact, targets = _noisy_artifact()
    loose_map = Budgets(max_map_drop=1.0)  # only the decisions can fail it
    report = check_parity(reference, artifact, targets, None, precision="int8", budgets=loose_map)
    assert report.agreement < 0.95
    assert not report.passed and "(--int8-min-agreement)" in report.broken and "mAP drop" not in report.broken
    assert "agreement >= 0.95" in report.budget
    relaxed = Budgets(max_map_drop=1.0, int8_min_agreement=round(report.agreement - 0.01, 3))
    assert check_parity(reference, artifact, targets, None, precision="int8", budgets=relaxed).passed
    same = check_parity(reference, reference, targets, None, precision="int8", budgets=Budgets())
    assert same.passed and same.agreement == 1.0


def test_int8_agreement_budget_is_a_share_and_old_bundles_get_the_default():
    with pytest.raises(ConfigError, match="int8_min_agreement is a share of decisions"):
        Budgets(int8_min_agreement=1.5)
    old = Budgets.from_dict({"fp32_tolerance": 1e-4, "fp16_tolerance": None, "max_map_drop": 0.01})
    assert old.int8_min_agreement == 0.95
