"""DQN on CartPole-v1 with minimalRL's settings, and the smooth-reinit options.

Source: minimalRL ``dqn.py`` (seungeunrho/minimalRL) as used by "Smooth Re-Initializations":
Q-network 4-128-128-2 (ReLU), Adam lr 5e-4, gamma 0.98, replay 50,000, batch 32, training once
the buffer holds more than 2,000 transitions with 10 updates after each episode, target sync
every 20 episodes, Huber loss, rewards / 100, epsilon max(0.01, 0.08 - 0.01 * episode / 200).
Options of the source: ``epsilon`` fixed (0.0 in both of its arms), weight noise on ``fc3`` with
decay or on ``fc2`` without decay, a skip connection ``x = relu(fc2(x)) + x``, and noise in the
target network too. Two episode rules: ``standard`` (episodes end at 500 steps; solved when the
mean of the last 100 returns >= 475) and ``win`` (truncation ignored; a win is ``win_steps``
balanced steps in one episode). References from the literature, as options: a periodic reset of the
last layer and a periodic shrink-and-perturb of the whole network (both from a fresh network drawn for
that seed and episode).

Deviations: env, exploration, replay sampling and torch are all seeded from ``seed`` (the source
seeded torch only). Exploration and replay sampling draw from one NumPy generator per run (explore
test and random action in blocks of ``DRAW_BLOCK`` steps; ``Generator.choice`` without replacement
for each replay batch) instead of Python's ``random``: the same distributions, in a form that
``dqn_batched`` reproduces draw for draw, so that both paths give the same trajectory for a seed.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlinit_lib.initialisation.initialisers import INIT_METHODS, initialise
from rlinit_lib.smooth_reinit.noise import WeightNoise, shrink_and_perturb
from rlinit_lib.core.params import Config, check_choice, check_float, check_int


@dataclass
class DQNConfig(Config):
    notebook = "dqn"

    episodes: int = 1000
    lr: float = 5e-4
    gamma: float = 0.98
    buffer_limit: int = 50_000
    batch_size: int = 32
    learning_starts: int = 2000
    updates_per_episode: int = 10
    target_sync: int = 20
    epsilon: float | None = None        # None: minimalRL's schedule; a number fixes it (the source: 0.0)
    skip: bool = False
    init: str = "pytorch_default"
    init_scale: float = 1.0
    noise_layer: str | None = None      # "fc3" (last) or "fc2" (middle)
    noise_sigma: float = 1.0
    noise_decay: float = 0.5
    noise_in_target: bool = True
    reset_every: int = 0                # re-initialise fc3 every this many episodes (0: never)
    shrink_perturb_every: int = 0       # shrink-and-perturb every this many episodes (0: never)
    shrink: float = 0.8
    perturb: float = 0.2
    rule: str = "standard"              # standard | win
    win_steps: int = 100_000
    seed: int = 0

    def validate(self) -> "DQNConfig":
        check_int("episodes", self.episodes, low=1)
        check_float("lr", self.lr, low=0.0, low_open=True)
        check_float("gamma", self.gamma, low=0.0, high=1.0)
        check_int("buffer_limit", self.buffer_limit, low=self.batch_size)
        check_int("batch_size", self.batch_size, low=1)
        check_int("learning_starts", self.learning_starts, low=self.batch_size)
        check_int("updates_per_episode", self.updates_per_episode, low=0)
        check_int("target_sync", self.target_sync, low=1)
        if self.epsilon is not None:
            check_float("epsilon", self.epsilon, low=0.0, high=1.0)
        check_choice("skip", self.skip, (True, False))
        check_choice("init", self.init, INIT_METHODS)
        check_float("init_scale", self.init_scale, low=0.0, low_open=True)
        check_choice("noise_layer", self.noise_layer, (None, "fc2", "fc3"))
        check_float("noise_sigma", self.noise_sigma, low=0.0)
        check_float("noise_decay", self.noise_decay, low=0.0, high=1.0)
        check_int("reset_every", self.reset_every, low=0)
        check_int("shrink_perturb_every", self.shrink_perturb_every, low=0)
        check_float("shrink", self.shrink, low=0.0, high=1.0)
        check_float("perturb", self.perturb, low=0.0)
        check_choice("rule", self.rule, ("standard", "win"))
        check_int("win_steps", self.win_steps, low=1)
        check_int("seed", self.seed, low=0)
        return self


def qnet_forward(x: torch.Tensor, p: dict, skip: bool) -> torch.Tensor:
    """minimalRL's Q-network 4-128-128-2 (ReLU), optionally with the source's skip connection
    ``x = relu(fc2(x)) + x``, on parameters ``p`` (names as in ``QNet.named_parameters``). The one torch
    forward of one network: ``QNet`` and the batched path's tie re-check both call it."""
    x = F.relu(F.linear(x, p["fc1.weight"], p["fc1.bias"]))
    h = F.relu(F.linear(x, p["fc2.weight"], p["fc2.bias"]))
    return F.linear(h + x if skip else h, p["fc3.weight"], p["fc3.bias"])


class QNet(nn.Module):
    def __init__(self, skip: bool = False):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 128), nn.Linear(128, 128), nn.Linear(128, 2)
        self.skip = skip

    def forward(self, x):
        return qnet_forward(x, {"fc1.weight": self.fc1.weight, "fc1.bias": self.fc1.bias, "fc2.weight": self.fc2.weight,
                                "fc2.bias": self.fc2.bias, "fc3.weight": self.fc3.weight, "fc3.bias": self.fc3.bias},
                            self.skip)


