"""Search strategies compared on an equal budget of child-network epochs.

Each strategy is run ``repeats`` times with independent seeds. Its answer (recommendation)
is scored against a dense reference grid trained separately on fresh seeds: the
reference's mean accuracy, linearly interpolated at the recommended scale, estimates the
accuracy that scale gets when retrained (not the lucky value the strategy saw). Regret =
best reference mean - that value; a hit = recommendation within ``tolerance`` of the
reference's best scale. Everything is resumable: finished reference points and strategy
batches are appended to CSV files and replayed on the next run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .batched import train_many
from .data import ImageData, load_dataset
from .runtime import derive_seed, pick_device, seed_everything
from .scale_env import reward_of
from .stats import mean_ci
from .strategies import STRATEGIES, make_strategy, run_strategy
from .training import TrainResult
from .validation import (NotebookConfig, ParameterError, check_child_training, check_choice, check_float, check_int,
                         check_scale_range)


@dataclass
class ComparisonConfig(NotebookConfig):
    """Every knob of notebook 05_search_strategies."""

    notebook = "05_search_strategies"

    strategies: list = field(default_factory=lambda: list(STRATEGIES))
    repeats: int = 5
    budget: int = 700                 # child-network epochs per strategy run (100 proxy trainings of 7 epochs)
    epochs: int = 7                   # proxy horizon
    min_scale: float = 0.3
    max_scale: float = 1.7
    reference_scales: int = 29
    reference_seeds: int = 3
    tolerance: float = 0.05
    checkpoints: list = field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])
    update_every: int = 8             # for reinforce_batched
    batch: int = 32                   # networks trained together
    dataset: str = "cifar10"
    data_root: str = "data"
    train_subset: int | None = None
    test_subset: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    activation: str = "silu"
    seed: int = 0
    device: str = "auto"
    output_dir: str = "outputs/05_search_strategies"
    progress: bool = True

    def validate(self) -> "ComparisonConfig":
        if not isinstance(self.strategies, (list, tuple)) or not self.strategies:
            raise ParameterError(f"strategies must be a non-empty list from {', '.join(STRATEGIES)} (got {self.strategies!r})")
        for s in self.strategies:
            check_choice("strategies", s, STRATEGIES)
        check_int("repeats", self.repeats, low=1)
        check_int("epochs", self.epochs, low=1)
        check_int("budget", self.budget, low=self.epochs)
        check_scale_range(self.min_scale, self.max_scale)
        check_int("reference_scales", self.reference_scales, low=3)
        check_int("reference_seeds", self.reference_seeds, low=1)
        check_float("tolerance", self.tolerance, low=0.0, low_open=True)
        if not isinstance(self.checkpoints, (list, tuple)) or not self.checkpoints:
            raise ParameterError(f"checkpoints must be a non-empty list of budget fractions in (0, 1] (got {self.checkpoints!r})")
        for c in self.checkpoints:
            check_float("checkpoints", c, low=0.0, high=1.0, low_open=True)
        check_int("update_every", self.update_every, low=1)
        check_int("batch", self.batch, low=1)
        check_child_training(self)
        return self


def _trainer(cfg: ComparisonConfig, data: ImageData):
    def evaluate(scales, epochs, seeds):
        return train_many(scales, epochs, data, seeds=seeds, batch_size=cfg.batch_size, lr=cfg.lr,
                          activation=cfg.activation)
    return evaluate


def _check_identity(cfg: ComparisonConfig, out: Path) -> None:
    keys = ("epochs", "min_scale", "max_scale", "dataset", "train_subset", "test_subset", "batch_size", "lr",
            "activation", "seed", "reference_scales", "reference_seeds", "update_every")
    ident = {k: cfg.to_dict()[k] for k in keys}
    path = out / "identity.json"
    if path.exists():
        old = json.loads(path.read_text())
        for k in keys:
            if old.get(k) != ident[k]:
                raise ParameterError(f"output_dir {str(out)!r} holds a comparison with {k}={old.get(k)!r} "
                                     f"(now {k}={ident[k]!r}); use another output_dir or delete it")
    path.write_text(json.dumps(ident))


def run_comparison(cfg: ComparisonConfig, data: ImageData | None = None, evaluate=None):
    """Train the reference grid and run every (strategy, repeat); returns (reference, histories).

    ``evaluate(scales, epochs, seeds)`` replaces training (tests use a toy reward)."""
    cfg.validate()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_identity(cfg, out)
    seed_everything(cfg.seed)
    if evaluate is None:
        if data is None:
            data = load_dataset(cfg.dataset, cfg.data_root, train_subset=cfg.train_subset, test_subset=cfg.test_subset)
        evaluate = _trainer(cfg, data.to(pick_device(cfg.device)))

    ref_path = out / "reference.csv"
    reference = pd.read_csv(ref_path) if ref_path.exists() else pd.DataFrame(columns=["scale", "seed_index", "reward"])
    grid = np.linspace(cfg.min_scale, cfg.max_scale, cfg.reference_scales)
    for j in tqdm(range(cfg.reference_seeds), desc="reference grid", disable=not cfg.progress):
        if (reference["seed_index"] == j).any():
            continue
        seeds = [derive_seed(cfg.seed, 99, i, j) for i in range(len(grid))]
        rewards = []
        for k in range(0, len(grid), cfg.batch):
            rewards += [_as_reward(r) for r in evaluate(list(grid[k:k + cfg.batch]), cfg.epochs, seeds[k:k + cfg.batch])]
        part = pd.DataFrame({"scale": grid, "seed_index": j, "reward": rewards})
        part.to_csv(ref_path, mode="a", header=not ref_path.exists(), index=False)
        reference = pd.concat([reference, part], ignore_index=True)

    reference = reference.astype({"scale": float, "seed_index": int, "reward": float})
    hist_path = out / "histories.csv"
    old = pd.read_csv(hist_path) if hist_path.exists() else pd.DataFrame(columns=["strategy", "repeat"])
    histories = []
    jobs = [(s, r) for s in cfg.strategies for r in range(cfg.repeats)]
    for name, rep in tqdm(jobs, desc="strategy runs", disable=not cfg.progress):
        seed = derive_seed(cfg.seed, rep, STRATEGIES.index(name))
        prior = old[(old["strategy"] == name) & (old["repeat"] == rep)]

        def save(rows, name=name, rep=rep):
            rows = rows.assign(strategy=name, repeat=rep)
            rows.to_csv(hist_path, mode="a", header=not hist_path.exists(), index=False)

        strategy = make_strategy(name, cfg.min_scale, cfg.max_scale, cfg.epochs, cfg.budget, seed,
                                 update_every=cfg.update_every, parallel=cfg.batch)
        h = run_strategy(strategy, evaluate, cfg.budget, seed, history=prior if len(prior) else None,
                         on_batch=save, batch=cfg.batch)
        histories.append(h.assign(strategy=name, repeat=rep))
    return reference, pd.concat(histories, ignore_index=True)


def _as_reward(r) -> float:
    return reward_of(r) if isinstance(r, TrainResult) else float(r)


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
    """Per strategy and budget: mean regret with a 95% t interval, hit rate, mean recommendation."""
    rows = []
    for (name, c), g in scores.groupby(["strategy", "budget_fraction"]):
        m, lo, hi = mean_ci(g["regret"])
        rows.append({"strategy": name, "budget_fraction": c, "mean_regret": m, "regret_ci_low": lo,
                     "regret_ci_high": hi, "hit_rate": float(g["hit"].mean()),
                     "mean_recommendation": float(g["recommendation"].mean()), "runs": len(g)})
    return pd.DataFrame(rows)
