"""Time one redraw of notebook 01's scale explorer, side by side with the first version's redraw.

    python -m benchmarks.bench_explorer --repeat 7

(a) the first version: ``layer_statistics`` on 256 images and a new pyplot figure per change (three panels,
    ``tight_layout``, rendered to PNG); (b) this version (``ScaleExplorer.redraw``): 32 images, one figure kept
    between redraws whose static parts are drawn once and whose lines, marker and title are blitted over
    them, encoded to the widget's PNG. Alternating, median over
    repeats, at scales spread over the slider; both run with the process's torch threads. Written to
    ``outputs/bench/``.
"""
from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch

from benchmarks.bench_training import save_report
from rlinit_lib.core.data import load_dataset
from rlinit_lib.core.runtime import environment_info
from rlinit_lib.scale_search.explorer import layer_statistics, scale_explorer


def first_version_redraw(scale: float, x, y) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = layer_statistics(scale, "silu", x, y)
    fig, axes = plt.subplots(1, 3, figsize=(12.6, 3.4))
    axes[0].semilogy(stats["layer"], stats["preactivation_std"], "o-")
    axes[1].semilogy(stats["layer"], stats["output_grad_std"], "o-")
    axes[2].axvline(scale)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", default="outputs/bench")
    args = ap.parse_args(argv)
    data = load_dataset(args.dataset, "data", train_subset=256, test_subset=10)
    explorer = scale_explorer(data.x_train, data.y_train).explorer
    scales = np.linspace(0.4, 1.6, args.repeat)
    times = {"(a) first version": [], "(b) this version": []}
    first_version_redraw(1.0, data.x_train, data.y_train)
    for s in scales:
        for name in times:
            start = time.perf_counter()
            if name.startswith("(a)"):
                first_version_redraw(float(s), data.x_train, data.y_train)
            else:
                explorer.slider.value = round(float(s), 2)
            times[name].append(time.perf_counter() - start)
    rows = [{"path": k, "median_s": float(np.median(v)), "max_s": float(np.max(v)), "seconds": v} for k, v in times.items()]
    report = {"rows": rows, "threads": torch.get_num_threads(), "environment": environment_info("cpu")}
    save_report(args.out, "bench-explorer", report, ["redraw", "median s", "max s"],
                [[r["path"], f"{r['median_s']:.3f}", f"{r['max_s']:.3f}"] for r in rows])
    return report


if __name__ == "__main__":
    main()
