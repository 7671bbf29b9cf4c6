"""``ParameterMask``: an immutable selection of parameter coordinates, and its byte codec."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

__all__ = ["MaskError", "ParameterMask"]

_MAGIC = b"FPMK"
_VERSION = 1
# magic, format version, CRC32 of the body (every byte after this prefix)
_PREFIX = struct.Struct("<4sBI")
# body: metadata length in bytes, then the metadata, then the bitmaps
_META_LEN = struct.Struct("<I")
_HEADER_SIZE = _PREFIX.size + _META_LEN.size


class MaskError(ValueError):
    """A mask is malformed, corrupt, or does not fit the parameters it is applied to."""


def _fail(message: str) -> NoReturn:
    raise MaskError(message)


def _trainable_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}


class ParameterMask(Mapping[str, torch.Tensor]):
    """Immutable map from parameter name to a boolean tensor: ``True`` = selected (trained).

    A read-only :class:`~collections.abc.Mapping`: ``mask[name]``, ``len(mask)``, ``name in mask``,
    iteration over names, ``keys()`` / ``values()`` / ``items()``. Tensors are CPU ``torch.bool``
    copies; reading one returns a fresh copy, so nothing outside can change a mask. Cache the
    result (e.g. moved to the training device) when reading it every step.

    The order of the names is part of the value: it is the canonical coordinate order of
    :meth:`gather` / :meth:`scatter` and of :meth:`to_bytes` (names in order, then row-major).
    Two masks are equal when they have the same names in the same order and equal tensors.

    Parameters
    ----------
    tensors:
        Parameter name -> boolean tensor of that parameter's shape. At least one tensor and one
        coordinate in total; tensors are copied (to CPU, contiguous).

    Raises
    ------
    MaskError
        Empty mapping, non-string name, non-tensor value, or a dtype other than ``torch.bool``.
    """

    __slots__ = ("_selected", "_tensors")
    _tensors: dict[str, torch.Tensor]
    _selected: dict[str, int]

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        copied: dict[str, torch.Tensor] = {}
        for name, tensor in tensors.items():
            if not isinstance(name, str):
                _fail(f"expected str parameter names, got {type(name).__name__} {name!r}")
            if not isinstance(tensor, torch.Tensor):
                _fail(f"mask for {name!r}: expected a torch.Tensor, got {type(tensor).__name__}")
            if tensor.dtype != torch.bool:
                _fail(f"mask for {name!r}: expected dtype torch.bool, got {tensor.dtype}")
            copied[name] = tensor.detach().to("cpu", copy=True).contiguous()
        if not copied:
            _fail("a mask needs at least one tensor, got an empty mapping")
        if sum(t.numel() for t in copied.values()) == 0:
            _fail("a mask needs at least one coordinate, got only empty tensors")
        object.__setattr__(self, "_tensors", copied)
        object.__setattr__(self, "_selected", {n: int(t.sum()) for n, t in copied.items()})

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"ParameterMask is immutable; cannot set {name!r}")

    def __reduce__(self) -> tuple[type[ParameterMask], tuple[dict[str, torch.Tensor]]]:
        return ParameterMask, (self._tensors,)

    # ---- construction from a model ---------------------------------------------------------

    @classmethod
    def dense(cls, model: nn.Module) -> ParameterMask:
        """Mask selecting every coordinate of every parameter of ``model`` with ``requires_grad``.

        Names and order follow ``model.named_parameters()``.
        """
        shapes = _trainable_shapes(model)
        if not shapes:
            _fail(f"{type(model).__name__} has no parameter with requires_grad=True")
        return cls({n: torch.ones(s, dtype=torch.bool) for n, s in shapes.items()})

    def validate_for(self, model: nn.Module) -> None:
        """Check that this mask fits ``model``.

        Every masked name must be a parameter of ``model`` with the same shape, and every
        parameter with ``requires_grad`` must be masked. A masked parameter that is frozen is
        accepted (a tensor with nothing selected may have been frozen on purpose).

        Raises
        ------
        MaskError
            Naming the missing, unknown or mis-shaped tensors.
        """
        params = dict(model.named_parameters())
        unknown = [n for n in self._tensors if n not in params]
        if unknown:
            _fail(f"mask names tensors that are not parameters of the model: {unknown}")
        missing = [n for n, p in params.items() if p.requires_grad and n not in self._tensors]
        if missing:
            _fail(f"mask does not cover trainable parameters of the model: {missing}")
        for name, tensor in self._tensors.items():
            if tuple(tensor.shape) != tuple(params[name].shape):
                _fail(
                    f"mask for {name!r} has shape {tuple(tensor.shape)}, "
                    f"parameter has shape {tuple(params[name].shape)}"
                )

    # ---- mapping protocol and value semantics -----------------------------------------------

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name].clone()

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParameterMask):
            return NotImplemented
        return list(self._tensors) == list(other._tensors) and all(
            a.shape == b.shape and torch.equal(a, b)
            for a, b in zip(self._tensors.values(), other._tensors.values(), strict=True)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"ParameterMask({len(self)} tensors, {self.num_selected}/{self.num_total} selected, "
            f"density={self.density:.4g})"
        )

    # ---- counts -------------------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names in canonical order."""
        return tuple(self._tensors)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter name -> shape."""
        return {n: tuple(t.shape) for n, t in self._tensors.items()}

    @property
    def selected_counts(self) -> dict[str, int]:
        """Parameter name -> number of selected coordinates in that tensor."""
        return dict(self._selected)

    @property
    def total_counts(self) -> dict[str, int]:
        """Parameter name -> number of coordinates in that tensor."""
        return {n: t.numel() for n, t in self._tensors.items()}

    @property
    def num_selected(self) -> int:
        """Number of selected coordinates over all tensors."""
        return sum(self._selected.values())

    @property
    def num_total(self) -> int:
        """Number of coordinates over all tensors (always >= 1)."""
        return sum(t.numel() for t in self._tensors.values())

    @property
    def density(self) -> float:
        """``num_selected / num_total``, in ``[0, 1]``."""
        return self.num_selected / self.num_total

    # ---- selected coordinates as one flat vector -------------------------------------------

    def _check_like(self, tensors: Mapping[str, torch.Tensor], what: str) -> None:
        missing = [n for n in self._tensors if n not in tensors]
        if missing:
            _fail(f"{what} lacks masked tensors: {missing}")
        for name, mask in self._tensors.items():
            shape = tuple(tensors[name].shape)
            if shape != tuple(mask.shape):
                _fail(f"{what}[{name!r}] has shape {shape}, mask has shape {tuple(mask.shape)}")

    def gather(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Selected coordinates of ``tensors`` as one detached 1-D vector.

        Order: the mask's names in order, each tensor's selected coordinates in row-major order.
        Names in ``tensors`` that the mask lacks are ignored (so a full ``state_dict`` works).

        Parameters
        ----------
        tensors:
            Name -> tensor of the masked shape, for every masked name. Values share one dtype
            and device, which the result keeps.

        Returns
        -------
        torch.Tensor
            Shape ``(num_selected,)``.

        Raises
        ------
        MaskError
            A masked name is missing or has another shape.
        """
        self._check_like(tensors, "gather input")
        return torch.cat(
            [
                tensors[n].detach().reshape(-1)[m.to(tensors[n].device).reshape(-1)]
                for n, m in self._tensors.items()
            ]
        )

    def scatter(
        self, flat: torch.Tensor, like: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Inverse of :meth:`gather`: ``flat`` at the selected coordinates, 0 elsewhere.

        Parameters
        ----------
        flat:
            Shape ``(num_selected,)``, in :meth:`gather` order.
        like:
            Name -> tensor giving shape, dtype and device of each output (values unused).

        Returns
        -------
        dict[str, torch.Tensor]
            One new tensor per masked name, in mask order.

        Raises
        ------
        MaskError
            ``flat`` has the wrong shape, or ``like`` lacks a name or has another shape.
        """
        return self._scatter(flat, like, "like", keep_unselected=False)

    def scatter_into(
        self, flat: torch.Tensor, base: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Copies of ``base`` with the selected coordinates replaced by ``flat``.

        Unselected coordinates keep ``base``'s values; ``base`` itself is not modified.
        ``mask.scatter_into(mask.gather(t), t)`` equals ``t`` on the masked names.

        Raises
        ------
        MaskError
            As for :meth:`scatter`.
        """
        return self._scatter(flat, base, "base", keep_unselected=True)

    def _scatter(
        self,
        flat: torch.Tensor,
        like: Mapping[str, torch.Tensor],
        what: str,
        *,
        keep_unselected: bool,
    ) -> dict[str, torch.Tensor]:
        if flat.dim() != 1 or flat.numel() != self.num_selected:
            _fail(
                f"expected a flat vector of shape ({self.num_selected},) (the selected "
                f"coordinates), got shape {tuple(flat.shape)}"
            )
        self._check_like(like, what)
        out: dict[str, torch.Tensor] = {}
        offset = 0
        for name, mask in self._tensors.items():
            ref = like[name].detach()
            target = ref.clone() if keep_unselected else torch.zeros_like(ref)
            count = self._selected[name]
            values = flat[offset : offset + count].detach().to(device=ref.device, dtype=ref.dtype)
            target.reshape(-1)[mask.to(ref.device).reshape(-1)] = values
            out[name] = target
            offset += count
        return out

    # ---- serialisation ----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Compact self-describing encoding, about ``num_total / 8`` bytes plus a small header.

        Layout (little-endian): magic ``b"FPMK"``, format version (uint8), CRC32 (uint32) of all
        bytes after it, metadata length (uint32), UTF-8 JSON metadata
        ``{"tensors": [[name, shape, num_selected], ...]}``, then per tensor in order its row-major
        bitmap packed with :func:`numpy.packbits` (most significant bit first, zero padding to a
        whole byte).
        """
        meta = {
            "tensors": [[n, list(t.shape), self._selected[n]] for n, t in self._tensors.items()]
        }
        meta_bytes = json.dumps(meta, separators=(",", ":")).encode("utf-8")
        bitmaps = b"".join(
            np.packbits(t.reshape(-1).numpy()).tobytes() for t in self._tensors.values()
        )
        body = _META_LEN.pack(len(meta_bytes)) + meta_bytes + bitmaps
        return _PREFIX.pack(_MAGIC, _VERSION, zlib.crc32(body)) + body

    @classmethod
    def from_bytes(
        cls,
        data: bytes | bytearray | memoryview,
        *,
        expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> ParameterMask:
        """Decode :meth:`to_bytes` output, checking everything.

        Parameters
        ----------
        data:
            The encoded mask.
        expected_shapes:
            If given, the decoded mask must have exactly these names (any order) with these shapes,
            e.g. ``{n: tuple(p.shape) for n, p in model.named_parameters()}``.

        Raises
        ------
        MaskError
            Too short or truncated, wrong magic, unsupported version, checksum mismatch, malformed
            metadata, bitmap lengths that do not add up, non-zero padding bits, a selected count
            that disagrees with the bitmap, or names/shapes that differ from ``expected_shapes``.
            The message names the problem (and the tensor, where there is one).
        """
        raw = bytes(data)
        if len(raw) < _HEADER_SIZE:
            _fail(f"mask data truncated: {len(raw)} bytes, the header alone needs {_HEADER_SIZE}")
        magic, version, crc = _PREFIX.unpack_from(raw)
        (meta_len,) = _META_LEN.unpack_from(raw, _PREFIX.size)
        if magic != _MAGIC:
            _fail(f"not a fedprune mask: expected magic {_MAGIC!r}, got {magic!r}")
        if version != _VERSION:
            _fail(f"unsupported mask format version {version}; this code reads version {_VERSION}")
        if len(raw) < _HEADER_SIZE + meta_len:
            _fail(
                f"mask data truncated: header declares {meta_len} bytes of metadata, "
                f"only {len(raw) - _HEADER_SIZE} bytes follow the header"
            )
        actual_crc = zlib.crc32(raw[_PREFIX.size :])
        if actual_crc != crc:
            _fail(
                f"mask checksum mismatch (stored CRC32 {crc:#010x}, computed {actual_crc:#010x}): "
                "the data is corrupted or truncated"
            )
        entries = _parse_metadata(raw[_HEADER_SIZE : _HEADER_SIZE + meta_len])
        bitmaps = raw[_HEADER_SIZE + meta_len :]
        expected_len = sum((_numel(shape) + 7) // 8 for _, shape, _ in entries)
        if len(bitmaps) != expected_len:
            _fail(
                f"mask bitmaps are {len(bitmaps)} bytes, the metadata's shapes need {expected_len}"
            )
        if expected_shapes is not None:
            _check_expected_shapes(entries, expected_shapes)
        tensors: dict[str, torch.Tensor] = {}
        offset = 0
        for name, shape, selected in entries:
            numel = _numel(shape)
            nbytes = (numel + 7) // 8
            chunk = np.frombuffer(bitmaps[offset : offset + nbytes], dtype=np.uint8)
            offset += nbytes
            bits = np.unpackbits(chunk)
            if bits[numel:].any():
                _fail(f"mask for {name!r}: padding bits after its {numel} coordinates are not zero")
            flags = bits[:numel].astype(bool)
            if int(flags.sum()) != selected:
                _fail(
                    f"mask for {name!r}: metadata says {selected} selected, "
                    f"bitmap has {int(flags.sum())}"
                )
            tensors[name] = torch.from_numpy(flags.reshape(shape))
        return cls(tensors)


def _numel(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _parse_metadata(meta_bytes: bytes) -> list[tuple[str, tuple[int, ...], int]]:
    try:
        meta: Any = json.loads(meta_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MaskError(f"mask metadata is not valid UTF-8 JSON: {err}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("tensors"), list):
        _fail('mask metadata must be a JSON object with a "tensors" list')
    entries: list[tuple[str, tuple[int, ...], int]] = []
    seen: set[str] = set()
    for item in meta["tensors"]:
        ok = (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], str)
            and isinstance(item[1], list)
            and all(type(d) is int and d >= 0 for d in item[1])
            and type(item[2]) is int
        )
        if not ok:
            _fail(f"malformed mask metadata entry {item!r}; expected [name, shape, num_selected]")
        name, shape, selected = item[0], tuple(item[1]), item[2]
        if name in seen:
            _fail(f"mask metadata lists tensor {name!r} twice")
        seen.add(name)
        if not 0 <= selected <= _numel(shape):
            _fail(f"mask for {name!r}: {selected} selected is outside [0, {_numel(shape)}]")
        entries.append((name, shape, selected))
    return entries


def _check_expected_shapes(
    entries: list[tuple[str, tuple[int, ...], int]], expected: Mapping[str, tuple[int, ...]]
) -> None:
    names = [name for name, _, _ in entries]
    unknown = [n for n in names if n not in expected]
    if unknown:
        _fail(f"mask has tensors the receiver does not expect: {unknown}")
    missing = [n for n in expected if n not in names]
    if missing:
        _fail(f"mask lacks expected tensors: {missing}")
    for name, shape, _ in entries:
        if shape != tuple(expected[name]):
            _fail(f"mask for {name!r} has shape {shape}, expected {tuple(expected[name])}")
