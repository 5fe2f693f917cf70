"""The run store: one SQLite file per run directory, the single source of truth for what is finished.

Every notebook keeps its results in ``<output_dir>/store.sqlite`` (standard-library ``sqlite3``):

* ``meta``: the run's identity (the settings that change results), its latest config, and the
  environment record (device, versions, git commit, CPU flags, date), written when the store is made;
* ``units``: the finished trial keys (a trial may finish several units at once, e.g. a batch of DQN
  runs), with the trial's wall time;
* ``rows``: the result tables, one JSON row each, tagged with the trial that wrote it and the table name;
* ``failures``: trials that raised, with their one-line error (they are retried on the next run).

A trial's rows and its finished mark are written in one transaction, so a process killed at any
moment (``kill -9`` included) leaves either the whole trial or none of it; the next run rolls back a
half-written transaction and repeats only unfinished trials. CSV copies for readers are written
atomically (temporary file, then rename). Opening a store whose identity differs from the config
is refused with one line naming the first differing setting; a damaged file gives one line naming
it and what to do.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from rlinit_lib.core.params import ParameterError

STORE_FILE = "store.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units (unit TEXT PRIMARY KEY, trial TEXT NOT NULL, seconds REAL);
CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY AUTOINCREMENT, trial TEXT NOT NULL, tbl TEXT NOT NULL,
                                 data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rows_tbl ON rows (tbl);
CREATE TABLE IF NOT EXISTS failures (trial TEXT PRIMARY KEY, error TEXT NOT NULL, attempts INTEGER NOT NULL);
"""


class StoreError(RuntimeError):
    """A run store that cannot be used (damaged, or written by another kind of run); one line."""


