"""Notebook 07 (issue 27): the study runs end to end and its tables read back as numbers; an interrupted run resumes
to the uninterrupted tables; a diverged candidate is scored by the one rule and the search goes on; bad input stops
in one line naming the parameter. (Kill -9 resume, refusal of a changed setting and the every-profile checks come
from the registry: tests/test_crash_safety.py, tests/test_notebooks.py.)"""
import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from rlinit_lib.core.params import ParameterError
from rlinit_lib.core.store import RunStore
from rlinit_lib.core.study import run
from rlinit_lib.core.trials import TrialsFailed
from rlinit_lib.formula_search import experiment as fs
from rlinit_lib.formula_search.grammar import parse
from rlinit_lib.formula_search.searchers import planted_reward
from tiny_runs import config

NB = "07_formula_search"
EPS = float(np.finfo(np.float64).eps)
PLANTED = planted_reward(parse("sqrt(2/fan_in)"), *fs.network_fans("mlp10_relu_sgd", "synthetic"))


def toy(testbed, formula, seed, epochs):
    """A stand-in for training: accuracy peaked at He on the search testbed's layers, a little seed noise;
    'diverged' (NaN, as a training that hit inf) for every formula that uses fan_out."""
    if "fan_out" in formula.tokens:
        return {"val_accuracy": math.nan, "test_accuracy": math.nan, "diverged": True, "reason": "non-finite loss",
                "epochs": 0}
    rng = np.random.default_rng(seed)
    acc = 0.1 + 0.8 * math.exp(PLANTED(formula)) + 0.01 * rng.standard_normal()
    return {"val_accuracy": acc, "test_accuracy": acc, "diverged": False, "reason": "", "epochs": epochs,
            "seconds": 0.0, "activation_stability": PLANTED(formula), "grad_norm_variance": -rng.random(),
            "loss_slope": -PLANTED(formula)}


class Failing:
    """``toy`` that raises once, at its ``at``-th call (an interruption in the middle of a search)."""

    def __init__(self, at):
        self.at, self.calls = at, 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError("interrupted")
        return toy(*args)


TOY = dict(searchers=["reinforce", "evolution", "random"], repeats=2, budget=12, max_length=7, population=4,
           tournament=2, baselines=["he", "lecun"], validation_seeds=3, transfer_testbeds=["mlp20_relu_sgd"])


def finished(cfg) -> set[str]:
    store = RunStore.for_config(cfg)
    try:
        return store.finished()
    finally:
        store.close()


def exported(out) -> dict:
    return {n: pd.read_csv(out / f"{n}.csv").drop(columns=["seconds"], errors="ignore")
            for n in fs.FormulaSearchResult.EXPORTS}


