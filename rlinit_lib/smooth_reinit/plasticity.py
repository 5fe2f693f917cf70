"""The Q-network's one torch forward, the plasticity methods that smooth re-initialisation competes with,
and the diagnostics that tell exploration from plasticity (notebook 04).

* :func:`qnet_layers`: the task's Q-network (``tasks.Task.qnet_layers``) on a dict of parameters, returning
  its hidden layers too: three layers ``fc1``, ``fc2``, ``fc3``, ReLU between them. Classic control: minimalRL's
  MLP (Linear-ReLU-Linear-ReLU-Linear, optionally the source's skip connection ``x = relu(fc2(x)) + x``).
  MinAtar: ``fc1`` is the MinAtar paper's 3x3 convolution (16 filters, stride 1, no padding), computed as a
  linear layer on the 3x3 patches of every position (:func:`conv_features`: the same sums as ``nn.Conv2d``,
  in a form the batched path reproduces bit for bit), its output flattened channels first as
  ``nn.Flatten`` of ``[B, 16, 8, 8]`` does; ``fc2`` the 1,024 -> 128 dense layer, ``fc3`` the output layer.
  The one network's forward of both DQN paths, NoisyNet (on its noisy weights), parameter noise, ReDo and
  the diagnostics all call it.
* **ReDo** (Sokar et al., ICML 2023, "The Dormant Neuron Phenomenon in Deep RL"): a hidden unit's score is
  ``s_i = E|h_i| / mean_k E|h_k|`` over a batch of states (its layer's units k); every ``redo_every``
  updates, units with ``s_i <= tau`` get fresh incoming weights (their row and bias, from a newly
  initialised network), zero outgoing weights (the columns that read them, the skip connection's too),
  and zeroed Adam moments for all of those entries. tau = 0.025 here, the value the issue set for this small
  network (the paper used 0.025 and 0.1 on Atari). A unit of the convolution is a filter (its score averages
  |h| over the batch and every position, as the paper scores convolutional units); recycling it renews its
  kernel and bias and zeroes the 64 columns of ``fc2`` that read its feature map.
* **Soft shrink-and-perturb** (Ash & Adams 2020, applied softly after every update as in later plasticity
  work): ``W <- (1 - alpha) W + alpha * W_fresh`` with a fresh PyTorch-default initialisation drawn per
  update (so the arm needs the default init, minimalRL's).
* **Diagnostics** on a fixed batch of states (random play on the task, :func:`probe_states`): the fraction of
  dormant units (fc1 and fc2 together, ``tau``; a filter of a convolution counts as one unit),
  the effective rank of the last hidden layer's features (``srank``, Kumar et al. 2021: the least k whose
  top-k singular values hold 99% of their sum), the parameters' L2 norm, and the entropy (bits) of the greedy
  action over the batch: 0 when the policy takes the same action everywhere (the constant-action collapse
  seen in 04), 1 when half the states get each action.

ReDo, soft shrink-and-perturb and the diagnostics act on dicts of parameters (name -> tensor), so the
faithful path passes its module's parameters and the batched path one run's rows of its parameter table.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from rlinit_lib.core.runtime import derive_seed

HIDDEN = (("fc1", "fc2"), ("fc2", "fc3"))      # (layer, the layer that reads it)


def conv_patches(x: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k x k`` patches of observations ``x`` [..., H, W, C] (channels last, as MinAtar's ``state()``) at
    every position of a stride-1 convolution without padding: [..., (H-k+1) * (W-k+1), C * k * k], positions
    row by row, each patch ordered (channel, row, column) as a ``Conv2d`` weight [filters, C, k, k] is."""
    pt = x.float().unfold(-3, k, 1).unfold(-3, k, 1)          # [..., H-k+1, W-k+1, C, k, k]
    return pt.reshape(*pt.shape[:-5], pt.shape[-5] * pt.shape[-4], -1)


