"""The study protocol: what a study is, and the one function that runs any of them.

A study is a module (one per notebook) that defines

* ``Config``, its config class (``core.params``), and ``QUESTION``, what the notebook asks, in one sentence;
* ``trials(cfg, run)``: hands its trials to ``run(trials, desc)`` (a list of ``core.trials.Trial``; a fixed
  design calls it once, a sequential search once per round and reads each round's rows back; ``run.log``
  logs the study's own metrics to the run's tracker, ``run.finished()`` the units already in the store,
  ``run.unit_rows(unit)`` one unit's rows, also where a batch trial finished several units);
* ``tables(cfg, store, keys) -> Result``: the result tables read back from the run store (``keys``: every
  trial ``run`` was given), as a dataclass whose ``EXPORTS`` (a class attribute) name its DataFrame fields;
* ``report(cfg, result) -> core.notebook.Report`` and ``verdicts(cfg, result) -> DataFrame`` (the rows of
  ``core.verdicts.compare_family``, or of ``compare``): the same two names in every study.

``run(study, cfg)`` does the rest the same way for every study: validate, check the data, open the run
store (closed on every exit, a failed trial included), run the trials on the chosen executor with the
config's tracking and progress settings, read the tables back, export them as CSV, and return the result.
The registry (``rlinit_lib.registry``) lists the studies; the runner, the report site and the tests are
parametrised over it, so a registered study gets resume, refusal and bad-input tests without test code.
"""
from __future__ import annotations

from types import ModuleType
from typing import Sequence

from rlinit_lib.core.runtime import environment_info, seed_everything
from rlinit_lib.core.store import RunStore
from rlinit_lib.core.tracking import Tracker
from rlinit_lib.core.trials import Trial, run_trials

PROTOCOL = ("Config", "QUESTION", "trials", "tables", "report", "verdicts")


def check_study(study: ModuleType) -> ModuleType:
    """``study`` if it defines every name of the protocol; otherwise a one-line TypeError naming what is missing."""
    missing = [name for name in PROTOCOL if not hasattr(study, name)]
    if missing:
        raise TypeError(f"{study.__name__} is not a study: it lacks {', '.join(missing)} (see rlinit_lib.core.study)")
    return study


def run(study: ModuleType, cfg, **hooks):
    """Run (or resume) ``study`` for ``cfg``: every unfinished trial, then its tables, exported as CSV.
    ``hooks`` go to the study's ``trials`` (tests pass a toy reward there instead of training)."""
    check_study(study)
    cfg.validate()
    if not hooks:          # a hook replaces the training, and with it the data
        cfg.check_data()
    cfg.check_upstream()
    store = RunStore.for_config(cfg, cfg.environment() or environment_info("cpu"))
    try:
        seed_everything(cfg.seed)
        keys: list[str] = []
        with Tracker.for_run(cfg, f"{cfg.notebook}-seed{cfg.seed}") as tracker:
            def run_round(trials: Sequence[Trial], desc: str = "trials", progress: bool = True) -> dict[str, dict]:
                keys.extend(t.key for t in trials)
                return run_trials(store, trials, **cfg.execution(), tracker=tracker, progress=cfg.progress and progress,
                                  desc=desc)

            run_round.log = tracker.log          # a study's own metrics (a search's episodes) go to the same run
            run_round.finished = store.finished  # what an earlier run finished (a study that groups trials by it)
            run_round.unit_rows = store.unit_rows  # one unit's rows, also when a batch trial finished it
            study.trials(cfg, run_round, **hooks)
        result = study.tables(cfg, store, keys)
        for name in result.EXPORTS:
            store.export(name, getattr(result, name))
    finally:
        store.close()
    return result

