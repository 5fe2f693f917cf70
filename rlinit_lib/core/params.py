"""Parameters: one-line checks, declarative rules, and the base of every notebook's config.

Every public entry point validates its arguments before any work starts. A bad value raises
:class:`ParameterError` whose message is a single line naming the parameter and what is allowed,
e.g. ``episodes must be an integer >= 1 (got 0)``.

A notebook's config is a dataclass whose fields are declared once with :func:`param`: the default,
the rule that checks it, and whether the setting changes results (``identity``: part of a run's
identity, so a changed value in an existing ``output_dir`` is refused). :class:`RunFields` holds the
fields every notebook shares (seed, executor, tracking, output).
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import math
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping


class ParameterError(ValueError):
    """A parameter outside its allowed range; the message is one line."""


# The study protocol's version, part of every run's identity. 2: choices on a validation split, random
# streams per purpose (core.runtime.stream_seed), verdicts with declared margins (issue 23).
PROTOCOL = 2
WANDB_MODES = ("offline", "online", "disabled")
EXECUTORS = ("serial", "processes", "ray")
EXECUTOR_CHOICES = ("auto",) + EXECUTORS   # auto: processes on a CPU with cores to spare, else serial
RAY_INSTALL = "pip install -e '.[ray]' (or: pip install 'ray>=2.9')"
MAX_LIST = 1000            # the longest list parameter: a bound that protects memory
RAY_CONNECT_TIMEOUT = 3.0   # seconds to reach a cluster's address before the run starts


def _range_text(low: Any, high: Any) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """An integer in ``[low, high]`` (booleans are rejected)."""
    rng = _range_text(low, high)
    if isinstance(value, bool) or not isinstance(value, int) and not (
        isinstance(value, float) and value.is_integer()
    ):
        raise ParameterError(f"{name} must be an integer{rng} (got {value!r})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ParameterError(f"{name} must be an integer{rng} (got {value!r})")
    return value


def check_float(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """A finite number in ``[low, high]`` (or open ends when asked)."""
    lo = "" if low is None else ("> " if low_open else ">= ") + f"{low:g}"
    hi = "" if high is None else ("< " if high_open else "<= ") + f"{high:g}"
    rng = " " + " and ".join(p for p in (lo, hi) if p) if (lo or hi) else ""
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if not bad:
        v = float(value)
        bad = (low is not None and (v <= low if low_open else v < low)) or \
              (high is not None and (v >= high if high_open else v > high))
    if bad:
        raise ParameterError(f"{name} must be a number{rng} (got {value!r})")   # the value as given
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """One of a fixed set of values."""
    choices = list(choices)
    if value not in choices:
        raise ParameterError(f"{name} must be one of {', '.join(repr(c) for c in choices)} (got {value!r})")
    return value


def check_optional_int(name: str, value: Any, *, low: int | None = None) -> int | None:
    """``None`` or an integer >= low."""
    if value is None:
        return None
    try:
        return check_int(name, value, low=low)
    except ParameterError:
        raise ParameterError(f"{name} must be None or an integer{_range_text(low, None)} (got {value!r})") from None


def check_str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ParameterError(f"{name} must be a non-empty string (got {value!r})")
    return value


def check_known_names(where: str, given: Mapping[str, Any], known: Iterable[str]) -> None:
    """Reject names that a config does not define (typos in params files or ``-p``)."""
    known = set(known)
    unknown = sorted(set(given) - known)
    if unknown:
        raise ParameterError(
            f"unknown parameter {unknown[0]!r} for {where}; known parameters: {', '.join(sorted(known))}")


def check_scale_range(min_scale: Any, max_scale: Any) -> tuple[float, float]:
    """Two positive scales with min_scale < max_scale."""
    lo = check_float("min_scale", min_scale, low=0.0, low_open=True)
    hi = check_float("max_scale", max_scale, low=0.0, low_open=True)
    if lo >= hi:
        raise ParameterError(f"min_scale must be < max_scale (got min_scale={min_scale}, max_scale={max_scale})")
    return lo, hi


# ---- declarative rules: callables (name, value) -> None that raise ParameterError ----

@dataclass(frozen=True)
class Int:
    low: int | None = None
    high: int | None = None
    optional: bool = False

    def __call__(self, name, value):
        if self.optional and value is None:
            return
        if self.optional:
            check_optional_int(name, value, low=self.low)
            if self.high is not None and value > self.high:
                raise ParameterError(f"{name} must be None or an integer <= {self.high}, a bound that protects memory "
                                     f"and run time (got {value!r})")
            return
        check_int(name, value, low=self.low)
        if self.high is not None and value > self.high:
            raise ParameterError(f"{name} must be an integer{_range_text(self.low, self.high)}, a bound that protects "
                                 f"memory and run time (got {value!r})")


@dataclass(frozen=True)
class Float:
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False

    def __call__(self, name, value):
        if not (self.optional and value is None):
            check_float(name, value, low=self.low, high=self.high, low_open=self.low_open, high_open=self.high_open)


@dataclass(frozen=True)
class Choice:
    options: tuple

    def __call__(self, name, value):
        check_choice(name, value, self.options)


@dataclass(frozen=True)
class Bool:
    """True or False, nothing else (``Choice((True, False))`` would take 1 and 0, which compare equal)."""

    def __call__(self, name, value):
        if not isinstance(value, bool):
            raise ParameterError(f"{name} must be one of True, False (got {value!r})")


BOOL = Bool()


@dataclass(frozen=True)
class Str:
    optional: bool = False

    def __call__(self, name, value):
        if not (self.optional and value is None):
            check_str(name, value)


@dataclass(frozen=True)
class ListOf:
    """A list whose items each pass ``item``; ``min_len``/``max_len`` bound its length (``max_len`` None:
    ``MAX_LIST``, a bound that protects memory); ``unique``: no value may repeat (a repeated arm or scale
    would be trained twice under one key)."""

    item: Callable
    min_len: int = 1
    max_len: int | None = None
    what: str = "values"
    unique: bool = True

    def __call__(self, name, value):
        n = len(value) if isinstance(value, (list, tuple)) else -1
        if n < self.min_len or (self.max_len is not None and n > self.max_len):
            size = (f"exactly {self.min_len}" if self.min_len == self.max_len else
                    f"{self.min_len} to {self.max_len}" if self.max_len is not None else f"at least {self.min_len}")
            raise ParameterError(f"{name} must be a list of {size} {self.what} (got {value!r})")
        if self.max_len is None and n > MAX_LIST:
            raise ParameterError(f"{name} must hold at most {MAX_LIST} {self.what}, a bound that protects memory "
                                 f"(got {n})")
        for v in value:
            self.item(name, v)
        if self.unique:
            seen = []
            for v in value:
                if v in seen:
                    raise ParameterError(f"{name} must not repeat a value (got {v!r} twice in {value!r})")
                seen.append(v)


def param(default, rule: Callable | None = None, *, identity: bool = True):
    """A config field declared once: its default, the rule that checks it, and whether it is part of a
    run's identity (a setting that changes results; ``False`` for settings such as ``progress``)."""
    kw = {"default_factory": lambda: copy.deepcopy(default)} if isinstance(default, (list, dict)) else {"default": default}
    return dataclasses.field(metadata={"rule": rule, "identity": identity}, **kw)


