"""The run store: one SQLite file per run directory, the single source of truth for what is finished.

Every notebook keeps its results in ``<output_dir>/store.sqlite`` (standard-library ``sqlite3``):

* ``meta``: the run's identity (the settings that change results), its latest config, and the
  environment record (device, versions, git commit, CPU flags, date), written when the store is made;
* ``units``: the finished trial keys (a trial may finish several units at once, e.g. a batch of DQN
  runs), with the trial's wall time;
* ``rows``: the result tables, one JSON row each, tagged with the trial that wrote it and the table name;
* ``failures``: trials that raised, with their one-line error (they are retried on the next run).

* ``digests``: a SHA-256 of each finished trial's units and rows, written in the same transaction.

A trial's rows and its finished mark are written in one transaction, so a process killed at any
moment (``kill -9`` included) leaves either the whole trial or none of it; the next run rolls back a
half-written transaction and repeats only unfinished trials. CSV copies for readers are written
atomically (temporary file, then rename). Opening a store whose identity differs from the config
is refused with one line naming the first differing setting; a damaged file gives one line naming
it and what to do. Nothing passes silently: opening a store checks every trial's digest (SQLite keeps
no checksums of its own, so a changed digit in a row would otherwise be read back as a result), an
existing file that holds no run (emptied, say) is reported rather than started again, and one writer at
a time holds ``store.lock`` (an OS lock, released when its process ends however it ends, so a lock
left by a killed run is recognised as stale and taken over).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

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
CREATE TABLE IF NOT EXISTS digests (trial TEXT PRIMARY KEY, digest TEXT NOT NULL);
"""
LOCK_FILE = "store.lock"
_HELD: dict[Path, list] = {}   # output_dir -> [lock file, open stores of this process]


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
        self.path = self.dir / STORE_FILE
        self.notebook = notebook
        _make_dir(self.dir)
        self._lock = _acquire(self.dir)
        try:
            self._open(notebook, identity, config, environment)
        except sqlite3.OperationalError as exc:      # e.g. a read-only file or folder
            self.close()
            raise StoreError(f"{self.path} cannot be written ({exc}): make it writable, or use another output_dir") \
                from None
        except BaseException:
            self.close()
            raise

    def _open(self, notebook, identity, config, environment) -> None:
        existed = self.path.is_file()
        size = self.path.stat().st_size if existed else 0
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA synchronous=FULL")
            if self.db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
            self.db.executescript(_SCHEMA)
        except sqlite3.OperationalError as exc:
            raise StoreError(f"{self.path} cannot be written ({exc}): make it writable, or use another output_dir") \
                from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is damaged ({exc}): delete it to start this run again, or use another "
                             "output_dir") from None
        old = self.meta("identity")
        if old is None and existed:
            raise StoreError(f"{self.path} exists but holds no run ({size} bytes, no identity, no finished trial): "
                             "delete it to start this run again, or use another output_dir")
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
                if k.startswith("upstream ") and k in old and k in identity and not _same(old[k], identity[k]):
                    raise ParameterError(
                        f"output_dir {str(self.dir)!r}: {k.removeprefix('upstream ')}'s results changed since this "
                        f"run ({_first_change(old[k], identity[k])}); use another output_dir or delete it")
                if k not in old or k not in identity or not _same(old[k], identity[k]):
                    raise ParameterError(
                        f"output_dir {str(self.dir)!r} holds a run with {k}={old.get(k, '(unset)')!r} (now {k}="
                        f"{identity.get(k, '(unset)')!r}); use another output_dir or delete it")
            self.verify()
        if config is not None:
            with self.transaction():
                self._set("config", config)
            self.write_json("config.json", config)
        if old is None or not (self.dir / "environment.json").is_file():
            self.write_json("environment.json", self.meta("environment", {}))

    def verify(self) -> None:
        """Check every finished trial's rows against the digest written with them (StoreError naming the
        file and the first trial that does not match)."""
        stored = dict(self.db.execute("SELECT trial, digest FROM digests"))
        rows: dict[str, list[tuple[str, str]]] = {}
        for trial, tbl, data in self.db.execute("SELECT trial, tbl, data FROM rows ORDER BY id"):
            rows.setdefault(trial, []).append((tbl, data))
        units: dict[str, list[str]] = {}
        for unit, trial in self.db.execute("SELECT unit, trial FROM units ORDER BY unit"):
            units.setdefault(trial, []).append(unit)
        for trial in sorted(set(units) | set(rows) | set(stored)):
            if stored.get(trial) != _digest(trial, units.get(trial, []), rows.get(trial, [])):
                raise StoreError(f"{self.path}: the rows of trial {trial!r} do not match their checksum (the file was "
                                 "changed outside a run): delete it to start this run again, or use another output_dir")

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
        rows = [(name, _dumps(row)) for name, table in tables.items() for row in table]
        with self.transaction():
            for unit in units:
                self.db.execute("INSERT INTO units VALUES (?, ?, ?)", (unit, trial, seconds))
            self.db.executemany("INSERT INTO rows (trial, tbl, data) VALUES (?, ?, ?)", [(trial, *r) for r in rows])
            self.db.execute("INSERT INTO digests VALUES (?, ?)", (trial, _digest(trial, sorted(units), rows)))
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

    def unit_rows(self, unit: str) -> dict[str, list[dict]]:
        """The rows of one finished unit: its trial's rows, or, where a trial finished several units at once (a batch),
        those whose ``unit`` field names it (a StoreError where such a trial's rows name no unit). Empty when the unit
        is not finished."""
        found = self.db.execute("SELECT trial FROM units WHERE unit = ?", (unit,)).fetchone()
        if found is None:
            return {}
        rows = self.trial_rows(found[0])
        if self.db.execute("SELECT COUNT(*) FROM units WHERE trial = ?", found).fetchone()[0] == 1:
            return rows
        if any("unit" not in r for rs in rows.values() for r in rs):
            raise StoreError(f"trial {found[0]} finished several units but its rows do not name them: read it whole "
                             f"with trial_rows (unit {unit!r} in {self.path})")
        return {tbl: [r for r in rs if r["unit"] == unit] for tbl, rs in rows.items()}

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
        if getattr(self, "db", None) is not None:
            self.db.close()
            self.db = None
        if getattr(self, "_lock", None) is not None:
            _release(self.dir)
            self._lock = None

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


