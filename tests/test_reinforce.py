import pytest
import torch

from rlinit_lib.scale_search.reinforce import ReinforceAgent
from rlinit_lib.core.params import ParameterError

PEAK = 1.5


def toy_reward(s):
    return 10 - 20 * (s - PEAK) ** 2


def run(agent, episodes):
    for _ in range(episodes):
        s, info = agent.act([1.0, 0.0])
        agent.observe(toy_reward(s))
        agent.maybe_update()
    return info


def test_actions_stay_in_range_even_for_extreme_observations():
    agent = ReinforceAgent(0.3, 1.7, seed=0)
    for obs in ([0.3, -2.0], [1.7, 10.0], [1e6, -1e6]):
        for _ in range(50):
            s, _ = agent.act(obs)
            agent.observe(0.0)
            assert 0.3 <= s <= 1.7


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_updates_move_policy_mean_toward_toy_peak(seed):
    agent = ReinforceAgent(0.3, 1.7, update_every=8, seed=seed)
    start = agent.act([1.0, 0.0])[1]["policy_mean_scale"]
    agent.observe(0.0)
    agent.episodes.clear()
    info = run(agent, 8 * 60)  # 60 updates
    assert abs(info["policy_mean_scale"] - PEAK) < 0.5 * abs(start - PEAK)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_episode_updates_collapse_the_policy_std(seed):
    """The dissertation's setting (one always-positive return per update, no baseline):
    the std shrinks by orders of magnitude whatever the reward says (a finding, noted in 01_search)."""
    agent = ReinforceAgent(0.3, 1.7, update_every=1, seed=seed)
    first = agent.act([1.0, 0.0])[1]["policy_std"]
    agent.observe(5.0)
    info = run(agent, 400)
    assert info["policy_std"] < 0.05 * first


def test_state_dict_roundtrip_continues_identically():
    a = ReinforceAgent(update_every=3, seed=4)
    run(a, 7)  # two updates done, one episode still pending
    b = ReinforceAgent(update_every=3, seed=99)
    b.load_state_dict(a.state_dict())
    za, zb = [], []
    for agent, zs in ((a, za), (b, zb)):
        for _ in range(5):  # crosses the next update
            s, info = agent.act([1.0, 0.0])
            zs.append(info["z"])
            agent.observe(toy_reward(s))
            agent.maybe_update()
    assert za == zb
    for p, q in zip(a.policy.parameters(), b.policy.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_bad_agent_parameters():
    with pytest.raises(ParameterError, match=r"^update_every must be an integer >= 1 \(got 0\)$"):
        ReinforceAgent(update_every=0)
    with pytest.raises(ParameterError, match=r"^gamma must be a number >= 0 and <= 1"):
        ReinforceAgent(gamma=1.5)
