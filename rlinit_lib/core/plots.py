"""The study's one band plot: mean over replicates (seeds) with a 95% band, per group, against x.

The band is Student's t interval of the mean, or, when the quantity has ``bounds`` (an accuracy in
[0, 1], a CartPole return in [0, 500]), a percentile bootstrap of the mean over replicates, which
stays inside the bounds. Every figure of the study that shows a mean with its uncertainty over a
curve uses :func:`band_plot`.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from rlinit_lib.core.stats import mean_ci

LINESTYLES = ("-", "--", "-.", ":")


def band(values: np.ndarray, bounds: tuple | None = None, n_boot: int = 1000, seed: int = 0,
         confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``values`` [points, replicates] (NaN = missing) -> (mean, low, high) per point."""
    values = np.asarray(values, float)
    mean = np.nanmean(values, axis=1) if values.size else np.zeros(0)
    if bounds is None:
        stats = np.array([mean_ci(row, confidence)[1:] for row in values]).reshape(-1, 2)
        return mean, stats[:, 0], stats[:, 1]
    rng = np.random.default_rng(seed)
    n = values.shape[1]
    idx = rng.integers(0, n, (n_boot, n))
    with warnings.catch_warnings():   # a point that no replicate reached (a short run) stays NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        boot = np.nanmean(values[:, idx], axis=2)          # [points, n_boot]
    q = 50 * (1 - confidence), 50 * (1 + confidence)
    lo, hi = np.nanpercentile(boot, q, axis=1) if n > 1 else (np.full_like(mean, np.nan),) * 2
    return mean, lo, hi


def band_plot(ax, data: pd.DataFrame, x: str, y: str, replicate: str, group: str | None = None, *,
              bounds: tuple | None = None, label=lambda g: str(g), styles: dict | None = None, seed: int = 0):
    """Draw one mean line with its 95% band per ``group`` of a long table (one row per x, group and
    replicate). ``styles``: group -> matplotlib kwargs (colour and line style) so that overlapping
    lines stay distinguishable; by default colours cycle and line styles alternate."""
    groups = [(None, data)] if group is None else list(data.groupby(group, sort=False, observed=True))
    for i, (g, d) in enumerate(groups):
        wide = d.pivot_table(index=x, columns=replicate, values=y, aggfunc="mean", dropna=False)
        mean, lo, hi = band(wide.to_numpy(), bounds, seed=seed)
        style = {"color": f"C{i % 10}", "ls": LINESTYLES[i % len(LINESTYLES)]} | (styles or {}).get(g, {})
        if len(wide.index) < 3:   # a line needs points to be seen
            style.setdefault("marker", "o")
        ax.plot(wide.index, mean, label=None if g is None else label(g), **style)
        ax.fill_between(wide.index, lo, hi, color=style["color"], alpha=0.15, lw=0)
    ax.grid(alpha=0.3)
    if group is not None:
        ax.legend(fontsize=7)
    return ax
