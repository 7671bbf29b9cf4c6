"""Dataset loading: the bundled offline ``digits`` set and torchvision datasets from disk."""

from __future__ import annotations

import gzip
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from fedprune.registry import Registry

__all__ = [
    "DATASETS",
    "DatasetBundle",
    "DatasetTask",
    "available_datasets",
    "dataset_task",
    "load_dataset",
    "register_dataset",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetBundle:
    """A dataset held in memory as tensors.

    Attributes
    ----------
    name:
        Registry name (``"digits"``, ``"mnist"``, ...).
    train, test:
        ``TensorDataset(x, y)`` with ``x`` float32 of shape ``(N, C, H, W)`` scaled to ``[0, 1]``
        and ``y`` int64 of shape ``(N,)`` holding class indices in ``[0, num_classes)``.
    num_classes:
        Number of classes.
    """

    name: str
    train: TensorDataset
    test: TensorDataset
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one example."""
        c, h, w = self.train.tensors[0].shape[1:]
        return int(c), int(h), int(w)


Loader = Callable[[Path | None, bool, int], DatasetBundle]
"""``(data_dir, download, seed) -> DatasetBundle``."""

DATASETS: Registry[Loader] = Registry("dataset")
"""Dataset loaders ``(data_dir, download, seed) -> DatasetBundle`` by name."""


@dataclass(frozen=True)
class DatasetTask:
    """What a model for a dataset takes and predicts: examples ``(C, H, W)``, ``num_classes``.

    The same for every public/private split of the dataset (public data is matched to it), so a
    node holding only its own records can build the run's model without the dataset's files.
    """

    input_shape: tuple[int, int, int]
    num_classes: int


_TASKS: dict[str, DatasetTask] = {}
"""Tasks declared at registration, known without loading the dataset."""


def register_dataset(name: str, *, task: DatasetTask | None = None) -> Callable[[Loader], Loader]:
    """Decorator registering ``loader(data_dir, download, seed) -> DatasetBundle`` as ``name``;
    ``task``, when given, declares its shapes (see :func:`dataset_task`)."""
    register = DATASETS.decorator(name)

    def decorate(loader: Loader) -> Loader:
        register(loader)
        if task is not None:
            _TASKS[name] = task
        return loader

    return decorate


def dataset_task(
    name: str, *, data_dir: str | Path | None = None, download: bool = False
) -> DatasetTask:
    """The input shape and number of classes of dataset ``name``.

    Declared at registration for the built-in datasets (nothing is read); a dataset registered
    without a task is loaded (``data_dir``, ``download`` as in :func:`load_dataset`).

    Raises
    ------
    ValueError
        Unknown name; or, for an undeclared dataset, whatever :func:`load_dataset` raises.
    """
    DATASETS.get(name)
    if name in _TASKS:
        return _TASKS[name]
    bundle = load_dataset(name, data_dir=data_dir, download=download)
    return DatasetTask(input_shape=bundle.input_shape, num_classes=bundle.num_classes)


_DIGITS = DatasetTask(input_shape=(1, 8, 8), num_classes=10)


@register_dataset("digits", task=_DIGITS)
def _load_digits(data_dir: Path | None, download: bool, seed: int) -> DatasetBundle:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images); always offline.

    The fixed train/test split (80/20, stratified, ``random_state=0``) does not follow ``seed`` so
    that test accuracy is comparable across seeds.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    x = (raw.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = raw.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return DatasetBundle(
        name="digits",
        train=TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
        test=TensorDataset(torch.from_numpy(x_te), torch.from_numpy(y_te)),
        num_classes=_DIGITS.num_classes,
    )


def _take(dataset: TensorDataset, indices: np.ndarray) -> TensorDataset:
    """The records ``indices`` (int64, 1-D) of ``dataset`` as a new ``TensorDataset`` (copied)."""
    index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
    return TensorDataset(*(t[index] for t in dataset.tensors))


# --- torchvision datasets -------------------------------------------------------------------------
# The expected on-disk layout is read from the torchvision class attributes themselves, so the
# error message always matches what the installed torchvision looks for.


@dataclass(frozen=True)
class _Layout:
    """Where torchvision looks for a dataset's files, and in which form."""

    folder: Path
    names: list[str]
    form: str


def _idx_layout(cls: Any, root: Path) -> _Layout:
    """MNIST family: uncompressed idx files in ``<root>/<ClassName>/raw/``."""
    gz = [os.path.basename(url) for url, _ in cls.resources]
    return _Layout(
        folder=root / cls.__name__ / "raw",
        names=[os.path.splitext(name)[0] for name in gz],
        form="uncompressed idx files (gunzip the .gz downloads)",
    )


def _cifar_layout(cls: Any, root: Path) -> _Layout:
    """CIFAR family: python pickle batches plus a meta file in ``<root>/<base_folder>/``."""
    return _Layout(
        folder=root / cls.base_folder,
        names=[name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]],
        form=f"python pickle batches (extract {cls.filename} into the root)",
    )


