"""Where theory puts the He scale for a given activation.

Method: for a layer ``y = W x`` with ``W ~ N(0, s^2 * 2 / fan_in)`` and pre-activations
``z ~ N(0, 1)``, the next layer's pre-activation variance is ``2 s^2 E[phi(z)^2]``. It
stays 1 (the second moment is preserved) when ``s = 1 / sqrt(2 E[phi(z)^2])``; for ReLU
``E[relu(z)^2] = 1/2`` gives He's ``s = 1``. Variants: using ``Var[phi(z)]`` instead of the
second moment, and the backward criterion ``E[phi'(z)^2]`` (gradient variance preserved).
Expectations under N(0, 1) are computed with Gauss-Hermite quadrature (probabilists'
Hermite, 200 nodes), exact to ~1e-12 for these smooth integrands.
"""
from __future__ import annotations

import numpy as np
import torch

from rlinit_lib.initialisation.activations import ACTIVATIONS
from rlinit_lib.core.params import check_choice, check_int


def gaussian_expectation(fn, nodes: int = 200) -> float:
    """E[fn(z)] for z ~ N(0, 1) by Gauss-Hermite quadrature."""
    check_int("nodes", nodes, low=2)
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    return float(np.sum(w * fn(z)) / np.sum(w))


def _phi_and_derivative(activation: str):
    check_choice("activation", activation, ACTIVATIONS)
    act = ACTIVATIONS[activation]()

    def phi(z):
        return act(torch.as_tensor(z, dtype=torch.float64)).numpy()

    def dphi(z):
        t = torch.as_tensor(z, dtype=torch.float64).requires_grad_(True)
        (g,) = torch.autograd.grad(act(t).sum(), t)
        return g.numpy()

    return phi, dphi


def critical_scales(activation: str = "silu") -> dict:
    """Scales (relative to He's sqrt(2/fan_in)) that preserve signal under three criteria."""
    phi, dphi = _phi_and_derivative(activation)
    second = gaussian_expectation(lambda z: phi(z) ** 2)
    mean = gaussian_expectation(phi)
    grad2 = gaussian_expectation(lambda z: dphi(z) ** 2)
    return {
        "activation": activation,
        "E[phi^2]": second, "Var[phi]": second - mean ** 2, "E[phi'^2]": grad2,
        "second_moment": 1 / np.sqrt(2 * second),
        "variance": 1 / np.sqrt(2 * (second - mean ** 2)),
        "backward": 1 / np.sqrt(2 * grad2),
    }
