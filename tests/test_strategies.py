import numpy as np
import pandas as pd
import pytest

from rlinit_lib.core.stats import interval
from rlinit_lib.core.study import run
from rlinit_lib.scale_search import strategy_comparison as sc
from rlinit_lib.scale_search.strategy_comparison import (CHANCE_ACCURACY, ComparisonConfig, verdict_text,
                                                         reference_curve, score,
                                                         strategy_verdicts, summarise)
from rlinit_lib.scale_search import search
from rlinit_lib.scale_search.search import SearchConfig
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
    r = run(sc, cfg, reward_fn=toy_reward)
    reference, histories = r.reference, r.histories
    scores = score(histories, reference, cfg.budget, cfg.checkpoints, cfg.tolerance)
    assert scores["reference_best_scale"].iloc[0] == pytest.approx(PEAK, abs=0.1)
    assert (scores["regret"] >= -1e-9).all()   # the toy's validation and test curves are the same
    table = summarise(scores)
    assert set(table["strategy"]) == {"random", "grid", "successive_halving"} and (table["runs"] == 3).all()
    r = run(sc, cfg, reward_fn=fail_if_called)
    again_ref, again = r.reference, r.histories   # everything is in the run store
    pd.testing.assert_frame_equal(again, histories)
    pd.testing.assert_frame_equal(again_ref, reference)


def fail_if_called(*args):
    raise AssertionError("nothing should be retrained")


def test_repeats_are_paired_and_the_verdict_is_a_paired_test(tmp_path):
    cfg = ComparisonConfig(strategies=["reinforce", "random", "grid"], repeats=4, budget=28, epochs=7,
                           reference_scales=15, reference_seeds=2, checkpoints=[1.0], wandb_mode="disabled", executor="serial",
                           output_dir=str(tmp_path / "c"), progress=False, device="cpu")
    r = run(sc, cfg, reward_fn=toy_reward)
    reference, histories = r.reference, r.histories
    for rep, h in histories.groupby("repeat"):   # step i of every strategy trains with the same seed
        seeds = h.groupby("strategy")["seed"].apply(list)
        assert all(s == seeds.iloc[0] for s in seeds)
    scores = score(histories, reference, cfg.budget, cfg.checkpoints, cfg.tolerance)
    v = strategy_verdicts(scores, cfg.sesoi, cfg.strategies).set_index("comparison")
    assert v.loc["reinforce - random", "role"] == "primary" and v.loc["reinforce - random", "test"] == "paired t"
    assert set(v.index) == {"reinforce - random", "grid - random", "reinforce - grid"}
    rl = scores[scores["strategy"] == "reinforce"].set_index("repeat")["regret"]
    other = scores[scores["strategy"] == "random"].set_index("repeat")["regret"]
    d = rl - other
    p = v.loc["reinforce - random"]
    assert p["estimate"] == pytest.approx(d.mean()) and p["n"] == 4
    half = p["ci_high"] - p["estimate"]   # the paired t interval: t(0.975, 3) * sd / sqrt(4)
    assert half == pytest.approx(3.182446 * d.std(ddof=1) / 2, rel=1e-5)
    table = summarise(scores)
    for _, r in table.iterrows():   # regret intervals are the t interval of core.stats
        iv = interval(scores[scores["strategy"] == r["strategy"]]["regret"], bounds=(-1.0, 1.0))
        assert (r["regret_ci_low"], r["regret_ci_high"]) == pytest.approx((iv.low, iv.high), nan_ok=True)
    rep = sc.report(cfg, sc.ComparisonResult(reference, histories))
    assert rep.summary["verdict"].split("\n")[1].startswith("Smallest effect of interest (declared before the run)")
    assert pd.read_csv(tmp_path / "c" / "comparisons.csv")["p_value"].dtype.kind == "f"


def reference_table(val_peak, test_peak, diverged_at=None):
    """A reference grid of 5 scales x 2 seeds whose validation and test curves peak at different scales."""
    rows = []
    for s in np.linspace(0.5, 1.5, 5):
        for j in range(2):
            bad = diverged_at is not None and np.isclose(s, diverged_at) and j == 0
            rows.append({"scale": s, "seed_index": j, "reward": -2.0 if bad else 7.0,
                         "val_accuracy": np.nan if bad else 0.8 - (s - val_peak) ** 2,
                         "accuracy": np.nan if bad else 0.8 - (s - test_peak) ** 2, "nan_detected": bad})
    return pd.DataFrame(rows)


def history(recommendations: dict) -> pd.DataFrame:
    return pd.DataFrame([{"strategy": n, "repeat": r, "budget_used": 7, "recommendation": rec}
                         for n, recs in recommendations.items() for r, rec in enumerate(recs)])


def test_reference_optimum_is_chosen_on_validation_and_regret_reported_on_test():
    scores = score(history({"random": [1.25, 0.75]}), reference_table(0.75, 1.25), 7, [1.0], 0.1)
    assert scores["reference_best_scale"].iloc[0] == 0.75          # validation's optimum, not test's
    assert scores["reference_best_accuracy"].iloc[0] == pytest.approx(0.8 - 0.25)   # its test accuracy
    assert scores["regret"].tolist() == pytest.approx([-0.25, 0.0])   # the test-better answer has negative regret
    assert scores["hit"].tolist() == [False, True]


