"""Notebook 01: the dissertation's scale search, its figures, and a re-check of its pick on fresh seeds.

Source: the dissertation, Sec. 3.4-3.5 and 4.4.1 — N single-step episodes, each training a child
network for the proxy horizon and paying 10 x test accuracy (-2 on NaN); the chosen scale is the best
non-NaN episode; the s = 1.0 baseline is trained with the same proxy for comparison.

Deviation (issue 23): the reward is 10 x *validation* accuracy (``reward_split: val``, a split held out
of the training set), so the search never sees the test set; ``reward_split: test`` keeps the
dissertation's exact protocol. The numbers reported for the chosen scale are test accuracies. The
primary comparison, declared before the run, is the chosen scale against the baseline on
``recheck_seeds`` fresh paired seeds, read with ``core.verdicts`` and the margin ``sesoi``.

Every strategy of ``strategies`` runs through the same driver (``run_strategy``); ``reinforce`` is the
dissertation's agent (``update_every = 1``). Each episode is a trial of the run store, keyed by its
step: a search interrupted at any point and run again asks the (deterministic) strategy again and
answers the finished episodes from the store, so it continues at the first unfinished episode and
gives the table of an uninterrupted run. A larger ``episodes`` extends a finished search. After the
search, the best scale and the baseline are re-trained on ``recheck_seeds`` fresh paired seeds.

Deviation: child seeds are ``SeedSequence([seed, episode])`` (the strategies' common driver), not
drawn from ScaleEnv's generator as in the first version of this notebook; ScaleEnv stays the tested
Gymnasium face of the same reward (``scale_env``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rlinit_lib.core.notebook import Report, fmt
from rlinit_lib.core.params import BOOL, Choice, Float, Int, RunFields, check_scale_range, param
from rlinit_lib.core.runtime import derive_seed
from rlinit_lib.core.stats import interval
from rlinit_lib.core.verdicts import ACCURACY_DIFFERENCE, compare, sentence, sesoi_line
from rlinit_lib.core.store import RunStore, StoreError
from rlinit_lib.core.trials import Trial
from rlinit_lib.children.child import ChildTraining, result_row, train_child
from rlinit_lib.scale_search.plotting import plot_reward_vs_scale, plot_search_history, quadratic_peak
from rlinit_lib.scale_search.strategies import STRATEGIES, make_strategy, run_strategy

EPISODE_COLUMNS = ["episode", "epochs", "scale", "reward", "val_accuracy", "accuracy", "nan_detected", "policy_mean_scale", "policy_std",
                   "policy_loss", "final_train_loss", "final_train_accuracy", "child_seed", "seconds", "recommendation"]
RECHECK_COLUMNS = ["seed", "best_scale", "best_accuracy", "baseline_accuracy"]


QUESTION = ("Does the dissertation's REINFORCE search find a He scale better than s = 1.0 when re-checked on fresh "
            "paired seeds?")


@dataclass
class SearchConfig(ChildTraining, RunFields):
    """Every knob of notebook 01_search; defaults are the dissertation's (Sec. 4.4.1)."""

    notebook = "01_search"

    episodes: int = param(200, Int(low=1, high=100_000), identity=False)   # single-step episodes (more extends a search)
    epochs: int = param(7, Int(low=1, high=10_000))                       # proxy horizon
    strategy: str = param("reinforce", Choice(STRATEGIES))   # reinforce is the dissertation's
    min_scale: float = param(0.3, Float(low=0.0, low_open=True))
    max_scale: float = param(1.7, Float(low=0.0, low_open=True))
    agent_lr: float = param(1e-3, Float(low=0.0, low_open=True))   # Adam learning rate of the policy
    gamma: float = param(0.99, Float(low=0.0, high=1.0))
    update_every: int = param(1, Int(low=1, high=100_000))                 # episodes per policy update (trained together)
    baseline_scale: float = param(1.0, Float(low=0.0, low_open=True))
    recheck_seeds: int = param(5, Int(low=0, high=1_000), identity=False)   # fresh paired seeds for best vs baseline
    reward_split: str = param("val", Choice(("val", "test")))    # val: choose on held-out data; test: the source's
    sesoi: float = param(0.005, Float(low=0.0, low_open=True))   # smallest accuracy difference of interest
    seed: int = param(42, Int(low=0))
    output_dir: str = param("outputs/01_search", identity=False)
    explorer: bool = param(True, BOOL, identity=False)       # draw the interactive scale explorer

    def check(self):
        check_scale_range(self.min_scale, self.max_scale)


@dataclass
class SearchResult:
    table: pd.DataFrame         # one row per episode (EPISODE_COLUMNS)
    best: dict                  # best non-NaN episode
    baseline: dict              # s = baseline_scale with the same proxy
    recheck: pd.DataFrame       # best scale vs baseline on fresh paired seeds
    summary: dict               # everything written to results.json
    output_dir: Path
    sesoi: float = 0.005        # the margin the verdict used
    EXPORTS = ("episodes", "recheck")

    @property
    def episodes(self) -> pd.DataFrame:
        return self.table


Config = SearchConfig


