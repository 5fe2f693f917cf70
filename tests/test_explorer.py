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


def test_widget_builds_with_slider_and_dropdown(batch):
    import ipywidgets as widgets

    w = scale_explorer(*batch)
    controls = w.children[0].children
    assert isinstance(controls[0], widgets.FloatSlider) and isinstance(controls[1], widgets.Dropdown)
    assert controls[0].min == 0.3 and controls[0].max == 1.7


def test_moving_the_controls_redraws_without_error(batch, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    drawn = []
    import rlinit_lib.scale_search.explorer as ex

    real = ex.layer_statistics
    monkeypatch.setattr(ex, "layer_statistics", lambda s, a, *r, **k: drawn.append((s, a)) or real(s, a, *r, **k))
    w = scale_explorer(*batch)
    slider, dropdown = w.children[0].children
    slider.value = 1.5
    dropdown.value = "relu"
    assert drawn == [(1.0, "silu"), (1.5, "silu"), (1.5, "relu")]
