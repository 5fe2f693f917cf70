"""The study's verdicts: one family of functions that turns a comparison into words, so the same
evidence reads the same in every notebook.

Every comparison reads one of four words, decided by rules fixed before the run:

* **better** / **worse**: the (1 - alpha) interval of the difference excludes 0;
* **equivalent**: otherwise, when the (1 - 2 alpha) interval lies inside +-``sesoi`` (two one-sided
  tests at alpha; ``sesoi`` is the smallest effect of interest, a notebook parameter declared before
  the run and stated at the top of its report);
* **inconclusive**: neither; the row then says about how many seeds would decide (the seeds at which a
  true difference of ``sesoi``, or a true difference of 0, would be detected with 80% power, from the
  observed spread) with that estimate's 95% interval (from the chi-square interval of the variance).

A notebook declares its **primary** comparisons before running; they are tested at alpha (Bonferroni
among them if there are several). All others form one **exploratory** family per notebook, corrected
together by Bonferroni, whose adjusted p-values (``p_adjusted``) come with intervals of the same
family (at 1 - alpha / m), so a row's interval and its adjusted p-value never disagree. (Holm's
step-down has no intervals that match its p-values, which is why it is not used for verdicts.)

Diverged runs are never dropped: :func:`score_diverged` scores them (an accuracy at chance, a return
at its floor) and the tables report their rate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _st

from rlinit_lib.core.stats import paired_difference, welch

VERDICTS = ("better", "worse", "equivalent", "inconclusive")
ROLES = ("primary", "exploratory")
POWER = 0.8
ACCURACY_DIFFERENCE = (-1.0, 1.0)   # the range of a difference of two accuracies (or regrets)
COLUMNS = ["comparison", "role", "test", "n", "estimate", "ci_low", "ci_high", "confidence", "p_value",
           "p_adjusted", "eq_low", "eq_high", "sesoi", "verdict", "seeds_needed", "seeds_needed_low",
           "seeds_needed_high"]


@dataclass(frozen=True)
class Contrast:
    """One comparison ``a`` against ``b`` (arrays of per-seed scores). ``paired``: the arrays are aligned
    by seed (the same seed gave both arms the same draws); otherwise Welch's test."""

    name: str
    a: np.ndarray
    b: np.ndarray
    paired: bool = True
    bounds: tuple | None = None   # the range of the difference, e.g. (-1, 1) for accuracies
    sesoi: float | None = None    # this comparison's own margin and direction, when a family mixes units
    higher_is_better: bool | None = None


def score_diverged(values, diverged, floor: float) -> np.ndarray:
    """The study's one rule for diverged runs: kept, scored at ``floor`` (chance accuracy, or the
    lowest return), never dropped. ``diverged``: a boolean per value (NaN values count as diverged)."""
    v = np.asarray(values, float).copy()
    bad = np.asarray(diverged, bool) | ~np.isfinite(v)
    v[bad] = floor
    return v


def seeds_needed(sd: float, sesoi: float, n: int, alpha: float = 0.05, paired: bool = True) -> tuple:
    """(estimate, low, high): seeds (per arm) at which a test at ``alpha`` would decide with 80% power,
    whether the truth is a difference of ``sesoi`` (two-sided test) or no difference (equivalence within
    +-sesoi); the larger of the two. Welch comparisons need it per arm with ``sd`` = sqrt(var_a + var_b).
    The interval comes from the chi-square 95% interval of the variance over ``n - 1`` degrees of freedom."""
    nan = float("nan")
    if not (np.isfinite(sd) and sd > 0 and sesoi > 0 and n >= 2):
        return nan, nan, nan
    z = max(_st.norm.ppf(1 - alpha / 2) + _st.norm.ppf(POWER),        # detect a difference of sesoi
            _st.norm.ppf(1 - alpha) + _st.norm.ppf(1 - (1 - POWER) / 2))   # show equivalence at 0
    base = (z / sesoi) ** 2
    var = sd ** 2
    lo_var = var * (n - 1) / _st.chi2.ppf(0.975, n - 1)
    hi_var = var * (n - 1) / _st.chi2.ppf(0.025, n - 1)
    need = lambda v: float(max(2, math.ceil(base * v)))   # noqa: E731
    return need(var), need(lo_var), need(hi_var)


def compare(a, b, sesoi: float, *, paired: bool = True, alpha: float = 0.05, family_size: int = 1,
            higher_is_better: bool = True, name: str = "", role: str = "primary", bounds: tuple | None = None) -> dict:
    """One comparison ``a - b`` read by the rules above; ``family_size`` m makes it one of m comparisons
    corrected together (intervals at 1 - alpha/m, p-values times m); ``bounds``: the range the difference
    can take (accuracies: (-1, 1)), which the intervals are intersected with."""
    if not sesoi > 0:
        raise ValueError(f"sesoi must be > 0 (got {sesoi!r})")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES} (got {role!r})")
    m = max(1, int(family_size))
    level = alpha / m
    test = (lambda c: paired_difference(a, b, confidence=c)) if paired else (lambda c: welch(a, b, confidence=c))
    wide, eq = test(1 - level), test(1 - 2 * level)
    if bounds is not None:
        for r in (wide, eq):
            if np.isfinite(r["ci_low"]):
                r["ci_low"], r["ci_high"] = max(r["ci_low"], bounds[0]), min(r["ci_high"], bounds[1])
    n = int(wide.get("n", min(np.isfinite(np.asarray(a, float)).sum(), np.isfinite(np.asarray(b, float)).sum())))
    est, lo, hi, p = wide["mean"], wide["ci_low"], wide["ci_high"], wide["p_value"]
    sign = 1 if higher_is_better else -1
    if np.isfinite(lo) and (lo > 0 or hi < 0):
        verdict = "better" if sign * est > 0 else "worse"
    elif np.isfinite(eq["ci_low"]) and -sesoi < eq["ci_low"] and eq["ci_high"] < sesoi:
        verdict = "equivalent"
    else:
        verdict = "inconclusive"
    need = seeds_needed(wide.get("sd", float("nan")), sesoi, n, level, paired) if verdict == "inconclusive" \
        else (float("nan"),) * 3
    return {"comparison": name, "role": role, "test": "paired t" if paired else "Welch", "n": n,
            "estimate": est, "ci_low": lo, "ci_high": hi, "confidence": 1 - level, "p_value": p,
            "p_adjusted": min(1.0, p * m) if np.isfinite(p) else float("nan"),
            "eq_low": eq["ci_low"], "eq_high": eq["ci_high"], "sesoi": float(sesoi), "verdict": verdict,
            "seeds_needed": need[0], "seeds_needed_low": need[1], "seeds_needed_high": need[2]}


