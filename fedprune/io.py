"""Atomic file writes and the one JSON policy for results, summaries, checkpoints and ledgers.

Policy: written JSON is strict JSON. Non-finite floats (``inf``, ``nan``) become ``null``;
readers that need ``inf`` back (e.g. an unbounded budget) map ``null`` to it themselves. Every
write goes to a temporary file in the same directory and is renamed over the target, so a crash
mid-write leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal

__all__ = [
    "atomic_write",
    "ensure_writable_dir",
    "fedprune_home",
    "read_json",
    "to_json_text",
    "to_jsonable",
    "write_csv",
    "write_json",
    "write_torch",
]


def fedprune_home() -> Path:
    """fedprune's per-machine state directory: ``$FEDPRUNE_HOME``, default ``~/.fedprune``."""
    return Path(os.environ.get("FEDPRUNE_HOME") or Path.home() / ".fedprune")


def to_jsonable(value: Any) -> Any:
    """``value`` with non-finite floats replaced by ``None`` (tuples become lists)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def to_json_text(value: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text of ``value`` under the module's policy (raises on non-finite leftovers)."""
    return json.dumps(to_jsonable(value), indent=indent, allow_nan=False)


def atomic_write(
    path: str | Path, write: Callable[[IO[bytes]], object], *, mode: int = 0o644
) -> None:
    """Create or replace ``path`` atomically: ``write`` fills a temporary file, then rename.

    Parent directories are created. The file is flushed and fsynced before the rename, and gets
    permission bits ``mode`` (e.g. ``0o600`` for keys).

    Raises
    ------
    OSError
        The directory cannot be created or written (the target is left as it was).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented strict JSON to ``path`` atomically (see the module policy)."""
    text = to_json_text(data) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def write_torch(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically (serialised in memory, then written).

    Load it back with ``torch.load(path, weights_only=True)`` (tensors, containers, scalars).
    """
    import torch  # here: the rest of this module is torch-free

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def write_csv(
    path: str | Path,
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    extrasaction: Literal["raise", "ignore"] = "raise",
) -> None:
    """Write ``rows`` as UTF-8 CSV with header ``columns`` to ``path`` atomically.

    A key of a row missing from ``columns`` raises ``ValueError`` unless ``extrasaction`` is
    ``"ignore"`` (as for :class:`csv.DictWriter`); missing keys are written as empty cells.
    """

    def write(f: IO[bytes]) -> None:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        try:
            writer = csv.DictWriter(text, fieldnames=list(columns), extrasaction=extrasaction)
            writer.writeheader()
            writer.writerows(rows)
        finally:
            text.detach()  # flushes into ``f`` and leaves it open for atomic_write to finish

    atomic_write(path, write)


def read_json(path: str | Path) -> Any:
    """Parse the JSON file at ``path``.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The file is not valid JSON (the message names the file).
    """
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def ensure_writable_dir(path: str | Path, *, what: str, mode: int = 0o777) -> Path:
    """Create directory ``path`` (and parents, with permission bits ``mode``) if missing and
    check that a file can be created in it; commands call this before any work, so a bad path
    fails at once instead of after hours of training. Returns ``path``.

    Raises
    ------
    PermissionError
        ``path`` cannot be created or written (the message names ``what``, the path and why).
    """
    path = Path(path)
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise PermissionError(
            f"{what} {str(path)!r} is not a writable directory: {err.strerror or err}"
        ) from None
    return path
