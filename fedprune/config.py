"""Typed, frozen configuration for every fedprune run, parsed once from flat kebab-case keys.

Flat keys are ``"<section>.<field-name>"`` (e.g. ``"mask.density"``, ``"privacy.target-epsilon"``)
plus the top-level ``"seed"``, ``"out-dir"`` and ``"model"``. The dataclass defaults below are
the one default table of every command (``fedprune train``, ``fedprune run``, ``flwr run .``):
``[tool.flwr.app.config]`` in ``pyproject.toml`` repeats them for Flower's launcher and a test
holds the two equal. Unknown keys, unknown registry names (model, dataset, mask strategy) and
out-of-range values fail at parse time with a message naming the key.

Privacy: this is the *run's* configuration, which in a federated run the server (or whoever
submits the run) chooses. Its ``privacy`` section is a request; each client checks it against
its own :class:`fedprune.privacy.policy` and may only be made stricter by it (see
:mod:`fedprune.federated.client_round`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args, get_origin, get_type_hints

from fedprune.data import available_datasets, available_features
from fedprune.masks import available_mask_strategies
from fedprune.models import available_models

__all__ = [
    "DataConfig",
    "FederatedConfig",
    "MaskConfig",
    "OptimConfig",
    "PrivacyConfig",
    "RunConfig",
    "SecAggConfig",
    "WarmupConfig",
]

MaskMode = Literal["freeze", "select"]


def _check(ok: bool, key: str, expected: str, value: object) -> None:
    if not ok:
        raise ValueError(f"config {key}: expected {expected}, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Dataset, public/private split and federated partition (see :mod:`fedprune.data`)."""

    dataset: str = "digits"
    data_dir: str = "data"
    download: bool = False
    public_fraction: float = 0.1
    public_kind: Literal["in-distribution", "class-subset", "transformed", "other-dataset"] = (
        "in-distribution"
    )
    public_classes: str = ""
    """Comma-separated class indices for ``class-subset`` (empty: the first half)."""
    other_dataset: str = ""
    """Public dataset for ``other-dataset`` (e.g. ``cifar100`` for ``cifar10``)."""
    features: str = "pixels"
    """Fixed feature map applied to every record (:mod:`fedprune.data.features`): ``pixels``
    or ``scattering`` (ScatterNet coefficients, standardised with public statistics)."""
    partition: Literal["iid", "dirichlet", "shards"] = "iid"
    dirichlet_alpha: float = 0.5
    shards_per_client: int = 2
    private_records: int = 0
    """A positive value keeps only a fixed, seed-chosen subset of this many private records
    (reduced-scale runs; :func:`fedprune.data.subsample_private`); 0 keeps them all."""

    def __post_init__(self) -> None:
        _check(
            self.private_records >= 0,
            "data.private-records",
            "a count >= 0 (0: all private records)",
            self.private_records,
        )
        _check(
            0 < self.public_fraction < 1,
            "data.public-fraction",
            "a value in (0, 1)",
            self.public_fraction,
        )
        _check(self.dirichlet_alpha > 0, "data.dirichlet-alpha", "> 0", self.dirichlet_alpha)
        _check(
            self.shards_per_client >= 1, "data.shards-per-client", ">= 1", self.shards_per_client
        )
        _check(
            self.public_kind != "other-dataset" or bool(self.other_dataset),
            "data.other-dataset",
            "a dataset name when public-kind is other-dataset",
            self.other_dataset,
        )
        for key, name in (
            ("data.dataset", self.dataset),
            ("data.other-dataset", self.other_dataset),
        ):
            _check(
                name in available_datasets() or (key == "data.other-dataset" and not name),
                key,
                f"one of {available_datasets()}",
                name,
            )
        _check(
            self.features in available_features(),
            "data.features",
            f"one of {available_features()}",
            self.features,
        )

    @property
    def public_class_list(self) -> list[int] | None:
        """``public_classes`` parsed to ints (``None`` when empty)."""
        if not self.public_classes.strip():
            return None
        try:
            return [int(c) for c in self.public_classes.split(",")]
        except ValueError:
            raise ValueError(
                f"config data.public-classes: expected comma-separated ints, "
                f"got {self.public_classes!r}"
            ) from None


