"""Notebook 03: Phase 2 of the dissertation (Sec. 4.2.2, 4.4.2, 5.4; Tables 4.1 and 5.1; Fig. 5.2), with seeds.

The VGG-style Swish CNN of ``model`` is trained with Keras' ``fit`` (KERAS_BACKEND=torch): images
scaled to [0, 1], one-hot labels, Adam lr 1e-3, categorical cross-entropy, batch 64, 100 epochs. Keras'
``validation_data`` is the **validation split** (``val_size`` training images held out, ``core.data``),
never the test set: the best epoch of each run is chosen on validation accuracy, and the run's numbers
are its **test** accuracy, evaluated after training with the best epoch's weights (``test_accuracy``,
the reported one) and with the last epoch's (``final_test_accuracy``, the dissertation's protocol). Each
(scale, seed) run is one trial of the run store (an interrupted run restarts from its first epoch).

Seed j gives every scale the same kernel draws (scaled), the same dropout masks and the same data order
(each from its own ``stream_seed`` of the run's seed: ``model.layer_seed``),
so scales are compared **paired by seed** (``core.verdicts.compare``) against a declared smallest effect
of interest ``sesoi``. The primary comparison, declared before the run: s_proxy against s = 1.0 on test
accuracy; any ``extra_scales`` against s = 1.0 form one exploratory family. A diverged run (a non-finite
training loss) is kept and scored at chance accuracy (``core.verdicts.score_diverged``); the rate is
reported per scale. s_proxy comes from notebook 01's results in the same profile; the transfer check
compares the measured accuracies with notebook 02's proxy curve (its ``per_scale.csv``: ``scale``,
``accuracy``). ``precision`` (fp32 | bf16 | auto) selects Keras' ``mixed_bfloat16`` policy; ``auto``
probes a few ``train_on_batch`` steps (``core.precision``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rlinit_lib.core.data import DATASET_CHANNELS, DATASET_CLASSES, DataFields, ImageData, load_cached
from rlinit_lib.core.notebook import Report, fmt, upstream_dir
from rlinit_lib.core.params import Choice, Float, Int, ListOf, RunFields, param
from rlinit_lib.core.plots import band_plot
from rlinit_lib.core.precision import PRECISIONS, resolve_precision
from rlinit_lib.core.runtime import derive_seed, environment_info
from rlinit_lib.core.stats import interval, transfer_agreement
from rlinit_lib.core.store import RunStore, StoreError, read_upstream, stored_identity
from rlinit_lib.core.trials import Trial, torch_threads, trial_threads
from rlinit_lib.core.verdicts import (ACCURACY_DIFFERENCE, Contrast, compare_family, score_diverged, sesoi_line,
                                      verdict_table)

S_PROXY_FALLBACK = 1.25  # the dissertation's s_proxy
BASELINE = 1.0           # He-normal as Keras draws it
CHANCE = 0.1             # every dataset of core.data has 10 classes: a diverged run scores 1/10
RUN_COLUMNS = ["scale", "seed_index", "seed", "best_epoch", "best_val_accuracy", "final_val_accuracy", "test_accuracy",
               "final_test_accuracy", "final_val_loss", "diverged"]


QUESTION = "Does the searched scale beat s = 1.0 on the VGG-style Keras CNN of the dissertation's Phase 2?"


@dataclass
class KerasValidationConfig(DataFields, RunFields):
    """Every knob of notebook 03_keras_validation; defaults are the dissertation's Phase 2."""

    notebook = "03_keras_validation"

    s_proxy: float | None = param(None, Float(low=0.0, low_open=True, optional=True), identity=False)  # None: 01's
    extra_scales: list = param([], ListOf(Float(low=0.0, low_open=True), 0, what="scales > 0"), identity=False)
    seeds: int = param(5, Int(low=2, high=1_000), identity=False)       # runs per scale (more extends)
    epochs: int = param(100, Int(low=1, high=10_000))
    batch_size: int = param(64, Int(low=1, high=65_536))
    lr: float = param(1e-3, Float(low=0.0, low_open=True))
    block_dropout: list = param([0.2, 0.3, 0.4], ListOf(Float(low=0.0, high=1.0, high_open=True), 3, 3,
                                                        "rates in [0, 1)", unique=False))   # not given by the dissertation
    dense_dropout: float = param(0.5, Float(low=0.0, high=1.0, high_open=True))
    sesoi: float = param(0.005, Float(low=0.0, low_open=True))   # smallest accuracy difference of interest
    precision: str = param("auto", Choice(PRECISIONS))       # fp32 | bf16 | auto (bf16 where measured faster)
    output_dir: str = param("outputs/03_keras_validation", identity=False)

    def precision_record(self) -> dict:
        """fp32 / bf16 as asked, or ``auto`` resolved by a probe of Keras steps (cached for the process)."""
        from rlinit_lib.keras_validation.model import probe_step   # imports Keras

        shape = (32, 32, DATASET_CHANNELS[self.dataset])
        with torch_threads(trial_threads(self.trial_cpus)):
            return resolve_precision(self.precision, ("keras", shape, self.batch_size),
                                     probe_step(shape, 10, self.batch_size),
                                     stored=stored_identity(self.output_dir).get("precision"))

    def environment(self) -> dict:
        """The environment record (Keras trains on the CPU here), with the precision and its probe."""
        return {**environment_info("cpu"), "precision": self.precision_record()}

    def resolve_s_proxy(self) -> tuple[float, str]:
        """(s_proxy, a sentence saying where it came from)."""
        found = self.upstream_01()
        return found[0], found[1]

    def upstream_01(self) -> tuple[float, str, dict | None]:
        """(s_proxy, where it came from, what was used of 01): the parameter, else 01's best episode read from
        01's run store (its best non-diverged reward at the longest horizon, the dissertation's rule), else the
        dissertation's 1.25 with a sentence saying 01 has not run."""
        if self.s_proxy is not None:
            return float(self.s_proxy), "the parameter s_proxy", None
        where = upstream_dir(self.output_dir, "01_search")
        try:
            up = read_upstream(where, "01_search")
        except StoreError as exc:
            return S_PROXY_FALLBACK, f"the dissertation's 1.25 ({exc})", None
        episodes = up.table("children", trial_prefix="episode/")
        ok = episodes[~episodes["nan_detected"].astype(bool) & (episodes["epochs"] == episodes["epochs"].max())] \
            if len(episodes) else episodes
        if ok.empty:
            return S_PROXY_FALLBACK, f"the dissertation's 1.25 (01_search at {where} has no finished episode)", None
        best = round(float(ok.loc[ok["reward"].idxmax(), "scale"]), 4)
        return best, f"01_search's best episode ({where})", up.fingerprint(s_proxy=best)

    def upstream_02(self):
        """02's per-scale test accuracy at its proxy horizon (independent grid, diverged runs at chance), read
        from 02's run store, with what was used of it; or the sentence saying why there is none."""
        where = upstream_dir(self.output_dir, "02_proxy_fidelity")
        try:
            up = read_upstream(where, "02_proxy_fidelity")
        except StoreError as exc:
            return str(exc)
        runs = up.table("runs")
        if runs.empty or not {"scale", "epoch", "test_accuracy", "mode"} <= set(runs.columns):
            return f"02_proxy_fidelity at {where} has no grid runs with scale and test_accuracy: rerun 02_proxy_fidelity"
        at = runs[(runs["mode"] == "independent") & (runs["epoch"] == up.config["proxy_horizon"])]
        acc = at["test_accuracy"].where(np.isfinite(at["test_accuracy"]), 1.0 / DATASET_CLASSES[self.dataset])
        curve = acc.groupby(at["scale"]).mean().rename("accuracy").reset_index()
        return curve, str(where), up.fingerprint()

    def identity(self) -> dict:
        """The settings that change results and what this run used of 01 and 02 (their identity, a digest of
        their finished trials, the scale taken), so a changed upstream run is refused, never relabelled."""
        out = {**super().identity(), "precision": self.precision_record()["chosen"],
               "upstream 01_search": self.upstream_01()[2]}
        found = self.upstream_02()
        if not isinstance(found, str):
            out["upstream 02_proxy_fidelity"] = found[2]
        return out

    def scales(self) -> list[float]:
        return list(dict.fromkeys([BASELINE, self.resolve_s_proxy()[0], *map(float, self.extra_scales)]))


