"""Testbeds where initialisation decides: plain deep networks, per-layer weight scales, one short training.

Study 1 found SimpleCNN with Adam indifferent to the He scale between 0.3 and 1.0 (02's grid, 06's arms).
Initialisation decides where a signal must cross many layers with nothing to re-normalise it (Glorot &
Bengio 2010; He et al. 2015, Sec. 2.2; Schoenholz et al. 2017, "Deep information propagation"), so the
formula search (issue 27) trains candidates on networks without normalisation or skip connections:

* ``mlp``: ``depth`` Linear layers (``depth - 1`` hidden layers of ``width`` units, the activation after each),
  on flattened images. Fashion-MNIST arrives zero-padded to 32x32 (``core.data``); the MLP crops that border
  off again and sees the 28x28 = 784 original pixels.
* ``cnn``: ``depth - 1`` plain 3x3 convolutions (padding 1, the activation after each) with three stride-2
  stages (channels ``width``, ``2 width``, ``4 width``), global average pooling and one Linear layer.
* ``simplecnn``: study 1's SimpleCNN (``children.networks``, the dissertation's Table 3.1: 3 convolutions and
  2 Linear layers, so ``depth`` is 5; ``width`` is its hidden units, 256 in Table 3.1, and scales its channels).

A candidate formula gives one standard deviation per weight layer, ``sigma_l = f(fan_in, fan_out, l, L, g)``
(:func:`formula_sigmas`; ``l`` counts weight layers from 1, ``L`` is their number, ``g`` the activation's gain,
:func:`gain`). :func:`apply_sigma` draws the weights (normal, uniform or orthogonal with that standard deviation;
biases zero) and :func:`train_candidate` trains the network briefly and returns its validation and test accuracy
and the richer reward signals of :mod:`rlinit_lib.formula_search.rewards`.

Optimisers: SGD with momentum 0.9 (no weight decay, no Nesterov; the classical setting in which the deep-MLP
initialisation results above were obtained) or Adam (PyTorch's default betas). Float32 throughout. A candidate
whose sigmas are not finite numbers > 0 (the grammar's rule, ``Formula.valid_for``) is not trained; one whose loss
or weights become NaN/inf stops there.
Both come back with ``diverged=True`` and NaN scores, for the study's one rule (``core.verdicts.score_diverged``).
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rlinit_lib.children.batched import StackedModels, evaluate_many, masked_step
from rlinit_lib.children.networks import SimpleCNN
from rlinit_lib.children.training import evaluate
from rlinit_lib.core.data import ImageData, normalise
from rlinit_lib.core.params import Float, Int, ParameterError, check_choice, check_int
from rlinit_lib.core.runtime import pick_device, stream_seed
from rlinit_lib.formula_search.rewards import REWARDS, init_signals, reward_signals
from rlinit_lib.initialisation.activations import make_activation
from rlinit_lib.initialisation.data_driven import EpochBatches
from rlinit_lib.initialisation.theory import critical_scales

KINDS = ("mlp", "cnn", "simplecnn")
TESTBED_ACTIVATIONS = ("relu", "tanh", "silu")
OPTIMISERS = ("sgd", "adam")
MECHANISMS = ("auto", "loop", "vmap")   # train_candidates: vmap on CUDA, one after another elsewhere
DISTRIBUTIONS = ("normal", "uniform", "orthogonal")
SGD_MOMENTUM = 0.9
SIMPLECNN_DEPTH = 5          # Table 3.1: three convolutions, two Linear layers
SIMPLECNN_WIDTH = 256        # Table 3.1's hidden units; other widths scale every channel count with it
FASHION_BORDER = 2           # core.data pads Fashion-MNIST's 28x28 images by 2 pixels to 32x32
EVAL_BATCH = 1024
ALL_DEAD_CHECK = 16          # train_candidates' vmap path stops an epoch early once every network has diverged
WEIGHT_LAYERS = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class Testbed:
    """One network and its training recipe; checked on creation (one line naming the bad field)."""

    kind: str            # mlp, cnn or simplecnn
    depth: int           # weight layers L (Linear + Conv2d), the L of the formulas
    width: int           # mlp: hidden units; cnn: channels of the first stage; simplecnn: hidden units (256)
    activation: str      # relu, tanh or silu
    optimiser: str       # sgd (momentum 0.9) or adam
    lr: float
    batch_size: int = 128

    def __post_init__(self):
        check_choice("kind", self.kind, KINDS)
        Int(2, 200)("depth", self.depth)
        Int(1, 4096)("width", self.width)
        check_choice("activation", self.activation, TESTBED_ACTIVATIONS)
        check_choice("optimiser", self.optimiser, OPTIMISERS)
        Float(0.0, 10.0, low_open=True)("lr", self.lr)
        Int(1, 65536)("batch_size", self.batch_size)
        if self.kind == "simplecnn" and self.depth != SIMPLECNN_DEPTH:
            raise ParameterError(f"depth must be {SIMPLECNN_DEPTH} for kind 'simplecnn' (got {self.depth!r})")


TESTBEDS = {
    "mlp10_relu_sgd": Testbed("mlp", 10, 256, "relu", "sgd", 0.01),
    "mlp20_relu_sgd": Testbed("mlp", 20, 256, "relu", "sgd", 0.01),
    "mlp40_relu_sgd": Testbed("mlp", 40, 256, "relu", "sgd", 0.003),   # at 0.01 He stayed at chance for 2 epochs
    "mlp10_tanh_sgd": Testbed("mlp", 10, 256, "tanh", "sgd", 0.01),
    "mlp20_tanh_sgd": Testbed("mlp", 20, 256, "tanh", "sgd", 0.01),
    "mlp20_silu_sgd": Testbed("mlp", 20, 256, "silu", "sgd", 0.01),
    "mlp20_relu_adam": Testbed("mlp", 20, 256, "relu", "adam", 1e-3),
    "mlp20_silu_adam": Testbed("mlp", 20, 256, "silu", "adam", 1e-3),
    "cnn12_relu_sgd": Testbed("cnn", 12, 16, "relu", "sgd", 0.01),
    "cnn12_silu_adam": Testbed("cnn", 12, 16, "silu", "adam", 1e-3),
    "simplecnn_silu_adam": Testbed("simplecnn", 5, 256, "silu", "adam", 1e-3),
}


def get_testbed(name: str) -> Testbed:
    """The preset called ``name`` (the study's ``testbed`` parameter)."""
    return TESTBEDS[check_choice("testbed", name, TESTBEDS)]


@functools.lru_cache(maxsize=None)
def gain(activation: str) -> float:
    """The activation's gain ``g``: He's ``std = g / sqrt(fan_in)``. ReLU and tanh: PyTorch's
    ``calculate_gain`` (sqrt(2) and 5/3); SiLU: the gain that preserves the second moment of the
    pre-activations, ``sqrt(2) * critical_scales('silu')['second_moment']`` (notebook 06's analytic SiLU arm;
    the same rule gives exactly sqrt(2) for ReLU)."""
    check_choice("activation", activation, TESTBED_ACTIVATIONS)
    if activation == "silu":
        return math.sqrt(2.0) * float(critical_scales("silu")["second_moment"])
    return nn.init.calculate_gain(activation)


# ---- networks ----

class _Crop(nn.Module):
    """Drops a constant border of ``border`` pixels (no weights)."""

    def __init__(self, border: int):
        super().__init__()
        self.border = border

    def forward(self, x):
        b = self.border
        return x[..., b:x.shape[-2] - b, b:x.shape[-1] - b] if b else x


def _mlp(tb: Testbed, in_shape: tuple, n_classes: int) -> nn.Module:
    border = FASHION_BORDER if tuple(in_shape) == (1, 32, 32) else 0
    n_in = in_shape[0] * (in_shape[1] - 2 * border) * (in_shape[2] - 2 * border)
    widths = [n_in] + [tb.width] * (tb.depth - 1) + [n_classes]
    layers: list[nn.Module] = [_Crop(border), nn.Flatten()]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < tb.depth - 1:
            layers.append(make_activation(tb.activation))
    return nn.Sequential(*layers)


def _cnn(tb: Testbed, in_shape: tuple, n_classes: int) -> nn.Module:
    n_conv = tb.depth - 1
    strided = {0, n_conv // 3, 2 * n_conv // 3}    # three stride-2 stages (fewer when n_conv < 3)
    layers: list[nn.Module] = []
    c_in, c_out = in_shape[0], tb.width // 2
    for i in range(n_conv):
        if i in strided:
            c_out *= 2
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2 if i in strided else 1, padding=1),
                   make_activation(tb.activation)]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, n_classes)]
    return nn.Sequential(*layers)


