import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RLINIT_PROGRESS", "summary")   # nbval's kernels inherit it, as run_notebooks' do
os.environ.setdefault("SE_OFFLINE", "true")           # Selenium: never download a driver, use Debian's
torch.set_num_threads(min(2, torch.get_num_threads()))

from rlinit_lib.core.data import DEBIAN_FASHION_MNIST, load_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def synthetic():
    """512 training, 128 validation (held out of the training draws) and 256 test images."""
    return load_dataset("synthetic", synthetic_train=512, synthetic_test=256, val_size=128)


@pytest.fixture(scope="session")
def fashion_mnist():
    if not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists() and not os.path.isdir("data/fashion-mnist"):
        pytest.skip("Fashion-MNIST files not installed (apt-get install dataset-fashion-mnist)")
    return load_dataset("fashion_mnist", "data", download=False)


@pytest.fixture(scope="session")
def smoke_outputs(tmp_path_factory):
    """``make run PROFILE=smoke`` (every notebook, in order), shared by the tests that read its outputs. When
    ``RLINIT_SMOKE_STORES`` names the output root of an earlier smoke run (``make test`` runs nbval's notebooks
    first and points it there), its run stores are copied in first: every notebook then executes again but
    resumes every trial from its store, which is the README's resume, end to end, without training twice."""
    from rlinit_lib.run_notebooks import main

    out = tmp_path_factory.mktemp("smoke")
    earlier = os.environ.get("RLINIT_SMOKE_STORES")
    if earlier and Path(earlier).is_dir():
        for store in Path(earlier).glob("*/store.sqlite"):   # the stores with their environment records
            shutil.copytree(store.parent, out / store.parent.name, ignore=shutil.ignore_patterns("wandb"))
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        status = main(["--profile", "smoke", "--outputs-root", str(out)])
    finally:
        os.chdir(cwd)
    assert status == 0, "the smoke profile failed: see the executed copies in " + str(out)
    return out


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """Headless Chromium driven by Selenium through Debian's chromedriver. Missing: a failure under CI=true (CI
    installs both), a skip elsewhere."""
    browser, driver_path = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (Path(browser).exists() and Path(driver_path).exists()):
        message = "the browser tests need Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1500,1100", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