@dataclass(frozen=True)
class _TorchvisionSpec:
    """How to find and convert one torchvision dataset."""

    name: str
    class_name: str  # attribute of ``torchvision.datasets``, resolved at load time
    task: DatasetTask
    layout: Callable[[Any, Path], _Layout]
    install_hint: str = ""
    """How to install the files when none are found (empty: no system package)."""


SYSTEM_DATASET_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}
"""Folders a system package installs a dataset's (gzipped idx) files into, searched last."""


_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file of unsigned bytes (MNIST format), gzipped (``.gz``) or not.

    Raises
    ------
    ValueError
        Not an unsigned-byte idx file, or truncated (the message names the file).
    """
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise ValueError(f"{path}: cannot read it as an idx file ({err})") from err
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path}: not an idx file of unsigned bytes (bad magic {raw[:4]!r})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated idx header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims)) if dims else 0
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: idx header says {dims} = {expected} bytes, the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_folder(spec: _TorchvisionSpec, data_dir: Path | None) -> tuple[Path | None, list[Path]]:
    """The first folder holding all four idx files (``.gz`` or not), and every folder searched:
    ``<data_dir>/<ClassName>/raw/`` (torchvision's layout), ``<data_dir>/`` (flat), then the
    system folders."""
    searched = [*([data_dir / spec.class_name / "raw", data_dir] if data_dir else [])]
    searched += list(SYSTEM_DATASET_DIRS.get(spec.name, ()))
    names = [n for pair in _IDX_NAMES.values() for n in pair]
    for folder in searched:
        if all(_idx_file(folder, n) is not None for n in names):
            return folder, searched
    return None, searched


def _idx_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_split(spec: _TorchvisionSpec, folder: Path, split: str) -> TensorDataset:
    images_name, labels_name = _IDX_NAMES[split]
    images = read_idx(_idx_file(folder, images_name))  # type: ignore[arg-type]
    labels = read_idx(_idx_file(folder, labels_name))  # type: ignore[arg-type]
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{folder}: {split} images {images.shape} and labels {labels.shape} do not match"
        )
    return TensorDataset(
        _to_images(images.copy()),
        _to_labels(
            torch.from_numpy(labels.astype(np.int64)), spec.task.num_classes, f"{spec.name} {split}"
        ),
    )


def _to_images(data: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, H, W, C)`` -> float32 ``(N, C, H, W)`` in ``[0, 1]``."""
    x = torch.as_tensor(data)
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images from torchvision, got {x.dtype}")
    # Reorder as uint8 first: one float32 copy at the end (CIFAR-10 train is ~0.6 GB as float32).
    x = (x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)).contiguous()
    return x.to(torch.float32).div_(255.0)


def _to_labels(targets: torch.Tensor | list[int], num_classes: int, where: str) -> torch.Tensor:
    """Class indices -> int64 ``(N,)``, checked to lie in ``[0, num_classes)``."""
    y = torch.as_tensor(targets, dtype=torch.int64)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"{where}: expected labels in [0, {num_classes}), "
            f"got range [{int(y.min())}, {int(y.max())}]"
        )
    return y


