"""Parameter checks shared by the library and the notebooks.

Every public entry point validates its arguments before any work starts. A bad
value raises :class:`ParameterError` whose message is a single line naming the
parameter and what is allowed, e.g. ``episodes must be an integer >= 1 (got 0)``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping


class ParameterError(ValueError):
    """A parameter outside its allowed range; the message is one line."""


def _fmt(value: Any) -> str:
    return repr(value)


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """An integer in ``[low, high]`` (booleans are rejected)."""
    rng = _range_text(low, high)
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        isinstance(value, float) and value.is_integer()
    ):
        raise ParameterError(f"{name} must be an integer{rng} (got {_fmt(value)})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ParameterError(f"{name} must be an integer{rng} (got {_fmt(value)})")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite number in ``[low, high]`` (or open ends when asked)."""
    lo = "" if low is None else ("> " if low_open else ">= ") + f"{low:g}"
    hi = "" if high is None else ("< " if high_open else "<= ") + f"{high:g}"
    rng = " " + " and ".join(p for p in (lo, hi) if p) if (lo or hi) else ""
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if not bad:
        value = float(value)
        if low is not None and (value <= low if low_open else value < low):
            bad = True
        if high is not None and (value >= high if high_open else value > high):
            bad = True
    if bad:
        raise ParameterError(f"{name} must be a number{rng} (got {_fmt(value)})")
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """One of a fixed set of values."""
    choices = list(choices)
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ParameterError(f"{name} must be one of {allowed} (got {_fmt(value)})")
    return value


def check_optional_int(name: str, value: Any, *, low: int | None = None) -> int | None:
    """``None`` or an integer >= low."""
    if value is None:
        return None
    try:
        return check_int(name, value, low=low)
    except ParameterError:
        raise ParameterError(
            f"{name} must be None or an integer{_range_text(low, None)} (got {_fmt(value)})"
        ) from None


def check_str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ParameterError(f"{name} must be a non-empty string (got {_fmt(value)})")
    return value


def check_known_names(where: str, given: Mapping[str, Any], known: Iterable[str]) -> None:
    """Reject names that a config does not define (typos in params files or ``-p``)."""
    known = set(known)
    unknown = sorted(set(given) - known)
    if unknown:
        raise ParameterError(
            f"unknown parameter {unknown[0]!r} for {where}; known parameters: {', '.join(sorted(known))}"
        )


def config_from_dict(cls, values: Mapping[str, Any], where: str):
    """Build a dataclass config from a mapping, refusing unknown names, then validate it."""
    names = [f.name for f in dataclasses.fields(cls)]
    check_known_names(where, values, names)
    cfg = cls(**dict(values))
    cfg.validate()
    return cfg


def _range_text(low: Any, high: Any) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def check_scale_range(min_scale: Any, max_scale: Any) -> tuple[float, float]:
    """Two positive scales with min_scale < max_scale."""
    lo = check_float("min_scale", min_scale, low=0.0, low_open=True)
    hi = check_float("max_scale", max_scale, low=0.0, low_open=True)
    if lo >= hi:
        raise ParameterError(f"min_scale must be < max_scale (got min_scale={min_scale}, max_scale={max_scale})")
    return lo, hi


def check_child_training(cfg) -> None:
    """The child-network settings every notebook config shares (data, optimiser, activation, seed, device)."""
    from .data import DATASETS
    from .networks import ACTIVATIONS
    from .runtime import pick_device

    check_choice("dataset", cfg.dataset, DATASETS)
    check_str("data_root", cfg.data_root)
    check_optional_int("train_subset", cfg.train_subset, low=1)
    check_optional_int("test_subset", cfg.test_subset, low=1)
    check_int("batch_size", cfg.batch_size, low=1)
    check_float("lr", cfg.lr, low=0.0, low_open=True)
    check_choice("activation", cfg.activation, ACTIVATIONS)
    check_int("seed", cfg.seed, low=0)
    pick_device(cfg.device)
    check_str("output_dir", cfg.output_dir)
    check_choice("progress", cfg.progress, (True, False))


class NotebookConfig:
    """Base of the notebooks' dataclass configs: ``from_dict`` refuses unknown names and validates."""

    notebook = "notebook"

    def validate(self):
        raise NotImplementedError

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]):
        return config_from_dict(cls, values, cls.notebook)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
