"""Notebook 05: search strategies compared on an equal budget of child-network epochs.

The dissertation used REINFORCE (Sec. 3.5) for one continuous number and compared it with nothing.
Each strategy is run ``repeats`` times. Repeat r of every strategy uses the same seed, so step i of
every strategy trains its child with the same seed (common random numbers): the design is paired
by repeat. Strategies choose on validation accuracy (their reward); a strategy's answer
(recommendation) is scored against a dense reference grid trained separately on fresh seeds. The
reference optimum is the scale with the best mean *validation* accuracy; the accuracy reported for a
scale is the reference's mean *test* accuracy, linearly interpolated there (what that scale gets when
retrained, not the lucky value the strategy saw). Regret = test accuracy of the reference optimum -
test accuracy of the recommendation (it can be slightly negative, since the optimum is chosen on
validation); a hit = recommendation within ``tolerance`` of the reference optimum. Diverged runs are
kept and scored at chance accuracy (``core.verdicts.score_diverged``), and their rate is reported.

Declared before the run: the primary comparison is the dissertation's REINFORCE (``reinforce``) against
random search at the full budget, paired by repeat, on regret, read by ``core.verdicts.compare`` with
``sesoi``. The other pairs (each strategy against random search, and REINFORCE against each other
non-random strategy) form one exploratory family (``compare_family``). No comparison picks its
contestants from the data. Regret intervals are t intervals (``core.stats.interval``).

Reference points and whole strategy runs are trials of the run store; a strategy run interrupted
midway is run again from its start (it is deterministic given its seed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rlinit_lib.core.notebook import Report
from rlinit_lib.core.params import Choice, Float, Int, ListOf, RunFields, check_scale_range, param
from rlinit_lib.core.plots import LINESTYLES
from rlinit_lib.core.runtime import derive_seed
from rlinit_lib.core.stats import interval, wilson_interval
from rlinit_lib.core.verdicts import (ACCURACY_DIFFERENCE, Contrast, compare_family, score_diverged, sesoi_line,
                                      verdict_table)
from rlinit_lib.core.store import RunStore
from rlinit_lib.core.trials import Trial
from rlinit_lib.children.child import ChildTraining, result_row, train_child
from rlinit_lib.scale_search.strategies import STRATEGIES, make_strategy, run_strategy

CHANCE_ACCURACY = 0.1        # 10 classes: what a diverged reference run is scored at
PRIMARY = ("reinforce", "random")   # declared before the run: the dissertation's REINFORCE against random search
REFERENCE_COLUMNS = ["scale", "seed_index", "reward", "val_accuracy", "accuracy", "nan_detected"]
READING = {   # what the primary verdict means for the question "does RL earn its place?"
    "better": "REINFORCE finds scales with lower regret than random search: on this evidence RL earns its place.",
    "worse": "Random search finds scales with lower regret than REINFORCE: RL does not earn its place here.",
    "equivalent": "REINFORCE and random search are equivalent within the margin, so RL shows no advantage that "
                  "would pay for its extra machinery.",
    "inconclusive": "These repeats cannot say whether RL earns its place (see the seeds that would decide).",
}


QUESTION = ("Does RL earn its place against random search, grids, Bayesian optimisation and successive halving on "
            "the same budget?")


@dataclass
class ComparisonConfig(ChildTraining, RunFields):
    """Every knob of notebook 05_search_strategies."""

    notebook = "05_search_strategies"

    strategies: list = param(list(STRATEGIES), ListOf(Choice(STRATEGIES), what="strategy names"), identity=False)
    repeats: int = param(5, Int(low=2, high=1_000), identity=False)   # runs per strategy (paired by repeat)
    budget: int = param(700, Int(low=1, high=100_000))                  # child-network epochs per run
    epochs: int = param(7, Int(low=1, high=10_000))                    # proxy horizon
    min_scale: float = param(0.3, Float(low=0.0, low_open=True))
    max_scale: float = param(1.7, Float(low=0.0, low_open=True))
    reference_scales: int = param(29, Int(low=3, high=1_000))         # dense reference grid
    reference_seeds: int = param(3, Int(low=1, high=1_000), identity=False)   # fresh seeds per reference scale
    tolerance: float = param(0.05, Float(low=0.0, low_open=True), identity=False)   # a hit lands this close
    checkpoints: list = param([0.1, 0.25, 0.5, 1.0], ListOf(Float(low=0.0, high=1.0, low_open=True),
                                                            what="budget fractions in (0, 1]"), identity=False)
    update_every: int = param(8, Int(low=1, high=100_000))              # episodes per update of reinforce_batched
    batch: int = param(32, Int(low=1, high=10_000))                    # proposals evaluated together
    sesoi: float = param(0.005, Float(low=0.0, low_open=True))   # smallest regret difference of interest (accuracy)
    output_dir: str = param("outputs/05_search_strategies", identity=False)

    def check(self):
        check_scale_range(self.min_scale, self.max_scale)
        Int(low=self.epochs)("budget", self.budget)


Config = ComparisonConfig


def reference_row(result) -> dict:
    """The reference grid's record of one training: a ``result_row`` dict, or a toy reward (10 x accuracy,
    negative for a diverged run) used for both splits."""
    if isinstance(result, dict):
        return {k: result[k] for k in ("reward", "val_accuracy", "accuracy", "nan_detected")}
    bad = result < 0
    acc = float("nan") if bad else result / 10
    return {"reward": float(result), "val_accuracy": acc, "accuracy": acc, "nan_detected": bool(bad)}


def reference_trial(child: dict, scale: float, seed_index: int, seed: int, epochs: int,
                    reward_fn: Callable | None = None) -> dict:
    """One point of the reference grid: its validation and test accuracy."""
    result = (reward_fn(scale, epochs, seed) if reward_fn is not None else
              result_row(train_child(child, scale, epochs, seed)))
    return {"reference": [{"scale": scale, "seed_index": seed_index, **reference_row(result)}]}


def strategy_trial(child: dict, name: str, repeat: int, seed: int, settings: dict,
                   reward_fn: Callable | None = None) -> dict:
    """One whole run of one strategy; every proposal trained here, one after another."""
    s = settings
    strategy = make_strategy(name, s["min_scale"], s["max_scale"], s["epochs"], s["budget"], seed,
                             update_every=s["update_every"], parallel=s["batch"])

    def evaluate(proposals, steps, seeds):
        if reward_fn is not None:
            return [reward_fn(p.scale, p.epochs, sd) for p, sd in zip(proposals, seeds)]
        return [result_row(train_child(child, p.scale, p.epochs, sd)) for p, sd in zip(proposals, seeds)]

    h = run_strategy(strategy, evaluate, s["budget"], seed, batch=s["batch"])
    return {"histories": h.assign(strategy=name, repeat=repeat).to_dict("records")}


@dataclass(frozen=True)
class ComparisonResult:
    reference: pd.DataFrame     # one row per (reference scale, fresh seed): REFERENCE_COLUMNS
    histories: pd.DataFrame     # one row per (strategy, repeat, step)
    EXPORTS = ("reference", "histories")


def trials(cfg: ComparisonConfig, run, reward_fn: Callable | None = None) -> None:
    """The reference grid and every (strategy, repeat), one trial each. ``reward_fn(scale, epochs, seed) ->
    reward`` replaces training (tests use a toy curve)."""
    child = cfg.child()
    grid = np.linspace(cfg.min_scale, cfg.max_scale, cfg.reference_scales)
    settings = {k: getattr(cfg, k) for k in ("min_scale", "max_scale", "epochs", "budget", "update_every", "batch")}
    reference = [Trial(f"reference/{i}/{j}", reference_trial,
                       {"child": child, "scale": float(s), "seed_index": j, "seed": derive_seed(cfg.seed, 99, i, j),
                        "epochs": cfg.epochs, "reward_fn": reward_fn}, work={"child epochs": cfg.epochs})
                 for j in range(cfg.reference_seeds) for i, s in enumerate(grid)]
    strategies = [Trial(f"strategy/{name}/{rep}", strategy_trial,
                        {"child": child, "name": name, "repeat": rep, "seed": derive_seed(cfg.seed, rep),
                         "settings": settings, "reward_fn": reward_fn}, work={"child epochs": cfg.budget})
                  for name in cfg.strategies for rep in range(cfg.repeats)]
    run(reference + strategies, "reference points and strategy runs")


def tables(cfg: ComparisonConfig, store: RunStore, keys: list[str]) -> ComparisonResult:
    return ComparisonResult(store.table("reference", REFERENCE_COLUMNS, sort=["seed_index", "scale"], trials=keys),
                            store.table("histories", sort=["strategy", "repeat", "step"], trials=keys))


def reference_curve(reference: pd.DataFrame) -> pd.DataFrame:
    """Per scale: mean validation and test accuracy over the fresh seeds (diverged runs at chance accuracy),
    and the share that diverged."""
    bad = reference["nan_detected"].astype(bool)
    ref = reference.assign(val_accuracy=score_diverged(reference["val_accuracy"], bad, CHANCE_ACCURACY),
                           accuracy=score_diverged(reference["accuracy"], bad, CHANCE_ACCURACY), diverged=bad)
    curve = ref.groupby("scale", as_index=False).agg(
        val_accuracy=("val_accuracy", "mean"), accuracy=("accuracy", "mean"), diverged_rate=("diverged", "mean"),
        seeds=("seed_index", "nunique"))
    return curve.sort_values("scale")


def score(histories: pd.DataFrame, reference: pd.DataFrame, budget: int, checkpoints, tolerance: float) -> pd.DataFrame:
    """Each run's recommendation at each budget checkpoint, its retrained test accuracy (the reference's
    test curve there), regret against the reference optimum (chosen on validation, scored on test), and
    whether it lands within ``tolerance`` of that optimum."""
    curve = reference_curve(reference)
    best = curve.loc[curve["val_accuracy"].idxmax()]
    best_scale, best_acc = float(best["scale"]), float(best["accuracy"])
    rows = []
    for (name, rep), h in histories.groupby(["strategy", "repeat"]):
        for c in checkpoints:
            seen = h[h["budget_used"] <= c * budget]
            rec = seen["recommendation"].dropna().iloc[-1] if seen["recommendation"].notna().any() else np.nan
            acc = float(np.interp(rec, curve["scale"], curve["accuracy"])) if np.isfinite(rec) else np.nan
            rows.append({"strategy": name, "repeat": rep, "budget_fraction": c, "budget_epochs": c * budget,
                         "recommendation": rec, "retrained_accuracy": acc, "regret": best_acc - acc,
                         "hit": bool(np.isfinite(rec) and abs(rec - best_scale) <= tolerance)})
    return pd.DataFrame(rows).assign(reference_best_scale=best_scale, reference_best_accuracy=best_acc)


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    """Per strategy and budget: mean regret with its 95% t interval over repeats (``core.stats.interval``;
    regret lies in [-1, 1]), hit rate with a Wilson interval, mean recommendation, runs and how many had
    an answer by then."""
    rows = []
    for (name, c), g in scores.groupby(["strategy", "budget_fraction"]):
        iv = interval(g["regret"], bounds=(-1.0, 1.0))
        hits = int(g["hit"].sum())
        lo, hi = wilson_interval(hits, len(g))
        rows.append({"strategy": name, "budget_fraction": c, "mean_regret": iv.estimate, "regret_ci_low": iv.low,
                     "regret_ci_high": iv.high, "interval": iv.method, "hit_rate": hits / len(g), "hit_rate_low": lo,
                     "hit_rate_high": hi, "mean_recommendation": float(g["recommendation"].mean()), "runs": len(g),
                     "answered": int(g["recommendation"].notna().sum())})
    return pd.DataFrame(rows)


def divergence(histories: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Diverged trainings per source (the reference grid, each strategy's children), with a Wilson interval.
    A strategy's diverged child is told the dissertation's reward -2; a reference run is scored at chance."""
    flag = lambda df: df["nan_detected"].astype(bool) if "nan_detected" in df else df["reward"] < 0   # noqa: E731
    parts = [("reference grid", flag(reference))] + [(n, flag(h)) for n, h in histories.groupby("strategy")]
    rows = []
    for name, bad in parts:
        bad = bad.fillna(False).astype(bool)
        lo, hi = wilson_interval(int(bad.sum()), len(bad))
        rows.append({"source": name, "trainings": len(bad), "diverged": int(bad.sum()),
                     "rate": float(bad.mean()) if len(bad) else np.nan, "rate_low": lo, "rate_high": hi})
    return pd.DataFrame(rows)


