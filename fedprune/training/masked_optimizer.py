"""``MaskedDPOptimizer``: Opacus DP-SGD restricted to a fixed set of selected coordinates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from opacus.optimizers.optimizer import DPOptimizer, _check_processed_flag, _mark_as_processed
from torch.optim import Optimizer

from fedprune.privacy.noise import NoiseSource, SecureNoise

__all__ = ["MaskedDPOptimizer"]


class MaskedDPOptimizer(DPOptimizer):
    """DP-SGD that clips, noises and updates only the coordinates selected by a mask.

    ``masks[i]`` is a bool tensor shaped like ``params[i]`` (True = selected) or ``None`` (the
    whole tensor is selected). Compared with :class:`opacus.optimizers.DPOptimizer` it changes:

    * ``clip_and_accumulate``: per-example gradients are zeroed on unselected coordinates
      *before* the per-example norms are taken, so each example's norm -- and its clipping --
      is over the selected coordinates only.
    * ``add_noise``: Gaussian noise N(0, (sigma*C)^2) is drawn from ``noise`` (a
      :class:`~fedprune.privacy.noise.NoiseSource`; :class:`~fedprune.privacy.noise.SecureNoise`
      when ``None``) for, and added to, selected coordinates only.
    * ``pre_step``: SGD momentum buffers are zeroed on unselected coordinates, so momentum
      accumulated while a coordinate was selected (``select`` mode) cannot move it later.

    Formal guarantees
    -----------------
    * Norm bound: every example contributes a vector of L2 norm <= ``max_grad_norm`` over the
      selected coordinates, and exactly zero elsewhere.
    * Coordinates touched: after each step ``grad`` is zero on every unselected coordinate, so
      plain or momentum SGD leaves those parameters bit-identical; they receive no noise.
    * The DP guarantee is that of the subsampled Gaussian mechanism on the selected
      coordinates, *provided the mask does not depend on private data* (choose it from public
      data or at random: a mask chosen from private data voids the guarantee) and that the
      noise is unpredictable to the adversary: a reproducible ``noise`` source gives no privacy
      against anyone who knows its seed.

    Only ``torch.optim.SGD`` without weight decay is accepted: weight decay, Adam and similar
    optimizers move coordinates that received no gradient.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        masks: Sequence[torch.Tensor | None],
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int,
        loss_reduction: str = "mean",
        noise: NoiseSource | None = None,
    ) -> None:
        if type(optimizer) is not torch.optim.SGD:
            raise TypeError(
                f"MaskedDPOptimizer needs torch.optim.SGD, got {type(optimizer).__name__}: "
                "other optimizers move coordinates that received no gradient"
            )
        for group in optimizer.param_groups:
            if group.get("weight_decay", 0) != 0:
                raise ValueError(
                    f"expected weight_decay 0, got {group['weight_decay']}: weight decay would "
                    "move unselected coordinates"
                )
        super().__init__(
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size,
            loss_reduction=loss_reduction,
        )
        self.noise = noise if noise is not None else SecureNoise()
        self._masks: list[torch.Tensor | None] = []
        self.set_masks(masks)

    def set_masks(self, masks: Sequence[torch.Tensor | None]) -> None:
        """Replace the selection (``select`` mode); one entry per optimised parameter, in order."""
        params = self.params
        if len(masks) != len(params):
            raise ValueError(f"expected {len(params)} masks (one per parameter), got {len(masks)}")
        checked: list[torch.Tensor | None] = []
        for i, (p, m) in enumerate(zip(params, masks, strict=True)):
            if m is not None and not isinstance(m, torch.Tensor):
                raise ValueError(f"mask {i} must be a bool tensor or None, got {type(m).__name__}")
            if m is not None and (m.dtype != torch.bool or m.shape != p.shape):
                raise ValueError(
                    f"mask {i} must be a bool tensor of shape {tuple(p.shape)}, "
                    f"got {m.dtype} {tuple(m.shape)}"
                )
            # a private copy: later changes to the caller's tensor must not change the selection
            checked.append(None if m is None or bool(m.all()) else m.to(p.device, copy=True))
        self._masks = checked

    def clip_and_accumulate(self) -> None:
        """Zero unselected per-example gradient entries, then clip and sum as Opacus does.

        Entries are overwritten with 0 (not multiplied by the mask), so a non-finite gradient
        on an unselected coordinate cannot leak into the norms or into the update as NaN.
        """
        for p, m in zip(self.params, self._masks, strict=True):
            grad_sample = getattr(p, "grad_sample", None)
            if m is not None and grad_sample is not None:
                samples = grad_sample if isinstance(grad_sample, list) else [grad_sample]
                for g in samples:
                    g.masked_fill_(~m, 0.0)
        super().clip_and_accumulate()

    def add_noise(self) -> None:
        """Add N(0, (sigma*C)^2) from ``self.noise`` to the selected coordinates of
        ``summed_grad``, into ``grad`` (Opacus's own generator and ``secure_mode`` are unused)."""
        std = self.noise_multiplier * self.max_grad_norm
        for p, m in zip(self.params, self._masks, strict=True):
            _check_processed_flag(p.summed_grad)
            grad = p.summed_grad.clone()
            if m is None:
                grad += self.noise.gaussian(grad, std)
            else:
                selected = grad[m]
                grad[m] = selected + self.noise.gaussian(selected, std)
            p.grad = grad.view_as(p)
            _mark_as_processed(p.summed_grad)

    def pre_step(self, closure: object = None) -> bool:
        """Opacus's pre-step, then zero momentum buffers on unselected coordinates."""
        proceed = bool(super().pre_step())
        if proceed:
            for p, m in zip(self.params, self._masks, strict=True):
                buf = self.original_optimizer.state.get(p, {}).get("momentum_buffer")
                if m is not None and buf is not None:
                    buf.mul_(m)
        return proceed