def build(testbed: Testbed, in_shape: Sequence[int], n_classes: int, seed: int = 0) -> nn.Module:
    """The testbed's network for inputs of shape ``in_shape`` (C, H, W); weights are PyTorch's defaults drawn
    from ``seed`` until :func:`apply_sigma` sets them."""
    if not isinstance(testbed, Testbed):
        raise ParameterError(f"testbed must be a Testbed (got {type(testbed).__name__})")
    if len(in_shape) != 3:
        raise ParameterError(f"in_shape must be (channels, height, width) (got {tuple(in_shape)!r})")
    check_int("n_classes", n_classes, low=2)
    if testbed.kind == "simplecnn" and tuple(in_shape[1:]) != (32, 32):
        raise ParameterError(f"in_shape must be (C, 32, 32) for kind 'simplecnn' (got {tuple(in_shape)!r})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(seed, "default_init"))
        if testbed.kind == "mlp":
            model = _mlp(testbed, tuple(in_shape), n_classes)
        elif testbed.kind == "cnn":
            model = _cnn(testbed, tuple(in_shape), n_classes)
        else:
            model = SimpleCNN(in_shape[0], n_classes, testbed.activation, testbed.width / SIMPLECNN_WIDTH)
    return model


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The Linear and Conv2d layers of ``model`` in order (the order of the forward pass for these networks)."""
    return [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]


def layer_fans(model: nn.Module) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of each weight layer: ``in * k * k`` and ``out * k * k`` for a convolution, as
    ``torch.nn.init`` computes them."""
    fans = []
    for m in weight_layers(model):
        w = m.weight
        receptive = w[0, 0].numel()
        fans.append((w.shape[1] * receptive, w.shape[0] * receptive))
    return fans


def formula_sigmas(model: nn.Module, sigma_fn: Callable, activation: str) -> list[float]:
    """``sigma_fn(fan_in, fan_out, l, L, g)`` for each weight layer (``l`` from 1). A layer where the formula
    fails (division by zero, overflow, a complex or non-numeric value) gets NaN: the candidate then diverges."""
    fans, g = layer_fans(model), gain(activation)
    out = []
    for l, (fi, fo) in enumerate(fans, start=1):
        try:
            out.append(float(sigma_fn(fi, fo, l, len(fans), g)))
        except (ArithmeticError, ValueError, TypeError):
            out.append(float("nan"))
    return out


def valid_sigmas(sigmas: Sequence[float]) -> bool:
    """Finite and > 0, the rule of ``grammar.Formula.valid_for`` (a zero standard deviation gives every unit of a
    layer the same output, a symmetry training cannot break); anything else is a diverged candidate."""
    return all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0 for s in sigmas)


