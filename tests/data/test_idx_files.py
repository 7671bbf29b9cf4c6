"""MNIST-family idx files read directly: gzipped or not, torchvision layout or flat, Debian's."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fedprune.data import load_dataset
from fedprune.data.datasets import SYSTEM_DATASET_DIRS, read_idx

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 6),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 4),
}


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def _write(folder: Path, *, gz: bool) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = {}
    for prefix, (images, labels, n) in NAMES.items():
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        for name, arr in ((images, x), (labels, y)):
            data = _idx_bytes(arr)
            path = folder / (name + (".gz" if gz else ""))
            path.write_bytes(gzip.compress(data) if gz else data)
        written[prefix] = x
    return written


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["FashionMNIST/raw", "."])
def test_fashion_mnist_reads_gzipped_or_plain_idx_in_either_layout(
    tmp_path: Path, gz: bool, layout: str
) -> None:
    written = _write(tmp_path / layout, gz=gz)
    bundle = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert len(bundle.train) == 6 and len(bundle.test) == 4
    assert bundle.input_shape == (1, 28, 28)
    x = bundle.train.tensors[0]
    np.testing.assert_allclose(x[:, 0].numpy() * 255, written["train"], atol=1e-3)


def test_corrupt_idx_file_is_named(tmp_path: Path) -> None:
    _write(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00"))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: truncated"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_read_idx_rejects_a_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(path)


def test_missing_fashion_mnist_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(SYSTEM_DATASET_DIRS, "fashion-mnist", (tmp_path / "not-installed",))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


@pytest.mark.skipif(not DEBIAN.exists(), reason="needs apt-get install dataset-fashion-mnist")
def test_debian_fashion_mnist_is_found_without_a_data_dir(tmp_path: Path) -> None:
    bundle = load_dataset("fashion-mnist", data_dir=tmp_path)  # nothing there: falls back
    assert (len(bundle.train), len(bundle.test)) == (60_000, 10_000)
    assert set(bundle.train.tensors[1].unique().tolist()) == set(range(10))
