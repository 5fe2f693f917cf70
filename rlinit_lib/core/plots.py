"""The study's one band plot: mean over replicates (seeds) with a 95% band, per group, against x.

The band is :func:`core.stats.interval` of the mean at each x (Student's t, the method whose coverage
is tested), intersected with the quantity's ``bounds`` when it has them (an accuracy in [0, 1], a
CartPole return in [0, 500]), so it stays inside them. Every figure of the study that shows a mean
with its uncertainty over a curve uses :func:`band_plot`.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from rlinit_lib.core.stats import interval

LINESTYLES = ("-", "--", "-.", ":")


def band(values: np.ndarray, bounds: tuple | None = None, confidence: float = 0.95
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``values`` [points, replicates] (NaN = missing) -> (mean, low, high) per point: the t interval of
    the mean over the replicates present at each point, inside ``bounds``."""
    values = np.asarray(values, float)
    with warnings.catch_warnings():   # a point that no replicate reached (a short run) stays NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        rows = [tuple(interval(row, "mean", confidence=confidence, bounds=bounds)) for row in values]
    out = np.array(rows, float).reshape(-1, 3)
    return out[:, 0], out[:, 1], out[:, 2]


def band_plot(ax, data: pd.DataFrame, x: str, y: str, replicate: str, group: str | None = None, *,
              bounds: tuple | None = None, label=lambda g: str(g), styles: dict | None = None):
    """Draw one mean line with its 95% band per ``group`` of a long table (one row per x, group and
    replicate). ``styles``: group -> matplotlib kwargs (colour and line style) so that overlapping
    lines stay distinguishable; by default colours cycle and line styles alternate."""
    groups = [(None, data)] if group is None else list(data.groupby(group, sort=False, observed=True))
    for i, (g, d) in enumerate(groups):
        wide = d.pivot_table(index=x, columns=replicate, values=y, aggfunc="mean", dropna=False)
        mean, lo, hi = band(wide.to_numpy(), bounds)
        style = {"color": f"C{i % 10}", "ls": LINESTYLES[i % len(LINESTYLES)]} | (styles or {}).get(g, {})
        if len(wide.index) < 3:   # a line needs points to be seen
            style.setdefault("marker", "o")
        ax.plot(wide.index, mean, label=None if g is None else label(g), **style)
        ax.fill_between(wide.index, lo, hi, color=style["color"], alpha=0.15, lw=0)
    ax.grid(alpha=0.3)
    if group is not None:
        ax.legend(fontsize=7)
    return ax
