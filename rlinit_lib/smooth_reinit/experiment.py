"""Notebook 04: the experiments of "Smooth Re-Initializations", run over seeds with controls, and against the
exploration and plasticity methods they compete with.

DQN variants (names -> DQNConfig settings) follow the source and its controls: minimalRL's epsilon
schedule; epsilon 0 (the source's baseline); epsilon 0 with last-layer noise decaying x0.5 per
forward (in the target network too, or not); the skip network with and without middle-layer noise
(no decay); a reset of the last layer and a shrink-and-perturb (x0.8 + 0.2 fresh) every 200 episodes;
soft shrink-and-perturb after every update; NoisyNet, adaptive parameter noise and ReDo
(``exploration``, ``plasticity``); initialisations (PyTorch default, Xavier, He, scaled He). Each
variant is compared with its matching control; ``methods`` compares the smooth re-init, exploration
and plasticity arms with both controls and on diagnostics. DQN runs (variants x seeds) are trials of
the run store: variants the batched path can train go ``dqn_chunk`` at a time through ``dqn_batched``
(same returns as the faithful path, which ``dqn_batched=False`` runs one run per trial); NoisyNet,
parameter noise, ReDo and soft shrink-and-perturb run one run per trial on the faithful path. GPT
variants put sigma-0.01 noise on the last block's MLP output projection (the source) or elsewhere;
each (variant, seed) is a trial.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import fisher_exact, mannwhitneyu

from rlinit_lib.core.notebook import Report
from rlinit_lib.core.params import BOOL, Choice, Float, Int, ListOf, ParameterError, RunFields, Str, param
from rlinit_lib.core.plots import band_plot
from rlinit_lib.core.runtime import device_rule, environment_info, pick_device, seed_everything
from rlinit_lib.core.stats import difference_by_seed, mean_ci, wilson_interval
from rlinit_lib.core.store import RunStore
from rlinit_lib.core.trials import Trial, run_config_trials
from rlinit_lib.smooth_reinit.char_gpt import CharData, GPTConfig, load_text, train_char_gpt
from rlinit_lib.smooth_reinit.dqn import DQNConfig, train_dqn
from rlinit_lib.smooth_reinit.dqn_batched import train_dqn_batched
from rlinit_lib.smooth_reinit.methods import (CATEGORY, CONTROLS, against_controls, diagnostic_effects, iqm_table,
                                              methods_verdict, plot_diagnostics, run_diagnostics, run_metrics)

DQN_VARIANTS = {
    "minimalrl_schedule": ({}, None),
    "eps0": ({"epsilon": 0.0}, "minimalrl_schedule"),
    "eps0_last_noise": ({"epsilon": 0.0, "noise_layer": "fc3", "noise_decay": 0.5}, "eps0"),
    "eps0_last_noise_no_target": ({"epsilon": 0.0, "noise_layer": "fc3", "noise_decay": 0.5,
                                   "noise_in_target": False}, "eps0"),
    "eps0_skip": ({"epsilon": 0.0, "skip": True}, "eps0"),
    "eps0_skip_middle_noise": ({"epsilon": 0.0, "skip": True, "noise_layer": "fc2", "noise_decay": 1.0}, "eps0_skip"),
    "eps0_last_reset": ({"epsilon": 0.0, "reset_every": 200}, "eps0"),
    "eps0_shrink_perturb": ({"epsilon": 0.0, "shrink_perturb_every": 200}, "eps0"),
    "eps0_soft_shrink_perturb": ({"epsilon": 0.0, "soft_sp_alpha": None}, "eps0"),   # alpha: soft_sp_alpha
    "eps0_noisynet": ({"epsilon": 0.0, "noisy_net": True}, "eps0"),
    "eps0_param_noise": ({"epsilon": 0.0, "param_noise": True}, "eps0"),
    "eps0_redo": ({"epsilon": 0.0, "redo_every": None}, "eps0"),                     # interval: redo_every
    "init_xavier": ({"init": "xavier_uniform"}, "minimalrl_schedule"),
    "init_he": ({"init": "he_scaled"}, "minimalrl_schedule"),
    "init_he_1.25": ({"init": "he_scaled", "init_scale": 1.25}, "init_he"),
}  # name -> (settings, matching control)

GPT_VARIANTS = {
    "baseline": (None, None),
    "noise_last_mlp_proj": ("blocks.{last}.mlp.c_proj", "baseline"),   # the source's placement
    "noise_first_mlp_proj": ("blocks.0.mlp.c_proj", "baseline"),
}  # name -> (layer whose weight and bias get sigma-0.01 noise, control)

DQN_PANELS = {
    "smooth re-init arms and their controls": [
        "minimalrl_schedule", "eps0", "eps0_last_noise", "eps0_last_noise_no_target", "eps0_skip",
        "eps0_skip_middle_noise"],
    "exploration and plasticity methods (controls: eps0, minimalrl_schedule)": [
        "minimalrl_schedule", "eps0", "eps0_noisynet", "eps0_param_noise", "eps0_redo", "eps0_last_reset",
        "eps0_shrink_perturb", "eps0_soft_shrink_perturb"],
    "initialisation of the Q-network (control: PyTorch default)": [
        "minimalrl_schedule", "init_xavier", "init_he", "init_he_1.25"],
}  # panel title -> variants drawn there
DQN_COLUMNS = ["variant", "seed", "episode", "return", "solved_at"]
GPT_COLUMNS = ["iter", "train_loss", "val_loss", "variant", "seed"]


@dataclass
class SmoothReinitConfig(RunFields):
    """Every knob of notebook 04_smooth_reinit."""

    notebook = "04_smooth_reinit"

    dqn_variants: list = param(list(DQN_VARIANTS), ListOf(Choice(tuple(DQN_VARIANTS)), 0, what="DQN variants"),
                               identity=False)
    dqn_seeds: int = param(10, Int(low=2), identity=False)     # more seeds extends a run
    dqn_episodes: int = param(1000, Int(low=1))                # at most this many episodes per run
    dqn_step_budget: int = param(0, Int(low=0))                # and at most this many env steps (0: no step budget)
    diag_every: int = param(20, Int(low=1))                    # episodes between diagnostics
    dormant_tau: float = param(0.025, Float(low=0.0, high=1.0, low_open=True, high_open=True))   # ReDo and diagnostics
    redo_every: int = param(500, Int(low=1))                   # updates between ReDo recycles
    soft_sp_alpha: float = param(1e-4, Float(low=0.0, high=1.0, low_open=True))   # soft shrink-and-perturb per update
    bootstrap: int = param(2000, Int(low=100), identity=False)   # rliable's bootstrap resamples
    rule: str = param("standard", Choice(("standard", "win")))   # standard: solved at a last-100 mean of 475
    win_steps: int = param(100_000, Int(low=1))                # rule win: the source's balanced steps
    dqn_batched: bool = param(True, BOOL, identity=False)      # runs of a chunk together (same returns)
    dqn_chunk: int = param(120, Int(low=1), identity=False)    # runs per batched trial
    dqn_device: str = param("cpu", device_rule, identity=False)
    gpt_variants: list = param(list(GPT_VARIANTS), ListOf(Choice(tuple(GPT_VARIANTS)), 0, what="GPT variants"),
                               identity=False)
    gpt_seeds: int = param(3, Int(low=2), identity=False)
    gpt_overrides: dict = param({})                            # GPTConfig fields, e.g. {"max_iters": 200}
    gpt_sigma: float = param(0.01, Float(low=0.0))
    text_path: str | None = param(None, Str(optional=True))    # None: the tiny-shakespeare copy shipped with rlinit_lib
    output_dir: str = param("outputs/04_smooth_reinit", identity=False)

    def check(self):
        if not isinstance(self.gpt_overrides, dict):
            raise ParameterError(f"gpt_overrides must be a mapping of GPTConfig fields (got {self.gpt_overrides!r})")
        self.gpt_config(0)

    def gpt_config(self, seed: int) -> GPTConfig:
        return GPTConfig.from_dict({**self.gpt_overrides, "seed": seed})

    def dqn_config(self, variant: str, seed: int) -> DQNConfig:
        settings = {k: getattr(self, k) if v is None else v for k, v in DQN_VARIANTS[variant][0].items()}
        return DQNConfig(episodes=self.dqn_episodes, rule=self.rule, win_steps=self.win_steps, seed=seed,
                         step_budget=self.dqn_step_budget, diag_every=self.diag_every, diag_tau=self.dormant_tau,
                         redo_tau=self.dormant_tau, **settings)


def dqn_trial(runs: list, configs: list, batched: bool, device: str) -> dict:
    """Train DQN runs (``runs``: (variant, seed) pairs, ``configs``: their DQNConfig dicts); their returns
    and diagnostics."""
    cfgs = [DQNConfig(**c) for c in configs]
    results = train_dqn_batched(cfgs, device=pick_device(device)) if batched else [train_dqn(c) for c in cfgs]
    rows = [{"variant": v, "seed": s, "episode": e, "return": ret, "solved_at": r["solved_at"]}
            for (v, s), r in zip(runs, results) for e, ret in enumerate(r["returns"])]
    diag = [{"variant": v, "seed": s, **d} for (v, s), r in zip(runs, results) for d in r["diagnostics"]]
    return {"dqn_returns": rows, "dqn_diagnostics": diag}


@dataclass
class DQNRuns:
    returns: pd.DataFrame        # one row per (variant, seed, episode)
    diagnostics: pd.DataFrame    # one row per (variant, seed, checkpoint)


def run_dqn(cfg: SmoothReinitConfig) -> DQNRuns:
    """Returns per episode and diagnostics for every (variant, seed), long format; resumable. Variants that
    use an option the batched path lacks (NoisyNet, parameter noise, ReDo, soft shrink-and-perturb) run one
    run per trial on the faithful path; the others in batched chunks of ``dqn_chunk``."""
    cfg.validate()
    store = open_store(cfg)
    units = [(v, cfg.seed + s) for v in cfg.dqn_variants for s in range(cfg.dqn_seeds)]
    done = store.finished()
    todo = [u for u in units if f"dqn/{u[0]}/{u[1]}" not in done]
    faithful = [u for u in todo if not cfg.dqn_batched or any(getattr(cfg.dqn_config(*u), f)
                                                               for f in DQNConfig.FAITHFUL_ONLY)]
    batched = [u for u in todo if u not in faithful]
    groups = [batched[i:i + cfg.dqn_chunk] for i in range(0, len(batched), cfg.dqn_chunk)] + [[u] for u in faithful]
    trials = []
    for chunk in groups:
        keys = tuple(f"dqn/{v}/{s}" for v, s in chunk)
        trials.append(Trial(keys[0] if len(keys) == 1 else f"dqn-chunk/{keys[0]}/{len(keys)}", dqn_trial,
                            {"runs": chunk, "configs": [cfg.dqn_config(v, s).to_dict() for v, s in chunk],
                             "batched": len(chunk) > 1 or chunk[0] in batched, "device": cfg.dqn_device}, units=keys))
    run_config_trials(cfg, store, trials, f"smooth-reinit-dqn-seed{cfg.seed}", "DQN trials")
    # chunks of earlier runs may hold these runs: keep the rows of every wanted (variant, seed)
    wanted = set(units)
    out = []
    for name, columns, sort in (("dqn_returns", DQN_COLUMNS, ["variant", "seed", "episode"]),
                                ("dqn_diagnostics", None, ["variant", "seed", "episode"])):
        df = store.table(name, columns, sort=sort)
        if len(df):
            df = df[[(v, s) in wanted for v, s in zip(df["variant"], df["seed"])]].reset_index(drop=True)
        store.export(name, df)
        out.append(df)
    store.close()
    return DQNRuns(*out)


@functools.lru_cache(maxsize=2)
def _char_data(text_path: str | None) -> CharData:
    return CharData(load_text(text_path))


def gpt_trial(variant: str, seed: int, gpt: dict, sigma: float, text_path: str | None) -> dict:
    """Train the char-GPT of one (variant, seed); its evaluation history."""
    gcfg = GPTConfig(**gpt)
    layer = GPT_VARIANTS[variant][0]
    noise = None if layer is None else {
        "names": [f"{layer.format(last=gcfg.n_layer - 1)}.{p}" for p in ("weight", "bias")],
        "sigma": sigma, "decay": 1.0, "in_eval": True}
    run = train_char_gpt(gcfg, _char_data(text_path), noise=noise)
    return {"gpt_losses": [{"iter": i, "train_loss": tr, "val_loss": va, "variant": variant, "seed": seed}
                           for i, tr, va in run["history"]],
            "_log": {"gpt/final_val_loss": run["val_loss"]}}


def run_gpt(cfg: SmoothReinitConfig) -> pd.DataFrame:
    """Evaluation history for every (variant, seed); resumable. No variants: an empty table."""
    cfg.validate()
    if not cfg.gpt_variants:
        return pd.DataFrame(columns=GPT_COLUMNS)
    store = open_store(cfg)
    keys = [(v, cfg.seed + s) for v in cfg.gpt_variants for s in range(cfg.gpt_seeds)]
    trials = [Trial(f"gpt/{v}/{s}", gpt_trial, {"variant": v, "seed": s, "gpt": cfg.gpt_config(s).to_dict(),
                                                 "sigma": cfg.gpt_sigma, "text_path": cfg.text_path}) for v, s in keys]
    run_config_trials(cfg, store, trials, f"smooth-reinit-gpt-seed{cfg.seed}", "GPT runs")
    df = store.table("gpt_losses", GPT_COLUMNS, sort=["variant", "seed", "iter"], trials=[t.key for t in trials])
    store.export("gpt_losses", df)
    store.close()
    return df


def open_store(cfg: SmoothReinitConfig) -> RunStore:
    seed_everything(cfg.seed)
    return RunStore(cfg.output_dir, cfg.notebook, cfg.identity(), cfg.to_dict(),
                    environment_info(pick_device(cfg.dqn_device)))


def dqn_metrics(returns: pd.DataFrame, rule: str = "standard") -> pd.DataFrame:
    """Per run: episodes until solved (standard: last-100 mean >= 475; win: first win; NaN if never),
    area under the return curve (mean return over episodes) and the final-100 mean."""
    rows = []
    for (v, s), g in returns.groupby(["variant", "seed"]):
        r = g.sort_values("episode")["return"].to_numpy()
        solved = g["solved_at"].dropna()
        rows.append({"variant": v, "seed": s, "solved_at": float(solved.iloc[0]) if len(solved) else np.nan,
                     "auc": float(r.mean()), "final_100": float(r[-100:].mean()), "episodes": len(r)})
    return pd.DataFrame(rows)


def compare_solving(metrics: pd.DataFrame, controls: dict) -> pd.DataFrame:
    """How often and how soon each variant solves, against its control. Runs that never solve are
    censored at their episode budget, so "episodes to solve" is compared by rank (Mann-Whitney U,
    valid because the budget lies above every solved value), and the share of runs that solve by
    Fisher's exact test; the share has a Wilson 95% interval."""
    rows = []
    to_solve = metrics["solved_at"].fillna(metrics["episodes"])
    for v, g in metrics.groupby("variant"):
        k, n = int(g["solved_at"].notna().sum()), len(g)
        lo, hi = wilson_interval(k, n)
        row = {"variant": v, "solved": k, "runs": n, "share": k / n, "share_ci_low": lo, "share_ci_high": hi,
               "median_episodes_to_solve": float(to_solve[g.index].median())}
        ctrl = controls.get(v, (None, None))[1]
        if ctrl is not None and ctrl in set(metrics["variant"]):
            c = metrics[metrics["variant"] == ctrl]
            kc = int(c["solved_at"].notna().sum())
            p_share = float(fisher_exact([[k, n - k], [kc, len(c) - kc]]).pvalue)
            a, b = to_solve[g.index], to_solve[c.index]
            p_rank = float(mannwhitneyu(a, b).pvalue) if np.ptp(np.r_[a, b]) > 0 else 1.0
            faster = a.median() < b.median() or (a.median() == b.median() and a.mean() < b.mean())
            row |= {"control": ctrl, "control_solved": kc, "p_share": p_share, "p_episodes_to_solve": p_rank,
                    "verdict": ("solves sooner" if faster else "solves later") if p_rank < 0.05 else "not significant"}
        rows.append(row)
    return pd.DataFrame(rows)


