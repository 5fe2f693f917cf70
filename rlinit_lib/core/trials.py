"""The unit of work and where it runs: a :class:`Trial` is one training (what, with which seed), and
:func:`run_trials` runs a list of them into a :class:`~rlinit_lib.core.store.RunStore`, skipping the
finished ones and writing each result as soon as it arrives.

A trial is a module-level function and its keyword arguments (so it can be sent to another process),
returning its result tables ``{table name: [row, ...]}``; a ``"_log"`` entry (a dict of numbers) is
logged to the tracker and not stored. Results depend only on the arguments (every trial seeds
itself) and on the number of torch threads it runs with (a CPU convolution's sums are split by
thread), which is ``trial_cpus`` (default 1) under every executor. So every executor gives the same
tables for the same seeds on the same kind of machine, in whatever order trials finish.

Executors: ``serial`` (in this process, the default), ``processes`` (a pool of ``workers`` spawned
processes, kept for the life of this process) and ``ray`` (Ray tasks: a local Ray started inside the
run with ``workers`` CPUs, or an existing cluster at ``ray_address``; each trial asks for
``trial_cpus`` CPUs and ``trial_gpus`` GPUs, fractions allowed, and a trial whose worker process dies is
run again up to ``trial_retries`` times). The run store, not Ray, records what is finished: results are
written by this process as they arrive, so a driver killed mid-run resumes where it stopped. Another
executor plugs in by adding a class with ``run(calls)`` to :data:`EXECUTORS`; the studies do not change.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from rlinit_lib.core.notebook import progress_bar
from rlinit_lib.core.params import EXECUTORS as EXECUTOR_NAMES
from rlinit_lib.core.params import RAY_INSTALL, ParameterError, check_choice, check_int


@dataclass(frozen=True)
class Trial:
    """``fn(**kwargs)`` -> result tables. ``units``: the unit keys it finishes (default: its key);
    ``work``: what it will do, e.g. ``{"child epochs": 7}`` or ``{"environment steps": 50_000}``
    (summed over the trials and printed before the first one starts)."""

    key: str
    fn: Callable
    kwargs: dict = field(default_factory=dict)
    units: tuple = ()
    work: dict = field(default_factory=dict)

    @property
    def unit_keys(self) -> tuple:
        return self.units or (self.key,)


class TrialsFailed(RuntimeError):
    """Some trials raised; the others finished and are stored. One line."""


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextlib.contextmanager
def torch_threads(threads: int):
    """Run the block with ``threads`` torch threads (a trial, or a probe that must time what a trial runs)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def call_trial(fn: Callable, kwargs: dict, threads: int = 1) -> tuple[str, object, float]:
    """Run one trial with ``threads`` torch threads; returns ("ok", tables, seconds) or ("error",
    one-line message, seconds)."""
    with torch_threads(threads):
        start = time.perf_counter()
        try:
            return "ok", fn(**kwargs), time.perf_counter() - start
        except Exception as exc:  # a failing trial must not stop the others
            return "error", one_line(exc), time.perf_counter() - start


def trial_threads(trial_cpus: float) -> int:
    return max(1, int(trial_cpus))


class SerialExecutor:
    """Trials one after another in this process."""

    def __init__(self, workers: int = 1, trial_cpus: float = 1.0, **_):
        self.threads = trial_threads(trial_cpus)

    def run(self, calls: Sequence[tuple[Callable, dict]]) -> Iterator[tuple[int, tuple]]:
        for i, (fn, kwargs) in enumerate(calls):
            yield i, call_trial(fn, kwargs, self.threads)


_POOLS: dict[int, cf.ProcessPoolExecutor] = {}


