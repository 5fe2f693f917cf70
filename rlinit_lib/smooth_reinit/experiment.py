"""Notebook 04: the experiments of "Smooth Re-Initializations", run over seeds with controls, and against the
exploration and plasticity methods they compete with.

DQN variants (names -> DQNConfig settings) follow the source and its controls: minimalRL's epsilon
schedule; epsilon 0 (the source's baseline); epsilon 0 with last-layer noise decaying x0.5 per
forward (in the target network too, or not); the skip network with and without middle-layer noise
(no decay); a reset of the last layer and a shrink-and-perturb (x0.8 + 0.2 fresh) every 200 episodes;
soft shrink-and-perturb after every update; NoisyNet, adaptive parameter noise and ReDo
(``exploration``, ``plasticity``); initialisations (PyTorch default, Xavier, He, scaled He). Each
variant is compared with its matching control; ``methods`` compares the smooth re-init, exploration
and plasticity arms with both controls and on diagnostics.

Declared before the run (``PRIMARY``): the primary comparisons are each smooth re-init arm against its
matched control (last-layer noise, with or without the target network, against epsilon = 0; middle-layer
noise with the skip connection against the same skip network without noise; the source's GPT noise
placement against the baseline), on the area under the return curve (validation loss for the GPT) paired
by seed, with the margin ``sesoi`` (``gpt_sesoi``). Every other comparison (the other arms against their
controls, every method against epsilon = 0 and the epsilon schedule, the diagnostics, the collapse shares)
is one exploratory family, corrected together. Verdict sentences come from ``core.verdicts``. Runs use
seeds ``derive_seed(seed, s)`` (the same for every variant, so comparisons are paired by seed). DQN runs (variants x seeds) are trials of
the run store: every arm goes ``dqn_chunk`` runs at a time through ``dqn_batched`` (same returns and
diagnostics as the faithful path, which ``dqn_batched=False`` runs one run per trial). GPT
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
from rlinit_lib.core.runtime import derive_seed, device_rule, environment_info, pick_device
from rlinit_lib.core.stats import interval, wilson_interval
from rlinit_lib.core.verdicts import score_diverged, sesoi_line, verdict_table
from rlinit_lib.core.store import RunStore
from rlinit_lib.core.trials import Trial
from rlinit_lib.smooth_reinit.char_gpt import SHIPPED_TEXT, CharData, GPTConfig, load_text, train_char_gpt
from rlinit_lib.smooth_reinit.dqn import DQNConfig, train_dqn
from rlinit_lib.smooth_reinit.dqn_batched import train_dqn_batched
from rlinit_lib.smooth_reinit.methods import (CATEGORY, CONTROLS, DIAG_SESOI, DIAGNOSTICS, collapse_tests, contrast,
                                              diagnostic_effects, exploratory_size, improvement_table, methods_verdict,
                                              plot_diagnostics, plot_profiles, rliable_table, run_diagnostics,
                                              run_metrics, verdict_family)

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
PRIMARY = {"dqn": ("eps0_last_noise", "eps0_last_noise_no_target", "eps0_skip_middle_noise"),
           "gpt": ("noise_last_mlp_proj",)}   # declared before the run: each against its matched control
MEASURES = {"auc": ("area under the return curve", "return points per episode"),
            "action_entropy": ("greedy-action entropy", "bits"), "dormant_fraction": ("dormant share", "share of units"),
            "srank": ("effective rank", "dimensions"), "val_loss": ("final validation loss", "nats per character")}
DQN_COLUMNS = ["variant", "seed", "episode", "return", "solved_at"]
GPT_COLUMNS = ["iter", "train_loss", "val_loss", "variant", "seed"]


QUESTION = ("Does smooth re-initialisation help DQN and a character GPT against matched controls, and does it act like "
            "exploration or like restored plasticity?")


@dataclass
class SmoothReinitConfig(RunFields):
    """Every knob of notebook 04_smooth_reinit."""

    notebook = "04_smooth_reinit"

    dqn_variants: list = param(list(DQN_VARIANTS), ListOf(Choice(tuple(DQN_VARIANTS)), 0, what="DQN variants"),
                               identity=False)
    dqn_seeds: int = param(10, Int(low=2, high=1_000), identity=False)     # more seeds extends a run
    dqn_episodes: int = param(1000, Int(low=1, high=1_000_000))                # at most this many episodes per run
    dqn_step_budget: int = param(0, Int(low=0, high=100_000_000))                # and at most this many env steps (0: no step budget)
    diag_every: int = param(20, Int(low=1, high=100_000))                    # episodes between diagnostics
    dormant_tau: float = param(0.025, Float(low=0.0, high=1.0, low_open=True, high_open=True))   # ReDo and diagnostics
    redo_every: int = param(500, Int(low=1, high=100_000))                   # updates between ReDo recycles
    soft_sp_alpha: float = param(1e-4, Float(low=0.0, high=1.0, low_open=True))   # soft shrink-and-perturb per update
    bootstrap: int = param(2000, Int(low=100, high=100_000), identity=False)   # rliable's bootstrap resamples
    # Smallest effects of interest, declared before the run. sesoi: of the area under the return curve (mean
    # return per episode; CartPole-v1's returns lie in 0-500), 25 points = 5% of that range: below it two arms
    # balance for the same time up to half a second of a 10-second episode, and the source's claims were of
    # hundreds of points. gpt_sesoi: of the final validation loss, 0.01 nats per character, half the gap the
    # source reported between noise (about 1.85-1.87) and baseline (about 1.86-1.90).
    sesoi: float = param(25.0, Float(low=0.0, low_open=True))
    gpt_sesoi: float = param(0.01, Float(low=0.0, low_open=True))
    rule: str = param("standard", Choice(("standard", "win")))   # standard: solved at a last-100 mean of 475
    win_steps: int = param(100_000, Int(low=1, high=100_000_000))                # rule win: the source's balanced steps
    dqn_batched: bool = param(True, BOOL, identity=False)      # runs of a chunk together (same returns)
    dqn_chunk: int = param(120, Int(low=1, high=100_000), identity=False)    # runs per batched trial
    dqn_device: str = param("cpu", device_rule, identity=False)
    gpt_variants: list = param(list(GPT_VARIANTS), ListOf(Choice(tuple(GPT_VARIANTS)), 0, what="GPT variants"),
                               identity=False)
    gpt_seeds: int = param(3, Int(low=2, high=1_000), identity=False)
    gpt_overrides: dict = param({})                            # GPTConfig fields, e.g. {"max_iters": 200}
    gpt_sigma: float = param(0.01, Float(low=0.0))
    text_path: str | None = param(None, Str(optional=True))    # None: the tiny-shakespeare copy shipped with rlinit_lib
    output_dir: str = param("outputs/04_smooth_reinit", identity=False)

    def environment(self) -> dict:
        return environment_info(pick_device(self.dqn_device))

    def check_data(self) -> str:
        """The text the GPT part trains on, loaded before any work (FileNotFoundError naming it)."""
        if not self.gpt_variants:
            return "no data"
        load_text(self.text_path)
        return f"text from {self.text_path or SHIPPED_TEXT}"

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


Config = SmoothReinitConfig


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


def dqn_trials(cfg: SmoothReinitConfig, done: set[str]) -> list[Trial]:
    """Every (variant, seed) not in ``done``, in batched chunks of ``dqn_chunk`` (every arm); with
    ``dqn_batched=False`` one run per trial on the faithful path (the same tables)."""
    units = [(v, derive_seed(cfg.seed, s)) for v in cfg.dqn_variants for s in range(cfg.dqn_seeds)]
    todo = [u for u in units if f"dqn/{u[0]}/{u[1]}" not in done]
    size = cfg.dqn_chunk if cfg.dqn_batched else 1
    trials = []
    for chunk in (todo[i:i + size] for i in range(0, len(todo), size)):
        keys = tuple(f"dqn/{v}/{s}" for v, s in chunk)
        trials.append(Trial(keys[0] if len(keys) == 1 else f"dqn-chunk/{keys[0]}/{len(keys)}", dqn_trial,
                            {"runs": chunk, "configs": [cfg.dqn_config(v, s).to_dict() for v, s in chunk],
                             "batched": cfg.dqn_batched, "device": cfg.dqn_device}, units=keys,
                            work={"DQN runs": len(chunk), "episodes at most": len(chunk) * cfg.dqn_episodes}))
    return trials


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


def gpt_trials(cfg: SmoothReinitConfig) -> list[Trial]:
    """Every GPT (variant, seed), one trial each."""
    return [Trial(f"gpt/{v}/{s}", gpt_trial, {"variant": v, "seed": s, "gpt": cfg.gpt_config(s).to_dict(),
                                               "sigma": cfg.gpt_sigma, "text_path": cfg.text_path},
                  work={"GPT iterations": cfg.gpt_config(s).max_iters})
            for v in cfg.gpt_variants for s in (derive_seed(cfg.seed, j) for j in range(cfg.gpt_seeds))]


def trials(cfg: SmoothReinitConfig, run) -> None:
    """The DQN runs (in chunks), then the GPT runs."""
    run(dqn_trials(cfg, run.finished()), "DQN trials")
    if cfg.gpt_variants:
        run(gpt_trials(cfg), "GPT runs")


@dataclass(frozen=True)
class SmoothReinitResult:
    dqn_returns: pd.DataFrame        # one row per (variant, seed, episode)
    dqn_diagnostics: pd.DataFrame    # one row per (variant, seed, checkpoint)
    gpt_losses: pd.DataFrame         # one row per (variant, seed, evaluation)
    EXPORTS = ("dqn_returns", "dqn_diagnostics", "gpt_losses")

    @property
    def dqn(self) -> DQNRuns:
        return DQNRuns(self.dqn_returns, self.dqn_diagnostics)


def tables(cfg: SmoothReinitConfig, store: RunStore, keys: list[str]) -> SmoothReinitResult:
    """The rows of every wanted (variant, seed): chunks of an earlier run may hold these runs and others."""
    wanted = {(v, derive_seed(cfg.seed, s)) for v in cfg.dqn_variants for s in range(cfg.dqn_seeds)}
    out = []
    for name, columns in (("dqn_returns", DQN_COLUMNS), ("dqn_diagnostics", None)):
        df = store.table(name, columns, sort=["variant", "seed", "episode"])
        out.append(df[[(v, s) in wanted for v, s in zip(df["variant"], df["seed"])]].reset_index(drop=True)
                   if len(df) else df)
    gpt = store.table("gpt_losses", GPT_COLUMNS, sort=["variant", "seed", "iter"], trials=[k for k in keys
                                                                                           if k.startswith("gpt/")])
    return SmoothReinitResult(*out, gpt)


def compare_solving(metrics: pd.DataFrame, controls: dict) -> pd.DataFrame:
    """How often and how soon each variant solves, against its control (``metrics``: ``methods.run_metrics``).
    The share solved has a Wilson 95% interval and is compared by Fisher's exact test; the time to solve is
    censored at the budget every run shares (steps under a step budget, else episodes), so every unsolved run
    ties above every solved one, and is compared by rank (Mann-Whitney U). Both p-values are unadjusted and
    descriptive: no verdict rests on them (``core.verdicts`` words come from the planned comparisons)."""
    rows = []
    for v, g in metrics.groupby("variant"):
        k, n = int(g["solved"].sum()), len(g)
        lo, hi = wilson_interval(k, n)
        row = {"variant": v, "solved": k, "runs": n, "share": k / n, "share_ci_low": lo, "share_ci_high": hi,
               "median_to_solve": float(g["to_solve"].median()), "censor_at": float(g["censor_at"].iloc[0])}
        ctrl = controls.get(v, (None, None))[1]
        c = metrics[metrics["variant"] == ctrl]
        if len(c):
            kc = int(c["solved"].sum())
            a, b = g["to_solve"].to_numpy(float), c["to_solve"].to_numpy(float)
            row |= {"control": ctrl, "control_solved": kc, "control_runs": len(c),
                    "control_median_to_solve": float(np.median(b)),
                    "p_share_unadjusted": float(fisher_exact([[k, n - k], [kc, len(c) - kc]]).pvalue),
                    "p_to_solve_unadjusted": float(mannwhitneyu(a, b).pvalue) if np.ptp(np.r_[a, b]) > 0 else 1.0}
        rows.append(row)
    return pd.DataFrame(rows, columns=["variant", "solved", "runs", "share", "share_ci_low", "share_ci_high",
                                       "median_to_solve", "censor_at", "control", "control_solved", "control_runs",
                                       "control_median_to_solve", "p_share_unadjusted", "p_to_solve_unadjusted"])


def primary_comparisons(cfg: SmoothReinitConfig) -> list[str]:
    """The primary comparisons' names, from the configuration alone (declared before the run)."""
    dqn = [comparison_name(a, DQN_VARIANTS[a][1], "auc") for a in PRIMARY["dqn"]
           if a in cfg.dqn_variants and DQN_VARIANTS[a][1] in cfg.dqn_variants]
    gpt = [comparison_name(a, GPT_VARIANTS[a][1], "val_loss") for a in PRIMARY["gpt"]
           if a in cfg.gpt_variants and GPT_VARIANTS[a][1] in cfg.gpt_variants]
    return dqn + gpt


