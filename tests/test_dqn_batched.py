from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rlinit_lib.smooth_reinit.cartpole_vec import CartPoleVec
from rlinit_lib.smooth_reinit.dqn import DQNConfig, QNet, train_dqn
from rlinit_lib.smooth_reinit.dqn_batched import StackedAdam, flatten, huber_gradient, train_dqn_batched, unflatten
from rlinit_lib.core.params import ParameterError


@pytest.mark.parametrize("k", [2, 6])   # two or fewer active members take the scalar path
def test_vectorised_cartpole_is_gymnasium_bit_for_bit(k):
    rng = np.random.default_rng(0)
    envs = [gym.make("CartPole-v1", max_episode_steps=10_000) for _ in range(k)]
    ref = np.stack([e.reset(seed=40 + i)[0] for i, e in enumerate(envs)])
    vec = CartPoleVec(k)
    obs = vec.reset(np.arange(k), [40 + i for i in range(k)])
    assert np.array_equal(obs, ref)
    active, steps = np.ones(k, dtype=bool), 0
    for _ in range(600):   # a noisy balancing controller keeps most poles up for hundreds of steps
        action = ((obs[:, 2] + 0.3 * obs[:, 3] + 0.01 * obs[:, 0] + 0.1 * obs[:, 1]) > 0).astype(np.int64)
        action = np.where(rng.random(k) < 0.1, 1 - action, action)
        obs, terminated = vec.step(action, active)
        for i in np.flatnonzero(active):
            o, r, term, _, _ = envs[i].step(int(action[i]))
            assert np.array_equal(o, obs[i]) and term == terminated[i] and r == 1.0
            steps += 1
        active &= ~terminated
    assert steps > 250 * k


def test_hand_written_gradient_and_stacked_adam_match_autograd_and_torch_adam():
    """Runs at different Adam steps, with and without the skip connection, targets on both sides of
    the Huber kink: the parameter table stays bit for bit the one-network parameters."""
    torch.manual_seed(0)
    nets = [QNet(skip=i == 1) for i in range(3)]
    opts = [torch.optim.Adam(q.parameters(), lr=5e-4) for q in nets]
    flat, shapes = flatten(nets)
    adam = StackedAdam(flat, 5e-4)
    skip = torch.tensor([False, True, False]).view(-1, 1, 1)
    for it in range(30):
        ks = np.arange(3) if it % 3 else np.array([0, 2])      # run 1 skips every third update
        x, a, y = torch.randn(3, 32, 4), torch.randint(0, 2, (3, 32, 1)), torch.randn(3, 32, 1)
        for k in ks:
            loss = F.smooth_l1_loss(nets[k](x[k]).gather(1, a[k]), y[k])
            opts[k].zero_grad()
            loss.backward()
            opts[k].step()
        sel = torch.as_tensor(ks)
        adam.step(ks, huber_gradient(unflatten(flat[sel], shapes), x[sel], a[sel], y[sel], skip[sel]))
    assert list(adam.steps) == [30, 20, 30]
    assert torch.equal(flat, flatten(nets)[0])   # bit for bit


def test_batched_runs_reproduce_the_faithful_path_exactly():
    """Mixed variants in one batch, with learning, noise, skip, reset, shrink-and-perturb, a replay
    buffer that wraps around, and the win rule: every run's returns equal train_dqn's."""
    base = dict(episodes=30, learning_starts=150, buffer_limit=400, seed=0)
    runs = [DQNConfig(**base),
            DQNConfig(**base | {"seed": 1, "epsilon": 0.0, "noise_layer": "fc3", "noise_decay": 0.5}),
            DQNConfig(**base | {"seed": 2, "epsilon": 0.3, "skip": True, "noise_layer": "fc2", "noise_decay": 1.0,
                                "noise_sigma": 0.1, "noise_in_target": False}),
            DQNConfig(**base | {"seed": 3, "init": "he_scaled", "init_scale": 1.25, "reset_every": 7,
                                "shrink_perturb_every": 11}),
            DQNConfig(**base | {"seed": 4, "init": "xavier_uniform", "rule": "win", "win_steps": 30})]
    batched = train_dqn_batched(runs)
    for run, got in zip(runs, batched):
        want = train_dqn(run)
        assert got["returns"] == want["returns"] and got["solved_at"] == want["solved_at"], run
    assert len(batched[4]["returns"]) < 30  # the win rule stopped that run early
    assert sum(batched[0]["returns"]) > 30 * 9