def compare_to_controls(metrics: pd.DataFrame, metric: str, controls: dict, lower_is_better: bool) -> pd.DataFrame:
    """Mean and 95% CI per variant, and the difference against its matching control: paired by seed (a paired
    t interval and test) when the variant and its control ran the same seeds, as every profile does (seed s gives
    both the same initial network, data and exploration draws); Welch's otherwise. ``test`` says which."""
    rows = []
    for v, g in metrics.groupby("variant"):
        m, lo, hi = mean_ci(g[metric])
        row = {"variant": v, "n": int(g[metric].notna().sum()), "mean": m, "ci_low": lo, "ci_high": hi}
        ctrl = controls.get(v, (None, None))[1]
        if ctrl is not None and ctrl in set(metrics["variant"]):
            w = difference_by_seed(g, metrics[metrics["variant"] == ctrl], metric)
            sig = w["ci_low"] > 0 or w["ci_high"] < 0
            better = (w["mean"] < 0) == lower_is_better
            verdict = ("better" if better else "worse") if sig else "not significant"
            row |= {"control": ctrl, "test": w["test"], "diff_vs_control": w["mean"],
                    "diff_ci_low": w["ci_low"], "diff_ci_high": w["ci_high"], "p_value": w["p_value"],
                    "verdict": verdict if np.isfinite(w["p_value"]) else "too few runs to test"}
        rows.append(row)
    return pd.DataFrame(rows, columns=["variant", "n", "mean", "ci_low", "ci_high", "control", "test",
                                       "diff_vs_control", "diff_ci_low", "diff_ci_high", "p_value", "verdict"])


