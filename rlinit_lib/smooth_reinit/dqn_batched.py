"""Many DQN runs at once (notebook 04's fast path): seeds and variants trained as one batch.

Run k of ``train_dqn_batched(runs)`` is the run ``train_dqn(runs[k])`` makes: the same environment
resets, exploration and replay draws (``explore_rng``, ``replay_rng``), initial weights (``initial_qnet``),
weight-noise generators (``noise_seed``), reset/shrink-and-perturb networks and Adam arithmetic. On the CPU in fp32
the returns are identical to the faithful one-seed path (``tests/test_dqn_batched.py``): updates are
bit for bit (``huber_gradient``, ``StackedAdam``), and actions are the faithful argmax (``GreedyPolicy``
re-checks near ties one network at a time).

How the runs are batched: every playing run takes one step of a vectorised CartPole
(``CartPoleVec``) per time step, with one stacked forward of all Q-networks. A run whose episode
ended waits; when ``wait_fraction`` of the unfinished runs wait, they do their post-episode work
together: minimalRL's 10 updates (stacked networks, a hand-written backward, one Adam over a [K, N]
parameter table with a step count per run), resets, target syncs. Runs never interact, so waiting
changes nothing in any run; it is what lets the updates be batched (minimalRL updates only between
episodes). A run that plays while all others wait (often: one run balancing for 500 steps while the
rest fell early) plays the rest of its episode in a scalar loop, since one NumPy or torch call costs
more than its arithmetic there. Networks and optimiser state live on ``device``; environments,
replay buffers (one per run, float32 arrays) and random draws stay in host memory, so on a GPU each
step moves a [K, 4] observation and K actions. On the CPU the acting forward is NumPy's on views of
the parameter table.

Runs may differ in seed, epsilon, skip connection, initialisation, weight noise, resets,
``learning_starts``, ``target_sync``, episode rule and number of episodes; they must share ``lr``,
``gamma``, ``batch_size``, ``buffer_limit`` and ``updates_per_episode``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from rlinit_lib.smooth_reinit.cartpole_vec import THETA_THRESHOLD, X_THRESHOLD, CartPoleVec, scalar_step
from rlinit_lib.smooth_reinit.dqn import (DRAW_BLOCK, DQNConfig, env_seed, epsilon_at, explore_rng, fresh_qnet,
                                         initial_qnet, noise_seed, qnet_forward, reinit_due, replay_rng, solved_now)
from rlinit_lib.smooth_reinit.plasticity import diagnostics, probe_states
from rlinit_lib.core.params import ParameterError, check_float

SHARED = ("lr", "gamma", "batch_size", "buffer_limit", "updates_per_episode")


def q_forward(P: dict, x: torch.Tensor, skip: torch.Tensor | None) -> tuple:
    """Stacked QNet forward without autograd: ``x`` [M, B, 4], parameters [M, ...], ``skip`` bool
    [M, 1, 1] (None: no run has the skip connection) -> (h1, h2, h, Q [M, B, 2]), where ``h`` is
    fc3's input. Each product is ``nn.Linear``'s ``x @ W^T + b`` for one run."""
    h1 = torch.relu(torch.baddbmm(P["fc1.bias"].unsqueeze(1), x, P["fc1.weight"].transpose(1, 2)))
    h2 = torch.relu(torch.baddbmm(P["fc2.bias"].unsqueeze(1), h1, P["fc2.weight"].transpose(1, 2)))
    h = h2 if skip is None else torch.where(skip, h2 + h1, h2)
    return h1, h2, h, torch.baddbmm(P["fc3.bias"].unsqueeze(1), h, P["fc3.weight"].transpose(1, 2))


def huber_gradient(P: dict, x: torch.Tensor, a: torch.Tensor, target: torch.Tensor,
                   skip: torch.Tensor | None) -> torch.Tensor:
    """Gradient of each run's ``smooth_l1_loss(Q(x).gather(a), target)`` (mean over the batch) with
    respect to its parameters, as a table [M, N] in ``flatten``'s layout.

    Written out by hand because autograd's bookkeeping cost more than the arithmetic for these small
    networks. The operations are the ones autograd runs for the one-network ``QNet`` on the CPU, in the
    same order, so each run's gradient is bit for bit its gradient there (tested): the weight gradient
    is ``g^T @ input`` (``input^T @ g`` rounds differently), the bias gradient ``g.sum``, ReLU's
    backward is ``threshold_backward``, and the Huber slope is ``d / B`` inside [-1, 1], ``sign(d) / B``
    outside (B a power of two in minimalRL, so these scalings are exact)."""
    h1, h2, h, q = q_forward(P, x, skip)
    d = q.gather(2, a) - target
    g_q = torch.zeros_like(q).scatter_(2, a, d.clamp(-1.0, 1.0) / d.shape[1])
    g_h = torch.bmm(g_q, P["fc3.weight"])
    g_pre2 = torch.ops.aten.threshold_backward(g_h, h2, 0)
    g_h1 = torch.bmm(g_pre2, P["fc2.weight"])
    if skip is not None:
        g_h1 = g_h1 + torch.where(skip, g_h, 0.0)
    g_pre1 = torch.ops.aten.threshold_backward(g_h1, h1, 0)
    grads = {"fc1.weight": torch.bmm(g_pre1.transpose(1, 2), x), "fc1.bias": g_pre1.sum(1),
             "fc2.weight": torch.bmm(g_pre2.transpose(1, 2), h1), "fc2.bias": g_pre2.sum(1),
             "fc3.weight": torch.bmm(g_q.transpose(1, 2), h), "fc3.bias": g_q.sum(1)}
    return torch.cat([grads[name].reshape(len(x), -1) for name in P], 1)


def unflatten(flat: torch.Tensor, shapes: dict) -> dict:
    """Views of a flat parameter table [M, N] as name -> [M, *shape] (the layout of ``flatten``)."""
    out, start, m = {}, 0, flat.shape[0]
    for name, shape in shapes.items():
        n = math.prod(shape)
        out[name] = flat[:, start:start + n].view(m, *shape)
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
    def apply(self, runs: np.ndarray, P: dict | None = None, rows: np.ndarray | None = None) -> list:
        """Perturb the weights of ``runs`` (indices) that still have noise (sigma 0 stays 0: no draws);
        returns the runs perturbed. ``P``, ``rows``: perturb rows ``rows`` of another table instead (a
        compact copy of those runs)."""
        P, rows = (self.P, runs) if P is None else (P, rows)
        done = []
        for k, row in zip(runs, rows):
            if not self.live[k]:
                continue
            done.append(k)
            for n in (f"{self.layers[k]}.weight", f"{self.layers[k]}.bias"):
                p = P[n][row]
                p.add_(torch.randn(p.shape, generator=self.generators[k], device=p.device, dtype=p.dtype)
                       * p * self.sigma[k])
            self.sigma[k] *= self.decay[k]
            self.live[k] = self.sigma[k] > 0
        return done


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
    def step(self, runs: np.ndarray, grad: torch.Tensor, tables: tuple | None = None) -> None:
        """``grad``: [len(runs), N] for the listed runs (sorted), in that order. ``tables``: (parameters,
        m, v) of those runs as compact [len(runs), N] copies, updated in place (the caller writes them
        back); default: the rows of the full tables."""
        self.steps[runs] += 1
        dev = self.flat.device
        step_size = torch.tensor([[-self.lr / (1 - self.b1 ** int(s))] for s in self.steps[runs]], device=dev)
        bc2_sqrt = torch.tensor([[(1 - self.b2 ** int(s)) ** 0.5] for s in self.steps[runs]], device=dev)
        whole = tables is None and runs.size == len(self.steps)
        if tables is not None:
            w, m, v = tables
        elif whole:
            m, v, w = self.m, self.v, self.flat
        else:
            idx = torch.as_tensor(runs, device=dev)
            m, v, w = self.m.index_select(0, idx), self.v.index_select(0, idx), self.flat.index_select(0, idx)
        m.lerp_(grad, 1 - self.b1)
        v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        w.addcdiv_(m * step_size, (v.sqrt() / bc2_sqrt).add_(self.eps))
        if tables is None and not whole:
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

    def add(self, runs: np.ndarray, active: np.ndarray, rows: np.ndarray) -> None:
        """Append ``rows[runs]`` to the buffers of ``runs`` (indices; ``active`` the same as a bool mask)."""
        self.data[runs, self.pos[runs]] = rows[runs]
        self.pos += active
        self.pos %= self.capacity
        np.minimum(self.size + active, self.capacity, out=self.size)

    def batches(self, runs: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Rows at deque positions ``order`` [M, ...] of each run's buffer -> [M, ..., 11]."""
        start = np.where(self.size[runs] == self.capacity, self.pos[runs], 0)
        shape = (-1,) + (1,) * (order.ndim - 1)
        return self.data[runs.reshape(shape), (start.reshape(shape) + order) % self.capacity]


