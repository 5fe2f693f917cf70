"""Many child networks trained at once, with the semantics of separate runs.

K networks (one scale and one seed each) are stacked with ``torch.func.stack_module_state``
and run through one ``vmap``-ed ``functional_call``: every network keeps its own
initialisation, data order, Adam state (Adam is elementwise, so one Adam over the
stacked tensors is K independent Adams), loss, accuracy and NaN flag. No operation
mixes networks, so a network whose loss turns NaN/inf is marked dead at that step
(as the single-model path stops) and cannot perturb the others. BatchNorm running
statistics are kept per network (buffers are stacked too) and dropout masks differ
per network (``randomness="different"``).

With ``common_random_numbers=True`` every network uses the first seed: the same
underlying init noise (weights differ only by the scale factor) and the same batch
order, a variance-reduction device for comparing scales. The default is faithful to
independent runs: network k matches ``train_and_evaluate(scales[k], seed=seeds[k])``.

``mechanism``: ``vmap`` (the stacked path above), ``loop`` (one ``train_and_evaluate`` per
network, the same semantics by construction) or ``auto``: vmap on CUDA, loop elsewhere,
because on the 2-core CPU the vmapped grouped convolutions are slower per network than one
network at a time (BENCHMARKS.md).
"""
from __future__ import annotations

import copy
import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from rlinit_lib.core.data import ImageData, normalise
from rlinit_lib.core.precision import autocast
from rlinit_lib.initialisation.initialisers import INIT_METHODS
from rlinit_lib.initialisation.activations import ACTIVATIONS
from rlinit_lib.core.runtime import pick_device, stream_seed
from rlinit_lib.children.training import TrainResult, build_child, train_and_evaluate
from rlinit_lib.core.params import ParameterError, check_choice, check_float, check_int


class StackedModels:
    """K architecturally identical modules evaluated as one vmapped function."""

    def __init__(self, models: Sequence[nn.Module]):
        self.params, self.buffers = stack_module_state(list(models))
        self.base = copy.deepcopy(models[0]).to("meta")
        self.k = len(models)

        def call(p, b, x):
            return functional_call(self.base, (p, b), (x,))

        self._shared = vmap(call, in_dims=(0, 0, None), randomness="different")
        self._own = vmap(call, in_dims=(0, 0, 0), randomness="different")

    def train(self, mode: bool = True):
        self.base.train(mode)

    def __call__(self, x: torch.Tensor, shared_input: bool) -> torch.Tensor:
        """x: (B, ...) for every network when ``shared_input``, else (K, B, ...). Returns (K, B, ...)."""
        return (self._shared if shared_input else self._own)(self.params, self.buffers, x)

    def module(self, k: int) -> nn.Module:
        """Network k as an ordinary module (a copy), e.g. for inspection."""
        m = copy.deepcopy(self.base).to_empty(device=next(iter(self.params.values())).device)
        m.load_state_dict({**{n: t[k] for n, t in self.params.items()},
                           **{n: t[k] for n, t in self.buffers.items()}})
        return m


