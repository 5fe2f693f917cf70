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
that seed and episode). Exploration and plasticity methods, on this path only (``exploration``,
``plasticity``): NoisyNet (``noisy_net``), adaptive parameter-space noise (``param_noise``), ReDo
(``redo_every`` updates, ``redo_tau``) and soft shrink-and-perturb (``soft_sp_alpha`` after every update).
``step_budget`` ends a run after the episode in which it reached that many environment steps;
``diag_every`` records ``plasticity.diagnostics`` on a fixed batch of states every that many episodes
(through a functional forward, so noise hooks neither fire nor advance).

Deviations: every random stream of a run is seeded, each from its own child of the run's seed
(``core.runtime.stream_seed(seed, purpose)``: ``init``, ``env``, ``exploration``, ``replay``,
``weight_noise``, ``target_noise``, ``reinit_net``, ``redo_net``, ...; the source seeded torch only), so no two
purposes share draws and run ``s`` shares none with run ``s + 1``. Exploration and replay sampling draw from
NumPy generators (explore test and random action in blocks of ``DRAW_BLOCK`` steps; ``Generator.choice``
without replacement for each replay batch) instead of Python's ``random``: the same distributions, in a form
that ``dqn_batched`` reproduces draw for draw, so that both paths give the same trajectory for a seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlinit_lib.core.params import Config, ParameterError, check_choice, check_float, check_int
from rlinit_lib.core.runtime import stream_seed
from rlinit_lib.initialisation.initialisers import INIT_METHODS, initialise
from rlinit_lib.smooth_reinit.exploration import NoisyQNet, ParameterNoise, epsilon_threshold, policy_distance
from rlinit_lib.smooth_reinit.noise import WeightNoise, shrink_and_perturb
from rlinit_lib.smooth_reinit.plasticity import diagnostics, probe_states, redo, soft_shrink_perturb


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
    noisy_net: bool = False             # NoisyNet: noisy fc2 and fc3 (use with epsilon 0)
    noisy_sigma0: float = 0.5
    param_noise: bool = False           # adaptive parameter-space noise, one perturbed copy per episode
    param_noise_sigma: float = 0.01     # its starting sigma
    param_noise_alpha: float = 1.01
    param_noise_every: int = 50         # environment steps between adaptations
    redo_every: int = 0                 # ReDo every this many updates (0: never)
    redo_tau: float = 0.025
    soft_sp_alpha: float = 0.0          # soft shrink-and-perturb after every update (0: never)
    step_budget: int = 0                # end after the episode that reaches this many env steps (0: no budget)
    diag_every: int = 0                 # diagnostics every this many episodes (0: never)
    diag_tau: float = 0.025             # dormant threshold of the diagnostics
    seed: int = 0

    FAITHFUL_ONLY = ("noisy_net", "param_noise", "redo_every", "soft_sp_alpha")   # options dqn_batched lacks

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
        check_choice("noisy_net", self.noisy_net, (True, False))
        check_float("noisy_sigma0", self.noisy_sigma0, low=0.0)
        check_choice("param_noise", self.param_noise, (True, False))
        check_float("param_noise_sigma", self.param_noise_sigma, low=0.0, low_open=True)
        check_float("param_noise_alpha", self.param_noise_alpha, low=1.0, low_open=True)
        check_int("param_noise_every", self.param_noise_every, low=1)
        check_int("redo_every", self.redo_every, low=0)
        for name in ("redo_tau", "diag_tau"):
            check_float(name, getattr(self, name), low=0.0, high=1.0, low_open=True, high_open=True)
        check_float("soft_sp_alpha", self.soft_sp_alpha, low=0.0, high=1.0)
        check_int("step_budget", self.step_budget, low=0)
        check_int("diag_every", self.diag_every, low=0)
        if self.noisy_net and (self.noise_layer or self.skip or self.param_noise):
            raise ParameterError("noisy_net must not be combined with noise_layer, skip or param_noise")
        if self.soft_sp_alpha and self.init != "pytorch_default":
            raise ParameterError(f"soft_sp_alpha needs init='pytorch_default', whose draws it mixes in (got {self.init!r})")
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


def make_qnet(cfg: DQNConfig) -> QNet | NoisyQNet:
    if cfg.noisy_net:
        return NoisyQNet(cfg.skip, cfg.noisy_sigma0)
    q = QNet(cfg.skip)
    if cfg.init != "pytorch_default" or cfg.init_scale != 1.0:
        initialise(q, cfg.init, cfg.init_scale if cfg.init == "he_scaled" else 1.0)
    return q


DRAW_BLOCK = 256  # exploration draws are taken this many steps at a time


