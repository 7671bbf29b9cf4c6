"""What an audit reads from a run directory: summary, config, data split and final model.

A run directory is ``fedprune train --out DIR`` (``summary.json`` + ``model.pt``) or
``fedprune run --out DIR`` (``summary.json`` + ``checkpoint.pt``, whose model is the global
model after the last completed round). The split is rebuilt from the recorded config (splits are
deterministic in ``seed``), so members are exactly the run's private records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from fedprune.config import RunConfig
from fedprune.data import PublicPrivateSplit
from fedprune.federated.checkpoint import CHECKPOINT_FILE, load_checkpoint
from fedprune.pipeline import build_model, load_split
from fedprune.summary import SUMMARY_FILE, RunSummary
from fedprune.training.centralised import MODEL_FILE, load_model_state

__all__ = ["AuditTarget", "load_target"]


@dataclass(frozen=True)
class AuditTarget:
    """A trained run to audit.

    Attributes
    ----------
    run_dir:
        Where it was read from.
    summary:
        Its ``summary.json`` (the accountant's epsilon is ``summary.epsilon``).
    config:
        The resolved config it ran with.
    split:
        Its public/private/test split, rebuilt from ``config``.
    model:
        The final model, in eval mode.
    """

    run_dir: Path
    summary: RunSummary
    config: RunConfig
    split: PublicPrivateSplit
    model: nn.Module


def _config(summary: RunSummary) -> RunConfig:
    """The run's config; JSON stores ``inf`` as ``null`` (fedprune.io), so float keys map back."""
    defaults = RunConfig().to_flat()
    flat = {
        k: math.inf if v is None and isinstance(defaults.get(k), float) else v
        for k, v in summary.config.items()
    }
    return RunConfig.from_flat(flat)


def load_target(run_dir: str | Path) -> AuditTarget:
    """Read the run in ``run_dir``.

    Raises
    ------
    FileNotFoundError
        No such directory, no ``summary.json``, or no saved model (``model.pt`` or
        ``checkpoint.pt``) in it.
    ValueError
        A corrupt summary, config or model file, or weights that do not fit the config's model.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {path} does not exist")
    if not (path / SUMMARY_FILE).exists():
        raise FileNotFoundError(f"{path} is not a run directory: no {SUMMARY_FILE}")
    summary = RunSummary.read(path)
    config = _config(summary)
    if (path / MODEL_FILE).exists():
        state = load_model_state(path)
    else:
        checkpoint = load_checkpoint(path)
        if checkpoint is None:
            raise FileNotFoundError(
                f"no saved model in {path}: expected {MODEL_FILE} (fedprune train) or "
                f"{CHECKPOINT_FILE} (fedprune run)"
            )
        state = checkpoint.model
    split = load_split(config.data, seed=config.seed)
    model = build_model(config, split)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"the saved model in {path} does not fit its config: {err}") from err
    model.eval()
    return AuditTarget(run_dir=path, summary=summary, config=config, split=split, model=model)
