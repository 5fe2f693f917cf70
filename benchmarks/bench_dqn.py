"""Side-by-side timing of DQN over seeds (notebook 04): one seed at a time against all seeds at once.

    python -m benchmarks.bench_dqn --seeds 10 --episodes 300 --variants minimalrl_schedule

Times, in one run on the same machine: (a) ``train_dqn``, the faithful one-seed path (the task's reference
environment, one ``nn.Module``; ``--task``, default CartPole-v1), for each (variant, seed) in turn; (b) ``train_dqn_batched`` with all
of those runs together, and optionally (``--ks``) with K seeds of the first variant (no baseline).
``--baseline numpy-loop`` makes (a) the batched path with NumPy's step loop (``compiled=False``), to time the
compiled CartPole acting loop (``cartpole_play``) against it.
It reports seconds per run, the speed-up over (a), environment steps per second, and whether (b)
reproduced (a)'s returns exactly. ``--per-arm`` times (a) and (b) for each variant on its own (every arm runs
batched) and estimates the paper profile's CartPole part per arm from (b)'s env steps per second
(``PAPER_SEEDS`` x ``PAPER_STEPS``); ``--step-budget`` caps each run's env steps. Runs use notebook 04's settings (``SmoothReinitConfig.dqn_config``: the
standard rule and the diagnostics every ``diag_every`` episodes) and its run seeds ``derive_seed(0, s)``. ``--repeat N`` times (a) and (b) N times, alternating, and reports
the medians (and every time in the JSON): on a shared machine single timings vary by 20-30%. Written to ``outputs/bench/`` (JSON + markdown) with device, versions and date.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from benchmarks.bench_training import save_report
from rlinit_lib.smooth_reinit.dqn import train_dqn
from rlinit_lib.smooth_reinit.dqn_batched import train_dqn_batched
from rlinit_lib.core.runtime import derive_seed, environment_info, pick_device
from rlinit_lib.smooth_reinit.experiment import DQN_VARIANTS, SmoothReinitConfig
from rlinit_lib.smooth_reinit.tasks import TASKS


PAPER_SEEDS, PAPER_STEPS = 20, 200_000     # notebook 04's paper profile: seeds per arm, step budget per run


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="Time DQN over seeds: one at a time against all at once.")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--episodes", type=int, default=400)
    ap.add_argument("--variants", nargs="+", default=["minimalrl_schedule"], choices=list(DQN_VARIANTS))
    ap.add_argument("--wait-fraction", type=float, default=1.0)
    ap.add_argument("--ks", type=int, nargs="*", default=[], help="extra batched runs with this many seeds")
    ap.add_argument("--repeat", type=int, default=1, help="time (a) and (b) this many times, alternating; medians")
    ap.add_argument("--device", default="cpu", help="device of the batched path's networks")
    ap.add_argument("--step-budget", type=int, default=0, help="environment steps per run (0: episodes only)")
    ap.add_argument("--per-arm", action="store_true", help="(a) and (b) for each variant on its own")
    ap.add_argument("--task", default="CartPole-v1", choices=list(TASKS), help="the task of every run")
    ap.add_argument("--baseline", default="faithful", choices=["faithful", "numpy-loop"],
                    help="(a): the faithful path, or the batched path with NumPy's step loop (no compiled CartPole loop)")
    ap.add_argument("--out", default="outputs/bench")
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.episodes < 1 or args.repeat < 1 or any(k < 1 for k in args.ks):
        raise SystemExit("seeds, episodes, repeat and every K must be >= 1")
    if not 0 < args.wait_fraction <= 1:
        raise SystemExit(f"wait-fraction must be > 0 and <= 1 (got {args.wait_fraction})")
    device = pick_device(args.device)
    notebook = SmoothReinitConfig(dqn_episodes=args.episodes, dqn_step_budget=args.step_budget)
    configs = {v: notebook.dqn_config(v, 0, args.task) for v in args.variants}
    seeds = [derive_seed(0, s) for s in range(max([args.seeds, *args.ks]))]     # the notebook's run seeds
    groups = {v: [replace(cfg, seed=s) for s in seeds[:args.seeds]] for v, cfg in configs.items()} if args.per_arm \
        else {f"{len(configs)} variant(s)": [replace(cfg, seed=s) for cfg in configs.values() for s in seeds[:args.seeds]]}
    rows = []

    def record(name, results, seconds, same=None):
        k, steps = len(results), sum(r["env_steps"] for r in results)
        rows.append({"path": name, "runs": k, "seconds": seconds, "s_per_run": seconds / k,
                     "env_steps_per_s": steps / seconds, "identical_to_a": same})
        print(f"{name:<50} runs={k:<4} {seconds / k:8.2f} s/run  {steps / seconds:9.0f} steps/s"
              + ("" if same is None else f"  identical to (a): {same}"), flush=True)

    for label, runs in groups.items():
        times_a, times_b = [], []
        for _ in range(args.repeat):     # alternated, so that slow spells of a shared machine hit both paths
            t = time.perf_counter()
            baseline = [train_dqn(r) for r in runs] if args.baseline == "faithful" else \
                train_dqn_batched(runs, device=device, wait_fraction=args.wait_fraction, compiled=False)
            times_a.append(time.perf_counter() - t)
            t = time.perf_counter()
            batched = train_dqn_batched(runs, device=device, wait_fraction=args.wait_fraction)
            times_b.append(time.perf_counter() - t)
        same = all(b["returns"] == f["returns"] and b["lengths"] == f["lengths"] for b, f in zip(batched, baseline))
        name = f"{label} x {args.seeds} seeds"
        record(f"(a) faithful, one run at a time ({name})" if args.baseline == "faithful" else
               f"(a) batched on {device.type}, NumPy step loop ({name})", baseline, float(np.median(times_a)))
        rows[-1]["seconds_each_repeat"], rows[-1]["arm"] = times_a, label
        record(f"(b) batched on {device.type} ({name})", batched, float(np.median(times_b)), same)
        rows[-1]["seconds_each_repeat"], rows[-1]["arm"] = times_b, label
        rows[-1]["x_vs_faithful"] = rows[-2]["s_per_run"] / rows[-1]["s_per_run"]
    first, first_name = groups[next(iter(groups))][0], args.variants[0]
    for k in args.ks:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        results = train_dqn_batched([replace(first, seed=s) for s in seeds[:k]], device=device,
                                    wait_fraction=args.wait_fraction)
        record(f"(b) batched on {device.type} ({first_name} x {k} seeds)", results, time.perf_counter() - t)

    base = rows[0]["s_per_run"]
    for r in rows:      # per arm: against that arm's own (a)
        r["speedup_vs_a"] = r.get("x_vs_faithful", 1.0) if args.per_arm and "arm" in r else base / r["s_per_run"]
    report_estimate = {}
    if args.per_arm:    # notebook 04's paper profile, CartPole DQN part, at these rates (an estimate: rates vary with returns)
        rate = {r["arm"]: r["env_steps_per_s"] for r in rows if r["path"].startswith("(b)") and "arm" in r}
        report_estimate = {v: PAPER_SEEDS * PAPER_STEPS / rate[v] / 60 for v in rate}
        print(f"paper profile estimate ({PAPER_SEEDS} seeds x {PAPER_STEPS:,} steps per arm, batched): "
              + ", ".join(f"{v} {m:.1f} min" for v, m in report_estimate.items()), flush=True)
    report = {"rows": rows, "args": vars(args), "configs": {v: c.to_dict() for v, c in configs.items()},
              "environment": environment_info(device),
              "paper_profile_minutes_per_arm": report_estimate}
    save_report(args.out, f"bench-dqn-{device.type}", report,
                ["path", "runs", "s per run", "x vs (a)", "env steps/s", "identical to (a)"],
                [[r["path"], r["runs"], f"{r['s_per_run']:.2f}", f"{r['speedup_vs_a']:.2f}", f"{r['env_steps_per_s']:.0f}",
                  "" if r["identical_to_a"] is None else r["identical_to_a"]] for r in rows])
    return report


if __name__ == "__main__":
    main()
