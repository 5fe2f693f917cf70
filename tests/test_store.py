"""The run store and the trial executor: atomic trials, one-line refusals, executors that agree."""
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlinit_lib.core.params import ParameterError
from rlinit_lib.core.store import STORE_FILE, RunStore, StoreError
from rlinit_lib.core.trials import Trial, TrialsFailed, run_trials


def square(x: float, fail: bool = False) -> dict:
    if fail:
        raise ValueError(f"bad input {x}\nsecond line")
    return {"squares": [{"x": x, "y": x * x, "z": np.float32(x) / 3}], "_log": {"y": x * x}}


def test_store_keeps_rows_and_units_and_reads_them_back_as_numbers(tmp_path):
    with RunStore(tmp_path, "nb", {"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 2], "progress": True}, {"device": "cpu"}) as s:
        s.put("t1", {"rows": [{"k": 1, "v": 0.5}, {"k": 2, "v": float("nan")}]}, units=["u1", "u2"], seconds=1.5)
        assert s.finished() == {"u1", "u2"}
        df = s.table("rows")
        assert list(df["k"]) == [1, 2] and np.isnan(df["v"][1])
        s.export("rows", df)
    back = pd.read_csv(tmp_path / "rows.csv")
    assert back["v"].dtype == float and back["k"].dtype == int
    assert (tmp_path / "environment.json").exists() and (tmp_path / "config.json").exists()
    with RunStore(tmp_path, "nb", {"a": 1, "b": (1, 2)}) as s:   # same identity (tuples are lists): reopens
        assert s.finished() == {"u1", "u2"} and s.meta("environment") == {"device": "cpu"}


def test_unit_rows_reads_one_unit_of_a_batch_trial_or_a_whole_single_trial(tmp_path):
    with RunStore(tmp_path, "nb", {"a": 1}) as s:
        s.put("batch/u1/2", {"runs": [{"unit": "u1", "v": 1.0}, {"unit": "u2", "v": 2.0}], "other": [{"unit": "u2"}]},
              units=["u1", "u2"])
        s.put("u3", {"runs": [{"v": 3.0}, {"v": 4.0}]})
        assert s.unit_rows("u1") == {"runs": [{"unit": "u1", "v": 1.0}], "other": []}
        assert s.unit_rows("u2") == {"runs": [{"unit": "u2", "v": 2.0}], "other": [{"unit": "u2"}]}
        assert s.unit_rows("u3") == s.trial_rows("u3") == {"runs": [{"v": 3.0}, {"v": 4.0}]}
        assert s.unit_rows("u4") == {} and s.unit_rows("batch/u1/2") == {}
        s.put("chunk", {"runs": [{"v": 5.0}, {"v": 6.0}]}, units=["u5", "u6"])    # a batch whose rows name no unit
        with pytest.raises(StoreError, match="^trial chunk finished several units but its rows do not name them"):
            s.unit_rows("u5")


def test_changed_identity_and_another_notebook_are_refused_in_one_line(tmp_path):
    RunStore(tmp_path, "nb", {"epochs": 1, "lr": 0.1}).close()
    with pytest.raises(ParameterError, match=r"^output_dir '.*' holds a run with lr=0.1 \(now lr=0.2\); use another "
                                             r"output_dir or delete it$"):
        RunStore(tmp_path, "nb", {"epochs": 1, "lr": 0.2})
    with pytest.raises(ParameterError, match=r"holds a run with extra='\(unset\)' \(now extra=3\)"):
        RunStore(tmp_path, "nb", {"epochs": 1, "lr": 0.1, "extra": 3})
    with pytest.raises(StoreError, match=r"holds a nb run, not other; use another output_dir$"):
        RunStore(tmp_path, "other", {"epochs": 1, "lr": 0.1})
    (tmp_path / "file").write_text("x")
    with pytest.raises(ParameterError, match=r"^output_dir must be a directory"):
        RunStore(tmp_path / "file", "nb", {})


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_a_damaged_store_is_named_in_one_line(tmp_path, damage):
    with RunStore(tmp_path, "nb", {"a": 1}) as s:
        for i in range(50):
            s.put(f"t{i}", {"rows": [{"i": i, "text": "x" * 500}]})
    path = tmp_path / STORE_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:100] + b"\xff" * 4096 + data[4196:])
    with pytest.raises(StoreError) as err:
        RunStore(tmp_path, "nb", {"a": 1}).table("rows")
    assert str(err.value).startswith(f"{path} is damaged") and "delete it" in str(err.value)
    assert "\n" not in str(err.value)


