from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from rlinit_lib.core.params import ParameterError
from rlinit_lib.core.runtime import derive_seed
from rlinit_lib.core.store import StoreError
from rlinit_lib.core.study import run
from rlinit_lib.smooth_reinit import experiment as sr
from rlinit_lib.smooth_reinit.experiment import (DQN_VARIANTS, GPT_VARIANTS, SmoothReinitConfig, analyse,
                                                 compare_solving, primary_comparisons)
from rlinit_lib.smooth_reinit.methods import run_metrics

TINY = str(Path(__file__).parent / "data" / "tiny_text.txt")
GPT_TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 16, "max_iters": 6, "warmup_iters": 2,
            "eval_iters": 2, "eval_interval": 3}


def cfg(tmp_path, **kw):
    base = dict(dqn_variants=["eps0", "eps0_last_noise"], dqn_seeds=2, dqn_episodes=5, gpt_variants=["baseline",
                "noise_last_mlp_proj"], gpt_seeds=2, gpt_overrides=GPT_TINY, text_path=TINY, progress=False, executor="serial",
                output_dir=str(tmp_path / "o"), bootstrap=100)
    return SmoothReinitConfig(**(base | kw)).validate()


def test_every_variant_has_a_known_control():
    for table in (DQN_VARIANTS, GPT_VARIANTS):
        for name, (_, control) in table.items():
            assert control is None or control in table


def test_every_profile_of_notebook_04_is_valid():
    files = sorted((Path(__file__).parents[1] / "params").glob("*/04_smooth_reinit.yaml"))
    assert {f.parent.name for f in files} >= {"paper", "quick", "smoke", "source_win"}
    for f in files:
        SmoothReinitConfig.from_dict(yaml.safe_load(f.read_text())).validate()


def test_a_dqn_only_run_leaves_the_gpt_tables_empty(tmp_path):
    c = cfg(tmp_path, gpt_variants=[])
    losses = run(sr, c).gpt_losses
    assert losses.empty and pd.read_csv(tmp_path / "o" / "gpt_losses.csv").empty
    assert primary_comparisons(c) == ["eps0_last_noise vs eps0, area under the return curve"]


def test_dqn_runs_resume_without_repeats_on_derived_seeds(tmp_path):
    c = cfg(tmp_path, gpt_variants=[])
    first = run(sr, cfg(tmp_path, dqn_seeds=2, dqn_variants=["eps0"], gpt_variants=[])).dqn.returns
    both = run(sr, c).dqn.returns
    assert len(first) == 2 * 5 and len(both) == 2 * 2 * 5
    assert not both.duplicated(["variant", "seed", "episode"]).any()
    assert sorted(set(both["seed"])) == sorted(derive_seed(0, s) for s in range(2))   # not seed + s
    m = run_metrics(both, 0, 5)
    assert len(m) == 4 and not m["solved"].any() and (m["to_solve"] == 5).all()  # 5 episodes never solve
    with pytest.raises((ParameterError, StoreError), match=r"holds a run with sesoi=25\.0 \(now sesoi=30\.0\)"):
        run(sr, cfg(tmp_path, sesoi=30.0))        # the margin is fixed before the run: another one is refused


def test_both_arms_unsolved_under_a_step_budget_give_no_sooner_or_later():
    """The issue's case: both arms 0/6 solved, but under a step budget the arm that learns reaches the budget in
    fewer episodes; censoring at each run's own episode count made it "solve later" (rank test p = 0.0027)."""
    rows = []
    for v, ret in (("eps0", 10.0), ("eps0_last_noise", 100.0)):      # 100 episodes of 10 vs 10 episodes of 100
        for s in range(6):
            rows += [{"variant": v, "seed": s, "episode": e, "return": ret, "solved_at": None}
                     for e in range(int(1000 / ret))]
    m = run_metrics(pd.DataFrame(rows), step_budget=1000)
    t = compare_solving(m, DQN_VARIANTS).set_index("variant")
    row = t.loc["eps0_last_noise"]
    assert row["solved"] == row["control_solved"] == 0 and row["p_to_solve_unadjusted"] == 1.0
    assert row["median_to_solve"] == row["control_median_to_solve"] == 1000.0
    assert row["p_share_unadjusted"] == 1.0
    assert not t.astype(str).apply(lambda c: c.str.contains("sooner|later")).any().any()


