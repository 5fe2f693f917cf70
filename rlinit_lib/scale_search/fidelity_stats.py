"""Does a short proxy training predict long training? Analysis of a (scale x seed x epoch) grid.

Source of the question: the dissertation's Q3 (Sec. 6.2). It chose s by the best 7-epoch accuracy of
one run per scale and never measured seed noise or how well 7-epoch rankings predict long training.
Inputs are accuracy arrays ``acc[scale, seed, epoch]`` (epoch index e = accuracy after e + 1 epochs),
one on the validation split and one on the test split, for one mode (independent seeds, or common
random numbers: seed j means the same init noise and batch order for every scale).

The rules this module follows (issue 23):

* **Diverged runs** are scored at chance accuracy (:func:`scored`, ``core.verdicts.score_diverged``),
  never dropped.
* **Choose on validation, report on test.** A horizon's choice of scale, the best scale of the long
  run and the best epoch of a run (target ``best``) are argmaxes of validation accuracy; the accuracy
  reported for what was chosen is its test accuracy.
* **Fidelity on disjoint seeds.** Proxy ranks come from one half of the seeds and long-run ranks from
  the other (both crossings, averaged), so a run's lasting luck (a good init stays good) cannot
  inflate the agreement, as it does when both come from the same networks (``same_run_spearman``,
  kept for the test that shows the bias). The estimand is the agreement of k-seed proxy means with
  k-seed long-run means of other networks: with no relation it is centred on 0 (so an interval above 0
  is evidence of agreement), and seed noise pulls it toward 0 (it understates the agreement of the
  true mean curves). Intervals: a percentile bootstrap that resamples seeds within each half (none with
  fewer than 2 seeds in a half); simulated coverage of that estimand 91% with 5 seeds, 97% with 10.
* **The CRN grid is a block design**: seed j is a block shared by every scale, analysed by a two-way
  ANOVA (scale + seed block, no interaction); the independent grid by a one-way ANOVA.
* **Seeds needed** come from the declared ``sesoi`` and the observed spread
  (``core.verdicts.seeds_needed``), the same ``sesoi`` for both designs, so the comparison isolates
  what pairing saves (never from the observed difference, whose noise made the old figure range
  from 8 to 1,435 for a true 77).

Targets: ``final`` (after the last epoch) and ``best`` (the run's best epoch on validation), since the
unregularised SimpleCNN overfits on long runs.
"""
from __future__ import annotations

import numpy as np
from scipy import stats as st

from rlinit_lib.core.stats import spearman_rows
from rlinit_lib.core.verdicts import score_diverged
from rlinit_lib.core.verdicts import seeds_needed as _seeds_needed

CHANCE_ACCURACY = 0.1   # 10 classes: what a diverged run is scored at
BOOTSTRAP_METHOD = "percentile bootstrap of seeds within each half"


def scored(acc, floor: float = CHANCE_ACCURACY) -> np.ndarray:
    """The accuracy array with every missing (diverged) entry at chance: the study's one rule."""
    a = np.asarray(acc, float)
    return score_diverged(a, ~np.isfinite(a), floor)


def target_accuracy(val: np.ndarray, test: np.ndarray, target: str = "final") -> tuple[np.ndarray, np.ndarray]:
    """(val, test) accuracy [scale, seed] of the long run: after the last epoch, or at the epoch with the
    best validation accuracy (its test accuracy is what is reported)."""
    if target == "final":
        return val[:, :, -1], test[:, :, -1]
    if target == "best":
        e = np.argmax(val, axis=2)[:, :, None]
        return np.take_along_axis(val, e, 2)[:, :, 0], np.take_along_axis(test, e, 2)[:, :, 0]
    raise ValueError(f"target must be 'final' or 'best' (got {target!r})")


