"""The tasks of notebook 04: one description per task, for the faithful and the batched DQN.

A :class:`Task` says what a run needs to know about its environment: the observation shape and the
number of actions, the vectorised environment for K runs at once (``vec(k)``: ``cartpole_vec``,
``acrobot_vec``, ``minatar_vec``), the reference implementation it equals step for step
(``reference(seed)``: Gymnasium's, the ``minatar`` package's), the episode limit, the default budget
in environment steps, the scores that normalise a return (random -> 0, reference -> 1, as rliable's
aggregates expect; Agarwal et al. 2021), and the Q-network (``qnet_layers``, ``build_qnet``).

Q-networks: minimalRL's MLP (obs -> 128 -> 128 -> actions, ReLU; seungeunrho/minimalRL ``dqn.py``)
for classic control; the MinAtar paper's network for MinAtar (Young & Tian 2019, ``examples/dqn.py``:
one 3x3 convolution with 16 filters, stride 1, ReLU, flatten, 128 units, ReLU, one output per action),
on the observation's channels first (10x10x4 -> 4x10x10, as that example permutes it). Both use
PyTorch's default initialisation here; the init arms re-initialise the returned module.

``get_task(name, **overrides)`` checks the name and every override in one line before any work, and
stops with one line saying ``pip install minatar`` where a MinAtar task is asked for without the package.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from rlinit_lib.core.params import ParameterError, check_choice, check_float, check_int, check_known_names

MINATAR_INSTALL = "pip install minatar"


@dataclass(frozen=True)
class Task:
    name: str
    obs_shape: tuple
    n_actions: int
    max_episode_steps: int | None   # truncation (Gymnasium's TimeLimit); None: episodes end only by termination
    budget: int                     # default environment steps per run
    random_score: float             # mean return of uniform random actions
    reference_score: float          # a reference agent's return (sources in TASKS)
    qnet_layers: tuple              # ("linear", in, out) / ("conv", in_channels, filters, kernel)

    def vec(self, k: int):
        """The vectorised environment for ``k`` runs: ``reset(members, seeds) -> obs`` and ``step(action, active)
        -> (obs, reward, terminated)``, the one API of every task (CartPole's reward: 1.0 per active step)."""
        if self.name == "CartPole-v1":
            from rlinit_lib.smooth_reinit.cartpole_vec import CartPoleVec
            return CartPoleVec(check_int("k", k, low=1))
        if self.name == "Acrobot-v1":
            from rlinit_lib.smooth_reinit.acrobot_vec import AcrobotVec
            return AcrobotVec(k)
        from rlinit_lib.smooth_reinit.minatar_vec import BreakoutVec
        return BreakoutVec(k)

    def reference(self, seed: int | None = None) -> "ReferenceEnv":
        """The reference implementation, reset with ``seed``."""
        env = ReferenceEnv(self)
        env.reset(seed)
        return env

    @property
    def conv(self) -> bool:
        """Whether the Q-network's first layer is a convolution (MinAtar)."""
        return self.qnet_layers[0][0] == "conv"

    @property
    def obs_dim(self) -> int:
        """Numbers per observation (a replay row holds the observation flattened)."""
        return int(np.prod(self.obs_shape))

    def build_qnet(self) -> nn.Module:
        """The task's Q-network (PyTorch default initialisation) as an ``nn.Sequential``: input a batch of
        observations. The DQN builds the same layers, drawn in the same order, as ``dqn.QNet``."""
        layers: list[nn.Module] = []
        if self.conv:
            layers.append(ChannelsFirst())
        for i, spec in enumerate(self.qnet_layers):
            layers.append(make_layer(spec))
            layers += [nn.ReLU()] + ([nn.Flatten()] if spec[0] == "conv" else []) if i < len(self.qnet_layers) - 1 else []
        return nn.Sequential(*layers)

    def normalise(self, score):
        return normalise(score, self)


def make_layer(spec: tuple) -> nn.Module:
    """One layer of ``Task.qnet_layers``: ``("linear", in, out)`` or ``("conv", channels, filters, kernel)``."""
    if spec[0] == "conv":
        return nn.Conv2d(spec[1], spec[2], kernel_size=spec[3], stride=1)
    return nn.Linear(spec[1], spec[2])


class ChannelsFirst(nn.Module):
    """[B, H, W, C] bool or float observations -> float [B, C, H, W], as the MinAtar example's ``get_state``."""

    def forward(self, x):
        return x.permute(0, 3, 1, 2).float()


def normalise(score, task: Task):
    """``(score - random) / (reference - random)``: random play -> 0, the reference agent -> 1."""
    return (np.asarray(score, dtype=np.float64) - task.random_score) / (task.reference_score - task.random_score)


class ReferenceEnv:
    """Gymnasium's or the ``minatar`` package's environment behind one shape:
    ``reset(seed=None) -> obs``, ``step(action) -> (obs, reward, terminated, truncated)``; ``obs`` the latest
    observation. Episodes are truncated at ``task.max_episode_steps`` (None: never)."""

    def __init__(self, task: Task):
        self.task, self.t, self.minatar, self.obs = task, 0, task.name.startswith("MinAtar-"), None
        if self.minatar:
            from minatar import Environment
            self.env = Environment(task.name.removeprefix("MinAtar-").lower())   # defaults: sticky 0.1, ramping
        else:
            import gymnasium as gym
            # Gymnasium's TimeLimit: 500 steps for both classic tasks by default
            self.env = gym.make(task.name, max_episode_steps=task.max_episode_steps or 10**12)

    def reset(self, seed: int | None = None):
        self.t = 0
        if not self.minatar:
            self.obs = self.env.reset(seed=seed)[0]
            return self.obs
        if seed is not None:
            self.env.seed(seed % 2**32)   # NumPy's RandomState takes 32-bit seeds
        self.env.reset()
        self.obs = self.env.state()
        return self.obs

    def step(self, action: int):
        self.t += 1
        if not self.minatar:
            self.obs, reward, terminated, truncated, _ = self.env.step(int(action))
            return self.obs, float(reward), bool(terminated), bool(truncated)
        reward, terminated = self.env.act(int(action))
        limit = self.task.max_episode_steps
        self.obs = self.env.state()
        return self.obs, float(reward), bool(terminated), limit is not None and self.t >= limit


# Scores. Random: the mean return of 100 episodes of uniform random actions, measured here
# (tests/test_tasks.py, seeds 0..99 of the reference environment, each its own episode).
# Reference: CartPole-v1 and Acrobot-v1: Gymnasium's registered ``reward_threshold`` (475 and -100),
# the return at which each counts as solved; for Acrobot, CleanRL's DQN reaches -96.8 +- 21.9
# (huggingface.co/cleanrl/Acrobot-v1-dqn-seed1) and rl-baselines3-zoo's -72.1 +- 6.4
# (huggingface.co/sb3/dqn-Acrobot-v1). MinAtar Breakout: Young & Tian (2019), DQN's return
# (moving average over 100 episodes) levels off at about 10 from 1M to 5M frames (the paper's learning
# curves, img/learning_curves.gif in github.com/kenjyoung/MinAtar; read off the figure). Its README gives
# 0.5 +- 0.02 for random play (1,000 episodes of examples/random_play.py); we measure 0.59.
# Budgets: CartPole 100,000 steps (issue 26's scale target); Acrobot 100,000 (rl-baselines3-zoo's DQN
# n_timesteps); Breakout 500,000 (the paper's DQN is near its final return by then; the paper trains 5M).
# Episode limits: 500 for both classic tasks (Gymnasium's registration); MinAtar: none, as in the
# paper's examples/dqn.py (an episode ends when the ball is lost; a limit of 10,000, as gym_minatar
# registers, is a parameter away).


def mlp_layers(obs: int, n_actions: int) -> tuple:
    """minimalRL's Q-network: obs -> 128 -> 128 -> actions."""
    return ("linear", obs, 128), ("linear", 128, 128), ("linear", 128, n_actions)


TASKS: dict[str, Task] = {
    "CartPole-v1": Task("CartPole-v1", (4,), 2, 500, 100_000, 23.68, 475.0, mlp_layers(4, 2)),
    "Acrobot-v1": Task("Acrobot-v1", (6,), 3, 500, 100_000, -497.08, -100.0, mlp_layers(6, 3)),
    "MinAtar-Breakout": Task("MinAtar-Breakout", (10, 10, 4), 6, None, 500_000, 0.59, 10.0,
                             (("conv", 4, 16, 3), ("linear", 16 * 8 * 8, 128), ("linear", 128, 6))),
}
OVERRIDABLE = ("budget", "max_episode_steps", "random_score", "reference_score")


def require_minatar(name: str) -> None:
    try:
        import minatar  # noqa: F401
    except ImportError:
        raise ParameterError(f"task {name!r} needs MinAtar, which is not installed here: {MINATAR_INSTALL}") from None


def get_task(name: Any, **overrides) -> Task:
    """The task ``name``, with any of ``budget``, ``max_episode_steps``, ``random_score``,
    ``reference_score`` changed; every value is checked before any work."""
    check_choice("task", name, list(TASKS))
    check_known_names(f"task {name!r}", overrides, OVERRIDABLE)
    if name.startswith("MinAtar-"):
        require_minatar(name)
    checked: dict[str, Any] = {}
    if "budget" in overrides:
        checked["budget"] = check_int("budget", overrides["budget"], low=1)
    if "max_episode_steps" in overrides and overrides["max_episode_steps"] is not None:
        checked["max_episode_steps"] = check_int("max_episode_steps", overrides["max_episode_steps"], low=1)
    elif "max_episode_steps" in overrides:
        checked["max_episode_steps"] = None
    for key in ("random_score", "reference_score"):
        if key in overrides:
            checked[key] = check_float(key, overrides[key])
    task = dataclasses.replace(TASKS[name], **checked)
    if task.reference_score == task.random_score:
        raise ParameterError(f"reference_score must differ from random_score (both {task.random_score:g})")
    return task


def random_score(task: Task, episodes: int = 100) -> float:
    """The mean return of ``episodes`` episodes of uniform random actions on the reference environment
    (episode ``i`` reset with seed ``i``, actions from ``default_rng(0)``); how TASKS' random scores were measured."""
    rng, returns = np.random.default_rng(0), []
    for i in range(check_int("episodes", episodes, low=1)):
        env, total, done = task.reference(i), 0.0, False
        while not done:
            _, reward, terminated, truncated = env.step(int(rng.integers(task.n_actions)))
            total += reward
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


__all__ = ["Task", "TASKS", "get_task", "normalise", "random_score", "ReferenceEnv", "MINATAR_INSTALL"]
