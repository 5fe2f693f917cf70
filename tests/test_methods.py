"""The exploration and plasticity arms of notebook 04 do what their papers say, and the comparison's statistics
(censoring, rliable's aggregates, the correction family, collapse directions, diagnostics) behave on data whose
answer is known."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from rlinit_lib.smooth_reinit.dqn import DQNConfig, QNet, train_dqn
from rlinit_lib.smooth_reinit.dqn_batched import train_dqn_batched
from rlinit_lib.smooth_reinit.exploration import (NoisyLinear, NoisyQNet, ParameterNoise, epsilon_threshold,
                                                  policy_distance)
from rlinit_lib.core.verdicts import Contrast
from rlinit_lib.smooth_reinit.methods import (collapse_tests, contrast, diagnostic_effects, improvement_table, moves,
                                              probability_of_improvement, rliable_table, run_metrics, score_distribution,
                                              signatures, verdict_family)
from rlinit_lib.smooth_reinit.plasticity import (action_entropy, adam_moments, diagnostics, dormant_scores,
                                                 probe_states, redo, soft_shrink_perturb, srank)
from rlinit_lib.core.params import ParameterError


def test_noisy_linear_noise_has_the_factorised_scale_and_sigma_learns():
    torch.manual_seed(0)
    layer = NoisyLinear(64, 32, sigma0=0.5)
    assert torch.allclose(layer.weight_sigma, torch.full((32, 64), 0.5 / 8))      # sigma0 / sqrt(p)
    g = torch.Generator().manual_seed(1)
    noise = []
    for _ in range(400):
        layer.resample(g)
        w, b = layer.effective()
        noise.append((w - layer.weight_mu).detach().flatten())
    noise = torch.stack(noise)
    # eps_ij = f(a) f(b) with f(x) = sgn(x) sqrt|x|: E[eps^2] = (E|x|)^2 = 2 / pi
    expected = 0.5 / 8 * math.sqrt(2 / math.pi)
    assert abs(float(noise.std()) - expected) < 0.03 * expected
    x = torch.randn(5, 64)
    w, b = layer.effective()
    torch.testing.assert_close(layer(x), F.linear(x, w, b))
    layer(x).pow(2).sum().backward()
    assert layer.weight_sigma.grad.abs().sum() > 0 and layer.bias_sigma.grad.abs().sum() > 0
    before = layer.weight_sigma.detach().clone()
    torch.optim.Adam(layer.parameters(), lr=1e-2).step()
    assert not torch.equal(before, layer.weight_sigma)


def test_noisynet_acts_with_fresh_noise_every_step():
    q, g = NoisyQNet(), torch.Generator().manual_seed(0)
    x = torch.randn(4)
    outs = []
    for _ in range(3):
        q.resample(g)
        outs.append(q(x))
    assert not torch.equal(outs[0], outs[1]) and not torch.equal(outs[1], outs[2])
    mean = q.mean_params()
    assert set(mean) == {f"fc{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}


def test_parameter_noise_adaptation_moves_sigma_toward_the_target_distance():
    torch.manual_seed(0)
    q = QNet()
    params = dict(q.named_parameters())
    x = probe_states(256)
    target = epsilon_threshold(0.05)
    assert target == pytest.approx(-math.log(1 - 0.05 + 0.025))

    def distance(noise):
        with torch.no_grad():
            from rlinit_lib.smooth_reinit.dqn import qnet_forward
            return policy_distance(q(x), qnet_forward(x, noise.perturbed(params), False))

    for start, direction in ((1e-4, +1), (3.0, -1)):
        noise = ParameterNoise(start, alpha=1.05, seed=1)
        d0 = distance(noise)
        assert (d0 < target) == (direction > 0)
        for _ in range(300):
            noise.adapt(distance(noise), target)
        assert (noise.sigma > start) == (direction > 0)
        assert abs(math.log(distance(noise) / target)) < abs(math.log(d0 / target))   # closer to the target
        assert 0.2 < distance(noise) / target < 5


def test_redo_recycles_exactly_the_dormant_units_with_their_adam_state():
    torch.manual_seed(0)
    q, fresh = QNet(skip=True), QNet(skip=True)
    x = probe_states(256)
    opt = torch.optim.Adam(q.parameters(), lr=1e-3)
    F.smooth_l1_loss(q(x), torch.zeros(256, 2)).backward()
    opt.step()
    dead = torch.tensor([3, 17, 90])
    with torch.no_grad():                 # kill three fc1 units: zero weights and a negative bias, so relu gives 0
        q.fc1.weight[dead] = 0.0
        q.fc1.bias[dead] = -1.0
    before = {n: p.detach().clone() for n, p in q.named_parameters()}
    state = {n: {k: opt.state[p][k].clone() for k in ("exp_avg", "exp_avg_sq")} for n, p in q.named_parameters()}
    h1 = F.relu(F.linear(x, q.fc1.weight, q.fc1.bias))
    assert set(torch.nonzero(dormant_scores(h1) <= 0.025).flatten().tolist()) >= set(dead.tolist())
    recycled = redo(q.params(), adam_moments(opt, q.params()), x, 0.025, fresh.params(), skip=True)
    units = torch.nonzero(dormant_scores(h1) <= 0.025).flatten()
    keep = torch.tensor([i for i in range(128) if i not in set(units.tolist())])
    assert recycled >= 3
    torch.testing.assert_close(q.fc1.weight[units], fresh.fc1.weight[units], rtol=0, atol=0)
    torch.testing.assert_close(q.fc1.bias[units], fresh.fc1.bias[units], rtol=0, atol=0)
    assert (q.fc2.weight[:, units] == 0).all() and (q.fc3.weight[:, units] == 0).all()   # the skip reads them too
    assert torch.equal(q.fc1.weight[keep], before["fc1.weight"][keep])
    for name, idx in (("fc1.weight", (units, slice(None))), ("fc1.bias", (units,)), ("fc2.weight", (slice(None), units))):
        p = dict(q.named_parameters())[name]
        assert (opt.state[p]["exp_avg"][idx] == 0).all() and (opt.state[p]["exp_avg_sq"][idx] == 0).all()
    assert torch.equal(opt.state[q.fc1.weight]["exp_avg"][keep], state["fc1.weight"]["exp_avg"][keep])


def test_soft_shrink_and_perturb_mixes_in_a_fresh_default_draw():
    torch.manual_seed(0)
    q = QNet()
    before = [p.detach().clone() for p in q.parameters()]
    soft_shrink_perturb(q.params(), 0.0, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(before, q.parameters()))
    soft_shrink_perturb(q.params(), 1.0, torch.Generator().manual_seed(1))      # all fresh: PyTorch's default bounds
    for m in (q.fc1, q.fc2, q.fc3):
        bound = 1 / math.sqrt(m.in_features)
        assert m.weight.abs().max() <= bound and m.weight.std() > 0.5 * bound / math.sqrt(3)


def test_diagnostics_on_known_networks():
    q = torch.tensor([[1.0, 0.0]] * 10)
    assert action_entropy(q) == 0.0 and action_entropy(torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 5)) == 1.0
    m = torch.randn(100, 5) @ torch.randn(5, 40)
    assert srank(m) <= 5 and srank(torch.eye(40)) == 40
    torch.manual_seed(0)
    net = QNet().requires_grad_(False)
    p = dict(net.named_parameters())
    d = diagnostics(p, probe_states(), False, 0.025)
    assert 0 <= d["dormant_fraction"] <= 1 and 1 <= d["srank"] <= 128 and d["weight_norm"] > 0
    assert d["weight_norm"] == pytest.approx(math.sqrt(sum(float((t ** 2).sum()) for t in p.values())))


def test_new_arms_record_diagnostics_on_both_paths_and_the_step_budget_ends_a_run():
    for kw in ({"noisy_net": True}, {"param_noise": True}, {"redo_every": 20}, {"soft_sp_alpha": 1e-3}):
        r = train_dqn(DQNConfig(episodes=12, epsilon=0.0, learning_starts=100, diag_every=4, seed=2, **kw))
        assert [d["episode"] for d in r["diagnostics"]] == [0, 4, 8, 12] and r["env_steps"] == sum(r["returns"])
        b = train_dqn_batched([DQNConfig(episodes=12, epsilon=0.0, learning_starts=100, diag_every=4, seed=2, **kw)])
        assert b[0]["returns"] == r["returns"] and len(b[0]["diagnostics"]) == 4
    r = train_dqn(DQNConfig(episodes=50, step_budget=300, seed=0))
    assert sum(r["returns"]) >= 300 and sum(r["returns"][:-1]) < 300     # stops after the episode crossing it


def test_time_to_solve_is_censored_at_the_budget_every_run_shares():
    rows = []
    for seed, solved_after in ((0, 3), (1, None), (2, 5)):
        for e in range(6):
            rows.append({"variant": "a", "seed": seed, "episode": e, "return": 100.0,
                         "solved_at": solved_after})
    returns = pd.DataFrame(rows)
    m = run_metrics(returns, step_budget=500).set_index("seed")
    assert m.loc[0, "steps_to_solve"] == 400.0 and m.loc[0, "to_solve"] == 400.0   # cumulative steps at episode 3
    assert np.isnan(m.loc[1, "steps_to_solve"]) and np.isnan(m.loc[2, "steps_to_solve"])   # 600 > budget: censored
    assert (m["censor_at"] == 500).all() and m.loc[1, "to_solve"] == m.loc[2, "to_solve"] == 500.0
    assert list(m["solved"]) == [True, False, False] and m.loc[0, "final_100"] == 100.0
    assert m.loc[0, "score"] == pytest.approx((100 - 23.68) / (475 - 23.68))   # CartPole: random 0, solved 1
    e = run_metrics(returns, step_budget=0, episodes=6).set_index("seed")   # no step budget: episodes, at 6
    assert list(e["to_solve"]) == [4.0, 6.0, 6.0] and (e["censor_at"] == 6).all()


def test_rliable_aggregates_come_from_rliable_and_leave_numpys_generator_alone():
    from rliable import metrics as rlm

    m = pd.DataFrame({"variant": ["a"] * 8, "seed": range(8), "score": np.arange(1, 9) / 8,
                      "to_solve": 1000.0})
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    t = rliable_table(m, ["a"], reps=500, seed=0).set_index(["measure", "statistic"])
    assert np.random.random() == expected_next
    assert t.loc[("score", "iqm"), "estimate"] == pytest.approx(np.mean(np.arange(3, 7) / 8))   # middle half
    assert t.loc[("score", "optimality_gap"), "estimate"] == pytest.approx(1 - np.mean(np.arange(1, 9) / 8))
    assert t.loc[("to_solve", "iqm"), "estimate"] == 1000.0
    assert t.loc[("score", "iqm"), "ci_low"] < t.loc[("score", "iqm"), "estimate"] < t.loc[("score", "iqm"), "ci_high"]
    pd.testing.assert_frame_equal(t, rliable_table(m, ["a"], reps=500, seed=0).set_index(["measure", "statistic"]))
    rng = np.random.default_rng(0)
    for _ in range(20):   # the vectorised statistics are rliable's, ties and equal samples included
        x, y = rng.integers(0, 4, (7, 1)) / 3, rng.integers(0, 4, (5, 1)) / 3
        assert probability_of_improvement(x, y) == pytest.approx(rlm.probability_of_improvement(x, y))
        taus = np.linspace(0, 1, 11)
        from rliable.library import score_distributions
        np.testing.assert_allclose(score_distribution(x, taus), score_distributions(x, taus))
    assert probability_of_improvement(x, x) == 0.5


def test_probability_of_improvement_sees_a_clear_winner():
    m = pd.DataFrame({"variant": ["a"] * 10 + ["b"] * 10, "seed": list(range(10)) * 2,
                      "score": np.r_[np.full(10, 0.9), np.full(10, 0.02)]})
    t = improvement_table(m, [("a", "b"), ("b", "a")], reps=300, seed=0).set_index("variant")
    assert t.loc["a", "p_improvement"] == 1.0 and t.loc["b", "p_improvement"] == 0.0
    assert t.loc["a", "ci_low"] == 1.0 and t.loc["a", "control"] == "b"


def test_one_exploratory_family_across_units_and_primaries_apart():
    """Primary comparisons at 95% (Bonferroni among themselves); every other one, whatever its unit, in ONE
    family with extra tests counted (m = 3 + 2): intervals at 1 - 0.05 / m and p-values times m."""
    rng = np.random.default_rng(1)
    same = rng.normal(0, 1, 10)
    planned = [(Contrast("primary", same + 100 + rng.normal(0, 1, 10), same, True), 25.0, True, {"measure": "auc"}),
               (Contrast("auc 2", same + rng.normal(0, 1, 10), same, True), 25.0, True, {"measure": "auc"}),
               (Contrast("entropy", rng.normal(0, 0.1, 10), rng.normal(0, 0.1, 10), True), 0.1, True, {}),
               (Contrast("loss", rng.normal(2, 0.1, 10), rng.normal(2, 0.1, 10), False), 0.01, False, {})]
    t = verdict_family(planned, ["primary"], extra_exploratory=2).set_index("comparison")
    assert t.loc["primary", "role"] == "primary" and t.loc["primary", "confidence"] == pytest.approx(0.95)
    assert t.loc["primary", "verdict"] == "better"
    explore = t[t["role"] == "exploratory"]
    assert np.allclose(explore["confidence"], 1 - 0.05 / 5)
    assert np.allclose(explore["p_adjusted"], np.minimum(1, explore["p_value"] * 5))
    assert t.loc["auc 2", "verdict"] == "equivalent"     # noise of 1 return point, well inside +-25
    with pytest.raises(ValueError, match="distinct"):
        verdict_family(planned + planned[:1], ["primary"])


def test_the_exploratory_family_keeps_its_error_rate_under_the_null():
    """Ten identical-in-truth arms x 6 seeds: some comparison says better or worse in at most ~5% of runs."""
    rng = np.random.default_rng(2)
    wrong = 0
    for _ in range(200):
        planned = [(Contrast(f"c{i}", rng.normal(0, 1, 6), rng.normal(0, 1, 6), True), 0.5, True, {})
                   for i in range(10)]
        t = verdict_family(planned, [])
        wrong += t["verdict"].isin(["better", "worse"]).any()
    assert wrong / 200 <= 0.07      # 0.045 with this generator; the family-wise rate is at most 0.05


def test_collapse_direction_comes_from_the_control_and_more_collapses_is_not_exploration():
    """The issue's case: 8/20 runs collapsed against the control's 0/20 (Fisher p = 0.003) read "fewer
    collapses" and counted as the exploration signature, because the direction came from the arm's own share."""
    per_run = pd.DataFrame({"variant": ["arm"] * 20 + ["ctrl"] * 20, "seed": list(range(20)) * 2,
                            "collapsed": [True] * 8 + [False] * 12 + [False] * 20})
    c = collapse_tests(per_run, [("arm", "ctrl")], family_size=1)
    row = diagnostic_effects(pd.DataFrame(columns=["measure"]), c).set_index("variant").loc["arm"]
    assert row["p_collapsed"] == pytest.approx(0.0033, abs=5e-4) and row["direction"] == "more"
    assert moves(row) == ["more collapses"] and "exploration" not in signatures(row)
    back = collapse_tests(per_run.replace({"arm": "ctrl", "ctrl": "arm"}), [("arm", "ctrl")], family_size=1)
    row = diagnostic_effects(pd.DataFrame(columns=["measure"]), back).set_index("variant").loc["arm"]
    assert moves(row) == ["fewer collapses"] and signatures(row) == {"exploration"}
    wide = collapse_tests(per_run, [("arm", "ctrl")], family_size=40)      # corrected with its family of 40
    row = diagnostic_effects(pd.DataFrame(columns=["measure"]), wide).set_index("variant").loc["arm"]
    assert row["p_collapsed_adjusted"] > 0.05 and moves(row) == []


