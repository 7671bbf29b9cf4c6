"""Mask strategies: per-coordinate importance scores, registered by name.

Privacy
-------
A mask is released without noise (the server broadcasts it), so whatever the mask is computed from
must not be private. Strategies that look at data (``gradient``, ``snip``) accept only a
:class:`~fedprune.data.splits.PublicDataset` and raise ``TypeError`` for anything else (a
``TensorDataset``, a ``DataLoader``, a private split, ...): a mask chosen from private data leaks
information about that data and voids the DP guarantee of the training that follows. The other
strategies use only the current weights (themselves a DP release, or public) and a seeded generator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fedprune.data.splits import PublicDataset
from fedprune.registry import Registry

__all__ = [
    "MASK_STRATEGIES",
    "GradientStrategy",
    "MagnitudeStrategy",
    "MaskStrategy",
    "NoneStrategy",
    "RandomStrategy",
    "SnipStrategy",
    "available_mask_strategies",
    "create_mask_strategy",
    "mean_loss_gradient",
    "register_mask_strategy",
]


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _check_public(public: object, strategy: str, *, required: bool) -> None:
    """Refuse anything but a ``PublicDataset`` (or ``None`` when no data is needed)."""
    if isinstance(public, PublicDataset) or (public is None and not required):
        return
    needs = "needs" if required else "accepts only"
    raise TypeError(
        f"mask strategy {strategy!r} {needs} a fedprune.data.splits.PublicDataset, got "
        f"{type(public).__name__}: a mask chosen from private data leaks it and voids the DP "
        "guarantee"
    )


class MaskStrategy(ABC):
    """Scores every coordinate of a model's trainable parameters; higher = more important.

    Subclasses set ``name`` (registry key), ``needs_public_data`` and, for strategies that select
    everything whatever the density, ``selects_all``; they implement :meth:`_score`.
    :meth:`scores` checks the data argument before any subclass code runs, so no strategy can be
    handed private data.
    """

    name: ClassVar[str]
    needs_public_data: ClassVar[bool]
    selects_all: ClassVar[bool] = False

    def scores(
        self,
        model: nn.Module,
        *,
        public: PublicDataset | None,
        generator: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        """Importance score of every coordinate of every parameter with ``requires_grad``.

        Parameters
        ----------
        model:
            A plain ``nn.Module`` (not wrapped by Opacus). Left unchanged: weights, ``.grad``,
            ``requires_grad`` and every module's ``training`` flag are as before the call.
        public:
            Public data, required when ``needs_public_data``; otherwise ``None`` or ignored.
        generator:
            CPU generator: the only source of randomness, so equal seeds give equal scores.

        Returns
        -------
        dict[str, torch.Tensor]
            Parameter name -> detached CPU floating tensor of the parameter's shape, in
            ``model.named_parameters()`` order.

        Raises
        ------
        TypeError
            ``public`` is not a ``PublicDataset`` (or is ``None`` where data is needed).
        """
        _check_public(public, self.name, required=self.needs_public_data)
        scores = self._score(model, public=public, generator=generator)
        expected = {n: p.shape for n, p in _trainable(model).items()}
        if list(scores) != list(expected) or any(scores[n].shape != s for n, s in expected.items()):
            raise RuntimeError(
                f"mask strategy {self.name!r} returned scores for "
                f"{[(n, tuple(t.shape)) for n, t in scores.items()]}, expected "
                f"{[(n, tuple(s)) for n, s in expected.items()]}"
            )
        return scores

    @abstractmethod
    def _score(
        self, model: nn.Module, *, public: PublicDataset | None, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Compute the scores; ``public`` has already been checked."""


MASK_STRATEGIES: Registry[type[MaskStrategy]] = Registry("mask strategy")
"""Mask strategy classes by their ``name``."""


def register_mask_strategy(cls: type[MaskStrategy]) -> type[MaskStrategy]:
    """Register ``cls`` under ``cls.name`` (usable as a class decorator).

    Raises
    ------
    ValueError
        ``cls.name`` is already registered.
    TypeError
        ``cls`` is not a ``MaskStrategy`` subclass.
    """
    if not (isinstance(cls, type) and issubclass(cls, MaskStrategy)):
        raise TypeError(f"expected a MaskStrategy subclass, got {cls!r}")
    return MASK_STRATEGIES.register(cls.name, cls)