def _ignore_interrupts() -> None:
    # Jupyter interrupts and shuts down a kernel by signalling its whole process group: the parent handles
    # the interrupt and cancels the trials not started; idle workers would otherwise die with tracebacks
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def process_pool(workers: int) -> cf.ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes, started once and reused by later calls (a search calls
    ``run_trials`` once per batch); a pool broken by a dead worker is replaced."""
    pool = _POOLS.get(workers)
    if pool is None or getattr(pool, "_broken", False):
        # spawn, not fork: forking after torch has started its threads can deadlock
        pool = _POOLS[workers] = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                             initializer=_ignore_interrupts)
    return pool


class ProcessExecutor:
    """Trials in ``workers`` spawned processes; results in the order they finish."""

    def __init__(self, workers: int = 2, trial_cpus: float = 1.0, **_):
        self.workers, self.threads = check_int("workers", workers, low=1), trial_threads(trial_cpus)

    def run(self, calls):
        pool = process_pool(self.workers)
        futures = {pool.submit(call_trial, fn, kwargs, self.threads): i for i, (fn, kwargs) in enumerate(calls)}
        try:
            for fut in cf.as_completed(futures):
                try:
                    out = fut.result()
                except Exception as exc:   # the worker process died
                    out = ("error", one_line(exc), float("nan"))
                yield futures[fut], out
        finally:   # interrupted (or the caller stopped early): trials not started yet are dropped
            for fut in futures:
                fut.cancel()


def import_ray(local: bool):
    """Ray, imported only when asked for. ``local``: keep a Ray started here on 127.0.0.1 (Ray otherwise
    binds its servers to the machine's address) and without usage statistics."""
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # node address: the loopback
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ParameterError(f"executor 'ray' needs Ray, which is not installed here: {RAY_INSTALL}") from None
    if local:   # the constant is read at import: set it too in case Ray was imported before
        ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


class RayExecutor:
    """Trials as Ray tasks, on a local Ray (``ray_address`` None) or a cluster ('auto', 'ray://host:port')."""

    def __init__(self, workers: int = 2, ray_address: str | None = None, trial_cpus: float = 1.0,
                 trial_gpus: float = 0.0, trial_retries: int = 2, **_):
        self.workers, self.address = check_int("workers", workers, low=1), ray_address
        self.cpus, self.gpus, self.retries = trial_cpus, trial_gpus, check_int("trial_retries", trial_retries, low=0)

    def connect(self):
        ray = import_ray(local=self.address is None)
        if not ray.is_initialized():   # one Ray per process, kept for later calls (Ray shuts it down at exit)
            options = dict(include_dashboard=False, log_to_driver=False, configure_logging=False, namespace="rlinit")
            if self.address is None:   # local workers import what this process imports (its sys.path)
                path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
                ray.init(num_cpus=self.workers, runtime_env={"env_vars": {"PYTHONPATH": path}}, **options)
            else:
                ray.init(address=self.address, **options)
        return ray

    def run(self, calls):
        ray = self.connect()
        task = ray.remote(call_trial).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.retries)
        threads = trial_threads(self.cpus)
        refs = {task.remote(fn, kwargs, threads): i for i, (fn, kwargs) in enumerate(calls)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    out = ray.get(ref)
                except Exception as exc:   # the worker died more often than trial_retries allows
                    out = ("error", one_line(exc), float("nan"))
                yield refs[ref], out


EXECUTORS = {"serial": SerialExecutor, "processes": ProcessExecutor, "ray": RayExecutor}
assert set(EXECUTORS) == set(EXECUTOR_NAMES)


def run_trials(store, trials: Sequence[Trial], *, executor: str = "serial", workers: int = 2, tracker=None,
               progress: bool = False, desc: str = "trials", **executor_options) -> dict[str, dict]:
    """Run every unfinished trial of ``trials`` into ``store``; returns ``{key: tables}`` for all of them
    (finished ones read back from the store). Raises :class:`TrialsFailed` after the others finished
    when some raised; their errors are in ``store.failures()`` and a new run retries them.
    ``executor_options``: ``ray_address``, ``trial_cpus``, ``trial_gpus``, ``trial_retries`` (Ray)."""
    check_choice("executor", executor, EXECUTORS)
    keys = [t.key for t in trials]
    if len(set(keys)) != len(keys):
        raise ParameterError(f"trials must have distinct keys (got {len(keys) - len(set(keys))} repeated)")
    done = store.finished()
    todo = [t for t in trials if not set(t.unit_keys) <= done]
    failed = []
    if todo:
        if len(todo) > 1:   # a sequential search runs one trial at a time and announces its whole budget itself
            print(work_line(desc, todo, len(trials), executor, workers), flush=True)
        bar = progress_bar(len(todo), desc, progress)
        runner = EXECUTORS[executor](workers, **executor_options)
        first = None
        for n, (i, (status, out, seconds)) in enumerate(runner.run([(t.fn, t.kwargs) for t in todo])):
            t = todo[i]
            first = first or time.perf_counter()
            if n == min(workers, len(todo) - 2) and n > 0:   # a steady rate: after the workers' first round
                left = (time.perf_counter() - first) / n * (len(todo) - n - 1)
                print(f"{desc}: {n + 1} of {len(todo)} trials done; about {left / 60:.1f} min to go", flush=True)
            if status == "ok":
                out = dict(out)
                log = out.pop("_log", None)
                store.put(t.key, out, units=t.unit_keys, seconds=seconds)
                if tracker is not None:
                    tracker.log({"trial/seconds": seconds, **(log or {})})
                pause_point(n + 1)
            else:
                store.put_failure(t.key, out)
                failed.append((t.key, out))
            bar.update(1)
        bar.close()
    if failed:
        raise TrialsFailed(f"{len(failed)} of {len(todo)} trials failed (first: {failed[0][0]}: {failed[0][1]}); "
                           "finished trials are saved in the run store, and running again retries only the failed ones")
    return {t.key: store.trial_rows(t.key) for t in trials}


PAUSE_ENV = "RLINIT_PAUSE_AFTER"   # "N:PATH": after the Nth trial is stored, touch PATH.ready and wait for PATH


def pause_point(stored: int) -> None:
    """A point a test can stop a run at, deterministically: with ``RLINIT_PAUSE_AFTER=N:PATH`` set, the run
    signals (creates ``PATH.ready``) once its Nth trial of this call is in the store, then waits until ``PATH``
    exists; the crash-safety tests kill it there with SIGKILL instead of guessing a delay. Unset: nothing."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    n, _, path = spec.partition(":")
    if stored == int(n):
        open(path + ".ready", "w").close()
        while not os.path.exists(path):
            time.sleep(0.01)


def work_line(desc: str, todo: Sequence[Trial], total: int, executor: str, workers: int) -> str:
    """What a run is about to do, before its first trial (so a mistyped 10^9 shows in the first second)."""
    work: dict[str, float] = {}
    for t in todo:
        for k, v in t.work.items():
            work[k] = work.get(k, 0) + v
    what = "".join(f", {v:,.0f} {k}" for k, v in work.items())
    return f"{desc}: {len(todo)} of {total} trials to run{what} ({executor}, {workers} workers)"
