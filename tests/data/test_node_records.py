"""A node's own records (``records.npz``): what loads, and one clear error per bad directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from fedprune.data import (
    DATASETS,
    RECORDS_FILE,
    DatasetTask,
    PrivateDataset,
    dataset_task,
    load_dataset,
    load_records,
    save_records,
)

TASK = DatasetTask(input_shape=(1, 8, 8), num_classes=10)


def _write(directory: Path, **arrays: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / RECORDS_FILE, **arrays)
    return directory


def _good(n: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "images": rng.integers(0, 256, size=(n, 1, 8, 8), dtype=np.uint8),
        "labels": rng.integers(0, 10, size=n).astype(np.int32),
    }


def test_uint8_records_load_scaled_to_the_bundle_format(tmp_path: Path) -> None:
    arrays = _good()
    records = load_records(_write(tmp_path / "node", **arrays), task=TASK)
    x, y = records.dataset.tensors
    assert isinstance(records, PrivateDataset) and len(records) == 12
    assert x.dtype == torch.float32 and x.shape == (12, 1, 8, 8)
    assert torch.equal(x, torch.from_numpy(arrays["images"]).float() / 255.0)
    assert y.dtype == torch.int64 and y.tolist() == arrays["labels"].tolist()


def test_saved_records_load_back_identical_and_are_private_to_the_owner(tmp_path: Path) -> None:
    x = torch.rand(7, 1, 8, 8)
    y = torch.arange(7) % 10
    path = save_records(tmp_path / "node", PrivateDataset(TensorDataset(x, y), "t"), dataset="d")
    assert path == tmp_path / "node" / RECORDS_FILE
    assert os.stat(path).st_mode & 0o777 == 0o600
    loaded = load_records(tmp_path / "node", task=TASK, dataset="d")
    assert torch.equal(loaded.dataset.tensors[0], x) and torch.equal(loaded.dataset.tensors[1], y)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        save_records(tmp_path / "node", PrivateDataset(TensorDataset(x[:1], y[:1]), "t"))
    assert len(load_records(tmp_path / "node", task=TASK)) == 7  # untouched


def _one_nan() -> np.ndarray:
    images = np.full((12, 1, 8, 8), 0.5, np.float32)
    images[3, 0, 2, 2] = np.nan
    return images


def _bad(n: int = 12, **changes: Any) -> dict[str, Any]:
    arrays: dict[str, Any] = {**_good(n), **changes}
    return {k: v for k, v in arrays.items() if v is not None}


@pytest.mark.parametrize(
    ("arrays", "error"),
    [
        (_bad(labels=None), r"has no \['labels'\]"),
        (_bad(images=None), r"has no \['images'\]"),
        (_bad(images=np.zeros((12, 8, 8), np.uint8)), r"shape \(N, 1, 8, 8\), got \(12, 8, 8\)"),
        (_bad(images=np.zeros((12, 3, 8, 8), np.uint8)), r"got \(12, 3, 8, 8\)"),
        (_bad(images=np.zeros((12, 1, 28, 28), np.float32)), r"got \(12, 1, 28, 28\)"),
        (_bad(images=np.zeros((12, 1, 8, 8), np.int64)), "floating-point images, got int64"),
        (_bad(images=_one_nan()), "1 images hold non-finite"),
        (_bad(images=np.full((12, 1, 8, 8), np.inf, np.float64)), "12 images hold non-finite"),
        (_bad(images=np.full((12, 1, 8, 8), 255.0)), r"in \[0, 1\], got range \[255, 255\]"),
        (_bad(labels=np.arange(12) + 0.0), "integer labels of shape"),
        (_bad(labels=np.zeros((12, 1), np.int64)), "integer labels of shape"),
        (_bad(labels=np.zeros(11, np.int64)), "12 images but 11 labels"),
        (_bad(labels=np.arange(12)), r"labels in \[0, 10\), got range \[0, 11\]"),
        (_bad(labels=np.arange(12) - 1), r"labels in \[0, 10\), got range \[-1, 10\]"),
        (_bad(0), r"no records"),
        (_bad(dataset=np.array("mnist")), "for dataset 'mnist', the run trains 'digits'"),
        (_bad(dataset=np.array([1, 2])), "'dataset' must be a string"),
        (_bad(labels=np.array([0] * 12, dtype=object)), "not a readable .npz file"),
    ],
)  # fmt: skip
def test_a_bad_records_file_fails_with_one_message_naming_the_problem(
    tmp_path: Path, arrays: dict[str, Any], error: str
) -> None:
    directory = _write(tmp_path / "node", **arrays)
    with pytest.raises(ValueError, match=error) as info:
        load_records(directory, task=TASK, dataset="digits")
    message = str(info.value)
    assert message.startswith(f"data-dir {str(directory)!r}: ") and "\n" not in message


def test_a_missing_directory_or_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_records(tmp_path / "absent", task=TASK)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_records(tmp_path / "file", task=TASK)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no records.npz in it \(expected arrays images"):
        load_records(tmp_path / "empty", task=TASK)


def test_a_file_that_is_no_npz_is_named(tmp_path: Path) -> None:
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / RECORDS_FILE).write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match=r"records.npz is not a readable .npz file"):
        load_records(tmp_path / "node", task=TASK)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / RECORDS_FILE).mkdir()
    with pytest.raises(ValueError, match=r"cannot read records.npz \(Is a directory\)"):
        load_records(tmp_path / "dir", task=TASK)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_a_permission_error(tmp_path: Path) -> None:
    directory = _write(tmp_path / "node", **_good())
    (directory / RECORDS_FILE).chmod(0)
    with pytest.raises(PermissionError, match=r"cannot read records\.npz"):
        load_records(directory, task=TASK)


def test_declared_tasks_match_what_the_loader_gives() -> None:
    bundle = load_dataset("digits")
    assert dataset_task("digits") == DatasetTask(bundle.input_shape, bundle.num_classes)
    assert dataset_task("mnist") == DatasetTask((1, 28, 28), 10)  # no files needed
    assert dataset_task("cifar100") == DatasetTask((3, 32, 32), 100)
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        dataset_task("nope")


def test_an_undeclared_dataset_is_loaded_for_its_task(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    def loader(data_dir: Path | None, download: bool, seed: int) -> Any:
        calls.append(data_dir)
        return load_dataset("digits")

    monkeypatch.setitem(DATASETS._entries, "undeclared", loader)
    assert dataset_task("undeclared", data_dir="somewhere") == TASK
    assert calls == [Path("somewhere")]
