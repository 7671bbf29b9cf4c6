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
   ``Linear``, the ``unfold`` columns for ``Conv2d``), computed by one of these exact
   strategies chosen per tensor:

   * *skip*: a tensor with nothing selected gets no per-example work at all;
   * *ghost* (fully selected ``Linear`` with ``T*(p+d) <= p*d``):
     ``sum_{t,s} (a_t . a_s)(go_t . go_s)``, cost ``B*T^2*(p+d)``;
   * for a partly selected weight, the cheapest by a T-aware cost model in ns fitted on this
     machine (``_NS_*``; ``python -m benchmarks --layers`` prints measured vs modelled per
     layer) of *gather* (only the ``K`` selected entries, ``B*T*K`` products plus the used
     columns/rows copied), *materialise* (every per-example entry from one batched GEMM, or for
     ``Conv2d`` one grouped convolution, then read only the selected ones) and, for a flat
     ``Linear`` called once (T = 1), *bilinear* (``sum_ij M_ij g_i^2 a_j^2 = (g*g)^T M (a*a)``,
     one dense GEMM). A convolution gathers only at very low density (the grouped convolution
     is memory-bound on ``p*d + T*(p+d)`` while gather reads ``K*T`` products); a flat
     ``Linear`` gathers at low density and is bilinear above a few %;
   * fully selected ``Conv2d`` and other fully selected ``Linear``: *materialise*.

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
from typing import Literal

import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from torch import nn

from fedprune.privacy.noise import NoiseSource

__all__ = ["FastMaskedDPSGD", "unsupported_parameters"]

# Cost model of the two strategies for a partly selected weight, in ns per example, fitted to
# ``python -m benchmarks --layers`` on the dev machine (1 thread; least squares over the Linear and
# Conv2d layers of cnn and resnet at 1-30 % density). Only the choice depends on it, not the result.
# gather: T * (_NS_GATHER * K + _NS_COPY * (U + R))   (K entries, U used columns, R used rows)
# materialise: _NS_WRITE * p*d + _NS_READ * T * (p + d) + _NS_FLOP * T * p*d
_NS_GATHER = 3.4  # one gathered multiply-add (two index_select reads, a multiply, a sum)
_NS_COPY = 6.0  # one element of a used column / row copied entry-major
_NS_WRITE = 4.0  # one per-example gradient element written, then its selected entries read
_NS_READ = 0.9  # one element of the input / output gradient read by the per-example kernel
_NS_FLOP = 0.004  # one multiply-add of the per-example GEMM / grouped convolution
# bilinear (flat Linear, T = 1): _NS_GEMM * 2 * p*d   (norms and clipped sum, one GEMM each)
_NS_GEMM = 0.15  # one multiply-add of a dense (B x p) @ (p x d) GEMM
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
    used_rows: torch.Tensor | None = None  # sorted distinct rows / columns with an entry
    used_cols: torch.Tensor | None = None
    row_pos: torch.Tensor | None = None  # position of each entry's row in used_rows
    col_pos: torch.Tensor | None = None