@torch.no_grad()
def apply_sigma(model: nn.Module, sigmas: Sequence[float], distribution: str = "normal", seed: int = 0) -> nn.Module:
    """Draw weight layer l's weights with mean 0 and standard deviation ``sigmas[l]``, biases zero, in place.

    ``normal``: N(0, sigma^2); ``uniform``: U(-sqrt(3) sigma, sqrt(3) sigma); ``orthogonal``: a (semi-)orthogonal
    matrix (``torch.nn.init.orthogonal_`` on the weight flattened to out x in*k*k) scaled so that its entries'
    root mean square is sigma (its entries have mean square 1 / max(rows, cols)). Draws come from
    ``stream_seed(seed, 'init')`` on the CPU, layer by layer, so they do not depend on the device."""
    check_choice("distribution", distribution, DISTRIBUTIONS)
    layers = weight_layers(model)
    if len(sigmas) != len(layers):
        raise ParameterError(f"sigmas must hold one value per weight layer ({len(layers)}; got {len(sigmas)})")
    if not valid_sigmas(sigmas):
        raise ParameterError(f"sigmas must be finite numbers > 0 (got {list(sigmas)!r})")
    gen = torch.Generator().manual_seed(stream_seed(seed, "init"))
    for m, s in zip(layers, sigmas):
        w = torch.empty(m.weight.shape, dtype=torch.float32)
        if distribution == "normal":
            w.normal_(0.0, float(s), generator=gen)
        elif distribution == "uniform":
            w.uniform_(-math.sqrt(3.0) * s, math.sqrt(3.0) * s, generator=gen)
        else:
            rows, cols = w.shape[0], w[0].numel()
            nn.init.orthogonal_(w, gain=float(s) * math.sqrt(max(rows, cols)), generator=gen)
        m.weight.copy_(w)
        if m.bias is not None:
            m.bias.zero_()
    return model


