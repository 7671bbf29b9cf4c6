"""Checkpoints round-trip, refuse incompatible resumes; a resumed strategy continues numbering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.server.client_manager import SimpleClientManager

from fedprune.config import RunConfig
from fedprune.data import PublicPrivateSplit
from fedprune.masks import ParameterMask
from fedprune.pipeline import build_model
from server.checkpoint import CHECKPOINT_FILE, Checkpoint, load_checkpoint, save_checkpoint
from server.server_app import _resumable_checkpoint
from server.strategy import MaskedDPFedAvg


def _strategy(config: RunConfig, split: PublicPrivateSplit, **kwargs: object) -> MaskedDPFedAvg:
    return MaskedDPFedAvg(
        config=config,
        split=split,
        model=build_model(config, split),
        secure=False,
        public_only_accuracy=0.5,
        progress=False,
        **kwargs,  # type: ignore[arg-type]
    )


def _one_round(
    strategy: MaskedDPFedAvg, manager: SimpleClientManager, make_reply, rnd: int
) -> None:
    params = strategy.initialize_parameters(manager)
    assert params is not None
    strategy.configure_fit(rnd, params, manager)
    assert strategy.mask is not None
    update = np.full(strategy.mask.num_selected, 0.01, dtype=np.float32)
    strategy.aggregate_fit(rnd, [make_reply(update, partition_id=0, num_examples=10)], [])
    strategy.evaluate(rnd, params)


@pytest.fixture
def manager(make_reply) -> SimpleClientManager:
    m = SimpleClientManager()
    for pid in range(3):
        m.register(make_reply(np.zeros(1), partition_id=pid, num_examples=1)[0])
    return m


def test_checkpoint_round_trip(tmp_path: Path, small_config: RunConfig, fresh_model) -> None:
    mask = ParameterMask({n: p.detach() > 0 for n, p in fresh_model.named_parameters()})
    saved = Checkpoint(
        round=3,
        model=fresh_model.state_dict(),
        mask=mask,
        config=small_config.to_flat(),
        summary={"rounds": [], "clients": {}, "public_only_test_accuracy": 0.5},
    )
    save_checkpoint(tmp_path, saved)
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    assert loaded.round == 3 and loaded.mask == mask and loaded.config == saved.config
    assert all(torch.equal(loaded.model[k], v) for k, v in saved.model.items())
    assert load_checkpoint(tmp_path / "missing") is None


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt checkpoint in"):
        load_checkpoint(tmp_path)


def test_resume_refuses_changed_settings_but_allows_more_rounds(small_config: RunConfig) -> None:
    checkpoint = Checkpoint(round=1, model={}, mask=None, config=small_config.to_flat(), summary={})
    checkpoint.check_resumable_by(small_config.replace(**{"federated.num-rounds": 5}))
    with pytest.raises(ValueError, match=r"different settings for \['mask.density'\]"):
        checkpoint.check_resumable_by(small_config.replace(**{"mask.density": 0.5}))


def test_private_resume_needs_a_ledger_dir(
    tmp_path: Path, small_config: RunConfig, digits_split: PublicPrivateSplit, manager, make_reply
) -> None:
    # Without a ledger directory the clients' spend lived in per-run node state: gone.
    config = small_config.replace(**{"out-dir": str(tmp_path / "a")})
    _one_round(_strategy(config, digits_split), manager, make_reply, 1)
    with pytest.raises(ValueError, match=r"privacy\.ledger-dir"):
        _resumable_checkpoint(config.replace(**{"federated.resume": True}))
    # Adding one only now would restart every ledger from zero: also refused.
    with pytest.raises(ValueError, match=r"different settings for \['privacy\.ledger-dir'\]"):
        _resumable_checkpoint(
            config.replace(**{"federated.resume": True, "privacy.ledger-dir": str(tmp_path)})
        )
    # With ledgers on disk from the start, the run resumes.
    config = small_config.replace(
        **{"out-dir": str(tmp_path / "b"), "privacy.ledger-dir": str(tmp_path / "ledgers")}
    )
    _one_round(_strategy(config, digits_split), manager, make_reply, 1)
    checkpoint = _resumable_checkpoint(config.replace(**{"federated.resume": True}))
    assert checkpoint is not None and checkpoint.round == 1
    assert _resumable_checkpoint(config) is None  # resume off: start afresh


def test_resumed_strategy_continues_round_numbers_and_keeps_history(
    tmp_path: Path, small_config: RunConfig, digits_split: PublicPrivateSplit, manager, make_reply
) -> None:
    config = small_config.replace(**{"out-dir": str(tmp_path), "federated.num-rounds": 3})
    first = _strategy(config, digits_split)
    _one_round(first, manager, make_reply, 1)
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint is not None

    resumed = _strategy(config, digits_split, resumed=checkpoint)
    resumed.model.load_state_dict(checkpoint.model)
    assert resumed.done == 1 and resumed.mask == first.mask
    _one_round(resumed, manager, make_reply, 1)  # Flower's round 1 of the resumed run
    summary = resumed.summary()
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    latest = load_checkpoint(tmp_path)
    assert latest is not None and latest.round == 2
