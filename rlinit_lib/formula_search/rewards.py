"""The rewards a formula search can score candidates by: validation accuracy and the dissertation's richer signals.

Source: the dissertation's Sec. 6.4 / 7.4 names gradient-norm variance, the stability of activation statistics
across layers and the shape of the early loss curve as richer rewards than the proxy's accuracy; issue 27, item 4.
The signals follow signal-propagation analysis (Glorot & Bengio 2010; He et al. 2015; Schoenholz et al. 2017):
a well-initialised deep network keeps the scale of its forward signals and of its gradients about constant from
layer to layer. Each signal is cheap: the two init signals take one forward and one backward pass on a fixed
probe batch of *training* images (never test), the slope reuses the losses of the first training steps.

Every reward is "higher is better" (:data:`DIRECTION`):

* ``val_accuracy``: accuracy on the validation split after the proxy training (the default reward).
* ``grad_norm_variance``: minus the variance across weight layers of log RMS(dL/dW_l) at init, on the probe
  batch (cross-entropy). 0 is best: every layer's weights receive gradients of the same size.
* ``activation_stability``: minus the standard deviation across weight layers of log std(W_l x + b_l) (each
  layer's output, the next pre-activation) at init, on the probe batch. 0 is best: the forward signal neither
  vanishes nor explodes with depth.
* ``loss_slope``: minus the least-squares slope of log(training loss) against log(step) over the first steps
  (a power-law exponent: how fast the loss falls relative to its level). Larger: faster early learning.

A diverged candidate's signals are NaN; the study scores them by its one rule (``core.verdicts.score_diverged``).
A layer whose output or gradient is exactly zero is floored at float32's smallest normal number before the log,
so a dead network reads as very unstable rather than NaN.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlinit_lib.initialisation.data_driven import layer_output_stds

REWARDS = ("val_accuracy", "grad_norm_variance", "activation_stability", "loss_slope")
DIRECTION = {
    "val_accuracy": "higher is better: validation accuracy after the proxy epochs",
    "grad_norm_variance": "higher is better: minus Var_l log RMS gradient of layer l at init (0 is best)",
    "activation_stability": "higher is better: minus SD_l log std of layer l's output at init (0 is best)",
    "loss_slope": "higher is better: minus the slope of log loss against log step over the first steps",
}
INIT_SIGNALS = ("grad_norm_variance", "activation_stability")
_TINY = float(torch.finfo(torch.float32).tiny)
_LAYERS = (nn.Linear, nn.Conv2d)


def _log_floored(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return np.log(np.maximum(v, _TINY)) if np.all(np.isfinite(v)) else np.full(v.shape, np.nan)


def layer_grad_rms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """The root mean square of each weight layer's cross-entropy gradient dL/dW on (x, y), in layer order.
    Leaves no gradient behind."""
    layers = [m for m in model.modules() if isinstance(m, _LAYERS)]
    weights = [m.weight for m in layers]
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return [math.nan if g is None else g.double().pow(2).mean().sqrt().item() for g in grads]


def activation_stability(model: nn.Module, x: torch.Tensor) -> float:
    """Minus the SD across layers of log std of each layer's output (higher is better, 0 best)."""
    return -float(np.std(_log_floored(layer_output_stds(model, x))))


def grad_norm_variance(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Minus the variance across layers of log RMS gradient (higher is better, 0 best)."""
    return -float(np.var(_log_floored(layer_grad_rms(model, x, y))))


def loss_slope(losses: Sequence[float]) -> float:
    """Minus the least-squares slope of log(loss) against log(step), steps counted from 1 (higher is better).
    NaN with fewer than two losses or any non-finite or non-positive one."""
    v = np.asarray(losses, dtype=np.float64)
    if len(v) < 2 or not np.all(np.isfinite(v)) or np.any(v <= 0):
        return math.nan
    t = np.log(np.arange(1, len(v) + 1))
    return -float(np.polyfit(t, np.log(v), 1)[0])


def init_signals(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The signals measured at init on the probe batch (x, y): ``grad_norm_variance``, ``activation_stability``."""
    return {"grad_norm_variance": grad_norm_variance(model, x, y), "activation_stability": activation_stability(model, x)}


def reward_signals(init: Mapping[str, float], early_losses: Sequence[float], val_accuracy: float, *,
                   diverged: bool = False, which: Sequence[str] = REWARDS) -> dict:
    """Every reward of ``which`` as a float, higher is better: ``init`` from :func:`init_signals` (measured
    before training), ``early_losses`` the training losses of the first steps, ``val_accuracy`` after the proxy.
    All NaN when the candidate ``diverged``; a signal that is not finite is NaN too."""
    values = {"val_accuracy": val_accuracy, "loss_slope": math.nan if diverged else loss_slope(early_losses)}
    values.update({k: init.get(k, math.nan) for k in INIT_SIGNALS})
    out = {}
    for name in which:
        v = math.nan if diverged else float(values[name])
        out[name] = v if math.isfinite(v) else math.nan
    return out