def test_diverged_reference_runs_count_at_chance_not_zero_nor_dropped():
    curve = reference_curve(reference_table(1.0, 1.0, diverged_at=1.0)).set_index("scale")
    assert curve.loc[1.0, "accuracy"] == pytest.approx((0.8 + CHANCE_ACCURACY) / 2)
    assert curve.loc[1.0, "diverged_rate"] == 0.5 and curve.loc[0.5, "diverged_rate"] == 0


def fake_scores(regrets: dict) -> pd.DataFrame:
    return pd.DataFrame([{"strategy": n, "repeat": r, "budget_fraction": 1.0, "regret": x}
                         for n, xs in regrets.items() for r, x in enumerate(xs)])


def test_the_primary_comparison_is_fixed_whatever_the_data():
    # tpe and reinforce_batched look best here; the primary stays the dissertation's REINFORCE against random
    rng = np.random.default_rng(0)
    jitter = lambda: list(rng.normal(0, 0.001, 6))   # noqa: E731  (a constant difference has no interval)
    regrets = {"reinforce": [0.02 + e for e in jitter()], "reinforce_batched": [0.0] * 6,
               "random": [0.01 + e for e in jitter()], "tpe": [0.0] * 6}
    v = strategy_verdicts(fake_scores(regrets), 0.005)
    assert v.loc[v["role"] == "primary", "comparison"].tolist() == ["reinforce - random"]
    assert (v["role"] == "exploratory").sum() == 4
    assert np.allclose(v.loc[v["role"] == "exploratory", "confidence"], 1 - 0.05 / 4)   # one Bonferroni family
    assert v.loc[v["role"] == "primary", "verdict"].item() == "worse"   # lower regret is better
    text = verdict_text(v, 0.005)
    assert text.startswith("Smallest effect of interest") and "RL does not earn its place" in text
    no_primary = strategy_verdicts(fake_scores({"tpe": [0.0] * 3, "random": [0.01, 0.0, 0.02]}), 0.005)
    assert "it was not run" in verdict_text(no_primary, 0.005)


def simulate(shift, runs, sesoi=0.005, sd=0.004, seed=0, names=("reinforce", "random", "tpe", "successive_halving")):
    """Verdicts of the primary and the exploratory family over ``runs`` simulated studies: strategies x 6
    repeats, regrets from a skewed distribution with a repeat effect shared by every strategy (the paired design);
    REINFORCE's regret shifted by ``shift``."""
    rng = np.random.default_rng(seed)
    primary, family = [], []
    for _ in range(runs):
        shared = rng.gamma(2.0, sd, 6)
        regrets = {n: shared + rng.gamma(2.0, sd / 2, 6) for n in names}
        regrets["reinforce"] = regrets["reinforce"] + shift
        v = strategy_verdicts(fake_scores(regrets), sesoi)
        primary.append(v.loc[v["role"] == "primary", "verdict"].item())
        family.append(v.loc[v["role"] == "exploratory", "verdict"].tolist())
    return np.array(primary), family


def test_identical_strategies_read_better_or_worse_at_most_5_percent_of_the_time():
    runs = 300
    primary, family = simulate(0.0, runs)
    limit = 0.05 + 3 * np.sqrt(0.05 * 0.95 / runs)      # Monte-Carlo error allowed
    assert np.isin(primary, ["better", "worse"]).mean() <= limit
    assert np.mean([any(x in ("better", "worse") for x in f) for f in family]) <= limit   # family-wise


def test_arms_two_sesoi_apart_are_not_called_equivalent():
    runs, pair = 400, ("reinforce", "random")
    limit = 0.05 + 3 * np.sqrt(0.05 * 0.95 / runs)
    primary, _ = simulate(2 * 0.005, runs, seed=1, names=pair)
    assert (primary == "equivalent").mean() <= limit
    at_margin, _ = simulate(0.005, runs, seed=2, names=pair)    # even at the margin itself (TOST's size)
    assert (at_margin == "equivalent").mean() <= limit


def test_search_with_another_strategy_and_bad_name(tmp_path):
    cfg = SearchConfig(episodes=3, epochs=1, strategy="random", dataset="synthetic", train_subset=256, test_subset=128,
                       recheck_seeds=0, device="cpu", wandb_mode="disabled", progress=False, executor="serial",
                       output_dir=str(tmp_path / "r"))
    r = run(search, cfg)
    assert len(r.table) == 3 and r.table["policy_std"].isna().all() and r.best["scale"] in set(r.table["scale"])
    with pytest.raises(ParameterError, match=r"^strategy must be one of 'reinforce', .*\(got 'bayes'\)$"):
        SearchConfig.from_dict({"strategy": "bayes"})
    with pytest.raises(ParameterError, match=r"^strategies must be one of"):
        ComparisonConfig(strategies=["random", "annealing"]).validate()