def _selection(p: torch.Tensor, mask: torch.Tensor | None) -> _Selection:
    """The precomputed selection of ``p`` for bool ``mask`` of its shape (``None`` = all)."""
    if mask is None or bool(mask.all()):
        return _Selection(mask=None, count=p.numel())
    m = mask.to(p.device, copy=True)
    flat = m.reshape(-1).nonzero().squeeze(1)
    width = p[0].numel() if p.dim() >= 2 else 1
    rows, cols = flat // width, flat % width
    used_rows, row_pos = torch.unique(rows, return_inverse=True)
    used_cols, col_pos = torch.unique(cols, return_inverse=True)
    return _Selection(
        mask=m,
        count=int(flat.numel()),
        flat=flat,
        used_rows=used_rows,
        used_cols=used_cols,
        row_pos=row_pos,
        col_pos=col_pos,
    )


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
            sel.append(_selection(p, m))
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
            summed = sums.get(i)
            if sel.mask is None:
                grad = torch.zeros_like(p) if summed is None else summed
                grad += self.noise.gaussian(grad, std)
            else:
                # ``summed`` holds the K selected coordinates only (row-major, like grad[mask])
                assert sel.flat is not None
                values = p.new_zeros(sel.count) if summed is None else summed
                grad = torch.zeros_like(p)
                grad.view(-1)[sel.flat] = values + self.noise.gaussian(values, std)
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
            sums.update(summed(clip))
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
        w = module.weight
        assert isinstance(w, torch.Tensor)
        p_out, d_in = w.shape[0], w[0].numel()
        w_sel = self._sel[mine["weight"]] if "weight" in mine else None
        sq = torch.zeros(batch, dtype=gos[0].dtype)
        gathered: torch.Tensor | None = None  # (K, B) per-example selected weight entries
        materialised: torch.Tensor | None = None  # (B, K) the same, from a batched GEMM
        strategy = (
            _partial_strategy(w_sel, _positions(module, gos), len(gos), p_out, d_in, conv)
            if w_sel is not None and w_sel.flat is not None
            else None
        )
        if w_sel is not None and strategy == "gather":
            gathered = _gather_selected(module, inputs, gos, w_sel)
            sq = sq + gathered.pow(2).sum(dim=0)
        elif w_sel is not None and strategy == "bilinear":
            sq = sq + _bilinear_norms(inputs[0], gos[0], w_sel)  # clipped sum: reweighted GEMM
        elif w_sel is not None and conv:
            per_ex = _materialise(module, inputs, gos)
            if w_sel.flat is not None:
                per_ex = per_ex[:, w_sel.flat]
            materialised = per_ex
            sq = sq + per_ex.pow(2).sum(dim=1)
        elif w_sel is not None:
            if w_sel.flat is None and _positions(module, gos) * (p_out + d_in) <= p_out * d_in:
                # ghost norm: ||sum_t go_t a_t^T||^2 = sum_{t,s} (a_t . a_s)(go_t . go_s),
                # with channel-first per-example views a (B, d, T), go (B, p, T)
                a_all = torch.cat([a.reshape(batch, -1, a.shape[-1]) for a in inputs], 1).mT
                go_all = torch.cat([go.reshape(batch, -1, go.shape[-1]) for go in gos], 1).mT
                gram_a = torch.bmm(a_all.transpose(1, 2), a_all)
                gram_g = torch.bmm(go_all.transpose(1, 2), go_all)
                sq = sq + (gram_a * gram_g).sum(dim=(1, 2))
            else:
                per_ex = _materialise(module, inputs, gos)
                if w_sel.flat is not None:
                    per_ex = per_ex[:, w_sel.flat]
                materialised = per_ex
                sq = sq + per_ex.pow(2).sum(dim=1)
        bias_ps: torch.Tensor | None = None
        if "bias" in mine:
            # per-example bias gradients (B, p) are cheap: go summed over positions
            per_call = [
                go.sum(dim=(2, 3)) if conv else go.reshape(batch, -1, p_out).sum(dim=1)
                for go in gos
            ]
            bias_ps = per_call[0] if len(per_call) == 1 else torch.stack(per_call).sum(dim=0)
            sel = self._sel[mine["bias"]]
            if sel.flat is not None:
                bias_ps = bias_ps[:, sel.flat]
            sq = sq + bias_ps.pow(2).sum(dim=1)

        def summed(clip: torch.Tensor) -> dict[int, torch.Tensor]:
            out: dict[int, torch.Tensor] = {}
            if w_sel is not None and gathered is not None:
                out[mine["weight"]] = gathered @ clip
            elif w_sel is not None and materialised is not None:
                total = clip @ materialised
                out[mine["weight"]] = total if w_sel.flat is not None else total.view_as(w)
            elif w_sel is not None:
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
                out[mine["weight"]] = total if w_sel.flat is None else total.view(-1)[w_sel.flat]
            if bias_ps is not None:
                out[mine["bias"]] = clip @ bias_ps
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
        batch = inputs[0].shape[0]
        per_example: dict[int, torch.Tensor] = {}
        for a, go in zip(inputs, gos, strict=True):
            for p, g in sampler(module, [a], go).items():
                i = self._index.get(id(p))
                if i is None or i not in mine.values():
                    continue
                g = g.reshape(batch, -1)
                per_example[i] = g if i not in per_example else per_example[i] + g
        sq = torch.zeros(batch, dtype=gos[0].dtype)
        for i, g in list(per_example.items()):
            flat = self._sel[i].flat
            if flat is not None:
                per_example[i] = g = g[:, flat]  # only the selected entries, (B, K)
            sq = sq + g.pow(2).sum(dim=1)

        def summed(clip: torch.Tensor) -> dict[int, torch.Tensor]:
            out = {}
            for i, g in per_example.items():
                total = clip @ g
                out[i] = total if self._sel[i].flat is not None else total.view_as(self.params[i])
            return out

        return sq, summed


