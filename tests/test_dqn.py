import numpy as np
import pytest

from rlinit_lib.smooth_reinit.dqn import DQNConfig, QNet, epsilon_at, make_qnet, train_dqn
from rlinit_lib.core.params import ParameterError


def test_epsilon_schedule_follows_minimalrl_and_can_be_fixed():
    cfg = DQNConfig()
    assert epsilon_at(cfg, 0) == 0.08 and epsilon_at(cfg, 200) == pytest.approx(0.07)
    assert epsilon_at(cfg, 1400) == pytest.approx(0.01) and epsilon_at(cfg, 5000) == 0.01
    assert epsilon_at(DQNConfig(epsilon=0.0), 10) == 0.0


def test_qnet_shapes_skip_and_init():
    import torch

    assert QNet()(torch.zeros(5, 4)).shape == (5, 2)
    assert QNet(skip=True)(torch.zeros(5, 4)).shape == (5, 2)
    he = make_qnet(DQNConfig(init="he_scaled", init_scale=2.0))
    assert he.fc2.weight.std().item() == pytest.approx(2.0 * np.sqrt(2 / 128), rel=0.05)
    assert he.fc2.bias.abs().max().item() == 0


def test_same_seed_same_returns_and_noise_changes_the_run():
    cfg = dict(episodes=12, learning_starts=100, seed=3)
    a, b = train_dqn(DQNConfig(**cfg)), train_dqn(DQNConfig(**cfg))
    assert a["returns"] == b["returns"] and len(a["returns"]) == 12
    noisy = train_dqn(DQNConfig(**cfg, noise_layer="fc3", epsilon=0.0))
    assert noisy["returns"] != a["returns"]


def test_dqn_learns_cartpole():
    """minimalRL's settings, one seed, 400 episodes (~35 s here): the greedy untrained net first
    drops to ~10-step episodes, then learning lifts the returns far above that."""
    r = np.array(train_dqn(DQNConfig(episodes=400, seed=0))["returns"])
    early, late = r[50:150].mean(), r[-100:].mean()
    assert late > 100 and late > 4 * early


def test_bad_dqn_parameters():
    with pytest.raises(ParameterError, match=r"^noise_layer must be one of None, 'fc2', 'fc3' \(got 'fc1'\)$"):
        DQNConfig(noise_layer="fc1").validate()
    with pytest.raises(ParameterError, match=r"^rule must be one of 'standard', 'win'"):
        DQNConfig(rule="timeout").validate()
    for field, value, message in (   # declarative rules: one line naming the field
            ("episodes", 0, r"episodes must be an integer >= 1 \(got 0\)"),
            ("gamma", 1.5, r"gamma must be a number >= 0 and <= 1 \(got 1\.5\)"),
            ("epsilon", -0.1, r"epsilon must be a number >= 0 and <= 1 \(got -0\.1\)"),
            ("init", "orthogonal", r"init must be one of 'he_scaled', 'xavier_uniform', 'pytorch_default' \(got 'orthogonal'\)"),
            ("skip", "yes", r"skip must be one of True, False \(got 'yes'\)"),
            ("redo_tau", 0.0, r"redo_tau must be a number > 0 and < 1 \(got 0\.0\)"),
            ("buffer_limit", 16, r"buffer_limit must be an integer >= 32 \(batch_size\) \(got 16\)")):
        with pytest.raises(ParameterError, match=f"^{message}$"):
            DQNConfig(**{field: value}).validate()
    with pytest.raises(ParameterError, match=r"^noisy_net must not be combined with noise_layer"):
        DQNConfig(noisy_net=True, redo_every=5).validate()
    with pytest.raises(ParameterError, match=r"^param_noise must not be combined with noise_layer$"):
        DQNConfig(param_noise=True, noise_layer="fc3").validate()
