"""Notebook 06: the searched He scale against the initialisers practitioners use, and whether the best
scale moves with width.

The dissertation searched one He scale at a cost of 200 x 7 proxy epochs; none of the sources compares
that with initialisers that cost (almost) nothing. Every arm here initialises the same SimpleCNN (SiLU,
the same data, Adam, the same batch order for seed j): PyTorch's default, Xavier-uniform, He s = 1, the
three analytic SiLU scales of ``initialisation.theory``, the searched scale, and the data-driven LSUV,
GradInit and MetaInit (``initialisation.data_driven``; GradInit and MetaInit start from He s = 1 drawn
from the same seed).

**Choose on validation, report on test.** The searched scale is the best *validation* accuracy of 02's
independent grid (mean over its seeds, diverged runs at chance) at 02's proxy horizon, on the same data
and validation split (``SAME_DATA``). Every number reported here is *test* accuracy of this notebook's own
networks.

**Own seeds.** Seed j of an arm is ``derive_seed(seed, ARM_SALT, j)`` and of the width grid
``derive_seed(seed, WIDTH_SALT, j)``: neither equals a seed of 02 (``derive_seed(seed, j)`` for its CRN grid,
``derive_seed(seed, i, j, 7)`` for its independent grid), so the He-type arms are new replicates, not
re-runs of 02's networks. Within a trial the initial weights, the data order and the data-driven
initialisers' draws come from separate ``stream_seed(seed, purpose)`` streams.

**Verdicts** (``core.verdicts``). Each (arm, seed) is one trial, trained once to ``long_epochs`` with test
accuracy after every epoch (Adam at a fixed rate: the proxy horizon is an earlier epoch of the
same run). Seed j is shared by every arm, so comparisons are paired by seed. The **primary** comparison,
declared before the run: the searched scale minus He (s = 1), test accuracy after ``long_epochs``. Every
other comparison (every other arm against He and against the searched scale, the primary at the proxy,
the width-transfer rows) is one **exploratory** family, Bonferroni-corrected together. "The search does
not pay for its cost" is said only when the primary reads *equivalent* (within +-``sesoi`` of the free He
init) or *worse*. Diverged runs are kept and scored at chance accuracy (``score_diverged``); each arm's
divergence rate is reported.

**Width transfer.** He(s) over ``width_scales`` at each width, ``width_seeds`` seeds shared by every
(width, scale). The best scale per width is chosen on validation accuracy and reported with its test
accuracy. Whether the 1x scale transfers is measured as an accuracy, not as an argmax: at width w and for
each seed j, the test-accuracy difference between the scale chosen for w and the scale chosen for the
reference width (1x), both chosen on the validation accuracy of the *other* seeds (leave one seed out).
Seed j's difference is then measured on a network that took no part in either choice, so the paired t
interval over seeds is not inflated by the selection (choosing on the same networks would favour the
width's own choice through each network's luck, which val and test share). ``better`` means the width's
own scale beats the transferred one (the best scale moves); ``equivalent`` means the 1x scale transfers
within +-``sesoi``. (The previous percentile bootstrap of the argmax shift did not cover.)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rlinit_lib.core.data import load_cached, normalise
from rlinit_lib.core.notebook import Report, upstream_dir
from rlinit_lib.core.params import Choice, Float, Int, ListOf, ParameterError, RunFields, check_int, param
from rlinit_lib.core.plots import band_plot
from rlinit_lib.core.runtime import derive_seed, pick_device, stream_seed
from rlinit_lib.core.stats import interval
from rlinit_lib.core.store import RunStore, StoreError, read_upstream
from rlinit_lib.core.trials import Trial
from rlinit_lib.core.verdicts import (ACCURACY_DIFFERENCE, Contrast, compare_family, score_diverged, sesoi_line,
                                      verdict_table)
from rlinit_lib.initialisation.data_driven import (EpochBatches, InitCost, effective_scales, gradinit, lsuv_init,
                                                   metainit)
from rlinit_lib.initialisation.theory import critical_scales
from rlinit_lib.children.child import ChildTraining
from rlinit_lib.children.training import build_child, train_and_evaluate

ARMS = ("pytorch_default", "xavier_uniform", "he", "he_second_moment", "he_variance", "he_backward", "searched",
        "lsuv", "gradinit", "metainit")
REFERENCES = ("he", "searched")           # every other arm is compared with these, paired by seed
PRIMARY = "searched - he"                 # declared before the run: test accuracy after long_epochs
# settings 02 must share with this run for its best scale to count as "searched on the same data"
SAME_DATA = ("dataset", "train_subset", "test_subset", "val_size", "activation", "batch_size", "lr")
ARM_SALT, WIDTH_SALT = 601, 602           # this notebook's own seeds (02 uses (seed, j) and (seed, i, j, 7))
CHANCE = 0.1                              # every dataset of core.data has 10 classes: a diverged run scores 1/10
RUN_COLUMNS = ["arm", "seed_index", "seed", "epoch", "test_accuracy", "train_loss", "nan_detected"]
WIDTH_COLUMNS = ["width", "scale", "seed_index", "seed", "val_accuracy", "test_accuracy", "nan_detected"]
ACCURACY = (0.0, 1.0)


QUESTION = ("Does the searched scale beat the initialisers practitioners use (analytic gains, LSUV, GradInit, "
            "MetaInit), and does it carry over across widths?")


@dataclass
class InitMethodsConfig(ChildTraining, RunFields):
    """Every knob of notebook 06_init_methods."""

    notebook = "06_init_methods"

    arms: list = param(list(ARMS), ListOf(Choice(ARMS), what="arm names"), identity=False)
    seeds: int = param(10, Int(low=2, high=1_000), identity=False)            # seeds per arm (more extends)
    proxy_epochs: int = param(7, Int(low=1, high=10_000))                      # the dissertation's proxy
    long_epochs: int = param(28, Int(low=2, high=10_000))                      # the longer training (at least 4x the proxy)
    searched_scale: float | None = param(None, Float(low=0.0, low_open=True, optional=True))  # None: 02's best (val)
    init_batch: int = param(256, Int(low=2, high=65_536))                      # LSUV's batch
    lsuv_tolerance: float = param(0.1, Float(low=0.0, low_open=True))   # on each layer's output variance
    lsuv_attempts: int = param(10, Int(low=1, high=1_000))
    gradinit_iters: int | None = param(None, Int(low=1, optional=True, high=1_000_000))  # None: one per training batch of an epoch
    gradinit_lr: float = param(1e-2, Float(low=0.0, low_open=True))
    gradinit_eta: float = param(0.1, Float(low=0.0, low_open=True))
    gradinit_gamma: float = param(1.0, Float(low=0.0, low_open=True))   # gradient-norm constraint
    gradinit_min_scale: float = param(0.01, Float(low=0.0))
    metainit_steps: int = param(500, Int(low=1, high=100_000))
    metainit_lr: float = param(0.1, Float(low=0.0, low_open=True))
    metainit_batch: int = param(32, Int(low=1, high=65_536))
    widths: list = param([0.5, 1.0, 2.0], ListOf(Float(low=0.0, low_open=True), 0, what="widths > 0"),
                         identity=False)                          # width transfer; [] skips it
    width_scales: list = param([0.5, 0.75, 1.0, 1.25, 1.5, 2.0],
                               ListOf(Float(low=0.0, low_open=True), 3, what="scales > 0"))
    width_seeds: int = param(3, Int(low=2, high=1_000), identity=False)
    width_epochs: int = param(7, Int(low=1, high=10_000))
    sesoi: float = param(0.005, Float(low=0.0, low_open=True))    # smallest accuracy difference of interest
    output_dir: str = param("outputs/06_init_methods", identity=False)

    def check(self):
        check_int("long_epochs", self.long_epochs, low=4 * self.proxy_epochs)   # the "at least 4x"

    def check_upstream(self) -> None:
        self.arm_scales()               # the searched scale (02's store) is found before any work, or one line says why

    def searched(self) -> tuple[float | None, str]:
        """(the searched scale, where it came from); None when it cannot be had (the sentence says why)."""
        if self.searched_scale is not None:
            return float(self.searched_scale), "the parameter searched_scale"
        found = self.upstream_02()
        if isinstance(found, str):
            return None, found
        return found[0], found[1]

    def upstream_02(self):
        """(scale, sentence, fingerprint) from 02's run store in this profile's output root, or the sentence
        saying why there is none. Read from 02's store (never its CSV copies), checksums checked."""
        where = upstream_dir(self.output_dir, "02_proxy_fidelity")
        try:
            up = read_upstream(where, "02_proxy_fidelity")
        except StoreError as exc:
            return str(exc)
        config, runs = up.config, up.table("runs")
        if runs.empty:
            return f"02_proxy_fidelity at {where} has no finished grid networks"
        if "val_accuracy" not in runs:
            return f"02_proxy_fidelity at {where} has no val_accuracy (written before the validation split): rerun 02"
        other = [f"{k}={config.get(k)!r} (here {getattr(self, k)!r})" for k in SAME_DATA if config.get(k) != getattr(self, k)]
        if other:
            return f"02_proxy_fidelity at {where} trained on other data or settings: {', '.join(other)}"
        best, seeds = best_validation_scale(runs, config["proxy_horizon"])
        if best is None:
            return f"02_proxy_fidelity at {where} has no finished grid networks"
        return best, (f"the best mean validation accuracy of 02_proxy_fidelity's independent grid at its "
                      f"{config['proxy_horizon']}-epoch proxy ({where}; {seeds} seeds per scale)"), \
            up.fingerprint(searched_scale=best)

    def identity(self) -> dict:
        """The settings that change results and, when the searched scale comes from 02, what was used of 02
        (its identity, a digest of its finished trials and the scale), so a changed 02 is refused in one line
        instead of relabelling these networks."""
        out = super().identity()
        if "searched" in self.arms and self.searched_scale is None:
            found = self.upstream_02()
            out["upstream 02_proxy_fidelity"] = None if isinstance(found, str) else found[2]
        return out

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