def test_tiny_study_trains_end_to_end_and_its_tables_read_back_as_numbers(tmp_path):
    torch.set_num_threads(1)
    cfg = config(NB, tmp_path / "o", transfer_testbeds=["mlp20_relu_sgd"],
                 baselines=["he", "lecun", "lsuv", "gradinit", "metainit"], gradinit_iters=2, metainit_steps=5,
                 fidelity_seeds=2)
    result = run(fs, cfg)
    tables = exported(tmp_path / "o")
    c = tables["candidates"]
    for col in ("repeat", "step", "budget_used", "reward", "best_so_far", "val_accuracy", "test_accuracy"):
        assert pd.api.types.is_numeric_dtype(c[col]), col
    per_search = c[c["trained"]].groupby(["searcher", "repeat"]).size()
    assert (per_search == cfg.candidates_per_search()).all() and len(per_search) == 2 * cfg.repeats
    assert (c.loc[c["trained"], "budget_used"].groupby([c["searcher"], c["repeat"]]).max() == cfg.budget).all()
    v = tables["validation"]
    assert pd.api.types.is_numeric_dtype(v["test_accuracy"]) and {"best", "he"} <= set(v["arm"])
    assert (v.groupby("arm").size() == cfg.validation_seeds).all()
    he = v[v["arm"] == "he"].set_index("seed_index")
    for arm in ("lsuv", "gradinit", "metainit"):       # data-driven arms: the same seeds as He, other networks
        mine = v[v["arm"] == arm].set_index("seed_index")
        assert (mine["seed"] == he["seed"]).all() and (mine["test_accuracy"] != he["test_accuracy"]).any(), arm
    assert set(tables["arms"].query("source == 'baseline'")["canonical"]) >= {f"{a}:{parse(fs.KNOWN['he']).canonical}"
                                                                           for a in ("lsuv", "gradinit", "metainit")}
    assert set(v["seed"]).isdisjoint(set(c["seed"].dropna()))          # fresh seeds, disjoint from the search's
    fid, per = tables["fidelity"], tables["fidelity_formulas"]
    assert list(fid["reward"]) == list(fs.REWARDS)                     # one row per reward
    for col in ("spearman", "ci_low", "ci_high", "formulas"):
        assert pd.api.types.is_numeric_dtype(fid[col]), col
    defined = fid["reward"] != "loss_slope"
    assert fid.loc[defined, "spearman"].between(-1, 1).all() and (fid["formulas"] == len(per)).all()
    # one training step per proxy epoch here: no slope (NaN), scored by the diverged rule like the search scores it,
    # so every formula ties and there is no rank agreement
    assert (per["loss_slope"] == fs.DIVERGED_REWARD["loss_slope"]).all() and fid.loc[~defined, "spearman"].isna().all()
    base = {parse(fs.KNOWN[b]).canonical for b in ("he", "lecun")}     # formula baselines; LSUV is left out
    assert set(per.loc[per["source"] == "baseline", "canonical"]) <= base
    assert set(per["canonical"]) <= set(c.loc[c["trained"], "canonical"]) | base
    t = tables["transfer"]
    assert set(t["testbed"]) == {"mlp20_relu_sgd"} and set(t["arm"]) == {"best", "he"}
    assert list(t[t["arm"] == "best"]["seed"]) == list(t[t["arm"] == "he"]["seed"])   # paired by seed
    rows = fs.verdicts(cfg, result)
    assert rows.loc[rows["role"] == "primary", "comparison"].tolist() == [fs.PRIMARY]
    assert set(rows["verdict"]) <= {"better", "worse", "equivalent", "inconclusive"}
    rep = fs.report(cfg, result)
    assert {"best_so_far", "sigma_per_layer"} <= set(rep.figures()) and "best_formulas" in rep.tables()
    assert "fidelity" in rep.tables() and "## Reward fidelity" in rep.text()
    assert "Smallest effect of interest (declared before the run)" in rep.text()
    he = rep.tables()["sigma_per_layer"].query("arm == 'he'")
    np.testing.assert_allclose(he["ratio_to_he"], 1.0, rtol=4 * EPS)


REWARDS_TOO = dict(reward_searcher="evolution", reward_searches=["activation_stability", "loss_slope"])


@pytest.mark.parametrize("at, extra", [(40, {}), (100, {}),      # in a round of the searches (72 calls); later
                                       (80, REWARDS_TOO)])       # in the reward comparison's searches
def test_an_interrupted_search_resumes_to_the_uninterrupted_tables(tmp_path, at, extra):
    cut = config(NB, tmp_path / "cut", **TOY, **extra)
    with pytest.raises(TrialsFailed):
        run(fs, cut, evaluator=Failing(at=at))
    if extra:                                        # the cut fell inside the reward comparison's searches
        assert {k for k in finished(cut) if k.startswith("search@")}
    run(fs, cut, evaluator=toy)                      # resume: the finished candidates come from the store
    full = run(fs, config(NB, tmp_path / "full", **TOY, **extra), evaluator=toy)
    a, b = exported(tmp_path / "cut"), exported(tmp_path / "full")
    for name in b:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
    assert (full.candidates[full.candidates["trained"]].groupby(["searcher", "repeat"]).size() == 12).all()
    assert len(full.fidelity) == len(fs.REWARDS) and full.fidelity["spearman"].between(-1, 1).all()