def compare_family(contrasts: list[Contrast], sesoi: float | None, primary=(), *, alpha: float = 0.05,
                   higher_is_better: bool = True, bounds: tuple | None = None,
                   extra_exploratory: int = 0) -> pd.DataFrame:
    """A notebook's comparisons: those named in ``primary`` (declared before the run) at alpha,
    Bonferroni among themselves; every other one in one exploratory family, corrected together.
    ``sesoi``, ``higher_is_better``, ``bounds``: for every contrast that does not give its own (a family may
    mix units, e.g. returns and entropies); ``extra_exploratory``: tests of the exploratory family made
    elsewhere (e.g. Fisher's tests of shares), counted in its size."""
    names = [c.name for c in contrasts]
    if len(set(names)) != len(names):
        raise ValueError("comparison names must be distinct")
    missing = set(primary) - set(names)
    if missing:
        raise ValueError(f"primary comparison {sorted(missing)[0]!r} is not among the comparisons")
    n_primary = sum(c.name in primary for c in contrasts)
    rows = []
    for c in contrasts:
        role = "primary" if c.name in primary else "exploratory"
        m = n_primary if role == "primary" else len(contrasts) - n_primary + int(extra_exploratory)
        higher = higher_is_better if c.higher_is_better is None else c.higher_is_better
        rows.append(compare(c.a, c.b, sesoi if c.sesoi is None else c.sesoi, paired=c.paired, alpha=alpha,
                            family_size=m, bounds=c.bounds or bounds, higher_is_better=higher, name=c.name, role=role))
    return pd.DataFrame(rows, columns=COLUMNS)


def _num(x: float, unit_digits: int) -> str:
    return f"{x:+.{unit_digits}f}" if np.isfinite(x) else "n/a"


def sentence(row, digits: int = 4) -> str:
    """One comparison in words: its verdict, estimate and interval, and for 'inconclusive' the seeds
    that would decide. ``row``: a row of :func:`compare_family`'s table or :func:`compare`'s dict."""
    r = dict(row)
    conf = f"{100 * r['confidence']:.4g}%"
    adj = "" if r["role"] == "primary" else ", family-adjusted"
    ci = f"{_num(r['estimate'], digits)} ({conf} CI [{_num(r['ci_low'], digits)}, {_num(r['ci_high'], digits)}], " \
         f"{r['test']}, n = {r['n']}{adj})"
    name = f"{r['comparison']}: " if r.get("comparison") else ""
    tag = " [exploratory]" if r["role"] == "exploratory" else ""
    sesoi = f"{r['sesoi']:.{digits}g}"
    if r["verdict"] in ("better", "worse"):
        small = " (but by less than the smallest effect of interest)" if abs(r["estimate"]) < r["sesoi"] and \
            max(abs(r["ci_low"]), abs(r["ci_high"])) < r["sesoi"] else ""
        return f"{name}**{r['verdict']}**{small}: {ci}.{tag}"
    if r["verdict"] == "equivalent":
        return f"{name}**equivalent within +-{sesoi}**: {ci}; its {100 * (1 - 2 * (1 - r['confidence'])):.4g}% " \
               f"interval [{_num(r['eq_low'], digits)}, {_num(r['eq_high'], digits)}] lies inside +-{sesoi}.{tag}"
    need = ""
    if np.isfinite(r["seeds_needed"]):
        need = f"; about {int(r['seeds_needed'])} seeds per arm would decide (95% CI " \
               f"{int(r['seeds_needed_low'])}-{int(r['seeds_needed_high'])})"
    elif r["n"] < 2:
        need = "; at least 2 seeds are needed for any interval"
    elif not np.isfinite(r["ci_low"]):
        need = "; the difference was the same for every seed, so no interval can be formed: more seeds would decide"
    return f"{name}**inconclusive**: {ci}; neither a difference nor equivalence within +-{sesoi}{need}.{tag}"


def sesoi_line(sesoi: float, unit: str, primary: str) -> str:
    """The line every report starts its verdicts with: the margin and the primary comparison, both
    fixed before the run."""
    return (f"Smallest effect of interest (declared before the run): **{sesoi:g} {unit}**. Primary comparison: "
            f"{primary}. Every other comparison is exploratory and corrected together (Bonferroni).")


def verdict_table(rows: pd.DataFrame) -> str:
    """Markdown lines, one per comparison, primary first."""
    order = rows.assign(_r=rows["role"].map({"primary": 0, "exploratory": 1})).sort_values("_r", kind="stable")
    return "\n".join(f"- {sentence(r)}" for _, r in order.iterrows())