def _load_split(
    spec: _TorchvisionSpec, root: Path, *, train: bool, download: bool
) -> TensorDataset:
    """Load one split through torchvision's own dataset class and convert it."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, spec.class_name)
    try:
        ds = cls(root=str(root), train=train, download=download)
    except RuntimeError as err:
        if download:
            raise
        layout = spec.layout(cls, root)
        missing = [n for n in layout.names if not (layout.folder / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"dataset {spec.name!r} not found under root {str(root)!r}: torchvision's "
                f"{spec.class_name} expects {layout.form} {layout.names} in "
                f"{str(layout.folder)!r}, and these are missing: {missing}. Fix: pass --download "
                f"(download=True; needs internet), or place the files there (or point "
                f"--data-dir / data_dir at the root that holds them)."
            ) from err
        raise RuntimeError(
            f"dataset {spec.name!r}: the files in {str(layout.folder)!r} exist but torchvision's "
            f"{spec.class_name} rejected them ({err}); they are probably corrupted or from another "
            f"release (torchvision checks md5 sums). Replace them or pass --download."
        ) from err
    split = "train" if train else "test"
    return TensorDataset(
        _to_images(ds.data), _to_labels(ds.targets, spec.task.num_classes, f"{spec.name} {split}")
    )


def _torchvision_loader(spec: _TorchvisionSpec) -> Loader:
    """A loader for ``spec`` (``seed`` is unused: torchvision's train/test split is fixed)."""

    def load(data_dir: Path | None, download: bool, seed: int) -> DatasetBundle:
        folder: Path | None = None
        searched: list[Path] = []
        if spec.layout is _idx_layout:
            folder, searched = _idx_folder(spec, data_dir)
        if folder is not None:
            train = _load_idx_split(spec, folder, "train")
            test = _load_idx_split(spec, folder, "test")
        elif data_dir is None:
            hint = f" {spec.install_hint}" if spec.install_hint else ""
            raise ValueError(
                f"dataset {spec.name!r} needs data_dir (the root holding torchvision's files)"
                + (f"; none found in {[str(p) for p in searched]}." if hint else ".")
                + hint
            )
        else:
            try:
                train = _load_split(spec, data_dir, train=True, download=download)
                test = _load_split(spec, data_dir, train=False, download=download)
            except FileNotFoundError as err:
                if not spec.install_hint:
                    raise
                raise FileNotFoundError(
                    f"{err} Also searched (gzipped idx files accepted): "
                    f"{[str(p) for p in searched]}. {spec.install_hint}"
                ) from err
            folder = data_dir
        logger.info(
            "loaded %s from %s: %d train, %d test, input shape %s",
            spec.name,
            folder,
            len(train),
            len(test),
            tuple(train.tensors[0].shape[1:]),
        )
        return DatasetBundle(
            name=spec.name, train=train, test=test, num_classes=spec.task.num_classes
        )

    load.__doc__ = f"torchvision's {spec.class_name} from disk (float32 images in [0, 1])."
    return load


for _spec in (
    _TorchvisionSpec("mnist", "MNIST", DatasetTask((1, 28, 28), 10), _idx_layout),
    _TorchvisionSpec(
        "fashion-mnist",
        "FashionMNIST",
        DatasetTask((1, 28, 28), 10),
        _idx_layout,
        install_hint="On Debian: sudo apt-get install dataset-fashion-mnist (installs the "
        "gzipped idx files in /usr/share/datasets/fashion-mnist/, found automatically).",
    ),
    _TorchvisionSpec("cifar10", "CIFAR10", DatasetTask((3, 32, 32), 10), _cifar_layout),
    _TorchvisionSpec("cifar100", "CIFAR100", DatasetTask((3, 32, 32), 100), _cifar_layout),
):
    register_dataset(_spec.name, task=_spec.task)(_torchvision_loader(_spec))


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return DATASETS.names()


def load_dataset(
    name: str, *, data_dir: str | Path | None = None, download: bool = False, seed: int = 0
) -> DatasetBundle:
    """Load dataset ``name`` into memory.

    Every dataset comes back in one format (see :class:`DatasetBundle`): float32 images
    ``(N, C, H, W)`` in ``[0, 1]`` and int64 labels ``(N,)``. Sizes: ``digits`` 1,437 + 360 of
    ``(1, 8, 8)``; ``mnist`` and ``fashion-mnist`` 60,000 + 10,000 of ``(1, 28, 28)``; ``cifar10``
    and ``cifar100`` 50,000 + 10,000 of ``(3, 32, 32)`` (about 0.7 GB as float32).

    Parameters
    ----------
    name:
        One of :func:`available_datasets`.
    data_dir:
        Root directory holding torchvision's on-disk files (ignored for ``digits``): MNIST and
        Fashion-MNIST as idx files, gzipped or not, in ``<data_dir>/MNIST/raw/`` /
        ``<data_dir>/FashionMNIST/raw/`` or directly in ``<data_dir>/``; Fashion-MNIST is also
        found in Debian's ``/usr/share/datasets/fashion-mnist/`` (``apt-get install
        dataset-fashion-mnist``), even without ``data_dir``. CIFAR-10 in
        ``<data_dir>/cifar-10-batches-py/`` and CIFAR-100 in
        ``<data_dir>/cifar-100-python/`` (python pickle batches).
    download:
        Let torchvision download missing files. Off by default: nothing is fetched unless asked.
    seed:
        Unused by fixed splits; accepted so every loader has one signature.

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones), or no ``data_dir`` for a torchvision set.
    FileNotFoundError
        The files are missing and ``download`` is off (the message says what and where).
    RuntimeError
        The files exist but torchvision rejects them (e.g. an md5 mismatch).
    """
    loader = DATASETS.get(name)
    return loader(Path(data_dir) if data_dir is not None else None, download, seed)
