"""Plasticity methods that smooth re-initialisation competes with, and the diagnostics that tell
exploration from plasticity (notebook 04).

* **ReDo** (Sokar et al., ICML 2023, "The Dormant Neuron Phenomenon in Deep RL"): a hidden unit's score is
  ``s_i = E|h_i| / mean_k E|h_k|`` over a batch of states (its layer's units k); every ``redo_every``
  updates, units with ``s_i <= tau`` get fresh incoming weights (their row and bias, from a newly
  initialised network), zero outgoing weights (the columns that read them, the skip connection's too),
  and zeroed Adam moments for all of those entries. tau = 0.025 here, the value the issue set for this small
  network (the paper used 0.025 and 0.1 on Atari).
* **Soft shrink-and-perturb** (Ash & Adams 2020, applied softly after every update as in later plasticity
  work): ``W <- (1 - alpha) W + alpha * W_fresh`` with a fresh PyTorch-default initialisation drawn per
  update (so the arm needs the default init, minimalRL's).
* **Diagnostics** on a fixed batch of states: the fraction of dormant units (fc1 and fc2 together, ``tau``),
  the effective rank of the last hidden layer's features (``srank``, Kumar et al. 2021: the least k whose
  top-k singular values hold 99% of their sum), the parameters' L2 norm, and the entropy (bits) of the greedy
  action over the batch: 0 when the policy takes the same action everywhere (the constant-action collapse
  seen in 04), 1 when half the states get each action.
"""
from __future__ import annotations

import functools
import math

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from rlinit_lib.core.runtime import derive_seed

HIDDEN = (("fc1", "fc2"), ("fc2", "fc3"))      # (layer, the layer that reads it)


def hidden_activations(p: dict, x: torch.Tensor, skip: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(fc1 output, fc2 output, the features fc3 reads) of minimalRL's Q-network on parameters ``p``."""
    h1 = F.relu(F.linear(x, p["fc1.weight"], p["fc1.bias"]))
    h2 = F.relu(F.linear(h1, p["fc2.weight"], p["fc2.bias"]))
    return h1, h2, h2 + h1 if skip else h2


def dormant_scores(h: torch.Tensor) -> torch.Tensor:
    """ReDo's score per unit of one layer's activations ``h`` [batch, units]; all zero if the layer is silent."""
    mean = h.abs().mean(0)
    total = mean.mean()
    return mean / total if total > 0 else torch.zeros_like(mean)


@torch.no_grad()
def redo(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, tau: float,
         fresh: torch.nn.Module, skip: bool) -> int:
    """Recycle the dormant units of fc1 and fc2 (see the module docstring); returns how many."""
    params = dict(model.named_parameters())
    fresh_params = dict(fresh.named_parameters())
    h1, h2, _ = hidden_activations(params, x, skip)
    recycled = 0
    # fc2 before fc1: where a recycled fc1 unit feeds a recycled fc2 unit, the weight between them ends zero
    # (every recycled unit's outgoing weights are zero; scores all come from the activations before any change)
    for (layer, reader), h in reversed(list(zip(HIDDEN, (h1, h2)))):
        units = torch.nonzero(dormant_scores(h) <= tau).flatten()
        if len(units) == 0:
            continue
        recycled += len(units)
        # with the skip connection fc3 reads fc1's units too (summed with fc2's units of the same index)
        readers = [reader, "fc3"] if skip and layer == "fc1" else [reader]
        entries = [(f"{layer}.weight", (units, slice(None)), True), (f"{layer}.bias", (units,), True)]
        entries += [(f"{r}.weight", (slice(None), units), False) for r in readers]
        for name, idx, incoming in entries:
            p = params[name]
            p[idx] = fresh_params[name][idx] if incoming else 0.0
            state = opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][idx] = 0.0
    return recycled


@torch.no_grad()
def soft_shrink_perturb(model: torch.nn.Module, alpha: float, generator: torch.Generator) -> None:
    """``W <- (1 - alpha) W + alpha * W_fresh`` for every Linear, ``W_fresh`` a fresh draw of PyTorch's default
    initialisation (weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)))."""
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features)
            for p in (m.weight, m.bias):
                fresh = torch.rand(p.shape, generator=generator).mul_(2 * bound).sub_(bound)
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
    h1, h2, features = hidden_activations(p, x, skip)
    q = F.linear(features, p["fc3.weight"], p["fc3.bias"])
    dormant = [float((dormant_scores(h) <= tau).double().mean()) for h in (h1, h2)]
    return {"dormant_fraction": float(np.mean(dormant)), "dormant_fc1": dormant[0], "dormant_fc2": dormant[1],
            "srank": srank(features), "weight_norm": float(math.sqrt(sum(float((t * t).sum()) for t in p.values()))),
            "action_entropy": action_entropy(q), "q_mean": float(q.mean())}


@functools.lru_cache(maxsize=2)
def probe_states(n: int = 512, seed: int = 12_345) -> torch.Tensor:
    """A fixed batch of CartPole-v1 states from uniformly random play (the same for every run and arm)."""
    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(seed)
    states, episode = [], 0
    s, _ = env.reset(seed=seed)
    while len(states) < n:
        states.append(s)
        s, _, terminated, truncated, _ = env.step(int(rng.integers(2)))
        if terminated or truncated:
            episode += 1
            s, _ = env.reset(seed=derive_seed(seed, episode))
    env.close()
    return torch.as_tensor(np.array(states), dtype=torch.float32)
