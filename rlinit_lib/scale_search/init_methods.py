"""Notebook 06: the searched He scale against the initialisers practitioners use, and whether the best
scale moves with width.

The dissertation searched one He scale at a cost of 200 x 7 proxy epochs; none of the sources compares
that with initialisers that cost (almost) nothing. Every arm here initialises the same SimpleCNN (SiLU,
the same data, Adam, the same batch order for seed j): PyTorch's default, Xavier-uniform, He s = 1, the
three analytic SiLU scales of ``initialisation.theory``, the searched scale (the best of 02's grid on the
same data, read from 02's run store), and the data-driven LSUV, GradInit and MetaInit
(``initialisation.data_driven``; GradInit and MetaInit start from He s = 1 drawn from the same seed).
Each (arm, seed) is one trial: its init cost and effective per-layer scales, then one training to
``long_epochs`` with test accuracy after every epoch, so the proxy (``proxy_epochs``) and the long
horizon come from the same run (Adam at a fixed rate: stopping earlier gives the same first epochs).
Seed j is shared by every arm, so arms are compared by paired differences over seeds, with Holm's
correction over the arms of each comparison. The width-transfer grid trains He(s) at widths 0.5x-2x.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rlinit_lib.core.data import load_cached, normalise
from rlinit_lib.core.notebook import Report, fmt, upstream_dir
from rlinit_lib.core.params import (Float, Int, ListOf, ParameterError, RunFields, Choice, check_int, param)
from rlinit_lib.core.plots import band, band_plot
from rlinit_lib.core.runtime import derive_seed, pick_device, seed_everything
from rlinit_lib.core.stats import holm, paired_difference
from rlinit_lib.core.store import RunStore, read_run
from rlinit_lib.core.trials import Trial, run_config_trials
from rlinit_lib.initialisation.data_driven import InitCost, effective_scales, gradinit, lsuv_init, metainit
from rlinit_lib.initialisation.theory import critical_scales
from rlinit_lib.scale_search.child import ChildTraining
from rlinit_lib.scale_search.training import build_child, train_and_evaluate

ARMS = ("pytorch_default", "xavier_uniform", "he", "he_second_moment", "he_variance", "he_backward", "searched",
        "lsuv", "gradinit", "metainit")
REFERENCES = ("he", "searched")           # every arm is compared with these, paired by seed
# settings 02 must share with this run for its best scale to count as "searched on the same data"
SAME_DATA = ("dataset", "train_subset", "test_subset", "activation", "batch_size", "lr")
RUN_COLUMNS = ["arm", "seed_index", "seed", "epoch", "test_accuracy", "train_loss", "nan_detected"]


@dataclass
class InitMethodsConfig(ChildTraining, RunFields):
    """Every knob of notebook 06_init_methods."""

    notebook = "06_init_methods"

    arms: list = param(list(ARMS), ListOf(Choice(ARMS), what="arm names"), identity=False)
    seeds: int = param(10, Int(low=2), identity=False)            # seeds per arm (more extends)
    proxy_epochs: int = param(7, Int(low=1))                      # the dissertation's proxy
    long_epochs: int = param(28, Int(low=2))                      # the longer training (at least 4x the proxy)
    searched_scale: float | None = param(None, Float(low=0.0, low_open=True, optional=True))  # None: 02's best
    init_batch: int = param(256, Int(low=2))                      # LSUV's batch
    lsuv_tolerance: float = param(0.1, Float(low=0.0, low_open=True))   # on each layer's output variance
    lsuv_attempts: int = param(10, Int(low=1))
    gradinit_iters: int | None = param(None, Int(low=1, optional=True))  # None: one per training batch of an epoch
    gradinit_lr: float = param(1e-2, Float(low=0.0, low_open=True))
    gradinit_eta: float = param(0.1, Float(low=0.0, low_open=True))
    gradinit_gamma: float = param(1.0, Float(low=0.0, low_open=True))   # gradient-norm constraint
    gradinit_min_scale: float = param(0.01, Float(low=0.0))
    metainit_steps: int = param(500, Int(low=1))
    metainit_lr: float = param(0.1, Float(low=0.0, low_open=True))
    metainit_batch: int = param(32, Int(low=1))
    widths: list = param([0.5, 1.0, 2.0], ListOf(Float(low=0.0, low_open=True), 0, what="widths > 0"),
                         identity=False)                          # width transfer; [] skips it
    width_scales: list = param([0.5, 0.75, 1.0, 1.25, 1.5, 2.0],
                               ListOf(Float(low=0.0, low_open=True), 3, what="scales > 0"))
    width_seeds: int = param(3, Int(low=2), identity=False)
    width_epochs: int = param(7, Int(low=1))
    bootstrap: int = param(1000, Int(low=100), identity=False)
    output_dir: str = param("outputs/06_init_methods", identity=False)

    def check(self):
        check_int("long_epochs", self.long_epochs, low=4 * self.proxy_epochs)   # the "at least 4x"

    def searched(self) -> tuple[float | None, str]:
        """(the searched scale, where it came from); None when it cannot be had (the sentence says why)."""
        if self.searched_scale is not None:
            return float(self.searched_scale), "the parameter searched_scale"
        where = upstream_dir(self.output_dir, "02_proxy_fidelity")
        found = read_run(where)
        if found is None:
            return None, f"no 02_proxy_fidelity run store at {where}: run 02_proxy_fidelity first (same data)"
        config, table = found
        other = [f"{k}={config.get(k)!r} (here {getattr(self, k)!r})" for k in SAME_DATA if config.get(k) != getattr(self, k)]
        if other:
            return None, f"02_proxy_fidelity at {where} trained on other data or settings: {', '.join(other)}"
        runs = table("runs")
        runs = runs[(runs["mode"] == "independent") & (runs["epoch"] == config["proxy_horizon"])]
        if runs.empty:
            return None, f"02_proxy_fidelity at {where} has no finished grid networks"
        means = runs.groupby("scale")["test_accuracy"].mean()
        return float(means.idxmax()), (f"the best mean accuracy of 02_proxy_fidelity's grid at its {config['proxy_horizon']}-"
                                      f"epoch proxy ({where}; {int(runs['seed_index'].nunique())} seeds per scale)")

    def arm_scales(self) -> dict[str, float]:
        """The He scale of every He-type arm."""
        theory = critical_scales(self.activation)
        scales = {"he": 1.0, "he_second_moment": theory["second_moment"], "he_variance": theory["variance"],
                  "he_backward": theory["backward"]}
        if "searched" in self.arms:
            s, why = self.searched()
            if s is None:
                raise ParameterError(f"arm 'searched' needs a searched scale: {why}; or set searched_scale, or drop "
                                     "'searched' from arms")
            scales["searched"] = s
        return scales

    def init_settings(self) -> dict:
        return {k: getattr(self, k) for k in ("init_batch", "lsuv_tolerance", "lsuv_attempts", "gradinit_iters",
                                              "gradinit_lr", "gradinit_eta", "gradinit_gamma", "gradinit_min_scale",
                                              "metainit_steps", "metainit_lr", "metainit_batch")}


def initialise_arm(arm: str, data, scales: dict, seed: int, activation: str, settings: dict, batch_size: int,
                   width: float = 1.0):
    """(model, InitCost) for one arm, deterministic given ``seed``. Data-driven arms see the training set in
    the order a training run with ``seed`` draws it."""
    import torch

    s = settings
    if arm in ("pytorch_default", "xavier_uniform"):
        return build_child(data.in_channels, data.num_classes, 1.0, activation, arm, seed, width=width), InitCost()
    if arm in scales:
        return build_child(data.in_channels, data.num_classes, scales[arm], activation, "he_scaled", seed,
                           width=width), InitCost()
    model = build_child(data.in_channels, data.num_classes, 1.0, activation, "he_scaled", seed, width=width)
    order = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(seed + 1))
    if arm == "lsuv":
        x = normalise(data.x_train[order[:s["init_batch"]]])
        return model, lsuv_init(model, x, s["lsuv_tolerance"], s["lsuv_attempts"], seed=seed)
    if arm == "gradinit":
        n_batches = math.ceil(len(order) / batch_size)

        def batch(i):
            idx = order[(i % n_batches) * batch_size:(i % n_batches + 1) * batch_size]
            return normalise(data.x_train[idx]), data.y_train[idx]

        iters = s["gradinit_iters"] or n_batches
        return model, gradinit(model, batch, iters, s["gradinit_lr"], s["gradinit_eta"], s["gradinit_gamma"],
                               s["gradinit_min_scale"])
    if arm == "metainit":
        return model, metainit(model, tuple(data.x_train.shape[1:]), data.num_classes, s["metainit_steps"],
                               s["metainit_batch"], s["metainit_lr"], seed=seed)
    raise ParameterError(f"arm must be one of {', '.join(ARMS)} (got {arm!r})")


def arm_trial(child: dict, arm: str, seed_index: int, seed: int, scales: dict, settings: dict, epochs: int) -> dict:
    """One arm with one seed: its init (cost, effective scales) and one training with accuracy per epoch."""
    device = str(pick_device(child["device"]))
    data = load_cached(child["dataset"], child["data_root"], child["train_subset"], child["test_subset"], device)
    made = {}

    def build(_scale, _seed):
        made["model"], made["cost"] = initialise_arm(arm, data, scales, seed, child["activation"], settings,
                                                     child["batch_size"])
        made["scales"] = effective_scales(made["model"])
        return made["model"]

    r = train_and_evaluate(1.0, epochs, data, batch_size=child["batch_size"], lr=child["lr"],
                           activation=child["activation"], seed=seed, device=device, precision=child["precision"],
                           eval_every_epoch=True, build=build)
    cost: InitCost = made["cost"]
    train_seconds = r.seconds - cost.seconds
    rows = [{"arm": arm, "seed_index": seed_index, "seed": seed, "epoch": e + 1,
             "test_accuracy": r.test_accuracy_per_epoch[e] if e < len(r.test_accuracy_per_epoch) else np.nan,
             "train_loss": r.train_loss[e] if e < len(r.train_loss) else np.nan, "nan_detected": r.nan_detected}
            for e in range(epochs)]
    init = {"arm": arm, "seed_index": seed_index, "init_seconds": cost.seconds, "forward_images": cost.forward_images,
            "backward_images": cost.backward_images,
            "epoch_equivalents": cost.epoch_equivalents(len(data.y_train)),
            "epochs_by_time": cost.seconds / (train_seconds / max(1, r.epochs_completed)) if r.epochs_completed else np.nan}
    return {"runs": rows, "init": [init], "layer_scales": [{"arm": arm, "seed_index": seed_index, **row}
                                                          for row in made["scales"]],
            "_log": {"init/arm_final_accuracy": r.test_accuracy, "init/seconds": cost.seconds}}


def width_trial(child: dict, width: float, scale: float, seed_index: int, seed: int, epochs: int) -> dict:
    """He(s) at one width with one seed: final test accuracy."""
    device = str(pick_device(child["device"]))
    data = load_cached(child["dataset"], child["data_root"], child["train_subset"], child["test_subset"], device)
    r = train_and_evaluate(scale, epochs, data, batch_size=child["batch_size"], lr=child["lr"],
                           activation=child["activation"], seed=seed, device=device, precision=child["precision"],
                           build=lambda s, sd: build_child(data.in_channels, data.num_classes, s, child["activation"],
                                                           seed=sd, width=width))
    return {"widths": [{"width": width, "scale": scale, "seed_index": seed_index, "seed": seed,
                        "test_accuracy": r.test_accuracy, "nan_detected": r.nan_detected}]}


@dataclass
class InitMethodsResult:
    runs: pd.DataFrame          # one row per (arm, seed, epoch)
    init: pd.DataFrame          # one row per (arm, seed): init cost
    layer_scales: pd.DataFrame  # one row per (arm, seed, layer): effective scale
    widths: pd.DataFrame        # one row per (width, scale, seed)
    scales: dict                # He-type arm -> scale


def run_init_methods(cfg: InitMethodsConfig) -> InitMethodsResult:
    """Train every (arm, seed) and the width grid (resuming from the run store)."""
    cfg.validate()
    scales = cfg.arm_scales()                 # fails before any work when the searched scale is missing
    store = RunStore.for_config(cfg, cfg.environment())
    seed_everything(cfg.seed)
    child = cfg.child()
    trials = [Trial(f"arm/{arm}/{j}", arm_trial, {"child": child, "arm": arm, "seed_index": j,
                                                   "seed": derive_seed(cfg.seed, j), "scales": scales,
                                                   "settings": cfg.init_settings(), "epochs": cfg.long_epochs})
              for j in range(cfg.seeds) for arm in cfg.arms]
    trials += [Trial(f"width/{w!r}/{s!r}/{j}", width_trial, {"child": child, "width": float(w), "scale": float(s),
                                                              "seed_index": j, "seed": derive_seed(cfg.seed, 77, j),
                                                              "epochs": cfg.width_epochs})
               for j in range(cfg.width_seeds) for w in cfg.widths for s in cfg.width_scales]
    run_config_trials(cfg, store, trials, f"init-methods-seed{cfg.seed}", "arms and width-grid networks")
    keys = [t.key for t in trials]
    out = InitMethodsResult(
        store.table("runs", RUN_COLUMNS, sort=["arm", "seed_index", "epoch"], trials=keys),
        store.table("init", sort=["arm", "seed_index"], trials=keys),
        store.table("layer_scales", sort=["arm", "seed_index", "layer_index"], trials=keys),
        store.table("widths", ["width", "scale", "seed_index", "seed", "test_accuracy", "nan_detected"],
                    sort=["width", "scale", "seed_index"], trials=keys),
        scales)
    for name in ("runs", "init", "layer_scales", "widths"):
        store.export(name, getattr(out, name))
    store.close()
    return out


def accuracy_at(runs: pd.DataFrame, epoch: int) -> pd.DataFrame:
    """(seed_index x arm) test accuracy after ``epoch`` epochs (a diverged run counts as NaN)."""
    at = runs[runs["epoch"] == epoch]
    return at.pivot_table(index="seed_index", columns="arm", values="test_accuracy", dropna=False)


def arm_table(result: InitMethodsResult, cfg: InitMethodsConfig) -> pd.DataFrame:
    """Per arm: accuracy at the proxy and long horizon (mean, 95% percentile-bootstrap interval over seeds, inside
    [0, 1]), the paired difference to each reference (mean, paired t interval within [-1, 1], p, Holm-adjusted p
    over the arms), and the init cost."""
    cost = result.init.groupby("arm")[["init_seconds", "epoch_equivalents", "epochs_by_time"]].mean()
    rows = {arm: {"arm": arm, "he_scale": result.scales.get(arm, np.nan)} for arm in cfg.arms}
    for label, epoch in (("proxy", cfg.proxy_epochs), ("long", cfg.long_epochs)):
        acc = accuracy_at(result.runs, epoch)
        for arm in cfg.arms:
            m, lo, hi = (float(v[0]) for v in band(acc[[arm]].to_numpy().T, (0.0, 1.0), seed=cfg.seed)) \
                if arm in acc else (np.nan,) * 3
            rows[arm] |= {f"{label}_accuracy": m, f"{label}_ci_low": lo, f"{label}_ci_high": hi}
        for ref in REFERENCES:
            if ref not in acc:
                continue
            arms = [a for a in cfg.arms if a != ref and a in acc]
            diffs = {a: paired_difference(acc[a], acc[ref], bounds=(-1.0, 1.0)) for a in arms}
            adjusted = holm([diffs[a]["p_value"] for a in arms])
            for a, p_adj in zip(arms, adjusted):
                d = diffs[a]
                rows[a] |= {f"{label}_minus_{ref}": d["mean"], f"{label}_minus_{ref}_ci_low": d["ci_low"],
                            f"{label}_minus_{ref}_ci_high": d["ci_high"], f"{label}_minus_{ref}_p": d["p_value"],
                            f"{label}_minus_{ref}_p_holm": p_adj}
    table = pd.DataFrame(list(rows.values())).set_index("arm")
    return table.join(cost).reset_index()


def _accuracy_by_seed(widths: pd.DataFrame) -> dict[float, pd.DataFrame]:
    """width -> test accuracy as a [scale, seed_index] table (a missing network counts as 0)."""
    return {float(w): g.pivot_table(index="scale", columns="seed_index", values="test_accuracy", dropna=False)
            .fillna(0.0) for w, g in widths.groupby("width")}


def _best_scale(acc: pd.DataFrame, seeds) -> float:
    """The scale with the best mean accuracy over ``seeds`` (columns of ``acc``, repeats allowed)."""
    return float(acc.index[int(np.argmax(acc[list(seeds)].to_numpy(float).mean(1)))])


def best_scale_per_width(widths: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per width: the scale with the best mean accuracy over seeds, and a 95% percentile-bootstrap interval
    of that choice (seeds resampled with replacement)."""
    rng = np.random.default_rng(seed)
    rows = []
    for w, acc in _accuracy_by_seed(widths).items():
        cols = acc.columns.to_numpy()
        picks = [_best_scale(acc, rng.choice(cols, len(cols))) for _ in range(n_boot)]
        lo, hi = np.percentile(picks, [2.5, 97.5])
        rows.append({"width": w, "best_scale": _best_scale(acc, cols), "best_scale_ci_low": float(lo),
                     "best_scale_ci_high": float(hi), "best_mean_accuracy": float(acc.mean(1).max()),
                     "seeds": len(cols)})
    return pd.DataFrame(rows)


