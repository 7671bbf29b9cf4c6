"""MaskedDPOptimizer driven directly (GradSampleModule, fixed batch): clipping by hand, noise
statistics, the single-step invariant, and argument checks."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus import GradSampleModule
from scipy.stats import chi2
from torch import nn

from fedprune.masks import ParameterMask
from fedprune.privacy.noise import ReproducibleNoise, SecureNoise
from fedprune.training.masked_optimizer import MaskedDPOptimizer

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def _masks(mask: ParameterMask, model: nn.Module) -> list[torch.Tensor | None]:
    return [mask[name] for name, _ in model.named_parameters()]


def _dp_step(
    model: nn.Module,
    masks: Sequence[torch.Tensor | None],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    expected_batch_size: int,
    lr: float = 0.1,
    momentum: float = 0.0,
    momentum_buffers: Sequence[torch.Tensor] | None = None,
    seed: int = 0,
    before_step: Callable[[nn.Module], None] | None = None,
) -> list[torch.Tensor]:
    """One masked DP-SGD step on ``(x, y)`` (mean cross-entropy); returns each ``p.grad``."""
    gsm = GradSampleModule(model)
    try:
        optimizer = MaskedDPOptimizer(
            torch.optim.SGD(list(model.parameters()), lr=lr, momentum=momentum),
            masks=masks,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size,
            noise=ReproducibleNoise(seed),
        )
        for p, buf in zip(model.parameters(), momentum_buffers or [], strict=False):
            optimizer.state[p]["momentum_buffer"] = buf.clone()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(gsm(x), y).backward()
        if before_step is not None:
            before_step(model)
        optimizer.step()
        return [p.grad.detach().clone() for p in model.parameters()]
    finally:
        gsm._close()


def _batch(n: int, seed: int, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, 1, 6, 6, generator=gen), torch.randint(0, 3, (n,), generator=gen)


# ---- 2. clipping over the selected coordinates, checked by hand --------------------------------


def test_update_matches_hand_computed_masked_clipping(conv_net, random_mask) -> None:
    model = conv_net(seed=3)
    mask = random_mask(model, 0.4, seed=7)
    masks = [m.float() for m in _masks(mask, model)]
    x, y = _batch(6, seed=11, scale=3.0)
    expected_batch_size, lr = 5, 0.1  # B differs from the actual batch size on purpose

    # per-example gradients by plain autograd, one example at a time
    params = list(model.parameters())
    per_example = [
        torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), params)
        for i in range(len(x))
    ]
    full_norms = torch.stack([torch.sqrt(sum((g**2).sum() for g in gs)) for gs in per_example])
    sel_norms = torch.stack(
        [
            torch.sqrt(sum(((g * m) ** 2).sum() for g, m in zip(gs, masks, strict=True)))
            for gs in per_example
        ]
    )
    # C between example 0's selected norm and its full norm: masked clipping leaves example 0
    # alone, clipping over all coordinates would shrink it
    k = 0
    clip = float(sel_norms[k] + full_norms[k]) / 2
    assert sel_norms[k] < clip < full_norms[k]
    factors = (clip / (sel_norms + 1e-6)).clamp(max=1.0)
    assert factors[k] == 1.0
    assert (factors < 1).any(), "the batch should also contain examples that are clipped"
    expected = [
        sum(factors[i] * per_example[i][j] * masks[j] for i in range(len(x))) / expected_batch_size
        for j in range(len(params))
    ]
    unmasked_factors = (clip / (full_norms + 1e-6)).clamp(max=1.0)
    with_unmasked_clipping = [
        sum(unmasked_factors[i] * per_example[i][j] * masks[j] for i in range(len(x)))
        / expected_batch_size
        for j in range(len(params))
    ]

    before = [p.detach().clone() for p in params]
    grads = _dp_step(
        model,
        _masks(mask, model),
        x,
        y,
        noise_multiplier=0.0,
        max_grad_norm=clip,
        expected_batch_size=expected_batch_size,
        lr=lr,
    )

    for got, want, other in zip(grads, expected, with_unmasked_clipping, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
        assert not torch.allclose(got, other, rtol=1e-3, atol=0), "clipping must differ"
    for p, old, want in zip(params, before, expected, strict=True):
        torch.testing.assert_close(p.detach(), old - lr * want, rtol=1e-6, atol=1e-7)


def test_dense_masks_match_per_example_clipping_without_mask(conv_net) -> None:
    """``None`` masks (everything selected) clip over the full gradient, as stock Opacus does."""
    model = conv_net(seed=1)
    x, y = _batch(4, seed=2, scale=3.0)
    params = list(model.parameters())
    per_example = [
        torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), params)
        for i in range(len(x))
    ]
    norms = torch.stack([torch.sqrt(sum((g**2).sum() for g in gs)) for gs in per_example])
    clip = float(norms.median())
    factors = (clip / (norms + 1e-6)).clamp(max=1.0)
    grads = _dp_step(
        model,
        [None] * len(params),
        x,
        y,
        noise_multiplier=0.0,
        max_grad_norm=clip,
        expected_batch_size=4,
    )
    for j, got in enumerate(grads):
        want = sum(factors[i] * per_example[i][j] for i in range(len(x))) / 4
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_non_finite_gradient_on_unselected_coordinate_is_ignored(conv_net, random_mask) -> None:
    model = conv_net(seed=0)
    mask = random_mask(model, 0.5, seed=1)
    weight_mask = mask["3.weight"]
    spot = tuple(int(i) for i in (~weight_mask).nonzero()[0])
    before = [p.detach().clone() for p in model.parameters()]

    def poison(m: nn.Module) -> None:
        m[3].weight.grad_sample[(0, *spot)] = math.inf

    x, y = _batch(5, seed=0)
    grads = _dp_step(
        model,
        _masks(mask, model),
        x,
        y,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=5,
        before_step=poison,
    )
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    for (name, p), old in zip(model.named_parameters(), before, strict=True):
        assert torch.equal(p.detach()[~mask[name]], old[~mask[name]])


# ---- 3. noise statistics -------------------------------------------------------------------------


def test_noise_has_std_sigma_c_over_b_on_selected_and_is_zero_elsewhere() -> None:
    torch.manual_seed(0)
    model = nn.Linear(64, 40)
    gen = torch.Generator().manual_seed(5)
    masks = [torch.rand(p.shape, generator=gen) < 0.5 for p in model.parameters()]
    sigma, clip, batch = 1.3, 0.8, 16
    std = sigma * clip / batch
    gsm = GradSampleModule(model)
    try:
        optimizer = MaskedDPOptimizer(
            torch.optim.SGD(list(model.parameters()), lr=0.1),
            masks=masks,
            noise_multiplier=sigma,
            max_grad_norm=clip,
            expected_batch_size=batch,
            noise=ReproducibleNoise(9),
        )
        samples = []
        for _ in range(8):
            optimizer.zero_grad(set_to_none=True)
            (gsm(torch.randn(batch, 64)) * 0.0).sum().backward()  # every gradient is zero
            optimizer.step()
            for p, m in zip(model.parameters(), masks, strict=True):
                assert bool((p.grad[~m] == 0).all()), "unselected coordinates got noise"
                samples.append(p.grad[m].double())
    finally:
        gsm._close()
    noise = torch.cat(samples)
    n = noise.numel()
    assert n > 10_000
    # n * s^2 / std^2 ~ chi-square(n) (known mean 0); two-sided bound at total level 1e-6
    statistic = float((noise**2).sum()) / std**2
    assert chi2.ppf(5e-7, n) < statistic < chi2.ppf(1 - 5e-7, n)
    assert abs(float(noise.mean())) < 5.5 * std / math.sqrt(n)
    assert bool((noise != 0).all())


# ---- 1. single-step invariant (property test) ----------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    density=st.floats(0.0, 1.0),
    momentum=st.sampled_from([0.0, 0.9]),
)
def test_single_step_moves_and_noises_only_selected(
    conv_net, random_mask, seed: int, density: float, momentum: float
) -> None:
    base = conv_net(seed=seed % 7)
    mask = random_mask(base, density, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    # stale momentum on every coordinate, as if all had been selected before (select mode)
    buffers = [torch.randn(p.shape, generator=gen) for p in base.parameters()]
    x, y = _batch(6, seed=seed + 1)
    before = [p.detach().clone() for p in base.parameters()]
    runs = {}
    for sigma in (0.0, 1.0):
        model = copy.deepcopy(base)
        grads = _dp_step(
            model,
            _masks(mask, model),
            x,
            y,
            noise_multiplier=sigma,
            max_grad_norm=1.0,
            expected_batch_size=4,
            momentum=momentum,
            momentum_buffers=buffers if momentum else None,
            seed=seed,
        )
        runs[sigma] = (grads, [p.detach().clone() for p in model.parameters()])
        for (name, _), grad, p, old in zip(
            base.named_parameters(), grads, runs[sigma][1], before, strict=True
        ):
            off = ~mask[name]
            assert torch.equal(p[off], old[off]), f"unselected coordinates of {name} moved"
            assert bool((grad[off] == 0).all())
    for (name, _), clean, noisy in zip(
        base.named_parameters(), runs[0.0][0], runs[1.0][0], strict=True
    ):
        noise = noisy - clean
        sel = mask[name]
        assert bool((noise[~sel] == 0).all()), f"noise on unselected coordinates of {name}"
        assert bool((noise[sel] != 0).all()), f"a selected coordinate of {name} got no noise"


# ---- 6. argument checks --------------------------------------------------------------------------


def _sgd(model: nn.Module, **kwargs: float) -> torch.optim.SGD:
    return torch.optim.SGD(list(model.parameters()), lr=0.1, **kwargs)


def _optimizer(opt: torch.optim.Optimizer, masks: Sequence[torch.Tensor | None]) -> None:
    MaskedDPOptimizer(
        opt, masks=masks, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=4
    )


def test_rejects_adam_and_weight_decay(conv_net) -> None:
    model = conv_net()
    nones = [None] * len(list(model.parameters()))
    with pytest.raises(TypeError, match=r"needs torch.optim.SGD, got Adam"):
        _optimizer(torch.optim.Adam(model.parameters(), lr=0.1), nones)
    with pytest.raises(TypeError, match=r"got AdamW"):
        _optimizer(torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.0), nones)
    with pytest.raises(ValueError, match=r"expected weight_decay 0, got 0.01"):
        _optimizer(_sgd(model, weight_decay=0.01), nones)


def test_set_masks_validates_count_shape_dtype_and_type(conv_net) -> None:
    model = conv_net()
    shapes = [p.shape for p in model.parameters()]
    good = [torch.ones(s, dtype=torch.bool) for s in shapes]
    optimizer = MaskedDPOptimizer(
        _sgd(model), masks=good, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=4
    )
    with pytest.raises(ValueError, match=r"expected 4 masks \(one per parameter\), got 3"):
        optimizer.set_masks(good[:3])
    wrong_shape = [*good[:1], torch.ones(3, dtype=torch.bool), *good[2:]]
    with pytest.raises(ValueError, match=r"mask 1 must be a bool tensor of shape \(2,\), got"):
        optimizer.set_masks(wrong_shape)
    wrong_dtype = [*good[:3], torch.ones(shapes[3])]
    with pytest.raises(ValueError, match=r"mask 3 must be a bool tensor .* got torch.float32"):
        optimizer.set_masks(wrong_dtype)
    with pytest.raises(ValueError, match=r"mask 0 must be a bool tensor or None, got list"):
        optimizer.set_masks([[True], *good[1:]])
    with pytest.raises(ValueError, match=r"expected 4 masks"):
        _optimizer(_sgd(model), good[:2])


def test_set_masks_keeps_its_own_copy(conv_net) -> None:
    model = conv_net()
    masks = [torch.zeros(p.shape, dtype=torch.bool) for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _batch(4, seed=0)
    gsm = GradSampleModule(model)
    try:
        optimizer = MaskedDPOptimizer(
            _sgd(model), masks=masks, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=4
        )
        for m in masks:
            m.fill_(True)  # the caller changes its tensors after handing them over
        optimizer.zero_grad()
        F.cross_entropy(gsm(x), y).backward()
        optimizer.step()
    finally:
        gsm._close()
    for p, old in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.detach(), old)


# ---- the noise source ----------------------------------------------------------------------------


class _ConstantNoise(ReproducibleNoise):
    """ "Noise" equal to ``std`` everywhere: shows exactly where ``add_noise`` puts its draws."""

    def gaussian(self, like: torch.Tensor, std: float) -> torch.Tensor:
        return torch.full_like(like, std)


def test_add_noise_uses_the_noise_source_on_selected_coordinates_only(
    conv_net, random_mask
) -> None:
    model = conv_net()
    mask = random_mask(model, 0.5, seed=2)
    sigma, clip, batch = 1.5, 0.4, 4
    gsm = GradSampleModule(model)
    try:
        optimizer = MaskedDPOptimizer(
            _sgd(model),
            masks=_masks(mask, model),
            noise_multiplier=sigma,
            max_grad_norm=clip,
            expected_batch_size=batch,
            noise=_ConstantNoise(0),
        )
        optimizer.zero_grad(set_to_none=True)
        (gsm(_batch(batch, seed=0)[0]) * 0.0).sum().backward()  # every gradient is zero
        optimizer.step()
    finally:
        gsm._close()
    for name, p in model.named_parameters():
        sel = mask[name]
        assert torch.equal(p.grad[sel], torch.full_like(p.grad[sel], sigma * clip / batch))
        assert bool((p.grad[~sel] == 0).all())


def test_default_noise_source_is_secure(conv_net) -> None:
    model = conv_net()
    nones = [None] * len(list(model.parameters()))
    optimizer = MaskedDPOptimizer(
        _sgd(model), masks=nones, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=4
    )
    assert isinstance(optimizer.noise, SecureNoise)
