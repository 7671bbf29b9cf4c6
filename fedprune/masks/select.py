"""``select_mask``: turn a strategy's scores into a ``ParameterMask`` of an exact size."""

from __future__ import annotations

import logging
from numbers import Real
from typing import Literal, get_args

import torch
from torch import nn

from fedprune.data.splits import PublicDataset
from fedprune.masks.mask import ParameterMask
from fedprune.masks.strategies import create_mask_strategy
from fedprune.masks.topk import keep_count, top_k

__all__ = ["BiasPolicy", "MaskScope", "select_mask"]

logger = logging.getLogger(__name__)

MaskScope = Literal["global", "layer"]
BiasPolicy = Literal["masked", "always", "never"]


def _check_density(density: float) -> None:
    if isinstance(density, bool) or not isinstance(density, Real):
        raise TypeError(f"expected density to be a float, got {type(density).__name__}")
    if not 0.0 < density <= 1.0:  # False for NaN too
        raise ValueError(f"expected density in (0, 1], got {density}")


def _check_option(value: str, name: str, options: object) -> None:
    allowed = get_args(options)
    if value not in allowed:
        raise ValueError(f"expected {name} in {list(allowed)}, got {value!r}")


def select_mask(
    model: nn.Module,
    *,
    strategy: str,
    density: float,
    scope: MaskScope = "global",
    public: PublicDataset | None = None,
    seed: int = 0,
    bias_policy: BiasPolicy = "masked",
) -> ParameterMask:
    """Choose which coordinates of ``model`` DP-SGD will train.

    Parameters
    ----------
    model:
        A plain ``nn.Module`` (not wrapped by Opacus); left unchanged. Its parameters with
        ``requires_grad`` are the eligible ones; the mask covers exactly those, in
        ``model.named_parameters()`` order.
    strategy:
        A registered :class:`~fedprune.masks.strategies.MaskStrategy` name, e.g. ``"random"``,
        ``"magnitude"``, ``"gradient"``, ``"snip"`` or ``"none"``. ``"none"`` selects every
        coordinate of every eligible tensor and ignores ``density``, ``scope`` and ``bias_policy``.
    density:
        Fraction of budgeted coordinates to select, in ``(0, 1]`` (checked even for ``"none"``).
    scope:
        ``"global"``: one top-k over all budgeted coordinates together, selecting exactly
        ``k = keep_count(n, density)`` (:func:`~fedprune.masks.topk.keep_count`: ``density * n``
        rounded half up, at least 1), ``n`` the number of budgeted coordinates.
        ``"layer"``: a top-k in each budgeted tensor ``i`` of ``n_i > 0`` coordinates, selecting
        exactly ``k_i = keep_count(n_i, density)`` (so every budgeted tensor gets at least one).
    public:
        Public data for strategies that need it (``gradient``, ``snip``). Must be a
        ``PublicDataset`` or ``None``.
    seed:
        Seeds the only random generator used; equal arguments give equal masks.
    bias_policy:
        How 1-D (and 0-D) tensors -- biases and normalisation weights -- are treated.
        ``"masked"``: like every other tensor (budgeted). ``"always"``: fully selected and not
        counted in ``n`` (the mask's density then exceeds ``density``). ``"never"``: nothing
        selected in them, and not counted in ``n``.

    Returns
    -------
    ParameterMask
        CPU boolean tensors, one per eligible parameter.

    Raises
    ------
    ValueError
        ``density`` outside ``(0, 1]``; unknown ``strategy``, ``scope`` or ``bias_policy`` (the
        message lists the known values); no eligible parameter or no budgeted coordinate; a
        strategy produced non-finite scores.
    TypeError
        ``public`` is neither ``None`` nor a ``PublicDataset`` (or is ``None`` for a strategy that
        needs data).

    Formal guarantees
    -----------------
    Exact counts as above, whatever ties the scores contain: the top-k uses a stable descending
    sort, so equal scores are broken by canonical coordinate order (name order, then row-major).
    Deterministic: the result depends only on the arguments and the model's weights.

    Privacy
    -------
    The mask is released in the clear, so it must not depend on private data. It depends only on
    the model's current weights (public, or themselves a DP release), ``seed`` and ``public``, which
    is typed as, and checked to be, a ``PublicDataset``; anything else raises ``TypeError``. A mask
    chosen from private data would leak it and void the DP guarantee of the masked DP-SGD that
    trains the selected coordinates.
    """
    _check_density(density)
    _check_option(scope, "scope", MaskScope)
    _check_option(bias_policy, "bias_policy", BiasPolicy)
    chooser = create_mask_strategy(strategy)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"{type(model).__name__} has no parameter with requires_grad=True")
    generator = torch.Generator().manual_seed(seed)
    scores = chooser.scores(model, public=public, generator=generator)
    if chooser.selects_all:
        mask = ParameterMask.dense(model)
    else:
        mask = ParameterMask(_select(scores, density, scope, bias_policy))
    logger.info(
        "mask %s (strategy=%s, density=%s, scope=%s, bias_policy=%s, seed=%d)",
        mask,
        strategy,
        density,
        scope,
        bias_policy,
        seed,
    )
    return mask


def _select(
    scores: dict[str, torch.Tensor], density: float, scope: MaskScope, bias_policy: BiasPolicy
) -> dict[str, torch.Tensor]:
    bad = [n for n, s in scores.items() if not bool(torch.isfinite(s).all())]
    if bad:
        raise ValueError(f"mask scores are not finite (NaN or inf) in {bad}")
    fixed = {
        n: torch.full(s.shape, bias_policy == "always", dtype=torch.bool)
        for n, s in scores.items()
        if s.dim() <= 1 and bias_policy != "masked"
    }
    budgeted = {n: s for n, s in scores.items() if n not in fixed}
    n_total = sum(s.numel() for s in budgeted.values())
    if n_total == 0:
        raise ValueError(
            f"no coordinate left to select: bias_policy={bias_policy!r} excludes every eligible "
            "tensor from the density budget"
        )
    chosen: dict[str, torch.Tensor] = {}
    if scope == "global":
        flat = torch.cat([s.reshape(-1).to(torch.float64) for s in budgeted.values()])
        keep = top_k(flat, keep_count(n_total, density))
        for (name, s), part in zip(
            budgeted.items(), keep.split([s.numel() for s in budgeted.values()]), strict=True
        ):
            chosen[name] = part.reshape(s.shape)
    else:
        for name, s in budgeted.items():
            chosen[name] = top_k(s, keep_count(s.numel(), density))
    return {n: fixed[n] if n in fixed else chosen[n] for n in scores}
