"""DQN with minimalRL's settings and every arm of notebook 04, on any task of ``tasks``: the faithful one-run path.

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
that seed and episode); NoisyNet (``noisy_net``) and adaptive parameter-space noise (``param_noise``)
from ``exploration``; ReDo (``redo_every`` updates, ``redo_tau``) and soft shrink-and-perturb
(``soft_sp_alpha`` after every update) from ``plasticity``. ``step_budget`` ends a run after the episode in
which it reached that many environment steps; ``diag_every`` records ``plasticity.diagnostics`` on a fixed
batch of states every that many episodes (through the functional forward, so noise hooks neither fire nor
advance).

Tasks (``task``, ``tasks.TASKS``): CartPole-v1 (the source's), Acrobot-v1, MinAtar Breakout, each with its
reference environment (Gymnasium's, the ``minatar`` package's) and its Q-network (``Task.qnet_layers``:
minimalRL's MLP obs-128-128-actions, or the MinAtar paper's conv 16x3x3 -> 128 -> actions), built with the
layer names ``fc1``, ``fc2``, ``fc3`` on every task. The arms name layers: ``fc3`` is the last layer (the output
linear layer on every task), ``fc2`` the middle one (CartPole and Acrobot: the 128 -> 128 layer; Breakout: the
1,024 -> 128 dense layer after the convolution), ``fc1`` the first (Breakout: the convolution). The skip
connection ``relu(fc2(x)) + x`` needs fc1 and fc2 of one width, so it (and the arms with it) is refused on
the convolutional network in one line. minimalRL's other constants are kept on every task: rewards / 100 in
the replay buffer (stored as the raw reward and scaled on reading, the same float32 value), the episode
schedule of epsilon, the 10 updates after each episode. ``standard`` counts a run solved when the mean of the
last 100 returns reaches the task's reference score (CartPole: 475); ``win`` is CartPole's only.

This path (the task's reference environment, one ``nn.Module``, autograd, ``torch.optim.Adam``) is the readable
reference; ``dqn_batched`` trains many runs at once and is tested to give the same returns and diagnostics
for every arm. Both use the definitions here and in ``noise``, ``exploration`` and ``plasticity``: the
network's forward (``qnet_forward``), the replay buffer (``ReplayBuffers``), the weight noise
(``noise.MultiplicativeNoise``), the re-initialisations (``reinitialise``), the random streams.

Deviations: every random stream of a run is seeded, each from its own child of the run's seed
(``core.runtime.stream_seed(seed, purpose)``: ``init``, ``env``, ``exploration``, ``replay``,
``weight_noise``, ``target_noise``, ``reinit_net``, ``redo_net``, ...; the source seeded torch only), so no two
purposes share draws and run ``s`` shares none with run ``s + 1``. Exploration and replay sampling draw from
NumPy generators (explore test and random action in blocks of ``DRAW_BLOCK`` steps; ``Generator.choice``
without replacement for each replay batch) instead of Python's ``random``: the same distributions, in a form
that ``dqn_batched`` reproduces draw for draw, so that both paths give the same trajectory for a seed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlinit_lib.core.params import BOOL, Choice, Config, Float, Int, ParameterError, param
from rlinit_lib.core.runtime import stream_seed
from rlinit_lib.initialisation.initialisers import INIT_METHODS, initialise
from rlinit_lib.smooth_reinit.exploration import NoisyQNet, ParameterNoise, epsilon_threshold, policy_distance
from rlinit_lib.smooth_reinit.noise import MultiplicativeNoise, WeightNoise, shrink_perturb_
from rlinit_lib.smooth_reinit.plasticity import (adam_moments, diagnostics, probe_states, qnet_layers, redo,
                                                 soft_shrink_perturb)
from rlinit_lib.smooth_reinit.tasks import TASKS, ReferenceEnv, Task, get_task, make_layer

OPEN01 = Float(low=0.0, high=1.0, low_open=True, high_open=True)
COUNT = Int(low=0, high=100_000_000)     # a bound that protects run time


@dataclass
class DQNConfig(Config):
    """One DQN run; every field with its rule (``validate`` checks them, then ``check`` the combinations)."""

    notebook = "dqn"

    task: str = param("CartPole-v1", Choice(tuple(TASKS)))   # its environment, Q-network and reference score
    episodes: int = param(1000, Int(low=1, high=10_000_000))
    lr: float = param(5e-4, Float(low=0.0, low_open=True))
    gamma: float = param(0.98, Float(low=0.0, high=1.0))
    buffer_limit: int = param(50_000, Int(low=1, high=100_000_000))     # at least batch_size (check)
    batch_size: int = param(32, Int(low=1, high=1_000_000))
    learning_starts: int = param(2000, Int(low=1, high=100_000_000))   # at least batch_size (check)
    updates_per_episode: int = param(10, Int(low=0, high=1_000_000))
    target_sync: int = param(20, Int(low=1, high=100_000_000))
    epsilon: float | None = param(None, Float(low=0.0, high=1.0, optional=True))   # None: minimalRL's schedule
    skip: bool = param(False, BOOL)
    init: str = param("pytorch_default", Choice(INIT_METHODS))
    init_scale: float = param(1.0, Float(low=0.0, low_open=True))
    noise_layer: str | None = param(None, Choice((None, "fc2", "fc3")))   # "fc3" (last, output) or "fc2" (middle)
    noise_sigma: float = param(1.0, Float(low=0.0))
    noise_decay: float = param(0.5, Float(low=0.0, high=1.0))
    noise_in_target: bool = param(True, BOOL)
    reset_every: int = param(0, COUNT)                 # re-initialise fc3 every this many episodes (0: never)
    shrink_perturb_every: int = param(0, COUNT)        # shrink-and-perturb every this many episodes (0: never)
    shrink: float = param(0.8, Float(low=0.0, high=1.0))
    perturb: float = param(0.2, Float(low=0.0))
    rule: str = param("standard", Choice(("standard", "win")))    # standard | win
    win_steps: int = param(100_000, Int(low=1, high=100_000_000))
    noisy_net: bool = param(False, BOOL)               # NoisyNet: noisy fc2 and fc3 (use with epsilon 0)
    noisy_sigma0: float = param(0.5, Float(low=0.0))
    param_noise: bool = param(False, BOOL)             # adaptive parameter-space noise, one perturbed copy per episode
    param_noise_sigma: float = param(0.01, Float(low=0.0, low_open=True))   # its starting sigma
    param_noise_alpha: float = param(1.01, Float(low=1.0, low_open=True))
    param_noise_every: int = param(50, Int(low=1, high=100_000_000))   # environment steps between adaptations
    redo_every: int = param(0, COUNT)                  # ReDo every this many updates (0: never)
    redo_tau: float = param(0.025, OPEN01)
    soft_sp_alpha: float = param(0.0, Float(low=0.0, high=1.0))   # soft shrink-and-perturb after every update (0: never)
    step_budget: int = param(0, COUNT)                 # end after the episode that reaches this many env steps (0: none)
    diag_every: int = param(0, COUNT)                  # diagnostics every this many episodes (0: never)
    diag_tau: float = param(0.025, OPEN01)             # dormant threshold of the diagnostics
    seed: int = param(0, Int(low=0))

    def check(self) -> None:
        task = get_task(self.task)      # MinAtar without the package: one line saying how to install it
        if self.skip and task.conv:
            raise ParameterError(f"skip needs fc1 and fc2 of one width; task {self.task!r} has a convolutional fc1 "
                                 f"(use skip=False)")
        if self.rule == "win" and self.task != "CartPole-v1":
            raise ParameterError(f"rule 'win' (balanced steps in one episode) is CartPole-v1's; task {self.task!r} "
                                 f"needs rule='standard'")
        for name in ("buffer_limit", "learning_starts"):
            if getattr(self, name) < self.batch_size:
                raise ParameterError(f"{name} must be an integer >= {self.batch_size} (batch_size) "
                                     f"(got {getattr(self, name)})")
        if self.noisy_net and (self.noise_layer or self.skip or self.param_noise or self.reset_every
                               or self.shrink_perturb_every or self.redo_every or self.soft_sp_alpha):
            raise ParameterError("noisy_net must not be combined with noise_layer, skip, param_noise, reset_every, "
                                 "shrink_perturb_every, redo_every or soft_sp_alpha")
        if self.param_noise and self.noise_layer:
            raise ParameterError("param_noise must not be combined with noise_layer")
        if self.soft_sp_alpha and self.init != "pytorch_default":
            raise ParameterError(f"soft_sp_alpha needs init='pytorch_default', whose draws it mixes in (got {self.init!r})")


def qnet_forward(x: torch.Tensor, p: dict, skip: bool) -> torch.Tensor:
    """Q-values of the task's Q-network on parameters ``p``: ``plasticity.qnet_layers``' output, the one
    torch forward of one network."""
    return qnet_layers(x, p, skip)[-1]


def as_task(task: str | Task) -> Task:
    return get_task(task) if isinstance(task, str) else task


class QNet(nn.Module):
    """The task's Q-network (``Task.qnet_layers``: the layers of ``Task.build_qnet``, drawn in the same order) as
    ``fc1``, ``fc2``, ``fc3``; its forward is ``qnet_forward``."""

    def __init__(self, skip: bool = False, task: str | Task = "CartPole-v1"):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = (make_layer(spec) for spec in as_task(task).qnet_layers)
        self.skip = skip

    def params(self) -> dict:
        return dict(self.named_parameters())

    def forward(self, x):
        return qnet_forward(x, self.params(), self.skip)


def epsilon_at(cfg: DQNConfig, episode: int) -> float:
    return cfg.epsilon if cfg.epsilon is not None else max(0.01, 0.08 - 0.01 * (episode / 200))


def param_noise_target(episode: int, n_actions: int = 2) -> float:
    """The distance parameter noise adapts to: epsilon-greedy's at minimalRL's schedule."""
    return epsilon_threshold(max(0.01, 0.08 - 0.01 * (episode / 200)), n_actions)


def make_qnet(cfg: DQNConfig) -> QNet | NoisyQNet:
    if cfg.noisy_net:
        return NoisyQNet(cfg.skip, cfg.noisy_sigma0, cfg.task)
    q = QNet(cfg.skip, cfg.task)
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


def run_generators(cfg: DQNConfig) -> dict:
    """The run's torch and NumPy generators of the arms' own streams, seeded as both paths seed them."""
    gen = lambda purpose: torch.Generator().manual_seed(stream_seed(cfg.seed, purpose))  # noqa: E731
    return {"noisy": (gen("noisynet_online"), gen("noisynet_target")), "soft_sp": gen("soft_shrink_perturb"),
            "states": np.random.default_rng(stream_seed(cfg.seed, "replay_states")),    # adaptation and ReDo
            "param_noise": ParameterNoise(cfg.param_noise_sigma, cfg.param_noise_alpha,
                                          stream_seed(cfg.seed, "param_noise")) if cfg.param_noise else None}


def weight_noises(cfg: DQNConfig, device="cpu") -> tuple:
    """(online, target) weight noise of the run (None where it has none), each from its own stream."""
    if not cfg.noise_layer:
        return None, None
    make = lambda target: MultiplicativeNoise(cfg.noise_sigma, cfg.noise_decay,  # noqa: E731
                                              seed=noise_seed(cfg.seed, target), device=device)
    return make(False), make(True) if cfg.noise_in_target else None


def noise_names(cfg: DQNConfig) -> list[str]:
    return [f"{cfg.noise_layer}.weight", f"{cfg.noise_layer}.bias"]


def initial_qnet(cfg: DQNConfig) -> QNet | NoisyQNet:
    """The run's initial Q-network, drawn from its ``init`` stream (the global torch generator is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(cfg.seed, "init"))
        return make_qnet(cfg)