def test_signatures_read_the_family_corrected_verdicts_of_the_diagnostics():
    fam = pd.DataFrame([{"arm": "a", "control": "c", "measure": d, "estimate": est, "ci_low": lo, "ci_high": hi,
                         "confidence": 0.99, "verdict": v} for d, est, lo, hi, v in (
        ("action_entropy", 0.2, 0.1, 0.3, "better"), ("dormant_fraction", 0.0, -0.1, 0.1, "inconclusive"),
        ("srank", 1.0, -2.0, 3.0, "inconclusive"))])
    no_collapse = collapse_tests(pd.DataFrame(columns=["variant", "seed", "collapsed"]), [], 1)
    row = diagnostic_effects(fam, no_collapse).set_index("variant").loc["a"]
    assert moves(row) == ["action entropy up"] and signatures(row) == {"exploration"}
    fam.loc[0, "verdict"] = "inconclusive"
    fam.loc[1, ["estimate", "verdict"]] = -0.15, "better"       # fewer dormant units is better
    row = diagnostic_effects(fam, no_collapse).set_index("variant").loc["a"]
    assert moves(row) == ["dormant share down"] and signatures(row) == {"plasticity"}


def test_contrasts_pair_by_seed_when_the_seeds_match():
    m = pd.DataFrame({"variant": ["a"] * 3 + ["b"] * 3, "seed": [5, 6, 7, 7, 6, 5], "auc": [1.0, 2, 3, 30, 20, 10]})
    c = contrast(m, "a", "b", "auc", "a vs b")
    assert c.paired and list(c.a) == [1, 2, 3] and list(c.b) == [10, 20, 30]
    assert not contrast(m[m["seed"] != 7].iloc[:-1], "a", "b", "auc", "x").paired
    assert contrast(m, "a", "z", "auc", "x") is None
