"""ROC, AUC and TPR at low FPR on scores whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from fedprune.audit import auc, roc_curve, tpr_at_fpr


def test_perfectly_separated_scores_have_auc_one_and_full_tpr_at_zero_fpr() -> None:
    curve = roc_curve([5.0, 6.0, 7.0], [1.0, 2.0])
    assert auc(curve) == 1.0
    assert tpr_at_fpr(curve, 0.0) == 1.0
    assert curve.tpr[0] == 0.0 and curve.fpr[0] == 0.0
    assert curve.tpr[-1] == 1.0 and curve.fpr[-1] == 1.0


def test_reversed_scores_have_auc_zero_and_identical_ones_a_half() -> None:
    assert auc(roc_curve([1.0, 2.0], [5.0, 6.0])) == 0.0
    assert auc(roc_curve([3.0, 3.0], [3.0, 3.0, 3.0])) == 0.5  # all ties


def test_auc_equals_the_mann_whitney_statistic() -> None:
    rng = np.random.default_rng(0)
    members = np.round(rng.normal(0.5, 1.0, 300), 1)  # rounding creates ties
    nonmembers = np.round(rng.normal(0.0, 1.0, 200), 1)
    diff = members[:, None] - nonmembers[None, :]
    expected = float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))
    assert auc(roc_curve(members, nonmembers)) == pytest.approx(expected, abs=1e-12)


def test_tpr_at_fpr_counts_members_above_the_strictest_admissible_threshold() -> None:
    # non-members 0..99; members 50 at 200 (above every non-member), 50 at 98.5
    members = np.concatenate([np.full(50, 200.0), np.full(50, 98.5)])
    curve = roc_curve(members, np.arange(100.0))
    assert tpr_at_fpr(curve, 0.0) == 0.5
    assert tpr_at_fpr(curve, 0.01) == 1.0  # threshold 98.5 lets only non-member 99 through
    with pytest.raises(ValueError, match="max_fpr"):
        tpr_at_fpr(curve, 1.5)


def test_empty_or_non_finite_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="member"):
        roc_curve([], [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        roc_curve([1.0, np.nan], [1.0])
