"""Notebook 04's statistics: per-run measures of DQN runs, rliable's aggregates, the planned comparisons
and the diagnostics that say whether an arm acts like an exploration or a plasticity method.

Measures per run (:func:`run_metrics`, per task): the area under the return curve (mean return per episode
over the run), the mean return of the last 100 episodes, its normalised score (``tasks.normalise``: random play
0, the task's reference score 1; clipped at 1), whether the run solved, and its time to solve, censored at the budget every run shares (the step
budget, or without one the episode budget), so every unsolved run ties at a value above every solved
one and rank tests stay valid.

CartPole's final returns are bimodal (about 10 for a run that collapsed to one action, about 500 for a
run that balances), so they are summarised as ``rliable`` recommends (Agarwal et al. 2021): the
interquartile mean and the optimality gap of the normalised score with stratified-bootstrap 95%
intervals (per task, and over every task at once: runs x tasks score matrices, the bootstrap resampling
seeds within each task), the probability of improvement of each arm over its control (over tasks: its
mean over tasks, as rliable defines it), performance profiles (the distribution of run scores over tasks), and success rates with Wilson intervals and Fisher's exact test. No t-test
of last-100 means is a verdict's basis. Verdicts (``core.verdicts``) rest on the area under the curve,
an average over the whole run that is less bimodal than the final returns, paired by seed (every arm runs the same seeds);
:func:`verdict_family` puts comparisons in several units (returns, diagnostics, losses) into one
correction family. Diagnostics (``plasticity.diagnostics``, every ``diag_every`` episodes on a fixed
batch of states): action entropy and constant-action collapse (exploration), dormant share and
effective rank (plasticity), each arm against its matching control.
"""
from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import fisher_exact

from rlinit_lib.core.plots import band_plot
from rlinit_lib.core.stats import wilson_interval
from rlinit_lib.core.verdicts import COLUMNS, Contrast, compare_family
from rlinit_lib.smooth_reinit.tasks import TASKS, normalise

CATEGORY = {
    "minimalrl_schedule": "control", "eps0": "control", "eps0_skip": "control",
    "eps0_last_noise": "smooth re-init", "eps0_last_noise_no_target": "smooth re-init",
    "eps0_skip_middle_noise": "smooth re-init",
    "eps0_noisynet": "exploration", "eps0_param_noise": "exploration",
    "eps0_redo": "plasticity", "eps0_last_reset": "plasticity", "eps0_shrink_perturb": "plasticity",
    "eps0_soft_shrink_perturb": "plasticity",
}   # variants of the initialisation study are not part of this comparison
CONTROLS = ("eps0", "minimalrl_schedule")
DIAGNOSTICS = {"action_entropy": "greedy-action entropy (bits)", "dormant_fraction": "dormant units (share, tau)",
               "srank": "effective rank of last hidden features", "weight_norm": "parameter L2 norm"}
# The diagnostics compared with the control, each with its smallest effect of interest (in its own unit) and
# the direction that counts as "better": 0.1 bit of greedy-action entropy is a tenth of its range (two
# actions); 0.05 of the units dormant is about 13 of the 256 hidden units; 5 of at most 128 effective-rank
# dimensions. More entropy at epsilon = 0 is more exploration; fewer dormant units and a higher rank are more
# plasticity. The weight norm is shown, not compared (it has no direction that counts as better).
DIAG_SESOI = {"action_entropy": (0.1, True), "dormant_fraction": (0.05, False), "srank": (5.0, True)}
COLLAPSED = 1e-9        # action entropy at or below this: the same action in every state of the batch
ALL_TASKS = "all tasks"  # the task label of rliable's aggregates over every task
EXTRA = ["task", "arm", "control", "measure", "unit"]     # columns of verdict_family before core.verdicts.COLUMNS


