"""Many DQN runs at once (notebook 04's fast path): seeds and arms trained as one batch.

Run k of ``train_dqn_batched(runs)`` is the run ``train_dqn(runs[k])`` makes, for every arm (the init arms,
epsilon schedules, smooth re-init weight noise, skip connection, resets, shrink-and-perturb, soft
shrink-and-perturb, ReDo, NoisyNet, adaptive parameter noise): the same environment resets, exploration and
replay draws (``explore_rng``, ``replay_rng``), initial weights (``initial_qnet``), the arms' generators
(``dqn.run_generators``, ``dqn.weight_noises``), fresh networks (``fresh_params``) and Adam arithmetic, and the
same mechanisms (``noise``, ``exploration``, ``plasticity``, ``dqn.reinitialise``) applied to each run's rows of
a parameter table. On the CPU in fp32 the returns and diagnostics are identical to the faithful one-seed path
(``tests/test_dqn_batched.py``): updates are bit for bit (``huber_gradients``, ``exploration.noisy_gradients``,
``StackedAdam``), and actions are the faithful argmax (``GreedyPolicy`` re-checks near ties one network at a
time).

How the runs are batched: runs are grouped by task and by how they act (ordinary, NoisyNet: noisy weights
drawn every step, parameter noise: a perturbed copy per episode) and each group is trained as one
``BatchedDQN``. Every playing run takes one step of the task's vectorised environment (``Task.vec``:
``CartPoleVec``, ``AcrobotVec``, ``BreakoutVec``) per time step, with one stacked forward of all acting
Q-networks. The convolution of MinAtar's Q-network is, in both paths, a linear layer on 3x3 patches
(``plasticity.conv_features``), so the stacked forward and backward are the same batched products as the
dense layers'. A run whose episode ended waits; when ``wait_fraction`` of the unfinished runs wait,
they do their post-episode work together: minimalRL's 10 updates (stacked networks, a hand-written backward,
one Adam over a [K, N] parameter table with a step count per run, then each run's soft shrink-and-perturb and
ReDo), resets, target syncs. Runs never interact, so waiting changes nothing in any run; it is what lets the
updates be batched (minimalRL updates only between episodes). On CartPole on the CPU, a run whose acting
weights stay fixed through the episode (no live weight noise; neither NoisyNet nor parameter noise) plays the
whole episode in compiled code (``cartpole_play``, a few microseconds per step); a run with live weight noise
that plays while all others wait (often: one run balancing for 500 steps while the rest fell early) plays the
rest of its episode in a scalar loop, since one NumPy or torch call costs more than its arithmetic there. Networks and optimiser state live on
``device``; environments, replay buffers (``dqn.ReplayBuffers``, one per run) and random draws stay in host
memory, so on a GPU each step moves a [K, obs] observation and K actions. On the CPU the acting forward of the
MLPs is NumPy's on views of the acting table (the convolutional network's: torch's stacked forward).

Runs may differ in anything but ``lr``, ``gamma``, ``batch_size``, ``buffer_limit`` and ``updates_per_episode``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from rlinit_lib.core.params import ParameterError, check_float
from rlinit_lib.smooth_reinit.cartpole_play import DRAW, ENDED, TIE_STOP, fast_weights, play_cartpole
from rlinit_lib.smooth_reinit.cartpole_vec import THETA_THRESHOLD, X_THRESHOLD, scalar_step
from rlinit_lib.smooth_reinit.dqn import (DRAW_BLOCK, DQNConfig, ReplayBuffers, env_seed, episode_limit, epsilon_at,
                                         explore_rng, fresh_params, initial_qnet, noise_names, param_noise_target,
                                         qnet_forward, reinitialise, replay_dtype, replay_rng, replay_states,
                                         run_generators, solved_now, weight_noises)
from rlinit_lib.smooth_reinit.exploration import (draw_noise, effective_params, mean_params, noise_size,
                                                  noisy_gradients, policy_distance)
from rlinit_lib.smooth_reinit.plasticity import conv_patches, diagnostics, probe_states, redo, soft_shrink_perturb
from rlinit_lib.smooth_reinit.tasks import TASKS

SHARED = ("lr", "gamma", "batch_size", "buffer_limit", "updates_per_episode")


def first_layer(P: dict, x: torch.Tensor) -> tuple:
    """fc1's output [M, B, units] for a stack of runs, and for a convolution (weights [M, filters, C, k, k]) its
    patches [M, B * positions, C * k * k] and its output [M, B * positions, filters] before flattening (the
    backward needs them; None for a dense fc1). As ``plasticity.qnet_layers``: the convolution is ``nn.Linear``'s
    ``patches @ W^T + b`` for each run, flattened channels first."""
    w, b = P["fc1.weight"], P["fc1.bias"].unsqueeze(1)
    if w.dim() == 3:
        return torch.relu(torch.baddbmm(b, x, w.transpose(1, 2))), None
    patches = conv_patches(x, w.shape[-1])                      # [M, B, positions, C * k * k]
    M, B, positions, filters = *patches.shape[:3], w.shape[1]
    patches = patches.reshape(M, B * positions, -1)
    out = torch.relu(torch.baddbmm(b, patches, w.reshape(M, filters, -1).transpose(1, 2)))
    return out.view(M, B, positions, filters).transpose(2, 3).reshape(M, B, filters * positions), (patches, out)


def stacked_layers(P: dict, x: torch.Tensor, skip: torch.Tensor | None) -> tuple:
    """``q_forward``'s (h1, h2, h, Q) and ``first_layer``'s convolution state."""
    h1, conv = first_layer(P, x)
    h2 = torch.relu(torch.baddbmm(P["fc2.bias"].unsqueeze(1), h1, P["fc2.weight"].transpose(1, 2)))
    h = h2 if skip is None else torch.where(skip, h2 + h1, h2)
    return h1, h2, h, torch.baddbmm(P["fc3.bias"].unsqueeze(1), h, P["fc3.weight"].transpose(1, 2)), conv


def q_forward(P: dict, x: torch.Tensor, skip: torch.Tensor | None) -> tuple:
    """The stacked torch forward (``plasticity.qnet_layers`` for M runs at once) without autograd: ``x``
    [M, B, *obs], parameters [M, ...], ``skip`` bool [M, 1, 1] (None: no run has the skip connection) ->
    (h1, h2, h, Q [M, B, actions]), where ``h`` is fc3's input. Each product is ``nn.Linear``'s
    ``x @ W^T + b`` for one run."""
    return stacked_layers(P, x, skip)[:4]


def huber_gradients(P: dict, x: torch.Tensor, a: torch.Tensor, target: torch.Tensor,
                    skip: torch.Tensor | None) -> dict:
    """Gradient of each run's ``smooth_l1_loss(Q(x).gather(a), target)`` (mean over the batch) with
    respect to its parameters ``P`` (name -> [M, ...]).

    Written out by hand because autograd's bookkeeping cost more than the arithmetic for these small
    networks. The operations are the ones autograd runs for the one-network ``QNet`` on the CPU, in the
    same order, so each run's gradient is bit for bit its gradient there (tested): the weight gradient
    is ``g^T @ input`` (``input^T @ g`` rounds differently), the bias gradient ``g.sum``, ReLU's
    backward is ``threshold_backward``, and the Huber slope is ``d / B`` inside [-1, 1], ``sign(d) / B``
    outside (B a power of two in minimalRL, so these scalings are exact)."""
    h1, h2, h, q, conv = stacked_layers(P, x, skip)
    d = q.gather(2, a) - target
    g_q = torch.zeros_like(q).scatter_(2, a, d.clamp(-1.0, 1.0) / d.shape[1])
    g_h = torch.bmm(g_q, P["fc3.weight"])
    g_pre2 = torch.ops.aten.threshold_backward(g_h, h2, 0)
    g_h1 = torch.bmm(g_pre2, P["fc2.weight"])
    if skip is not None:
        g_h1 = g_h1 + torch.where(skip, g_h, 0.0)
    if conv is None:
        g_pre1 = torch.ops.aten.threshold_backward(g_h1, h1, 0)
        g_w1 = torch.bmm(g_pre1.transpose(1, 2), x)
    else:   # back through the channels-first flattening to [M, B * positions, filters], then the patch product
        patches, out = conv
        M, B, filters = g_h1.shape[0], g_h1.shape[1], out.shape[2]
        g_out = g_h1.view(M, B, filters, -1).transpose(2, 3).reshape(M, -1, filters)
        g_pre1 = torch.ops.aten.threshold_backward(g_out, out, 0)
        g_w1 = torch.bmm(g_pre1.transpose(1, 2), patches).view(P["fc1.weight"].shape)
    return {"fc1.weight": g_w1, "fc1.bias": g_pre1.sum(1),
            "fc2.weight": torch.bmm(g_pre2.transpose(1, 2), h1), "fc2.bias": g_pre2.sum(1),
            "fc3.weight": output_weight_gradient(g_q, h), "fc3.bias": g_q.sum(1)}


def output_weight_gradient(g_q: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``g_q^T @ h`` per run, the output layer's weight gradient. With more than three actions (MinAtar's six)
    the batched product rounds differently from autograd's ``mm`` on the CPU (measured: a few units in the
    last place), so each run's is then formed with ``mm`` itself; with two or three (the classic tasks) the
    batched product is the same, bit for bit (tested), and faster."""
    if g_q.shape[2] <= 3:
        return torch.bmm(g_q.transpose(1, 2), h)
    return torch.stack([g.t().mm(x) for g, x in zip(g_q, h)])


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