Config = InitMethodsConfig


def scored(values: pd.Series, chance: float = CHANCE) -> np.ndarray:
    """Accuracies with every diverged (NaN) run kept and scored at chance (``core.verdicts.score_diverged``)."""
    v = np.asarray(values, float)
    return score_diverged(v, ~np.isfinite(v), chance)


def best_validation_scale(runs: pd.DataFrame, horizon: int, chance: float = CHANCE) -> tuple[float | None, int]:
    """(scale, seeds): the best mean validation accuracy of 02's independent grid after ``horizon`` epochs,
    diverged runs at chance."""
    at = runs[(runs["mode"] == "independent") & (runs["epoch"] == horizon)]
    if at.empty:
        return None, 0
    means = at.assign(v=scored(at["val_accuracy"], chance)).groupby("scale")["v"].mean()
    return float(means.idxmax()), int(at["seed_index"].nunique())


def initialise_arm(arm: str, data, scales: dict, seed: int, activation: str, settings: dict, batch_size: int,
                   width: float = 1.0):
    """(model, InitCost) for one arm, deterministic given ``seed``: weights from its ``init`` stream (as
    ``train_and_evaluate`` draws them), the data-driven arms' batches in the order a training run with ``seed``
    draws them (its ``data_order`` stream) and their own draws from streams of their own."""
    import torch

    s, init_seed = settings, stream_seed(seed, "init")
    if arm in ("pytorch_default", "xavier_uniform"):
        return build_child(data.in_channels, data.num_classes, 1.0, activation, arm, init_seed, width=width), InitCost()
    if arm in scales:
        return build_child(data.in_channels, data.num_classes, scales[arm], activation, "he_scaled", init_seed,
                           width=width), InitCost()
    model = build_child(data.in_channels, data.num_classes, 1.0, activation, "he_scaled", init_seed, width=width)
    order = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(stream_seed(seed, "data_order")))
    if arm == "lsuv":
        x = normalise(data.x_train[order[:s["init_batch"]]])
        return model, lsuv_init(model, x, s["lsuv_tolerance"], s["lsuv_attempts"], seed=stream_seed(seed, "lsuv"))
    if arm == "gradinit":
        batch = EpochBatches(data.x_train, data.y_train, order, batch_size, data.num_classes, normalise)
        iters = s["gradinit_iters"] or batch.per_epoch
        return model, gradinit(model, batch, iters, s["gradinit_lr"], s["gradinit_eta"], s["gradinit_gamma"],
                               s["gradinit_min_scale"])
    if arm == "metainit":
        return model, metainit(model, tuple(data.x_train.shape[1:]), data.num_classes, s["metainit_steps"],
                               s["metainit_batch"], s["metainit_lr"], seed=stream_seed(seed, "metainit"))
    raise ParameterError(f"arm must be one of {', '.join(ARMS)} (got {arm!r})")


