"""Explicit Laplace/Gaussian noise on a layer's activations, calibrated to a target test accuracy.

Formal guarantees: with fresh noise of scale ``b`` (Laplace) or ``σ`` (Gaussian) on every output
coordinate of the layer, the released activations of one input are a Laplace/Gaussian mechanism
whose epsilon follows from the layer's sensitivity (:mod:`fedprune.activation.sensitivity`,
:mod:`fedprune.activation.epsilon`). This protects the input behind the activations from whoever
holds them; it says nothing about the records the model was trained on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from fedprune.activation.layers import capture_layer_io, replace_layer_output

__all__ = ["CalibratedNoise", "Mechanism", "calibrate_noise_scale", "noisy_accuracy", "unit_noise"]

logger = logging.getLogger(__name__)

Mechanism = Literal["laplace", "gaussian"]
MECHANISMS: tuple[str, ...] = get_args(Mechanism)


def unit_noise(
    shape: tuple[int, ...] | torch.Size, *, mechanism: Mechanism, generator: torch.Generator
) -> torch.Tensor:
    """I.i.d. float32 noise of scale 1: Laplace(0, 1) (std sqrt 2) or N(0, 1).

    Laplace samples are a difference of two Exp(1) draws, which never hits ``log(0)``.
    """
    if mechanism == "gaussian":
        return torch.randn(shape, generator=generator)
    if mechanism == "laplace":
        e1 = -torch.log1p(-torch.rand(shape, generator=generator))
        e2 = -torch.log1p(-torch.rand(shape, generator=generator))
        return e1 - e2
    raise ValueError(f"unknown mechanism {mechanism!r}; expected one of {list(MECHANISMS)}")


@torch.no_grad()
def noisy_accuracy(
    model: nn.Module,
    layer_name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    scale: float,
    unit_draws: list[torch.Tensor],
) -> float:
    """Accuracy of ``model`` on ``(x, y)`` when ``scale * z`` is added to the layer's output.

    Averaged over the pre-drawn unit-noise tensors ``unit_draws`` (each shaped like the layer's
    output on ``x``); reusing the same draws for every ``scale`` makes accuracy a deterministic
    function of ``scale`` (common random numbers), which bisection needs.
    """
    if scale < 0:
        raise ValueError(f"expected scale >= 0, got {scale}")
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for z in unit_draws:
            noise = scale * z
            with replace_layer_output(model, layer_name, noise.add):
                correct += int((model(x).argmax(dim=1) == y).sum())
    finally:
        model.train(was_training)
    return correct / (len(y) * len(unit_draws))


@dataclass(frozen=True)
class CalibratedNoise:
    """Noise whose test accuracy matches a target.

    Attributes
    ----------
    mechanism:
        ``"laplace"`` (``scale`` is ``b``) or ``"gaussian"`` (``scale`` is ``σ``).
    scale:
        Scale from which accuracy stays <= the target (see :func:`calibrate_noise_scale`); 0 when
        the noise-free model is already at or below the target.
    accuracy:
        Test accuracy at ``scale`` (mean over the calibration draws).
    target_accuracy:
        The accuracy it was matched to.
    """

    mechanism: Mechanism
    scale: float
    accuracy: float
    target_accuracy: float

    @property
    def std(self) -> float:
        """Per-coordinate standard deviation of the noise."""
        return self.scale * (2.0**0.5 if self.mechanism == "laplace" else 1.0)


def calibrate_noise_scale(
    model: nn.Module,
    layer_name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    mechanism: Mechanism,
    target_accuracy: float,
    repeats: int = 3,
    seed: int = 0,
    rel_tol: float = 1e-3,
) -> CalibratedNoise:
    """The smallest noise scale from which accuracy on ``(x, y)`` stays at or below the target.

    Accuracy is a step function of the scale that is not exactly monotone (at tiny scales a
    borderline example can flip by chance). So the scale is first scanned on a geometric grid
    (ratio 1.25, from ``1e-4`` to ``7.5e3`` times the standard deviation of the clean layer
    output, doubling further if needed); the bracket after the *last* grid point still above the
    target is then bisected to ``rel_tol``.

    Parameters
    ----------
    target_accuracy:
        The accuracy to match, in [0, 1] (e.g. the pruned model's).
    repeats:
        Independent noise draws averaged per accuracy evaluation (the same draws at every scale).
    seed:
        Seeds the draws.
    """
    if repeats < 1:
        raise ValueError(f"expected repeats >= 1, got {repeats}")
    if not 0.0 <= target_accuracy <= 1.0:
        raise ValueError(f"expected target_accuracy in [0, 1], got {target_accuracy}")
    _, clean_output = capture_layer_io(model, layer_name, x)
    generator = torch.Generator().manual_seed(seed)
    draws = [
        unit_noise(clean_output.shape, mechanism=mechanism, generator=generator)
        for _ in range(repeats)
    ]

    def accuracy(scale: float) -> float:
        return noisy_accuracy(model, layer_name, x, y, scale=scale, unit_draws=draws)

    clean = accuracy(0.0)
    if clean <= target_accuracy:
        return CalibratedNoise(mechanism, 0.0, clean, target_accuracy)
    reference = float(clean_output.std()) or 1.0
    grid = [reference * 1.25**i for i in range(-41, 41)]
    above = [i for i, scale in enumerate(grid) if accuracy(scale) > target_accuracy]
    if not above:
        low, high = 0.0, grid[0]
    elif above[-1] + 1 < len(grid):
        low, high = grid[above[-1]], grid[above[-1] + 1]
    else:
        low, high = grid[-1], 2.0 * grid[-1]
        while accuracy(high) > target_accuracy:
            low, high = high, 2.0 * high
            if high > 1e6 * grid[-1]:
                raise RuntimeError(
                    f"no {mechanism} scale up to {high:.3g} brings accuracy to {target_accuracy}"
                )
    while high - low > rel_tol * high:
        mid = (low + high) / 2
        low, high = (low, mid) if accuracy(mid) <= target_accuracy else (mid, high)
    high_acc = accuracy(high)
    logger.debug(
        "%s scale %.4g: accuracy %.4f (target %.4f)", mechanism, high, high_acc, target_accuracy
    )
    return CalibratedNoise(mechanism, high, high_acc, target_accuracy)
