"""A ``fedprune compare`` preset: the grid, the base config and the tuning, from one TOML file.

Layout (every table optional except ``[grid]``; see ``experiments/presets/``)::

    [compare]
    seeds = [0, 1, 2]
    [base]                       # flat RunConfig keys (or [base.mask] sub-tables)
    "data.dataset" = "fashion-mnist"
    [settings.federated-iid]     # extra flat keys for one setting only
    "federated.num-clients" = 10
    [grid]                       # axes; aliases or any flat RunConfig key
    setting = ["centralised", "federated-iid", "federated-dirichlet"]
    strategy = ["none", "random", "magnitude", "gradient", "snip"]
    mode = ["freeze", "select"]
    density = [0.1, 0.01]
    epsilon = [1.0, 3.0, 8.0]
    public = ["in-distribution", "class-subset", "transformed"]
    tuning = ["public"]          # none | public | private
    [tuning]
    "optim.lr" = [0.5, 1.0, 2.0] # candidates
    validation-fraction = 0.2

``--set KEY=VALUE`` overrides on top: ``grid.NAME=v1,v2`` an axis, ``seeds=0,1``,
``tuning.KEY=v1,v2`` candidates, ``tuning.validation-fraction=0.2`` (and the other tuning
options), anything else a base config key.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fedprune.config import RunConfig

__all__ = [
    "AXIS_ALIASES",
    "SETTINGS",
    "TUNING_PROTOCOLS",
    "Preset",
    "TuningSpec",
    "apply_sets",
    "load_preset",
    "parse_value",
]

AXIS_ALIASES = {
    "strategy": "mask.strategy",
    "mode": "mask.mode",
    "density": "mask.density",
    "epsilon": "privacy.target-epsilon",
    "public": "data.public-kind",
}
"""Short grid names for the config keys every comparison varies."""

SETTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "centralised": ("centralised", {}),
    "federated-iid": ("federated", {"data.partition": "iid"}),
    "federated-dirichlet": ("federated", {"data.partition": "dirichlet"}),
}
"""Setting name -> (cell runner name, config overrides the setting implies)."""

TUNING_PROTOCOLS = ("none", "public", "private")
"""``none``: the config's own values; ``public``: chosen on public data only (free);
``private``: accounted random search on private data (Papernot & Steinke), in the total."""

PRIVATE_TUNABLE = frozenset({"optim.lr", "optim.momentum", "privacy.max-grad-norm"})
"""Keys a private search may vary: they leave every trial's privacy mechanism unchanged (the
noise multiplier is relative to the clipping norm), so all trials share one RDP curve."""


@dataclass(frozen=True)
class TuningSpec:
    """Candidates and protocol options.

    Attributes
    ----------
    candidates:
        Flat key -> values; every combination is one candidate.
    validation_fraction:
        Share of the public (public tuning) or private (private tuning) data held out to score.
    eta, gamma:
        Private tuning: the number of trials is ``K ~ D(eta, gamma)``
        (:class:`fedprune.privacy.tuning.TruncatedNegativeBinomial`); default geometric with
        ``E[K] = 1/gamma``.
    score_noise:
        Private tuning: standard deviation of the Gaussian noise on each trial's count of
        correct validation predictions.
    """

    candidates: dict[str, list[Any]] = field(default_factory=dict)
    validation_fraction: float = 0.2
    eta: float = 1.0
    gamma: float = 0.25
    score_noise: float = 10.0

    def combinations(self) -> list[dict[str, Any]]:
        """Every candidate (one empty candidate when nothing is tuned)."""
        return _product(self.candidates)

    def key(self, protocol: str) -> dict[str, Any]:
        """What a cell's identity must include about its tuning under ``protocol``."""
        if protocol == "none":
            return {}
        key: dict[str, Any] = {
            "candidates": self.candidates,
            "validation-fraction": self.validation_fraction,
        }
        if protocol == "private":
            key.update(eta=self.eta, gamma=self.gamma, score_noise=self.score_noise)
        return key


_TUNING_OPTIONS = {
    "validation-fraction": "validation_fraction",
    "eta": "eta",
    "gamma": "gamma",
    "score-noise": "score_noise",
}