def weights_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


# ---- one candidate's training ----

def _optimiser(testbed: Testbed, params) -> torch.optim.Optimizer:
    """The testbed's optimiser over ``params``. Both are elementwise, so one over K stacked networks' tensors is K
    independent optimisers (``train_candidates``)."""
    if testbed.optimiser == "sgd":
        return torch.optim.SGD(params, lr=testbed.lr, momentum=SGD_MOMENTUM)
    return torch.optim.Adam(params, lr=testbed.lr)


def _diverged_result(rewards: Sequence[str], reason: str, seconds: float) -> dict:
    out = {"val_accuracy": math.nan, "test_accuracy": math.nan, "diverged": True, "reason": reason,
           "epochs": 0, "steps": 0, "initial_loss": math.nan, "train_loss": math.nan, "seconds": seconds}
    out.update(reward_signals({}, [], math.nan, diverged=True, which=rewards))
    return out


def _check_training(testbed, seeds, epochs, distributions, probe_size, slope_steps, rewards, data) -> None:
    """The checks of a training's arguments, before any work; one line naming the first bad one."""
    if not isinstance(testbed, Testbed):
        raise ParameterError(f"testbed must be a Testbed (got {type(testbed).__name__})")
    for seed in seeds:
        check_int("seed", seed, low=0)
    Int(1, 10000)("epochs", epochs)
    for d in distributions:
        check_choice("distribution", d, DISTRIBUTIONS)
    Int(1, 100000)("probe_size", probe_size)
    Int(2, 100000)("slope_steps", slope_steps)
    for r in rewards:
        check_choice("rewards", r, REWARDS)
    if data.x_val is None:
        raise ParameterError(f"data must have a validation split (load it with val_size; got {data!r})")


def _drawn(testbed: Testbed, sigmas: Sequence[float], data: ImageData, seed: int, distribution: str
           ) -> tuple[nn.Module | None, str]:
    """The testbed's network with weights drawn from ``sigmas`` (on the CPU), or None and why the candidate
    diverged before training (sigmas not finite > 0, weights not finite)."""
    model = build(testbed, tuple(data.x_train.shape[1:]), data.num_classes, seed)
    n_layers = len(weight_layers(model))
    if len(sigmas) != n_layers:
        raise ParameterError(f"sigmas must hold one value per weight layer ({n_layers}; got {len(sigmas)})")
    if not valid_sigmas(sigmas):
        return None, "sigma not a finite number > 0"
    apply_sigma(model, sigmas, distribution, seed)
    if not weights_finite(model):
        return None, "non-finite weights at init"
    return model, ""


