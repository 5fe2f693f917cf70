"""Notebook 02: does a short proxy training predict long training, and is scale bigger than seed noise?

Source of the question: the dissertation's Q3 (Sec. 6.2). A grid of scales x seeds is trained to a long
horizon with validation and test accuracy after every epoch, so one run gives every proxy horizon. Two
modes: ``independent`` (every (scale, seed) has its own init noise and data order, like separate runs) and
``crn`` (common random numbers: seed j uses the same init noise, scaled, and the same batch order for
every scale). Each (mode, scale, seed) network is one trial of the run store; the statistics are in
``fidelity_stats`` (choices on validation accuracy, reported on test; fidelity on disjoint seed halves;
the CRN grid as a block design; diverged runs at chance accuracy).

Declared before the run: the primary comparison is the rank agreement (Spearman, disjoint seeds) of the
``proxy_horizon``-epoch proxy with the ``epochs``-epoch long run (``target``) on the independent grid;
every other row is exploratory. ``sesoi`` (accuracy) sizes the seeds needed and reads the exploratory
pair comparisons (``core.verdicts``).

The report's ``per_scale`` table is what notebooks 03 and later read: ``accuracy`` is the mean test
accuracy at the proxy horizon over the independent seeds (diverged runs at chance), ``val_accuracy`` the
same on the validation split.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rlinit_lib.core.notebook import Report
from rlinit_lib.core.stats import interval, wilson_interval
from rlinit_lib.core.verdicts import ACCURACY_DIFFERENCE, Contrast, compare_family, sesoi_line, verdict_table
from rlinit_lib.core.params import (Choice, Float, Int, ListOf, ParameterError, RunFields, check_float, check_int,
                                    check_scale_range, param)
from rlinit_lib.core.runtime import derive_seed
from rlinit_lib.core.store import RunStore
from rlinit_lib.core.trials import Trial
from rlinit_lib.initialisation.theory import critical_scales
from rlinit_lib.children.child import ChildTraining, train_child
from rlinit_lib.scale_search.fidelity_stats import (CHANCE_ACCURACY, horizon_report, scored,
                                                    seeds_needed, signal_to_noise, target_accuracy, target_choice)
from rlinit_lib.scale_search.plotting import plot_accuracy_heatmap, plot_accuracy_vs_scale, plot_horizon_report

RUN_COLUMNS = ["mode", "scale_index", "scale", "seed_index", "seed", "epoch", "val_accuracy", "test_accuracy",
               "train_loss", "nan_detected"]


QUESTION = ("Does the 7-epoch proxy rank scales like long training, and is the effect of the scale bigger than seed "
            "noise?")


@dataclass
class FidelityConfig(ChildTraining, RunFields):
    """Every knob of notebook 02_proxy_fidelity."""

    notebook = "02_proxy_fidelity"

    min_scale: float = param(0.25, Float(low=0.0, low_open=True))   # grid of scales: steps of 0.125, so 1.0 and
    max_scale: float = param(2.0, Float(low=0.0, low_open=True))    # 1.25 are on it
    n_scales: int = param(15, Int(low=3, high=1_000))
    seeds: int = param(5, Int(low=2, high=1_000), identity=False)           # independent seeds per scale (more extends)
    crn_seeds: int = param(5, Int(low=0, high=1_000), identity=False)       # seeds of the common-random-numbers grid; 0 skips
    epochs: int = param(50, Int(low=1, high=10_000))                         # long horizon
    horizons: list = param([1, 3, 5, 7, 10, 20], ListOf(Int(low=1, high=10_000), what="epochs"), identity=False)
    proxy_horizon: int = param(7, Int(low=1, high=10_000), identity=False)   # the dissertation's proxy
    target: str = param("final", Choice(("final", "best")), identity=False)   # long-run accuracy to predict
    compare_scales: list = param([1.0, 1.25], ListOf(Float(low=0.0, low_open=True), 2, 2, "scales"), identity=False)
    bootstrap: int = param(1000, Int(low=100, high=100_000), identity=False)  # bootstrap resamples over seeds
    sesoi: float = param(0.005, Float(low=0.0, low_open=True))  # smallest accuracy difference of interest
    output_dir: str = param("outputs/02_proxy_fidelity", identity=False)

    def check(self):
        check_scale_range(self.min_scale, self.max_scale)
        if self.crn_seeds == 1:
            raise ParameterError("crn_seeds must be 0 or an integer >= 2 (got 1)")
        for h in self.horizons:
            check_int("horizons", h, low=1, high=self.epochs)
        check_int("proxy_horizon", self.proxy_horizon, low=1, high=self.epochs)
        for s in self.compare_scales:
            check_float("compare_scales", s, low=self.min_scale, high=self.max_scale)
        nearest = [float(self.scales[np.argmin(abs(self.scales - s))]) for s in self.compare_scales]
        if nearest[0] == nearest[1]:
            raise ParameterError(f"compare_scales must fall on two different grid scales (both map to {nearest[0]:g}; "
                                 "use more n_scales or another range)")

    @property
    def scales(self) -> np.ndarray:
        return np.round(np.linspace(self.min_scale, self.max_scale, self.n_scales), 6)


Config = FidelityConfig


def grid_jobs(cfg: FidelityConfig) -> list[dict]:
    """Every (mode, scale, seed) run of the grid with its training seed."""
    jobs = []
    for mode, n in (("independent", cfg.seeds), ("crn", cfg.crn_seeds)):
        for j in range(n):
            for i, s in enumerate(cfg.scales):
                seed = derive_seed(cfg.seed, j) if mode == "crn" else derive_seed(cfg.seed, i, j, 7)
                jobs.append({"mode": mode, "scale_index": i, "scale": float(s), "seed_index": j, "seed": seed})
    return jobs


def grid_trial(child: dict, job: dict, epochs: int) -> dict:
    """Train one network of the grid; one row per epoch (validation and test accuracy after that epoch; NaN
    from the epoch a diverged run stopped)."""
    r = train_child(child, job["scale"], epochs, job["seed"], eval_every_epoch=True)
    at = lambda xs, e: xs[e] if e < len(xs) else np.nan   # noqa: E731
    rows = [{**job, "epoch": e + 1, "val_accuracy": at(r.val_accuracy_per_epoch, e),
             "test_accuracy": at(r.test_accuracy_per_epoch, e), "train_loss": at(r.train_loss, e),
             "nan_detected": r.nan_detected} for e in range(epochs)]
    return {"runs": rows, "_log": {"grid/scale": job["scale"], "grid/final_accuracy": r.test_accuracy}}


@dataclass(frozen=True)
class FidelityResult:
    runs: pd.DataFrame          # one row per (mode, scale, seed, epoch): RUN_COLUMNS
    EXPORTS = ("runs",)


def trials(cfg: FidelityConfig, run) -> None:
    """Every (mode, scale, seed) network of the grid, one trial each."""
    child = cfg.child()
    run([Trial(f"{j['mode']}/{j['scale_index']}/{j['seed_index']}", grid_trial,
               {"child": child, "job": j, "epochs": cfg.epochs}, work={"child epochs": cfg.epochs})
         for j in grid_jobs(cfg)], "grid networks")


def tables(cfg: FidelityConfig, store: RunStore, keys: list[str]) -> FidelityResult:
    return FidelityResult(store.table("runs", RUN_COLUMNS, sort=["mode", "scale_index", "seed_index", "epoch"],
                                      trials=keys))


def accuracy_array(runs: pd.DataFrame, mode: str, column: str = "test_accuracy") -> np.ndarray:
    """acc[scale_index, seed_index, epoch-1] of ``column`` for one mode (NaN: diverged; see ``scored``)."""
    r = runs[runs["mode"] == mode]
    if r.empty:
        return np.empty((0, 0, 0))
    shape = (r["scale_index"].max() + 1, r["seed_index"].max() + 1, r["epoch"].max())
    acc = np.full(shape, np.nan)
    acc[r["scale_index"].to_numpy(), r["seed_index"].to_numpy(), r["epoch"].to_numpy() - 1] = r[column]
    return acc


def scored_arrays(runs: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{mode: (val, test)} accuracy arrays with diverged runs at chance accuracy."""
    return {m: (scored(accuracy_array(runs, m, "val_accuracy")), scored(accuracy_array(runs, m)))
            for m in ("independent", "crn") if (runs["mode"] == m).any()}


