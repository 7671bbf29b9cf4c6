"""Fast masked DP-SGD: per-example norms over the selected coordinates only, one clipped matmul.

The reference engine (Opacus ``GradSampleModule`` + :class:`MaskedDPOptimizer`) materialises
every per-example gradient and masks it afterwards, so its cost does not fall with density.
:class:`FastMaskedDPSGD` runs the same mechanism without per-example gradient tensors for the
weights and biases of ``nn.Linear`` and ``nn.Conv2d``:

1. forward hooks keep each layer's input ``a``; ``torch.autograd.grad`` of the summed loss with
   respect to the layers' *outputs* gives the output gradients ``go`` (no parameter gradient
   is computed in the backward pass);
2. per-example squared norms of the selected entries: for a weight entry ``(i, j)``,
   ``g[b] = sum_t go[b, i, t] * a[b, j, t]`` (``t`` runs over positions: 1 for a flat
   ``Linear``, the ``unfold`` columns for ``Conv2d``), computed by one of three exact
   strategies chosen per tensor by a cost model -- *gather* (only the ``K`` selected entries,
   cost ``B*T*K``), *ghost* (fully selected tensors: ``sum_{t,s} (a_t . a_s)(go_t . go_s)``,
   cost ``B*T^2*(p+d)``) or *materialise* (batched GEMM, cost ``B*T*p*d``, then read only the
   selected entries);
3. clipping factors ``c_b = min(1, C / (||g_b|| + 1e-6))`` (Opacus's formula), then the
   clipped *sum* ``sum_b c_b go_b a_b^T`` as one reweighted GEMM (``conv2d_weight`` for
   convolutions): the cost of the non-private weight gradient, masked to the selection.

Parameters of other modules that Opacus has a grad sampler for (``GroupNorm``, ``LayerNorm``,
``Embedding``, ...) fall back to *exact per-example gradients for those tensors only*, computed
by Opacus's own sampler from the same captured activations and masked before their norms are
taken. A model with any other trainable parameter is not supported (:func:`unsupported_parameters`
names them) and ``train_dp_sgd`` runs the reference engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from torch import nn

from fedprune.privacy.noise import NoiseSource

__all__ = ["FastMaskedDPSGD", "unsupported_parameters"]

# An elementwise gathered multiply-add costs about this many BLAS multiply-adds (measured on
# this machine's CPU with benchmarks/; only the choice of strategy depends on it, not the result).
_GATHER_COST = 4.0
# Upper bound on the elements of one gathered (B, chunk, T) intermediate (16 MiB of float32).
_GATHER_CHUNK = 1 << 22

_FAST = (nn.Linear, nn.Conv2d)


def _exact_sampler(module: nn.Module) -> Callable[..., dict[nn.Parameter, torch.Tensor]] | None:
    sampler = GradSampleModule.GRAD_SAMPLERS.get(type(module))
    return sampler


def _fast_conv(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def _owners(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    """``id(param) -> (module, local name)`` for every parameter owned directly by a module."""
    owners: dict[int, tuple[nn.Module, str]] = {}
    for module in model.modules():
        for local, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), (module, local))
    return owners


def unsupported_parameters(model: nn.Module) -> list[str]:
    """Names of trainable parameters of ``model`` that :class:`FastMaskedDPSGD` cannot train.

    Supported: weights and biases of ``nn.Linear`` and ``nn.Conv2d`` (fast), and parameters of
    any module type with an Opacus grad sampler (exact per-example gradients for that tensor).
    """
    owners = _owners(model)
    bad = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        owner = owners.get(id(p))
        if owner is None or not (
            isinstance(owner[0], _FAST) or _exact_sampler(owner[0]) is not None
        ):
            bad.append(name)
    return bad


@dataclass
class _Selection:
    """One parameter's current selection, precomputed for the per-example work."""

    mask: torch.Tensor | None  # None = every coordinate selected
    count: int
    flat: torch.Tensor | None = None  # flat indices of the selected coordinates
    rows: torch.Tensor | None = None  # for 2-D (weight viewed as (p, d)): row of each entry
    cols: torch.Tensor | None = None


@dataclass
class _Capture:
    inputs: list[torch.Tensor] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)