def available_mask_strategies() -> list[str]:
    """Names accepted by :func:`create_mask_strategy`."""
    return MASK_STRATEGIES.names()


def create_mask_strategy(name: str) -> MaskStrategy:
    """Instantiate the strategy registered as ``name``.

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones).
    """
    return MASK_STRATEGIES.get(name)()


@register_mask_strategy
class RandomStrategy(MaskStrategy):
    """Scores drawn uniformly from ``[0, 1)`` by the seeded generator, in parameter order."""

    name = "random"
    needs_public_data = False

    def _score(
        self, model: nn.Module, *, public: PublicDataset | None, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        return {n: torch.rand(p.shape, generator=generator) for n, p in _trainable(model).items()}


@register_mask_strategy
class MagnitudeStrategy(MaskStrategy):
    """Score = ``|w|`` of the current weights."""

    name = "magnitude"
    needs_public_data = False

    def _score(
        self, model: nn.Module, *, public: PublicDataset | None, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        return {n: p.detach().abs().cpu() for n, p in _trainable(model).items()}


@register_mask_strategy
class NoneStrategy(MaskStrategy):
    """No selection: every coordinate is trained, whatever the density (constant scores)."""

    name = "none"
    needs_public_data = False
    selects_all = True

    def _score(
        self, model: nn.Module, *, public: PublicDataset | None, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        return {n: torch.ones(p.shape) for n, p in _trainable(model).items()}


def mean_loss_gradient(
    model: nn.Module,
    public: PublicDataset,
    *,
    generator: torch.Generator,
    batch_size: int = 256,
    max_batches: int = 4,
) -> dict[str, torch.Tensor]:
    """Gradient of the mean cross-entropy over up to ``batch_size * max_batches`` public examples.

    The examples are a random subset drawn by ``generator``; the model runs in eval mode. Uses
    :func:`torch.autograd.grad`, so ``.grad`` is never touched, and restores every module's
    ``training`` flag afterwards.

    Returns
    -------
    dict[str, torch.Tensor]
        Name -> detached CPU gradient for each parameter with ``requires_grad`` (zeros for a
        parameter the loss does not depend on).
    """
    _check_public(public, "gradient", required=True)
    if len(public) == 0:
        raise ValueError("expected a non-empty PublicDataset, got 0 examples")
    params = _trainable(model)
    x, y = public.dataset.tensors
    num = min(len(x), batch_size * max_batches)
    order = torch.randperm(len(x), generator=generator)[:num]
    device = next(iter(params.values())).device
    sums = {
        n: torch.zeros_like(p, memory_format=torch.contiguous_format) for n, p in params.items()
    }
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.enable_grad():
            for start in range(0, num, batch_size):
                batch = order[start : start + batch_size]
                logits = model(x[batch].to(device))
                loss = F.cross_entropy(logits, y[batch].to(device), reduction="sum")
                grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
                for total, grad in zip(sums.values(), grads, strict=True):
                    if grad is not None:
                        total += grad
    finally:
        for module, mode in modes:
            module.training = mode
    return {n: (s / num).detach().cpu() for n, s in sums.items()}


@register_mask_strategy
class GradientStrategy(MaskStrategy):
    """Score = ``|g|``, ``g`` the mean loss gradient on public data (:func:`mean_loss_gradient`)."""

    name = "gradient"
    needs_public_data = True

    def _score(
        self, model: nn.Module, *, public: PublicDataset | None, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        assert public is not None  # checked by scores()
        grads = mean_loss_gradient(model, public, generator=generator)
        return {n: g.abs() for n, g in grads.items()}


@register_mask_strategy
class SnipStrategy(MaskStrategy):
    """SNIP connection sensitivity: score = ``|w * g|``, ``g`` as for ``gradient``."""

    name = "snip"
    needs_public_data = True

    def _score(
        self, model: nn.Module, *, public: PublicDataset | None, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        assert public is not None  # checked by scores()
        grads = mean_loss_gradient(model, public, generator=generator)
        params = _trainable(model)
        return {n: (params[n].detach().cpu() * g).abs() for n, g in grads.items()}