def test_the_report_opens_its_verdicts_with_the_margin_and_writes_plain_tables(tmp_path):
    c = cfg(tmp_path, dqn_variants=["minimalrl_schedule", "eps0", "eps0_last_noise", "eps0_noisynet"], diag_every=2)
    result = run(sr, c)
    rep = sr.report(c, result)
    verdict = rep.summary["verdict"]
    assert verdict.startswith("## What the data say\nSmallest effect of interest (declared before the run): **25 ")
    assert "Primary comparison: eps0_last_noise vs eps0, area under the return curve; noise_last_mlp_proj vs " \
           "baseline, final validation loss." in verdict
    assert "- eps0_last_noise vs eps0, area under the return curve: **" in verdict and "[exploratory]" in verdict
    assert "better" not in verdict.split("\n- ")[0]          # no sentence of its own before core.verdicts' ones
    for name, table in rep.tables().items():
        back = pd.read_csv(tmp_path / "o" / f"{name}.csv")
        assert list(back.columns) == list(table.columns), name
        for col in ("estimate", "ci_low", "ci_high", "p_value", "p_adjusted", "p_improvement", "share", "mean"):
            if col in back and len(back):
                assert pd.api.types.is_float_dtype(back[col]), (name, col)
    family = rep.tables()["comparisons"]
    assert set(family["role"]) == {"primary", "exploratory"}
    assert (family.loc[family["role"] == "primary", "confidence"] == 1 - 0.05 / 2).all()   # two primary comparisons
    res = analyse(c, result.dqn, result.gpt_losses)
    explore = (family["role"] == "exploratory").sum() + len(res.collapses)
    assert (family.loc[family["role"] == "exploratory", "confidence"] == 1 - 0.05 / explore).all()