def comparison_name(arm: str, control: str, measure: str) -> str:
    return f"{arm} vs {control}, {MEASURES[measure][0]}"


def planned_comparisons(cfg: SmoothReinitConfig, metrics: pd.DataFrame, per_diag: pd.DataFrame,
                        gpt_final: pd.DataFrame) -> list[tuple]:
    """Every comparison of the notebook, as ``methods.verdict_family`` takes them: each DQN arm against its
    matched control and each smooth re-init / exploration / plasticity arm against both controls (area under
    the curve), the compared diagnostics against the matched control, each GPT placement against the baseline."""
    wanted = []     # (table, arm, control, measure)
    for a in cfg.dqn_variants:
        ctrl = DQN_VARIANTS[a][1]
        if ctrl is not None:
            wanted.append((metrics, a, ctrl, "auc"))
    wanted += [(metrics, a, c, "auc") for a in cfg.dqn_variants if CATEGORY.get(a, "control") != "control"
               for c in CONTROLS if c != DQN_VARIANTS[a][1]]
    wanted += [(per_diag, a, DQN_VARIANTS[a][1], d) for a in cfg.dqn_variants
               if CATEGORY.get(a, "control") != "control" for d in DIAG_SESOI]
    wanted += [(gpt_final, a, GPT_VARIANTS[a][1], "val_loss") for a in cfg.gpt_variants if GPT_VARIANTS[a][1]]
    margin = {"auc": (cfg.sesoi, True), "val_loss": (cfg.gpt_sesoi, False)} | DIAG_SESOI
    planned = []
    for table, a, ctrl, measure in wanted:
        c = contrast(table, a, ctrl, measure, comparison_name(a, ctrl, measure)) if len(table) else None
        if c is not None:
            planned.append((c, *margin[measure], {"arm": a, "control": ctrl, "measure": measure,
                                                  "unit": MEASURES[measure][1]}))
    return planned


