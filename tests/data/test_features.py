"""``data.features``: scattering features of a split, standardised on public data, cached."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from fedprune.config import RunConfig
from fedprune.data import (
    PrivateDataset,
    available_features,
    featurise_split,
    load_dataset,
    split_public_private,
)
from fedprune.data import features as features_module
from fedprune.data.features import feature_cache_dir
from fedprune.data.scattering import Scattering2D
from fedprune.data.splits import PublicPrivateSplit


@pytest.fixture(autouse=True)
def _fresh_memory() -> None:
    """Every test starts with nothing cached in this process (disk: its own tmp cache dir)."""
    features_module._CACHES.clear()


def _count_scattering_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, every scattering call appends its batch size to the returned list."""
    calls: list[int] = []
    real_call = Scattering2D.__call__

    def counting(self: Scattering2D, x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return real_call(self, x)

    monkeypatch.setattr(Scattering2D, "__call__", counting)
    return calls


def _digits_split() -> PublicPrivateSplit:
    bundle = load_dataset("digits")
    return split_public_private(bundle, public_fraction=0.2, public_kind="in-distribution", seed=0)


def test_pixels_is_the_identity() -> None:
    split = _digits_split()
    assert featurise_split(split, "pixels") is split
    assert {"pixels", "scattering"} <= set(available_features())


def test_scattering_maps_every_record_and_standardises_with_public_statistics() -> None:
    split = _digits_split()
    out = featurise_split(split, "scattering")
    assert out.input_shape == (81, 2, 2)  # 8x8 digits, J = 2
    assert out.num_classes == split.num_classes and out.public.kind == split.public.kind
    for before, after in [
        (split.public.dataset, out.public.dataset),
        (split.private.dataset, out.private.dataset),
        (split.test, out.test),
    ]:
        assert after.tensors[0].shape == (len(before), 81, 2, 2)
        assert torch.equal(after.tensors[1], before.tensors[1])  # order and labels kept
    public_x = out.public.dataset.tensors[0]
    torch.testing.assert_close(public_x.mean(dim=(0, 2, 3)), torch.zeros(81), atol=1e-4, rtol=0)
    varying = public_x.std(dim=(0, 2, 3)) > 1e-3
    torch.testing.assert_close(
        public_x.std(dim=(0, 2, 3))[varying], torch.ones(int(varying.sum())), atol=1e-3, rtol=0
    )
    # A private record's features are its own scattering, scaled by the *public* statistics.
    raw_public = Scattering2D((8, 8))(split.public.dataset.tensors[0])
    mean = raw_public.mean(dim=(0, 2, 3), keepdim=True)
    std = raw_public.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    record = split.private.dataset.tensors[0][7:8]
    expected = (Scattering2D((8, 8))(record) - mean) / std
    torch.testing.assert_close(out.private.dataset.tensors[0][7:8], expected, atol=1e-4, rtol=1e-4)


def test_changing_one_private_record_changes_only_its_own_features() -> None:
    """The privacy contract: no private record influences any other record's features."""
    split = _digits_split()
    x, y = split.private.dataset.tensors
    changed_x = x.clone()
    changed_x[3] = 1.0 - changed_x[3]
    changed = PublicPrivateSplit(
        public=split.public,
        private=PrivateDataset(TensorDataset(changed_x, y), description="one record changed"),
        test=split.test,
        num_classes=split.num_classes,
        input_shape=split.input_shape,
    )
    a, b = featurise_split(split, "scattering"), featurise_split(changed, "scattering")
    differs = (a.private.dataset.tensors[0] != b.private.dataset.tensors[0]).flatten(1).any(1)
    assert differs.nonzero().flatten().tolist() == [3]
    assert torch.equal(a.public.dataset.tensors[0], b.public.dataset.tensors[0])
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])


def test_features_are_cached_on_disk_and_a_damaged_cache_is_recomputed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FEDPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    assert feature_cache_dir() == tmp_path / "cache" / "features"
    split = _digits_split()
    first = featurise_split(split, "scattering")
    files = sorted(feature_cache_dir().glob("scattering-*.pt"))
    assert len(files) == 3  # one shard per tensor first seen: public, private, test

    calls = _count_scattering_calls(monkeypatch)
    features_module._CACHES.clear()
    again = featurise_split(split, "scattering")
    assert calls == []  # all three read back from disk
    assert torch.equal(again.private.dataset.tensors[0], first.private.dataset.tensors[0])

    files[0].write_bytes(b"torn")
    features_module._CACHES.clear()
    with caplog.at_level(logging.WARNING, logger="fedprune"):
        repaired = featurise_split(split, "scattering")
    assert "unreadable feature cache" in caplog.text and calls  # recomputed, and rewritten
    assert torch.equal(repaired.test.tensors[0], first.test.tensors[0])
    assert sorted(feature_cache_dir().glob("scattering-*.pt")) == files  # rewritten in place
    assert all(torch.load(f, weights_only=True)["features"].ndim == 4 for f in files)


def test_an_unwritable_cache_only_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("FEDPRUNE_CACHE_DIR", str(blocker))
    with caplog.at_level(logging.WARNING, logger="fedprune"):
        out = featurise_split(_digits_split(), "scattering")
    assert out.input_shape == (81, 2, 2)
    assert "cannot cache features" in caplog.text


def test_unknown_feature_map_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"data\.features"):
        RunConfig.from_flat({"data.features": "sift"})
    with pytest.raises(ValueError, match="unknown feature map 'sift'"):
        featurise_split(_digits_split(), "sift")


def test_records_seen_in_another_split_are_not_recomputed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache is keyed by record: a new seed reshuffles public/private, computes nothing."""
    bundle = load_dataset("digits")
    first = featurise_split(
        split_public_private(bundle, public_fraction=0.2, public_kind="in-distribution", seed=0),
        "scattering",
    )
    calls = _count_scattering_calls(monkeypatch)
    features_module._CACHES.clear()  # from disk, as a new process would
    other = split_public_private(bundle, public_fraction=0.2, public_kind="in-distribution", seed=1)
    second = featurise_split(other, "scattering")
    assert calls == []
    assert second.private.dataset.tensors[0].shape[0] == len(other.private)
    # Same test records, same features; standardised with the new public set's statistics.
    assert not torch.equal(second.test.tensors[0], first.test.tensors[0])
    transformed = split_public_private(
        bundle, public_fraction=0.2, public_kind="transformed", seed=0
    )
    featurise_split(transformed, "scattering")
    assert calls == [len(transformed.public)]  # only the shifted public images are new


def test_unused_private_records_are_featurised_too() -> None:
    """An audit's same-distribution non-members must live in the model's input space."""
    from fedprune.data import subsample_private

    split = subsample_private(_digits_split(), records=300, seed=0)
    assert split.unused is not None
    out = featurise_split(split, "scattering")
    assert out.unused is not None and out.unused.tensors[0].shape == (len(split.unused), 81, 2, 2)
    assert torch.equal(out.unused.tensors[1], split.unused.tensors[1])