Config = KerasValidationConfig


def to_keras_arrays(data: ImageData) -> dict:
    """uint8 (N, C, H, W) -> float32 (N, H, W, C) in [0, 1] and one-hot labels, as the dissertation feeds Keras;
    one (x, y) pair per split: ``train``, ``val`` and ``test``."""
    def x(t):
        return t.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32) / 255.0

    def y(t):
        return np.eye(data.num_classes, dtype=np.float32)[t.cpu().numpy()]

    return {split: (x(data.split(split)[0]), y(data.split(split)[1])) for split in ("train", "val", "test")}


@functools.lru_cache(maxsize=2)
def _keras_arrays(dataset: str, root: str, train_subset, test_subset, val_size):
    """The dataset as Keras arrays and its number of classes, converted once per process."""
    data = load_cached(dataset, root, train_subset, test_subset, "cpu", val_size)
    return to_keras_arrays(data), data.num_classes


def keras_trial(scale: float, seed_index: int, seed: int, settings: dict) -> dict:
    """Train Table 4.1's network at ``scale`` with ``seed`` (validation data: the validation split), restore the
    epoch with the best validation accuracy and evaluate it, and the last epoch, on the test split."""
    from rlinit_lib.keras_validation.model import KeepBestWeights, build_vgg_swish, keras, layer_seed  # torch backend

    s = settings
    arrays, classes = _keras_arrays(s["dataset"], s["data_root"], s["train_subset"], s["test_subset"], s["val_size"])
    (x_tr, y_tr), (x_te, y_te) = arrays["train"], arrays["test"]
    keras.utils.set_random_seed(layer_seed(seed, "data_order"))   # fit's shuffling: a stream of its own
    model = build_vgg_swish(scale, x_tr.shape[1:], classes, s["block_dropout"], s["dense_dropout"], seed=seed,
                            precision=s["precision"])
    model.compile(optimizer=keras.optimizers.Adam(s["lr"]), loss="categorical_crossentropy", metrics=["accuracy"])
    best = KeepBestWeights()
    hist = model.fit(x_tr, y_tr, batch_size=s["batch_size"], epochs=s["epochs"], validation_data=arrays["val"],
                     callbacks=[best], verbose=0)

    def test_accuracy() -> float:
        return float(model.evaluate(x_te, y_te, batch_size=s["batch_size"], verbose=0, return_dict=True)["accuracy"])

    final_test = test_accuracy()
    best.restore()
    h = pd.DataFrame(hist.history).assign(epoch=lambda d: np.arange(1, len(d) + 1), scale=scale, seed_index=seed_index)
    row = {"scale": scale, "seed_index": seed_index, "seed": seed, "best_epoch": best.epoch,
           "best_val_accuracy": float(h["val_accuracy"].max()), "final_val_accuracy": float(h["val_accuracy"].iloc[-1]),
           "test_accuracy": test_accuracy(), "final_test_accuracy": final_test,
           "final_val_loss": float(h["val_loss"].iloc[-1]), "diverged": bool(not np.isfinite(h["loss"]).all())}
    return {"runs": [row], "histories": h.to_dict("records"),
            "_log": {"keras/scale": scale, "keras/test_accuracy": row["test_accuracy"]}}


