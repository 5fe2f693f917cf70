"""Does a short proxy training predict long training? Analysis of a (scale x seed x epoch) grid.

Source of the question: the dissertation's Q3 (Sec. 6.2). It chose s by the best 7-epoch
accuracy of one run per scale and never measured seed noise or how well 7-epoch rankings
predict long training. Input everywhere is an accuracy array ``acc[scale, seed, epoch]``
(epoch index e = accuracy after e+1 epochs) for one mode (independent seeds or common
random numbers, where seed j means the same init noise and batch order for every scale).

Targets: ``final`` (accuracy after the last epoch) and ``best`` (best epoch, since the
unregularised SimpleCNN overfits on long runs).
"""
from __future__ import annotations

import numpy as np
from scipy import stats as st


def target_accuracy(acc: np.ndarray, target: str = "final") -> np.ndarray:
    """(scale, seed) accuracy of the long run: the last epoch or the best epoch."""
    if target == "final":
        return acc[:, :, -1]
    if target == "best":
        return np.nanmax(acc, axis=2)
    raise ValueError(f"target must be 'final' or 'best' (got {target!r})")


def _rank_stats(proxy_means, target_means):
    ok = np.isfinite(proxy_means) & np.isfinite(target_means)
    if ok.sum() < 3:
        return np.nan, np.nan
    return (st.spearmanr(proxy_means[ok], target_means[ok]).statistic,
            st.kendalltau(proxy_means[ok], target_means[ok]).statistic)


def horizon_report(acc: np.ndarray, scales, horizons, target: str = "final", n_boot: int = 1000,
                   seed: int = 0, confidence: float = 0.95) -> list[dict]:
    """Per proxy horizon: Spearman/Kendall of per-scale means vs the target, the scale each
    would choose, and the regret of trusting the proxy, each with a bootstrap interval over seeds.

    Bootstrap: seeds are resampled with replacement (the same resample for the proxy and the
    target, which come from the same runs); ``n_boot`` resamples; percentile intervals.
    """
    scales = np.asarray(scales, float)
    n_seeds = acc.shape[1]
    tgt = target_accuracy(acc, target)
    rng = np.random.default_rng(seed)
    boots = [rng.integers(0, n_seeds, n_seeds) for _ in range(n_boot)]
    lo_q, hi_q = 50 * (1 - confidence), 50 * (1 + confidence)
    rows = []
    for h in horizons:
        if h > acc.shape[2]:
            continue

        def measures(idx):
            p = np.nanmean(acc[:, idx, h - 1], axis=1)
            t = np.nanmean(tgt[:, idx], axis=1)
            rho, tau = _rank_stats(p, t)
            pick = int(np.nanargmax(np.where(np.isfinite(p), p, -np.inf)))
            best = int(np.nanargmax(np.where(np.isfinite(t), t, -np.inf)))
            return rho, tau, scales[pick], t[best] - t[pick]

        rho, tau, pick, regret = measures(np.arange(n_seeds))
        b = np.array([measures(idx) for idx in boots], dtype=float)
        row = {"horizon": h}
        for i, (name, value) in enumerate((("spearman", rho), ("kendall", tau), ("proxy_choice", pick),
                                           ("regret", regret))):
            lo, hi = np.nanpercentile(b[:, i], [lo_q, hi_q]) if np.isfinite(b[:, i]).any() else (np.nan, np.nan)
            row |= {name: float(value), f"{name}_low": float(lo), f"{name}_high": float(hi)}
        rows.append(row)
    return rows


def target_choice(acc: np.ndarray, scales, target: str = "final") -> float:
    """The scale with the best mean target accuracy."""
    t = np.nanmean(target_accuracy(acc, target), axis=1)
    return float(np.asarray(scales)[int(np.nanargmax(t))])


