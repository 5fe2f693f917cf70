"""Notebook 05: search strategies compared on an equal budget of child-network epochs.

The dissertation used REINFORCE (Sec. 3.5) for one continuous number and compared it with nothing.
Each strategy is run ``repeats`` times. Repeat r of every strategy uses the same seed, so step i of
every strategy trains its child with the same seed (common random numbers): the design is paired
by repeat. A strategy's answer (recommendation) is scored against a dense reference grid trained
separately on fresh seeds: the reference's mean accuracy, linearly interpolated at the recommended
scale, estimates the accuracy that scale gets when retrained (not the lucky value the strategy saw).
Regret = best reference mean - that value; a hit = recommendation within ``tolerance`` of the
reference's best scale. Reference points and whole strategy runs are trials of the run store; a
strategy run interrupted midway is run again from its start (it is deterministic given its seed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rlinit_lib.core.notebook import Report, fmt
from rlinit_lib.core.params import Choice, Float, Int, ListOf, RunFields, check_scale_range, param
from rlinit_lib.core.plots import LINESTYLES, band
from rlinit_lib.core.runtime import derive_seed, seed_everything
from rlinit_lib.core.stats import paired_difference
from rlinit_lib.core.store import RunStore
from rlinit_lib.core.trials import Trial, run_config_trials
from rlinit_lib.scale_search.child import ChildTraining, result_row, train_child
from rlinit_lib.scale_search.strategies import STRATEGIES, make_strategy, run_strategy


@dataclass
class ComparisonConfig(ChildTraining, RunFields):
    """Every knob of notebook 05_search_strategies."""

    notebook = "05_search_strategies"

    strategies: list = param(list(STRATEGIES), ListOf(Choice(STRATEGIES), what="strategy names"), identity=False)
    repeats: int = param(5, Int(low=2), identity=False)   # runs per strategy (paired by repeat)
    budget: int = param(700, Int(low=1))                  # child-network epochs per run
    epochs: int = param(7, Int(low=1))                    # proxy horizon
    min_scale: float = param(0.3, Float(low=0.0, low_open=True))
    max_scale: float = param(1.7, Float(low=0.0, low_open=True))
    reference_scales: int = param(29, Int(low=3))         # dense reference grid
    reference_seeds: int = param(3, Int(low=1), identity=False)   # fresh seeds per reference scale
    tolerance: float = param(0.05, Float(low=0.0, low_open=True), identity=False)   # a hit lands this close
    checkpoints: list = param([0.1, 0.25, 0.5, 1.0], ListOf(Float(low=0.0, high=1.0, low_open=True),
                                                            what="budget fractions in (0, 1]"), identity=False)
    update_every: int = param(8, Int(low=1))              # episodes per update of reinforce_batched
    batch: int = param(32, Int(low=1))                    # proposals evaluated together
    output_dir: str = param("outputs/05_search_strategies", identity=False)

    def check(self):
        check_scale_range(self.min_scale, self.max_scale)
        Int(low=self.epochs)("budget", self.budget)


def reference_trial(child: dict, scale: float, seed_index: int, seed: int, epochs: int,
                    reward_fn: Callable | None = None) -> dict:
    """One point of the reference grid."""
    reward = (reward_fn(scale, epochs, seed) if reward_fn is not None else
              result_row(train_child(child, scale, epochs, seed))["reward"])
    return {"reference": [{"scale": scale, "seed_index": seed_index, "reward": reward}]}


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


def run_comparison(cfg: ComparisonConfig, reward_fn: Callable | None = None):
    """Train the reference grid and run every (strategy, repeat); returns (reference, histories).
    ``reward_fn(scale, epochs, seed) -> reward`` replaces training (tests use a toy curve)."""
    cfg.validate()
    store = RunStore.for_config(cfg, cfg.environment())
    seed_everything(cfg.seed)
    child = cfg.child()
    grid = np.linspace(cfg.min_scale, cfg.max_scale, cfg.reference_scales)
    settings = {k: getattr(cfg, k) for k in ("min_scale", "max_scale", "epochs", "budget", "update_every", "batch")}
    trials = [Trial(f"reference/{i}/{j}", reference_trial,
                    {"child": child, "scale": float(s), "seed_index": j, "seed": derive_seed(cfg.seed, 99, i, j),
                     "epochs": cfg.epochs, "reward_fn": reward_fn})
              for j in range(cfg.reference_seeds) for i, s in enumerate(grid)]
    trials += [Trial(f"strategy/{name}/{rep}", strategy_trial,
                     {"child": child, "name": name, "repeat": rep, "seed": derive_seed(cfg.seed, rep),
                      "settings": settings, "reward_fn": reward_fn})
               for name in cfg.strategies for rep in range(cfg.repeats)]
    run_config_trials(cfg, store, trials, f"strategies-seed{cfg.seed}", "reference points and strategy runs")
    keys = [t.key for t in trials]
    reference = store.table("reference", ["scale", "seed_index", "reward"], sort=["seed_index", "scale"], trials=keys)
    histories = store.table("histories", sort=["strategy", "repeat", "step"], trials=keys)
    store.export("reference", reference)
    store.export("histories", histories)
    store.close()
    return reference, histories


def reference_curve(reference: pd.DataFrame) -> pd.DataFrame:
    """Mean reference accuracy per scale (diverged runs count as accuracy 0)."""
    acc = reference.assign(accuracy=np.where(reference["reward"] < 0, 0.0, reference["reward"] / 10))
    return acc.groupby("scale", as_index=False)["accuracy"].mean().sort_values("scale")


def score(histories: pd.DataFrame, reference: pd.DataFrame, budget: int, checkpoints, tolerance: float) -> pd.DataFrame:
    """Each run's recommendation at each budget checkpoint, its estimated retrained accuracy,
    regret against the reference's best scale, and whether it lands within ``tolerance``."""
    curve = reference_curve(reference)
    best_scale = float(curve.loc[curve["accuracy"].idxmax(), "scale"])
    best_acc = float(curve["accuracy"].max())
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
    """Per strategy and budget: mean regret with a 95% percentile-bootstrap interval over repeats (it
    stays >= 0, as regret does), hit rate, mean recommendation."""
    rows = []
    for (name, c), g in scores.groupby(["strategy", "budget_fraction"]):
        m, lo, hi = (x[0] for x in band(g["regret"].to_numpy()[None, :], bounds=(0.0, 1.0)))
        rows.append({"strategy": name, "budget_fraction": c, "mean_regret": m, "regret_ci_low": lo,
                     "regret_ci_high": hi, "hit_rate": float(g["hit"].mean()),
                     "mean_recommendation": float(g["recommendation"].mean()), "runs": len(g)})
    return pd.DataFrame(rows)


