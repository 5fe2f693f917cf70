"""Notebook 07: searching initialisation formulas instead of one scale (issue 27; the dissertation's Sec. 6.4, 7.4).

A candidate is a formula ``sigma_l = f(fan_in, fan_out, l, L, g)`` of the grammar (``grammar``), trained briefly
on a testbed where initialisation decides (``testbeds``: plain deep networks without normalisation or skips).
Each searcher of ``searchers`` (REINFORCE over token sequences, regularised evolution, random search;
``searchers``) runs ``repeats`` times on an equal budget of ``budget`` child epochs, i.e. ``budget //
proxy_epochs`` trained candidates. Its reward is ``reward`` after the proxy (validation accuracy by default; never
test accuracy).

**Equal budget.** Every trained candidate costs ``proxy_epochs``. A proposal equal (canonically, sympy) to one
already evaluated in the same search is not trained again: it is told its earlier reward and costs nothing. A
formula that is not a finite positive sigma on every layer of the testbed (``Formula.valid_for``) is not
trained either: it is scored by the diverged rule and costs nothing. A search stops at its budget or after
``20 x`` its candidates in proposals (a converged controller proposes mostly repeats).

**One rule for diverged runs** (``core.verdicts.score_diverged``): a candidate whose sigma is not a finite
positive number, or whose training produced NaN/inf, is kept and scored at :data:`DIVERGED_REWARD` of the
reward (validation accuracy: chance, 1/10, as notebooks 02, 05 and 06 score a diverged child); the searcher is
told that score and the search goes on. Re-trained networks that diverge score chance test accuracy.

**Resuming.** Each candidate's training is one trial of the run store, keyed ``search/<searcher>/<repeat>/<step>``.
The searches advance in lock-step rounds (one new candidate per search per round, so a round's trials run in
parallel on the executor). A searcher's proposals depend only on its seed and the rewards it was told, so a run
started again REPLAYS every search from its start: finished candidates come back from the store without
training (their formula is checked against the proposal), the first unfinished round is trained, and the tables
equal an uninterrupted run's. ``tables`` replays the same way from the store alone.

**Seeds** (``core.runtime.derive_seed``; inside a trial ``stream_seed`` per purpose: ``init``, ``data_order``):
the searcher of repeat r is seeded ``derive_seed(seed, SEARCHER_SALT, r)``; the child of step i of repeat r is
``derive_seed(seed, SEARCH_SALT, r, i)`` for every searcher (common random numbers: the design is paired by
repeat); re-training and transfer use ``derive_seed(seed, VALIDATION_SALT, j)``, disjoint from the search's; the
reward-fidelity re-training ``derive_seed(seed, FIDELITY_SALT, j)``, disjoint from both.

**Validation.** The best formula overall (``best``: the highest search reward of any trained, non-diverged
candidate; ties to the earlier searcher, repeat, step) and each searcher's best (``best_<searcher>``) are
re-trained for ``long_epochs`` on ``validation_seeds`` fresh seeds against the ``baselines`` (He, LeCun, Xavier,
``g / sqrt(fan_in)``: the analytic gain, SiLU's from ``initialisation.theory``; and the data-driven initialisers,
through ``testbeds.train_candidate``'s ``init_fn`` hook after a He draw (``data_driven_init``): ``lsuv``, LSUV as
its paper, orthonormal weights then each layer rescaled to unit output variance on one training batch; ``gradinit``,
GradInit's learned per-layer scales over ``gradinit_iters`` batches; ``metainit``, MetaInit's gradient-quotient
norms over ``metainit_steps`` steps), every arm with the same seed j, and reported on TEST accuracy (the choice used only the search's reward). The best formula is then trained on
each of ``transfer_testbeds`` against He, with the same fresh seeds, without re-searching.

**Verdicts**, declared before the run: the primary is ``best - he`` on the search testbed's test accuracy after
``long_epochs``, paired by seed, read with ``sesoi``. Exploratory, one Bonferroni family: ``best`` against the
other baselines, each searcher's best against He, REINFORCE against random search and evolution against random
search (best-so-far reward at the full budget, paired by repeat, margin ``search_sesoi``), and each transfer
testbed (``best - he``).

**Reward fidelity** (issue 27, item 4): how well each reward of ``rewards.REWARDS``, measured at the proxy,
predicts test accuracy after ``long_epochs``. The set (``fidelity_set``) is chosen blind to every reward: the first
``fidelity_candidates`` of a seeded uniform permutation (``stream_seed(seed, 'fidelity_sample')``) of the distinct
formulas the searches trained (diverged ones included; the proxy signals are those of their first search
training), plus the formula baselines, scored at the proxy on ``baseline_proxy_seed`` (the search's convention at
a step no search trains). Each is re-trained for ``long_epochs`` on ``fidelity_seeds`` fresh seeds
(``fidelity/long/<canonical>/<j>``, one trial each, so a resumed run finishes the same table). Per reward:
Spearman's rho between the proxy signal (a diverged or undefined one at the diverged score, as the search scores
it) and the mean long test accuracy (diverged at chance), with a percentile-bootstrap interval over formulas
(``rank_agreement``). LSUV is not in the set: it is not a formula of the search.

**Which reward finds better formulas** (issue 27, item 4; ``reward_searches``, ``reward_searcher``):
``reward_searcher`` (evolution by default) searches again on each other reward, with the main searches' budget,
repeats, searcher seeds and child seeds, so repeat r is paired across rewards (keys ``search@<reward>/...``). A
proposal with the formula and child seed of a candidate the main searches already trained takes that row instead
of training again: training is deterministic given both on one device, and the proposal still costs its proxy
epochs (reuse draws on the main searches only, so the order of the rewards changes nothing). Each search hands on
its best candidate by its own reward; that pick is re-trained for
``long_epochs`` on the validation's fresh seeds (the same trials as a validation arm with that formula), and each
reward is compared with ``reward`` on the mean test accuracy of its repeats' picks, paired by repeat, in the
exploratory family.

**Many candidates at once** (issue 27, item 7; ``candidate_batch``, ``batch_mechanism``): the unfinished
candidates of a search round, and of the re-training, transfer and fidelity trials grouped by testbed and epochs,
go ``candidate_batch`` to a trial (``batched_trials``), which trains them together (``testbeds.train_candidates``:
one vmapped stack of networks on a GPU, one after another on a CPU, where the executor's workers run trials in
parallel instead). Each candidate keeps its own seeds and divergence, so the rows are the loop's up to float
rounding on the GPU and bit for bit on the CPU (a test compares the tables). Default: 1 on the CPU,
``GPU_CANDIDATE_BATCH`` on CUDA.

Left out: the data-driven baselines' cost in a budget (they are re-training arms only; they train one per trial).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import io
import math
import time
from dataclasses import dataclass
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rlinit_lib.core.data import DATASET_CHANNELS, DATASET_CLASSES, DataFields, load_cached
from rlinit_lib.core.notebook import Report
from rlinit_lib.core.params import Choice, Float, Int, ListOf, ParameterError, RunFields, param
from rlinit_lib.core.plots import band_plot
from rlinit_lib.core.runtime import derive_seed, device_rule, environment_info, pick_device, stream_seed
from rlinit_lib.core.stats import MIN_BOOTSTRAP_N, interval, spearman_rows
from rlinit_lib.core.store import RunStore, StoreError
from rlinit_lib.core.trials import Trial
from rlinit_lib.core.verdicts import (ACCURACY_DIFFERENCE, Contrast, compare_family, score_diverged, sesoi_line,
                                      verdict_table)
from rlinit_lib.formula_search.grammar import (CONSTANTS, DISTRIBUTIONS, KNOWN, MAX_LENGTH, OPERATORS, TERMINALS,
                                               Formula, Grammar, _names, parse)
from rlinit_lib.formula_search.rewards import DIRECTION, REWARDS
from rlinit_lib.formula_search.searchers import MAX_BUDGET, SEARCHERS, Searcher, make_searcher
from rlinit_lib.formula_search.testbeds import (MECHANISMS, TESTBEDS, build, gain, get_testbed, layer_fans,
                                               train_candidate, train_candidates)
from rlinit_lib.initialisation.data_driven import gradinit, lsuv_init, metainit

SEARCH_SALT, SEARCHER_SALT, VALIDATION_SALT, FIDELITY_SALT = 701, 702, 703, 704   # this notebook's own seeds
CHANCE = 0.1                 # every dataset of core.data has 10 classes: a diverged network scores 1/10
# The one rule for a diverged candidate (core.verdicts.score_diverged), per reward (higher is better): chance
# accuracy, or a floor below what a trained network measures (rewards.py: the log-scale spreads are bounded by
# float32's range, |log| < 89, and the loss slope of a network that learns at all lies within +-10)
DIVERGED_REWARD = {"val_accuracy": CHANCE, "grad_norm_variance": -1e4, "activation_stability": -100.0,
                   "loss_slope": -10.0}
BASELINES = ("he", "lecun", "xavier", "he_gain", "lsuv", "gradinit", "metainit")   # grammar.KNOWN's names (he_gain =
# g / sqrt(fan_in)), and DATA_DRIVEN's: an initialiser run after its start formula's sigmas, rescaling them
DATA_DRIVEN = {"lsuv": "he", "gradinit": "he", "metainit": "he"}   # name -> the KNOWN formula drawn first (LSUV then
# re-draws orthonormal weights; GradInit and MetaInit rescale He's draw layer by layer, as their papers start)
LSUV_TOLERANCE = 0.1           # on each layer's output variance (the LSUV paper's t; data_driven.lsuv_init)
PRIMARY = "best - he"        # declared before the run: test accuracy after long_epochs, paired by seed
SEARCH_CONTRASTS = (("reinforce", "random"), ("evolution", "random"))
PROPOSALS_PER_CANDIDATE = 20  # a search stops after this many proposals per candidate of its budget
ACCURACY = (0.0, 1.0)
TRAINED_COLUMNS = ["val_accuracy", "test_accuracy", "diverged", "reason", "epochs", "steps", "initial_loss",
                   "train_loss", *[r for r in REWARDS if r != "val_accuracy"], "seconds"]
CANDIDATE_COLUMNS = ["searcher", "repeat", "step", "proposals", "formula", "canonical", "tokens", "distribution",
                     "trained", "seed", "budget_used", "reward", "best_so_far", *TRAINED_COLUMNS]
RUN_COLUMNS = ["arm", "formula", "canonical", "seed_index", "seed", "val_accuracy", "test_accuracy", "diverged"]
FIDELITY_FORMULA_COLUMNS = ["canonical", "formula", "source", "proxy_seed", "proxy_diverged", *REWARDS,
                            "long_test_accuracy", "long_diverged_rate", "long_seeds"]
FIDELITY_COLUMNS = ["reward", "spearman", "ci_low", "ci_high", "formulas", "diverged_at_proxy", "spearman_trained",
                    "trained_ci_low", "trained_ci_high", "formulas_trained", "confidence"]
REWARD_COMPARISON_COLUMNS = ["objective", "repeat", "formula", "canonical", "search_reward", "candidates_trained",
                             "test_accuracy", "diverged_rate", "seeds"]
FIDELITY_BOOT = 2000         # percentile-bootstrap resamples of the fidelity set's formulas

QUESTION = ("Does a search over initialisation formulas (REINFORCE, regularised evolution, random search) find a "
            "formula that beats He where initialisation decides, and does the controller beat random search on the "
            "same budget?")


@dataclass(frozen=True)
class Primitives:
    """A rule for a list of grammar primitives: each known, none repeated, non-empty unless ``allow_empty``."""

    known: tuple
    allow_empty: bool = False

    def __call__(self, name, value):
        _names(name, value, self.known, self.allow_empty)


@dataclass
class FormulaSearchConfig(DataFields, RunFields):
    """Every knob of notebook 07_formula_search. The data fields are ``core.data.DataFields``; the network, its
    activation, optimiser, learning rate and batch size are the testbed's (``testbeds.TESTBEDS``); the testbeds
    train in float32."""

    notebook = "07_formula_search"

    testbed: str = param("mlp20_relu_sgd", Choice(tuple(TESTBEDS)))        # where the search runs
    searchers: list = param(list(SEARCHERS), ListOf(Choice(SEARCHERS), what="searcher names"), identity=False)
    repeats: int = param(5, Int(low=2, high=1_000), identity=False)         # runs per searcher (paired by repeat)
    budget: int = param(200, Int(low=1, high=MAX_BUDGET))                  # child epochs per searcher run
    proxy_epochs: int = param(2, Int(low=1, high=10_000))                  # one candidate's training
    reward: str = param("val_accuracy", Choice(REWARDS))                   # never test accuracy
    max_length: int = param(12, Int(low=1, high=MAX_LENGTH))               # tokens of a formula (prefix notation)
    operators: list = param(list(Grammar.operators), Primitives(tuple(OPERATORS)))
    terminals: list = param(list(TERMINALS), Primitives(TERMINALS, allow_empty=True))
    constants: list = param(list(Grammar.constants), Primitives(tuple(CONSTANTS), allow_empty=True))
    distributions: list = param(["normal"], Primitives(DISTRIBUTIONS))      # normal | uniform | orthogonal
    population: int = param(20, Int(low=2, high=100_000))                  # regularised evolution
    tournament: int = param(5, Int(low=1, high=100_000))                   # members drawn per parent choice
    controller_lr: float = param(1e-3, Float(low=0.0, low_open=True))      # REINFORCE's Adam
    controller_entropy: float = param(0.05, Float(low=0.0))                # REINFORCE's entropy bonus
    baselines: list = param(list(BASELINES), ListOf(Choice((*KNOWN, *DATA_DRIVEN)),
                                                    what="names of grammar.KNOWN or data-driven initialisers"))
    gradinit_iters: int | None = param(None, Int(low=1, optional=True, high=1_000_000))  # None: one per batch of a pass
    metainit_steps: int = param(500, Int(low=1, high=100_000))            # MetaInit's sign-SGD steps (its paper: 500)
    reward_searches: list = param([r for r in REWARDS if r != "val_accuracy"], ListOf(Choice(REWARDS), 0,
                                  what="rewards"), identity=False)   # also search with each (the reward comparison)
    reward_searcher: str = param("evolution", Choice(SEARCHERS))     # the searcher of the reward comparison
    validation_seeds: int = param(5, Int(low=2, high=1_000), identity=False)   # fresh seeds per arm (more extends)
    long_epochs: int = param(10, Int(low=1, high=10_000))                  # re-training of the best formulas
    transfer_testbeds: list = param(["mlp10_relu_sgd", "mlp40_relu_sgd", "cnn12_relu_sgd", "mlp20_tanh_sgd",
                                     "mlp20_silu_sgd"],
                                    ListOf(Choice(tuple(TESTBEDS)), 0, what="testbed names"), identity=False)
    fidelity_candidates: int = param(12, Int(low=0, high=100_000), identity=False)   # 0: no reward-fidelity table
    fidelity_seeds: int = param(3, Int(low=1, high=1_000), identity=False)   # fresh seeds per fidelity formula
    sesoi: float = param(0.005, Float(low=0.0, low_open=True))       # smallest test-accuracy difference of interest
    search_sesoi: float = param(0.005, Float(low=0.0, low_open=True))  # same, for best-so-far reward (its units)
    candidate_batch: int | None = param(None, Int(low=1, optional=True, high=100_000), identity=False)  # None: auto
    batch_mechanism: str = param("auto", Choice(MECHANISMS), identity=False)   # auto: vmap on CUDA, loop elsewhere
    device: str = param("auto", device_rule, identity=False)   # auto | cpu | cuda | mps
    output_dir: str = param("outputs/07_formula_search", identity=False)

    def check(self):
        self.grammar()
        if self.budget < self.proxy_epochs:
            raise ParameterError(f"budget must be an integer >= proxy_epochs ({self.proxy_epochs}), the child epochs "
                                 f"of one candidate (got {self.budget!r})")
        if self.tournament > self.population:
            raise ParameterError(f"tournament must be an integer <= population ({self.population}) (got "
                                 f"{self.tournament!r})")
        if "he" not in self.baselines:
            raise ParameterError(f"baselines must contain 'he', the primary comparison's reference (got "
                                 f"{self.baselines!r})")
        if "lsuv" in self.baselines and importlib.util.find_spec("lsuv") is None:   # data_driven.lsuv_init's package
            raise ParameterError(f"baselines contains 'lsuv', which needs the lsuv package: pip install lsuv (got "
                                 f"{self.baselines!r})")
        if self.reward in self.reward_searches:
            raise ParameterError(f"reward_searches must not contain reward {self.reward!r}, the main searches' reward "
                                 f"(got {self.reward_searches!r})")
        if self.reward_searches and self.reward_searcher not in self.searchers:
            raise ParameterError(f"reward_searcher must be one of searchers {self.searchers!r}: its searches on "
                                 f"reward {self.reward!r} are the comparison's reference (got {self.reward_searcher!r})")
        if self.testbed in self.transfer_testbeds:
            raise ParameterError(f"transfer_testbeds must not contain the search testbed {self.testbed!r} (got "
                                 f"{self.transfer_testbeds!r})")

    def grammar(self) -> Grammar:
        return Grammar(tuple(self.operators), tuple(self.terminals), tuple(self.constants), self.max_length,
                       tuple(self.distributions))

    def candidates_per_search(self) -> int:
        return self.budget // self.proxy_epochs

    def batch_size(self) -> int:
        """Candidates per trial (``candidate_batch``; None: ``GPU_CANDIDATE_BATCH`` on CUDA, 1 elsewhere)."""
        if self.candidate_batch is not None:
            return self.candidate_batch
        return GPU_CANDIDATE_BATCH if pick_device(self.device).type == "cuda" else 1

    def environment(self) -> dict:
        """The environment record, with the device the trials train on."""
        return environment_info(pick_device(self.device))

    def identity(self) -> dict:
        """The settings that change results, with the search testbed's recipe (a changed preset is refused)."""
        return {**super().identity(), "testbed recipe": dataclasses.asdict(get_testbed(self.testbed))}

    def data(self) -> dict:
        """What a trial needs to load the data (plain values, so a trial can run in another process)."""
        return {k: getattr(self, k) for k in ("dataset", "data_root", "train_subset", "test_subset", "val_size",
                                              "device")}

    def init_options(self) -> dict:
        """The data-driven baselines' settings (``data_driven_init``)."""
        return {"gradinit_iters": self.gradinit_iters, "metainit_steps": self.metainit_steps}

    def searcher_options(self, name: str) -> dict:
        return {"random": {}, "evolution": {"population": self.population, "sample": self.tournament},
                "reinforce": {"lr": self.controller_lr, "entropy": self.controller_entropy}}[name]