def fresh_params(cfg: DQNConfig, seed: int, index: int, purpose: str = "reinit_net") -> dict:
    """The parameters of a newly initialised Q-network for a reset or shrink-and-perturb after episode ``index``
    of run ``seed`` (purpose ``redo_net``: for update ``index`` of ReDo); drawn from its own seed so that the
    global torch generator is left alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(indexed_seed(seed, purpose, index))
        return {n: p.detach() for n, p in make_qnet(cfg).named_parameters()}


def reinit_due(cfg: DQNConfig, episode: int) -> tuple[bool, bool]:
    """(reset fc3, shrink-and-perturb) after this episode's updates."""
    due = lambda every: every > 0 and episode > 0 and episode % every == 0  # noqa: E731
    return due(cfg.reset_every), due(cfg.shrink_perturb_every)


@torch.no_grad()
def reinitialise(cfg: DQNConfig, params: dict, episode: int) -> None:
    """The periodic reset of fc3 and shrink-and-perturb due after ``episode``, in place on ``params``."""
    reset, shrink_perturb = reinit_due(cfg, episode)
    if reset or shrink_perturb:
        fresh = fresh_params(cfg, cfg.seed, episode)
        for name in (("fc3.weight", "fc3.bias") if reset else ()):
            params[name].copy_(fresh[name])
        if shrink_perturb:
            shrink_perturb_(params, {n: t.to(params[n].device) for n, t in fresh.items()}, cfg.shrink, cfg.perturb)


