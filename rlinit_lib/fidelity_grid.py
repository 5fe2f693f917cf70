"""Training grid for proxy fidelity: scales x seeds trained to a long horizon, every epoch recorded.

One run gives every proxy horizon: test accuracy is measured after each epoch. Two modes:
``independent`` (every (scale, seed) has its own init noise and data order, like separate
runs) and ``crn`` (common random numbers: seed j uses the same init noise, scaled, and the
same batch order for every scale). Networks are trained ``chunk`` at a time with the
batched trainer; after each chunk the finished runs are appended to ``runs.csv`` so an
interrupted grid resumes where it stopped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .batched import train_many
from .data import ImageData, load_dataset
from .runtime import derive_seed, pick_device, seed_everything
from .tracking import WANDB_MODES, Tracker
from .validation import (NotebookConfig, ParameterError, check_child_training, check_choice, check_float, check_int,
                         check_scale_range)

RUN_COLUMNS = ["mode", "scale_index", "scale", "seed_index", "seed", "epoch", "test_accuracy", "train_loss",
               "nan_detected"]


@dataclass
class FidelityConfig(NotebookConfig):
    """Every knob of notebook 02_proxy_fidelity."""

    notebook = "02_proxy_fidelity"

    min_scale: float = 0.25
    max_scale: float = 2.0
    n_scales: int = 15
    seeds: int = 5
    crn_seeds: int = 5            # seeds of the common-random-numbers grid (0 skips it)
    epochs: int = 50
    horizons: list = field(default_factory=lambda: [1, 3, 5, 7, 10, 20])
    proxy_horizon: int = 7        # the dissertation's proxy, singled out in the verdict
    target: str = "final"         # final | best: the long-run accuracy the proxy should predict
    dataset: str = "cifar10"
    data_root: str = "data"
    train_subset: int | None = None
    test_subset: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    activation: str = "silu"
    chunk: int = 32               # networks trained together
    compare_scales: list = field(default_factory=lambda: [1.0, 1.25])
    bootstrap: int = 1000
    seed: int = 0
    device: str = "auto"
    wandb_mode: str = "offline"
    wandb_project: str = "rlinit"
    output_dir: str = "outputs/02_proxy_fidelity"
    keras_results: str = "outputs/03_keras_validation/per_scale.csv"
    progress: bool = True

    def validate(self) -> "FidelityConfig":
        check_scale_range(self.min_scale, self.max_scale)
        check_int("n_scales", self.n_scales, low=3)
        check_int("seeds", self.seeds, low=2)
        check_int("crn_seeds", self.crn_seeds, low=0)
        if self.crn_seeds == 1:
            raise ParameterError("crn_seeds must be 0 or an integer >= 2 (got 1)")
        check_int("epochs", self.epochs, low=1)
        if not isinstance(self.horizons, (list, tuple)) or not self.horizons:
            raise ParameterError(f"horizons must be a non-empty list of epochs in [1, {self.epochs}] (got {self.horizons!r})")
        for h in self.horizons:
            check_int("horizons", h, low=1, high=self.epochs)
        check_int("proxy_horizon", self.proxy_horizon, low=1, high=self.epochs)
        check_choice("target", self.target, ("final", "best"))
        check_child_training(self)
        check_int("chunk", self.chunk, low=1)
        if not isinstance(self.compare_scales, (list, tuple)) or len(self.compare_scales) != 2:
            raise ParameterError(f"compare_scales must be a list of two scales (got {self.compare_scales!r})")
        for s in self.compare_scales:
            check_float("compare_scales", s, low=self.min_scale, high=self.max_scale)
        nearest = [float(self.scales[np.argmin(abs(self.scales - s))]) for s in self.compare_scales]
        if nearest[0] == nearest[1]:
            raise ParameterError(f"compare_scales must fall on two different grid scales (both map to {nearest[0]:g}; "
                                 "use more n_scales or another range)")
        check_int("bootstrap", self.bootstrap, low=100)
        check_choice("wandb_mode", self.wandb_mode, WANDB_MODES)
        return self

    @property
    def scales(self) -> np.ndarray:
        return np.round(np.linspace(self.min_scale, self.max_scale, self.n_scales), 6)


IDENTITY = ("min_scale", "max_scale", "n_scales", "epochs", "dataset", "train_subset", "test_subset", "batch_size",
            "lr", "activation", "seed")


def grid_jobs(cfg: FidelityConfig) -> list[dict]:
    """Every (mode, scale, seed) run of the grid with its training seed."""
    jobs = []
    for mode, n in (("independent", cfg.seeds), ("crn", cfg.crn_seeds)):
        for j in range(n):
            for i, s in enumerate(cfg.scales):
                seed = derive_seed(cfg.seed, j) if mode == "crn" else derive_seed(cfg.seed, i, j, 7)
                jobs.append({"mode": mode, "scale_index": i, "scale": float(s), "seed_index": j, "seed": seed})
    return jobs


def run_grid(cfg: FidelityConfig, data: ImageData | None = None, on_chunk=None) -> pd.DataFrame:
    """Train the grid (resuming from ``output_dir/runs.csv``); returns the long table of RUN_COLUMNS."""
    cfg.validate()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ident_path, runs_path = out / "grid_identity.json", out / "runs.csv"
    ident = {k: cfg.to_dict()[k] for k in IDENTITY}
    if ident_path.exists() and json.loads(ident_path.read_text()) != ident:
        old = json.loads(ident_path.read_text())
        k = next(k for k in ident if old.get(k) != ident[k])
        raise ParameterError(f"output_dir {str(out)!r} holds a grid with {k}={old.get(k)!r} (now {k}={ident[k]!r}); "
                             "use another output_dir or delete it")
    ident_path.write_text(json.dumps(ident))
    done = pd.read_csv(runs_path) if runs_path.exists() else pd.DataFrame(columns=RUN_COLUMNS)
    finished = set(zip(done["mode"], done["scale_index"], done["seed_index"]))
    todo = [j for j in grid_jobs(cfg) if (j["mode"], j["scale_index"], j["seed_index"]) not in finished]
    if not todo:
        return done

    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_root, train_subset=cfg.train_subset, test_subset=cfg.test_subset)
    data = data.to(device)
    # a chunk holds one mode only; a crn chunk holds one seed index only (same seed for all its scales)
    chunks, cur = [], []
    for j in todo:
        if cur and (len(cur) == cfg.chunk or j["mode"] != cur[0]["mode"]
                    or (j["mode"] == "crn" and j["seed_index"] != cur[0]["seed_index"])):
            chunks.append(cur)
            cur = []
        cur.append(j)
    chunks.append(cur)

    with Tracker(cfg.wandb_mode, cfg.wandb_project, name=f"fidelity-seed{cfg.seed}", config=cfg.to_dict(),
                 directory=out) as tracker:
        for chunk in tqdm(chunks, desc="grid chunks", disable=not cfg.progress):
            results = train_many([j["scale"] for j in chunk], cfg.epochs, data, seeds=[j["seed"] for j in chunk],
                                 batch_size=cfg.batch_size, lr=cfg.lr, activation=cfg.activation,
                                 common_random_numbers=chunk[0]["mode"] == "crn", eval_every_epoch=True,
                                 device=device, progress=cfg.progress)
            rows = []
            for j, r in zip(chunk, results):
                for e in range(cfg.epochs):
                    acc = r.test_accuracy_per_epoch[e] if e < len(r.test_accuracy_per_epoch) else np.nan
                    loss = r.train_loss[e] if e < len(r.train_loss) else np.nan
                    rows.append({**j, "epoch": e + 1, "test_accuracy": acc, "train_loss": loss,
                                 "nan_detected": r.nan_detected})
                tracker.log({"grid/scale": j["scale"], "grid/mode": j["mode"], "grid/final_accuracy":
                             r.test_accuracy, "grid/nan": r.nan_detected})
            chunk_df = pd.DataFrame(rows, columns=RUN_COLUMNS)
            chunk_df.to_csv(runs_path, mode="a", header=not runs_path.exists(), index=False)
            if on_chunk is not None:
                on_chunk(chunk_df)
    return pd.read_csv(runs_path)


def accuracy_array(runs: pd.DataFrame, mode: str) -> np.ndarray:
    """acc[scale_index, seed_index, epoch-1] for one mode."""
    r = runs[runs["mode"] == mode]
    if r.empty:
        return np.empty((0, 0, 0))
    shape = (r["scale_index"].max() + 1, r["seed_index"].max() + 1, r["epoch"].max())
    acc = np.full(shape, np.nan)
    acc[r["scale_index"].to_numpy(), r["seed_index"].to_numpy(), r["epoch"].to_numpy() - 1] = r["test_accuracy"]
    return acc