def test_the_fidelity_set_is_a_seeded_sample_blind_to_rewards_on_fresh_seeds(tmp_path):
    cfg = config(NB, tmp_path / "o", **TOY, fidelity_candidates=5, fidelity_seeds=2)
    result = run(fs, cfg, evaluator=toy)
    c = result.candidates
    fset = fs.fidelity_set(cfg, c)
    searched = [d for d in fset if d["source"] == "search"]
    assert len(searched) == 5 and len({d["canonical"] for d in fset}) == len(fset)
    assert [d["source"] for d in fset[5:]] == ["baseline"] * (len(fset) - 5)
    shuffled = c.assign(**{r: np.random.default_rng(1).permutation(c[r].to_numpy()) for r in ("reward", *fs.REWARDS)})
    assert [d["canonical"] for d in fs.fidelity_set(cfg, shuffled)] == [d["canonical"] for d in fset]   # blind
    more = dataclasses.replace(cfg, fidelity_candidates=8)
    assert [d["canonical"] for d in fs.fidelity_set(more, c)][:5] == [d["canonical"] for d in searched]  # extends
    assert fs.fidelity_set(dataclasses.replace(cfg, fidelity_candidates=0), c) == []
    long_seeds = {fs.fidelity_seed(cfg.seed, j) for j in range(cfg.fidelity_seeds)}
    assert long_seeds.isdisjoint(set(c["seed"].dropna()) | set(result.validation["seed"]) |
                                 {d["proxy_seed"] for d in fset})
    per = result.fidelity_formulas
    assert list(per["canonical"]) == [d["canonical"] for d in fset] and (per["long_seeds"] == 2).all()
    assert (result.fidelity["formulas_trained"] == (~per["proxy_diverged"]).sum()).all()
    assert (result.fidelity["diverged_at_proxy"] == per["proxy_diverged"].sum()).all()


def test_rank_agreement_is_one_for_a_monotone_signal_and_matches_scipy():
    rng = np.random.default_rng(0)
    acc = rng.uniform(0.1, 0.9, 15)
    planted = fs.rank_agreement(np.exp(5 * acc) - 3, acc)       # a monotone function of the long accuracy
    assert planted["spearman"] == 1.0 and planted["ci_low"] == planted["ci_high"] == 1.0
    assert planted["formulas"] == 15
    assert fs.rank_agreement(np.exp(5 * acc), acc, higher_is_better=False)["spearman"] == -1.0
    x, y = rng.standard_normal(12), rng.standard_normal(12)
    x[3] = x[7]                                                  # a tie: average ranks, as scipy
    r = fs.rank_agreement(x, y)
    assert abs(r["spearman"] - spearmanr(x, y).statistic) <= 8 * EPS
    assert -1 <= r["ci_low"] <= r["spearman"] <= r["ci_high"] <= 1
    few = fs.rank_agreement(x[:9], y[:9])                       # below core.stats.MIN_BOOTSTRAP_N: no interval
    assert np.isfinite(few["spearman"]) and np.isnan(few["ci_low"]) and np.isnan(few["ci_high"])
    assert np.isnan(fs.rank_agreement(np.ones(12), y)["spearman"])   # a constant signal ranks nothing
    assert fs.rank_agreement([np.nan, 1, 2, 3], [0.1, 0.2, 0.3, 0.4])["formulas"] == 3


