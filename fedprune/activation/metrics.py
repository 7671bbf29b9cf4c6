"""Reconstruction quality: per-image mean squared error and SSIM with a Gaussian window."""

from __future__ import annotations

import torch

__all__ = ["gaussian_window", "mse_per_image", "ssim"]


def _check_images(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"expected two (N, C, H, W) batches of equal shape, got {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )


def mse_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over pixels and channels of ``(x - y)**2``: shape ``(N,)``, float64."""
    _check_images(x, y)
    return ((x.double() - y.double()) ** 2).flatten(1).mean(dim=1)


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """``size x size`` float64 Gaussian weights centred on the middle pixel, summing to 1."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"expected an odd window size >= 1, got {size}")
    if not sigma > 0:
        raise ValueError(f"expected sigma > 0, got {sigma}")
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    window = torch.outer(g, g)
    return window / window.sum()


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float = 1.0,
    window_size: int = 7,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of each image pair: shape ``(N,)``, float64.

    Local means, variances and covariance are Gaussian-weighted (``window_size``, ``sigma``) over
    every position where the window fits inside the image (no padding; population moments), and
    ``SSIM = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))`` with
    ``C1 = (k1 L)²``, ``C2 = (k2 L)²``, ``L = data_range``, averaged over positions and channels.
    ``SSIM(x, x) = 1``. The 7x7 default suits 8x8 digits (a 2x2 map); 11x11 is the usual default
    for larger images.
    """
    _check_images(x, y)
    if x.shape[-1] < window_size or x.shape[-2] < window_size:
        raise ValueError(
            f"expected images of at least {window_size}x{window_size}, got {tuple(x.shape[-2:])}"
        )
    c = x.shape[1]
    window = gaussian_window(window_size, sigma).expand(c, 1, window_size, window_size)

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(t, window, groups=c)

    xd, yd = x.double(), y.double()
    mu_x, mu_y = local_mean(xd), local_mean(yd)
    var_x = local_mean(xd * xd) - mu_x**2
    var_y = local_mean(yd * yd) - mu_y**2
    cov = local_mean(xd * yd) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim_map.flatten(1).mean(dim=1)