def target_choice(val: np.ndarray, test: np.ndarray, scales, target: str = "final") -> float:
    """The scale with the best mean validation accuracy of the long run (all seeds)."""
    v, _ = target_accuracy(val, test, target)
    return float(np.asarray(scales)[int(np.argmax(v.mean(axis=1)))])


def halves(n_seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """The two disjoint seed sets: the first half of the seed indices and the rest."""
    k = n_seeds // 2
    return np.arange(k), np.arange(k, n_seeds)


def same_run_spearman(proxy: np.ndarray, target: np.ndarray) -> float:
    """The biased estimate (kept for comparison): both rankings from the same networks' means."""
    return float(spearman_rows(proxy.mean(1)[None], target.mean(1)[None])[0])


def _disjoint(proxy_val, target_val, target_test, a, b):
    """(spearman, regret) per resample for seed sets a, b [n, k] (one crossing): proxy ranks and choices
    from a, long-run ranks and the accuracy reported from b; the long run's best scale is chosen on a's
    validation accuracy, so both choices are made on other networks than those that score them."""
    p = proxy_val[:, a].mean(2).T                 # [n, scales]
    t = target_test[:, b].mean(2).T
    ref = target_val[:, a].mean(2).T
    rows = np.arange(len(p))
    regret = t[rows, ref.argmax(1)] - t[rows, p.argmax(1)]
    return spearman_rows(p, t), regret


def disjoint_fidelity(proxy_val, target_val, target_test, n_boot: int = 1000, seed: int = 0,
                      confidence: float = 0.95) -> dict:
    """Rank agreement and regret of the proxy with the long run on disjoint seed halves (both crossings,
    averaged), with percentile-bootstrap intervals (seeds resampled within each half; NaN when a half
    has fewer than 2 seeds). Arrays: [scale, seed], scored (no NaN)."""
    a, b = halves(proxy_val.shape[1])
    args = (proxy_val, target_val, target_test)
    est = [np.mean(x) for x in zip(_disjoint(*args, a[None], b[None]), _disjoint(*args, b[None], a[None]))]
    out = {"spearman": float(est[0]), "regret": float(est[1]), "seeds_a": len(a), "seeds_b": len(b)}
    nan = float("nan")
    if min(len(a), len(b)) < 2:
        return out | {"spearman_low": nan, "spearman_high": nan, "regret_low": nan, "regret_high": nan}
    rng = np.random.default_rng(seed)
    ra, rb = rng.choice(a, (n_boot, len(a))), rng.choice(b, (n_boot, len(b)))
    boot = [(x + y) / 2 for x, y in zip(_disjoint(*args, ra, rb), _disjoint(*args, rb, ra))]
    q = 50 * (1 - confidence), 50 * (1 + confidence)
    for name, values in zip(("spearman", "regret"), boot):
        lo, hi = np.nanpercentile(values, q) if np.isfinite(values).any() else (nan, nan)
        out |= {f"{name}_low": float(lo), f"{name}_high": float(hi)}
    return out


def horizon_report(val: np.ndarray, test: np.ndarray, scales, horizons, target: str = "final",
                   n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> list[dict]:
    """Per proxy horizon: the scale it chooses (best mean validation accuracy over all seeds) and, on
    disjoint seed halves, Spearman's rho between its validation ranking and the long run's test ranking
    and the regret (test accuracy) of trusting it, each with its bootstrap interval. Arrays scored."""
    scales = np.asarray(scales, float)
    tv, tt = target_accuracy(val, test, target)
    rows = []
    for h in (h for h in horizons if h <= val.shape[2]):
        proxy = val[:, :, h - 1]
        fid = disjoint_fidelity(proxy, tv, tt, n_boot, seed, confidence)
        rows.append({"horizon": h, "proxy_choice": float(scales[int(np.argmax(proxy.mean(1)))]), **fid,
                     "confidence": confidence, "interval": BOOTSTRAP_METHOD})
    return rows


def one_way_anova(y: np.ndarray) -> dict:
    """y[scale, seed] with independent seeds: F test of the scale effect, eta squared (share of the
    variance explained by the scale), the seed sd within scales and the sd of the scale means."""
    k, n = y.shape
    grand = y.mean()
    ss_scale = n * ((y.mean(1) - grand) ** 2).sum()
    ss_err = ((y - y.mean(1, keepdims=True)) ** 2).sum()
    df_err = k * (n - 1)
    f, p = _f_test(ss_scale, k - 1, ss_err, df_err)
    total = ss_scale + ss_err
    return {"test": "one-way ANOVA", "F": f, "p_value": p, "eta_squared": ss_scale / total if total > 0 else np.nan,
            "seed_sd": float(np.sqrt(ss_err / df_err)) if df_err else np.nan,
            "scale_sd": float(y.mean(1).std(ddof=1)), "block_F": np.nan, "block_p_value": np.nan}


def block_anova(y: np.ndarray) -> dict:
    """y[scale, block] where block j is CRN seed j (shared by every scale): two-way ANOVA without
    interaction. F and p of the scale effect against the residual (scale x block) mean square, partial
    eta squared (scale / (scale + residual)), the residual sd (the noise left once the seed's shared
    luck is removed) and the block F test."""
    k, n = y.shape
    grand = y.mean()
    ss_scale = n * ((y.mean(1) - grand) ** 2).sum()
    ss_block = k * ((y.mean(0) - grand) ** 2).sum()
    ss_err = max(((y - grand) ** 2).sum() - ss_scale - ss_block, 0.0)
    df_err = (k - 1) * (n - 1)
    f, p = _f_test(ss_scale, k - 1, ss_err, df_err)
    bf, bp = _f_test(ss_block, n - 1, ss_err, df_err)
    return {"test": "two-way ANOVA (scale + seed block)", "F": f, "p_value": p,
            "eta_squared": ss_scale / (ss_scale + ss_err) if ss_scale + ss_err > 0 else np.nan,
            "seed_sd": float(np.sqrt(ss_err / df_err)) if df_err else np.nan,
            "scale_sd": float(y.mean(1).std(ddof=1)), "block_F": bf, "block_p_value": bp}


def _f_test(ss_effect, df_effect, ss_err, df_err) -> tuple[float, float]:
    if df_effect < 1 or df_err < 1 or ss_err <= 0:
        return np.nan, np.nan
    f = (ss_effect / df_effect) / (ss_err / df_err)
    return float(f), float(st.f.sf(f, df_effect, df_err))


def signal_to_noise(acc: np.ndarray, horizon: int, blocked: bool = False) -> dict:
    """Variance decomposition at one horizon of a scored array: one-way ANOVA for independent seeds,
    the block design's two-way ANOVA for CRN (``blocked``)."""
    y = acc[:, :, horizon - 1]
    return {"horizon": horizon, **(block_anova(y) if blocked else one_way_anova(y))}


def seeds_needed(a, b, sesoi: float, paired: bool) -> dict:
    """Seeds per scale at which a comparison of ``a`` and ``b`` would decide (detect a difference of
    ``sesoi`` or show equivalence within it, 80% power), from ``sesoi`` and the observed spread: the sd of
    the paired differences (CRN) or sqrt(var_a + var_b) (independent). The observed difference is
    reported but not used. Scored arrays (no NaN)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if paired:
        d = a - b
        sd, n = float(d.std(ddof=1)) if len(d) > 1 else np.nan, len(d)
    else:
        sd = float(np.sqrt(a.var(ddof=1) + b.var(ddof=1))) if min(len(a), len(b)) > 1 else np.nan
        n = min(len(a), len(b))
    need, lo, hi = _seeds_needed(sd, sesoi, n, paired=paired)
    return {"difference": float(a.mean() - b.mean()), "sd": sd, "n": n, "sesoi": float(sesoi),
            "seeds_needed": need, "seeds_needed_low": lo, "seeds_needed_high": hi, "paired": paired}
