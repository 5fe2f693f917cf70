"""Experiments of "Smooth Re-Initializations", run over seeds with controls (notebook 04).

DQN variants (names -> DQNConfig settings) follow the source and its controls: minimalRL's epsilon
schedule; epsilon 0 (the source's baseline); epsilon 0 with last-layer noise decaying x0.5 per
forward (in the target network too, or not); the skip network with and without middle-layer noise
(no decay); a reset of the last layer and a shrink-and-perturb (x0.8 + 0.2 fresh) every 200 episodes,
as references from the literature; initialisations (PyTorch default, Xavier, He, scaled He). Each
variant is compared with its matching control. The DQN runs (variants x seeds) are trained together
in batches of ``dqn_chunk`` by ``dqn_batched`` (same numbers as the faithful path, which
``dqn_batched=False`` runs one at a time). GPT variants put sigma-0.01 noise on the last block's MLP
output projection (the source) or elsewhere. Every (variant, seed) run is appended to a CSV when it finishes, so an
interrupted notebook resumes without repeating finished runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import fisher_exact, mannwhitneyu
from tqdm.auto import tqdm

from .char_gpt import CharData, GPTConfig, load_text, train_char_gpt
from .dqn import DQNConfig, train_dqn
from .dqn_batched import train_dqn_batched
from .runtime import pick_device
from .stats import mean_ci, welch, wilson_interval
from .validation import NotebookConfig, ParameterError, check_choice, check_int, check_str

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
    "init_xavier": ({"init": "xavier_uniform"}, "minimalrl_schedule"),
    "init_he": ({"init": "he_scaled"}, "minimalrl_schedule"),
    "init_he_1.25": ({"init": "he_scaled", "init_scale": 1.25}, "init_he"),
}  # name -> (settings, matching control)

GPT_VARIANTS = {
    "baseline": (None, None),
    "noise_last_mlp_proj": ("blocks.{last}.mlp.c_proj", "baseline"),   # the source's placement
    "noise_first_mlp_proj": ("blocks.0.mlp.c_proj", "baseline"),
}  # name -> (layer whose weight and bias get sigma-0.01 noise, control)


@dataclass
class SmoothReinitConfig(NotebookConfig):
    """Every knob of notebook 04_smooth_reinit."""

    notebook = "04_smooth_reinit"

    dqn_variants: list = field(default_factory=lambda: list(DQN_VARIANTS))
    dqn_seeds: int = 10
    dqn_episodes: int = 1000
    rule: str = "standard"          # standard | win
    win_steps: int = 100_000
    dqn_batched: bool = True         # all runs of a chunk trained together; False: one faithful run at a time
    dqn_chunk: int = 120             # runs per batch (and per resume unit)
    dqn_device: str = "cpu"
    gpt_variants: list = field(default_factory=lambda: list(GPT_VARIANTS))
    gpt_seeds: int = 3
    gpt_overrides: dict = field(default_factory=dict)   # GPTConfig fields, e.g. {"max_iters": 200}
    gpt_sigma: float = 0.01
    text_path: str | None = None     # tiny-shakespeare; None downloads it into data/
    seed: int = 0
    output_dir: str = "outputs/04_smooth_reinit"
    progress: bool = True

    def validate(self) -> "SmoothReinitConfig":
        for v in self.dqn_variants:
            check_choice("dqn_variants", v, DQN_VARIANTS)
        for v in self.gpt_variants:
            check_choice("gpt_variants", v, GPT_VARIANTS)
        check_int("dqn_seeds", self.dqn_seeds, low=2)
        check_int("dqn_episodes", self.dqn_episodes, low=1)
        check_choice("rule", self.rule, ("standard", "win"))
        check_int("win_steps", self.win_steps, low=1)
        check_choice("dqn_batched", self.dqn_batched, (True, False))
        check_int("dqn_chunk", self.dqn_chunk, low=1)
        try:
            pick_device(self.dqn_device)
        except ParameterError as err:
            raise ParameterError(f"dqn_{err}") from None
        check_int("gpt_seeds", self.gpt_seeds, low=2)
        if not isinstance(self.gpt_overrides, dict):
            raise ParameterError(f"gpt_overrides must be a mapping of GPTConfig fields (got {self.gpt_overrides!r})")
        self.gpt_config(0)
        check_int("seed", self.seed, low=0)
        check_str("output_dir", self.output_dir)
        check_choice("progress", self.progress, (True, False))
        return self

    def gpt_config(self, seed: int) -> GPTConfig:
        return GPTConfig.from_dict({**self.gpt_overrides, "seed": seed})

    def dqn_config(self, variant: str, seed: int) -> DQNConfig:
        return DQNConfig(episodes=self.dqn_episodes, rule=self.rule, win_steps=self.win_steps, seed=seed,
                         **DQN_VARIANTS[variant][0])


def _missing(path: Path, keys: list[tuple]) -> list[tuple]:
    if not path.exists():
        return keys
    done = set(map(tuple, pd.read_csv(path)[["variant", "seed"]].drop_duplicates().itertuples(index=False)))
    return [k for k in keys if k not in done]


def _append_dqn(path: Path, keys: list[tuple], runs: list[dict]) -> None:
    frames = [pd.DataFrame({"variant": v, "seed": s, "episode": np.arange(len(r["returns"])), "return": r["returns"],
                            "solved_at": r["solved_at"]}) for (v, s), r in zip(keys, runs)]
    pd.concat(frames).to_csv(path, mode="a", header=not path.exists(), index=False)


def run_dqn(cfg: SmoothReinitConfig) -> pd.DataFrame:
    """Returns per episode for every (variant, seed), long format; resumable."""
    path = Path(cfg.output_dir) / "dqn_returns.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    todo = _missing(path, [(v, cfg.seed + s) for v in cfg.dqn_variants for s in range(cfg.dqn_seeds)])
    if cfg.dqn_batched:
        chunks = [todo[i:i + cfg.dqn_chunk] for i in range(0, len(todo), cfg.dqn_chunk)]
        for chunk in chunks:
            runs = train_dqn_batched([cfg.dqn_config(v, s) for v, s in chunk], device=pick_device(cfg.dqn_device),
                                     progress=cfg.progress)
            _append_dqn(path, chunk, runs)
    else:
        for variant, seed in tqdm(todo, desc="DQN runs", disable=not cfg.progress):
            _append_dqn(path, [(variant, seed)], [train_dqn(cfg.dqn_config(variant, seed))])
    df = pd.read_csv(path)
    return df[df["variant"].isin(cfg.dqn_variants)]


def run_gpt(cfg: SmoothReinitConfig) -> pd.DataFrame:
    """Evaluation history for every (variant, seed); resumable. No variants: an empty table."""
    if not cfg.gpt_variants:
        return pd.DataFrame(columns=["iter", "train_loss", "val_loss", "variant", "seed"])
    path = Path(cfg.output_dir) / "gpt_losses.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    todo = _missing(path, [(v, cfg.seed + s) for v in cfg.gpt_variants for s in range(cfg.gpt_seeds)])
    if todo:
        data = CharData(load_text(cfg.text_path))
    for variant, seed in tqdm(todo, desc="GPT runs", disable=not cfg.progress):
        gcfg = cfg.gpt_config(seed)
        layer = GPT_VARIANTS[variant][0]
        noise = None if layer is None else {
            "names": [f"{layer.format(last=gcfg.n_layer - 1)}.{p}" for p in ("weight", "bias")],
            "sigma": cfg.gpt_sigma, "decay": 1.0, "in_eval": True}
        run = train_char_gpt(gcfg, data, noise=noise)
        pd.DataFrame(run["history"], columns=["iter", "train_loss", "val_loss"]).assign(
            variant=variant, seed=seed).to_csv(path, mode="a", header=not path.exists(), index=False)
    df = pd.read_csv(path)
    return df[df["variant"].isin(cfg.gpt_variants)]


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
    """Mean and 95% CI per variant, and Welch's difference against its matching control."""
    rows = []
    for v, g in metrics.groupby("variant"):
        m, lo, hi = mean_ci(g[metric])
        row = {"variant": v, "n": int(g[metric].notna().sum()), "mean": m, "ci_low": lo, "ci_high": hi}
        ctrl = controls.get(v, (None, None))[1]
        if ctrl is not None and ctrl in set(metrics["variant"]):
            w = welch(g[metric], metrics.loc[metrics["variant"] == ctrl, metric])
            sig = w["ci_low"] > 0 or w["ci_high"] < 0
            better = (w["mean"] < 0) == lower_is_better
            verdict = ("better" if better else "worse") if sig else "not significant"
            row |= {"control": ctrl, "diff_vs_control": w["mean"], "diff_ci_low": w["ci_low"],
                    "diff_ci_high": w["ci_high"], "p_value": w["p_value"],
                    "verdict": verdict if np.isfinite(w["p_value"]) else "too few runs to test"}
        rows.append(row)
    return pd.DataFrame(rows, columns=["variant", "n", "mean", "ci_low", "ci_high", "control", "diff_vs_control",
                                       "diff_ci_low", "diff_ci_high", "p_value", "verdict"])
