"""Candidates per hour for notebook 07's formula search: one candidate after another against K at once (issue 27).

    python -m benchmarks.bench_formula --testbed mlp10_relu_sgd --k 9 --train-subset 10000 --repeat 3

Times, in one run on the same machine and data (Fashion-MNIST, resident on the device), ``--k`` He-like candidates
(He times 0.8 ... 1.2, one seed each) trained for ``--epochs`` proxy epochs on ``--testbed`` by
``testbeds.train_candidates`` with (a) ``mechanism='loop'`` (``train_candidate`` one after another; what a trial
does on the CPU) and (b) ``mechanism='vmap'`` (the K networks stacked; what a trial does on a GPU). ``--repeat N``
alternates the two N times and reports medians of wall seconds per candidate and candidates per hour (one
process; on the CPU with ``--threads`` torch threads). Also reports the largest difference between the two paths'
validation accuracies. Results go to ``outputs/bench/formula_<device>.json`` with device, versions and CPU flags.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rlinit_lib.core.data import load_dataset
from rlinit_lib.core.runtime import environment_info, pick_device
from rlinit_lib.formula_search.testbeds import TESTBEDS, build, gain, get_testbed, layer_fans, train_candidates


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--testbed", default="mlp10_relu_sgd", choices=sorted(TESTBEDS))
    p.add_argument("--k", type=int, default=9, help="candidates per batch (07's quick round: 3 searchers x 3 repeats)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--train-subset", type=int, default=10000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--out", default="outputs/bench")
    a = p.parse_args(argv)
    dev = pick_device(a.device)
    torch.set_num_threads(a.threads)
    data = load_dataset(a.dataset, train_subset=a.train_subset, test_subset=2000, val_size=2000).to(dev)
    tb = get_testbed(a.testbed)
    fans = layer_fans(build(tb, tuple(data.x_train.shape[1:]), data.num_classes))
    g = gain(tb.activation)
    sigmas = [[c * g / math.sqrt(fi) for fi, _ in fans] for c in np.linspace(0.8, 1.2, a.k)]
    seeds = list(range(a.k))
    times: dict[str, list[float]] = {"loop": [], "vmap": []}
    results = {}
    for r in range(a.repeat):
        for mech in (("loop", "vmap") if r % 2 == 0 else ("vmap", "loop")):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            results[mech] = train_candidates(tb, sigmas, data, seeds, a.epochs, device=dev, mechanism=mech)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times[mech].append(time.perf_counter() - start)
            print(f"repeat {r + 1}/{a.repeat} {mech}: {times[mech][-1]:.2f} s for {a.k} candidates", flush=True)
    gap = max(abs(x["val_accuracy"] - y["val_accuracy"]) for x, y in zip(results["loop"], results["vmap"]))
    env = environment_info(dev)
    rows = {m: {"median_s_per_candidate": float(np.median(t)) / a.k,
                "candidates_per_hour": 3600 * a.k / float(np.median(t)), "runs_s": t} for m, t in times.items()}
    out = {"testbed": a.testbed, "k": a.k, "epochs": a.epochs, "train_subset": a.train_subset, "threads": a.threads,
           "repeat": a.repeat, "max_val_accuracy_gap": gap, "paths": rows, "environment": env,
           "command": "python -m benchmarks.bench_formula " + " ".join(sys.argv[1:] if argv is None else argv)}
    print(f"\n{a.testbed}, {a.epochs} epoch(s) on {a.train_subset} images, K = {a.k}, {dev}, "
          f"flags {' '.join(env.get('cpu_flags', []))}")
    print("| path | s per candidate (median) | candidates per hour |\n|---|---|---|")
    for m, row in rows.items():
        print(f"| {m} | {row['median_s_per_candidate']:.3f} | {row['candidates_per_hour']:,.0f} |")
    print(f"largest validation-accuracy difference between the paths: {gap:.4f}")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    Path(a.out, f"formula_{dev.type}.json").write_text(json.dumps(out, indent=1, default=str))
    return out


if __name__ == "__main__":
    main()