def test_a_diverged_candidate_is_scored_by_the_rule_and_the_search_goes_on(tmp_path):
    cfg = config(NB, tmp_path / "o", **TOY)
    result = run(fs, cfg, evaluator=toy)
    c = result.candidates
    bad = c[c["diverged"].astype(bool)]
    assert fs.DIVERGED_REWARD["val_accuracy"] == fs.CHANCE
    assert len(bad) and (bad["reward"] == fs.CHANCE).all()
    assert bad["tokens"].str.contains("fan_out").any()
    trained = c[c["trained"]].groupby(["searcher", "repeat"]).size()
    assert (trained == cfg.candidates_per_search()).all()             # every search spent its whole budget
    assert (c.groupby(["searcher", "repeat"])["best_so_far"].apply(lambda s: s.is_monotonic_increasing)).all()


def test_a_real_training_that_diverges_comes_back_scored_at_chance():
    torch.set_num_threads(1)
    data = {"dataset": "synthetic", "data_root": "data", "train_subset": 128, "test_subset": 64, "val_size": 64,
            "device": "cpu"}
    row = fs.candidate_trial(data, "mlp10_relu_sgd", parse("square(fan_in)").to_dict(), seed=1, epochs=1)["runs"][0]
    assert row["diverged"] and math.isnan(row["val_accuracy"])
    assert fs.scored_reward(row, "val_accuracy") == fs.CHANCE
    assert fs.scored_reward(row, "loss_slope") == fs.DIVERGED_REWARD["loss_slope"]


@pytest.mark.parametrize("changes, name", [
    ({"operators": ["+", "log"]}, "operators"),          # an unknown primitive
    ({"constants": ["1", "pi"]}, "constants"),
    ({"operators": []}, "operators"),                    # an empty operator set
    ({"max_length": 0}, "max_length"),                   # a length bound < 1
    ({"budget": 1, "proxy_epochs": 2}, "budget"),        # too small for one candidate
    ({"testbed": "mlp7_relu_sgd"}, "testbed"),           # an unknown testbed
    ({"transfer_testbeds": ["mlp20_relu_sgd", "resnet"]}, "transfer_testbeds"),
    ({"reward": "test_accuracy"}, "reward"),             # choices are never made on test accuracy
    ({"searchers": ["reinforce", "bayes"]}, "searchers"),
    ({"baselines": ["lecun"]}, "baselines"),             # the primary's reference must be there
    ({"baselines": ["he", "kaiming"]}, "baselines"),     # not a formula of grammar.KNOWN nor a data-driven arm
    ({"reward_searches": ["val_accuracy"]}, "reward_searches"),   # the main searches' own reward
    ({"reward_searches": ["test_accuracy"]}, "reward_searches"),
    ({"searchers": ["random"], "reward_searcher": "evolution"}, "reward_searcher"),   # its reference is missing
    ({"metainit_steps": 0}, "metainit_steps"),
    ({"gradinit_iters": 0}, "gradinit_iters"),
    ({"fidelity_candidates": -1}, "fidelity_candidates"),
    ({"fidelity_seeds": 0}, "fidelity_seeds"),
    ({"device": "tpu"}, "device"),
])
def test_bad_input_stops_in_one_line_naming_the_parameter(tmp_path, changes, name):
    with pytest.raises(ParameterError) as err:
        config(NB, tmp_path / "bad", **changes)
    msg = str(err.value)
    assert msg.startswith(name) and "\n" not in msg, msg
    assert not (tmp_path / "bad").exists()


