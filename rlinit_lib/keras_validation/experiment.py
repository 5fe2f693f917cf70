"""Notebook 03: Phase 2 of the dissertation (Sec. 4.2.2, 4.4.2, 5.4; Tables 4.1 and 5.1; Fig. 5.2), with seeds.

The VGG-style Swish CNN of ``model`` is trained with Keras' ``fit`` (KERAS_BACKEND=torch): images
scaled to [0, 1], one-hot labels, Adam lr 1e-3, categorical cross-entropy, batch 64, 100 epochs, the
test set as validation data each epoch. Each (scale, seed) run is one trial of the run store (an
interrupted run restarts from its first epoch). s_proxy comes from notebook 01's results in the same
profile; the transfer check compares the measured accuracies with notebook 02's proxy curve.
``precision`` (fp32 | bf16 | auto) selects Keras' ``mixed_bfloat16`` policy; ``auto`` probes a few
``train_on_batch`` steps (``core.precision``).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rlinit_lib.core.data import DATASET_CHANNELS, DATASETS, ImageData, load_cached
from rlinit_lib.core.notebook import Report, fmt, upstream_dir
from rlinit_lib.core.params import Choice, Float, Int, ListOf, RunFields, Str, param
from rlinit_lib.core.plots import band_plot
from rlinit_lib.core.precision import PRECISIONS, resolve_precision
from rlinit_lib.core.runtime import derive_seed, environment_info, seed_everything
from rlinit_lib.core.stats import bootstrap_difference, difference_by_seed, mean_ci, transfer_agreement
from rlinit_lib.core.store import RunStore, stored_identity
from rlinit_lib.core.trials import Trial, run_config_trials, torch_threads, trial_threads

S_PROXY_FALLBACK = 1.25  # the dissertation's s_proxy
RUN_COLUMNS = ["scale", "seed_index", "seed", "final_val_accuracy", "best_val_accuracy", "final_val_loss"]


@dataclass
class KerasValidationConfig(RunFields):
    """Every knob of notebook 03_keras_validation; defaults are the dissertation's Phase 2."""

    notebook = "03_keras_validation"

    s_proxy: float | None = param(None, Float(low=0.0, low_open=True, optional=True), identity=False)  # None: 01's
    extra_scales: list = param([], ListOf(Float(low=0.0, low_open=True), 0, what="scales > 0"), identity=False)
    seeds: int = param(5, Int(low=2), identity=False)       # runs per scale (more extends)
    epochs: int = param(100, Int(low=1))
    batch_size: int = param(64, Int(low=1))
    lr: float = param(1e-3, Float(low=0.0, low_open=True))
    block_dropout: list = param([0.2, 0.3, 0.4], ListOf(Float(low=0.0, high=1.0, high_open=True), 3, 3,
                                                        "rates in [0, 1)"))   # not given by the dissertation
    dense_dropout: float = param(0.5, Float(low=0.0, high=1.0, high_open=True))
    dataset: str = param("cifar10", Choice(DATASETS))        # cifar10 | fashion_mnist | synthetic
    data_root: str = param("data", Str(), identity=False)
    train_subset: int | None = param(None, Int(low=1, optional=True))
    test_subset: int | None = param(None, Int(low=1, optional=True))
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

    def identity(self) -> dict:
        return {**super().identity(), "precision": self.precision_record()["chosen"]}

    def resolve_s_proxy(self) -> tuple[float, str]:
        """(s_proxy, a sentence saying where it came from)."""
        if self.s_proxy is not None:
            return float(self.s_proxy), "the parameter s_proxy"
        path = upstream_dir(self.output_dir, "01_search") / "results.json"
        best = json.loads(path.read_text()).get("best_scale") if path.exists() else None
        if best is not None:
            return round(float(best), 4), f"01_search's best episode ({path})"
        return S_PROXY_FALLBACK, (f"the dissertation's 1.25: no 01_search results at {path} (run 01_search first to "
                                  "use the searched scale)")

    def scales(self) -> list[float]:
        return list(dict.fromkeys([1.0, self.resolve_s_proxy()[0], *map(float, self.extra_scales)]))


