"""Many DQN runs at once (notebook 04's fast path): seeds and variants trained as one batch.

Run k of ``train_dqn_batched(runs)`` is the run ``train_dqn(runs[k])`` makes: the same environment
resets, exploration and replay draws (its own ``run_rng``), initial weights (``torch.manual_seed``),
weight-noise generators, reset/shrink-and-perturb networks and Adam arithmetic. On the CPU in fp32
the returns are identical to the faithful one-seed path (``tests/test_dqn_batched.py``): updates are
bit for bit (``StackedLinear``, ``StackedAdam``), and actions are the faithful argmax (``GreedyPolicy``
re-checks near ties one network at a time).

How the runs are batched: every playing run takes one step of a vectorised CartPole
(``CartPoleVec``) per time step, with one stacked forward of all Q-networks (``bmm``). A run whose
episode ended waits; when ``wait_fraction`` of the unfinished runs wait, they do their post-episode
work together: minimalRL's 10 updates (stacked networks, one Adam over a [K, N] parameter table with
a step count per run), resets, target syncs. Runs never interact, so waiting changes nothing in any
run; it is what lets the updates be batched (minimalRL updates only between episodes). Networks and
optimiser state live on ``device``; environments, replay buffers (one per run, float32 arrays) and
random draws stay in host memory, so on a GPU each step moves a [K, 4] observation and K actions.

Runs may differ in seed, epsilon, skip connection, initialisation, weight noise, resets,
``learning_starts``, ``target_sync``, episode rule and number of episodes; they must share ``lr``,
``gamma``, ``batch_size``, ``buffer_limit`` and ``updates_per_episode``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .cartpole_vec import CartPoleVec
from .dqn import DRAW_BLOCK, DQNConfig, env_seed, epsilon_at, fresh_qnet, make_qnet, reinit_due, run_rng, solved_now
from .validation import ParameterError, check_float

SHARED = ("lr", "gamma", "batch_size", "buffer_limit", "updates_per_episode")


class StackedLinear(torch.autograd.Function):
    """``x @ W^T + b`` for stacked layers (x [M, B, in], W [M, out, in], b [M, out]), with the weight
    gradient formed as ``g^T @ x``, the product autograd forms for ``nn.Linear``, so that each run's
    gradient is bit for bit the one-network gradient on the CPU (``x^T @ g`` rounds differently)."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = torch.bmm(g, w) if ctx.needs_input_grad[0] else None
        return gx, torch.bmm(g.transpose(1, 2), x), g.sum(1)


