"""Small statistics used to say what is and is not significant."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as _st


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval (lo, hi); the interval is nan for n < 2."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    half = float(_st.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m, m - half, m + half


def paired_difference(a, b, confidence: float = 0.95, bounds: tuple | None = None) -> dict:
    """Mean of ``a - b`` over paired runs, its t interval and the paired t-test p-value (identical pairs: [0, 0]
    and p = 1). ``bounds``: the range the difference can take (accuracies: (-1, 1)); the interval is intersected
    with it, which keeps its coverage because the true difference lies inside."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    d = d[np.isfinite(d)]
    m, lo, hi = mean_ci(d, confidence)
    if bounds is not None and np.isfinite(lo):
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    p = float(_st.ttest_1samp(d, 0.0).pvalue) if len(d) > 1 and np.ptp(d) > 0 else float("nan")
    if len(d) > 1 and not d.any():   # identical pairs: no difference (not "untested")
        lo, hi, p = 0.0, 0.0, 1.0
    return {"mean": m, "ci_low": lo, "ci_high": hi, "p_value": p, "n": int(len(d))}


def welch(a, b, confidence: float = 0.95) -> dict:
    """Difference of means ``mean(a) - mean(b)`` with Welch's interval and p-value."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:   # no variance estimate: no interval, no test
        diff = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
        return {"mean": diff, "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan"),
                "dof": float("nan")}
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else np.inf
    half = float(_st.t.ppf(0.5 + confidence / 2, dof) * se)
    p = float(_st.ttest_ind(a, b, equal_var=False).pvalue) if se > 0 else float("nan")
    return {"mean": diff, "ci_low": diff - half, "ci_high": diff + half, "p_value": p, "dof": float(dof)}


def difference_by_seed(a, b, column: str, key: str = "seed", confidence: float = 0.95) -> dict:
    """``column`` of table ``a`` minus that of table ``b``: a paired t interval and test over ``key`` when both
    tables hold the same keys once each (a paired design: seed s gave both arms the same initial draws), Welch's
    otherwise; ``test`` names which was used."""
    if (key in a and key in b and len(a) >= 2 and len(a) == len(b) and not a[key].duplicated().any()
            and set(a[key]) == set(b[key])):
        x = a.set_index(key)[column]
        return {**paired_difference(x, b.set_index(key)[column].reindex(x.index), confidence), "test": "paired t"}
    return {**welch(a[column], b[column], confidence), "test": "Welch"}


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error rate; NaN stays
    NaN and is not counted). Compare the adjusted values with 0.05."""
    p = np.asarray(p_values, float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n``."""
    if n == 0:
        return float("nan"), float("nan")
    z = float(_st.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def bootstrap_difference(a, b, n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Percentile bootstrap interval for ``mean(a) - mean(b)``, resampling each group's runs."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    rng = np.random.default_rng(seed)
    diffs = rng.choice(a, (n_boot, len(a))).mean(1) - rng.choice(b, (n_boot, len(b))).mean(1)
    lo, hi = np.percentile(diffs, [50 * (1 - confidence), 50 * (1 + confidence)])
    return {"mean": float(a.mean() - b.mean()), "ci_low": float(lo), "ci_high": float(hi)}


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