Config = FormulaSearchConfig
GPU_CANDIDATE_BATCH = 64    # candidates trained at once on a GPU when candidate_batch is None (one search round
                            # is searchers x repeats of them; the checks' trials come in larger groups)


# ---- one candidate ----

@functools.lru_cache(maxsize=64)
def network_fans(testbed: str, dataset: str) -> tuple[tuple[tuple[int, int], ...], float]:
    """((fan_in, fan_out) per weight layer, the activation's gain) of ``testbed`` on ``dataset``'s 32x32 images
    (built once per process)."""
    tb = get_testbed(testbed)
    model = build(tb, (DATASET_CHANNELS[dataset], 32, 32), DATASET_CLASSES[dataset])
    return tuple(tuple(f) for f in layer_fans(model)), gain(tb.activation)


def formula_of(row: dict) -> Formula:
    return Formula(tuple(str(row["tokens"]).split()), row["distribution"])


def data_driven_init(name: str, seed: int, options: dict | None = None, optimiser: str = "sgd") -> Callable:
    """The ``init_fn(model, batches)`` of ``testbeds.train_candidate`` for data-driven arm ``name``
    (``initialisation.data_driven`` has each method and its defaults, the papers' and reference code's):

    * ``lsuv`` (Mishkin & Matas 2016): orthonormal weights, then each layer rescaled until its output variance on
      the first batch is 1 within ``LSUV_TOLERANCE``; its orthonormal draw from ``stream_seed(seed, 'lsuv')``.
    * ``gradinit`` (Zhu et al. 2021): one learned scale per layer, ``options['gradinit_iters']`` iterations (None:
      as many as the batches of one pass; each iteration reads two batches), for the testbed's ``optimiser`` (the
      reference's SGD variant, or its Adam variant, whose first step is ``eta * sign(g)``).
    * ``metainit`` (Dauphin & Schoenholz 2019): each layer's norm tuned to minimise the gradient quotient,
      ``options['metainit_steps']`` steps on Gaussian inputs from ``stream_seed(seed, 'metainit')``.

    None of them is charged to a search budget: they are baselines of the re-training only."""
    opts = {"gradinit_iters": None, "metainit_steps": 500, **(options or {})}
    if name == "lsuv":
        return lambda model, b: lsuv_init(model, b(0)[0], tolerance=LSUV_TOLERANCE, seed=stream_seed(seed, "lsuv"))
    if name == "gradinit":
        return lambda model, b: gradinit(model, b, opts["gradinit_iters"] or b.per_epoch, alg=optimiser)
    if name == "metainit":
        return lambda model, b: metainit(model, b.input_shape, b.num_classes, opts["metainit_steps"],
                                         seed=stream_seed(seed, "metainit"))
    raise ParameterError(f"init must be one of {', '.join(DATA_DRIVEN)} (got {name!r})")


