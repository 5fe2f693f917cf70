"""Datasets held whole as uint8 tensors, ready to live on the training device.

Sources: CIFAR-10 through torchvision (the dissertation's data, Sec. 4.1: ToTensor +
Normalize(0.5, 0.5), i.e. pixels mapped to [-1, 1]); Fashion-MNIST from the original
idx ``.gz`` files (torchvision's download, or a directory such as the one Debian's
``dataset-fashion-mnist`` package installs), zero-padded 28->32 with one channel;
and a synthetic dataset with CIFAR's shapes whose classes are learnable, for tests.

Images stay uint8 (N, C, 32, 32); :func:`normalise` turns a batch into floats on the
fly, which is what the resident-data trainer does instead of a DataLoader.

Three splits: ``val_size`` images of the training set are held out as a validation split (a fixed
random choice, the same for every run and seed, made before any training subset), on which every
study makes its choices; the test split is only for reporting what was chosen.
"""
from __future__ import annotations

import functools
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlinit_lib.core.params import (Choice, Config, Int, ParameterError, Str, check_choice, check_int,
                                   check_optional_int, param)

DATASETS = ("cifar10", "fashion_mnist", "synthetic")
SPLITS = ("train", "val", "test")
DEFAULT_VAL_SIZE = 5000    # CIFAR-10's usual 45,000 / 5,000 split of the training set
DATASET_CHANNELS = {"cifar10": 3, "fashion_mnist": 1, "synthetic": 3}   # image channels, known before loading
DATASET_CLASSES = {"cifar10": 10, "fashion_mnist": 10, "synthetic": 10}  # classes: chance accuracy is 1 / this
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is missing and could not be downloaded; the message says where to put it."""


@dataclass
class ImageData:
    """A whole image-classification dataset as tensors (uint8 images, int64 labels)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int = 10
    source: str = ""          # where the files were read from
    x_val: torch.Tensor | None = None   # held out of the training set: choices are made here
    y_val: torch.Tensor | None = None

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device) -> "ImageData":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        val = (None, None) if self.x_val is None else (move(self.x_val), move(self.y_val))
        return ImageData(self.name, move(self.x_train), move(self.y_train),
                         move(self.x_test), move(self.y_test), self.num_classes, self.source, *val)

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of ``which``: ``train``, ``val`` or ``test``."""
        check_choice("split", which, SPLITS)
        if which == "val" and self.x_val is None:
            raise ParameterError(f"dataset {self.name!r} was loaded without a validation split (val_size)")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    def __repr__(self) -> str:
        val = None if self.x_val is None else tuple(self.x_val.shape)
        return (f"ImageData({self.name!r}, train={tuple(self.x_train.shape)}, val={val}, "
                f"test={tuple(self.x_test.shape)}, device={self.device})")


def normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [-1, 1]; equals ToTensor() then Normalize(0.5, 0.5)."""
    return x.float().div_(127.5).sub_(1.0)


def load_dataset(
    name: str = "cifar10",
    root: str | os.PathLike = "data",
    *,
    download: bool = True,
    train_subset: int | None = None,
    test_subset: int | None = None,
    val_size: int | None = None,
    synthetic_train: int = 2048,
    synthetic_test: int = 512,
) -> ImageData:
    """Load ``name`` (``cifar10``, ``fashion_mnist`` or ``synthetic``) as an :class:`ImageData`.

    ``val_size`` training images are held out first as the validation split (``None``: none; the
    synthetic set draws them on top of its ``synthetic_train`` images);
    ``train_subset`` / ``test_subset`` then keep a fixed random subset of the rest (the same for
    every run and seed) so that short CPU profiles still use real data.
    """
    check_choice("dataset", name, DATASETS)
    check_optional_int("train_subset", train_subset, low=1)
    check_optional_int("test_subset", test_subset, low=1)
    check_optional_int("val_size", val_size, low=1)
    if name == "cifar10":
        data = _load_cifar10(Path(root), download)
    elif name == "fashion_mnist":
        data = _load_fashion_mnist(Path(root), download)
    else:
        check_int("synthetic_train", synthetic_train, low=10)
        check_int("synthetic_test", synthetic_test, low=10)
        data = make_synthetic(synthetic_train + (val_size or 0), synthetic_test)   # val drawn on top of train
    return _subset(_hold_out(data, val_size), train_subset, test_subset)


