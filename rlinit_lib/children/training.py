"""The proxy task: train a freshly initialised child network, report validation and test accuracy.

Source: the dissertation, Sec. 4.2.1 — Adam lr 1e-3, batch 128, cross-entropy,
7 epochs, test accuracy on the whole test set; a NaN/inf loss stops training and
is reported (the environment then pays -2).

Deviation (for speed, same semantics): the data set is held as uint8 tensors on the
training device and normalised per batch; each epoch draws a fresh permutation from
a generator seeded from ``seed``'s ``data_order`` stream (the weights from its ``init`` stream,
``core.runtime.stream_seed``); there is no DataLoader (see ``benchmarks.bench_training``).
The last partial batch is kept, as DataLoader(drop_last=False) does.

``precision="bf16"`` (a deviation the dissertation did not make, chosen per machine by
``core.precision``) computes forward and backward in bf16 on a bf16 working copy of the
network, while the weights Adam updates, Adam's state and the cross-entropy (logits cast to
fp32) stay fp32 (:class:`Trainer`). This is bit for bit what bf16 autocast computes (tested),
with the per-op casts done once per step instead; about 10% faster on an AMX CPU.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rlinit_lib.core.data import ImageData, normalise
from rlinit_lib.initialisation.initialisers import INIT_METHODS, initialise
from rlinit_lib.initialisation.activations import ACTIVATIONS
from rlinit_lib.children.networks import SimpleCNN
from rlinit_lib.core.runtime import pick_device, stream_seed
from rlinit_lib.core.params import check_choice, check_float, check_int


@dataclass
class TrainResult:
    """What one child training produced."""

    test_accuracy: float          # final test accuracy (nan if training diverged)
    nan_detected: bool
    train_loss: list[float] = field(default_factory=list)      # mean loss per finished epoch
    train_accuracy: list[float] = field(default_factory=list)  # accuracy on the training batches per epoch
    test_accuracy_per_epoch: list[float] = field(default_factory=list)  # filled when eval_every_epoch
    val_accuracy_per_epoch: list[float] = field(default_factory=list)   # likewise, on the validation split
    seconds: float = 0.0
    epochs_completed: int = 0
    val_accuracy: float = float("nan")   # final accuracy on the validation split (nan: none, or diverged)


class Trainer:
    """One network's training step in a precision: ``forward`` gives fp32 logits, ``update`` takes Adam's
    step on the fp32 master weights. For bf16 the step runs on a bf16 working copy (``model``) whose
    gradients are cast to fp32 for Adam and which is refreshed from the master weights after each step."""

    def __init__(self, master: torch.nn.Module, lr: float, precision: str = "fp32"):
        check_choice("precision", precision, ("fp32", "bf16"))
        self.master, self.opt = master, torch.optim.Adam(master.parameters(), lr=lr)
        self.model = master if precision == "fp32" else copy.deepcopy(master).to(torch.bfloat16)
        self.pairs = list(zip(master.parameters(), self.model.parameters()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.pairs[0][1].dtype)).float()

    def update(self, loss: torch.Tensor) -> None:
        if self.model is self.master:
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            return
        for _, w in self.pairs:
            w.grad = None
        loss.backward()
        for m, w in self.pairs:
            m.grad = w.grad.float()
        self.opt.step()
        with torch.no_grad():
            for m, w in self.pairs:
                w.copy_(m)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Accuracy of ``model`` on uint8 images ``x`` with labels ``y`` (eval mode; inputs in the model's dtype).
    Batches of 256: on the CPU, SimpleCNN evaluates 1.8x (bf16) to 1.6x (fp32) faster than in batches of 1,000
    (BENCHMARKS.md, 2026-12-04), which pays for the validation split's extra evaluation."""
    was_training = model.training
    model.eval()
    correct = 0
    dtype = next(model.parameters()).dtype
    for i in range(0, len(y), batch_size):
        logits = model(normalise(x[i:i + batch_size]).to(dtype).contiguous(memory_format=torch.channels_last))
        correct += (logits.argmax(1) == y[i:i + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(y)


def build_child(in_channels: int, num_classes: int, scale: float, activation: str = "silu",
                init: str = "he_scaled", seed: int = 0, device=None, width: float = 1.0) -> SimpleCNN:
    """A SimpleCNN initialised with ``init`` at ``scale``; the weights depend only on ``seed``."""
    g = torch.Generator().manual_seed(seed)
    model = SimpleCNN(in_channels, num_classes, activation, width)
    with torch.random.fork_rng(devices=[]):  # pytorch_default init draws from the global RNG
        torch.manual_seed(seed)
        initialise(model, init, scale, generator=g)
    return model.to(device)


def probe_step(in_channels: int, batch_size: int, activation: str = "silu", device="cpu"):
    """``make_step(precision)`` for ``core.precision.resolve_precision``: one training step of SimpleCNN on a
    random batch of the training batch size, as ``train_and_evaluate`` runs it."""
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch_size, in_channels, 32, 32), generator=g, dtype=torch.uint8).to(dev)
    y = torch.randint(0, 10, (batch_size,), generator=g).to(dev)

    def make_step(precision: str):
        trainer = Trainer(build_child(in_channels, 10, 1.0, activation, device=dev).to(memory_format=torch.channels_last),
                          1e-3, precision)

        def step():
            trainer.update(F.cross_entropy(trainer.forward(normalise(x).contiguous(memory_format=torch.channels_last)), y))
        return step

    return make_step


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
    precision: str = "fp32",
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
    check_choice("precision", precision, ("fp32", "bf16"))
    dev = pick_device(device if device is not None else str(data.device))
    if data.device != dev:
        data = data.to(dev)

    start = time.perf_counter()
    # channels_last: NHWC max-pool and oneDNN/cuDNN convolutions are faster (1.5x per CPU step, see BENCHMARKS.md)
    if build is None:
        model = build_child(data.in_channels, data.num_classes, scale, activation, init, stream_seed(seed, "init"), dev)
    else:
        model = build(scale, seed).to(dev)
    trainer = Trainer(model.to(memory_format=torch.channels_last), lr, precision)
    order = torch.Generator(device="cpu").manual_seed(stream_seed(seed, "data_order"))
    n = len(data.y_train)
    result = TrainResult(test_accuracy=float("nan"), nan_detected=False)

    for epoch in tqdm(range(epochs), desc=f"s={scale:.3f}", leave=False, disable=not progress):
        trainer.model.train()
        perm = torch.randperm(n, generator=order).to(dev)
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            x = normalise(data.x_train[idx]).contiguous(memory_format=torch.channels_last)
            y = data.y_train[idx]
            logits = trainer.forward(x)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):  # one sync per step; the dissertation checks every step too
                result.nan_detected = True
                break
            trainer.update(loss)
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
        if result.nan_detected:
            break
        result.train_loss.append(loss_sum.item() / n)
        result.train_accuracy.append(correct.item() / n)
        result.epochs_completed = epoch + 1
        metrics = {"train_loss": result.train_loss[-1], "train_accuracy": result.train_accuracy[-1]}
        if eval_every_epoch or epoch == epochs - 1:
            acc = evaluate(trainer.model, data.x_test, data.y_test)
            val = evaluate(trainer.model, data.x_val, data.y_val) if data.x_val is not None else float("nan")
            if eval_every_epoch:
                result.test_accuracy_per_epoch.append(acc)
                result.val_accuracy_per_epoch.append(val)
            metrics["test_accuracy"], metrics["val_accuracy"] = acc, val
            result.test_accuracy, result.val_accuracy = acc, val
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    if result.nan_detected:
        result.test_accuracy = result.val_accuracy = float("nan")
    result.seconds = time.perf_counter() - start
    return result