def test_batched_and_one_at_a_time_dqn_runs_write_the_same_table(tmp_path):
    kw = dict(dqn_variants=["eps0_skip_middle_noise", "eps0_last_reset"], dqn_episodes=12, dqn_chunk=3, gpt_variants=[])
    batched = run(sr, cfg(tmp_path / "b", diag_every=3, **kw)).dqn
    faithful = run(sr, cfg(tmp_path / "f", dqn_batched=False, diag_every=3, **kw)).dqn
    key = ["variant", "seed", "episode"]
    for name in ("returns", "diagnostics"):   # diagnostics too: the same weights at the same checkpoints
        pd.testing.assert_frame_equal(getattr(batched, name).sort_values(key).reset_index(drop=True),
                                      getattr(faithful, name).sort_values(key).reset_index(drop=True))
    assert len(batched.diagnostics) == 2 * 2 * (12 // 3 + 1)


def test_gpt_runs_place_noise_in_the_last_block(tmp_path):
    losses = run(sr, cfg(tmp_path, dqn_variants=[])).gpt_losses
    assert set(losses["variant"]) == {"baseline", "noise_last_mlp_proj"} and set(losses["iter"]) == {0, 3, 6}
    final = losses[losses["iter"] == 6]
    assert final.groupby("variant")["val_loss"].apply(tuple).nunique() == 2  # the noise changed the runs


def test_bad_smooth_reinit_parameters(tmp_path):
    with pytest.raises(ParameterError, match=r"^dqn_variants must be one of"):
        cfg(tmp_path, dqn_variants=["eps1"])
    with pytest.raises(ParameterError, match=r"^dqn_chunk must be an integer >= 1 \(got 0\)$"):
        cfg(tmp_path, dqn_chunk=0)
    with pytest.raises(ParameterError, match=r"^dqn_device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' \(got 'gpu0'\)$"):
        cfg(tmp_path, dqn_device="gpu0")
    with pytest.raises(ParameterError, match=r"^unknown parameter 'layers' for char_gpt"):
        cfg(tmp_path, gpt_overrides={"layers": 2})
    with pytest.raises(ParameterError, match=r"^dormant_tau must be a number > 0 and < 1 \(got 1.0\)$"):
        cfg(tmp_path, dormant_tau=1.0)
    with pytest.raises(ParameterError, match=r"^diag_every must be an integer >= 1 \(got 0\)$"):
        cfg(tmp_path, diag_every=0)
    with pytest.raises(ParameterError, match=r"^redo_every must be an integer >= 1 \(got -5\)$"):
        cfg(tmp_path, redo_every=-5)
    with pytest.raises(ParameterError, match=r"^dqn_variants must be one of .*\(got 'eps0_dropout'\)$"):
        cfg(tmp_path, dqn_variants=["eps0", "eps0_dropout"])
    with pytest.raises(ParameterError, match=r"^sesoi must be a number > 0 \(got 0\.0\)$"):
        cfg(tmp_path, sesoi=0.0)
    with pytest.raises(ParameterError, match=r"^tasks must be one of 'CartPole-v1', 'Acrobot-v1', 'MinAtar-Breakout' "
                                             r"\(got 'Pong-v5'\)$"):
        cfg(tmp_path, tasks=["CartPole-v1", "Pong-v5"])
    with pytest.raises(ParameterError, match=r"^task_budgets must name tasks of .*\(got 'Pong'\)$"):
        cfg(tmp_path, task_budgets={"Pong": 5})
    with pytest.raises(ParameterError, match=r"^task_budgets\['Acrobot-v1'\] must be an integer >= 1"):
        cfg(tmp_path, task_budgets={"Acrobot-v1": 0})
    with pytest.raises(ParameterError, match=r"^rule 'win' is CartPole-v1's"):
        cfg(tmp_path, tasks=["Acrobot-v1"], rule="win")


def test_a_minatar_task_without_the_package_stops_before_work_in_one_line(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "minatar", None)     # import minatar now raises ImportError
    with pytest.raises(ParameterError, match=r"^task 'MinAtar-Breakout' needs MinAtar, which is not installed here: "
                                             r"pip install minatar$"):
        cfg(tmp_path, tasks=["CartPole-v1", "MinAtar-Breakout"])
    assert not (tmp_path / "o").exists()


def test_skip_arms_are_left_out_of_minatar_with_their_reason_and_the_store_is_versioned(tmp_path):
    c = cfg(tmp_path, tasks=["CartPole-v1", "MinAtar-Breakout"], dqn_variants=["eps0", "eps0_skip",
                                                                             "eps0_skip_middle_noise"], gpt_variants=[])
    units = sr.dqn_units(c)
    assert {(t, v) for t, v, _ in units} == {("CartPole-v1", "eps0"), ("CartPole-v1", "eps0_skip"),
                                             ("CartPole-v1", "eps0_skip_middle_noise"), ("MinAtar-Breakout", "eps0")}
    assert "convolution" in sr.skipped("eps0_skip", "MinAtar-Breakout") and sr.skipped("eps0", "MinAtar-Breakout") is None
    assert primary_comparisons(c) == ["eps0_skip_middle_noise vs eps0_skip, area under the return curve on CartPole-v1"]
    assert c.identity()["dqn_version"] == sr.DQN_VERSION == 2     # an older store of 04 is refused, not mixed


def test_two_tasks_give_per_task_tables_and_rliable_aggregates_over_tasks(tmp_path):
    """CartPole and Acrobot, two arms x 3 seeds: returns carry the task and the episode lengths; the
    comparisons are made per task, in its units and with its margin; rliable's IQM, optimality gap and
    probability of improvement come per task and over both (normalised scores, stratified over tasks)."""
    c = cfg(tmp_path, tasks=["CartPole-v1", "Acrobot-v1"], dqn_seeds=3, dqn_episodes=3, diag_every=1,
            task_budgets={"Acrobot-v1": 600}, gpt_variants=[])
    result = run(sr, c)
    r = result.dqn.returns
    assert list(r.columns) == sr.DQN_COLUMNS and set(r["task"]) == {"CartPole-v1", "Acrobot-v1"}
    cart, acro = r[r["task"] == "CartPole-v1"], r[r["task"] == "Acrobot-v1"]
    assert (cart["length"] == cart["return"]).all() and len(cart) == 2 * 3 * 3       # CartPole: a point per step
    assert (acro["return"] < 0).all() and (acro.groupby(["variant", "seed"])["length"].sum() >= 600).all()
    assert (acro.groupby(["variant", "seed"]).size() == 2).all()     # 600 steps: two episodes of at most 500
    rep = sr.report(c, result)
    family = rep.tables()["comparisons"]
    assert set(family.loc[family["role"] == "primary", "comparison"]) == {
        "eps0_last_noise vs eps0, area under the return curve on CartPole-v1",
        "eps0_last_noise vs eps0, area under the return curve on Acrobot-v1"}
    assert set(family.loc[family["measure"] == "auc", "sesoi"]) == {25.0}             # both tasks' margins are 25
    rl = rep.tables()["dqn_rliable"]
    assert set(rl["task"]) == {"CartPole-v1", "Acrobot-v1", "all tasks"}
    both = rl[(rl["task"] == "all tasks") & (rl["statistic"] == "iqm")].set_index("variant")
    assert (both["runs"] == 6).all() and ((both["estimate"] >= both["ci_low"]) & (both["estimate"] <= both["ci_high"])).all()
    m = analyse(c, result.dqn, result.gpt_losses).metrics
    acro_m = m[m["task"] == "Acrobot-v1"]
    assert np.allclose(acro_m["score"], (acro_m["final_100"] + 497.08) / (497.08 - 100.0))   # tasks.normalise
    imp = rep.tables()["dqn_improvement"].set_index("task")
    per_task = [imp.loc[t, "p_improvement"] for t in ("CartPole-v1", "Acrobot-v1")]
    assert imp.loc["all tasks", "p_improvement"] == pytest.approx(np.mean(per_task))   # rliable: mean over tasks
    assert {"dqn_auc_cartpole_v1", "dqn_auc_acrobot_v1", "dqn_solving_acrobot_v1"} <= set(rep.tables())
    assert {"dqn_returns_cartpole_v1", "dqn_returns_acrobot_v1", "methods_diagnostics_acrobot_v1"} <= set(rep.figures())