def contrasts(scores: pd.DataFrame, strategies) -> list[Contrast]:
    """The comparisons at the full budget, fixed by the strategy list (never by the results): REINFORCE
    against random search (primary), every other strategy against random search, and REINFORCE against every
    other non-random strategy. Regret a - b, paired by repeat."""
    full = scores[scores["budget_fraction"] == scores["budget_fraction"].max()]
    wide = full.pivot(index="repeat", columns="strategy", values="regret").sort_index()
    a, b = PRIMARY
    others = [s for s in strategies if s not in PRIMARY and s in wide]
    pairs = [p for p in [(a, b)] + [(s, b) for s in others] + [(a, s) for s in others]
             if p[0] in wide and p[1] in wide]
    return [Contrast(f"{x} - {y}", wide[x].to_numpy(), wide[y].to_numpy(), paired=True) for x, y in pairs]


def strategy_verdicts(scores: pd.DataFrame, sesoi: float, strategies=None) -> pd.DataFrame:
    """The verdict table (``core.verdicts.compare_family`` on regret, lower is better): the primary
    comparison at alpha, the rest one exploratory family (Bonferroni)."""
    strategies = list(strategies) if strategies is not None else list(dict.fromkeys(scores["strategy"]))
    cs = contrasts(scores, strategies)
    primary = [f"{PRIMARY[0]} - {PRIMARY[1]}"] if any(c.name == f"{PRIMARY[0]} - {PRIMARY[1]}" for c in cs) else []
    return compare_family(cs, sesoi, primary=primary, higher_is_better=False, bounds=ACCURACY_DIFFERENCE)


