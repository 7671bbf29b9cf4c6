"""Tests for select_mask: exact counts, determinism, bias policies and argument checks."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedprune.data.splits import PrivateDataset, PublicDataset
from fedprune.masks import MaskScope, ParameterMask, select_mask
from fedprune.masks.topk import keep_count
from fedprune.models import create_model

SPARSE = ["gradient", "magnitude", "random", "snip"]
densities = st.floats(min_value=1e-4, max_value=1.0, allow_nan=False)


def n_params(model: nn.Module) -> dict[str, int]:
    return {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("strategy", SPARSE)
@settings(max_examples=15, deadline=None)
@given(density=densities, seed=st.integers(0, 1000))
def test_global_count_is_exact(
    strategy: str,
    density: float,
    seed: int,
    tiny_model: Callable[..., nn.Sequential],
    public: PublicDataset,
) -> None:
    model = tiny_model(seed)
    mask = select_mask(model, strategy=strategy, density=density, public=public, seed=seed)
    total = sum(n_params(model).values())
    assert mask.num_selected == keep_count(total, density)
    assert mask.num_total == total
    mask.validate_for(model)


@pytest.mark.parametrize("strategy", SPARSE)
@settings(max_examples=15, deadline=None)
@given(density=densities, seed=st.integers(0, 1000))
def test_layer_counts_are_exact(
    strategy: str,
    density: float,
    seed: int,
    tiny_model: Callable[..., nn.Sequential],
    public: PublicDataset,
) -> None:
    model = tiny_model(seed)
    mask = select_mask(
        model, strategy=strategy, density=density, scope="layer", public=public, seed=seed
    )
    assert mask.selected_counts == {n: keep_count(k, density) for n, k in n_params(model).items()}


@settings(max_examples=20, deadline=None)
@given(density=densities, scope=st.sampled_from(["global", "layer"]))
def test_exact_counts_with_all_scores_tied(density: float, scope: MaskScope) -> None:
    model = nn.Sequential(nn.Linear(7, 5), nn.Linear(5, 3))
    for p in model.parameters():
        nn.init.zeros_(p)
    mask = select_mask(model, strategy="magnitude", density=density, scope=scope)
    if scope == "global":
        assert mask.num_selected == keep_count(58, density)
    else:
        assert mask.selected_counts == {
            n: keep_count(k, density) for n, k in n_params(model).items()
        }


def test_ties_broken_by_canonical_order() -> None:
    model = nn.Linear(4, 1, bias=False)
    nn.init.zeros_(model.weight)
    mask = select_mask(model, strategy="magnitude", density=0.5)
    assert mask["weight"].tolist() == [[True, True, False, False]]


@pytest.mark.parametrize("strategy", SPARSE)
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_deterministic_by_seed(
    strategy: str, scope: MaskScope, tiny_model: Callable[..., nn.Sequential], public: PublicDataset
) -> None:
    def pick(seed: int) -> ParameterMask:
        return select_mask(
            tiny_model(), strategy=strategy, density=0.2, scope=scope, public=public, seed=seed
        )

    assert pick(3) == pick(3)


def test_random_differs_across_seeds(model: nn.Sequential) -> None:
    masks = [select_mask(model, strategy="random", density=0.3, seed=s) for s in range(3)]
    assert masks[0] != masks[1] and masks[1] != masks[2] and masks[0] != masks[2]


@pytest.mark.parametrize("density", [1e-3, 0.5, 1.0])
@pytest.mark.parametrize("bias_policy", ["masked", "always", "never"])
def test_none_is_dense(model: nn.Sequential, density: float, bias_policy: str) -> None:
    mask = select_mask(model, strategy="none", density=density, bias_policy=bias_policy)  # type: ignore[arg-type]
    assert mask == ParameterMask.dense(model)


def test_magnitude_picks_largest_globally(model: nn.Sequential) -> None:
    mask = select_mask(model, strategy="magnitude", density=0.25)
    params = dict(model.named_parameters())
    chosen = torch.cat([params[n].detach().abs()[mask[n]] for n in mask])
    rest = torch.cat([params[n].detach().abs()[~mask[n]] for n in mask])
    assert chosen.min() >= rest.max()


def test_magnitude_picks_largest_per_layer(model: nn.Sequential) -> None:
    mask = select_mask(model, strategy="magnitude", density=0.25, scope="layer")
    for n, p in model.named_parameters():
        w = p.detach().abs()
        assert w[mask[n]].min() >= w[~mask[n]].max()


@pytest.mark.parametrize("strategy", [*SPARSE, "none"])
def test_model_unchanged(strategy: str, model: nn.Sequential, public: PublicDataset) -> None:
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    select_mask(model, strategy=strategy, density=0.1, public=public)
    assert model.training
    assert all(torch.equal(p, before[n]) and p.grad is None for n, p in model.named_parameters())


def is_vector(model: nn.Module, name: str) -> bool:
    return dict(model.named_parameters())[name].dim() <= 1


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_bias_policy_always(model: nn.Sequential, scope: MaskScope) -> None:
    mask = select_mask(model, strategy="random", density=0.1, scope=scope, bias_policy="always")
    matrices = {n: k for n, k in n_params(model).items() if not is_vector(model, n)}
    for n, k in n_params(model).items():
        if is_vector(model, n):
            assert mask.selected_counts[n] == k
    selected = sum(mask.selected_counts[n] for n in matrices)
    if scope == "global":
        assert selected == keep_count(sum(matrices.values()), 0.1)
    else:
        assert selected == sum(keep_count(k, 0.1) for k in matrices.values())


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_bias_policy_never(model: nn.Sequential, scope: MaskScope) -> None:
    mask = select_mask(model, strategy="magnitude", density=0.5, scope=scope, bias_policy="never")
    matrices = sum(k for n, k in n_params(model).items() if not is_vector(model, n))
    vectors = [n for n in mask if is_vector(model, n)]
    assert vectors == ["0.bias", "1.weight", "1.bias", "4.bias"]
    assert all(mask.selected_counts[n] == 0 for n in vectors)
    if scope == "global":
        assert mask.num_selected == keep_count(matrices, 0.5)
    mask.validate_for(model)


def test_bias_policy_masked_counts_vectors(model: nn.Sequential) -> None:
    mask = select_mask(model, strategy="random", density=1.0, bias_policy="masked")
    assert mask.num_selected == mask.num_total


def test_never_without_matrices_is_an_error() -> None:
    with pytest.raises(ValueError, match="bias_policy='never' excludes every eligible tensor"):
        select_mask(nn.GroupNorm(1, 4), strategy="random", density=0.5, bias_policy="never")


def test_frozen_parameters_are_not_in_the_mask(model: nn.Sequential) -> None:
    model[0].requires_grad_(False)
    mask = select_mask(model, strategy="magnitude", density=0.5)
    assert "0.weight" not in mask and "0.bias" not in mask
    mask.validate_for(model)


def test_fully_frozen_model_is_an_error(model: nn.Sequential) -> None:
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter with requires_grad=True"):
        select_mask(model, strategy="random", density=0.5)


@pytest.mark.parametrize("density", [0, 0.0, -0.1, 1.5, math.nan, math.inf])
@pytest.mark.parametrize("strategy", ["random", "none"])
def test_density_out_of_range(model: nn.Sequential, density: float, strategy: str) -> None:
    with pytest.raises(ValueError, match=rf"expected density in \(0, 1\], got {density}"):
        select_mask(model, strategy=strategy, density=density)


@pytest.mark.parametrize("density", [True, "0.1", None])
def test_density_wrong_type(model: nn.Sequential, density: object) -> None:
    with pytest.raises(TypeError, match="expected density to be a float"):
        select_mask(model, strategy="random", density=density)  # type: ignore[arg-type]


def test_unknown_options_list_known_values(model: nn.Sequential) -> None:
    with pytest.raises(ValueError, match=r"expected scope in \['global', 'layer'\], got 'net'"):
        select_mask(model, strategy="random", density=0.1, scope="net")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"expected bias_policy in \['masked', 'always', 'never'\]"
    ):
        select_mask(model, strategy="random", density=0.1, bias_policy="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown mask strategy 'top'; expected one of"):
        select_mask(model, strategy="top", density=0.1)


def test_non_finite_scores_are_an_error(model: nn.Sequential) -> None:
    with torch.no_grad():
        dict(model.named_parameters())["4.weight"][0, 0] = math.nan
    with pytest.raises(ValueError, match=r"not finite .* \['4.weight'\]"):
        select_mask(model, strategy="magnitude", density=0.1)


@pytest.mark.parametrize("strategy", SPARSE)
def test_private_data_is_refused(
    strategy: str, model: nn.Sequential, public: PublicDataset
) -> None:
    private = PrivateDataset(public.dataset, description="private")
    for data in (private, public.dataset):
        with pytest.raises(TypeError, match="voids the DP guarantee"):
            select_mask(model, strategy=strategy, density=0.1, public=data)  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", ["gradient", "snip"])
def test_data_strategies_need_public(strategy: str, model: nn.Sequential) -> None:
    with pytest.raises(TypeError, match=r"needs a fedprune\.data\.splits\.PublicDataset"):
        select_mask(model, strategy=strategy, density=0.1)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("strategy", SPARSE)
def test_registry_models(name: str, strategy: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, input_shape=(1, 8, 8), num_classes=10)
    gen = torch.Generator().manual_seed(0)
    public = PublicDataset(
        torch.utils.data.TensorDataset(
            torch.rand(32, 1, 8, 8, generator=gen), torch.randint(0, 10, (32,), generator=gen)
        ),
        kind="in-distribution",
        description="random digits-shaped data",
    )
    mask = select_mask(model, strategy=strategy, density=0.05, public=public)
    mask.validate_for(model)
    assert mask.num_selected == keep_count(sum(n_params(model).values()), 0.05)
    assert (
        ParameterMask.from_bytes(
            mask.to_bytes(),
            expected_shapes={n: tuple(p.shape) for n, p in model.named_parameters()},
        )
        == mask
    )