def width_shifts(widths: pd.DataFrame, reference: float = 1.0, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per width other than ``reference`` (the width nearest it when absent): how far the best scale moves,
    best_s(w) - best_s(reference), with a paired 95% percentile-bootstrap interval. Every width trains with the
    same seeds (data order), so one resample of seed indices serves both widths. The interval is on the grid's
    steps: a shift is detected when it excludes 0."""
    rng = np.random.default_rng(seed)
    acc = _accuracy_by_seed(widths)
    ref = min(acc, key=lambda w: abs(w - reference))
    seeds = np.array(sorted(set.intersection(*(set(a.columns) for a in acc.values()))))
    rows = []
    for w in (w for w in acc if w != ref):
        boot = [_best_scale(acc[w], d) - _best_scale(acc[ref], d)
                for d in (rng.choice(seeds, len(seeds)) for _ in range(n_boot))]
        lo, hi = np.percentile(boot, [2.5, 97.5])
        rows.append({"width": w, "reference_width": ref,
                     "shift": _best_scale(acc[w], seeds) - _best_scale(acc[ref], seeds), "shift_ci_low": float(lo),
                     "shift_ci_high": float(hi), "seeds": len(seeds), "moves": bool(lo > 0 or hi < 0)})
    return pd.DataFrame(rows, columns=["width", "reference_width", "shift", "shift_ci_low", "shift_ci_high", "seeds",
                                       "moves"])


def describe_width_shifts(shifts: pd.DataFrame, n_scales: int) -> str:
    """The width-transfer verdict: which widths move the best scale, judged on the paired shift intervals."""
    if shifts.empty:
        return "Only one width was trained: no shift to measure."
    said = "; ".join(f"x{r.width:g}: {r.shift:+g} [{r.shift_ci_low:+g}, {r.shift_ci_high:+g}]" for r in shifts.itertuples())
    moved = shifts.loc[shifts["moves"], "width"]
    if len(moved):
        return (f"The best scale **moves with width** ({', '.join(f'x{w:g}' for w in moved)}); a single searched s "
                f"does not transfer here. Shifts: {said}.")
    return (f"The best scale does not move detectably with width (every paired interval of the shift contains 0: "
            f"{said}), over {int(shifts['seeds'].min())} seeds on a grid of {n_scales} scales.")


def plot_arms(table: pd.DataFrame, cfg: InitMethodsConfig):
    """Accuracy per arm at the proxy and the long horizon, with 95% percentile-bootstrap intervals over seeds."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = np.arange(len(table))
    for off, label, epochs, marker in ((-0.12, "proxy", cfg.proxy_epochs, "o"), (0.12, "long", cfg.long_epochs, "s")):
        m = table[f"{label}_accuracy"].to_numpy()
        err = [m - table[f"{label}_ci_low"].to_numpy(), table[f"{label}_ci_high"].to_numpy() - m]
        ax.errorbar(x + off, m, yerr=err, fmt=marker, capsize=3, label=f"after {epochs} epochs")
    ax.set_xticks(x, table["arm"], rotation=30, ha="right")
    ax.set(ylabel="test accuracy (mean, 95% bootstrap CI over seeds)", title="Initialisers on SimpleCNN: accuracy per arm")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_layer_scales(layer_scales: pd.DataFrame, searched: float | None):
    """The effective He scale s_l = std(W_l) / sqrt(2 / fan_in) per layer for every arm (mean over seeds)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    means = layer_scales.groupby(["arm", "layer_index", "layer"], as_index=False)["s"].mean()
    for i, (arm, g) in enumerate(means.groupby("arm", sort=False)):
        ax.plot(g["layer_index"], g["s"], marker="os^Dv<>ph*"[i % 10], ls=("-", "--", "-.", ":")[i % 4],
                color=f"C{i % 10}", label=arm)
    if searched is not None:
        ax.axhline(searched, color="k", lw=1.2, ls=":", label=f"searched s = {searched:.3f}")
    layers = means.drop_duplicates("layer_index").sort_values("layer_index")
    ax.set_xticks(layers["layer_index"], layers["layer"])
    ax.set_yscale("log")
    ax.set(xlabel="layer (forward order)", ylabel="effective He scale s_l (log)",
           title="What each initialiser chooses per layer")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_widths(widths: pd.DataFrame, best: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    band_plot(ax, widths.assign(width=widths["width"].map(lambda w: f"width x{w:g}")), "scale", "test_accuracy",
              "seed_index", "width", bounds=(0.0, 1.0))
    for i, r in enumerate(best.itertuples()):
        ax.axvline(r.best_scale, color=f"C{i % 10}", lw=0.8, ls=":")
    ax.set(xlabel="He scale s", ylabel="test accuracy (mean, 95% bootstrap CI over seeds)",
           title="Width transfer: accuracy against scale per width (dotted: best scale)")
    fig.tight_layout()
    return fig


def search_cost(cfg: InitMethodsConfig) -> tuple[float | None, str]:
    """Child epochs the searched scale cost: 02's grid in this profile (scales x seeds x proxy horizon), next to
    the dissertation's 200 episodes x 7 epochs."""
    found = read_run(upstream_dir(cfg.output_dir, "02_proxy_fidelity"))
    if cfg.searched_scale is not None or found is None:
        return None, "the dissertation's search cost 200 x 7 = 1,400 proxy epochs"
    c = found[0]
    epochs = c["n_scales"] * c["seeds"] * c["proxy_horizon"]
    return float(epochs), (f"02's grid here cost {c['n_scales']} scales x {c['seeds']} seeds x {c['proxy_horizon']} epochs"
                           f" = {epochs} proxy epochs (the dissertation's search: 200 x 7 = 1,400)")


def verdict(table: pd.DataFrame, cfg: InitMethodsConfig) -> str:
    """Does any arm beat the searched scale (Holm-adjusted paired test at the long horizon), and does the
    search pay for its cost?"""
    lines = []
    for ref in REFERENCES:
        col = f"long_minus_{ref}"
        if col not in table:
            continue
        t = table.dropna(subset=[col])
        better = t[(t[f"{col}_p_holm"] < 0.05) & (t[col] > 0)]
        worse = t[(t[f"{col}_p_holm"] < 0.05) & (t[col] < 0)]
        best = t.loc[t[col].idxmax()] if len(t) else None
        lines.append(
            f"- Against **{ref}** after {cfg.long_epochs} epochs (paired over {cfg.seeds} seeds, Holm over {len(t)} "
            f"arms): " + (f"better: {', '.join(better['arm'])}; " if len(better) else "no arm is significantly better; ")
            + (f"worse: {', '.join(worse['arm'])}. " if len(worse) else "none is significantly worse. ")
            + ("" if best is None else f"Largest difference: {best['arm']} {best[col]:+.4f} (95% CI "
               f"[{best[col + '_ci_low']:+.4f}, {best[col + '_ci_high']:+.4f}], Holm p = {fmt(best[col + '_p_holm'], 3)})."))
    epochs, cost_text = search_cost(cfg)
    if "long_minus_searched" in table:
        s = table.set_index("arm").drop(index="searched")
        tested = s[s["long_minus_searched_p_holm"].notna()]
        beats = list(tested.index[(tested["long_minus_searched_p_holm"] < 0.05) & (tested["long_minus_searched"] > 0)])
        ties = list(tested.index[tested["long_minus_searched_p_holm"] >= 0.05])
        head = (f"- Cost: {cost_text}; the other arms spent at most {s['epoch_equivalents'].max():.2f} epoch-equivalents "
                f"of passes ({s['epochs_by_time'].max():.2f} epochs of training time). ")
        if tested.empty:
            lines.append(head + "Too few seeds for a paired test: nothing can be said about the search's value.")
        elif beats or ties:
            lines.append(head + "**The search does not pay for its cost here:** " + (
                f"{', '.join(beats)} beat{'s' if len(beats) == 1 else ''} the searched scale outright" if beats else
                f"{len(ties)} arm(s) that cost (almost) nothing are not significantly different from it "
                f"({', '.join(ties)})") + ".")
        else:
            lines.append(head + "**The search pays for its cost here: every cheaper arm is significantly worse.**")
    return "\n".join(lines)


def init_methods_report(cfg: InitMethodsConfig, result: InitMethodsResult) -> Report:
    """What notebook 06 shows: the arms table and figures, learning curves, per-layer scales, width transfer,
    and the verdict."""
    rep = Report(cfg.output_dir)
    searched = result.scales.get("searched")
    if searched is not None:
        rep.markdown(f"Searched scale s = {searched:.4f}, from {cfg.searched()[1]}.")
    table = arm_table(result, cfg)
    rep.markdown("## Accuracy per arm\nMean and 95% percentile-bootstrap interval over seeds, after the proxy and the long training;"
                 " `*_minus_he` / `*_minus_searched`: the paired difference to that reference (same seeds), with its "
                 "interval, p-value and Holm-adjusted p-value; init cost in wall seconds, epoch-equivalents of passes "
                 "(a backward counts two forwards) and epochs of training time.")
    rep.table("arms", table)
    rep.figure("arms", plot_arms(table, cfg), headline=True)
    curves = result.runs.assign(arm=pd.Categorical(result.runs["arm"], cfg.arms, ordered=True)).sort_values("arm")
    fig, ax = plt.subplots(figsize=(9, 4.5))
    band_plot(ax, curves, "epoch", "test_accuracy", "seed_index", "arm", bounds=(0.0, 1.0))
    ax.axvline(cfg.proxy_epochs, color="k", lw=1, ls=":", label="proxy horizon")
    ax.set(xlabel="epoch", ylabel="test accuracy (mean, 95% bootstrap CI over seeds)",
           title="Learning curves per initialiser")
    fig.tight_layout()
    rep.figure("learning_curves", fig)
    rep.markdown("## Per-layer scale\nThe effective He scale each arm gives each layer, `s_l = std(W_l) / sqrt(2 / "
                 "fan_in)`, mean over seeds. A single searched `s` is one horizontal line.")
    rep.figure("layer_scales", plot_layer_scales(result.layer_scales, searched))
    rep.table("layer_scales_mean", result.layer_scales.groupby(["arm", "layer_index", "layer"], as_index=False)["s"].mean(),
              show=False)
    if len(result.widths):
        best = best_scale_per_width(result.widths, cfg.bootstrap, cfg.seed)
        shifts = width_shifts(result.widths, 1.0, cfg.bootstrap, cfg.seed)
        rep.markdown("## Width transfer\nThe best He scale per width (the best mean over seeds, with a 95% percentile-"
                     "bootstrap interval of that choice over seeds), and how far it moves from the reference width: "
                     "best_s(w) - best_s(x1), bootstrapped over the seeds the widths share (paired).")
        rep.table("width_transfer", best)
        rep.table("width_shifts", shifts)
        rep.figure("width_transfer", plot_widths(result.widths, best))
        rep.markdown(describe_width_shifts(shifts, result.widths["scale"].nunique()))
    rep.verdict("## What this run found\n" + verdict(table, cfg))
    return rep