def divergence_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per mode: runs, diverged runs, their rate with a Wilson 95% interval (diverged runs are kept, at chance)."""
    rows = []
    for mode, g in sorted(runs.groupby("mode"), key=lambda x: x[0] != "independent"):
        flags = g.groupby(["scale_index", "seed_index"])["nan_detected"].first().astype(bool)
        lo, hi = wilson_interval(int(flags.sum()), len(flags))
        rows.append({"mode": mode, "runs": len(flags), "diverged": int(flags.sum()), "rate": float(flags.mean()),
                     "rate_low": lo, "rate_high": hi})
    return pd.DataFrame(rows)


def fidelity_rows(cfg: FidelityConfig, acc: dict) -> pd.DataFrame:
    """The rank-agreement table: per mode, target and horizon; the primary row (independent grid, the
    configured target, the proxy horizon) is marked, every other is exploratory (unadjusted intervals)."""
    rows = []
    for mode, (val, test) in acc.items():
        for tgt in ("final", "best"):
            for r in horizon_report(val, test, cfg.scales, sorted(set(cfg.horizons) | {cfg.proxy_horizon}), tgt,
                                    n_boot=cfg.bootstrap, seed=cfg.seed):
                primary = (mode, tgt, r["horizon"]) == ("independent", cfg.target, cfg.proxy_horizon)
                rows.append({"mode": mode, "target": tgt, "role": "primary" if primary else "exploratory (unadjusted)",
                             **r, "long_run_choice": target_choice(val, test, cfg.scales, tgt)})
    return pd.DataFrame(rows)


def pair_indices(cfg: FidelityConfig) -> list[int]:
    return [int(np.argmin(abs(cfg.scales - s))) for s in cfg.compare_scales]


def seeds_table(cfg: FidelityConfig, acc: dict, horizons) -> pd.DataFrame:
    """Seeds per scale needed to decide compare_scales[1] against compare_scales[0] on test accuracy, from
    ``sesoi`` and the observed spread (paired differences under CRN)."""
    i, j = pair_indices(cfg)
    return pd.DataFrame([{"mode": m, "horizon": h, "scale_a": float(cfg.scales[j]), "scale_b": float(cfg.scales[i]),
                          **seeds_needed(test[j, :, h - 1], test[i, :, h - 1], cfg.sesoi, paired=(m == "crn"))}
                         for m, (_, test) in acc.items() for h in horizons])


def pair_contrasts(cfg: FidelityConfig, acc: dict) -> pd.DataFrame:
    """The exploratory family: compare_scales[1] - compare_scales[0] in test accuracy at the proxy horizon and
    the long run, per mode (Welch for independent seeds, paired by seed under CRN)."""
    i, j = pair_indices(cfg)
    contrasts = [Contrast(f"s = {cfg.scales[j]:g} - s = {cfg.scales[i]:g}, {h} epochs, {m}",
                          test[j, :, h - 1], test[i, :, h - 1], paired=(m == "crn"))
                 for m, (_, test) in acc.items() for h in dict.fromkeys((cfg.proxy_horizon, cfg.epochs))]
    return compare_family(contrasts, cfg.sesoi, primary=(), bounds=ACCURACY_DIFFERENCE)


def verdicts(cfg: FidelityConfig, result: FidelityResult) -> pd.DataFrame:
    """The exploratory pair comparisons (one family); the primary, the proxy's rank agreement, is ``fidelity_rows``."""
    return pair_contrasts(cfg, scored_arrays(result.runs))