@dataclass(frozen=True)
class ValidationResult:
    runs: pd.DataFrame          # one row per (scale, seed): RUN_COLUMNS
    histories: pd.DataFrame     # one row per (scale, seed, epoch): Keras' history
    EXPORTS = ("runs", "histories")


def trials(cfg: KerasValidationConfig, run) -> None:
    """Every (scale, seed), one trial each."""
    settings = {k: getattr(cfg, k) for k in ("dataset", "data_root", "train_subset", "test_subset", "val_size",
                                             "epochs", "batch_size", "lr", "block_dropout", "dense_dropout")}
    settings["precision"] = cfg.precision_record()["chosen"]
    run([Trial(f"{s!r}/{j}", keras_trial, {"scale": s, "seed_index": j, "seed": derive_seed(cfg.seed, j),
                                           "settings": settings}, work={"Keras epochs": cfg.epochs})
         for s in cfg.scales() for j in range(cfg.seeds)], "keras runs")


def tables(cfg: KerasValidationConfig, store: RunStore, keys: list[str]) -> ValidationResult:
    return ValidationResult(store.table("runs", RUN_COLUMNS, sort=["scale", "seed_index"], trials=keys),
                            store.table("histories", sort=["scale", "seed_index", "epoch"], trials=keys))


def scored(runs: pd.DataFrame, column: str = "test_accuracy", chance: float = CHANCE) -> np.ndarray:
    """``column`` with every diverged run kept and scored at chance (``core.verdicts.score_diverged``)."""
    return score_diverged(runs[column], runs["diverged"].astype(bool), chance)


def by_seed(runs: pd.DataFrame, scale: float, chance: float = CHANCE) -> pd.Series:
    """Scored test accuracy of one scale, indexed by seed_index."""
    g = runs[np.isclose(runs["scale"], scale)]
    return pd.Series(scored(g, chance=chance), index=g["seed_index"].to_numpy())


