"""Small statistics used to say what is and is not significant.

:func:`interval` is the study's one interval function: every table and the band plot take their
intervals from it, and each names its method. The method was chosen by measured coverage
(``tests/test_stats_and_plots.py`` simulates it): Student's t for means and paired differences
(93-97% at n = 3, 5 and 10 for normal and moderately skewed data, where the percentile bootstrap
covered 74% at n = 3); a BCa bootstrap for medians and interquartile means, and only from
``MIN_BOOTSTRAP_N`` replicates up (below that it does not cover, and the interval is NaN).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats as _st

MIN_BOOTSTRAP_N = 10
STATISTICS = ("mean", "median", "iqm")


@dataclass(frozen=True)
class Interval:
    """An estimate with its interval and the method that made it (``n``: the finite replicates used)."""

    estimate: float
    low: float
    high: float
    method: str
    n: int

    def __iter__(self):   # (estimate, low, high), as mean_ci returns
        return iter((self.estimate, self.low, self.high))


def iqm(x, axis=-1):
    """Interquartile mean: the mean of the middle 50% (rliable's aggregate)."""
    return _st.trim_mean(x, 0.25, axis=axis)


_STAT: dict[str, Callable] = {"median": np.median, "iqm": iqm}


def interval(values, statistic: str = "mean", *, confidence: float = 0.95, bounds: tuple | None = None,
             seed: int = 0, n_boot: int = 2000) -> Interval:
    """The interval of ``statistic`` over replicates ``values`` (non-finite values are missing and left
    out: a diverged run must be scored by the caller first, see ``core.verdicts.score_diverged``).

    ``mean``: Student's t interval; ``bounds`` (the range the quantity can take, e.g. (0, 1) for an
    accuracy) intersect it, which keeps its coverage since the true mean lies inside. A constant sample
    gives [c, c]. ``median`` / ``iqm``: a BCa bootstrap (``scipy.stats.bootstrap``) from
    ``MIN_BOOTSTRAP_N`` replicates up; fewer give a NaN interval (measured: it does not cover there)."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {', '.join(STATISTICS)} (got {statistic!r})")
    v = np.asarray(values, float).ravel()
    v = v[np.isfinite(v)]
    n, nan = len(v), float("nan")
    if n == 0:
        return Interval(nan, nan, nan, "no data", 0)
    if statistic == "mean":
        m = float(v.mean())
        if n < 2:
            return Interval(m, nan, nan, "t (n < 2: none)", n)
        sd = 0.0 if np.ptp(v) == 0 else float(v.std(ddof=1))   # a constant sample: exactly [c, c]
        half = float(_st.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n))
        lo, hi = m - half, m + half
        method = "t"
    else:
        f = _STAT[statistic]
        m = float(f(v))
        if n < MIN_BOOTSTRAP_N:
            return Interval(m, nan, nan, f"BCa bootstrap (n < {MIN_BOOTSTRAP_N}: none)", n)
        if np.ptp(v) == 0:
            lo = hi = m
        else:
            res = _st.bootstrap((v,), f, confidence_level=confidence, method="BCa", n_resamples=n_boot,
                                random_state=np.random.default_rng(seed), vectorized=True)
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        method = "BCa bootstrap"
    if bounds is not None and np.isfinite(lo):
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return Interval(m, float(lo), float(hi), method, n)


def mean_ci(values, confidence: float = 0.95, bounds: tuple | None = None) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval (lo, hi): :func:`interval` of the mean as a tuple."""
    return tuple(interval(values, "mean", confidence=confidence, bounds=bounds))


def paired_difference(a, b, confidence: float = 0.95, bounds: tuple | None = None) -> dict:
    """Mean of ``a - b`` over paired runs, its t interval and the paired t-test p-value. Identical pairs
    (every difference 0) give [0, 0] and p = 1; a constant non-zero difference has no spread to form an
    interval from, so its interval and p-value are NaN (a verdict reads it as inconclusive), never the
    [c, c] of a zero standard error. ``bounds``: the range the difference can take (accuracies: (-1, 1));
    the interval is intersected with it."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    d = d[np.isfinite(d)]
    iv = interval(d, "mean", confidence=confidence, bounds=bounds)
    if len(d) < 2:
        p = float("nan")
    elif np.ptp(d) == 0 and d[0] != 0:   # no spread: no interval, no test
        iv = Interval(iv.estimate, float("nan"), float("nan"), "t (no spread: none)", iv.n)
        p = float("nan")
    elif np.ptp(d) == 0:
        p = 1.0
    else:
        p = float(_st.ttest_1samp(d, 0.0).pvalue)
    return {"mean": iv.estimate, "ci_low": iv.low, "ci_high": iv.high, "p_value": p, "n": int(len(d)),
            "sd": float(d.std(ddof=1)) if len(d) > 1 else float("nan")}


def welch(a, b, confidence: float = 0.95) -> dict:
    """Difference of means ``mean(a) - mean(b)`` with Welch's interval and p-value."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:   # no variance estimate: no interval, no test
        diff = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
        return {"mean": diff, "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan"),
                "dof": float("nan"), "sd": float("nan")}
    diff = float(a.mean() - b.mean())
    va, vb = (0.0 if np.ptp(x) == 0 else x.var(ddof=1) / len(x) for x in (a, b))   # constant arms: exactly 0
    se = np.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else np.inf
    half = float(_st.t.ppf(0.5 + confidence / 2, dof) * se)
    p = float(_st.ttest_ind(a, b, equal_var=False).pvalue) if se > 0 else (1.0 if diff == 0 else float("nan"))
    if se == 0 and diff != 0:   # two constant arms: no spread to form an interval from
        half = float("nan")
    return {"mean": diff, "ci_low": diff - half, "ci_high": diff + half, "p_value": p, "dof": float(dof),
            "sd": float(np.sqrt(a.var(ddof=1) + b.var(ddof=1)))}


