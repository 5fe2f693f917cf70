"""Phase 2 of the dissertation (Sec. 4.2.2, 4.4.2, 5.4; Tables 4.1 and 5.1; Fig. 5.2), with seeds.

The VGG-style Swish CNN of ``keras_model`` is trained with Keras' ``fit`` (KERAS_BACKEND=torch):
CIFAR-10 scaled to [0, 1], one-hot labels, Adam lr 1e-3, categorical cross-entropy, batch 64,
100 epochs, the test set as validation data each epoch. Each (scale, seed) run is one
resumable unit: its per-epoch history is written to ``histories/`` and its final accuracy
appended to ``runs.csv`` when it finishes (an interrupted run restarts from its first epoch).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .data import ImageData, load_dataset
from .stats import bootstrap_difference, mean_ci, welch
from .tracking import WANDB_MODES, Tracker
from .validation import (NotebookConfig, ParameterError, check_choice, check_float, check_int,
                         check_optional_int, check_str)
from .runtime import derive_seed

S_PROXY_FALLBACK = 1.25  # the dissertation's s_proxy


@dataclass
class KerasValidationConfig(NotebookConfig):
    """Every knob of notebook 03_keras_validation; defaults are the dissertation's Phase 2."""

    notebook = "03_keras_validation"

    s_proxy: float | None = None          # None: best scale of 01_search's results, else 1.25
    search_results: str = "outputs/01_search/results.json"
    extra_scales: list = field(default_factory=list)
    seeds: int = 5
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    block_dropout: list = field(default_factory=lambda: [0.2, 0.3, 0.4])
    dense_dropout: float = 0.5
    dataset: str = "cifar10"
    data_root: str = "data"
    train_subset: int | None = None
    test_subset: int | None = None
    seed: int = 0
    wandb_mode: str = "offline"
    wandb_project: str = "rlinit"
    output_dir: str = "outputs/03_keras_validation"
    progress: bool = True

    def validate(self) -> "KerasValidationConfig":
        from .data import DATASETS

        if self.s_proxy is not None:
            check_float("s_proxy", self.s_proxy, low=0.0, low_open=True)
        check_str("search_results", self.search_results)
        if not isinstance(self.extra_scales, (list, tuple)):
            raise ParameterError(f"extra_scales must be a list of scales > 0 (got {self.extra_scales!r})")
        for s in self.extra_scales:
            check_float("extra_scales", s, low=0.0, low_open=True)
        check_int("seeds", self.seeds, low=2)
        check_int("epochs", self.epochs, low=1)
        check_int("batch_size", self.batch_size, low=1)
        check_float("lr", self.lr, low=0.0, low_open=True)
        if not isinstance(self.block_dropout, (list, tuple)) or len(self.block_dropout) != 3:
            raise ParameterError(f"block_dropout must be a list of three rates in [0, 1) (got {self.block_dropout!r})")
        for r in self.block_dropout:
            check_float("block_dropout", r, low=0.0, high=1.0, high_open=True)
        check_float("dense_dropout", self.dense_dropout, low=0.0, high=1.0, high_open=True)
        check_choice("dataset", self.dataset, DATASETS)
        check_optional_int("train_subset", self.train_subset, low=1)
        check_optional_int("test_subset", self.test_subset, low=1)
        check_int("seed", self.seed, low=0)
        check_choice("wandb_mode", self.wandb_mode, WANDB_MODES)
        check_str("output_dir", self.output_dir)
        check_choice("progress", self.progress, (True, False))
        return self

    def resolve_s_proxy(self) -> tuple[float, str]:
        """(s_proxy, where it came from)."""
        if self.s_proxy is not None:
            return float(self.s_proxy), "parameter"
        path = Path(self.search_results)
        if path.exists():
            best = json.loads(path.read_text()).get("best_scale")
            if best is not None:
                return round(float(best), 4), str(path)
        return S_PROXY_FALLBACK, "the dissertation (no 01_search results found)"


def to_keras_arrays(data: ImageData):
    """uint8 (N, C, H, W) -> float32 (N, H, W, C) in [0, 1] and one-hot labels, as the dissertation feeds Keras."""
    def x(t):
        return (t.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32) / 255.0)

    def y(t):
        return np.eye(data.num_classes, dtype=np.float32)[t.cpu().numpy()]

    return x(data.x_train), y(data.y_train), x(data.x_test), y(data.y_test)


