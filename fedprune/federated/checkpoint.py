"""Per-round checkpoints of a federated run: written atomically, read back to resume."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedprune.config import RunConfig
from fedprune.fingerprint import config_changes
from fedprune.io import to_json_text, to_jsonable, write_torch
from fedprune.masks import ParameterMask
from fedprune.summary import RunSummary

__all__ = ["CHECKPOINT_FILE", "Checkpoint", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FILE = "checkpoint.pt"

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
    summary:
        The run summary at that point (per-round rows, per-client figures, the config).
    """

    round: int
    model: dict[str, torch.Tensor]
    mask: ParameterMask | None
    summary: RunSummary

    def check_resumable_by(self, config: RunConfig) -> None:
        """Raise ``ValueError`` naming every setting that changed other than the round count.

        "Changed" is :func:`fedprune.fingerprint.config_changes`, the same check ``fedprune
        compare`` uses to recognise a finished run.
        """
        current = to_jsonable(config.to_flat())
        recorded = to_jsonable(self.summary.config)
        defaults = to_jsonable(RunConfig().to_flat())
        changed = config_changes(current, recorded, ignore=_RESUMABLE_CHANGES)
        if changed:
            recorded = {**defaults, **recorded}
            raise ValueError(
                f"cannot resume: the checkpoint was written with different settings for {changed} "
                f"(checkpoint: {[recorded.get(k) for k in changed]}, now: "
                f"{[current.get(k) for k in changed]})"
            )


def save_checkpoint(out_dir: Path, checkpoint: Checkpoint) -> None:
    """Write ``summary.json`` and ``checkpoint.pt`` under ``out_dir`` (each atomically).

    ``checkpoint.pt`` holds its own copy of the summary, so a crash between the two writes
    cannot pair a model with another round's bookkeeping; ``summary.json`` is the readable view.
    """
    write_torch(
        out_dir / CHECKPOINT_FILE,
        {
            "round": checkpoint.round,
            "model": checkpoint.model,
            "mask": checkpoint.mask.to_bytes() if checkpoint.mask is not None else None,
            "summary": to_json_text(checkpoint.summary.to_dict(), indent=None),
        },
    )
    checkpoint.summary.write(out_dir)


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
        raw: dict[str, Any] = torch.load(path, weights_only=True)
        return Checkpoint(
            round=int(raw["round"]),
            model=dict(raw["model"]),
            mask=ParameterMask.from_bytes(raw["mask"]) if raw["mask"] is not None else None,
            summary=RunSummary.from_dict(json.loads(raw["summary"])),
        )
    except Exception as err:  # torch.load of damaged bytes raises almost any type (IndexError...)
        raise ValueError(f"corrupt checkpoint in {out_dir}: {type(err).__name__}: {err}") from err