def q_values(P: dict, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
    """Stacked QNet forward: ``x`` [M, B, 4], parameters [M, ...], ``skip`` bool [M, 1, 1] (None: no
    run has the skip connection) -> Q [M, B, 2]."""
    def linear(h, layer):
        return StackedLinear.apply(h, P[f"{layer}.weight"], P[f"{layer}.bias"])
    h = F.relu(linear(x, "fc1"))
    h2 = F.relu(linear(h, "fc2"))
    return linear(h2 if skip is None else torch.where(skip, h2 + h, h2), "fc3")


def unflatten(flat: torch.Tensor, shapes: dict) -> dict:
    """Views of a flat parameter table [M, N] as name -> [M, *shape] (the layout of ``flatten``)."""
    out, start = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        out[name] = flat[:, start:start + n].view(flat.shape[0], *shape)
        start += n
    return out


def flatten(nets: Sequence[torch.nn.Module]) -> tuple[torch.Tensor, dict]:
    """The parameters of K networks as one table [K, N] (a row per network) and their shapes."""
    shapes = {n: tuple(p.shape) for n, p in nets[0].named_parameters()}
    return torch.stack([torch.cat([p.detach().reshape(-1) for p in q.parameters()]) for q in nets]), shapes


class StackedNoise:
    """``WeightNoise`` for the rows of a parameter table: run k has its own layer (or none), sigma,
    decay and generator (seeded as the faithful path seeds it); ``apply(runs)`` perturbs those runs'
    weights before a forward, exactly as the faithful hook does."""

    def __init__(self, P: dict, layers: Sequence[str | None], sigmas, decays, seeds: Sequence[int]):
        self.P, self.layers, self.sigma, self.decay = P, list(layers), [float(s) for s in sigmas], list(decays)
        dev = next(iter(P.values())).device
        self.generators = [None if layer is None else torch.Generator(device=dev).manual_seed(int(s))
                           for layer, s in zip(layers, seeds)]
        self.live = np.array([layer is not None and sigma > 0 for layer, sigma in zip(layers, self.sigma)])

    @torch.no_grad()
    def apply(self, runs: np.ndarray) -> None:
        """Perturb the weights of ``runs`` (indices) that still have noise (sigma 0 stays 0: no draws)."""
        for k in runs[self.live[runs]]:
            for n in (f"{self.layers[k]}.weight", f"{self.layers[k]}.bias"):
                p = self.P[n][k]
                p.add_(torch.randn(p.shape, generator=self.generators[k], device=p.device, dtype=p.dtype)
                       * p * self.sigma[k])
            self.sigma[k] *= self.decay[k]
            self.live[k] = self.sigma[k] > 0


class StackedAdam:
    """Adam for the rows of a parameter table [K, N], where only some rows step at a time. Each row's
    arithmetic is ``torch.optim.Adam``'s (defaults), with its own step count: the Python scalars torch
    would use are computed per row and applied as float32 factors, which is what torch does with a
    Python scalar on a float32 tensor (bit for bit, tested)."""

    def __init__(self, flat: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.flat, self.lr, (self.b1, self.b2), self.eps = flat, lr, betas, eps
        self.m, self.v = torch.zeros_like(flat), torch.zeros_like(flat)
        self.steps = np.zeros(flat.shape[0], dtype=np.int64)

    @torch.no_grad()
    def step(self, runs: np.ndarray, grad: torch.Tensor) -> None:
        """``grad``: [len(runs), N] for the listed runs (sorted), in that order."""
        self.steps[runs] += 1
        dev = self.flat.device
        step_size = torch.tensor([[-self.lr / (1 - self.b1 ** int(s))] for s in self.steps[runs]], device=dev)
        bc2_sqrt = torch.tensor([[(1 - self.b2 ** int(s)) ** 0.5] for s in self.steps[runs]], device=dev)
        whole = runs.size == len(self.steps)
        if whole:
            m, v, w = self.m, self.v, self.flat
        else:
            idx = torch.as_tensor(runs, device=dev)
            m, v, w = self.m.index_select(0, idx), self.v.index_select(0, idx), self.flat.index_select(0, idx)
        m.lerp_(grad, 1 - self.b1)
        v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        w.addcdiv_(m * step_size, (v.sqrt() / bc2_sqrt).add_(self.eps))
        if not whole:
            self.m.index_copy_(0, idx, m)
            self.v.index_copy_(0, idx, v)
            self.flat.index_copy_(0, idx, w)


class ReplayBuffers:
    """One circular replay buffer per run: rows (s[4], a, r/100, s'[4], done mask) as float32.
    Positions are drawn in the faithful path's deque order (oldest first) and mapped to slots."""

    def __init__(self, k: int, capacity: int):
        self.data = np.zeros((k, capacity, 11), dtype=np.float32)
        self.pos = np.zeros(k, dtype=np.int64)
        self.size = np.zeros(k, dtype=np.int64)
        self.capacity = capacity

    def add(self, runs: np.ndarray, rows: np.ndarray) -> None:
        self.data[runs, self.pos[runs]] = rows
        self.pos[runs] = (self.pos[runs] + 1) % self.capacity
        self.size[runs] = np.minimum(self.size[runs] + 1, self.capacity)

    def batches(self, runs: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Rows at deque positions ``order`` [M, ...] of each run's buffer -> [M, ..., 11]."""
        start = np.where(self.size[runs] == self.capacity, self.pos[runs], 0)
        shape = (-1,) + (1,) * (order.ndim - 1)
        return self.data[runs.reshape(shape), (start.reshape(shape) + order) % self.capacity]


TIE = 1e-4  # gap between the two Q-values, relative to the sum of |terms|, under which an action is recomputed


class GreedyPolicy:
    """argmax_a Q(obs, a) for every run, without autograd: ``policy(obs [K, 4]) -> actions [K]`` (host).

    The batched matmul of the 2-output layer can round differently from ``nn.Linear`` on one input
    (by up to about 1e-6 of the sum of the absolute terms). Where the two Q-values are closer than
    ``TIE`` times that sum, the run's Q-values are recomputed one network at a time, so the action is
    the faithful path's action. The weight views are made once; the table is updated in place."""

    def __init__(self, P: dict, skip: torch.Tensor | None):
        self.P, self.skip = P, skip
        self.w = {layer: P[f"{layer}.weight"].transpose(1, 2) for layer in ("fc1", "fc2", "fc3")}
        self.b = {layer: P[f"{layer}.bias"].unsqueeze(1) for layer in ("fc1", "fc2", "fc3")}

    def __call__(self, obs: torch.Tensor) -> np.ndarray:
        h = torch.relu(torch.baddbmm(self.b["fc1"], obs.unsqueeze(1), self.w["fc1"]))
        h2 = torch.relu(torch.baddbmm(self.b["fc2"], h, self.w["fc2"]))
        h = h2 if self.skip is None else torch.where(self.skip, h2 + h, h2)       # >= 0
        q = torch.baddbmm(self.b["fc3"], h, self.w["fc3"]).squeeze(1).cpu().numpy()
        # sum of |terms| of each Q-value, bounded by sum(h) * max|w| + |b|
        bound = (h.sum((1, 2)) * self.w["fc3"].abs().amax((1, 2)) * 2 + self.b["fc3"].abs().sum((1, 2))).cpu().numpy()
        action = q.argmax(1)
        for k in np.flatnonzero(~(np.abs(q[:, 0] - q[:, 1]) > TIE * bound)):    # near ties and NaNs
            action[k] = self.one_network(obs[k], int(k))
        return action

    def one_network(self, x: torch.Tensor, k: int) -> int:
        """The faithful path's forward for run k (fresh, aligned copies: MKL's rounding depends on alignment)."""
        w = {n: p[k].clone() for n, p in self.P.items()}
        h = F.relu(F.linear(x.clone(), w["fc1.weight"], w["fc1.bias"]))
        h2 = F.relu(F.linear(h, w["fc2.weight"], w["fc2.bias"]))
        h = h2 + h if self.skip is not None and bool(self.skip[k]) else h2
        return int(F.linear(h, w["fc3.weight"], w["fc3.bias"]).argmax())


def check_runs(runs: Sequence[DQNConfig], wait_fraction: float) -> list[DQNConfig]:
    runs = list(runs)
    if not runs or not all(isinstance(r, DQNConfig) for r in runs):
        raise ParameterError(f"runs must be a non-empty list of DQNConfig (got {runs!r:.80})")
    for r in runs:
        r.validate()
    for name in SHARED:
        values = {getattr(r, name) for r in runs}
        if len(values) > 1:
            raise ParameterError(f"runs must share {name} to be batched (got {sorted(values)})")
    check_float("wait_fraction", wait_fraction, low=0.0, high=1.0, low_open=True)
    return runs


def train_dqn_batched(runs: Sequence[DQNConfig], device: str | torch.device = "cpu", wait_fraction: float = 1.0,
                      progress: bool = False) -> list[dict]:
    """Train every ``DQNConfig`` in ``runs`` together; returns, in order, what ``train_dqn`` returns
    for each (per-episode returns, ``solved_at``, config).

    ``wait_fraction``: a run whose episode ended waits for its updates until this fraction of the
    unfinished runs is waiting (or none is playing); then they update together and start their next
    episodes. 1.0 is lock step. The value trades fewer, larger update batches against idle steps; the
    results are the same for every value (tested).
    """
    runs = check_runs(runs, wait_fraction)
    dev, K, c = torch.device(device), len(runs), runs[0]
    nets = []
    for r in runs:
        torch.manual_seed(r.seed)
        nets.append(make_qnet(r))
    flat, shapes = flatten(nets)
    flat = flat.to(dev)                                     # online networks, a row each
    flat_t = flat.clone()                                   # target networks
    P, T = unflatten(flat, shapes), unflatten(flat_t, shapes)
    skip_all = torch.tensor([r.skip for r in runs], device=dev).view(-1, 1, 1)
    skip_all = skip_all if skip_all.any() else None
    noisy = [r.noise_layer for r in runs]
    noise_p = noise_t = None
    if any(noisy):
        sigmas, decays = [r.noise_sigma for r in runs], [r.noise_decay for r in runs]
        noise_p = StackedNoise(P, noisy, sigmas, decays, [r.seed for r in runs])
        noise_t = StackedNoise(T, [r.noise_layer if r.noise_in_target else None for r in runs], sigmas, decays,
                               [r.seed + 1 for r in runs])
    adam = StackedAdam(flat, c.lr)
    policy = GreedyPolicy(P, skip_all)
    rngs = [run_rng(r.seed) for r in runs]
    env, memory = CartPoleVec(K), ReplayBuffers(K, c.buffer_limit)
    max_steps = np.array([500 if r.rule == "standard" else r.win_steps for r in runs])
    learning_starts = np.array([r.learning_starts for r in runs])
    returns: list[list[float]] = [[] for _ in runs]
    solved_at: list[int | None] = [None] * K
    draws = np.zeros((K, DRAW_BLOCK, 2))
    row = np.zeros((K, 11), dtype=np.float32)
    row[:, 5] = 0.01                                         # reward 1 / 100, as minimalRL stores it
    episode = np.zeros(K, dtype=np.int64)                   # each run's current episode
    t = np.zeros(K, dtype=np.int64)                         # its step within that episode
    total, eps = np.zeros(K), np.zeros(K)
    playing, waiting = np.zeros(K, dtype=bool), np.zeros(K, dtype=bool)
    obs = np.zeros((K, 4), dtype=np.float32)
    every = np.arange(K)

    def start_episodes(ks: np.ndarray) -> None:
        obs[:] = env.reset(ks, [env_seed(runs[k].seed, episode[k]) for k in ks])
        t[ks], total[ks], playing[ks] = 0, 0.0, True
        eps[ks] = [epsilon_at(runs[k], int(episode[k])) for k in ks]

    def update(ks: np.ndarray) -> None:
        """minimalRL's updates after an episode, for runs ``ks`` together (each with its own batches)."""
        order = np.stack([np.stack([rngs[k].choice(memory.size[k], c.batch_size, replace=False)
                                    for _ in range(c.updates_per_episode)]) for k in ks])
        batches = torch.from_numpy(memory.batches(ks, order)).to(dev)     # [M, updates, batch, 11]
        idx = None if ks.size == K else torch.as_tensor(ks, device=dev)
        skip = skip_all if idx is None or skip_all is None else skip_all.index_select(0, idx)
        for u in range(c.updates_per_episode):
            b = batches[:, u]
            s_b, a_b, r_b, s2_b, m_b = b[..., :4], b[..., 4:5], b[..., 5:6], b[..., 6:10], b[..., 10:]
            for noise in (noise_p, noise_t):
                if noise is not None:
                    noise.apply(ks)
            sub = (flat if idx is None else flat.index_select(0, idx)).detach().requires_grad_()
            q_a = q_values(unflatten(sub, shapes), s_b, skip).gather(2, a_b.long())
            with torch.no_grad():
                target_rows = flat_t if idx is None else flat_t.index_select(0, idx)
                q_next = q_values(unflatten(target_rows, shapes), s2_b, skip)
                target = r_b + c.gamma * q_next.max(2)[0].unsqueeze(2) * m_b
            loss = F.smooth_l1_loss(q_a, target, reduction="none").mean((1, 2))
            adam.step(ks, torch.autograd.grad(loss.sum(), sub)[0])

    @torch.no_grad()
    def end_episodes(ks: np.ndarray) -> None:
        """What ``train_dqn`` does after an episode: updates, reinits, target sync, solved check."""
        for k in ks:
            returns[k].append(float(total[k]))
        learners = ks[memory.size[ks] > learning_starts[ks]]
        if learners.size and c.updates_per_episode:
            with torch.enable_grad():
                update(learners)
        again = []
        for k in ks:
            r, n = runs[k], int(episode[k])
            reset, shrink_perturb = reinit_due(r, n)
            if reset or shrink_perturb:
                fresh = dict(fresh_qnet(r, r.seed, n).named_parameters())
                for name in (("fc3.weight", "fc3.bias") if reset else ()):
                    P[name][k].copy_(fresh[name])
                if shrink_perturb:
                    for name, p in P.items():
                        p[k].mul_(r.shrink).add_(fresh[name].to(dev), alpha=r.perturb)
            if n % r.target_sync == 0 and n > 0:
                flat_t[k] = flat[k]
            won = solved_at[k] is None and solved_now(r, returns[k], total[k])
            if won:
                solved_at[k] = n
            episode[k] += 1
            if episode[k] < r.episodes and not (won and r.rule == "win"):
                again.append(k)
        waiting[ks] = False
        if again:
            start_episodes(np.array(again))

    bar = tqdm(total=sum(r.episodes for r in runs), desc=f"DQN, {K} runs (episodes)", disable=not progress)
    start_episodes(np.arange(K))
    while playing.any() or waiting.any():
        live = np.flatnonzero(playing)
        if live.size:
            for k in live[t[live] % DRAW_BLOCK == 0]:
                draws[k] = rngs[k].random((DRAW_BLOCK, 2))
            if noise_p is not None:
                noise_p.apply(live)
            with torch.no_grad():     # every run's Q: cheaper than selecting the playing ones
                greedy = policy(torch.from_numpy(obs).to(dev))
            u = draws[every, t % DRAW_BLOCK]
            action = np.where(u[:, 0] < eps, (u[:, 1] * 2).astype(np.int64), greedy)
            obs2, terminated = env.step(action, playing)
            row[:, :4], row[:, 4], row[:, 6:10], row[:, 10] = obs, action, obs2, ~terminated
            memory.add(live, row[live])
            total[live] += 1.0
            t[live] += 1
            ended = playing & (terminated | (t >= max_steps))
            playing &= ~ended
            waiting |= ended
            obs[:] = obs2
        n_wait, n_play = int(waiting.sum()), int(playing.sum())
        if n_wait and (n_play == 0 or n_wait >= wait_fraction * (n_wait + n_play)):
            ks = np.flatnonzero(waiting)
            end_episodes(ks)
            bar.update(ks.size)
    bar.close()
    return [{"returns": returns[k], "solved_at": solved_at[k], "config": r.to_dict()} for k, r in enumerate(runs)]