class FastMaskedDPSGD:
    """One masked DP-SGD step at a time on ``model``, with the mechanism of
    :class:`~fedprune.training.masked_optimizer.MaskedDPOptimizer` behind Opacus.

    Parameters
    ----------
    model:
        The module being trained (its trainable parameters must pass
        :func:`unsupported_parameters`); not wrapped, hooks are removed by :meth:`close`.
    params:
        The parameters to optimise, in optimizer order (the order noise is drawn in).
    masks:
        One bool tensor per parameter (True = selected) or ``None`` (all selected).
    optimizer:
        ``torch.optim.SGD`` over ``params`` without weight decay.
    step_hook:
        Called once per step after the noisy gradient is formed (ledger recording).

    Formal guarantees
    -----------------
    The same mechanism as ``MaskedDPOptimizer`` (equal up to float rounding): each example's
    gradient restricted to the selected coordinates is clipped to L2 norm ``max_grad_norm``
    (clip factor ``min(1, C / (norm + 1e-6))``); the sum gets N(0, (sigma*C)^2) noise from
    ``noise`` on the selected coordinates only, drawn in the same order and shapes as
    ``MaskedDPOptimizer.add_noise``; it is divided by ``expected_batch_size``. Unselected
    coordinates get a gradient of exactly zero (overwritten, so a non-finite value elsewhere
    cannot leak in), no noise, and zeroed momentum: SGD leaves them bit-identical. Tensors
    without any selected coordinate have ``requires_grad=False`` during the step and get no
    per-example work. The guarantee assumes masks chosen independently of the private data.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        params: Sequence[nn.Parameter],
        masks: Sequence[torch.Tensor | None],
        optimizer: torch.optim.SGD,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int,
        noise: NoiseSource,
        step_hook: Callable[[], None] | None = None,
    ) -> None:
        if type(optimizer) is not torch.optim.SGD:
            raise TypeError(f"expected torch.optim.SGD, got {type(optimizer).__name__}")
        if any(g.get("weight_decay", 0) != 0 for g in optimizer.param_groups):
            raise ValueError("expected weight_decay 0: weight decay moves unselected coordinates")
        bad = unsupported_parameters(model)
        if bad:
            raise ValueError(f"the fast engine cannot train parameters {bad}; use the reference")
        self.model = model
        self.params = list(params)
        self.optimizer = optimizer
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.expected_batch_size = expected_batch_size
        self.noise = noise
        self.step_hook = step_hook
        owners = _owners(model)
        self._owner = [owners[id(p)] for p in self.params]
        self._index = {id(p): i for i, p in enumerate(self.params)}
        self._modules: list[nn.Module] = []
        for module, _ in self._owner:
            if all(module is not m for m in self._modules):
                self._modules.append(module)
        self._captures: dict[int, _Capture] = {}
        self._capturing = False
        self._handles = [m.register_forward_hook(self._capture) for m in self._modules]
        self._sel: list[_Selection] = []
        self.set_masks(masks)

    # ---- selection ------------------------------------------------------------------------

    def set_masks(self, masks: Sequence[torch.Tensor | None]) -> None:
        """Replace the selection (``select`` mode), one entry per parameter in order."""
        if len(masks) != len(self.params):
            raise ValueError(f"expected {len(self.params)} masks, got {len(masks)}")
        sel = []
        for i, (p, m) in enumerate(zip(self.params, masks, strict=True)):
            if m is not None and (m.dtype != torch.bool or m.shape != p.shape):
                raise ValueError(f"mask {i} must be a bool tensor of shape {tuple(p.shape)}")
            if m is None or bool(m.all()):
                sel.append(_Selection(mask=None, count=p.numel()))
                continue
            m = m.to(p.device, copy=True)
            flat = m.reshape(-1).nonzero().squeeze(1)
            width = p[0].numel() if p.dim() >= 2 else 1
            sel.append(
                _Selection(
                    mask=m,
                    count=int(flat.numel()),
                    flat=flat,
                    rows=flat // width,
                    cols=flat % width,
                )
            )
        self._sel = sel

    # ---- hooks ----------------------------------------------------------------------------

    def _capture(self, module: nn.Module, inputs: tuple[object, ...], output: object) -> None:
        if not self._capturing or id(module) not in self._captures:
            return
        if not isinstance(output, torch.Tensor) or not isinstance(inputs[0], torch.Tensor):
            raise TypeError(f"{type(module).__name__}: the fast engine needs tensor in/outputs")
        cap = self._captures[id(module)]
        cap.inputs.append(inputs[0].detach())
        cap.outputs.append(output)
        cap.versions.append(output._version)

    def close(self) -> None:
        """Remove the hooks and every gradient left on the parameters."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._captures = {}
        for p in self.params:
            p.grad = None

    # ---- one step -------------------------------------------------------------------------

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One DP-SGD step on the (Poisson-sampled, possibly empty) batch ``(x, y)``."""
        sums = self._clipped_sums(x, y) if len(x) > 0 else {}
        std = self.noise_multiplier * self.max_grad_norm
        for i, p in enumerate(self.params):
            sel = self._sel[i]
            grad = sums.get(i)
            if grad is None:
                grad = torch.zeros_like(p)
            if sel.mask is None:
                grad += self.noise.gaussian(grad, std)
            else:
                selected = grad[sel.mask]
                grad[sel.mask] = selected + self.noise.gaussian(selected, std)
            p.grad = grad / self.expected_batch_size
        if self.step_hook is not None:
            self.step_hook()
        for p, sel in zip(self.params, self._sel, strict=True):
            buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
            if sel.mask is not None and buf is not None:
                buf.mul_(sel.mask)
        self.optimizer.step()
        for p in self.params:
            p.grad = None

    def _clipped_sums(self, x: torch.Tensor, y: torch.Tensor) -> dict[int, torch.Tensor]:
        active = [i for i, s in enumerate(self._sel) if s.count > 0]
        idle = [p for i, p in enumerate(self.params) if self._sel[i].count == 0]
        for p in idle:
            p.requires_grad_(False)
        try:
            self._captures = {
                id(m): _Capture()
                for m in self._modules
                if any(self._owner[i][0] is m for i in active)
            }
            self._capturing = True
            try:
                loss = F.cross_entropy(self.model(x), y, reduction="sum")
            finally:
                self._capturing = False
            outputs = [o for c in self._captures.values() for o in c.outputs]
            for cap in self._captures.values():
                if any(o._version != v for o, v in zip(cap.outputs, cap.versions, strict=True)):
                    raise RuntimeError(
                        "an in-place operation changed a layer output; the fast "
                        "engine needs out-of-place activations"
                    )
            grads = torch.autograd.grad(loss, outputs, allow_unused=True)
        finally:
            for p in idle:
                p.requires_grad_(True)
        offset = 0
        layers = []
        for m in self._modules:
            found = self._captures.get(id(m))
            if found is None:
                continue
            cap = found
            gos = [
                torch.zeros_like(o) if g is None else g
                for o, g in zip(cap.outputs, grads[offset : offset + len(cap.outputs)], strict=True)
            ]
            offset += len(cap.outputs)
            if cap.inputs:
                layers.append(self._layer(m, cap.inputs, gos, active))
        self._captures = {}
        sq = torch.zeros(len(x))
        for norms_sq, _ in layers:
            sq = sq + norms_sq
        clip = (self.max_grad_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        sums: dict[int, torch.Tensor] = {}
        for _, summed in layers:
            for i, s in summed(clip).items():
                sel = self._sel[i]
                sums[i] = s if sel.mask is None else s.masked_fill_(~sel.mask, 0.0)
        return sums

    def _layer(
        self,
        module: nn.Module,
        inputs: list[torch.Tensor],
        gos: list[torch.Tensor],
        active: list[int],
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], dict[int, torch.Tensor]]]:
        """``(per-example squared norms over this module's selected entries, clipped-sum fn)``."""
        mine = {self._owner[i][1]: i for i in active if self._owner[i][0] is module}
        if isinstance(module, nn.Linear) or _fast_conv(module):
            return self._fast_layer(module, inputs, gos, mine)
        return self._exact_layer(module, inputs, gos, mine)

    def _fast_layer(
        self,
        module: nn.Module,
        inputs: list[torch.Tensor],
        gos: list[torch.Tensor],
        mine: dict[str, int],
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], dict[int, torch.Tensor]]]:
        conv = isinstance(module, nn.Conv2d)
        batch = inputs[0].shape[0]
        # channel-first per-example views: a (B, d, T), go (B, p, T)
        a_cf, go_cf = [], []
        for a, go in zip(inputs, gos, strict=True):
            if conv:
                assert isinstance(module, nn.Conv2d)
                a_cf.append(
                    F.unfold(
                        a,
                        module.kernel_size,
                        dilation=module.dilation,
                        padding=module.padding,  # type: ignore[arg-type]
                        stride=module.stride,
                    )
                )
                go_cf.append(go.reshape(batch, go.shape[1], -1))
            else:
                a_cf.append(a.reshape(batch, -1, a.shape[-1]).transpose(1, 2))
                go_cf.append(go.reshape(batch, -1, go.shape[-1]).transpose(1, 2))
        a_all = a_cf[0] if len(a_cf) == 1 else torch.cat(a_cf, dim=2)
        go_all = go_cf[0] if len(go_cf) == 1 else torch.cat(go_cf, dim=2)
        sq = torch.zeros(batch, dtype=go_all.dtype)
        if "weight" in mine:
            sq = sq + _weight_norms_sq(a_all, go_all, self._sel[mine["weight"]])
        bias_ps: torch.Tensor | None = None
        if "bias" in mine:
            bias_ps = go_all.sum(dim=2)  # (B, p): per-example bias gradients are cheap
            sel = self._sel[mine["bias"]]
            picked = bias_ps if sel.flat is None else bias_ps[:, sel.flat]
            sq = sq + picked.pow(2).sum(dim=1)

        def summed(clip: torch.Tensor) -> dict[int, torch.Tensor]:
            out: dict[int, torch.Tensor] = {}
            if "weight" in mine:
                w = module.weight
                assert isinstance(w, torch.Tensor)
                total = torch.zeros_like(w)
                for a, go in zip(inputs, gos, strict=True):
                    scaled = go * clip.view(-1, *([1] * (go.dim() - 1)))
                    if conv:
                        assert isinstance(module, nn.Conv2d)
                        total += torch.nn.grad.conv2d_weight(  # type: ignore[attr-defined]
                            a,
                            w.shape,
                            scaled,
                            stride=module.stride,
                            padding=module.padding,
                            dilation=module.dilation,
                        )
                    else:
                        total += scaled.reshape(-1, w.shape[0]).t() @ a.reshape(-1, w.shape[1])
                out[mine["weight"]] = total
            if bias_ps is not None:
                out[mine["bias"]] = clip.to(bias_ps.dtype) @ bias_ps
            return out

        return sq, summed

    def _exact_layer(
        self,
        module: nn.Module,
        inputs: list[torch.Tensor],
        gos: list[torch.Tensor],
        mine: dict[str, int],
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], dict[int, torch.Tensor]]]:
        sampler = _exact_sampler(module)
        assert sampler is not None
        per_example: dict[int, torch.Tensor] = {}
        for a, go in zip(inputs, gos, strict=True):
            for p, g in sampler(module, [a], go).items():
                i = self._index.get(id(p))
                if i is None or i not in mine.values():
                    continue
                per_example[i] = g if i not in per_example else per_example[i] + g
        batch = inputs[0].shape[0]
        sq = torch.zeros(batch, dtype=gos[0].dtype)
        for i, g in per_example.items():
            sel = self._sel[i]
            if sel.mask is not None:
                g.masked_fill_(~sel.mask, 0.0)
            sq = sq + g.reshape(batch, -1).pow(2).sum(dim=1)

        def summed(clip: torch.Tensor) -> dict[int, torch.Tensor]:
            return {i: torch.einsum("b,b...->...", clip, g) for i, g in per_example.items()}

        return sq, summed