def to_keras_arrays(data: ImageData):
    """uint8 (N, C, H, W) -> float32 (N, H, W, C) in [0, 1] and one-hot labels, as the dissertation feeds Keras."""
    def x(t):
        return t.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32) / 255.0

    def y(t):
        return np.eye(data.num_classes, dtype=np.float32)[t.cpu().numpy()]

    return x(data.x_train), y(data.y_train), x(data.x_test), y(data.y_test)


@functools.lru_cache(maxsize=2)
def _keras_arrays(dataset: str, root: str, train_subset, test_subset):
    """The dataset as Keras arrays and its number of classes, converted once per process."""
    data = load_cached(dataset, root, train_subset, test_subset, "cpu")
    return to_keras_arrays(data), data.num_classes


def keras_trial(scale: float, seed_index: int, seed: int, settings: dict) -> dict:
    """Train Table 4.1's network at ``scale`` with ``seed``; its final row and per-epoch history."""
    from rlinit_lib.keras_validation.model import build_vgg_swish, keras   # sets KERAS_BACKEND=torch first

    s = settings
    (x_tr, y_tr, x_te, y_te), classes = _keras_arrays(s["dataset"], s["data_root"], s["train_subset"], s["test_subset"])
    keras.utils.set_random_seed(seed)
    model = build_vgg_swish(scale, x_tr.shape[1:], classes, s["block_dropout"], s["dense_dropout"], seed=seed % 100_000,
                            precision=s["precision"])
    model.compile(optimizer=keras.optimizers.Adam(s["lr"]), loss="categorical_crossentropy", metrics=["accuracy"])
    hist = model.fit(x_tr, y_tr, batch_size=s["batch_size"], epochs=s["epochs"], validation_data=(x_te, y_te),
                     verbose=0)
    h = pd.DataFrame(hist.history).assign(epoch=lambda d: np.arange(1, len(d) + 1), scale=scale, seed_index=seed_index)
    row = {"scale": scale, "seed_index": seed_index, "seed": seed,
           "final_val_accuracy": float(h["val_accuracy"].iloc[-1]), "best_val_accuracy": float(h["val_accuracy"].max()),
           "final_val_loss": float(h["val_loss"].iloc[-1])}
    return {"runs": [row], "histories": h.to_dict("records"),
            "_log": {"keras/scale": scale, "keras/final_val_accuracy": row["final_val_accuracy"]}}