def gpt_final_losses(losses: pd.DataFrame, vocab_size: int) -> pd.DataFrame:
    """Per GPT run, the validation loss at the last evaluation; a diverged run (non-finite loss) is kept and
    scored at the loss of a uniform guess, ln(vocab_size) (``core.verdicts.score_diverged``)."""
    final = losses[losses["iter"] == losses["iter"].max()][["variant", "seed", "val_loss"]].copy()
    final["diverged"] = ~np.isfinite(final["val_loss"].to_numpy(float))
    final["val_loss"] = score_diverged(final["val_loss"], final["diverged"], float(np.log(vocab_size)))
    return final.reset_index(drop=True)


def arm_intervals(table: pd.DataFrame, column: str, bounds: tuple | None = None) -> pd.DataFrame:
    """Per variant: the mean of ``column`` with its t 95% interval (``core.stats.interval``)."""
    rows = []
    for v, g in table.groupby("variant"):
        iv = interval(g[column], "mean", bounds=bounds)
        rows.append({"variant": v, "runs": iv.n, "mean": iv.estimate, "ci_low": iv.low, "ci_high": iv.high,
                     "method": iv.method})
    return pd.DataFrame(rows, columns=["variant", "runs", "mean", "ci_low", "ci_high", "method"])


def plot_dqn_returns(returns: pd.DataFrame, variants: list[str], window: int = 20):
    """Returns over episodes per variant (a moving mean over ``window`` episodes per run), with a 95% t band
    over seeds that stays inside CartPole's [0, 500]; one panel per group of DQN_PANELS."""
    panels = dqn_panels(variants)
    smooth = returns.sort_values(["variant", "seed", "episode"]).assign(
        smoothed=lambda d: d.groupby(["variant", "seed"])["return"].transform(
            lambda r: r.rolling(window, min_periods=1).mean()))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, (title, vs) in zip(axes[0], panels.items()):
        band_plot(ax, smooth[smooth["variant"].isin(vs)], "episode", "smoothed", "seed", "variant", bounds=(0.0, 500.0))
        ax.set(title=title, xlabel="episode", ylabel=f"return ({window}-episode moving mean; 95% t band over seeds)")
    fig.tight_layout()
    return fig


