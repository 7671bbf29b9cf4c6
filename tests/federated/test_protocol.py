"""Model <-> array conversion shared by the federated server and clients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedprune.federated import arrays_to_model, model_to_arrays


def _net(seed: int) -> nn.Sequential:
    """Linear + BatchNorm: parameters plus float and int64 buffers in the state_dict."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    net.train()
    net(torch.randn(8, 4))  # move the running statistics and num_batches_tracked
    return net


def test_round_trip_copies_every_state_entry_exactly() -> None:
    source, target = _net(0), _net(1)
    arrays = model_to_arrays(source)

    assert len(arrays) == len(source.state_dict())
    assert all(a.dtype == np.float32 for a in arrays)
    arrays_to_model(target, arrays)
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert a.dtype == b.dtype, name
        assert torch.equal(a, b), name


def test_arrays_are_copies_not_views() -> None:
    net = _net(0)
    arrays = model_to_arrays(net)
    arrays[0][...] = 123.0
    assert not torch.equal(net.state_dict()["0.weight"], torch.full((3, 4), 123.0))


def test_wrong_number_of_arrays_is_rejected() -> None:
    net = _net(0)
    with pytest.raises(ValueError, match=r"expected \d+ arrays for the model, got 2"):
        arrays_to_model(net, model_to_arrays(net)[:2])


def test_shape_mismatch_names_the_tensor_and_leaves_the_model_unchanged() -> None:
    net = _net(0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    arrays = [a + 1 for a in model_to_arrays(net)]
    arrays[1] = np.zeros((3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"'0.bias'.*shape \(3, 3\), expected \(3,\)"):
        arrays_to_model(net, arrays)
    for name, value in net.state_dict().items():
        assert torch.equal(value, before[name]), name
