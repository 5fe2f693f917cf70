"""Search strategies for one continuous number (the scale), behind one ask/tell interface.

The dissertation used REINFORCE; a practitioner tuning one number would reach for random
search, a grid, Bayesian optimisation (Optuna's TPE, CMA-ES, GP samplers) or a
budget-aware method (successive halving). Each strategy proposes (scale, epochs) pairs
with ``ask(n)`` and learns from rewards with ``tell``; ``recommendation()`` is its answer
so far. ``run_strategy`` drives any of them until a budget of child-network epochs is
spent. Every strategy is deterministic given its seed and the rewards it was told, so an interrupted
run resumes by asking again and answering from the run store (``search`` does that).

Rewards are the environment's: 10 x validation accuracy (``child.reward_of``; strategies choose on
validation data, and notebook 05 scores their answers on test data), -2 for a diverged training.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from rlinit_lib.core.params import ParameterError, check_choice, check_int
from rlinit_lib.scale_search.reinforce import ReinforceAgent

STRATEGIES = ("reinforce", "reinforce_batched", "reinforce_baseline", "random", "grid", "tpe", "cmaes", "gp",
              "successive_halving")


HISTORY_COLUMNS = ["step", "scale", "epochs", "reward", "seed", "budget_used", "recommendation"]


@dataclass
class Proposal:
    scale: float
    epochs: int
    info: dict = field(default_factory=dict)   # what the strategy wants recorded with it (e.g. the policy)


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

    def __init__(self, *args, update_every: int = 1, baseline: str = "none", lr: float = 1e-3, gamma: float = 0.99):
        super().__init__(*args)
        self.agent = ReinforceAgent(self.min_scale, self.max_scale, lr=lr, gamma=gamma, update_every=update_every,
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
            out.append(Proposal(scale, self.epochs, {"policy_mean_scale": info["policy_mean_scale"],
                                                     "policy_std": info["policy_std"]}))
        return out

    def tell(self, proposals, rewards):
        super().tell(proposals, rewards)
        for p, r in zip(proposals, rewards):
            info = self.pending.pop(0)
            self.agent.record(info["obs"], info["z"], r)
            loss = self.agent.maybe_update()
            p.info["policy_loss"] = float("nan") if loss is None else loss


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
                  update_every: int = 8, parallel: int = 8, agent_lr: float = 1e-3, gamma: float = 0.99,
                  reinforce_update_every: int = 1) -> Strategy:
    """Build a strategy by name; ``budget`` (child-network epochs) sizes the grid. ``reinforce`` is the
    dissertation's agent with ``reinforce_update_every`` episodes per update (1 in the dissertation);
    ``reinforce_batched`` the same agent with ``update_every`` (default 8)."""
    check_choice("strategy", name, STRATEGIES)
    args = (min_scale, max_scale, epochs, seed)
    agent = {"lr": agent_lr, "gamma": gamma}
    if name in ("reinforce", "reinforce_batched"):
        return ReinforceSearch(*args, update_every=reinforce_update_every if name == "reinforce" else update_every,
                               **agent)
    if name == "reinforce_baseline":
        return ReinforceSearch(*args, update_every=1, baseline="running_mean", **agent)
    if name == "random":
        return RandomSearch(*args)
    if name == "grid":
        return GridSearch(*args, points=max(1, budget // epochs))
    if name == "successive_halving":
        return SuccessiveHalving(*args, n0=27, eta=3, min_epochs=1)
    return OptunaSearch(*args, sampler=name, parallel=1 if name == "gp" else parallel)


Evaluate = Callable[[list, list, list], list]  # (proposals, steps, seeds) -> rewards, or rows with a "reward"


def run_strategy(strategy: Strategy, evaluate: Evaluate, budget: int, seed: int = 0,
                 on_batch: Callable[[pd.DataFrame], None] | None = None, batch: int = 32) -> pd.DataFrame:
    """Ask, evaluate, tell until ``budget`` child epochs are spent; returns one row per evaluation.

    ``evaluate(proposals, steps, seeds)`` trains (or simulates, or reads back from a run store) and
    returns, per proposal, its reward or a dict with ``reward`` and more columns (accuracy, ...).
    Step ``i`` trains with seed ``SeedSequence([seed, i])``. The run stops at the first proposal that
    would overrun the budget (it is not evaluated). ``on_batch(rows)`` is called after each batch.
    ``batch`` caps how many proposals are evaluated together."""
    check_int("budget", budget, low=1)
    check_int("batch", batch, low=1)
    rows: list[dict] = []
    used, step = 0, 0
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
        for p in props:   # the bounds are the strategy's contract; check it every time
            if not (strategy.min_scale - 1e-9 <= p.scale <= strategy.max_scale + 1e-9):
                raise AssertionError(f"{strategy.name} proposed {p.scale} outside [{strategy.min_scale}, {strategy.max_scale}]")
        steps = list(range(step, step + len(props)))
        seeds = [int(np.random.SeedSequence([seed, s]).generate_state(1)[0] % 2**31) for s in steps]
        results = [r if isinstance(r, dict) else {"reward": float(r)} for r in evaluate(props, steps, seeds)]
        strategy.tell(props, [float(r["reward"]) for r in results])
        new_rows = []
        for p, r, sd, st in zip(props, results, seeds, steps):
            used += p.epochs
            new_rows.append({"step": st, "scale": p.scale, "epochs": p.epochs, "seed": sd, "budget_used": used,
                             "recommendation": strategy.recommendation(), **r, **p.info})
        step += len(props)
        rows += new_rows
        if on_batch is not None:
            on_batch(pd.DataFrame(new_rows))
        if exhausted:
            break
    extra = [c for c in dict.fromkeys(k for r in rows for k in r) if c not in HISTORY_COLUMNS]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS + extra)
