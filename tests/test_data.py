import gzip

import numpy as np
import pytest
import torch

from rlinit_lib.core import data as data_mod
from rlinit_lib.core.data import DatasetNotFoundError, load_dataset, normalise, read_idx_gz


def test_normalise_equals_totensor_then_normalize():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    expected = (x.float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(normalise(x), expected)
    assert normalise(x).min() == -1 and normalise(x).max() == 1


def test_synthetic_has_cifar_shapes_and_balanced_classes():
    d = load_dataset("synthetic", synthetic_train=1000, synthetic_test=200)
    assert d.x_train.shape == (1000, 3, 32, 32) and d.x_train.dtype == torch.uint8
    assert d.y_train.dtype == torch.int64 and set(d.y_train.tolist()) == set(range(10))
    assert d.x_test.shape == (200, 3, 32, 32)


def test_subsets_are_fixed_across_calls():
    a = load_dataset("synthetic", train_subset=100, test_subset=50)
    b = load_dataset("synthetic", train_subset=100, test_subset=50)
    assert torch.equal(a.x_train, b.x_train) and len(a.y_train) == 100 and len(a.y_test) == 50


def test_missing_cifar_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", tmp_path, download=False)
    msg = str(err.value)
    assert "\n" not in msg and "cifar-10-python.tar.gz" in msg and str(tmp_path) in msg


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", tmp_path, download=False)


def test_idx_reader_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = b"\x00\x00\x08\x03" + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(tmp_path / "x.gz", "wb") as f:
        f.write(header + arr.tobytes())
    np.testing.assert_array_equal(read_idx_gz(tmp_path / "x.gz"), arr)


def test_fashion_mnist_is_padded_to_32_with_one_channel(fashion_mnist):
    d = fashion_mnist
    assert d.x_train.shape == (60000, 1, 32, 32) and d.x_test.shape == (10000, 1, 32, 32)
    assert d.x_train[:, :, :2].max() == 0 and d.x_train[:, :, :, -2:].max() == 0  # zero border
    assert torch.bincount(d.y_test).tolist() == [1000] * 10