def run_metrics(returns: pd.DataFrame, step_budget: int, episodes: int | None = None,
                task: str = "CartPole-v1") -> pd.DataFrame:
    """Per (variant, seed) of one task: the area under the return curve (``auc``, mean return per episode), the
    last-100 mean and its normalised score, whether the run solved within the budget, environment steps and
    episodes to solve (NaN if unsolved), and ``to_solve``: steps to solve censored at ``step_budget`` or, with
    no step budget (0), episodes to solve censored at the episode budget ``episodes`` (default: the longest
    run). Environment steps come from the ``length`` column (steps per episode), or without one from the
    returns (CartPole: one step, one point of return)."""
    longest = int(returns.groupby(["variant", "seed"]).size().max()) if len(returns) else 0
    censor = float(step_budget) if step_budget else float(episodes or longest)
    rows = []
    for (v, s), g in returns.groupby(["variant", "seed"]):
        g = g.sort_values("episode")
        r = g["return"].to_numpy(float)
        steps = np.cumsum(g["length"].to_numpy(float) if "length" in g else r)
        solved = g["solved_at"].dropna()
        at = int(solved.iloc[0]) if len(solved) else None
        ok = at is not None and (not step_budget or steps[at] <= step_budget)
        steps_to, episodes_to = (float(steps[at]), float(at + 1)) if ok else (np.nan, np.nan)
        final = float(r[-100:].mean())
        rows.append({"task": task, "variant": v, "seed": s, "auc": float(r.mean()), "final_100": final,
                     "score": min(float(normalise(final, TASKS[task])), 1.0), "solved": bool(ok), "steps_to_solve": steps_to,
                     "episodes_to_solve": episodes_to, "to_solve": (steps_to if step_budget else episodes_to) if ok
                     else censor, "censor_at": censor, "episodes": len(r), "env_steps": float(steps[-1])})
    return pd.DataFrame(rows)


def _scores(metrics: pd.DataFrame, arm: str, column: str = "score") -> np.ndarray:
    """The arm's ``column`` as rliable's runs x tasks matrix (seeds that ran every task of ``metrics``)."""
    g = metrics[metrics["variant"] == arm]
    if "task" not in g or metrics["task"].nunique() <= 1:
        return g[column].to_numpy(float)[:, None]
    wide = g.pivot_table(index="seed", columns="task", values=column).reindex(columns=sorted(set(metrics["task"])))
    return wide.dropna().to_numpy(float)


def tasks_of(metrics: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(metrics["task"])) if "task" in metrics else ["CartPole-v1"]


def on_every_task(metrics: pd.DataFrame, arms: list[str]) -> list[str]:
    """The arms that ran on every task of ``metrics`` (only these have an aggregate over tasks)."""
    n = len(tasks_of(metrics))
    return [a for a in arms if "task" not in metrics or metrics.loc[metrics["variant"] == a, "task"].nunique() == n]


def _with_seed(seed: int, work):
    """Run ``work()`` with NumPy's global generator seeded (rliable's bootstrap draws from it; passing
    ``random_state`` is deprecated in its ``arch`` backend) and restore the generator afterwards."""
    state = np.random.get_state()
    try:
        np.random.seed(seed % 2**32)
        return work()
    finally:
        np.random.set_state(state)


