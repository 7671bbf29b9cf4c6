"""Noise sources: SecureNoise is unpredictable and N(0, std^2); ReproducibleNoise replays a seed."""

from __future__ import annotations

import inspect
import logging
import math
import random

import numpy as np
import pytest
import torch
from scipy.stats import kstest

from fedprune.privacy import noise as noise_module
from fedprune.privacy.noise import NoiseSource, ReproducibleNoise, SecureNoise


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


# ---- SecureNoise ---------------------------------------------------------------------------------


def test_two_secure_sources_draw_differently() -> None:
    like = torch.zeros(1_000)
    a, b = SecureNoise(), SecureNoise()
    first, second = a.gaussian(like, 1.0), b.gaussian(like, 1.0)
    assert not torch.equal(first, second)
    assert not torch.equal(first, a.gaussian(like, 1.0))  # the keystream moves on
    assert not SecureNoise.reproducible and isinstance(a, NoiseSource)


def test_secure_noise_cannot_be_replayed_from_any_seed() -> None:
    assert inspect.signature(SecureNoise).parameters == {}  # nothing to seed it with
    like = torch.zeros(500)
    _seed_everything(0)
    a = SecureNoise().gaussian(like, 1.0)
    ga = SecureNoise().sampling_generator()
    _seed_everything(0)
    b = SecureNoise().gaussian(like, 1.0)
    gb = SecureNoise().sampling_generator()
    assert not torch.equal(a, b)
    assert ga.initial_seed() != gb.initial_seed()
    assert ga is not torch.default_generator


def test_secure_noise_entropy_comes_only_from_os_urandom(monkeypatch) -> None:
    """With ``os.urandom`` pinned, two sources agree: no other (seedable) state enters."""
    monkeypatch.setattr(noise_module.os, "urandom", lambda n: bytes(range(n)))
    like = torch.zeros(64)
    _seed_everything(1)
    a = SecureNoise().gaussian(like, 1.0)
    _seed_everything(2)
    b = SecureNoise().gaussian(like, 1.0)
    assert torch.equal(a, b)


def test_sampling_generators_are_fresh_each_call() -> None:
    source = SecureNoise()
    seeds = {source.sampling_generator().initial_seed() for _ in range(5)}
    assert len(seeds) == 5
    assert all(0 <= s < 2**63 for s in seeds)


def test_secure_noise_is_gaussian_with_the_requested_std() -> None:
    std, n = 2.5, 200_000
    z = SecureNoise().gaussian(torch.zeros(n, dtype=torch.float64), std)
    assert abs(float(z.mean())) < 5 * std / math.sqrt(n)
    assert abs(float(z.std()) / std - 1) < 0.01  # sd of the estimate ~0.16 %
    assert kstest(z.numpy() / std, "norm").pvalue > 1e-6
    # the two normals of each Box-Muller pair are independent (values and squares uncorrelated)
    half = n // 2
    for a, b in [(z[:half], z[half:]), (z[:half] ** 2, z[half:] ** 2)]:
        r = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
        assert abs(r) < 5 / math.sqrt(half)


@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 5), (2, 3, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("source", [SecureNoise, lambda: ReproducibleNoise(3)])
def test_shape_dtype_and_device_follow_like(shape, dtype, source) -> None:
    like = torch.full(shape, 7.0, dtype=dtype)
    z = source().gaussian(like, 0.5)
    assert z.shape == like.shape and z.dtype == dtype and z.device == like.device
    assert bool(torch.isfinite(z).all())
    assert bool((z != 0).all())
    assert torch.equal(like, torch.full(shape, 7.0, dtype=dtype))  # ``like`` is untouched


@pytest.mark.parametrize("source", [SecureNoise, lambda: ReproducibleNoise(3)])
def test_zero_std_and_empty_tensors_give_zeros(source) -> None:
    s = source()
    assert torch.equal(s.gaussian(torch.ones(4), 0.0), torch.zeros(4))
    assert s.gaussian(torch.ones(0, 3), 1.0).shape == (0, 3)


@pytest.mark.parametrize("std", [-1.0, math.nan, math.inf, "1"])
def test_invalid_std_is_refused(std) -> None:
    with pytest.raises(ValueError, match="expected std >= 0 and finite"):
        SecureNoise().gaussian(torch.zeros(3), std)


def test_integer_tensors_are_refused() -> None:
    with pytest.raises(ValueError, match="floating-point"):
        SecureNoise().gaussian(torch.zeros(3, dtype=torch.int64), 1.0)


# ---- ReproducibleNoise ---------------------------------------------------------------------------


def test_same_seed_same_draws_and_batches() -> None:
    like = torch.zeros(300)
    a, b, c = ReproducibleNoise(11), ReproducibleNoise(11), ReproducibleNoise(12)
    for _ in range(3):
        x, y, z = a.gaussian(like, 1.0), b.gaussian(like, 1.0), c.gaussian(like, 1.0)
        assert torch.equal(x, y)
        assert not torch.equal(x, z)
        ga, gb = a.sampling_generator(), b.sampling_generator()
        assert torch.equal(torch.rand(10, generator=ga), torch.rand(10, generator=gb))
    assert a.sampling_generator().initial_seed() != a.sampling_generator().initial_seed()
    assert ReproducibleNoise.reproducible


def test_reproducible_noise_does_not_depend_on_global_seeds() -> None:
    like = torch.zeros(50)
    _seed_everything(0)
    a = ReproducibleNoise(4).gaussian(like, 1.0)
    _seed_everything(99)
    assert torch.equal(a, ReproducibleNoise(4).gaussian(like, 1.0))


def test_reproducible_noise_warns(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="fedprune.privacy.noise"):
        ReproducibleNoise(0)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "anyone who knows the seed can remove the noise" in record.getMessage()
    assert "never use for real private data" in record.getMessage()


@pytest.mark.parametrize("seed", [1.5, "3", True, None])
def test_reproducible_noise_needs_an_int_seed(seed) -> None:
    with pytest.raises(ValueError, match="expected seed to be an int"):
        ReproducibleNoise(seed)
