"""Natural-record non-members come from the members' distribution when the run has any.

A run on a fixed subset of the private pool (``data.private-records``) leaves pool records
unused: those are the audit's non-members, not the test split, whose distribution may differ
(on Fashion-MNIST a model that never saw the private records already separates train from
test records). The target here is a warm-started model that never saw a private record, so
every honest natural-record bound on it is ~0; against a shifted test split it is not.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from fedprune.audit import AuditSettings, AuditTarget, audit_target, natural_nonmembers
from fedprune.audit.report import NONMEMBERS_TEST, NONMEMBERS_UNUSED
from fedprune.config import RunConfig
from fedprune.pipeline import build_model, load_split, warm_start
from fedprune.summary import RunSummary

_LOSS_ONLY = AuditSettings(references=0, canaries=0)


def _ids(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


def _untrained_target(tmp_path: Path) -> AuditTarget:
    """Digits, 600 of the 1,293 private records, a model warm-started on public data only, and
    a test split under a covariate shift (brighter, lower contrast)."""
    config = RunConfig().replace(**{"data.private-records": 600, "warmup.epochs": 20})
    split = load_split(config.data, seed=config.seed)
    x_test, y_test = split.test.tensors
    shifted = TensorDataset(torch.clamp(0.6 * x_test + 0.2, 0.0, 1.0), y_test)
    split = dataclasses.replace(split, test=shifted)
    model = build_model(config, split)
    warm_start(model, split.public, config)
    summary = RunSummary(
        kind="centralised",
        config=config.to_flat(),
        public_only_test_accuracy=0.0,
        total_coordinates=0,
        private=False,
    )
    return AuditTarget(tmp_path, summary, config, split, model.eval())


def test_unused_pool_records_are_the_nonmembers(tmp_path: Path) -> None:
    target = _untrained_target(tmp_path)
    split = target.split
    assert split.unused is not None and len(split.unused) == 1293 - 600
    nonmembers, source = natural_nonmembers(split, seed=0)
    assert source == NONMEMBERS_UNUSED
    assert len(nonmembers) == len(split.test) == 360
    assert _ids(nonmembers.tensors[0]) <= _ids(split.unused.tensors[0])
    assert not _ids(nonmembers.tensors[0]) & _ids(split.private.dataset.tensors[0])
    again, _ = natural_nonmembers(split, seed=0)
    assert torch.equal(again.tensors[0], nonmembers.tensors[0])
    # A run on the whole pool has none left: the test split, and the report says so.
    whole = dataclasses.replace(split, unused=None)
    assert natural_nonmembers(whole, seed=0) == (whole.test, NONMEMBERS_TEST)


def test_a_model_that_never_saw_the_members_gives_no_bound_despite_a_shifted_test_split(
    tmp_path: Path,
) -> None:
    target = _untrained_target(tmp_path)
    report = audit_target(target, _LOSS_ONLY)
    (loss,) = report.attacks
    assert report.nonmembers == NONMEMBERS_UNUSED and loss.num_nonmembers == 360
    assert loss.bound.epsilon < 0.1 and abs(loss.auc - 0.5) < 0.05
    # Control: against the shifted test split the same untrained model "leaks" -- the split
    # artefact that same-distribution non-members avoid.
    split = dataclasses.replace(target.split, unused=None)
    fallback = audit_target(
        AuditTarget(tmp_path, target.summary, target.config, split, target.model), _LOSS_ONLY
    )
    assert fallback.nonmembers == NONMEMBERS_TEST
    assert fallback.attacks[0].bound.epsilon > 1.0
