"""Every study's run survives kill -9: the rerun's tables equal an uninterrupted run's. A damaged store, a changed
setting and a bad parameter are refused with one line. Parametrised over the registry (and the toy study that
is registered only in the tests), so a new study gets these tests by being registered."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from rlinit_lib.core.params import ParameterError
from rlinit_lib.core.store import STORE_FILE, StoreError
from rlinit_lib.core.trials import PAUSE_ENV
from tiny_runs import changed_setting, config, run, studies_under_test, study

NOTEBOOKS = studies_under_test()
SCRIPT = Path(__file__).parent / "tiny_runs.py"


def paused_run(tmp_path: Path, args: list[str], **popen) -> subprocess.Popen:
    """``tiny_runs.py args`` in a subprocess that stops after its first stored trial (``core.trials.pause_point``)
    and waits there; returns once it is waiting. A run that ends first is a failure, whatever the machine's speed."""
    gate = tmp_path / "gate"
    env = {**os.environ, PAUSE_ENV: f"1:{gate}"}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], env=env, **popen)
    while not Path(f"{gate}.ready").exists():
        assert proc.poll() is None, "the run ended before it stored its first trial"
        time.sleep(0.02)
    return proc


def finished_units(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.2) as db:
            return db.execute("SELECT count(*) FROM units").fetchone()[0]
    except sqlite3.Error:
        return 0


def tables(out: Path, exported) -> dict:
    return {t: pd.read_csv(out / f"{t}.csv").drop(columns=["seconds"], errors="ignore") for t in exported}


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_killed_run_resumes_to_the_uninterrupted_tables(tmp_path, notebook):
    proc = paused_run(tmp_path, [notebook, str(tmp_path / "cut")])
    os.kill(proc.pid, signal.SIGKILL)      # while it waits after its first stored trial: no guessed delay
    proc.wait()
    store = tmp_path / "cut" / STORE_FILE
    cut = finished_units(store)
    assert cut >= 1
    exported = run(notebook, config(notebook, tmp_path / "cut")).EXPORTS      # resume
    run(notebook, config(notebook, tmp_path / "full"))                        # uninterrupted
    resumed, full = tables(tmp_path / "cut", exported), tables(tmp_path / "full", exported)
    for name in full:
        pd.testing.assert_frame_equal(resumed[name], full[name], obj=f"{notebook}: {name}")
    assert finished_units(store) == finished_units(tmp_path / "full" / STORE_FILE)

    (tmp_path / "full" / STORE_FILE).write_bytes(b"garbage" * 100)
    with pytest.raises(StoreError) as err:
        run(notebook, config(notebook, tmp_path / "full"))
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "full" / STORE_FILE) in msg and "delete it" in msg


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_a_changed_setting_in_an_existing_output_dir_is_refused(tmp_path, notebook):
    from rlinit_lib.core.store import RunStore

    first = config(notebook, tmp_path / "o")
    RunStore(first.output_dir, first.notebook, first.identity()).close()   # as a first run leaves it
    name, value = changed_setting(notebook, tmp_path / "o")
    with pytest.raises(ParameterError) as err:
        run(notebook, config(notebook, tmp_path / "o", **{name: value}))
    assert str(err.value) == (f"output_dir {str(tmp_path / 'o')!r} holds a run with {name}={getattr(first, name)!r} "
                              f"(now {name}={value!r}); use another output_dir or delete it")


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_bad_input_stops_before_work_in_one_line_naming_it(tmp_path, notebook):
    out = tmp_path / "bad"
    with pytest.raises(ParameterError, match=rf"^unknown parameter 'no_such_knob' for {notebook}"):
        config(notebook, out, no_such_knob=1)
    name, _ = changed_setting(notebook, out)      # an integer setting of the run's identity
    for bad in (-10**12, "many"):
        with pytest.raises(ParameterError) as err:
            config(notebook, out, **{name: bad})
        assert name in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()
    assert study(notebook).QUESTION.endswith("?")