def dqn_panels(variants: list[str]) -> dict[str, list[str]]:
    """The groups of DQN_PANELS present in ``variants`` (all variants in one group if none has two)."""
    panels = {t: [v for v in vs if v in variants] for t, vs in DQN_PANELS.items()}
    return {t: vs for t, vs in panels.items() if len(vs) > 1 or (vs and len(variants) == 1)} or {"DQN variants": variants}


def plot_gpt_losses(losses: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(8, 4))
    band_plot(ax, losses, "iter", "val_loss", "seed", "variant")
    ax.set(title="Character-level GPT on tiny-shakespeare", xlabel="iteration",
           ylabel="validation loss (nats per character; 95% t band over seeds)")
    fig.tight_layout()
    return fig


@dataclass
class Analysis:
    """Everything notebook 04 reports, as tables (see ``analyse``)."""

    metrics: pd.DataFrame        # per DQN run (methods.run_metrics)
    per_diag: pd.DataFrame       # per DQN run, diagnostics (methods.run_diagnostics)
    gpt_final: pd.DataFrame      # per GPT run, final validation loss
    family: pd.DataFrame         # every planned comparison (methods.verdict_family)
    collapses: pd.DataFrame      # collapse shares against the matched control (methods.collapse_tests)
    primary: list                # the primary comparisons' names