def child_trial(child: dict, scale: float, epochs: int, seed: int) -> dict:
    """One episode's (or re-check's) child training, as a row of table ``children`` (the reward on
    ``child["reward_split"]``)."""
    row = result_row(train_child(child, scale, epochs, seed), child["reward_split"])
    return {"children": [{"scale": scale, "epochs": epochs, "seed": seed, **row}]}


def search(cfg: SearchConfig, train, log=None) -> tuple[pd.DataFrame, dict, dict, pd.DataFrame]:
    """The search top to bottom: ask, train (``train(items) -> {key: row}``), tell, until the budget is spent;
    then the baseline and the re-check of the best episode on fresh paired seeds. The strategy's choices depend
    only on its seed and the rewards, so calling this again with rows read back from the run store replays the
    same search without training. Returns (episodes, best episode, baseline row, re-check table)."""
    def evaluate(proposals, steps, seeds):
        rows = train([(f"episode/{st}", p.scale, p.epochs, sd) for p, st, sd in zip(proposals, steps, seeds)])
        out = []
        for p, st in zip(proposals, steps):
            row = rows[f"episode/{st}"]
            if abs(row["scale"] - p.scale) > 1e-9 or row["epochs"] != p.epochs:
                raise StoreError(f"episode {st} of the run store has scale {row['scale']} but the search now proposes "
                                 f"{p.scale}: the store belongs to another search; delete it or use another output_dir")
            out.append({k: v for k, v in row.items() if k not in ("scale", "epochs", "seed")})
        return out

    strategy = make_strategy(cfg.strategy, cfg.min_scale, cfg.max_scale, cfg.epochs, cfg.episodes * cfg.epochs,
                             cfg.seed, update_every=cfg.update_every, agent_lr=cfg.agent_lr, gamma=cfg.gamma,
                             reinforce_update_every=cfg.update_every)
    history = run_strategy(strategy, evaluate, cfg.episodes * cfg.epochs, cfg.seed, on_batch=log, batch=cfg.update_every)
    table = history.rename(columns={"step": "episode", "seed": "child_seed"}).reindex(columns=EPISODE_COLUMNS)
    best = best_episode(table)
    baseline = train([("baseline", cfg.baseline_scale, cfg.epochs, cfg.seed)])["baseline"]
    recheck = []
    if best:
        seeds = [derive_seed(cfg.seed, 1_000_000 + i) for i in range(cfg.recheck_seeds)]
        rows = train([(f"recheck/{best['scale']!r}/{i}/{which}", s, cfg.epochs, sd) for i, sd in enumerate(seeds)
                      for which, s in (("best", best["scale"]), ("baseline", cfg.baseline_scale))])
        recheck = [{"seed": sd, "best_scale": best["scale"],
                    "best_accuracy": rows[f"recheck/{best['scale']!r}/{i}/best"]["accuracy"],
                    "baseline_accuracy": rows[f"recheck/{best['scale']!r}/{i}/baseline"]["accuracy"]}
                   for i, sd in enumerate(seeds)]
    return table, best, baseline, pd.DataFrame(recheck, columns=RECHECK_COLUMNS)


def trials(cfg: SearchConfig, run, evaluator=None) -> None:
    """The search's trials, one round per policy update (``evaluator(child, scale, epochs, seed) -> tables``
    replaces ``child_trial``: tests use a toy reward)."""
    fn, child = evaluator or child_trial, {**cfg.child(), "reward_split": cfg.reward_split}

    def train(items: list[tuple[str, float, int, int]]) -> dict[str, dict]:
        out = run([Trial(key, fn, {"child": child, "scale": s, "epochs": e, "seed": sd}, work={"child epochs": e})
                   for key, s, e, sd in items], "children", progress=len(items) > 1)
        return {k: v["children"][0] for k, v in out.items()}

    def log(batch: pd.DataFrame) -> None:
        for row in batch.to_dict("records"):
            run.log({f"episode/{k}": v for k, v in row.items() if isinstance(v, (int, float))})

    print(f"search: {cfg.episodes * cfg.epochs:,} child epochs in all ({cfg.episodes} episodes x {cfg.epochs}), "
          f"then {1 + 2 * cfg.recheck_seeds} re-check trainings", flush=True)
    search(cfg, train, log)


def tables(cfg: SearchConfig, store: RunStore, keys: list[str]) -> SearchResult:
    """The search replayed from the run store (no training), with ``results.json``."""
    table, best, baseline, recheck = search(cfg, lambda items: {k: store.trial_rows(k)["children"][0]
                                                                 for k, *_ in items})
    summary = {
        "best_scale": best.get("scale"), "best_accuracy": best.get("accuracy"),
        "baseline_scale": cfg.baseline_scale, "baseline_accuracy": baseline["accuracy"],
        "difference": (best["accuracy"] - baseline["accuracy"]) if best else None,
        "nan_count": int(table["nan_detected"].sum()), "episodes": len(table),
        "total_child_seconds": float(table["seconds"].sum()), "reward_split": cfg.reward_split,
        "recheck": recheck_summary(recheck, cfg.sesoi),
    }
    summary = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
    store.write_json("results.json", summary)
    return SearchResult(table, best, {"scale": cfg.baseline_scale, **baseline}, recheck, summary,
                        Path(cfg.output_dir), cfg.sesoi)