def masked_step(opt: torch.optim.Optimizer, logits: torch.Tensor, y: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """One optimiser step of K stacked networks on their mean cross-entropy losses (``logits`` (K, B, classes), ``y``
    (K, B)). A network whose loss is not finite is marked dead in ``alive`` (in place, no host sync) and left out of
    the summed loss from this step on, so it cannot perturb the others. Returns the (K,) losses, detached."""
    k, b = y.shape
    losses = F.cross_entropy(logits.reshape(k * b, -1), y.reshape(-1), reduction="none").view(k, b).mean(1)
    alive &= torch.isfinite(losses)
    opt.zero_grad(set_to_none=True)
    torch.where(alive, losses, torch.zeros_like(losses)).sum().backward()
    opt.step()
    return losses.detach()


@torch.no_grad()
def evaluate_many(stack: StackedModels, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Accuracy of each stacked network on the same test set, shape (K,), float64 on the CPU."""
    stack.train(False)
    correct = torch.zeros(stack.k, device=y.device)
    for i in range(0, len(y), batch_size):
        logits = stack(normalise(x[i:i + batch_size]), shared_input=True)
        correct += (logits.argmax(-1) == y[i:i + batch_size]).sum(1)
    stack.train(True)
    return correct.cpu().double() / len(y)    # exact fractions, as the single-model evaluate's


def train_many(
    scales: Sequence[float],
    epochs: int,
    data: ImageData,
    *,
    seeds: Sequence[int],
    batch_size: int = 128,
    lr: float = 1e-3,
    activation: str = "silu",
    init: str = "he_scaled",
    common_random_numbers: bool = False,
    eval_every_epoch: bool = False,
    device: str | torch.device | None = None,
    progress: bool = False,
    build: Callable[[float, int], nn.Module] | None = None,
    on_epoch: Callable[[int, list[dict]], None] | None = None,
    mechanism: str = "auto",
    precision: str = "fp32",
) -> list[TrainResult]:
    """Train one network per (scale, seed) together; returns one :class:`TrainResult` each.

    ``build(scale, seed)`` replaces SimpleCNN with another architecture (same for all K).
    """
    scales, seeds = [float(s) for s in scales], [int(s) for s in seeds]
    if len(scales) == 0:
        raise ParameterError("scales must hold at least one scale (got none)")
    if len(seeds) != len(scales):
        raise ParameterError(f"seeds must have one seed per scale ({len(scales)}) (got {len(seeds)})")
    for s in scales:
        check_float("scale", s, low=0.0, low_open=True)
    check_int("epochs", epochs, low=1)
    check_int("batch_size", batch_size, low=1)
    check_float("lr", lr, low=0.0, low_open=True)
    check_choice("activation", activation, ACTIVATIONS)
    check_choice("init", init, INIT_METHODS)
    check_choice("common_random_numbers", common_random_numbers, (True, False))
    check_choice("mechanism", mechanism, ("auto", "vmap", "loop"))
    check_choice("precision", precision, ("fp32", "bf16"))
    dev = pick_device(device if device is not None else str(data.device))
    if data.device != dev:
        data = data.to(dev)
    if common_random_numbers:
        seeds = [seeds[0]] * len(scales)
    if mechanism == "auto":
        mechanism = "vmap" if dev.type == "cuda" else "loop"
    if mechanism == "loop":
        def one(j, s, seed):
            cb = None if on_epoch is None else (lambda e, m: on_epoch(e, [m if i == j else {} for i in range(len(scales))]))
            return train_and_evaluate(s, epochs, data, batch_size=batch_size, lr=lr, activation=activation, init=init,
                                      seed=seed, device=dev, precision=precision, eval_every_epoch=eval_every_epoch,
                                      progress=progress, on_epoch=cb, build=build)
        return [one(j, s, seed) for j, (s, seed) in enumerate(zip(scales, seeds))]
    if build is None:
        build = lambda s, seed: build_child(data.in_channels, data.num_classes, s, activation, init,  # noqa: E731
                                            stream_seed(seed, "init"))

    start = time.perf_counter()
    k, n = len(scales), len(data.y_train)
    stack = StackedModels([build(s, seed).to(dev) for s, seed in zip(scales, seeds)])
    opt = torch.optim.Adam(list(stack.params.values()), lr=lr)
    orders = [torch.Generator().manual_seed(stream_seed(seed, "data_order"))
              for seed in (seeds[:1] if common_random_numbers else seeds)]
    alive = torch.ones(k, dtype=torch.bool, device=dev)
    results = [TrainResult(test_accuracy=float("nan"), nan_detected=False) for _ in range(k)]

    for epoch in tqdm(range(epochs), desc=f"{k} networks", leave=False, disable=not progress):
        perms = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(dev)  # (1 or K, n)
        loss_sum = torch.zeros(k, device=dev)
        correct = torch.zeros(k, device=dev)
        alive_at_start = alive.clone()
        for i in range(0, n, batch_size):
            idx = perms[:, i:i + batch_size]
            with autocast(precision, dev):
                if common_random_numbers:
                    logits = stack(normalise(data.x_train[idx[0]]), shared_input=True).float()
                    y = data.y_train[idx[0]].expand(k, -1)
                else:
                    logits = stack(normalise(data.x_train[idx]), shared_input=False).float()
                    y = data.y_train[idx]
            b = y.shape[1]
            losses = masked_step(opt, logits, y, alive)
            loss_sum += torch.where(alive, losses, 0.0) * b
            correct += torch.where(alive, (logits.argmax(-1) == y).sum(1).float(), 0.0)
        with autocast(precision, dev):
            evaluating = eval_every_epoch or epoch == epochs - 1
            test_acc = evaluate_many(stack, data.x_test, data.y_test) if evaluating else None
            val_acc = evaluate_many(stack, data.x_val, data.y_val) if evaluating and data.x_val is not None else None
        finished = alive.tolist()
        died = (alive_at_start & ~alive).tolist()
        epoch_metrics = []
        for j in range(k):
            r = results[j]
            if died[j]:
                r.nan_detected = True
            if not finished[j]:
                epoch_metrics.append({})
                continue
            r.train_loss.append(loss_sum[j].item() / n)
            r.train_accuracy.append(correct[j].item() / n)
            r.epochs_completed = epoch + 1
            m = {"train_loss": r.train_loss[-1], "train_accuracy": r.train_accuracy[-1]}
            if test_acc is not None:
                r.test_accuracy = float(test_acc[j])
                if eval_every_epoch:
                    r.test_accuracy_per_epoch.append(r.test_accuracy)
                m["test_accuracy"] = r.test_accuracy
                r.val_accuracy = float(val_acc[j]) if val_acc is not None else float("nan")
                if eval_every_epoch:
                    r.val_accuracy_per_epoch.append(r.val_accuracy)
                m["val_accuracy"] = r.val_accuracy
            epoch_metrics.append(m)
        if on_epoch is not None:
            on_epoch(epoch, epoch_metrics)
        if not bool(alive.any()):
            break

    seconds = time.perf_counter() - start
    for r in results:
        if r.nan_detected:
            r.test_accuracy = r.val_accuracy = float("nan")
        r.seconds = seconds / k  # wall time shared equally
    return results
