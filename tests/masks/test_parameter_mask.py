"""Tests for ParameterMask: value semantics, model checks, gather/scatter and the byte codec."""

from __future__ import annotations

import json
import pickle
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedprune.masks import MaskError, ParameterMask

# The documented layout: magic, version (uint8), CRC32 of the body; body = metadata length
# (uint32), JSON metadata, bitmaps.
PREFIX = struct.Struct("<4sBI")


def sample_mask() -> ParameterMask:
    gen = torch.Generator().manual_seed(0)
    return ParameterMask(
        {
            "a.weight": torch.rand(3, 5, generator=gen) < 0.4,
            "a.bias": torch.tensor([True, False, True]),
            "b.weight": torch.rand(2, 2, 3, generator=gen) < 0.5,
        }
    )


def reseal(meta: object, bitmaps: bytes) -> bytes:
    """Encode arbitrary metadata and bitmaps with a valid header and checksum."""
    meta_bytes = json.dumps(meta).encode()
    body = struct.pack("<I", len(meta_bytes)) + meta_bytes + bitmaps
    return PREFIX.pack(b"FPMK", 1, zlib.crc32(body)) + body


# ---- construction and value semantics -----------------------------------------------------


def test_counts_and_properties() -> None:
    mask = ParameterMask(
        {"w": torch.tensor([[True, False], [True, True]]), "b": torch.tensor([False, False, True])}
    )
    assert mask.names == ("w", "b")
    assert mask.shapes == {"w": (2, 2), "b": (3,)}
    assert mask.selected_counts == {"w": 3, "b": 1}
    assert mask.total_counts == {"w": 4, "b": 3}
    assert (mask.num_selected, mask.num_total) == (4, 7)
    assert mask.density == pytest.approx(4 / 7)
    assert len(mask) == 2 and "w" in mask and "x" not in mask
    assert list(mask) == ["w", "b"]
    assert [n for n, _ in mask.items()] == ["w", "b"]
    assert "4/7 selected" in repr(mask)


def test_copies_on_construction_and_on_read() -> None:
    source = torch.tensor([True, False])
    mask = ParameterMask({"w": source})
    source[1] = True
    read = mask["w"]
    read[0] = False
    assert torch.equal(mask["w"], torch.tensor([True, False]))


def test_immutable() -> None:
    mask = sample_mask()
    with pytest.raises(AttributeError, match="immutable"):
        mask._tensors = {}


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"w": torch.ones(3)}, r"'w'.*expected dtype torch.bool, got torch.float32"),
        ({"w": [True, False]}, r"'w'.*expected a torch.Tensor, got list"),
        ({1: torch.ones(3, dtype=torch.bool)}, "expected str parameter names"),
        ({}, "at least one tensor"),
        ({"w": torch.ones(0, dtype=torch.bool)}, "at least one coordinate"),
    ],
)
def test_construction_rejects(tensors: dict, message: str) -> None:
    with pytest.raises(MaskError, match=message):
        ParameterMask(tensors)


def test_mask_error_is_value_error() -> None:
    assert issubclass(MaskError, ValueError)


def test_equality_includes_values_and_name_order() -> None:
    a = torch.tensor([True, False])
    b = torch.tensor([[False], [True]])
    assert ParameterMask({"a": a, "b": b}) == ParameterMask({"a": a.clone(), "b": b.clone()})
    assert ParameterMask({"a": a, "b": b}) != ParameterMask({"b": b, "a": a})
    assert ParameterMask({"a": a, "b": b}) != ParameterMask({"a": ~a, "b": b})
    assert ParameterMask({"a": a}) != ParameterMask({"a": a.reshape(2, 1)})
    assert ParameterMask({"a": a}) != "a"


def test_pickle_round_trip() -> None:
    mask = sample_mask()
    assert pickle.loads(pickle.dumps(mask)) == mask


# ---- model checks ----------------------------------------------------------------------------