class Config:
    """Base of the notebooks' dataclass configs: fields declared with :func:`param`; ``from_dict``
    refuses unknown names and validates; ``identity()`` lists the result-changing settings."""

    notebook = "notebook"

    def validate(self):
        for f in dataclasses.fields(self):
            rule = f.metadata.get("rule")
            if rule is not None:
                rule(f.name, getattr(self, f.name))
        self.check()
        return self

    def check(self) -> None:
        """Checks that involve several fields (after every field passed its own rule)."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]):
        check_known_names(cls.notebook, values, [f.name for f in dataclasses.fields(cls)])
        return cls(**dict(values)).validate()

    @classmethod
    def defaults(cls) -> dict:
        return dataclasses.asdict(cls())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check_data(self) -> str:
        """Load what this run will train on, so that missing data fails in one line before any store or trial
        is made; returns where the data was found. Configs with data override it (``core.data.check_dataset``)."""
        return "no data"

    def check_upstream(self) -> None:
        """Check, before the run store is made, what this run reads of an earlier notebook's results (one line
        saying which notebook to run first). Run by ``core.study.run`` only, since a profile's notebooks are
        checked together before the earlier ones have run."""

    def identity(self) -> dict:
        """The settings that change results (fields declared with ``identity=True``), and the version of
        the study's protocol (``PROTOCOL``), so a store written under an older protocol is refused."""
        return {"protocol": PROTOCOL,
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("identity", True)}}


