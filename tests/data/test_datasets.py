"""Dataset loaders: digits, and torchvision datasets read from tiny files in torchvision's formats.

The torchvision tests write a handful of records in the real on-disk formats (uncompressed idx
files for MNIST/Fashion-MNIST, python pickle batches for CIFAR) and load them through the real
torchvision classes. CIFAR's loader checks every file's md5 against the sums of the official
release; the CIFAR tests therefore patch, for the test only (``monkeypatch``, undone afterwards),
the class attributes holding those sums (``train_list``, ``test_list``, ``meta``) with the sums of
the tiny files. Everything else, including the integrity check itself, runs unmodified.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets

import fedprune.data.datasets as datasets_module
from fedprune.data import DatasetBundle, available_datasets, load_dataset, register_dataset

SEED = 0


@pytest.fixture(autouse=True)
def _no_system_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests write their own files; a system-wide install must not be found instead."""
    monkeypatch.setattr(datasets_module, "SYSTEM_DATASET_DIRS", {})


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the big-endian idx format (magic 0x0000_08_<ndim>)."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root: Path, folder: str, n_train: int = 6, n_test: int = 4) -> dict[str, tuple]:
    """Tiny MNIST-format files in ``root/<folder>/raw``; returns the arrays written per split."""
    rng = np.random.default_rng(SEED)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    written = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[prefix] = (images, labels)
    return written


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _write_cifar(
    root: Path,
    monkeypatch: pytest.MonkeyPatch | None,
    *,
    cls: type[torchvision.datasets.CIFAR10],
    num_classes: int,
    n_per_file: int = 3,
) -> dict[str, tuple]:
    """Tiny CIFAR pickle batches for ``cls`` (CIFAR10 or CIFAR100) under ``root``.

    File names and the label key follow the layout torchvision reads (``cls.train_list`` etc.;
    CIFAR-100 uses ``fine_labels``). If ``monkeypatch`` is given, ``cls``'s md5 lists are patched
    to the new files' sums. Returns ``{"train": (data, labels), "test": (data, labels)}`` with
    ``data`` uint8 ``(N, 3, 32, 32)``.
    """
    rng = np.random.default_rng(SEED)
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    label_key = "fine_labels" if num_classes == 100 else "labels"
    written: dict[str, tuple] = {}
    patched: dict[str, list[list[str]]] = {}
    for split, entries in (("train", cls.train_list), ("test", cls.test_list)):
        data, labels = [], []
        patched[split] = []
        for name, _ in entries:
            batch = rng.integers(0, 256, size=(n_per_file, 3 * 32 * 32), dtype=np.uint8)
            batch_labels = rng.integers(0, num_classes, size=n_per_file).tolist()
            entry = {"data": batch, label_key: batch_labels, "batch_label": name}
            (folder / name).write_bytes(pickle.dumps(entry))
            patched[split].append([name, _md5(folder / name)])
            data.append(batch.reshape(n_per_file, 3, 32, 32))
            labels.extend(batch_labels)
        written[split] = (np.concatenate(data), np.array(labels))
    meta_path = folder / cls.meta["filename"]
    meta_path.write_bytes(pickle.dumps({cls.meta["key"]: [f"c{i}" for i in range(num_classes)]}))
    if monkeypatch is not None:
        monkeypatch.setattr(cls, "train_list", patched["train"])
        monkeypatch.setattr(cls, "test_list", patched["test"])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(meta_path)})
    return written


def _check_format(bundle: DatasetBundle, shape: tuple[int, int, int], num_classes: int) -> None:
    assert bundle.input_shape == shape
    assert bundle.num_classes == num_classes
    for part in (bundle.train, bundle.test):
        x, y = part.tensors
        assert x.dtype == torch.float32 and x.shape[1:] == shape
        assert y.dtype == torch.int64 and y.shape == (len(x),)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert int(y.min()) >= 0 and int(y.max()) < num_classes


def test_digits_is_in_memory_in_the_bundle_format() -> None:
    bundle = load_dataset("digits")
    assert bundle.name == "digits"
    assert (len(bundle.train), len(bundle.test)) == (1437, 360)
    _check_format(bundle, (1, 8, 8), 10)
    assert float(bundle.train.tensors[0].max()) == 1.0
    assert set(bundle.train.tensors[1].tolist()) == set(range(10))