def test_dense_covers_trainable_parameters(model: nn.Sequential) -> None:
    model[0].bias.requires_grad_(False)
    mask = ParameterMask.dense(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert list(mask.names) == trainable
    assert "0.bias" not in mask
    assert (
        mask.num_selected
        == mask.num_total
        == sum(p.numel() for _, p in model.named_parameters()) - 4
    )
    mask.validate_for(model)


def test_dense_rejects_frozen_model(model: nn.Sequential) -> None:
    model.requires_grad_(False)
    with pytest.raises(MaskError, match="no parameter with requires_grad"):
        ParameterMask.dense(model)


def test_validate_for_reports_each_problem(model: nn.Sequential) -> None:
    tensors = {n: torch.zeros(p.shape, dtype=torch.bool) for n, p in model.named_parameters()}
    ParameterMask(tensors).validate_for(model)

    with pytest.raises(MaskError, match=r"not parameters of the model: \['ghost'\]"):
        ParameterMask({**tensors, "ghost": torch.ones(1, dtype=torch.bool)}).validate_for(model)

    missing = dict(tensors)
    del missing["4.weight"]
    with pytest.raises(MaskError, match=r"does not cover trainable parameters.*'4.weight'"):
        ParameterMask(missing).validate_for(model)

    wrong = {**tensors, "0.bias": torch.ones(5, dtype=torch.bool)}
    with pytest.raises(MaskError, match=r"'0.bias' has shape \(5,\), parameter has shape \(4,\)"):
        ParameterMask(wrong).validate_for(model)


def test_validate_for_accepts_frozen_parameter_in_mask(model: nn.Sequential) -> None:
    mask = ParameterMask.dense(model)
    model[0].weight.requires_grad_(False)
    mask.validate_for(model)


# ---- gather / scatter -----------------------------------------------------------------------


def test_gather_order_is_names_then_row_major() -> None:
    mask = ParameterMask(
        {"w": torch.tensor([[True, False], [False, True]]), "b": torch.tensor([True, True])}
    )
    values = {"b": torch.tensor([5.0, 6.0]), "w": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}
    assert torch.equal(mask.gather(values), torch.tensor([1.0, 4.0, 5.0, 6.0]))


def test_gather_ignores_extra_names_and_keeps_dtype() -> None:
    mask = ParameterMask({"w": torch.tensor([False, True])})
    out = mask.gather({"w": torch.tensor([1.0, 2.0], dtype=torch.float64), "x": torch.ones(9)})
    assert out.dtype == torch.float64 and out.tolist() == [2.0]


def test_scatter_zero_fills_and_scatter_into_keeps_base() -> None:
    mask = sample_mask()
    gen = torch.Generator().manual_seed(1)
    base = {n: torch.randn(mask.shapes[n], generator=gen) for n in mask}
    flat = torch.arange(mask.num_selected, dtype=torch.float32) + 1.0

    zeros = mask.scatter(flat, base)
    into = mask.scatter_into(flat, base)
    for name in mask:
        selected = mask[name]
        assert torch.equal(zeros[name][~selected], torch.zeros(int((~selected).sum())))
        assert torch.equal(into[name][~selected], base[name][~selected])
        assert torch.equal(zeros[name][selected], into[name][selected])
    assert torch.equal(mask.gather(zeros), flat)
    assert torch.equal(mask.gather(into), flat)


def test_scatter_does_not_modify_base() -> None:
    mask = sample_mask()
    base = {n: torch.ones(mask.shapes[n]) for n in mask}
    mask.scatter_into(torch.zeros(mask.num_selected), base)
    assert all(bool((t == 1).all()) for t in base.values())


@settings(max_examples=30, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=3), min_size=1, max_size=4),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_gather_scatter_into_round_trip(shapes: list[list[int]], density: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    shapes = [*shapes, [1]]  # at least one coordinate
    mask = ParameterMask(
        {f"p{i}": torch.rand(s, generator=gen) < density for i, s in enumerate(shapes)}
    )
    values = {n: torch.randn(mask.shapes[n], generator=gen) for n in mask}
    flat = mask.gather(values)
    assert flat.shape == (mask.num_selected,)
    restored = mask.scatter_into(flat, values)
    assert all(torch.equal(restored[n], values[n]) for n in mask)


@pytest.mark.parametrize("bad", [torch.zeros(3), torch.zeros(100), torch.zeros(1, 1)])
def test_scatter_rejects_wrong_length(bad: torch.Tensor) -> None:
    mask = ParameterMask({"w": torch.tensor([True, True, False])})
    with pytest.raises(MaskError, match=r"expected a flat vector of shape \(2,\)"):
        mask.scatter(bad, {"w": torch.zeros(3)})


def test_gather_and_scatter_reject_mismatched_tensors() -> None:
    mask = ParameterMask({"w": torch.tensor([True, False])})
    with pytest.raises(MaskError, match=r"gather input lacks masked tensors: \['w'\]"):
        mask.gather({"v": torch.zeros(2)})
    with pytest.raises(MaskError, match=r"gather input\['w'\] has shape \(3,\)"):
        mask.gather({"w": torch.zeros(3)})
    with pytest.raises(MaskError, match=r"base\['w'\] has shape \(2, 1\)"):
        mask.scatter_into(torch.zeros(1), {"w": torch.zeros(2, 1)})


# ---- byte codec -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(0, 9), min_size=0, max_size=3), min_size=1, max_size=5),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_bytes_round_trip_exact(shapes: list[list[int]], density: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    shapes = [*shapes, [3]]
    mask = ParameterMask(
        {f"layer{i}.weight": torch.rand(s, generator=gen) < density for i, s in enumerate(shapes)}
    )
    data = mask.to_bytes()
    loaded = ParameterMask.from_bytes(data, expected_shapes=mask.shapes)
    assert loaded == mask
    assert loaded.selected_counts == mask.selected_counts
    assert ParameterMask.from_bytes(bytearray(data)) == mask
    bitmap_bytes = sum((n + 7) // 8 for n in mask.total_counts.values())
    assert len(data) == bitmap_bytes + 13 + len(json.dumps(_meta(mask), separators=(",", ":")))


def _meta(mask: ParameterMask) -> dict:
    return {"tensors": [[n, list(mask.shapes[n]), mask.selected_counts[n]] for n in mask]}


def test_size_is_about_one_bit_per_coordinate() -> None:
    mask = ParameterMask({"w": torch.rand(100, 1000) < 0.1, "b": torch.ones(100, dtype=torch.bool)})
    assert len(mask.to_bytes()) < mask.num_total / 8 + 100


def test_every_single_byte_flip_is_detected() -> None:
    data = sample_mask().to_bytes()
    for position in range(len(data)):
        corrupt = bytearray(data)
        corrupt[position] ^= 0x01
        with pytest.raises(MaskError):
            ParameterMask.from_bytes(bytes(corrupt))


def test_flipped_bitmap_byte_reports_checksum() -> None:
    data = bytearray(sample_mask().to_bytes())
    data[-1] ^= 0xFF
    with pytest.raises(MaskError, match=r"checksum mismatch.*corrupted or truncated"):
        ParameterMask.from_bytes(bytes(data))


@pytest.mark.parametrize("keep", [0, 5, 9, 20, -1])
def test_truncated(keep: int) -> None:
    data = sample_mask().to_bytes()
    with pytest.raises(MaskError, match="truncated"):
        ParameterMask.from_bytes(data[:keep])


def test_wrong_magic() -> None:
    data = b"NOPE" + sample_mask().to_bytes()[4:]
    with pytest.raises(
        MaskError, match=r"not a fedprune mask: expected magic b'FPMK', got b'NOPE'"
    ):
        ParameterMask.from_bytes(data)


def test_wrong_version() -> None:
    data = bytearray(sample_mask().to_bytes())
    data[4] = 7
    with pytest.raises(MaskError, match="unsupported mask format version 7"):
        ParameterMask.from_bytes(bytes(data))


def test_expected_shapes_mismatch() -> None:
    mask = sample_mask()
    data = mask.to_bytes()
    wrong_shape = {**mask.shapes, "a.bias": (4,)}
    with pytest.raises(MaskError, match=r"'a.bias' has shape \(3,\), expected \(4,\)"):
        ParameterMask.from_bytes(data, expected_shapes=wrong_shape)
    unknown = {n: s for n, s in mask.shapes.items() if n != "b.weight"}
    with pytest.raises(MaskError, match=r"does not expect: \['b.weight'\]"):
        ParameterMask.from_bytes(data, expected_shapes=unknown)
    missing = {**mask.shapes, "c.weight": (2,)}
    with pytest.raises(MaskError, match=r"lacks expected tensors: \['c.weight'\]"):
        ParameterMask.from_bytes(data, expected_shapes=missing)


def test_nonzero_padding_bits() -> None:
    # 3 coordinates use the top 3 bits of one byte; the low 5 bits must be zero.
    data = reseal({"tensors": [["w", [3], 2]]}, bytes([0b1100_0001]))
    with pytest.raises(MaskError, match="'w': padding bits after its 3 coordinates are not zero"):
        ParameterMask.from_bytes(data)
    assert ParameterMask.from_bytes(reseal({"tensors": [["w", [3], 2]]}, bytes([0b1100_0000])))[
        "w"
    ].tolist() == [True, True, False]


def test_selected_count_must_match_bitmap() -> None:
    data = reseal({"tensors": [["w", [8], 3]]}, bytes([0xFF]))
    with pytest.raises(MaskError, match="'w': metadata says 3 selected, bitmap has 8"):
        ParameterMask.from_bytes(data)


def test_bitmap_length_must_match_shapes() -> None:
    data = reseal({"tensors": [["w", [8], 8]]}, bytes([0xFF, 0x00]))
    with pytest.raises(MaskError, match="bitmaps are 2 bytes, the metadata's shapes need 1"):
        ParameterMask.from_bytes(data)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ([1, 2], '"tensors" list'),
        ({"tensors": [["w", [-1], 0]]}, "malformed mask metadata entry"),
        ({"tensors": [["w", [2], 0, 1]]}, "malformed mask metadata entry"),
        ({"tensors": [["w", [2], 3]]}, r"3 selected is outside \[0, 2\]"),
        ({"tensors": [["w", [8], 0], ["w", [8], 0]]}, "lists tensor 'w' twice"),
    ],
)
def test_malformed_metadata(meta: object, message: str) -> None:
    with pytest.raises(MaskError, match=message):
        ParameterMask.from_bytes(reseal(meta, bytes(2)))


def test_metadata_not_json() -> None:
    body = struct.pack("<I", 3) + b"\xff{]"
    data = PREFIX.pack(b"FPMK", 1, zlib.crc32(body)) + body
    with pytest.raises(MaskError, match="not valid UTF-8 JSON"):
        ParameterMask.from_bytes(data)


def test_bitmap_is_packbits_msb_first() -> None:
    mask = ParameterMask(
        {"w": torch.tensor([True, False, False, False, False, False, False, True, True])}
    )
    tail = mask.to_bytes()[-2:]
    assert np.frombuffer(tail, dtype=np.uint8).tolist() == [0b1000_0001, 0b1000_0000]