def _load(child: dict):
    device = str(pick_device(child["device"]))
    return device, load_cached(child["dataset"], child["data_root"], child["train_subset"], child["test_subset"],
                               device, child["val_size"])


def _per_epoch(values: list, e: int) -> float:
    return values[e] if e < len(values) else np.nan       # a diverged run stops early: NaN afterwards


def arm_trial(child: dict, arm: str, seed_index: int, seed: int, scales: dict, settings: dict, epochs: int) -> dict:
    """One arm with one seed: its init (cost, effective scales) and one training with test accuracy per epoch
    (no choice is made on an arm's own runs, so its validation split is not evaluated: that saves time)."""
    device, data = _load(child)
    data = dataclasses.replace(data, x_val=None, y_val=None)
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
             "test_accuracy": _per_epoch(r.test_accuracy_per_epoch, e),
             "train_loss": _per_epoch(r.train_loss, e), "nan_detected": r.nan_detected} for e in range(epochs)]
    init = {"arm": arm, "seed_index": seed_index, "init_seconds": cost.seconds, "forward_images": cost.forward_images,
            "backward_images": cost.backward_images,
            "epoch_equivalents": cost.epoch_equivalents(len(data.y_train)),
            "epochs_by_time": cost.seconds / (train_seconds / max(1, r.epochs_completed)) if r.epochs_completed else np.nan}
    return {"runs": rows, "init": [init], "layer_scales": [{"arm": arm, "seed_index": seed_index, **row}
                                                          for row in made["scales"]],
            "_log": {"init/arm_final_accuracy": r.test_accuracy, "init/seconds": cost.seconds}}


