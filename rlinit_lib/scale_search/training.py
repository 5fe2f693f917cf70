"""The proxy task: train a freshly initialised child network, report test accuracy.

Source: the dissertation, Sec. 4.2.1 — Adam lr 1e-3, batch 128, cross-entropy,
7 epochs, test accuracy on the whole test set; a NaN/inf loss stops training and
is reported (the environment then pays -2).

Deviation (for speed, same semantics): the data set is held as uint8 tensors on the
training device and normalised per batch; each epoch draws a fresh permutation from
a generator seeded by ``seed``; there is no DataLoader (see ``benchmarks.bench_training``).
The last partial batch is kept, as DataLoader(drop_last=False) does.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rlinit_lib.core.data import ImageData, normalise
from rlinit_lib.initialisation.initialisers import INIT_METHODS, initialise
from rlinit_lib.initialisation.activations import ACTIVATIONS
from rlinit_lib.scale_search.networks import SimpleCNN
from rlinit_lib.core.runtime import pick_device
from rlinit_lib.core.params import check_choice, check_float, check_int


@dataclass
class TrainResult:
    """What one child training produced."""

    test_accuracy: float          # final test accuracy (nan if training diverged)
    nan_detected: bool
    train_loss: list[float] = field(default_factory=list)      # mean loss per finished epoch
    train_accuracy: list[float] = field(default_factory=list)  # accuracy on the training batches per epoch
    test_accuracy_per_epoch: list[float] = field(default_factory=list)  # filled when eval_every_epoch
    seconds: float = 0.0
    epochs_completed: int = 0


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Accuracy of ``model`` on uint8 images ``x`` with labels ``y`` (eval mode)."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        logits = model(normalise(x[i:i + batch_size]).contiguous(memory_format=torch.channels_last))
        correct += (logits.argmax(1) == y[i:i + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(y)


def build_child(in_channels: int, num_classes: int, scale: float, activation: str = "silu",
                init: str = "he_scaled", seed: int = 0, device=None) -> SimpleCNN:
    """A SimpleCNN initialised with ``init`` at ``scale``; the weights depend only on ``seed``."""
    g = torch.Generator().manual_seed(seed)
    model = SimpleCNN(in_channels, num_classes, activation)
    with torch.random.fork_rng(devices=[]):  # pytorch_default init draws from the global RNG
        torch.manual_seed(seed)
        initialise(model, init, scale, generator=g)
    return model.to(device)


def train_and_evaluate(
    scale: float,
    epochs: int,
    data: ImageData,
    *,
    batch_size: int = 128,
    lr: float = 1e-3,
    activation: str = "silu",
    init: str = "he_scaled",
    seed: int = 42,
    device: str | torch.device | None = None,
    eval_every_epoch: bool = False,
    progress: bool = False,
    on_epoch: Callable[[int, dict], None] | None = None,
    build: Callable[[float, int], torch.nn.Module] | None = None,
) -> TrainResult:
    """Train SimpleCNN initialised at ``scale`` for ``epochs`` epochs; return a :class:`TrainResult`.

    ``on_epoch(epoch, metrics)`` is called after every finished epoch (used for tracking);
    ``build(scale, seed)`` replaces SimpleCNN with another network.
    """
    check_float("scale", scale, low=0.0, low_open=True)
    check_int("epochs", epochs, low=1)
    check_int("batch_size", batch_size, low=1)
    check_float("lr", lr, low=0.0, low_open=True)
    check_choice("activation", activation, ACTIVATIONS)
    check_choice("init", init, INIT_METHODS)
    dev = pick_device(device if device is not None else str(data.device))
    if data.device != dev:
        data = data.to(dev)

    start = time.perf_counter()
    # channels_last: NHWC max-pool and oneDNN/cuDNN convolutions are faster (1.5x per CPU step, see BENCHMARKS.md)
    if build is None:
        model = build_child(data.in_channels, data.num_classes, scale, activation, init, seed, dev)
    else:
        model = build(scale, seed).to(dev)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator(device="cpu").manual_seed(seed + 1)
    n = len(data.y_train)
    result = TrainResult(test_accuracy=float("nan"), nan_detected=False)

    for epoch in tqdm(range(epochs), desc=f"s={scale:.3f}", leave=False, disable=not progress):
        model.train()
        perm = torch.randperm(n, generator=order).to(dev)
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            x = normalise(data.x_train[idx]).contiguous(memory_format=torch.channels_last)
            y = data.y_train[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):  # one sync per step; the dissertation checks every step too
                result.nan_detected = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
        if result.nan_detected:
            break
        result.train_loss.append(loss_sum.item() / n)
        result.train_accuracy.append(correct.item() / n)
        result.epochs_completed = epoch + 1
        metrics = {"train_loss": result.train_loss[-1], "train_accuracy": result.train_accuracy[-1]}
        if eval_every_epoch or epoch == epochs - 1:
            acc = evaluate(model, data.x_test, data.y_test)
            if eval_every_epoch:
                result.test_accuracy_per_epoch.append(acc)
            metrics["test_accuracy"] = acc
            result.test_accuracy = acc
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    if result.nan_detected:
        result.test_accuracy = float("nan")
    result.seconds = time.perf_counter() - start
    return result