def test_kill_minus_9_during_writes_never_leaves_a_partial_trial(tmp_path):
    script = Path(__file__).parent / "store_writer.py"
    for k in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2 + k):                  # wait for 2 + k commits it announces, then kill it while it writes on
            assert proc.stdout.readline(), "the writer stopped before it was killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with RunStore(tmp_path, "writer", {"n": 1}) as s:
            done = s.finished()
            rows = s.table("rows")
            trials = {f"t{i}" for i in rows["trial"].unique()}
            # every finished trial has both its units and all its rows; no rows without a finished trial
            assert {u for u in done if u.startswith("t")} == trials
            assert {f"u{t[1:]}" for t in trials} == {u for u in done if u.startswith("u")}
            assert (rows.groupby("trial").size() == 200).all()
    assert len(trials) > 6


def test_run_trials_skips_finished_records_failures_and_executors_agree(tmp_path):
    trials = [Trial(f"sq/{x}", square, {"x": x}) for x in (1.0, 2.0, 3.0, 4.0)]
    with RunStore(tmp_path / "serial", "sq", {}) as s:
        out = run_trials(s, trials)
        assert out["sq/3.0"]["squares"][0]["y"] == 9.0
        serial = s.table("squares", sort=["x"])
        again = run_trials(s, trials + [Trial("sq/5.0", square, {"x": 5.0})])   # only the new one runs
        assert len(s.table("squares")) == 5 and again["sq/5.0"]["squares"][0]["y"] == 25.0
    with RunStore(tmp_path / "pool", "sq", {}) as s:
        run_trials(s, trials, executor="processes", workers=2)
        pd.testing.assert_frame_equal(s.table("squares", sort=["x"]), serial)
    with RunStore(tmp_path / "fail", "sq", {}) as s:
        bad = trials[:2] + [Trial("sq/bad", square, {"x": 7.0, "fail": True})] + trials[2:]
        with pytest.raises(TrialsFailed, match=r"^1 of 5 trials failed \(first: sq/bad: ValueError: bad input 7.0\); "
                                               r"finished trials are saved"):
            run_trials(s, bad, executor="processes", workers=2)
        assert len(s.table("squares")) == 4 and s.failures()["error"].tolist() == ["ValueError: bad input 7.0"]
        run_trials(s, trials)   # the failed trial is not in this list; the others are finished already
    with pytest.raises(ParameterError, match=r"^trials must have distinct keys \(got 1 repeated\)$"):
        run_trials(RunStore(tmp_path / "dup", "sq", {}), trials + trials[:1])


def test_executor_auto_runs_cpu_trials_in_one_single_thread_process_per_core(monkeypatch):
    import os

    from rlinit_lib.scale_search.proxy_fidelity import FidelityConfig

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    cpu = FidelityConfig(device="cpu").execution()
    assert cpu["executor"] == "processes" and cpu["workers"] == 4 and cpu["trial_cpus"] == 1.0
    assert FidelityConfig(device="cpu", trial_cpus=2).execution()["workers"] == 2
    assert FidelityConfig(device="cpu", workers=1).execution()["executor"] == "serial"
    assert FidelityConfig(device="cpu", executor="serial").execution()["executor"] == "serial"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert FidelityConfig(device="cpu").execution()["executor"] == "serial"   # one core: nothing to spread over


def test_a_store_written_before_the_protocol_changed_is_refused_in_one_line(tmp_path):
    """Issue 23 changed seeds, splits and verdicts: an older store must not be resumed and mixed in."""
    from rlinit_lib.scale_search.search import SearchConfig

    cfg = SearchConfig(output_dir=str(tmp_path), dataset="synthetic", precision="fp32")
    old = {k: v for k, v in cfg.identity().items() if k not in ("protocol", "val_size")}
    RunStore(tmp_path, cfg.notebook, old).close()
    with pytest.raises(ParameterError, match=r"^output_dir '.*' holds a run with protocol='\(unset\)' \(now "
                                             r"protocol=2\); use another output_dir or delete it$"):
        RunStore.for_config(cfg)


def _one_trial_store(path):
    with RunStore(path, "nb", {"a": 1}) as s:
        s.put("t1", {"rows": [{"k": 1, "v": 0.2578}]})
        s.put("t2", {"rows": [{"k": 2, "v": 0.5}]})


def test_a_changed_digit_in_a_finished_row_is_detected_naming_the_trial(tmp_path):
    import sqlite3

    _one_trial_store(tmp_path)
    db = sqlite3.connect(tmp_path / STORE_FILE)
    db.execute("UPDATE rows SET data = replace(data, '0.2578', '0.1578')")
    db.commit()
    db.close()
    assert sqlite3.connect(tmp_path / STORE_FILE).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with pytest.raises(StoreError, match=r"store.sqlite: the rows of trial 't1' do not match their checksum .*"
                                         r"delete it to start this run again, or use another output_dir$"):
        RunStore(tmp_path, "nb", {"a": 1})


