"""The dissertation's scale search: REINFORCE over ScaleEnv, with resume.

Source: the dissertation, Sec. 3.4-3.5 and 4.4.1 — N single-step episodes, each
training a child network for the proxy horizon; the chosen scale is the best non-NaN
episode; the s = 1.0 baseline is trained with the same proxy for comparison.

Each episode resets the environment with a seed derived from (seed, episode), and the
agent's full state is saved after every episode, so an interrupted search run again
with the same ``output_dir`` continues at the first unfinished episode and produces
the same table as an uninterrupted run. Running again with more ``episodes`` extends
a finished search.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from tqdm.auto import tqdm

from .data import ImageData, load_dataset
from .reinforce import ReinforceAgent
from .runtime import derive_seed, environment_info, pick_device, seed_everything
from .scale_env import ScaleEnv, reward_of
from .training import train_and_evaluate
from .stats import mean_ci, paired_difference
from .strategies import STRATEGIES, make_strategy, run_strategy
from .tracking import WANDB_MODES, Tracker
from .validation import (NotebookConfig, ParameterError, check_child_training, check_choice, check_float,
                         check_int, check_scale_range, check_str)

# Settings that may change between a run and its resumption without changing results.
RESUMABLE_CHANGES = ("episodes", "recheck_seeds", "batched", "device", "wandb_mode", "wandb_project", "progress", "output_dir", "data_root")
EPISODE_COLUMNS = ["episode", "epochs", "scale", "reward", "accuracy", "nan_detected", "policy_mean_scale", "policy_std",
                   "policy_loss", "final_train_loss", "final_train_accuracy", "child_seed", "seconds"]


@dataclass
class SearchConfig(NotebookConfig):
    """Every knob of notebook 01_search; defaults are the dissertation's (Sec. 4.4.1)."""

    notebook = "01_search"

    episodes: int = 200
    epochs: int = 7
    strategy: str = "reinforce"   # see rlinit_lib.strategies.STRATEGIES; reinforce is the dissertation's
    min_scale: float = 0.3
    max_scale: float = 1.7
    dataset: str = "cifar10"
    data_root: str = "data"
    train_subset: int | None = None
    test_subset: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    activation: str = "silu"
    agent_lr: float = 1e-3
    gamma: float = 0.99
    update_every: int = 1
    batched: bool = True          # train the update_every children of one policy update together
    baseline_scale: float = 1.0
    recheck_seeds: int = 5
    seed: int = 42
    device: str = "auto"
    wandb_mode: str = "offline"
    wandb_project: str = "rlinit"
    output_dir: str = "outputs/01_search"
    progress: bool = True

    def validate(self) -> "SearchConfig":
        check_int("episodes", self.episodes, low=1)
        check_int("epochs", self.epochs, low=1)
        check_choice("strategy", self.strategy, STRATEGIES)
        check_scale_range(self.min_scale, self.max_scale)
        check_child_training(self)
        check_float("agent_lr", self.agent_lr, low=0.0, low_open=True)
        check_float("gamma", self.gamma, low=0.0, high=1.0)
        check_int("update_every", self.update_every, low=1)
        check_choice("batched", self.batched, (True, False))
        check_float("baseline_scale", self.baseline_scale, low=0.0, low_open=True)
        check_int("recheck_seeds", self.recheck_seeds, low=0)
        check_choice("wandb_mode", self.wandb_mode, WANDB_MODES)
        check_str("wandb_project", self.wandb_project)
        return self


@dataclass
class SearchResult:
    table: pd.DataFrame         # one row per episode (EPISODE_COLUMNS)
    best: dict                  # best non-NaN episode
    baseline: dict              # s = baseline_scale with the same proxy
    summary: dict               # everything written to results.json
    output_dir: Path
    recheck: pd.DataFrame       # best scale vs baseline on fresh paired seeds


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _identity(cfg: SearchConfig) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES}


