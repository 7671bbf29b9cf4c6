"""The scattering transform: Kymatio's output, the invariances it promises, and its errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedprune.data.scattering import Scattering2D, scattering_channels

REFERENCE = Path(__file__).with_name("scattering_kymatio_reference.npz")


def _reference_input() -> torch.Tensor:
    """The two 16x16 images ``scattering_kymatio_reference.npz`` was computed from, with
    ``kymatio.scattering2d.frontend.torch_frontend.ScatteringTorch2D(J=2, shape=(16, 16), L=4)``
    (Kymatio 0.3.0): a smooth texture and a disc."""
    i, j = np.mgrid[0:16, 0:16]
    x = np.stack([np.sin(i / 2.0) * np.cos(j / 3.0), ((i - 7) ** 2 + (j - 9) ** 2 < 20) * 1.0])
    return torch.tensor(x, dtype=torch.float32)[:, None]


def test_matches_kymatio_on_stored_reference() -> None:
    expected = torch.from_numpy(np.load(REFERENCE)["output"])
    got = Scattering2D((16, 16), scales=2, angles=4)(_reference_input())
    assert got.shape == expected.shape == (2, 25, 4, 4)
    # Kymatio normalises its Gabor filters with pi ~ 3.1415; here math.pi: ~3e-5 relative.
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    ("shape", "channels", "scales", "angles", "out"),
    [((28, 28), 1, 2, 8, (7, 7)), ((32, 32), 3, 2, 8, (8, 8)), ((32, 32), 1, 3, 4, (4, 4))],
)
def test_output_shape_counts_every_path(
    shape: tuple[int, int], channels: int, scales: int, angles: int, out: tuple[int, int]
) -> None:
    paths = 1 + scales * angles + angles * angles * math.comb(scales, 2)
    assert scattering_channels(scales, angles) == paths
    s = Scattering2D(shape, scales=scales, angles=angles)
    y = s(torch.rand(2, channels, *shape))
    assert y.shape == (2, channels * paths, *out)
    assert s.output_shape == out and s.channels == paths


def test_low_pass_keeps_constants_and_wavelets_ignore_them() -> None:
    y = Scattering2D((16, 16), scales=2, angles=4)(torch.full((1, 1, 16, 16), 0.7))
    torch.testing.assert_close(y[:, 0], torch.full((1, 4, 4), 0.7), rtol=1e-3, atol=1e-4)
    assert y[:, 1:].abs().max() < 1e-4  # Morlet wavelets have zero mean


def test_positively_homogeneous_and_deterministic() -> None:
    x = torch.rand(3, 1, 16, 16)
    s = Scattering2D((16, 16), scales=2, angles=4)
    torch.testing.assert_close(s(2.5 * x), 2.5 * s(x), rtol=1e-4, atol=1e-5)
    assert torch.equal(s(x), s(x))
    # Record by record: a batch gives what each record gives alone.
    torch.testing.assert_close(s(x)[1:2], s(x[1:2]))


def test_stable_to_small_translations() -> None:
    torch.manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.rand(4, 1, 30, 30), 3, stride=1)  # smooth 28x28
    shifted = torch.roll(x, shifts=1, dims=-1)
    s = Scattering2D((28, 28))
    pixel_change = ((shifted - x).norm() / x.norm()).item()
    feature_change = ((s(shifted) - s(x)).norm() / s(x).norm()).item()
    assert feature_change < 0.5 * pixel_change


def test_rotation_by_90_degrees_permutes_first_order_angles() -> None:
    i, j = np.mgrid[0:16, 0:16]
    textures = np.stack([np.sin(i / 1.5 + j / 4.0), np.cos(i / 5.0) * np.sin(j / 1.2)])
    x = torch.tensor(textures, dtype=torch.float32)[:, None]  # two oriented textures
    s = Scattering2D((16, 16), scales=2, angles=4)

    def first_order_energy(images: torch.Tensor) -> torch.Tensor:  # (image, j, theta)
        return s(images).mean(dim=(-2, -1))[:, 1:9].reshape(2, 2, 4)

    energy = first_order_energy(x)
    rotated = first_order_energy(torch.rot90(x, 1, dims=(-2, -1)))

    def distance(shift: int) -> float:
        moved = torch.roll(energy, shifts=shift, dims=-1)
        return float(((rotated - moved).norm(dim=-1) / energy.norm(dim=-1)).max())

    # Angles step by pi/4 over [0, pi): a quarter turn moves each orientation by two slots.
    assert distance(2) < 0.05
    assert min(distance(0), distance(1), distance(3)) > 0.5


@pytest.mark.parametrize(
    ("shape", "scales", "angles", "message"),
    [
        ((30, 30), 2, 8, "multiples of 4"),
        ((2, 2), 1, 8, "too small"),
        ((28, 28), 0, 8, "scales, angles >= 1"),
        ((28, 28), 2, 0, "scales, angles >= 1"),
    ],
)
def test_bad_shapes_and_parameters_are_refused(
    shape: tuple[int, int], scales: int, angles: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Scattering2D(shape, scales=scales, angles=angles)


def test_wrong_input_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"expects \(N, C, 28, 28\)"):
        Scattering2D((28, 28))(torch.rand(2, 1, 32, 32))