def conv_features(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``relu(conv2d(x, w, b))`` flattened channels first ([..., filters * positions], ``nn.Flatten``'s order) for
    observations ``x`` [..., H, W, C]: one linear layer on the patches (``conv_patches``) of every position."""
    patches = conv_patches(x, w.shape[-1])
    lead, positions = patches.shape[:-2], patches.shape[-2]
    h = F.relu(F.linear(patches.reshape(-1, patches.shape[-1]), w.reshape(w.shape[0], -1), b))
    return h.reshape(*lead, positions, w.shape[0]).transpose(-1, -2).reshape(*lead, -1)


def is_conv(p: dict) -> bool:
    """Whether fc1 of one network's parameters ``p`` is a convolution (weight [filters, C, k, k])."""
    return p["fc1.weight"].dim() == 4


def unit_activations(h: torch.Tensor, layer: str, p: dict) -> torch.Tensor:
    """A hidden layer's activations as [samples, units]: the layer's output itself, or for a convolution
    [batch * positions, filters] (a filter is one unit, every position a sample of it)."""
    if layer == "fc1" and is_conv(p):
        filters = p["fc1.weight"].shape[0]
        return h.reshape(h.shape[0], filters, -1).transpose(1, 2).reshape(-1, filters)
    return h


def qnet_layers(x: torch.Tensor, p: dict, skip: bool) -> tuple:
    """(fc1 output, fc2 output, the features fc3 reads, Q-values) of the Q-network on parameters ``p``
    (names as in ``QNet.named_parameters``); with a convolutional fc1, its output flattened channels first."""
    if is_conv(p):
        h1 = conv_features(x, p["fc1.weight"], p["fc1.bias"])
    else:
        h1 = F.relu(F.linear(x, p["fc1.weight"], p["fc1.bias"]))
    h2 = F.relu(F.linear(h1, p["fc2.weight"], p["fc2.bias"]))
    h = h2 + h1 if skip else h2
    return h1, h2, h, F.linear(h, p["fc3.weight"], p["fc3.bias"])


def dormant_scores(h: torch.Tensor) -> torch.Tensor:
    """ReDo's score per unit of one layer's activations ``h`` [batch, units]; all zero if the layer is silent."""
    mean = h.abs().mean(0)
    total = mean.mean()
    return mean / total if total > 0 else torch.zeros_like(mean)


@torch.no_grad()
def redo(params: dict, moments: list, x: torch.Tensor, tau: float, fresh: dict, skip: bool) -> int:
    """Recycle the dormant units of fc1 and fc2 of ``params`` (name -> tensor, changed in place; see the module
    docstring); ``moments``: the optimiser's per-parameter state to zero with them (Adam's two moments, each a
    dict name -> tensor); ``fresh``: a newly initialised network's parameters. Returns how many units."""
    # scores from aligned copies: a matrix product's rounding may depend on where its operands lie in memory
    h1, h2, _, _ = qnet_layers(x, {n: p.clone() for n, p in params.items()}, skip)
    recycled = 0
    # fc2 before fc1: where a recycled fc1 unit feeds a recycled fc2 unit, the weight between them ends zero
    # (every recycled unit's outgoing weights are zero; scores all come from the activations before any change)
    for (layer, reader), h in reversed(list(zip(HIDDEN, (h1, h2)))):
        units = torch.nonzero(dormant_scores(unit_activations(h, layer, params)) <= tau).flatten()
        if len(units) == 0:
            continue
        recycled += len(units)
        # with the skip connection fc3 reads fc1's units too (summed with fc2's units of the same index)
        readers = [reader, "fc3"] if skip and layer == "fc1" else [reader]
        columns = units
        if layer == "fc1" and is_conv(params):   # a filter's feature map: its block of the flattened input of fc2
            positions = params["fc2.weight"].shape[1] // params["fc1.weight"].shape[0]
            columns = (units[:, None] * positions + torch.arange(positions, device=units.device)).flatten()
        entries = [(f"{layer}.weight", (units, slice(None)), True), (f"{layer}.bias", (units,), True)]
        entries += [(f"{r}.weight", (slice(None), columns), False) for r in readers]
        for name, idx, incoming in entries:
            params[name][idx] = fresh[name][idx].to(params[name].device) if incoming else 0.0
            for state in moments:
                state[name][idx] = 0.0
    return recycled


def adam_moments(opt: torch.optim.Optimizer, params: dict) -> list:
    """``torch.optim.Adam``'s two moments of ``params`` (name -> parameter) as dicts name -> tensor."""
    return [{n: opt.state[p][key] for n, p in params.items() if key in opt.state.get(p, {})}
            for key in ("exp_avg", "exp_avg_sq")]


@torch.no_grad()
def soft_shrink_perturb(params: dict, alpha: float, generator: torch.Generator) -> None:
    """``W <- (1 - alpha) W + alpha * W_fresh`` for every entry of ``params`` (``fcN.weight``/``fcN.bias``, in
    order), ``W_fresh`` a fresh draw of PyTorch's default initialisation of its layer (weights and biases
    ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in of a convolution: channels x kernel area)."""
    for name, p in params.items():
        bound = 1.0 / math.sqrt(params[name.rsplit(".", 1)[0] + ".weight"][0].numel())
        fresh = torch.rand(p.shape, generator=generator).mul_(2 * bound).sub_(bound).to(p.device)
        p.mul_(1.0 - alpha).add_(fresh, alpha=alpha)


def srank(features: torch.Tensor, delta: float = 0.01) -> int:
    """Kumar et al.'s effective rank: the least k with sum(top-k singular values) >= (1 - delta) * sum."""
    s = torch.linalg.svdvals(features.double())
    if float(s.sum()) == 0.0:
        return 0
    return int(torch.searchsorted(torch.cumsum(s, 0) / s.sum(), torch.tensor(1.0 - delta, dtype=s.dtype)).item()) + 1


def action_entropy(q: torch.Tensor) -> float:
    """Entropy in bits of the greedy action's distribution over a batch of Q-values [batch, actions]."""
    counts = torch.bincount(q.argmax(-1), minlength=q.shape[-1]).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log2()).sum())


