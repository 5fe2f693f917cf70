"""Data-driven initialisers that practitioners use instead of searching a scale: LSUV, GradInit and
MetaInit, for any network of Conv2d/Linear layers with a cross-entropy loss, plus the effective per-layer
scale ``s_l = std(W_l) / sqrt(2 / fan_in)`` that places any initialisation on the He-scale axis.

* **LSUV** (Mishkin & Matas, ICLR 2016, Alg. 1): orthonormal weights, then layer by layer rescale the
  weights until the layer's output variance on one batch is 1 within ``tolerance``. Uses the maintained
  ``lsuv`` package (PyPI, by the paper's first author); its tolerance is on the standard deviation, so
  the paper's variance tolerance ``t`` is passed as ``sqrt(1 + t) - 1``, which keeps the variance in
  ``[1 - t, 1 + t]``. Its orthonormal draw uses torch's global generator, seeded here from ``seed``.
* **GradInit** (Zhu et al., NeurIPS 2021; reference code zhuchen03/gradinit, read, not copied): one
  scalar ``alpha`` per weight tensor, ``W = alpha * W0``, learned with Adam so that the loss on a second
  batch after one optimiser step (``theta - eta * step``) is lowest, under the constraint that the
  gradient norm stays below ``gamma``: an iteration whose gradient norm exceeds ``gamma`` lowers the norm
  instead. Defaults are the reference's CIFAR settings: the SGD variant with a normalised gradient, eta
  0.1, gamma 1, Adam lr 1e-2 on alpha with gradient clipping 1, alpha >= 0.01, one epoch of batches; the
  second batch shares its first half with the first. ``alg="adam"`` takes Adam's first step,
  ``eta * sign(g)``, with the L1 norm.
* **MetaInit** (Dauphin & Schoenholz, NeurIPS 2019): rescale the norm of every weight tensor (ndim >= 2)
  to minimise the gradient quotient ``GQ = mean |(g - Hg) / g - 1|`` (``Hg`` a Hessian-vector product;
  ``g - Hg`` is the gradient after a unit SGD step to first order), by sign-SGD with momentum on the
  norms (lr 0.1, momentum 0.9, eps 1e-5, 500 steps in the paper), on Gaussian inputs with random
  labels as in the paper's code.

Each returns an :class:`InitCost`: wall seconds and the images pushed through forward and backward
passes (a double-backward sweep counts as one backward pass).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from rlinit_lib.core.params import ParameterError, check_choice, check_float, check_int
from rlinit_lib.initialisation.initialisers import fan_in

LAYERS = (nn.Conv2d, nn.Linear)


@dataclass
class InitCost:
    """What an initialiser spent before training."""

    seconds: float = 0.0
    forward_images: int = 0
    backward_images: int = 0

    def epoch_equivalents(self, n_train: int) -> float:
        """Passes in units of one training epoch (a backward pass costs about two forward passes)."""
        return (self.forward_images + 2 * self.backward_images) / (3 * n_train)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LAYERS)]


def effective_scales(model: nn.Module) -> list[dict]:
    """Per Conv2d/Linear layer: ``s_l = std(W_l) / sqrt(2 / fan_in)``, the He scale its weights amount to."""
    rows = []
    for i, (name, m) in enumerate(weight_layers(model)):
        w = m.weight.detach()
        rows.append({"layer_index": i, "layer": name, "kind": type(m).__name__, "fan_in": fan_in(w),
                     "weights": w.numel(), "std": float(w.std()), "s": float(w.std() / math.sqrt(2.0 / fan_in(w)))})
    return rows


def layer_output_stds(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Std (over batch and units, in float64) of every Conv2d/Linear output (pre-activation) for one batch, in
    forward order: what LSUV equalises, and 07's activation-stability reward."""
    out = []
    handles = [m.register_forward_hook(lambda _m, _i, o: out.append(o.detach().double().std().item()))
               for _, m in weight_layers(model)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return out


class EpochBatches:
    """What a data-driven initialiser reads of the training data: ``batch(i)`` is training batch i of one seeded
    pass (``order``, a permutation of the training indices, cut into ``batch_size`` pieces; ``i`` cycles through
    the ``per_epoch`` batches of the pass), as ``(prepare(x), y)``; ``input_shape`` and ``num_classes`` describe
    the data for initialisers that draw their own inputs (MetaInit). Training and its initialiser then see the
    same images in the same order when ``order`` is the training run's first epoch (notebook 06), or a stream of
    their own (07)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, batch_size: int, num_classes: int,
                 prepare: Callable[[torch.Tensor], torch.Tensor] = lambda t: t):
        check_int("batch_size", batch_size, low=1)
        self.x, self.y, self.order, self.batch_size, self.prepare = x, y, order.to(x.device), batch_size, prepare
        self.per_epoch = math.ceil(len(order) / batch_size)
        self.input_shape, self.num_classes = tuple(x.shape[1:]), int(num_classes)

    def __call__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = i % self.per_epoch
        idx = self.order[j * self.batch_size:(j + 1) * self.batch_size]
        return self.prepare(self.x[idx]), self.y[idx]


def _count_forwards(model: nn.Module, cost: InitCost):
    return model.register_forward_pre_hook(
        lambda _m, args: setattr(cost, "forward_images", cost.forward_images + len(args[0])))


def lsuv_init(model: nn.Module, x: torch.Tensor, tolerance: float = 0.1, max_attempts: int = 10,
              seed: int = 0) -> InitCost:
    """LSUV in place on batch ``x`` (see the module docstring); ``tolerance`` on each layer's output variance."""
    check_float("lsuv_tolerance", tolerance, low=0.0, low_open=True)
    check_int("max_attempts", max_attempts, low=1)
    try:
        from lsuv import lsuv_with_singlebatch
    except ImportError:
        raise ParameterError("arm 'lsuv' needs the lsuv package: pip install lsuv") from None
    cost = InitCost()
    handle = _count_forwards(model, cost)
    start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            lsuv_with_singlebatch(model, x, needed_std=1.0, std_tol=math.sqrt(1.0 + tolerance) - 1.0,
                                  max_attempts=max_attempts, do_orthonorm=True, verbose=False, device=x.device)
    finally:
        handle.remove()
    cost.seconds = time.perf_counter() - start
    return cost


def _loss(model, params, x, y):
    return F.cross_entropy(functional_call(model, params, (x,)).float(), y)


def gradinit_objective(model: nn.Module, params: dict, x: torch.Tensor, y: torch.Tensor, x2: torch.Tensor,
                       y2: torch.Tensor, eta: float, alg: str = "sgd") -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient norm on (x, y), loss on (x2, y2) after one step of size ``eta``, divided by ``eta``)."""
    loss = _loss(model, params, x, y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    if alg == "sgd":
        gnorm = torch.sqrt(sum((g * g).sum() for g in grads))
        steps = [g.detach() / gnorm.detach() for g in grads]      # normalised, detached step (the reference's)
    else:
        gnorm = sum(g.abs().sum() for g in grads)
        steps = [g.detach().sign() for g in grads]                # Adam's first step
    after = {n: p - eta * s for (n, p), s in zip(params.items(), steps)}
    return gnorm, _loss(model, after, x2, y2) / eta


def gradinit(model: nn.Module, batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]], iters: int,
             lr: float = 1e-2, eta: float = 0.1, gamma: float = 1.0, min_scale: float = 0.01, grad_clip: float = 1.0,
             alg: str = "sgd") -> InitCost:
    """GradInit in place (see the module docstring). ``batch(i)`` gives training batch i; iteration t uses
    batch 2t for the gradient and the first half of it with the first half of batch 2t + 1 for the loss
    after the step."""
    check_int("gradinit_iters", iters, low=1)
    check_float("gradinit_lr", lr, low=0.0, low_open=True)
    check_float("gradinit_eta", eta, low=0.0, low_open=True)
    check_float("gradinit_gamma", gamma, low=0.0, low_open=True)
    check_float("gradinit_min_scale", min_scale, low=0.0)
    check_choice("gradinit_alg", alg, ("sgd", "adam"))
    start, cost = time.perf_counter(), InitCost()
    base = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}  # biases step too
    scaled = {f"{n}.weight" for n, _ in weight_layers(model)}
    alpha = {n: torch.ones((), device=base[n].device, requires_grad=True) for n in scaled}
    opt = torch.optim.Adam(alpha.values(), lr=lr)
    for t in range(iters):
        x, y = batch(2 * t)
        xn, yn = batch(2 * t + 1)
        half = len(y) // 2
        x2, y2 = torch.cat([x[:half], xn[:len(y) - half]]), torch.cat([y[:half], yn[:len(y) - half]])
        params = {n: alpha[n] * w.detach() if n in alpha else w for n, w in base.items()}
        gnorm, after = gradinit_objective(model, params, x, y, x2, y2, eta, alg)
        objective = gnorm if gnorm.item() > gamma else after      # the constraint first
        opt.zero_grad()
        objective.backward()
        torch.nn.utils.clip_grad_norm_(alpha.values(), grad_clip)
        opt.step()
        with torch.no_grad():
            for a in alpha.values():
                a.clamp_(min=min_scale)
        cost.forward_images += len(y) + (len(y2) if objective is after else 0)
        cost.backward_images += 2 * len(y) if objective is gnorm else len(y) + len(y2)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in alpha:
                p.copy_(alpha[n] * base[n].detach())
    cost.seconds = time.perf_counter() - start
    return cost


def gradient_quotient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 1e-5,
                      create_graph: bool = True) -> torch.Tensor:
    """MetaInit's gradient quotient of the cross-entropy on (x, y) over all parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = F.cross_entropy(model(x).float(), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    hg = torch.autograd.grad(sum((g * g).sum() / 2 for g in grads), params, create_graph=create_graph)
    quotient = sum(((g - h) / (g + eps * torch.where(g >= 0, 1.0, -1.0).detach()) - 1).abs().sum()
                   for g, h in zip(grads, hg))
    return quotient / sum(p.numel() for p in params)


