"""The exploration and plasticity arms of notebook 04 do what their papers say, and the comparison's statistics
(censoring, rliable's IQM, Holm, diagnostics) behave on data whose answer is known."""
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
from rlinit_lib.smooth_reinit.methods import against_controls, beats, iqm_table, run_metrics, signatures
from rlinit_lib.smooth_reinit.plasticity import (action_entropy, diagnostics, dormant_scores, probe_states, redo,
                                                 soft_shrink_perturb, srank)
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
    torch.testing.assert_close(layer(x), F.linear(x, w, b))        # the two-product forward is the same layer
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
    recycled = redo(q, opt, x, 0.025, fresh, skip=True)
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
    soft_shrink_perturb(q, 0.0, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(before, q.parameters()))
    soft_shrink_perturb(q, 1.0, torch.Generator().manual_seed(1))      # all fresh: PyTorch's default bounds
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


def test_new_arms_run_on_the_faithful_path_only_and_record_diagnostics():
    for kw in ({"noisy_net": True}, {"param_noise": True}, {"redo_every": 20}, {"soft_sp_alpha": 1e-3}):
        r = train_dqn(DQNConfig(episodes=12, epsilon=0.0, learning_starts=100, diag_every=4, seed=2, **kw))
        assert [d["episode"] for d in r["diagnostics"]] == [0, 4, 8, 12] and r["env_steps"] == sum(r["returns"])
        with pytest.raises(ParameterError, match=f"^runs with {list(kw)[0]} train on the faithful path only"):
            train_dqn_batched([DQNConfig(episodes=3, **kw)])
    r = train_dqn(DQNConfig(episodes=50, step_budget=300, seed=0))
    assert sum(r["returns"]) >= 300 and sum(r["returns"][:-1]) < 300     # stops after the episode crossing it


def test_steps_to_solve_are_censored_at_the_budget():
    rows = []
    for seed, solved_after in ((0, 3), (1, None), (2, 5)):
        for e in range(6):
            rows.append({"variant": "a", "seed": seed, "episode": e, "return": 100.0,
                         "solved_at": solved_after})
    m = run_metrics(pd.DataFrame(rows), step_budget=500).set_index("seed")
    assert m.loc[0, "steps_to_solve"] == 400.0                  # cumulative steps at episode 3
    assert np.isnan(m.loc[1, "steps_to_solve"]) and np.isnan(m.loc[2, "steps_to_solve"])   # 600 > budget: censored
    assert (m["censor_at"] == 500).all() and m.loc[0, "final_100"] == 100.0


def test_iqm_comes_from_rliable_and_leaves_numpys_generator_alone():
    m = pd.DataFrame({"variant": ["a"] * 8, "seed": range(8), "final_100": 500.0 * np.arange(1, 9) / 8,
                      "steps_to_solve": np.nan, "censor_at": 1000.0})
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    t = iqm_table(m, ["a"], reps=500, seed=0).set_index("measure")
    assert np.random.random() == expected_next
    assert t.loc["final_100_normalised", "iqm"] == pytest.approx(np.mean(np.arange(3, 7) / 8))   # middle half
    assert t.loc["steps_to_solve", "iqm"] == 1000.0
    assert t.loc["final_100_normalised", "ci_low"] < t.loc["final_100_normalised", "iqm"] < t.loc["final_100_normalised", "ci_high"]
    again = iqm_table(m, ["a"], reps=500, seed=0).set_index("measure")
    pd.testing.assert_frame_equal(t, again)


def test_against_controls_finds_a_clear_winner_after_holm():
    rng = np.random.default_rng(0)
    rows = []
    for v, solve, final in (("eps0", None, 20), ("minimalrl_schedule", None, 30), ("eps0_noisynet", 20_000, 480),
                            ("eps0_redo", None, 22)):
        for s in range(10):
            rows.append({"variant": v, "seed": s, "steps_to_solve": np.nan if solve is None else solve + 100 * s,
                         "censor_at": 60_000.0, "final_100": final + rng.normal(0, 3), "episodes": 500, "env_steps": 6e4})
    t = against_controls(pd.DataFrame(rows), ["eps0", "minimalrl_schedule", "eps0_noisynet", "eps0_redo"])
    won = {(r["variant"], r["control"]) for _, r in t.iterrows() if beats(r)}
    assert ("eps0_noisynet", "eps0") in won and ("eps0_noisynet", "minimalrl_schedule") in won
    assert ("eps0_redo", "eps0") not in won
    assert (t["p_steps_holm"] >= t["p_steps"]).all()


def test_signatures_read_exploration_and_plasticity_from_the_intervals():
    row = {"action_entropy_ci_low": 0.1, "action_entropy_ci_high": 0.3, "dormant_fraction_ci_low": -0.1,
           "dormant_fraction_ci_high": 0.1, "srank_ci_low": -2, "srank_ci_high": 3, "collapsed": 0, "runs": 10,
           "p_collapsed": 0.5}
    assert signatures(row) == {"exploration"}
    row |= {"action_entropy_ci_low": -0.1, "dormant_fraction_ci_high": -0.01, "dormant_fraction_ci_low": -0.2}
    assert signatures(row) == {"plasticity"}