def test_a_run_playing_alone_reproduces_the_faithful_path():
    """A batch of one always takes the scalar loop (``play_alone``): with noise, skip and exploration."""
    base = dict(episodes=25, learning_starts=120, seed=5)
    for run in (DQNConfig(**base | {"epsilon": 0.0, "noise_layer": "fc3", "noise_decay": 0.5}),
                DQNConfig(**base | {"epsilon": 0.3, "skip": True, "noise_layer": "fc2", "noise_decay": 1.0,
                                    "noise_sigma": 0.1})):
        got, want = train_dqn_batched([run])[0], train_dqn(run)
        assert got["returns"] == want["returns"] and sum(got["returns"]) > 25 * 8


def test_wait_fraction_changes_the_schedule_not_the_results():
    runs = [DQNConfig(episodes=25, learning_starts=100, seed=s, epsilon=0.2) for s in range(4)]
    a = train_dqn_batched(runs, wait_fraction=1.0)
    b = train_dqn_batched(runs, wait_fraction=0.3)
    assert [r["returns"] for r in a] == [r["returns"] for r in b]


def test_bad_batched_arguments():
    with pytest.raises(ParameterError, match=r"^runs must share lr to be batched \(got \[0\.0001, 0\.0005\]\)$"):
        train_dqn_batched([DQNConfig(), DQNConfig(lr=1e-4)])
    with pytest.raises(ParameterError, match=r"^wait_fraction must be a number > 0 and <= 1 \(got 0\)$"):
        train_dqn_batched([DQNConfig()], wait_fraction=0)
    with pytest.raises(ParameterError, match=r"^runs must be a non-empty list of DQNConfig"):
        train_dqn_batched([])
    with pytest.raises(ParameterError, match=r"^learning_starts must be an integer >= 32 \(got 10\)$"):
        train_dqn_batched([replace(DQNConfig(), learning_starts=10)])


def test_greedy_actions_equal_the_one_network_argmax_even_at_near_ties(monkeypatch):
    import rlinit_lib.smooth_reinit.dqn_batched as db

    torch.manual_seed(0)
    nets = [QNet(skip=k % 2 == 1) for k in range(40)]
    with torch.no_grad():
        for q in nets:   # two almost equal output rows: Q-values a few ulps apart
            q.fc3.weight[1] = q.fc3.weight[0] * (1 + 1e-7 * torch.randn(128))
            q.fc3.bias[1] = q.fc3.bias[0]
    flat, shapes = flatten(nets)
    P, skip = unflatten(flat, shapes), torch.tensor([q.skip for q in nets]).view(-1, 1, 1)
    obs = torch.randn(200, 40, 4)
    with torch.no_grad():
        want = np.array([[int(q(o[k]).argmax()) for k, q in enumerate(nets)] for o in obs])
        for host in (True, False):   # NumPy's products (CPU) and torch's (the path other devices take)
            policy = db.GreedyPolicy(P, skip, host=host)
            assert np.array_equal([policy(o.numpy(), np.arange(40)) for o in obs], want)
            for live in (np.array([3]), np.array([8, 31])):   # few runs: one network at a time on the host
                assert np.array_equal([policy(o.numpy(), live)[live] for o in obs], want[:, live])
            if host:   # a run playing alone (host only)
                assert all(policy.act(o[k].numpy(), k) == want[i, k] for i, o in enumerate(obs) for k in (0, 7))
        monkeypatch.setattr(db, "TIE", 0.0)      # without the re-check the batched product alone decides
        assert not np.array_equal([policy(o.numpy(), np.arange(40)) for o in obs], want)
