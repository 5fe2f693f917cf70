"""Notebook 04, second part: smooth re-initialisation against the exploration and plasticity methods it
competes with, on minimalRL's DQN and CartPole-v1 under the standard rule (episodes end at 500 steps;
solved when a 100-episode mean first reaches 475).

Measures per run: environment steps to solve (censored at the step budget: a run that solves later than
the budget, in the episode that crossed it, counts as unsolved, so every censored value lies above every
solved one and rank tests stay valid) and the mean return of the last 100 episodes. Aggregates: the
interquartile mean with stratified-bootstrap 95% intervals from ``rliable`` (Agarwal et al. 2021), the
field's library for this; tests of every arm against epsilon = 0 and against minimalRL's epsilon schedule
(Mann-Whitney U on steps to solve, the last-100 mean paired by seed), Holm-adjusted over the arms of each
family. Diagnostics (``plasticity.diagnostics``, every ``diag_every`` episodes on a fixed batch of states)
say whether an arm changes exploration (action entropy, constant-action collapse) or plasticity (dormant
fraction, effective rank); each arm is compared with its matching control on their run-level means.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import fisher_exact, mannwhitneyu

from rlinit_lib.core.notebook import fmt
from rlinit_lib.core.plots import band_plot
from rlinit_lib.core.stats import difference_by_seed, holm, wilson_interval

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
COLLAPSED = 1e-9        # action entropy at or below this: the same action in every state of the batch


def run_metrics(returns: pd.DataFrame, step_budget: int) -> pd.DataFrame:
    """Per (variant, seed): environment steps to solve (NaN if unsolved within ``step_budget``; 0 = no budget,
    then the run's own length censors), the censoring value, and the mean return of the last 100 episodes."""
    rows = []
    for (v, s), g in returns.groupby(["variant", "seed"]):
        g = g.sort_values("episode")
        steps = np.cumsum(g["return"].to_numpy())     # one step, one point of return, under the standard rule
        solved = g["solved_at"].dropna()
        at = float(steps[int(solved.iloc[0])]) if len(solved) else np.nan
        budget = float(step_budget) if step_budget else float(steps[-1])
        rows.append({"variant": v, "seed": s, "steps_to_solve": at if at <= budget else np.nan, "censor_at": budget,
                     "final_100": float(g["return"].to_numpy()[-100:].mean()), "episodes": len(g),
                     "env_steps": float(steps[-1])})
    return pd.DataFrame(rows)


def _steps_or_budget(m: pd.DataFrame) -> pd.Series:
    return m["steps_to_solve"].fillna(m["censor_at"])


def iqm_table(metrics: pd.DataFrame, arms: list[str], reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Interquartile mean of the last-100 return (normalised by 500) and of steps to solve (censored at the
    budget, so an upper bound where runs did not solve), with rliable's stratified-bootstrap 95% intervals."""
    from rliable import library as rly
    from rliable import metrics as rlm

    rows = []
    state = np.random.get_state()          # rliable's bootstrap draws from NumPy's global generator
    try:
        for column, values in (("final_100_normalised", lambda g: g["final_100"] / 500.0),
                               ("steps_to_solve", _steps_or_budget)):
            np.random.seed(seed)
            scores = {a: values(metrics[metrics["variant"] == a]).to_numpy(float)[:, None] for a in arms
                      if (metrics["variant"] == a).sum() >= 2}
            point, interval = rly.get_interval_estimates(scores, lambda x: np.array([rlm.aggregate_iqm(x)]), reps=reps)
            rows += [{"variant": a, "measure": column, "iqm": float(point[a][0]), "ci_low": float(interval[a][0, 0]),
                      "ci_high": float(interval[a][1, 0]), "runs": len(scores[a])} for a in scores]
    finally:
        np.random.set_state(state)
    return pd.DataFrame(rows)


def against_controls(metrics: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    """Every arm against epsilon = 0 and against the epsilon schedule: share solved (Fisher), steps to solve
    (Mann-Whitney U, censored values tied at the budget), last-100 mean (paired by seed where the seeds match,
    else Welch); Holm over the arms of each
    (control, measure) family."""
    rows = []
    for ctrl in CONTROLS:
        c = metrics[metrics["variant"] == ctrl]
        if c.empty:
            continue
        for a in arms:
            g = metrics[metrics["variant"] == a]
            if a == ctrl or g.empty:
                continue
            k, kc = int(g["steps_to_solve"].notna().sum()), int(c["steps_to_solve"].notna().sum())
            x, y = _steps_or_budget(g), _steps_or_budget(c)
            w = difference_by_seed(g, c, "final_100")
            rows.append({"variant": a, "control": ctrl, "solved": k, "runs": len(g), "control_solved": kc,
                         "control_runs": len(c), "p_share": float(fisher_exact([[k, len(g) - k], [kc, len(c) - kc]]).pvalue),
                         "median_steps": float(x.median()), "control_median_steps": float(y.median()),
                         "p_steps": float(mannwhitneyu(x, y).pvalue) if np.ptp(np.r_[x, y]) > 0 else 1.0,
                         "final_100_diff": w["mean"], "final_100_diff_ci_low": w["ci_low"],
                         "final_100_diff_ci_high": w["ci_high"], "p_final_100": w["p_value"], "final_100_test": w["test"]})
    table = pd.DataFrame(rows)
    for ctrl in table["control"].unique() if len(table) else ():
        at = table["control"] == ctrl
        for p in ("p_share", "p_steps", "p_final_100"):
            table.loc[at, p + "_holm"] = holm(table.loc[at, p].to_numpy())
    return table


def beats(row) -> bool:
    """Significantly better than the control after Holm: solves sooner (fewer steps) or ends higher."""
    sooner = row["p_steps_holm"] < 0.05 and row["median_steps"] < row["control_median_steps"]
    higher = row["p_final_100_holm"] < 0.05 and row["final_100_diff"] > 0
    return bool(sooner or higher)


def run_diagnostics(diag: pd.DataFrame) -> pd.DataFrame:
    """Per run: the mean of each diagnostic over its checkpoints after the first (training under way), and
    whether it ended collapsed (the same greedy action in every probe state)."""
    later = diag[diag["episode"] > 0]
    means = later.groupby(["variant", "seed"], as_index=False)[list(DIAGNOSTICS)].mean()
    last = diag.sort_values("episode").groupby(["variant", "seed"], as_index=False).last()
    return means.merge(last[["variant", "seed", "action_entropy"]].rename(columns={"action_entropy": "final_entropy"}),
                       on=["variant", "seed"]).assign(collapsed=lambda d: d["final_entropy"] <= COLLAPSED)


def diagnostic_effects(per_run: pd.DataFrame, controls: dict) -> pd.DataFrame:
    """Each arm against its matching control: differences of the run-level diagnostics (paired by seed where
    the seeds match, else Welch), and the share of
    runs that ended collapsed (Wilson interval; Fisher against the control)."""
    rows = []
    for a, g in per_run.groupby("variant"):
        ctrl = controls.get(a, (None, None))[1]
        k = int(g["collapsed"].sum())
        lo, hi = wilson_interval(k, len(g))
        row = {"variant": a, "category": CATEGORY.get(a, ""), "control": ctrl, "collapsed": k, "runs": len(g),
               "collapsed_ci_low": lo, "collapsed_ci_high": hi}
        c = per_run[per_run["variant"] == ctrl]
        for d in DIAGNOSTICS:
            row[f"{d}_mean"] = float(g[d].mean())
            if len(c):
                w = difference_by_seed(g, c, d)
                row |= {f"{d}_diff": w["mean"], f"{d}_ci_low": w["ci_low"], f"{d}_ci_high": w["ci_high"],
                        f"{d}_p": w["p_value"]}
        if len(c):
            kc = int(c["collapsed"].sum())
            row["p_collapsed"] = float(fisher_exact([[k, len(g) - k], [kc, len(c) - kc]]).pvalue)
        rows.append(row)
    return pd.DataFrame(rows)


def moves(row) -> list[str]:
    """The diagnostics that moved against the control at 95% (Fisher for collapses), with
    their direction, e.g. ``["action entropy up", "dormant share up"]`` (intervals of
    :func:`diagnostic_effects`). No correction: a description."""
    out = []
    for d, name in (("action_entropy", "action entropy"), ("dormant_fraction", "dormant share"), ("srank", "effective rank")):
        lo, hi = row.get(f"{d}_ci_low", np.nan), row.get(f"{d}_ci_high", np.nan)
        if np.isfinite(lo) and lo > 0:
            out.append(f"{name} up")
        elif np.isfinite(hi) and hi < 0:
            out.append(f"{name} down")
    if row.get("p_collapsed", 1.0) < 0.05:
        out.append("fewer collapses" if row["collapsed"] / row["runs"] < 0.5 else "more collapses")
    return out


def signatures(row) -> set[str]:
    """'exploration' when the arm's action entropy rises or it collapses less than its control, 'plasticity'
    when its dormant share falls or its effective rank rises (from :func:`moves`)."""
    m = set(moves(row))
    return ({"exploration"} if m & {"action entropy up", "fewer collapses"} else set()) | \
        ({"plasticity"} if m & {"dormant share down", "effective rank up"} else set())


def plot_diagnostics(diag: pd.DataFrame, arms: list[str]):
    """The four diagnostics over training, mean and 95% band over seeds, one line per arm; line style by
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
    fig.suptitle("Exploration or plasticity? Diagnostics over training (mean, 95% bootstrap band over seeds; "
                 "dashed: smooth re-init, dash-dot: exploration, dotted: plasticity)", fontsize=10)
    fig.tight_layout()
    return fig


def methods_verdict(versus: pd.DataFrame, effects: pd.DataFrame) -> str:
    """Which arms beat epsilon = 0 and the epsilon schedule, and whether smooth re-init looks like the
    exploration or the plasticity methods on the diagnostics."""
    lines = []
    for ctrl, name in (("eps0", "epsilon = 0"), ("minimalrl_schedule", "minimalRL's epsilon schedule")):
        t = versus[versus["control"] == ctrl] if len(versus) else versus
        if t.empty:
            continue
        won = [r["variant"] for _, r in t.iterrows() if beats(r)]
        lines.append(f"- Beat {name} (fewer steps to solve or a higher last-100 mean, Holm-adjusted over {len(t)} arms): "
                     + (", ".join(f"**{a}**" for a in won) if won else "**none**") + ".")
    sig = {r["variant"]: signatures(r) for _, r in effects.iterrows()}
    cats = {c: [a for a in sig if CATEGORY.get(a) == c] for c in ("smooth re-init", "exploration", "plasticity")}
    for c in ("exploration", "plasticity"):
        if cats[c]:
            rows = effects.set_index("variant")
            lines.append(f"- {c.capitalize()} methods against their control: "
                         + "; ".join(f"{a}: {', '.join(moves(rows.loc[a])) or 'no diagnostic moved at 95%'}"
                                     for a in cats[c]) + ".")
    for a in cats["smooth re-init"]:
        s, r = sig[a], effects.set_index("variant").loc[a]
        moved = moves(r)
        like = ("like the exploration methods" if s == {"exploration"} else "like the plasticity methods"
                if s == {"plasticity"} else "like both kinds" if s else
                "like neither kind" + (f" ({', '.join(moved)})" if moved else ": no diagnostic moved at 95%"))
        lines.append(f"- **{a}** against {r['control']}: action entropy {fmt(r.get('action_entropy_diff'), 3)} bits "
                     f"(95% CI [{fmt(r.get('action_entropy_ci_low'), 3)}, {fmt(r.get('action_entropy_ci_high'), 3)}]), "
                     f"dormant share {fmt(r.get('dormant_fraction_diff'), 3)} ([{fmt(r.get('dormant_fraction_ci_low'), 3)}, "
                     f"{fmt(r.get('dormant_fraction_ci_high'), 3)}]), effective rank {fmt(r.get('srank_diff'), 1)}; "
                     f"{int(r['collapsed'])}/{int(r['runs'])} runs ended collapsed. It behaves {like}.")
    return "\n".join(lines) or "Run the controls (eps0, minimalrl_schedule) with the other arms to compare them."