def executor_rule(name: str, value) -> None:
    """One of EXECUTOR_CHOICES; ``ray`` only where Ray can be imported (checked before any work)."""
    check_choice(name, value, EXECUTOR_CHOICES)
    if value == "ray":
        try:
            importlib.import_module("ray")
        except ImportError:
            raise ParameterError(f"{name} 'ray' needs Ray, which is not installed here: {RAY_INSTALL}") from None


def ray_address_rule(name: str, value) -> None:
    """None (a local Ray started inside the run), 'auto', or 'ray://host:port' / 'host:port' of a cluster,
    parsed and then reached (a TCP connection with a timeout of RAY_CONNECT_TIMEOUT s), so a wrong address
    fails here in one line instead of inside Ray, which retries an unreachable address for minutes."""
    if value is None or value == "auto":
        return
    form = (f"{name} must be None (a local Ray), 'auto' or a cluster address such as 'ray://head:10001' or "
            f"'head:6379' (got {value!r})")
    if not isinstance(value, str) or not value or " " in value:
        raise ParameterError(form)
    host, sep, port = value.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ParameterError(form)
    try:
        socket.create_connection((host, int(port)), timeout=RAY_CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise ParameterError(f"{name} {value!r}: nothing answers at {host}:{port} ({exc.strerror or exc}); start the "
                             "cluster there, or use ray_address None for a local Ray") from None


@dataclass
class RunFields(Config):
    """Fields every notebook has: the seed, where trials run, tracking, and where results go."""

    seed: int = param(0, Int(low=0))
    executor: str = param("auto", executor_rule, identity=False)         # auto | serial | processes | ray
    workers: int | None = param(None, Int(low=1, optional=True), identity=False)   # None: the usable CPU cores
    ray_address: str | None = param(None, ray_address_rule, identity=False)   # None: local Ray; auto; ray://host:port
    trial_cpus: float = param(1.0, Float(low=0.0, low_open=True), identity=False)   # Ray resources of one trial
    trial_gpus: float = param(0.0, Float(low=0.0), identity=False)       # fractions let trials share a GPU
    trial_retries: int = param(2, Int(low=0), identity=False)            # Ray: reruns of a trial whose worker died

    def environment(self) -> dict | None:
        """What the run store records about the machine; None: ``core.study.run`` records the CPU's (configs that
        train on a device override it)."""
        return None
    wandb_mode: str = param("offline", Choice(WANDB_MODES), identity=False)
    wandb_project: str = param("rlinit", Str(), identity=False)
    output_dir: str = param("outputs/run", Str(), identity=False)
    progress: bool = param(True, BOOL, identity=False)

    def execution(self) -> dict:
        """The keyword arguments of ``core.trials.run_trials`` that say where trials run.

        ``workers`` None is the number of CPU cores this process may use, divided by ``trial_cpus``.
        ``executor`` auto is ``processes`` when the trials train on the CPU (``device``, or ``dqn_device``)
        and there are workers for two or more trials at once, else ``serial``: on the 2-core CPU two
        single-thread processes train 02's grid 1.9x faster than one process (BENCHMARKS.md), and a
        GPU's trials stay in this process unless asked."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = self.workers or max(1, int(cores // max(1.0, self.trial_cpus)))
        executor = self.executor
        if executor == "auto":
            device = getattr(self, "device", None) or getattr(self, "dqn_device", "cpu")
            on_cpu = device == "cpu" or (device == "auto" and not cuda_available())
            executor = "processes" if on_cpu and workers >= 2 else "serial"
        return {"executor": executor, "workers": workers, "ray_address": self.ray_address,
                "trial_cpus": self.trial_cpus, "trial_gpus": self.trial_gpus, "trial_retries": self.trial_retries}


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (imported only when asked)."""
    import torch

    return torch.cuda.is_available()