def plot_dqn_returns(returns: pd.DataFrame, variants: list[str], window: int = 20):
    """Returns over episodes per variant (a moving mean over ``window`` episodes per run), with a 95%
    bootstrap band over seeds that stays inside CartPole's [0, 500]; one panel per group of DQN_PANELS."""
    panels = {t: [v for v in vs if v in variants] for t, vs in DQN_PANELS.items()}
    panels = {t: vs for t, vs in panels.items() if len(vs) > 1 or (vs and len(variants) == 1)} or {"DQN variants": variants}
    smooth = returns.sort_values(["variant", "seed", "episode"]).assign(
        smoothed=lambda d: d.groupby(["variant", "seed"])["return"].transform(
            lambda r: r.rolling(window, min_periods=1).mean()))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, (title, vs) in zip(axes[0], panels.items()):
        band_plot(ax, smooth[smooth["variant"].isin(vs)], "episode", "smoothed", "seed", "variant", bounds=(0.0, 500.0))
        ax.set(title=title, xlabel="episode",
               ylabel=f"return ({window}-episode moving mean; 95% bootstrap CI over seeds)")
    fig.tight_layout()
    return fig


def plot_gpt_losses(losses: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(8, 4))
    band_plot(ax, losses, "iter", "val_loss", "seed", "variant")
    ax.set(title="Character-level GPT on tiny-shakespeare", xlabel="iteration",
           ylabel="validation loss (nats per character; 95% t-interval over seeds)")
    fig.tight_layout()
    return fig