def _candidate_row(f: Formula, init: str, seed: int, out: dict) -> dict:
    """A trained candidate's row of table ``runs`` from ``train_candidate``'s result (or a toy evaluator's)."""
    row = {"canonical": arm_id(f, init), "tokens": " ".join(f.tokens), "distribution": f.distribution, "seed": seed}
    row.update({k: out.get(k, math.nan) for k in TRAINED_COLUMNS})
    row["diverged"] = bool(row["diverged"])
    row["reason"] = str(row["reason"] or "")
    return row


def _images(data: dict):
    device = str(pick_device(data["device"]))
    return device, load_cached(data["dataset"], data["data_root"], data["train_subset"], data["test_subset"], device,
                               data["val_size"])


def candidate_trial(data: dict, testbed: str, formula: dict, seed: int, epochs: int,
                    evaluator: Callable | None = None, init: str = "", init_options: dict | None = None) -> dict:
    """One formula trained on ``testbed`` for ``epochs`` with ``seed``: the row of table ``runs`` (validation and
    test accuracy, the reward signals, diverged or not). ``init``: a data-driven initialiser of DATA_DRIVEN run
    after the formula's sigmas (``data_driven_init`` with ``init_options``). ``evaluator(testbed, formula, seed,
    epochs) -> dict`` replaces the training (tests: a toy reward; it ignores ``init``)."""
    f = Formula.from_dict(formula)
    if evaluator is not None:
        out = dict(evaluator(testbed, f, seed, epochs))
    else:
        device, images = _images(data)
        fans, g = network_fans(testbed, data["dataset"])
        sigmas = [float(s) for s in f.per_layer(fans, g)]
        out = train_candidate(get_testbed(testbed), sigmas, images, seed, epochs, distribution=f.distribution,
                              device=device, init_fn=data_driven_init(init, seed, init_options,
                                                                      get_testbed(testbed).optimiser) if init else None)
    row = _candidate_row(f, init, seed, out)
    return {"runs": [row], "_log": {"formula/val_accuracy": row["val_accuracy"]}}


def candidates_trial(data: dict, testbed: str, items: list[dict], epochs: int, evaluator: Callable | None = None,
                     mechanism: str = "auto") -> dict:
    """Several formulas (``items``: ``unit``, ``formula``, ``seed`` each) trained on one ``testbed`` for ``epochs``
    at once (``testbeds.train_candidates`` with ``mechanism``): one row of table ``runs`` per item, as
    :func:`candidate_trial` writes it, plus its ``unit`` (the run store gives each unit its row back,
    ``RunStore.unit_rows``). With ``evaluator`` each item is evaluated in turn (tests)."""
    formulas = [Formula.from_dict(it["formula"]) for it in items]
    seeds = [int(it["seed"]) for it in items]
    if evaluator is not None:
        outs = [dict(evaluator(testbed, f, seed, epochs)) for f, seed in zip(formulas, seeds)]
    else:
        device, images = _images(data)
        fans, g = network_fans(testbed, data["dataset"])
        outs = train_candidates(get_testbed(testbed), [[float(s) for s in f.per_layer(fans, g)] for f in formulas],
                                images, seeds, epochs, distributions=[f.distribution for f in formulas], device=device,
                                mechanism=mechanism)
    rows = [{"unit": it["unit"], **_candidate_row(f, "", seed, out)}
            for it, f, seed, out in zip(items, formulas, seeds, outs)]
    return {"runs": rows, "_log": {"formula/val_accuracy": max((r["val_accuracy"] for r in rows), default=math.nan)}}


def batched_trials(cfg: "FormulaSearchConfig", specs: dict, done: set, evaluator: Callable | None = None
                   ) -> list[Trial]:
    """The trials that train the units of ``specs`` (``{unit: (testbed, formula, seed, epochs, init)}``) not in
    ``done``: those without a data-driven ``init`` grouped by (testbed, epochs), in order, into
    :func:`candidates_trial` trials of up to ``cfg.batch_size()``, keyed ``batch/<first unit>/<count>``; a group of
    one, and each data-driven arm, is a :func:`candidate_trial` keyed by its unit. Only unfinished units are
    grouped, so a run resumed with another ``candidate_batch`` never trains a unit twice."""
    data, size = cfg.data(), cfg.batch_size()

    def single(key, tb, f, seed, epochs, init):
        args = {"data": data, "testbed": tb, "formula": f.to_dict(), "seed": seed, "epochs": epochs,
                "evaluator": evaluator}
        if init:
            args |= {"init": init, "init_options": cfg.init_options()}
        return Trial(key, candidate_trial, args, work={"child epochs": epochs})

    out, groups = [], {}
    for key, (tb, f, seed, epochs, init) in specs.items():
        if key in done:
            continue
        if init:
            out.append(single(key, tb, f, seed, epochs, init))
        else:
            groups.setdefault((tb, epochs), []).append((key, f, seed))
    for (tb, epochs), members in groups.items():
        for i in range(0, len(members), size):
            chunk = members[i:i + size]
            if len(chunk) == 1:
                out.append(single(chunk[0][0], tb, chunk[0][1], chunk[0][2], epochs, ""))
                continue
            items = [{"unit": key, "formula": f.to_dict(), "seed": seed} for key, f, seed in chunk]
            out.append(Trial(f"batch/{chunk[0][0]}/{len(chunk)}", candidates_trial,
                             {"data": data, "testbed": tb, "items": items, "epochs": epochs, "evaluator": evaluator,
                              "mechanism": cfg.batch_mechanism},
                             units=tuple(key for key, *_ in chunk), work={"child epochs": epochs * len(chunk)}))
    return out


def scored_reward(row: dict, reward: str) -> float:
    """The search reward of a trained candidate: its ``reward`` signal, or the diverged rule's score."""
    value = np.array([row.get(reward, math.nan)], float)
    return float(score_diverged(value, [bool(row["diverged"])], DIVERGED_REWARD[reward])[0])


# ---- the searches, replayable ----

@dataclass
class _Search:
    name: str
    repeat: int
    searcher: Searcher
    proposals: int = 0
    used: int = 0          # child epochs spent
    step: int = 0          # distinct candidates (trained or rejected)
    trained: int = 0