def primary_name(s_proxy: float, baseline: float = BASELINE) -> str:
    return f"s_proxy = {s_proxy:g} - s = {baseline:g}"


def scale_contrasts(runs: pd.DataFrame, s_proxy: float, baseline: float = BASELINE,
                    chance: float = CHANCE) -> list[Contrast]:
    """Every other scale against ``baseline``, paired by seed (the seeds both ran): s_proxy first (the primary)."""
    base = by_seed(runs, baseline, chance)
    others = sorted({float(s) for s in runs["scale"]} - {baseline}, key=lambda s: (not np.isclose(s, s_proxy), s))
    out = []
    for s in others:
        a = by_seed(runs, s, chance)
        seeds = a.index.intersection(base.index)
        name = primary_name(s, baseline) if np.isclose(s, s_proxy) else f"s = {s:g} - s = {baseline:g}"
        out.append(Contrast(name, a[seeds].to_numpy(), base[seeds].to_numpy()))
    return out


def per_scale_table(runs: pd.DataFrame, chance: float = CHANCE) -> pd.DataFrame:
    """Table 5.1 extended: per scale, test accuracy at the best validation epoch (mean, t interval inside [0, 1],
    sd; diverged runs at chance), the last epoch's test accuracy, the best epoch and the divergence rate."""
    rows = []
    for s, g in runs.groupby("scale"):
        acc = scored(g, chance=chance)
        iv = interval(acc, "mean", bounds=(0.0, 1.0))
        rows.append({"scale": float(s), "n": iv.n, "mean_accuracy": iv.estimate, "ci_low": iv.low, "ci_high": iv.high,
                     "sd": float(np.std(acc, ddof=1)) if len(acc) > 1 else np.nan, "interval": f"{iv.method}, inside [0, 1]",
                     "mean_final_test_accuracy": float(np.mean(scored(g, "final_test_accuracy", chance))),
                     "mean_best_val_accuracy": float(g["best_val_accuracy"].mean()),
                     "mean_best_epoch": float(g["best_epoch"].mean()), "diverged_rate": float(g["diverged"].mean())})
    return pd.DataFrame(rows)


def comparison(runs: pd.DataFrame, s_proxy: float, sesoi: float, baseline: float = BASELINE) -> dict:
    """Table 5.1 extended and the verdict rows: s_proxy - baseline (primary) and any other scale - baseline
    (exploratory), each paired by seed (seed j gives both scales the same initial draws, scaled, and the same
    dropout masks and data order)."""
    contrasts = scale_contrasts(runs, s_proxy, baseline)
    primary = [c.name for c in contrasts if c.name == primary_name(s_proxy, baseline)]
    return {"per_scale": per_scale_table(runs), "rows": compare_family(contrasts, sesoi, primary=primary, bounds=ACCURACY_DIFFERENCE),
            "s_proxy": s_proxy, "baseline": baseline, "sesoi": sesoi}


def primary_row(result: dict) -> dict | None:
    rows = result["rows"]
    found = rows[rows["role"] == "primary"]
    return None if found.empty else found.iloc[0].to_dict()


def verdicts(cfg: KerasValidationConfig, result: ValidationResult) -> pd.DataFrame:
    """s_proxy - 1.0 (primary) and every other scale - 1.0 (exploratory), paired by seed."""
    return comparison(result.runs, cfg.resolve_s_proxy()[0], cfg.sesoi)["rows"]


def verdict_text(result: dict) -> str:
    """The verdicts: the declared margin and primary comparison, then every comparison in ``core.verdicts``' words."""
    head = sesoi_line(result["sesoi"], "accuracy", f"s_proxy = {result['s_proxy']:g} against s = "
                      f"{result['baseline']:g}, test accuracy at each run's best validation epoch, paired by seed")
    if primary_row(result) is None:
        return head + f"\n\ns_proxy equals the baseline ({result['baseline']:g}): there is nothing to compare."
    return (head + "\n\n" + verdict_table(result["rows"]) + "\n\nThe dissertation's +0.0037 came from two runs per "
            "scale.")


def short_training_warning(histories: pd.DataFrame, threshold: float = 0.15) -> str | None:
    """A note when validation accuracy trails training accuracy by more than ``threshold`` at the end.

    With Keras' BatchNormalization momentum 0.99, the moving statistics used at evaluation need a
    few hundred steps to converge; short runs (CPU profiles) then evaluate with stale statistics
    and their validation accuracies say little about the scales."""
    last = histories[histories["epoch"] == histories["epoch"].max()]
    gap = float((last["accuracy"] - last["val_accuracy"]).mean())
    if gap <= threshold:
        return None
    return (f"**Caution:** at the last epoch validation accuracy trails training accuracy by {gap:.2f} on average. "
            "At this training length Keras' BatchNormalization moving averages (momentum 0.99) have not converged, "
            "so these validation accuracies are not a fair comparison of scales; use the paper profile (100 epochs).")


