"""Searchers over initialisation formulas behind one ask/tell interface, with JSON state for exact resuming.

* :class:`RandomSearch`: each candidate drawn token by token, uniformly among the legal tokens
  (``grammar.random_formula``).
* :class:`RegularisedEvolution`: Real et al. 2019, "Regularized evolution for image classifier architecture
  search" (AAAI), Algorithm 1: a population of ``population`` random formulas; then each candidate is a mutation
  (``grammar.mutate``: a random subtree replaced by a random one) of the best of ``sample`` members drawn with
  replacement, and the OLDEST member leaves when a new one arrives (aging, not the worst).
* :class:`ReinforceController`: REINFORCE (Williams 1992) with an exponential-moving-average baseline over token
  sequences, as in the Swish search (Ramachandran et al. 2017; Zoph & Le 2017's controller) and the dissertation's
  agent (Sec. 3.5): a GRU over token embeddings emits the prefix sequence left to right, its softmax masked to the
  grammar's legal tokens (``Grammar.legal_mask``), then the distribution when the grammar offers several;
  Adam on ``-A log p(tokens) - entropy * H`` with the advantage ``A = R - b`` (``b`` the EMA of the rewards;
  ``normalise``: divided by the root of an EMA of ``A^2``, so that ``entropy`` means the same for accuracies and
  log-ratios), one step per ``batch_size`` rewards. Defaults (lr 1e-3, entropy 0.05) from the planted-optimum
  check: with lr 1e-2 and entropy 0.01 the controller collapsed on a one-token formula within ~20 candidates.

The budget is the number of child trainings. A candidate whose canonical key was already evaluated in the same
search is not trained again: :meth:`Searcher.cached` gives its reward, the searcher is told it again (REINFORCE
learns from it, evolution adds it to the population), and it does NOT count against the budget.
:func:`run_search` stops when ``budget`` distinct candidates are evaluated or after ``max_proposals`` proposals
(default 20 x budget; a converged controller proposes mostly repeats), whichever comes first.

``state_dict()`` is plain JSON data (the NumPy generator's ``bit_generator.state``, torch's generator state as a
list of ints, network and Adam tensors as flat lists with dtype and shape, the reward cache and the population),
and ``load_state_dict`` on a fresh searcher continues IDENTICALLY: the same next candidates and the same state
as a search that was never interrupted (tested for every searcher). The study stores it after every candidate.
Random streams: ``core.runtime.stream_seed(seed, purpose)``, one purpose per use.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from rlinit_lib.core.params import ParameterError, check_choice, check_float, check_int
from rlinit_lib.core.runtime import stream_seed
from rlinit_lib.formula_search.grammar import Formula, Grammar, mutate, random_formula

SEARCHERS = ("reinforce", "evolution", "random")
MAX_BUDGET = 1_000_000   # candidates in one search: a bound that protects memory and run time


class Searcher:
    """Base: the grammar, the reward cache (canonical key -> reward), the rewards told in order, the best."""

    name = "searcher"

    def __init__(self, grammar: Grammar, seed: int):
        if not isinstance(grammar, Grammar):
            raise ParameterError(f"grammar must be a Grammar (got {type(grammar).__name__})")
        self.grammar = grammar
        self.seed = check_int("seed", seed, low=0)
        self.rewards: dict[str, float] = {}   # canonical key -> reward of its first evaluation
        self.history: list[float] = []        # every reward told, repeats included
        self.best: tuple[Formula, float] | None = None

    def ask(self) -> Formula:
        raise NotImplementedError

    def cached(self, formula: Formula) -> float | None:
        """The reward of an equal formula already evaluated in this search, or None."""
        return self.rewards.get(formula.canonical)

    def tell(self, formula: Formula, reward: float) -> None:
        if not isinstance(formula, Formula) or not self.grammar.contains(formula):
            raise ParameterError(f"formula must be a Formula of this search's grammar (got {formula!r})")
        reward = check_float("reward", reward)   # diverged candidates: score them first (core.verdicts.score_diverged)
        self.rewards.setdefault(formula.canonical, reward)
        self.history.append(reward)
        if self.best is None or reward > self.best[1]:
            self.best = (formula, reward)
        self._learn(formula, reward)

    def _learn(self, formula: Formula, reward: float) -> None:
        """What the searcher does with a reward (nothing for random search)."""

    # ---- state ----
    def state_dict(self) -> dict:
        return {"searcher": self.name, "grammar": self.grammar.to_dict(), "seed": self.seed,
                "rewards": dict(self.rewards), "history": list(self.history),
                "best": None if self.best is None else [self.best[0].to_dict(), self.best[1]], **self._state()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("searcher") != self.name or Grammar.from_dict(state["grammar"]) != self.grammar:
            raise ParameterError(f"state is a {state.get('searcher')!r} search over another grammar or searcher "
                                 f"(this is {self.name!r})")
        self.seed = state["seed"]
        self.rewards = {k: float(v) for k, v in state["rewards"].items()}
        self.history = [float(r) for r in state["history"]]
        self.best = None if state["best"] is None else (Formula.from_dict(state["best"][0]), float(state["best"][1]))
        self._load(state)

    def _state(self) -> dict:
        return {}

    def _load(self, state: dict) -> None:
        pass


class RandomSearch(Searcher):
    """Every candidate a fresh random formula."""

    name = "random"

    def __init__(self, grammar: Grammar, seed: int):
        super().__init__(grammar, seed)
        self.rng = np.random.default_rng(stream_seed(self.seed, "formula_random_search"))

    def ask(self) -> Formula:
        return random_formula(self.grammar, self.rng)

    def _state(self):
        return {"rng": self.rng.bit_generator.state}

    def _load(self, state):
        self.rng.bit_generator.state = state["rng"]


class RegularisedEvolution(Searcher):
    """Real et al. 2019: tournament of ``sample`` (with replacement) from the last ``population`` told."""

    name = "evolution"

    def __init__(self, grammar: Grammar, seed: int, population: int = 20, sample: int = 5):
        super().__init__(grammar, seed)
        self.population_size = check_int("population", population, low=2, high=100_000)
        self.sample = check_int("sample", sample, low=1, high=self.population_size)
        self.rng = np.random.default_rng(stream_seed(self.seed, "formula_evolution"))
        self.population: list[tuple[Formula, float]] = []   # oldest first
        self.asked = 0

    def ask(self) -> Formula:
        self.asked += 1
        if self.asked <= self.population_size or not self.population:
            return random_formula(self.grammar, self.rng)
        picks = self.rng.integers(len(self.population), size=self.sample)
        parent = max((self.population[int(i)] for i in picks), key=lambda m: m[1])[0]
        return mutate(parent, self.grammar, self.rng)

    def _learn(self, formula, reward):
        self.population.append((formula, reward))
        if len(self.population) > self.population_size:
            self.population.pop(0)   # the oldest, whatever its reward

    def _state(self):
        return {"rng": self.rng.bit_generator.state, "asked": self.asked,
                "population": [[f.to_dict(), r] for f, r in self.population]}

    def _load(self, state):
        self.rng.bit_generator.state = state["rng"]
        self.asked = int(state["asked"])
        self.population = [(Formula.from_dict(f), float(r)) for f, r in state["population"]]


# ---- the controller ----

def _tensor_to_plain(t: torch.Tensor) -> dict:
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "data": t.flatten().tolist()}


def _plain_to_tensor(d: dict) -> torch.Tensor:
    return torch.tensor(d["data"], dtype=getattr(torch, d["dtype"])).reshape(d["shape"])


class Policy(nn.Module):
    """A GRU over the embedding of the previous token (a start token first); logits over the actions."""

    def __init__(self, actions: int, hidden: int, embedding: int):
        super().__init__()
        self.start = actions
        self.embed = nn.Embedding(actions + 1, embedding)
        self.cell = nn.GRUCell(embedding, hidden)
        self.head = nn.Linear(hidden, actions)

    def step(self, previous: int, h: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.cell(self.embed(torch.tensor([previous])), h)
        return self.head(h)[0], h


class ReinforceController(Searcher):
    """REINFORCE with an EMA baseline over masked token sequences (actions: the vocabulary, then the
    distributions when the grammar has more than one)."""

    name = "reinforce"

    def __init__(self, grammar: Grammar, seed: int, hidden: int = 32, embedding: int = 16, lr: float = 0.001,
                 entropy: float = 0.05, baseline_decay: float = 0.9, batch_size: int = 1, normalise: bool = True):
        super().__init__(grammar, seed)
        self.hidden = check_int("hidden", hidden, low=1, high=4096)
        self.embedding = check_int("embedding", embedding, low=1, high=4096)
        self.lr = check_float("lr", lr, low=0.0, low_open=True)
        self.entropy = check_float("entropy", entropy, low=0.0)
        self.baseline_decay = check_float("baseline_decay", baseline_decay, low=0.0, high=1.0, high_open=True)
        self.batch_size = check_int("batch_size", batch_size, low=1, high=100_000)
        self.normalise = check_choice("normalise", normalise, (True, False))
        vocab = grammar.vocabulary
        self.dists = grammar.distributions if len(grammar.distributions) > 1 else ()
        self.actions = vocab + self.dists
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(self.seed, "controller_init"))
            self.policy = Policy(len(self.actions), self.hidden, self.embedding)
        self.optimiser = torch.optim.Adam(self.policy.parameters(), lr=self.lr)
        self.generator = torch.Generator().manual_seed(stream_seed(self.seed, "controller_sampling"))
        self.baseline: float | None = None
        self.spread: float | None = None   # EMA of the squared advantage (normalise=True divides by its root)
        self.pending: list[tuple[Formula, float]] = []   # (formula, advantage) until a batch is full

    def _mask(self, tokens: Sequence[str]) -> torch.Tensor:
        """Legal actions after ``tokens``: the grammar's mask, then the distributions once the formula is complete."""
        expr = self.grammar.legal_mask(tokens)
        complete = not expr.any()
        return torch.from_numpy(np.concatenate([expr, np.full(len(self.dists), complete)]))

    def ask(self) -> Formula:
        tokens, dist = self._sample()
        return Formula(tuple(tokens), dist or self.grammar.distributions[0])

    @torch.no_grad()
    def _sample(self) -> tuple[list[str], str | None]:
        h, previous, tokens, dist = None, self.policy.start, [], None
        while True:
            mask = self._mask(tokens)
            if not mask.any() or dist is not None:
                return tokens, dist
            logits, h = self.policy.step(previous, h)
            probs = torch.softmax(logits.masked_fill(~mask, -math.inf), dim=0)
            previous = int(torch.multinomial(probs, 1, generator=self.generator))
            if previous < len(self.grammar.vocabulary):
                tokens.append(self.actions[previous])
            else:
                dist = self.actions[previous]

    def _actions_of(self, formula: Formula) -> list[int]:
        index = {a: i for i, a in enumerate(self.actions)}
        return [index[t] for t in formula.tokens] + ([index[formula.distribution]] if self.dists else [])

    def log_prob_and_entropy(self, formula: Formula) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(formula) under the policy and the summed entropy of its masked steps (with gradients)."""
        h, previous, prefix, logp, ent = None, self.policy.start, [], 0.0, 0.0
        for action in self._actions_of(formula):
            logits, h = self.policy.step(previous, h)
            log_probs = torch.log_softmax(logits.masked_fill(~self._mask(prefix), -math.inf), dim=0)
            logp = logp + log_probs[action]
            probs = log_probs.exp()
            ent = ent - (probs * torch.where(probs > 0, log_probs, torch.zeros_like(log_probs))).sum()
            previous = action
            prefix = prefix + [self.actions[action]] if action < len(self.grammar.vocabulary) else prefix
        return logp, ent

    def _learn(self, formula, reward):
        self.baseline = reward if self.baseline is None else self.baseline
        advantage, decay = reward - self.baseline, self.baseline_decay
        self.baseline = decay * self.baseline + (1 - decay) * reward
        if self.normalise:
            self.spread = advantage ** 2 if not self.spread else decay * self.spread + (1 - decay) * advantage ** 2
            advantage = advantage / math.sqrt(self.spread) if self.spread > 0 else 0.0
        self.pending.append((formula, advantage))
        if len(self.pending) >= self.batch_size:
            self._update()

    def _update(self) -> None:
        loss = 0.0
        for formula, advantage in self.pending:
            logp, ent = self.log_prob_and_entropy(formula)
            loss = loss - advantage * logp - self.entropy * ent
        self.optimiser.zero_grad()
        (loss / len(self.pending)).backward()
        self.optimiser.step()
        self.pending = []

    def _state(self):
        opt = self.optimiser.state_dict()["state"]
        return {"options": {"hidden": self.hidden, "embedding": self.embedding, "lr": self.lr, "entropy": self.entropy,
                            "baseline_decay": self.baseline_decay, "batch_size": self.batch_size,
                            "normalise": self.normalise},
                "policy": {k: _tensor_to_plain(v) for k, v in self.policy.state_dict().items()},
                "adam": [[int(i), {k: _tensor_to_plain(v) for k, v in s.items()}] for i, s in sorted(opt.items())],
                "generator": self.generator.get_state().tolist(),
                "baseline": self.baseline, "spread": self.spread, "pending": [[f.to_dict(), a] for f, a in self.pending]}

    def _load(self, state):
        mine = self._state()["options"]
        if state["options"] != mine:
            raise ParameterError(f"state was saved with controller options {state['options']} (now {mine})")
        self.policy.load_state_dict({k: _plain_to_tensor(v) for k, v in state["policy"].items()})
        opt = self.optimiser.state_dict()
        opt["state"] = {i: {k: _plain_to_tensor(v) for k, v in s.items()} for i, s in state["adam"]}
        self.optimiser.load_state_dict(opt)
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        self.baseline, self.spread = state["baseline"], state["spread"]
        self.pending = [(Formula.from_dict(f), float(a)) for f, a in state["pending"]]


OPTIONS = {"random": (), "evolution": ("population", "sample"),
           "reinforce": ("hidden", "embedding", "lr", "entropy", "baseline_decay", "batch_size", "normalise")}


def make_searcher(name: str, grammar: Grammar, seed: int, **options) -> Searcher:
    """One of :data:`SEARCHERS` with its options (each checked in one line naming it)."""
    check_choice("searcher", name, SEARCHERS)
    unknown = sorted(set(options) - set(OPTIONS[name]))
    if unknown:
        raise ParameterError(f"unknown option {unknown[0]!r} for searcher {name!r}; known: "
                             f"{', '.join(OPTIONS[name]) or 'none'}")
    cls = {"random": RandomSearch, "evolution": RegularisedEvolution, "reinforce": ReinforceController}[name]
    return cls(grammar, seed, **options)


def run_search(searcher: Searcher, reward_fn: Callable[[Formula], float], budget: int,
               max_proposals: int | None = None) -> list[tuple[int, Formula, str, float]]:
    """Ask, evaluate (unless cached), tell, until ``budget`` distinct candidates are evaluated or
    ``max_proposals`` proposals are made (default 20 x budget). Returns one row per evaluated candidate:
    ``(step, formula, canonical, reward)`` with step 1..budget; repeats are told but not listed."""
    budget = check_int("budget", budget, low=1, high=MAX_BUDGET)
    max_proposals = 20 * budget if max_proposals is None else check_int("max_proposals", max_proposals, low=budget)
    rows = []
    for _ in range(max_proposals):
        formula = searcher.ask()
        reward = searcher.cached(formula)
        if reward is None:
            reward = float(reward_fn(formula))
            rows.append((len(rows) + 1, formula, formula.canonical, reward))
        searcher.tell(formula, reward)
        if len(rows) == budget:
            break
    return rows


def planted_reward(target: Formula, fans: Sequence[Sequence[int]], g: float, floor: float = -10.0):
    """A synthetic reward peaked at ``target`` (issue 27's planted-optimum check): minus the mean over layers of
    ``|log(sigma_f / sigma_target)|``, at most 0 (reached by every formula equal to the target on these layers),
    ``floor`` for a formula that is not a positive finite number on some layer (the diverged rule's floor)."""
    reference = target.per_layer(fans, g)
    if not np.all(np.isfinite(reference)):
        raise ParameterError(f"target {target} is not a positive finite sigma on every layer of fans={fans!r}")
    floor = check_float("floor", floor, high=0.0)

    def reward(formula: Formula) -> float:
        sigma = formula.per_layer(fans, g)
        if not np.all(np.isfinite(sigma)):
            return floor
        return max(floor, -float(np.mean(np.abs(np.log(sigma / reference)))))

    return reward