def _callbacks(tracker: Tracker, label: str, epochs: int, progress: bool):
    import keras

    class Track(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.bar = tqdm(total=epochs, desc=label, leave=False, disable=not progress)

        def on_epoch_end(self, epoch, logs=None):
            tracker.log({f"keras/{k}": float(v) for k, v in (logs or {}).items()} | {"keras/epoch": epoch + 1,
                                                                                     "keras/run": label})
            self.bar.update(1)
            self.bar.set_postfix(val_acc=f"{(logs or {}).get('val_accuracy', float('nan')):.4f}")

        def on_train_end(self, logs=None):
            self.bar.close()

    return [Track()]


def run_validation(cfg: KerasValidationConfig, data: ImageData | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train every (scale, seed); returns (runs: one row per run, histories: one row per epoch)."""
    import keras

    from .keras_model import build_vgg_swish

    cfg.validate()
    s_proxy, _ = cfg.resolve_s_proxy()
    scales = list(dict.fromkeys([1.0, s_proxy, *map(float, cfg.extra_scales)]))
    out = Path(cfg.output_dir)
    (out / "histories").mkdir(parents=True, exist_ok=True)
    runs_path = out / "runs.csv"
    runs = pd.read_csv(runs_path) if runs_path.exists() else pd.DataFrame(columns=["scale", "seed_index", "seed"])
    done = {(round(float(s), 6), int(j)) for s, j in zip(runs["scale"], runs["seed_index"])}
    todo = [(s, j) for s in scales for j in range(cfg.seeds) if (round(s, 6), j) not in done]
    if todo:
        if data is None:
            data = load_dataset(cfg.dataset, cfg.data_root, train_subset=cfg.train_subset, test_subset=cfg.test_subset)
        x_tr, y_tr, x_te, y_te = to_keras_arrays(data)
        with Tracker(cfg.wandb_mode, cfg.wandb_project, name=f"keras-seed{cfg.seed}", config=cfg.to_dict(),
                     directory=out) as tracker:
            for s, j in tqdm(todo, desc="keras runs", disable=not cfg.progress):
                seed = derive_seed(cfg.seed, j)
                keras.utils.set_random_seed(seed)
                model = build_vgg_swish(s, x_tr.shape[1:], data.num_classes, cfg.block_dropout, cfg.dense_dropout,
                                        seed=seed % 100_000)
                model.compile(optimizer=keras.optimizers.Adam(cfg.lr), loss="categorical_crossentropy",
                              metrics=["accuracy"])
                hist = model.fit(x_tr, y_tr, batch_size=cfg.batch_size, epochs=cfg.epochs,
                                 validation_data=(x_te, y_te), verbose=0,
                                 callbacks=_callbacks(tracker, f"s={s:g} seed#{j}", cfg.epochs, cfg.progress))
                h = pd.DataFrame(hist.history).assign(epoch=lambda d: np.arange(1, len(d) + 1), scale=s, seed_index=j)
                h.to_csv(out / "histories" / f"s{s:g}_seed{j}.csv", index=False)
                row = pd.DataFrame([{"scale": s, "seed_index": j, "seed": seed,
                                     "final_val_accuracy": float(h["val_accuracy"].iloc[-1]),
                                     "best_val_accuracy": float(h["val_accuracy"].max()),
                                     "final_val_loss": float(h["val_loss"].iloc[-1])}])
                row.to_csv(runs_path, mode="a", header=not runs_path.exists(), index=False)
        runs = pd.read_csv(runs_path)
    histories = pd.concat([pd.read_csv(out / "histories" / f"s{s:g}_seed{j}.csv")
                           for s, j in zip(runs["scale"], runs["seed_index"])], ignore_index=True)
    return runs[runs["scale"].round(6).isin([round(s, 6) for s in scales])], histories


def compare(runs: pd.DataFrame, s_proxy: float, baseline: float = 1.0, seed: int = 0) -> dict:
    """Table 5.1 extended: per-scale mean and interval, and s_proxy - baseline by Welch and by bootstrap."""
    a = runs.loc[np.isclose(runs["scale"], s_proxy), "final_val_accuracy"].to_numpy()
    b = runs.loc[np.isclose(runs["scale"], baseline), "final_val_accuracy"].to_numpy()
    per_scale = {}
    for s, g in runs.groupby("scale"):
        m, lo, hi = mean_ci(g["final_val_accuracy"])
        per_scale[float(s)] = {"mean": m, "ci": [lo, hi], "sd": float(g["final_val_accuracy"].std(ddof=1)),
                               "n": len(g), "runs": g["final_val_accuracy"].round(4).tolist()}
    return {"per_scale": per_scale, "welch": welch(a, b), "bootstrap": bootstrap_difference(a, b, seed=seed),
            "s_proxy": s_proxy, "baseline": baseline}


def verdict(result: dict) -> str:
    w, bs = result["welch"], result["bootstrap"]
    sig = w["ci_low"] > 0 or w["ci_high"] < 0
    direction = "better" if w["mean"] > 0 else "worse"
    return (f"s_proxy = {result['s_proxy']:g} minus s = {result['baseline']:g}: {w['mean']:+.4f} accuracy "
            f"(Welch 95% CI [{w['ci_low']:+.4f}, {w['ci_high']:+.4f}], p = {w['p_value']:.3g}; bootstrap "
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
