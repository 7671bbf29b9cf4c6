"""``RunSummary``: the one typed result schema of every run, written atomically as JSON.

``fedprune train`` (one data holder) and ``fedprune run`` / ``flwr run`` (one holder per client)
write the same shape to ``<out-dir>/summary.json``: results, per-round rows (federated), the
privacy spend of every data holder and the fully resolved config.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fedprune import __version__
from fedprune.io import read_json, write_json

__all__ = ["SUMMARY_FILE", "HolderSpend", "RoundRecord", "RunSummary", "format_table"]

SUMMARY_FILE = "summary.json"

NoiseKind = Literal["secure", "reproducible", "none"]


@dataclass
class HolderSpend:
    """What one data holder (a client, or the centralised run's private set) spent.

    ``epsilon``/``delta`` are the holder's ledger after its last round (``None`` when it never
    trained privately). Visible to the server in plaintext in federated runs.
    """

    num_examples: int = 0
    rounds_trained: int = 0
    rounds_refused: int = 0
    refused: str = ""
    """Why the holder refused its last refused round (empty: never refused)."""
    rounds_malformed: int = 0
    """Replies the server dropped as malformed (wrong size, negative weight, non-finite values);
    nothing else such a reply claimed is recorded."""
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    steps: int = 0
    """DP-SGD steps in the holder's ledger (all rounds, all runs that shared the ledger)."""
    epsilon: float | None = None
    delta: float | None = None
    accountant: str | None = None
    noise: NoiseKind = "secure"


@dataclass
class RoundRecord:
    """One round of a federated run (as the server saw it)."""

    round: int
    clients_trained: int = 0
    clients_refused: list[int] = field(default_factory=list)
    failures: int = 0
    update_norm: float | None = None
    skipped: str = ""
    """Why the global model did not move this round (empty: it did)."""
    test_accuracy: float | None = None
    test_loss: float | None = None
    elapsed_s: float = 0.0
    """Seconds since the run (not this process) started, at the end of the round."""
    client_train_s: dict[str, float] = field(default_factory=dict)
    """Each trained client's own local-training seconds this round, by partition id, as the
    client reported them (plaintext, unverified; for benchmarks)."""
    client_fit_s: dict[str, float] = field(default_factory=dict)
    """Each trained client's whole-round seconds (training plus its own setup and ledger I/O)."""


@dataclass
class RunSummary:
    """Results of one run; :meth:`write` stores it, :meth:`read` loads it back."""

    kind: Literal["centralised", "federated"]
    config: dict[str, Any]
    public_only_test_accuracy: float
    total_coordinates: int
    trained_coordinates: int = 0
    private: bool = True
    test_accuracy: float | None = None
    test_loss: float | None = None
    secure_aggregation: bool = False
    holders: dict[str, HolderSpend] = field(default_factory=dict)
    rounds: list[RoundRecord] = field(default_factory=list)
    duration_s: float = 0.0
    fedprune_version: str = __version__

    @property
    def epsilon(self) -> float | None:
        """The largest epsilon any holder spent (``None`` when none trained privately)."""
        spent = [h.epsilon for h in self.holders.values() if h.epsilon is not None]
        return max(spent) if spent else None

    @property
    def rounds_completed(self) -> int:
        """Federated rounds with a recorded evaluation."""
        return sum(1 for r in self.rounds if r.test_accuracy is not None)

    def idle_reason(self, *, after_round: int = 0) -> str:
        """Why no client trained in any round after ``after_round`` (empty if one did, or if no
        such round ran): the distinct refusal reasons, failure count and skip reasons, on one
        line."""
        rows = [r for r in self.rounds if r.round > after_round]
        if not rows or any(r.clients_trained > 0 for r in rows):
            return ""
        holders = self.holders.items()
        reasons = [f"client {name} refused: {h.refused}" for name, h in holders if h.refused]
        malformed = sorted(name for name, h in holders if h.rounds_malformed)
        if malformed:
            reasons.append(f"malformed replies from clients {malformed}")
        failures = sum(r.failures for r in rows)
        if failures:
            reasons.append(f"{failures} failed or dropped replies")
        reasons += sorted({r.skipped for r in rows if r.skipped} - {"no client trained"})
        first, last = rows[0].round, rows[-1].round
        span = f"round {first}" if first == last else f"rounds {first}-{last}"
        return f"no client trained in {span}: " + ("; ".join(reasons) or "no client replied")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (plus the derived ``epsilon`` and ``rounds_completed``)."""
        data = dataclasses.asdict(self)
        data["epsilon"] = self.epsilon
        data["rounds_completed"] = self.rounds_completed
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        ValueError
            Missing or unknown fields (named in the message).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        given = {k: v for k, v in data.items() if k not in {"epsilon", "rounds_completed"}}
        unknown, missing = (
            sorted(set(given) - names),
            sorted(
                f.name
                for f in dataclasses.fields(cls)
                if f.name not in given
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            ),
        )
        if unknown or missing:
            raise ValueError(f"not a run summary: unknown fields {unknown}, missing {missing}")
        try:
            given["holders"] = {k: HolderSpend(**v) for k, v in given.get("holders", {}).items()}
            given["rounds"] = [RoundRecord(**r) for r in given.get("rounds", [])]
        except TypeError as err:
            raise ValueError(f"not a run summary: {err}") from err
        return cls(**given)

    def write(self, out_dir: str | Path) -> Path:
        """Write ``<out_dir>/summary.json`` atomically; returns its path."""
        path = Path(out_dir) / SUMMARY_FILE
        write_json(path, self.to_dict())
        return path

    @classmethod
    def read(cls, out_dir: str | Path) -> RunSummary:
        """Load ``<out_dir>/summary.json``."""
        return cls.from_dict(read_json(Path(out_dir) / SUMMARY_FILE))


def format_table(summary: RunSummary) -> str:
    """Results, per-round rows (federated) and per-holder privacy spend as aligned text."""
    acc = summary.test_accuracy
    lines = [
        f"public-only (warm start) test accuracy: {summary.public_only_test_accuracy:.4f}",
        f"final test accuracy: {'-' if acc is None else f'{acc:.4f}'}  "
        f"(trained {summary.trained_coordinates}/{summary.total_coordinates} coordinates"
        + (
            f", secure aggregation {'on' if summary.secure_aggregation else 'off'})"
            if summary.kind == "federated"
            else ")"
        ),
    ]
    if summary.rounds:
        lines += ["", f"{'round':>5} {'accuracy':>9} {'trained':>8} {'refused':>8}"]
        for r in summary.rounds:
            ra = r.test_accuracy
            lines.append(
                f"{r.round:>5} {'-' if ra is None else f'{ra:.4f}':>9} "
                f"{r.clients_trained:>8} {len(r.clients_refused):>8}"
                + (f"  ({r.skipped})" if r.skipped else "")
            )
    lines += [
        "",
        f"{'holder':>6} {'examples':>8} {'sigma':>7} {'q':>7} {'steps':>6} {'epsilon':>8}",
    ]
    for name, h in summary.holders.items():
        lines.append(
            f"{name:>6} {h.num_examples:>8} {_num(h.noise_multiplier):>7} "
            f"{_num(h.sample_rate):>7} {h.steps:>6} {_num(h.epsilon):>8}"
        )
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"
