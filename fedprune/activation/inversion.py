"""Model inversion of hidden activations: a decoder trained on public (activation, input) pairs.

Threat model: the attacker holds the activations of a layer for private inputs and knows the model
as deployed (including any pruning) and the noise mechanism and scale, if any. It passes public
inputs through the same mechanism to train a decoder from activations back to inputs, then decodes
the private activations. A good reconstruction shows that the activations leak their input; a poor
one shows only that *this* attack failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from fedprune.activation.metrics import mse_per_image, ssim

__all__ = [
    "Inverter",
    "Perturb",
    "ReconstructionQuality",
    "reconstruct",
    "reconstruction_quality",
    "train_inverter",
]

logger = logging.getLogger(__name__)

Perturb = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""``perturb(activations, generator)``: the release mechanism applied to a batch of activations."""


class Inverter(nn.Module):
    """MLP decoder from a layer's activations to images in ``[0, 1]``.

    Activations are standardised per feature with fixed statistics, then decoded by
    ``Linear-ReLU-Linear-ReLU-Linear-sigmoid`` and reshaped to ``output_shape`` ``(C, H, W)``.
    """

    def __init__(
        self,
        *,
        feature_mean: torch.Tensor,
        feature_std: torch.Tensor,
        output_shape: tuple[int, int, int],
        hidden: int = 512,
    ) -> None:
        super().__init__()
        in_features = feature_mean.numel()
        out_features = output_shape[0] * output_shape[1] * output_shape[2]
        self.output_shape = output_shape
        self.register_buffer("feature_mean", feature_mean.detach().flatten().clone())
        self.register_buffer("feature_std", feature_std.detach().flatten().clamp_min(1e-6).clone())
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_features),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        mean, std = self.get_buffer("feature_mean"), self.get_buffer("feature_std")
        z = (features.flatten(1) - mean) / std
        return torch.sigmoid(self.net(z)).reshape(-1, *self.output_shape)


def train_inverter(
    features: torch.Tensor,
    targets: torch.Tensor,
    *,
    perturb: Perturb | None = None,
    epochs: int = 200,
    lr: float = 1e-3,
    batch_size: int = 64,
    hidden: int = 512,
    seed: int = 0,
    progress: bool = False,
) -> Inverter:
    """Train an :class:`Inverter` on public pairs ``(features[i], targets[i])`` with Adam on MSE.

    Parameters
    ----------
    features:
        Clean (unperturbed) public activations, ``(N, ...)``; for a pruned model, the pruned
        model's activations.
    targets:
        The public inputs that produced them, ``(N, C, H, W)`` in ``[0, 1]``.
    perturb:
        Release mechanism applied to every batch with fresh randomness (e.g. Laplace noise), so the
        decoder learns under the same noise as the private activations it will attack; ``None``
        when the release is deterministic.
    seed:
        Seeds initialisation, shuffling and the perturbation's randomness.
    """
    if features.shape[0] != targets.shape[0] or targets.ndim != 4:
        raise ValueError(
            f"expected features (N, ...) and targets (N, C, H, W) with equal N, got "
            f"{tuple(features.shape)} and {tuple(targets.shape)}"
        )
    if epochs < 1:
        raise ValueError(f"expected epochs >= 1, got {epochs}")
    generator = torch.Generator().manual_seed(seed)
    release = features if perturb is None else perturb(features, generator)
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching global RNG
        torch.manual_seed(seed)
        inverter = Inverter(
            feature_mean=release.flatten(1).mean(dim=0),
            feature_std=release.flatten(1).std(dim=0),
            output_shape=(targets.shape[1], targets.shape[2], targets.shape[3]),
            hidden=hidden,
        )
    optimizer = torch.optim.Adam(inverter.parameters(), lr=lr)
    n = features.shape[0]
    loss = torch.tensor(float("nan"))
    for _ in tqdm(range(epochs), desc="inverter", disable=not progress, leave=False):
        for idx in torch.randperm(n, generator=generator).split(batch_size):
            batch = features[idx] if perturb is None else perturb(features[idx], generator)
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(inverter(batch), targets[idx])
            loss.backward()
            optimizer.step()
    logger.debug("inverter: last training batch MSE %.5f", loss.item())
    return inverter.eval()


@torch.no_grad()
def reconstruct(inverter: Inverter, features: torch.Tensor) -> torch.Tensor:
    """Decode released activations ``(N, ...)`` into images ``(N, C, H, W)`` in ``[0, 1]``."""
    return inverter.eval()(features)


@dataclass(frozen=True)
class ReconstructionQuality:
    """Mean per-image MSE (lower: better attack) and SSIM (higher: better attack) of N images."""

    mse: float
    ssim: float
    num_examples: int


def reconstruction_quality(
    reconstructions: torch.Tensor, originals: torch.Tensor
) -> ReconstructionQuality:
    """Compare reconstructions with the original inputs (both ``(N, C, H, W)`` in ``[0, 1]``)."""
    return ReconstructionQuality(
        mse=float(mse_per_image(reconstructions, originals).mean()),
        ssim=float(ssim(reconstructions, originals).mean()),
        num_examples=originals.shape[0],
    )
