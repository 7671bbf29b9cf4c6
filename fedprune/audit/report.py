"""``run_audit``: every attack on one run, its figures, and the files it writes.

Populations (see docs/audit.md for the choice):

* **Natural records.** Members = the run's private records (every one trained the model, in a
  centralised run and, spread over the clients, in a federated one). Non-members
  (:func:`natural_nonmembers`): when the run trained on a fixed subset of the private pool
  (``data.private-records``), the pool records it left out -- same records' distribution, chosen
  by a data-independent coin, never trained on; otherwise the dataset's test split, never
  trained on but possibly *not* of the members' distribution (on Fashion-MNIST a model that
  never saw the private records already "separates" train from test records, a bound of ~0.07:
  a split artefact, not membership). The public split is never a non-member set: the warm start
  trained on it. Reading test records here feeds nothing back into training or model choice, so
  the reported test accuracy is untouched. LiRA's reference models train on random halves of
  members + non-members (they are the auditor's models; the target never sees the non-members).
* **Canaries.** Crafted records inserted at random into one retraining (:mod:`.canaries`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from fedprune.audit.bounds import EpsilonBound, epsilon_lower_bound
from fedprune.audit.canaries import run_canaries
from fedprune.audit.metrics import auc, roc_curve, tpr_at_fpr
from fedprune.audit.mia import balanced_inclusion, example_statistics, lira_scores, loss_scores
from fedprune.audit.replicate import train_like
from fedprune.audit.target import AuditTarget, load_target
from fedprune.data import PublicPrivateSplit
from fedprune.io import write_json
from fedprune.seeding import derive_seed

__all__ = [
    "AUDIT_FILE",
    "LOW_FPRS",
    "NONMEMBERS_TEST",
    "NONMEMBERS_UNUSED",
    "AttackResult",
    "AuditReport",
    "AuditSettings",
    "audit_target",
    "evaluate_attack",
    "format_audit_table",
    "natural_nonmembers",
    "run_audit",
]

AUDIT_FILE = "audit.json"
LOW_FPRS = (0.01, 0.001)
"""FPRs at which TPR is reported (only when there are at least ``1 / fpr`` non-members)."""
NONMEMBERS_UNUSED = "unused private-pool records"
NONMEMBERS_TEST = "test split"


@dataclass(frozen=True)
class AuditSettings:
    """What to run. ``references = 0`` skips LiRA, ``canaries = 0`` the canary audit.

    ``references`` must be even (each record IN for half of the reference models); ``seed``
    drives reference subsets, canaries and their inclusion; ``confidence`` is that of the
    Clopper-Pearson bounds.
    """

    references: int = 4
    canaries: int = 200
    seed: int = 0
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.references < 0 or self.references % 2:
            raise ValueError(f"expected an even --references >= 0, got {self.references}")
        if self.canaries < 0 or self.canaries == 1:
            raise ValueError(f"expected --canaries 0 or >= 2, got {self.canaries}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"expected confidence in (0, 1), got {self.confidence}")


@dataclass(frozen=True)
class AttackResult:
    """One attack's figures.

    ``tpr_at_fpr`` maps ``"0.01"``-style keys to TPR (``None`` when too few non-members);
    ``roc_fpr``/``roc_tpr`` are the curve (for plots); ``bound`` is the epsilon lower bound.
    """

    name: str
    population: str
    num_members: int
    num_nonmembers: int
    auc: float
    tpr_at_fpr: dict[str, float | None]
    bound: EpsilonBound
    roc_fpr: list[float] = field(repr=False)
    roc_tpr: list[float] = field(repr=False)


def evaluate_attack(
    name: str,
    population: str,
    member_scores: NDArray[np.float64],
    nonmember_scores: NDArray[np.float64],
    *,
    delta: float,
    confidence: float,
) -> AttackResult:
    """AUC, TPR at :data:`LOW_FPRS` and the epsilon lower bound of one attack's scores."""
    curve = roc_curve(member_scores, nonmember_scores)
    return AttackResult(
        name=name,
        population=population,
        num_members=curve.num_members,
        num_nonmembers=curve.num_nonmembers,
        auc=auc(curve),
        tpr_at_fpr={
            str(f): tpr_at_fpr(curve, f) if curve.num_nonmembers * f >= 1 else None
            for f in LOW_FPRS
        },
        bound=epsilon_lower_bound(curve, delta=delta, confidence=confidence),
        roc_fpr=curve.fpr.tolist(),
        roc_tpr=curve.tpr.tolist(),
    )


