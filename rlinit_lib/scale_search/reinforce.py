"""REINFORCE agent that proposes initialisation scales.

Source: the dissertation, Sec. 3.5. Policy: MLP 2->64->64->2 (ReLU) mapping the
observation (previous scale, previous reward) to the mean and log-std of a Normal;
log-std clamped to [-20, 2]; a sample ``z`` is squashed by a sigmoid to
``[min_scale, max_scale]``. Adam lr 1e-3, discount 0.99, returns normalised when an
update holds more than one reward, gradient-norm clip 1.0. ``update_every=1``
(one episode per update) is the dissertation's setting; there the single return is
always positive and unnormalised, so the update has no baseline.

Deviations: sampling uses the agent's own seeded generator, and an update recomputes
the log-probabilities of the stored (observation, z) pairs with the unchanged policy
(the same gradient the dissertation's stored graph gives) so the agent's whole state
can be saved and a run resumed. Returns are discounted within an episode, never across
episodes.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.distributions import Normal

from rlinit_lib.core.params import check_choice, check_float, check_int, check_scale_range

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class PolicyNet(nn.Module):
    def __init__(self, obs_dim: int = 2, hidden: int = 64):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                  nn.Linear(hidden, 2))

    def forward(self, obs: torch.Tensor):
        mean, log_std = self.body(obs).unbind(-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


class ReinforceAgent:
    """Sigmoid-squashed Gaussian policy over one scale, trained by REINFORCE."""

    def __init__(self, min_scale: float = 0.3, max_scale: float = 1.7, *, lr: float = 1e-3,
                 gamma: float = 0.99, update_every: int = 1, grad_clip: float = 1.0, seed: int = 0,
                 baseline: str = "none", baseline_decay: float = 0.9):
        check_scale_range(min_scale, max_scale)
        check_float("agent_lr", lr, low=0.0, low_open=True)
        check_float("gamma", gamma, low=0.0, high=1.0)
        check_int("update_every", update_every, low=1)
        check_float("grad_clip", grad_clip, low=0.0, low_open=True)
        check_choice("baseline", baseline, ("none", "running_mean"))
        check_float("baseline_decay", baseline_decay, low=0.0, high=1.0, high_open=True)
        self.baseline, self.baseline_decay, self.baseline_value = baseline, baseline_decay, None
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.gamma, self.update_every, self.grad_clip = gamma, update_every, grad_clip
        self.generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = PolicyNet()
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self.episodes: list[list[tuple[list[float], float, float]]] = []  # [(obs, z, reward), ...] per episode
        self._current: list = []
        self._pending = None

    def squash(self, z: torch.Tensor | float) -> torch.Tensor:
        z = torch.as_tensor(z, dtype=torch.float32)
        return self.min_scale + (self.max_scale - self.min_scale) * torch.sigmoid(z)

    @torch.no_grad()
    def act(self, obs) -> tuple[float, dict]:
        """Sample a scale for ``obs``; returns (scale, {obs, z, policy_mean_scale, policy_std}).

        Several actions may be drawn before their rewards are known (batched evaluation);
        each is stored with :meth:`record`, or the last one with :meth:`observe`."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32).reshape(-1)
        mean, log_std = self.policy(obs_t)
        std = log_std.exp()
        z = mean + std * torch.randn((), generator=self.generator)
        self._pending = (obs_t.tolist(), float(z))
        return float(self.squash(z)), {"obs": obs_t.tolist(), "z": float(z),
                                       "policy_mean_scale": float(self.squash(mean)), "policy_std": float(std)}

    def observe(self, reward: float, done: bool = True) -> None:
        """Record the reward of the last action; ``done`` closes the episode."""
        if self._pending is None:
            raise RuntimeError("observe() called before act()")
        obs, z = self._pending
        self._pending = None
        self.record(obs, z, reward, done)

    def record(self, obs, z: float, reward: float, done: bool = True) -> None:
        """Store one transition (observation, pre-squash sample z, reward)."""
        self._current.append((list(obs), float(z), float(reward)))
        if done:
            self.episodes.append(self._current)
            self._current = []

    def maybe_update(self) -> float | None:
        """Update once ``update_every`` episodes are stored; returns the policy loss or None."""
        if len(self.episodes) < self.update_every:
            return None
        return self.update()

    def update(self) -> float:
        steps = [step for ep in self.episodes for step in ep]
        returns = []
        for ep in self.episodes:
            g, ep_returns = 0.0, []
            for _, _, r in reversed(ep):
                g = r + self.gamma * g
                ep_returns.append(g)
            returns.extend(reversed(ep_returns))
        returns_t = torch.tensor(returns, dtype=torch.float32)
        if self.baseline == "running_mean":  # extension: advantage against a running mean of returns
            mean_return = float(returns_t.mean())
            b = mean_return if self.baseline_value is None else self.baseline_value
            returns_t = returns_t - b
            self.baseline_value = self.baseline_decay * b + (1 - self.baseline_decay) * mean_return
        if len(returns_t) > 1:
            returns_t = (returns_t - returns_t.mean()) / (returns_t.std() + 1e-8)
        obs = torch.tensor([s[0] for s in steps], dtype=torch.float32)
        z = torch.tensor([s[1] for s in steps], dtype=torch.float32)
        mean, log_std = self.policy(obs)
        log_prob = Normal(mean, log_std.exp()).log_prob(z)
        loss = -(log_prob * returns_t).sum()
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.policy.parameters(), self.grad_clip)
        self.optimizer.step()
        self.episodes = []
        return float(loss.item()) if math.isfinite(loss.item()) else float("nan")

    def state_dict(self) -> dict:
        """A detached copy (Adam's own state_dict shares its moment tensors with the live optimizer)."""
        return copy.deepcopy({"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                              "generator": self.generator.get_state(), "episodes": self.episodes,
                              "baseline_value": self.baseline_value})

    def load_state_dict(self, state: dict) -> None:
        state = copy.deepcopy(state)
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.episodes = state["episodes"]
        self.baseline_value = state.get("baseline_value")
