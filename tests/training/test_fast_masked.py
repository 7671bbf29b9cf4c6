"""The fast engine runs exactly the reference engine's mechanism: same models (to float
tolerance) on every registered model, freeze and select mode, every strategy (gather,
materialise, bilinear, ghost, skip; each partial strategy also forced wherever it applies);
unselected coordinates bit-identical; same ledger; the cost model's choices; fallback choice."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fedprune.masks import ParameterMask
from fedprune.models import create_model
from fedprune.privacy import DPPlan, PrivacyLedger
from fedprune.privacy.noise import ReproducibleNoise
from fedprune.training import fast_masked
from fedprune.training.dp_sgd import train_dp_sgd
from fedprune.training.fast_masked import unsupported_parameters

SHAPES = {"mlp": (1, 6, 6), "mlp-wide": (1, 2, 2), "cnn": (1, 8, 8), "resnet": (3, 8, 8)}


def _data(shape: tuple[int, int, int], n: int = 24) -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    return TensorDataset(
        torch.randn(n, *shape, generator=gen), torch.randint(0, 3, (n,), generator=gen)
    )


def _mask(model: nn.Module, density: float, seed: int) -> ParameterMask:
    gen = torch.Generator().manual_seed(seed)
    tensors = {n: torch.rand(p.shape, generator=gen) < density for n, p in model.named_parameters()}
    last = list(tensors)[-1]
    tensors[last] = torch.zeros_like(tensors[last])  # one tensor with nothing selected
    return ParameterMask(tensors)


def _train(
    name: str, engine: str, mask_density: float, *, sigma: float, clip: float, select: bool
) -> tuple[nn.Module, nn.Module, ParameterMask, PrivacyLedger]:
    torch.manual_seed(0)
    model = create_model(name, input_shape=SHAPES[name], num_classes=3)
    start = create_model(name, input_shape=SHAPES[name], num_classes=3)
    start.load_state_dict(model.state_dict())
    mask = _mask(model, mask_density, seed=1)
    masks = [mask, _mask(model, mask_density, seed=2)]
    ledger = PrivacyLedger(accountant="rdp", delta=1e-5)
    plan = DPPlan(noise_multiplier=sigma, max_grad_norm=clip, sample_rate=0.3, steps=4, delta=1e-5)
    calls = iter(masks[1:])
    result = train_dp_sgd(
        model,
        _data(SHAPES[name]),
        plan=plan,
        lr=0.5,
        momentum=0.9,
        mask=mask,
        ledger=ledger,
        reselect=(lambda m: next(calls)) if select else None,
        reselect_every=2,
        noise=ReproducibleNoise(7),
        engine=engine,  # type: ignore[arg-type]
    )
    assert result.mask is not None
    return start, model, result.mask, ledger


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("density", [0.02, 0.5, 1.0])
@pytest.mark.parametrize("select", [False, True], ids=["freeze", "select"])
def test_fast_equals_reference(name: str, density: float, select: bool) -> None:
    if name == "mlp-wide" and density == 1.0:
        pytest.skip("the dense reference on 1M parameters is slow; 0.5 covers materialising")
    start, ref, _, ref_ledger = _train(
        name, "reference", density, sigma=1.0, clip=0.3, select=select
    )
    _, fast, mask, fast_ledger = _train(name, "fast", density, sigma=1.0, clip=0.3, select=select)
    assert fast_ledger.entries == ref_ledger.entries
    before = dict(start.named_parameters())
    for (n, a), (_, b) in zip(ref.named_parameters(), fast.named_parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=n)
        if not select:  # freeze mode: unselected coordinates bit-identical to the start
            off = ~mask[n]
            assert torch.equal(b.detach()[off], before[n].detach()[off]), n


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
@pytest.mark.parametrize("forced", ["gather", "bilinear", "materialise"])
def test_every_partial_strategy_equals_reference(
    name: str, forced: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cost model only picks between exact strategies: forcing one for every partly
    selected weight it applies to (bilinear: flat Linear layers; materialise elsewhere) still
    gives the reference engine's models."""
    _, ref, _, _ = _train(name, "reference", 0.3, sigma=1.0, clip=0.3, select=True)
    chosen: list[str] = []

    def strategy(
        sel: fast_masked._Selection, positions: int, calls: int, p: int, d: int, conv: bool
    ) -> str:
        flat_linear = not conv and positions == 1 and calls == 1
        chosen.append(forced if forced != "bilinear" or flat_linear else "materialise")
        return chosen[-1]

    monkeypatch.setattr(fast_masked, "_partial_strategy", strategy)
    _, fast, _, _ = _train(name, "fast", 0.3, sigma=1.0, clip=0.3, select=True)
    assert forced in chosen, f"no partly selected weight took the {forced} strategy"
    for (n, a), (_, b) in zip(ref.named_parameters(), fast.named_parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=n)


