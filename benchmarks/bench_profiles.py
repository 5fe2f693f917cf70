"""Notebook profiles end to end, fp32 against another precision, in one run on one machine: wall time per
notebook, the verdicts side by side, and the fidelity of 02's grid (the same scales and seeds in both).

    python -m benchmarks.bench_profiles --profile quick --only 01_search 02_proxy_fidelity 05_search_strategies

Each repeat runs every notebook with ``--set precision=fp32`` and with ``--set precision=<other>`` (default
``auto``), alternating which goes first, into fresh output roots. Fidelity (02): Spearman's rho between the
per-scale mean accuracies of the two precisions at the proxy horizon with a percentile-bootstrap interval over
seeds, and the paired per-network difference against the seed-to-seed spread. Written to ``outputs/bench/``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from benchmarks.bench_training import save_report
from rlinit_lib.core.runtime import environment_info
from rlinit_lib.core.stats import paired_difference
from rlinit_lib.run_notebooks import main as run_notebooks


def fidelity(a: Path, b: Path, n_boot: int = 2000, seed: int = 0) -> dict:
    """02's grid in precision a against b: rank agreement of the scales and per-network differences."""
    config = json.loads((a / "config.json").read_text())
    runs = {k: pd.read_csv(d / "runs.csv") for k, d in (("a", a), ("b", b))}
    at = {k: r[(r["epoch"] == config["proxy_horizon"]) & (r["mode"] == "independent")]
          .pivot_table(index="scale", columns="seed_index", values="test_accuracy") for k, r in runs.items()}
    rng = np.random.default_rng(seed)
    n = at["a"].shape[1]
    rho = stats.spearmanr(at["a"].mean(1), at["b"].mean(1)).statistic
    boot = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        boot.append(stats.spearmanr(at["a"].iloc[:, idx].mean(1), at["b"].iloc[:, idx].mean(1)).statistic)
    # one paired difference per network (its accuracy at the proxy horizon): a network's epochs are not
    # independent replicates, so pairing network-epochs would make the interval too narrow
    both = [r[r["epoch"] == config["proxy_horizon"]].set_index(["mode", "scale_index", "seed_index"])["test_accuracy"]
            for r in runs.values()]
    both[1] = both[1].reindex(both[0].index)
    diff = paired_difference(both[1], both[0])
    return {"spearman": float(rho), "spearman_low": float(np.nanpercentile(boot, 2.5)),
            "spearman_high": float(np.nanpercentile(boot, 97.5)), "difference_b_minus_a": diff,
            "seed_sd": float(at["a"].std(axis=1, ddof=1).mean()), "mean_abs_difference": float((both[1] - both[0]).abs().mean()),
            "best_scale_a": float(at["a"].mean(1).idxmax()), "best_scale_b": float(at["b"].mean(1).idxmax()),
            "networks": int(len(both[0]))}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--only", nargs="+", default=["01_search", "02_proxy_fidelity", "05_search_strategies"])
    ap.add_argument("--other", default="auto", choices=["bf16", "auto"], help="the precision set against fp32")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", default="outputs/bench")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-profiles-"))
    seconds = {p: {nb: [] for nb in args.only} for p in ("fp32", args.other)}
    for r in range(args.repeat):
        for p in (("fp32", args.other) if r % 2 == 0 else (args.other, "fp32")):
            for nb in args.only:
                start = time.perf_counter()
                status = run_notebooks(["--profile", args.profile, "--only", nb, "--outputs-root", str(tmp / f"{p}-{r}"),
                                        "--set", f"precision={p}"])
                seconds[p][nb].append(time.perf_counter() - start)
                print(f"repeat {r}: {p:<5} {nb:<22} {seconds[p][nb][-1] / 60:6.2f} min (status {status})", flush=True)
    last = {p: tmp / f"{p}-{args.repeat - 1}" for p in seconds}
    verdicts = {nb: {p: json.loads((d / nb / "report.json").read_text()).get("verdict", "") for p, d in last.items()}
                for nb in args.only}
    chosen = {nb: json.loads((last[args.other] / nb / "environment.json").read_text()).get("precision")
              for nb in args.only}
    fid = fidelity(last["fp32"] / "02_proxy_fidelity", last[args.other] / "02_proxy_fidelity") \
        if "02_proxy_fidelity" in args.only else None
    rows = []
    for nb in args.only:
        a, b = float(np.median(seconds["fp32"][nb])), float(np.median(seconds[args.other][nb]))
        rows.append({"notebook": nb, "fp32_min": a / 60, f"{args.other}_min": b / 60, "speedup": a / b,
                     "chosen": (chosen[nb] or {}).get("chosen")})
    total = sum(float(np.median(seconds["fp32"][nb])) for nb in args.only) / sum(
        float(np.median(seconds[args.other][nb])) for nb in args.only)
    rows.append({"notebook": "together", "fp32_min": sum(r["fp32_min"] for r in rows),
                 f"{args.other}_min": sum(r[f"{args.other}_min"] for r in rows), "speedup": total, "chosen": ""})
    report = {"rows": rows, "seconds": seconds, "verdicts": verdicts, "precision_records": chosen, "fidelity_02": fid,
              "outputs": str(tmp), "args": vars(args), "environment": environment_info("cpu")}
    save_report(args.out, "bench-profiles", report, ["notebook", "fp32 min", f"{args.other} min", "x", "chosen"],
                [[r["notebook"], f"{r['fp32_min']:.2f}", f"{r[f'{args.other}_min']:.2f}", f"{r['speedup']:.2f}",
                  r["chosen"]] for r in rows])
    if fid:
        print(json.dumps(fid, indent=2, default=str))
    for nb, v in verdicts.items():
        print(f"\n== {nb}\n-- fp32:\n{v['fp32']}\n-- {args.other}:\n{v[args.other]}")
    return report


if __name__ == "__main__":
    main()