def verdict_text(verdicts: pd.DataFrame, sesoi: float) -> str:
    """The verdict paragraph: the sesoi line, what the primary verdict means, and every comparison's sentence."""
    head = sesoi_line(sesoi, "accuracy (regret)", "the dissertation's REINFORCE against random search at the full "
                      "budget, regret on test accuracy, paired by repeat")
    primary = verdicts[verdicts["role"] == "primary"]
    if primary.empty:
        reading = "The primary comparison needs both `reinforce` and `random` among the strategies; it was not run."
    else:
        reading = READING[primary["verdict"].iloc[0]]
    return "\n".join([head, "", reading, "", verdict_table(verdicts)]) if len(verdicts) else head + "\n\n" + reading


def plot_comparison(curve: pd.DataFrame, table: pd.DataFrame, best: float, budget: int, tolerance: float):
    """Reference curve (validation and test), regret and hit rate against budget."""
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(16, 4.3))
    a1.plot(curve["scale"], curve["val_accuracy"], "b.--", label="validation")
    a1.plot(curve["scale"], curve["accuracy"], "k.-", label="test")
    a1.axvline(best, color="k", ls=":", lw=1, label=f"optimum (on validation) s={best:.3f}")
    a1.set(xlabel="scale s", ylabel="mean accuracy (reference, fresh seeds)", title="Reference grid")
    n = table["strategy"].nunique()
    for i, (name, g) in enumerate(table.groupby("strategy")):
        x = g["budget_fraction"] * budget * (1 + 0.01 * (i - n / 2))   # a small offset keeps ties visible
        style = {"color": f"C{i % 10}", "ls": LINESTYLES[i % len(LINESTYLES)], "marker": "os^Dv<>ph"[i % 9]}
        err = np.abs([g["mean_regret"] - g["regret_ci_low"], g["regret_ci_high"] - g["mean_regret"]])
        a2.errorbar(x, g["mean_regret"], yerr=err, capsize=2, label=name, **style)
        a3.plot(x, g["hit_rate"], label=name, **style)
    a2.set(xlabel="budget (child epochs)", ylabel="regret (test accuracy): mean, 95% t interval",
           title="Regret against budget")
    a3.set(xlabel="budget (child epochs)", ylabel=f"share of runs within {tolerance} of the optimum",
           title="Hit rate against budget", ylim=(-0.05, 1.05))
    for ax in (a1, a2, a3):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def verdicts(cfg: ComparisonConfig, result: ComparisonResult) -> pd.DataFrame:
    """``strategy_verdicts`` on this run's regret scores."""
    scores = score(result.histories, result.reference, cfg.budget, cfg.checkpoints, cfg.tolerance)
    return strategy_verdicts(scores, cfg.sesoi, cfg.strategies)