@dataclass(frozen=True)
class AuditReport:
    """All attacks on one run, next to what the accountant claims."""

    run_dir: str
    kind: str
    private: bool
    accountant_epsilon: float | None
    delta: float
    test_accuracy: float | None
    settings: AuditSettings
    attacks: list[AttackResult]
    duration_s: float
    nonmembers: str = NONMEMBERS_TEST
    """Where the natural-record non-members came from (:func:`natural_nonmembers`)."""

    @property
    def max_lower_bound(self) -> float:
        """The largest epsilon lower bound of any attack."""
        return max((a.bound.epsilon for a in self.attacks), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (plus ``max_lower_bound``)."""
        data = asdict(self)
        data["max_lower_bound"] = self.max_lower_bound
        return data

    def write(self, out_dir: Path) -> Path:
        """Write ``<out_dir>/audit.json`` atomically; returns its path."""
        path = out_dir / AUDIT_FILE
        write_json(path, self.to_dict())
        return path


def run_audit(
    run_dir: str | Path, settings: AuditSettings, *, progress: bool = False
) -> AuditReport:
    """Run the loss, LiRA (if ``settings.references``) and canary (if ``settings.canaries``)
    audits on the run in ``run_dir``; nothing is written (see :meth:`AuditReport.write`)."""
    started = time.perf_counter()
    return audit_target(load_target(run_dir), settings, progress=progress, started=started)


def natural_nonmembers(split: PublicPrivateSplit, *, seed: int) -> tuple[TensorDataset, str]:
    """Non-members for the natural-record attacks and where they come from.

    ``split.unused`` (private-pool records a ``data.private-records`` run left out: the members'
    distribution, never trained on) when there is any, as many as the test split holds (a
    random choice from ``seed``, so the audit's cost does not grow with the pool); otherwise
    the test split (:data:`NONMEMBERS_TEST`; it may differ in distribution from the members).
    """
    if split.unused is None:
        return split.test, NONMEMBERS_TEST
    x, y = split.unused.tensors
    count = min(len(y), len(split.test))
    rng = np.random.default_rng(derive_seed(seed, "audit-nonmembers"))
    idx = torch.from_numpy(np.sort(rng.permutation(len(y))[:count]).astype(np.int64))
    return TensorDataset(x[idx], y[idx]), NONMEMBERS_UNUSED


def audit_target(
    target: AuditTarget,
    settings: AuditSettings,
    *,
    progress: bool = False,
    started: float | None = None,
) -> AuditReport:
    """:func:`run_audit` on an already loaded target (``started``: a ``perf_counter`` time)."""
    started = time.perf_counter() if started is None else started
    delta = _delta(target)
    members = target.split.private.dataset
    nonmembers, nonmember_source = natural_nonmembers(target.split, seed=settings.seed)
    loss_in, phi_in = example_statistics(target.model, members)
    loss_out, phi_out = example_statistics(target.model, nonmembers)
    conf = settings.confidence
    attacks = [
        evaluate_attack(
            "loss",
            "natural",
            loss_scores(loss_in),
            loss_scores(loss_out),
            delta=delta,
            confidence=conf,
        )
    ]
    work = settings.references + (1 if settings.canaries else 0)
    with tqdm(total=work, desc="audit models", disable=not progress or work == 0) as bar:
        if settings.references:
            scores = _lira(target, nonmembers, np.concatenate([phi_in, phi_out]), settings, bar)
            attacks.append(
                evaluate_attack(
                    f"lira ({settings.references} ref.)",
                    "natural",
                    scores[: len(phi_in)],
                    scores[len(phi_in) :],
                    delta=delta,
                    confidence=conf,
                )
            )
        if settings.canaries:
            run = run_canaries(
                target.config, target.split, count=settings.canaries, seed=settings.seed
            )
            bar.update()
            attacks.append(
                evaluate_attack(
                    f"canary ({settings.canaries})",
                    "canary",
                    run.member_scores,
                    run.nonmember_scores,
                    delta=delta,
                    confidence=conf,
                )
            )
    return AuditReport(
        run_dir=str(target.run_dir),
        kind=target.summary.kind,
        private=target.summary.private,
        accountant_epsilon=target.summary.epsilon,
        delta=delta,
        test_accuracy=target.summary.test_accuracy,
        settings=settings,
        attacks=attacks,
        duration_s=time.perf_counter() - started,
        nonmembers=nonmember_source,
    )


def _delta(target: AuditTarget) -> float:
    """The run's delta (the accountant's, else the config's for a non-private run)."""
    spent = [h.delta for h in target.summary.holders.values() if h.delta is not None]
    return max(spent) if spent else target.config.privacy.delta


def _lira(
    target: AuditTarget,
    nonmembers: TensorDataset,
    target_phi: NDArray[np.float64],
    settings: AuditSettings,
    bar: tqdm,
) -> NDArray[np.float64]:
    """LiRA scores of the pool (members then non-members) from ``settings.references`` models."""
    x = torch.cat([target.split.private.dataset.tensors[0], nonmembers.tensors[0]])
    y = torch.cat([target.split.private.dataset.tensors[1], nonmembers.tensors[1]])
    pool = TensorDataset(x, y)
    inclusion = balanced_inclusion(
        settings.references, len(y), seed=derive_seed(settings.seed, "lira-inclusion")
    )
    reference_phi = []
    for k, keep in enumerate(inclusion):
        idx = torch.from_numpy(np.flatnonzero(keep))
        model = train_like(
            target.config,
            target.split,
            TensorDataset(x[idx], y[idx]),
            description=f"LiRA reference {k}: {len(idx)} pool records",
        )
        reference_phi.append(example_statistics(model, pool)[1])
        bar.update()
    return lira_scores(target_phi, np.stack(reference_phi), inclusion)


def format_audit_table(report: AuditReport) -> str:
    """The attacks as aligned text, with the accountant's epsilon for comparison."""
    eps = report.accountant_epsilon
    lines = [
        f"run: {report.run_dir} ({report.kind}, "
        + (
            f"accountant epsilon {eps:.4g}, delta {report.delta:g})"
            if eps is not None
            else f"non-private; bounds at delta {report.delta:g})"
        ),
        f"natural-record non-members: {report.nonmembers}",
        f"{'attack':<16} {'members':>7} {'non-m.':>6} {'AUC':>6} {'TPR@1%':>7} "
        f"{'TPR@0.1%':>8} {'eps_lb':>7}",
    ]
    for a in report.attacks:
        cells = [_rate(a.tpr_at_fpr[str(f)]) for f in LOW_FPRS]
        lines.append(
            f"{a.name:<16} {a.num_members:>7} {a.num_nonmembers:>6} {a.auc:>6.3f} "
            f"{cells[0]:>7} {cells[1]:>8} {a.bound.epsilon:>7.3f}"
        )
    lines.append(
        f"eps_lb: {report.settings.confidence:.0%} Clopper-Pearson lower bound, max over "
        "thresholds"
        + (
            "; every bound is below the accountant's epsilon"
            if eps is not None and report.max_lower_bound <= eps
            else ""
        )
    )
    if eps is not None and report.max_lower_bound > eps:
        lines.append(
            f"WARNING: an audit's lower bound ({report.max_lower_bound:.3f}) exceeds the "
            f"accountant's epsilon ({eps:.4g}): the guarantee or the accounting is broken"
        )
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
