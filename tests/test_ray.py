"""executor: ray — a local Ray started inside the run, the same tables as serial, and faults survived:
a killed worker process, a killed driver, and no Ray installed."""
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from rlinit_lib.core.params import ParameterError
from rlinit_lib.core.store import RunStore
from rlinit_lib.core.trials import Trial, run_trials
from tiny_runs import config, run, slow_square

ray = pytest.importorskip("ray") if os.environ.get("CI") != "true" else __import__("ray")   # CI must have Ray
SCRIPT = Path(__file__).parent / "tiny_runs.py"


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    yield
    ray.shutdown()


def listening_addresses_of(pids: set[int]) -> set[str]:
    """The addresses that processes ``pids`` listen on (TCP, from /proc)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:   # LISTEN
                found.add(f[1].split(":")[0])
    return found


def ray_pids() -> set[int]:
    pids = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            except OSError:
                continue
            if b"ray" in cmd and int(d) != os.getpid():
                pids.add(int(d))
    return pids


def test_a_grid_on_a_local_ray_gives_the_serial_table_and_listens_only_on_loopback(tmp_path):
    cfg = config("02_proxy_fidelity", tmp_path / "ray", executor="ray", workers=2)
    run("02_proxy_fidelity", cfg)
    run("02_proxy_fidelity", config("02_proxy_fidelity", tmp_path / "serial"))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ray" / "runs.csv"), pd.read_csv(tmp_path / "serial" / "runs.csv"))
    addresses = listening_addresses_of(ray_pids())
    # 127.0.0.1, ::1 and ::ffff:127.0.0.1 as /proc writes them
    loopback = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}
    assert addresses and addresses <= loopback, addresses


def test_a_killed_worker_process_is_retried_and_every_trial_is_stored_once(tmp_path):
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    trials = [Trial(f"sq/{x}", slow_square, {"x": float(x), "pid_dir": str(pid_dir)}) for x in range(4)]
    store = RunStore(tmp_path / "s", "sq", {})
    # sqlite connections belong to their thread: the run gets its own
    worker = threading.Thread(target=lambda: run_trials(RunStore(tmp_path / "s", "sq", {}), trials, executor="ray",
                                                        workers=2, trial_retries=2))
    worker.start()
    while not list(pid_dir.iterdir()):      # the signal: a trial wrote its pid (it then waits for "release")
        assert worker.is_alive(), "the run ended before any trial started"
        time.sleep(0.05)
    victim = sorted(pid_dir.iterdir())[0]
    os.kill(int(victim.suffix[1:]), signal.SIGKILL)        # the worker process running that trial (it is waiting)
    (pid_dir / "release").touch()                          # now every trial, the killed one's retry too, may end
    worker.join(timeout=900)             # a hang guard only: every trial may end once released
    assert not worker.is_alive()
    table = store.table("squares", sort=["x"])
    assert list(table["x"]) == [0.0, 1.0, 2.0, 3.0] and list(table["y"]) == [0.0, 1.0, 4.0, 9.0]
    assert len(store.finished()) == 4 and store.failures().empty
    ran = [p.name for p in pid_dir.iterdir()
           if p.name != "release" and p.name.startswith(victim.name.split(".")[0] + ".")]
    assert len(ran) == 2                                   # the killed trial ran again, in another process


def test_a_killed_driver_resumes_to_the_uninterrupted_table(tmp_path):
    """On the toy study (tests/toy_study.py: seconds of work, so the time goes to starting Ray; the grid test above
    runs a real study on Ray)."""
    from test_crash_safety import paused_run

    proc = paused_run(tmp_path, ["toy_study", str(tmp_path / "cut"), "ray"], start_new_session=True)
    os.killpg(proc.pid, signal.SIGKILL)                    # the driver and the Ray it started
    proc.wait()
    run("toy_study", config("toy_study", tmp_path / "cut", executor="ray", workers=2))
    run("toy_study", config("toy_study", tmp_path / "full"))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "cut" / "points.csv"), pd.read_csv(tmp_path / "full" / "points.csv"))


def test_executor_ray_without_ray_installed_fails_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)          # what an environment without Ray gives: ImportError
    with pytest.raises(ParameterError) as err:
        config("01_search", tmp_path / "o", executor="ray")
    assert str(err.value) == ("executor 'ray' needs Ray, which is not installed here: pip install -e '.[ray]' "
                              "(or: pip install 'ray>=2.9')")
    assert not (tmp_path / "o").exists()
    with pytest.raises(ParameterError, match=r"^ray_address must be None \(a local Ray\), 'auto' or a cluster"):
        config("01_search", tmp_path / "o", ray_address="my cluster")


def test_a_ray_address_is_parsed_and_reached_before_any_work(tmp_path):
    """An address nobody listens on fails at once in one line (Ray itself retries it for minutes)."""
    with pytest.raises(ParameterError, match=r"^ray_address must be None .* \(got 'xx:yy'\)$"):
        config("01_search", tmp_path / "o", ray_address="xx:yy")
    with socket.socket() as s:            # a port that was free a moment ago: nothing answers there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ParameterError, match=rf"^ray_address '127.0.0.1:{port}': nothing answers at 127.0.0.1:{port}"):
        config("01_search", tmp_path / "o", ray_address=f"127.0.0.1:{port}")
    assert not (tmp_path / "o").exists()
    with socket.socket() as listening:    # something answering there passes the check
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        config("01_search", tmp_path / "o", ray_address=f"ray://127.0.0.1:{listening.getsockname()[1]}")