def solved_now(cfg: DQNConfig, returns: list, total: float) -> bool:
    """Standard: the last 100 returns average at least the task's reference score (CartPole: 475)."""
    if cfg.rule == "standard":
        return len(returns) >= 100 and float(np.mean(returns[-100:])) >= TASKS[cfg.task].reference_score
    return total >= cfg.win_steps


def episode_limit(cfg: DQNConfig) -> int | None:
    """Steps after which an episode is truncated: the task's (None: never), or ``win_steps`` under the win rule."""
    return cfg.win_steps if cfg.rule == "win" else TASKS[cfg.task].max_episode_steps


REWARD_SCALE = 0.01    # minimalRL's r / 100: applied when a batch is read (rewards are stored as they come)


class ReplayBuffers:
    """minimalRL's ``deque(maxlen=buffer_limit)`` of transitions ``(s, a, r / 100, s', done mask)``, one per run,
    held as rings of rows ``[s, a, r, s', mask]`` (``2 * obs_dim + 3`` wide, observations flattened): the same
    transitions at the same indices (0 the oldest) and the same float32 values the deque's batches were
    converted to, without the deque's O(n) random access. Rewards are stored raw and scaled by ``REWARD_SCALE``
    when read (``split``): for the rewards of these tasks (-1, 0, 1) ``r * float32(0.01)`` is exactly
    ``float32(r / 100)``. ``dtype``: float32, or float16 for bool observations (MinAtar: every stored value
    is a small integer, exact in float16; half the memory of float32, which matters at 400 numbers per
    observation); ``batches`` returns float32. The faithful path holds one (``k = 1``)."""

    def __init__(self, k: int, capacity: int, obs_shape: tuple | int = (4,), dtype=np.float32):
        obs_shape = (obs_shape,) if isinstance(obs_shape, int) else tuple(obs_shape)
        obs_dim = int(np.prod(obs_shape))
        self.data = np.zeros((k, capacity, 2 * obs_dim + 3), dtype=dtype)
        self.pos = np.zeros(k, dtype=np.int64)
        self.size = np.zeros(k, dtype=np.int64)
        self.capacity, self.obs_dim, self.obs_shape = capacity, obs_dim, obs_shape

    def add(self, runs: np.ndarray, active: np.ndarray, rows: np.ndarray) -> None:
        """Append ``rows[runs]`` to the buffers of ``runs`` (indices; ``active`` the same as a bool mask)."""
        self.data[runs, self.pos[runs]] = rows[runs]
        self.pos += active
        self.pos %= self.capacity
        np.minimum(self.size + active, self.capacity, out=self.size)

    def append(self, k: int, s, a, r, s2, mask) -> None:
        """One transition of run ``k``."""
        d, row = self.obs_dim, self.data[k, self.pos[k]]
        row[:d], row[d], row[d + 1], row[d + 2:2 * d + 2], row[2 * d + 2] = s, a, r, s2, mask
        self.pos[k] = (self.pos[k] + 1) % self.capacity
        self.size[k] = min(self.size[k] + 1, self.capacity)

    def batches(self, runs: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Rows at deque positions ``order`` [M, ...] of each run's buffer -> [M, ..., width]."""
        start = np.where(self.size[runs] == self.capacity, self.pos[runs], 0)
        shape = (-1,) + (1,) * (order.ndim - 1)
        return self.data[runs.reshape(shape), (start.reshape(shape) + order) % self.capacity].astype(np.float32,
                                                                                                      copy=False)

    def sample(self, k: int, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` rows of run k's buffer (all if fewer), drawn without replacement by ``rng``."""
        size = int(self.size[k])
        return self.batches(np.array([k]), rng.choice(size, min(n, size), replace=False)[None])[0]

    def split(self, b):
        """(s, a, r / 100, s', mask) of rows ``b`` (NumPy or torch, any leading axes); a, r and mask keep a last
        axis; observations of more than one axis (MinAtar's) back in their shape."""
        d = self.obs_dim
        s, s2 = b[..., :d], b[..., d + 2:2 * d + 2]
        if len(self.obs_shape) > 1:
            s, s2 = (x.reshape(*x.shape[:-1], *self.obs_shape) for x in (s, s2))
        return s, b[..., d:d + 1], b[..., d + 1:d + 2] * REWARD_SCALE, s2, b[..., 2 * d + 2:]


def replay_dtype(task: Task):
    """The replay buffer's storage type for the task (``ReplayBuffers``)."""
    return np.float16 if task.conv else np.float32


def replay_states(memory: ReplayBuffers, k: int, rng: np.random.Generator, n: int) -> torch.Tensor:
    """States of ``n`` transitions of run k's buffer (parameter-noise adaptation, ReDo's scores)."""
    return torch.from_numpy(np.ascontiguousarray(memory.split(memory.sample(k, rng, n))[0]))


def acting_params(q, cfg: DQNConfig) -> dict:
    """The parameters diagnostics look at: the network itself (NoisyNet: its noise-free mean)."""
    return q.mean_params() if cfg.noisy_net else q.params()


def networks(cfg: DQNConfig) -> tuple:
    """(online network, target network, weight-noise hooks) at the start of a run: the target a copy of the
    online network; the noise of each from its own stream, apart from the initialisation's."""
    q, q_target = initial_qnet(cfg), make_qnet(cfg)
    q_target.load_state_dict(q.state_dict())
    hooks = []
    for net, target in ((q, False), (q_target, True)):
        if cfg.noise_layer and (cfg.noise_in_target or not target):
            hooks.append(WeightNoise(net, noise_names(cfg), cfg.noise_sigma, cfg.noise_decay,
                                     seed=noise_seed(cfg.seed, target)))
    return q, q_target, hooks


def diag_row(cfg, q, probe, episode, steps, recycled, pnoise) -> dict:
    return {"episode": episode, "env_steps": steps, "recycled_units": recycled,
            **diagnostics(acting_params(q, cfg), probe, cfg.skip, cfg.diag_tau),
            "param_noise_sigma": pnoise.sigma if pnoise else np.nan}


def train_dqn(cfg: DQNConfig) -> dict:
    """One seed. Returns per-episode returns and lengths (environment steps), when the run was solved (None if
    never), and the diagnostics."""
    cfg.validate()
    task = TASKS[cfg.task]
    rng, replay = explore_rng(cfg.seed), replay_rng(cfg.seed)
    env = ReferenceEnv(dataclasses.replace(task, max_episode_steps=episode_limit(cfg)))
    q, q_target, _ = networks(cfg)
    gens = run_generators(cfg)
    pnoise = gens["param_noise"]
    probe = probe_states(task=cfg.task) if cfg.diag_every else None
    opt = torch.optim.Adam(q.parameters(), lr=cfg.lr)
    memory = ReplayBuffers(1, cfg.buffer_limit, task.obs_shape, replay_dtype(task))
    returns, lengths, solved_at, diag, steps, updates, recycled = [], [], None, [], 0, 0, 0
    for n in range(cfg.episodes):
        if cfg.step_budget and steps >= cfg.step_budget:
            break
        if cfg.diag_every and n % cfg.diag_every == 0:
            diag.append(diag_row(cfg, q, probe, n, steps, recycled, pnoise))
        s = env.reset(env_seed(cfg.seed, n))
        eps, total, done, t = epsilon_at(cfg, n), 0.0, False, 0
        perturbed = pnoise.perturbed(q.params()) if pnoise else None
        while not done:
            if t % DRAW_BLOCK == 0:
                draws = rng.random((DRAW_BLOCK, 2))
            explore, random_action = draws[t % DRAW_BLOCK]
            with torch.no_grad():
                x = torch.as_tensor(s, dtype=torch.float32)
                if cfg.noisy_net:
                    q.resample(gens["noisy"][0])
                out = qnet_forward(x, perturbed, cfg.skip) if perturbed is not None else q(x)
            a = int(random_action * task.n_actions) if explore < eps else int(out.argmax())
            s2, r, terminated, truncated = env.step(a)
            memory.append(0, np.ravel(s), a, r, np.ravel(s2), 0.0 if terminated else 1.0)
            s, total, done, t = s2, total + r, terminated or truncated, t + 1
            steps += 1
            if pnoise is not None and steps % cfg.param_noise_every == 0 and memory.size[0] >= cfg.batch_size:
                with torch.no_grad():
                    xs = replay_states(memory, 0, gens["states"], 128)
                    d = policy_distance(q(xs), qnet_forward(xs, perturbed, cfg.skip))
                pnoise.adapt(d, param_noise_target(n, task.n_actions))
        returns.append(total)
        lengths.append(t)
        if memory.size[0] > cfg.learning_starts:
            for _ in range(cfg.updates_per_episode):
                b = torch.from_numpy(memory.batches(np.array([0]), replay.choice(memory.size[0], cfg.batch_size,
                                                                                 replace=False)[None])[0])
                s_b, a_b, r_b, s2_b, m_b = memory.split(b)
                if cfg.noisy_net:
                    q.resample(gens["noisy"][0])
                    q_target.resample(gens["noisy"][1])
                q_a = q(s_b).gather(1, a_b.long())
                with torch.no_grad():
                    target = r_b + cfg.gamma * q_target(s2_b).max(1)[0].unsqueeze(1) * m_b
                loss = F.smooth_l1_loss(q_a, target)
                opt.zero_grad()
                loss.backward()
                opt.step()
                updates += 1
                if cfg.soft_sp_alpha:
                    soft_shrink_perturb(q.params(), cfg.soft_sp_alpha, gens["soft_sp"])
                if cfg.redo_every and updates % cfg.redo_every == 0:
                    recycled += redo(q.params(), adam_moments(opt, q.params()), replay_states(memory, 0, gens["states"], 256),
                                     cfg.redo_tau, fresh_params(cfg, cfg.seed, updates, "redo_net"), cfg.skip)
        reinitialise(cfg, q.params(), n)
        if n % cfg.target_sync == 0 and n > 0:
            q_target.load_state_dict(q.state_dict())
        if solved_at is None and solved_now(cfg, returns, total):
            solved_at = n
            if cfg.rule == "win":
                break
    if cfg.diag_every:
        diag.append(diag_row(cfg, q, probe, len(returns), steps, recycled, pnoise))
    if hasattr(env.env, "close"):      # Gymnasium's (MinAtar's Environment has nothing to close)
        env.env.close()
    return {"returns": returns, "lengths": lengths, "solved_at": solved_at, "config": cfg.to_dict(),
            "diagnostics": diag, "env_steps": steps, "updates": updates}