def signal_to_noise(acc: np.ndarray, horizon: int) -> dict:
    """Variance decomposition at one horizon: between-scale vs within-scale (seed) spread.

    One-way ANOVA over scales with seeds as replicates: F-ratio, p-value, and the share of
    the total variance explained by the scale (eta squared). Diverged runs (NaN) are dropped.
    """
    groups = [g[np.isfinite(g)] for g in acc[:, :, horizon - 1]]
    groups = [g for g in groups if len(g) > 0]
    allv = np.concatenate(groups)
    grand = allv.mean()
    ss_between = sum(len(g) * (g.mean() - grand) ** 2 for g in groups)
    ss_within = sum(((g - g.mean()) ** 2).sum() for g in groups)
    f, p = (st.f_oneway(*groups) if all(len(g) > 1 for g in groups) and ss_within > 0 else (np.nan, np.nan))
    return {"horizon": horizon, "F": float(f), "p_value": float(p),
            "eta_squared": float(ss_between / (ss_between + ss_within)) if ss_between + ss_within > 0 else np.nan,
            "seed_sd": float(np.sqrt(ss_within / max(len(allv) - len(groups), 1))),
            "scale_sd": float(np.std([g.mean() for g in groups], ddof=1)) if len(groups) > 1 else np.nan}


def seeds_needed(a: np.ndarray, b: np.ndarray, paired: bool, confidence: float = 0.95, power: float = 0.8) -> dict:
    """Seeds per scale needed for a two-sided test at ``confidence`` to detect the observed
    difference of means with probability ``power`` (normal approximation:
    n = ((z_{1-alpha/2} + z_power) * sd / |d|)^2, sd of paired differences when ``paired``,
    else sqrt(var_a + var_b)). Returns inf when the observed difference is 0."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if paired:
        d = a - b
        d = d[np.isfinite(d)]
        diff, sd = d.mean(), d.std(ddof=1)
    else:
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        diff, sd = a.mean() - b.mean(), np.sqrt(a.var(ddof=1) + b.var(ddof=1))
    z = st.norm.ppf(0.5 + confidence / 2) + st.norm.ppf(power)
    n = float(np.ceil((z * sd / abs(diff)) ** 2)) if diff != 0 else float("inf")
    return {"difference": float(diff), "sd": float(sd), "seeds_needed": max(n, 2.0), "paired": paired}


def describe(report: list[dict], target: str, target_scale: float, snr: dict, need: dict | None,
             need_crn: dict | None, proxy_horizon: int = 7) -> str:
    """A plain-language paragraph for the notebook (markdown)."""
    row = next((r for r in report if r["horizon"] == proxy_horizon), report[-1])
    lo, hi = row["spearman_low"], row["spearman_high"]
    agree = ("ranks scales like the long run" if lo > 0.5 else
             "agrees with the long run only weakly" if lo > 0 else
             "is **not shown to predict** the long run's ranking (the interval reaches 0 or below)")
    lines = [
        f"- At {row['horizon']} epochs the proxy {agree}: Spearman rho = {row['spearman']:.2f} "
        f"(95% bootstrap CI [{lo:.2f}, {hi:.2f}]) against the {target} accuracy.",
        f"- The proxy would choose s = {row['proxy_choice']:.3f}; the best scale at the end is s = {target_scale:.3f}; "
        f"trusting the proxy costs {row['regret']:.4f} accuracy (CI [{row['regret_low']:.4f}, "
        f"{row['regret_high']:.4f}]).",
        f"- Scale explains {100 * snr['eta_squared']:.0f}% of the variance at that horizon (F = {snr['F']:.1f}, "
        f"p = {snr['p_value']:.2g}; seed sd {snr['seed_sd']:.4f} vs sd of scale means {snr['scale_sd']:.4f}).",
    ]
    if need:
        lines.append(f"- Telling s = {need['scales'][0]:g} from s = {need['scales'][1]:g} apart (observed difference "
                     f"{need['difference']:+.4f}) at 95% confidence with 80% power needs about "
                     f"**{need['seeds_needed']:.0f} seeds per scale** with independent seeds"
                     + (f", and **{need_crn['seeds_needed']:.0f}** with common random numbers."
                        if need_crn else "."))
    return "\n".join(lines)