def metainit(model: nn.Module, input_shape: tuple, num_classes: int, steps: int = 500, batch_size: int = 32,
             lr: float = 0.1, momentum: float = 0.9, eps: float = 1e-5, seed: int = 0) -> InitCost:
    """MetaInit in place (see the module docstring); each step draws a fresh Gaussian batch from ``seed``."""
    check_int("metainit_steps", steps, low=1)
    check_int("metainit_batch", batch_size, low=1)
    check_float("metainit_lr", lr, low=0.0, low_open=True)
    check_float("metainit_momentum", momentum, low=0.0, high=1.0, high_open=True)
    start, cost = time.perf_counter(), InitCost()
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    weights = [p for p in model.parameters() if p.ndim >= 2]
    memory = [0.0] * len(weights)
    for _ in range(steps):
        x = torch.randn((batch_size, *input_shape), generator=g).to(dev)
        y = torch.randint(0, num_classes, (batch_size,), generator=g).to(dev)
        gq = gradient_quotient(model, x, y, eps)
        grads = torch.autograd.grad(gq, weights)
        with torch.no_grad():
            for j, (p, gp) in enumerate(zip(weights, grads)):
                norm = p.norm()
                memory[j] = momentum * memory[j] - lr * float(torch.sign((p * gp).sum() / norm))
                p.mul_((norm + memory[j]) / norm)
        cost.forward_images += batch_size
        cost.backward_images += 3 * batch_size      # gradient, Hessian-vector product, gradient of GQ
    cost.seconds = time.perf_counter() - start
    return cost