def _selection(shape: tuple[int, ...], density: float) -> fast_masked._Selection:
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(shape, generator=gen) < density
    return fast_masked._selection(torch.zeros(shape), mask)


def test_cost_model_is_position_aware() -> None:
    """A flat Linear (T = 1) never materialises: it gathers at 1 % and is bilinear at 10 % and
    above; a convolution (T = 196 positions) gathers at 0.2 % but materialises at 10 %."""
    choose = fast_masked._partial_strategy
    assert choose(_selection((128, 1024), 0.01), 1, 1, 128, 1024, False) == "gather"
    for density in (0.1, 0.5, 0.9):
        assert choose(_selection((128, 1024), density), 1, 1, 128, 1024, False) == "bilinear"
    conv = (64, 32, 3, 3)
    assert choose(_selection(conv, 0.002), 196, 1, 64, 288, True) == "gather"
    assert choose(_selection(conv, 0.1), 196, 1, 64, 288, True) == "materialise"


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
@pytest.mark.parametrize("clip", [1e-3, 1e3], ids=["clipping", "no-clipping"])
def test_clipped_sums_match_without_noise(name: str, clip: float) -> None:
    """sigma = 0: only the clipped sums (and so the per-example norms) move the model."""
    for density in (0.05, 0.6):
        _, ref, _, _ = _train(name, "reference", density, sigma=0.0, clip=clip, select=False)
        _, fast, _, _ = _train(name, "fast", density, sigma=0.0, clip=clip, select=False)
        for a, b in zip(ref.parameters(), fast.parameters(), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_noise_reaches_only_selected_coordinates() -> None:
    """Huge noise: every selected coordinate moves, no unselected one does."""
    start, model, mask, _ = _train("cnn", "fast", 0.3, sigma=50.0, clip=1.0, select=False)
    before = dict(start.named_parameters())
    for n, p in model.named_parameters():
        sel = mask[n]
        assert torch.equal(p.detach()[~sel], before[n].detach()[~sel]), n
        assert bool((p.detach()[sel] != before[n].detach()[sel]).all()), n


def test_fast_engine_leaves_no_hooks_or_gradients() -> None:
    _, model, _, _ = _train("resnet", "fast", 0.1, sigma=1.0, clip=1.0, select=True)
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


class _RawParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * self.scale


def test_unsupported_parameters_fall_back_or_refuse() -> None:
    model = _RawParameter()
    assert unsupported_parameters(model) == ["scale"]
    assert (
        unsupported_parameters(create_model("resnet", input_shape=(3, 8, 8), num_classes=3)) == []
    )
    data = TensorDataset(torch.randn(8, 1, 2, 2), torch.randint(0, 3, (8,)))
    plan = DPPlan(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, steps=2, delta=1e-5)
    with pytest.raises(ValueError, match="cannot train parameters \\['scale'\\]"):
        train_dp_sgd(model, data, plan=plan, lr=0.1, engine="fast")
    result = train_dp_sgd(model, data, plan=plan, lr=0.1)  # auto: the reference engine
    assert result.plan.steps == 2
    with pytest.raises(ValueError, match="expected engine in"):
        train_dp_sgd(model, data, plan=plan, lr=0.1, engine="turbo")  # type: ignore[arg-type]
