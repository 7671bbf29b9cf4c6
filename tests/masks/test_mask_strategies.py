"""Tests for the mask strategy registry and the scores each strategy computes."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedprune.data.splits import PrivateDataset, PublicDataset
from fedprune.masks import (
    MaskStrategy,
    available_mask_strategies,
    create_mask_strategy,
    mean_loss_gradient,
    register_mask_strategy,
)
from fedprune.masks import strategies as strategies_module
from fedprune.registry import Registry

ALL = ["gradient", "magnitude", "none", "random", "snip"]
DATA_STRATEGIES = ["gradient", "snip"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_builtin_strategies_are_registered() -> None:
    assert available_mask_strategies() == ALL
    for name in ALL:
        strategy = create_mask_strategy(name)
        assert isinstance(strategy, MaskStrategy) and strategy.name == name
        assert strategy.needs_public_data == (name in DATA_STRATEGIES)
    assert create_mask_strategy("none").selects_all
    assert not create_mask_strategy("magnitude").selects_all


def test_unknown_strategy_lists_known_names() -> None:
    with pytest.raises(ValueError, match=r"unknown mask strategy 'fisher'; expected one of \["):
        create_mask_strategy("fisher")


def test_register_custom_strategy(monkeypatch: pytest.MonkeyPatch, model: nn.Sequential) -> None:
    registry: Registry[type[MaskStrategy]] = Registry("mask strategy")
    for name in strategies_module.MASK_STRATEGIES:
        registry.register(name, strategies_module.MASK_STRATEGIES.get(name))
    monkeypatch.setattr(strategies_module, "MASK_STRATEGIES", registry)  # keep "constant" local

    @register_mask_strategy
    class Constant(MaskStrategy):
        name = "constant"
        needs_public_data = False

        def _score(
            self, model: nn.Module, *, public: PublicDataset | None, generator: torch.Generator
        ) -> dict[str, torch.Tensor]:
            return {n: torch.zeros(p.shape) for n, p in model.named_parameters()}

    assert "constant" in available_mask_strategies()
    scores = create_mask_strategy("constant").scores(model, public=None, generator=gen())
    assert all(bool((s == 0).all()) for s in scores.values())
    with pytest.raises(ValueError, match="'constant' is already registered"):
        register_mask_strategy(Constant)
    with pytest.raises(TypeError, match="expected a MaskStrategy subclass"):
        register_mask_strategy(int)  # type: ignore[arg-type]


def test_scores_with_wrong_keys_are_rejected(model: nn.Sequential) -> None:
    class Broken(MaskStrategy):
        name = "broken"
        needs_public_data = False

        def _score(
            self, model: nn.Module, *, public: PublicDataset | None, generator: torch.Generator
        ) -> dict[str, torch.Tensor]:
            return {"nonsense": torch.zeros(1)}

    with pytest.raises(RuntimeError, match="'broken' returned scores for"):
        Broken().scores(model, public=None, generator=gen())


@pytest.mark.parametrize("name", ALL)
def test_scores_cover_trainable_parameters_only(
    name: str, model: nn.Sequential, public: PublicDataset
) -> None:
    model[1].weight.requires_grad_(False)
    scores = create_mask_strategy(name).scores(model, public=public, generator=gen())
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert list(scores) == list(trainable)
    for n, s in scores.items():
        assert s.shape == trainable[n].shape and s.is_floating_point() and s.device.type == "cpu"
        assert not s.requires_grad and bool((s >= 0).all())


def test_random_is_seeded(model: nn.Sequential) -> None:
    strategy = create_mask_strategy("random")
    a = strategy.scores(model, public=None, generator=gen(1))
    b = strategy.scores(model, public=None, generator=gen(1))
    c = strategy.scores(model, public=None, generator=gen(2))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def test_magnitude_is_absolute_weight(model: nn.Sequential) -> None:
    scores = create_mask_strategy("magnitude").scores(model, public=None, generator=gen())
    for n, p in model.named_parameters():
        assert torch.equal(scores[n], p.detach().abs())


def test_none_scores_are_constant(model: nn.Sequential) -> None:
    scores = create_mask_strategy("none").scores(model, public=None, generator=gen())
    assert all(bool((s == 1).all()) for s in scores.values())


def manual_mean_gradient(model: nn.Sequential, public: PublicDataset) -> dict[str, torch.Tensor]:
    model.eval()
    x, y = public.dataset.tensors
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(params.values()))
    return dict(zip(params, grads, strict=True))


def test_gradient_and_snip_match_manual_computation(
    tiny_model: Callable[..., nn.Sequential], public: PublicDataset
) -> None:
    expected = manual_mean_gradient(tiny_model(), public)
    model = tiny_model()
    gradient = create_mask_strategy("gradient").scores(model, public=public, generator=gen())
    snip = create_mask_strategy("snip").scores(model, public=public, generator=gen())
    for n, p in model.named_parameters():
        torch.testing.assert_close(gradient[n], expected[n].abs())
        torch.testing.assert_close(snip[n], (p.detach() * expected[n]).abs())


def test_mean_loss_gradient_batches_and_subsample(
    model: nn.Sequential, public: PublicDataset
) -> None:
    full = manual_mean_gradient(model, public)
    # 40 examples in batches of 7: the batch split does not change the mean
    batched = mean_loss_gradient(model, public, generator=gen(), batch_size=7, max_batches=10)
    for n in full:
        torch.testing.assert_close(batched[n], full[n])
    # a 10-example subsample depends on the seed
    a = mean_loss_gradient(model, public, generator=gen(1), batch_size=5, max_batches=2)
    b = mean_loss_gradient(model, public, generator=gen(1), batch_size=5, max_batches=2)
    c = mean_loss_gradient(model, public, generator=gen(2), batch_size=5, max_batches=2)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.allclose(a[n], c[n]) for n in a)


def test_mean_loss_gradient_rejects_empty_public_data(model: nn.Sequential) -> None:
    empty = PublicDataset(
        TensorDataset(torch.zeros(0, 1, 6, 6), torch.zeros(0, dtype=torch.int64)),
        kind="in-distribution",
        description="empty",
    )
    with pytest.raises(ValueError, match="non-empty PublicDataset, got 0 examples"):
        mean_loss_gradient(model, empty, generator=gen())


@pytest.mark.parametrize("name", DATA_STRATEGIES)
def test_data_strategies_leave_model_unchanged(
    name: str, model: nn.Sequential, public: PublicDataset
) -> None:
    model.train()
    model[1].eval()  # mixed training flags must come back exactly
    model[1].weight.requires_grad_(False)
    conv_weight = dict(model.named_parameters())["0.weight"]
    conv_weight.grad = torch.full_like(conv_weight, 3.0)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    requires = {n: p.requires_grad for n, p in model.named_parameters()}
    flags = [m.training for m in model.modules()]

    create_mask_strategy(name).scores(model, public=public, generator=gen())

    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == requires
    assert [m.training for m in model.modules()] == flags
    assert conv_weight.grad is not None
    assert torch.equal(conv_weight.grad, torch.full_like(conv_weight, 3.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "0.weight")


def not_public_inputs(public: PublicDataset) -> list[object]:
    return [
        public.dataset,
        DataLoader(public.dataset, batch_size=4),
        PrivateDataset(public.dataset, description="private"),
        public.dataset.tensors,
    ]


@pytest.mark.parametrize("name", ALL)
def test_only_public_data_is_accepted(
    name: str, model: nn.Sequential, public: PublicDataset
) -> None:
    strategy = create_mask_strategy(name)
    for data in not_public_inputs(public):
        with pytest.raises(TypeError, match=r"private data .* voids the DP guarantee"):
            strategy.scores(model, public=data, generator=gen())  # type: ignore[arg-type]


@pytest.mark.parametrize("name", DATA_STRATEGIES)
def test_data_strategies_need_public_data(name: str, model: nn.Sequential) -> None:
    with pytest.raises(TypeError, match=f"'{name}' needs a fedprune.data.splits.PublicDataset"):
        create_mask_strategy(name).scores(model, public=None, generator=gen())


class _Spy(MaskStrategy):
    name = "spy"
    needs_public_data = True
    calls: ClassVar[list[object]] = []

    def _score(
        self, model: nn.Module, *, public: PublicDataset | None, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        self.calls.append(public)
        return {n: torch.zeros(p.shape) for n, p in model.named_parameters()}


def test_private_data_never_reaches_subclass_code(
    model: nn.Sequential, public: PublicDataset
) -> None:
    with pytest.raises(TypeError):
        _Spy().scores(model, public=public.dataset, generator=gen())  # type: ignore[arg-type]
    assert _Spy.calls == []
