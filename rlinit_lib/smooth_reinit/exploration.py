"""Exploration methods that smooth re-initialisation competes with, for minimalRL's DQN (notebook 04).

* **NoisyNet** (Fortunato et al., ICLR 2018, Sec. 3.1-3.2): a noisy linear layer is
  ``w = mu_w + sigma_w * eps_w`` and ``b = mu_b + sigma_b * eps_b`` with learned ``mu`` and ``sigma`` and
  factorised Gaussian noise ``eps_w = f(eps_out) f(eps_in)^T``, ``eps_b = f(eps_out)``, ``f(x) = sgn(x)
  sqrt(|x|)``. Initialisation: ``mu ~ U[-1/sqrt(p), 1/sqrt(p)]``, ``sigma = sigma0 / sqrt(p)`` with ``p`` the
  layer's inputs and ``sigma0 = 0.5``. Acting uses epsilon = 0 and fresh noise at every step; each update
  draws fresh noise for the online and, independently, for the target network. The noisy weights are
  formed (:func:`noisy_weights`) and the Q-network's one forward runs on them, so the same formula serves
  one network (:class:`NoisyQNet`) and a stack of runs (``dqn_batched``, :func:`effective_params`).
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
  On MinAtar fc1 is the convolution, so this is exactly the paper's placement (the dense layers noisy).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rlinit_lib.core.params import check_float
from rlinit_lib.smooth_reinit.plasticity import qnet_layers

NOISY = ("fc2", "fc3")      # the noisy layers of the Q-network


def _f(x: torch.Tensor) -> torch.Tensor:
    return x.sign() * x.abs().sqrt()


def noise_size(p: dict) -> int:
    """Length of one draw of factorised noise for the noisy layers of parameters ``p`` (sum of in + out)."""
    return sum(sum(p[f"{layer}.weight_mu"].shape[-2:]) for layer in NOISY)


def draw_noise(n: int, generator: torch.Generator) -> torch.Tensor:
    """``f(eps)`` for every noisy layer at once: per layer ``f(eps_in)`` then ``f(eps_out)``, in ``NOISY`` order."""
    return _f(torch.randn(n, generator=generator))


def noisy_weights(w_mu, b_mu, w_sigma, b_sigma, f_in, f_out) -> tuple[torch.Tensor, torch.Tensor]:
    """The noisy layer's (weight, bias): ``mu + sigma * f(eps_out) f(eps_in)^T`` and ``mu_b + sigma_b * f(eps_out)``;
    any leading axes (a stack of runs) broadcast."""
    return w_mu + w_sigma * (f_out.unsqueeze(-1) * f_in.unsqueeze(-2)), b_mu + b_sigma * f_out


def layer_noise(p: dict, f_eps: torch.Tensor):
    """(layer, f(eps_in), f(eps_out)) of each noisy layer, cut from one draw ``f_eps`` (``draw_noise``'s layout)."""
    start = 0
    for layer in NOISY:
        n_out, n_in = p[f"{layer}.weight_mu"].shape[-2:]
        yield layer, f_eps[..., start:start + n_in], f_eps[..., start + n_in:start + n_in + n_out]
        start += n_in + n_out


def effective_params(p: dict, f_eps: torch.Tensor) -> dict:
    """The ordinary Q-network parameters (``fc1.weight`` ... ``fc3.bias``) of NoisyNet parameters ``p`` with
    noise ``f_eps`` ([..., n] for a stack of runs)."""
    out = {"fc1.weight": p["fc1.weight"], "fc1.bias": p["fc1.bias"]}
    for layer, f_in, f_out in layer_noise(p, f_eps):
        out[f"{layer}.weight"], out[f"{layer}.bias"] = noisy_weights(
            *(p[f"{layer}.{k}"] for k in ("weight_mu", "bias_mu", "weight_sigma", "bias_sigma")), f_in, f_out)
    return out


def noisy_gradients(grads: dict, p: dict, f_eps: torch.Tensor) -> dict:
    """The gradients of NoisyNet parameters ``p`` from those of their ``effective_params`` (``grads``) with noise
    ``f_eps``: ``noisy_weights``' chain rule, the products autograd forms (``d mu = d w``, ``d sigma = d w * eps``)."""
    out = {"fc1.weight": grads["fc1.weight"], "fc1.bias": grads["fc1.bias"]}
    for layer, f_in, f_out in layer_noise(p, f_eps):
        g_w, g_b = grads[f"{layer}.weight"], grads[f"{layer}.bias"]
        out[f"{layer}.weight_mu"], out[f"{layer}.bias_mu"] = g_w, g_b
        out[f"{layer}.weight_sigma"] = g_w * (f_out.unsqueeze(-1) * f_in.unsqueeze(-2))
        out[f"{layer}.bias_sigma"] = g_b * f_out
    return out


def mean_params(p: dict) -> dict:
    """NoisyNet parameters without noise (the ``mu``s), under the ordinary names: what diagnostics look at."""
    return {"fc1.weight": p["fc1.weight"], "fc1.bias": p["fc1.bias"],
            **{f"{n}.{k}": p[f"{n}.{k}_mu"] for n in NOISY for k in ("weight", "bias")}}


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
        self.set_noise(draw_noise(self.eps_in.numel() + self.eps_out.numel(), generator))

    def set_noise(self, f_eps: torch.Tensor) -> None:
        """Take ``f(eps_in)`` and ``f(eps_out)`` from one vector, in place (no module attribute is replaced)."""
        self.eps_in.copy_(f_eps[:self.eps_in.numel()])
        self.eps_out.copy_(f_eps[self.eps_in.numel():])

    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) with the current noise."""
        return noisy_weights(self.weight_mu, self.bias_mu, self.weight_sigma, self.bias_sigma, self.eps_in, self.eps_out)

    def forward(self, x):
        return F.linear(x, *self.effective())


class NoisyQNet(nn.Module):
    """The task's Q-network (``tasks.Task.qnet_layers``; CartPole: minimalRL's 4-128-128-2) with noisy fc2 and fc3
    (fc1, the torso, stays ordinary). The forward is the Q-network's one forward (``plasticity.qnet_layers``) on
    ``params()``, the weights with the current noise."""

    def __init__(self, skip: bool = False, sigma0: float = 0.5, task="CartPole-v1"):
        from rlinit_lib.smooth_reinit.tasks import get_task, make_layer

        super().__init__()
        layers = get_task(task).qnet_layers if isinstance(task, str) else task.qnet_layers
        self.fc1 = make_layer(layers[0])
        self.fc2, self.fc3 = (NoisyLinear(spec[1], spec[2], sigma0) for spec in layers[1:])
        self.skip = skip

    def resample(self, generator: torch.Generator) -> None:
        """Fresh noise for every noisy layer, drawn at once (``draw_noise``)."""
        layers = [getattr(self, n) for n in NOISY]
        sizes = [layer.eps_in.numel() + layer.eps_out.numel() for layer in layers]
        for layer, f_eps in zip(layers, draw_noise(sum(sizes), generator).split(sizes)):
            layer.set_noise(f_eps)

    def params(self) -> dict:
        """The ordinary Q-network parameters with the current noise."""
        out = {"fc1.weight": self.fc1.weight, "fc1.bias": self.fc1.bias}
        for n in NOISY:
            out[f"{n}.weight"], out[f"{n}.bias"] = getattr(self, n).effective()
        return out

    def forward(self, x):
        return qnet_layers(x, self.params(), self.skip)[-1]

    def mean_params(self) -> dict:
        return mean_params(dict(self.named_parameters()))


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
