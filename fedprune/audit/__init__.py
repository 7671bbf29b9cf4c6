"""Empirical privacy audit of trained runs: membership inference, canaries, epsilon lower bounds.

One job per module: :mod:`.metrics` (ROC, AUC, TPR at low FPR), :mod:`.bounds` (empirical
epsilon lower bound), :mod:`.mia` (loss and LiRA attacks), :mod:`.canaries` (canary audit),
:mod:`.target` (reading a run directory), :mod:`.replicate` (the auditor's own models),
:mod:`.report` (running everything), :mod:`.plots` and :mod:`.cli`.
"""

from fedprune.audit.bounds import EpsilonBound, clopper_pearson, epsilon_lower_bound
from fedprune.audit.canaries import CanaryRun, make_canaries, run_canaries
from fedprune.audit.metrics import RocCurve, auc, roc_curve, tpr_at_fpr
from fedprune.audit.mia import balanced_inclusion, example_statistics, lira_scores, loss_scores
from fedprune.audit.report import (
    AttackResult,
    AuditReport,
    AuditSettings,
    audit_target,
    natural_nonmembers,
    run_audit,
)
from fedprune.audit.target import AuditTarget, load_target

__all__ = [
    "AttackResult",
    "AuditReport",
    "AuditSettings",
    "AuditTarget",
    "CanaryRun",
    "EpsilonBound",
    "RocCurve",
    "auc",
    "audit_target",
    "balanced_inclusion",
    "clopper_pearson",
    "epsilon_lower_bound",
    "example_statistics",
    "lira_scores",
    "load_target",
    "loss_scores",
    "make_canaries",
    "natural_nonmembers",
    "roc_curve",
    "run_audit",
    "run_canaries",
    "tpr_at_fpr",
]