def plain(value):
    """JSON-ready Python values from NumPy scalars, arrays and tuples (NaN stays NaN)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _dumps(value) -> str:
    return json.dumps(plain(value), sort_keys=True)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return plain(a) == plain(b)


class RunStore:
    """The store of one run directory (see the module docstring).

    ``notebook`` names the kind of run; ``identity`` the settings that change results; ``config`` the
    whole config (kept for readers); ``environment`` the record written once, when the store is made.
    """

    def __init__(self, output_dir: str | os.PathLike, notebook: str, identity: Mapping, config: Mapping | None = None,
                 environment: Mapping | None = None):
        self.dir = Path(output_dir)
        if self.dir.exists() and not self.dir.is_dir():
            raise ParameterError(f"output_dir must be a directory (got the file {str(self.dir)!r})")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / STORE_FILE
        self.notebook = notebook
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA synchronous=FULL")
            if self.db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is damaged ({exc}): delete it to start this run again, or use another "
                             "output_dir") from None
        old = self.meta("identity")
        if old is None:
            with self.transaction():
                self._set("notebook", notebook)
                self._set("identity", identity)
                self._set("environment", environment or {})
        else:
            kind = self.meta("notebook")
            if kind != notebook:
                raise StoreError(f"output_dir {str(self.dir)!r} holds a {kind} run, not {notebook}; use another "
                                 "output_dir")
            for k in list(identity) + [k for k in old if k not in identity]:
                if k not in old or k not in identity or not _same(old[k], identity[k]):
                    raise ParameterError(
                        f"output_dir {str(self.dir)!r} holds a run with {k}={old.get(k, '(unset)')!r} (now {k}="
                        f"{identity.get(k, '(unset)')!r}); use another output_dir or delete it")
        if config is not None:
            with self.transaction():
                self._set("config", config)
            self.write_json("config.json", config)
        if old is None:
            self.write_json("environment.json", environment or {})

    @classmethod
    def for_config(cls, cfg, environment: Mapping | None = None) -> "RunStore":
        """The store of a notebook config (``output_dir``, ``notebook``, ``identity()``, ``to_dict()``)."""
        return cls(cfg.output_dir, cfg.notebook, cfg.identity(), cfg.to_dict(), environment)

    # ---- low level ----
    def transaction(self):
        return _Transaction(self.db)

    def _set(self, key: str, value) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, _dumps(value)))

    def meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # ---- trials ----
    def finished(self) -> set[str]:
        """Every finished unit key."""
        return {r[0] for r in self.db.execute("SELECT unit FROM units")}

    def put(self, trial: str, tables: Mapping[str, Iterable[Mapping]], units: Iterable[str] | None = None,
            seconds: float | None = None) -> None:
        """Record a finished trial: its rows per table and its units (default: the trial key), atomically."""
        units = [trial] if units is None else list(units)
        with self.transaction():
            for unit in units:
                self.db.execute("INSERT INTO units VALUES (?, ?, ?)", (unit, trial, seconds))
            self.db.executemany("INSERT INTO rows (trial, tbl, data) VALUES (?, ?, ?)",
                                [(trial, name, _dumps(row)) for name, rows in tables.items() for row in rows])
            self.db.execute("DELETE FROM failures WHERE trial = ?", (trial,))

    def put_failure(self, trial: str, error: str) -> None:
        with self.transaction():
            self.db.execute("INSERT INTO failures VALUES (?, ?, 1) ON CONFLICT(trial) DO UPDATE SET "
                            "error = excluded.error, attempts = attempts + 1", (trial, error))

    def failures(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT trial, error, attempts FROM failures ORDER BY trial", self.db)

    def trial_rows(self, trial: str) -> dict[str, list[dict]]:
        """The tables one finished trial wrote (used to replay a sequential search)."""
        out: dict[str, list[dict]] = {}
        for tbl, data in self.db.execute("SELECT tbl, data FROM rows WHERE trial = ? ORDER BY id", (trial,)):
            out.setdefault(tbl, []).append(json.loads(data))
        return out

    def table(self, name: str, columns: list[str] | None = None, sort: list[str] | None = None,
              trials: Iterable[str] | None = None) -> pd.DataFrame:
        """The rows of table ``name`` (all, or those written by ``trials``; in the order written, or sorted
        by ``sort``)."""
        keep = None if trials is None else set(trials)
        rows = [json.loads(data) for trial, data in
                self.db.execute("SELECT trial, data FROM rows WHERE tbl = ? ORDER BY id", (name,))
                if keep is None or trial in keep]
        df = pd.DataFrame(rows, columns=columns) if columns is not None or not rows else pd.DataFrame(rows)
        if sort and len(df):
            df = df.sort_values(sort, kind="stable").reset_index(drop=True)
        return df

    # ---- files for readers ----
    def export(self, name: str, df: pd.DataFrame) -> Path:
        """Write ``df`` as ``<output_dir>/<name>.csv`` atomically; returns the path."""
        path = self.dir / f"{name}.csv"
        tmp = path.with_suffix(".csv.tmp")
        df.to_csv(tmp, index=False)
        os.replace(tmp, path)
        return path

    def write_json(self, name: str, value) -> Path:
        path = self.dir / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(plain(value), indent=2, default=str))
        os.replace(tmp, path)
        return path

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def stored_identity(output_dir: str | os.PathLike) -> dict:
    """The identity of the run store in ``output_dir`` (read-only), or {} when there is none."""
    path = Path(output_dir) / STORE_FILE
    if not path.is_file():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
    except sqlite3.DatabaseError:
        return {}          # a damaged store is reported when it is opened
    return json.loads(row[0]) if row else {}


def read_run(output_dir: str | os.PathLike) -> tuple[dict, Callable[[str], pd.DataFrame]] | None:
    """Another notebook's finished work, read-only: (its config, ``table(name) -> DataFrame``), or None when
    ``output_dir`` holds no run store. Used by notebooks that build on an earlier one's results."""
    path = Path(output_dir) / STORE_FILE
    if not path.is_file():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
    row = db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
    config = json.loads(row[0]) if row else {}

    def table(name: str) -> pd.DataFrame:
        return pd.DataFrame([json.loads(d) for (d,) in
                             db.execute("SELECT data FROM rows WHERE tbl = ? ORDER BY id", (name,))])

    return config, table


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, *exc):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
