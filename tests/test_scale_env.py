import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import rlinit_lib  # noqa: F401  (registers the environment)
from rlinit_lib.scale_search.scale_env import ScaleEnv
from rlinit_lib.children.training import TrainResult
from rlinit_lib.core.params import ParameterError


def fake(acc_of_scale, nan_above=None):
    calls = []

    def evaluator(scale, seed):
        calls.append((scale, seed))
        if nan_above is not None and scale > nan_above:
            return TrainResult(float("nan"), True)
        return TrainResult(acc_of_scale(scale), False, [1.0], [0.5], val_accuracy=acc_of_scale(scale))

    evaluator.calls = calls
    return evaluator


def test_check_env_passes_with_real_training(synthetic):
    env = ScaleEnv("synthetic", epochs=1, data=synthetic, device="cpu")
    check_env(env, skip_render_check=True)


def test_gymnasium_make_with_synthetic_data():
    env = gym.make("rlinit/ScaleEnv-v0", dataset="synthetic", epochs=1, train_subset=256, test_subset=128,
                   device="cpu")
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and obs[1] == 0.0
    obs, reward, terminated, truncated, info = env.step(np.array([1.0], np.float32))
    assert terminated and not truncated
    assert set(info) >= {"scale_factor", "accuracy", "nan_detected"}
    assert reward == pytest.approx(10 * info["val_accuracy"])   # the reward is chosen on validation, never test
    assert env.observation_space.contains(obs)


def test_spaces_follow_section_3_4():
    env = ScaleEnv("synthetic", min_scale=0.3, max_scale=1.7, evaluator=fake(lambda s: 0.5))
    assert env.action_space.shape == (1,)
    np.testing.assert_allclose(env.action_space.low, [0.3])
    np.testing.assert_allclose(env.action_space.high, [1.7])
    np.testing.assert_allclose(env.observation_space.low, [0.3, -2])
    np.testing.assert_allclose(env.observation_space.high, [1.7, 10])


def test_reward_is_ten_times_accuracy_and_action_is_clipped():
    ev = fake(lambda s: 0.25 * s)
    env = ScaleEnv("synthetic", min_scale=0.5, max_scale=1.5, evaluator=ev)
    env.reset(seed=1)
    obs, reward, *_ , info = env.step([9.0])
    assert info["scale_factor"] == 1.5 and ev.calls[-1][0] == 1.5
    assert reward == pytest.approx(10 * 0.25 * 1.5)
    np.testing.assert_allclose(obs, [1.5, reward], rtol=1e-6)


def test_nan_training_pays_minus_two():
    env = ScaleEnv("synthetic", evaluator=fake(lambda s: 0.7, nan_above=1.0))
    env.reset(seed=0)
    obs, reward, terminated, _, info = env.step([1.5])
    assert reward == -2.0 and info["nan_detected"] and terminated
    assert env.observation_space.contains(obs)


def test_reset_draws_scale_uniformly_and_zero_reward():
    env = ScaleEnv("synthetic", min_scale=0.3, max_scale=1.7, evaluator=fake(lambda s: 0.5))
    scales = np.array([env.reset(seed=i)[0][0] for i in range(400)])
    assert scales.min() >= 0.3 and scales.max() <= 1.7
    assert abs(scales.mean() - 1.0) < 0.1 and scales.std() == pytest.approx(1.4 / np.sqrt(12), rel=0.15)
    assert env.reset(seed=3)[0][1] == 0.0


def test_child_seed_is_reproducible_from_reset_seed_or_fixed():
    ev = fake(lambda s: 0.5)
    env = ScaleEnv("synthetic", evaluator=ev)
    env.reset(seed=7); env.step([1.0])
    env.reset(seed=7); env.step([1.0])
    assert ev.calls[0][1] == ev.calls[1][1]
    env = ScaleEnv("synthetic", evaluator=ev, child_seed=11)
    env.reset(seed=1); env.step([1.0])
    assert ev.calls[-1][1] == 11


def test_bad_range_fails_before_any_training():
    with pytest.raises(ParameterError, match=r"^min_scale must be < max_scale"):
        ScaleEnv("synthetic", min_scale=1.5, max_scale=1.0)
    with pytest.raises(ParameterError, match=r"^dataset must be one of 'cifar10', 'fashion_mnist', 'synthetic'"):
        ScaleEnv("imagenet")
