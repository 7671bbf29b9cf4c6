"""Membership-inference attacks on a trained classifier: loss threshold and LiRA.

Both attacks only query the model on records (black box); both return one *score* per record,
larger meaning "more likely a member" (see :mod:`fedprune.audit.metrics`).

* **Loss threshold** (Yeom et al., 2018): score = ``-cross_entropy(model(x), y)``.
* **LiRA, online, global variance** (Carlini et al., 2022): reference models are trained with
  the target's recipe on random halves of a pool, so every record is IN for half of them and
  OUT for the other half. The statistic of a record under a model is its logit-scaled confidence
  ``phi = log(p_y / (1 - p_y))``; per record, ``phi`` is modelled as Gaussian under IN and under
  OUT (per-record means, one pooled standard deviation each, as the paper recommends with few
  reference models), and the score is the log-likelihood ratio of the target's ``phi``.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["balanced_inclusion", "example_statistics", "lira_scores", "loss_scores"]

# Floor of the pooled LiRA standard deviations, so identical statistics cannot divide by zero.
_MIN_STD = 1e-6


@torch.no_grad()
def example_statistics(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 512
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(loss, phi)`` per record of ``dataset`` (``(x, y)`` pairs), float64 ``(N,)`` each.

    ``loss`` is the cross-entropy of the true label; ``phi = log p_y - log(1 - p_y)`` is computed
    from the logits as ``z_y - logsumexp(z_{-y})`` (stable for confident models). The model's
    train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    losses, phis = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size):
        logits = model(x).double()
        true = logits.gather(1, y[:, None]).squeeze(1)
        others = logits.scatter(1, y[:, None], float("-inf"))
        losses.append(torch.logsumexp(logits, dim=1) - true)
        phis.append(true - torch.logsumexp(others, dim=1))
    model.train(was_training)
    return torch.cat(losses).numpy(), torch.cat(phis).numpy()


def loss_scores(losses: NDArray[np.float64]) -> NDArray[np.float64]:
    """Loss-threshold attack scores: ``-loss`` (low loss = member)."""
    return -np.asarray(losses, dtype=np.float64)


def balanced_inclusion(num_models: int, num_records: int, *, seed: int) -> NDArray[np.bool_]:
    """bool ``(num_models, num_records)``: record ``j`` trains reference model ``k`` iff True.

    Every record is IN for exactly ``num_models // 2`` models (chosen uniformly at random), so
    each has both IN and OUT statistics; ``num_models`` must be even and >= 2.
    """
    if num_models < 2 or num_models % 2:
        raise ValueError(f"expected an even number of reference models >= 2, got {num_models}")
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((num_models, num_records)), axis=0)
    return np.asarray(order < num_models // 2)


def lira_scores(
    target_phi: NDArray[np.float64],
    reference_phi: NDArray[np.float64],
    inclusion: NDArray[np.bool_],
) -> NDArray[np.float64]:
    """Online LiRA scores with global variances (module docstring), float64 ``(N,)``.

    Parameters
    ----------
    target_phi:
        ``(N,)`` statistics of the records under the target model.
    reference_phi:
        ``(K, N)`` statistics under each reference model.
    inclusion:
        ``(K, N)``: whether the record trained reference model ``k``; every record needs at least
        one IN and one OUT model (see :func:`balanced_inclusion`).
    """
    phi = np.asarray(reference_phi, dtype=np.float64)
    inc = np.asarray(inclusion, dtype=bool)
    if phi.shape != inc.shape or phi.ndim != 2 or phi.shape[1] != len(target_phi):
        raise ValueError(
            f"expected reference_phi and inclusion of shape (K, {len(target_phi)}), "
            f"got {phi.shape} and {inc.shape}"
        )
    n_in, n_out = inc.sum(axis=0), (~inc).sum(axis=0)
    if np.any(n_in == 0) or np.any(n_out == 0):
        raise ValueError("every record needs at least one IN and one OUT reference model")
    mu_in = np.where(inc, phi, 0.0).sum(axis=0) / n_in
    mu_out = np.where(~inc, phi, 0.0).sum(axis=0) / n_out
    std_in = max(float(np.std(phi[inc] - np.broadcast_to(mu_in, phi.shape)[inc])), _MIN_STD)
    std_out = max(float(np.std(phi[~inc] - np.broadcast_to(mu_out, phi.shape)[~inc])), _MIN_STD)
    t = np.asarray(target_phi, dtype=np.float64)
    log_in = -0.5 * ((t - mu_in) / std_in) ** 2 - np.log(std_in)
    log_out = -0.5 * ((t - mu_out) / std_out) ** 2 - np.log(std_out)
    return np.asarray(log_in - log_out)
