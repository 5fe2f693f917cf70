"""Notebook 06: the data-driven initialisers do what their papers say, every arm is deterministic, the
searched scale comes from 02's run store on the same data, and bad input fails before work."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from rlinit_lib.core.data import normalise
from rlinit_lib.core.params import ParameterError
from rlinit_lib.core.stats import holm
from rlinit_lib.initialisation.data_driven import (effective_scales, gradient_quotient, gradinit, gradinit_objective,
                                                   layer_output_stds, lsuv_init, metainit)
from rlinit_lib.scale_search.init_methods import (ARMS, InitMethodsConfig, best_scale_per_width, init_methods_report,
                                                  initialise_arm, run_init_methods, width_shifts)
from rlinit_lib.scale_search.proxy_fidelity import FidelityConfig, run_grid
from rlinit_lib.scale_search.training import build_child


def mlp(seed=0, scale=1.0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(8, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 3))
    with torch.no_grad():
        for layer in m:
            if isinstance(layer, nn.Linear):
                layer.weight.normal_(0, scale * math.sqrt(2 / layer.in_features))
                layer.bias.zero_()
    return m


def toy_batches(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 8, generator=g) * 2
    out = []
    for _ in range(4):
        y = torch.randint(0, 3, (n,), generator=g)
        out.append((centres[y] + torch.randn(n, 8, generator=g), y))
    return out


@pytest.mark.parametrize("tolerance", [0.1, 0.02])
def test_lsuv_leaves_every_layer_at_unit_variance_within_its_tolerance(synthetic, tolerance):
    model = build_child(3, 10, 1.0, seed=0)
    x = normalise(synthetic.x_train[:128])
    before = layer_output_stds(model, x)
    cost = lsuv_init(model, x, tolerance, max_attempts=20, seed=0)
    after = layer_output_stds(model, x)
    assert len(after) == 5 and any(abs(s * s - 1) > tolerance for s in before)
    assert all(abs(s * s - 1) <= tolerance for s in after), after
    assert cost.forward_images >= 5 * 128 and cost.backward_images == 0 and cost.seconds > 0


def test_gradinit_lowers_the_loss_after_one_step_on_a_toy_problem():
    batches = toy_batches()
    model = mlp(scale=3.0)                       # a poor start
    x, y = batches[0]
    (xn, yn) = batches[1]
    x2, y2 = torch.cat([x[:32], xn[:32]]), torch.cat([y[:32], yn[:32]])

    def objective(m):
        params = {n: p.detach().requires_grad_(True) for n, p in m.named_parameters()}
        return gradinit_objective(m, params, x, y, x2, y2, eta=0.1)[1].item()

    start = objective(model)
    cost = gradinit(model, lambda i: batches[i % 2], iters=60, gamma=1e9)   # no constraint: the objective only
    assert objective(model) < 0.8 * start
    assert cost.forward_images == 60 * 128 and cost.backward_images == 60 * 128


def test_gradinit_keeps_the_gradient_norm_under_gamma():
    batches = toy_batches()
    model = mlp(scale=3.0)
    x, y = batches[0]

    def gnorm(m):
        loss = nn.functional.cross_entropy(m(x), y)
        return float(torch.sqrt(sum((g * g).sum() for g in torch.autograd.grad(loss, list(m.parameters())))))

    gamma = 0.5 * gnorm(model)
    gradinit(model, lambda i: batches[0], iters=80, gamma=gamma, lr=0.05)
    assert gnorm(model) <= 1.1 * gamma


def test_metainit_lowers_the_gradient_quotient():
    """From He (the start of the 'metainit' arm), measured on Gaussian batches MetaInit did not see."""
    model = mlp(scale=1.0)
    g = torch.Generator().manual_seed(5)
    batches = [(torch.randn(256, 8, generator=g), torch.randint(0, 3, (256,), generator=g)) for _ in range(3)]

    def quotient(m):
        return np.mean([gradient_quotient(m, x, y, create_graph=False).item() for x, y in batches])

    before = quotient(model)
    cost = metainit(model, (8,), 3, steps=60, seed=1)
    assert quotient(model) < 0.5 * before
    assert cost.backward_images == 3 * 60 * 32


@pytest.mark.parametrize("s", [0.5, 1.25, 2.0])
def test_the_effective_scale_of_he_s_is_s_within_sampling_error(s):
    rows = effective_scales(build_child(3, 10, s, seed=7))
    for r in rows:   # the sample std of n normal draws has relative sd 1/sqrt(2n): allow 5 of them
        assert abs(r["s"] - s) <= 5 * s / math.sqrt(2 * r["weights"]), r


def tiny_settings(**kw):
    return {"init_batch": 32, "lsuv_tolerance": 0.1, "lsuv_attempts": 10, "gradinit_iters": 2, "gradinit_lr": 1e-2,
            "gradinit_eta": 0.1, "gradinit_gamma": 1.0, "gradinit_min_scale": 0.01, "metainit_steps": 2,
            "metainit_lr": 0.1, "metainit_batch": 8} | kw


@pytest.mark.parametrize("arm", ARMS)
def test_every_arm_is_deterministic_given_its_seed(synthetic, arm):
    scales = {"he": 1.0, "he_second_moment": 1.19, "he_variance": 1.26, "he_backward": 1.15, "searched": 0.9}

    def weights(seed):
        model, _ = initialise_arm(arm, synthetic, scales, seed, "silu", tiny_settings(), 64)
        return [p.detach().clone() for p in model.parameters()]

    a, b, c = weights(3), weights(3), weights(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("kw,msg", [
    ({"arms": ["he", "kaiming"]}, r"^arms must be one of 'pytorch_default', .* \(got 'kaiming'\)$"),
    ({"lsuv_tolerance": -0.1}, r"^lsuv_tolerance must be a number > 0 \(got -0.1\)$"),
    ({"widths": [1.0, 0.0]}, r"^widths must be a number > 0 \(got 0.0\)$"),
    ({"long_epochs": 20}, r"^long_epochs must be an integer >= 28 \(got 20\)$"),
    ({"gradinit_gamma": 0}, r"^gradinit_gamma must be a number > 0 \(got 0\)$"),
])
def test_bad_input_fails_in_one_line_before_work(kw, msg):
    with pytest.raises(ParameterError, match=msg):
        InitMethodsConfig.from_dict(kw)


def test_holm_adjusts_a_family_of_p_values():
    adj = holm([0.01, 0.04, 0.03, np.nan])
    np.testing.assert_allclose(adj[:3], [0.03, 0.06, 0.06])
    assert np.isnan(adj[3])


TINY02 = dict(min_scale=0.75, max_scale=1.5, n_scales=4, seeds=2, crn_seeds=0, epochs=2, horizons=[1], proxy_horizon=1,
              compare_scales=[1.0, 1.25], dataset="synthetic", train_subset=128, test_subset=64, bootstrap=100,
              device="cpu", wandb_mode="disabled", progress=False, executor="serial")
TINY06 = dict(arms=["he", "searched", "lsuv", "xavier_uniform"], seeds=2, proxy_epochs=1, long_epochs=4, init_batch=32,
              widths=[0.5, 1.0], width_scales=[0.75, 1.0, 1.5], width_seeds=2, width_epochs=1, dataset="synthetic",
              train_subset=128, test_subset=64, bootstrap=100, device="cpu", wandb_mode="disabled", progress=False,
              executor="serial")


def test_the_searched_scale_comes_from_02_on_the_same_data_or_the_run_stops_before_work(tmp_path):
    cfg = InitMethodsConfig.from_dict(TINY06 | {"output_dir": str(tmp_path / "06_init_methods")})
    with pytest.raises(ParameterError, match=r"^arm 'searched' needs a searched scale: no 02_proxy_fidelity run store"):
        run_init_methods(cfg)
    assert not (tmp_path / "06_init_methods").exists()
    runs = run_grid(FidelityConfig.from_dict(TINY02 | {"output_dir": str(tmp_path / "02_proxy_fidelity")}))
    best = runs[runs["epoch"] == 1].groupby("scale")["test_accuracy"].mean().idxmax()
    assert cfg.searched()[0] == best
    other = InitMethodsConfig.from_dict(TINY06 | {"output_dir": str(tmp_path / "06_init_methods"), "train_subset": 100})
    assert other.searched()[0] is None and "train_subset=128 (here 100)" in other.searched()[1]

    result = run_init_methods(cfg)
    assert len(result.runs) == 4 * 2 * 4 and len(result.widths) == 2 * 3 * 2
    assert set(result.init["arm"]) == set(TINY06["arms"]) and (result.init.query("arm == 'lsuv'")["init_seconds"] > 0).all()
    rep = init_methods_report(cfg, result)
    arms = pd.read_csv(tmp_path / "06_init_methods" / "arms.csv")
    assert arms["long_minus_he"].dtype == float and list(arms["arm"]) == TINY06["arms"]
    assert ((arms["long_ci_low"] >= 0) & (arms["long_ci_high"] <= 1)).all()
    text = rep.text()
    assert "Against **searched** after 4 epochs (paired over 2 seeds, Holm over 3 arms)" in text
    assert "## Width transfer" in text and set(rep.figures()) >= {"arms", "layer_scales", "width_transfer"}
    again = run_init_methods(cfg)        # resumes: nothing retrained, same tables
    pd.testing.assert_frame_equal(again.runs, result.runs)


def test_best_scale_per_width_has_an_interval_from_the_seeds():
    rows = [{"width": w, "scale": s, "seed_index": j, "test_accuracy": 0.8 - (s - peak) ** 2 + 0.001 * j}
            for w, peak in ((0.5, 1.0), (2.0, 1.5)) for s in (0.5, 1.0, 1.5, 2.0) for j in range(3)]
    best = best_scale_per_width(pd.DataFrame(rows))
    assert list(best["best_scale"]) == [1.0, 1.5]
    assert (best["best_scale_ci_low"] <= best["best_scale"]).all() and (best["best_scale"] <= best["best_scale_ci_high"]).all()


def test_a_width_shift_is_detected_only_when_every_seed_agrees():
    """The paired bootstrap of best_s(w) - best_s(x1): a consistent move excludes 0, a noisy tie does not."""
    rng = np.random.default_rng(0)
    rows = [{"width": w, "scale": s, "seed_index": j, "test_accuracy": 0.8 - (s - peak) ** 2 + 0.001 * rng.normal()}
            for w, peak in ((1.0, 1.0), (2.0, 1.5)) for s in (0.5, 1.0, 1.5, 2.0) for j in range(4)]
    moved = width_shifts(pd.DataFrame(rows)).iloc[0]
    assert (moved["width"], moved["shift"], moved["moves"]) == (2.0, 0.5, True)
    assert moved["shift_ci_low"] == moved["shift_ci_high"] == 0.5
    flat = [{"width": w, "scale": s, "seed_index": j, "test_accuracy": 0.8 + 0.01 * rng.normal()}
            for w in (1.0, 2.0) for s in (0.5, 1.0, 1.5, 2.0) for j in range(6)]
    tie = width_shifts(pd.DataFrame(flat)).iloc[0]
    assert not tie["moves"] and tie["shift_ci_low"] <= 0 <= tie["shift_ci_high"]
