"""Attack-agnostic metrics of membership scores: ROC curve, AUC, TPR at a fixed low FPR.

Convention everywhere in :mod:`fedprune.audit`: a *score* is larger for records the attack
believes are members; the attack at threshold ``t`` says "member" iff ``score >= t``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["RocCurve", "auc", "roc_curve", "tpr_at_fpr"]


@dataclass(frozen=True)
class RocCurve:
    """Counts of an attack at every distinct threshold, from the strictest to "all members".

    Attributes
    ----------
    thresholds:
        float64 ``(T,)``, decreasing; ``thresholds[0] = +inf`` (nobody called a member).
    true_positives, false_positives:
        int64 ``(T,)``: members / non-members with ``score >= threshold``, non-decreasing.
    num_members, num_nonmembers:
        Sizes of the two score sets (both >= 1).
    """

    thresholds: NDArray[np.float64]
    true_positives: NDArray[np.int64]
    false_positives: NDArray[np.int64]
    num_members: int
    num_nonmembers: int

    @property
    def tpr(self) -> NDArray[np.float64]:
        """True-positive rate at each threshold, in ``[0, 1]``."""
        return self.true_positives / self.num_members

    @property
    def fpr(self) -> NDArray[np.float64]:
        """False-positive rate at each threshold, in ``[0, 1]``."""
        return self.false_positives / self.num_nonmembers


def _scores(values: ArrayLike, what: str) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"expected at least one {what} score, got none")
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"expected finite {what} scores, got {int((~np.isfinite(array)).sum())} non-finite"
        )
    return array


def roc_curve(member_scores: ArrayLike, nonmember_scores: ArrayLike) -> RocCurve:
    """The ROC curve of the scores (every distinct score is a threshold; ties share one).

    Raises
    ------
    ValueError
        An empty or non-finite score set.
    """
    members = _scores(member_scores, "member")
    nonmembers = _scores(nonmember_scores, "non-member")
    thresholds = np.unique(np.concatenate([members, nonmembers]))[::-1]
    members.sort()
    nonmembers.sort()
    # count of scores >= t = n - (number of scores < t)
    tp = len(members) - np.searchsorted(members, thresholds, side="left")
    fp = len(nonmembers) - np.searchsorted(nonmembers, thresholds, side="left")
    return RocCurve(
        thresholds=np.concatenate([[np.inf], thresholds]),
        true_positives=np.concatenate([[0], tp]).astype(np.int64),
        false_positives=np.concatenate([[0], fp]).astype(np.int64),
        num_members=len(members),
        num_nonmembers=len(nonmembers),
    )


def auc(curve: RocCurve) -> float:
    """Area under the ROC curve: P(member score > non-member score) + P(tie) / 2.

    1 for perfectly separated scores, 0.5 for an attack that cannot tell (trapezoidal area,
    equal to the Mann-Whitney statistic).
    """
    return float(np.trapezoid(curve.tpr, curve.fpr))


def tpr_at_fpr(curve: RocCurve, max_fpr: float) -> float:
    """The largest TPR among thresholds whose FPR is at most ``max_fpr`` (in ``[0, 1]``)."""
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"expected max_fpr in [0, 1], got {max_fpr}")
    ok = curve.fpr <= max_fpr
    return float(curve.tpr[ok].max())  # thresholds[0] (fpr 0) is always ok
