"""Smooth re-initialisation: multiplicative weight noise injected on every forward pass.

Source: "Smooth Re-Initializations" (github Eternalyze0/smooth_reinits, July 2025), inspired by
the primacy-bias paper (arXiv 2205.07802). Before each forward pass of the wrapped module the
chosen parameters are perturbed in place, ``W <- W + randn_like(W) * W * sigma``, and then
``sigma <- sigma * decay``. The change is persistent (the weights themselves move), as in the
source; with decay 0.5 and sigma 1.0 this amounts to one heavy-tailed re-randomisation early on.
``sigma`` is a plain attribute, not in ``state_dict`` (target-network syncs do not reset it),
again as in the source.

Reference points from the literature: ``shrink_and_perturb`` (``W <- lambda W + p * fresh init``)
and ``reset_parameters_of`` (e.g. a periodic reset of the last layer).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from rlinit_lib.core.params import ParameterError, check_choice, check_float, check_int


class WeightNoise:
    """Forward pre-hook adding multiplicative Gaussian noise to named parameters of ``model``.

    ``names``: parameter names (``model.named_parameters()``), e.g. ``["fc3.weight", "fc3.bias"]``.
    ``schedule(step) -> sigma`` replaces the geometric decay when given (step = forwards so far).
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
        check_float("sigma", sigma, low=0.0)
        check_float("decay", decay, low=0.0, high=1.0)
        check_choice("in_eval", in_eval, (True, False))
        self.params = [params[n] for n in names]
        self.names, self.sigma, self.decay, self.schedule, self.in_eval = names, float(sigma), decay, schedule, in_eval
        self.steps = 0
        dev = self.params[0].device
        self.generator = torch.Generator(device=dev).manual_seed(seed)
        self.handle = model.register_forward_pre_hook(self._hook)

    @torch.no_grad()
    def _hook(self, module: nn.Module, _inputs):
        if not module.training and not self.in_eval:
            return
        sigma = self.schedule(self.steps) if self.schedule is not None else self.sigma
        if sigma > 0:
            for p in self.params:
                p.add_(torch.randn(p.shape, generator=self.generator, device=p.device, dtype=p.dtype) * p * sigma)
        self.steps += 1
        if self.schedule is None:
            self.sigma *= self.decay

    def remove(self) -> None:
        self.handle.remove()


@torch.no_grad()
def shrink_and_perturb(model: nn.Module, fresh: nn.Module, shrink: float = 0.4, perturb: float = 0.1,
                       names: Iterable[str] | None = None) -> None:
    """``W <- shrink * W + perturb * W_fresh`` for the named parameters (all when ``names`` is None);
    ``fresh`` is a newly initialised copy of the architecture (Ash & Adams' shrink-and-perturb)."""
    check_float("shrink", shrink, low=0.0, high=1.0)
    check_float("perturb", perturb, low=0.0)
    fresh_params = dict(fresh.named_parameters())
    for n, p in model.named_parameters():
        if names is None or n in set(names):
            p.mul_(shrink).add_(fresh_params[n], alpha=perturb)


def reset_parameters_of(module: nn.Module) -> None:
    """Re-initialise a layer (e.g. the last layer) with its own ``reset_parameters``."""
    if not hasattr(module, "reset_parameters"):
        raise ParameterError(f"module must have reset_parameters (got {type(module).__name__})")
    module.reset_parameters()


def every(n: int) -> Callable[[int], bool]:
    """A periodic trigger: ``every(200)(episode)`` is True on episodes 200, 400, ..."""
    check_int("period", n, low=1)
    return lambda i: i > 0 and i % n == 0