def verdict_text(cfg: FidelityConfig, fid: pd.DataFrame, snr: dict, need: pd.DataFrame, pairs: pd.DataFrame,
             diverged: pd.DataFrame) -> str:
    """The verdict paragraph (markdown): the sesoi line, the primary rank agreement with its interval,
    the regret of trusting the proxy, the variance decomposition, seeds needed and the exploratory family."""
    p = fid[fid["role"] == "primary"].iloc[0]
    ci = f"95% CI [{p['spearman_low']:.2f}, {p['spearman_high']:.2f}]" if np.isfinite(p["spearman_low"]) else \
        "no interval: fewer than 2 seeds in a half"
    reading = ("no reading without an interval" if not np.isfinite(p["spearman_low"]) else
               "the interval lies above 0: the proxy's ranking carries over to the long run" if p["spearman_low"] > 0
               else "the interval lies below 0: the proxy ranks scales against the long run" if p["spearman_high"] < 0
               else "the interval includes 0: these seeds do not show that the proxy predicts the long run's ranking")
    at = lambda m: need[(need["mode"] == m) & (need["horizon"] == cfg.proxy_horizon)]   # noqa: E731
    lines = [sesoi_line(cfg.sesoi, "accuracy", f"the rank agreement (Spearman, disjoint seed halves) of the "
                        f"{cfg.proxy_horizon}-epoch proxy with the {cfg.epochs}-epoch {cfg.target} accuracy, "
                        "independent seeds"), "",
             f"- **Primary.** At {cfg.proxy_horizon} epochs, Spearman rho = {p['spearman']:.2f} ({ci}; proxy ranks "
             f"from {p['seeds_a']} + {p['seeds_b']} seeds against long-run ranks from the other half, both ways; seed "
             f"noise pulls it toward 0): {reading}.",
             f"- The proxy chooses s = {p['proxy_choice']:.3f} and the long run s = {p['long_run_choice']:.3f} "
             f"(both on validation accuracy); trusting the proxy costs {p['regret']:+.4f} test accuracy ("
             + (f"95% CI [{p['regret_low']:+.4f}, {p['regret_high']:+.4f}]" if np.isfinite(p["regret_low"]) else
                "no interval") + ", disjoint seeds) [exploratory].",
             f"- Scale explains {100 * snr['eta_squared']:.0f}% of the variance at that horizon ({snr['test']}, "
             f"F = {snr['F']:.1f}, p = {snr['p_value']:.2g}; seed sd {snr['seed_sd']:.4f} vs sd of scale means "
             f"{snr['scale_sd']:.4f}) [exploratory]."]
    ind, crn = at("independent"), at("crn")
    if len(ind):
        r = ind.iloc[0]
        text = (f"- Deciding s = {r['scale_a']:g} against s = {r['scale_b']:g} within +-{cfg.sesoi:g} (80% power) "
                f"needs about **{r['seeds_needed']:.0f} seeds per scale** (95% CI {r['seeds_needed_low']:.0f}-"
                f"{r['seeds_needed_high']:.0f}) with independent seeds")
        if len(crn):
            c = crn.iloc[0]
            text += (f" and **{c['seeds_needed']:.0f}** ({c['seeds_needed_low']:.0f}-{c['seeds_needed_high']:.0f}) "
                     f"with common random numbers (same sesoi; sd {r['sd']:.4f} unpaired vs {c['sd']:.4f} paired)")
        lines.append(text + ".")
    rates = "; ".join(f"{d.mode}: {d.diverged}/{d.runs}" for d in diverged.itertuples())
    lines += [f"- Diverged runs ({rates}) are kept and scored at chance accuracy ({CHANCE_ACCURACY:g}).",
              "", "Exploratory pair comparisons (test accuracy, one family):", verdict_table(pairs)]
    return "\n".join(lines)


