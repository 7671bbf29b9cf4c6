"""Train a fresh model with a run's recipe on other private data (reference and canary models).

The audit's own models follow the target's config exactly (model, seed-derived initialisation,
public warm start, mask strategy, DP-SGD or SGD settings, target epsilon, rounds) through the
same centralised code path as ``fedprune train``. For a federated target this is an
approximation of its training (one holder instead of K clients): an attack built on imperfect
reference models is weaker, never invalid, so its lower bound stays a lower bound.
"""

from __future__ import annotations

import dataclasses

from torch import nn
from torch.utils.data import TensorDataset

from fedprune.config import RunConfig
from fedprune.data import PrivateDataset, PublicPrivateSplit
from fedprune.pipeline import build_model, warm_start
from fedprune.training.centralised import fit_centralised
from fedprune.training.recipe import new_ledger

__all__ = ["train_like"]


def train_like(
    config: RunConfig, split: PublicPrivateSplit, private: TensorDataset, *, description: str
) -> nn.Module:
    """A model trained by ``config``'s centralised recipe on ``private`` (eval mode).

    ``split`` supplies the public data (warm start, masks); its private part is replaced by
    ``private``. Private runs draw secure noise and account in a throw-away ledger: these
    models are the auditor's, trained on data the auditor holds.
    """
    own = dataclasses.replace(split, private=PrivateDataset(private, description=description))
    model = build_model(config, own)
    warm_start(model, own.public, config)
    ledger = new_ledger(config.privacy) if config.privacy.enabled else None
    fit_centralised(model, own, config, ledger=ledger)
    return model.eval()
