"""Formula-search testbeds and rewards (issue 27): fans as torch computes them, per-layer sigmas drawn as asked,
signal propagation that decides between He and its halves/doubles, learning, divergence, determinism, checks."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from rlinit_lib.core.data import load_dataset
from rlinit_lib.core.params import ParameterError
from rlinit_lib.formula_search.rewards import (REWARDS, activation_stability, layer_output_stds, loss_slope,
                                              reward_signals)
from rlinit_lib.formula_search.testbeds import (TESTBEDS, apply_sigma, build, formula_sigmas, gain,
                                               get_testbed, layer_fans, train_candidate, train_candidates,
                                               weight_layers)
from rlinit_lib.formula_search.testbeds import Testbed as Bed   # not collected as a test class
from rlinit_lib.initialisation.theory import critical_scales

SMALL = {"mlp": Bed("mlp", 4, 32, "relu", "sgd", 0.01),
         "cnn": Bed("cnn", 6, 8, "relu", "sgd", 0.01),
         "simplecnn": Bed("simplecnn", 5, 64, "silu", "adam", 1e-3)}
F32 = torch.finfo(torch.float32).eps


def he(model, c=1.0):
    return [c * math.sqrt(2.0 / fi) for fi, _ in layer_fans(model)]


@pytest.fixture(scope="module")
def tiny():
    return load_dataset("synthetic", synthetic_train=512, synthetic_test=128, val_size=128)


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_layer_fans_equal_torch_and_depth_counts_weight_layers(kind):
    tb = SMALL[kind]
    for in_shape in ((1, 32, 32), (3, 32, 32)):
        model = build(tb, in_shape, 10, seed=0)
        expected = [nn.init._calculate_fan_in_and_fan_out(m.weight) for m in weight_layers(model)]
        assert layer_fans(model) == expected and len(expected) == tb.depth
        assert model(torch.zeros(2, *in_shape)).shape == (2, 10)
    assert layer_fans(build(SMALL["mlp"], (1, 32, 32), 10))[0][0] == 28 * 28   # Fashion's zero border cropped


@pytest.mark.parametrize("distribution, excess_kurtosis", [("normal", 0.0), ("uniform", -1.2)])
def test_apply_sigma_draws_each_layers_std(distribution, excess_kurtosis):
    model = build(SMALL["cnn"], (1, 32, 32), 10)
    sigmas = [0.02 * (l + 1) for l in range(SMALL["cnn"].depth)]
    apply_sigma(model, sigmas, distribution, seed=3)
    for m, s in zip(weight_layers(model), sigmas):
        w, n = m.weight.detach().double(), m.weight.numel()
        # sample std: standard error sigma * sqrt((kurtosis - 1) / (4 n)) (delta method); 5 standard errors
        se = s * math.sqrt((2.0 + excess_kurtosis) / (4 * n))
        assert abs(w.std().item() - s) < 5 * se
        assert abs(w.mean().item()) < 5 * s / math.sqrt(n)
        assert (m.bias == 0).all()
    if distribution == "uniform":
        assert all(m.weight.abs().max() <= math.sqrt(3) * s * (1 + F32) for m, s in zip(weight_layers(model), sigmas))


def test_apply_sigma_orthogonal_is_scaled_orthogonal():
    model = build(SMALL["mlp"], (1, 32, 32), 10)
    sigmas = [0.05, 0.1, 0.2, 0.3]
    apply_sigma(model, sigmas, "orthogonal", seed=3)
    for m, s in zip(weight_layers(model), sigmas):
        w = m.weight.detach().double().flatten(1)
        rows, cols = w.shape
        tol = max(rows, cols) * F32    # float32 Householder QR: orthogonality error grows ~ linearly with size
        assert w.pow(2).mean().sqrt().item() == pytest.approx(s, rel=tol)
        gram = w @ w.T if rows <= cols else w.T @ w
        eye = torch.eye(min(rows, cols), dtype=torch.float64)
        assert torch.allclose(gram / (s * s * max(rows, cols)), eye, atol=tol)


def test_apply_sigma_is_seeded_and_checks_its_input():
    a, b = build(SMALL["mlp"], (1, 32, 32), 10), build(SMALL["mlp"], (1, 32, 32), 10)
    apply_sigma(a, he(a), seed=1)
    apply_sigma(b, he(b), seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    apply_sigma(b, he(b), seed=2)
    assert not torch.equal(a[2].weight, b[2].weight)
    with pytest.raises(ParameterError, match="^sigmas must hold one value per weight layer"):
        apply_sigma(a, [0.1], seed=1)
    with pytest.raises(ParameterError, match="^distribution must be one of"):
        apply_sigma(a, he(a), "cauchy")


def test_gains_come_from_torch_and_the_projects_theory_and_he_is_a_formula():
    assert gain("relu") == pytest.approx(math.sqrt(2)) and gain("tanh") == pytest.approx(5 / 3)
    assert gain("silu") == pytest.approx(math.sqrt(2) * critical_scales("silu")["second_moment"])
    model = build(TESTBEDS["mlp10_relu_sgd"], (1, 32, 32), 10)
    assert formula_sigmas(model, lambda fi, fo, l, L, g: g / math.sqrt(fi), "relu") == pytest.approx(he(model))
    sig = formula_sigmas(model, lambda fi, fo, l, L, g: 1 / (l - 3), "relu")      # 1/0 at layer 3
    assert math.isnan(sig[2]) and all(math.isfinite(s) for i, s in enumerate(sig) if i != 2)


def test_initialisation_decides_signal_propagation_in_a_deep_relu_mlp():
    """ReLU, sigma = c * He: theory (He et al. 2015) scales each layer's pre-activation std by c, so log std
    has slope log(c) per layer. At width 256 the per-layer finite-width fluctuation is O(1/sqrt(256)); the
    stated margin is 0.1 per layer on the fitted slope, against 0.69 between the three arms."""
    tb = Bed("mlp", 20, 256, "relu", "sgd", 0.01)
    x = torch.randn(256, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    stability = {}
    for c in (0.5, 1.0, 2.0):
        model = build(tb, (1, 32, 32), 10, seed=0)
        apply_sigma(model, he(model, c), seed=0)
        log_std = np.log(layer_output_stds(model, x))
        slope = np.polyfit(np.arange(1, 21), log_std, 1)[0]
        assert abs(slope - math.log(c)) < 0.1
        ratio = math.exp(log_std[-1] - log_std[0])      # last layer against first; theory: c ** 19
        assert ratio < 1e-4 if c == 0.5 else ratio > 1e4 if c == 2.0 else 0.25 < ratio < 4
        stability[c] = activation_stability(model, x)
    assert stability[1.0] > stability[0.5] and stability[1.0] > stability[2.0]


def test_he_learns_and_ten_times_he_diverges_without_raising(tiny):
    tb = Bed("mlp", 10, 64, "relu", "sgd", 0.01)
    model = build(tb, (3, 32, 32), 10)
    r = train_candidate(tb, he(model), tiny, seed=0, epochs=3)
    assert not r["diverged"] and r["epochs"] == 3 and r["steps"] == 12
    assert r["train_loss"] < r["initial_loss"] and r["loss_slope"] > 0
    assert set(REWARDS) <= set(r) and all(math.isfinite(r[k]) for k in REWARDS)
    deep = Bed("mlp", 20, 64, "relu", "sgd", 0.01)
    bad = train_candidate(deep, he(build(deep, (3, 32, 32), 10), 10.0), tiny, seed=0, epochs=3)
    assert bad["diverged"] and all(math.isnan(bad[k]) for k in REWARDS + ("test_accuracy",))
    for sigma in (math.nan, math.inf, -0.1, 0.0):   # > 0 and finite, as the grammar's Formula.valid_for says
        r = train_candidate(tb, [sigma] + he(model)[1:], tiny, seed=0, epochs=3, rewards=("val_accuracy",))
        assert r["diverged"] and r["epochs"] == 0 and math.isnan(r["val_accuracy"]) and "loss_slope" not in r


def test_same_seed_same_result_other_seed_differs(tiny):
    tb = SMALL["cnn"]
    sig = he(build(tb, (3, 32, 32), 10))
    a, b, c = (train_candidate(tb, sig, tiny, seed=s, epochs=1) for s in (5, 5, 6))
    a.pop("seconds"), b.pop("seconds"), c.pop("seconds")
    assert a == b and a != c


@pytest.mark.parametrize("field, value", [("kind", "rnn"), ("depth", 1), ("depth", 10**6), ("width", 0),
                                          ("activation", "gelu"), ("optimiser", "rmsprop"), ("lr", 0.0),
                                          ("lr", math.nan), ("batch_size", 0)])
def test_bad_testbed_field_is_one_line_naming_it(field, value):
    fields = dict(kind="mlp", depth=10, width=64, activation="relu", optimiser="sgd", lr=0.01, batch_size=64)
    with pytest.raises(ParameterError, match=f"^{field} must") as err:
        Bed(**{**fields, field: value})
    assert "\n" not in str(err.value)


def test_presets_and_their_checks():
    assert all(isinstance(t, Bed) for t in TESTBEDS.values())
    with pytest.raises(ParameterError, match="^testbed must be one of"):
        get_testbed("mlp7")
    with pytest.raises(ParameterError, match="^depth must be 5 for kind 'simplecnn'"):
        Bed("simplecnn", 12, 256, "silu", "adam", 1e-3)


def test_loss_slope_and_diverged_signals():
    t = np.arange(1, 51)
    assert loss_slope(2.3 * t ** -0.25) == pytest.approx(0.25, abs=1e-12)   # an exact power law, in float64
    assert math.isnan(loss_slope([2.3])) and math.isnan(loss_slope([2.3, math.inf]))
    out = reward_signals({"grad_norm_variance": -0.1, "activation_stability": -0.2}, [2.0, 1.0], 0.7, diverged=True)
    assert list(out) == list(REWARDS) and all(math.isnan(v) for v in out.values())


def test_the_init_hook_runs_lsuv_on_a_training_batch_and_leaves_unit_output_stds(tiny):
    """``train_candidate``'s ``init_fn`` (07's LSUV arm, ``experiment.data_driven_init``): called once, after the
    sigmas, with the training batches; LSUV reads the first, one normalised batch of training images; after LSUV every weight layer's output std on that batch
    is 1 within LSUV's tolerance (on the std: sqrt(1 + t) - 1 for the variance tolerance t), measured in float32 as
    LSUV measures it; the network still trains, and differs from the same seed without the hook."""
    from rlinit_lib.formula_search.experiment import LSUV_TOLERANCE, data_driven_init

    tb = Bed("mlp", 10, 64, "relu", "sgd", 0.01)
    seen = []

    def hook(model, batches):
        data_driven_init("lsuv", 3)(model, batches)
        x = batches(0)[0]
        out = []
        hs = [m.register_forward_hook(lambda _m, _i, o: out.append(float(o.std()))) for m in weight_layers(model)]
        with torch.no_grad():
            model(x)
        for h in hs:
            h.remove()
        seen.append((x.shape, x.dtype, out))

    sig = he(build(tb, (3, 32, 32), 10))
    r = train_candidate(tb, sig, tiny, seed=3, epochs=2, init_fn=hook)
    plain = train_candidate(tb, sig, tiny, seed=3, epochs=2)
    assert len(seen) == 1
    shape, dtype, stds = seen[0]
    assert shape == (tb.batch_size, 3, 32, 32) and dtype == torch.float32
    assert len(stds) == tb.depth
    np.testing.assert_array_less(np.abs(np.array(stds) - 1.0), math.sqrt(1.0 + LSUV_TOLERANCE) - 1.0)
    assert not r["diverged"] and r["train_loss"] < r["initial_loss"]
    assert r["initial_loss"] != plain["initial_loss"]


@pytest.mark.parametrize("name", ["gradinit", "metainit"])
def test_gradinit_and_metainit_arms_rescale_each_layer_of_the_he_draw_and_the_network_still_trains(tiny, name):
    """07's GradInit and MetaInit arms through the same hook: every weight layer of the He draw is multiplied by one
    positive scale per layer (GradInit's alpha; MetaInit's norm change), not re-drawn; at least one scale moved away
    from 1, so the method acted; the same seed and options give the same weights; the network then trains."""
    from rlinit_lib.formula_search.experiment import data_driven_init

    tb = Bed("mlp", 10, 64, "relu", "sgd", 0.01)
    sig = he(build(tb, (3, 32, 32), 10))
    opts = {"gradinit_iters": 4, "metainit_steps": 20}
    seen = []

    def hook(model, batches):
        before = [m.weight.detach().clone() for m in weight_layers(model)]
        assert batches.per_epoch == math.ceil(len(tiny.y_train) / tb.batch_size)
        assert batches(0)[0].shape == (tb.batch_size, 3, 32, 32) and batches(0)[1].shape == (tb.batch_size,)
        data_driven_init(name, 3, opts)(model, batches)
        seen.append([(b, m.weight.detach().clone()) for b, m in zip(before, weight_layers(model))])

    r = train_candidate(tb, sig, tiny, seed=3, epochs=2, init_fn=hook)
    train_candidate(tb, sig, tiny, seed=3, epochs=2, init_fn=hook)
    scales = []
    for b, a in seen[0]:
        k = float((a * b).sum() / (b * b).sum())            # least-squares scale of after on before
        # one float32 rounding per multiplication (GradInit: 1; MetaInit: one per step, 20 here) and the scale's
        # estimate: well inside 100 units of float32's epsilon, relative to each weight
        torch.testing.assert_close(a, k * b, rtol=100 * torch.finfo(torch.float32).eps, atol=0.0)
        scales.append(k)
    assert all(k > 0 for k in scales) and max(abs(k - 1) for k in scales) > 1e-3, scales
    for (_, a1), (_, a2) in zip(seen[0], seen[1]):
        torch.testing.assert_close(a1, a2, rtol=0, atol=0)
    assert not r["diverged"] and r["train_loss"] < r["initial_loss"]


# Stacked (vmapped) training sums the same products in another order, so each step's loss differs from the loop's by
# float32 rounding (a few eps per layer), and that difference grows through the training steps. Bounds: the first
# loss, one forward pass through `depth` layers, within 16 eps per layer; later losses within 1e4 eps (~1.2e-3
# relative) after 12 steps; accuracies within 2 of 128 images, whose logits' argmax may flip on a near tie.
def _close(a, b, rtol):
    return math.isclose(a, b, rel_tol=rtol, abs_tol=rtol)


@pytest.mark.parametrize("bed", [Bed("mlp", 8, 32, "relu", "sgd", 0.01), Bed("mlp", 6, 32, "silu", "adam", 1e-3),
                                 Bed("cnn", 6, 8, "relu", "sgd", 0.01)], ids=["mlp-sgd", "mlp-adam", "cnn-sgd"])
def test_stacked_training_equals_the_loop_within_float_rounding_and_keeps_a_diverged_candidate_apart(tiny, bed):
    model = build(bed, (3, 32, 32), 10)
    sig = [he(model), he(model, 0.7), he(model, 1e8), [math.nan] + he(model)[1:], he(model)]
    seeds, dists = [0, 1, 2, 3, 4], ["normal", "uniform", "normal", "normal", "orthogonal"]
    loop = train_candidates(bed, sig, tiny, seeds, 3, distributions=dists, mechanism="loop")
    vmap = train_candidates(bed, sig, tiny, seeds, 3, distributions=dists, mechanism="vmap")
    # the loop is train_candidate one after another
    alone = train_candidate(bed, sig[1], tiny, 1, 3, distribution="uniform")
    assert {k: v for k, v in alone.items() if k != "seconds"} == {k: v for k, v in loop[1].items() if k != "seconds"}
    assert [r["diverged"] for r in loop] == [r["diverged"] for r in vmap] == [False, False, True, True, False]
    assert vmap[3]["reason"] == "sigma not a finite number > 0" and vmap[3]["epochs"] == 0
    assert vmap[2]["reason"] == loop[2]["reason"] and vmap[2]["epochs"] == loop[2]["epochs"] == 0
    assert vmap[2]["steps"] == loop[2]["steps"] and math.isnan(vmap[2]["val_accuracy"])
    for a, b in zip(loop, vmap):
        assert set(a) == set(b) and a["steps"] == b["steps"] and a["epochs"] == b["epochs"]
        if a["diverged"]:
            continue
        assert _close(a["initial_loss"], b["initial_loss"], 16 * bed.depth * F32), (a, b)
        for key in ("train_loss", "loss_slope", "grad_norm_variance", "activation_stability"):
            assert _close(a[key], b[key], 1e4 * F32), (key, a[key], b[key])
        for key in ("val_accuracy", "test_accuracy"):
            assert abs(a[key] - b[key]) <= 2 / 128 + F32, (key, a[key], b[key])
    dead = train_candidates(bed, [sig[2], sig[2]], tiny, [2, 5], 3, mechanism="vmap")   # every network diverges
    assert [(r["diverged"], r["reason"], r["steps"]) for r in dead] == [(True, "non-finite loss", 0)] * 2
    # a diverging neighbour does not perturb the others: the same candidates without it train to the same numbers
    kept = train_candidates(bed, [sig[0], sig[1], sig[4]], tiny, [0, 1, 4], 3, distributions=[dists[0], dists[1],
                                                                                          dists[4]], mechanism="vmap")
    for a, b in zip(kept, [vmap[0], vmap[1], vmap[4]]):
        assert _close(a["train_loss"], b["train_loss"], 1e4 * F32) and abs(a["val_accuracy"] - b["val_accuracy"]) <= 2 / 128 + F32


def test_train_candidates_checks_its_input_in_one_line(tiny):
    bed = SMALL["mlp"]
    sig = he(build(bed, (3, 32, 32), 10))
    for kwargs, name in [(dict(sigmas_list=[]), "sigmas_list"), (dict(seeds=[0, 1]), "seeds"),
                         (dict(distributions=["normal", "normal"]), "distributions"), (dict(mechanism="jit"), "mechanism"),
                         (dict(sigmas_list=[sig, sig[:-1]], seeds=[0, 1]), "sigmas")]:
        args = {"sigmas_list": [sig], "seeds": [0], "mechanism": "vmap", **kwargs}
        with pytest.raises(ParameterError, match=f"^{name} must"):
            train_candidates(bed, args.pop("sigmas_list"), tiny, args.pop("seeds"), 1, **args)
