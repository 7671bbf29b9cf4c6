"""The one top-k rule shared by mask selection and the activation study."""

import pytest
import torch
from torch import nn

from fedprune.activation.perturbation import magnitude_prune
from fedprune.masks import select_mask
from fedprune.masks.topk import keep_count, top_k


def test_keep_count_rounds_half_up_and_keeps_at_least_one() -> None:
    assert keep_count(6, 0.25) == 2  # 1.5 rounds up (Python's round gives 2 too)
    assert keep_count(10, 0.25) == 3  # 2.5 rounds up; round() would give 2
    assert keep_count(14, 0.25) == 4  # 3.5 rounds up; round() would give 4 too
    assert keep_count(6, 0.5) == 3
    assert keep_count(10, 0.01) == 1
    assert keep_count(8192, 0.01) == 82
    assert keep_count(7, 1.0) == 7


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_keep_count_rejects_fractions_outside_unit_interval(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"expected a fraction in \(0, 1\]"):
        keep_count(6, fraction)


def test_keep_count_rejects_empty() -> None:
    with pytest.raises(ValueError, match="at least one entry"):
        keep_count(0, 0.5)


def test_top_k_keeps_shape_and_breaks_ties_by_lower_index() -> None:
    scores = torch.tensor([[1.0, 3.0, 1.0], [1.0, 2.0, 0.0]])
    keep = top_k(scores, 3)
    assert keep.shape == scores.shape and keep.dtype == torch.bool
    assert keep.tolist() == [[True, True, False], [False, True, False]]


def test_masks_and_activation_pruning_keep_the_same_count_on_a_half() -> None:
    # 10 weights at 25 %: 2.5, where half-to-even (2) and half-up (3) used to disagree.
    layer = nn.Linear(5, 2, bias=False)
    mask = select_mask(layer, strategy="magnitude", density=0.25, scope="layer")
    pruned = magnitude_prune(layer.weight, keep_fraction=0.25)
    assert mask.num_selected == int((pruned != 0).sum()) == 3
    # ... and the same entries: both keep the largest magnitudes.
    assert torch.equal(mask["weight"], pruned != 0)
