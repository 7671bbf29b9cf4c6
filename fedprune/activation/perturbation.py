"""Magnitude-prune one layer and measure the perturbation it causes in that layer's activations.

Huang et al. (2020), *Privacy-preserving Learning via Deep Net Pruning*, read the change in a
layer's output caused by pruning its weights as noise added to the activations. For an affine layer
``h = W u + b`` and its magnitude-pruned weight ``W_k`` (keeping the largest ``round(k * n)`` of the
``n`` weights by absolute value), the perturbation on an input ``u`` is exactly
``e = h - h_k = (W - W_k) u`` (the bias is not pruned and cancels).

Formal guarantees: none. ``e`` is a deterministic function of ``u``, not fresh randomness; fitting a
Laplace or Gaussian law to the pooled coordinates of ``e`` gives an *equivalent* noise scale, an
analogy from the paper and not a differential-privacy guarantee. It concerns the activations of an
input as seen by whoever holds them, not the records a model was trained on.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from fedprune.activation.layers import apply_weight, get_affine_layer
from fedprune.masks.topk import keep_count, top_k

__all__ = [
    "NoiseFit",
    "PerturbationStats",
    "activation_perturbation",
    "fit_gaussian",
    "fit_laplace",
    "magnitude_prune",
    "measure_perturbation",
    "prune_model_layer",
]


def magnitude_prune(weight: torch.Tensor, *, keep_fraction: float) -> torch.Tensor:
    """A copy of ``weight`` keeping its largest-magnitude entries and zeroing the rest.

    Exactly ``keep_count(weight.numel(), keep_fraction)`` entries survive (the same count and
    tie-breaking as mask selection, :mod:`fedprune.masks.topk`: halves round up, ties go to the
    lower flat index); zeros among them stay zero.
    """
    w = weight.detach()
    keep = top_k(w.abs(), keep_count(w.numel(), keep_fraction))
    return torch.where(keep, w, torch.zeros_like(w))


def prune_model_layer(model: nn.Module, layer_name: str, *, keep_fraction: float) -> nn.Module:
    """A deep copy of ``model`` whose layer ``layer_name`` has its weight magnitude-pruned.

    Only that layer's weight changes (its bias and every other layer are copied as they are); the
    copy is one-shot pruned, not fine-tuned.
    """
    pruned = copy.deepcopy(model)
    layer = get_affine_layer(pruned, layer_name)
    with torch.no_grad():
        layer.weight.copy_(magnitude_prune(layer.weight, keep_fraction=keep_fraction))
    return pruned


@torch.no_grad()
def activation_perturbation(
    layer: nn.Linear | nn.Conv2d, layer_input: torch.Tensor, *, keep_fraction: float
) -> torch.Tensor:
    """``e = (W - W_k) u``: the unpruned minus the pruned layer output on ``layer_input`` ``u``.

    Parameters
    ----------
    layer:
        The unpruned layer (not modified).
    layer_input:
        A batch of inputs to the layer, shape ``(N, in_features)`` or ``(N, C, H, W)``.
    keep_fraction:
        Fraction ``k`` in (0, 1] of the weights that pruning keeps.

    Returns
    -------
    Tensor shaped like the layer's output on ``layer_input``.
    """
    removed = layer.weight - magnitude_prune(layer.weight, keep_fraction=keep_fraction)
    return apply_weight(layer, layer_input, removed)


@dataclass(frozen=True)
class NoiseFit:
    """A maximum-likelihood fit of a location-scale law to pooled perturbation samples.

    Attributes
    ----------
    family:
        ``"laplace"`` (``scale`` is ``b``; density ``exp(-|x - loc| / b) / (2b)``) or
        ``"gaussian"`` (``scale`` is ``sigma``).
    loc, scale:
        Fitted location and scale, in the units of the activations.
    ks_statistic:
        Kolmogorov-Smirnov distance ``sup |F_empirical - F_fit|`` in [0, 1]: smaller fits better.
    mean_log_likelihood:
        Average log-density of the samples under the fit (higher fits better).
    """

    family: Literal["laplace", "gaussian"]
    loc: float
    scale: float
    ks_statistic: float
    mean_log_likelihood: float

    @property
    def std(self) -> float:
        """Standard deviation of the fitted law (``b * sqrt(2)`` for Laplace, ``sigma`` else)."""
        return self.scale * math.sqrt(2.0) if self.family == "laplace" else self.scale


def _pooled(samples: torch.Tensor) -> torch.Tensor:
    x = samples.detach().flatten().to(torch.float64)
    if x.numel() < 2:
        raise ValueError(f"expected at least 2 samples, got {x.numel()}")
    return x


def _ks_statistic(cdf: torch.Tensor) -> float:
    """KS distance of the empirical law from a fit whose CDF at the sorted samples is ``cdf``."""
    n = cdf.numel()
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(ranks / n - cdf, cdf - (ranks - 1) / n).max())


def _check_spread(scale: float, family: str) -> None:
    if not scale > 0.0:
        raise ValueError(f"cannot fit a {family} law: the samples have no spread (scale {scale})")


def fit_laplace(samples: torch.Tensor) -> NoiseFit:
    """Maximum-likelihood Laplace fit: ``loc`` = median, ``b`` = mean ``|x - loc|``.

    All entries of ``samples`` are pooled as one i.i.d. sample (a modelling assumption).
    """
    x = _pooled(samples)
    loc = float(x.median())
    b = float((x - loc).abs().mean())
    _check_spread(b, "laplace")
    z = (torch.sort(x).values - loc) / b
    cdf = torch.where(z < 0, 0.5 * torch.exp(z.clamp(max=0)), 1 - 0.5 * torch.exp(-z.clamp(min=0)))
    loglik = float((-(x - loc).abs() / b).mean()) - math.log(2 * b)
    return NoiseFit("laplace", loc, b, _ks_statistic(cdf), loglik)


def fit_gaussian(samples: torch.Tensor) -> NoiseFit:
    """Maximum-likelihood Gaussian fit: ``loc`` = mean, ``sigma`` = standard deviation (ddof 0).

    All entries of ``samples`` are pooled as one i.i.d. sample (a modelling assumption).
    """
    x = _pooled(samples)
    loc = float(x.mean())
    sigma = float(x.std(correction=0))
    _check_spread(sigma, "gaussian")
    z = (torch.sort(x).values - loc) / sigma
    loglik = -0.5 * float((((x - loc) / sigma) ** 2).mean()) - math.log(
        sigma * math.sqrt(2 * math.pi)
    )
    return NoiseFit("gaussian", loc, sigma, _ks_statistic(torch.special.ndtr(z)), loglik)


@dataclass(frozen=True)
class PerturbationStats:
    """Summary of the pruning perturbation ``e = (W - W_k) u`` of one layer on a batch of inputs.

    Attributes
    ----------
    keep_fraction, num_weights, num_kept:
        Pruning level and the weight counts it gives.
    num_samples:
        Number of pooled activation coordinates (examples x output coordinates).
    mean, std, mean_abs, max_abs:
        Moments of the pooled coordinates of ``e``.
    relative_norm:
        ``||e||_F / ||W u||_F`` over the batch: the perturbation's size relative to the signal.
    laplace, gaussian:
        Maximum-likelihood fits of the pooled coordinates.
    """

    keep_fraction: float
    num_weights: int
    num_kept: int
    num_samples: int
    mean: float
    std: float
    mean_abs: float
    max_abs: float
    relative_norm: float
    laplace: NoiseFit
    gaussian: NoiseFit


@torch.no_grad()
def measure_perturbation(
    layer: nn.Linear | nn.Conv2d, layer_input: torch.Tensor, *, keep_fraction: float
) -> PerturbationStats:
    """Measure and fit the perturbation that pruning ``layer`` to ``keep_fraction`` causes.

    ``layer_input`` is a batch of inputs to the layer (e.g. from
    :func:`fedprune.activation.layers.capture_layer_io`). Requires ``keep_fraction < 1`` in effect:
    a perturbation that is identically zero cannot be fitted (``ValueError``).
    """
    e = activation_perturbation(layer, layer_input, keep_fraction=keep_fraction).to(torch.float64)
    signal = apply_weight(layer, layer_input, layer.weight).to(torch.float64)
    return PerturbationStats(
        keep_fraction=keep_fraction,
        num_weights=layer.weight.numel(),
        num_kept=keep_count(layer.weight.numel(), keep_fraction),
        num_samples=e.numel(),
        mean=float(e.mean()),
        std=float(e.std(correction=0)),
        mean_abs=float(e.abs().mean()),
        max_abs=float(e.abs().max()),
        relative_norm=float(e.norm() / signal.norm().clamp_min(1e-300)),
        laplace=fit_laplace(e),
        gaussian=fit_gaussian(e),
    )
