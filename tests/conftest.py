import os

import pytest
import torch

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RLINIT_PROGRESS", "summary")   # nbval's kernels inherit it, as run_notebooks' do
torch.set_num_threads(min(2, torch.get_num_threads()))

from rlinit_lib.core.data import DEBIAN_FASHION_MNIST, load_dataset, make_synthetic  # noqa: E402


@pytest.fixture(scope="session")
def synthetic():
    return make_synthetic(n_train=512, n_test=256)


@pytest.fixture(scope="session")
def fashion_mnist():
    if not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists() and not os.path.isdir("data/fashion-mnist"):
        pytest.skip("Fashion-MNIST files not installed (apt-get install dataset-fashion-mnist)")
    return load_dataset("fashion_mnist", "data", download=False)
