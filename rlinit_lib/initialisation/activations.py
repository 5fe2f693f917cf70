"""Activations by name, shared by the child networks and the signal-propagation theory.

SiLU is the dissertation's activation (Table 3.1); ReLU (He's derivation), GELU and tanh are for
comparison.
"""
from __future__ import annotations

from torch import nn

from rlinit_lib.core.params import check_choice

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def make_activation(name: str) -> nn.Module:
    check_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()
