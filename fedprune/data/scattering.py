"""A 2-D wavelet scattering transform (Mallat 2012; Bruna & Mallat 2013), in torch.

Fixed, data-independent features: Tramèr & Boneh (ICLR 2021, "Differentially Private Learning
Needs Better Features") show that DP-SGD on top of ScatterNet features beats end-to-end DP-SGD on
small images, because the model DP-SGD trains (and adds noise to) is small. The filters here are
the Morlet filter bank of Kymatio's ``Scattering2D`` (Andreux et al., JMLR 2020), re-derived in
numpy and applied with ``torch.fft``; the algorithm is the standard order-2 cascade with
Fourier-domain subsampling.

For an image ``(H, W)``, ``J`` scales and ``L`` angles the output has
``K = 1 + J L + L^2 J (J - 1) / 2`` channels per input channel (81 for ``J = 2, L = 8``) at
resolution ``(H / 2^J, W / 2^J)``: the low-pass average ``S0``, first-order ``|x * psi| * phi``
and second-order ``||x * psi1| * psi2| * phi`` coefficients (``j2 > j1``).

Privacy: the transform has no parameters and looks at no data, so features cost no privacy.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Scattering2D", "scattering_channels"]


def scattering_channels(scales: int, angles: int) -> int:
    """Output channels per input channel at order 2: ``1 + J L + L^2 J (J-1) / 2``."""
    return 1 + scales * angles + angles * angles * scales * (scales - 1) // 2


def _gabor(m: int, n: int, sigma: float, theta: float, xi: float, slant: float) -> np.ndarray:
    """A periodised complex Gabor filter on an ``m x n`` grid, spatial domain, ``complex128``."""
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    curv = rot @ np.diag([1.0, slant * slant]) @ rot.T / (2 * sigma * sigma)
    out = np.zeros((m, n), np.complex128)
    for ex in (-2, -1, 0, 1):
        for ey in (-2, -1, 0, 1):
            xx, yy = np.mgrid[ex * m : (ex + 1) * m, ey * n : (ey + 1) * n]
            arg = -(
                curv[0, 0] * xx * xx + (curv[0, 1] + curv[1, 0]) * xx * yy + curv[1, 1] * yy * yy
            ) + 1j * (xx * xi * math.cos(theta) + yy * xi * math.sin(theta))
            out += np.exp(arg)
    return out / (2 * math.pi * sigma * sigma / slant)


def _morlet(m: int, n: int, sigma: float, theta: float, xi: float, slant: float) -> np.ndarray:
    """A Morlet wavelet: the Gabor filter minus its envelope scaled to give zero mean."""
    wave = _gabor(m, n, sigma, theta, xi, slant)
    envelope = _gabor(m, n, sigma, theta, 0.0, slant)
    return wave - (wave.sum() / envelope.sum()) * envelope


def _periodise(hat: np.ndarray, res: int) -> np.ndarray:
    """The Fourier filter ``hat`` at resolution ``2^-res``: its band-limited part, aliased."""
    m, n = hat.shape
    k = 2**res
    keep = np.ones_like(hat)
    keep[int(m / (2 * k)) : int(m / (2 * k)) + int(m * (1 - 1 / k)), :] = 0
    keep[:, int(n / (2 * k)) : int(n / (2 * k)) + int(n * (1 - 1 / k))] = 0
    return (hat * keep).reshape(k, m // k, k, n // k).sum(axis=(0, 2))


def _subsample(x_hat: torch.Tensor, k: int) -> torch.Tensor:
    """Fourier transform of ``x[..., ::k, ::k]`` from the Fourier transform ``x_hat`` of ``x``."""
    if k == 1:
        return x_hat
    *batch, m, n = x_hat.shape
    # Sum the k x k aliased copies of the spectrum; on the real view (complex reductions are slow).
    folded = torch.view_as_real(x_hat).reshape(*batch, k, m // k, k, n // k, 2)
    return torch.view_as_complex(folded.sum(dim=-5).sum(dim=-3).div_(k * k))


class Scattering2D:
    """Order-2 scattering of ``(N, C, H, W)`` float32 images -> ``(N, C*K, H/2^J, W/2^J)``.

    ``J = scales`` and ``L = angles``. ``H`` and ``W`` must be multiples of ``2^J``; the input is
    reflect-padded to the next size that leaves at least ``2^J`` pixels on each side (Kymatio's
    rule) and the border is cropped from the output. Deterministic, differentiable, no
    parameters; call it on batches.

    Raises
    ------
    ValueError
        ``J < 1``, ``L < 1``, or ``H``/``W`` not multiples of ``2^J`` (or too small to pad).
    """

    def __init__(self, shape: tuple[int, int], *, scales: int = 2, angles: int = 8) -> None:
        if scales < 1 or angles < 1:
            raise ValueError(f"scattering needs scales, angles >= 1, got {scales}, {angles}")
        h, w = shape
        step = 2**scales
        if h % step or w % step or h < step or w < step:
            raise ValueError(
                f"scattering with {scales} scales needs image sides that are multiples of "
                f"{step}, got {shape}"
            )
        self.scales, self.angles, self.shape = scales, angles, (h, w)
        self._padded = (((h + step) // step + 1) * step, ((w + step) // step + 1) * step)
        pm, pn = self._padded[0] - h, self._padded[1] - w
        self._pad = (pn // 2, (pn + 1) // 2, pm // 2, (pm + 1) // 2)
        if max(self._pad) >= min(h, w):
            raise ValueError(f"image {shape} too small to reflect-pad for scales={scales}")
        m, n = self._padded
        phi_hat = np.real(np.fft.fft2(_gabor(m, n, 0.8 * 2 ** (scales - 1), 0.0, 0.0, 1.0)))
        self._phi = [torch.from_numpy(_periodise(phi_hat, r)).float() for r in range(scales)]
        # _psi[j][r]: the L wavelets of scale j in Fourier at resolution 2^-r, (L, m/2^r, n/2^r),
        # for the resolutions they are applied at: 0 (first order) and each j1 < j (second order).
        self._psi: list[list[torch.Tensor]] = []
        for j in range(scales):
            hats = []
            for t in range(angles):
                theta = (int(angles - angles / 2 - 1) - t) * math.pi / angles
                spatial = _morlet(m, n, 0.8 * 2**j, theta, 0.75 * math.pi / 2**j, 4.0 / angles)
                hats.append(np.real(np.fft.fft2(spatial)))
            self._psi.append(
                [
                    torch.from_numpy(np.stack([_periodise(h_, r) for h_ in hats])).float()
                    for r in range(max(j, 1))
                ]
            )

    @property
    def channels(self) -> int:
        """Output channels per input channel."""
        return scattering_channels(self.scales, self.angles)

    @property
    def output_shape(self) -> tuple[int, int]:
        """``(H / 2^J, W / 2^J)``."""
        return self.shape[0] // 2**self.scales, self.shape[1] // 2**self.scales

    def _low_pass(self, u_hat: torch.Tensor, j: int) -> torch.Tensor:
        """Real ``u * phi`` subsampled to resolution ``2^-J`` with the border cropped."""
        s = torch.fft.ifft2(_subsample(u_hat * self._phi[j], 2 ** (self.scales - j))).real
        return s[..., 1:-1, 1:-1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[-2:]) != self.shape:
            raise ValueError(
                f"scattering expects (N, C, {self.shape[0]}, {self.shape[1]}) images, "
                f"got {tuple(x.shape)}"
            )
        n, c = x.shape[:2]
        u0 = F.pad(x.reshape(n * c, 1, *self.shape).float(), self._pad, mode="reflect")
        u0_hat = torch.fft.fft2(u0)  # (B, 1, m, n): one channel axis to broadcast over angles
        out = [self._low_pass(u0_hat, 0)]
        second: list[torch.Tensor] = []
        for j1 in range(self.scales):
            # All angles of scale j1 at once: (B, L, m / 2^j1, n / 2^j1).
            u1 = torch.fft.ifft2(_subsample(u0_hat * self._psi[j1][0], 2**j1)).abs()
            u1_hat = torch.fft.fft2(u1)
            out.append(self._low_pass(u1_hat, j1))
            paths = []  # (B, L1, L2, h, w) per j2 > j1, in Kymatio's order (j1, t1, j2, t2)
            for j2 in range(j1 + 1, self.scales):
                u2_hat = _subsample(
                    u1_hat[:, :, None] * self._psi[j2][j1], 2 ** (j2 - j1)
                )  # (B, L1, L2, ...)
                paths.append(self._low_pass(torch.fft.fft2(torch.fft.ifft2(u2_hat).abs()), j2))
            if paths:
                block = torch.cat(paths, dim=2)
                second.append(block.flatten(1, 2))
        s = torch.cat(out + second, dim=1)  # (N*C, K, h, w)
        return s.reshape(n, c * s.shape[1], *s.shape[-2:]).contiguous()