def difference_by_seed(a, b, column: str, key: str = "seed", confidence: float = 0.95) -> dict:
    """``column`` of table ``a`` minus that of table ``b``: a paired t interval and test over ``key`` when both
    tables hold the same keys once each (a paired design: seed s gave both arms the same initial draws), Welch's
    otherwise; ``test`` names which was used."""
    if (key in a and key in b and len(a) >= 2 and len(a) == len(b) and not a[key].duplicated().any()
            and set(a[key]) == set(b[key])):
        x = a.set_index(key)[column]
        return {**paired_difference(x, b.set_index(key)[column].reindex(x.index), confidence), "test": "paired t"}
    return {**welch(a[column], b[column], confidence), "test": "Welch"}


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n``."""
    if n == 0:
        return float("nan"), float("nan")
    z = float(_st.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho between matching rows of x and y ``[n, items]`` (average ranks for ties; NaN where a row is
    constant): one call for a statistic and all its bootstrap resamples (02's rank agreement, 07's reward fidelity)."""
    rx, ry = _st.rankdata(x, axis=1), _st.rankdata(y, axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    den = np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(1) / np.where(den > 0, den, 1), np.nan)


def transfer_agreement(proxy: pd.DataFrame, other: pd.DataFrame, pair: tuple[float, float] | None = None) -> dict:
    """How well the proxy's per-scale accuracy (02: columns ``scale``, ``accuracy``) predicts another
    network's (03: columns ``scale``, ``mean_accuracy``, and per-run ``runs`` for the pair).

    The proxy curve is linearly interpolated at the other network's scales inside its grid, so any
    scale can be compared. With three or more scales: Spearman's rho between the two. For ``pair``
    (a, b): the difference a - b the proxy predicts next to the one measured (mean of the other
    network), and whether the measured sign agrees."""
    grid = proxy.sort_values("scale")
    inside = other[(other["scale"] >= grid["scale"].min()) & (other["scale"] <= grid["scale"].max())]
    predicted = np.interp(inside["scale"], grid["scale"], grid["accuracy"])
    out = {"scales": [float(s) for s in inside["scale"]], "n_scales": int(len(inside)),
           "spearman": float(_st.spearmanr(predicted, inside["mean_accuracy"]).statistic) if len(inside) >= 3 else np.nan}
    if pair is not None and all(np.isclose(inside["scale"], s).any() for s in pair):
        p = {s: float(np.interp(s, grid["scale"], grid["accuracy"])) for s in pair}
        m = {s: float(inside.loc[np.isclose(inside["scale"], s), "mean_accuracy"].iloc[0]) for s in pair}
        out |= {"predicted_difference": p[pair[0]] - p[pair[1]], "measured_difference": m[pair[0]] - m[pair[1]]}
        out["same_sign"] = bool(np.sign(out["predicted_difference"]) == np.sign(out["measured_difference"]))
    return out