def train_candidate(testbed: Testbed, sigmas: Sequence[float], data: ImageData, seed: int, epochs: int, *,
                    rewards: Sequence[str] = REWARDS, distribution: str = "normal", device=None,
                    probe_size: int = 256, slope_steps: int = 50,
                    init_fn: Callable[[nn.Module, EpochBatches], object] | None = None) -> dict:
    """Train ``testbed``'s network initialised with ``sigmas`` for ``epochs`` epochs on ``data``'s training split.

    Returns plain data: ``val_accuracy`` (the default reward, after the proxy epochs), ``test_accuracy`` (for
    reporting only), ``diverged`` and ``reason``, ``epochs`` and ``steps`` run, ``initial_loss`` (the first batch's),
    ``train_loss`` (the last epoch's mean), ``seconds``, and each reward of ``rewards`` (higher is better;
    :mod:`rewards`). The init signals use a fixed probe batch, the first ``probe_size`` training images; the loss
    slope the first ``slope_steps`` steps. Weights from ``stream_seed(seed, 'init')``, batch order from
    ``stream_seed(seed, 'data_order')``. ``init_fn(model, batches)``, when given, runs after the sigmas are drawn, on
    the device: a data-driven initialiser (LSUV, GradInit, MetaInit) that rescales the weights in place, reading
    ``batches`` (``initialisation.data_driven.EpochBatches``: batch i of one pass over the training split in an
    order of its own, ``stream_seed(seed, 'init_batch')``, ``batch_size`` normalised images each); the init signals
    are measured after it. Never raises for a bad candidate: it comes back diverged."""
    start = time.perf_counter()
    _check_training(testbed, [seed], epochs, [distribution], probe_size, slope_steps, rewards, data)
    dev = pick_device(device if device is not None else str(data.device))
    data = data if data.device == dev else data.to(dev)
    model, reason = _drawn(testbed, sigmas, data, seed, distribution)
    if reason:
        return _diverged_result(rewards, reason, time.perf_counter() - start)
    conv = testbed.kind != "mlp"
    model = model.to(dev, memory_format=torch.channels_last) if conv else model.to(dev)
    prep = (lambda x: normalise(x).contiguous(memory_format=torch.channels_last)) if conv else normalise
    if init_fn is not None:
        pick = torch.Generator().manual_seed(stream_seed(seed, "init_batch"))
        order = torch.randperm(len(data.y_train), generator=pick)
        init_fn(model, EpochBatches(data.x_train, data.y_train, order, testbed.batch_size, data.num_classes, prep))
        if not weights_finite(model):
            return _diverged_result(rewards, "non-finite weights after init_fn", time.perf_counter() - start)

    probe_x, probe_y = prep(data.x_train[:probe_size]), data.y_train[:probe_size]
    init = init_signals(model, probe_x, probe_y)
    opt = _optimiser(testbed, model.parameters())
    order = torch.Generator().manual_seed(stream_seed(seed, "data_order"))
    n, bs = len(data.y_train), testbed.batch_size
    losses, reason, epoch_loss = [], "", math.nan
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=order).to(dev)
        total = 0.0
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            loss = F.cross_entropy(model(prep(data.x_train[idx])), data.y_train[idx])
            value = loss.item()
            if not math.isfinite(value):
                reason = "non-finite loss"
                break
            losses.append(value)
            total += value * len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if not reason and not weights_finite(model):
            reason = "non-finite weights"
        if reason:
            break
        epoch_loss = total / n
    epochs_run = epoch + 1 if not reason else epoch
    if reason:
        out = _diverged_result(rewards, reason, 0.0)
        out.update(epochs=epochs_run, steps=len(losses), initial_loss=losses[0] if losses else math.nan)
        out["seconds"] = time.perf_counter() - start
        return out
    batch = EVAL_BATCH if not conv else 256
    val = evaluate(model, data.x_val, data.y_val, batch)
    test = evaluate(model, data.x_test, data.y_test, batch)
    out = {"val_accuracy": val, "test_accuracy": test, "diverged": False, "reason": "", "epochs": epochs_run,
           "steps": len(losses), "initial_loss": losses[0], "train_loss": epoch_loss}
    out.update(reward_signals(init, losses[:slope_steps], val, diverged=False, which=rewards))
    out["seconds"] = time.perf_counter() - start
    return out


