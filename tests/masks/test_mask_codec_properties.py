"""Property tests of the mask byte codec against damaged or hostile bytes.

The round trip itself is ``test_parameter_mask.py::test_bytes_round_trip_exact``. Here: every
corruption CRC32 is guaranteed to catch (any burst of up to 32 bits, any truncation or
extension) raises :class:`MaskError`; bytes that carry a *valid* checksum -- a hostile sender
can always recompute it -- either decode to exactly what they encode or raise ``MaskError``,
never another exception; and a mask for other shapes is refused when shapes are expected.
"""

from __future__ import annotations

import contextlib
import json
import struct
import zlib

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedprune.masks import MaskError, ParameterMask

PREFIX = struct.Struct("<4sBI")  # magic, version, CRC32 of everything after it

shapes = st.lists(st.lists(st.integers(0, 7), min_size=0, max_size=3), min_size=1, max_size=4)


@st.composite
def masks(draw: st.DrawFn) -> ParameterMask:
    dims = [*draw(shapes), [draw(st.integers(1, 20))]]  # at least one coordinate
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    density = draw(st.floats(0.0, 1.0))
    return ParameterMask(
        {f"l{i}.weight": torch.rand(d, generator=gen) < density for i, d in enumerate(dims)}
    )


@settings(max_examples=150, deadline=None)
@given(mask=masks(), data=st.data())
def test_any_burst_of_up_to_32_bits_is_detected(mask: ParameterMask, data: st.DataObject) -> None:
    encoded = bytearray(mask.to_bytes())
    start = data.draw(st.integers(0, len(encoded) - 1), label="start")
    width = data.draw(st.integers(1, min(4, len(encoded) - start)), label="width")
    # a non-zero error pattern spanning at most 32 bits (CRC32 detects all such bursts)
    pattern = data.draw(st.integers(1, 2 ** (8 * width) - 1), label="pattern")
    for i, byte in enumerate(pattern.to_bytes(width, "big")):
        encoded[start + i] ^= byte
    try:
        ParameterMask.from_bytes(bytes(encoded))
    except MaskError as err:
        assert str(err)  # a message naming the problem
    else:
        raise AssertionError(f"corruption at byte {start} ({width} bytes) decoded silently")


@settings(max_examples=100, deadline=None)
@given(mask=masks(), data=st.data())
def test_truncation_and_extension_are_detected(mask: ParameterMask, data: st.DataObject) -> None:
    encoded = mask.to_bytes()
    keep = data.draw(st.integers(0, len(encoded) - 1), label="keep")
    extra = data.draw(st.binary(min_size=1, max_size=16), label="extra")
    for damaged in (encoded[:keep], encoded + extra):
        try:
            ParameterMask.from_bytes(damaged)
        except MaskError:
            continue
        raise AssertionError(f"damaged mask of {len(damaged)} bytes decoded silently")


def _reseal(body: bytes) -> bytes:
    """``body`` under a valid header and checksum (what a hostile sender can produce)."""
    return PREFIX.pack(b"FPMK", 1, zlib.crc32(body)) + body


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    """Bodies near the real format: a metadata length, JSON-ish metadata and bitmaps."""
    entry = st.lists(
        st.one_of(
            st.text(max_size=6),
            st.lists(st.integers(-2, 9), max_size=3),
            st.integers(-3, 40),
            st.none(),
            st.floats(allow_nan=True),
        ),
        max_size=4,
    )
    meta = draw(
        st.one_of(
            st.fixed_dictionaries({"tensors": st.lists(entry, max_size=3)}),
            st.dictionaries(st.text(max_size=8), st.integers(), max_size=2),
            st.lists(st.integers(), max_size=3),
        )
    )
    meta_bytes = json.dumps(meta).encode()
    if draw(st.booleans()):
        meta_bytes = draw(st.binary(max_size=40))
    declared = draw(st.one_of(st.just(len(meta_bytes)), st.integers(0, 2**32 - 1)))
    bitmaps = draw(st.binary(max_size=12))
    return struct.pack("<I", declared) + meta_bytes + bitmaps


@settings(max_examples=300, deadline=None)
@given(body=hostile_bodies())
def test_validly_sealed_garbage_decodes_exactly_or_raises_mask_error(body: bytes) -> None:
    data = _reseal(body)
    try:
        mask = ParameterMask.from_bytes(data)
    except MaskError:
        return
    # It decoded: then it is a real mask whose bits are exactly the bytes' bitmaps.
    encoded = mask.to_bytes()
    assert ParameterMask.from_bytes(encoded) == mask
    nbytes = sum((n + 7) // 8 for n in mask.total_counts.values())
    assert encoded[len(encoded) - nbytes :] == data[len(data) - nbytes :]


@settings(max_examples=100, deadline=None)
@given(prefix=st.sampled_from([b"", b"FPMK", b"FPMK\x01"]), tail=st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_mask_error(prefix: bytes, tail: bytes) -> None:
    with contextlib.suppress(MaskError):
        ParameterMask.from_bytes(prefix + tail)
        # decoding needs a matching CRC32 of random bytes: not reachable by chance
        raise AssertionError(f"random bytes {prefix + tail!r} decoded as a mask")


@settings(max_examples=100, deadline=None)
@given(mask=masks(), other=masks())
def test_a_mask_for_other_shapes_is_refused(mask: ParameterMask, other: ParameterMask) -> None:
    try:
        loaded = ParameterMask.from_bytes(mask.to_bytes(), expected_shapes=other.shapes)
    except MaskError:
        assert mask.shapes != other.shapes
    else:
        assert mask.shapes == other.shapes and loaded == mask
