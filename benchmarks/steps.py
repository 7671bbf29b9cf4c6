"""Time and peak working memory of one training step, per method, model, mode and density.

Methods (all at a fixed batch, SGD, loss = mean cross-entropy):

* ``sgd``: non-private SGD on the dense model (the baseline of every ratio);
* ``opacus``: stock Opacus hooks, ``GradSampleModule`` + ``DPOptimizer`` (dense only: stock
  Opacus cannot mask coordinates);
* ``ghost``: Opacus ghost clipping (``PrivacyEngine.make_private(grad_sample_mode="ghost")``,
  two backward passes; dense only: it never materialises per-example gradients, so it cannot
  apply an element mask);
* ``reference``: fedprune's reference engine (``GradSampleModule`` + ``MaskedDPOptimizer``);
* ``fast``: fedprune's fast engine (``FastMaskedDPSGD``).

Masks are random (each coordinate selected independently with probability ``density``).
``freeze`` mode freezes tensors without a selected coordinate (``requires_grad=False``);
``select`` mode keeps every tensor trainable (as when the mask is re-picked during training).
Private methods use sigma = 1, C = 1 and fedprune's default ``SecureNoise`` (fedprune) or
Opacus's default ``torch.normal`` (stock Opacus).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from opacus import GradSampleModule, PrivacyEngine
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.memory import peak_working_memory
from fedprune.models import create_model
from fedprune.privacy.noise import SecureNoise
from fedprune.training.fast_masked import FastMaskedDPSGD
from fedprune.training.masked_optimizer import MaskedDPOptimizer

INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "mlp": (1, 28, 28),
    "mlp-wide": (1, 28, 28),
    "cnn": (1, 28, 28),
    "resnet": (3, 32, 32),
}
NUM_CLASSES = 10
LR = 0.01


@dataclass
class Case:
    """One configuration: ``step(x, y)`` runs a training step, ``clear()`` drops gradients."""

    model: str
    method: str
    mode: str  # "dense" or "freeze" / "select"
    density: float
    step: Callable[[torch.Tensor, torch.Tensor], None]
    clear: Callable[[], None]
    close: Callable[[], None]


def _random_masks(model: nn.Module, density: float, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=gen) < density for n, p in model.named_parameters()}


def _drop(params: list[nn.Parameter]) -> None:
    for p in params:
        for attr in ("grad_sample", "summed_grad"):
            if hasattr(p, attr):
                setattr(p, attr, None)
        p.grad = None


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, y)


def sgd_case(name: str, base: nn.Module) -> Case:
    model = copy.deepcopy(base)
    opt = torch.optim.SGD(model.parameters(), lr=LR)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        _loss(model(x), y).backward()
        opt.step()

    params = list(model.parameters())
    return Case(name, "sgd", "dense", 1.0, step, lambda: _drop(params), lambda: None)


def opacus_case(name: str, base: nn.Module, batch: int) -> Case:
    model = copy.deepcopy(base)
    gsm = GradSampleModule(model)
    opt = DPOptimizer(
        torch.optim.SGD(model.parameters(), lr=LR),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=batch,
    )

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        _loss(gsm(x), y).backward()
        opt.step()

    params = list(model.parameters())
    return Case(name, "opacus", "dense", 1.0, step, lambda: _drop(params), gsm._close)


def ghost_case(name: str, base: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Case:
    model = copy.deepcopy(base)
    gm, opt, criterion, _ = PrivacyEngine(accountant="rdp").make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=LR),
        data_loader=DataLoader(TensorDataset(x, y), batch_size=len(x)),
        criterion=nn.CrossEntropyLoss(),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        grad_sample_mode="ghost",
        poisson_sampling=False,
    )

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        criterion(gm(xb), yb).backward()
        opt.step()

    params = list(model.parameters())
    return Case(name, "ghost", "dense", 1.0, step, lambda: _drop(params), gm._close)


def _masked_setup(
    base: nn.Module, mode: str, density: float, seed: int
) -> tuple[nn.Module, list[nn.Parameter], list[torch.Tensor | None]]:
    model = copy.deepcopy(base)
    if density >= 1.0:
        params = list(model.parameters())
        return model, params, [None] * len(params)
    masks = _random_masks(model, density, seed)
    if mode == "freeze":
        for n, p in model.named_parameters():
            if not bool(masks[n].any()):
                p.requires_grad_(False)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return model, [p for _, p in named], [masks[n] for n, _ in named]


def reference_case(
    name: str, base: nn.Module, mode: str, density: float, batch: int, seed: int
) -> Case:
    model, params, masks = _masked_setup(base, mode, density, seed)
    gsm = GradSampleModule(model)
    opt = MaskedDPOptimizer(
        torch.optim.SGD(params, lr=LR),
        masks=masks,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=batch,
        noise=SecureNoise(),
    )

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        _loss(gsm(x), y).backward()
        opt.step()

    return Case(name, "reference", mode, density, step, lambda: _drop(params), gsm._close)


def fast_case(name: str, base: nn.Module, mode: str, density: float, batch: int, seed: int) -> Case:
    model, params, masks = _masked_setup(base, mode, density, seed)
    fast = FastMaskedDPSGD(
        model,
        params=params,
        masks=masks,
        optimizer=torch.optim.SGD(params, lr=LR),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=batch,
        noise=SecureNoise(),
    )
    return Case(name, "fast", mode, density, fast.step, lambda: _drop(params), fast.close)


def cases_for(
    name: str,
    densities: list[float],
    modes: list[str],
    batch: int,
    x: torch.Tensor,
    y: torch.Tensor,
    methods: list[str],
) -> list[Case]:
    torch.manual_seed(0)
    base = create_model(name, input_shape=INPUT_SHAPES[name], num_classes=NUM_CLASSES)
    out = [sgd_case(name, base)]
    if "opacus" in methods:
        out.append(opacus_case(name, base, batch))
    if "ghost" in methods:
        out.append(ghost_case(name, base, x, y))
    configs = [("dense", 1.0)] if 1.0 in densities else []
    configs += [(mode, d) for mode in modes for d in densities if d < 1.0]
    for mode, density in configs:
        if "reference" in methods:
            out.append(reference_case(name, base, mode, density, batch, seed=1))
        if "fast" in methods:
            out.append(fast_case(name, base, mode, density, batch, seed=1))
    return out


def measure(
    name: str,
    *,
    densities: list[float],
    modes: list[str],
    batch: int,
    rounds: int,
    steps: int,
    methods: list[str],
) -> list[dict[str, object]]:
    """Rows ``{model, method, mode, density, step_ms, peak_mib}`` for one model.

    Time: every case runs one warm-up step, then ``rounds`` rounds in which each case in turn
    runs ``steps`` steps (interleaved, so load from other processes hits all cases alike); the
    figure is the median over rounds of the mean step time. Memory: one more step per case,
    :func:`benchmarks.memory.peak_working_memory` (gradients dropped before it).
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *INPUT_SHAPES[name], generator=gen)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=gen)
    cases = cases_for(name, densities, modes, batch, x, y, methods)
    times: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    try:
        for case in cases:
            case.step(x, y)
            case.clear()
        for _ in range(rounds):
            for i, case in enumerate(cases):
                start = time.perf_counter()
                for _ in range(steps):
                    case.step(x, y)
                times[i].append((time.perf_counter() - start) / steps)
                case.clear()
        rows = []
        for i, case in enumerate(cases):
            case.clear()
            peak = peak_working_memory(lambda case=case: case.step(x, y))  # type: ignore[misc]
            case.clear()
            rows.append(
                {
                    "model": name,
                    "method": case.method,
                    "mode": case.mode,
                    "density": case.density,
                    "step_ms": 1e3 * statistics.median(times[i]),
                    "peak_mib": peak / 2**20,
                }
            )
    finally:
        for case in cases:
            case.close()
    return rows
