"""Notebook 02: does a short proxy training predict long training, and is scale bigger than seed noise?

Source of the question: the dissertation's Q3 (Sec. 6.2). A grid of scales x seeds is trained to a long
horizon with test accuracy after every epoch, so one run gives every proxy horizon. Two modes:
``independent`` (every (scale, seed) has its own init noise and data order, like separate runs) and
``crn`` (common random numbers: seed j uses the same init noise, scaled, and the same batch order for
every scale). Each (mode, scale, seed) network is one trial of the run store; the statistics are in
``fidelity_stats``. The report's ``per_scale`` table is what notebooks 03 and later read.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rlinit_lib.core.notebook import Report
from rlinit_lib.core.params import (Choice, Float, Int, ListOf, ParameterError, RunFields, check_float, check_int,
                                    check_scale_range, param)
from rlinit_lib.core.runtime import derive_seed, seed_everything
from rlinit_lib.core.store import RunStore
from rlinit_lib.core.trials import Trial, run_config_trials
from rlinit_lib.initialisation.theory import critical_scales
from rlinit_lib.scale_search.child import ChildTraining, train_child
from rlinit_lib.scale_search.fidelity_stats import (describe, horizon_report, seeds_needed, signal_to_noise,
                                                    target_choice)
from rlinit_lib.scale_search.plotting import plot_accuracy_heatmap, plot_accuracy_vs_scale, plot_horizon_report

RUN_COLUMNS = ["mode", "scale_index", "scale", "seed_index", "seed", "epoch", "test_accuracy", "train_loss",
               "nan_detected"]


@dataclass
class FidelityConfig(ChildTraining, RunFields):
    """Every knob of notebook 02_proxy_fidelity."""

    notebook = "02_proxy_fidelity"

    min_scale: float = param(0.25, Float(low=0.0, low_open=True))   # grid of scales: steps of 0.125, so 1.0 and
    max_scale: float = param(2.0, Float(low=0.0, low_open=True))    # 1.25 are on it
    n_scales: int = param(15, Int(low=3))
    seeds: int = param(5, Int(low=2), identity=False)           # independent seeds per scale (more extends)
    crn_seeds: int = param(5, Int(low=0), identity=False)       # seeds of the common-random-numbers grid; 0 skips
    epochs: int = param(50, Int(low=1))                         # long horizon
    horizons: list = param([1, 3, 5, 7, 10, 20], ListOf(Int(low=1), what="epochs"), identity=False)
    proxy_horizon: int = param(7, Int(low=1), identity=False)   # the dissertation's proxy
    target: str = param("final", Choice(("final", "best")), identity=False)   # long-run accuracy to predict
    compare_scales: list = param([1.0, 1.25], ListOf(Float(low=0.0, low_open=True), 2, 2, "scales"), identity=False)
    bootstrap: int = param(1000, Int(low=100), identity=False)  # bootstrap resamples over seeds
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
    """Train one network of the grid; one row per epoch (accuracy after that epoch)."""
    r = train_child(child, job["scale"], epochs, job["seed"], eval_every_epoch=True)
    rows = [{**job, "epoch": e + 1,
             "test_accuracy": r.test_accuracy_per_epoch[e] if e < len(r.test_accuracy_per_epoch) else np.nan,
             "train_loss": r.train_loss[e] if e < len(r.train_loss) else np.nan, "nan_detected": r.nan_detected}
            for e in range(epochs)]
    return {"runs": rows, "_log": {"grid/scale": job["scale"], "grid/final_accuracy": r.test_accuracy}}


def run_grid(cfg: FidelityConfig) -> pd.DataFrame:
    """Train the grid (resuming from the run store); returns the long table of RUN_COLUMNS."""
    cfg.validate()
    store = RunStore.for_config(cfg, cfg.environment())
    seed_everything(cfg.seed)
    child = cfg.child()
    trials = [Trial(f"{j['mode']}/{j['scale_index']}/{j['seed_index']}", grid_trial,
                    {"child": child, "job": j, "epochs": cfg.epochs}) for j in grid_jobs(cfg)]
    run_config_trials(cfg, store, trials, f"fidelity-seed{cfg.seed}", "grid networks")
    runs = store.table("runs", RUN_COLUMNS, sort=["mode", "scale_index", "seed_index", "epoch"],
                       trials=[t.key for t in trials])
    store.export("runs", runs)
    store.close()
    return runs


def accuracy_array(runs: pd.DataFrame, mode: str) -> np.ndarray:
    """acc[scale_index, seed_index, epoch-1] for one mode."""
    r = runs[runs["mode"] == mode]
    if r.empty:
        return np.empty((0, 0, 0))
    shape = (r["scale_index"].max() + 1, r["seed_index"].max() + 1, r["epoch"].max())
    acc = np.full(shape, np.nan)
    acc[r["scale_index"].to_numpy(), r["seed_index"].to_numpy(), r["epoch"].to_numpy() - 1] = r["test_accuracy"]
    return acc


def fidelity_report(cfg: FidelityConfig, runs: pd.DataFrame) -> Report:
    """Everything notebook 02 shows: theory reference, accuracy over scale and epoch, rank agreement per
    horizon, the variance decomposition, seeds needed, and the verdict. Writes ``per_scale.csv``."""
    rep = Report(cfg.output_dir)
    scales = cfg.scales
    acc = {m: accuracy_array(runs, m) for m in ("independent", "crn") if (runs["mode"] == m).any()}
    shown = sorted(set(cfg.horizons) | {cfg.epochs})
    diverged = int(runs.groupby(["mode", "scale_index", "seed_index"])["nan_detected"].first().sum())
    rep.markdown(f"Grid: {len(scales)} scales x {cfg.seeds} independent seeds"
                 + (f" + {cfg.crn_seeds} CRN seeds" if "crn" in acc else "")
                 + f", {cfg.epochs} epochs; {diverged} diverged runs.")

    theory = critical_scales(cfg.activation)
    refs = {f"{k.replace('_', ' ')} criterion": theory[k] for k in ("second_moment", "variance", "backward")}
    rep.markdown("## Theory reference\nScales (relative to He's sqrt(2/fan_in)) that preserve the signal of a "
                 f"{cfg.activation} layer under three criteria (Gauss-Hermite quadrature).")
    rep.table("theory", pd.DataFrame([{"criterion": k, "scale": v} for k, v in refs.items()]))

    rep.markdown("## Accuracy over scale and epoch")
    rep.figure("heatmap", plot_accuracy_heatmap(acc["independent"], scales, "Mean test accuracy (independent seeds)"))
    rep.figure("accuracy_vs_scale", plot_accuracy_vs_scale(acc["independent"], scales, shown, refs), headline=True)

    rep.markdown("## Does the proxy rank scales like the long run?\nPer horizon: Spearman and Kendall between the "
                 "per-scale means and the long run, the scale each horizon would choose, and the regret of trusting "
                 "it, each with a 95% percentile bootstrap interval over seeds (`*_low`, `*_high`).")
    reports, best_at_end = {}, {}
    for mode, a in acc.items():
        for tgt in ("final", "best"):
            label = f"{mode} / {tgt}"
            reports[label] = horizon_report(a, scales, cfg.horizons, tgt, n_boot=cfg.bootstrap, seed=cfg.seed)
            best_at_end[label] = target_choice(a, scales, tgt)
    rep.table("horizon_report", pd.DataFrame([{"mode": k.split(" / ")[0], "target": k.split(" / ")[1], **r}
                                              for k, rows in reports.items() for r in rows]))
    rep.figure("correlation_and_choice_vs_horizon", plot_horizon_report(reports, best_at_end))

    rep.markdown("## Signal against seed noise\nOne-way ANOVA over scales with seeds as replicates, per horizon.")
    rep.table("signal_to_noise", pd.DataFrame([{"mode": m, **signal_to_noise(a, h)} for m, a in acc.items()
                                               for h in shown]))
    idx = [int(np.argmin(abs(scales - s))) for s in cfg.compare_scales]
    pair = [float(scales[i]) for i in idx]
    need = pd.DataFrame([{"mode": m, "horizon": h, "scale_a": pair[1], "scale_b": pair[0],
                          **seeds_needed(a[idx[1], :, h - 1], a[idx[0], :, h - 1], paired=(m == "crn"))}
                         for m, a in acc.items() for h in shown])
    rep.table("seeds_needed", need, caption=f"Seeds per scale needed to tell s = {pair[0]:g} from s = {pair[1]:g} "
              "apart (95% confidence, 80% power, normal approximation; paired under CRN)")

    label = f"independent / {cfg.target}"
    at = lambda m: next((r | {"scales": pair} for r in need.to_dict("records")  # noqa: E731
                         if r["mode"] == m and r["horizon"] == cfg.proxy_horizon), None)
    rep.verdict("## What this run found\n" + describe(reports[label], cfg.target, best_at_end[label],
                                                      signal_to_noise(acc["independent"], cfg.proxy_horizon),
                                                      at("independent"), at("crn"), cfg.proxy_horizon))
    per_scale = pd.DataFrame({"scale": scales, "accuracy": np.nanmean(acc["independent"][:, :, cfg.proxy_horizon - 1], 1),
                              **{f"acc_epoch_{h}": np.nanmean(acc["independent"][:, :, h - 1], axis=1) for h in shown},
                              "best_epoch_acc": np.nanmean(np.nanmax(acc["independent"], axis=2), axis=1)})
    rep.table("per_scale", per_scale, caption=f"Per-scale means over independent seeds (`accuracy`: at the proxy "
              f"horizon, {cfg.proxy_horizon} epochs); 03_keras_validation compares its network with this curve.")
    return rep