def _gather_selected(
    module: nn.Module, inputs: list[torch.Tensor], gos: list[torch.Tensor], sel: _Selection
) -> torch.Tensor:
    """*gather*: per-example values ``(K, B)`` of the selected entries of ``module.weight``
    from its inputs and output gradients over every call (``sel.flat`` must not be ``None``)."""
    # only the used columns of the (unfolded) input and used rows of go, entry-major
    a_em = torch.cat([_input_columns(module, a, sel) for a in inputs], dim=2)
    go_em = torch.cat([_output_rows(go, sel) for go in gos], dim=2)
    return _gather_entries(a_em, go_em, sel)


def _bilinear_norms(a: torch.Tensor, go: torch.Tensor, sel: _Selection) -> torch.Tensor:
    """*bilinear*: per-example squared norms ``(B,)`` of the selected entries of a flat
    ``Linear`` (one call, T = 1): ``||M * (g a^T)||^2 = sum_ij M_ij g_i^2 a_j^2``, one GEMM."""
    assert sel.mask is not None
    batch = a.shape[0]
    a2, g2 = a.reshape(batch, -1).square(), go.reshape(batch, -1).square()
    return ((g2 @ sel.mask.to(g2.dtype)) * a2).sum(dim=1)


def _materialise(
    module: nn.Module, inputs: list[torch.Tensor], gos: list[torch.Tensor]
) -> torch.Tensor:
    """*materialise*: every per-example weight gradient ``(B, p*d)`` of ``module``, summed over
    its calls: one grouped convolution backward per call for ``Conv2d``, one batched GEMM over
    the positions for ``Linear``."""
    if isinstance(module, nn.Conv2d):
        total = _conv_per_example(module, inputs[0], gos[0])
        for a, go in zip(inputs[1:], gos[1:], strict=True):
            total = total + _conv_per_example(module, a, go)
        return total
    batch = inputs[0].shape[0]
    a_all = torch.cat([a.reshape(batch, -1, a.shape[-1]) for a in inputs], dim=1)  # (B, T, d)
    go_all = torch.cat([go.reshape(batch, -1, go.shape[-1]) for go in gos], dim=1)  # (B, T, p)
    return torch.bmm(go_all.transpose(1, 2), a_all).reshape(batch, -1)


