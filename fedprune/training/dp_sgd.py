"""Masked DP-SGD on Opacus: train only the selected coordinates, account every step."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from opacus import GradSampleModule
from opacus.data_loader import DPDataLoader
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from fedprune.masks import ParameterMask
from fedprune.privacy import DPPlan, PrivacyLedger
from fedprune.privacy.noise import NoiseSource, SecureNoise
from fedprune.training.fast_masked import FastMaskedDPSGD, unsupported_parameters
from fedprune.training.masked_optimizer import MaskedDPOptimizer

__all__ = ["DPTrainResult", "Engine", "train_dp_sgd"]

logger = logging.getLogger(__name__)

Reselect = Callable[[nn.Module], ParameterMask]
"""Re-picks the mask from the current weights (and public data only) in ``select`` mode."""


@dataclass(frozen=True)
class DPTrainResult:
    """What one call of :func:`train_dp_sgd` did.

    Attributes
    ----------
    plan:
        The mechanism that ran (its ``steps`` is the number of steps taken).
    epsilon:
        The ledger's epsilon after training (composes with everything recorded before).
    num_examples:
        Size of the private dataset.
    trained_coordinates:
        Number of selected coordinates of the final mask (all trainable ones without a mask).
    mask:
        The final mask (``None`` for dense training).
    """

    plan: DPPlan
    epsilon: float
    num_examples: int
    trained_coordinates: int
    mask: ParameterMask | None


def train_dp_sgd(
    model: nn.Module,
    dataset: Dataset,
    *,
    plan: DPPlan,
    lr: float,
    momentum: float = 0.0,
    mask: ParameterMask | None = None,
    ledger: PrivacyLedger | None = None,
    reselect: Reselect | None = None,
    reselect_every: int = 0,
    noise: NoiseSource | None = None,
    progress: bool = False,
    desc: str = "dp-sgd",
    engine: Engine = "auto",
) -> DPTrainResult:
    """Run ``plan.steps`` steps of masked DP-SGD on ``model`` (in place) over private ``dataset``.

    Each step Poisson-samples records with probability ``plan.sample_rate``, clips each example's
    gradient restricted to the selected coordinates to L2 norm ``plan.max_grad_norm``, adds
    N(0, (sigma*C)^2) to the selected coordinates of the sum, divides by the expected batch size
    and takes an SGD step with learning rate ``lr``.

    Parameters
    ----------
    mask:
        Coordinates to train (``freeze`` mode, or the first mask of ``select`` mode); ``None``
        trains every trainable parameter (dense DP-SGD). Must come from public data or randomness.
    ledger:
        Composes this run with earlier ones and enforces ``max_epsilon``: checked before the first
        step (a refused run changes nothing), then one step recorded per noisy step.
        ``plan.accountant``/``plan.delta`` must match it. A fresh unbounded ledger if ``None``.
    reselect, reselect_every:
        ``select`` mode: every ``reselect_every`` steps, ``reselect(model)`` picks a new mask
        (called with Opacus's hooks off, so it may run the model on public data; the mask must
        fit ``model``). It receives only the model, after every ``grad``, ``grad_sample`` and
        ``summed_grad`` has been deleted from its parameters.
    noise:
        Source of the Gaussian noise and of the Poisson-sampling generator.
        ``None`` (the default) means :class:`~fedprune.privacy.noise.SecureNoise`;
        :class:`~fedprune.privacy.noise.ReproducibleNoise` replays a run from a seed (research
        and debugging only: whoever knows the seed can remove the noise).
    engine:
        ``"reference"``: Opacus ``GradSampleModule`` + :class:`MaskedDPOptimizer` (every
        per-example gradient materialised, then masked). ``"fast"``:
        :class:`~fedprune.training.fast_masked.FastMaskedDPSGD` (per-example norms over the
        selected coordinates only; raises ``ValueError`` if a trainable parameter is not
        supported). ``"auto"`` (default): ``"fast"`` when every trainable parameter is supported
        (see :func:`~fedprune.training.fast_masked.unsupported_parameters`), else
        ``"reference"``. The density-dependent choice is made per tensor inside the fast
        engine (skip / gather / bilinear / materialise / ghost by a T-aware cost model), so
        the fast engine is never the slower one: BENCHMARKS.md measured it at or below the
        reference at 1, 10, 50 and 100 % density, freeze and select, on mlp, mlp-wide, cnn and
        resnet. Both run the same mechanism (equal up to float rounding).

    Formal guarantees
    -----------------
    Record-level (epsilon, delta)-DP for ``dataset`` as reported by the ledger, under the
    assumptions that every mask is independent of ``dataset`` and that the noise is
    unpredictable to the adversary (true for ``SecureNoise``; not for ``ReproducibleNoise``
    against anyone who knows its seed). Unselected coordinates receive neither gradient nor
    noise and stay bit-identical; tensors without any selected coordinate in ``freeze`` mode
    skip per-example gradient computation entirely. ``reselect`` sees only the model's weights
    (themselves a noisy DP release): no per-example gradient, un-noised clipped sum or last
    gradient is left on the parameters when it runs.

    Afterwards ``model`` carries no Opacus hooks or attributes (it can be trained again) and no
    gradients: the last step's un-noised clipped sum (Opacus's ``summed_grad``) is deleted.

    Raises
    ------
    fedprune.privacy.PrivacyBudgetExceededError
        Before any step, if the run would take the ledger past its budget.
    """
    if lr <= 0:
        raise ValueError(f"expected lr > 0, got {lr}")
    if reselect is not None and reselect_every < 1:
        raise ValueError(f"expected reselect_every >= 1 with reselect, got {reselect_every}")
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("cannot train on an empty dataset")
    if mask is not None:
        mask.validate_for(model)
    ledger = ledger or PrivacyLedger(accountant=plan.accountant, delta=plan.delta)
    ledger.ensure_within_budget(plan)
    noise = noise if noise is not None else SecureNoise()

    frozen_names = (
        {name for name, m in mask.items() if not bool(m.any())}
        if mask is not None and reselect is None
        else set()
    )
    with _frozen(model, frozen_names):
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        chosen = _choose_engine(engine, model, mask)
        logger.debug("train_dp_sgd: %s engine", chosen)
        sgd = torch.optim.SGD([p for _, p in named], lr=lr, momentum=momentum)
        expected_batch_size = max(1, round(plan.sample_rate * n))

        def record() -> None:
            ledger.record(
                noise_multiplier=plan.noise_multiplier, sample_rate=plan.sample_rate, steps=1
            )

        stepper: _Stepper = (
            _FastStepper(
                FastMaskedDPSGD(
                    model,
                    params=[p for _, p in named],
                    masks=_aligned(mask, named),
                    optimizer=sgd,
                    noise_multiplier=plan.noise_multiplier,
                    max_grad_norm=plan.max_grad_norm,
                    expected_batch_size=expected_batch_size,
                    noise=noise,
                    step_hook=record,
                ),
                model,
            )
            if chosen == "fast"
            else _ReferenceStepper(
                model,
                sgd,
                masks=_aligned(mask, named),
                plan=plan,
                expected_batch_size=expected_batch_size,
                noise=noise,
                record=record,
            )
        )
        try:
            loader = DPDataLoader(
                dataset,
                sample_rate=plan.sample_rate,
                generator=noise.sampling_generator(),
            )
            model.train()
            for step, (x, y) in enumerate(
                tqdm(
                    _cycle(loader, plan.steps),
                    total=plan.steps,
                    desc=desc,
                    disable=not progress,
                    leave=False,
                )
            ):
                if reselect is not None and step > 0 and step % reselect_every == 0:
                    mask = stepper.reselected(reselect)
                    stepper.set_masks(_aligned(mask, named))
                stepper.step(x, y)
        finally:
            stepper.close()
            _drop_gradients([p for _, p in named])
    trained = sum(
        p.numel() if m is None else int(m.sum())
        for (_, p), m in zip(named, _aligned(mask, named), strict=True)
    )
    return DPTrainResult(
        plan=plan,
        epsilon=ledger.epsilon(),
        num_examples=n,
        trained_coordinates=int(trained),
        mask=mask,
    )


Engine = Literal["auto", "fast", "reference"]
"""Which implementation of the (one) masked DP-SGD mechanism :func:`train_dp_sgd` runs."""
_ENGINES = ("auto", "fast", "reference")


def _choose_engine(engine: Engine, model: nn.Module, mask: ParameterMask | None) -> str:
    """The engine to run. Rule of ``auto``: the fast engine whenever it supports every
    trainable parameter, else the reference. Density is not consulted here: the fast engine
    picks a strategy per tensor from its cost model (materialising, as the reference does,
    where gathering would cost more), which BENCHMARKS.md measured no slower than the
    reference at any density of the benchmark."""
    if engine not in _ENGINES:
        raise ValueError(f"expected engine in {_ENGINES}, got {engine!r}")
    if engine == "reference":
        return "reference"
    bad = unsupported_parameters(model)
    if bad and engine == "fast":
        raise ValueError(f"engine='fast' cannot train parameters {bad}; use 'reference' or 'auto'")
    return "reference" if bad else "fast"


class _Stepper(Protocol):
    def set_masks(self, masks: list[torch.Tensor | None]) -> None: ...
    def step(self, x: torch.Tensor, y: torch.Tensor) -> None: ...
    def reselected(self, reselect: Reselect) -> ParameterMask: ...
    def close(self) -> None: ...


class _ReferenceStepper:
    """Opacus hooks + :class:`MaskedDPOptimizer`: the reference implementation."""

    def __init__(
        self,
        model: nn.Module,
        sgd: torch.optim.SGD,
        *,
        masks: list[torch.Tensor | None],
        plan: DPPlan,
        expected_batch_size: int,
        noise: NoiseSource,
        record: Callable[[], None],
    ) -> None:
        self.model = model
        self.gsm = GradSampleModule(model)
        try:
            self.optimizer = MaskedDPOptimizer(
                sgd,
                masks=masks,
                noise_multiplier=plan.noise_multiplier,
                max_grad_norm=plan.max_grad_norm,
                expected_batch_size=expected_batch_size,
                noise=noise,
            )
        except BaseException:
            self.gsm._close()
            raise
        self.optimizer.attach_step_hook(lambda opt: record())

    def set_masks(self, masks: list[torch.Tensor | None]) -> None:
        self.optimizer.set_masks(masks)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with _quiet_backward_hooks():
            nn.functional.cross_entropy(self.gsm(x), y).backward()
        self.optimizer.step()

    def reselected(self, reselect: Reselect) -> ParameterMask:
        return _reselected(reselect, self.model, self.gsm)

    def close(self) -> None:
        self.gsm._close()


class _FastStepper:
    """:class:`FastMaskedDPSGD` behind the :class:`_Stepper` interface."""

    def __init__(self, fast: FastMaskedDPSGD, model: nn.Module) -> None:
        self.fast = fast
        self.model = model

    def set_masks(self, masks: list[torch.Tensor | None]) -> None:
        self.fast.set_masks(masks)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.fast.step(x, y)

    def reselected(self, reselect: Reselect) -> ParameterMask:
        # the fast engine's hooks capture only inside step(): the model runs normally here
        _drop_gradients(list(self.model.parameters()))
        mask = reselect(self.model)
        mask.validate_for(self.model)
        return mask

    def close(self) -> None:
        self.fast.close()


def _reselected(reselect: Reselect, model: nn.Module, gsm: GradSampleModule) -> ParameterMask:
    """``reselect(model)`` with Opacus's hooks off and no gradients left, checked against ``model``.

    A strategy that runs the model on public data (``gradient``, ``snip``) would otherwise
    trigger the per-example gradient hooks outside a DP step (Opacus then fails on the
    unmatched backward pass). The last step's per-example gradients and un-noised clipped sum
    are computed from private data without noise: they are deleted first, so a strategy cannot
    read them (nor can the last noisy ``grad`` mix into a strategy's own backward pass).
    """
    _drop_gradients(list(model.parameters()))
    gsm.disable_hooks()
    try:
        with _quiet_backward_hooks():
            mask = reselect(model)
    finally:
        gsm.enable_hooks()
    mask.validate_for(model)
    return mask


def _drop_gradients(params: list[nn.Parameter]) -> None:
    """Delete every gradient Opacus or autograd left on ``params``.

    Opacus leaves ``grad_sample`` (per-example gradients) and ``summed_grad`` (the clipped sum
    *before* noise), neither of which is differentially private; ``grad`` holds the last noisy
    update. The next step's ``zero_grad`` re-creates Opacus's attributes as ``None``.
    """
    for p in params:
        for name in ("grad_sample", "summed_grad"):
            if hasattr(p, name):
                delattr(p, name)
        p.grad = None


def _aligned(
    mask: ParameterMask | None, named: list[tuple[str, nn.Parameter]]
) -> list[torch.Tensor | None]:
    """Per-parameter bool masks in optimizer order (``None`` = fully selected)."""
    return [None if mask is None else mask[name] for name, _ in named]


def _cycle(loader: DPDataLoader, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield exactly ``steps`` Poisson batches, passing over ``loader`` as often as needed."""
    taken = 0
    while taken < steps:
        for batch in loader:
            if taken == steps:
                return
            taken += 1
            yield batch


@contextmanager
def _quiet_backward_hooks() -> Iterator[None]:
    """Silence torch's note that Opacus's hook on a first layer (input needs no grad) fires
    on output gradients only: harmless, and it would repeat every step."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


@contextmanager
def _frozen(model: nn.Module, names: set[str]) -> Iterator[None]:
    """Temporarily set ``requires_grad=False`` on the named parameters."""
    params = dict(model.named_parameters())
    changed = [params[name] for name in names if params[name].requires_grad]
    for p in changed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in changed:
            p.requires_grad_(True)
