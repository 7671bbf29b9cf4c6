"""train_dp_sgd end to end: untouched unselected coordinates (freeze and select mode, with and
without momentum), frozen tensors, hook clean-up, step accounting, the budget, empty batches."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.utils.data import TensorDataset

from fedprune.data.splits import PublicDataset
from fedprune.masks import MaskError, ParameterMask, select_mask
from fedprune.privacy import DPPlan, PrivacyBudgetExceededError, PrivacyLedger
from fedprune.privacy.noise import ReproducibleNoise, SecureNoise
from fedprune.training.dp_sgd import train_dp_sgd
from fedprune.training.masked_optimizer import MaskedDPOptimizer

OPACUS_ATTRS = ("grad_sample", "summed_grad", "_forward_counter", "_current_grad_sample")


def _plan(**changes: float) -> DPPlan:
    plan = DPPlan(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.25, steps=12, delta=1e-5)
    return plan.replace(**changes)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _assert_only_selected_moved(
    before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], mask: ParameterMask
) -> None:
    for name, sel in mask.items():
        assert torch.equal(after[name][~sel], before[name][~sel]), f"{name}: unselected moved"
        assert bool((after[name][sel] != before[name][sel]).all()), f"{name}: selected stuck"


def _spy_on_steps(monkeypatch: pytest.MonkeyPatch, fn: Callable[[MaskedDPOptimizer], None]) -> None:
    """Call ``fn(optimizer)`` at every step, after backward and before clipping."""
    original = MaskedDPOptimizer.clip_and_accumulate

    def spied(self: MaskedDPOptimizer) -> None:
        fn(self)
        original(self)

    monkeypatch.setattr(MaskedDPOptimizer, "clip_and_accumulate", spied)


def _freeze_mask(model: nn.Module, random_mask: Callable[..., ParameterMask]) -> ParameterMask:
    """Random 30 % mask with the conv bias entirely unselected (frozen in freeze mode)."""
    tensors = dict(random_mask(model, 0.3, seed=4).items())
    tensors["0.bias"] = torch.zeros_like(tensors["0.bias"])
    return ParameterMask(tensors)


def _has_opacus_state(model: nn.Module) -> bool:
    hooks = any(m._forward_hooks or m._backward_hooks for m in model.modules())
    attrs = any(hasattr(p, a) for p in model.parameters() for a in OPACUS_ATTRS)
    return hooks or attrs or hasattr(model, "autograd_grad_sample_hooks")


# ---- 1. unselected coordinates stay bit-identical ------------------------------------------------


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_freeze_mode_moves_exactly_the_selected_coordinates(
    conv_net, make_data, random_mask, momentum: float
) -> None:
    model = conv_net(seed=1)
    mask = _freeze_mask(model, random_mask)
    before = _snapshot(model)
    result = train_dp_sgd(
        model,
        make_data(),
        plan=_plan(),
        lr=0.1,
        momentum=momentum,
        mask=mask,
        noise=ReproducibleNoise(3),
    )
    _assert_only_selected_moved(before, _snapshot(model), mask)
    assert result.trained_coordinates == mask.num_selected
    assert result.mask == mask


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_select_mode_deselected_coordinates_stay_put_despite_momentum(
    conv_net, make_data, random_mask, momentum: float
) -> None:
    model = conv_net(seed=2)
    masks = [random_mask(model, 0.4, seed=s) for s in range(4)]
    snapshots = [_snapshot(model)]
    upcoming = iter(masks[1:])

    def reselect(m: nn.Module) -> ParameterMask:
        snapshots.append(_snapshot(m))
        return next(upcoming)

    result = train_dp_sgd(
        model,
        make_data(),
        plan=_plan(),
        lr=0.1,
        momentum=momentum,
        mask=masks[0],
        reselect=reselect,
        reselect_every=3,
        noise=ReproducibleNoise(5),
    )
    snapshots.append(_snapshot(model))
    assert len(snapshots) == len(masks) + 1  # reselected at steps 3, 6 and 9 of 12
    for i, mask in enumerate(masks):
        _assert_only_selected_moved(snapshots[i], snapshots[i + 1], mask)
        if i:  # some coordinates were deselected, carrying momentum from the last segment
            assert any(bool((masks[i - 1][n] & ~mask[n]).any()) for n in mask)
    assert result.mask == masks[-1]
    assert result.trained_coordinates == masks[-1].num_selected


def test_dense_training_moves_every_coordinate(conv_net, make_data) -> None:
    model = conv_net()
    before = _snapshot(model)
    result = train_dp_sgd(model, make_data(), plan=_plan(steps=3), lr=0.1)
    _assert_only_selected_moved(before, _snapshot(model), ParameterMask.dense(model))
    assert result.mask is None
    assert result.trained_coordinates == sum(p.numel() for p in model.parameters())


def test_reselect_may_run_the_model_on_public_data(conv_net, make_data) -> None:
    """A gradient-based strategy inside select mode runs forward/backward outside DP steps."""
    model = conv_net()
    x, y = make_data(n=16, seed=9).tensors
    public = PublicDataset(TensorDataset(x, y), kind="in-distribution", description="test")
    seeds = itertools.count(1)

    def reselect(m: nn.Module) -> ParameterMask:
        return select_mask(m, strategy="gradient", density=0.3, public=public, seed=next(seeds))

    first = reselect(model)
    ledger = PrivacyLedger(accountant="rdp", delta=1e-5)
    result = train_dp_sgd(
        model,
        make_data(),
        plan=_plan(steps=6),
        lr=0.1,
        mask=first,
        reselect=reselect,
        reselect_every=2,
        ledger=ledger,
    )
    assert ledger.steps == 6
    assert result.mask is not None
    assert not _has_opacus_state(model)


def test_reselect_returning_a_mask_for_another_model_fails_clearly(conv_net, make_data) -> None:
    model = conv_net()
    other = ParameterMask({"weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(MaskError, match="not parameters of the model"):
        train_dp_sgd(
            model,
            make_data(),
            plan=_plan(steps=4),
            lr=0.1,
            mask=ParameterMask.dense(model),
            reselect=lambda m: other,
            reselect_every=2,
        )
    assert not _has_opacus_state(model)


# ---- 4. freeze mode: no per-example work on frozen tensors; clean model afterwards ---------------


def test_freeze_mode_skips_frozen_tensors_and_restores_them(
    conv_net, make_data, random_mask, monkeypatch
) -> None:
    model = conv_net()
    mask = _freeze_mask(model, random_mask)
    frozen = model[0].bias
    seen: list[tuple[bool, bool, int]] = []
    _spy_on_steps(
        monkeypatch,
        lambda opt: seen.append(
            (
                frozen.requires_grad,
                getattr(frozen, "grad_sample", None) is not None,
                sum(p is frozen for p in opt.params),
            )
        ),
    )
    train_dp_sgd(model, make_data(), plan=_plan(steps=4), lr=0.1, mask=mask, engine="reference")
    assert seen == [(False, False, 0)] * 4
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert not _has_opacus_state(model)


def test_train_twice_on_one_model(conv_net, make_data, random_mask) -> None:
    model = conv_net()
    mask = _freeze_mask(model, random_mask)
    ledger = PrivacyLedger(accountant="rdp", delta=1e-5)
    for seed in (0, 1):
        before = _snapshot(model)
        train_dp_sgd(
            model,
            make_data(),
            plan=_plan(steps=3),
            lr=0.1,
            mask=mask,
            ledger=ledger,
            noise=ReproducibleNoise(seed),
        )
        _assert_only_selected_moved(before, _snapshot(model), mask)
        assert not _has_opacus_state(model)
    assert ledger.steps == 6


# ---- 5. accounting through the step hook and the budget ------------------------------------------


def test_step_hook_records_exactly_plan_steps(conv_net, make_data) -> None:
    earlier = (2.0, 0.1, 7)
    ledger = PrivacyLedger(accountant="rdp", delta=1e-5, history=[earlier])
    plan = _plan(steps=9, noise_multiplier=1.1)
    result = train_dp_sgd(conv_net(), make_data(), plan=plan, lr=0.1, ledger=ledger)
    assert ledger.entries == [earlier, (1.1, 0.25, 9)]
    reference = RDPAccountant()
    for sigma, q, steps in ledger.entries:
        for _ in range(steps):
            reference.step(noise_multiplier=sigma, sample_rate=q)
    assert result.epsilon == ledger.epsilon() == reference.get_epsilon(delta=1e-5)


def test_refused_run_leaves_model_and_ledger_untouched(conv_net, make_data, monkeypatch) -> None:
    model = conv_net()
    ledger = PrivacyLedger(accountant="rdp", delta=1e-5, max_epsilon=1.0, history=[(1.0, 0.25, 5)])
    state = ledger.state_dict()
    before = _snapshot(model)
    steps: list[int] = []
    monkeypatch.setattr(DPOptimizer, "pre_step", lambda self, closure=None: steps.append(1))
    with pytest.raises(PrivacyBudgetExceededError, match="above the budget max_epsilon=1"):
        train_dp_sgd(model, make_data(), plan=_plan(steps=50), lr=0.1, ledger=ledger)
    assert steps == []
    assert ledger.state_dict() == state
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name])
        assert p.requires_grad and p.grad is None
    assert not _has_opacus_state(model)


def test_plan_must_match_the_ledger(conv_net, make_data) -> None:
    ledger = PrivacyLedger(accountant="prv", delta=1e-5)
    with pytest.raises(ValueError, match="does not match the ledger"):
        train_dp_sgd(conv_net(), make_data(), plan=_plan(), lr=0.1, ledger=ledger)
    assert ledger.steps == 0


# ---- empty Poisson batches -----------------------------------------------------------------------


def test_empty_batches_add_noise_and_count_a_step(
    conv_net, make_data, random_mask, monkeypatch
) -> None:
    model = conv_net()
    mask = _freeze_mask(model, random_mask)
    sizes: list[int] = []
    _spy_on_steps(monkeypatch, lambda opt: sizes.append(len(opt.grad_samples[0])))
    ledger = PrivacyLedger(accountant="rdp", delta=1e-5)
    before = _snapshot(model)
    plan = _plan(sample_rate=1e-6, steps=5)
    train_dp_sgd(model, make_data(), plan=plan, lr=0.1, mask=mask, engine="reference")
    train_dp_sgd(
        model, make_data(), plan=plan, lr=0.1, mask=mask, ledger=ledger, engine="reference"
    )
    assert sizes == [0] * 10
    assert ledger.steps == 5
    _assert_only_selected_moved(before, _snapshot(model), mask)  # noise alone moved them
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_empty_batches_between_non_empty_ones(conv_net, make_data, monkeypatch) -> None:
    sizes: list[int] = []
    _spy_on_steps(monkeypatch, lambda opt: sizes.append(len(opt.grad_samples[0])))
    model = conv_net()
    ledger = PrivacyLedger(accountant="rdp", delta=1e-5)
    train_dp_sgd(
        model,
        make_data(),
        plan=_plan(sample_rate=0.02, steps=20),
        lr=0.1,
        ledger=ledger,
        noise=ReproducibleNoise(1),
        engine="reference",
    )
    assert 0 in sizes[1:] and any(sizes), sizes
    assert ledger.steps == 20
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


# ---- noise source: secure by default, reproducible on request ------------------------------------


class _CountingNoise(ReproducibleNoise):
    """A reproducible source that counts what ``train_dp_sgd`` asks of it."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.gaussian_calls = 0
        self.sampling_calls = 0

    def gaussian(self, like: torch.Tensor, std: float) -> torch.Tensor:
        self.gaussian_calls += 1
        return super().gaussian(like, std)

    def sampling_generator(self) -> torch.Generator:
        self.sampling_calls += 1
        return super().sampling_generator()