def analyse(cfg: SmoothReinitConfig, dqn: DQNRuns, losses: pd.DataFrame) -> Analysis:
    """Per-run measures, the planned comparisons (primary and one exploratory family) and the collapse tests."""
    metrics = run_metrics(dqn.returns, cfg.dqn_step_budget, cfg.dqn_episodes) if len(dqn.returns) else pd.DataFrame()
    per_diag = run_diagnostics(dqn.diagnostics) if len(dqn.diagnostics) else pd.DataFrame()
    gpt_final = gpt_final_losses(losses, _char_data(cfg.text_path).vocab_size) if len(losses) else pd.DataFrame()
    pairs = [(a, DQN_VARIANTS[a][1]) for a in cfg.dqn_variants if CATEGORY.get(a, "control") != "control"]
    if len(per_diag):
        present = set(per_diag["variant"])
        pairs = [(a, c) for a, c in pairs if a in present and c in present]
    else:
        pairs = []
    primary = primary_comparisons(cfg)
    family = verdict_family(planned_comparisons(cfg, metrics, per_diag, gpt_final), primary,
                            extra_exploratory=len(pairs))
    collapses = collapse_tests(per_diag, pairs, exploratory_size(family, len(pairs))) if pairs else \
        collapse_tests(pd.DataFrame(columns=["variant", "collapsed"]), [], 1)
    return Analysis(metrics, per_diag, gpt_final, family, collapses, primary)