def _weight_norms_sq(a: torch.Tensor, go: torch.Tensor, sel: _Selection) -> torch.Tensor:
    """Per-example squared norms of the selected entries of ``sum_t go[:, :, t] a[:, :, t]^T``.

    ``a`` is ``(B, d, T)``, ``go`` is ``(B, p, T)``; the weight is viewed as ``(p, d)``.
    """
    batch, d, t = a.shape
    p = go.shape[1]
    materialise = t * p * d
    if sel.mask is None:
        ghost = t * t * (p + d)
        if ghost <= materialise:
            gram_a = torch.bmm(a.transpose(1, 2), a)
            gram_g = torch.bmm(go.transpose(1, 2), go)
            return (gram_a * gram_g).sum(dim=(1, 2))
        return torch.bmm(go, a.transpose(1, 2)).pow(2).sum(dim=(1, 2))
    assert sel.rows is not None and sel.cols is not None and sel.flat is not None
    if _GATHER_COST * t * sel.count >= materialise:
        full = torch.bmm(go, a.transpose(1, 2)).reshape(batch, -1)
        return full[:, sel.flat].pow(2).sum(dim=1)
    sq = torch.zeros(batch, dtype=go.dtype)
    chunk = max(1, _GATHER_CHUNK // max(1, batch * t))
    for start in range(0, sel.count, chunk):
        rows = sel.rows[start : start + chunk]
        cols = sel.cols[start : start + chunk]
        g = (go[:, rows, :] * a[:, cols, :]).sum(dim=2)  # (B, chunk)
        sq = sq + g.pow(2).sum(dim=1)
    return sq