def _positions(module: nn.Module, gos: list[torch.Tensor]) -> int:
    """``T``: positions per example summed over the calls (1 per call for a flat ``Linear``,
    ``Ho*Wo`` for ``Conv2d``)."""
    if isinstance(module, nn.Conv2d):
        return sum(go[0, 0].numel() for go in gos)
    return sum(go[0].numel() // go.shape[-1] for go in gos)


def _gather_cost(sel: _Selection, positions: int) -> float:
    """Modelled ns per example of *gather* for a partly selected weight (see ``_NS_GATHER``)."""
    assert sel.used_rows is not None and sel.used_cols is not None
    used = len(sel.used_rows) + len(sel.used_cols)
    return positions * (_NS_GATHER * sel.count + _NS_COPY * used)


def _materialise_cost(positions: int, p_out: int, d_in: int) -> float:
    """Modelled ns per example of *materialise* (per-example GEMM / grouped convolution)."""
    size = p_out * d_in
    return _NS_WRITE * size + _NS_READ * positions * (p_out + d_in) + _NS_FLOP * positions * size


Strategy = Literal["gather", "bilinear", "materialise"]


def _partial_strategy(
    sel: _Selection, positions: int, calls: int, p_out: int, d_in: int, conv: bool
) -> Strategy:
    """The modelled cheapest exact strategy for a partly selected weight (``sel.flat`` set).

    T-aware: *gather* reads ``K * T`` products while *materialise* is bandwidth-bound on
    ``p*d + T*(p + d)``, so for a convolution gather wins only at very low density. A flat
    ``Linear`` called once (T = 1) has the *bilinear* form ``(g*g)^T M (a*a)``, two dense
    GEMMs of ``p*d``, which beats gathering above a few % density and never materialises.
    """
    gather = _gather_cost(sel, positions)
    if not conv and positions == 1 and calls == 1:
        return "gather" if gather < _NS_GEMM * 2 * p_out * d_in else "bilinear"
    return "gather" if gather < _materialise_cost(positions, p_out, d_in) else "materialise"


def _conv_per_example(module: nn.Conv2d, a: torch.Tensor, go: torch.Tensor) -> torch.Tensor:
    """Per-example weight gradients ``(B, Cout*Cin*kh*kw)`` of a ``groups=1`` convolution: the
    batch folded into channels, one weight-gradient kernel with ``groups=B`` (as cheap as the
    non-private weight gradient; CPU ``unfold`` + ``bmm`` is several times slower)."""
    b, c = a.shape[:2]
    cout = go.shape[1]
    weight = go.new_empty(1).expand(b * cout, c, *module.kernel_size)
    grad = torch.ops.aten.convolution_backward(
        go.reshape(1, b * cout, *go.shape[2:]),
        a.reshape(1, b * c, *a.shape[2:]),
        weight,
        None,
        module.stride,
        module.padding,
        module.dilation,
        False,
        [0, 0],
        b,
        (False, True, False),
    )[1]
    return grad.reshape(b, -1)


def _input_columns(module: nn.Module, a: torch.Tensor, sel: _Selection) -> torch.Tensor:
    """The used columns of the layer's (unfolded) input, entry-major: ``(U, B, T)``.

    For ``Conv2d`` the unfold column ``c * kh * kw + i * kw + j`` is read straight from the
    zero-padded input as a strided slice: the full unfolded input is never built.
    """
    assert sel.used_cols is not None
    batch = a.shape[0]
    if isinstance(module, nn.Linear):
        flat = a.reshape(batch, -1, a.shape[-1])  # (B, T, d)
        return flat.index_select(2, sel.used_cols).permute(2, 0, 1).contiguous()
    assert isinstance(module, nn.Conv2d)
    kh, kw = module.kernel_size
    sh, sw = module.stride
    dh, dw = module.dilation
    assert not isinstance(module.padding, str)
    ph, pw = module.padding
    x = F.pad(a, (pw, pw, ph, ph)) if ph or pw else a
    ho = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = a.new_empty(len(sel.used_cols), batch, ho * wo)
    channel, offset = sel.used_cols // (kh * kw), sel.used_cols % (kh * kw)
    for q in torch.unique(offset).tolist():
        at = (offset == q).nonzero().squeeze(1)
        i, j = divmod(q, kw)
        window = x[
            :, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw
        ]
        picked = window.index_select(1, channel[at])  # (B, n, Ho, Wo)
        out[at] = picked.permute(1, 0, 2, 3).reshape(len(at), batch, ho * wo)
    return out


def _output_rows(go: torch.Tensor, sel: _Selection) -> torch.Tensor:
    """The used rows (output features / channels) of ``go``, entry-major: ``(R, B, T)``."""
    assert sel.used_rows is not None
    batch = go.shape[0]
    if go.dim() == 4:  # Conv2d: (B, p, Ho, Wo)
        flat = go.reshape(batch, go.shape[1], -1)
        return flat.index_select(1, sel.used_rows).permute(1, 0, 2).contiguous()
    flat = go.reshape(batch, -1, go.shape[-1])  # (B, T, p)
    return flat.index_select(2, sel.used_rows).permute(2, 0, 1).contiguous()


def _gather_entries(a_em: torch.Tensor, go_em: torch.Tensor, sel: _Selection) -> torch.Tensor:
    """Per-example values of the selected weight entries, ``(K, B)``:
    ``g[k, b] = sum_t go[b, rows[k], t] * a[b, cols[k], t]``.

    ``a_em`` (used columns) and ``go_em`` (used rows) are entry-major ``(U, B, T)``, so every
    gathered row is one contiguous ``B*T`` block.
    """
    assert sel.row_pos is not None and sel.col_pos is not None
    _, batch, t = a_em.shape
    out = a_em.new_empty(sel.count, batch)
    chunk = max(1, _GATHER_CHUNK // max(1, batch * t))
    for start in range(0, sel.count, chunk):
        rows = sel.row_pos[start : start + chunk]
        cols = sel.col_pos[start : start + chunk]
        prod = go_em.index_select(0, rows).mul_(a_em.index_select(0, cols))
        torch.sum(prod, dim=2, out=out[start : start + chunk])
    return out
