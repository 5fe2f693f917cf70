"""Many DQN runs at once (notebook 04's fast path): seeds and variants trained as one batch.

Run k of ``train_dqn_batched(runs)`` is the run ``train_dqn(runs[k])`` makes: the same environment
resets, exploration and replay draws (its own ``run_rng``), initial weights (``torch.manual_seed``),
weight-noise generators, reset/shrink-and-perturb networks and Adam arithmetic. On the CPU in fp32
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
import torch.nn.functional as F
from tqdm.auto import tqdm

from rlinit_lib.smooth_reinit.cartpole_vec import THETA_THRESHOLD, X_THRESHOLD, CartPoleVec, scalar_step
from rlinit_lib.smooth_reinit.dqn import DRAW_BLOCK, DQNConfig, env_seed, epsilon_at, fresh_qnet, make_qnet, reinit_due, run_rng, solved_now
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


class GreedyPolicy:
    """argmax_a Q(obs, a) for the playing runs, without autograd: ``policy(obs [K, 4], live) -> actions [K]``.

    The batched product can round differently from ``nn.Linear`` on one input (in the last bits of the
    sum of the absolute terms). Where the two Q-values are closer than ``TIE`` times that sum, the
    run's Q-values are recomputed one network at a time, so the action is the faithful path's action.
    On the CPU the products are NumPy's, on views of the parameter table (a third of torch's per-call
    cost for these sizes); elsewhere torch's. The views are made once; the table is updated in place."""

    def __init__(self, P: dict, skip: torch.Tensor | None, host: bool | None = None):
        """``host``: NumPy products (default: when the table is on the CPU); False: torch's."""
        self.P, self.skip, self.device, self.copies = P, skip, next(iter(P.values())).device, {}
        self.host = self.device.type == "cpu" if host is None else host
        if self.host:   # weights [K, out, in] (each run's matrix contiguous), biases [K, out, 1]
            self.w = {layer: P[f"{layer}.weight"].numpy() for layer in ("fc1", "fc2", "fc3")}
            self.b = {layer: P[f"{layer}.bias"].numpy()[:, :, None] for layer in ("fc1", "fc2", "fc3")}
            self.skip_np = None if skip is None else skip.numpy().reshape(-1, 1, 1)
        else:
            self.w = {layer: P[f"{layer}.weight"].transpose(1, 2) for layer in ("fc1", "fc2", "fc3")}
            self.b = {layer: P[f"{layer}.bias"].unsqueeze(1) for layer in ("fc1", "fc2", "fc3")}

    def __call__(self, obs: np.ndarray, live: np.ndarray) -> np.ndarray:
        """Greedy actions of the runs ``live`` (indices; the other entries are 0)."""
        if self.host and live.size <= 2:
            q, bound = self.q_one(obs, live)
        else:
            q, bound = self.q_host(obs) if self.host else self.q_device(obs)
            q, bound = q[live], bound[live]
        action = np.zeros(len(obs), dtype=np.int64)
        action[live] = q.argmax(1)
        for i in np.flatnonzero(~(np.abs(q[:, 0] - q[:, 1]) > TIE * bound)):    # near ties and NaNs
            k = int(live[i])
            action[k] = self.one_network(torch.from_numpy(obs[k]).to(self.device), k)
        return action

    def q_one(self, obs: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``q_host`` for a few runs, one matrix-vector product at a time (no copies of the weights)."""
        out = [self.q_run(obs[k], k) for k in live]
        return np.array([q for q, _ in out]), np.array([bound for _, bound in out])

    def q_run(self, x: np.ndarray, k: int) -> tuple[np.ndarray, float]:
        """Run k's Q-values for one observation (host only) and the bound on their rounding."""
        w, b = self.w, {layer: bias[k, :, 0] for layer, bias in self.b.items()}
        h = np.maximum(w["fc1"][k] @ x + b["fc1"], 0)
        h2 = np.maximum(w["fc2"][k] @ h + b["fc2"], 0)
        h = h2 + h if self.skip_np is not None and self.skip_np[k, 0, 0] else h2
        return w["fc3"][k] @ h + b["fc3"], (np.abs(w["fc3"][k]) @ h + np.abs(b["fc3"])).max()

    def act(self, x: np.ndarray, k: int) -> int:
        """Run k's greedy action for one observation (host only), re-checked at near ties."""
        q, bound = self.q_run(x, k)
        if abs(q[0] - q[1]) > TIE * bound:
            return int(q[1] > q[0])
        return self.one_network(torch.from_numpy(x).to(self.device), k)

    def q_host(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w, b = self.w, self.b
        h = np.maximum(np.matmul(w["fc1"], obs[:, :, None]) + b["fc1"], 0)        # [K, 128, 1]
        h2 = np.maximum(np.matmul(w["fc2"], h) + b["fc2"], 0)
        h = h2 if self.skip_np is None else np.where(self.skip_np, h2 + h, h2)   # >= 0
        q = (np.matmul(w["fc3"], h) + b["fc3"])[:, :, 0]
        bound = (np.matmul(np.abs(w["fc3"]), h) + np.abs(b["fc3"])).max((1, 2))     # sum of |terms|, h >= 0
        return q, bound

    def q_device(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(obs).to(self.w["fc1"].device).unsqueeze(1)
        h = torch.relu(torch.baddbmm(self.b["fc1"], x, self.w["fc1"]))
        h2 = torch.relu(torch.baddbmm(self.b["fc2"], h, self.w["fc2"]))
        h = h2 if self.skip is None else torch.where(self.skip, h2 + h, h2)
        q = torch.baddbmm(self.b["fc3"], h, self.w["fc3"]).squeeze(1)
        bound = torch.baddbmm(self.b["fc3"].abs(), h, self.w["fc3"].abs()).amax((1, 2))
        return q.cpu().numpy(), bound.cpu().numpy()

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
    results are the same for every value (tested). A run left playing alone finishes its episode
    before anything else happens (on the CPU).
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
    explore_action = np.zeros((K, DRAW_BLOCK), dtype=np.int64)   # per step of a block: random action, or -1
    row = np.zeros((K, 11), dtype=np.float32)
    row[:, 5] = 0.01                                         # reward 1 / 100, as minimalRL stores it
    episode = np.zeros(K, dtype=np.int64)                   # each run's current episode
    t = np.zeros(K, dtype=np.int64)                         # its step within that episode
    total, eps = np.zeros(K), np.zeros(K)
    playing, waiting = np.zeros(K, dtype=bool), np.zeros(K, dtype=bool)
    obs = np.zeros((K, 4), dtype=np.float32)
    every = np.arange(K)

    def draw(k: int) -> None:
        """Run k's next block of exploration draws (test, random action), taken as ``train_dqn`` takes them."""
        u = rngs[k].random((DRAW_BLOCK, 2))
        explore_action[k] = np.where(u[:, 0] < eps[k], (u[:, 1] * 2).astype(np.int64), -1)

    def start_episodes(ks: np.ndarray) -> None:
        obs[:] = env.reset(ks, [env_seed(runs[k].seed, episode[k]) for k in ks])
        t[ks], total[ks], playing[ks] = 0, 0.0, True
        eps[ks] = [epsilon_at(runs[k], int(episode[k])) for k in ks]

    def update(ks: np.ndarray) -> None:
        """minimalRL's updates after an episode, for runs ``ks`` together (each with its own batches)."""
        order = np.stack([np.stack([rngs[k].choice(memory.size[k], c.batch_size, replace=False)
                                    for _ in range(c.updates_per_episode)]) for k in ks])
        batches = torch.from_numpy(memory.batches(ks, order)).to(dev)     # [M, updates, batch, 11]
        whole, M, U, B = ks.size == K, ks.size, c.updates_per_episode, c.batch_size
        idx = None if whole else torch.as_tensor(ks, device=dev)
        skip = skip_all if whole or skip_all is None else skip_all.index_select(0, idx)
        # a subset's rows are copied once per round into compact tables, and written back at its end
        w, w_t, m, v = (flat, flat_t, adam.m, adam.v) if whole else (
            x.index_select(0, idx) for x in (flat, flat_t, adam.m, adam.v))
        online, target_net = (P, T) if whole else (unflatten(w, shapes), unflatten(w_t, shapes))
        rows = np.arange(M)
        target_fixed = noise_t is None or not noise_t.live[ks].any()
        if target_fixed:      # the target networks do not change in this round: one forward for all updates
            q_next_all = q_forward(target_net, batches[..., 6:10].reshape(M, U * B, 4), skip)[3].view(M, U, B, 2)
        for u in range(U):
            b = batches[:, u]
            s_b, a_b, r_b, s2_b, m_b = b[..., :4], b[..., 4:5], b[..., 5:6], b[..., 6:10], b[..., 10:]
            if noise_p is not None:
                noise_p.apply(ks, online, rows)
            if noise_t is not None:
                noise_t.apply(ks, target_net, rows)
            q_next = q_next_all[:, u] if target_fixed else q_forward(target_net, s2_b, skip)[3]
            target = r_b + c.gamma * q_next.max(2)[0].unsqueeze(2) * m_b
            adam.step(ks, huber_gradient(online, s_b, a_b.long(), target, skip), (w, m, v))
        if not whole:
            for full, part in ((flat, w), (flat_t, w_t), (adam.m, m), (adam.v, v)):
                full.index_copy_(0, idx, part)

    @torch.no_grad()
    def end_episodes(ks: np.ndarray) -> None:
        """What ``train_dqn`` does after an episode: updates, reinits, target sync, solved check."""
        policy.forget(ks)           # their weights change here
        for k in ks:
            returns[k].append(float(total[k]))
        learners = ks[memory.size[ks] > learning_starts[ks]]
        if learners.size and c.updates_per_episode:
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

    @torch.no_grad()
    def play_alone(k: int) -> None:
        """Run k's episode to its end, a step at a time, while no other run plays: the same steps as
        the batched loop below (draws, noise, greedy action, environment, replay row), on scalars,
        because there a NumPy call on one element costs more than the arithmetic."""
        one, table = np.array([k]), memory.data[k]
        state, step, pos, size = env.state[k].tolist(), int(t[k]), int(memory.pos[k]), int(memory.size[k])
        x = obs[k].copy()
        noisy = noise_p is not None
        while True:
            i = step % DRAW_BLOCK
            if i == 0:
                draw(k)
            if noisy and noise_p.live[k]:
                policy.forget(noise_p.apply(one))
            a = int(explore_action[k, i])
            if a < 0:
                a = policy.act(x, k)
            state = scalar_step(*state, a)
            x2 = np.array(state, dtype=np.float32)
            over = abs(state[0]) > X_THRESHOLD or abs(state[2]) > THETA_THRESHOLD
            table[pos, :4], table[pos, 4:] = x, (a, 0.01, *x2, 0.0 if over else 1.0)
            pos, size, step, x = (pos + 1) % memory.capacity, min(size + 1, memory.capacity), step + 1, x2
            if over or step >= max_steps[k]:
                break
        env.state[k], obs[k], t[k], total[k] = state, x, step, total[k] + (step - t[k])
        memory.pos[k], memory.size[k] = pos, size
        playing[k], waiting[k] = False, True

    bar = tqdm(total=sum(r.episodes for r in runs), desc=f"DQN, {K} runs (episodes)", disable=not progress)
    start_episodes(np.arange(K))
    n_play, n_wait = K, 0
    while n_play or n_wait:
        live = np.flatnonzero(playing)
        if live.size == 1 and policy.host:
            play_alone(int(live[0]))
        elif live.size:
            i = t % DRAW_BLOCK
            for k in live[i[live] == 0]:
                draw(k)
            if noise_p is not None:
                policy.forget(noise_p.apply(live))
            with torch.no_grad():
                greedy = policy(obs, live)
            chosen = explore_action[every, i]
            action = np.where(chosen < 0, greedy, chosen)
            obs2, terminated = env.step(action, playing)
            row[:, :4], row[:, 4], row[:, 6:10], row[:, 10] = obs, action, obs2, ~terminated
            memory.add(live, playing, row)
            total += playing
            t += playing
            ended = terminated | (t >= max_steps)
            ended &= playing
            playing ^= ended
            waiting |= ended
            obs[:] = obs2
        n_wait, n_play = int(waiting.sum()), int(playing.sum())
        if n_wait and (n_play == 0 or n_wait >= wait_fraction * (n_wait + n_play)):
            ks = np.flatnonzero(waiting)
            end_episodes(ks)
            bar.update(ks.size)
            n_wait, n_play = int(waiting.sum()), int(playing.sum())
    bar.close()
    return [{"returns": returns[k], "solved_at": solved_at[k], "config": r.to_dict()} for k, r in enumerate(runs)]