def width_trial(child: dict, width: float, scale: float, seed_index: int, seed: int, epochs: int) -> dict:
    """He(s) at one width with one seed: final validation and test accuracy."""
    device, data = _load(child)
    r = train_and_evaluate(scale, epochs, data, batch_size=child["batch_size"], lr=child["lr"],
                           activation=child["activation"], seed=seed, device=device, precision=child["precision"],
                           build=lambda s, sd: build_child(data.in_channels, data.num_classes, s, child["activation"],
                                                           seed=stream_seed(sd, "init"), width=width))
    return {"widths": [{"width": width, "scale": scale, "seed_index": seed_index, "seed": seed,
                        "val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy,
                        "nan_detected": r.nan_detected}]}


@dataclass
class InitMethodsResult:
    runs: pd.DataFrame          # one row per (arm, seed, epoch)
    init: pd.DataFrame          # one row per (arm, seed): init cost
    layer_scales: pd.DataFrame  # one row per (arm, seed, layer): effective scale
    widths: pd.DataFrame        # one row per (width, scale, seed)
    scales: dict                # He-type arm -> scale
    EXPORTS = ("runs", "init", "layer_scales", "widths")


def arm_seed(cfg_seed: int, j: int) -> int:
    """Seed j of every arm: this notebook's own (see the module docstring)."""
    return derive_seed(cfg_seed, ARM_SALT, j)


def width_seed(cfg_seed: int, j: int) -> int:
    return derive_seed(cfg_seed, WIDTH_SALT, j)


def trials(cfg: InitMethodsConfig, run) -> None:
    """Every (arm, seed) and the width grid, one trial each."""
    child, scales = cfg.child(), cfg.arm_scales()
    arms = [Trial(f"arm/{arm}/{j}", arm_trial, {"child": child, "arm": arm, "seed_index": j,
                                                 "seed": arm_seed(cfg.seed, j), "scales": scales,
                                                 "settings": cfg.init_settings(), "epochs": cfg.long_epochs},
                  work={"child epochs": cfg.long_epochs})
            for j in range(cfg.seeds) for arm in cfg.arms]
    widths = [Trial(f"width/{w!r}/{s!r}/{j}", width_trial, {"child": child, "width": float(w), "scale": float(s),
                                                             "seed_index": j, "seed": width_seed(cfg.seed, j),
                                                             "epochs": cfg.width_epochs},
                    work={"child epochs": cfg.width_epochs})
              for j in range(cfg.width_seeds) for w in cfg.widths for s in cfg.width_scales]
    run(arms + widths, "arms and width-grid networks")