def run_search(
    cfg: SearchConfig,
    *,
    data: ImageData | None = None,
    evaluator=None,
    on_episode: Callable[[dict], None] | None = None,
) -> SearchResult:
    """Run (or resume) the REINFORCE scale search described by ``cfg``.

    ``data`` skips loading; ``evaluator(scale, seed) -> TrainResult`` replaces child
    training (tests and fast evaluators); ``on_episode(row)`` is called after each
    finished episode has been saved.
    """
    cfg.validate()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "search_state.pt"
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)

    state = None
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        if state["identity"] != _identity(cfg):
            diff = [k for k in _identity(cfg) if state["identity"].get(k) != _identity(cfg)[k]]
            k = diff[0] if diff else "?"
            raise ParameterError(
                f"output_dir {str(out)!r} holds a search with {k}={state['identity'].get(k)!r} (now {k}="
                f"{_identity(cfg).get(k)!r}); use another output_dir or delete {state_path}")

    if evaluator is None and data is None:
        data = load_dataset(cfg.dataset, cfg.data_root, train_subset=cfg.train_subset,
                            test_subset=cfg.test_subset).to(device)
    tracker = Tracker(cfg.wandb_mode, cfg.wandb_project, name=f"search-seed{cfg.seed}",
                      config=cfg.to_dict(), directory=out)
    child_epoch = {"n": 0}

    def log_epoch(epoch: int, metrics: dict) -> None:
        child_epoch["n"] += 1
        tracker.log({f"child/{k}": v for k, v in metrics.items()} | {"child/epoch": epoch + 1,
                                                                         "child/global_epoch": child_epoch["n"]})

    env = ScaleEnv(cfg.dataset, cfg.epochs, cfg.min_scale, cfg.max_scale, batch_size=cfg.batch_size, lr=cfg.lr,
                   activation=cfg.activation, device=str(device), data=data, evaluator=evaluator,
                   on_epoch=log_epoch)
    agent = ReinforceAgent(cfg.min_scale, cfg.max_scale, lr=cfg.agent_lr, gamma=cfg.gamma,
                           update_every=cfg.update_every, seed=cfg.seed)
    rows: list[dict] = []
    baseline, recheck = None, []
    if state is not None:
        agent.load_state_dict(state["agent"])
        rows, baseline, recheck = state["rows"], state.get("baseline"), state.get("recheck", [])

    def save():
        _atomic_save({"identity": _identity(cfg), "agent": agent.state_dict(), "rows": rows,
                      "baseline": baseline, "recheck": recheck}, state_path)
        pd.DataFrame(rows, columns=EPISODE_COLUMNS).to_csv(out / "episodes.csv", index=False)

    try:
        bar = tqdm(total=cfg.episodes, initial=min(len(rows), cfg.episodes), desc="episodes",
                   disable=not cfg.progress)

        def report(new_rows: list[dict]) -> None:
            for row in new_rows:
                tracker.log({f"episode/{k}": v for k, v in row.items()})
                bar.update(1)
                if on_episode is not None:
                    on_episode(row)

        if cfg.strategy == "reinforce":
            _run_reinforce(cfg, env, agent, rows, save, report)
        else:
            _run_other_strategy(cfg, env, rows, save, report)
        bar.close()

        if baseline is None:
            res = env.evaluator(cfg.baseline_scale, cfg.seed)
            baseline = {"scale": cfg.baseline_scale, "accuracy": float(res.test_accuracy),
                        "reward": reward_of(res), "nan_detected": bool(res.nan_detected),
                        "child_seed": cfg.seed, "seconds": res.seconds}
            save()
        best_scale = _best_row(rows[:cfg.episodes]).get("scale")
        recheck = [r for r in recheck if r["best_scale"] == best_scale]  # a longer search may move the best
        for i in tqdm(range(len(recheck), cfg.recheck_seeds if best_scale is not None else 0),
                      desc="re-check", disable=not cfg.progress):
            seed = derive_seed(cfg.seed, 1_000_000 + i)
            a, b = env.evaluator(best_scale, seed), env.evaluator(cfg.baseline_scale, seed)
            recheck.append({"seed": seed, "best_scale": best_scale, "best_accuracy": float(a.test_accuracy),
                            "baseline_accuracy": float(b.test_accuracy)})
            save()
    finally:
        tracker_summary = tracker.run_dir
        tracker.finish()

    table = pd.DataFrame(rows[:cfg.episodes], columns=EPISODE_COLUMNS)
    best = _best_row(rows[:cfg.episodes])
    recheck_table = pd.DataFrame(recheck[:cfg.recheck_seeds],
                                 columns=["seed", "best_scale", "best_accuracy", "baseline_accuracy"])
    recheck_table.to_csv(out / "recheck.csv", index=False)
    summary = {
        "best_scale": best.get("scale"), "best_accuracy": best.get("accuracy"),
        "baseline_scale": baseline["scale"], "baseline_accuracy": baseline["accuracy"],
        "difference": (best["accuracy"] - baseline["accuracy"]) if best else None,
        "nan_count": int(table["nan_detected"].sum()), "episodes": len(table),
        "total_child_seconds": float(table["seconds"].sum()),
        "recheck": _recheck_summary(recheck_table),
        "config": cfg.to_dict(), "environment": environment_info(device), "wandb_dir": tracker_summary,
    }
    summary = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
    table.to_csv(out / "episodes.csv", index=False)
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    return SearchResult(table, best, baseline, summary, out, recheck_table)


