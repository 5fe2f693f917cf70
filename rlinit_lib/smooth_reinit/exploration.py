"""Exploration methods that smooth re-initialisation competes with, for minimalRL's DQN (notebook 04).

* **NoisyNet** (Fortunato et al., ICLR 2018, Sec. 3.1-3.2): a noisy linear layer is
  ``w = mu_w + sigma_w * eps_w`` and ``b = mu_b + sigma_b * eps_b`` with learned ``mu`` and ``sigma`` and
  factorised Gaussian noise ``eps_w = f(eps_out) f(eps_in)^T``, ``eps_b = f(eps_out)``, ``f(x) = sgn(x)
  sqrt(|x|)``. Initialisation: ``mu ~ U[-1/sqrt(p), 1/sqrt(p)]``, ``sigma = sigma0 / sqrt(p)`` with ``p`` the
  layer's inputs and ``sigma0 = 0.5``. Acting uses epsilon = 0 and fresh noise at every step; each update
  draws fresh noise for the online and, independently, for the target network.
* **Parameter-space noise** (Plappert et al., ICLR 2018, Sec. 3): each episode acts greedily with a copy of
  the Q-network whose parameters are perturbed by ``N(0, sigma^2)``; ``sigma`` adapts so that the perturbed
  and unperturbed policies differ by a target distance: with ``d = KL(softmax(Q) || softmax(Q~))`` on states
  from the replay buffer, ``sigma <- alpha * sigma`` when ``d < delta`` and ``sigma / alpha`` otherwise
  (``alpha = 1.01``), where ``delta = -log(1 - eps + eps / |A|)`` is the distance that epsilon-greedy with
  ``eps`` would give (``eps`` from minimalRL's schedule, as the paper matches a decaying epsilon).
  Deviations: no layer normalisation (the paper adds it to perturbed layers), so the Q-network stays
  minimalRL's; and the softmax is taken of Q in the environment's reward units (minimalRL learns Q of
  reward / 100, whose softmax is nearly flat: there a perturbation that flips 60% of the greedy actions
  still measured below the epsilon = 0.05 target, so sigma would grow without bound).
* NoisyNet's torso stays deterministic: fc1 is an ordinary layer and fc2, fc3 are noisy, as the paper makes
  the layers after its convolutional torso noisy (with fc1 noisy too, CartPole's small inputs drowned in noise).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rlinit_lib.core.params import check_float


def _f(x: torch.Tensor) -> torch.Tensor:
    return x.sign() * x.abs().sqrt()


class NoisyLinear(nn.Module):
    """A linear layer with factorised Gaussian noise (see the module docstring)."""

    def __init__(self, in_features: int, out_features: int, sigma0: float = 0.5):
        super().__init__()
        check_float("noisy_sigma0", sigma0, low=0.0)
        bound = 1.0 / math.sqrt(in_features)
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.bias_mu = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.weight_sigma = nn.Parameter(torch.full((out_features, in_features), sigma0 * bound))
        self.bias_sigma = nn.Parameter(torch.full((out_features,), sigma0 * bound))
        self.register_buffer("eps_in", torch.zeros(in_features))
        self.register_buffer("eps_out", torch.zeros(out_features))

    def resample(self, generator: torch.Generator) -> None:
        self.set_noise(_f(torch.randn(self.eps_in.numel() + self.eps_out.numel(), generator=generator)))

    def set_noise(self, f_eps: torch.Tensor) -> None:
        """Take ``f(eps_in)`` and ``f(eps_out)`` from one vector, in place (no module attribute is replaced)."""
        self.eps_in.copy_(f_eps[:self.eps_in.numel()])
        self.eps_out.copy_(f_eps[self.eps_in.numel():])

    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) with the current noise (``forward`` computes the same without forming the weight)."""
        return (self.weight_mu + self.weight_sigma * torch.outer(self.eps_out, self.eps_in),
                self.bias_mu + self.bias_sigma * self.eps_out)

    def forward(self, x):
        # (sigma * eps_out eps_in^T) x = eps_out * (sigma (eps_in * x)): two products, no [out, in] noise matrix
        noise = F.linear(x * self.eps_in, self.weight_sigma) * self.eps_out
        return F.linear(x, self.weight_mu, self.bias_mu + self.bias_sigma * self.eps_out) + noise


class NoisyQNet(nn.Module):
    """minimalRL's 4-128-128-2 Q-network with noisy fc2 and fc3 (fc1, the torso, stays ordinary);
    ``mean_params`` is the network without noise (what diagnostics look at)."""

    def __init__(self, skip: bool = False, sigma0: float = 0.5):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 128), NoisyLinear(128, 128, sigma0), NoisyLinear(128, 2, sigma0)
        self.skip = skip

    def resample(self, generator: torch.Generator) -> None:
        """Fresh noise for every noisy layer, drawn at once."""
        layers = (self.fc2, self.fc3)
        sizes = [layer.eps_in.numel() + layer.eps_out.numel() for layer in layers]
        for layer, f_eps in zip(layers, _f(torch.randn(sum(sizes), generator=generator)).split(sizes)):
            layer.set_noise(f_eps)

    def forward(self, x):
        x = F.relu(self.fc1(x))
        h = F.relu(self.fc2(x))
        return self.fc3(h + x if self.skip else h)

    def mean_params(self) -> dict:
        return {"fc1.weight": self.fc1.weight, "fc1.bias": self.fc1.bias,
                **{f"{n}.{p}": getattr(getattr(self, n), f"{p}_mu") for n in ("fc2", "fc3") for p in ("weight", "bias")}}


def epsilon_threshold(epsilon: float, n_actions: int = 2) -> float:
    """The KL distance between a greedy policy and its epsilon-greedy version (Plappert et al., Sec. 3)."""
    return -math.log(1.0 - epsilon + epsilon / n_actions)


Q_SCALE = 100.0     # minimalRL stores reward / 100: Q * 100 is in the environment's reward units


def policy_distance(q: torch.Tensor, q_perturbed: torch.Tensor, scale: float = Q_SCALE) -> float:
    """Mean KL(softmax(scale * q) || softmax(scale * q_perturbed)) over a batch of states."""
    p = F.log_softmax(scale * q, dim=-1)
    return float((p.exp() * (p - F.log_softmax(scale * q_perturbed, dim=-1))).sum(-1).mean())


class ParameterNoise:
    """Adaptive parameter-space noise (see the module docstring)."""

    def __init__(self, sigma: float = 0.01, alpha: float = 1.01, seed: int = 0):
        check_float("param_noise_sigma", sigma, low=0.0, low_open=True)
        check_float("param_noise_alpha", alpha, low=1.0, low_open=True)
        self.sigma, self.alpha = float(sigma), float(alpha)
        self.generator = torch.Generator().manual_seed(seed)

    def perturbed(self, params: dict) -> dict:
        """A perturbed copy of ``params`` (name -> tensor), every entry with its own N(0, sigma^2) noise."""
        return {n: p.detach() + self.sigma * torch.randn(p.shape, generator=self.generator) for n, p in params.items()}

    def adapt(self, distance: float, target: float) -> float:
        """Move sigma toward the target distance; returns the new sigma."""
        self.sigma = self.sigma * self.alpha if distance < target else self.sigma / self.alpha
        return self.sigma
