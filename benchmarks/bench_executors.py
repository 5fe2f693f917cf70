"""Side-by-side wall time of the trial executors and thread layouts on notebook 02's grid, and the
executors' per-trial overhead.

    python -m benchmarks.bench_executors                      # 02's quick grid: serial, processes, ray
    python -m benchmarks.bench_executors --layouts serial:2 processes:1 --precision bf16 --repeat 2

A layout is ``executor:threads``: ``serial:2`` is one process training one network at a time with 2
torch threads, ``processes:1`` is ``--workers`` single-thread processes each training its own network
(``trial_cpus`` = threads). Each repeat runs the same grid (same seeds) with every layout, alternating
their order, into fresh run stores, and checks that layouts with the same thread count give identical
tables (a convolution's sums depend on the thread count, so 1- and 2-thread tables differ in the last
digits). Then it times ``--empty`` trials that do nothing on Ray and on the process pool (trials per
second: the executors' own cost). Reports medians, the CPU flags and versions; written to
``outputs/bench/`` (JSON + markdown).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.bench_training import save_report
from rlinit_lib.core.runtime import environment_info
from rlinit_lib.core.store import RunStore
from rlinit_lib.core.trials import Trial, run_trials
from rlinit_lib.core.study import run
from rlinit_lib.scale_search import proxy_fidelity as pf
from rlinit_lib.scale_search.proxy_fidelity import FidelityConfig

LAYOUTS = ("serial:1", "processes:1", "ray:1")


def empty_trial(i: int) -> dict:
    return {"empty": [{"i": i}]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="params/quick/02_proxy_fidelity.yaml", help="02's parameters to time")
    ap.add_argument("--epochs", type=int, help="override the profile's epochs (a shorter benchmark)")
    ap.add_argument("--precision", choices=["fp32", "bf16", "auto"], help="override the profile's precision")
    ap.add_argument("--layouts", nargs="+", default=list(LAYOUTS), help="executor:threads per trial")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--empty", type=int, default=200, help="empty trials for the per-trial overhead (0: skip)")
    ap.add_argument("--out", default="outputs/bench")
    args = ap.parse_args(argv)
    layouts = [(name, name.split(":")[0], int(name.split(":")[1])) for name in args.layouts]
    params = yaml.safe_load(Path(args.profile).read_text()) | {"wandb_mode": "disabled", "progress": False}
    if args.epochs:
        params |= {"epochs": args.epochs, "horizons": [1], "proxy_horizon": 1}
    if args.precision:
        params["precision"] = args.precision
    tmp = Path(tempfile.mkdtemp(prefix="bench-executors-"))
    seconds = {name: [] for name, *_ in layouts}
    tables, chosen = {}, None
    for r in range(args.repeat):
        order = layouts[r % len(layouts):] + layouts[:r % len(layouts)]        # alternate who goes first
        for name, ex, threads in order:
            cfg = FidelityConfig.from_dict(params | {"executor": ex, "workers": args.workers, "trial_cpus": threads,
                                                     "output_dir": str(tmp / f"{ex}-{threads}-{r}")})
            chosen = cfg.precision_record()
            start = time.perf_counter()
            tables[name] = run(pf, cfg).runs
            seconds[name].append(time.perf_counter() - start)
            print(f"repeat {r}: {name:<12} {seconds[name][-1]:8.1f} s", flush=True)
    same = {name: next((tables[other].equals(tables[name]) for other, _, t in layouts
                        if t == threads and other != name), None) for name, _, threads in layouts}
    n_trials = next(iter(tables.values())).groupby(["mode", "scale_index", "seed_index"]).ngroups
    overhead = {}
    for ex in ("processes", "ray") if args.empty else ():
        store = RunStore(tmp / f"empty-{ex}", "empty", {})
        trials = [Trial(f"e/{i}", empty_trial, {"i": i}) for i in range(args.empty)]
        run_trials(store, [Trial("warm-up", empty_trial, {"i": -1})], executor=ex, workers=args.workers)
        start = time.perf_counter()
        run_trials(store, trials, executor=ex, workers=args.workers)
        overhead[ex] = args.empty / (time.perf_counter() - start)
        print(f"empty trials on {ex}: {overhead[ex]:.0f} per second (pool start excluded)", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    base = float(np.median(seconds[layouts[0][0]]))
    rows = [{"layout": name, "median_seconds": float(np.median(s)), "seconds": s, "speedup": base / float(np.median(s)),
             "identical_to_same_threads": same[name]} for name, s in seconds.items()]
    report = {"rows": rows, "grid_trials": n_trials, "empty_trials_per_second": overhead, "precision": chosen,
              "args": vars(args), "params": params, "environment": environment_info("cpu")}
    save_report(args.out, "bench-executors", report,
                ["layout (executor:threads per trial)", "wall s (median)", f"x vs {layouts[0][0]}",
                 "table identical to the other layout with the same threads"],
                [[r["layout"], f"{r['median_seconds']:.1f}", f"{r['speedup']:.2f}",
                  "n/a" if r["identical_to_same_threads"] is None else r["identical_to_same_threads"]] for r in rows])
    return report


if __name__ == "__main__":
    main()