def verdicts(cfg: SmoothReinitConfig, result: SmoothReinitResult) -> pd.DataFrame:
    """Every planned comparison: the primary ones (each arm against its matched control) and one exploratory family."""
    return analyse(cfg, result.dqn, result.gpt_losses).family


def report(cfg: SmoothReinitConfig, result: SmoothReinitResult) -> Report:
    """What notebook 04 shows: DQN curves, rliable's aggregates, success rates and the planned comparisons;
    smooth re-init against the exploration and plasticity methods on diagnostics; GPT losses; the verdicts
    (opening with the declared margin and primary comparisons)."""
    dqn, losses = result.dqn, result.gpt_losses
    rep, res = Report(cfg.output_dir), analyse(cfg, dqn, losses)
    if len(res.metrics):
        dqn_section(rep, cfg, dqn, res)
    if len(res.per_diag):
        methods_section(rep, cfg, dqn, res)
    if len(res.gpt_final):
        rep.markdown("## Character-level GPT on tiny-shakespeare")
        rep.figure("gpt_val_loss", plot_gpt_losses(losses))
        rep.table("gpt_final", res.gpt_final, show=False)
        rep.table("gpt_val_loss", arm_intervals(res.gpt_final, "val_loss").merge(
            res.gpt_final.groupby("variant", as_index=False)["diverged"].sum(), on="variant"),
            caption="**GPT validation loss** at the last evaluation (nats per character), mean with its t 95% "
                    "interval over seeds; diverged runs are kept, scored at ln(vocabulary)")
    rep.table("comparisons", res.family,
              caption="**Every planned comparison** (primary: at 95%, Bonferroni among the primary ones; exploratory: "
                      "one family, intervals at the family-corrected level and Bonferroni-adjusted p-values); paired "
                      "by seed, verdicts by `core.verdicts`")
    rep.verdict(verdict_text(cfg, res))
    return rep


def verdict_text(cfg: SmoothReinitConfig, res: Analysis) -> str:
    """The notebook's answer: the declared margin and primary comparisons, then one sentence per comparison
    (``core.verdicts``), then what the diagnostics say about exploration and plasticity."""
    primary = "; ".join(res.primary) or "none in this run (an arm and its matched control must both run)"
    head = sesoi_line(cfg.sesoi, f"return points of the area under the return curve (char-GPT: {cfg.gpt_sesoi:g} nats "
                                 "per character of validation loss)", primary)
    body = verdict_table(res.family) if len(res.family) else "No arm ran with its control."
    text = f"## What the data say\n{head}\n\n{body}"
    if len(res.per_diag):
        text += "\n\n**Against exploration and plasticity methods** (diagnostics against the matched control):\n" \
                + methods_verdict(diagnostic_effects(res.family, res.collapses))
    return text