def indexed_seed(seed: int, purpose: str, index: int) -> int:
    """The seed of item ``index`` (an episode, an update) of a purpose's stream in run ``seed``: a child of
    ``stream_seed(seed, purpose)``, so items of one run and purposes never share draws."""
    ss = np.random.SeedSequence(stream_seed(seed, purpose), spawn_key=(int(index),))
    lo, hi = (int(x) for x in ss.generate_state(2, np.uint32))
    return (hi << 32 | lo) & (2**63 - 1)


def explore_rng(seed: int) -> np.random.Generator:
    """The generator of a run's exploration draws (explore test, random action)."""
    return np.random.default_rng(stream_seed(seed, "exploration"))


def replay_rng(seed: int) -> np.random.Generator:
    """The generator of a run's replay batches."""
    return np.random.default_rng(stream_seed(seed, "replay"))


def env_seed(seed: int, episode: int) -> int:
    """The environment's reset seed for ``episode`` of run ``seed``."""
    return indexed_seed(seed, "env", episode)


def noise_seed(seed: int, target: bool = False) -> int:
    """The seed of the weight noise of the online (or the target) network of run ``seed``."""
    return stream_seed(seed, "target_noise" if target else "weight_noise")


def initial_qnet(cfg: DQNConfig) -> QNet | NoisyQNet:
    """The run's initial Q-network, drawn from its ``init`` stream (the global torch generator is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(cfg.seed, "init"))
        return make_qnet(cfg)


def fresh_qnet(cfg: DQNConfig, seed: int, episode: int, purpose: str = "reinit_net") -> QNet:
    """A newly initialised Q-network for a reset or shrink-and-perturb at ``episode`` of run ``seed`` (purpose
    ``redo_net``: for update ``episode`` of ReDo); drawn from its own seed so that the global torch generator is
    left alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(indexed_seed(seed, purpose, episode))
        return make_qnet(cfg)


def reinit_due(cfg: DQNConfig, episode: int) -> tuple[bool, bool]:
    """(reset fc3, shrink-and-perturb) after this episode's updates."""
    due = lambda every: every > 0 and episode > 0 and episode % every == 0  # noqa: E731
    return due(cfg.reset_every), due(cfg.shrink_perturb_every)


def solved_now(cfg: DQNConfig, returns: list, total: float) -> bool:
    if cfg.rule == "standard":
        return len(returns) >= 100 and float(np.mean(returns[-100:])) >= 475
    return total >= cfg.win_steps


class Replay:
    """minimalRL's ``deque(maxlen=buffer_limit)`` of transitions ``(s, a, r / 100, s', done mask)``, held as a
    float32 ring of rows ``[s(4), a, r, s'(4), mask]``: the same transitions at the same indices (0 the
    oldest) and the same float32 values the deque's batches were converted to, without the deque's O(n)
    random access."""

    def __init__(self, capacity: int):
        self.data = np.zeros((capacity, 11), dtype=np.float32)
        self.pos = self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(self, s, a, r, s2, mask) -> None:
        row = self.data[self.pos]
        row[:4], row[4], row[5], row[6:10], row[10] = s, a, r, s2, mask
        self.pos = (self.pos + 1) % len(self.data)
        self.size = min(self.size + 1, len(self.data))

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows at deque indices ``idx`` (a copy)."""
        start = self.pos if self.size == len(self.data) else 0
        return self.data[(start + np.asarray(idx)) % len(self.data)]


def acting_params(q, cfg: DQNConfig) -> dict:
    """The parameters diagnostics look at: the network itself (NoisyNet: its noise-free mean)."""
    return q.mean_params() if cfg.noisy_net else dict(q.named_parameters())


def networks(cfg: DQNConfig) -> tuple:
    """(online network, target network, weight-noise hooks) at the start of a run: the target a copy of the
    online network; the noise of each from its own stream, apart from the initialisation's."""
    q, q_target = initial_qnet(cfg), make_qnet(cfg)
    q_target.load_state_dict(q.state_dict())
    noises = []
    if cfg.noise_layer:
        names = [f"{cfg.noise_layer}.weight", f"{cfg.noise_layer}.bias"]
        noises.append(WeightNoise(q, names, cfg.noise_sigma, cfg.noise_decay, seed=noise_seed(cfg.seed)))
        if cfg.noise_in_target:
            noises.append(WeightNoise(q_target, names, cfg.noise_sigma, cfg.noise_decay,
                                      seed=noise_seed(cfg.seed, target=True)))
    return q, q_target, noises