def rliable_table(metrics: pd.DataFrame, arms: list[str], reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per task and arm (with at least 2 runs): the interquartile mean and the optimality gap (1 - mean of the
    score clipped at 1) of the normalised score, and the IQM of the time to solve (censored at the budget, so
    an upper bound where runs did not solve), each with rliable's stratified-bootstrap 95% interval (one
    bootstrap per arm; each statistic reads one column, so its interval is that of its own measure). With
    more than one task, rows ``task = "all tasks"``: the IQM and optimality gap of the normalised scores of
    every task at once (runs x tasks; the bootstrap resamples seeds within each task), for the arms that ran
    on every task."""
    from rliable import library as rly
    from rliable import metrics as rlm

    columns = ["task", "variant", "measure", "statistic", "estimate", "ci_low", "ci_high", "runs"]
    tasks = tasks_of(metrics)
    out = [_rliable_one(metrics[metrics["task"] == t] if "task" in metrics else metrics, arms, reps, seed, t)
           for t in tasks]
    if len(tasks) > 1:
        every = [a for a in on_every_task(metrics, arms) if len(_scores(metrics, a)) >= 2]
        if every:
            scores = {a: _scores(metrics, a) for a in every}
            agg = lambda x: np.array([rlm.aggregate_iqm(x), rlm.aggregate_optimality_gap(x)])  # noqa: E731
            point, interval = _with_seed(seed, lambda: rly.get_interval_estimates(scores, agg, reps=reps))
            out.append(pd.DataFrame([{"task": ALL_TASKS, "variant": a, "measure": "score", "statistic": st,
                                      "estimate": float(point[a][i]), "ci_low": float(interval[a][0, i]),
                                      "ci_high": float(interval[a][1, i]), "runs": scores[a].size}
                                     for a in every for i, st in enumerate(("iqm", "optimality_gap"))]))
    out = [d for d in out if len(d)]
    return pd.concat(out, ignore_index=True)[columns] if out else pd.DataFrame(columns=columns)


def _rliable_one(metrics: pd.DataFrame, arms: list[str], reps: int, seed: int, task: str) -> pd.DataFrame:
    """``rliable_table``'s rows of one task."""
    from rliable import library as rly
    from rliable import metrics as rlm

    stats = (("score", "iqm"), ("score", "optimality_gap"), ("to_solve", "iqm"))

    def agg(x):    # x: runs x (score, to_solve)
        return np.array([rlm.aggregate_iqm(x[:, :1]), rlm.aggregate_optimality_gap(x[:, :1]),
                         rlm.aggregate_iqm(x[:, 1:])])

    arms = [a for a in arms if (metrics["variant"] == a).sum() >= 2]
    if not arms:
        return pd.DataFrame()
    scores = {a: metrics.loc[metrics["variant"] == a, ["score", "to_solve"]].to_numpy(float) for a in arms}
    point, interval = _with_seed(seed, lambda: rly.get_interval_estimates(scores, agg, reps=reps))
    rows = [{"task": task, "variant": a, "measure": m, "statistic": st, "estimate": float(point[a][i]),
             "ci_low": float(interval[a][0, i]), "ci_high": float(interval[a][1, i]), "runs": len(scores[a])}
            for a in arms for i, (m, st) in enumerate(stats)]
    return pd.DataFrame(rows)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """rliable's ``metrics.probability_of_improvement``, vectorised: per task (a column of the runs x tasks
    arrays) the Mann-Whitney U of x over y divided by the pairs, P(x > y) + P(x = y) / 2 (equal samples: 0.5),
    then the mean over tasks."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    x, y = (x[:, None] if x.ndim == 1 else x), (y[:, None] if y.ndim == 1 else y)
    return float(np.mean([(x[:, None, j] > y[None, :, j]).mean() + 0.5 * (x[:, None, j] == y[None, :, j]).mean()
                          for j in range(x.shape[1])]))


def improvement_table(metrics: pd.DataFrame, pairs: list[tuple[str, str]], reps: int = 2000,
                      seed: int = 0) -> pd.DataFrame:
    """rliable's probability of improvement P(score of the arm > score of its control) (ties count a half),
    with its stratified-bootstrap 95% interval, for each (arm, control) pair with at least 2 runs each: per
    task, and with more than one task over every task (``task = "all tasks"``: the mean over tasks of the
    per-task probabilities, seeds resampled within each task; pairs that ran on every task)."""
    columns = ["task", "variant", "control", "p_improvement", "ci_low", "ci_high", "runs", "control_runs"]
    tasks = tasks_of(metrics)
    parts = [_improvement_one(metrics[metrics["task"] == t] if "task" in metrics else metrics, pairs, reps, seed, t)
             for t in tasks]
    if len(tasks) > 1:
        every = set(on_every_task(metrics, [a for pair in pairs for a in pair]))
        parts.append(_improvement_one(metrics, [p for p in pairs if set(p) <= every], reps, seed, ALL_TASKS))
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def _improvement_one(metrics: pd.DataFrame, pairs: list[tuple[str, str]], reps: int, seed: int,
                     task: str) -> pd.DataFrame:
    from rliable import library as rly

    scores = {f"{a},{c}": [_scores(metrics, a), _scores(metrics, c)] for a, c in pairs
              if len(_scores(metrics, a)) >= 2 and len(_scores(metrics, c)) >= 2}
    if not scores:
        return pd.DataFrame()
    point, interval = _with_seed(seed, lambda: rly.get_interval_estimates(scores, probability_of_improvement,
                                                                          reps=reps))
    return pd.DataFrame([{"task": task, "variant": k.split(",")[0], "control": k.split(",")[1],
                          "p_improvement": float(point[k]), "ci_low": float(np.ravel(interval[k])[0]),
                          "ci_high": float(np.ravel(interval[k])[1]), "runs": x.size, "control_runs": y.size}
                         for k, (x, y) in scores.items()])


def plot_profiles(metrics: pd.DataFrame, panels: dict[str, list[str]], reps: int = 2000, seed: int = 0):
    """Performance profiles (rliable's run-score distributions): for each threshold tau, the share of runs
    whose normalised score exceeds tau, with a stratified-bootstrap 95% band; one panel per group of arms."""
    from rliable import library as rly

    panels = {t: [a for a in on_every_task(metrics, arms) if len(_scores(metrics, a))] for t, arms in panels.items()}
    panels = {t: arms for t, arms in panels.items() if arms}
    taus = np.linspace(0.0, 1.0, 41)
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6.5 * max(1, len(panels)), 4.5), squeeze=False)
    for ax, (title, arms) in zip(axes[0], panels.items()):
        scores = {a: _scores(metrics, a) for a in arms}
        profile, band = _with_seed(seed, lambda: rly.create_performance_profile(
            scores, taus, custom_profile_func=score_distribution, reps=reps))
        for i, a in enumerate(arms):
            ax.plot(taus, profile[a], color=f"C{i % 10}", label=f"{a} ({scores[a].size} runs)")
            ax.fill_between(taus, band[a][0], band[a][1], color=f"C{i % 10}", alpha=0.15)
        ax.set(title=title, xlabel="normalised score tau (last-100 mean return: random 0, reference 1)",
               ylabel="fraction of runs with score > tau", ylim=(-0.02, 1.02))
        ax.legend(fontsize=8)
    fig.suptitle("Performance profiles: distribution of run scores (95% stratified-bootstrap bands, rliable)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def score_distribution(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """rliable's run-score distribution (``library.score_distributions``), vectorised over the thresholds: the
    share of runs (and tasks) whose score exceeds each tau."""
    return (np.asarray(scores, float)[..., None] > np.asarray(taus)).reshape(-1, len(taus)).mean(0)


def contrast(per_run: pd.DataFrame, arm: str, control: str, column: str, name: str) -> Contrast | None:
    """``column`` of ``arm`` against ``control`` as a :class:`core.verdicts.Contrast`, paired by seed when both
    ran the same seeds once each (every profile does: seed s gives both the same initial network and draws),
    otherwise unpaired (Welch); None when either has no runs."""
    a, c = per_run[per_run["variant"] == arm], per_run[per_run["variant"] == control]
    if a.empty or c.empty:
        return None
    paired = len(a) >= 2 and len(a) == len(c) and not a["seed"].duplicated().any() and set(a["seed"]) == set(c["seed"])
    if paired:
        x = a.set_index("seed")[column]
        return Contrast(name, x.to_numpy(float), c.set_index("seed")[column].reindex(x.index).to_numpy(float), True)
    return Contrast(name, a[column].to_numpy(float), c[column].to_numpy(float), False)


def verdict_family(planned: list[tuple], primary, extra_exploratory: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """``core.verdicts.compare_family`` for comparisons in several units: ``planned`` is a list of
    (Contrast, sesoi, higher_is_better, {arm, control, measure, unit}); every contrast carries its own margin and
    direction into the one family (``extra_exploratory``: tests of that family made elsewhere, e.g. Fisher's
    tests of collapse shares), and the labels come back as columns beside each verdict row."""
    contrasts = [dataclasses.replace(c, sesoi=sesoi, higher_is_better=higher) for c, sesoi, higher, _ in planned]
    rows = compare_family(contrasts, None, primary, alpha=alpha, extra_exploratory=extra_exploratory)
    labels = pd.DataFrame([extra for *_, extra in planned], columns=EXTRA)
    return pd.concat([labels, rows], axis=1)[EXTRA + COLUMNS]


def exploratory_size(family: pd.DataFrame, extra_exploratory: int = 0) -> int:
    """The size of the exploratory family (its verdict rows and the extra tests counted with them)."""
    return int((family["role"] == "exploratory").sum()) + int(extra_exploratory) if len(family) else int(extra_exploratory)


def run_diagnostics(diag: pd.DataFrame) -> pd.DataFrame:
    """Per run: the mean of each diagnostic over its checkpoints after the first (training under way), and
    whether it ended collapsed (the same greedy action in every probe state)."""
    key = (["task"] if "task" in diag else []) + ["variant", "seed"]
    later = diag[diag["episode"] > 0]
    means = later.groupby(key, as_index=False)[list(DIAGNOSTICS)].mean()
    last = diag.sort_values("episode").groupby(key, as_index=False).last()
    return means.merge(last[key + ["action_entropy"]].rename(columns={"action_entropy": "final_entropy"}),
                       on=key).assign(collapsed=lambda d: d["final_entropy"] <= COLLAPSED)


def collapse_tests(per_run: pd.DataFrame, pairs: list[tuple[str, str]], family_size: int) -> pd.DataFrame:
    """For each (arm, control): the share of runs that ended collapsed in each (Wilson 95% intervals) and
    Fisher's exact test of the two shares, its p-value Bonferroni-adjusted over ``family_size`` (the
    exploratory family it belongs to). ``direction`` compares the arm's share with the control's."""
    rows = []
    for a, ctrl in pairs:
        g, c = per_run[per_run["variant"] == a], per_run[per_run["variant"] == ctrl]
        if g.empty or c.empty:
            continue
        k, n, kc, nc = int(g["collapsed"].sum()), len(g), int(c["collapsed"].sum()), len(c)
        (lo, hi), (clo, chi) = wilson_interval(k, n), wilson_interval(kc, nc)
        p = float(fisher_exact([[k, n - k], [kc, nc - kc]]).pvalue)
        rows.append({"variant": a, "category": CATEGORY.get(a, ""), "control": ctrl, "collapsed": k, "runs": n,
                     "collapsed_ci_low": lo, "collapsed_ci_high": hi, "control_collapsed": kc, "control_runs": nc,
                     "control_collapsed_ci_low": clo, "control_collapsed_ci_high": chi, "p_collapsed": p,
                     "p_collapsed_adjusted": min(1.0, p * max(1, family_size)),
                     "direction": "more" if k / n > kc / nc else "fewer" if k / n < kc / nc else "same"})
    return pd.DataFrame(rows, columns=["variant", "category", "control", "collapsed", "runs", "collapsed_ci_low",
                                       "collapsed_ci_high", "control_collapsed", "control_runs",
                                       "control_collapsed_ci_low", "control_collapsed_ci_high", "p_collapsed",
                                       "p_collapsed_adjusted", "direction"])


def diagnostic_effects(family: pd.DataFrame, collapses: pd.DataFrame) -> pd.DataFrame:
    """One row per arm: each compared diagnostic's difference from the matching control with the family's
    interval and verdict (columns ``{d}_diff``, ``{d}_ci_low``, ``{d}_ci_high``, ``{d}_verdict``), and the
    collapse test of :func:`collapse_tests`."""
    rows = {r["variant"]: dict(r) for _, r in collapses.iterrows()}
    diag = family[family["measure"].isin(list(DIAG_SESOI))] if len(family) else family
    for _, r in diag.iterrows():
        row = rows.setdefault(r["arm"], {"variant": r["arm"], "category": CATEGORY.get(r["arm"], ""),
                                         "control": r["control"]})
        d = r["measure"]
        row |= {f"{d}_diff": r["estimate"], f"{d}_ci_low": r["ci_low"], f"{d}_ci_high": r["ci_high"],
                f"{d}_confidence": r["confidence"], f"{d}_verdict": r["verdict"]}
    return pd.DataFrame(list(rows.values()))


def moves(row) -> list[str]:
    """The diagnostics that moved against the matching control, with their direction, e.g. ``["action entropy
    up", "more collapses"]``: a diagnostic moved when its family-corrected verdict is better or worse (the
    direction is the sign of the difference); collapses moved when Fisher's family-adjusted p < 0.05, and
    their direction compares the arm's share with the control's."""
    out = []
    for d, name in (("action_entropy", "action entropy"), ("dormant_fraction", "dormant share"),
                    ("srank", "effective rank")):
        if row.get(f"{d}_verdict") in ("better", "worse"):
            out.append(f"{name} {'up' if row[f'{d}_diff'] > 0 else 'down'}")
    p = row.get("p_collapsed_adjusted", np.nan)
    if np.isfinite(p) and p < 0.05 and row.get("direction") in ("more", "fewer"):
        out.append(f"{row['direction']} collapses")
    return out


def signatures(row) -> set[str]:
    """'exploration' when the arm's action entropy rises or it collapses less than its control, 'plasticity'
    when its dormant share falls or its effective rank rises (from :func:`moves`)."""
    m = set(moves(row))
    return ({"exploration"} if m & {"action entropy up", "fewer collapses"} else set()) | \
        ({"plasticity"} if m & {"dormant share down", "effective rank up"} else set())


def plot_diagnostics(diag: pd.DataFrame, arms: list[str]):
    """The four diagnostics over training, mean and 95% t band over seeds, one line per arm; line style by
    category (controls solid, smooth re-init dashed, exploration dash-dot, plasticity dotted)."""
    styles = {"control": "-", "smooth re-init": "--", "exploration": "-.", "plasticity": ":"}
    present = [a for a in arms if a in set(diag["variant"])]
    st = {a: {"color": f"C{i % 10}", "ls": styles.get(CATEGORY.get(a, ""), "-")} for i, a in enumerate(present)}
    fig, axes = plt.subplots(2, 2, figsize=(14, 8.5))
    bounds = {"action_entropy": (0.0, 1.0), "dormant_fraction": (0.0, 1.0), "srank": (0.0, 128.0), "weight_norm": None}
    for ax, (d, label) in zip(axes.flat, DIAGNOSTICS.items()):
        band_plot(ax, diag[diag["variant"].isin(present)], "episode", d, "seed", "variant", bounds=bounds[d], styles=st)
        ax.set(xlabel="episode", ylabel=label, title=label[0].upper() + label[1:])
    axes[0, 0].set_title("Greedy-action entropy over a fixed batch of states (0: constant action)")
    fig.suptitle("Exploration or plasticity? Diagnostics over training (mean, 95% t band over seeds; "
                 "dashed: smooth re-init, dash-dot: exploration, dotted: plasticity)", fontsize=10)
    fig.tight_layout()
    return fig


def methods_verdict(effects: pd.DataFrame) -> str:
    """Whether each smooth re-init arm moves the diagnostics as the exploration or as the plasticity methods
    do, from the family-corrected comparisons with each arm's matching control (:func:`diagnostic_effects`)."""
    if effects.empty:
        return "No diagnostics were recorded for arms with their matching control in this run."
    rows = effects.set_index("variant")
    lines = []
    for c in ("exploration", "plasticity"):
        arms = [a for a in rows.index if CATEGORY.get(a) == c]
        if arms:
            lines.append(f"- {c.capitalize()} methods against their control (family-corrected): "
                         + "; ".join(f"{a}: {', '.join(moves(rows.loc[a])) or 'no diagnostic moved'}" for a in arms) + ".")
    for a in [a for a in rows.index if CATEGORY.get(a) == "smooth re-init"]:
        r, s = rows.loc[a], signatures(rows.loc[a])
        moved = moves(r)
        like = ("like the exploration methods" if s == {"exploration"} else "like the plasticity methods"
                if s == {"plasticity"} else "like both kinds" if s else
                "like neither kind" + (f" ({', '.join(moved)})" if moved else ": no diagnostic moved"))
        collapsed = f"; {int(r['collapsed'])}/{int(r['runs'])} runs ended collapsed against " \
                    f"{int(r['control_collapsed'])}/{int(r['control_runs'])}" if np.isfinite(r.get("runs", np.nan)) else ""
        lines.append(f"- **{a}** against {r['control']}{collapsed}. By the diagnostics it behaves {like}.")
    return "\n".join(lines)
