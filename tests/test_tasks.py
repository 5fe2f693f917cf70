"""The tasks of notebook 04: each vectorised environment equals its reference implementation over long
rollouts, bit for bit; the task descriptions check their parameters; Q-networks and normalisation."""
import logging
import sys

import numpy as np
import pytest
import torch

from rlinit_lib.core.params import ParameterError
from rlinit_lib.smooth_reinit.tasks import TASKS, get_task, normalise, random_score

logging.getLogger().setLevel(logging.ERROR)   # minatar warns at import when seaborn is missing
try:
    import minatar  # noqa: F401
    HAS_MINATAR = True
except ImportError:
    HAS_MINATAR = False


def case(name, *rest):
    skip = pytest.mark.skipif(name.startswith("MinAtar") and not HAS_MINATAR, reason="pip install minatar")
    return pytest.param(name, *rest, marks=skip, id="-".join(map(str, (name,) + rest)))


NAMES = [case(n) for n in TASKS]


def policy(task_name, obs, rng, k):
    """Even members play a simple controller that keeps episodes long (CartPole balances, Acrobot
    pumps energy and so terminates, Breakout's paddle follows the ball and clears walls of bricks);
    odd members play uniform random actions. Every action is also random with probability 0.1-0.3."""
    n = TASKS[task_name].n_actions
    if task_name == "CartPole-v1":
        good = ((obs[:, 2] + 0.3 * obs[:, 3] + 0.01 * obs[:, 0] + 0.1 * obs[:, 1]) > 0).astype(np.int64)
        noise = 0.1
    elif task_name == "Acrobot-v1":
        good, noise = np.where(obs[:, 4] > 0, 0, 2), 0.3
    else:
        ball, paddle = obs[..., 1].any(1).argmax(1), obs[:, 9, :, 0].argmax(1)
        good, noise = np.where(ball < paddle, 1, np.where(ball > paddle, 3, 0)), 0.0
    random = rng.integers(0, n, k)
    good = np.where(rng.random(k) < noise, random, good)
    return np.where(np.arange(k) % 2 == 0, good, random)


@pytest.mark.parametrize("name,k", [case(n, 16) for n in TASKS] + [case("Acrobot-v1", 2)])   # k = 2: the scalar path
def test_vectorised_task_equals_its_reference_over_long_random_rollouts(name, k):
    """k members x 2,000 steps, each reset on termination or truncation (with a new seed, or for
    Acrobot and Breakout every other time by continuing its own stream): observations, rewards,
    terminations and truncations equal the reference environment's bit for bit (classic control:
    the float64 state too)."""
    task, rng = get_task(name), np.random.default_rng(1)
    vec, seeds = task.vec(k), [1000 + i for i in range(k)]
    refs = [task.reference(s) for s in seeds]
    obs = vec.reset(np.arange(k), seeds)
    assert all(np.array_equal(obs[i], refs[i].reset(seeds[i])) for i in range(k))
    t, ends, returns, best = np.zeros(k, dtype=np.int64), {"terminated": 0, "truncated": 0}, np.zeros(k), 0.0
    for _ in range(2000):
        action = policy(name, obs, rng, k)
        obs, reward, terminated = vec.step(action, np.ones(k, dtype=bool))   # the one step API of every task
        t += 1
        truncated = t >= (task.max_episode_steps or np.inf)
        for i, ref in enumerate(refs):
            want = ref.step(int(action[i]))
            assert np.array_equal(want[0], obs[i]), (i, t[i])
            assert (want[1], want[2], want[3]) == (reward[i], terminated[i], truncated[i]), (i, t[i])
            if name != "MinAtar-Breakout":   # and the float64 state, where one unit in the last place shows at once
                assert np.array_equal(ref.env.unwrapped.state, vec.state[i]), (i, t[i])
        returns += reward
        done = np.flatnonzero(terminated | truncated)
        ends["terminated"] += int(terminated.sum())
        ends["truncated"] += int((truncated & ~terminated).sum())
        if done.size:
            best = max(best, returns[done].max())
            new = [int(rng.integers(2**31)) if name == "CartPole-v1" or j % 2 else None for j in done]
            obs = vec.reset(done, new)
            for j, s in zip(done, new):
                assert np.array_equal(refs[j].reset(s), obs[j])
            t[done], returns[done] = 0, 0.0
    assert ends["terminated"] > k     # the rollouts cover terminations ...
    if task.max_episode_steps:
        assert ends["truncated"] > k // 4  # ... and truncations
    if name == "MinAtar-Breakout":
        assert best > 30              # a game cleared every brick, and the wall was refilled


def test_unknown_task_missing_minatar_and_bad_parameters_fail_in_one_line(monkeypatch):
    with pytest.raises(ParameterError, match=r"task must be one of 'CartPole-v1', 'Acrobot-v1', 'MinAtar-Breakout'"):
        get_task("Pong-v5")
    for bad, name in [({"budget": 0}, "budget"), ({"max_episode_steps": -1}, "max_episode_steps"),
                      ({"random_score": float("nan")}, "random_score"), ({"budgte": 5}, "budgte"),
                      ({"reference_score": 23.68}, "reference_score")]:
        with pytest.raises(ParameterError, match=name) as err:
            get_task("CartPole-v1", **bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ParameterError, match="k must be"):
        get_task("Acrobot-v1").vec(0)
    monkeypatch.setitem(sys.modules, "minatar", None)   # import minatar now raises ImportError
    with pytest.raises(ParameterError, match="needs MinAtar, which is not installed here: pip install minatar$"):
        get_task("MinAtar-Breakout")
    assert get_task("Acrobot-v1", budget=5_000, max_episode_steps=None).budget == 5_000


