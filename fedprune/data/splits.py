"""Public/private split of a dataset: the public part is the only data mask selection may see."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from fedprune.data.datasets import DatasetBundle, _take
from fedprune.registry import Registry

__all__ = [
    "PUBLIC_KINDS",
    "PrivateDataset",
    "PublicDataset",
    "PublicKind",
    "PublicPrivateSplit",
    "available_public_kinds",
    "split_private_validation",
    "split_public_private",
    "split_public_validation",
    "subsample_private",
]

logger = logging.getLogger(__name__)

PublicKind = Literal["in-distribution", "class-subset", "transformed", "other-dataset"]

# The deterministic shift of ``public_kind="transformed"``: horizontal flip, then
# x -> clamp(CONTRAST * x + BRIGHTNESS, 0, 1) (lower contrast, brighter background).
TRANSFORM_CONTRAST = 0.6
TRANSFORM_BRIGHTNESS = 0.2

# ITU-R BT.601 luma weights, to turn RGB public images into single-channel ones.
_LUMA_RGB = (0.299, 0.587, 0.114)


def _check_tensor_dataset(dataset: TensorDataset, what: str) -> None:
    """Raise ``ValueError`` unless ``dataset`` is ``TensorDataset(x, y)`` in the bundle format."""
    if not isinstance(dataset, TensorDataset) or len(dataset.tensors) != 2:
        raise ValueError(f"{what}: expected TensorDataset(x, y), got {dataset!r}")
    x, y = dataset.tensors
    if x.ndim != 4 or x.dtype != torch.float32:
        raise ValueError(
            f"{what}: expected x float32 of shape (N, C, H, W), got {x.dtype} {tuple(x.shape)}"
        )
    if y.ndim != 1 or y.dtype != torch.int64:
        raise ValueError(f"{what}: expected y int64 of shape (N,), got {y.dtype} {tuple(y.shape)}")


@dataclass(frozen=True)
class PublicDataset:
    """Data that carries no privacy cost: the only data mask selection may look at.

    A type of its own (not a subclass of, or interchangeable with, :class:`PrivateDataset`) so
    that a function typed to take public data cannot be handed private records by mistake.

    Attributes
    ----------
    dataset:
        ``TensorDataset(x, y)``: ``x`` float32 ``(N, C, H, W)`` in ``[0, 1]``, ``y`` int64 ``(N,)``.
    kind:
        How the public data relates to the private data (see :func:`split_public_private`).
    description:
        Human-readable provenance (source, size, fraction, seed), for logs and run records.

    Privacy
    -------
    Records here must be disjoint from every private record; :func:`split_public_private`
    guarantees that for the splits it builds.
    """

    dataset: TensorDataset
    kind: PublicKind
    description: str

    def __post_init__(self) -> None:
        _check_tensor_dataset(self.dataset, "PublicDataset")
        if self.kind not in get_args(PublicKind):
            raise ValueError(
                f"unknown public kind {self.kind!r}; expected one of {sorted(get_args(PublicKind))}"
            )

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self) -> torch.Tensor:
        """int64 ``(N,)`` labels."""
        return self.dataset.tensors[1]


@dataclass(frozen=True)
class PrivateDataset:
    """Sensitive records: only ever touched by DP-SGD (record-level DP) on the clients.

    Attributes
    ----------
    dataset:
        ``TensorDataset(x, y)``: ``x`` float32 ``(N, C, H, W)`` in ``[0, 1]``, ``y`` int64 ``(N,)``.
    description:
        Human-readable provenance (source, size, seed), for logs and run records.
    """

    dataset: TensorDataset
    description: str

    def __post_init__(self) -> None:
        _check_tensor_dataset(self.dataset, "PrivateDataset")

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self) -> torch.Tensor:
        """int64 ``(N,)`` labels (e.g. for :func:`fedprune.data.partition_indices`)."""
        return self.dataset.tensors[1]


@dataclass(frozen=True)
class PublicPrivateSplit:
    """The output of :func:`split_public_private`.

    Attributes
    ----------
    public:
        Public data (mask selection, server warm-up).
    private:
        Private training data, disjoint from ``public``; to be partitioned over clients.
    test:
        The bundle's test set, untouched (evaluation only).
    num_classes:
        Number of classes of the private task.
    input_shape:
        ``(C, H, W)`` of private, public and test examples alike.
    unused:
        Private-pool records that :func:`subsample_private` left out (``None`` otherwise):
        drawn from the same records as ``private`` by a data-independent coin and never trained
        on, so an audit can use them as non-members of exactly the members' distribution.
    """

    public: PublicDataset
    private: PrivateDataset
    test: TensorDataset
    num_classes: int
    input_shape: tuple[int, int, int]
    unused: TensorDataset | None = None


def _stratified_holdout(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(len(labels))`` into a held-out part and the rest, stratified by label.

    The held-out part has ``round(fraction * N)`` records; class ``c`` contributes its share
    ``fraction * n_c`` rounded by largest remainder (so the total is exact). Records within a class
    are chosen uniformly at random. Returns two sorted, disjoint int64 index arrays.
    """
    classes, counts = np.unique(labels, return_counts=True)
    n_holdout = round(fraction * len(labels))
    quota = fraction * counts
    take = np.floor(quota).astype(np.int64)
    leftover = n_holdout - int(take.sum())
    # Stable sort: ties go to the smaller class label, so the result depends only on the seed.
    take[np.argsort(-(quota - take), kind="stable")[:leftover]] += 1
    held = [
        rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)
    ]
    held_idx = np.sort(np.concatenate(held)).astype(np.int64)
    rest_idx = np.setdiff1d(np.arange(len(labels), dtype=np.int64), held_idx)
    return held_idx, rest_idx