def tables(cfg: InitMethodsConfig, store: RunStore, keys: list[str]) -> InitMethodsResult:
    return InitMethodsResult(
        store.table("runs", RUN_COLUMNS, sort=["arm", "seed_index", "epoch"], trials=keys),
        store.table("init", sort=["arm", "seed_index"], trials=keys),
        store.table("layer_scales", sort=["arm", "seed_index", "layer_index"], trials=keys),
        store.table("widths", WIDTH_COLUMNS, sort=["width", "scale", "seed_index"], trials=keys),
        cfg.arm_scales())


def horizons(cfg: InitMethodsConfig) -> tuple:
    return ("proxy", cfg.proxy_epochs), ("long", cfg.long_epochs)


def accuracy_at(runs: pd.DataFrame, epoch: int, split: str = "test", chance: float = CHANCE) -> pd.DataFrame:
    """(seed_index x arm) accuracy on ``split`` after ``epoch`` epochs; a diverged run scores ``chance``."""
    wide = runs[runs["epoch"] == epoch].pivot(index="seed_index", columns="arm", values=f"{split}_accuracy")
    return wide.apply(lambda c: pd.Series(scored(c, chance), index=c.index))


def arm_table(result: InitMethodsResult, cfg: InitMethodsConfig, chance: float = CHANCE) -> pd.DataFrame:
    """Per arm: test accuracy at the proxy and the long horizon (mean and t interval over seeds inside [0, 1],
    diverged runs at chance), the share of runs diverged by then, and the init cost."""
    cost = result.init.groupby("arm")[["init_seconds", "epoch_equivalents", "epochs_by_time"]].mean()
    rows = []
    for arm in cfg.arms:
        row = {"arm": arm, "he_scale": result.scales.get(arm, np.nan)}
        for label, epoch in horizons(cfg):
            at = result.runs.loc[(result.runs["arm"] == arm) & (result.runs["epoch"] == epoch), "test_accuracy"]
            iv = interval(scored(at, chance), "mean", bounds=ACCURACY)
            row |= {f"{label}_accuracy": iv.estimate, f"{label}_ci_low": iv.low, f"{label}_ci_high": iv.high,
                    f"{label}_diverged_rate": float(at.isna().mean()) if len(at) else np.nan}
        rows.append(row | {"seeds": iv.n, "interval": f"{iv.method}, inside [0, 1]"})
    return pd.DataFrame(rows).set_index("arm").join(cost).reset_index()


def arm_contrasts(long: pd.DataFrame, proxy: pd.DataFrame, arms) -> list[Contrast]:
    """The primary (searched - he after the long training) first, then every other arm against each reference
    and the primary at the proxy; ``long`` / ``proxy``: (seed_index x arm) test accuracies, aligned by seed."""
    out = []
    if {"searched", "he"} <= set(long):
        out += [Contrast(PRIMARY, long["searched"].to_numpy(), long["he"].to_numpy()),
                Contrast(f"{PRIMARY} (proxy)", proxy["searched"].to_numpy(), proxy["he"].to_numpy())]
    for a in (a for a in arms if a not in REFERENCES and a in long):
        out += [Contrast(f"{a} - {ref}", long[a].to_numpy(), long[ref].to_numpy()) for ref in REFERENCES if ref in long]
    return out


def _grid(widths: pd.DataFrame, width: float, split: str, chance: float) -> pd.DataFrame:
    """[scale x seed_index] accuracy on ``split`` at one width, diverged runs at chance."""
    g = widths[widths["width"] == width].pivot(index="scale", columns="seed_index", values=f"{split}_accuracy")
    return g.apply(lambda c: pd.Series(scored(c, chance), index=c.index))