def plot_learning_curves(histories: pd.DataFrame):
    """Fig. 5.2 with seed bands: accuracy and loss per epoch, train dashed and validation solid."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.3))
    scales = sorted(histories["scale"].unique())
    for ax, metric, bounds in zip(axes, ("accuracy", "loss"), ((0.0, 1.0), None)):
        for split, ls in (("", "--"), ("val_", "-")):
            styles = {s: {"color": f"C{i}", "ls": ls} for i, s in enumerate(scales)}
            band_plot(ax, histories, "epoch", split + metric, "seed_index", "scale", bounds=bounds, styles=styles,
                      label=lambda s, split=split: f"s={s:g} {'validation' if split else 'train'}")
        ax.set(xlabel="epoch", ylabel=metric + (" (fraction correct)" if metric == "accuracy" else " (cross-entropy)"))
    fig.suptitle("Learning curves (dissertation Fig. 5.2): mean over seeds, 95% CI band")
    fig.tight_layout()
    return fig


def report(cfg: KerasValidationConfig, result: ValidationResult) -> Report:
    """What notebook 03 shows: Table 5.1 extended, the verdict, Fig. 5.2 and the transfer check."""
    rep = Report(cfg.output_dir)
    histories = result.histories
    s_proxy, source = cfg.resolve_s_proxy()
    rep.markdown(f"s_proxy = {s_proxy:g}, from {source}.")
    result = comparison(result.runs, s_proxy, cfg.sesoi)
    rep.table("table_5_1", result["per_scale"], caption="## Table 5.1, extended\nTest accuracy per scale with the "
              "weights of each run's best validation epoch: mean, Student-t 95% interval (inside [0, 1]) and sd over "
              "seeds, a diverged run kept at chance (`diverged_rate`); the last epoch's test accuracy "
              "(`mean_final_test_accuracy`, the dissertation's protocol) and the best validation epoch next to it.")
    rep.table("comparisons", result["rows"], show=False)
    rep.verdict("## Verdict\n" + verdict_text(result))
    if (note := short_training_warning(histories)):
        rep.markdown(note)
    rep.markdown("## Learning curves (dissertation Fig. 5.2)")
    rep.figure("fig5_2_learning_curves", plot_learning_curves(histories), headline=True)
    rep.markdown("## Transfer: does the proxy (02) predict this network?\n" + describe_transfer(cfg, result, s_proxy))
    return rep


def describe_transfer(cfg: KerasValidationConfig, result: dict, s_proxy: float) -> str:
    found = cfg.upstream_02()
    if isinstance(found, str):
        return f"No 02_proxy_fidelity results to compare with: {found}"
    proxy, path = found[0], found[1]
    t = transfer_agreement(proxy, result["per_scale"], pair=(s_proxy, BASELINE))
    if t["n_scales"] == 0:
        return f"None of this notebook's scales lies inside 02's grid ({path}), so there is nothing to compare."
    lines = [f"02's proxy curve, interpolated at {t['n_scales']} of these scales ({', '.join(f'{s:g}' for s in t['scales'])})."]
    if np.isfinite(t["spearman"]):
        lines.append(f"Spearman rho between the proxy's and this network's per-scale accuracy: {t['spearman']:.2f} "
                     f"(over {t['n_scales']} scales; add `extra_scales` for a finer answer).")
    else:
        lines.append("A rank correlation needs three scales: add one with `extra_scales`.")
    w = primary_row(result)
    if "predicted_difference" in t and w is not None:
        inside = w["ci_low"] <= t["predicted_difference"] <= w["ci_high"] if np.isfinite(w["ci_low"]) else None
        lines.append(f"The proxy predicts s_proxy - 1.0 = {t['predicted_difference']:+.4f}; this network measured "
                     f"{t['measured_difference']:+.4f} (same sign: {'yes' if t['same_sign'] else 'no'}; the proxy's "
                     "prediction lies " + ("inside" if inside else "outside" if inside is not None else "n/a for")
                     + f" the {w['test']} {100 * w['confidence']:.4g}% interval [{fmt(w['ci_low'])}, {fmt(w['ci_high'])}]).")
    return " ".join(lines)
