"""The audit's figure: ROC curves of every attack on log-log axes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fedprune.audit.report import AttackResult
from fedprune.io import atomic_write

__all__ = ["plot_roc"]


def plot_roc(attacks: Sequence[AttackResult], *, title: str, path: Path) -> Path:
    """Write a log-log ROC plot of ``attacks`` (with the chance diagonal) to ``path`` (PNG).

    Points with FPR or TPR of 0 cannot be drawn on log axes; the axes start at half the smallest
    non-zero FPR of any attack (one false positive).
    """
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.subplots()
    low = 1.0
    for a in attacks:
        fpr, tpr = np.asarray(a.roc_fpr), np.asarray(a.roc_tpr)
        ok = (fpr > 0) & (tpr > 0)
        low = min(low, float(fpr[fpr > 0].min()) if np.any(fpr > 0) else 1.0)
        ax.plot(fpr[ok], tpr[ok], label=f"{a.name}: AUC {a.auc:.3f}, eps_lb {a.bound.epsilon:.2f}")
    low /= 2
    ax.plot([low, 1], [low, 1], linestyle="--", color="grey", label="chance")
    ax.set(xscale="log", yscale="log", xlim=(low, 1), ylim=(low, 1.05))
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title=title)
    ax.legend(fontsize="small", loc="lower right")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    return path