def leave_one_out_choices(val_own: np.ndarray, val_ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every seed j (columns of the [scale x seed] validation accuracies): the index of the scale with the
    best mean over the other seeds, at this width and at the reference width."""
    n = val_own.shape[1]
    others = [np.delete(np.arange(n), j) for j in range(n)]
    return (np.array([int(np.argmax(val_own[:, o].mean(1))) for o in others]),
            np.array([int(np.argmax(val_ref[:, o].mean(1))) for o in others]))


def transfer_by_seed(widths: pd.DataFrame, reference: float = 1.0, chance: float = CHANCE) -> pd.DataFrame:
    """Per width other than ``reference`` (the width nearest it) and seed j: the test accuracy of seed j's
    network at the scale chosen for this width and at the scale chosen for the reference width, both chosen
    on the validation accuracy of the other seeds (see the module docstring)."""
    cols = ["width", "reference_width", "seed_index", "own_scale", "transferred_scale", "own_test_accuracy",
            "transferred_test_accuracy"]
    found = sorted(widths["width"].unique()) if len(widths) else []
    if len(found) < 2:
        return pd.DataFrame(columns=cols)
    ref = min(found, key=lambda w: abs(w - reference))
    val_ref = _grid(widths, ref, "val", chance)
    rows = []
    for w in (w for w in found if w != ref):
        val, test = _grid(widths, w, "val", chance), _grid(widths, w, "test", chance)
        seeds = [j for j in val.columns if j in val_ref.columns]
        scales = [s for s in val.index if s in val_ref.index]
        own, moved = leave_one_out_choices(val.loc[scales, seeds].to_numpy(), val_ref.loc[scales, seeds].to_numpy())
        rows += [{"width": float(w), "reference_width": float(ref), "seed_index": j, "own_scale": scales[a],
                  "transferred_scale": scales[b], "own_test_accuracy": test.loc[scales[a], j],
                  "transferred_test_accuracy": test.loc[scales[b], j]} for j, a, b in zip(seeds, own, moved)]
    return pd.DataFrame(rows, columns=cols)


def width_contrasts(by_seed: pd.DataFrame) -> list[Contrast]:
    """Per width: own-scale minus transferred-scale test accuracy, paired by seed ('better': the best scale moves)."""
    return [Contrast(f"width x{w:g}: own scale - x{g['reference_width'].iloc[0]:g}'s scale",
                     g["own_test_accuracy"].to_numpy(float), g["transferred_test_accuracy"].to_numpy(float))
            for w, g in by_seed.groupby("width")]


def best_scale_per_width(widths: pd.DataFrame, reference: float = 1.0, chance: float = CHANCE) -> pd.DataFrame:
    """Per width: the scale with the best mean validation accuracy over all seeds, its test accuracy (mean, t
    interval inside [0, 1]), its shift from the reference width's choice (a point choice: its uncertainty is
    read through the accuracy it costs, ``transfer_by_seed``), and the share of diverged networks."""
    rows = []
    for w in sorted(widths["width"].unique()):
        val, test = _grid(widths, w, "val", chance), _grid(widths, w, "test", chance)
        best = float(val.index[int(np.argmax(val.mean(1).to_numpy()))])
        iv = interval(test.loc[best].to_numpy(), "mean", bounds=ACCURACY)
        rows.append({"width": float(w), "best_scale": best, "best_val_accuracy": float(val.loc[best].mean()),
                     "test_accuracy": iv.estimate, "test_ci_low": iv.low, "test_ci_high": iv.high, "seeds": iv.n,
                     "interval": f"{iv.method}, inside [0, 1]",
                     "diverged_rate": float(widths.loc[widths["width"] == w, "test_accuracy"].isna().mean())})
    out = pd.DataFrame(rows)
    if len(out):
        ref = out.iloc[int(np.argmin(abs(out["width"] - reference)))]
        out.insert(2, "shift_from_reference", out["best_scale"] - ref["best_scale"])
    return out


def verdict_rows(contrasts: list[Contrast], sesoi: float) -> pd.DataFrame:
    """Every comparison read by ``core.verdicts``: PRIMARY (when present) at alpha, all others one exploratory
    family."""
    names = [c.name for c in contrasts]
    return compare_family(contrasts, sesoi, primary=[PRIMARY] if PRIMARY in names else [], bounds=ACCURACY_DIFFERENCE)


def verdicts(cfg: InitMethodsConfig, result: InitMethodsResult, chance: float = CHANCE) -> pd.DataFrame:
    """The notebook's verdict table: arms at the long horizon (and the primary at the proxy), width transfer."""
    long, proxy = (accuracy_at(result.runs, e, "test", chance) for _, e in reversed(horizons(cfg)))
    contrasts = arm_contrasts(long, proxy, cfg.arms) + width_contrasts(transfer_by_seed(result.widths, 1.0, chance))
    return verdict_rows(contrasts, cfg.sesoi)