def test_the_reward_comparison_searches_each_reward_on_the_same_budget_and_reports_its_picks(tmp_path):
    """``reward_searches``: evolution on each other reward, paired by repeat with the main searches (same searcher
    and child seeds), the same budget, already-trained candidates reused; each search hands on its best by its own
    reward, re-trained on the validation seeds. In the toy, activation stability peaks at He like validation
    accuracy, while the loss slope is its negative: the loss-slope searches hand on their worst formulas."""
    cfg = config(NB, tmp_path / "o", **TOY, reward_searcher="evolution",
                 reward_searches=["activation_stability", "loss_slope"])
    result = run(fs, cfg, evaluator=toy)
    c, rc, comp = result.candidates, result.reward_candidates, result.reward_comparison
    assert list(rc["objective"].unique()) == cfg.reward_searches and set(rc["searcher"]) == {"evolution"}
    used = rc[rc["trained"]].groupby(["objective", "repeat"])["budget_used"].max()
    assert (used == cfg.budget).all() and len(used) == 2 * cfg.repeats          # the same budget for every reward
    ref = c[c["searcher"] == "evolution"]
    for objective, g in rc.groupby("objective"):
        for (r, a), (_, b) in zip(g.groupby("repeat"), ref.groupby("repeat")):
            assert a["formula"].iloc[0] == b["formula"].iloc[0]                 # the same first proposal: paired
            assert a["seed"].iloc[0] == b["seed"].iloc[0]
        t = g[g["trained"]]
        assert (t["reward"] == [fs.scored_reward(row, objective) for row in t.to_dict("records")]).all()
    # a candidate with the main searches' formula and seed was not trained again (no trial of its own); every
    # other trained candidate of the comparison has its own trial
    fresh = {k for k in finished(cfg) if k.startswith("search@")}
    trained_here = rc[rc["trained"]]
    main = set(zip(c.loc[c["trained"], "canonical"], c.loc[c["trained"], "seed"]))
    reused = [(cn, sd) in main for cn, sd in zip(trained_here["canonical"], trained_here["seed"])]
    own = {fs.search_key(r.searcher, int(r.repeat), int(r.step), r.objective)
           for r, u in zip(trained_here.itertuples(), reused) if not u}
    assert 0 < sum(reused) < len(trained_here) and fresh == own
    # the picks: one per (objective, repeat), each its search's best by its own reward
    assert list(comp["objective"].unique()) == ["val_accuracy", *cfg.reward_searches]
    assert (comp.groupby("objective").size() == cfg.repeats).all() and (comp["seeds"] == cfg.validation_seeds).all()
    both = pd.concat([ref.assign(objective="val_accuracy"), rc])
    for p in comp.itertuples():
        g = both[(both["objective"] == p.objective) & (both["repeat"] == p.repeat) & both["trained"]
                 & ~both["diverged"].astype(bool)]
        assert p.search_reward == g["reward"].max() and p.canonical in set(g.loc[g["reward"] == g["reward"].max(),
                                                                                  "canonical"])
    mean = comp.groupby("objective")["test_accuracy"].mean()
    assert mean["loss_slope"] < mean["val_accuracy"]
    summary = fs.reward_comparison_summary(comp).set_index("objective")
    same = comp.pivot(index="repeat", columns="objective", values="canonical")
    assert summary.loc["loss_slope", "same_pick_as_reference"] == (same["loss_slope"] == same["val_accuracy"]).sum()
    np.testing.assert_allclose(summary["test_accuracy"], mean[summary.index], rtol=4 * EPS)
    rows = fs.verdicts(cfg, result)
    mine = rows[rows["comparison"].str.startswith("search on ")]
    assert len(mine) == 2 and (mine["role"] == "exploratory").all()
    for r in cfg.reward_searches:        # identical picks in every repeat: 0 by construction, never "equivalent"
        verdict = mine.loc[mine["comparison"] == fs.reward_contrast(cfg, r), "verdict"].item()
        if summary.loc[r, "same_pick_as_reference"] == cfg.repeats:
            assert verdict == "inconclusive", r
    assert summary.loc["activation_stability", "same_pick_as_reference"] == cfg.repeats   # the toy's case
    assert "## Which reward finds better formulas" in fs.report(cfg, result).text()