def _run_reinforce(cfg, env, agent, rows, save, report) -> None:
    """The dissertation's loop, one policy update's episodes at a time (evaluated together when batched)."""
    group = cfg.update_every if cfg.batched else 1
    while len(rows) < cfg.episodes:
        # one group = the episodes up to the next policy update (or one episode when not batched);
        # every action of a group is drawn from the same policy, exactly as in sequential play
        size = group - len(agent.episodes) if group > 1 else 1
        acts = []
        for episode in range(len(rows), min(len(rows) + size, cfg.episodes)):
            obs, _ = env.reset(seed=derive_seed(cfg.seed, episode))
            scale, pinfo = agent.act(obs)
            acts.append((episode, env.clip([scale]), env.draw_child_seed(), pinfo))
        if group > 1:
            results = env.batch_evaluator([a[1] for a in acts], [a[2] for a in acts])
        else:
            results = [env.evaluator(acts[0][1], acts[0][2])]
        new_rows = []
        for (episode, scale, child_seed, pinfo), res in zip(acts, results):
            _, reward, terminated, _, info = env.record_step(scale, child_seed, res)
            agent.record(pinfo["obs"], pinfo["z"], reward, done=terminated)
            loss = agent.maybe_update()
            new_rows.append({
                "episode": episode, "epochs": cfg.epochs, "scale": info["scale_factor"], "reward": reward,
                "accuracy": info["accuracy"], "nan_detected": info["nan_detected"],
                "policy_mean_scale": pinfo["policy_mean_scale"], "policy_std": pinfo["policy_std"],
                "policy_loss": float("nan") if loss is None else loss,
                "final_train_loss": res.train_loss[-1] if res.train_loss else float("nan"),
                "final_train_accuracy": res.train_accuracy[-1] if res.train_accuracy else float("nan"),
                "child_seed": child_seed, "seconds": res.seconds,
            })
        rows.extend(new_rows)
        save()
        report(new_rows)


def _run_other_strategy(cfg, env, rows, save, report) -> None:
    """Any non-REINFORCE strategy on the same budget (episodes x epochs child epochs); finished
    rows are replayed on resume. Successive halving's short trainings count as fractions of an episode."""
    strategy = make_strategy(cfg.strategy, cfg.min_scale, cfg.max_scale, cfg.epochs, cfg.episodes * cfg.epochs,
                             cfg.seed, update_every=cfg.update_every)
    history = pd.DataFrame(rows).rename(columns={"child_seed": "seed"}) if rows else None
    cols = {"episode", "scale", "reward", "accuracy", "nan_detected", "final_train_loss", "child_seed", "seconds",
            "epochs"}

    def evaluate(scales, epochs, seeds):
        return env.batch_evaluator(scales, seeds) if epochs == cfg.epochs else [
            train_and_evaluate(sc, epochs, env.data, batch_size=cfg.batch_size, lr=cfg.lr, activation=cfg.activation,
                               seed=sd) for sc, sd in zip(scales, seeds)]

    def on_batch(batch: pd.DataFrame):
        nan = float("nan")
        new = [{k: v for k, v in r.items() if k in cols}
               | {"episode": r["step"], "child_seed": r["seed"], "policy_mean_scale": nan, "policy_std": nan,
                  "policy_loss": nan, "final_train_accuracy": nan} for r in batch.to_dict("records")]
        rows.extend(new)
        save()
        report(new)

    run_strategy(strategy, evaluate, cfg.episodes * cfg.epochs, cfg.seed, history=history, on_batch=on_batch,
                 batch=max(cfg.update_every, 1))


def _best_row(rows: list[dict]) -> dict:
    """The dissertation's choice (Sec. 4.4.1): the non-NaN episode with the highest reward."""
    longest = max((r.get("epochs", 0) or 0 for r in rows), default=0)
    valid = [r for r in rows if not r["nan_detected"] and (r.get("epochs", longest) or longest) == longest]
    return dict(max(valid, key=lambda r: r["reward"])) if valid else {}


def _recheck_summary(t: pd.DataFrame) -> dict | None:
    """Best scale vs baseline retrained on fresh paired seeds: means, intervals, paired test."""
    if len(t) == 0:
        return None
    best_m, best_lo, best_hi = mean_ci(t["best_accuracy"])
    base_m, base_lo, base_hi = mean_ci(t["baseline_accuracy"])
    return {"n_seeds": len(t), "best_mean": best_m, "best_ci": [best_lo, best_hi],
            "baseline_mean": base_m, "baseline_ci": [base_lo, base_hi],
            "paired_difference": paired_difference(t["best_accuracy"], t["baseline_accuracy"])}


__all__ = ["SearchConfig", "SearchResult", "run_search", "EPISODE_COLUMNS"]