def epsilon_at(cfg: DQNConfig, episode: int) -> float:
    return cfg.epsilon if cfg.epsilon is not None else max(0.01, 0.08 - 0.01 * (episode / 200))


def make_qnet(cfg: DQNConfig) -> QNet:
    q = QNet(cfg.skip)
    if cfg.init != "pytorch_default" or cfg.init_scale != 1.0:
        initialise(q, cfg.init, cfg.init_scale if cfg.init == "he_scaled" else 1.0)
    return q


DRAW_BLOCK = 256  # exploration draws are taken this many steps at a time


def run_rng(seed: int) -> np.random.Generator:
    """The generator for a run's exploration and replay sampling."""
    return np.random.default_rng((seed, 1))


def env_seed(seed: int, episode: int) -> int:
    return seed * 100_003 + episode


def fresh_qnet(cfg: DQNConfig, seed: int, episode: int) -> QNet:
    """A newly initialised Q-network for a reset or shrink-and-perturb at ``episode`` of run ``seed``;
    drawn from its own seed so that the global torch generator is left alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(env_seed(seed, episode) + 50_000)
        return make_qnet(cfg)


def reinit_due(cfg: DQNConfig, episode: int) -> tuple[bool, bool]:
    """(reset fc3, shrink-and-perturb) after this episode's updates."""
    due = lambda every: every > 0 and episode > 0 and episode % every == 0  # noqa: E731
    return due(cfg.reset_every), due(cfg.shrink_perturb_every)


def solved_now(cfg: DQNConfig, returns: list, total: float) -> bool:
    if cfg.rule == "standard":
        return len(returns) >= 100 and float(np.mean(returns[-100:])) >= 475
    return total >= cfg.win_steps


def train_dqn(cfg: DQNConfig) -> dict:
    """One seed. Returns per-episode returns and when the run was solved (None if never)."""
    cfg.validate()
    torch.manual_seed(cfg.seed)
    rng = run_rng(cfg.seed)
    env = gym.make("CartPole-v1", max_episode_steps=500 if cfg.rule == "standard" else cfg.win_steps)
    q = make_qnet(cfg)
    q_target = make_qnet(cfg)
    q_target.load_state_dict(q.state_dict())
    noises = []
    if cfg.noise_layer:
        names = [f"{cfg.noise_layer}.weight", f"{cfg.noise_layer}.bias"]
        noises.append(WeightNoise(q, names, cfg.noise_sigma, cfg.noise_decay, seed=cfg.seed))
        if cfg.noise_in_target:
            noises.append(WeightNoise(q_target, names, cfg.noise_sigma, cfg.noise_decay, seed=cfg.seed + 1))
    opt = torch.optim.Adam(q.parameters(), lr=cfg.lr)
    memory: collections.deque = collections.deque(maxlen=cfg.buffer_limit)
    returns, solved_at = [], None
    for n in range(cfg.episodes):
        s, _ = env.reset(seed=env_seed(cfg.seed, n))
        eps, total, done, t = epsilon_at(cfg, n), 0.0, False, 0
        while not done:
            if t % DRAW_BLOCK == 0:
                draws = rng.random((DRAW_BLOCK, 2))
            explore, random_action = draws[t % DRAW_BLOCK]
            with torch.no_grad():
                out = q(torch.as_tensor(s, dtype=torch.float32))
            a = int(random_action * 2) if explore < eps else int(out.argmax())
            s2, r, terminated, truncated, _ = env.step(a)
            memory.append((s, a, r / 100.0, s2, 0.0 if terminated else 1.0))
            s, total, done, t = s2, total + r, terminated or truncated, t + 1
        returns.append(total)
        if len(memory) > cfg.learning_starts:
            for _ in range(cfg.updates_per_episode):
                batch = [memory[i] for i in rng.choice(len(memory), cfg.batch_size, replace=False)]
                s_b, a_b, r_b, s2_b, m_b = (torch.as_tensor(np.array(x), dtype=torch.float32) for x in zip(*batch))
                q_a = q(s_b).gather(1, a_b.long().unsqueeze(1))
                with torch.no_grad():
                    target = r_b.unsqueeze(1) + cfg.gamma * q_target(s2_b).max(1)[0].unsqueeze(1) * m_b.unsqueeze(1)
                loss = F.smooth_l1_loss(q_a, target)
                opt.zero_grad()
                loss.backward()
                opt.step()
        reset, shrink_perturb = reinit_due(cfg, n)
        if reset or shrink_perturb:
            fresh = fresh_qnet(cfg, cfg.seed, n)
            if reset:
                with torch.no_grad():
                    q.fc3.weight.copy_(fresh.fc3.weight)
                    q.fc3.bias.copy_(fresh.fc3.bias)
            if shrink_perturb:
                shrink_and_perturb(q, fresh, cfg.shrink, cfg.perturb)
        if n % cfg.target_sync == 0 and n > 0:
            q_target.load_state_dict(q.state_dict())
        if solved_at is None and solved_now(cfg, returns, total):
            solved_at = n
            if cfg.rule == "win":
                break
    env.close()
    return {"returns": returns, "solved_at": solved_at, "config": cfg.to_dict()}