def test_random_search_on_another_reward_trains_nothing_new(tmp_path):
    """Random search's proposals do not depend on its rewards, so on another reward, with the same seeds, it
    proposes the main search's formulas in the main search's order: every candidate is reused, no search trial
    runs, and only the picks' re-training can add work."""
    cfg = config(NB, tmp_path / "o", **{**TOY, "searchers": ["random"]}, reward_searcher="random",
                 reward_searches=["grad_norm_variance"])
    result = run(fs, cfg, evaluator=toy)
    rc, c = result.reward_candidates, result.candidates
    assert not {k for k in finished(cfg) if k.startswith("search@")}
    cols = ["repeat", "step", "canonical", "seed", "val_accuracy", "grad_norm_variance"]
    pd.testing.assert_frame_equal(rc[cols].reset_index(drop=True), c[cols].reset_index(drop=True))


def _store_trials(cfg) -> dict[str, list[str]]:
    store = RunStore.for_config(cfg)
    try:
        out = {}
        for unit, trial in store.db.execute("SELECT unit, trial FROM units"):
            out.setdefault(trial, []).append(unit)
        return out
    finally:
        store.close()


def test_candidates_in_batches_give_the_tables_of_one_per_trial_and_resume_with_another_batch_size(tmp_path):
    one = run(fs, config(NB, tmp_path / "one", **TOY), evaluator=toy)
    cut = config(NB, tmp_path / "cut", **TOY, candidate_batch=4)
    with pytest.raises(TrialsFailed):
        run(fs, cut, evaluator=Failing(at=100))        # a batch fails as a whole; the batches before it are stored
    stored = _store_trials(cut)
    assert any(t.startswith("batch/") and len(u) > 1 for t, u in stored.items())
    assert max(len(u) for u in stored.values()) <= 4
    run(fs, dataclasses.replace(cut, candidate_batch=3), evaluator=toy)   # resumed with another batch size
    a, b = exported(tmp_path / "cut"), exported(tmp_path / "one")
    for name in b:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
    units = [u for us in _store_trials(cut).values() for u in us]
    assert len(units) == len(set(units)) and set(units) == finished(config(NB, tmp_path / "one", **TOY))
    assert len(one.validation) and not any("unit" in getattr(one, n).columns for n in fs.FormulaSearchResult.EXPORTS)


def test_real_candidates_trained_together_match_one_at_a_time(tmp_path):
    """On the CPU the batched trial's loop is train_candidate itself (the same tables bit for bit); the vmapped
    stack trains the same candidates to the same numbers up to float32 rounding (bounds as in
    test_formula_testbeds: 1e4 eps on losses, 2 images on accuracies)."""
    torch.set_num_threads(1)
    opts = dict(repeats=3, validation_seeds=3)
    one = exported_run(tmp_path / "one", **opts)
    loop = exported_run(tmp_path / "loop", **opts, candidate_batch=8, batch_mechanism="loop")
    stacked = exported_run(tmp_path / "vmap", **opts, candidate_batch=8, batch_mechanism="vmap")
    assert any(len(u) > 1 for u in _store_trials(config(NB, tmp_path / "vmap", **opts)).values())
    f32 = float(np.finfo(np.float32).eps)
    for name in one:
        pd.testing.assert_frame_equal(loop[name], one[name], obj=name)
        a, b = one[name], stacked[name]
        assert list(a.columns) == list(b.columns) and a.shape == b.shape, name
        for col in a.columns:
            if not pd.api.types.is_float_dtype(a[col]):
                assert a[col].tolist() == b[col].tolist(), (name, col)
            elif "accuracy" in col or col in ("reward", "best_so_far"):
                np.testing.assert_allclose(b[col], a[col], atol=2 / 64 + f32, err_msg=f"{name}.{col}")
            elif col not in ("spearman", "ci_low", "ci_high", "spearman_trained", "trained_ci_low", "trained_ci_high",
                             "difference", "p_value"):
                np.testing.assert_allclose(b[col], a[col], rtol=1e4 * f32, atol=1e4 * f32, err_msg=f"{name}.{col}")


def exported_run(out, **changes) -> dict:
    run(fs, config(NB, out, **changes))
    return exported(out)