def rl_verdict(scores: pd.DataFrame) -> dict:
    """The headline comparison at the full budget: the REINFORCE variant with the lowest mean regret
    against the best other strategy, by a paired t-test on regret per repeat (repeat r of both used
    the same child seeds). ``difference`` = RL regret - other regret (negative: RL better)."""
    full = scores[scores["budget_fraction"] == scores["budget_fraction"].max()]
    means = full.groupby("strategy")["regret"].mean().sort_values()
    rl = [s for s in means.index if s.startswith("reinforce")]
    other = [s for s in means.index if not s.startswith("reinforce")]
    if not rl or not other:
        return {}
    a = full[full["strategy"] == rl[0]].set_index("repeat")["regret"]
    b = full[full["strategy"] == other[0]].set_index("repeat")["regret"]
    common = a.index.intersection(b.index)
    d = paired_difference(a[common], b[common])
    return {"rl": rl[0], "other": other[0], "rl_regret": float(a.mean()), "other_regret": float(b.mean()),
            "difference": d["mean"], "ci_low": d["ci_low"], "ci_high": d["ci_high"], "p_value": d["p_value"],
            "pairs": d["n"]}


def describe_verdict(v: dict) -> str:
    if not v:
        return "Run both a REINFORCE variant and another strategy to compare them."
    head = (f"At the full budget the best REINFORCE variant (**{v['rl']}**) has mean regret {fmt(v['rl_regret'])} and "
            f"the best other strategy (**{v['other']}**) {fmt(v['other_regret'])}. Paired over {v['pairs']} repeats "
            f"(the same child seeds), RL minus other = {fmt(v['difference'])} (95% CI [{fmt(v['ci_low'])}, "
            f"{fmt(v['ci_high'])}], paired t-test p = {fmt(v['p_value'], 3)}). ")
    if not np.isfinite(v["ci_low"]):
        return head + "There is no interval (too few repeats, or no spread): nothing can be said."
    if v["ci_high"] < 0:
        return head + "**RL finds better scales than the best alternative here.**"
    if v["ci_low"] > 0:
        return head + "**A simpler method finds better scales: RL does not earn its place here.**"
    return head + ("**Not significant:** the interval contains 0, so these repeats do not separate them, and RL "
                   "shows no advantage that would pay for its extra machinery.")


