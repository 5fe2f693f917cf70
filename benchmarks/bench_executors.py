"""Side-by-side wall time of the trial executors on notebook 02's grid, and Ray's per-trial overhead.

    python -m benchmarks.bench_executors                      # 02's quick profile grid, serial/processes/ray
    python -m benchmarks.bench_executors --epochs 2 --repeat 3

Each repeat runs the same grid (same seeds) with ``executor`` serial, processes (``--workers``
processes, cores / workers torch threads each) and ray (a local Ray with ``--workers`` CPUs, one CPU
per trial), alternating the order of the three in every repeat, into fresh run stores, and checks
that the three tables are identical. Then it times ``--empty`` trials that do nothing on Ray and on the
process pool (trials per second: the executors' own cost). Reports medians, the CPU flags and versions;
written to ``outputs/bench/`` (JSON + markdown).
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
from rlinit_lib.scale_search.proxy_fidelity import FidelityConfig, run_grid

EXECUTORS = ("serial", "processes", "ray")


def empty_trial(i: int) -> dict:
    return {"empty": [{"i": i}]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="params/quick/02_proxy_fidelity.yaml", help="02's parameters to time")
    ap.add_argument("--epochs", type=int, help="override the profile's epochs (a shorter benchmark)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--empty", type=int, default=200, help="empty trials for the per-trial overhead")
    ap.add_argument("--out", default="outputs/bench")
    args = ap.parse_args(argv)
    params = yaml.safe_load(Path(args.profile).read_text()) | {"wandb_mode": "disabled", "progress": False}
    if args.epochs:
        params |= {"epochs": args.epochs, "horizons": [1], "proxy_horizon": 1}
    tmp = Path(tempfile.mkdtemp(prefix="bench-executors-"))
    seconds = {e: [] for e in EXECUTORS}
    tables = {}
    for r in range(args.repeat):
        order = EXECUTORS[r % 3:] + EXECUTORS[:r % 3]        # alternate who goes first
        for ex in order:
            cfg = FidelityConfig.from_dict(params | {"executor": ex, "workers": args.workers,
                                                     "output_dir": str(tmp / f"{ex}-{r}")})
            start = time.perf_counter()
            tables[ex] = run_grid(cfg)
            seconds[ex].append(time.perf_counter() - start)
            print(f"repeat {r}: {ex:<9} {seconds[ex][-1]:8.1f} s", flush=True)
    same = all(tables[e].equals(tables["serial"]) for e in EXECUTORS)
    n_trials = tables["serial"].groupby(["mode", "scale_index", "seed_index"]).ngroups
    overhead = {}
    for ex in ("processes", "ray"):
        store = RunStore(tmp / f"empty-{ex}", "empty", {})
        trials = [Trial(f"e/{i}", empty_trial, {"i": i}) for i in range(args.empty)]
        run_trials(store, [Trial("warm-up", empty_trial, {"i": -1})], executor=ex, workers=args.workers)
        start = time.perf_counter()
        run_trials(store, trials, executor=ex, workers=args.workers)
        overhead[ex] = args.empty / (time.perf_counter() - start)
        print(f"empty trials on {ex}: {overhead[ex]:.0f} per second (pool start excluded)", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    base = float(np.median(seconds["serial"]))
    rows = [{"executor": e, "median_seconds": float(np.median(s)), "seconds": s, "speedup": base / float(np.median(s))}
            for e, s in seconds.items()]
    report = {"rows": rows, "grid_trials": n_trials, "identical_tables": same, "empty_trials_per_second": overhead,
              "args": vars(args), "params": params, "environment": environment_info("cpu")}
    save_report(args.out, "bench-executors", report,
                ["executor", "wall s (median)", "x vs serial", "identical table"],
                [[r["executor"], f"{r['median_seconds']:.1f}", f"{r['speedup']:.2f}", same] for r in rows])
    return report


if __name__ == "__main__":
    main()