def test_registry_lists_all_datasets_and_rejects_unknown_names() -> None:
    assert available_datasets() == ["cifar10", "cifar100", "digits", "fashion-mnist", "mnist"]
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn'; expected one of \['cifar10'"):
        load_dataset("svhn")


def test_register_dataset_refuses_a_taken_name() -> None:
    with pytest.raises(ValueError, match="'digits' is already registered"):
        register_dataset("digits")(lambda data_dir, download, seed: load_dataset("digits"))


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")]
)
def test_mnist_family_loads_idx_files(tmp_path: Path, name: str, folder: str) -> None:
    written = _write_mnist(tmp_path, folder)
    bundle = load_dataset(name, data_dir=tmp_path)
    assert bundle.name == name
    assert (len(bundle.train), len(bundle.test)) == (6, 4)
    _check_format(bundle, (1, 28, 28), 10)
    for part, prefix in ((bundle.train, "train"), (bundle.test, "t10k")):
        images, labels = written[prefix]
        expected = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        torch.testing.assert_close(part.tensors[0], expected)
        assert part.tensors[1].tolist() == labels.tolist()


@pytest.mark.parametrize(
    ("name", "cls", "num_classes", "n_train"),
    [
        ("cifar10", torchvision.datasets.CIFAR10, 10, 5 * 3),
        ("cifar100", torchvision.datasets.CIFAR100, 100, 3),
    ],
)
def test_cifar_loads_pickle_batches(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    cls: type[torchvision.datasets.CIFAR10],
    num_classes: int,
    n_train: int,
) -> None:
    written = _write_cifar(tmp_path, monkeypatch, cls=cls, num_classes=num_classes)
    bundle = load_dataset(name, data_dir=tmp_path)
    assert bundle.name == name
    assert (len(bundle.train), len(bundle.test)) == (n_train, 3)
    _check_format(bundle, (3, 32, 32), num_classes)
    for part, split in ((bundle.train, "train"), (bundle.test, "test")):
        data, labels = written[split]
        expected = torch.from_numpy(data.astype(np.float32) / 255.0)  # already (N, C, H, W)
        torch.testing.assert_close(part.tensors[0], expected)
        assert part.tensors[1].tolist() == labels.tolist()


@pytest.mark.parametrize(
    ("name", "where", "files"),
    [
        ("mnist", "MNIST/raw", "train-images-idx3-ubyte"),
        ("fashion-mnist", "FashionMNIST/raw", "t10k-labels-idx1-ubyte"),
        ("cifar10", "cifar-10-batches-py", "data_batch_5"),
        ("cifar100", "cifar-100-python", "'meta'"),
    ],
)
def test_missing_files_raise_a_clear_error(
    tmp_path: Path, name: str, where: str, files: str
) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, data_dir=tmp_path)
    message = str(info.value)
    assert f"dataset {name!r} not found under root {str(tmp_path)!r}" in message
    assert str(tmp_path / where) in message
    assert files in message
    assert "--download" in message and "place the files" in message


def test_missing_error_lists_only_the_missing_files(tmp_path: Path) -> None:
    _write_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"these are missing: \['t10k-labels-idx1-ubyte'\]"):
        load_dataset("mnist", data_dir=tmp_path)


def test_cifar_files_failing_the_md5_check_are_reported_as_corrupted(tmp_path: Path) -> None:
    # No md5 patch: the tiny files exist but do not match the official release's sums.
    _write_cifar(tmp_path, None, cls=torchvision.datasets.CIFAR10, num_classes=10)
    with pytest.raises(RuntimeError, match="exist but torchvision's CIFAR10 rejected them"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_torchvision_datasets_need_a_data_dir() -> None:
    with pytest.raises(ValueError, match="'mnist' needs data_dir"):
        load_dataset("mnist")


def test_labels_outside_the_class_range_are_rejected(tmp_path: Path) -> None:
    _write_mnist(tmp_path, "MNIST")
    _write_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.array([0, 1, 12, 3]))
    with pytest.raises(ValueError, match=r"mnist test: expected labels in \[0, 10\), got range"):
        load_dataset("mnist", data_dir=tmp_path)