def dqn_section(rep: Report, cfg: SmoothReinitConfig, dqn: DQNRuns, res: Analysis) -> None:
    """DQN returns, rliable's aggregates and profiles, success rates and the area under the curve per arm."""
    m, arms = res.metrics, list(dict.fromkeys(dqn.returns["variant"]))
    budget = (f"{cfg.dqn_step_budget:,} environment steps" if cfg.dqn_step_budget else f"{cfg.dqn_episodes} episodes")
    rule = "a last-100 mean >= 475" if cfg.rule == "standard" else f"{cfg.win_steps:,} balanced steps in one episode"
    rep.markdown("## DQN on CartPole-v1\n"
                 f"{cfg.dqn_seeds} seeds per arm (the same seeds in every arm: comparisons are paired by seed); at most "
                 f"{cfg.dqn_episodes} episodes" + (f" and {budget}" if cfg.dqn_step_budget else "") + f"; solved at {rule}. "
                 "Final returns are bimodal (a run collapses to one action, about 10, or balances, about 500), so they "
                 "are summarised with rliable's interquartile mean, optimality gap, probability of improvement and "
                 "performance profiles, and success rates; verdicts rest on the area under the return curve (the mean "
                 "return per episode over the whole run, less bimodal than the final returns), paired by seed.")
    rep.figure("dqn_returns", plot_dqn_returns(dqn.returns, arms), headline=True)
    rep.table("dqn_runs", m, show=False)
    rep.table("dqn_auc", arm_intervals(m, "auc", bounds=(0.0, 500.0) if cfg.rule == "standard" else None),
              caption="**Area under the return curve** (mean return per episode) per arm, mean with its t 95% interval")
    rep.table("dqn_rliable", rliable_table(m, arms, cfg.bootstrap, cfg.seed),
              caption="**rliable aggregates** with stratified-bootstrap 95% intervals: interquartile mean and optimality "
                      "gap of the normalised score (last-100 mean return / 500, clipped at 1), and the IQM of the time to "
                      f"solve ({'steps' if cfg.dqn_step_budget else 'episodes'}, unsolved runs at the budget "
                      f"{m['censor_at'].iloc[0]:g}: an upper bound)")
    pairs = [(a, DQN_VARIANTS[a][1]) for a in arms if DQN_VARIANTS[a][1] in arms]
    rep.table("dqn_improvement", improvement_table(m, pairs, cfg.bootstrap, cfg.seed),
              caption="**Probability of improvement** of each arm over its matched control (rliable: P(score of a run of "
                      "the arm > score of a run of the control), ties a half; stratified-bootstrap 95% interval)")
    rep.figure("dqn_performance_profiles", plot_profiles(m, dqn_panels(arms), cfg.bootstrap, cfg.seed))
    rep.table("dqn_solving", compare_solving(m, DQN_VARIANTS),
              caption=f"**Success rates** (solved at {rule} within the budget): share with a Wilson 95% interval, Fisher's "
                      "exact test against the matched control, and the time to solve censored at the budget compared by "
                      "rank (Mann-Whitney U); p-values unadjusted and descriptive")


def methods_section(rep: Report, cfg: SmoothReinitConfig, dqn: DQNRuns, res: Analysis) -> None:
    """Smooth re-init against NoisyNet, parameter noise, ReDo, resets and (soft) shrink-and-perturb on the
    diagnostics over training, each arm against its matching control."""
    arms = [v for v in cfg.dqn_variants if v in CATEGORY]
    rep.markdown("## Smooth re-initialisation against exploration and plasticity methods\n"
                 f"Diagnostics every {cfg.diag_every} episodes on a fixed batch of 512 states: "
                 + ", ".join(DIAGNOSTICS.values()) + f" (dormant: score <= tau = {cfg.dormant_tau}). Each arm is compared "
                 "with its matching control on run-level means (exploratory family; the sentences are in the verdicts), "
                 "and on the share of runs that ended collapsed (one action everywhere).")
    rep.figure("methods_diagnostics", plot_diagnostics(dqn.diagnostics[dqn.diagnostics["variant"].isin(arms)], arms))
    rep.table("methods_runs", res.per_diag, show=False)
    rep.table("methods_collapses", res.collapses,
              caption="**Collapsed runs** against the matched control: shares with Wilson 95% intervals, Fisher's exact "
                      "test with its p-value Bonferroni-adjusted over the exploratory family (`p_collapsed_adjusted`)")
