import numpy as np
import pandas as pd
import pytest

from rlinit_lib.scale_search.strategy_comparison import (ComparisonConfig, describe_verdict, rl_verdict, run_comparison,
                                                         score, summarise)
from rlinit_lib.scale_search.search import SearchConfig, run_search
from rlinit_lib.scale_search.strategies import STRATEGIES, make_strategy, run_strategy
from rlinit_lib.core.params import ParameterError

PEAK, LO, HI, EPOCHS = 1.2, 0.3, 1.7, 7
FAST = [s for s in STRATEGIES if s != "gp"]  # GP fits a model per trial: covered once, with a small budget


def toy_reward(scale, epochs, seed):
    """A known reward curve (no training): peak at 1.2, longer training slightly better, small noise."""
    return 10 * (0.75 - 0.3 * (scale - PEAK) ** 2 - 0.05 / epochs) + np.random.default_rng(seed).normal(0, 0.02)


def toy(proposals, steps, seeds):
    return [toy_reward(p.scale, p.epochs, sd) for p, sd in zip(proposals, seeds)]


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


def test_comparison_scores_against_reference(tmp_path):
    cfg = ComparisonConfig(strategies=["random", "grid", "successive_halving"], repeats=3, budget=70, epochs=7,
                           reference_scales=15, reference_seeds=2, tolerance=0.1, checkpoints=[0.5, 1.0],
                           output_dir=str(tmp_path / "c"), progress=False, device="cpu")
    reference, histories = run_comparison(cfg, reward_fn=toy_reward)
    scores = score(histories, reference, cfg.budget, cfg.checkpoints, cfg.tolerance)
    assert scores["reference_best_scale"].iloc[0] == pytest.approx(PEAK, abs=0.1)
    assert (scores["regret"] >= -1e-9).all()
    table = summarise(scores)
    assert set(table["strategy"]) == {"random", "grid", "successive_halving"} and (table["runs"] == 3).all()
    again_ref, again = run_comparison(cfg, reward_fn=fail_if_called)   # everything is in the run store
    pd.testing.assert_frame_equal(again, histories)
    pd.testing.assert_frame_equal(again_ref, reference)


def fail_if_called(*args):
    raise AssertionError("nothing should be retrained")


def test_repeats_are_paired_and_the_verdict_is_a_paired_test(tmp_path):
    cfg = ComparisonConfig(strategies=["reinforce", "random", "grid"], repeats=4, budget=28, epochs=7,
                           reference_scales=15, reference_seeds=2, checkpoints=[1.0], wandb_mode="disabled", executor="serial",
                           output_dir=str(tmp_path / "c"), progress=False, device="cpu")
    reference, histories = run_comparison(cfg, reward_fn=toy_reward)
    for rep, h in histories.groupby("repeat"):   # step i of every strategy trains with the same seed
        seeds = h.groupby("strategy")["seed"].apply(list)
        assert all(s == seeds.iloc[0] for s in seeds)
    scores = score(histories, reference, cfg.budget, cfg.checkpoints, cfg.tolerance)
    v = rl_verdict(scores)
    assert v["rl"] == "reinforce" and v["other"] in ("random", "grid") and v["pairs"] == 4
    rl = scores[scores["strategy"] == "reinforce"].set_index("repeat")["regret"]
    other = scores[scores["strategy"] == v["other"]].set_index("repeat")["regret"]
    d = rl - other
    assert v["difference"] == pytest.approx(d.mean())
    half = v["ci_high"] - v["difference"]   # the paired t interval: t(0.975, 3) * sd / sqrt(4)
    assert half == pytest.approx(3.182446 * d.std(ddof=1) / 2, rel=1e-5)
    assert "paired" in describe_verdict(v).lower()
    table = summarise(scores)
    assert (table["regret_ci_low"] >= 0).all()   # the bootstrap interval respects regret >= 0


def test_search_with_another_strategy_and_bad_name(tmp_path):
    cfg = SearchConfig(episodes=3, epochs=1, strategy="random", dataset="synthetic", train_subset=256, test_subset=128,
                       recheck_seeds=0, device="cpu", wandb_mode="disabled", progress=False, executor="serial",
                       output_dir=str(tmp_path / "r"))
    r = run_search(cfg)
    assert len(r.table) == 3 and r.table["policy_std"].isna().all() and r.best["scale"] in set(r.table["scale"])
    with pytest.raises(ParameterError, match=r"^strategy must be one of 'reinforce', .*\(got 'bayes'\)$"):
        SearchConfig.from_dict({"strategy": "bayes"})
    with pytest.raises(ParameterError, match=r"^strategies must be one of"):
        ComparisonConfig(strategies=["random", "annealing"]).validate()
