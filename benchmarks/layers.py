"""Per layer: measured time of the fast engine's *gather*, *materialise* and (flat ``Linear``)
*bilinear* strategies for a partly selected weight vs what its cost model predicts (the data
the ``_NS_*`` constants of ``fedprune/training/fast_masked.py`` are fitted to, and a check of
its choices on a machine).

For every ``Linear`` / ``Conv2d`` layer of a model, at batch ``B``, with the layer's real input
and output gradient from one forward/backward pass of random data and a random mask of each
density: best-of-``repeats`` wall time of each strategy (the per-example values of the selected
entries, as the engine computes them; bilinear: the norms and the clipped sum's GEMM) and the
modelled time (ns per example x ``B``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from fedprune.models import create_model
from fedprune.training import fast_masked as fm


def _best_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return 1e3 * best


def _selected_of_all(
    module: nn.Module, a: torch.Tensor, go: torch.Tensor, flat: torch.Tensor
) -> torch.Tensor:
    return fm._materialise(module, [a], [go])[:, flat]


def _bilinear_with_sum(a: torch.Tensor, go: torch.Tensor, sel: fm._Selection) -> torch.Tensor:
    norms = fm._bilinear_norms(a, go, sel)
    return (go.t() @ a).view(-1)[sel.flat] + norms.sum()


def measure(
    name: str,
    input_shape: tuple[int, int, int],
    *,
    densities: list[float],
    batch: int,
    repeats: int = 3,
) -> list[dict[str, object]]:
    """Rows ``{model, layer, kind, p, d, T, density, K, <strategy>_ms, model_<strategy>_ms,
    chosen, faster}`` for one model (``bilinear`` only for flat ``Linear`` layers)."""
    torch.manual_seed(0)
    model = create_model(name, input_shape=input_shape, num_classes=10)
    layers: dict[nn.Module, str] = {
        m: n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
    }
    seen: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def keep(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        seen[module] = (inputs[0].detach(), output)

    handles = [m.register_forward_hook(keep) for m in layers]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *input_shape, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    try:
        loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
    finally:
        for h in handles:
            h.remove()
    mods = list(seen)
    gos = torch.autograd.grad(loss, [seen[m][1] for m in mods])
    rows: list[dict[str, object]] = []
    for module, go in zip(mods, gos, strict=True):
        a = seen[module][0]
        weight = module.weight
        assert isinstance(weight, torch.Tensor)
        p, d = weight.shape[0], weight[0].numel()
        t = fm._positions(module, [go])
        for density in densities:
            mask = torch.rand(weight.shape, generator=gen) < density
            sel = fm._selection(weight, mask)
            if sel.flat is None or sel.count == 0:
                continue
            gather_ms = _best_ms(partial(fm._gather_selected, module, [a], [go], sel), repeats)
            mat_ms = _best_ms(partial(_selected_of_all, module, a, go, sel.flat), repeats)
            conv = isinstance(module, nn.Conv2d)
            measured = {"gather": gather_ms, "materialise": mat_ms}
            if not conv and t == 1:
                # bilinear: the norms' GEMM, and the clipped sum's GEMM it needs instead
                measured["bilinear"] = _best_ms(partial(_bilinear_with_sum, a, go, sel), repeats)
            modelled = {
                "gather": fm._gather_cost(sel, t),
                "materialise": fm._materialise_cost(t, p, d),
                "bilinear": fm._NS_GEMM * 2 * p * d,
            }
            rows.append(
                {
                    "model": name,
                    "layer": layers[module],
                    "kind": type(module).__name__,
                    "p": p,
                    "d": d,
                    "T": t,
                    "density": density,
                    "K": sel.count,
                    **{f"{k}_ms": v for k, v in measured.items()},
                    **{f"model_{k}_ms": batch * modelled[k] / 1e6 for k in measured},
                    "chosen": fm._partial_strategy(sel, t, 1, p, d, conv),
                    "faster": min(measured, key=lambda k: measured[k]),
                }
            )
    return rows


def table(rows: list[dict[str, object]]) -> str:
    """One line per layer and density: measured and modelled ms, chosen vs faster strategy."""
    lines = [
        f"  {'layer':<22}{'kind':<7}{'p x d':>11}{'T':>6}{'density':>8}{'K':>7}"
        f"{'gather':>9}{'(model)':>9}{'mat':>8}{'(model)':>9}{'bilin':>8}{'(model)':>9}"
        "  chosen / faster"
    ]
    for r in rows:
        shape = f"{r['p']}x{r['d']}"
        cells = ""
        for k in ("gather", "materialise", "bilinear"):
            if f"{k}_ms" in r:
                cells += f"{float(r[f'{k}_ms']):>8.2f}{float(r[f'model_{k}_ms']):>9.2f}"  # type: ignore[arg-type]
            else:
                cells += f"{'-':>8}{'-':>9}"
        lines.append(
            f"  {r['layer']!s:<22}{r['kind']!s:<7}{shape:>11}{r['T']!s:>6}"
            f"{float(r['density']):>8.0%}{r['K']!s:>7} {cells}"  # type: ignore[arg-type]
            f"  {r['chosen']} / {r['faster']}{'' if r['chosen'] == r['faster'] else '  (!)'}"
        )
    return "\n".join(lines)