def best_episode(table: pd.DataFrame) -> dict:
    """The dissertation's choice (Sec. 4.4.1): the non-NaN episode with the highest reward, among the
    episodes trained to the longest horizon (successive halving also trains shorter ones)."""
    ok = table[~table["nan_detected"].astype(bool) & (table["epochs"] == table["epochs"].max())]
    return {} if ok.empty else ok.loc[ok["reward"].idxmax()].to_dict()


def recheck_summary(t: pd.DataFrame, sesoi: float) -> dict | None:
    """The primary comparison: the best scale vs the baseline re-trained on fresh paired seeds, on test
    accuracy (means with t intervals, and the paired verdict of ``core.verdicts.compare``)."""
    if len(t) == 0:
        return None
    best, base = (interval(t[c], bounds=(0.0, 1.0)) for c in ("best_accuracy", "baseline_accuracy"))
    name = f"s = {t['best_scale'].iloc[0]:.3f} vs the baseline (test accuracy, fresh paired seeds)"
    return {"n_seeds": len(t), "best_mean": best.estimate, "best_ci_low": best.low, "best_ci_high": best.high,
            "baseline_mean": base.estimate, "baseline_ci_low": base.low, "baseline_ci_high": base.high,
            "comparison": compare(t["best_accuracy"], t["baseline_accuracy"], sesoi, name=name,
                                  bounds=ACCURACY_DIFFERENCE)}


def verdicts(cfg: SearchConfig, result: SearchResult) -> pd.DataFrame:
    """The primary comparison (the best scale against the baseline on fresh paired seeds), one row."""
    rc = result.summary.get("recheck")
    return pd.DataFrame([rc["comparison"]] if rc else [])


def verdict_text(summary: dict, sesoi: float) -> str:
    """A short markdown paragraph saying what a search run found, with its uncertainty."""
    split = "validation" if summary.get("reward_split", "val") == "val" else "test (the dissertation's protocol)"
    if summary.get("best_scale") is None:
        lines = ["- Every episode diverged (NaN): no best scale."]
    else:
        lines = [f"- Best episode (chosen on {split} accuracy): s = {summary['best_scale']:.3f}, test accuracy "
                 f"{fmt(summary['best_accuracy'])}; baseline s = {summary['baseline_scale']:g}: "
                 f"{fmt(summary['baseline_accuracy'])} (difference {fmt(summary['difference'])}, one run each, "
                 f"{summary['nan_count']} NaN episodes of {summary['episodes']}; a single best episode is the "
                 "maximum of noisy draws, so this difference is biased upwards)."]
    rc = summary.get("recheck")
    lines.append(f"- {sesoi_line(sesoi, 'accuracy', 'the best scale against the baseline on fresh paired seeds')}")
    if rc:
        lines.append(f"- Re-trained on {rc['n_seeds']} fresh paired seeds (test accuracy): best scale {fmt(rc['best_mean'])} vs baseline "
                     f"{fmt(rc['baseline_mean'])}. {sentence(rc['comparison'])}")
    else:
        lines.append("- No re-check (recheck_seeds = 0): the primary comparison was not run.")
    return "\n".join(lines)


def report(cfg: SearchConfig, result: SearchResult) -> Report:
    """What notebook 01 shows: Fig. 5.1, reward against scale with its trend, and the verdict."""
    rep = Report(result.output_dir)
    t = result.table
    rep.markdown("## Search history (dissertation Fig. 5.1)")
    rep.figure("fig5_1_search_history", plot_search_history(t))
    rep.markdown("## Reward against scale\nThe best single episode is a noisy estimate (the maximum of many noisy "
                 "draws is biased upwards); the peak of a quadratic trend through all episodes uses every episode.")
    rep.figure("reward_vs_scale", plot_reward_vs_scale(t, result.baseline), headline=True)
    ok = ~t["nan_detected"].astype(bool)
    coeffs, peak = quadratic_peak(t.loc[ok, "scale"], t.loc[ok, "reward"])
    lo, hi = (float(t.loc[ok, "scale"].min()), float(t.loc[ok, "scale"].max())) if ok.any() else (np.nan, np.nan)
    rep.markdown(
        f"Quadratic trend through the {int(ok.sum())} non-NaN episodes: "
        + ("too few episodes or scales for a trend." if coeffs is None else
           "the fitted curve is not concave (it has no interior maximum), so the trend gives no best scale."
           if peak is None else f"peak at s = {peak:.3f}."
           + ("" if lo <= peak <= hi else f" That lies outside the sampled scales [{lo:.3f}, {hi:.3f}]: an "
                                         "extrapolation, not a measured best scale.")))
    rep.verdict("## What this run found\n" + verdict_text(result.summary, result.sesoi))
    rep.table("recheck", result.recheck, caption="Re-check on fresh paired seeds (one row per seed)")
    return rep
