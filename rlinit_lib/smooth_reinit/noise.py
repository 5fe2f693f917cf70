"""Smooth re-initialisation: multiplicative weight noise injected on every forward pass, and the
re-initialisations from the literature it is compared with.

Source: "Smooth Re-Initializations" (github Eternalyze0/smooth_reinits, July 2025), inspired by
the primacy-bias paper (arXiv 2205.07802). Before each forward pass the chosen parameters are
perturbed in place, ``W <- W + randn_like(W) * W * sigma``, and then ``sigma <- sigma * decay``. The
change is persistent (the weights themselves move), as in the source; with decay 0.5 and sigma 1.0
this amounts to one heavy-tailed re-randomisation early on. ``sigma`` is plain state, not in
``state_dict`` (target-network syncs do not reset it), again as in the source.

The one mechanism is :class:`MultiplicativeNoise` (sigma, its decay or schedule, its generator), applied
to a list of tensors: :class:`WeightNoise` fires it as a forward pre-hook of an ``nn.Module`` (the faithful
DQN, the char-GPT); the batched DQN holds one per run and applies it to that run's rows of a parameter table.

Reference points from the literature: :func:`shrink_perturb_` (Ash & Adams 2020: ``W <- lambda W + p *
fresh init``, on a dict of parameters; :func:`shrink_and_perturb` for a module) and
:func:`reset_parameters_of` (e.g. a periodic reset of the last layer).
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from rlinit_lib.core.params import ParameterError, check_choice, check_float


class MultiplicativeNoise:
    """``W <- W + randn * W * sigma`` for a list of tensors, then ``sigma <- sigma * decay``
    (``schedule(step) -> sigma`` replaces the decay when given; step = applications so far). A sigma of 0
    draws nothing."""

    def __init__(self, sigma: float = 1.0, decay: float = 1.0, schedule: Callable[[int], float] | None = None,
                 seed: int = 0, device: torch.device | str = "cpu"):
        check_float("sigma", sigma, low=0.0)
        check_float("decay", decay, low=0.0, high=1.0)
        self.sigma, self.decay, self.schedule, self.steps = float(sigma), decay, schedule, 0
        self.generator = torch.Generator(device=device).manual_seed(int(seed))

    @property
    def live(self) -> bool:
        """Whether a further application can change anything."""
        return self.schedule is not None or self.sigma > 0

    def apply(self, tensors: Iterable[torch.Tensor]) -> None:
        if torch.is_grad_enabled():     # (a no_grad context per call costs more than the batched DQN's arithmetic)
            with torch.no_grad():
                return self.apply(tensors)
        sigma = self.schedule(self.steps) if self.schedule is not None else self.sigma
        if sigma > 0:
            for p in tensors:
                p.add_(torch.randn(p.shape, generator=self.generator, device=p.device, dtype=p.dtype) * p * sigma)
        self.steps += 1
        if self.schedule is None:
            self.sigma *= self.decay


class WeightNoise:
    """Forward pre-hook applying :class:`MultiplicativeNoise` to named parameters of ``model``.

    ``names``: parameter names (``model.named_parameters()``), e.g. ``["fc3.weight", "fc3.bias"]``.
    ``in_eval``: also perturb in eval mode (the source does, for the GPT's evaluation too).
    """

    def __init__(self, model: nn.Module, names: Iterable[str], sigma: float = 1.0, decay: float = 1.0,
                 schedule: Callable[[int], float] | None = None, in_eval: bool = True, seed: int = 0):
        params = dict(model.named_parameters())
        names = list(names)
        if not names:
            raise ParameterError("names must list at least one parameter of the model (got none)")
        for n in names:
            check_choice("names", n, params)
        check_choice("in_eval", in_eval, (True, False))
        self.params = [params[n] for n in names]
        self.names, self.in_eval = names, in_eval
        self.noise = MultiplicativeNoise(sigma, decay, schedule, seed, self.params[0].device)
        self.handle = model.register_forward_pre_hook(self._hook)

    sigma = property(lambda self: self.noise.sigma)
    steps = property(lambda self: self.noise.steps)
    generator = property(lambda self: self.noise.generator)

    def _hook(self, module: nn.Module, _inputs):
        if module.training or self.in_eval:
            self.noise.apply(self.params)

    def remove(self) -> None:
        self.handle.remove()


@torch.no_grad()
def shrink_perturb_(params: Mapping[str, torch.Tensor], fresh: Mapping[str, torch.Tensor], shrink: float,
                    perturb: float, names: Iterable[str] | None = None) -> None:
    """``W <- shrink * W + perturb * W_fresh`` in place for the named entries of ``params`` (all when
    ``names`` is None); ``fresh``: a newly initialised network's parameters under the same names."""
    check_float("shrink", shrink, low=0.0, high=1.0)
    check_float("perturb", perturb, low=0.0)
    names = set(params if names is None else names)
    for n, p in params.items():
        if n in names:
            p.mul_(shrink).add_(fresh[n], alpha=perturb)


def shrink_and_perturb(model: nn.Module, fresh: nn.Module, shrink: float = 0.4, perturb: float = 0.1,
                       names: Iterable[str] | None = None) -> None:
    """:func:`shrink_perturb_` for a module and a freshly initialised copy of its architecture."""
    shrink_perturb_(dict(model.named_parameters()), dict(fresh.named_parameters()), shrink, perturb, names)


def reset_parameters_of(module: nn.Module) -> None:
    """Re-initialise a layer (e.g. the last layer) with its own ``reset_parameters``."""
    if not hasattr(module, "reset_parameters"):
        raise ParameterError(f"module must have reset_parameters (got {type(module).__name__})")
    module.reset_parameters()
