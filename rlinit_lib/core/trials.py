"""The unit of work and where it runs: a :class:`Trial` is one training (what, with which seed), and
:func:`run_trials` runs a list of them into a :class:`~rlinit_lib.core.store.RunStore`, skipping the
finished ones and writing each result as soon as it arrives.

A trial is a module-level function and its keyword arguments (so it can be sent to another process),
returning its result tables ``{table name: [row, ...]}``; a ``"_log"`` entry (a dict of numbers) is
logged to the tracker and not stored. Results depend only on the arguments (every trial seeds
itself), so every executor gives the same tables for the same seeds, in whatever order trials finish.

Executors: ``serial`` (in this process, the default) and ``processes`` (a pool of ``workers`` spawned
processes, each with ``cores // workers`` torch threads). Another executor plugs in by adding a class
with ``run(calls)`` to :data:`EXECUTORS`; the studies do not change.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from tqdm.auto import tqdm

from rlinit_lib.core.params import EXECUTORS as EXECUTOR_NAMES
from rlinit_lib.core.params import ParameterError, check_choice, check_int


@dataclass(frozen=True)
class Trial:
    """``fn(**kwargs)`` -> result tables. ``units``: the unit keys it finishes (default: its key)."""

    key: str
    fn: Callable
    kwargs: dict = field(default_factory=dict)
    units: tuple = ()

    @property
    def unit_keys(self) -> tuple:
        return self.units or (self.key,)


class TrialsFailed(RuntimeError):
    """Some trials raised; the others finished and are stored. One line."""


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def call_trial(fn: Callable, kwargs: dict) -> tuple[str, object, float]:
    """Run one trial; returns ("ok", tables, seconds) or ("error", one-line message, seconds)."""
    start = time.perf_counter()
    try:
        return "ok", fn(**kwargs), time.perf_counter() - start
    except Exception as exc:  # a failing trial must not stop the others
        return "error", one_line(exc), time.perf_counter() - start


class SerialExecutor:
    """Trials one after another in this process."""

    def __init__(self, workers: int = 1):
        pass

    def run(self, calls: Sequence[tuple[Callable, dict]]) -> Iterator[tuple[int, tuple]]:
        for i, (fn, kwargs) in enumerate(calls):
            yield i, call_trial(fn, kwargs)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class ProcessExecutor:
    """Trials in ``workers`` spawned processes; results in the order they finish."""

    def __init__(self, workers: int = 2):
        self.workers = check_int("workers", workers, low=1)

    def run(self, calls):
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        ctx = multiprocessing.get_context("spawn")   # fork after torch has started threads can deadlock
        with cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                    initargs=(threads,)) as pool:
            futures = {pool.submit(call_trial, fn, kwargs): i for i, (fn, kwargs) in enumerate(calls)}
            for fut in cf.as_completed(futures):
                try:
                    yield futures[fut], fut.result()
                except Exception as exc:   # the worker process died
                    yield futures[fut], ("error", one_line(exc), float("nan"))


EXECUTORS = {"serial": SerialExecutor, "processes": ProcessExecutor}
assert set(EXECUTORS) == set(EXECUTOR_NAMES)


def run_trials(store, trials: Sequence[Trial], *, executor: str = "serial", workers: int = 2, tracker=None,
               progress: bool = False, desc: str = "trials") -> dict[str, dict]:
    """Run every unfinished trial of ``trials`` into ``store``; returns ``{key: tables}`` for all of them
    (finished ones read back from the store). Raises :class:`TrialsFailed` after the others finished
    when some raised; their errors are in ``store.failures()`` and a new run retries them."""
    check_choice("executor", executor, EXECUTORS)
    keys = [t.key for t in trials]
    if len(set(keys)) != len(keys):
        raise ParameterError(f"trials must have distinct keys (got {len(keys) - len(set(keys))} repeated)")
    done = store.finished()
    todo = [t for t in trials if not set(t.unit_keys) <= done]
    failed = []
    if todo:
        bar = tqdm(total=len(todo), desc=desc, disable=not progress, leave=False)
        runner = EXECUTORS[executor](workers)
        for i, (status, out, seconds) in runner.run([(t.fn, t.kwargs) for t in todo]):
            t = todo[i]
            if status == "ok":
                out = dict(out)
                log = out.pop("_log", None)
                store.put(t.key, out, units=t.unit_keys, seconds=seconds)
                if tracker is not None:
                    tracker.log({"trial/seconds": seconds, **(log or {})})
            else:
                store.put_failure(t.key, out)
                failed.append((t.key, out))
            bar.update(1)
        bar.close()
    if failed:
        raise TrialsFailed(f"{len(failed)} of {len(todo)} trials failed (first: {failed[0][0]}: {failed[0][1]}); "
                           "finished trials are saved in the run store, and running again retries only the failed ones")
    return {t.key: store.trial_rows(t.key) for t in trials}