def test_an_emptied_store_is_reported_not_restarted_and_a_lost_environment_record_is_rewritten(tmp_path):
    _one_trial_store(tmp_path)
    (tmp_path / "environment.json").unlink()
    with RunStore(tmp_path, "nb", {"a": 1}) as s:
        assert s.finished() == {"t1", "t2"}
    assert (tmp_path / "environment.json").is_file()
    (tmp_path / STORE_FILE).write_bytes(b"")
    with pytest.raises(StoreError, match=r"store.sqlite exists but holds no run \(0 bytes"):
        RunStore(tmp_path, "nb", {"a": 1})


def test_a_second_writer_is_refused_naming_the_first_and_a_killed_writers_lock_is_stale(tmp_path):
    """The first writer signals when it holds the store (a line on stdout), so nothing depends on timing."""
    code = ("import sys; from rlinit_lib.core.store import RunStore; s = RunStore(sys.argv[1], 'nb', {'a': 1}); "
            "print('ready', flush=True); sys.stdin.read()")
    first = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert first.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match=rf"^output_dir '.*' is in use by another run \(process {first.pid} on "
                                             r".*\); wait for it to finish, or use another output_dir$"):
            RunStore(tmp_path, "nb", {"a": 1})
    finally:
        first.kill()       # SIGKILL: no clean-up runs, the lock file stays behind
        first.wait()
    assert (tmp_path / "store.lock").exists()
    with RunStore(tmp_path, "nb", {"a": 1}) as s:   # the OS released the dead process's lock
        assert s.finished() == set()
    with RunStore(tmp_path, "nb", {"a": 1}), RunStore(tmp_path, "nb", {"a": 1}):   # one process may reopen it
        pass


@contextlib.contextmanager
def immutable(path: Path):
    """``chattr +i path`` for the block (so that even root cannot write it), undone afterwards; skips the test
    where the filesystem or the user cannot set the flag."""
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_an_immutable_directory_and_a_read_only_store_are_named_in_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    with immutable(locked):
        with pytest.raises(ParameterError, match=r"^output_dir '.*locked/out' cannot be created here \(permission "
                                                 r"denied\): use another output_dir$"):
            RunStore(locked / "out", "nb", {"a": 1})
    with RunStore(tmp_path / "s", "nb", {"a": 1}):
        pass
    with immutable(tmp_path / "s" / STORE_FILE):
        with pytest.raises(StoreError, match=r"store.sqlite cannot be written \(attempt to write a readonly database\): "
                                             r"make it writable, or use another output_dir$"):
            RunStore(tmp_path / "s", "nb", {"a": 1}, {"a": 1})


def test_output_dir_under_a_file_is_named_in_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ParameterError, match=r"^output_dir '.*f/out' lies under a file, not a directory"):
        RunStore(tmp_path / "f" / "out", "nb", {"a": 1})
    with pytest.raises(ParameterError, match=r"^output_dir must be a directory \(got the file"):
        RunStore(tmp_path / "f", "nb", {"a": 1})


def test_the_work_is_announced_before_the_first_trial(tmp_path, capsys):
    trials = [Trial(f"t{i}", square, {"x": i}, work={"child epochs": 10**9}) for i in range(6)]
    with RunStore(tmp_path, "nb", {"a": 1}) as s:
        run_trials(s, trials[:1])
        capsys.readouterr()
        run_trials(s, trials, desc="grid")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "grid: 5 of 6 trials to run, 5,000,000,000 child epochs (serial, 2 workers)"
    assert out[1].startswith("grid: 3 of 5 trials done; about ") and out[1].endswith(" min to go")


def test_an_upstream_run_is_read_checked_and_fingerprinted(tmp_path):
    from rlinit_lib.core.store import read_upstream

    with pytest.raises(StoreError, match=r"^02_x's results are not in '.*up': run 02_x first"):
        read_upstream(tmp_path / "up", "02_x")
    with RunStore(tmp_path / "up", "02_x", {"grid": 1}) as s:
        s.put("t1", {"runs": [{"scale": 1.0, "acc": 0.8}]})
    up = read_upstream(tmp_path / "up", "02_x")
    assert up.table("runs")["acc"].tolist() == [0.8] and up.identity == {"grid": 1}
    first = up.fingerprint(scale=1.0)
    with RunStore(tmp_path / "down", "06_y", {"upstream 02_x": first}):
        pass
    with RunStore(tmp_path / "up", "02_x", {"grid": 1}) as s:   # 02 gains a trial: its results changed
        s.put("t2", {"runs": [{"scale": 2.0, "acc": 0.7}]})
    changed = read_upstream(tmp_path / "up", "02_x").fingerprint(scale=2.0)
    with pytest.raises(ParameterError, match=r"^output_dir '.*down': 02_x's results changed since this run \(digest: "
                                             r".*\); use another output_dir or delete it$"):
        RunStore(tmp_path / "down", "06_y", {"upstream 02_x": changed})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / STORE_FILE).write_text("not a database at all" * 100)
    with pytest.raises(StoreError, match=r"is not a readable run store .*: run 02_x again into that folder$"):
        read_upstream(tmp_path / "bad", "02_x")
