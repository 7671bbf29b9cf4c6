"""Tuning never reads private data for public tuning, never the test set for either protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fedprune.compare.tuning as tuning
from fedprune.compare import TuningSpec, apply_sets, load_preset, run_compare
from fedprune.config import RunConfig
from fedprune.data import (
    PrivateDataset,
    PublicDataset,
    split_private_validation,
    split_public_validation,
)
from fedprune.pipeline import load_split

TINY = RunConfig().replace(
    **{"model": "mlp", "warmup.epochs": 1, "optim.epochs": 1, "optim.batch-size": 256}
)


def _rows(data: PublicDataset | PrivateDataset | torch.utils.data.TensorDataset) -> set[bytes]:
    tensors = (
        data.tensors if isinstance(data, torch.utils.data.TensorDataset) else data.dataset.tensors
    )
    return {x.numpy().tobytes() for x in tensors[0]}


def test_public_tuning_takes_only_public_data_by_type() -> None:
    split = load_split(TINY.data, seed=0)
    train, val = split_public_validation(split.public, fraction=0.2, seed=0)
    mechanism = tuning.holder_mechanism(TINY, holder_records=len(split.private), federated=False)
    with pytest.raises(TypeError, match="PublicDataset"):
        tuning.score_on_public(TINY, split.private, val, mechanism=mechanism, num_classes=10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="PublicDataset"):
        split_public_validation(split.private, fraction=0.2, seed=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="PrivateDataset"):
        split_private_validation(split.public, fraction=0.2, seed=0)  # type: ignore[arg-type]
    # The validation part is public and disjoint from the test set and from the public train part.
    assert _rows(val) <= _rows(split.public) and not _rows(val) & _rows(train)
    assert not _rows(val) & _rows(split.test)
    score = tuning.score_on_public(TINY, train, val, mechanism=mechanism, num_classes=10)
    assert 0 <= score <= 1


def test_public_tuning_never_sees_private_or_test_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[set[bytes]] = []
    real = tuning.score_on_public

    def spy(config, train, validation, **kwargs):  # type: ignore[no-untyped-def]
        seen.extend([_rows(train), _rows(validation)])
        return real(config, train, validation, **kwargs)

    monkeypatch.setattr(tuning, "score_on_public", spy)
    spec = TuningSpec(candidates={"optim.lr": [0.1, 1.0]})
    chosen, records = tuning.tune_on_public(TINY, spec, federated=False)
    assert chosen in ({"optim.lr": 0.1}, {"optim.lr": 1.0}) and len(records) == 2
    split = load_split(TINY.data, seed=0)
    public, private, test = _rows(split.public), _rows(split.private), _rows(split.test)
    for rows in seen:
        assert rows <= public and not rows & private and not rows & test


def test_private_validation_split_is_part_of_private_train_only() -> None:
    split = load_split(TINY.data, seed=0)
    train, val = split_private_validation(split.private, fraction=0.2, seed=0)
    assert len(train) + len(val) == len(split.private)
    assert _rows(val) <= _rows(split.private) and not _rows(val) & _rows(split.test)
    assert not _rows(val) & _rows(train)


def test_tuned_cells_report_choice_and_total_epsilon(tmp_path: Path) -> None:
    preset_path = tmp_path / "t.toml"
    preset_path.write_text(
        """
[base]
"model" = "mlp"
"warmup.epochs" = 1
"optim.epochs" = 1
"optim.batch-size" = 256
[grid]
strategy = ["random"]
epsilon = [3.0]
tuning = ["public", "private"]
[tuning]
"optim.lr" = [0.2, 1.0]
gamma = 0.5
"""
    )
    preset = apply_sets(load_preset(preset_path), [])
    rows = {r["tuning"]: r for r in run_compare(preset, tmp_path / "out", progress=False)}
    assert {r["status"] for r in rows.values()} == {"ok"}, rows
    public, private = rows["public"], rows["private"]
    assert public["tuned"]["optim.lr"] in (0.2, 1.0) and public["tuning_trials"] == 2
    assert public["total_epsilon"] == public["epsilon"] == pytest.approx(3.0, rel=0.05)
    # Private: the whole search spends the target; each trial alone spends less.
    assert 2.9 < private["total_epsilon"] <= 3.0
    assert private["epsilon"] < private["total_epsilon"]
    assert private["tuning_trials"] >= 1 and private["tuned"]["optim.lr"] in (0.2, 1.0)
    assert 0 <= private["test_accuracy"] <= 1


@pytest.mark.parametrize(("batch", "expected_scale"), [(64, 1.0), (4 * 115, 115 / 460)])
def test_public_tuning_keeps_the_private_noise_to_signal_ratio(
    monkeypatch: pytest.MonkeyPatch, batch: int, expected_scale: float
) -> None:
    """sigma * C / B on the averaged update is what the learning rate meets: a public set
    smaller than the batch (every record each step) gets sigma scaled by len(train) / B."""
    config = TINY.replace(**{"optim.batch-size": batch})
    split = load_split(config.data, seed=0)
    train, val = split_public_validation(split.public, fraction=0.2, seed=0)
    assert len(train) == 115  # 144 public digits, 80 % to train
    mechanism = tuning.holder_mechanism(config, holder_records=len(split.private), federated=False)
    seen: list[tuple[float, float]] = []

    def capture(model, data, *, plan, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((plan.noise_multiplier, plan.sample_rate))
        return model

    monkeypatch.setattr(tuning, "train_dp_sgd", capture)
    tuning.score_on_public(config, train, val, mechanism=mechanism, num_classes=10)
    ((sigma, rate),) = seen
    assert sigma == pytest.approx(mechanism.noise_multiplier * expected_scale)
    assert rate == pytest.approx(min(1.0, batch / 115))
