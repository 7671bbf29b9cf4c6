"""Figures of the activation-privacy study: trade-off, reconstruction grid, perturbation fits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

from fedprune.activation.perturbation import PerturbationStats

__all__ = ["plot_perturbation_fits", "plot_reconstruction_grid", "plot_tradeoff"]

_STYLE = {
    "pruning": {"color": "tab:blue", "marker": "o", "label": "magnitude pruning (keep k)"},
    "laplace": {"color": "tab:orange", "marker": "s", "label": "Laplace noise, matched accuracy"},
    "gaussian": {"color": "tab:green", "marker": "^", "label": "Gaussian noise, matched accuracy"},
}


def plot_tradeoff(
    points: Sequence[dict[str, float | str]],
    *,
    mean_image_mse: float,
    mean_image_ssim: float,
    title: str,
    path: Path,
) -> None:
    """Two panels, reconstruction SSIM and MSE against test accuracy, one series per protection.

    Each point is a mapping with ``protection`` (``none``/``pruning``/``laplace``/``gaussian``),
    ``keep_fraction``, ``test_accuracy``, ``recon_ssim``/``recon_mse`` (adapted attack, solid)
    and ``unadapted_ssim``/``unadapted_mse`` (dotted). The dashed line is the attacker's trivial
    guess (the mean public image).
    """
    fig = Figure(figsize=(12, 5), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric, trivial, better in (
        (axes[0], "ssim", mean_image_ssim, "lower SSIM = less leaked"),
        (axes[1], "mse", mean_image_mse, "higher MSE = less leaked"),
    ):
        for protection, style in _STYLE.items():
            pts = sorted(  # along the pruning path: k from large to small
                (p for p in points if p["protection"] == protection),
                key=lambda p: -float(p["keep_fraction"]),
            )
            xs = [float(p["test_accuracy"]) for p in pts]
            ys = [float(p[f"recon_{metric}"]) for p in pts]
            ax.plot(xs, ys, linestyle="-", markersize=7, **style)
            ax.plot(
                xs,
                [float(p[f"unadapted_{metric}"]) for p in pts],
                linestyle=":",
                marker=style["marker"],
                color=style["color"],
                markerfacecolor="none",
                alpha=0.6,
            )
            if protection == "pruning":
                for p, x, y in zip(pts, xs, ys, strict=True):
                    ax.annotate(
                        f"k={float(p['keep_fraction']):g}",
                        (x, y),
                        textcoords="offset points",
                        xytext=(-6, -14),
                        fontsize=8,
                        color=style["color"],
                    )
        for p in points:
            if p["protection"] == "none":
                ax.plot(
                    float(p["test_accuracy"]),
                    float(p[f"recon_{metric}"]),
                    marker="*",
                    markersize=13,
                    color="black",
                    linestyle="none",
                    label="no protection",
                )
        ax.plot(
            [],
            [],
            linestyle=":",
            marker="o",
            markerfacecolor="none",
            color="grey",
            label="dotted, hollow: attacker ignores the protection",
        )
        ax.axhline(trivial, color="grey", linestyle="--", label="mean public image (no attack)")
        ax.set_xlabel("test accuracy of the protected model")
        ax.set_ylabel(f"reconstruction {metric.upper()} on private records")
        ax.set_title(better, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=120)


def plot_reconstruction_grid(
    originals: torch.Tensor, rows: Sequence[tuple[str, torch.Tensor]], *, title: str, path: Path
) -> None:
    """Image grid: first row ``originals`` ``(M, C, H, W)``, then one labelled row per setting.

    Single-channel images are drawn dark-on-light in [0, 1]; colour images as RGB.
    """
    all_rows = [("original (private)", originals), *rows]
    n_rows, n_cols = len(all_rows), originals.shape[0]
    fig = Figure(figsize=(2.6 + 0.75 * n_cols, 0.2 + 0.78 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, (label, images) in enumerate(all_rows):
        for c in range(n_cols):
            ax = axes[r][c]
            img = images[c].detach().clamp(0, 1)
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray_r", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)


def plot_perturbation_fits(
    samples: Sequence[tuple[PerturbationStats, torch.Tensor]], *, title: str, path: Path
) -> None:
    """Per keep-fraction: histogram of the pooled perturbation, its Laplace and Gaussian fits."""
    n = len(samples)
    cols = min(n, 3)
    fig = Figure(figsize=(4.2 * cols, 3.4 * math.ceil(n / cols)), layout="constrained")
    axes = fig.subplots(math.ceil(n / cols), cols, squeeze=False).flatten()
    for ax, (stats, e) in zip(axes, samples, strict=False):
        x = e.detach().flatten().double()
        lim = float(x.abs().max())
        counts = torch.histc(x, bins=120, min=-lim, max=lim)
        edges = torch.linspace(-lim, lim, 121, dtype=torch.float64)
        density = counts / (x.numel() * (edges[1] - edges[0]))
        ax.stairs(
            density.numpy(),
            edges.numpy(),
            fill=True,
            color="lightgrey",
            label="measured e = (W - W_k) u",
        )
        grid = torch.linspace(-lim, lim, 400, dtype=torch.float64)
        lap, gau = stats.laplace, stats.gaussian
        lap_pdf = torch.exp(-(grid - lap.loc).abs() / lap.scale) / (2 * lap.scale)
        gau_pdf = torch.exp(-0.5 * ((grid - gau.loc) / gau.scale) ** 2) / (
            gau.scale * math.sqrt(2 * math.pi)
        )
        ax.plot(
            grid.numpy(),
            lap_pdf.numpy(),
            color="tab:orange",
            label=f"Laplace b={lap.scale:.3g} (KS {lap.ks_statistic:.3f})",
        )
        ax.plot(
            grid.numpy(),
            gau_pdf.numpy(),
            color="tab:green",
            label=f"Gaussian σ={gau.scale:.3g} (KS {gau.ks_statistic:.3f})",
        )
        ax.set_yscale("log")
        ax.set_ylim(bottom=max(1e-4, 0.5 / x.numel()))
        ax.set_title(
            f"keep k={stats.keep_fraction:g} ({stats.num_kept}/{stats.num_weights})", fontsize=9
        )
        ax.set_xlabel("activation perturbation")
        ax.legend(fontsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
