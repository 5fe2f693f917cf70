import numpy as np
import pandas as pd
import pytest

from rlinit_lib.comparison import ComparisonConfig, run_comparison, score, summarise
from rlinit_lib.search import SearchConfig, run_search
from rlinit_lib.strategies import STRATEGIES, make_strategy, run_strategy
from rlinit_lib.validation import ParameterError

PEAK, LO, HI, EPOCHS = 1.2, 0.3, 1.7, 7
FAST = [s for s in STRATEGIES if s != "gp"]  # GP fits a model per trial: covered once, with a small budget


def toy(scales, epochs, seeds):
    """A known reward curve (no training): peak at 1.2, longer training slightly better, small noise."""
    return [10 * (0.75 - 0.3 * (s - PEAK) ** 2 - 0.05 / epochs) + np.random.default_rng(sd).normal(0, 0.02)
            for s, sd in zip(scales, seeds)]


@pytest.mark.parametrize("name", STRATEGIES)
def test_bounds_budget_and_reproducibility(name):
    budget = 70 if name == "gp" else 140
    runs = [run_strategy(make_strategy(name, LO, HI, EPOCHS, budget, seed=3), toy, budget, seed=3) for _ in range(2)]
    h = runs[0]
    assert h["scale"].between(LO, HI).all()
    assert h["budget_used"].iloc[-1] <= budget and h["epochs"].sum() == h["budget_used"].iloc[-1]
    assert h["budget_used"].iloc[-1] > budget - EPOCHS  # the budget is (nearly) all used
    pd.testing.assert_frame_equal(runs[0], runs[1])
    if name == "grid":  # a grid does not depend on the seed
        return
    other = run_strategy(make_strategy(name, LO, HI, EPOCHS, budget, seed=4), toy, budget, seed=4)
    assert not np.allclose(other["scale"].to_numpy()[:5], h["scale"].to_numpy()[:5])


@pytest.mark.parametrize("name", FAST)
def test_finds_the_toy_peak_within_tolerance(name):
    for seed in range(3):
        st = make_strategy(name, LO, HI, EPOCHS, 350, seed)
        run_strategy(st, toy, 350, seed)
        assert abs(st.recommendation() - PEAK) < 0.15, (name, seed, st.recommendation())


def test_successive_halving_trains_short_first_and_promotes_the_best():
    st = make_strategy("successive_halving", LO, HI, EPOCHS, 350, 0)
    h = run_strategy(st, toy, 350, 0)
    first_bracket = h.iloc[:27 + 9 + 3]
    assert list(first_bracket["epochs"].unique()) == [1, 3, 7]
    rung0 = first_bracket[first_bracket["epochs"] == 1]
    promoted = set(first_bracket[first_bracket["epochs"] == 3]["scale"])
    assert promoted == set(rung0.nlargest(9, "reward")["scale"])


def test_interrupted_strategy_resumes_by_replay():
    full = run_strategy(make_strategy("tpe", LO, HI, EPOCHS, 140, 1), toy, 140, 1)
    calls = []

    def counting(scales, epochs, seeds):
        calls.append(len(scales))
        return toy(scales, epochs, seeds)

    resumed = run_strategy(make_strategy("tpe", LO, HI, EPOCHS, 140, 1), counting, 140, 1, history=full.iloc[:8])
    pd.testing.assert_frame_equal(full, resumed)
    assert sum(calls) == len(full) - 8  # the first 8 were replayed, not recomputed


def test_comparison_scores_against_reference(tmp_path):
    cfg = ComparisonConfig(strategies=["random", "grid", "successive_halving"], repeats=3, budget=70, epochs=7,
                           reference_scales=15, reference_seeds=2, tolerance=0.1, checkpoints=[0.5, 1.0],
                           output_dir=str(tmp_path / "c"), progress=False, device="cpu")
    reference, histories = run_comparison(cfg, evaluate=toy)
    scores = score(histories, reference, cfg.budget, cfg.checkpoints, cfg.tolerance)
    assert scores["reference_best_scale"].iloc[0] == pytest.approx(PEAK, abs=0.1)
    assert (scores["regret"] >= -1e-9).all()
    table = summarise(scores)
    assert set(table["strategy"]) == {"random", "grid", "successive_halving"} and (table["runs"] == 3).all()
    again_ref, again = run_comparison(cfg, evaluate=lambda *a: pytest.fail("nothing should be retrained"))
    assert len(again) == len(histories)


def test_search_with_another_strategy_and_bad_name(tmp_path, synthetic):
    cfg = SearchConfig(episodes=3, epochs=1, strategy="random", dataset="synthetic", recheck_seeds=0, device="cpu",
                       wandb_mode="disabled", progress=False, output_dir=str(tmp_path / "r"))
    r = run_search(cfg, data=synthetic)
    assert len(r.table) == 3 and r.table["policy_std"].isna().all() and r.best["scale"] in set(r.table["scale"])
    with pytest.raises(ParameterError, match=r"^strategy must be one of 'reinforce', .*\(got 'bayes'\)$"):
        SearchConfig.from_dict({"strategy": "bayes"})
    with pytest.raises(ParameterError, match=r"^strategies must be one of"):
        ComparisonConfig(strategies=["random", "annealing"]).validate()