def run_validation(cfg: KerasValidationConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train every (scale, seed); returns (runs: one row per run, histories: one row per epoch)."""
    cfg.validate()
    scales = cfg.scales()
    precision = cfg.precision_record()
    store = RunStore.for_config(cfg, {**environment_info("cpu"), "precision": precision})
    seed_everything(cfg.seed)
    settings = {k: getattr(cfg, k) for k in ("dataset", "data_root", "train_subset", "test_subset", "epochs",
                                             "batch_size", "lr", "block_dropout", "dense_dropout")}
    settings["precision"] = precision["chosen"]
    trials = [Trial(f"{s!r}/{j}", keras_trial, {"scale": s, "seed_index": j, "seed": derive_seed(cfg.seed, j),
                                                 "settings": settings})
              for s in scales for j in range(cfg.seeds)]
    run_config_trials(cfg, store, trials, f"keras-seed{cfg.seed}", "keras runs")
    keys = [t.key for t in trials]
    runs = store.table("runs", RUN_COLUMNS, sort=["scale", "seed_index"], trials=keys)
    histories = store.table("histories", sort=["scale", "seed_index", "epoch"], trials=keys)
    store.export("runs", runs)
    store.export("histories", histories)
    store.close()
    return runs, histories


def compare(runs: pd.DataFrame, s_proxy: float, baseline: float = 1.0, seed: int = 0) -> dict:
    """Table 5.1 extended: per-scale mean and interval, and s_proxy - baseline paired by seed (seed j gives both
    scales the same initial draws, scaled, and the same dropout and data order; Welch's if the seeds differ) and
    by an (unpaired) bootstrap of the means."""
    pair = [runs[np.isclose(runs["scale"], x)] for x in (s_proxy, baseline)]
    a, b = (p["final_val_accuracy"].to_numpy() for p in pair)
    per_scale = []
    for s, g in runs.groupby("scale"):
        m, lo, hi = mean_ci(g["final_val_accuracy"])
        per_scale.append({"scale": float(s), "n": len(g), "mean_accuracy": m, "ci_low": lo, "ci_high": hi,
                          "sd": float(g["final_val_accuracy"].std(ddof=1))})
    return {"per_scale": pd.DataFrame(per_scale),
            "difference": difference_by_seed(*pair, "final_val_accuracy", key="seed_index"),
            "bootstrap": bootstrap_difference(a, b, seed=seed), "s_proxy": s_proxy, "baseline": baseline}


def verdict(result: dict) -> str:
    w, bs = result["difference"], result["bootstrap"]
    if result["s_proxy"] == result["baseline"]:
        return f"s_proxy equals the baseline ({result['baseline']:g}): there is nothing to compare."
    sig = w["ci_low"] > 0 or w["ci_high"] < 0
    direction = "better" if w["mean"] > 0 else "worse"
    return (f"s_proxy = {result['s_proxy']:g} minus s = {result['baseline']:g}: {w['mean']:+.4f} accuracy "
            f"({w['test']} 95% CI [{w['ci_low']:+.4f}, {w['ci_high']:+.4f}], p = {w['p_value']:.3g}; bootstrap "
            f"[{bs['ci_low']:+.4f}, {bs['ci_high']:+.4f}]). "
            + (f"**s_proxy is {direction} than s = 1.0 at 95% confidence.**" if sig else
               "**Not significant:** the interval contains 0, so these runs do not show that s_proxy helps. The "
               "dissertation's +0.0037 came from two runs per scale."))


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


def validation_report(cfg: KerasValidationConfig, runs: pd.DataFrame, histories: pd.DataFrame) -> Report:
    """What notebook 03 shows: Table 5.1 extended, the verdict, Fig. 5.2 and the transfer check."""
    rep = Report(cfg.output_dir)
    s_proxy, source = cfg.resolve_s_proxy()
    rep.markdown(f"s_proxy = {s_proxy:g}, from {source}.")
    result = compare(runs, s_proxy, seed=cfg.seed)
    rep.table("table_5_1", result["per_scale"], caption="## Table 5.1, extended\nFinal validation accuracy per scale: "
              "mean, Student-t 95% interval and sd over seeds")
    rep.verdict(verdict(result))
    if (note := short_training_warning(histories)):
        rep.markdown(note)
    rep.markdown("## Learning curves (dissertation Fig. 5.2)")
    rep.figure("fig5_2_learning_curves", plot_learning_curves(histories), headline=True)
    rep.markdown("## Transfer: does the proxy (02) predict this network?\n" + describe_transfer(cfg, result, s_proxy))
    return rep


def describe_transfer(cfg: KerasValidationConfig, result: dict, s_proxy: float) -> str:
    path = upstream_dir(cfg.output_dir, "02_proxy_fidelity") / "per_scale.csv"
    if not path.exists():
        return f"No 02_proxy_fidelity results at {path}: run 02_proxy_fidelity first."
    t = transfer_agreement(pd.read_csv(path), result["per_scale"], pair=(s_proxy, 1.0))
    if t["n_scales"] == 0:
        return f"None of this notebook's scales lies inside 02's grid ({path}), so there is nothing to compare."
    lines = [f"02's proxy curve, interpolated at {t['n_scales']} of these scales ({', '.join(f'{s:g}' for s in t['scales'])})."]
    if np.isfinite(t["spearman"]):
        lines.append(f"Spearman rho between the proxy's and this network's per-scale accuracy: {t['spearman']:.2f} "
                     f"(over {t['n_scales']} scales; add `extra_scales` for a finer answer).")
    else:
        lines.append("A rank correlation needs three scales: add one with `extra_scales`.")
    if "predicted_difference" in t:
        w = result["difference"]
        inside = w["ci_low"] <= t["predicted_difference"] <= w["ci_high"] if np.isfinite(w["ci_low"]) else None
        lines.append(f"The proxy predicts s_proxy - 1.0 = {t['predicted_difference']:+.4f}; this network measured "
                     f"{t['measured_difference']:+.4f} (same sign: {'yes' if t['same_sign'] else 'no'}; the proxy's "
                     "prediction lies " + ("inside" if inside else "outside" if inside is not None else "n/a for")
                     + f" the {w['test']} 95% interval [{fmt(w['ci_low'])}, {fmt(w['ci_high'])}]).")
    return " ".join(lines)