def comparison_report(cfg: ComparisonConfig, reference: pd.DataFrame, histories: pd.DataFrame) -> Report:
    """What notebook 05 shows: the reference curve, regret and hit rate against budget, the final
    table and the paired verdict."""
    rep = Report(cfg.output_dir)
    curve = reference_curve(reference)
    scores = score(histories, reference, cfg.budget, cfg.checkpoints, cfg.tolerance)
    table = summarise(scores)
    best = scores["reference_best_scale"].iloc[0]
    rep.markdown(f"Reference grid: best scale {best:.3f} (mean accuracy {scores['reference_best_accuracy'].iloc[0]:.4f} "
                 f"over {cfg.reference_seeds} fresh seeds).")
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(16, 4.3))
    a1.plot(curve["scale"], curve["accuracy"], "k.-")
    a1.axvline(best, color="k", ls="--", lw=1, label=f"best s={best:.3f}")
    a1.set(xlabel="scale s", ylabel="mean test accuracy (reference, fresh seeds)", title="Reference grid")
    a1.legend(fontsize=7)
    n = table["strategy"].nunique()
    for i, (name, g) in enumerate(table.groupby("strategy")):
        x = g["budget_fraction"] * cfg.budget * (1 + 0.01 * (i - n / 2))   # a small offset keeps ties visible
        style = {"color": f"C{i % 10}", "ls": LINESTYLES[i % len(LINESTYLES)], "marker": "os^Dv<>ph"[i % 9]}
        a2.errorbar(x, g["mean_regret"], yerr=[g["mean_regret"] - g["regret_ci_low"], g["regret_ci_high"] - g["mean_regret"]],
                    capsize=2, label=name, **style)
        a3.plot(x, g["hit_rate"], label=name, **style)
    a2.set(xlabel="budget (child epochs)", ylabel="regret (accuracy): mean, 95% bootstrap CI",
           title="Regret against budget")
    a3.set(xlabel="budget (child epochs)", ylabel=f"share of runs within {cfg.tolerance} of the best scale",
           title="Hit rate against budget", ylim=(-0.05, 1.05))
    for ax in (a1, a2, a3):
        ax.grid(alpha=0.3)
    a2.legend(fontsize=7)
    a3.legend(fontsize=7)
    fig.tight_layout()
    rep.figure("strategies", fig, headline=True)
    rep.table("scores", scores, show=False)
    rep.table("summary", table, show=False)
    final = table[table["budget_fraction"] == max(cfg.checkpoints)].sort_values("mean_regret")
    rep.table("final", final, caption="At the full budget, best first")
    v = rl_verdict(scores)
    rep.verdict("## Verdict\n" + describe_verdict(v))
    return rep
