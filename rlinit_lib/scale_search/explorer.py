"""What a scale does to a network at initialisation, for interactive exploration.

``layer_statistics`` pushes one batch through a freshly initialised SimpleCNN and
reports, per Conv2d/Linear layer, the standard deviation of its pre-activation output
and of the loss gradient with respect to that output. ``scale_explorer`` wraps it in
ipywidgets (a scale slider and an activation dropdown) next to the search's rewards.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from rlinit_lib.core.data import normalise
from rlinit_lib.initialisation.activations import ACTIVATIONS
from rlinit_lib.scale_search.training import build_child
from rlinit_lib.core.params import check_choice, check_float


def layer_statistics(scale: float, activation: str, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> pd.DataFrame:
    """Per-layer std of pre-activations and of their gradients for one batch at init.

    ``x``: uint8 images (N, C, 32, 32); ``y``: labels. Returns one row per layer.
    """
    check_float("scale", scale, low=0.0, low_open=True)
    check_choice("activation", activation, ACTIVATIONS)

    model = build_child(x.shape[1], 10, scale, activation, seed=seed, device=x.device)
    outputs: dict[str, torch.Tensor] = {}
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

    def keep(name):
        def hook(_module, _inp, out):
            out.retain_grad()
            outputs[name] = out
        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in model.named_modules() if n in names]
    loss = F.cross_entropy(model(normalise(x)), y)
    loss.backward()
    for h in handles:
        h.remove()
    rows = []
    for i, n in enumerate(names):
        out = outputs[n]
        rows.append({"layer": f"{i + 1}:{type(dict(model.named_modules())[n]).__name__}",
                     "preactivation_std": float(out.detach().std()),
                     "output_grad_std": float(out.grad.std()),
                     "weight_grad_std": float(dict(model.named_modules())[n].weight.grad.std())})
    return pd.DataFrame(rows)


def scale_explorer(x: torch.Tensor, y: torch.Tensor, table: pd.DataFrame | None = None,
                   min_scale: float = 0.3, max_scale: float = 1.7, window: float = 0.05):
    """An ipywidgets panel: scale slider + activation dropdown -> per-layer statistics and nearby rewards."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    slider = widgets.FloatSlider(value=1.0, min=min_scale, max=max_scale, step=0.01, description="scale s",
                                 continuous_update=False)
    act = widgets.Dropdown(options=list(ACTIVATIONS), value="silu", description="activation")

    def show(scale, activation):
        stats = layer_statistics(scale, activation, x, y)
        ncols = 3 if table is not None else 2
        fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.4))
        axes[0].semilogy(stats["layer"], stats["preactivation_std"], "o-")
        axes[0].set_title("pre-activation std")
        axes[1].semilogy(stats["layer"], stats["output_grad_std"], "o-", color="C1")
        axes[1].set_title("gradient std (dL/d output)")
        for ax in axes[:2]:
            ax.tick_params(axis="x", rotation=45, labelsize=7)
            ax.grid(alpha=0.3)
        if table is not None:
            ok = ~table["nan_detected"].astype(bool)
            near = ok & (np.abs(table["scale"] - scale) <= window)
            axes[2].scatter(table.loc[ok, "scale"], table.loc[ok, "reward"], s=8, color="0.7")
            axes[2].scatter(table.loc[near, "scale"], table.loc[near, "reward"], s=16, color="C3",
                            label=f"|s - {scale:.2f}| <= {window} (n={int(near.sum())})")
            axes[2].axvline(scale, color="C3", lw=1)
            axes[2].set_title("searched rewards")
            axes[2].set_xlabel("scale")
            axes[2].legend(fontsize=7)
        fig.tight_layout()
        plt.show()

    # The initial state is drawn as an ordinary figure; the Output widget is written only when a
    # control changes. Capturing into an Output widget while a cell executes can hang headless
    # runners (papermill/nbval: jupyter/nbclient#312, nteract/papermill#723).
    out = widgets.Output()

    def redraw(_change=None):
        out.clear_output(wait=True)
        with out:
            show(slider.value, act.value)

    slider.observe(redraw, names="value")
    act.observe(redraw, names="value")
    show(slider.value, act.value)
    return widgets.VBox([widgets.HBox([slider, act]), out])