def describe_comparisons(tables: dict[str, pd.DataFrame], solving: pd.DataFrame | None) -> str:
    """One line per variant and measure: the difference to its control with interval, p and verdict."""
    lines = []
    for name, table in tables.items():
        for r in table.dropna(subset=["diff_vs_control"]).itertuples():
            lines.append(f"- {name}: **{r.variant}** vs {r.control}: {r.diff_vs_control:+.3f} "
                         f"({r.test} 95% CI [{r.diff_ci_low:+.3f}, {r.diff_ci_high:+.3f}], p = {r.p_value:.2g}) — {r.verdict}.")
    if solving is not None and "control" in solving:
        for r in solving.dropna(subset=["control"]).itertuples():
            lines.append(f"- DQN solving: **{r.variant}** solved {r.solved}/{r.runs} runs vs {r.control_solved} for "
                         f"{r.control} (Fisher p = {r.p_share:.2g}; episodes to solve, rank test p = "
                         f"{r.p_episodes_to_solve:.2g}) — {r.verdict}.")
    return "\n".join(lines) or "No variant has its control in this run."


def smooth_reinit_report(cfg: SmoothReinitConfig, dqn: DQNRuns, losses: pd.DataFrame) -> Report:
    """What notebook 04 shows: DQN curves and comparisons with controls; smooth re-init against the exploration
    and plasticity methods (IQM, tests against both controls, diagnostics); GPT losses; and the verdicts."""
    rep = Report(cfg.output_dir)
    tables, solving, returns = {}, None, dqn.returns
    if len(returns):
        rep.markdown("## DQN on CartPole-v1")
        metrics = dqn_metrics(returns, cfg.rule)
        rep.table("dqn_metrics", metrics, show=False)
        rep.figure("dqn_returns", plot_dqn_returns(returns, list(dict.fromkeys(returns["variant"]))), headline=True)
        tables["DQN area under curve"] = compare_to_controls(metrics, "auc", DQN_VARIANTS, lower_is_better=False)
        tables["DQN last-100 return"] = compare_to_controls(metrics, "final_100", DQN_VARIANTS, lower_is_better=False)
        solving = compare_solving(metrics, DQN_VARIANTS)
        rep.table("dqn_auc_vs_control", tables["DQN area under curve"],
                  caption="**Area under the return curve (mean return per episode) against the matching control**")
        rep.table("dqn_final100_vs_control", tables["DQN last-100 return"],
                  caption="**Mean return over the last 100 episodes against the matching control**")
        rule = "last-100 mean >= 475" if cfg.rule == "standard" else f"{cfg.win_steps} balanced steps"
        rep.table("dqn_solved_vs_control", solving,
                  caption=f"**Solving** ({rule}): share of runs with a Wilson 95% interval and Fisher's exact test; "
                          "episodes to solve with unsolved runs counted at the budget, compared by rank (Mann-Whitney U)")
        methods_section(rep, cfg, dqn)
    if len(losses):
        rep.markdown("## Character-level GPT on tiny-shakespeare")
        final = losses[losses["iter"] == losses["iter"].max()][["variant", "seed", "val_loss"]]
        tables["GPT validation loss"] = compare_to_controls(final, "val_loss", GPT_VARIANTS, lower_is_better=True)
        rep.figure("gpt_val_loss", plot_gpt_losses(losses))
        rep.table("gpt_val_loss_vs_baseline", tables["GPT validation loss"],
                  caption="**Final validation loss against the baseline**")
    rep.verdict("## What the data say\n" + describe_comparisons(tables, solving)
                + ("\n\n" + rep.summary["methods"] if "methods" in rep.summary else ""))
    return rep


