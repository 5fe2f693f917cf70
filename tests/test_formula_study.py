"""Notebook 07 (issue 27): the study runs end to end and its tables read back as numbers; an interrupted run resumes
to the uninterrupted tables; a diverged candidate is scored by the one rule and the search goes on; bad input stops
in one line naming the parameter. (Kill -9 resume, refusal of a changed setting and the every-profile checks come
from the registry: tests/test_crash_safety.py, tests/test_notebooks.py.)"""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from rlinit_lib.core.params import ParameterError
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
    acc = 0.1 + 0.8 * math.exp(PLANTED(formula)) + 0.01 * np.random.default_rng(seed).standard_normal()
    return {"val_accuracy": acc, "test_accuracy": acc, "diverged": False, "reason": "", "epochs": epochs,
            "seconds": 0.0}


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


def exported(out) -> dict:
    return {n: pd.read_csv(out / f"{n}.csv").drop(columns=["seconds"], errors="ignore")
            for n in fs.FormulaSearchResult.EXPORTS}


def test_tiny_study_trains_end_to_end_and_its_tables_read_back_as_numbers(tmp_path):
    torch.set_num_threads(1)
    cfg = config(NB, tmp_path / "o", transfer_testbeds=["mlp20_relu_sgd"])
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
    assert set(v["seed"]).isdisjoint(set(c["seed"].dropna()))          # fresh seeds, disjoint from the search's
    t = tables["transfer"]
    assert set(t["testbed"]) == {"mlp20_relu_sgd"} and set(t["arm"]) == {"best", "he"}
    assert list(t[t["arm"] == "best"]["seed"]) == list(t[t["arm"] == "he"]["seed"])   # paired by seed
    rows = fs.verdicts(cfg, result)
    assert rows.loc[rows["role"] == "primary", "comparison"].tolist() == [fs.PRIMARY]
    assert set(rows["verdict"]) <= {"better", "worse", "equivalent", "inconclusive"}
    rep = fs.report(cfg, result)
    assert {"best_so_far", "sigma_per_layer"} <= set(rep.figures()) and "best_formulas" in rep.tables()
    assert "Smallest effect of interest (declared before the run)" in rep.text()
    he = rep.tables()["sigma_per_layer"].query("arm == 'he'")
    np.testing.assert_allclose(he["ratio_to_he"], 1.0, rtol=4 * EPS)


def test_an_interrupted_search_resumes_to_the_uninterrupted_tables(tmp_path):
    cut = config(NB, tmp_path / "cut", **TOY)
    with pytest.raises(TrialsFailed):
        run(fs, cut, evaluator=Failing(at=40))       # fails in the middle of a round of the searches
    run(fs, cut, evaluator=toy)                      # resume: the finished candidates come from the store
    full = run(fs, config(NB, tmp_path / "full", **TOY), evaluator=toy)
    a, b = exported(tmp_path / "cut"), exported(tmp_path / "full")
    for name in b:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
    assert (full.candidates[full.candidates["trained"]].groupby(["searcher", "repeat"]).size() == 12).all()


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
    ({"device": "tpu"}, "device"),
])
def test_bad_input_stops_in_one_line_naming_the_parameter(tmp_path, changes, name):
    with pytest.raises(ParameterError) as err:
        config(NB, tmp_path / "bad", **changes)
    msg = str(err.value)
    assert msg.startswith(name) and "\n" not in msg, msg
    assert not (tmp_path / "bad").exists()