# ---- many candidates at once ----

def train_candidates(testbed: Testbed, sigmas_list: Sequence[Sequence[float]], data: ImageData, seeds: Sequence[int],
                     epochs: int, *, rewards: Sequence[str] = REWARDS, distributions: Sequence[str] | None = None,
                     device=None, probe_size: int = 256, slope_steps: int = 50, mechanism: str = "auto") -> list[dict]:
    """:func:`train_candidate` for K candidates (``sigmas_list[k]``, ``seeds[k]``, ``distributions[k]``, default
    normal) on one testbed: one result dict each, with the same keys and semantics.

    ``mechanism``: ``loop`` calls :func:`train_candidate` K times (the same numbers by construction); ``vmap``
    stacks the K networks (``children.batched.StackedModels``) and trains them as one vmapped function with one
    optimiser over the stacked tensors (SGD with momentum and Adam are elementwise, so that is K independent
    optimisers). Each network keeps its own init draw, batch order (``stream_seed(seed, 'data_order')``), loss
    and divergence: a network whose loss turns non-finite is frozen out of the summed loss from that step (no
    operation mixes networks, so it cannot perturb the others) and reported as ``train_candidate`` reports it
    (``epochs`` and ``steps`` run, the first loss); one whose weights become non-finite is caught at the epoch's
    end, as there. A diverged network still costs its share of each step until every network of the stack has
    diverged (checked every ``ALL_DEAD_CHECK`` steps), where the loop stops it at once. The numbers equal the loop's
    up to float rounding (batched matmuls sum in another order; tests bound the difference). ``auto``: vmap on CUDA, the
    loop elsewhere (as ``children.batched.train_many``). ``seconds`` is the vmapped wall time shared equally."""
    start = time.perf_counter()
    check_choice("mechanism", mechanism, MECHANISMS)
    k = len(sigmas_list)
    if k == 0:
        raise ParameterError("sigmas_list must hold at least one candidate's sigmas (got none)")
    seeds = [int(s) for s in seeds]
    if len(seeds) != k:
        raise ParameterError(f"seeds must have one seed per candidate ({k}) (got {len(seeds)})")
    distributions = ["normal"] * k if distributions is None else list(distributions)
    if len(distributions) != k:
        raise ParameterError(f"distributions must have one entry per candidate ({k}) (got {len(distributions)})")
    dev = pick_device(device if device is not None else str(data.device))
    if mechanism == "auto":
        mechanism = "vmap" if dev.type == "cuda" else "loop"
    opts = dict(rewards=rewards, device=dev, probe_size=probe_size, slope_steps=slope_steps)
    if mechanism == "loop" or k == 1:
        return [train_candidate(testbed, s, data, seed, epochs, distribution=d, **opts)
                for s, seed, d in zip(sigmas_list, seeds, distributions)]

    _check_training(testbed, seeds, epochs, distributions, probe_size, slope_steps, rewards, data)
    data = data if data.device == dev else data.to(dev)
    results: list[dict | None] = [None] * k
    models, where, inits = [], [], []
    probe_x, probe_y = normalise(data.x_train[:probe_size]), data.y_train[:probe_size]
    for j, (sigmas, seed, d) in enumerate(zip(sigmas_list, seeds, distributions)):
        model, reason = _drawn(testbed, sigmas, data, seed, d)
        if reason:
            results[j] = _diverged_result(rewards, reason, 0.0)
            continue
        model = model.to(dev)
        inits.append(init_signals(model, probe_x, probe_y))
        models.append(model)
        where.append(j)
    if models:
        for j, out in zip(where, _train_stacked(testbed, models, [seeds[j] for j in where], data, epochs, inits,
                                                rewards, slope_steps)):
            results[j] = out
    seconds = (time.perf_counter() - start) / k
    for out in results:
        out["seconds"] = seconds
    return results


