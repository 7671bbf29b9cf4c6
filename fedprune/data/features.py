"""Fixed feature maps applied to every record of a public/private split (``data.features``).

``"pixels"`` leaves images as they are. ``"scattering"`` replaces each image by its order-2
wavelet scattering coefficients (:mod:`fedprune.data.scattering`, ``J = 2``, 8 angles: a
``(1, 28, 28)`` image becomes ``(81, 7, 7)``), then standardises each channel with the mean and
standard deviation of the *public* features, as Tramèr & Boneh (ICLR 2021) do with dataset
statistics; DP-SGD then trains a small model (``linear``, ``cnn``) on top.

Privacy: a feature map is a fixed function of one record, and the standardisation reads only
the public set, so the features of a private record depend on that record and public data
alone; they cost no privacy. Private features are cached on the local disk (see
:func:`feature_cache_dir`), beside the raw data they come from, never sent anywhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from fedprune.data.scattering import Scattering2D
from fedprune.data.splits import PrivateDataset, PublicDataset, PublicPrivateSplit
from fedprune.io import write_torch
from fedprune.registry import Registry

__all__ = ["FEATURES", "available_features", "feature_cache_dir", "featurise_split"]

logger = logging.getLogger(__name__)

FeatureMap = Callable[[torch.Tensor], torch.Tensor]
"""``(N, C, H, W)`` float32 images -> ``(N, C', H', W')`` float32 features, record by record."""

FEATURES: Registry[Callable[[tuple[int, int, int]], FeatureMap] | None] = Registry("feature map")
"""Feature-map factories ``input_shape -> map`` by name (``None``: identity, no work)."""
FEATURES.register("pixels", None)

_CHUNK = 1000
"""Records transformed at a time (bounds the transform's working memory)."""
_EPS = 1e-6


@FEATURES.decorator("scattering")
def _scattering(input_shape: tuple[int, int, int]) -> FeatureMap:
    return Scattering2D(input_shape[1:], scales=2, angles=8)


def available_features() -> list[str]:
    """Names accepted as ``data.features``."""
    return FEATURES.names()


def feature_cache_dir() -> Path:
    """Where computed features are cached: ``$FEDPRUNE_CACHE_DIR/features``, else
    ``$XDG_CACHE_HOME/fedprune/features``, else ``~/.cache/fedprune/features``. Delete it freely."""
    root = os.environ.get("FEDPRUNE_CACHE_DIR")
    if root:
        return Path(root) / "features"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "fedprune" / "features"


def featurise_split(split: PublicPrivateSplit, name: str) -> PublicPrivateSplit:
    """``split`` with every public, private and test record mapped through feature map ``name``.

    Records keep their order and labels, so a partition or validation split taken afterwards
    selects the same records it would have on pixels. ``"pixels"`` returns ``split`` itself.

    Raises
    ------
    ValueError
        Unknown ``name`` (the message lists the known ones) or images the map cannot take (e.g.
        scattering needs sides that are multiples of 4).
    """
    factory = FEATURES.get(name)
    if factory is None:
        return split
    transform = factory(split.input_shape)
    public_x = _features(split.public.dataset.tensors[0], name, transform)
    mean = public_x.mean(dim=(0, 2, 3), keepdim=True)
    std = public_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(_EPS)

    def standardised(x: torch.Tensor) -> torch.Tensor:
        return (x - mean).div_(std)

    def mapped(dataset: TensorDataset) -> TensorDataset:
        x, y = dataset.tensors
        return TensorDataset(standardised(_features(x, name, transform)), y)

    public = PublicDataset(
        TensorDataset(standardised(public_x), split.public.labels),
        kind=split.public.kind,
        description=f"{split.public.description}; {name} features",
    )
    private = PrivateDataset(
        mapped(split.private.dataset), description=f"{split.private.description}; {name} features"
    )
    c, h, w = public.dataset.tensors[0].shape[1:]
    logger.info("%s features: %s -> %s", name, split.input_shape, (c, h, w))
    return dataclasses.replace(
        split,
        public=public,
        private=private,
        test=mapped(split.test),
        unused=None if split.unused is None else mapped(split.unused),
        input_shape=(int(c), int(h), int(w)),
    )


class _RecordCache:
    """Features of one map by record content: ``blake2b(record bytes)`` -> feature row.

    Rows live in this process and in shard files ``<prefix>-<digest>.pt`` (``{"keys": uint8
    (N, 16), "features": (N, C', H', W')}``) under :func:`feature_cache_dir`. Keyed by record,
    not by tensor, a record computed once is found again in any split, seed or public kind.
    """

    def __init__(self, directory: Path, prefix: str) -> None:
        self.directory, self.prefix = directory, prefix
        self.rows: dict[bytes, torch.Tensor] = {}
        for path in sorted(directory.glob(f"{prefix}-*.pt")):
            try:
                shard = torch.load(path, weights_only=True)
                keys, features = shard["keys"], shard["features"]
                if keys.shape != (len(features), _KEY_BYTES):
                    raise ValueError(f"keys {tuple(keys.shape)} for {len(features)} rows")
            except Exception as err:  # a torn or foreign file: its rows are recomputed
                logger.warning("ignoring unreadable feature cache %s (%s)", path, err)
                continue
            self.rows.update(zip((bytes(k) for k in keys.numpy()), features, strict=True))

    def features(self, x: torch.Tensor, name: str, transform: FeatureMap) -> torch.Tensor:
        keys = _record_keys(x)
        unique: dict[bytes, int] = {}  # each record not yet cached -> its first row in x
        for i, k in enumerate(keys):
            if k not in self.rows:
                unique.setdefault(k, i)
        if unique:
            rows = torch.tensor(list(unique.values()), dtype=torch.int64)
            computed = _compute(x[rows], name, transform)
            self.rows.update(zip(unique.keys(), computed, strict=True))
            self._write(list(unique.keys()), computed)
        return torch.stack([self.rows[k] for k in keys]) if keys else _compute(x, name, transform)

    def _write(self, keys: list[bytes], features: torch.Tensor) -> None:
        digest = hashlib.sha256(b"".join(keys)).hexdigest()[:32]
        path = self.directory / f"{self.prefix}-{digest}.pt"
        key_tensor = torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8)
        shard = {"keys": key_tensor.reshape(len(keys), _KEY_BYTES), "features": features}
        try:
            write_torch(path, shard)
        except OSError as err:
            logger.warning("cannot cache features in %s (%s); they will be recomputed", path, err)


_KEY_BYTES = 16
_CACHES: dict[tuple[Path, str], _RecordCache] = {}
"""One record cache per (cache directory, map and input shape) in this process."""


def _features(x: torch.Tensor, name: str, transform: FeatureMap) -> torch.Tensor:
    """``transform(x)``, row by row from this process's memory or the disk cache where seen."""
    directory = feature_cache_dir()
    prefix = f"{name}-{'x'.join(str(d) for d in x.shape[1:])}"
    if (directory, prefix) not in _CACHES:
        _CACHES[(directory, prefix)] = _RecordCache(directory, prefix)
    return _CACHES[(directory, prefix)].features(x, name, transform)


def _record_keys(x: torch.Tensor) -> list[bytes]:
    rows = x.detach().contiguous().numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=_KEY_BYTES).digest() for row in rows]


def _compute(x: torch.Tensor, name: str, transform: FeatureMap) -> torch.Tensor:
    with torch.no_grad():
        chunks = [
            transform(x[i : i + _CHUNK])
            for i in tqdm(
                range(0, len(x), _CHUNK),
                desc=f"{name} features",
                disable=len(x) <= 10 * _CHUNK,
                leave=False,
            )
        ]
    return torch.cat(chunks) if chunks else transform(x[:0])
