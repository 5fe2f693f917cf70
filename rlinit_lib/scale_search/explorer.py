"""What a scale does to a network at initialisation, for interactive exploration (notebook 01).

``layer_statistics`` pushes one batch through a freshly initialised SimpleCNN and reports, per
Conv2d/Linear layer, the standard deviation of its pre-activation output, of the loss gradient with
respect to that output, and of the gradient of its weights. ``scale_explorer`` wraps it in ipywidgets: a
wide scale slider and an activation dropdown above one figure, drawn off-screen and shown as a widget
image that is replaced in place on every change: no second copy of the figure, and no capture into an
``Output`` widget, which can hang headless runners (jupyter/nbclient#312). Axes, legends and bands are
drawn once; a change redraws only the lines, the marker and the title over them (matplotlib's blitting). Its third panel shows what
the study measured near that scale: notebook 02's accuracy-vs-scale curve with its seed band and the
theory scales, when 02's run store exists, else the search's rewards. A notebook saved without a
kernel keeps a picture of the last state: the widget's display data carries a PNG as well.
"""
from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from rlinit_lib.core.data import normalise
from rlinit_lib.core.params import check_choice, check_float
from rlinit_lib.core.plots import band
from rlinit_lib.core.store import StoreError, read_upstream
from rlinit_lib.initialisation.activations import ACTIVATIONS
from rlinit_lib.initialisation.theory import critical_scales
from rlinit_lib.children.training import build_child

LAYER_NAMES = ("conv1", "conv2", "conv3", "fc1", "fc2")
STD_RANGE = (1e-4, 1e4)      # fixed y range of the spread panels, so scales compare at a glance


def layer_statistics(scale: float, activation: str, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> pd.DataFrame:
    """Per-layer std of pre-activations, of their gradients and of the weight gradients for one batch at init.

    ``x``: uint8 images (N, C, 32, 32); ``y``: labels. Returns one row per layer.
    """
    check_float("scale", scale, low=0.0, low_open=True)
    check_choice("activation", activation, ACTIVATIONS)
    model = build_child(x.shape[1], 10, scale, activation, seed=seed, device=x.device)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    outputs: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_module, _inp, out):
            out.retain_grad()
            outputs[name] = out
        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in layers]
    try:
        F.cross_entropy(model(normalise(x)), y).backward()
    finally:
        for h in handles:
            h.remove()
    return pd.DataFrame([{"layer": LAYER_NAMES[i] if len(layers) == len(LAYER_NAMES) else f"{i + 1}:{type(m).__name__}",
                          "preactivation_std": float(outputs[n].detach().std()),
                          "output_grad_std": float(outputs[n].grad.std()), "weight_grad_std": float(m.weight.grad.std())}
                         for i, (n, m) in enumerate(layers)])


def measured_curve(fidelity_dir) -> pd.DataFrame | None:
    """Notebook 02's test accuracy at its proxy horizon per (scale, seed) over independent seeds, read from its
    run store; None when there is none."""
    try:
        up = read_upstream(fidelity_dir, "02_proxy_fidelity")
    except StoreError:       # 02 has not run in this profile: the explorer shows the search's rewards instead
        return None
    config, runs = up.config, up.table("runs")
    if runs.empty:
        return None
    runs = runs[(runs["mode"] == "independent") & (runs["epoch"] == config["proxy_horizon"])]
    return runs[["scale", "seed_index", "test_accuracy"]].assign(horizon=config["proxy_horizon"])


