"""Unit noise and calibrating noise on a layer's output to a target accuracy."""

import pytest
import torch
from torch import nn

from fedprune.activation.noise import (
    Mechanism,
    calibrate_noise_scale,
    noisy_accuracy,
    unit_noise,
)


def test_unit_noise_has_unit_scale_and_is_seeded() -> None:
    lap = unit_noise((200_000,), mechanism="laplace", generator=torch.Generator().manual_seed(0))
    assert float(lap.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(lap.abs().mean()) == pytest.approx(1.0, rel=0.01)  # E|X| = b = 1
    assert float(lap.std()) == pytest.approx(2**0.5, rel=0.01)
    assert torch.isfinite(lap).all()
    gau = unit_noise((200_000,), mechanism="gaussian", generator=torch.Generator().manual_seed(0))
    assert float(gau.std()) == pytest.approx(1.0, rel=0.01)
    again = unit_noise((200_000,), mechanism="laplace", generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, lap)
    with pytest.raises(ValueError, match="unknown mechanism 'cauchy'"):
        unit_noise((5,), mechanism="cauchy", generator=torch.Generator())  # type: ignore[arg-type]


def _argmax_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Identity layer '0' on 2-d points whose class is the larger coordinate (accuracy 1)."""
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(2))
        layer.bias.zero_()
    model = nn.Sequential(layer)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(400, 2, generator=g)
    return model, x, x.argmax(dim=1)


def test_noisy_accuracy_without_noise_is_clean_accuracy() -> None:
    model, x, y = _argmax_model()
    z = [torch.randn(400, 2)]
    assert noisy_accuracy(model, "0", x, y, scale=0.0, unit_draws=z) == 1.0
    assert noisy_accuracy(model, "0", x, y, scale=100.0, unit_draws=z) < 0.7


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_calibration_brackets_the_target_accuracy(mechanism: Mechanism) -> None:
    model, x, y = _argmax_model()
    noise = calibrate_noise_scale(
        model,
        "0",
        x,
        y,
        mechanism=mechanism,
        target_accuracy=0.8,
        repeats=2,
        seed=3,
        rel_tol=1e-3,
    )
    assert noise.scale > 0 and noise.accuracy <= 0.8
    # Same draws as the calibration, slightly less noise: accuracy above the target.
    g = torch.Generator().manual_seed(3)
    draws = [unit_noise((400, 2), mechanism=mechanism, generator=g) for _ in range(2)]
    below = noisy_accuracy(model, "0", x, y, scale=noise.scale * (1 - 2e-3), unit_draws=draws)
    assert below > 0.8
    assert noise.accuracy == noisy_accuracy(model, "0", x, y, scale=noise.scale, unit_draws=draws)
    assert noise.std == pytest.approx(noise.scale * (2**0.5 if mechanism == "laplace" else 1))


def test_calibration_returns_zero_when_target_is_not_below_clean_accuracy() -> None:
    model, x, y = _argmax_model()
    noise = calibrate_noise_scale(model, "0", x, y, mechanism="gaussian", target_accuracy=1.0)
    assert noise.scale == 0.0 and noise.accuracy == 1.0
