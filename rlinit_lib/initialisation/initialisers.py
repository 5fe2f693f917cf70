"""Weight initialisers for Conv2d and Linear layers.

Source: the dissertation, Sec. 3.3. Scaled He-normal draws every Conv2d/Linear
weight from ``N(0, (s * sqrt(2 / fan_in))^2)`` with ``fan_in = in_channels * kh * kw``
(or ``in_features``) and sets biases to zero; ``s = 1`` is plain He (Kaiming) normal.
Xavier-uniform (biases zero) and PyTorch's default ``reset_parameters`` are kept for
comparison (the deep-RL part of the study).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from rlinit_lib.core.params import check_choice, check_float

INIT_METHODS = ("he_scaled", "xavier_uniform", "pytorch_default")
_LAYERS = (nn.Conv2d, nn.Linear)


def fan_in(weight: torch.Tensor) -> int:
    """Inputs feeding one output unit: ``in_channels * kh * kw`` or ``in_features``."""
    return int(weight[0].numel())


def he_std(weight: torch.Tensor, scale: float = 1.0) -> float:
    """Standard deviation of scaled He-normal: ``scale * sqrt(2 / fan_in)``."""
    return scale * math.sqrt(2.0 / fan_in(weight))


@torch.no_grad()
def scaled_he_normal_(weight: torch.Tensor, scale: float = 1.0, generator: torch.Generator | None = None):
    """In place: ``weight ~ N(0, (scale * sqrt(2/fan_in))^2)``."""
    return weight.normal_(0.0, he_std(weight, scale), generator=generator)


@torch.no_grad()
def initialise(
    model: nn.Module,
    method: str = "he_scaled",
    scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Initialise every Conv2d and Linear layer of ``model`` in place and return it.

    ``method``: ``he_scaled`` (uses ``scale``), ``xavier_uniform`` or ``pytorch_default``
    (``scale`` must then be 1). Biases are zero except under ``pytorch_default``.
    """
    check_choice("init", method, INIT_METHODS)
    check_float("scale", scale, low=0.0, low_open=True)
    if method != "he_scaled" and scale != 1.0:
        raise ValueError(f"scale must be 1.0 with init={method!r} (got {scale})")
    for module in model.modules():
        if not isinstance(module, _LAYERS):
            continue
        if method == "pytorch_default":
            module.reset_parameters()
            continue
        if method == "he_scaled":
            scaled_he_normal_(module.weight, scale, generator)
        else:
            fan_out = module.weight.shape[0] * module.weight[0, 0].numel()
            bound = math.sqrt(6.0 / (fan_in(module.weight) + fan_out))
            module.weight.uniform_(-bound, bound, generator=generator)
        if module.bias is not None:
            module.bias.zero_()
    return model
