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

Tasks (``tasks``, default CartPole-v1 alone, the source's): every arm runs on every task with the same seeds
(``tasks.TASKS``: CartPole-v1, Acrobot-v1, MinAtar Breakout; each run's budget is ``dqn_step_budget`` or the
task's entry of ``task_budgets``). The comparisons above are made per task, in the task's return units, each
with the task's margin (``sesoi`` for CartPole, ``task_sesoi`` for the others); with more than one task the
comparison names end with the task. Across tasks the report adds rliable's aggregates of normalised scores
(``tasks.normalise``), the IQM and the optimality gap with stratified-bootstrap intervals over tasks x seeds,
and each arm's probability of improvement over its control. Arms that cannot run on a task are left out of
it with their reason (the skip connection on MinAtar's convolutional network: ``SKIPPED``).
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
from rlinit_lib.smooth_reinit.tasks import TASKS, get_task
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
DQN_COLUMNS = ["task", "variant", "seed", "episode", "return", "length", "solved_at"]
# The version of 04's DQN runs, part of every run's identity (``SmoothReinitConfig.identity``): a store of an
# older version is refused rather than mixed. 2: NoisyNet's draws changed when it moved to the batched path; run
# keys and tables carry the task; episode lengths recorded (issue 26).
DQN_VERSION = 2
# Margins of the tasks other than CartPole (whose margin is ``sesoi``), declared before the run, each 5% of
# the task's range of returns per episode as ``sesoi`` is of CartPole's 0-500: Acrobot-v1's returns lie in
# -500..0 (25 points); MinAtar Breakout's reference return is about 10 (0.5 points, half a brick per episode).
TASK_SESOI = {"Acrobot-v1": 25.0, "MinAtar-Breakout": 0.5}
SKIP_ARMS = ("eps0_skip", "eps0_skip_middle_noise")


def skipped(variant: str, task: str) -> str | None:
    """Why an arm does not run on a task (None: it does)."""
    if TASKS[task].conv and variant in SKIP_ARMS:
        return "the skip connection relu(fc2(x)) + x needs fc1 and fc2 of one width; fc1 is a convolution here"
    return None
GPT_COLUMNS = ["iter", "train_loss", "val_loss", "variant", "seed"]


QUESTION = ("Does smooth re-initialisation help DQN and a character GPT against matched controls, and does it act like "
            "exploration or like restored plasticity?")


@dataclass
class SmoothReinitConfig(RunFields):
    """Every knob of notebook 04_smooth_reinit."""

    notebook = "04_smooth_reinit"

    tasks: list = param(["CartPole-v1"], ListOf(Choice(tuple(TASKS)), 1, what="tasks"), identity=False)  # more extends a run
    task_budgets: dict = param({})            # task -> environment steps per run (default: dqn_step_budget)
    task_episodes: dict = param({})           # task -> episodes per run at most (default: dqn_episodes)
    task_sesoi: dict = param(dict(TASK_SESOI))  # task -> margin of the area under the return curve (not CartPole)
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

    def identity(self) -> dict:
        return {**super().identity(), "dqn_version": DQN_VERSION}

    def check(self):
        for task in self.tasks:
            get_task(task)          # a MinAtar task without the package: one line saying pip install minatar
        for name, table in (("task_budgets", self.task_budgets), ("task_episodes", self.task_episodes),
                            ("task_sesoi", self.task_sesoi)):
            if not isinstance(table, dict):
                raise ParameterError(f"{name} must be a mapping task -> value (got {table!r})")
            for task, value in table.items():
                if task not in TASKS:
                    raise ParameterError(f"{name} must name tasks of {', '.join(map(repr, TASKS))} (got {task!r})")
                if name != "task_sesoi":
                    Int(low=1, high=100_000_000)(f"{name}[{task!r}]", value)
                else:
                    Float(low=0.0, low_open=True)(f"task_sesoi[{task!r}]", value)
        if self.rule == "win" and self.tasks != ["CartPole-v1"]:
            raise ParameterError(f"rule 'win' is CartPole-v1's; tasks must be ['CartPole-v1'] with it (got {self.tasks})")
        if not isinstance(self.gpt_overrides, dict):
            raise ParameterError(f"gpt_overrides must be a mapping of GPTConfig fields (got {self.gpt_overrides!r})")
        self.gpt_config(0)

    def gpt_config(self, seed: int) -> GPTConfig:
        return GPTConfig.from_dict({**self.gpt_overrides, "seed": seed})

    def budget(self, task: str) -> int:
        """Environment steps per run on ``task`` (0: none)."""
        return self.task_budgets.get(task, self.dqn_step_budget)

    def episodes(self, task: str) -> int:
        """Episodes per run on ``task`` at most."""
        return self.task_episodes.get(task, self.dqn_episodes)

    def margin(self, task: str) -> float:
        """The smallest effect of interest of the area under the return curve on ``task``."""
        return self.sesoi if task == "CartPole-v1" else self.task_sesoi.get(task, TASK_SESOI[task])

    def label(self, task: str) -> str:
        """The ending of a comparison's name on ``task``: none with one task (names as before tasks existed)."""
        return f" on {task}" if len(self.tasks) > 1 else ""

    def dqn_config(self, variant: str, seed: int, task: str = "CartPole-v1") -> DQNConfig:
        settings = {k: getattr(self, k) if v is None else v for k, v in DQN_VARIANTS[variant][0].items()}
        return DQNConfig(task=task, episodes=self.episodes(task), rule=self.rule, win_steps=self.win_steps, seed=seed,
                         step_budget=self.budget(task), diag_every=self.diag_every, diag_tau=self.dormant_tau,
                         redo_tau=self.dormant_tau, **settings)


Config = SmoothReinitConfig


def dqn_trial(runs: list, configs: list, batched: bool, device: str) -> dict:
    """Train DQN runs (``runs``: (task, variant, seed) triples, ``configs``: their DQNConfig dicts); their
    returns, episode lengths and diagnostics."""
    cfgs = [DQNConfig(**c) for c in configs]
    results = train_dqn_batched(cfgs, device=pick_device(device)) if batched else [train_dqn(c) for c in cfgs]
    rows = [{"task": t, "variant": v, "seed": s, "episode": e, "return": ret, "length": n, "solved_at": r["solved_at"]}
            for (t, v, s), r in zip(runs, results) for e, (ret, n) in enumerate(zip(r["returns"], r["lengths"]))]
    diag = [{"task": t, "variant": v, "seed": s, **d} for (t, v, s), r in zip(runs, results) for d in r["diagnostics"]]
    return {"dqn_returns": rows, "dqn_diagnostics": diag}


@dataclass
class DQNRuns:
    returns: pd.DataFrame        # one row per (task, variant, seed, episode)
    diagnostics: pd.DataFrame    # one row per (task, variant, seed, checkpoint)


def dqn_units(cfg: SmoothReinitConfig) -> list[tuple]:
    """Every (task, variant, seed) of the run: each task's arms (those that apply to it) x the seeds."""
    return [(t, v, derive_seed(cfg.seed, s)) for t in cfg.tasks for v in cfg.dqn_variants if not skipped(v, t)
            for s in range(cfg.dqn_seeds)]


def dqn_trials(cfg: SmoothReinitConfig, done: set[str]) -> list[Trial]:
    """Every (task, variant, seed) not in ``done``, in batched chunks of ``dqn_chunk`` (every arm and task);
    with ``dqn_batched=False`` one run per trial on the faithful path (the same tables)."""
    todo = [u for u in dqn_units(cfg) if "dqn/{}/{}/{}".format(*u) not in done]
    size = cfg.dqn_chunk if cfg.dqn_batched else 1
    trials = []
    for chunk in (todo[i:i + size] for i in range(0, len(todo), size)):
        keys = tuple("dqn/{}/{}/{}".format(*u) for u in chunk)
        trials.append(Trial(keys[0] if len(keys) == 1 else f"dqn-chunk/{keys[0]}/{len(keys)}", dqn_trial,
                            {"runs": chunk, "configs": [cfg.dqn_config(v, s, t).to_dict() for t, v, s in chunk],
                             "batched": cfg.dqn_batched, "device": cfg.dqn_device}, units=keys,
                            work={"DQN runs": len(chunk), "episodes at most": sum(cfg.episodes(t) for t, _, _ in chunk)}))
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
    dqn_returns: pd.DataFrame        # one row per (task, variant, seed, episode)
    dqn_diagnostics: pd.DataFrame    # one row per (task, variant, seed, checkpoint)
    gpt_losses: pd.DataFrame         # one row per (variant, seed, evaluation)
    EXPORTS = ("dqn_returns", "dqn_diagnostics", "gpt_losses")

    @property
    def dqn(self) -> DQNRuns:
        return DQNRuns(self.dqn_returns, self.dqn_diagnostics)


def tables(cfg: SmoothReinitConfig, store: RunStore, keys: list[str]) -> SmoothReinitResult:
    """The rows of every wanted (task, variant, seed): chunks of an earlier run may hold these runs and others."""
    wanted = set(dqn_units(cfg))
    out = []
    for name, columns in (("dqn_returns", DQN_COLUMNS), ("dqn_diagnostics", None)):
        df = store.table(name, columns, sort=["task", "variant", "seed", "episode"])
        out.append(df[[u in wanted for u in zip(df["task"], df["variant"], df["seed"])]].reset_index(drop=True)
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
    """The primary comparisons' names, from the configuration alone (declared before the run): each smooth
    re-init arm of ``PRIMARY`` against its matched control on every task it runs on, and the GPT's."""
    dqn = [comparison_name(a, DQN_VARIANTS[a][1], "auc", cfg.label(t)) for t in cfg.tasks for a in PRIMARY["dqn"]
           if a in cfg.dqn_variants and DQN_VARIANTS[a][1] in cfg.dqn_variants and not skipped(a, t)]
    gpt = [comparison_name(a, GPT_VARIANTS[a][1], "val_loss") for a in PRIMARY["gpt"]
           if a in cfg.gpt_variants and GPT_VARIANTS[a][1] in cfg.gpt_variants]
    return dqn + gpt


def comparison_name(arm: str, control: str, measure: str, label: str = "") -> str:
    return f"{arm} vs {control}, {MEASURES[measure][0]}{label}"


def of_task(table: pd.DataFrame, task: str) -> pd.DataFrame:
    """The rows of ``task`` (all rows of a table without a task column: CartPole-v1's)."""
    if not len(table) or "task" not in table:
        return table
    return table[table["task"] == task].reset_index(drop=True)


def planned_comparisons(cfg: SmoothReinitConfig, metrics: pd.DataFrame, per_diag: pd.DataFrame,
                        gpt_final: pd.DataFrame) -> list[tuple]:
    """Every comparison of the notebook, as ``methods.verdict_family`` takes them, on every task: each DQN arm
    against its matched control and each smooth re-init / exploration / plasticity arm against both controls
    (area under the curve, the task's margin), the compared diagnostics against the matched control; each GPT
    placement against the baseline."""
    wanted = []     # (task, table, arm, control, measure)
    for t in cfg.tasks:
        m, d = of_task(metrics, t), of_task(per_diag, t)
        arms = [a for a in cfg.dqn_variants if not skipped(a, t)]
        wanted += [(t, m, a, DQN_VARIANTS[a][1], "auc") for a in arms if DQN_VARIANTS[a][1] is not None]
        wanted += [(t, m, a, c, "auc") for a in arms if CATEGORY.get(a, "control") != "control"
                   for c in CONTROLS if c != DQN_VARIANTS[a][1]]
        wanted += [(t, d, a, DQN_VARIANTS[a][1], x) for a in arms if CATEGORY.get(a, "control") != "control"
                   for x in DIAG_SESOI]
    wanted += [("", gpt_final, a, GPT_VARIANTS[a][1], "val_loss") for a in cfg.gpt_variants if GPT_VARIANTS[a][1]]
    planned = []
    for t, table, a, ctrl, measure in wanted:
        margin = {"auc": (cfg.margin(t), True) if t else None, "val_loss": (cfg.gpt_sesoi, False)} | DIAG_SESOI
        name = comparison_name(a, ctrl, measure, cfg.label(t) if t else "")
        c = contrast(table, a, ctrl, measure, name) if len(table) else None
        if c is not None:
            planned.append((c, *margin[measure], {"task": t, "arm": a, "control": ctrl, "measure": measure,
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


def return_bounds(task: str) -> tuple | None:
    """The range of a return per episode on ``task`` (None: unbounded above), for intervals and bands."""
    return {"CartPole-v1": (0.0, 500.0), "Acrobot-v1": (-500.0, 0.0)}.get(task, (0.0, np.inf))


def plot_dqn_returns(returns: pd.DataFrame, variants: list[str], window: int = 20, task: str = "CartPole-v1"):
    """Returns over episodes per variant (a moving mean over ``window`` episodes per run), with a 95% t band
    over seeds that stays inside the task's range of returns; one panel per group of DQN_PANELS."""
    panels = dqn_panels(variants)
    smooth = returns.sort_values(["variant", "seed", "episode"]).assign(
        smoothed=lambda d: d.groupby(["variant", "seed"])["return"].transform(
            lambda r: r.rolling(window, min_periods=1).mean()))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, (title, vs) in zip(axes[0], panels.items()):
        band_plot(ax, smooth[smooth["variant"].isin(vs)], "episode", "smoothed", "seed", "variant",
                  bounds=return_bounds(task))
        ax.set(title=f"{task}: {title}", xlabel="episode", ylabel=f"return ({window}-episode moving mean; 95% t band over seeds)")
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
    """Everything notebook 04 reports, as tables (see ``analyse``); DQN tables with a ``task`` column."""

    metrics: pd.DataFrame        # per DQN run (methods.run_metrics)
    per_diag: pd.DataFrame       # per DQN run, diagnostics (methods.run_diagnostics)
    gpt_final: pd.DataFrame      # per GPT run, final validation loss
    family: pd.DataFrame         # every planned comparison (methods.verdict_family)
    collapses: pd.DataFrame      # collapse shares against the matched control (methods.collapse_tests), per task
    primary: list                # the primary comparisons' names


def diag_pairs(cfg: SmoothReinitConfig, per_diag: pd.DataFrame, task: str) -> list[tuple]:
    """(arm, matched control) of the compared arms whose diagnostics were recorded on ``task``."""
    present = set(of_task(per_diag, task)["variant"]) if len(per_diag) else set()
    return [(a, DQN_VARIANTS[a][1]) for a in cfg.dqn_variants if CATEGORY.get(a, "control") != "control"
            and a in present and DQN_VARIANTS[a][1] in present]


def analyse(cfg: SmoothReinitConfig, dqn: DQNRuns, losses: pd.DataFrame) -> Analysis:
    """Per-run measures (per task), the planned comparisons (primary and one exploratory family over every
    task) and the collapse tests."""
    returns = dqn.returns
    parts = [run_metrics(of_task(returns, t), cfg.budget(t), cfg.episodes(t), task=t) for t in cfg.tasks
             if len(of_task(returns, t))] if len(returns) else []
    metrics = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    per_diag = run_diagnostics(dqn.diagnostics) if len(dqn.diagnostics) else pd.DataFrame()
    gpt_final = gpt_final_losses(losses, _char_data(cfg.text_path).vocab_size) if len(losses) else pd.DataFrame()
    pairs = {t: diag_pairs(cfg, per_diag, t) for t in cfg.tasks}
    n_pairs = sum(len(p) for p in pairs.values())
    primary = primary_comparisons(cfg)
    family = verdict_family(planned_comparisons(cfg, metrics, per_diag, gpt_final), primary,
                            extra_exploratory=n_pairs)
    size = exploratory_size(family, n_pairs)
    collapses = [collapse_tests(of_task(per_diag, t), p, size).assign(task=t) for t, p in pairs.items() if p]
    collapses = pd.concat(collapses, ignore_index=True) if collapses else \
        collapse_tests(pd.DataFrame(columns=["variant", "collapsed"]), [], 1).assign(task=[])
    collapses = collapses[["task"] + [c for c in collapses.columns if c != "task"]]
    return Analysis(metrics, per_diag, gpt_final, family, collapses, primary)


def verdicts(cfg: SmoothReinitConfig, result: SmoothReinitResult) -> pd.DataFrame:
    """Every planned comparison: the primary ones (each arm against its matched control) and one exploratory family."""
    return analyse(cfg, result.dqn, result.gpt_losses).family


def report(cfg: SmoothReinitConfig, result: SmoothReinitResult) -> Report:
    """What notebook 04 shows: per task, DQN curves, the area under the curve and success rates; across tasks,
    rliable's aggregates of normalised scores, probabilities of improvement and performance profiles; smooth
    re-init against the exploration and plasticity methods on diagnostics; GPT losses; the verdicts (opening
    with the declared margins and primary comparisons)."""
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
                      "one family over every task, intervals at the family-corrected level and Bonferroni-adjusted "
                      "p-values); paired by seed, verdicts by `core.verdicts`")
    rep.verdict(verdict_text(cfg, res))
    return rep


def margins_text(cfg: SmoothReinitConfig) -> str:
    """The declared margins of the area under the return curve, per task."""
    if len(cfg.tasks) == 1 and cfg.tasks[0] == "CartPole-v1":
        return "return points of the area under the return curve"
    others = ", ".join(f"{t}: {cfg.margin(t):g}" for t in cfg.tasks[1:])
    return f"return points of the area under the return curve on {cfg.tasks[0]}" + (
        f" (other tasks, in their return points: {others})" if others else "")


def verdict_text(cfg: SmoothReinitConfig, res: Analysis) -> str:
    """The notebook's answer: the declared margins and primary comparisons, then one sentence per comparison
    (``core.verdicts``), then what the diagnostics say about exploration and plasticity, per task."""
    primary = "; ".join(res.primary) or "none in this run (an arm and its matched control must both run)"
    head = sesoi_line(cfg.margin(cfg.tasks[0]),
                      f"{margins_text(cfg)} (char-GPT: {cfg.gpt_sesoi:g} nats per character of validation loss)", primary)
    body = verdict_table(res.family) if len(res.family) else "No arm ran with its control."
    text = f"## What the data say\n{head}\n\n{body}"
    if len(res.per_diag):
        for t in cfg.tasks:
            fam = res.family[res.family["task"] == t] if len(res.family) else res.family
            col = of_task(res.collapses, t)
            if len(col) or len(fam):
                where = f" on {t}" if len(cfg.tasks) > 1 else ""
                text += f"\n\n**Against exploration and plasticity methods{where}** (diagnostics against the matched " \
                        "control):\n" + methods_verdict(diagnostic_effects(fam, col.drop(columns="task")))
    return text


def task_name(cfg: SmoothReinitConfig, name: str, task: str) -> str:
    """A table or figure name on ``task``: as before tasks existed with one task, else with the task's name."""
    return name if len(cfg.tasks) == 1 else f"{name}_{task.replace('-', '_').lower()}"


def dqn_section(rep: Report, cfg: SmoothReinitConfig, dqn: DQNRuns, res: Analysis) -> None:
    """Per task: DQN returns, the area under the curve per arm and success rates; across tasks, rliable's
    aggregates and profiles of normalised scores and the probability of improvement."""
    m = res.metrics
    for task in [t for t in cfg.tasks if len(of_task(m, t))]:
        mt, rt, spec = of_task(m, task), of_task(dqn.returns, task), TASKS[task]
        arms = list(dict.fromkeys(rt["variant"]))
        budget = cfg.budget(task)
        rule = (f"a last-100 mean >= {spec.reference_score:g} (the task's reference score)" if cfg.rule == "standard"
                else f"{cfg.win_steps:,} balanced steps in one episode")
        left = [f"{v} ({skipped(v, task)})" for v in cfg.dqn_variants if skipped(v, task)]
        rep.markdown(f"## DQN on {task}\n"
                     f"{cfg.dqn_seeds} seeds per arm (the same seeds in every arm: comparisons are paired by seed); at "
                     f"most {cfg.episodes(task):,} episodes" + (f" and {budget:,} environment steps" if budget else "")
                     + f"; solved at {rule}. Verdicts rest on the area under the return curve (the mean return per "
                     f"episode over the whole run), paired by seed, with the margin {cfg.margin(task):g}."
                     + (f" Not run here: {'; '.join(left)}." if left else ""))
        rep.figure(task_name(cfg, "dqn_returns", task), plot_dqn_returns(rt, arms, task=task),
                   headline=task == cfg.tasks[0])
        rep.table(task_name(cfg, "dqn_runs", task), mt, show=False)
        rep.table(task_name(cfg, "dqn_auc", task), arm_intervals(mt, "auc", bounds=return_bounds(task)
                                                                  if cfg.rule == "standard" else None),
                  caption=f"**Area under the return curve on {task}** (mean return per episode) per arm, mean with its "
                          "t 95% interval")
        rep.table(task_name(cfg, "dqn_solving", task), compare_solving(mt, DQN_VARIANTS),
                  caption=f"**Success rates on {task}** (solved at {rule} within the budget): share with a Wilson 95% "
                          "interval, Fisher's exact test against the matched control, and the time to solve censored "
                          "at the budget compared by rank (Mann-Whitney U); p-values unadjusted and descriptive")
    arms = list(dict.fromkeys(dqn.returns["variant"]))
    several = len(set(m["task"])) > 1
    rep.markdown("## rliable's aggregates" + (" over tasks" if several else "") + "\n"
                 "Final returns are bimodal (a run collapses or solves), so they are summarised as rliable recommends: "
                 "the normalised score of a run is its last-100 mean return scaled so that uniform random play is 0 "
                 "and the task's reference score 1 (`tasks.normalise`; clipped at 1)"
                 + ("; across tasks the IQM and optimality gap pool runs x tasks, and the stratified bootstrap "
                    "resamples seeds within each task." if several else "."))
    rep.table("dqn_rliable", rliable_table(m, arms, cfg.bootstrap, cfg.seed),
              caption="**rliable aggregates** with stratified-bootstrap 95% intervals: interquartile mean and optimality "
                      "gap of the normalised score per task" + (" and over every task (`all tasks`)" if several else "")
                      + ", and per task the IQM of the time to solve (unsolved runs at the budget: an upper bound)")
    pairs = [(a, DQN_VARIANTS[a][1]) for a in arms if DQN_VARIANTS[a][1] in arms]
    rep.table("dqn_improvement", improvement_table(m, pairs, cfg.bootstrap, cfg.seed),
              caption="**Probability of improvement** of each arm over its matched control (rliable: P(score of a run of "
                      "the arm > score of a run of the control), ties a half" + ("; over tasks, its mean over tasks"
                                                                                if several else "")
                      + "; stratified-bootstrap 95% interval)")
    rep.figure("dqn_performance_profiles", plot_profiles(m, dqn_panels(arms), cfg.bootstrap, cfg.seed))


def methods_section(rep: Report, cfg: SmoothReinitConfig, dqn: DQNRuns, res: Analysis) -> None:
    """Smooth re-init against NoisyNet, parameter noise, ReDo, resets and (soft) shrink-and-perturb on the
    diagnostics over training, each arm against its matching control, per task."""
    arms = [v for v in cfg.dqn_variants if v in CATEGORY]
    rep.markdown("## Smooth re-initialisation against exploration and plasticity methods\n"
                 f"Diagnostics every {cfg.diag_every} episodes on a fixed batch of 512 states of random play on each "
                 "task: " + ", ".join(DIAGNOSTICS.values()) + f" (dormant: score <= tau = {cfg.dormant_tau}; a filter "
                 "of a convolution is one unit). Each arm is compared with its matching control on run-level means "
                 "(exploratory family; the sentences are in the verdicts), and on the share of runs that ended "
                 "collapsed (one action everywhere).")
    diag = dqn.diagnostics
    for task in cfg.tasks:
        d = of_task(diag, task)
        d = d[d["variant"].isin(arms)]
        if len(d):
            fig = plot_diagnostics(d, arms)
            if len(cfg.tasks) > 1:
                fig.suptitle(f"{task}: " + fig._suptitle.get_text(), fontsize=10)
            rep.figure(task_name(cfg, "methods_diagnostics", task), fig)
    rep.table("methods_runs", res.per_diag, show=False)
    rep.table("methods_collapses", res.collapses,
              caption="**Collapsed runs** against the matched control, per task: shares with Wilson 95% intervals, "
                      "Fisher's exact test with its p-value Bonferroni-adjusted over the exploratory family "
                      "(`p_collapsed_adjusted`)")
