import sys
import types

import pytest

from rlinit_lib.core.tracking import Tracker


def test_offline_run_creates_a_run_directory(tmp_path):
    with Tracker("offline", "rlinit-test", config={"a": 1}, directory=tmp_path) as t:
        t.log({"x": 1.0})
        assert t.run_dir is not None
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))


def test_broken_wandb_warns_and_the_run_goes_on(tmp_path, monkeypatch):
    broken = types.SimpleNamespace(init=lambda **kw: (_ for _ in ()).throw(RuntimeError("no network")))
    monkeypatch.setitem(sys.modules, "wandb", broken)
    with pytest.warns(UserWarning, match="wandb could not start.*no network"):
        t = Tracker("online", directory=tmp_path)
    t.log({"x": 1})  # no error
    t.finish()


def test_disabled_creates_nothing(tmp_path):
    Tracker("disabled", directory=tmp_path).finish()
    assert not (tmp_path / "wandb").exists()