def search_pays(rows: pd.DataFrame, cost_text: str = "") -> str:
    """Whether the search pays for its cost, from the primary comparison only: "does not pay" needs the searched
    scale to be equivalent to (or worse than) He s = 1, which costs nothing."""
    prim = rows[rows["comparison"] == PRIMARY]
    if prim.empty:
        return "No primary comparison (arms lacks 'searched' or 'he'): nothing is said about the search's value."
    r = prim.iloc[0]
    head = f"{cost_text} " if cost_text else ""
    if r["verdict"] == "equivalent":
        return head + (f"**The search does not pay for its cost here:** the searched scale is equivalent to He "
                       f"(s = 1), which costs nothing, within +-{r['sesoi']:g}.")
    if r["verdict"] == "worse":
        return head + "**The search does not pay for its cost here:** the searched scale is worse than He (s = 1)."
    if r["verdict"] == "better":
        return head + (f"**The search bought accuracy here:** at least {r['ci_low']:+.4f} over He (s = 1), the "
                       "lower bound of the primary interval.")
    need = f"; about {int(r['seeds_needed'])} seeds per arm would decide" if np.isfinite(r["seeds_needed"]) else ""
    return head + f"Whether the search pays is **undecided** (the primary comparison is inconclusive{need})."


def search_cost(cfg: InitMethodsConfig) -> tuple[float | None, str]:
    """Child epochs the searched scale cost: 02's grid in this profile (scales x seeds x proxy horizon), next to
    the dissertation's 200 episodes x 7 epochs."""
    found = None if cfg.searched_scale is not None else cfg.upstream_02()
    if found is None or isinstance(found, str):
        return None, "the dissertation's search cost 200 x 7 = 1,400 proxy epochs"
    c = read_upstream(upstream_dir(cfg.output_dir, "02_proxy_fidelity"), "02_proxy_fidelity").config
    epochs = c["n_scales"] * c["seeds"] * c["proxy_horizon"]
    return float(epochs), (f"02's grid here cost {c['n_scales']} scales x {c['seeds']} seeds x {c['proxy_horizon']} epochs"
                           f" = {epochs} proxy epochs (the dissertation's search: 200 x 7 = 1,400)")


def verdict_text(rows: pd.DataFrame, cfg: InitMethodsConfig, table: pd.DataFrame) -> str:
    """The report's verdicts: the declared margin and primary, every comparison in words, and the cost."""
    cheap = table.loc[table["arm"] != "searched", "epoch_equivalents"]
    cost = f"Cost: {search_cost(cfg)[1]}; the other arms spent at most {cheap.max():.2f} epoch-equivalents."
    primary = (f"the searched scale minus He (s = 1), test accuracy after {cfg.long_epochs} epochs, paired by seed "
               f"({cfg.seeds} seeds)")
    return "\n".join([sesoi_line(cfg.sesoi, "accuracy", primary), "", verdict_table(rows), f"- {search_pays(rows, cost)}"])


