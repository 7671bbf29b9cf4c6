"""The one local-training recipe: centralised runs and client rounds take the same local steps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedprune.config import RunConfig
from fedprune.federated import apply_update, model_to_arrays, run_client_round
from fedprune.federated.client_round import client_partition
from fedprune.federated.protocol import METRIC_NOISE_MULTIPLIER, METRIC_STEPS
from fedprune.masks import ParameterMask
from fedprune.pipeline import build_model, load_split, pick_mask, warm_start
from fedprune.privacy import PrivacyLedger
from fedprune.privacy.policy import PrivacyPolicy
from fedprune.training import evaluate
from fedprune.training.centralised import run_centralised
from fedprune.training.recipe import mask_due, new_ledger, round_epochs, train_round

BASE = {
    "data.dataset": "digits",
    "warmup.epochs": 1,
    "optim.epochs": 2,
    "federated.local-epochs": 2,
    "federated.num-rounds": 1,
    "federated.num-clients": 1,
    "out-dir": "",
    "secagg.enabled": False,  # one client holds all 1,293 records, above SecAgg+'s max-weight
}


def _federated_one_client(config: RunConfig, ledger_dir: Path) -> tuple[float, dict]:
    """Server warm start + round-1 mask + the client's round + server step: (test loss, metrics)."""
    split = load_split(config.data, seed=config.seed)
    model = build_model(config, split)
    warm_start(model, split.public, config)
    mask = pick_mask(model, config.mask, split.public, seed=config.seed, round_number=1)
    policy = PrivacyPolicy(
        reproducible_noise=True,
        ledger_dir=str(ledger_dir),
        allow_non_private=not config.privacy.enabled,
    )
    result = run_client_round(
        config,
        partition_id=0,
        num_partitions=1,
        global_arrays=model_to_arrays(model),
        mask=mask,
        server_round=1,
        policy=policy,
    )
    apply_update(model, mask, result.update, server_lr=1.0)
    return evaluate(model, split.test).loss, dict(result.metrics)


@pytest.mark.parametrize("private", [True, False])
def test_centralised_run_and_one_client_round_take_the_same_steps(
    private: bool, tmp_path: Path
) -> None:
    config = RunConfig().replace(**BASE, **{"privacy.enabled": private})
    central = run_centralised(config, reproducible_noise=True)
    loss, metrics = _federated_one_client(config, tmp_path / "ledgers")

    # one partition of one client is the whole private set, in the same order
    assert len(client_partition(config.data, seed=0, partition_id=0, num_partitions=1)) == (
        central.holders["0"].num_examples
    )
    assert central.test_loss == pytest.approx(loss, rel=1e-4)
    if private:
        holder = central.holders["0"]
        assert holder.steps == metrics[METRIC_STEPS]
        assert holder.noise_multiplier == metrics[METRIC_NOISE_MULTIPLIER]


def test_the_comparison_above_can_fail(tmp_path: Path) -> None:
    """Same check with different local work (1 local epoch vs 2 centrally): losses differ."""
    config = RunConfig().replace(**BASE)
    central = run_centralised(config, reproducible_noise=True)
    loss, _ = _federated_one_client(
        config.replace(**{"federated.local-epochs": 1}), tmp_path / "ledgers"
    )
    assert central.test_loss != pytest.approx(loss, rel=1e-4)


def test_strategy_none_is_the_dense_mask() -> None:
    config = RunConfig().replace(**{**BASE, "mask.strategy": "none"})
    summary = run_centralised(config, reproducible_noise=True)
    assert summary.trained_coordinates == summary.total_coordinates


def _one_round(
    config: RunConfig,
) -> tuple[nn.Module, ParameterMask, Callable[[PrivacyLedger | None], object]]:
    """A fresh model, its round-1 mask, and ``train(ledger)`` running one 1-epoch round."""
    split = load_split(config.data, seed=0)
    model = build_model(config, split)
    mask = pick_mask(model, config.mask, split.public, seed=0, round_number=1)

    def train(ledger: PrivacyLedger | None) -> object:
        return train_round(
            model,
            split.private.dataset,
            config=config,
            mask=mask,
            rounds=[1],
            round_index=0,
            ledger=ledger,
            holder=0,
        )

    return model, mask, train


@pytest.mark.parametrize("private", [True, False])
def test_a_round_moves_only_the_masked_coordinates(private: bool) -> None:
    config = RunConfig().replace(**{**BASE, "privacy.enabled": private, "optim.momentum": 0.5})
    model, mask, train = _one_round(config)
    before = {k: v.clone() for k, v in model.named_parameters()}
    train(new_ledger(config.privacy) if private else None)
    moved = 0
    for name, p in model.named_parameters():
        keep = mask[name]
        assert torch.equal(p[~keep], before[name][~keep]), name
        moved += int((p[keep] != before[name][keep]).sum())
    assert moved > 0.5 * mask.num_selected


def test_round_epochs_and_mask_cadence_agree_between_settings() -> None:
    select = RunConfig().replace(
        **{**BASE, "mask.mode": "select", "mask.select-every": 2, "optim.epochs": 5}
    )
    assert round_epochs(select, federated=False) == [2, 2, 1]
    fed = select.replace(**{"federated.num-rounds": 4, "federated.local-epochs": 1})
    assert round_epochs(fed, federated=True) == [1, 1, 1, 1]
    # every 2 epochs: every round centrally (rounds of 2), every other federated round (of 1)
    assert [mask_due(select.mask, r, epochs_per_round=2) for r in (1, 2, 3)] == [True] * 3
    assert [mask_due(fed.mask, r, epochs_per_round=1) for r in (1, 2, 3, 4)] == [
        True,
        False,
        True,
        False,
    ]
    freeze = RunConfig().mask
    assert [mask_due(freeze, r) for r in (1, 2)] == [True, False]


def test_private_round_without_a_ledger_is_an_error() -> None:
    _, _, train = _one_round(RunConfig().replace(**BASE))
    with pytest.raises(ValueError, match="ledger"):
        train(None)


def test_secure_noise_rounds_differ_reproducible_rounds_repeat(tmp_path: Path) -> None:
    config = RunConfig().replace(**BASE)
    a = run_centralised(config).test_loss
    b = run_centralised(config).test_loss
    c = run_centralised(config, reproducible_noise=True).test_loss
    d = run_centralised(config, reproducible_noise=True).test_loss
    assert a != b
    assert c == d
    assert np.isfinite([a, b, c, d]).all()


def test_noise_is_calibrated_once_per_run_not_per_round(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedprune.privacy import plan as plan_module
    from fedprune.training import recipe

    calls: list[int] = []
    real = plan_module.calibrate_noise

    def counting(**kwargs: object) -> float:
        calls.append(int(kwargs["steps"]))  # type: ignore[call-overload]
        return real(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(plan_module, "calibrate_noise", counting)
    recipe._calibrated_sigma.cache_clear()
    privacy = RunConfig().privacy
    steps = (9, 9, 9, 9)
    plans = [
        recipe.round_plan(privacy, sample_rate=32 / 129, round_steps=steps, round_index=i)
        for i in range(len(steps))
    ]
    assert calls == [36]  # all four rounds' steps, once
    assert len({p.noise_multiplier for p in plans}) == 1
    assert [p.steps for p in plans] == list(steps)
    recipe.round_plan(privacy, sample_rate=32 / 130, round_steps=steps, round_index=0)
    assert calls == [36, 36]  # another partition size is another mechanism