def _train_stacked(testbed: Testbed, models: list[nn.Module], seeds: list[int], data: ImageData, epochs: int,
                   inits: list[dict], rewards: Sequence[str], slope_steps: int) -> list[dict]:
    """The vmap path of :func:`train_candidates` for M valid networks; one result dict each (no ``seconds``)."""
    m, dev = len(models), data.x_train.device
    stack = StackedModels(models)
    opt = _optimiser(testbed, list(stack.params.values()))
    orders = [torch.Generator().manual_seed(stream_seed(seed, "data_order")) for seed in seeds]
    n, bs = len(data.y_train), testbed.batch_size
    alive = torch.ones(m, dtype=torch.bool, device=dev)
    losses: list[list[float]] = [[] for _ in range(m)]
    reasons, epochs_run, epoch_loss = [""] * m, [0] * m, [math.nan] * m
    for epoch in range(epochs):
        perms = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(dev)     # (M, n)
        step_losses, sizes = [], []
        for i in range(0, n, bs):
            idx = perms[:, i:i + bs]
            logits = stack(normalise(data.x_train[idx]), shared_input=False)           # (M, B, classes)
            step_losses.append(masked_step(opt, logits, data.y_train[idx], alive))
            sizes.append(idx.shape[1])
            if len(sizes) % ALL_DEAD_CHECK == 0 and not bool(alive.any()):   # one host sync per ALL_DEAD_CHECK steps
                break
        table = torch.stack(step_losses).cpu().tolist()                                 # (steps, M), on the host once
        finite_weights = torch.stack([torch.isfinite(p).flatten(1).all(1) for p in stack.params.values()]).all(0)
        for j in range(m):
            if reasons[j]:
                continue
            total = 0.0
            for value, b in zip((row[j] for row in table), sizes):
                if not math.isfinite(value):
                    reasons[j] = "non-finite loss"
                    break
                losses[j].append(value)
                total += value * b
            if not reasons[j] and not bool(finite_weights[j]):
                reasons[j] = "non-finite weights"
            if reasons[j]:
                epochs_run[j] = epoch
                continue
            epochs_run[j], epoch_loss[j] = epoch + 1, total / n
        alive &= torch.tensor([not r for r in reasons], device=dev)
        if not any(not r for r in reasons):
            break
    val = evaluate_many(stack, data.x_val, data.y_val, EVAL_BATCH).tolist()
    test = evaluate_many(stack, data.x_test, data.y_test, EVAL_BATCH).tolist()
    out = []
    for j in range(m):
        if reasons[j]:
            r = _diverged_result(rewards, reasons[j], 0.0)
            r.update(epochs=epochs_run[j], steps=len(losses[j]), initial_loss=losses[j][0] if losses[j] else math.nan)
        else:
            r = {"val_accuracy": val[j], "test_accuracy": test[j], "diverged": False, "reason": "",
                 "epochs": epochs_run[j], "steps": len(losses[j]), "initial_loss": losses[j][0],
                 "train_loss": epoch_loss[j]}
            r.update(reward_signals(inits[j], losses[j][:slope_steps], val[j], diverged=False, which=rewards))
        out.append(r)
    return out