def per_scale_table(cfg: FidelityConfig, val: np.ndarray, test: np.ndarray, raw: np.ndarray, shown) -> pd.DataFrame:
    """Per-scale means over the independent seeds (diverged runs at chance): ``accuracy`` (test) and
    ``val_accuracy`` at the proxy horizon with the t interval of ``accuracy``, test accuracy per horizon,
    the test accuracy at each run's best validation epoch, and the divergence rate."""
    h = cfg.proxy_horizon - 1
    iv = [interval(row, bounds=(0.0, 1.0)) for row in test[:, :, h]]
    _, best = target_accuracy(val, test, "best")
    return pd.DataFrame({"scale": cfg.scales, "accuracy": test[:, :, h].mean(1),
                         "accuracy_low": [i.low for i in iv], "accuracy_high": [i.high for i in iv],
                         "val_accuracy": val[:, :, h].mean(1),
                         **{f"acc_epoch_{e}": test[:, :, e - 1].mean(1) for e in shown},
                         "best_epoch_acc": best.mean(1), "seeds": test.shape[1],
                         "diverged_rate": np.mean(~np.isfinite(raw[:, :, -1]), axis=1)})


def report(cfg: FidelityConfig, result: FidelityResult) -> Report:
    """Everything notebook 02 shows: theory reference, accuracy over scale and epoch, rank agreement per
    horizon (disjoint seeds), the variance decomposition, seeds needed, the exploratory pair comparisons,
    and the verdict. Writes ``per_scale.csv``."""
    rep = Report(cfg.output_dir)
    runs, scales = result.runs, cfg.scales
    acc = scored_arrays(runs)
    shown = sorted(set(cfg.horizons) | {cfg.epochs})
    diverged = divergence_table(runs)
    rep.markdown(f"Grid: {len(scales)} scales x {cfg.seeds} independent seeds"
                 + (f" + {cfg.crn_seeds} CRN seeds" if "crn" in acc else "")
                 + f", {cfg.epochs} epochs. Choices are made on validation accuracy ({cfg.val_size} held-out training "
                 "images); every accuracy reported for a choice is test accuracy.")
    rep.table("divergence", diverged, caption="Diverged runs: kept, scored at chance accuracy (never dropped); rate "
              "with a Wilson 95% interval")

    theory = critical_scales(cfg.activation)
    refs = {f"{k.replace('_', ' ')} criterion": theory[k] for k in ("second_moment", "variance", "backward")}
    rep.markdown("## Theory reference\nScales (relative to He's sqrt(2/fan_in)) that preserve the signal of a "
                 f"{cfg.activation} layer under three criteria (Gauss-Hermite quadrature).")
    rep.table("theory", pd.DataFrame([{"criterion": k, "scale": v} for k, v in refs.items()]))

    val, test = acc["independent"]
    rep.markdown("## Accuracy over scale and epoch")
    rep.figure("heatmap", plot_accuracy_heatmap(test, scales, "Mean test accuracy (independent seeds)"))
    rep.figure("accuracy_vs_scale", plot_accuracy_vs_scale(test, scales, shown, refs), headline=True)

    rep.markdown("## Does the proxy rank scales like the long run?\nPer horizon, on disjoint seeds (proxy ranks from "
                 "one half of the seeds, long-run ranks from the other, both ways): Spearman's rho between the proxy's "
                 "validation ranking and the long run's test ranking, the scale each chooses (on validation), and the "
                 "regret in test accuracy of trusting the proxy, with 95% percentile-bootstrap intervals (seeds "
                 "resampled within each half; `*_low`, `*_high`). One row is the declared primary comparison; the "
                 "others are exploratory, their intervals unadjusted.")
    fid = fidelity_rows(cfg, acc)
    rep.table("horizon_report", fid)
    reports = {f"{m} / {t}": g.to_dict("records") for (m, t), g in fid.groupby(["mode", "target"], sort=False)}
    best_at_end = {k: rows[0]["long_run_choice"] for k, rows in reports.items()}
    rep.figure("correlation_and_choice_vs_horizon", plot_horizon_report(reports, best_at_end))

    rep.markdown("## Signal against seed noise\nPer horizon: a one-way ANOVA over scales for independent seeds; for "
                 "the CRN grid, a two-way ANOVA of scale and seed block (no interaction), since seed j is shared by "
                 "every scale.")
    snr = pd.DataFrame([{"mode": m, **signal_to_noise(t, h, blocked=(m == "crn"))} for m, (_, t) in acc.items()
                        for h in shown])
    rep.table("signal_to_noise", snr)
    need = seeds_table(cfg, acc, shown)
    rep.table("seeds_needed", need, caption=f"Seeds per scale at which s = {need['scale_a'].iloc[0]:g} against "
              f"s = {need['scale_b'].iloc[0]:g} would be decided within +-{cfg.sesoi:g} (the declared sesoi, the same "
              "for both designs) with 80% power, from the observed spread (paired under CRN), with a 95% interval")
    pairs = verdicts(cfg, result)
    rep.table("comparisons", pairs, show=False)

    primary_snr = signal_to_noise(test, cfg.proxy_horizon)
    rep.verdict("## What this run found\n" + verdict_text(cfg, fid, primary_snr, need, pairs, diverged))
    rep.table("per_scale", per_scale_table(cfg, val, test, accuracy_array(runs, "independent"), shown),
              caption=f"Per-scale means over independent seeds (`accuracy`: test accuracy at the proxy horizon, "
              f"{cfg.proxy_horizon} epochs, diverged runs at chance; `val_accuracy`: the same on validation); "
              "03_keras_validation compares its network with this curve.")
    return rep
