"""In a real browser: JupyterLab on 127.0.0.1 with a token, notebook 01 prepared with the smoke profile and run with
Run All, the scale explorer's slider moved by a key press; and the study's static report site opened from disk.
Screenshots go to build/browser/."""
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rlinit_lib.report_site import build_site
from rlinit_lib.run_notebooks import main

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "build" / "browser"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving a folder with the smoke-prepared 01_search notebook; yields (url, token)."""
    work = tmp_path_factory.mktemp("lab")
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert main(["--profile", "smoke", "--only", "01_search", "--prepare-only", str(work),
                     "--outputs-root", str(work / "outputs")]) == 0
    finally:
        os.chdir(cwd)
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(work / ".jupyter"), "JUPYTER_RUNTIME_DIR": str(work / ".runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(work / ".settings"), "JUPYTERLAB_WORKSPACES_DIR": str(work / ".workspaces")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--LabApp.expose_app_in_browser=True",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"] + (["--allow-root"] if os.getuid() == 0 else [])
    news = work / ".settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')       # no "get notified about Jupyter news?" toast over the page
    log = open(work / "lab.log", "w")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600          # a hang guard: the loop ends when the server answers
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            assert proc.poll() is None and time.time() < deadline, (work / "lab.log").read_text()[-2000:]
            time.sleep(0.5)
    yield url, token
    os.killpg(proc.pid, signal.SIGTERM)       # the server and the kernels it started
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def wait_for(driver, script: str, timeout: float, what: str):
    """Poll a JavaScript expression until it is truthy; returns its value."""
    deadline = time.time() + max(timeout, 300)   # a hang guard, not a speed check: a loaded machine must not fail
    while time.time() < deadline:
        value = driver.execute_script(f"return {script}")
        if value:
            return value
        time.sleep(0.5)
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / "failure.png"))
    raise AssertionError(f"timed out after {max(timeout, 300)} s waiting for {what} (screenshot: build/browser/failure.png)")


def test_the_explorer_renders_in_jupyterlab_and_a_key_press_redraws_it(chromium, lab):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, token = lab
    chromium.get(f"{url}/lab/tree/01_search.ipynb?token={token}")
    wait_for(chromium, "window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')", 120, "the notebook")
    panel = "[...jupyterapp.shell.widgets('main')].find(w => w.sessionContext)"   # headless: nothing has focus
    wait_for(chromium, f"(() => {{ const w = {panel}; return w && w.sessionContext.session && "
                       "w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === 'idle'; })()", 120,
             "an idle kernel")
    chromium.execute_script(f"const w = {panel}; jupyterapp.shell.activateById(w.id); "
                            "jupyterapp.commands.execute('notebook:run-all-cells')")
    handle = wait_for(chromium, "document.querySelector('.widget-slider .noUi-handle')", 240, "the explorer's slider")
    readout = chromium.find_element(By.CSS_SELECTOR, ".widget-slider .widget-readout")
    image = wait_for(chromium, "document.querySelector('.jupyter-widgets img')", 60, "the explorer's figure")
    assert readout.text == "1.00" and chromium.find_element(By.CSS_SELECTOR, ".widget-slider").size["width"] >= 600
    before = image.get_attribute("src")
    handle.click()
    handle.send_keys(Keys.ARROW_RIGHT)
    wait_for(chromium, "document.querySelector('.widget-slider .widget-readout').textContent.trim() === '1.01'", 30,
             "the slider to step to 1.01")
    wait_for(chromium, f"document.querySelector('.jupyter-widgets img').src !== {json.dumps(before)}", 60,
             "the figure to be redrawn")
    assert len(chromium.find_elements(By.CSS_SELECTOR, ".jupyter-widgets img")) == 1     # one figure, in place
    errors = chromium.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] pre")
    assert not [e.text for e in errors if "Traceback" in e.text]
    SHOTS.mkdir(parents=True, exist_ok=True)
    chromium.save_screenshot(str(SHOTS / "01_explorer.png"))


def test_the_report_site_opens_offline_with_every_notebook(chromium, smoke_outputs, tmp_path):
    from selenium.webdriver.common.by import By

    from rlinit_lib.registry import NOTEBOOKS

    index = build_site(smoke_outputs, tmp_path / "site", "smoke")
    pages = list((tmp_path / "site").glob("*.html"))
    assert len(pages) == len(NOTEBOOKS) + 1
    for page in pages:                      # nothing loads from the network
        text = page.read_text()
        assert "<script src=" not in text and "unpkg.com" not in text and "cdnjs" not in text
    chromium.get(index.as_uri())
    sections = chromium.find_elements(By.CSS_SELECTOR, "section")
    assert [s.get_attribute("id") for s in sections] == list(NOTEBOOKS)
    for s in sections:
        assert s.find_element(By.CSS_SELECTOR, ".verdict").text.strip()
        img = s.find_element(By.TAG_NAME, "img")
        assert chromium.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
    SHOTS.mkdir(parents=True, exist_ok=True)
    chromium.save_screenshot(str(SHOTS / "report_index.png"))
    chromium.find_element(By.CSS_SELECTOR, "section[id='01_search'] a").click()
    assert "01_search" in chromium.title
    pictures = chromium.execute_script("return [...document.images].filter(i => i.naturalWidth > 0).length")
    assert pictures >= 3          # Fig. 5.1, reward against scale, and the explorer's picture
    cells = json.loads((smoke_outputs / "01_search.ipynb").read_text())["cells"]
    explorer = next(o["data"]["image/png"] for c in cells for o in c.get("outputs", [])
                    if "application/vnd.jupyter.widget-view+json" in o.get("data", {}))
    assert "".join(explorer).strip() in (tmp_path / "site" / "01_search.html").read_text()   # the static picture