def searches_of(cfg: FormulaSearchConfig, names=None) -> list[_Search]:
    grammar = cfg.grammar()
    return [_Search(name, r, make_searcher(name, grammar, derive_seed(cfg.seed, SEARCHER_SALT, r),
                                           **cfg.searcher_options(name)))
            for name in (cfg.searchers if names is None else names) for r in range(cfg.repeats)]


def search_key(name: str, repeat: int, step: int, objective: str | None = None) -> str:
    """A search candidate's trial key; ``objective``: a reward other than the config's (the reward comparison)."""
    return f"search/{name}/{repeat}/{step}" if objective is None else f"search@{objective}/{name}/{repeat}/{step}"


def run_searches(cfg: FormulaSearchConfig, evaluate: Callable[[list[tuple[str, Formula, int]]], dict],
                 log: Callable | None = None, objective: str | None = None,
                 known: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every (searcher, repeat) in lock-step rounds: each search proposes until it has a new formula that is valid
    on the testbed (repeats are told their cached reward, invalid formulas the diverged score, both free); the
    round's formulas are evaluated together (``evaluate([(key, formula, seed)]) -> {key: row}``: the trials, or
    the rows read back from the store); each search is told its reward. Returns one row per distinct candidate.

    ``objective``: search ``cfg.reward_searcher`` on this reward instead of ``cfg.searchers`` on ``cfg.reward``
    (the reward comparison; keys ``search@<objective>/...``). ``known``: candidate rows already trained (the
    main searches): a proposal with the same canonical formula and child seed takes that row instead of training
    again (training is deterministic given both), and still costs its proxy epochs, as an equal budget asks."""
    fans, g = network_fans(cfg.testbed, cfg.dataset)
    reward_name = cfg.reward if objective is None else objective
    reuse = {}
    if known is not None and len(known):
        t = known[known["trained"].astype(bool)]
        reuse = {(c, int(sd)): row for c, sd, row in zip(t["canonical"], t["seed"], t.to_dict("records"))}
    cap = PROPOSALS_PER_CANDIDATE * cfg.candidates_per_search()
    searches, rows = searches_of(cfg, None if objective is None else [cfg.reward_searcher]), []
    best: dict[tuple, float] = {}

    def record(s: _Search, f: Formula, trained: bool, reward: float, extra: dict) -> None:
        key = (s.name, s.repeat)
        best[key] = max(best.get(key, -math.inf), reward)
        rows.append({"searcher": s.name, "repeat": s.repeat, "step": s.step, "proposals": s.proposals,
                     "formula": str(f), "canonical": f.canonical, "tokens": " ".join(f.tokens),
                     "distribution": f.distribution, "trained": trained, "budget_used": s.used, "reward": reward,
                     "best_so_far": best[key], **extra})

    def next_formula(s: _Search) -> Formula | None:
        while s.proposals < cap and s.used + cfg.proxy_epochs <= cfg.budget:
            f = s.searcher.ask()
            s.proposals += 1
            cached = s.searcher.cached(f)
            if cached is not None:
                s.searcher.tell(f, cached)
                continue
            s.step += 1
            if not f.valid_for(fans, g):
                reward = DIVERGED_REWARD[reward_name]
                record(s, f, False, reward, {"diverged": True, "reason": "sigma not a finite number > 0",
                                             "epochs": 0, "seed": np.nan})
                s.searcher.tell(f, reward)
                continue
            return f
        return None

    while True:
        asked = [(s, f) for s in searches for f in [next_formula(s)] if f is not None]
        if not asked:
            break
        items = []
        for s, f in asked:
            s.trained += 1
            items.append((search_key(s.name, s.repeat, s.step, objective), f,
                          derive_seed(cfg.seed, SEARCH_SALT, s.repeat, s.trained)))
        results = {key: reuse[(f.canonical, seed)] for key, f, seed in items if (f.canonical, seed) in reuse}
        fresh = [item for item in items if item[0] not in results]
        results.update(evaluate(fresh) if fresh else {})
        for (s, f), (key, _, seed) in zip(asked, items):
            row = results[key]
            if row["canonical"] != f.canonical or int(row["seed"]) != seed:
                raise StoreError(f"trial {key} of the run store trained {row['canonical']!r} but the search now "
                                 f"proposes {f.canonical!r}: the store belongs to another search; delete it or use "
                                 "another output_dir")
            s.used += cfg.proxy_epochs
            reward = scored_reward(row, reward_name)
            record(s, f, True, reward, {k: row.get(k) for k in ["seed", *TRAINED_COLUMNS]})
            s.searcher.tell(f, reward)
        if log is not None:
            log({f"search{'' if objective is None else '@' + objective}/{k[0]}_{k[1]}/best_so_far": v
                 for k, v in best.items()})
    return pd.DataFrame(rows).reindex(columns=CANDIDATE_COLUMNS)


def best_formulas(candidates: pd.DataFrame, searchers) -> dict[str, Formula]:
    """``best`` (the highest search reward of a trained, non-diverged candidate of any search; ties to the earlier
    searcher, repeat, step) and ``best_<searcher>`` per searcher. Chosen on the search reward only (never test)."""
    ok = candidates[candidates["trained"].astype(bool) & ~candidates["diverged"].astype(bool)]
    order = {name: i for i, name in enumerate(searchers)}
    ok = ok.assign(_o=ok["searcher"].map(order)).sort_values(["_o", "repeat", "step"], kind="stable")
    out = {}
    if len(ok):
        out["best"] = formula_of(ok.loc[ok["reward"].idxmax()])
    for name in searchers:
        mine = ok[ok["searcher"] == name]
        if len(mine):
            out[f"best_{name}"] = formula_of(mine.loc[mine["reward"].idxmax()])
    return out


def arms_of(cfg: FormulaSearchConfig, candidates: pd.DataFrame) -> dict[str, Formula]:
    """Every arm of the re-training: the found formulas, then the baselines (a data-driven one as the formula it
    starts from; ``arm_init`` names its initialiser)."""
    return {**best_formulas(candidates, cfg.searchers),
            **{b: parse(KNOWN[DATA_DRIVEN.get(b, b)]) for b in cfg.baselines}}


def arm_init(arm: str) -> str:
    """The data-driven initialiser of ``arm`` ("" for a formula arm)."""
    return arm if arm in DATA_DRIVEN else ""


def arm_id(f: Formula, init: str = "") -> str:
    """What identifies an arm's training: the canonical formula, prefixed by a data-driven initialiser
    (``lsuv:<canonical>``)."""
    return f"{init}:{f.canonical}" if init else f.canonical


def validation_seed(cfg_seed: int, j: int) -> int:
    return derive_seed(cfg_seed, VALIDATION_SALT, j)


def check_items(cfg: FormulaSearchConfig, candidates: pd.DataFrame) -> list[tuple[str, str, Formula, int, int, str]]:
    """(key, testbed, formula, seed_index, seed, init) of every re-training: each distinct arm (formula and
    data-driven initialiser) on the search testbed, and ``best`` and He on each transfer testbed, on the fresh
    seeds."""
    arms = arms_of(cfg, candidates)
    unique = {arm_id(f, arm_init(a)): (f, arm_init(a)) for a, f in arms.items()}
    items = [(f"validate/{c}/{j}", cfg.testbed, f, j, validation_seed(cfg.seed, j), init)
             for j in range(cfg.validation_seeds) for c, (f, init) in unique.items()]
    if "best" in arms:
        pair = {f.canonical: f for f in (arms["best"], parse(KNOWN["he"]))}
        items += [(f"transfer/{tb}/{c}/{j}", tb, f, j, validation_seed(cfg.seed, j), "")
                  for tb in cfg.transfer_testbeds for j in range(cfg.validation_seeds) for c, f in pair.items()]
    return items


# ---- which reward finds better formulas (the reward comparison) ----

def reward_searches(cfg: FormulaSearchConfig, candidates: pd.DataFrame, evaluate: Callable,
                    log: Callable | None = None) -> pd.DataFrame:
    """The searches of the reward comparison: ``reward_searcher`` on each reward of ``reward_searches``, with the
    main searches' budget, repeats, searcher seeds and child seeds (so repeat r of every reward is paired). A
    proposal the main searches already trained with the same child seed is not trained again; reuse draws on the
    main searches only, so the order of ``reward_searches`` changes nothing. One row per candidate, with its
    ``objective``."""
    out = []
    for objective in cfg.reward_searches:
        mine = run_searches(cfg, evaluate, log, objective=objective, known=candidates)
        out.append(mine.assign(objective=objective))
    return (pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=CANDIDATE_COLUMNS)
            ).reindex(columns=["objective", *CANDIDATE_COLUMNS])


def reward_picks(cfg: FormulaSearchConfig, candidates: pd.DataFrame, by_reward: pd.DataFrame) -> list[dict]:
    """Per (objective, repeat) of the comparison: the formula the search would hand on, its best trained,
    non-diverged candidate by its own reward (ties to the earlier step; None when every candidate diverged). The
    reference objective ``cfg.reward`` reads the main searches of ``reward_searcher``."""
    if not cfg.reward_searches:
        return []
    ref = candidates[candidates["searcher"] == cfg.reward_searcher].assign(objective=cfg.reward)
    both = pd.concat([ref, by_reward], ignore_index=True)
    out = []
    for objective in (cfg.reward, *cfg.reward_searches):
        for r in range(cfg.repeats):
            g = both[(both["objective"] == objective) & (both["repeat"] == r)].sort_values("step", kind="stable")
            ok = g[g["trained"].astype(bool) & ~g["diverged"].astype(bool)]
            f = formula_of(ok.loc[ok["reward"].idxmax()]) if len(ok) else None
            out.append({"objective": objective, "repeat": r, "formula": f,
                        "search_reward": float(ok["reward"].max()) if len(ok) else np.nan,
                        "trained": int(g["trained"].astype(bool).sum())})
    return out


def reward_pick_items(cfg: FormulaSearchConfig, picks: list[dict]) -> list[tuple[str, Formula, int, int]]:
    """(key, formula, seed_index, seed) of the picks' re-training: on the search testbed for ``long_epochs`` with
    the validation's fresh seeds and keys (``validate/<canonical>/<j>``), so a pick that is also an arm of the
    validation is trained once."""
    formulas = {p["formula"].canonical: p["formula"] for p in picks if p["formula"] is not None}
    return [(f"validate/{c}/{j}", f, j, validation_seed(cfg.seed, j))
            for j in range(cfg.validation_seeds) for c, f in formulas.items()]


def reward_comparison_table(cfg: FormulaSearchConfig, picks: list[dict], rows: Callable[[str], dict]
                            ) -> pd.DataFrame:
    """One row per (objective, repeat): the pick, and its mean test accuracy over the validation seeds after
    ``long_epochs`` (diverged networks at chance; a search that found no trained formula scores chance)."""
    out = []
    for p in picks:
        f = p["formula"]
        if f is None:
            acc, div, n = CHANCE, 1.0, 0
        else:
            runs = [rows(f"validate/{f.canonical}/{j}") for j in range(cfg.validation_seeds)]
            acc = float(np.mean(scored([r["test_accuracy"] for r in runs])))
            div, n = float(np.mean([bool(r["diverged"]) for r in runs])), len(runs)
        out.append({"objective": p["objective"], "repeat": p["repeat"], "formula": "" if f is None else str(f),
                    "canonical": "" if f is None else f.canonical, "search_reward": p["search_reward"],
                    "candidates_trained": p["trained"], "test_accuracy": acc, "diverged_rate": div, "seeds": n})
    return pd.DataFrame(out, columns=REWARD_COMPARISON_COLUMNS)


# ---- reward fidelity ----

def fidelity_seed(cfg_seed: int, j: int) -> int:
    """Seed j of the fidelity re-training: its own purpose, disjoint from the search's and the validation's."""
    return derive_seed(cfg_seed, FIDELITY_SALT, j)


def baseline_proxy_seed(cfg_seed: int) -> int:
    """The seed a baseline is scored with at the proxy: the search's convention ``derive_seed(seed, SEARCH_SALT,
    r, i)`` at (0, 0), a step no search trains (steps count from 1); the same seed for every baseline."""
    return derive_seed(cfg_seed, SEARCH_SALT, 0, 0)


def fidelity_set(cfg: FormulaSearchConfig, candidates: pd.DataFrame) -> list[dict]:
    """The formulas of the reward-fidelity table, chosen without looking at any reward: the first
    ``fidelity_candidates`` of a seeded uniform permutation (``stream_seed(seed, 'fidelity_sample')``) of the
    distinct canonical formulas the searches trained (diverged ones included; each keeps its first training, in
    searcher, repeat, step order, as its proxy run), then the formula baselines not already among them (their proxy
    run: ``baseline_proxy_seed``). Data-driven baselines (LSUV) are left out: they are not formulas of the search.
    Empty when ``fidelity_candidates`` is 0. A larger ``fidelity_candidates`` extends the set."""
    if cfg.fidelity_candidates == 0:
        return []
    out = []
    if len(candidates):
        order = {name: i for i, name in enumerate(cfg.searchers)}
        t = candidates[candidates["trained"].astype(bool)]
        t = t.assign(_o=t["searcher"].map(order)).sort_values(["_o", "repeat", "step"], kind="stable")
        pool = t.drop_duplicates("canonical").sort_values("canonical", kind="stable")
        rng = np.random.default_rng(stream_seed(cfg.seed, "fidelity_sample"))
        pick = pool.iloc[rng.permutation(len(pool))[:cfg.fidelity_candidates]]
        out = [{"canonical": r["canonical"], "formula": formula_of(r), "source": "search",
                "proxy_key": search_key(r["searcher"], int(r["repeat"]), int(r["step"])), "proxy_seed": int(r["seed"])}
               for _, r in pick.iterrows()]
    seen = {d["canonical"] for d in out}
    for b in cfg.baselines:
        f = parse(KNOWN[b]) if b in KNOWN else None
        if f is None or f.canonical in seen:
            continue
        seen.add(f.canonical)
        out.append({"canonical": f.canonical, "formula": f, "source": "baseline",
                    "proxy_key": f"fidelity/proxy/{f.canonical}", "proxy_seed": baseline_proxy_seed(cfg.seed)})
    return out


def fidelity_items(cfg: FormulaSearchConfig, candidates: pd.DataFrame) -> list[tuple[str, Formula, int, int]]:
    """(key, formula, seed, epochs) of the fidelity trials: each baseline's proxy run (``proxy_epochs``), then every
    formula of the set re-trained for ``long_epochs`` on ``fidelity_seeds`` fresh seeds (``fidelity/long/<canonical>
    /<j>``)."""
    fset = fidelity_set(cfg, candidates)
    items = [(d["proxy_key"], d["formula"], d["proxy_seed"], cfg.proxy_epochs) for d in fset
             if d["source"] == "baseline"]
    items += [(f"fidelity/long/{d['canonical']}/{j}", d["formula"], fidelity_seed(cfg.seed, j), cfg.long_epochs)
              for j in range(cfg.fidelity_seeds) for d in fset]
    return items


def rank_agreement(signal, target, *, higher_is_better: bool = True, confidence: float = 0.95,
                   n_boot: int = FIDELITY_BOOT, seed: int = 0) -> dict:
    """Spearman's rho (average ranks for ties; ``core.stats.spearman_rows``, the one notebook 02 uses) between
    a reward signal, turned so that higher is better, and a target (mean long-training test accuracy), over the
    formulas where both are finite, with a percentile-bootstrap interval that resamples formulas (from
    ``core.stats.MIN_BOOTSTRAP_N`` formulas up, the project's floor for a bootstrap; NaN below it, and rho NaN below 3
    formulas or when either side is constant)."""
    x, y = np.asarray(signal, float), np.asarray(target, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = (x[ok] if higher_is_better else -x[ok]), y[ok]
    n, nan = int(len(x)), float("nan")
    out = {"spearman": nan, "ci_low": nan, "ci_high": nan, "formulas": n}
    if n < 3:
        return out
    out["spearman"] = float(spearman_rows(x[None], y[None])[0])
    if n >= MIN_BOOTSTRAP_N and np.isfinite(out["spearman"]):
        idx = np.random.default_rng(seed).integers(0, n, (n_boot, n))
        boot = spearman_rows(x[idx], y[idx])
        if np.isfinite(boot).any():
            lo, hi = np.nanpercentile(boot, [50 * (1 - confidence), 50 * (1 + confidence)])
            out.update(ci_low=float(lo), ci_high=float(hi))
    return out


def fidelity_tables(cfg: FormulaSearchConfig, candidates: pd.DataFrame, rows: Callable[[str], dict]
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per formula, per reward) of the reward-fidelity analysis; ``rows(key)`` is a trial's row. Per formula: each
    reward's proxy signal scored by the one rule for diverged runs (``scored_reward``) and the mean test accuracy
    of the long re-training (diverged at chance). Per reward: ``rank_agreement`` of the two over the whole set, and
    (``*_trained``) over the formulas that did not diverge at the proxy (does the signal rank the formulas that
    train, beyond telling them from the diverged ones?)."""
    per = []
    for d in fidelity_set(cfg, candidates):
        proxy = rows(d["proxy_key"])
        long = [rows(f"fidelity/long/{d['canonical']}/{j}") for j in range(cfg.fidelity_seeds)]
        acc = scored([r["test_accuracy"] for r in long])
        per.append({"canonical": d["canonical"], "formula": str(d["formula"]), "source": d["source"],
                    "proxy_seed": d["proxy_seed"], "proxy_diverged": bool(proxy["diverged"]),
                    **{r: scored_reward(proxy, r) for r in REWARDS}, "long_test_accuracy": float(np.mean(acc)),
                    "long_diverged_rate": float(np.mean([bool(r["diverged"]) for r in long])),
                    "long_seeds": len(long)})
    per = pd.DataFrame(per, columns=FIDELITY_FORMULA_COLUMNS)
    out = []
    if len(per):
        trained = per[~per["proxy_diverged"]]
        for r in REWARDS:
            opts = dict(higher_is_better=DIRECTION[r].startswith("higher"),
                        seed=stream_seed(cfg.seed, "fidelity_bootstrap"))
            agree = rank_agreement(per[r], per["long_test_accuracy"], **opts)
            sub = rank_agreement(trained[r], trained["long_test_accuracy"], **opts)
            out.append({"reward": r, **agree, "diverged_at_proxy": int(per["proxy_diverged"].sum()),
                        "spearman_trained": sub["spearman"], "trained_ci_low": sub["ci_low"],
                        "trained_ci_high": sub["ci_high"], "formulas_trained": sub["formulas"], "confidence": 0.95})
    return per, pd.DataFrame(out, columns=FIDELITY_COLUMNS)


