import base64

import numpy as np
import pandas as pd
import pytest

from rlinit_lib.core.data import make_synthetic
from rlinit_lib.scale_search.explorer import layer_statistics, scale_explorer


@pytest.fixture(scope="module")
def batch():
    d = make_synthetic(64, 10)
    return d.x_train, d.y_train


def test_first_layer_preactivation_std_is_linear_in_scale(batch):
    a = layer_statistics(1.0, "silu", *batch)
    b = layer_statistics(2.0, "silu", *batch)
    assert len(a) == 5
    assert b.loc[0, "preactivation_std"] / a.loc[0, "preactivation_std"] == pytest.approx(2.0, rel=1e-5)


def test_small_scale_vanishes_and_large_scale_explodes_with_depth(batch):
    small, large = layer_statistics(0.5, "silu", *batch), layer_statistics(2.0, "silu", *batch)
    assert small["preactivation_std"].iloc[-1] < 0.1 * small["preactivation_std"].iloc[0]
    assert large["preactivation_std"].iloc[-1] > 10 * large["preactivation_std"].iloc[0]


def test_widget_builds_with_a_wide_slider_a_dropdown_and_one_image(batch):
    import ipywidgets as widgets

    w = scale_explorer(*batch)
    controls, image = w.children[0].children, w.children[1]
    assert isinstance(controls[0], widgets.FloatSlider) and isinstance(controls[1], widgets.Dropdown)
    assert controls[0].min == 0.3 and controls[0].max == 1.7 and controls[0].step == 0.01
    assert int(controls[0].layout.width.rstrip("px")) >= 600        # about 4 px per 0.01 step
    assert isinstance(image, widgets.Image) and image.value[:8] == b"\x89PNG\r\n\x1a\n"


def test_moving_the_controls_redraws_the_same_figure_once_per_change(batch, monkeypatch):
    import rlinit_lib.scale_search.explorer as ex

    drawn = []
    real = ex.layer_statistics
    monkeypatch.setattr(ex, "layer_statistics", lambda s, a, *r, **k: drawn.append((s, a)) or real(s, a, *r, **k))
    w = scale_explorer(*batch)
    e = w.explorer
    slider, dropdown = w.children[0].children
    first = w.children[1].value
    slider.value = 1.5
    dropdown.value = "relu"
    assert drawn == [(1.0, "silu"), (1.5, "silu"), (1.5, "relu")] and e.redraws == 3
    assert w.children[1].value != first and len(w.children) == 2            # replaced in place, no second figure
    assert "s = 1.50, activation = relu" in e.fig._suptitle.get_text()
    stats = real(1.5, "relu", *[t[:32] for t in batch])
    np.testing.assert_allclose(e.line_w.get_ydata(), np.clip(stats["weight_grad_std"], *ex.STD_RANGE))
    assert e.ax_act.get_ylim() == ex.STD_RANGE and e.ax_act.get_ylabel() and e.ax_grad.get_xlabel()


def test_a_copy_without_a_kernel_keeps_a_picture_and_says_how_to_get_the_controls(batch):
    w = scale_explorer(*batch)
    w.children[0].children[0].value = 1.2
    bundle = w._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]) == w.children[1].value
    assert "s = 1.20" in bundle["text/plain"] and "need a running kernel" in bundle["text/plain"]


def test_the_measured_panel_shows_02s_curve_when_02_has_run(batch):
    curve = pd.DataFrame([{"scale": s, "seed_index": j, "test_accuracy": 0.8 - (s - 1.1) ** 2, "horizon": 3}
                          for s in (0.5, 1.0, 1.5) for j in range(3)])
    e = scale_explorer(*batch, measured=curve).explorer
    assert "notebook 02" in e.ax_meas.get_title()
    labels = [t.get_text() for t in e.ax_meas.get_legend().get_texts()]
    assert any("3-epoch accuracy" in t for t in labels) and sum("theory" in t for t in labels) == 3
