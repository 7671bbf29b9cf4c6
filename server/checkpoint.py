"""Per-round checkpoints of a federated run: write them atomically, read them back to resume."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedprune.config import RunConfig
from fedprune.masks import ParameterMask
from fedprune.io import write_json

__all__ = ["CHECKPOINT_FILE", "SUMMARY_FILE", "Checkpoint", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FILE = "checkpoint.pt"
SUMMARY_FILE = "summary.json"

# Settings that may differ between a checkpoint and the run resuming it.
_RESUMABLE_CHANGES = {"federated.num-rounds", "federated.resume", "out-dir"}


@dataclass(frozen=True)
class Checkpoint:
    """The server's state after ``round`` completed rounds.

    Attributes
    ----------
    round:
        Completed rounds.
    model:
        The global model's ``state_dict``.
    mask:
        The mask of the last round (``None`` before any round).
    config:
        The flat run config the checkpoint was written under.
    summary:
        The run summary at that point (per-round rows, per-client figures).
    """

    round: int
    model: dict[str, torch.Tensor]
    mask: ParameterMask | None
    config: dict[str, Any]
    summary: dict[str, Any]

    def check_resumable_by(self, config: RunConfig) -> None:
        """Raise ``ValueError`` naming every setting that changed other than the round count."""
        current = config.to_flat()
        changed = sorted(
            k
            for k in set(current) | set(self.config)
            if k not in _RESUMABLE_CHANGES and current.get(k) != self.config.get(k)
        )
        if changed:
            raise ValueError(
                f"cannot resume: the checkpoint was written with different settings for {changed} "
                f"(checkpoint: {[self.config.get(k) for k in changed]}, now: "
                f"{[current.get(k) for k in changed]})"
            )


def save_checkpoint(out_dir: Path, checkpoint: Checkpoint) -> None:
    """Write ``summary.json`` and ``checkpoint.pt`` under ``out_dir`` (each atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / SUMMARY_FILE, checkpoint.summary)
    tmp = out_dir / (CHECKPOINT_FILE + ".tmp")
    torch.save(
        {
            "round": checkpoint.round,
            "model": checkpoint.model,
            "mask": checkpoint.mask.to_bytes() if checkpoint.mask is not None else None,
            "config": checkpoint.config,
        },
        tmp,
    )
    tmp.replace(out_dir / CHECKPOINT_FILE)


def load_checkpoint(out_dir: Path) -> Checkpoint | None:
    """The checkpoint under ``out_dir``, or ``None`` if there is none.

    Raises
    ------
    ValueError
        The files exist but are corrupt (the message names the file).
    """
    path = out_dir / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        raw = torch.load(path, weights_only=True)
        summary = json.loads((out_dir / SUMMARY_FILE).read_text())
        return Checkpoint(
            round=int(raw["round"]),
            model=dict(raw["model"]),
            mask=ParameterMask.from_bytes(raw["mask"]) if raw["mask"] is not None else None,
            config=dict(raw["config"]),
            summary=summary,
        )
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, pickle.UnpicklingError) as err:
        raise ValueError(f"corrupt checkpoint in {out_dir}: {err}") from err
