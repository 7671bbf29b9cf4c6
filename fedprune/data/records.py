"""A node's own private records on its own disk: the ``records.npz`` directory format.

A data holder that is not a partition of a shared dataset (a hospital, a company) keeps its
records in a directory of its own and points its node at it (node config ``data-dir``). The
directory holds one file, ``records.npz`` (numpy's ``savez`` format, read without pickle):

``images``
    ``(N, C, H, W)``: ``uint8`` in ``[0, 255]`` (scaled by 1/255) or floating point in
    ``[0, 1]``; ``(C, H, W)`` is the run's dataset's input shape.
``labels``
    ``(N,)`` integers in ``[0, num_classes)`` of the run's dataset.
``dataset`` (optional)
    The name of the dataset whose task the records are for (a 0-d string array); when present
    it must be the run's ``data.dataset``.

Privacy: the records are read only on the node that holds them; nothing here sends them
anywhere. :func:`load_records` checks everything a training run relies on, so a wrong file fails
at once with one message naming the directory and the problem, before any step or ledger entry.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from fedprune.data.datasets import DatasetTask
from fedprune.data.splits import PrivateDataset
from fedprune.io import atomic_write

__all__ = ["RECORDS_FILE", "load_records", "save_records"]

RECORDS_FILE = "records.npz"
"""The file of a node's data directory that holds its records."""


def load_records(directory: str | Path, *, task: DatasetTask, dataset: str = "") -> PrivateDataset:
    """The records of ``directory/records.npz`` as a :class:`PrivateDataset` (float32 in [0, 1]).

    Parameters
    ----------
    directory:
        The node's data directory.
    task:
        The run's input shape and number of classes (:func:`fedprune.data.dataset_task`).
    dataset:
        The run's dataset name, checked against the file's optional ``dataset`` entry.

    Raises
    ------
    FileNotFoundError
        No such directory (or not a directory), or no ``records.npz`` in it.
    PermissionError
        The file cannot be read.
    ValueError
        Not an ``.npz`` file, a missing array, wrong shapes or dtypes, labels out of range,
        non-finite or out-of-range pixel values, no records, or records of another dataset.
        Every message starts with ``data-dir <directory>:``.
    """
    root = Path(directory)
    where = f"data-dir {str(root)!r}"
    if not root.is_dir():
        problem = "not a directory" if root.exists() else "no such directory"
        raise FileNotFoundError(f"{where}: {problem}")
    try:
        raw = (root / RECORDS_FILE).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{where}: no {RECORDS_FILE} in it (expected arrays images (N, C, H, W) and "
            f"labels (N,); see fedprune.data.records)"
        ) from None
    except PermissionError:
        raise PermissionError(f"{where}: cannot read {RECORDS_FILE} (permission denied)") from None
    except OSError as err:
        raise ValueError(f"{where}: cannot read {RECORDS_FILE} ({err.strerror})") from None
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{where}: {RECORDS_FILE} is not a readable .npz file ({err})") from None
    missing = [name for name in ("images", "labels") if name not in arrays]
    if missing:
        raise ValueError(f"{where}: {RECORDS_FILE} has no {missing} (it has {sorted(arrays)})")
    _check_dataset(arrays.get("dataset"), dataset, where)
    images = _images(arrays["images"], task, where)
    labels = _labels(arrays["labels"], task, len(images), where)
    return PrivateDataset(
        TensorDataset(images, labels), description=f"{len(labels)} records of {root}"
    )


def save_records(directory: str | Path, records: PrivateDataset, *, dataset: str = "") -> Path:
    """Write ``records`` as ``directory/records.npz`` (float32 images, int64 labels, and
    ``dataset`` when given); return the file's path. The write is atomic.

    Raises
    ------
    FileExistsError
        ``records.npz`` already exists there (it is never overwritten).
    """
    path = Path(directory) / RECORDS_FILE
    if path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite a node's records")
    images, labels = records.dataset.tensors
    arrays: dict[str, np.ndarray] = {"images": images.numpy(), "labels": labels.numpy()}
    if dataset:
        arrays["dataset"] = np.array(dataset)
    atomic_write(path, lambda f: np.savez(f, allow_pickle=False, **arrays), mode=0o600)
    return path


def _check_dataset(stored: np.ndarray | None, dataset: str, where: str) -> None:
    if stored is None or not dataset:
        return
    if stored.ndim != 0 or stored.dtype.kind != "U":
        raise ValueError(f"{where}: 'dataset' must be a string, got {stored.dtype} {stored.shape}")
    if str(stored) != dataset:
        raise ValueError(
            f"{where}: the records are for dataset {str(stored)!r}, the run trains {dataset!r}"
        )


def _images(x: np.ndarray, task: DatasetTask, where: str) -> torch.Tensor:
    """``uint8`` or float ``(N, C, H, W)`` -> float32 in ``[0, 1]``, checked."""
    expected = "(N, " + ", ".join(str(d) for d in task.input_shape) + ")"
    if x.ndim != 4 or tuple(x.shape[1:]) != task.input_shape:
        raise ValueError(f"{where}: expected images of shape {expected}, got {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{where}: no records (images has 0 rows)")
    if x.dtype == np.uint8:
        return torch.from_numpy(x.astype(np.float32) / 255.0)
    if x.dtype.kind != "f":
        raise ValueError(f"{where}: expected uint8 or floating-point images, got {x.dtype}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
        raise ValueError(f"{where}: {bad} images hold non-finite values (nan or inf)")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(
            f"{where}: expected float images in [0, 1], got range [{x.min():g}, {x.max():g}] "
            "(store uint8 pixels, or divide by 255)"
        )
    return torch.from_numpy(x.astype(np.float32))


def _labels(y: np.ndarray, task: DatasetTask, n: int, where: str) -> torch.Tensor:
    """Integer ``(n,)`` in ``[0, num_classes)`` -> int64, checked."""
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"{where}: expected integer labels of shape (N,), got {y.dtype} {y.shape}")
    if len(y) != n:
        raise ValueError(f"{where}: {n} images but {len(y)} labels")
    if y.min() < 0 or y.max() >= task.num_classes:
        raise ValueError(
            f"{where}: expected labels in [0, {task.num_classes}), got range [{y.min()}, {y.max()}]"
        )
    return torch.from_numpy(y.astype(np.int64))