@pytest.mark.parametrize("name", NAMES)
def test_q_network_shape_and_normalisation(name):
    task = get_task(name)
    q = task.build_qnet()
    obs = task.reference(0).reset(0)
    x = torch.as_tensor(np.stack([obs, obs, obs]))
    assert q(x).shape == (3, task.n_actions)
    layers = [m for m in q if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert [type(m).__name__ for m in layers] == (["Conv2d", "Linear", "Linear"] if name.startswith("MinAtar")
                                                 else ["Linear", "Linear", "Linear"])
    assert layers[-1].in_features == 128 and layers[-2].out_features == 128
    if name.startswith("MinAtar"):
        assert (layers[0].out_channels, layers[0].kernel_size, layers[0].stride) == (16, (3, 3), (1, 1))
    else:
        assert layers[0].in_features == task.obs_shape[0]
    assert normalise(task.random_score, task) == 0.0 and normalise(task.reference_score, task) == 1.0
    assert np.allclose(normalise([task.random_score, task.reference_score], task), [0.0, 1.0])


@pytest.mark.parametrize("name", NAMES)
def test_random_scores_are_the_measured_ones(name):
    """TASKS' random scores are 100 episodes of uniform random actions on the reference (rounded to 0.01)."""
    task = TASKS[name]
    assert round(random_score(task, 100), 2) == task.random_score


@pytest.mark.skipif(not HAS_MINATAR, reason="pip install minatar")
def test_breakout_from_random_positions_equals_the_package():
    """Rare branches (a brick right after a strike is passed through, bricks beside walls and in the
    corners, the paddle's edge) from 64 random mid-game positions, 8 steps each, against the package;
    about a fifth of the members sit out each step (inactive: no draw, no move)."""
    from rlinit_lib.smooth_reinit.minatar_vec import BreakoutVec
    rng, k = np.random.default_rng(2), 64
    vec = BreakoutVec(k)
    vec.reset(np.arange(k), list(range(k)))
    refs = [get_task("MinAtar-Breakout").reference(s) for s in range(k)]
    vec.bricks[:] = rng.random((k, 10, 10)) < 0.5
    vec.bricks[:, 9] = False
    vec.ball_x[:], vec.ball_y[:], vec.ball_dir[:] = rng.integers(0, 10, k), rng.integers(0, 9, k), rng.integers(0, 4, k)
    vec.pos[:], vec.strike[:] = rng.integers(0, 10, k), rng.random(k) < 0.5
    vec.last_x[:], vec.last_y[:] = vec.ball_x, vec.ball_y
    for i, ref in enumerate(refs):
        e = ref.env.env
        e.brick_map = vec.bricks[i].astype(float)
        e.ball_x, e.ball_y, e.ball_dir, e.pos = (int(v[i]) for v in (vec.ball_x, vec.ball_y, vec.ball_dir, vec.pos))
        e.strike, e.last_x, e.last_y = bool(vec.strike[i]), e.ball_x, e.ball_y
    passed = 0
    for _ in range(8):
        action, before, active = rng.integers(0, 6, k), vec.bricks.sum(), rng.random(k) < 0.8
        strike = vec.strike.copy()
        obs, reward, terminated = vec.step(action, active)
        passed += int((strike & vec.strike).sum())
        for i, ref in enumerate(refs):
            want = ref.step(int(action[i])) if active[i] else (ref.env.state(), 0.0, False)
            assert np.array_equal(want[0], obs[i]) and (want[1], want[2]) == (reward[i], terminated[i]), i
        assert before - vec.bricks.sum() == reward.sum()
    assert passed > 0   # the strike rule was exercised


@pytest.mark.parametrize("dynamics,noise", [("nips", 0.0), ("book", 0.2)])
def test_acrobot_options_equal_gymnasium(dynamics, noise):
    """Gymnasium's other dynamics ("nips") and its torque noise (drawn from each member's generator)."""
    import gymnasium as gym
    from rlinit_lib.smooth_reinit.acrobot_vec import AcrobotVec
    k, rng = 4, np.random.default_rng(3)
    vec, envs = AcrobotVec(k, dynamics=dynamics, torque_noise_max=noise), [gym.make("Acrobot-v1") for _ in range(k)]
    for e in envs:
        e.unwrapped.book_or_nips, e.unwrapped.torque_noise_max = dynamics, noise
    vec.reset(np.arange(k), range(k))
    for i, e in enumerate(envs):
        e.reset(seed=i)
    for _ in range(300):
        action = rng.integers(0, 3, k)
        obs, reward, terminated = vec.step(action, np.ones(k, dtype=bool))
        for i, e in enumerate(envs):
            o, r, term, _, _ = e.step(int(action[i]))
            assert np.array_equal(e.unwrapped.state, vec.state[i]) and np.array_equal(o, obs[i])
            assert (r, term) == (reward[i], terminated[i])
    with pytest.raises(ParameterError, match="dynamics must be one of 'book', 'nips'"):
        AcrobotVec(2, dynamics="paper")
