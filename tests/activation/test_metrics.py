"""SSIM with a Gaussian window and per-image MSE, against hand computations."""

import math

import pytest
import torch

from fedprune.activation.metrics import gaussian_window, mse_per_image, ssim

C1, C2 = 0.01**2, 0.03**2


def test_ssim_of_an_image_with_itself_is_one() -> None:
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(x, x), torch.ones(5, dtype=torch.float64))


def test_ssim_of_constant_images_hand_case() -> None:
    # No variance: SSIM = (2ac + C1) / (a² + c² + C1) times C2 / C2.
    x = torch.full((1, 1, 8, 8), 0.2)
    y = torch.full((1, 1, 8, 8), 0.6)
    expected = (2 * 0.2 * 0.6 + C1) / (0.2**2 + 0.6**2 + C1)
    assert float(ssim(x, y)[0]) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.6001, abs=1e-4)


def test_ssim_single_window_matches_explicit_weighted_sums() -> None:
    # A 7x7 image and a 7x7 window: one position, moments as explicit Gaussian-weighted sums.
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 7, 7, generator=g)
    y = (0.5 * x + 0.3 * torch.rand(1, 1, 7, 7, generator=g)).clamp(0, 1)
    weights = [
        [math.exp(-((i - 3) ** 2 + (j - 3) ** 2) / (2 * 1.5**2)) for j in range(7)]
        for i in range(7)
    ]
    total = sum(map(sum, weights))
    xs, ys = x[0, 0].tolist(), y[0, 0].tolist()

    def wmean(f: list[list[float]]) -> float:
        return sum(weights[i][j] * f[i][j] for i in range(7) for j in range(7)) / total

    mx, my = wmean(xs), wmean(ys)
    vx = wmean([[v * v for v in row] for row in xs]) - mx * mx
    vy = wmean([[v * v for v in row] for row in ys]) - my * my
    cxy = wmean([[a * b for a, b in zip(r, s, strict=True)] for r, s in zip(xs, ys, strict=True)])
    cxy -= mx * my
    expected = ((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx**2 + my**2 + C1) * (vx + vy + C2))
    assert float(ssim(x, y)[0]) == pytest.approx(expected, rel=1e-9)
    assert float(ssim(x, y)[0]) == pytest.approx(float(ssim(y, x)[0]))  # symmetric


def test_ssim_averages_positions_and_ranks_degradation() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 1, 8, 8, generator=g)
    slightly = (x + 0.05 * torch.randn(1, 1, 8, 8, generator=g)).clamp(0, 1)
    badly = torch.rand(1, 1, 8, 8, generator=g)
    assert 1.0 > float(ssim(x, slightly)[0]) > float(ssim(x, badly)[0])
    inverted = 1.0 - x  # anti-correlated structure: negative structure term
    assert float(ssim(x, inverted)[0]) < 0.0


def test_ssim_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="equal shape"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 7))
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(torch.rand(1, 1, 5, 5), torch.rand(1, 1, 5, 5))


def test_gaussian_window_normalised_and_symmetric() -> None:
    w = gaussian_window(7, 1.5)
    assert w.shape == (7, 7)
    assert float(w.sum()) == pytest.approx(1.0)
    assert torch.allclose(w, w.T) and torch.allclose(w, w.flip(0))
    assert float(w[3, 3]) == float(w.max())
    with pytest.raises(ValueError, match="odd window size"):
        gaussian_window(6, 1.5)


def test_mse_per_image_hand_case() -> None:
    x = torch.zeros(2, 1, 2, 2)
    y = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[0.5, 0.5], [0.5, 0.5]]]])
    assert torch.allclose(mse_per_image(x, y), torch.tensor([0.25, 0.25], dtype=torch.float64))
