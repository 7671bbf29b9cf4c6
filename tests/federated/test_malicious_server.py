"""The client is the privacy authority: each attack a server could try is refused or void.

Each test plays the server: it controls the run config and the messages (model, mask, round),
never the client's own policy or ledger directory. The honest path is checked alongside.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from fedprune.config import RunConfig
from fedprune.federated import ClientRoundResult, model_to_arrays, run_client_round
from fedprune.federated.protocol import METRIC_EPSILON, METRIC_NOISE, METRIC_REFUSED
from fedprune.masks import ParameterMask
from fedprune.privacy.policy import PrivacyPolicy


def _round(
    config: RunConfig,
    model: nn.Module,
    mask: ParameterMask,
    policy: PrivacyPolicy,
    *,
    server_round: int = 1,
) -> ClientRoundResult:
    return run_client_round(
        config,
        partition_id=0,
        num_partitions=config.federated.num_clients,
        global_arrays=model_to_arrays(model),
        mask=mask,
        server_round=server_round,
        policy=policy,
    )


def _policy(tmp_path: Path, **changes: object) -> PrivacyPolicy:
    return PrivacyPolicy(ledger_dir=str(tmp_path / "node-ledgers"), **changes)  # type: ignore[arg-type]


def _refused(result: ClientRoundResult) -> str:
    reason = str(result.metrics[METRIC_REFUSED])
    if reason:
        assert result.num_examples == 0
        assert not np.any(result.update)
    return reason


def test_server_cannot_replay_the_noise_from_the_config(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, tmp_path: Path
) -> None:
    # The server knows the whole config and the global model. By default the client's noise and
    # batches come from a secure source, so the same round twice gives different updates ...
    a = _round(small_config, fresh_model, mask, _policy(tmp_path / "a"))
    b = _round(small_config, fresh_model, mask, _policy(tmp_path / "b"))
    assert a.metrics[METRIC_NOISE] == "secure"
    assert not np.array_equal(a.update, b.update)
    # ... whereas the explicit local research opt-in is reproducible (the check can fail).
    c = _round(small_config, fresh_model, mask, _policy(tmp_path / "c", reproducible_noise=True))
    d = _round(small_config, fresh_model, mask, _policy(tmp_path / "d", reproducible_noise=True))
    assert c.metrics[METRIC_NOISE] == "reproducible"
    np.testing.assert_array_equal(c.update, d.update)


def test_server_cannot_switch_dp_off(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, tmp_path: Path
) -> None:
    attack = small_config.replace(**{"privacy.enabled": False})
    assert "requires DP" in _refused(_round(attack, fresh_model, mask, _policy(tmp_path)))
    # only the node itself can allow a non-private baseline
    allowed = _round(attack, fresh_model, mask, _policy(tmp_path, allow_non_private=True))
    assert _refused(allowed) == "" and allowed.num_examples > 0


def test_server_cannot_shrink_the_noise(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, tmp_path: Path
) -> None:
    attack = small_config.replace(**{"privacy.noise-multiplier": 0.05, "privacy.max-epsilon": 1e9})
    reason = _refused(_round(attack, fresh_model, mask, _policy(tmp_path)))
    assert "min-noise-multiplier" in reason or "max_epsilon" in reason
    # even with the floor lowered by the node, its own budget still holds
    reason = _refused(_round(attack, fresh_model, mask, _policy(tmp_path, min_noise_multiplier=0)))
    assert "budget" in reason


def test_server_cannot_loosen_delta(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, tmp_path: Path
) -> None:
    attack = small_config.replace(**{"privacy.delta": 0.5})
    assert "delta" in _refused(_round(attack, fresh_model, mask, _policy(tmp_path)))
    # a node that set delta >= 1/n itself is stopped too, naming the client
    node = _policy(tmp_path, delta=0.5)
    reason = _refused(_round(attack, fresh_model, mask, node))
    assert "client 0" in reason and "1/n" in reason


def test_server_cannot_choose_the_ledger_or_the_noise_mode() -> None:
    for key, value in (("privacy.ledger-dir", "/tmp/fresh"), ("privacy.secure-noise", False)):
        with pytest.raises(ValueError, match="unknown config keys"):
            RunConfig.from_flat({key: value})


def test_server_cannot_raise_the_nodes_budget(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, tmp_path: Path
) -> None:
    attack = small_config.replace(**{"privacy.max-epsilon": math.inf})
    node = _policy(tmp_path, max_epsilon=1.0)
    assert "budget" in _refused(_round(attack, fresh_model, mask, node))


def test_budget_spans_runs_on_the_same_data(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, tmp_path: Path
) -> None:
    # A second run (fresh process state, same node ledger directory) continues the ledger ...
    node = _policy(tmp_path, max_epsilon=small_config.privacy.target_epsilon * 1.05)
    first = [_round(small_config, fresh_model, mask, node, server_round=r) for r in (1, 2)]
    assert all(_refused(r) == "" for r in first)
    spent = float(first[-1].metrics[METRIC_EPSILON])
    assert spent == pytest.approx(small_config.privacy.target_epsilon, abs=0.02)
    # ... so it is refused: its spend would compose with the first run's.
    second = _round(small_config, fresh_model, mask, node, server_round=1)
    assert "budget" in _refused(second)
    assert float(second.metrics[METRIC_EPSILON]) == pytest.approx(spent)


def test_an_emptied_ledger_fails_closed(
    small_config: RunConfig, fresh_model: nn.Module, mask: ParameterMask, tmp_path: Path
) -> None:
    node = _policy(tmp_path)
    assert _refused(_round(small_config, fresh_model, mask, node)) == ""
    files = [p for p in Path(node.ledger_dir).rglob("*") if p.is_file() and "key" not in p.name]
    assert files
    for path in files:
        path.write_text("")
    assert _refused(_round(small_config, fresh_model, mask, node, server_round=2)) != ""


def test_policy_comes_from_the_nodes_own_config_strings() -> None:
    policy = PrivacyPolicy.from_node_config(
        {"partition-id": 3, "max-epsilon": "2", "reproducible-noise": "false", "delta": 1e-6}
    )
    assert policy.max_epsilon == 2.0 and policy.delta == 1e-6 and not policy.reproducible_noise
    with pytest.raises(ValueError, match="node config max-epsilon"):
        PrivacyPolicy.from_node_config({"max-epsilon": "lots"})
    assert PrivacyPolicy.from_node_config(PrivacyPolicy().to_node_config()) == PrivacyPolicy()
