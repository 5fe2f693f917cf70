"""Numeric precision of training: fp32, bf16 autocast, or ``auto`` chosen by a short on-device probe.

``bf16`` runs convolutions and matrix products under ``torch.autocast(dtype=bfloat16)``; weights, Adam's
state, the loss and its reduction stay fp32 (the callers cast logits to fp32 before the loss). On CPUs
with AMX-BF16 (oneDNN's ``avx10_1_512_amx`` / ``avx512_core_amx`` kernels) this is about twice as fast as
fp32 for SimpleCNN; on CPUs without bf16 hardware it is an order of magnitude slower (BENCHMARKS.md).

``auto`` therefore measures instead of guessing from CPU flags: :func:`resolve_precision` times a few
training steps of the caller's own model in both precisions, alternating, and picks bf16 only when its
median step is faster by at least ``AUTO_MARGIN``. The answer is cached for the process (one probe per
device, model shape, batch size and thread count) and returned with the probe's numbers, which go into a
run's environment record; the chosen precision is part of a run's identity.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable, Hashable

import torch

from rlinit_lib.core.params import check_choice

PRECISIONS = ("fp32", "bf16", "auto")
AUTO_MARGIN = 0.9      # bf16 must take <= 90% of fp32's step time: a near-tie keeps the faithful fp32
SCREEN = 4.0           # a first bf16 step this many times slower than fp32's ends the probe: no bf16 hardware
_CHOICES: dict[Hashable, dict] = {}


def autocast(precision: str, device: torch.device | str):
    """The context a forward pass runs in: bf16 autocast for ``bf16``, nothing for ``fp32``."""
    check_choice("precision", precision, ("fp32", "bf16"))
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def time_alternating(steps: dict[str, Callable[[], None]], repeats: int = 3, warmup: int = 1,
                     sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Seconds per call of each function, called in turn ``repeats`` times after ``warmup`` calls each
    (alternating, so that a machine's drift hits every path alike)."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def decide(fp32_seconds: float, bf16_seconds: float, margin: float = AUTO_MARGIN) -> str:
    """``bf16`` when its step takes at most ``margin`` of fp32's, else ``fp32``."""
    return "bf16" if bf16_seconds <= margin * fp32_seconds else "fp32"


def resolve_precision(requested: str, key: Hashable, make_step: Callable[[str], Callable[[], None]],
                      device: torch.device | str = "cpu", repeats: int = 3, stored: str | None = None) -> dict:
    """The precision to train with, as a record ``{"requested", "chosen", "probe"}``.

    ``fp32``/``bf16`` are returned as asked (``probe`` None). ``auto`` with ``stored`` (the precision an
    existing run store of this run was trained in) keeps it, so a resumed run is never refused because a
    new probe came out the other way. Otherwise ``auto`` runs ``make_step(p)()`` (one training step of the
    caller's model in precision ``p``) alternately and applies :func:`decide` to the medians; ``key``
    identifies the probe (device, shapes, threads) in the per-process cache."""
    check_choice("precision", requested, PRECISIONS)
    if requested != "auto":
        return {"requested": requested, "chosen": requested, "probe": None}
    if stored in ("fp32", "bf16"):
        return {"requested": "auto", "chosen": stored, "probe": {"note": "kept from the existing run store"}}
    full_key = (str(device), torch.get_num_threads(), key)
    if full_key not in _CHOICES:
        dev = torch.device(device)
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        if dev.type == "cuda" and not torch.cuda.is_bf16_supported():
            _CHOICES[full_key] = {"requested": "auto", "chosen": "fp32",
                                  "probe": {"note": "this GPU has no bf16 support"}}
        else:
            steps = {p: make_step(p) for p in ("fp32", "bf16")}
            first = time_alternating(steps, repeats=1, warmup=0, sync=sync)    # the first calls include JIT warm-up
            if first["bf16"][0] > SCREEN * first["fp32"][0]:
                times, note = first, f"stopped after one step each: bf16 took over {SCREEN}x fp32's (no bf16 hardware)"
            else:
                times, note = time_alternating(steps, repeats=repeats, warmup=0, sync=sync), None
            med = {p: statistics.median(t) for p, t in times.items()}
            _CHOICES[full_key] = {"requested": "auto", "chosen": decide(med["fp32"], med["bf16"]), "probe": {
                "device": str(dev), "threads": torch.get_num_threads(), "repeats": len(times["fp32"]),
                "margin": AUTO_MARGIN, "fp32_step_ms": 1000 * med["fp32"], "bf16_step_ms": 1000 * med["bf16"],
                "bf16_speedup": med["fp32"] / med["bf16"], **({"note": note} if note else {})}}
    return dict(_CHOICES[full_key])