class ScaleExplorer:
    """The explorer's state: its batch, its figure and its widgets (``box``)."""

    def __init__(self, x, y, search: pd.DataFrame | None = None, measured: pd.DataFrame | None = None,
                 min_scale: float = 0.3, max_scale: float = 1.7, batch: int = 32):
        import ipywidgets as widgets

        self.x, self.y, self.search = x[:batch], y[:batch], search
        self.fig = Figure(figsize=(12.5, 3.9), dpi=80)
        FigureCanvasAgg(self.fig)
        self.ax_act, self.ax_grad, self.ax_meas = self.fig.subplots(1, 3)
        self.slider = widgets.FloatSlider(value=1.0, min=min_scale, max=max_scale, step=0.01, description="scale s",
                                          continuous_update=False, readout_format=".2f",
                                          layout=widgets.Layout(width="640px"), style={"description_width": "70px"})
        self.dropdown = widgets.Dropdown(options=list(ACTIVATIONS), value="silu", description="activation")
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="100%", max_width="1000px", height="auto"))
        self.measured = measured
        self._draw_static()
        self.redraws = 0
        self.redraw()
        self.slider.observe(self.redraw, names="value")
        self.dropdown.observe(self.redraw, names="value")

        explorer = self

        class Box(widgets.VBox):
            def _repr_mimebundle_(self, **kwargs):   # a picture for copies opened without a kernel
                data = super()._repr_mimebundle_(**kwargs)
                data["image/png"] = base64.b64encode(explorer.image.value).decode()
                data["text/plain"] = (f"Scale explorer at s = {explorer.slider.value:.2f}, {explorer.dropdown.value} "
                                      "(live controls need a running kernel: run this cell)")
                return data

        self.box = Box([widgets.HBox([self.slider, self.dropdown]), self.image])
        self.box.explorer = self

    def _draw_static(self):
        x = np.arange(len(LAYER_NAMES))
        for ax, title in ((self.ax_act, "Forward: pre-activation spread per layer"),
                          (self.ax_grad, "Backward: gradient spread per layer")):
            ax.set_yscale("log")
            ax.set_ylim(*STD_RANGE)
            ax.axhline(1.0, color="k", lw=1, ls=":", label="std = 1")
            ax.set_xticks(x, LAYER_NAMES)
            ax.set(xlabel="layer (input to output)", title=title)
            ax.grid(alpha=0.3, which="major")
        self.ax_act.set_ylabel("std of the layer's output (log)")
        self.ax_grad.set_ylabel("std of the loss gradient (log)")
        (self.line_act,) = self.ax_act.plot(x, np.ones(len(x)), "o-", color="C0", label="pre-activation", animated=True)
        (self.line_out,) = self.ax_grad.plot(x, np.ones(len(x)), "o-", color="C1", label="dL / d output", animated=True)
        (self.line_w,) = self.ax_grad.plot(x, np.ones(len(x)), "s--", color="C2", label="dL / d weights", animated=True)
        self.ax_act.legend(fontsize=8, loc="upper left")
        self.ax_grad.legend(fontsize=8, loc="upper left")
        ax = self.ax_meas
        if self.measured is not None and len(self.measured):
            wide = self.measured.pivot_table(index="scale", columns="seed_index", values="test_accuracy")
            mean, lo, hi = band(wide.to_numpy(), bounds=(0.0, 1.0))
            ax.plot(wide.index, mean, "k.-", label=f"02: {int(self.measured['horizon'].iloc[0])}-epoch accuracy")
            ax.fill_between(wide.index, lo, hi, color="k", alpha=0.15, lw=0, label="95% bootstrap band over seeds")
            ax.set(ylabel="test accuracy", title="Measured: accuracy against scale (notebook 02)")
        elif self.search is not None and len(self.search):
            ok = ~self.search["nan_detected"].astype(bool)
            ax.scatter(self.search.loc[ok, "scale"], self.search.loc[ok, "reward"], s=10, color="0.6", label="episodes")
            ax.set(ylabel="reward = 10 x test accuracy", title="Measured: the search's rewards (notebook 01)")
        else:
            ax.text(0.5, 0.5, "no measured results yet:\nrun 01_search / 02_proxy_fidelity", ha="center",
                    va="center", transform=ax.transAxes)
            ax.set_title("Measured results")
        self.theory_lines, self.theory_for = [], None
        self.marker = ax.axvline(1.0, color="C3", lw=1.5, label="selected s", animated=True)
        ax.set_xlim(self.slider.min - 0.02, self.slider.max + 0.02)
        ax.set_xlabel("He scale s")
        ax.grid(alpha=0.3)
        self._draw_theory("silu")
        self.title = self.fig.suptitle(" ", fontsize=11, animated=True)
        self.fig.tight_layout()        # once: the layout does not change between redraws
        self.background = None

    def _draw_theory(self, activation: str) -> None:
        for line in self.theory_lines:
            line.remove()
        theory = critical_scales(activation)
        self.theory_lines = [self.ax_meas.axvline(theory[k], color=c, ls=ls, lw=1,
                                                  label=f"theory ({k.replace('_', ' ')}) {theory[k]:.3f}")
                             for k, c, ls in (("second_moment", "C4", "--"), ("variance", "C5", "-."),
                                              ("backward", "C6", ":"))]
        self.ax_meas.legend(fontsize=7, loc="best", framealpha=0.8)
        self.theory_for = activation
        self.background = None

    def render(self, scale: float, activation: str) -> bytes:
        stats = layer_statistics(scale, activation, self.x, self.y)
        clip = lambda v: np.clip(v, *STD_RANGE)   # noqa: E731  (off-range values sit on the frame, not vanish)
        self.line_act.set_ydata(clip(stats["preactivation_std"]))
        self.line_out.set_ydata(clip(stats["output_grad_std"]))
        self.line_w.set_ydata(clip(stats["weight_grad_std"]))
        self.marker.set_xdata([scale, scale])
        if activation != self.theory_for:
            self._draw_theory(activation)
        self.title.set_text(f"Scale explorer: s = {scale:.2f}, activation = {activation} (one batch of {len(self.y)} "
                            "images through a fresh SimpleCNN)")
        canvas = self.fig.canvas
        if self.background is None:    # axes, legends and band are drawn once (again when the activation changes)
            canvas.draw()
            self.background = canvas.copy_from_bbox(self.fig.bbox)
        canvas.restore_region(self.background)
        for artist in (self.line_act, self.line_out, self.line_w, self.marker, self.title):
            self.fig.draw_artist(artist)
        buf = io.BytesIO()
        # fast zlib level: a screen image, redrawn on every slider move
        Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1).save(
            buf, format="png", compress_level=1)
        return buf.getvalue()

    def redraw(self, _change=None) -> None:
        self.image.value = self.render(self.slider.value, self.dropdown.value)
        self.redraws += 1


def scale_explorer(x: torch.Tensor, y: torch.Tensor, search: pd.DataFrame | None = None,
                   measured: pd.DataFrame | None = None, min_scale: float = 0.3, max_scale: float = 1.7):
    """The explorer's widget: a scale slider and an activation dropdown above one figure that updates in place."""
    return ScaleExplorer(x, y, search, measured, min_scale, max_scale).box


def explorer_for(cfg, search: pd.DataFrame | None = None):
    """Notebook 01's explorer: a batch of ``cfg``'s data, the search's rewards and, when 02 has run in the same
    output root, its measured curve."""
    from rlinit_lib.core.data import load_dataset
    from rlinit_lib.core.notebook import upstream_dir

    data = load_dataset(cfg.dataset, cfg.data_root, train_subset=32, test_subset=10)
    return scale_explorer(data.x_train, data.y_train, search, measured_curve(upstream_dir(cfg.output_dir, "02_proxy_fidelity")),
                          cfg.min_scale, cfg.max_scale)