@dataclass(frozen=True)
class MaskConfig:
    """Which coordinates DP-SGD trains (see :func:`fedprune.masks.select_mask`)."""

    mode: MaskMode = "freeze"
    strategy: str = "magnitude"
    density: float = 0.1
    scope: Literal["global", "layer"] = "global"
    bias_policy: Literal["masked", "always", "never"] = "masked"
    select_every: int = 1
    """``select`` mode: re-pick every this many epochs of local training -- centrally between
    rounds of this many epochs, federated before every ``ceil(select_every / local_epochs)``-th
    round (see :func:`fedprune.training.recipe.mask_due`)."""

    def __post_init__(self) -> None:
        _check(
            self.strategy in available_mask_strategies(),
            "mask.strategy",
            f"one of {available_mask_strategies()}",
            self.strategy,
        )
        _check(0 < self.density <= 1, "mask.density", "a value in (0, 1]", self.density)
        _check(self.select_every >= 1, "mask.select-every", ">= 1", self.select_every)


@dataclass(frozen=True)
class PrivacyConfig:
    """The DP-SGD mechanism a run asks for (see :mod:`fedprune.privacy`).

    Exactly one of ``target_epsilon`` (noise calibrated for the planned steps) and
    ``noise_multiplier`` is used: a positive ``noise_multiplier`` wins. ``enabled=False`` asks
    for training without DP (a non-private baseline: no epsilon is claimed), which a federated
    client refuses unless its own policy allows it.

    Deliberately absent: where ledgers live and whether noise is reproducible. Those belong to
    each data holder (a client's node policy, or the ``fedprune train`` command line), never
    to a config a server could send.
    """

    enabled: bool = True
    target_epsilon: float = 4.0
    noise_multiplier: float = 0.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: Literal["rdp", "prv"] = "rdp"
    max_epsilon: float = math.inf
    """Budget per data holder asked for by the run; a client enforces the tighter of this and
    its own policy's ``max-epsilon``. Training past it is refused before any step."""

    def __post_init__(self) -> None:
        _check(self.target_epsilon > 0, "privacy.target-epsilon", "> 0", self.target_epsilon)
        _check(
            self.noise_multiplier >= 0, "privacy.noise-multiplier", ">= 0", self.noise_multiplier
        )
        _check(0 < self.delta < 1, "privacy.delta", "a value in (0, 1)", self.delta)
        _check(self.max_grad_norm > 0, "privacy.max-grad-norm", "> 0", self.max_grad_norm)
        _check(self.max_epsilon > 0, "privacy.max-epsilon", "> 0", self.max_epsilon)


@dataclass(frozen=True)
class OptimConfig:
    """(DP-)SGD on the private data."""

    epochs: int = 20
    """Centralised runs: passes over the private data."""
    batch_size: int = 32
    """Expected (Poisson) batch size: the sample rate is ``batch_size / n``."""
    lr: float = 0.5
    momentum: float = 0.0

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "optim.epochs", ">= 1", self.epochs)
        _check(self.batch_size >= 1, "optim.batch-size", ">= 1", self.batch_size)
        _check(self.lr > 0, "optim.lr", "> 0", self.lr)
        _check(0 <= self.momentum < 1, "optim.momentum", "a value in [0, 1)", self.momentum)


@dataclass(frozen=True)
class WarmupConfig:
    """Non-private warm start on the *public* data only (costs no privacy)."""

    epochs: int = 20
    lr: float = 0.05

    def __post_init__(self) -> None:
        _check(self.epochs >= 0, "warmup.epochs", ">= 0", self.epochs)
        _check(self.lr > 0, "warmup.lr", "> 0", self.lr)


@dataclass(frozen=True)
class FederatedConfig:
    """Rounds and clients of a federated run."""

    num_rounds: int = 10
    num_clients: int = 5
    local_epochs: int = 2
    """Passes of local DP-SGD over a client's partition per round."""
    server_lr: float = 1.0
    """The server adds ``server_lr`` times the averaged client update to the global model."""
    min_clients: int = 2
    resume: bool = False
    """Continue from ``<out-dir>/checkpoint.pt`` (model, mask, completed rounds) if it exists."""

    def __post_init__(self) -> None:
        _check(self.num_rounds >= 1, "federated.num-rounds", ">= 1", self.num_rounds)
        _check(self.num_clients >= 1, "federated.num-clients", ">= 1", self.num_clients)
        _check(self.local_epochs >= 1, "federated.local-epochs", ">= 1", self.local_epochs)
        _check(self.server_lr > 0, "federated.server-lr", "> 0", self.server_lr)
        _check(self.min_clients >= 1, "federated.min-clients", ">= 1", self.min_clients)


