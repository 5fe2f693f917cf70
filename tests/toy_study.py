"""A toy study, registered only in the tests (``tiny_runs.studies_under_test``): it follows ``core.study`` and so
gets the resume, refusal and bad-input tests that every registered study gets, without test code of its own.

Each trial measures a noisy parabola ``y = (x - peak)^2 + noise`` at one point x with one seed."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rlinit_lib.core.notebook import Report
from rlinit_lib.core.params import Float, Int, RunFields, param
from rlinit_lib.core.runtime import derive_seed, stream_seed
from rlinit_lib.core.store import RunStore
from rlinit_lib.core.trials import Trial
from rlinit_lib.core.verdicts import Contrast, compare_family, verdict_table

QUESTION = "Is the parabola lower at x = 1 than at x = 0?"


@dataclass
class Config(RunFields):
    notebook = "toy_study"

    points: int = param(3, Int(low=2, high=100))             # x = 0, 1, ..., points - 1
    seeds: int = param(3, Int(low=2, high=100), identity=False)
    peak: float = param(1.0, Float())
    noise: float = param(0.1, Float(low=0.0))
    sesoi: float = param(0.5, Float(low=0.0, low_open=True))
    output_dir: str = param("outputs/toy_study", identity=False)


def measure(x: int, seed: int, peak: float, noise: float) -> dict:
    rng = np.random.default_rng(stream_seed(seed, "noise"))
    return {"points": [{"x": x, "seed": seed, "y": (x - peak) ** 2 + noise * float(rng.standard_normal())}]}


@dataclass(frozen=True)
class Result:
    points: pd.DataFrame
    EXPORTS = ("points",)


def trials(cfg: Config, run) -> None:
    run([Trial(f"{x}/{j}", measure, {"x": x, "seed": derive_seed(cfg.seed, j), "peak": cfg.peak, "noise": cfg.noise})
         for j in range(cfg.seeds) for x in range(cfg.points)], "points")


def tables(cfg: Config, store: RunStore, keys: list[str]) -> Result:
    return Result(store.table("points", ["x", "seed", "y"], sort=["x", "seed"], trials=keys))


def verdicts(cfg: Config, result: Result) -> pd.DataFrame:
    wide = result.points.pivot(index="seed", columns="x", values="y")
    return compare_family([Contrast("x = 1 - x = 0", wide[1].to_numpy(), wide[0].to_numpy(), paired=True)],
                          cfg.sesoi, primary=["x = 1 - x = 0"], higher_is_better=False)


def report(cfg: Config, result: Result) -> Report:
    rep = Report(cfg.output_dir)
    rep.table("points", result.points)
    return rep.verdict(verdict_table(verdicts(cfg, result)))