def train_dqn(cfg: DQNConfig) -> dict:
    """One seed. Returns per-episode returns, when the run was solved (None if never), and the diagnostics."""
    cfg.validate()
    rng, replay = explore_rng(cfg.seed), replay_rng(cfg.seed)
    env = gym.make("CartPole-v1", max_episode_steps=500 if cfg.rule == "standard" else cfg.win_steps)
    q, q_target, noises = networks(cfg)
    noisy_gen = [torch.Generator().manual_seed(stream_seed(cfg.seed, f"noisynet_{net}")) for net in ("online", "target")]
    pnoise = ParameterNoise(cfg.param_noise_sigma, cfg.param_noise_alpha, stream_seed(cfg.seed, "param_noise")) \
        if cfg.param_noise else None
    fresh_gen = torch.Generator().manual_seed(stream_seed(cfg.seed, "soft_shrink_perturb"))
    aux_rng = np.random.default_rng(stream_seed(cfg.seed, "replay_states"))   # states for adaptation and ReDo
    probe = probe_states() if cfg.diag_every else None
    opt = torch.optim.Adam(q.parameters(), lr=cfg.lr)
    memory = Replay(cfg.buffer_limit)
    returns, solved_at, diag, steps, updates, recycled = [], None, [], 0, 0, 0

    def replay_states(n: int) -> torch.Tensor:
        return torch.from_numpy(memory.rows(aux_rng.choice(len(memory), min(n, len(memory)), replace=False))[:, :4])

    for n in range(cfg.episodes):
        if cfg.step_budget and steps >= cfg.step_budget:
            break
        if cfg.diag_every and n % cfg.diag_every == 0:
            diag.append({"episode": n, "env_steps": steps, "recycled_units": recycled,
                         **diagnostics(acting_params(q, cfg), probe, cfg.skip, cfg.diag_tau),
                         "param_noise_sigma": pnoise.sigma if pnoise else np.nan})
        s, _ = env.reset(seed=env_seed(cfg.seed, n))
        eps, total, done, t = epsilon_at(cfg, n), 0.0, False, 0
        perturbed = pnoise.perturbed(dict(q.named_parameters())) if pnoise else None
        while not done:
            if t % DRAW_BLOCK == 0:
                draws = rng.random((DRAW_BLOCK, 2))
            explore, random_action = draws[t % DRAW_BLOCK]
            with torch.no_grad():
                x = torch.as_tensor(s, dtype=torch.float32)
                if cfg.noisy_net:
                    q.resample(noisy_gen[0])
                out = qnet_forward(x, perturbed, cfg.skip) if perturbed is not None else q(x)
            a = int(random_action * 2) if explore < eps else int(out.argmax())
            s2, r, terminated, truncated, _ = env.step(a)
            memory.append(s, a, r / 100.0, s2, 0.0 if terminated else 1.0)
            s, total, done, t = s2, total + r, terminated or truncated, t + 1
            steps += 1
            if pnoise is not None and steps % cfg.param_noise_every == 0 and len(memory) >= cfg.batch_size:
                with torch.no_grad():
                    xs = replay_states(128)
                    d = policy_distance(q(xs), qnet_forward(xs, perturbed, cfg.skip))
                pnoise.adapt(d, epsilon_threshold(max(0.01, 0.08 - 0.01 * (n / 200))))   # minimalRL's schedule
        returns.append(total)
        if len(memory) > cfg.learning_starts:
            for _ in range(cfg.updates_per_episode):
                b = torch.from_numpy(memory.rows(replay.choice(len(memory), cfg.batch_size, replace=False)))
                s_b, a_b, r_b, s2_b, m_b = b[:, :4], b[:, 4], b[:, 5], b[:, 6:10], b[:, 10]
                if cfg.noisy_net:
                    q.resample(noisy_gen[0])
                    q_target.resample(noisy_gen[1])
                q_a = q(s_b).gather(1, a_b.long().unsqueeze(1))
                with torch.no_grad():
                    target = r_b.unsqueeze(1) + cfg.gamma * q_target(s2_b).max(1)[0].unsqueeze(1) * m_b.unsqueeze(1)
                loss = F.smooth_l1_loss(q_a, target)
                opt.zero_grad()
                loss.backward()
                opt.step()
                updates += 1
                if cfg.soft_sp_alpha:
                    soft_shrink_perturb(q, cfg.soft_sp_alpha, fresh_gen)
                if cfg.redo_every and updates % cfg.redo_every == 0:
                    fresh = fresh_qnet(cfg, cfg.seed, updates, "redo_net")
                    recycled += redo(q, opt, replay_states(256), cfg.redo_tau, fresh, cfg.skip)
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
    if cfg.diag_every:
        diag.append({"episode": len(returns), "env_steps": steps, "recycled_units": recycled,
                     **diagnostics(acting_params(q, cfg), probe, cfg.skip, cfg.diag_tau),
                     "param_noise_sigma": pnoise.sigma if pnoise else np.nan})
    env.close()
    return {"returns": returns, "solved_at": solved_at, "config": cfg.to_dict(), "diagnostics": diag,
            "env_steps": steps, "updates": updates}
