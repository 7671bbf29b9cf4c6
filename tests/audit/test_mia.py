"""Attack statistics and LiRA on models and statistics whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fedprune.audit import (
    auc,
    balanced_inclusion,
    example_statistics,
    lira_scores,
    loss_scores,
    roc_curve,
)


def test_example_statistics_match_cross_entropy_and_logit_confidence() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.randn(20, 1, 2, 2), torch.randint(0, 3, (20,))
    loss, phi = example_statistics(model, TensorDataset(x, y), batch_size=7)
    with torch.no_grad():
        logits = model(x).double()
    expected_loss = nn.functional.cross_entropy(logits, y, reduction="none").numpy()
    p = torch.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1).numpy()
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-10)
    np.testing.assert_allclose(phi, np.log(p) - np.log1p(-p), rtol=1e-8)
    np.testing.assert_array_equal(loss_scores(loss), -loss)


def test_balanced_inclusion_puts_every_record_in_half_the_models() -> None:
    inc = balanced_inclusion(6, 500, seed=0)
    assert inc.shape == (6, 500)
    assert np.all(inc.sum(axis=0) == 3)
    assert not np.array_equal(inc, balanced_inclusion(6, 500, seed=1))
    with pytest.raises(ValueError, match="even"):
        balanced_inclusion(3, 10, seed=0)


def test_lira_separates_members_when_in_and_out_statistics_differ_per_record() -> None:
    # Per-record difficulty d_j (large spread) hides membership from a global threshold; being
    # IN adds 1 to phi. LiRA calibrates d_j away; the raw statistic cannot.
    rng = np.random.default_rng(0)
    n, k = 2000, 8
    difficulty = rng.normal(0, 5, n)
    member = rng.random(n) < 0.5
    inc = balanced_inclusion(k, n, seed=1)
    ref = difficulty + inc * 1.0 + rng.normal(0, 0.3, (k, n))
    target = difficulty + member * 1.0 + rng.normal(0, 0.3, n)
    scores = lira_scores(target, ref, inc)
    lira_auc = auc(roc_curve(scores[member], scores[~member]))
    raw_auc = auc(roc_curve(target[member], target[~member]))
    assert lira_auc > 0.95
    assert raw_auc < 0.6


def test_lira_refuses_records_without_in_or_out_models() -> None:
    inc = np.array([[True, True], [False, True]])
    with pytest.raises(ValueError, match="IN and one OUT"):
        lira_scores(np.zeros(2), np.zeros((2, 2)), inc)
    with pytest.raises(ValueError, match="shape"):
        lira_scores(np.zeros(3), np.zeros((2, 2)), inc)