def report(cfg: ComparisonConfig, result: ComparisonResult) -> Report:
    """What notebook 05 shows: the reference curve, regret and hit rate against budget, divergence rates,
    the final table and the verdicts (primary and exploratory)."""
    rep = Report(cfg.output_dir)
    reference, histories = result.reference, result.histories
    curve = reference_curve(reference)
    scores = score(histories, reference, cfg.budget, cfg.checkpoints, cfg.tolerance)
    table = summarise(scores)
    best = scores["reference_best_scale"].iloc[0]
    rep.markdown(f"Reference grid: optimum s = {best:.3f} (best mean validation accuracy over {cfg.reference_seeds} "
                 f"fresh seeds; its test accuracy {scores['reference_best_accuracy'].iloc[0]:.4f}). Strategies choose "
                 f"on validation accuracy ({cfg.val_size} held-out training images); regret is in test accuracy. "
                 f"Paired over {scores['repeat'].nunique()} repeats: repeat r of every strategy trains its children "
                 "with the same seeds.")
    rep.figure("strategies", plot_comparison(curve, table, best, cfg.budget, cfg.tolerance), headline=True)
    rep.table("reference_curve", curve, show=False)
    rep.table("scores", scores, show=False)
    rep.table("summary", table, show=False)
    rep.table("divergence", divergence(histories, reference), caption="Diverged trainings (kept: a reference run is "
              f"scored at chance accuracy {CHANCE_ACCURACY:g}, a strategy's child gets the reward -2), with Wilson 95% "
              "intervals")
    final = table[table["budget_fraction"] == max(cfg.checkpoints)].sort_values("mean_regret")
    rep.table("final", final, caption="At the full budget (sorted by mean regret, for reading only: the comparisons "
              "below are fixed before the run)")
    rows = strategy_verdicts(scores, cfg.sesoi, cfg.strategies)
    rep.table("comparisons", rows, show=False)
    rep.verdict("## Verdict\n" + verdict_text(rows, cfg.sesoi))
    return rep