def test_noise_source_drives_noise_and_sampling(conv_net, make_data) -> None:
    model = conv_net()
    noise = _CountingNoise(0)
    train_dp_sgd(model, make_data(), plan=_plan(steps=5), lr=0.1, noise=noise)
    assert noise.sampling_calls == 1
    assert noise.gaussian_calls == 5 * len(list(model.parameters()))  # each tensor, each step


def test_same_reproducible_seed_gives_the_same_model(conv_net, make_data, random_mask) -> None:
    finals = []
    for seed in (7, 7, 8):
        model = conv_net()
        mask = random_mask(model, 0.5, seed=1)
        train_dp_sgd(
            model,
            make_data(),
            plan=_plan(steps=4),
            lr=0.1,
            mask=mask,
            noise=ReproducibleNoise(seed),
        )
        finals.append(_snapshot(model))
    assert all(torch.equal(finals[0][n], finals[1][n]) for n in finals[0])
    assert not all(torch.equal(finals[0][n], finals[2][n]) for n in finals[0])


def test_default_noise_is_a_fresh_secure_source(conv_net, make_data, monkeypatch) -> None:
    import fedprune.training.dp_sgd as dp_sgd_module

    created: list[SecureNoise] = []

    class Spy(SecureNoise):
        def __init__(self) -> None:
            super().__init__()
            created.append(self)

    monkeypatch.setattr(dp_sgd_module, "SecureNoise", Spy)
    finals = []
    for _ in range(2):
        model = conv_net()
        train_dp_sgd(model, make_data(), plan=_plan(steps=2), lr=0.1)
        finals.append(_snapshot(model))
    assert len(created) == 2
    assert not any(torch.equal(finals[0][n], finals[1][n]) for n in finals[0])


# ---- no un-noised gradient reaches a mask re-selection -------------------------------------------


def test_reselect_sees_only_the_model_and_no_gradients(conv_net, make_data, random_mask) -> None:
    model = conv_net()
    masks = iter([random_mask(model, 0.4, seed=s) for s in range(1, 4)])
    calls: list[int] = []

    def reselect(*args: object, **kwargs: object) -> ParameterMask:
        assert args == (model,) and kwargs == {}, "reselect must receive only the model"
        for name, p in model.named_parameters():
            assert p.grad is None, f"{name}.grad reached the re-selection"
            assert not hasattr(p, "grad_sample"), f"{name}.grad_sample reached the re-selection"
            assert not hasattr(p, "summed_grad"), f"{name}.summed_grad reached the re-selection"
        assert not any(getattr(m, "activations", None) for m in model.modules())
        calls.append(1)
        return next(masks)

    train_dp_sgd(
        model,
        make_data(),
        plan=_plan(steps=7),
        lr=0.1,
        momentum=0.9,
        mask=random_mask(model, 0.4, seed=0),
        reselect=reselect,
        reselect_every=2,
        noise=ReproducibleNoise(0),
    )
    assert len(calls) == 3  # steps 2, 4 and 6
