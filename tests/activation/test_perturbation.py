"""Magnitude pruning, the activation perturbation it causes, and Laplace/Gaussian fits."""

import math

import pytest
import torch
from torch import nn

from fedprune.activation.layers import get_affine_layer
from fedprune.activation.perturbation import (
    activation_perturbation,
    fit_gaussian,
    fit_laplace,
    magnitude_prune,
    measure_perturbation,
    prune_model_layer,
)
from fedprune.masks.topk import keep_count

# A 3x2 weight (3 outputs, 2 inputs) small enough to prune by hand.
W = torch.tensor([[0.5, -2.0], [1.0, 0.1], [-3.0, 0.2]])


def _hand_layer() -> nn.Linear:
    layer = nn.Linear(2, 3)
    with torch.no_grad():
        layer.weight.copy_(W)
        layer.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    return layer


def test_magnitude_prune_hand_case() -> None:
    # |W| sorted: 3.0 (-3.0), 2.0 (-2.0), 1.0, 0.5, 0.2, 0.1; k = 0.5 keeps round(3) = 3.
    expected = torch.tensor([[0.0, -2.0], [1.0, 0.0], [-3.0, 0.0]])
    pruned = magnitude_prune(W, keep_fraction=0.5)
    assert torch.equal(pruned, expected)
    assert int((pruned != 0).sum()) == 3
    assert torch.equal(W, torch.tensor([[0.5, -2.0], [1.0, 0.1], [-3.0, 0.2]]))  # not modified
    assert torch.equal(magnitude_prune(W, keep_fraction=1.0), W)


@pytest.mark.parametrize("keep_fraction", [0.01, 0.1, 0.33, 0.5, 0.9])
def test_magnitude_prune_keeps_exactly_keep_count_largest(keep_fraction: float) -> None:
    w = torch.randn(17, 13, generator=torch.Generator().manual_seed(0))
    pruned = magnitude_prune(w, keep_fraction=keep_fraction)
    k = keep_count(w.numel(), keep_fraction)
    kept = pruned != 0
    assert int(kept.sum()) == k
    assert torch.equal(pruned[kept], w[kept])  # survivors keep their values
    assert float(w[kept].abs().min()) >= float(w[~kept].abs().max())


def test_magnitude_prune_breaks_ties_by_index() -> None:
    w = torch.tensor([1.0, -1.0, 1.0, 1.0])
    assert torch.equal(magnitude_prune(w, keep_fraction=0.5), torch.tensor([1.0, -1.0, 0.0, 0.0]))


def test_activation_perturbation_hand_case() -> None:
    # (W - W_k) = [[0.5, 0], [0, 0.1], [0, 0.2]]; x = (1, 2) -> e = (0.5, 0.2, 0.4).
    layer = _hand_layer()
    x = torch.tensor([[1.0, 2.0]])
    e = activation_perturbation(layer, x, keep_fraction=0.5)
    assert torch.allclose(e, torch.tensor([[0.5, 0.2, 0.4]]))
    # The same as the unpruned minus the pruned layer's output (the bias cancels).
    model = nn.Sequential(layer)
    pruned = prune_model_layer(model, "0", keep_fraction=0.5)
    assert torch.allclose(model(x) - pruned(x), e)
    pruned_bias = get_affine_layer(pruned, "0").bias
    assert pruned_bias is not None and torch.equal(pruned_bias, layer.bias)
    assert torch.equal(layer.weight, W)  # the original model is untouched


def test_activation_perturbation_conv_matches_output_difference() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.rand(4, 2, 6, 6)
    pruned = prune_model_layer(nn.Sequential(conv), "0", keep_fraction=0.2)
    e = activation_perturbation(conv, x, keep_fraction=0.2)
    assert e.shape == (4, 3, 6, 6)
    assert torch.allclose(e, conv(x) - pruned(x), atol=1e-6)


def test_fit_laplace_recovers_known_scale() -> None:
    torch.manual_seed(0)
    x = torch.distributions.Laplace(0.3, 0.7).sample((200_000,))
    fit = fit_laplace(x)
    assert fit.family == "laplace"
    assert fit.loc == pytest.approx(0.3, abs=0.01)
    assert fit.scale == pytest.approx(0.7, rel=0.01)
    assert fit.std == pytest.approx(0.7 * math.sqrt(2), rel=0.01)
    assert fit.ks_statistic < 0.01
    assert fit.mean_log_likelihood == pytest.approx(-math.log(2 * 0.7) - 1, abs=0.01)


def test_fit_gaussian_recovers_known_scale_and_fits_better_than_laplace() -> None:
    torch.manual_seed(0)
    x = 1.3 * torch.randn(200_000) - 0.5
    fit = fit_gaussian(x)
    assert fit.loc == pytest.approx(-0.5, abs=0.01)
    assert fit.scale == pytest.approx(1.3, rel=0.01)
    assert fit.std == fit.scale
    assert fit.ks_statistic < 0.01
    lap = fit_laplace(x)
    assert lap.ks_statistic > 3 * fit.ks_statistic
    assert lap.mean_log_likelihood < fit.mean_log_likelihood


def test_fit_ks_statistic_hand_case() -> None:
    # Samples symmetric around 0: Gaussian fit has loc 0, sigma = sqrt(mean x^2) = 1.
    x = torch.tensor([-1.0, 1.0])
    fit = fit_gaussian(x)
    phi = 0.5 * (1 + math.erf(-1 / math.sqrt(2)))  # CDF at -1 = 0.1587
    # Empirical CDF steps 0 -> 0.5 at -1 and 0.5 -> 1 at 1; fitted CDF there: phi, 1 - phi.
    # sup |F_emp - F| = max(0.5 - phi, phi, (1 - phi) - 0.5, 1 - (1 - phi)) = 0.5 - phi.
    assert fit.ks_statistic == pytest.approx(0.5 - phi)


def test_fits_reject_samples_without_spread() -> None:
    with pytest.raises(ValueError, match="no spread"):
        fit_laplace(torch.zeros(10))
    with pytest.raises(ValueError, match="no spread"):
        fit_gaussian(torch.ones(10))


def test_measure_perturbation_summarises_hand_case() -> None:
    layer = _hand_layer()
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.0]])
    stats = measure_perturbation(layer, x, keep_fraction=0.5)
    e = torch.tensor([0.5, 0.2, 0.4, -0.5, 0.0, 0.0], dtype=torch.float64)
    assert (stats.num_weights, stats.num_kept, stats.num_samples) == (6, 3, 6)
    assert stats.mean == pytest.approx(float(e.mean()))
    assert stats.std == pytest.approx(float(e.std(correction=0)))
    assert stats.mean_abs == pytest.approx(1.6 / 6)
    assert stats.max_abs == pytest.approx(0.5)
    signal = (x.double() @ W.double().T).norm()
    assert stats.relative_norm == pytest.approx(float(e.norm() / signal))
    assert stats.laplace.loc == pytest.approx(float(e.median()))