@dataclass
class Upstream:
    """Another notebook's finished run, read from its store (never from its CSV copies): its identity and
    config, ``table(name)``, and a ``fingerprint`` (its identity and a digest of every finished trial's
    checksum) that a study which uses these results puts into its own identity, so a changed upstream run is
    refused (see :class:`RunStore`) rather than relabelled."""

    notebook: str
    path: Path
    identity: dict
    config: dict
    digest: str
    db: sqlite3.Connection

    def table(self, name: str, trial_prefix: str = "") -> pd.DataFrame:
        """The rows of table ``name`` (those written by trials whose key starts with ``trial_prefix``)."""
        return pd.DataFrame([json.loads(d) for trial, d in
                             self.db.execute("SELECT trial, data FROM rows WHERE tbl = ? ORDER BY id", (name,))
                             if trial.startswith(trial_prefix)])

    def fingerprint(self, **used) -> dict:
        """What this run used of the upstream one: its identity, its digest and ``used`` (e.g. the scale)."""
        return {"identity": self.identity, "digest": self.digest, **plain(used)}


def read_upstream(output_dir: str | os.PathLike, notebook: str) -> Upstream:
    """``notebook``'s finished run in ``output_dir``, read-only and checked (its checksums), or one line:
    'run NN first', a file that is not a run store, or a store of another notebook."""
    path = Path(output_dir) / STORE_FILE
    if not path.is_file():
        raise StoreError(f"{notebook}'s results are not in {str(Path(output_dir))!r}: run {notebook} first "
                         "(with the same profile or outputs root)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
        stored = dict(db.execute("SELECT trial, digest FROM digests"))
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a readable run store ({exc}): run {notebook} again into that folder") \
            from None
    if meta.get("notebook") != notebook:
        raise StoreError(f"{path} holds a {meta.get('notebook')} run, not {notebook}: run {notebook} first")
    if not stored:
        raise StoreError(f"{path} holds no finished trial of {notebook}: run {notebook} first")
    store = RunStore.__new__(RunStore)          # the same checksum test as a writer's, read-only
    store.db, store.path = db, path
    store.verify()
    digest = hashlib.sha256(json.dumps(sorted(stored.items())).encode()).hexdigest()[:16]
    return Upstream(notebook, path, meta.get("identity", {}), meta.get("config", {}), digest, db)


def _first_change(old: dict, new: dict) -> str:
    """The first key of two upstream fingerprints that differs, as 'key: old -> new' (short)."""
    for k in sorted(set(old) | set(new)):
        if not _same(old.get(k), new.get(k)):
            a, b = (json.dumps(plain(x), sort_keys=True) for x in (old.get(k), new.get(k)))
            return f"{k}: {a[:60]} -> {b[:60]}"
    return "unchanged"


def _digest(trial: str, units: list[str], rows: list[tuple[str, str]]) -> str:
    h = hashlib.sha256(json.dumps([trial, units, rows]).encode())
    return h.hexdigest()


def _make_dir(path: Path) -> None:
    """``output_dir`` made (with its parents), or one line saying why it cannot be."""
    if path.exists() and not path.is_dir():
        raise ParameterError(f"output_dir must be a directory (got the file {str(path)!r})")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError):
        raise ParameterError(f"output_dir {str(path)!r} lies under a file, not a directory: use another output_dir") \
            from None
    except PermissionError:
        raise ParameterError(f"output_dir {str(path)!r} cannot be created here (permission denied): use another "
                             "output_dir") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ParameterError(f"output_dir {str(path)!r} is not writable: make it writable, or use another output_dir")


def _acquire(directory: Path):
    """Take ``store.lock`` of ``directory`` for this process (re-entrant within it), or one line naming the
    process that holds it. An OS lock (flock) dies with its process, so a killed run's lock is stale and
    is simply taken."""
    key = directory.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        return _HELD[key][0]
    path = directory / LOCK_FILE
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise StoreError(f"output_dir {str(directory)!r} is in use by another run ({holder}); wait for it to "
                         "finish, or use another output_dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"process {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
    f.flush()
    _HELD[key] = [f, 1]
    return f


def _release(directory: Path) -> None:
    key = directory.resolve()
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        fcntl.flock(held[0], fcntl.LOCK_UN)
        held[0].close()
        del _HELD[key]


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, *exc):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
