"""Checkpoints round-trip, refuse incompatible resumes; a resumed server continues numbering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.server.client_manager import SimpleClientManager
from torch import nn

from fedprune.config import RunConfig
from fedprune.data import PublicPrivateSplit
from fedprune.federated import Checkpoint, FederatedServer, load_checkpoint, save_checkpoint
from fedprune.federated.checkpoint import CHECKPOINT_FILE
from fedprune.masks import ParameterMask
from fedprune.pipeline import build_model
from fedprune.summary import SUMMARY_FILE, HolderSpend, RoundRecord, RunSummary
from server.server_app import _resumable_checkpoint
from server.strategy import MaskedDPFedAvg


def _strategy(
    config: RunConfig, split: PublicPrivateSplit, resumed: Checkpoint | None = None
) -> MaskedDPFedAvg:
    model = build_model(config, split)
    if resumed is not None:
        model.load_state_dict(resumed.model)  # as run_federation does
    server = FederatedServer(
        config=config,
        split=split,
        model=model,
        secure=False,
        public_only_accuracy=0.5,
        resumed=resumed,
        progress=False,
    )
    return MaskedDPFedAvg(server)


def _one_round(
    strategy: MaskedDPFedAvg, manager: SimpleClientManager, make_reply, rnd: int
) -> None:
    params = strategy.initialize_parameters(manager)
    assert params is not None
    strategy.configure_fit(rnd, params, manager)
    assert strategy.server.mask is not None
    update = np.full(strategy.server.mask.num_selected, 0.01, dtype=np.float32)
    strategy.aggregate_fit(rnd, [make_reply(update, partition_id=0, num_examples=10)], [])
    strategy.evaluate(rnd, params)


def _summary(config: RunConfig, **changes: object) -> RunSummary:
    return RunSummary(
        kind="federated",
        config=config.to_flat(),
        public_only_test_accuracy=0.5,
        total_coordinates=100,
        **changes,  # type: ignore[arg-type]
    )


@pytest.fixture
def manager(make_reply) -> SimpleClientManager:
    m = SimpleClientManager()
    for pid in range(3):
        m.register(make_reply(np.zeros(1), partition_id=pid, num_examples=1)[0])
    return m


def test_checkpoint_round_trip(
    tmp_path: Path, small_config: RunConfig, fresh_model: nn.Module
) -> None:
    mask = ParameterMask({n: p.detach() > 0 for n, p in fresh_model.named_parameters()})
    summary = _summary(
        small_config,
        holders={"0": HolderSpend(num_examples=40, rounds_trained=3, epsilon=1.5, steps=21)},
        rounds=[RoundRecord(round=r, clients_trained=1, test_accuracy=0.5) for r in (1, 2, 3)],
    )
    saved = Checkpoint(round=3, model=fresh_model.state_dict(), mask=mask, summary=summary)
    save_checkpoint(tmp_path, saved)
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    assert loaded.round == 3 and loaded.mask == mask
    assert loaded.summary == summary
    assert all(torch.equal(loaded.model[k], v) for k, v in saved.model.items())
    assert RunSummary.read(tmp_path) == summary  # the readable view says the same
    assert load_checkpoint(tmp_path / "missing") is None


def test_checkpoint_carries_its_own_summary(
    tmp_path: Path,
    small_config: RunConfig,
    fresh_model: nn.Module,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A crash between writing checkpoint.pt and summary.json cannot pair a model with another
    round's bookkeeping: the checkpoint's own summary is the one resumed from."""
    one = _summary(small_config, rounds=[RoundRecord(round=1, test_accuracy=0.1)])
    save_checkpoint(
        tmp_path, Checkpoint(round=1, model=fresh_model.state_dict(), mask=None, summary=one)
    )
    two = _summary(
        small_config, rounds=[RoundRecord(round=r, test_accuracy=0.1 * r) for r in (1, 2)]
    )

    def crash(self: RunSummary, out_dir: object) -> Path:
        raise OSError("killed between the two writes")

    monkeypatch.setattr(RunSummary, "write", crash)
    with pytest.raises(OSError, match="killed"):
        save_checkpoint(
            tmp_path, Checkpoint(round=2, model=fresh_model.state_dict(), mask=None, summary=two)
        )
    monkeypatch.undo()

    # summary.json is still round 1's; the checkpoint is round 2's, with round 2's summary
    assert [r["round"] for r in json.loads((tmp_path / SUMMARY_FILE).read_text())["rounds"]] == [1]
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    assert loaded.round == 2
    assert loaded.summary == two
    assert loaded.summary.rounds_completed == loaded.round


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt checkpoint in"):
        load_checkpoint(tmp_path)


def test_resume_refuses_changed_settings_but_allows_more_rounds(small_config: RunConfig) -> None:
    checkpoint = Checkpoint(round=1, model={}, mask=None, summary=_summary(small_config))
    checkpoint.check_resumable_by(small_config.replace(**{"federated.num-rounds": 5}))
    with pytest.raises(ValueError, match=r"different settings for \['mask.density'\]"):
        checkpoint.check_resumable_by(small_config.replace(**{"mask.density": 0.5}))


def test_private_resume_needs_no_ledger_setting(
    tmp_path: Path, small_config: RunConfig, digits_split: PublicPrivateSplit, manager, make_reply
) -> None:
    # The clients' ledgers live on the nodes (their policy's ledger directory), persistent across
    # runs, so a private run resumes from its checkpoint alone -- also with the default
    # max-epsilon (inf, stored as JSON null in the checkpoint).
    config = RunConfig().replace(
        **{
            **{k: v for k, v in small_config.to_flat().items() if k != "privacy.max-epsilon"},
            "out-dir": str(tmp_path / "run"),
        }
    )
    assert config.privacy.enabled and config.privacy.max_epsilon == float("inf")
    _one_round(_strategy(config, digits_split), manager, make_reply, 1)
    checkpoint = _resumable_checkpoint(config.replace(**{"federated.resume": True}))
    assert checkpoint is not None and checkpoint.round == 1
    assert _resumable_checkpoint(config) is None  # resume off: start afresh
    with pytest.raises(ValueError, match=r"different settings for \['privacy\.target-epsilon'\]"):
        _resumable_checkpoint(
            config.replace(**{"federated.resume": True, "privacy.target-epsilon": 2.0})
        )


def test_resumed_server_continues_round_numbers_and_keeps_history(
    tmp_path: Path, small_config: RunConfig, digits_split: PublicPrivateSplit, manager, make_reply
) -> None:
    config = small_config.replace(**{"out-dir": str(tmp_path), "federated.num-rounds": 3})
    first = _strategy(config, digits_split)
    _one_round(first, manager, make_reply, 1)
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint is not None

    resumed = _strategy(config, digits_split, resumed=checkpoint)
    assert resumed.server.done == 1 and resumed.server.mask == first.server.mask
    for name, value in resumed.server.model.state_dict().items():
        assert torch.equal(value, first.server.model.state_dict()[name]), name
    _one_round(resumed, manager, make_reply, 1)  # Flower's round 1 of the resumed run
    summary = resumed.server.summary
    assert [r.round for r in summary.rounds] == [1, 2]
    assert summary.holders["0"].rounds_trained == 2  # per-client figures carried over
    latest = load_checkpoint(tmp_path)
    assert latest is not None and latest.round == 2
    assert [r.round for r in latest.summary.rounds] == [1, 2]
