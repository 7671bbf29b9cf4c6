"""The attack must work on an unprotected layer: a weak attack must not pass as privacy."""

import pytest
import torch

from fedprune.activation.inversion import reconstruct, reconstruction_quality, train_inverter
from fedprune.activation.layers import capture_layer_io
from fedprune.activation.noise import unit_noise
from fedprune.data import load_dataset, split_public_private
from fedprune.models import create_model
from fedprune.training import train_sgd


@pytest.fixture(scope="module")
def digits_setup() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A classifier trained briefly on public digits; public and private images."""
    bundle = load_dataset("digits")
    split = split_public_private(bundle, public_fraction=0.5, public_kind="in-distribution", seed=0)
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=bundle.input_shape, num_classes=10)
    train_sgd(model, split.public.dataset, epochs=5, lr=0.05, seed=0)
    return model.eval(), split.public.dataset.tensors[0], split.private.dataset.tensors[0]


def test_inverter_recovers_private_digits_from_unprotected_layer(
    digits_setup: tuple[torch.nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x_public, x_private = digits_setup
    _, h_public = capture_layer_io(model, "1", x_public)
    _, h_private = capture_layer_io(model, "1", x_private)
    inverter = train_inverter(h_public, x_public, epochs=40, hidden=256, seed=0)
    quality = reconstruction_quality(reconstruct(inverter, h_private), x_private)
    mean_image = x_public.mean(dim=0, keepdim=True).expand_as(x_private)
    trivial = reconstruction_quality(mean_image, x_private)
    assert quality.num_examples == len(x_private)
    assert quality.ssim > 0.9
    assert quality.mse < 0.15 * trivial.mse  # the mean-image guess has MSE ~0.073


def test_inverter_fails_when_activations_are_drowned_in_noise(
    digits_setup: tuple[torch.nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x_public, x_private = digits_setup
    _, h_public = capture_layer_io(model, "1", x_public)
    _, h_private = capture_layer_io(model, "1", x_private)
    scale = 50.0 * float(h_public.std())

    def perturb(h: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return h + scale * unit_noise(h.shape, mechanism="gaussian", generator=g)

    inverter = train_inverter(h_public, x_public, perturb=perturb, epochs=40, hidden=256, seed=0)
    released = perturb(h_private, torch.Generator().manual_seed(1))
    quality = reconstruction_quality(reconstruct(inverter, released), x_private)
    mean_image = x_public.mean(dim=0, keepdim=True).expand_as(x_private)
    trivial = reconstruction_quality(mean_image, x_private)
    assert quality.mse > 0.9 * trivial.mse  # no better than guessing the mean image
    assert quality.ssim < trivial.ssim + 0.1


def test_train_inverter_validates_inputs() -> None:
    with pytest.raises(ValueError, match="equal N"):
        train_inverter(torch.rand(3, 4), torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="expected epochs >= 1"):
        train_inverter(torch.rand(3, 4), torch.rand(3, 1, 8, 8), epochs=0)