def row(table: dict, k: int, clone: bool = False) -> dict:
    """Run k's parameters (name -> tensor) from a table of views: views (changed in place), or aligned copies
    (a matrix product's rounding may depend on where its operands lie in memory)."""
    return {n: t[k].clone() if clone else t[k] for n, t in table.items()}


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


# Gap between the two Q-values, relative to the larger sum of |terms| of the output layer, under which an
# action is recomputed one network at a time. NumPy's and nn.Linear's Q-values differed by at most 2.1e-7 of
# that sum over 7,116 sampled decisions of trained runs (skip connection and noise included), so the margin
# is about 500x; about 1.6% of decisions are re-checked.
TIE = 1e-4


def top_gap(q: np.ndarray) -> np.ndarray:
    """The gap between the largest and the second largest Q-value [...] of Q-values [..., actions] (NaN stays NaN)."""
    if q.shape[-1] == 2:
        return np.abs(q[..., 0] - q[..., 1])
    top = np.sort(q, -1)
    return top[..., -1] - top[..., -2]


def host_forward(w: dict, b: dict, skip, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The NumPy forward of the MLP Q-network: weights [..., out, in], biases [..., out, 1], ``x`` [..., obs, 1] (a
    stack of runs, or one run with the leading axis dropped); ``skip`` bool (broadcastable) or None. Returns the
    Q-values [..., actions] and the bound on their rounding, the largest sum of |terms| of the output layer."""
    h = np.maximum(np.matmul(w["fc1"], x) + b["fc1"], 0)
    h2 = np.maximum(np.matmul(w["fc2"], h) + b["fc2"], 0)
    h = h2 if skip is None else np.where(skip, h2 + h, h2)   # >= 0
    q = (np.matmul(w["fc3"], h) + b["fc3"])[..., 0]
    bound = (np.matmul(np.abs(w["fc3"]), h) + np.abs(b["fc3"])).max((-2, -1))
    return q, bound


class GreedyPolicy:
    """argmax_a Q(obs, a) for the playing runs, without autograd: ``policy(obs [K, *obs], live) -> actions [K]``.

    The batched product can round differently from ``nn.Linear`` on one input (in the last bits of the
    sum of the absolute terms). Where the two largest Q-values are closer than ``TIE`` times that sum, the
    run's Q-values are recomputed one network at a time with ``qnet_forward``, so the action is the
    faithful path's action. On the CPU the products are NumPy's (``host_forward``), on views of the
    parameter table (a third of torch's per-call cost for these sizes); elsewhere torch's (``q_forward``).
    The views are made once; the table is updated in place."""

    def __init__(self, P: dict, skip: torch.Tensor | None, host: bool | None = None):
        """``host``: NumPy products (default: when the table is on the CPU); False: torch's."""
        self.P, self.skip, self.device, self.copies = P, skip, next(iter(P.values())).device, {}
        dense = P["fc1.weight"].dim() == 3
        self.host = self.device.type == "cpu" and dense if host is None else host
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
        for i in np.flatnonzero(~(top_gap(q) > TIE * bound)):    # near ties and NaNs
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
        if top_gap(q) > TIE * bound:
            return int(q.argmax())
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
    for name in SHARED:
        values = {getattr(r, name) for r in runs}
        if len(values) > 1:
            raise ParameterError(f"runs must share {name} to be batched (got {sorted(values)})")
    check_float("wait_fraction", wait_fraction, low=0.0, high=1.0, low_open=True)
    return runs


def acting_kind(r: DQNConfig) -> str:
    """How a run acts: ``noisy_net`` (noisy weights drawn every step), ``param_noise`` (a perturbed copy per
    episode) or ``plain`` (its online network); runs of one kind are batched together."""
    return "noisy_net" if r.noisy_net else "param_noise" if r.param_noise else "plain"


def train_dqn_batched(runs: Sequence[DQNConfig], device: str | torch.device = "cpu", wait_fraction: float = 1.0,
                      progress: bool = False, compiled: bool = True) -> list[dict]:
    """Train every ``DQNConfig`` in ``runs`` together (one batch per task and ``acting_kind``); returns, in order, what
    ``train_dqn`` returns for each (per-episode returns, ``solved_at``, config, diagnostics, env steps, updates).

    ``wait_fraction``: a run whose episode ended waits for its updates until this fraction of the
    unfinished runs is waiting (or none is playing); then they update together and start their next
    episodes. 1.0 is lock step. The value trades fewer, larger update batches against idle steps; the
    results are the same for every value (tested). A run left playing alone finishes its episode
    before anything else happens (on the CPU). ``compiled``: on the CPU, CartPole episodes without live acting noise are
    played in ``cartpole_play``; False: in NumPy's step loop (the same results, tested; the benchmark's baseline).
    """
    runs = check_runs(runs, wait_fraction)
    if compiled not in (True, False):
        raise ParameterError(f"compiled must be True or False (got {compiled!r})")
    results: list = [None] * len(runs)
    group = lambda r: (r.task, acting_kind(r))  # noqa: E731
    for kind in dict.fromkeys(group(r) for r in runs):
        ks = [k for k, r in enumerate(runs) if group(r) == kind]
        for k, res in zip(ks, BatchedDQN([runs[k] for k in ks], device, compiled).train(wait_fraction, progress)):
            results[k] = res
    return results


class BatchedDQN:
    """The state of K DQN runs of one ``acting_kind`` trained together. Networks: one parameter table per role
    (online, target; and the acting networks of NoisyNet and parameter noise) with a row per run, on
    ``device``; environments, replay buffers, random draws and episode counters: arrays on the host with a row
    per run. ``train`` is the loop; the other methods are the steps of ``train_dqn`` for a set of runs."""

    def __init__(self, runs: list[DQNConfig], device: str | torch.device = "cpu", compiled: bool = True):
        self.runs, self.dev, self.K, c = runs, torch.device(device), len(runs), runs[0]
        self.c, self.kind, self.task = c, acting_kind(c), TASKS[c.task]
        obs_dim = self.task.obs_dim
        flat, self.shapes = flatten([initial_qnet(r) for r in runs])
        self.flat = flat.to(self.dev)                       # online networks, a row each
        self.flat_t = self.flat.clone()                     # target networks
        self.P, self.T = unflatten(self.flat, self.shapes), unflatten(self.flat_t, self.shapes)
        skip = torch.tensor([r.skip for r in runs], device=self.dev).view(-1, 1, 1)
        self.skip = skip if skip.any() else None
        self.gens = [run_generators(r) for r in runs]
        self.noise = [weight_noises(r, self.dev) for r in runs]           # (online, target) per run
        self.any_noise = any(r.noise_layer for r in runs)
        self.noised = [[self.P[n][k] for n in noise_names(r)] if r.noise_layer else None    # views of noised rows
                       for k, r in enumerate(runs)]
        if self.kind == "plain":
            self.A = self.P                                 # acting networks: the online ones
        else:                                               # their own table, with the ordinary layer names
            plain = mean_params(self.shapes) if self.kind == "noisy_net" else self.shapes
            self.A = unflatten(torch.zeros(self.K, sum(math.prod(s) for s in plain.values()), device=self.dev), plain)
            self.n_noise = noise_size(self.P) if self.kind == "noisy_net" else 0
        self.adam = StackedAdam(self.flat, c.lr)
        self.policy = GreedyPolicy(self.A, self.skip)
        self.rngs = [explore_rng(r.seed) for r in runs]
        self.replay_rngs = [replay_rng(r.seed) for r in runs]
        self.env = self.task.vec(self.K)
        self.memory = ReplayBuffers(self.K, c.buffer_limit, self.task.obs_shape, replay_dtype(self.task))
        self.max_steps = np.array([episode_limit(r) or np.iinfo(np.int64).max for r in runs])
        self.learning_starts = np.array([r.learning_starts for r in runs])
        self.adapt_every = np.array([r.param_noise_every for r in runs])
        self.returns: list[list[float]] = [[] for _ in runs]
        self.lengths: list[list[int]] = [[] for _ in runs]
        self.solved_at: list[int | None] = [None] * self.K
        self.explore_action = np.zeros((self.K, DRAW_BLOCK), dtype=np.int64)  # per step of a block: action, or -1
        self.row = np.zeros((self.K, 2 * obs_dim + 3), dtype=np.float32)   # replay rows of a step (raw rewards)
        self.episode = np.zeros(self.K, dtype=np.int64)     # each run's current episode
        self.t = np.zeros(self.K, dtype=np.int64)           # its step within that episode
        self.total, self.eps = np.zeros(self.K), np.zeros(self.K)
        self.playing, self.waiting = np.zeros(self.K, dtype=bool), np.zeros(self.K, dtype=bool)
        self.obs = np.zeros((self.K, *self.task.obs_shape), dtype=np.float32)
        self.steps = np.zeros(self.K, dtype=np.int64)       # environment steps so far (step_budget)
        self.recycled = np.zeros(self.K, dtype=np.int64)    # ReDo's recycled units so far
        self.diag: list[list[dict]] = [[] for _ in runs]
        # CartPole runs whose acting weights stay fixed through an episode play it in compiled code
        self.compiled = self.policy.host and self.kind == "plain" and self.task.name == "CartPole-v1" \
            and compiled
        self.quiet = np.zeros(self.K, dtype=bool)           # this episode in compiled code
        self.ready = np.zeros(self.K, dtype=bool)           # the draw block at t is drawn (compiled loop)
        self.forced = np.full(self.K, -1, dtype=np.int64)   # greedy action decided in Python at a near tie
        self.skip_flags = np.array([r.skip for r in runs])
        self.probe = probe_states(task=c.task) if any(r.diag_every for r in runs) else None

    def record_diagnostics(self, k: int) -> None:
        """``train_dqn``'s diagnostics row for run k, from its row of the online table."""
        r, pnoise = self.runs[k], self.gens[k]["param_noise"]
        p = row(self.P, k, clone=True)
        self.diag[k].append({"episode": int(self.episode[k]), "env_steps": int(self.steps[k]),
                             "recycled_units": int(self.recycled[k]),
                             **diagnostics(mean_params(p) if r.noisy_net else p, self.probe.to(self.dev), r.skip,
                                           r.diag_tau),
                             "param_noise_sigma": pnoise.sigma if pnoise else np.nan})

    def draw(self, k: int) -> None:
        """Run k's next block of exploration draws (test, random action), taken as ``train_dqn`` takes them."""
        u = self.rngs[k].random((DRAW_BLOCK, 2))
        self.explore_action[k] = np.where(u[:, 0] < self.eps[k], (u[:, 1] * self.task.n_actions).astype(np.int64), -1)

    def apply_noise(self, target: bool, ks, table: dict, rows) -> list:
        """Weight noise on the online (or target) networks of runs ``ks``, at rows ``rows`` of ``table`` (the
        noise of runs that still have some); returns the runs perturbed."""
        done = []
        for k, i in zip(ks, rows):
            noise = self.noise[k][target]
            if noise is not None and noise.live:
                noise.apply(self.noised[k] if table is self.P else [table[n][i] for n in noise_names(self.runs[k])])
                done.append(k)
        return done

    def noisy_acting(self, ks: np.ndarray) -> None:
        """NoisyNet: fresh noise for the acting networks of runs ``ks`` (each from its own generator)."""
        f = torch.stack([draw_noise(self.n_noise, self.gens[k]["noisy"][0]) for k in ks]).to(self.dev)
        idx = torch.as_tensor(ks, device=self.dev)
        for n, t in effective_params({n: t.index_select(0, idx) for n, t in self.P.items()}, f).items():
            self.A[n].index_copy_(0, idx, t)
        self.policy.forget(ks)

    def perturb_acting(self, ks: np.ndarray) -> None:
        """Parameter noise: this episode's perturbed copy of the online networks of runs ``ks``."""
        for k in ks:
            for n, t in self.gens[k]["param_noise"].perturbed({n: t[k].cpu() for n, t in self.P.items()}).items():
                self.A[n][k].copy_(t)
        self.policy.forget(ks)

    def adapt_param_noise(self, ks: np.ndarray) -> None:
        """Parameter noise: adapt sigma of the runs ``ks`` whose step count reached a multiple of their period."""
        due = (self.steps[ks] + self.t[ks]) % self.adapt_every[ks] == 0
        for k in ks[due & (self.memory.size[ks] >= self.c.batch_size)]:
            xs = replay_states(self.memory, k, self.gens[k]["states"], 128).to(self.dev)
            skip = self.runs[k].skip
            d = policy_distance(qnet_forward(xs, row(self.P, k, True), skip), qnet_forward(xs, row(self.A, k, True), skip))
            self.gens[k]["param_noise"].adapt(d, param_noise_target(int(self.episode[k]), self.task.n_actions))

    def start_episodes(self, ks: np.ndarray) -> None:
        for k in ks:
            if self.runs[k].diag_every and self.episode[k] % self.runs[k].diag_every == 0:
                self.record_diagnostics(k)
        self.obs[:] = self.env.reset(ks, [env_seed(self.runs[k].seed, self.episode[k]) for k in ks])
        self.t[ks], self.total[ks], self.playing[ks] = 0, 0.0, True
        if self.compiled:
            self.quiet[ks] = [self.noise[k][0] is None or not self.noise[k][0].live for k in ks]
        self.eps[ks] = [epsilon_at(self.runs[k], int(self.episode[k])) for k in ks]
        if self.kind == "param_noise":
            self.perturb_acting(ks)

    def after_update(self, ks: np.ndarray, online: dict, m: dict, v: dict) -> None:
        """Each run's soft shrink-and-perturb and ReDo after an update (``online``, ``m``, ``v``: tables whose row
        i is run ``ks[i]``)."""
        for i, k in enumerate(ks):
            r = self.runs[k]
            if r.soft_sp_alpha:
                soft_shrink_perturb(row(online, i), r.soft_sp_alpha, self.gens[k]["soft_sp"])
            if r.redo_every and self.adam.steps[k] % r.redo_every == 0:
                x = replay_states(self.memory, k, self.gens[k]["states"], 256).to(self.dev)
                self.recycled[k] += redo(row(online, i), [row(m, i), row(v, i)], x, r.redo_tau,
                                         fresh_params(r, r.seed, int(self.adam.steps[k]), "redo_net"), r.skip)

    def update(self, ks: np.ndarray) -> None:
        """minimalRL's updates after an episode, for runs ``ks`` together (each with its own batches)."""
        c, memory, dev = self.c, self.memory, self.dev
        order = np.stack([np.stack([self.replay_rngs[k].choice(memory.size[k], c.batch_size, replace=False)
                                    for _ in range(c.updates_per_episode)]) for k in ks])
        batches = torch.from_numpy(memory.batches(ks, order)).to(dev)     # [M, updates, batch, width]
        whole, M, U, B = ks.size == self.K, ks.size, c.updates_per_episode, c.batch_size
        idx = None if whole else torch.as_tensor(ks, device=dev)
        skip = self.skip if whole or self.skip is None else self.skip.index_select(0, idx)
        # a subset's rows are copied once per round into compact tables, and written back at its end
        tables = (self.flat, self.flat_t, self.adam.m, self.adam.v)
        w, w_t, m, v = tables if whole else (x.index_select(0, idx) for x in tables)
        online, target_net = unflatten(w, self.shapes), unflatten(w_t, self.shapes)
        moments = unflatten(m, self.shapes), unflatten(v, self.shapes)
        rows = np.arange(M)
        per_update = any(self.runs[k].soft_sp_alpha or self.runs[k].redo_every for k in ks)
        target_fixed = self.kind != "noisy_net" and not any(
            self.noise[k][1] is not None and self.noise[k][1].live for k in ks)
        s_all, a_all, r_all, s2_all, m_all = memory.split(batches)
        if target_fixed:      # the target networks do not change in this round: one forward for all updates
            q_next_all = q_forward(target_net, s2_all.reshape(M, U * B, *s2_all.shape[3:]), skip)[3].view(M, U, B, -1)
        for u in range(U):
            s_b, a_b, r_b, s2_b, m_b = s_all[:, u], a_all[:, u].long(), r_all[:, u], s2_all[:, u], m_all[:, u]
            if self.any_noise:
                self.apply_noise(False, ks, online, rows)
                self.apply_noise(True, ks, target_net, rows)
            if self.kind == "noisy_net":
                f_on, f_t = (torch.stack([draw_noise(self.n_noise, self.gens[k]["noisy"][j]) for k in ks]).to(dev)
                             for j in (0, 1))
                acting, q_next = effective_params(online, f_on), q_forward(effective_params(target_net, f_t), s2_b, skip)[3]
            else:
                acting = online
                q_next = q_next_all[:, u] if target_fixed else q_forward(target_net, s2_b, skip)[3]
            target = r_b + c.gamma * q_next.max(2)[0].unsqueeze(2) * m_b
            grads = huber_gradients(acting, s_b, a_b, target, skip)
            if self.kind == "noisy_net":
                grads = noisy_gradients(grads, online, f_on)
            self.adam.step(ks, torch.cat([grads[n].reshape(M, -1) for n in self.shapes], 1), (w, m, v))
            if per_update:
                self.after_update(ks, online, *moments)
        if not whole:
            for full, part in zip(tables, (w, w_t, m, v)):
                full.index_copy_(0, idx, part)

    @torch.no_grad()
    def end_episodes(self, ks: np.ndarray) -> None:
        """What ``train_dqn`` does after an episode: updates, reinits, target sync, solved check."""
        self.policy.forget(ks)           # their weights change here
        for k in ks:
            self.returns[k].append(float(self.total[k]))
            self.lengths[k].append(int(self.t[k]))
        self.steps[ks] += self.t[ks]
        learners = ks[self.memory.size[ks] > self.learning_starts[ks]]
        if learners.size and self.c.updates_per_episode:
            self.update(learners)
        again = []
        for k in ks:
            r, n = self.runs[k], int(self.episode[k])
            reinitialise(r, row(self.P, k), n)
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
        if self.any_noise:
            self.policy.forget(self.apply_noise(False, live, self.P, live))
        if self.kind == "noisy_net":
            self.noisy_acting(live)
        greedy = self.policy(self.obs, live)
        chosen = self.explore_action[np.arange(self.K), i]
        action = np.where(chosen < 0, greedy, chosen)
        obs2, reward, terminated = self.env.step(action, self.playing)
        d, row_ = self.memory.obs_dim, self.row
        row_[:, :d], row_[:, d], row_[:, d + 1] = self.obs.reshape(self.K, d), action, reward
        row_[:, d + 2:2 * d + 2], row_[:, 2 * d + 2] = obs2.reshape(self.K, d), ~terminated
        self.memory.add(live, self.playing, row_)
        self.total += reward
        self.t += self.playing
        if self.kind == "param_noise":
            self.adapt_param_noise(live)
        ended = terminated | (self.t >= self.max_steps)
        ended &= self.playing
        self.playing ^= ended
        self.waiting |= ended
        self.obs[:] = obs2

    @torch.no_grad()
    def play_alone(self, k: int) -> None:
        """Run k's episode to its end, a step at a time, while no other run plays (CartPole): the same steps as
        ``step`` (draws, noise, greedy action, environment, replay row), on scalars, because there a
        NumPy call on one element costs more than the arithmetic."""
        memory, policy = self.memory, self.policy
        one, table = np.array([k]), memory.data[k]
        state, step, pos, size = self.env.state[k].tolist(), int(self.t[k]), int(memory.pos[k]), int(memory.size[k])
        x = self.obs[k].copy()
        noise = self.noise[k][0]
        while True:
            i = step % DRAW_BLOCK
            if i == 0:
                self.draw(k)
            if noise is not None and noise.live:
                policy.forget(self.apply_noise(False, one, self.P, one))
            if self.kind == "noisy_net":
                self.noisy_acting(one)
            a = int(self.explore_action[k, i])
            if a < 0:
                a = policy.act(x, k)
            state = scalar_step(*state, a)
            x2 = np.array(state, dtype=np.float32)
            over = abs(state[0]) > X_THRESHOLD or abs(state[2]) > THETA_THRESHOLD
            table[pos, :4], table[pos, 4:] = x, (a, 1.0, *x2, 0.0 if over else 1.0)
            pos, size, step, x = (pos + 1) % memory.capacity, min(size + 1, memory.capacity), step + 1, x2
            if over or step >= self.max_steps[k]:
                break
        self.env.state[k], self.obs[k], self.total[k] = state, x, self.total[k] + (step - self.t[k])
        self.t[k], memory.pos[k], memory.size[k] = step, pos, size
        self.playing[k], self.waiting[k] = False, True

    def play_compiled(self, ks: np.ndarray) -> None:
        """Runs ``ks`` (CartPole, no live weight noise on their acting networks) play their episodes to the end
        in ``cartpole_play``; exploration blocks and near ties are handled here, as ``step`` handles them."""
        weights, slots = fast_weights(self.policy.w, self.policy.b, ks), np.arange(ks.size)
        while ks.size:
            status = np.empty(ks.size, dtype=np.int64)
            play_cartpole(ks, slots, *weights, self.skip_flags, self.env.state, self.obs, self.explore_action, self.t,
                          self.max_steps, self.ready, self.forced, self.memory.data, self.memory.pos,
                          self.memory.size, self.total, self.playing, self.waiting, status, TIE)
            for k in ks[status == DRAW]:
                self.draw(k)
                self.ready[k] = True
            for k in ks[status == TIE_STOP]:
                self.forced[k] = self.policy.one_network(torch.from_numpy(self.obs[k]).to(self.dev), k)
            keep = status != ENDED
            ks, slots = ks[keep], slots[keep]

    def train(self, wait_fraction: float = 1.0, progress: bool = False) -> list[dict]:
        bar = tqdm(total=sum(r.episodes for r in self.runs), desc=f"DQN, {self.K} runs (episodes)", disable=not progress)
        self.start_episodes(np.arange(self.K))
        n_play, n_wait = self.K, 0
        # parameter noise adapts within episodes; the scalar loop is CartPole's
        alone = self.policy.host and self.kind != "param_noise" and self.task.name == "CartPole-v1"
        while n_play or n_wait:
            if self.compiled:
                quiet = np.flatnonzero(self.playing & self.quiet)
                if quiet.size:
                    self.play_compiled(quiet)
            live = np.flatnonzero(self.playing)
            if live.size == 1 and alone:
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
        return [{"returns": self.returns[k], "lengths": self.lengths[k], "solved_at": self.solved_at[k], "config": r.to_dict(),
                 "diagnostics": self.diag[k], "env_steps": int(self.steps[k]), "updates": int(self.adam.steps[k])}
                for k, r in enumerate(self.runs)]
