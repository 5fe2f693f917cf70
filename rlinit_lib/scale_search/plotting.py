"""Figures of the study (matplotlib, no state).

``plot_search_history`` is the dissertation's Fig. 5.1 (six panels over episodes);
``plot_reward_vs_scale`` adds a quadratic trend and its peak, a smoother estimate of
the best scale than the single best episode. The fidelity figures (notebook 02) take accuracy
arrays with diverged runs already scored at chance (``fidelity_stats.scored``); their bands are
t intervals of the mean over seeds (``core.plots.band``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import matplotlib.pyplot as plt

from rlinit_lib.core.plots import LINESTYLES, band


def quadratic_peak(scales, rewards) -> tuple[np.ndarray | None, float | None]:
    """Least-squares quadratic ``a s^2 + b s + c``; returns (coefficients, peak scale or None).

    The peak is ``-b / 2a`` when the fit is concave (a < 0), else None.
    """
    s, r = np.asarray(scales, float), np.asarray(rewards, float)
    keep = np.isfinite(s) & np.isfinite(r)
    if keep.sum() < 3 or np.ptp(s[keep]) == 0:
        return None, None
    coeffs = np.polyfit(s[keep], r[keep], 2)
    peak = -coeffs[1] / (2 * coeffs[0]) if coeffs[0] < 0 else None
    return coeffs, peak


def plot_search_history(table: pd.DataFrame, title: str = "Scale search (cf. dissertation Fig. 5.1)"):
    panels = [("final_train_loss", "train loss (last epoch)"), ("final_train_accuracy", "train accuracy"),
              ("accuracy", "test accuracy"), ("scale", "sampled scale s"), ("reward", "reward"),
              ("policy_loss", "policy loss")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), sharex=True)
    for ax, (col, label) in zip(axes.flat, panels):
        ax.plot(table["episode"], table[col], ".-", lw=0.8, ms=3)
        if col == "scale" and "policy_mean_scale" in table:
            ax.plot(table["episode"], table["policy_mean_scale"], "-", lw=1.5, label="policy mean")
            ax.legend(fontsize=8)
        nan = table["nan_detected"].astype(bool)
        if nan.any() and col in ("reward", "scale"):
            ax.plot(table.loc[nan, "episode"], table.loc[nan, col], "rx", label="NaN")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("episode")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_reward_vs_scale(table: pd.DataFrame, baseline: dict | None = None, title: str = "Reward vs scale"):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ok = ~table["nan_detected"].astype(bool)
    ax.scatter(table.loc[ok, "scale"], table.loc[ok, "reward"], s=14, alpha=0.7, label="episodes")
    if (~ok).any():
        ax.scatter(table.loc[~ok, "scale"], table.loc[~ok, "reward"], marker="x", color="red", label="NaN (-2)")
    coeffs, peak = quadratic_peak(table.loc[ok, "scale"], table.loc[ok, "reward"])
    if coeffs is not None:
        grid = np.linspace(table["scale"].min(), table["scale"].max(), 200)
        ax.plot(grid, np.polyval(coeffs, grid), "k-", lw=1.2, label="quadratic trend")
        if peak is not None:
            ax.axvline(peak, color="k", ls="--", lw=1, label=f"trend peak s={peak:.3f}")
    if baseline is not None and baseline.get("reward") is not None:
        ax.scatter([baseline["scale"]], [baseline["reward"]], marker="*", s=160, color="orange",
                   zorder=5, label=f"baseline s={baseline['scale']:g}")
    ax.set_xlabel("scale s")
    ax.set_ylabel("reward = 10 x test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_accuracy_heatmap(acc: np.ndarray, scales, title: str = "Mean test accuracy over seeds"):
    """acc[scale, seed, epoch] (scored) -> heatmap of the seed mean over (scale, epoch)."""
    mean = np.mean(acc, axis=1)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    im = ax.imshow(mean, aspect="auto", origin="lower", cmap="viridis",
                   extent=[0.5, acc.shape[2] + 0.5, -0.5, len(scales) - 0.5])
    ax.set_yticks(range(len(scales)))
    ax.set_yticklabels([f"{s:.2f}" for s in scales], fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_ylabel("scale s")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="test accuracy")
    fig.tight_layout()
    return fig


def plot_accuracy_vs_scale(acc: np.ndarray, scales, horizons, references: dict | None = None,
                           title: str = "Accuracy against scale, per horizon (band: 95% t interval over seeds; diverged runs "
                                       "at chance)"):
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, h in enumerate(h for h in horizons if h <= acc.shape[2]):
        mean, lo, hi = band(acc[:, :, h - 1], bounds=(0.0, 1.0))
        style = {"color": f"C{i % 10}", "ls": LINESTYLES[i % len(LINESTYLES)]}
        ax.plot(scales, mean, marker=".", label=f"{h} epoch{'s' if h > 1 else ''}", **style)
        ax.fill_between(scales, lo, hi, color=style["color"], alpha=0.15, lw=0)
    ref_styles = [("k", ":"), ("0.45", "--"), ("tab:brown", "-.")]
    for (name, s), (color, ls) in zip((references or {}).items(), ref_styles * 3):
        ax.axvline(s, ls=ls, color=color, lw=1.4, label=f"{name} s={s:.3f}")
    ax.set_xlabel("scale s")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_horizon_report(reports: dict, target_scale: dict | None = None):
    """reports: {label: horizon_report rows}. Left: rank correlation (disjoint seeds) vs horizon with its
    interval; right: the scale each horizon chooses on validation accuracy."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, (label, rows) in enumerate(reports.items()):
        h = np.array([r["horizon"] for r in rows])
        off = (i - (len(reports) - 1) / 2) * 0.08 * (h.max() - h.min() + 1) / max(len(h), 1)
        style = {"color": f"C{i % 10}", "ls": LINESTYLES[i % len(LINESTYLES)], "marker": "os^D"[i % 4]}
        y = np.array([r["spearman"] for r in rows], float)
        ci = np.array([[r["spearman_low"], r["spearman_high"]] for r in rows], float)
        a1.errorbar(h + off, y, yerr=np.abs([y - ci[:, 0], ci[:, 1] - y]), capsize=3, label=label, **style)
        a2.plot(h + off, [r["proxy_choice"] for r in rows], label=label, **style)
        if target_scale and label in target_scale:
            a2.axhline(target_scale[label], color=style["color"], ls=style["ls"], lw=1)
    a1.set_title("Does the proxy rank scales like the long run?\n(disjoint seeds; 95% bootstrap CI)", fontsize=10)
    a2.set_title("Scale the proxy chooses (on validation accuracy)", fontsize=10)
    a1.set_ylabel("Spearman rho (proxy vs long run)")
    a2.set_ylabel("scale chosen (line: the long run's choice)")
    for ax in (a1, a2):
        ax.set_xlabel("proxy horizon (epochs)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
