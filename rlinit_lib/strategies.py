"""Search strategies for one continuous number (the scale), behind one ask/tell interface.

The dissertation used REINFORCE; a practitioner tuning one number would reach for random
search, a grid, Bayesian optimisation (Optuna's TPE, CMA-ES, GP samplers) or a
budget-aware method (successive halving). Each strategy proposes (scale, epochs) pairs
with ``ask(n)`` and learns from rewards with ``tell``; ``recommendation()`` is its answer
so far. ``run_strategy`` drives any of them until a budget of child-network epochs is
spent, and can resume an interrupted run by replaying its recorded history (every
strategy is deterministic given its seed and the rewards it was told).

Rewards are the environment's: 10 x accuracy, -2 for a diverged training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .reinforce import ReinforceAgent
from .scale_env import reward_of
from .training import TrainResult
from .validation import ParameterError, check_choice, check_int

STRATEGIES = ("reinforce", "reinforce_batched", "reinforce_baseline", "random", "grid", "tpe", "cmaes", "gp",
              "successive_halving")


HISTORY_COLUMNS = ["step", "scale", "epochs", "reward", "seed", "budget_used", "recommendation"]
EXTRA_COLUMNS = ["accuracy", "nan_detected", "seconds", "final_train_loss"]


@dataclass
class Proposal:
    scale: float
    epochs: int


class Strategy:
    """Base: ``ask(n)`` at most ``n`` proposals (fewer when the strategy needs feedback first)."""

    name = "strategy"
    max_parallel = 1

    def __init__(self, min_scale: float, max_scale: float, epochs: int, seed: int):
        self.min_scale, self.max_scale, self.epochs, self.seed = float(min_scale), float(max_scale), int(epochs), seed
        self.observed: list[tuple[float, int, float]] = []  # (scale, epochs, reward)

    def ask(self, n: int = 1) -> list[Proposal]:
        raise NotImplementedError

    def tell(self, proposals: Sequence[Proposal], rewards: Sequence[float]) -> None:
        self.observed += [(p.scale, p.epochs, float(r)) for p, r in zip(proposals, rewards)]

    def recommendation(self) -> float | None:
        """Default: the scale with the best reward at the longest horizon seen (the dissertation's rule)."""
        if not self.observed:
            return None
        longest = max(e for _, e, _ in self.observed)
        return max((o for o in self.observed if o[1] == longest), key=lambda o: o[2])[0]


class RandomSearch(Strategy):
    name = "random"
    max_parallel = 10**9

    def __init__(self, *args):
        super().__init__(*args)
        self.rng = np.random.default_rng(self.seed)

    def ask(self, n=1):
        return [Proposal(float(self.rng.uniform(self.min_scale, self.max_scale)), self.epochs) for _ in range(n)]


class GridSearch(Strategy):
    """``points`` evenly spaced scales, visited coarse-to-fine (bit-reversed order) so any prefix covers the range."""

    name = "grid"
    max_parallel = 10**9

    def __init__(self, *args, points: int):
        super().__init__(*args)
        check_int("points", points, low=1)
        grid = np.linspace(self.min_scale, self.max_scale, points)
        bits = max(1, int(np.ceil(np.log2(points))))
        order = sorted(range(points), key=lambda i: int(format(i, f"0{bits}b")[::-1], 2))
        self.queue = [float(grid[i]) for i in order]

    def ask(self, n=1):
        out, self.queue = self.queue[:n], self.queue[n:]
        if not out:  # grid exhausted: repeat it (more seeds of the same points)
            self.queue = sorted({o[0] for o in self.observed})
            out, self.queue = self.queue[:n], self.queue[n:]
        return [Proposal(s, self.epochs) for s in out]

    def recommendation(self):
        """Best mean reward per grid point (repeats average out seed noise)."""
        if not self.observed:
            return None
        df = pd.DataFrame(self.observed, columns=["scale", "epochs", "reward"])
        return float(df.groupby("scale")["reward"].mean().idxmax())


class ReinforceSearch(Strategy):
    """The dissertation's agent as a strategy. Observation as ScaleEnv gives it after reset:
    (a uniform random scale, reward 0)."""

    name = "reinforce"

    def __init__(self, *args, update_every: int = 1, baseline: str = "none", lr: float = 1e-3):
        super().__init__(*args)
        self.agent = ReinforceAgent(self.min_scale, self.max_scale, lr=lr, update_every=update_every,
                                    seed=self.seed, baseline=baseline)
        self.rng = np.random.default_rng(self.seed)
        self.max_parallel = update_every
        self.pending: list[dict] = []

    def ask(self, n=1):
        n = min(n, self.agent.update_every - len(self.agent.episodes) - len(self.pending))
        out = []
        for _ in range(max(n, 0)):
            scale, info = self.agent.act([self.rng.uniform(self.min_scale, self.max_scale), 0.0])
            self.pending.append(info)
            out.append(Proposal(scale, self.epochs))
        return out

    def tell(self, proposals, rewards):
        super().tell(proposals, rewards)
        for r in rewards:
            info = self.pending.pop(0)
            self.agent.record(info["obs"], info["z"], r)
            self.agent.maybe_update()


class OptunaSearch(Strategy):
    """Optuna's ask/tell API with an in-memory (or given) storage; ``sampler``: tpe, cmaes, gp."""

    max_parallel = 1

    def __init__(self, *args, sampler: str = "tpe", storage: str | None = None, parallel: int = 1):
        super().__init__(*args)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        check_choice("sampler", sampler, ("tpe", "cmaes", "gp"))
        make = {"tpe": lambda: optuna.samplers.TPESampler(seed=self.seed),
                "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=self.seed),
                "gp": lambda: optuna.samplers.GPSampler(seed=self.seed)}
        self.name = sampler
        self.max_parallel = parallel
        self.study = optuna.create_study(direction="maximize", sampler=make[sampler](), storage=storage)
        self.trials: list = []

    def ask(self, n=1):
        out = []
        for _ in range(n):
            trial = self.study.ask()
            self.trials.append(trial)
            out.append(Proposal(trial.suggest_float("scale", self.min_scale, self.max_scale), self.epochs))
        return out

    def tell(self, proposals, rewards):
        super().tell(proposals, rewards)
        for r in rewards:
            self.study.tell(self.trials.pop(0), float(r))


class SuccessiveHalving(Strategy):
    """Successive halving over the training length: ``n0`` random scales trained ``min_epochs``,
    the best 1/eta retrained eta times longer, up to ``epochs``; then a new bracket.

    Deviation: promoted scales are retrained from scratch at the longer horizon (their budget
    counts in full) instead of being continued from a checkpoint."""

    name = "successive_halving"
    max_parallel = 10**9

    def __init__(self, *args, n0: int = 27, eta: int = 3, min_epochs: int = 1):
        super().__init__(*args)
        check_int("n0", n0, low=2)
        check_int("eta", eta, low=2)
        check_int("min_epochs", min_epochs, low=1, high=self.epochs)
        self.n0, self.eta, self.min_epochs = n0, eta, min_epochs
        self.rng = np.random.default_rng(self.seed)
        self._new_bracket()

    def _new_bracket(self):
        self.rung_epochs = self.min_epochs
        self.queue = [float(s) for s in self.rng.uniform(self.min_scale, self.max_scale, self.n0)]
        self.rung_results: list[tuple[float, float]] = []
        self.outstanding = 0

    def ask(self, n=1):
        out, self.queue = self.queue[:n], self.queue[n:]
        self.outstanding += len(out)
        return [Proposal(s, self.rung_epochs) for s in out]

    def tell(self, proposals, rewards):
        super().tell(proposals, rewards)
        self.rung_results += [(p.scale, float(r)) for p, r in zip(proposals, rewards)]
        self.outstanding -= len(proposals)
        if self.queue or self.outstanding:
            return
        if self.rung_epochs >= self.epochs:
            self._new_bracket()
            return
        keep = max(1, len(self.rung_results) // self.eta)
        best = sorted(self.rung_results, key=lambda t: -t[1])[:keep]
        self.rung_epochs = min(self.epochs, self.rung_epochs * self.eta)
        self.queue, self.rung_results = [s for s, _ in best], []


def make_strategy(name: str, min_scale: float, max_scale: float, epochs: int, budget: int, seed: int,
                  update_every: int = 8, parallel: int = 8) -> Strategy:
    """Build a strategy by name; ``budget`` (child-network epochs) sizes the grid."""
    check_choice("strategy", name, STRATEGIES)
    args = (min_scale, max_scale, epochs, seed)
    if name == "reinforce":
        return ReinforceSearch(*args, update_every=1)
    if name == "reinforce_batched":
        return ReinforceSearch(*args, update_every=update_every)
    if name == "reinforce_baseline":
        return ReinforceSearch(*args, update_every=1, baseline="running_mean")
    if name == "random":
        return RandomSearch(*args)
    if name == "grid":
        return GridSearch(*args, points=max(1, budget // epochs))
    if name == "successive_halving":
        return SuccessiveHalving(*args, n0=27, eta=3, min_epochs=1)
    return OptunaSearch(*args, sampler=name, parallel=1 if name == "gp" else parallel)


Evaluate = Callable[[list, int, list], list]  # (scales, epochs, seeds) -> rewards or TrainResults


def run_strategy(strategy: Strategy, evaluate: Evaluate, budget: int, seed: int = 0,
                 history: pd.DataFrame | None = None, on_batch: Callable[[pd.DataFrame], None] | None = None,
                 batch: int = 32) -> pd.DataFrame:
    """Ask, evaluate, tell until ``budget`` child epochs are spent; returns one row per evaluation.

    ``evaluate(scales, epochs, seeds)`` trains (or simulates) and returns rewards. The run stops
    at the first proposal that would overrun the budget (it is not evaluated). ``history`` (rows of an earlier, interrupted
    run of the same strategy and seed) is replayed first: its rewards are told again instead of
    being recomputed. ``on_batch(rows)`` is called after each evaluated batch (for saving).
    ``batch`` caps how many proposals are evaluated together (networks trained at once)."""
    check_int("budget", budget, low=1)
    check_int("batch", batch, low=1)
    rows: list[dict] = []
    used, step = 0, 0
    replay = [] if history is None else history.to_dict("records")
    while True:
        props = strategy.ask(min(strategy.max_parallel, batch, max(1, (budget - used) // strategy.epochs + 1)))
        if not props:
            raise ParameterError(f"strategy {strategy.name} proposed nothing")
        # stop at the first proposal that would overrun the budget (the affordable ones before it still run)
        cum = np.cumsum([p.epochs for p in props]) + used
        last_run = len(props) if cum[-1] <= budget else int(np.argmax(cum > budget))
        exhausted = last_run < len(props)
        props = props[:last_run]
        if not props:
            break
        seeds = [int(np.random.SeedSequence([seed, step + i]).generate_state(1)[0] % 2**31) for i in range(len(props))]
        recorded = replay[:len(props)]
        if len(recorded) == len(props) and all(abs(r["scale"] - p.scale) < 1e-9 and r["epochs"] == p.epochs
                                               for r, p in zip(recorded, props)):
            rewards, replay = [r["reward"] for r in recorded], replay[len(props):]
            extras = [{k: r[k] for k in EXTRA_COLUMNS if k in r} for r in recorded]
            fresh = False
        else:
            replay = []
            by_epochs: dict[int, list[int]] = {}
            for i, p in enumerate(props):
                by_epochs.setdefault(p.epochs, []).append(i)
            rewards, extras = [0.0] * len(props), [{} for _ in props]
            for e, idx in by_epochs.items():
                for i, r in zip(idx, evaluate([props[i].scale for i in idx], e, [seeds[i] for i in idx])):
                    if isinstance(r, TrainResult):
                        extras[i] = {"accuracy": r.test_accuracy, "nan_detected": r.nan_detected, "seconds": r.seconds,
                                     "final_train_loss": r.train_loss[-1] if r.train_loss else float("nan")}
                        r = reward_of(r)
                    rewards[i] = float(r)
            fresh = True
        # bounds are the strategy's contract; check it every time
        for p in props:
            if not (strategy.min_scale - 1e-9 <= p.scale <= strategy.max_scale + 1e-9):
                raise AssertionError(f"{strategy.name} proposed {p.scale} outside [{strategy.min_scale}, {strategy.max_scale}]")
        strategy.tell(props, rewards)
        new_rows = []
        for p, r, sd, ex in zip(props, rewards, seeds, extras):
            used += p.epochs
            new_rows.append({"step": step, "scale": p.scale, "epochs": p.epochs, "reward": r, "seed": sd,
                             "budget_used": used, "recommendation": strategy.recommendation(), **ex})
            step += 1
        rows += new_rows
        if on_batch is not None and fresh:
            on_batch(pd.DataFrame(new_rows))
        if exhausted:
            break
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS + [c for c in EXTRA_COLUMNS if any(c in r for r in rows)])