@torch.no_grad()
def diagnostics(p: dict, x: torch.Tensor, skip: bool, tau: float) -> dict:
    """The four diagnostics of the module docstring for parameters ``p`` on states ``x``."""
    h1, h2, features, q = qnet_layers(x, p, skip)
    dormant = [float((dormant_scores(unit_activations(h, layer, p)) <= tau).double().mean())
               for layer, h in (("fc1", h1), ("fc2", h2))]
    return {"dormant_fraction": float(np.mean(dormant)), "dormant_fc1": dormant[0], "dormant_fc2": dormant[1],
            "srank": srank(features), "weight_norm": float(math.sqrt(sum(float((t * t).sum()) for t in p.values()))),
            "action_entropy": action_entropy(q), "q_mean": float(q.mean())}


@functools.lru_cache(maxsize=4)
def probe_states(n: int = 512, seed: int = 12_345, task: str = "CartPole-v1") -> torch.Tensor:
    """A fixed batch of the task's states from uniformly random play on its reference environment (the same
    for every run and arm of the task)."""
    from rlinit_lib.smooth_reinit.tasks import get_task

    spec = get_task(task)
    rng = np.random.default_rng(seed)
    states, episode = [], 0
    env = spec.reference(seed)
    s = env.obs
    while len(states) < n:
        states.append(s)
        s, _, terminated, truncated = env.step(int(rng.integers(spec.n_actions)))
        if terminated or truncated:
            episode += 1
            s = env.reset(seed=derive_seed(seed, episode))
    return torch.as_tensor(np.array(states), dtype=torch.float32)