@dataclass(frozen=True)
class Preset:
    """A parsed preset: base overrides, per-setting overrides, grid axes, seeds, tuning."""

    name: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    seeds: list[int]
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    tuning: TuningSpec = field(default_factory=TuningSpec)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("preset: expected at least one seed")
        for axis, values in self.grid.items():
            if not values:
                raise ValueError(f"preset grid {axis!r}: expected at least one value")
        for name in [*self.settings, *self.grid.get("setting", [])]:
            if name not in SETTINGS:
                raise ValueError(f"unknown setting {name!r}; expected one of {list(SETTINGS)}")
        for protocol in self.grid.get("tuning", []):
            if protocol not in TUNING_PROTOCOLS:
                raise ValueError(
                    f"unknown tuning protocol {protocol!r}; expected one of {TUNING_PROTOCOLS}"
                )
        if "private" in self.grid.get("tuning", []):
            bad = sorted(set(self.tuning.candidates) - PRIVATE_TUNABLE)
            if bad:
                raise ValueError(
                    f"private tuning may only vary {sorted(PRIVATE_TUNABLE)} (they keep every "
                    f"trial's privacy mechanism equal), got {bad}"
                )
        tuned = set(self.tuning.candidates) & {self.config_key(a) for a in self.grid}
        if tuned:
            raise ValueError(f"keys {sorted(tuned)} are both grid axes and tuned")
        if set(self.grid.get("tuning", [])) - {"none"} and not self.tuning.candidates:
            raise ValueError("a tuning protocol is in the grid but [tuning] has no candidates")
        # Fail at start on bad keys or values: every value on its own over the base.
        base = RunConfig().replace(**self.base)
        for overrides in self.settings.values():
            base.replace(**overrides)
        for axis, values in self.grid.items():
            if axis not in {"setting", "tuning"}:
                for value in values:
                    base.replace(**{self.config_key(axis): value})
        for key, values in self.tuning.candidates.items():
            for value in values:
                base.replace(**{key: value})

    @staticmethod
    def config_key(axis: str) -> str:
        """The flat config key of grid ``axis`` (an alias or the key itself)."""
        return AXIS_ALIASES.get(axis, axis)

    def points(self) -> list[dict[str, Any]]:
        """Every grid combination (axes in preset order), without seeds."""
        return _product(self.grid)


def _product(table: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(table, combo, strict=True)) for combo in itertools.product(*table.values())]


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def load_preset(path: Path) -> Preset:
    """Parse the preset at ``path`` (named after its stem).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (naming the file) for
    invalid TOML, unknown tables, keys or values.
    """
    if not path.is_file():
        raise FileNotFoundError(f"preset {str(path)!r} not found")
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"preset {path}: invalid TOML ({err})") from None
    unknown = sorted(set(raw) - {"compare", "base", "settings", "grid", "tuning"})
    if unknown:
        raise ValueError(f"preset {path}: unknown tables {unknown}")
    try:
        return _parse(path.stem, raw)
    except ValueError as err:
        raise ValueError(f"preset {path}: {err}") from None


def _parse(name: str, raw: Mapping[str, Any]) -> Preset:
    compare = dict(raw.get("compare", {}))
    seeds = compare.pop("seeds", [0])
    compare.pop("description", None)
    if compare:
        raise ValueError(f"unknown [compare] keys {sorted(compare)}")
    grid = {axis: _as_list(v) for axis, v in raw.get("grid", {}).items()}
    tuning_raw = dict(raw.get("tuning", {}))
    options = {
        _TUNING_OPTIONS[k]: tuning_raw.pop(k) for k in list(tuning_raw) if k in _TUNING_OPTIONS
    }
    candidates = {k: _as_list(v) for k, v in _flatten(tuning_raw).items()}
    return Preset(
        name=name,
        base=_flatten(raw.get("base", {})),
        grid=grid,
        seeds=[int(s) for s in _as_list(seeds)],
        settings={k: _flatten(v) for k, v in raw.get("settings", {}).items()},
        tuning=TuningSpec(candidates=candidates, **options),
    )


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def parse_value(text: str, like: Any = None) -> Any:
    """``text`` parsed as a TOML value (``0.1``, ``true``, ``"x"``); bare words stay strings.

    ``like`` (a default) makes an integer literal a float when the key is a float key.
    """
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    if isinstance(like, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return value


def apply_sets(preset: Preset, assignments: Sequence[str]) -> Preset:
    """``preset`` with ``--set KEY=VALUE`` overrides applied (see the module docstring).

    Raises ``ValueError`` for a missing ``=`` or an unknown key.
    """
    base, grid, seeds = dict(preset.base), dict(preset.grid), list(preset.seeds)
    candidates = dict(preset.tuning.candidates)
    options: dict[str, Any] = {}
    defaults = RunConfig().to_flat()
    for text in assignments:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set: expected KEY=VALUE, got {text!r}")
        values = [v.strip() for v in value.split(",")]
        if key == "seeds":
            try:
                seeds = [int(v) for v in values]
            except ValueError:
                raise ValueError(
                    f"--set seeds: expected comma-separated ints, got {value!r}"
                ) from None
        elif key.startswith("grid."):
            axis = key.removeprefix("grid.")
            like = defaults.get(Preset.config_key(axis))
            grid[axis] = [parse_value(v, like) for v in values]
        elif key.startswith("tuning."):
            name = key.removeprefix("tuning.")
            if name in _TUNING_OPTIONS:
                options[_TUNING_OPTIONS[name]] = parse_value(value, 0.0)
            else:
                candidates[name] = [parse_value(v, defaults.get(name)) for v in values]
        else:
            if key not in defaults:
                raise ValueError(f"--set: unknown config key {key!r}")
            base[key] = parse_value(value, defaults[key])
    tuning = replace(preset.tuning, candidates=candidates, **options)
    return replace(preset, base=base, grid=grid, seeds=seeds, tuning=tuning)