def plot_arms(table: pd.DataFrame, cfg: InitMethodsConfig):
    """Test accuracy per arm at the proxy and the long horizon, with 95% t intervals over seeds."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = np.arange(len(table))
    for off, label, epochs, marker in ((-0.12, "proxy", cfg.proxy_epochs, "o"), (0.12, "long", cfg.long_epochs, "s")):
        m = table[f"{label}_accuracy"].to_numpy()
        err = [m - table[f"{label}_ci_low"].to_numpy(), table[f"{label}_ci_high"].to_numpy() - m]
        ax.errorbar(x + off, m, yerr=err, fmt=marker, capsize=3, label=f"after {epochs} epochs")
    ax.set_xticks(x, table["arm"], rotation=30, ha="right")
    ax.set(ylabel="test accuracy (mean, 95% t CI over seeds)", title="Initialisers on SimpleCNN: accuracy per arm")
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


def plot_widths(widths: pd.DataFrame, best: pd.DataFrame, chance: float = CHANCE):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    shown = widths.assign(width=widths["width"].map(lambda w: f"width x{w:g}"),
                          test_accuracy=scored(widths["test_accuracy"], chance))
    band_plot(ax, shown, "scale", "test_accuracy", "seed_index", "width", bounds=ACCURACY)
    for i, r in enumerate(best.itertuples()):
        ax.axvline(r.best_scale, color=f"C{i % 10}", lw=0.8, ls=":")
    ax.set(xlabel="He scale s", ylabel="test accuracy (mean, 95% t CI over seeds)",
           title="Width transfer: test accuracy against scale per width (dotted: best scale on validation)")
    fig.tight_layout()
    return fig


def report(cfg: InitMethodsConfig, result: InitMethodsResult) -> Report:
    """What notebook 06 shows: the arms table and figures, learning curves, per-layer scales, width transfer,
    and the verdicts."""
    rep = Report(cfg.output_dir)
    searched = result.scales.get("searched")
    origin = f"Searched scale s = {searched:.4f}, from {cfg.searched()[1]}. " if searched is not None else ""
    rep.markdown(origin + "Every accuracy below is on the test split, from this notebook's own seeds (not a re-run of "
                 "02's networks); choices (the searched scale, the best scale per width) are made on validation data.")
    table = arm_table(result, cfg)
    rows = verdicts(cfg, result)
    rep.markdown("## Accuracy per arm\nTest accuracy: mean and 95% t interval over seeds (inside [0, 1]) after the proxy "
                 "and the long training; a diverged run is kept and scored at chance (`*_diverged_rate`: the share of "
                 "runs diverged by then); init cost in wall seconds, epoch-equivalents of passes (a backward counts "
                 "two forwards) and epochs of training time.")
    rep.table("arms", table)
    rep.figure("arms", plot_arms(table, cfg), headline=True)
    curves = result.runs.assign(arm=pd.Categorical(result.runs["arm"], cfg.arms, ordered=True),
                                test_accuracy=scored(result.runs["test_accuracy"])).sort_values("arm")
    fig, ax = plt.subplots(figsize=(9, 4.5))
    band_plot(ax, curves, "epoch", "test_accuracy", "seed_index", "arm", bounds=ACCURACY)
    ax.axvline(cfg.proxy_epochs, color="k", lw=1, ls=":", label="proxy horizon")
    ax.set(xlabel="epoch", ylabel="test accuracy (mean, 95% t CI over seeds)", title="Learning curves per initialiser")
    fig.tight_layout()
    rep.figure("learning_curves", fig)
    rep.markdown("## Per-layer scale\nThe effective He scale each arm gives each layer, `s_l = std(W_l) / sqrt(2 / "
                 "fan_in)`, mean over seeds. A single searched `s` is one horizontal line.")
    rep.figure("layer_scales", plot_layer_scales(result.layer_scales, searched))
    rep.table("layer_scales_mean", result.layer_scales.groupby(["arm", "layer_index", "layer"], as_index=False)["s"].mean(),
              show=False)
    if len(result.widths):
        best = best_scale_per_width(result.widths)
        rep.markdown("## Width transfer\nThe best He scale per width, chosen on validation accuracy (mean over seeds), "
                     "with its test accuracy (t interval). Whether the 1x scale transfers is judged in the verdicts "
                     "below by the test accuracy it costs at each width, paired by seed, both scales chosen on the "
                     "other seeds' validation accuracy (`width_transfer_by_seed`).")
        rep.table("width_transfer", best)
        rep.table("width_transfer_by_seed", transfer_by_seed(result.widths), show=False)
        rep.figure("width_transfer", plot_widths(result.widths, best))
    rep.table("comparisons", rows, show=False)
    rep.verdict("## What this run found\n" + verdict_text(rows, cfg, table))
    return rep