def methods_section(rep: Report, cfg: SmoothReinitConfig, dqn: DQNRuns) -> None:
    """Smooth re-init against NoisyNet, parameter noise, ReDo, resets and (soft) shrink-and-perturb
    (``methods``), when the run has both controls and at least one other arm of that comparison."""
    arms = [v for v in cfg.dqn_variants if v in CATEGORY]
    if cfg.rule != "standard" or not set(CONTROLS) <= set(arms) or len(arms) < 3:
        return
    metrics = run_metrics(dqn.returns[dqn.returns["variant"].isin(arms)], cfg.dqn_step_budget)
    budget = (f"{cfg.dqn_step_budget:,} environment steps" if cfg.dqn_step_budget else "each run's own length") + \
        f" (at most {cfg.dqn_episodes} episodes)"
    rep.markdown("## Smooth re-initialisation against exploration and plasticity methods\n"
                 f"Standard CartPole-v1 rule (episodes end at 500 steps; solved at the first 100-episode mean >= 475); "
                 f"budget {budget}; {cfg.dqn_seeds} seeds per arm. Steps to solve are censored at the budget.")
    iqm = iqm_table(metrics, arms, reps=cfg.bootstrap, seed=cfg.seed)
    rep.table("methods_iqm", iqm, caption="**Interquartile mean** over runs with rliable's stratified-bootstrap 95% "
              "interval: the last-100 return divided by 500, and environment steps to solve (censored runs at the budget)")
    rep.table("methods_runs", metrics, show=False)
    versus = against_controls(metrics, arms)
    rep.table("methods_vs_controls", versus, caption="**Every arm against epsilon = 0 and the epsilon schedule**: share "
              "solved (Fisher), steps to solve (Mann-Whitney U), last-100 mean (paired by seed), each with Holm's adjustment over "
              "the arms (`*_holm`)")
    diag = dqn.diagnostics[dqn.diagnostics["variant"].isin(arms)] if len(dqn.diagnostics) else dqn.diagnostics
    effects = pd.DataFrame()
    if len(diag):
        rep.figure("methods_diagnostics", plot_diagnostics(diag, arms))
        effects = diagnostic_effects(run_diagnostics(diag), DQN_VARIANTS)
        rep.table("methods_diagnostic_effects", effects,
                  caption=f"**Diagnostics against the matching control** (run-level means over checkpoints every "
                          f"{cfg.diag_every} episodes on a fixed batch of 512 states; dormant: score <= tau = "
                          f"{cfg.dormant_tau}; paired-by-seed t intervals), and the share of runs that ended collapsed (one action "
                          "everywhere; Wilson interval)")
    rep.summary["methods"] = "**Against exploration and plasticity methods:**\n" + methods_verdict(versus, effects)
    rep.markdown("### Verdict\n" + methods_verdict(versus, effects))
