"""Property tests of config parsing: every value either parses exactly or fails with a
``ValueError`` naming its key -- never another exception, never a silent change."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from fedprune.config import RunConfig
from fedprune.io import to_json_text

KEYS = sorted(RunConfig().to_flat())

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["inf", "digits", "mlp", "random", "freeze", "select", "iid", "rdp", "gdp"]),
)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(KEYS), value=values)
def test_one_override_parses_or_names_its_key(key: str, value: object) -> None:
    try:
        config = RunConfig.from_flat({key: value})
    except ValueError as err:
        assert key in str(err) or "config " in str(err), (key, value, err)
        return
    parsed = config.to_flat()[key]
    if (value is None or value == "inf") and isinstance(RunConfig().to_flat()[key], float):
        assert parsed == math.inf  # only a key where infinity means something accepts it
    elif isinstance(value, float) and isinstance(parsed, int):
        assert parsed == value  # integral floats become ints
    else:
        assert parsed == value
    assert RunConfig.from_flat(config.to_flat()) == config


@settings(max_examples=100, deadline=None)
@given(key=st.text(min_size=1, max_size=20).filter(lambda k: k not in KEYS), value=values)
def test_unknown_keys_are_refused_by_name(key: str, value: object) -> None:
    try:
        RunConfig.from_flat({key: value})
    except ValueError as err:
        assert "unknown config keys" in str(err)
    else:  # pragma: no cover - would be a bug
        raise AssertionError(f"accepted unknown key {key!r}")


@settings(max_examples=100, deadline=None)
@given(key=st.sampled_from(KEYS), value=values)
def test_a_stored_config_parses_back_to_itself(key: str, value: object) -> None:
    """What a summary stores (strict JSON: inf as null) parses back to the same config."""
    try:
        config = RunConfig.from_flat({key: value})
    except ValueError:
        return
    stored = json.loads(to_json_text(config.to_flat()))
    assert RunConfig.from_flat(stored) == config


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from([k for k in KEYS if isinstance(RunConfig().to_flat()[k], float)]),
    value=st.sampled_from([math.inf, -math.inf, math.nan, "inf", "-inf", "nan", None]),
)
def test_non_finite_floats_only_where_infinity_means_something(key: str, value: object) -> None:
    try:
        config = RunConfig.from_flat({key: value})
    except ValueError as err:
        assert f"config {key}: expected" in str(err)
        return
    assert key == "privacy.max-epsilon" and config.privacy.max_epsilon == math.inf