# Gap between the two Q-values, relative to the larger sum of |terms| of the output layer, under which an
# action is recomputed one network at a time. NumPy's and nn.Linear's Q-values differed by at most 2.1e-7 of
# that sum over 7,116 sampled decisions of trained runs (skip connection and noise included), so the margin
# is about 500x; about 1.6% of decisions are re-checked.
TIE = 1e-4


def host_forward(w: dict, b: dict, skip, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The NumPy Q-network forward: weights [..., out, in], biases [..., out, 1], ``x`` [..., 4, 1] (a stack of
    runs, or one run with the leading axis dropped); ``skip`` bool (broadcastable) or None. Returns the
    Q-values [..., 2] and the bound on their rounding, the largest sum of |terms| of the output layer."""
    h = np.maximum(np.matmul(w["fc1"], x) + b["fc1"], 0)
    h2 = np.maximum(np.matmul(w["fc2"], h) + b["fc2"], 0)
    h = h2 if skip is None else np.where(skip, h2 + h, h2)   # >= 0
    q = (np.matmul(w["fc3"], h) + b["fc3"])[..., 0]
    bound = (np.matmul(np.abs(w["fc3"]), h) + np.abs(b["fc3"])).max((-2, -1))
    return q, bound


class GreedyPolicy:
    """argmax_a Q(obs, a) for the playing runs, without autograd: ``policy(obs [K, 4], live) -> actions [K]``.

    The batched product can round differently from ``nn.Linear`` on one input (in the last bits of the
    sum of the absolute terms). Where the two Q-values are closer than ``TIE`` times that sum, the
    run's Q-values are recomputed one network at a time with ``qnet_forward``, so the action is the
    faithful path's action. On the CPU the products are NumPy's (``host_forward``), on views of the
    parameter table (a third of torch's per-call cost for these sizes); elsewhere torch's (``q_forward``).
    The views are made once; the table is updated in place."""

    def __init__(self, P: dict, skip: torch.Tensor | None, host: bool | None = None):
        """``host``: NumPy products (default: when the table is on the CPU); False: torch's."""
        self.P, self.skip, self.device, self.copies = P, skip, next(iter(P.values())).device, {}
        self.host = self.device.type == "cpu" if host is None else host
        if self.host:   # weights [K, out, in] (each run's matrix contiguous), biases [K, out, 1]
            self.w = {layer: P[f"{layer}.weight"].numpy() for layer in ("fc1", "fc2", "fc3")}
            self.b = {layer: P[f"{layer}.bias"].numpy()[:, :, None] for layer in ("fc1", "fc2", "fc3")}
            self.skip_np = None if skip is None else skip.numpy().reshape(-1, 1, 1)

    def __call__(self, obs: np.ndarray, live: np.ndarray) -> np.ndarray:
        """Greedy actions of the runs ``live`` (indices; the other entries are 0)."""
        if self.host and live.size <= 2:     # a few runs: one matrix-vector product each, no copies
            q, bound = (np.array(v) for v in zip(*(self.q_run(obs[k], k) for k in live)))
        else:
            q, bound = self.q_host(obs) if self.host else self.q_device(obs)
            q, bound = q[live], bound[live]
        action = np.zeros(len(obs), dtype=np.int64)
        action[live] = q.argmax(1)
        for i in np.flatnonzero(~(np.abs(q[:, 0] - q[:, 1]) > TIE * bound)):    # near ties and NaNs
            k = int(live[i])
            action[k] = self.one_network(torch.from_numpy(obs[k]).to(self.device), k)
        return action

    def q_run(self, x: np.ndarray, k: int) -> tuple[np.ndarray, float]:
        """Run k's Q-values for one observation (host only) and the bound on their rounding."""
        skip = None if self.skip_np is None else bool(self.skip_np[k, 0, 0])
        return host_forward({n: w[k] for n, w in self.w.items()}, {n: b[k] for n, b in self.b.items()},
                            skip, x[:, None])

    def act(self, x: np.ndarray, k: int) -> int:
        """Run k's greedy action for one observation (host only), re-checked at near ties."""
        q, bound = self.q_run(x, k)
        if abs(q[0] - q[1]) > TIE * bound:
            return int(q[1] > q[0])
        return self.one_network(torch.from_numpy(x).to(self.device), k)

    def q_host(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return host_forward(self.w, self.b, self.skip_np, obs[:, :, None])

    def q_device(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, _, h, q = q_forward(self.P, torch.from_numpy(obs).to(self.device).unsqueeze(1), self.skip)
        bound = torch.baddbmm(self.P["fc3.bias"].abs().unsqueeze(1), h, self.P["fc3.weight"].abs().transpose(1, 2))
        return q.squeeze(1).cpu().numpy(), bound.amax((1, 2)).cpu().numpy()

    def forget(self, runs) -> None:
        """Drop the copies of runs whose weights changed (updates, resets, noise)."""
        for k in runs:
            self.copies.pop(int(k), None)

    def one_network(self, x: torch.Tensor, k: int) -> int:
        """The faithful path's forward for run k, on its own aligned copies of the weights (MKL's rounding
        depends on alignment), kept until ``forget``."""
        w = self.copies.get(k)
        if w is None:
            w = self.copies[k] = {n: p[k].clone() for n, p in self.P.items()}
        return int(qnet_forward(x.clone(), w, self.skip is not None and bool(self.skip[k])).argmax())


def check_runs(runs: Sequence[DQNConfig], wait_fraction: float) -> list[DQNConfig]:
    runs = list(runs)
    if not runs or not all(isinstance(r, DQNConfig) for r in runs):
        raise ParameterError(f"runs must be a non-empty list of DQNConfig (got {runs!r:.80})")
    for r in runs:
        r.validate()
        used = [f for f in DQNConfig.FAITHFUL_ONLY if getattr(r, f)]
        if used:
            raise ParameterError(f"runs with {used[0]} train on the faithful path only (dqn.train_dqn), not batched")
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
    results are the same for every value (tested). A run left playing alone finishes its episode
    before anything else happens (on the CPU).
    """
    return BatchedDQN(check_runs(runs, wait_fraction), device).train(wait_fraction, progress)


class BatchedDQN:
    """The state of K DQN runs trained together. Networks: one parameter table per role (online, target)
    with a row per run, on ``device``; environments, replay buffers, exploration draws and episode
    counters: arrays on the host with a row per run. ``train`` is the loop; the other methods are the
    steps of ``train_dqn`` for a set of runs."""

    def __init__(self, runs: list[DQNConfig], device: str | torch.device = "cpu"):
        self.runs, self.dev, self.K, c = runs, torch.device(device), len(runs), runs[0]
        self.c = c
        flat, self.shapes = flatten([initial_qnet(r) for r in runs])
        self.flat = flat.to(self.dev)                       # online networks, a row each
        self.flat_t = self.flat.clone()                     # target networks
        self.P, self.T = unflatten(self.flat, self.shapes), unflatten(self.flat_t, self.shapes)
        skip = torch.tensor([r.skip for r in runs], device=self.dev).view(-1, 1, 1)
        self.skip = skip if skip.any() else None
        self.noise_p = self.noise_t = None
        if any(r.noise_layer for r in runs):
            sigmas, decays = [r.noise_sigma for r in runs], [r.noise_decay for r in runs]
            self.noise_p = StackedNoise(self.P, [r.noise_layer for r in runs], sigmas, decays,
                                        [noise_seed(r.seed) for r in runs])
            self.noise_t = StackedNoise(self.T, [r.noise_layer if r.noise_in_target else None for r in runs], sigmas,
                                        decays, [noise_seed(r.seed, target=True) for r in runs])
        self.adam = StackedAdam(self.flat, c.lr)
        self.policy = GreedyPolicy(self.P, self.skip)
        self.rngs = [explore_rng(r.seed) for r in runs]
        self.replay_rngs = [replay_rng(r.seed) for r in runs]
        self.env, self.memory = CartPoleVec(self.K), ReplayBuffers(self.K, c.buffer_limit)
        self.max_steps = np.array([500 if r.rule == "standard" else r.win_steps for r in runs])
        self.learning_starts = np.array([r.learning_starts for r in runs])
        self.returns: list[list[float]] = [[] for _ in runs]
        self.solved_at: list[int | None] = [None] * self.K
        self.explore_action = np.zeros((self.K, DRAW_BLOCK), dtype=np.int64)  # per step of a block: action, or -1
        self.row = np.zeros((self.K, 11), dtype=np.float32)
        self.row[:, 5] = 0.01                               # reward 1 / 100, as minimalRL stores it
        self.episode = np.zeros(self.K, dtype=np.int64)     # each run's current episode
        self.t = np.zeros(self.K, dtype=np.int64)           # its step within that episode
        self.total, self.eps = np.zeros(self.K), np.zeros(self.K)
        self.playing, self.waiting = np.zeros(self.K, dtype=bool), np.zeros(self.K, dtype=bool)
        self.obs = np.zeros((self.K, 4), dtype=np.float32)
        self.steps = np.zeros(self.K, dtype=np.int64)       # environment steps so far (step_budget)
        self.diag: list[list[dict]] = [[] for _ in runs]
        self.probe = probe_states() if any(r.diag_every for r in runs) else None

    def record_diagnostics(self, k: int) -> None:
        """``train_dqn``'s diagnostics row for run k, from its row of the online table."""
        r = self.runs[k]
        p = {name: t[k] for name, t in self.P.items()}
        self.diag[k].append({"episode": int(self.episode[k]), "env_steps": int(self.steps[k]), "recycled_units": 0,
                             **diagnostics(p, self.probe, r.skip, r.diag_tau), "param_noise_sigma": np.nan})

    def draw(self, k: int) -> None:
        """Run k's next block of exploration draws (test, random action), taken as ``train_dqn`` takes them."""
        u = self.rngs[k].random((DRAW_BLOCK, 2))
        self.explore_action[k] = np.where(u[:, 0] < self.eps[k], (u[:, 1] * 2).astype(np.int64), -1)

    def start_episodes(self, ks: np.ndarray) -> None:
        for k in ks:
            if self.runs[k].diag_every and self.episode[k] % self.runs[k].diag_every == 0:
                self.record_diagnostics(k)
        self.obs[:] = self.env.reset(ks, [env_seed(self.runs[k].seed, self.episode[k]) for k in ks])
        self.t[ks], self.total[ks], self.playing[ks] = 0, 0.0, True
        self.eps[ks] = [epsilon_at(self.runs[k], int(self.episode[k])) for k in ks]

    def update(self, ks: np.ndarray) -> None:
        """minimalRL's updates after an episode, for runs ``ks`` together (each with its own batches)."""
        c, memory, dev = self.c, self.memory, self.dev
        order = np.stack([np.stack([self.replay_rngs[k].choice(memory.size[k], c.batch_size, replace=False)
                                    for _ in range(c.updates_per_episode)]) for k in ks])
        batches = torch.from_numpy(memory.batches(ks, order)).to(dev)     # [M, updates, batch, 11]
        whole, M, U, B = ks.size == self.K, ks.size, c.updates_per_episode, c.batch_size
        idx = None if whole else torch.as_tensor(ks, device=dev)
        skip = self.skip if whole or self.skip is None else self.skip.index_select(0, idx)
        # a subset's rows are copied once per round into compact tables, and written back at its end
        tables = (self.flat, self.flat_t, self.adam.m, self.adam.v)
        w, w_t, m, v = tables if whole else (x.index_select(0, idx) for x in tables)
        online, target_net = (self.P, self.T) if whole else (unflatten(w, self.shapes), unflatten(w_t, self.shapes))
        rows = np.arange(M)
        target_fixed = self.noise_t is None or not self.noise_t.live[ks].any()
        if target_fixed:      # the target networks do not change in this round: one forward for all updates
            q_next_all = q_forward(target_net, batches[..., 6:10].reshape(M, U * B, 4), skip)[3].view(M, U, B, 2)
        for u in range(U):
            b = batches[:, u]
            s_b, a_b, r_b, s2_b, m_b = b[..., :4], b[..., 4:5], b[..., 5:6], b[..., 6:10], b[..., 10:]
            if self.noise_p is not None:
                self.noise_p.apply(ks, online, rows)
            if self.noise_t is not None:
                self.noise_t.apply(ks, target_net, rows)
            q_next = q_next_all[:, u] if target_fixed else q_forward(target_net, s2_b, skip)[3]
            target = r_b + c.gamma * q_next.max(2)[0].unsqueeze(2) * m_b
            self.adam.step(ks, huber_gradient(online, s_b, a_b.long(), target, skip), (w, m, v))
        if not whole:
            for full, part in zip(tables, (w, w_t, m, v)):
                full.index_copy_(0, idx, part)

    @torch.no_grad()
    def end_episodes(self, ks: np.ndarray) -> None:
        """What ``train_dqn`` does after an episode: updates, reinits, target sync, solved check."""
        self.policy.forget(ks)           # their weights change here
        for k in ks:
            self.returns[k].append(float(self.total[k]))
        self.steps[ks] += self.total[ks].astype(np.int64)
        learners = ks[self.memory.size[ks] > self.learning_starts[ks]]
        if learners.size and self.c.updates_per_episode:
            self.update(learners)
        again = []
        for k in ks:
            r, n = self.runs[k], int(self.episode[k])
            reset, shrink_perturb = reinit_due(r, n)
            if reset or shrink_perturb:
                fresh = dict(fresh_qnet(r, r.seed, n).named_parameters())
                for name in (("fc3.weight", "fc3.bias") if reset else ()):
                    self.P[name][k].copy_(fresh[name])
                if shrink_perturb:
                    for name, p in self.P.items():
                        p[k].mul_(r.shrink).add_(fresh[name].to(self.dev), alpha=r.perturb)
            if n % r.target_sync == 0 and n > 0:
                self.flat_t[k] = self.flat[k]
            won = self.solved_at[k] is None and solved_now(r, self.returns[k], self.total[k])
            if won:
                self.solved_at[k] = n
            self.episode[k] += 1
            over_budget = r.step_budget and self.steps[k] >= r.step_budget
            if self.episode[k] < r.episodes and not (won and r.rule == "win") and not over_budget:
                again.append(k)
            elif r.diag_every:
                self.record_diagnostics(k)
        self.waiting[ks] = False
        if again:
            self.start_episodes(np.array(again))

    @torch.no_grad()
    def step(self, live: np.ndarray) -> None:
        """One environment step of every playing run ``live``, with one stacked forward."""
        i = self.t % DRAW_BLOCK
        for k in live[i[live] == 0]:
            self.draw(k)
        if self.noise_p is not None:
            self.policy.forget(self.noise_p.apply(live))
        greedy = self.policy(self.obs, live)
        chosen = self.explore_action[np.arange(self.K), i]
        action = np.where(chosen < 0, greedy, chosen)
        obs2, terminated = self.env.step(action, self.playing)
        row = self.row
        row[:, :4], row[:, 4], row[:, 6:10], row[:, 10] = self.obs, action, obs2, ~terminated
        self.memory.add(live, self.playing, row)
        self.total += self.playing
        self.t += self.playing
        ended = terminated | (self.t >= self.max_steps)
        ended &= self.playing
        self.playing ^= ended
        self.waiting |= ended
        self.obs[:] = obs2

    @torch.no_grad()
    def play_alone(self, k: int) -> None:
        """Run k's episode to its end, a step at a time, while no other run plays: the same steps as
        ``step`` (draws, noise, greedy action, environment, replay row), on scalars, because there a
        NumPy call on one element costs more than the arithmetic."""
        memory, policy, noise_p = self.memory, self.policy, self.noise_p
        one, table = np.array([k]), memory.data[k]
        state, step, pos, size = self.env.state[k].tolist(), int(self.t[k]), int(memory.pos[k]), int(memory.size[k])
        x = self.obs[k].copy()
        while True:
            i = step % DRAW_BLOCK
            if i == 0:
                self.draw(k)
            if noise_p is not None and noise_p.live[k]:
                policy.forget(noise_p.apply(one))
            a = int(self.explore_action[k, i])
            if a < 0:
                a = policy.act(x, k)
            state = scalar_step(*state, a)
            x2 = np.array(state, dtype=np.float32)
            over = abs(state[0]) > X_THRESHOLD or abs(state[2]) > THETA_THRESHOLD
            table[pos, :4], table[pos, 4:] = x, (a, 0.01, *x2, 0.0 if over else 1.0)
            pos, size, step, x = (pos + 1) % memory.capacity, min(size + 1, memory.capacity), step + 1, x2
            if over or step >= self.max_steps[k]:
                break
        self.env.state[k], self.obs[k], self.total[k] = state, x, self.total[k] + (step - self.t[k])
        self.t[k], memory.pos[k], memory.size[k] = step, pos, size
        self.playing[k], self.waiting[k] = False, True

    def train(self, wait_fraction: float = 1.0, progress: bool = False) -> list[dict]:
        bar = tqdm(total=sum(r.episodes for r in self.runs), desc=f"DQN, {self.K} runs (episodes)", disable=not progress)
        self.start_episodes(np.arange(self.K))
        n_play, n_wait = self.K, 0
        while n_play or n_wait:
            live = np.flatnonzero(self.playing)
            if live.size == 1 and self.policy.host:
                self.play_alone(int(live[0]))
            elif live.size:
                self.step(live)
            n_wait, n_play = int(self.waiting.sum()), int(self.playing.sum())
            if n_wait and (n_play == 0 or n_wait >= wait_fraction * (n_wait + n_play)):
                ks = np.flatnonzero(self.waiting)
                self.end_episodes(ks)
                bar.update(ks.size)
                n_wait, n_play = int(self.waiting.sum()), int(self.playing.sum())
        bar.close()
        return [{"returns": self.returns[k], "solved_at": self.solved_at[k], "config": r.to_dict(),
                 "diagnostics": self.diag[k], "env_steps": int(self.steps[k])} for k, r in enumerate(self.runs)]