def make_synthetic(n_train: int = 2048, n_test: int = 512, channels: int = 3, seed: int = 0) -> ImageData:
    """CIFAR-shaped uint8 images whose class is a fixed random template plus noise.

    Learnable well above chance in a few epochs, so tests can check real learning
    without downloading anything.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(10, channels, 8, 8, generator=g)
    templates = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)

    def draw(n):
        y = torch.randint(0, 10, (n,), generator=g)
        noise = torch.randn(n, channels, 32, 32, generator=g)
        x = 128 + 30 * templates[y] + 70 * noise
        return x.clamp_(0, 255).to(torch.uint8), y

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return ImageData("synthetic", x_train, y_train, x_test, y_test, source=f"generated (seed {seed})")


def _hold_out(data: ImageData, val_size: int | None) -> ImageData:
    """Move a fixed random ``val_size`` of the training images into the validation split."""
    if val_size is None:
        return data
    if val_size >= len(data.y_train):
        raise ParameterError(f"val_size must be smaller than the training set of {data.name} "
                             f"({len(data.y_train)} images; got {val_size})")
    perm = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(3))
    val, train = perm[:val_size], perm[val_size:].sort().values
    return ImageData(data.name, data.x_train[train], data.y_train[train], data.x_test, data.y_test,
                     data.num_classes, data.source, data.x_train[val], data.y_train[val])


def _subset(data: ImageData, n_train: int | None, n_test: int | None) -> ImageData:
    def take(x, y, n, seed):
        if n is None or n >= len(y):
            return x, y
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
        return x[idx], y[idx]

    x_tr, y_tr = take(data.x_train, data.y_train, n_train, 1)
    x_te, y_te = take(data.x_test, data.y_test, n_test, 2)
    return ImageData(data.name, x_tr, y_tr, x_te, y_te, data.num_classes, data.source, data.x_val, data.y_val)


def _load_cifar10(root: Path, download: bool) -> ImageData:
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except Exception as exc:  # missing files, no network, corrupt archive
        raise DatasetNotFoundError(
            f"CIFAR-10 not found under {root / 'cifar-10-batches-py'} and could not be downloaded "
            f"({type(exc).__name__}). Download cifar-10-python.tar.gz from "
            "https://www.cs.toronto.edu/~kriz/cifar.html and extract it into "
            f"{root}/ (giving {root}/cifar-10-batches-py/), or run with dataset='fashion_mnist' "
            "or dataset='synthetic'."
        ) from None

    def as_tensors(ds):
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return x, torch.as_tensor(ds.targets, dtype=torch.int64)

    return ImageData("cifar10", *as_tensors(train), *as_tensors(test), source=str(root / "cifar-10-batches-py"))


def fashion_mnist_dirs(root: Path) -> list[Path]:
    """Directories searched, in order, for Fashion-MNIST's four idx ``.gz`` files."""
    return [root / "FashionMNIST" / "raw", root / "fashion-mnist", root / "fashion_mnist",
            root, DEBIAN_FASHION_MNIST]


def _load_fashion_mnist(root: Path, download: bool) -> ImageData:
    found = next((d for d in fashion_mnist_dirs(root)
                  if all((d / f).is_file() for f in _FMNIST_FILES.values())), None)
    if found is None and download:
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(root), train=True, download=True)
            FashionMNIST(str(root), train=False, download=True)
            found = root / "FashionMNIST" / "raw"
        except Exception:
            found = None
    if found is None:
        raise DatasetNotFoundError(
            f"Fashion-MNIST not found (looked in {', '.join(str(d) for d in fashion_mnist_dirs(root))}) "
            "and could not be downloaded. Put the four files "
            f"{', '.join(_FMNIST_FILES.values())} in {root}/fashion-mnist/, or on Debian/Ubuntu run "
            "'apt-get install dataset-fashion-mnist'."
        )
    arrays = {k: read_idx_gz(found / f) for k, f in _FMNIST_FILES.items()}

    def images(a):  # (N, 28, 28) -> (N, 1, 32, 32), zero border like the background
        return torch.nn.functional.pad(torch.from_numpy(a).unsqueeze(1), (2, 2, 2, 2))

    return ImageData(
        "fashion_mnist",
        images(arrays["train_images"]), torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        images(arrays["test_images"]), torch.from_numpy(arrays["test_labels"].astype(np.int64)), source=str(found),
    )


def read_idx_gz(path: Path) -> np.ndarray:
    """Read an idx file (the MNIST format) compressed with gzip, as uint8."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ParameterError(f"{path} is not an unsigned-byte idx file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def check_dataset(cfg) -> str:
    """Load the dataset a config names (``dataset``, ``data_root``, ``train_subset``, ``test_subset``,
    ``val_size``) before any work, so a missing one is a one-line ``DatasetNotFoundError`` saying how to get it;
    returns where it was found."""
    data = load_dataset(cfg.dataset, cfg.data_root, train_subset=cfg.train_subset, test_subset=cfg.test_subset,
                        val_size=cfg.val_size)
    return f"{cfg.dataset} from {data.source}"


@functools.lru_cache(maxsize=4)
def load_cached(name: str, root: str, train_subset: int | None, test_subset: int | None,
                device: str = "cpu", val_size: int | None = None) -> ImageData:
    """``load_dataset`` once per process and device: trials in one worker share the resident copy."""
    return load_dataset(name, root, train_subset=train_subset, test_subset=test_subset,
                        val_size=val_size).to(device)


@dataclass
class DataFields(Config):
    """The image-data fields every image study shares (one declaration; a study's config inherits them)."""

    dataset: str = param("cifar10", Choice(DATASETS))           # cifar10 | fashion_mnist | synthetic
    data_root: str = param("data", Str(), identity=False)      # where CIFAR-10 is (downloaded there if missing)
    train_subset: int | None = param(None, Int(low=1, optional=True, high=10_000_000))   # a fixed random subset (CPU profiles)
    test_subset: int | None = param(None, Int(low=1, optional=True, high=10_000_000))
    val_size: int = param(DEFAULT_VAL_SIZE, Int(low=1, high=10_000_000))       # training images held out for choosing (validation)

    def check_data(self) -> str:
        return check_dataset(self)