def _match_shape(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Convert images ``(N, C', H', W')`` to ``(N, C, H, W)``: channels first, then size.

    1 -> C channels by repetition, 3 -> 1 by BT.601 luma; sizes by antialiased bilinear
    interpolation. Values stay in ``[0, 1]``.
    """
    c, h, w = shape
    c_in = x.shape[1]
    if c_in != c:
        if c_in == 1:
            x = x.expand(-1, c, -1, -1)
        elif c_in == 3 and c == 1:
            x = torch.tensordot(x, torch.tensor(_LUMA_RGB), dims=([1], [0])).unsqueeze(1)
        else:
            raise ValueError(f"cannot match {c_in}-channel public images to {c} channels")
    if tuple(x.shape[2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0.0, 1.0).contiguous()


def _shift(x: torch.Tensor) -> torch.Tensor:
    """The fixed ``transformed`` shift: horizontal flip, contrast and brightness change."""
    return (TRANSFORM_CONTRAST * x.flip(-1) + TRANSFORM_BRIGHTNESS).clamp(0.0, 1.0)


@dataclass(frozen=True)
class _Request:
    bundle: DatasetBundle
    fraction: float
    rng: np.random.Generator
    seed: int
    public_classes: Sequence[int] | None
    other: DatasetBundle | None


# A builder returns (public x, public y, private dataset, public description).
_Built = tuple[torch.Tensor, torch.Tensor, TensorDataset, str]
_Builder = Callable[[_Request], _Built]
PUBLIC_KINDS: Registry[_Builder] = Registry("public_kind")
"""Builders of the public/private split by ``public_kind`` (one per :data:`PublicKind`)."""


def _register(kind: PublicKind) -> Callable[[_Builder], _Builder]:
    return PUBLIC_KINDS.decorator(kind)


def _holdout(req: _Request, bundle: DatasetBundle) -> tuple[TensorDataset, TensorDataset]:
    """The stratified held-out fraction of ``bundle.train`` and the rest, as datasets."""
    labels = bundle.train.tensors[1].numpy()
    held_idx, rest_idx = _stratified_holdout(labels, req.fraction, req.rng)
    if len(held_idx) == 0:
        raise ValueError(
            f"public set is empty: public_fraction={req.fraction} of {len(labels)} "
            f"{bundle.name} train records rounds to 0 records"
        )
    if len(rest_idx) == 0:
        raise ValueError(
            f"private set is empty: public_fraction={req.fraction} of {len(labels)} "
            f"{bundle.name} train records leaves none for the private set"
        )
    return _take(bundle.train, held_idx), _take(bundle.train, rest_idx)


def _origin(req: _Request, bundle: DatasetBundle) -> str:
    return f"of {bundle.name} train (fraction {req.fraction}, seed {req.seed})"


@_register("in-distribution")
def _in_distribution(req: _Request) -> _Built:
    public, private = _holdout(req, req.bundle)
    x, y = public.tensors
    return x, y, private, f"{len(y)} stratified held-out records {_origin(req, req.bundle)}"


@_register("class-subset")
def _class_take(req: _Request) -> _Built:
    k = req.bundle.num_classes
    classes = list(range(k // 2)) if req.public_classes is None else list(req.public_classes)
    if not classes:
        raise ValueError("expected at least one public class, got public_classes=[]")
    if len(set(classes)) != len(classes):
        raise ValueError(f"expected distinct public_classes, got {classes}")
    unknown = [c for c in classes if not 0 <= c < k]
    if unknown:
        raise ValueError(f"expected public_classes in [0, {k}), got unknown classes {unknown}")
    public, private = _holdout(req, req.bundle)
    x, y = public.tensors
    keep = torch.isin(y, torch.tensor(classes, dtype=torch.int64))
    if not bool(keep.any()):
        raise ValueError(f"public set is empty: no held-out record has a class in {classes}")
    description = (
        f"{int(keep.sum())} held-out records of classes {sorted(classes)} "
        f"{_origin(req, req.bundle)}"
    )
    return x[keep], y[keep], private, description


@_register("transformed")
def _transformed(req: _Request) -> _Built:
    public, private = _holdout(req, req.bundle)
    x, y = public.tensors
    description = (
        f"{len(y)} stratified held-out records {_origin(req, req.bundle)}, horizontally flipped, "
        f"x -> clamp({TRANSFORM_CONTRAST} x + {TRANSFORM_BRIGHTNESS}, 0, 1)"
    )
    return _shift(x), y, private, description


@_register("other-dataset")
def _other_dataset(req: _Request) -> _Built:
    bundle, other = req.bundle, req.other
    if other is None:
        raise ValueError("public_kind='other-dataset' needs other (a different DatasetBundle)")
    if other is bundle or other.name == bundle.name:
        raise ValueError(
            f"public_kind='other-dataset' needs a dataset different from {bundle.name!r}, "
            f"got other={other.name!r}"
        )
    public, _ = _holdout(req, other)
    x, y = public.tensors
    x = _match_shape(x, bundle.input_shape)
    y = y % bundle.num_classes
    description = (
        f"{len(y)} stratified held-out records {_origin(req, other)}, converted to "
        f"{bundle.input_shape}, labels mod {bundle.num_classes}"
    )
    return x, y, bundle.train, description


def available_public_kinds() -> list[str]:
    """Names accepted as ``public_kind`` by :func:`split_public_private`."""
    return PUBLIC_KINDS.names()


def split_public_private(
    bundle: DatasetBundle,
    *,
    public_fraction: float,
    public_kind: PublicKind,
    seed: int,
    public_classes: Sequence[int] | None = None,
    other: DatasetBundle | None = None,
) -> PublicPrivateSplit:
    """Split ``bundle.train`` into public and private data; keep ``bundle.test`` for evaluation.

    Parameters
    ----------
    bundle:
        The private task's dataset.
    public_fraction:
        In ``(0, 1)``: the share of the train set held out as the public pool (for
        ``other-dataset``: the share of ``other.train``). The held-out pool is stratified by label:
        ``round(public_fraction * N)`` records, each class contributing its proportional share.
    public_kind:
        ``"in-distribution"``: public = the held-out pool; private = the rest of the train set.
        ``"class-subset"``: public = the held-out records whose class is in ``public_classes``
        (a label-shifted public set); private = the rest of the train set as for
        ``in-distribution``. Held-out records of other classes are dropped (used by neither side),
        so for one seed and fraction the private set is identical across the first three kinds.
        ``"transformed"``: public = the held-out pool under a fixed covariate shift (horizontal
        flip, then ``x -> clamp(0.6 x + 0.2, 0, 1)``: lower contrast, brighter); private as above.
        ``"other-dataset"``: public = the held-out pool of ``other.train``, converted to
        ``bundle.input_shape`` (channels repeated or luma-averaged, antialiased bilinear resize) and
        labels mapped to ``y mod bundle.num_classes`` (they keep ``other``'s meaning, not the
        private task's); private = ALL of ``bundle.train``.
    seed:
        Seeds the held-out selection; the same arguments give the same split.
    public_classes:
        Only for ``class-subset``: the classes kept in the public set (default: the first half,
        ``range(num_classes // 2)``).
    other:
        Only for ``other-dataset``: a bundle with a different name, e.g. ``cifar100`` for
        ``cifar10`` or ``fashion-mnist`` for ``mnist``.

    Returns
    -------
    PublicPrivateSplit
        Public and private data in the bundle format, the untouched test set, ``num_classes`` and
        ``input_shape`` of the private task.

    Raises
    ------
    ValueError
        ``public_fraction`` outside ``(0, 1)``; unknown ``public_kind``; ``public_classes`` or
        ``other`` given for a kind that does not use them; unknown or repeated classes; ``other``
        missing or the same dataset; an empty public or private set.

    Privacy
    -------
    No train record of ``bundle`` is in both ``public`` and ``private`` (they come from disjoint
    index sets, or from different datasets). Anything derived from ``public`` alone (e.g. a mask)
    costs no privacy budget; the DP guarantee covers the records of ``private``.
    """
    if not 0.0 < public_fraction < 1.0:
        raise ValueError(f"expected public_fraction in (0, 1), got {public_fraction}")
    build = PUBLIC_KINDS.get(public_kind)
    if public_classes is not None and public_kind != "class-subset":
        raise ValueError(
            f"public_classes is only used with public_kind='class-subset', got {public_kind!r}"
        )
    if other is not None and public_kind != "other-dataset":
        raise ValueError(
            f"other is only used with public_kind='other-dataset', got {public_kind!r}"
        )
    request = _Request(
        bundle=bundle,
        fraction=public_fraction,
        rng=np.random.default_rng(seed),
        seed=seed,
        public_classes=public_classes,
        other=other,
    )
    x_pub, y_pub, private, description = build(request)
    public = PublicDataset(
        TensorDataset(x_pub, y_pub), kind=public_kind, description=f"{public_kind}: {description}"
    )
    private_ds = PrivateDataset(
        private, description=f"{len(private)} private records of {bundle.name} train"
    )
    logger.info("public data: %s; private: %s", public.description, private_ds.description)
    return PublicPrivateSplit(
        public=public,
        private=private_ds,
        test=bundle.test,
        num_classes=bundle.num_classes,
        input_shape=bundle.input_shape,
    )


def split_public_validation(
    public: PublicDataset, *, fraction: float, seed: int
) -> tuple[PublicDataset, PublicDataset]:
    """Split public data into a public training part and a public validation part.

    A stratified ``fraction`` (as :func:`split_public_private` holds out its public pool) becomes
    the validation part. Both parts are public: tuning on them costs no privacy. Raises
    ``TypeError`` for anything but a :class:`PublicDataset` (private records must never reach
    public tuning) and ``ValueError`` when a part would be empty.
    """
    if not isinstance(public, PublicDataset):
        raise TypeError(f"expected a PublicDataset, got {type(public).__name__}")
    _check_fraction(fraction, len(public))
    x, y = public.dataset.tensors
    val_idx, train_idx = _stratified_holdout(
        y.numpy(), fraction, np.random.default_rng([seed, 0x7A1])
    )
    parts = []
    for name, idx in (("train", train_idx), ("validation", val_idx)):
        t = torch.from_numpy(idx)
        parts.append(
            PublicDataset(
                TensorDataset(x[t], y[t]),
                kind=public.kind,
                description=f"{len(idx)} records ({name}) of {public.description}",
            )
        )
    return parts[0], parts[1]


def split_private_validation(
    private: PrivateDataset, *, fraction: float, seed: int
) -> tuple[PrivateDataset, PrivateDataset]:
    """Split private data into a training part and a (private) validation part.

    Each record goes to validation independently with probability ``fraction`` (a fixed coin
    per record position from ``seed``), so a record's side does not depend on the other
    records: DP-SGD on the training part and a DP count on the validation part then compose
    as two mechanisms on the whole private set. Raises ``TypeError`` for anything but a
    :class:`PrivateDataset` and ``ValueError`` when a part would be empty.
    """
    if not isinstance(private, PrivateDataset):
        raise TypeError(f"expected a PrivateDataset, got {type(private).__name__}")
    _check_fraction(fraction, len(private))
    x, y = private.dataset.tensors
    coins = np.random.default_rng([seed, 0x7A2]).random(len(private)) < fraction
    parts = []
    for name, keep in (("train", ~coins), ("validation", coins)):
        t = torch.from_numpy(np.flatnonzero(keep))
        if len(t) == 0:
            raise ValueError(f"private {name} part is empty (fraction {fraction})")
        parts.append(
            PrivateDataset(
                TensorDataset(x[t], y[t]),
                description=f"{len(t)} records ({name}) of {private.description}",
            )
        )
    return parts[0], parts[1]


def subsample_private(split: PublicPrivateSplit, *, records: int, seed: int) -> PublicPrivateSplit:
    """``split`` with its private data cut to a fixed subset of ``records`` records.

    For reduced-scale runs (e.g. an audit on a slow machine). The subset is the first
    ``records`` positions of a permutation drawn from ``seed`` alone: it never looks at the
    records or their labels, so the private data of the run *is* the subset and the
    (epsilon, delta) guarantee covers exactly its records; the dropped records are used by
    nothing but an audit (they become ``unused``: same-distribution non-members). Public and
    test data are unchanged. Deterministic in ``seed``.

    Raises
    ------
    ValueError
        ``records`` outside ``[1, len(split.private)]``.
    """
    n = len(split.private)
    if not 1 <= records <= n:
        raise ValueError(
            f"config data.private-records: expected a count in [1, {n}] (the private records "
            f"of this split), got {records}"
        )
    order = np.random.default_rng([seed, 0x7A3]).permutation(n)
    t = torch.from_numpy(np.sort(order[:records]).astype(np.int64))
    rest = torch.from_numpy(np.sort(order[records:]).astype(np.int64))
    x, y = split.private.dataset.tensors
    private = PrivateDataset(
        TensorDataset(x[t], y[t]),
        description=f"{records} records (fixed subset, seed {seed}) of {split.private.description}",
    )
    logger.info("private data cut to %s", private.description)
    unused = TensorDataset(x[rest], y[rest]) if len(rest) else None
    return dataclasses.replace(split, private=private, unused=unused)


def _check_fraction(fraction: float, n: int) -> None:
    if not 0 < fraction < 1:
        raise ValueError(f"expected a validation fraction in (0, 1), got {fraction}")
    if round(fraction * n) < 1 or round(fraction * n) >= n:
        raise ValueError(f"validation fraction {fraction} of {n} records leaves a part empty")