@dataclass(frozen=True)
class SecAggConfig:
    """Flower SecAgg+ settings (see the README's secure-aggregation section).

    Each client's update vector is scaled by ``num_examples / max_weight``, clipped to
    ``[-clipping_range, clipping_range]`` and quantised to ``quantization_range`` levels, so the
    effective clip on an update coordinate is ``clipping_range * max_weight / num_examples``
    and the error of the average is at most about
    ``K * 2 * clipping_range / quantization_range * max_weight / sum(num_examples)``.
    """

    enabled: bool = True
    clipping_range: float = 8.0
    quantization_range: int = 2**22
    max_weight: float = 1000.0
    share_fraction: float = 1.0
    """Shares per secret, as a fraction of the sampled clients."""
    threshold_fraction: float = 0.67
    """Shares needed to reconstruct, as a fraction of the sampled clients."""

    def __post_init__(self) -> None:
        _check(self.clipping_range > 0, "secagg.clipping-range", "> 0", self.clipping_range)
        _check(
            2 <= self.quantization_range <= 2**24,
            "secagg.quantization-range",
            "in [2, 2**24]",
            self.quantization_range,
        )
        _check(self.max_weight > 0, "secagg.max-weight", "> 0", self.max_weight)
        _check(
            0 < self.share_fraction <= 1, "secagg.share-fraction", "in (0, 1]", self.share_fraction
        )
        _check(
            0 < self.threshold_fraction <= self.share_fraction,
            "secagg.threshold-fraction",
            "in (0, share-fraction]",
            self.threshold_fraction,
        )


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; :meth:`from_flat` / :meth:`to_flat` convert to flat keys."""

    seed: int = 0
    out_dir: str = "runs/latest"
    model: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)

    def __post_init__(self) -> None:
        _check(
            self.model == "auto" or self.model in available_models(),
            "model",
            f"one of {['auto', *available_models()]}",
            self.model,
        )

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> RunConfig:
        """Parse flat kebab-case keys over the defaults; unknown keys raise ``ValueError``."""
        known = cls().to_flat()
        unknown = sorted(set(flat) - set(known))
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        top: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {}
        hints = _type_hints(cls)
        for key, value in flat.items():
            if "." in key:
                section, name = key.split(".", 1)
                section_cls = hints[section]
                attr = name.replace("-", "_")
                sections.setdefault(section, {})[attr] = _coerce(
                    key, value, _type_hints(section_cls)[attr]
                )
            else:
                attr = key.replace("-", "_")
                top[attr] = _coerce(key, value, hints[attr])
        for section, values in sections.items():
            top[section] = hints[section](**values)
        return cls(**top)

    def to_flat(self) -> dict[str, Any]:
        """Flat kebab-case keys of every setting (JSON-ready; ``inf`` stays a float)."""
        flat: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                for sf in fields(value):
                    flat[f"{f.name}.{sf.name.replace('_', '-')}"] = getattr(value, sf.name)
            else:
                flat[f.name.replace("_", "-")] = value
        return flat

    def replace(self, **flat: Any) -> RunConfig:
        """A new config with flat-key overrides applied (``replace(**{"mask.density": 0.05})``)."""
        return RunConfig.from_flat({**self.to_flat(), **flat})


_MAY_BE_INFINITE = frozenset({"privacy.max-epsilon"})
"""Float keys for which infinity means something (no budget); every other float is finite."""


_TYPE_HINTS: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    """``get_type_hints(cls)``, once per class: resolving the string annotations costs ~0.1 ms
    a call, and :meth:`RunConfig.from_flat` needs them for every key (~5 ms a config, paid by
    every federated client on every message before this cache)."""
    if cls not in _TYPE_HINTS:
        _TYPE_HINTS[cls] = get_type_hints(cls)
    return _TYPE_HINTS[cls]


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert ``value`` to the field type ``hint``; raise a ``ValueError`` naming ``key``."""
    if get_origin(hint) is Literal:
        allowed = get_args(hint)
        _check(value in allowed, key, f"one of {list(allowed)}", value)
        return value
    if hint is bool:
        _check(isinstance(value, bool), key, "true or false", value)
        return value
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        ok = ok or (isinstance(value, float) and value.is_integer())
        _check(ok, key, "an integer", value)
        return int(value)
    if hint is float:
        unbounded = key in _MAY_BE_INFINITE
        # JSON has no infinity: a stored config holds ``null`` for it (fedprune.io's policy)
        if unbounded and (
            value is None
            or (isinstance(value, str) and value.strip().lower() in {"inf", "infinity"})
        ):
            return math.inf
        _check(
            isinstance(value, int | float) and not isinstance(value, bool), key, "a number", value
        )
        number = float(value)
        _check(
            math.isfinite(number) or (unbounded and number == math.inf),
            key,
            "a finite number" + (" or inf" if unbounded else ""),
            value,
        )
        return number
    if hint is str:
        _check(isinstance(value, str), key, "a string", value)
        return value
    raise TypeError(f"config {key}: unsupported field type {hint!r}")  # pragma: no cover