def trials(cfg: FormulaSearchConfig, run, evaluator: Callable | None = None) -> None:
    """The searches (one round of trials per step), then the re-training and transfer trials.
    ``evaluator(testbed, formula, seed, epochs) -> dict`` replaces the training (tests use a toy reward)."""
    n = cfg.candidates_per_search()
    rounds, start = {"search": 0, "reward comparison": 0}, time.perf_counter()
    phase = ["search"]

    def evaluate(items):
        rounds[phase[0]] += 1
        specs = {key: (cfg.testbed, f, seed, cfg.proxy_epochs, "") for key, f, seed in items}
        with contextlib.redirect_stdout(io.StringIO()):   # one line per round would be n lines: ours say less
            run(batched_trials(cfg, specs, run.finished(), evaluator), "candidates", progress=False)
        if phase[0] == "search" and rounds["search"] % max(1, n // 4) == 0:
            print(f"search: round {rounds['search']} of at most {n} done ({time.perf_counter() - start:.0f} s)",
                  flush=True)
        return {key: _rows_for(run.unit_rows, key) for key, *_ in items}

    print(f"search: {len(cfg.searchers)} searchers x {cfg.repeats} repeats x up to {n} candidates of "
          f"{cfg.proxy_epochs} epochs = {len(cfg.searchers) * cfg.repeats * n * cfg.proxy_epochs:,} child epochs on "
          f"{cfg.testbed}, in rounds of {len(cfg.searchers) * cfg.repeats}", flush=True)
    candidates = run_searches(cfg, evaluate, run.log)
    if cfg.reward_searches:
        print(f"reward comparison: {cfg.reward_searcher} x {cfg.repeats} repeats on each of "
              f"{', '.join(cfg.reward_searches)}, the same budget (candidates already trained are reused)", flush=True)
    phase[0] = "reward comparison"
    picks = reward_picks(cfg, candidates, reward_searches(cfg, candidates, evaluate, run.log))
    if cfg.reward_searches:
        print(f"reward comparison: {rounds['reward comparison']} rounds trained new candidates, the others were "
              f"reused ({time.perf_counter() - start:.0f} s)", flush=True)

    checks = {key: (tb, f, seed, cfg.long_epochs, init) for key, tb, f, _, seed, init in check_items(cfg, candidates)}
    checks |= {key: (cfg.testbed, f, seed, cfg.long_epochs, "") for key, f, _, seed in reward_pick_items(cfg, picks)
               if key not in checks}
    checks |= {key: (cfg.testbed, f, seed, epochs, "") for key, f, seed, epochs in fidelity_items(cfg, candidates)}
    run(batched_trials(cfg, checks, run.finished(), evaluator),
        "re-training, transfer, reward comparison and reward fidelity")


# ---- tables ----

@dataclass(frozen=True)
class FormulaSearchResult:
    candidates: pd.DataFrame    # one row per distinct candidate of each (searcher, repeat): CANDIDATE_COLUMNS
    arms: pd.DataFrame          # one row per arm: its formula as written and canonical
    validation: pd.DataFrame    # one row per (arm, fresh seed) on the search testbed: RUN_COLUMNS
    transfer: pd.DataFrame      # one row per (transfer testbed, arm, fresh seed): testbed + RUN_COLUMNS
    fans: pd.DataFrame          # one row per weight layer of the search testbed: fan_in, fan_out, gain
    fidelity: pd.DataFrame      # one row per reward: Spearman with long-training test accuracy (FIDELITY_COLUMNS)
    fidelity_formulas: pd.DataFrame   # one row per formula of the fidelity set: FIDELITY_FORMULA_COLUMNS
    reward_candidates: pd.DataFrame   # the reward comparison's searches: objective + CANDIDATE_COLUMNS
    reward_comparison: pd.DataFrame   # one row per (objective, repeat): its pick's test accuracy
    EXPORTS = ("candidates", "arms", "validation", "transfer", "fans", "fidelity", "fidelity_formulas",
               "reward_candidates", "reward_comparison")


def _rows_for(unit_rows: Callable[[str], dict], key: str) -> dict:
    """The ``runs`` row of unit ``key`` (``unit_rows``: ``RunStore.unit_rows``), without its ``unit``."""
    rows = unit_rows(key).get("runs")
    if not rows:
        raise StoreError(f"trial {key} is not in the run store; run the study again to finish it")
    return {k: v for k, v in rows[0].items() if k != "unit"}


def tables(cfg: FormulaSearchConfig, store: RunStore, keys: list[str]) -> FormulaSearchResult:
    """The searches replayed from the run store (no training), the re-training and transfer rows per arm."""
    def read(items):
        return {k: _rows_for(store.unit_rows, k) for k, *_ in items}

    candidates = run_searches(cfg, read)
    by_reward = reward_searches(cfg, candidates, read)
    comparison = reward_comparison_table(cfg, reward_picks(cfg, candidates, by_reward),
                                         lambda k: _rows_for(store.unit_rows, k))
    arms = arms_of(cfg, candidates)
    fans, g = network_fans(cfg.testbed, cfg.dataset)
    arm_table = pd.DataFrame([{"arm": a, "source": "search" if a.startswith("best") else "baseline",
                               "formula": arm_formula(a, f), "canonical": arm_id(f, arm_init(a))}
                              for a, f in arms.items()])
    if len(candidates):
        found = candidates[candidates["trained"].astype(bool)].groupby("canonical")["reward"].max()
        arm_table["search_reward"] = arm_table["canonical"].map(found)
    validation, transfer = [], []
    for key, tb, f, j, seed, init in check_items(cfg, candidates):
        row = _rows_for(store.unit_rows, key)
        base = {"canonical": arm_id(f, init), "seed_index": j, "seed": seed,
                **{k: row[k] for k in ("val_accuracy", "test_accuracy", "diverged")}}
        mine = arms if key.startswith("validate/") else {"best": arms["best"], "he": parse(KNOWN["he"])}
        new = [{"arm": a, "formula": arm_formula(a, af), **base} for a, af in mine.items()
               if arm_id(af, arm_init(a) if key.startswith("validate/") else "") == base["canonical"]]
        if key.startswith("validate/"):
            validation += new
        else:
            transfer += [{"testbed": tb, **r} for r in new]
    order = {a: i for i, a in enumerate(arms)}
    validation = pd.DataFrame(validation, columns=RUN_COLUMNS)
    validation = validation.assign(_o=validation["arm"].map(order)).sort_values(["_o", "seed_index"]).drop(columns="_o")
    transfer = pd.DataFrame(transfer, columns=["testbed", *RUN_COLUMNS]).sort_values(["testbed", "arm", "seed_index"])
    fan_table = pd.DataFrame([{"layer": l, "fan_in": fi, "fan_out": fo, "gain": g}
                              for l, (fi, fo) in enumerate(fans, start=1)])
    fid_formulas, fidelity = fidelity_tables(cfg, candidates, lambda k: _rows_for(store.unit_rows, k))
    return FormulaSearchResult(candidates, arm_table, validation.reset_index(drop=True),
                               transfer.reset_index(drop=True), fan_table, fidelity, fid_formulas, by_reward,
                               comparison)


def arm_formula(arm: str, f: Formula) -> str:
    """An arm's formula as written; a data-driven arm names its initialiser and the formula it starts from."""
    return f"{arm} after {f}" if arm_init(arm) else str(f)


# ---- statistics and verdicts ----

def scored(values) -> np.ndarray:
    """Test accuracies with every diverged (NaN) network kept and scored at chance."""
    v = np.asarray(values, float)
    return score_diverged(v, ~np.isfinite(v), CHANCE)


def wide_by_seed(runs: pd.DataFrame, column: str = "test_accuracy") -> pd.DataFrame:
    """(seed_index x arm) ``column``, diverged networks at chance."""
    wide = runs.pivot(index="seed_index", columns="arm", values=column)
    return wide.apply(lambda c: pd.Series(scored(c), index=c.index))


def final_best(candidates: pd.DataFrame) -> pd.DataFrame:
    """(repeat x searcher): the best-so-far reward at the end of each search (its full budget)."""
    last = candidates.sort_values("step").groupby(["searcher", "repeat"])["best_so_far"].last()
    return last.unstack("searcher")


def best_so_far_curve(cfg: FormulaSearchConfig, candidates: pd.DataFrame) -> pd.DataFrame:
    """Best-so-far reward of each search at every budget k x proxy_epochs (one row per searcher, repeat, budget)."""
    grid = np.arange(1, cfg.candidates_per_search() + 1) * cfg.proxy_epochs
    rows = []
    for (name, rep), g in candidates.groupby(["searcher", "repeat"], sort=False):
        g = g.sort_values("step")
        for b in grid:
            seen = g[g["budget_used"] <= b]
            rows.append({"searcher": name, "repeat": rep, "budget": int(b),
                         "best_so_far": float(seen["reward"].max()) if len(seen) else np.nan})
    return pd.DataFrame(rows, columns=["searcher", "repeat", "budget", "best_so_far"])


def contrasts(cfg: FormulaSearchConfig, result: FormulaSearchResult) -> list[Contrast]:
    """The comparisons, fixed by the config (never by the results): PRIMARY, best against the other baselines,
    each searcher's best against He, the searcher pairs of SEARCH_CONTRASTS, each reward of ``reward_searches``
    against ``reward`` (paired by repeat), each transfer testbed."""
    out = []
    if len(result.validation):
        wide = wide_by_seed(result.validation)
        acc = dict(bounds=ACCURACY_DIFFERENCE, sesoi=cfg.sesoi, higher_is_better=True)
        if {"best", "he"} <= set(wide):
            out.append(Contrast(PRIMARY, wide["best"].to_numpy(), wide["he"].to_numpy(), **acc))
        out += [Contrast(f"best - {b}", wide["best"].to_numpy(), wide[b].to_numpy(), **acc)
                for b in cfg.baselines if b != "he" and {"best", b} <= set(wide)]
        out += [Contrast(f"best_{s} - he", wide[f"best_{s}"].to_numpy(), wide["he"].to_numpy(), **acc)
                for s in cfg.searchers if {f"best_{s}", "he"} <= set(wide)]
    if len(result.candidates):
        final = final_best(result.candidates)
        bounds = ACCURACY_DIFFERENCE if cfg.reward == "val_accuracy" else None
        out += [Contrast(f"{a} - {b} (best-so-far {cfg.reward} at the full budget)", final[a].to_numpy(),
                         final[b].to_numpy(), bounds=bounds, sesoi=cfg.search_sesoi, higher_is_better=True)
                for a, b in SEARCH_CONTRASTS if a in final and b in final]
    if len(result.reward_comparison):
        by = result.reward_comparison.pivot(index="repeat", columns="objective", values="test_accuracy")
        out += [Contrast(reward_contrast(cfg, r), by[r].to_numpy(), by[cfg.reward].to_numpy(),
                         bounds=ACCURACY_DIFFERENCE, sesoi=cfg.sesoi, higher_is_better=True)
                for r in cfg.reward_searches if r in by]
    for tb, g in result.transfer.groupby("testbed", sort=True):
        wide = wide_by_seed(g)
        if {"best", "he"} <= set(wide):
            out.append(Contrast(f"transfer to {tb}: best - he", wide["best"].to_numpy(), wide["he"].to_numpy(),
                                bounds=ACCURACY_DIFFERENCE, sesoi=cfg.sesoi, higher_is_better=True))
    return out


def reward_contrast(cfg: FormulaSearchConfig, reward: str) -> str:
    return f"search on {reward} - on {cfg.reward} ({cfg.reward_searcher}; test accuracy of each repeat's pick)"


def verdicts(cfg: FormulaSearchConfig, result: FormulaSearchResult) -> pd.DataFrame:
    """The verdict table (``core.verdicts.compare_family``): PRIMARY at alpha, every other row one exploratory
    family. A reward whose searches handed on the main reward's formula in every repeat has differences that are
    0 by construction (the same trials): no spread to test, so its row is inconclusive, never equivalent."""
    cs = contrasts(cfg, result)
    rows = compare_family(cs, cfg.sesoi, primary=[PRIMARY] if any(c.name == PRIMARY for c in cs) else [])
    if len(result.reward_comparison):
        summary = reward_comparison_summary(result.reward_comparison).set_index("objective")
        for r in cfg.reward_searches:
            if r in summary.index and summary.loc[r, "same_pick_as_reference"] == summary.loc[r, "repeats"]:
                rows.loc[rows["comparison"] == reward_contrast(cfg, r), ["verdict", "seeds_needed"]] = \
                    ["inconclusive", np.nan]
    return rows


# ---- report ----

def sigma_table(arms: dict[str, Formula], fans: list, g: float) -> pd.DataFrame:
    """Per formula arm and weight layer: sigma_l and its ratio to He's sqrt(2 / fan_in) (a data-driven arm's
    sigma depends on the data and its seed: it is left out)."""
    he = parse(KNOWN["he"]).per_layer(fans, g)
    rows = []
    for arm, f in arms.items():
        if arm_init(arm):
            continue
        for l, (s, h) in enumerate(zip(f.per_layer(fans, g), he), start=1):
            rows.append({"arm": arm, "layer": l, "sigma": float(s), "he_sigma": float(h), "ratio_to_he": float(s / h)})
    return pd.DataFrame(rows, columns=["arm", "layer", "sigma", "he_sigma", "ratio_to_he"])


def arm_summary(cfg: FormulaSearchConfig, result: FormulaSearchResult, sigmas: pd.DataFrame) -> pd.DataFrame:
    """Per arm: formula as written and canonical, search reward, the per-layer sigma ratio to He (range), and the
    re-trained test accuracy (mean, t interval inside [0, 1], diverged networks at chance) with its divergence rate."""
    rows = []
    for r in result.arms.itertuples():
        runs = result.validation[result.validation["arm"] == r.arm]
        iv = interval(scored(runs["test_accuracy"]), "mean", bounds=ACCURACY)
        ratio = sigmas.loc[sigmas["arm"] == r.arm, "ratio_to_he"]
        rows.append({"arm": r.arm, "formula": r.formula, "canonical": r.canonical,
                     "search_reward": getattr(r, "search_reward", np.nan),
                     "sigma_over_he_min": float(ratio.min()), "sigma_over_he_max": float(ratio.max()),
                     "test_accuracy": iv.estimate, "ci_low": iv.low, "ci_high": iv.high, "seeds": iv.n,
                     "diverged_rate": float(runs["test_accuracy"].isna().mean()) if len(runs) else np.nan})
    return pd.DataFrame(rows)


def reward_comparison_summary(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per objective of the reward comparison (the first row is the reference, the main searches' reward): the mean
    over repeats of its picks' test accuracy (95% t interval inside [0, 1]), how many distinct formulas its repeats
    handed on, and in how many repeats it handed on the reference's formula (or, like it, none): there the paired
    difference is 0 by construction, since both picks are the same trials."""
    rows = []
    canon = comparison.fillna({"canonical": ""})
    ref = canon[canon["objective"] == canon["objective"].iloc[0]].set_index("repeat")["canonical"] if len(canon) else {}
    for objective, g in canon.groupby("objective", sort=False):
        iv = interval(g["test_accuracy"].to_numpy(float), "mean", bounds=ACCURACY)
        rows.append({"objective": objective, "direction": DIRECTION[objective], "test_accuracy": iv.estimate,
                     "ci_low": iv.low, "ci_high": iv.high, "repeats": iv.n,
                     "distinct_picks": int(g.loc[g["canonical"] != "", "canonical"].nunique()),
                     "searches_without_pick": int((g["canonical"] == "").sum()),
                     "same_pick_as_reference": int(sum(c == ref[r] for r, c in zip(g["repeat"], g["canonical"])))})
    return pd.DataFrame(rows)


def transfer_summary(transfer: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (tb, arm), g in transfer.groupby(["testbed", "arm"], sort=True):
        iv = interval(scored(g["test_accuracy"]), "mean", bounds=ACCURACY)
        rows.append({"testbed": tb, "arm": arm, "formula": g["formula"].iloc[0], "test_accuracy": iv.estimate,
                     "ci_low": iv.low, "ci_high": iv.high, "seeds": iv.n,
                     "diverged_rate": float(g["test_accuracy"].isna().mean())})
    return pd.DataFrame(rows)


def throughput(candidates: pd.DataFrame) -> pd.DataFrame:
    """Per searcher: candidates trained and rejected, diverged, and the child seconds per trained candidate
    (one worker, ``trial_cpus`` threads), as candidates per worker-hour."""
    rows = []
    for name, g in candidates.groupby("searcher", sort=False):
        t = g[g["trained"].astype(bool)]
        sec = float(t["seconds"].mean()) if len(t) else np.nan
        rows.append({"searcher": name, "searches": g["repeat"].nunique(), "trained": len(t),
                     "rejected_invalid": int((~g["trained"].astype(bool)).sum()),
                     "diverged_in_training": int(t["diverged"].astype(bool).sum()),
                     "proposals": int(g.groupby("repeat")["proposals"].max().sum()),
                     "seconds_per_candidate": sec, "candidates_per_worker_hour": 3600 / sec if sec > 0 else np.nan})
    return pd.DataFrame(rows)


def rediscovery(sigmas: pd.DataFrame, rows: pd.DataFrame) -> str:
    """Issue 27's rediscovery check: the best formula's sigma within 10% of He's on every layer, or the formula
    better than He with an interval that excludes 0 (the primary verdict)."""
    mine = sigmas[sigmas["arm"] == "best"]
    if mine.empty:
        return "No formula was found (every trained candidate diverged): no rediscovery check."
    worst = float(np.max(np.abs(mine["ratio_to_he"] - 1)))
    close = worst <= 0.10
    prim = rows[rows["comparison"] == PRIMARY]
    beats = bool(len(prim)) and prim["verdict"].iloc[0] == "better"
    verdict = "**passes**" if close or beats else "**does not pass**"
    return (f"Rediscovery check {verdict}: the best formula's sigma differs from He's by at most {100 * worst:.1f}% "
            f"over the layers ({'within' if close else 'not within'} 10%), and it is "
            f"{'better than He with an interval that excludes 0' if beats else 'not shown better than He'}.")


def plot_sigmas(sigmas: pd.DataFrame, testbed: str):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (arm, g) in enumerate(sigmas.groupby("arm", sort=False)):
        ax.plot(g["layer"], g["sigma"], marker="os^Dv<>ph*"[i % 10], ls=("-", "--", "-.", ":")[i % 4],
                color=f"C{i % 10}", label=arm, ms=4)
    he = sigmas.drop_duplicates("layer")
    ax.plot(he["layer"], 1.1 * he["he_sigma"], color="k", lw=0.6, ls=":", label="He +-10%")
    ax.plot(he["layer"], 0.9 * he["he_sigma"], color="k", lw=0.6, ls=":")
    ax.set_yscale("log")
    ax.set(xlabel="weight layer l (forward order)", ylabel="weight standard deviation sigma_l (log scale)",
           title=f"Per-layer sigma of the found formulas and the baselines on {testbed}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_best_so_far(curve: pd.DataFrame, cfg: FormulaSearchConfig):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bounds = ACCURACY if cfg.reward == "val_accuracy" else None
    band_plot(ax, curve, "budget", "best_so_far", "repeat", "searcher", bounds=bounds)
    unit = "validation accuracy after the proxy" if cfg.reward == "val_accuracy" else cfg.reward
    ax.set(xlabel="budget spent (child epochs)", ylabel=f"best-so-far reward ({unit})",
           title=f"Best-so-far against budget on {cfg.testbed}: mean and 95% t band over {cfg.repeats} repeats")
    fig.tight_layout()
    return fig


def verdict_text(cfg: FormulaSearchConfig, rows: pd.DataFrame, sigmas: pd.DataFrame) -> str:
    primary = (f"the best found formula minus He, test accuracy on {cfg.testbed} after {cfg.long_epochs} epochs, "
               f"paired by seed ({cfg.validation_seeds} fresh seeds)")
    prim = rows[rows["comparison"] == PRIMARY]
    if prim.empty:
        reading = "No formula was found or He was not re-trained: the primary comparison was not run."
    else:
        reading = {"better": "**A found formula beats He here.**",
                   "worse": "**The found formula is worse than He here.**",
                   "equivalent": f"**The found formula is equivalent to He within +-{cfg.sesoi:g}.**",
                   "inconclusive": "**Whether the found formula beats He is undecided** at these seeds."}[
            prim["verdict"].iloc[0]]
    lines = [sesoi_line(cfg.sesoi, "accuracy", primary), "", reading, "", rediscovery(sigmas, rows), ""]
    if len(rows):
        lines.append(verdict_table(rows))
    return "\n".join(lines)


def fidelity_text(cfg: FormulaSearchConfig, result: FormulaSearchResult) -> str:
    """The reward-fidelity section's heading and reading."""
    per, fid = result.fidelity_formulas, result.fidelity
    n_search = int((per["source"] == "search").sum())
    lines = [f"## Reward fidelity\nHow well each reward, measured at the proxy ({cfg.proxy_epochs} epoch(s), the "
             f"search's seeds), predicts test accuracy after {cfg.long_epochs} epochs on {cfg.fidelity_seeds} fresh "
             f"seeds (disjoint from the search's and the validation's), over {len(per)} formulas: {n_search} drawn "
             f"uniformly from the distinct trained candidates (seeded, blind to every reward) and "
             f"{len(per) - n_search} formula baselines. Spearman's rho (ties at average ranks; a diverged run scored "
             f"by the one rule: its signal at the diverged score, its accuracy at chance), 95% percentile-bootstrap "
             f"interval over formulas (none below {MIN_BOOTSTRAP_N} formulas). {int(per['proxy_diverged'].sum())} of "
             f"the {len(per)} diverged at the proxy, so much of the agreement over all formulas can be diverged against "
             f"trained; the last columns (`*_trained`) rank only the formulas that trained at the proxy."]

    def says(rho, lo, hi, n):
        if not np.isfinite(rho):
            return f"no rank agreement ({n} formulas, or every formula tied)"
        ci = f"[{lo:+.2f}, {hi:+.2f}]" if np.isfinite(lo) else f"no interval with {n} formulas"
        reading = ("its ranking carries over to the long run" if np.isfinite(lo) and lo > 0 else
                   "it ranks against the long run" if np.isfinite(hi) and hi < 0 else "undecided")
        return f"rho = {rho:+.2f} ({ci}; {reading})"

    for r in fid.itertuples():
        lines.append(f"- `{r.reward}`: all formulas {says(r.spearman, r.ci_low, r.ci_high, r.formulas)}; trained at "
                     f"the proxy only {says(r.spearman_trained, r.trained_ci_low, r.trained_ci_high, r.formulas_trained)}.")
    return "\n".join(lines)


def report(cfg: FormulaSearchConfig, result: FormulaSearchResult) -> Report:
    """What notebook 07 shows: the found formulas against He per layer, best-so-far against budget, the
    re-training and transfer tables, throughput, and the verdicts."""
    rep = Report(cfg.output_dir)
    fans = [(int(r.fan_in), int(r.fan_out)) for r in result.fans.itertuples()]
    g = float(result.fans["gain"].iloc[0])
    arms = arms_of(cfg, result.candidates)
    sigmas = sigma_table(arms, fans, g)
    rows = verdicts(cfg, result)
    n = cfg.candidates_per_search()
    rep.markdown(f"Testbed **{cfg.testbed}** ({get_testbed(cfg.testbed)}), {len(fans)} weight layers. Each of "
                 f"{', '.join(cfg.searchers)} ran {cfg.repeats} times with a budget of {cfg.budget} child epochs "
                 f"({n} candidates of {cfg.proxy_epochs} epochs), reward `{cfg.reward}` ({DIRECTION[cfg.reward]}); "
                 f"a diverged candidate scores {DIVERGED_REWARD[cfg.reward]:g}. The best formulas were chosen on that "
                 f"reward and re-trained for {cfg.long_epochs} epochs on {cfg.validation_seeds} fresh seeds (disjoint "
                 "from the search's); every accuracy below is TEST accuracy of those networks.")
    rep.markdown("## Best formulas\nAs written and canonical (sympy), with the range over layers of sigma_l / He's "
                 "sqrt(2 / fan_in), and the re-trained test accuracy (mean, 95% t interval inside [0, 1]; diverged "
                 "networks at chance).")
    rep.table("best_formulas", arm_summary(cfg, result, sigmas))
    rep.figure("sigma_per_layer", plot_sigmas(sigmas, cfg.testbed))
    rep.table("sigma_per_layer", sigmas, show=False)
    rep.markdown("## Search\nBest-so-far reward of each search against the child epochs spent; repeats are paired "
                 "(repeat r trains step i's child with the same seed for every searcher).")
    curve = best_so_far_curve(cfg, result.candidates)
    rep.figure("best_so_far", plot_best_so_far(curve, cfg), headline=True)
    rep.table("best_so_far", curve, show=False)
    rep.table("throughput", throughput(result.candidates), caption="Candidates per searcher and child seconds per "
              "trained candidate (one worker); rejected: not a finite positive sigma on some layer, scored by the "
              "diverged rule without training")
    if len(result.fidelity):
        rep.markdown(fidelity_text(cfg, result))
        rep.table("fidelity", result.fidelity)
        rep.table("fidelity_formulas", result.fidelity_formulas, show=False)
    if len(result.reward_comparison):
        rep.markdown(f"## Which reward finds better formulas\n{cfg.reward_searcher} searched {cfg.repeats} times on "
                     f"each reward with the same budget ({cfg.budget} child epochs), the same searcher seeds and "
                     f"the same child seeds per step (so repeat r is paired across rewards; a proposal already "
                     f"trained with its seed is not trained again). Each search hands on its best candidate by its "
                     f"own reward; that formula is re-trained for {cfg.long_epochs} epochs on the "
                     f"{cfg.validation_seeds} fresh validation seeds, and the table gives the mean TEST accuracy of "
                     "the repeats' picks (diverged at chance). The comparisons against the main reward are in the "
                     "exploratory family of the verdict table below; where a reward handed on the same formula as "
                     "the main reward in every repeat (`same_pick_as_reference` = repeats), its differences are 0 by "
                     "construction and its row is inconclusive: identical picks leave no spread to test. With a "
                     "few repeats in a large family only a large difference can be decided.")
        rep.table("reward_comparison_summary", reward_comparison_summary(result.reward_comparison))
        rep.table("reward_comparison", result.reward_comparison, show=False)
    if len(result.transfer):
        rep.markdown("## Transfer\nThe best formula, without re-searching, against He on other testbeds, with the "
                     "same fresh seeds (test accuracy).")
        rep.table("transfer_summary", transfer_summary(result.transfer))
    rep.table("comparisons", rows, show=False)
    rep.verdict("## What this run found\n" + verdict_text(cfg, rows, sigmas))
    return rep
