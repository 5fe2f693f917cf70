"""Notebook 06: the data-driven initialisers do what their papers say, every arm is deterministic, the
searched scale is chosen on 02's validation accuracy and every reported number is test accuracy of 06's own
seeds, the verdicts keep their error rates (simulated), diverged runs are kept, and bad input fails before work."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from rlinit_lib.core.data import normalise
from rlinit_lib.core.params import ParameterError
from rlinit_lib.initialisation.data_driven import (effective_scales, gradient_quotient, gradinit, gradinit_objective,
                                                   layer_output_stds, lsuv_init, metainit)
from rlinit_lib.core.runtime import stream_seed
from rlinit_lib.core.study import run
from rlinit_lib.init_methods import experiment as im
from rlinit_lib.init_methods.experiment import (ARMS, PRIMARY, InitMethodsConfig, arm_contrasts, arm_seed, arm_table,
                                                  best_scale_per_width, best_validation_scale,
                                                  initialise_arm, leave_one_out_choices,
                                                  search_pays, transfer_by_seed, verdict_rows, width_contrasts,
                                                  width_seed)
from rlinit_lib.scale_search import proxy_fidelity as pf
from rlinit_lib.scale_search.proxy_fidelity import FidelityConfig, grid_jobs
from rlinit_lib.children.training import build_child


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
    ({"sesoi": 0}, r"^sesoi must be a number > 0 \(got 0\)$"),
    ({"val_size": 0}, r"^val_size must be an integer >= 1 \(got 0\)$"),
])
def test_bad_input_fails_in_one_line_before_work(kw, msg):
    with pytest.raises(ParameterError, match=msg):
        InitMethodsConfig.from_dict(kw)


TINY02 = dict(min_scale=0.75, max_scale=1.5, n_scales=4, seeds=2, crn_seeds=0, epochs=2, horizons=[1], proxy_horizon=1,
              compare_scales=[1.0, 1.25], dataset="synthetic", train_subset=128, test_subset=64, val_size=64,
              bootstrap=100, device="cpu", wandb_mode="disabled", progress=False, executor="serial")
TINY06 = dict(arms=["he", "searched", "lsuv", "xavier_uniform"], seeds=2, proxy_epochs=1, long_epochs=4, init_batch=32,
              widths=[0.5, 1.0], width_scales=[0.75, 1.0, 1.5], width_seeds=2, width_epochs=1, dataset="synthetic",
              train_subset=128, test_subset=64, val_size=64, sesoi=0.02, device="cpu", wandb_mode="disabled",
              progress=False, executor="serial")


def test_the_searched_scale_comes_from_02_on_the_same_data_or_the_run_stops_before_work(tmp_path):
    cfg = InitMethodsConfig.from_dict(TINY06 | {"output_dir": str(tmp_path / "06_init_methods")})
    with pytest.raises(ParameterError, match=r"^arm 'searched' needs a searched scale: 02_proxy_fidelity's results are "
                                             r"not in '.*': run 02_proxy_fidelity first"):
        run(im, cfg)
    assert not (tmp_path / "06_init_methods").exists()
    runs = run(pf, FidelityConfig.from_dict(TINY02 | {"output_dir": str(tmp_path / "02_proxy_fidelity")})).runs
    best = runs[runs["epoch"] == 1].groupby("scale")["val_accuracy"].mean().idxmax()   # chosen on validation
    assert cfg.searched()[0] == best and "validation accuracy" in cfg.searched()[1]
    other = InitMethodsConfig.from_dict(TINY06 | {"output_dir": str(tmp_path / "06_init_methods"), "val_size": 32})
    assert other.searched()[0] is None and "val_size=64 (here 32)" in other.searched()[1]

    result = run(im, cfg)
    assert len(result.runs) == 4 * 2 * 4 and len(result.widths) == 2 * 3 * 2
    assert result.widths["val_accuracy"].between(0, 1).all() and "val_accuracy" not in result.runs
    assert set(result.init["arm"]) == set(TINY06["arms"]) and (result.init.query("arm == 'lsuv'")["init_seconds"] > 0).all()
    rep = im.report(cfg, result)
    arms = pd.read_csv(tmp_path / "06_init_methods" / "arms.csv")
    assert arms["long_accuracy"].dtype == float and list(arms["arm"]) == TINY06["arms"]
    assert ((arms["long_ci_low"] >= 0) & (arms["long_ci_high"] <= 1)).all() and (arms["long_diverged_rate"] == 0).all()
    rows = pd.read_csv(tmp_path / "06_init_methods" / "comparisons.csv")
    assert list(rows.loc[rows["role"] == "primary", "comparison"]) == [PRIMARY]
    assert len(rows) == 2 + 2 * 2 + 1 and rows["verdict"].isin(["better", "worse", "equivalent", "inconclusive"]).all()
    text = rep.text()
    verdicts = text[text.index("## What this run found"):]
    assert verdicts.splitlines()[1].startswith("Smallest effect of interest (declared before the run): **0.02 accuracy**")
    assert "## Width transfer" in text and set(rep.figures()) >= {"arms", "layer_scales", "width_transfer"}
    again = run(im, cfg)        # resumes: nothing retrained, same tables
    pd.testing.assert_frame_equal(again.runs, result.runs)
    # issue 25: 02 changes under 06 (here: more seeds, so its best scale may move) -> 06 refuses, never relabels
    run(pf, FidelityConfig.from_dict(TINY02 | {"output_dir": str(tmp_path / "02_proxy_fidelity"),
                                                "seeds": TINY02["seeds"] + 1})).runs
    with pytest.raises(ParameterError, match=r"^output_dir '.*06_init_methods': 02_proxy_fidelity's results changed "
                                             r"since this run \(digest: .*\); use another output_dir or delete it$"):
        run(im, cfg)


def test_without_02s_validation_accuracy_the_run_says_rerun_02(tmp_path, monkeypatch):
    old = pd.DataFrame({"mode": "independent", "scale": [1.0, 1.25], "seed_index": 0, "epoch": 1,
                        "test_accuracy": [0.5, 0.6], "nan_detected": False})
    from rlinit_lib.core.store import RunStore

    with RunStore(tmp_path / "02_proxy_fidelity", "02_proxy_fidelity", {"old": True}, {"proxy_horizon": 1}) as s:
        s.put("grid", {"runs": old.to_dict("records")})     # a 02 store written before the validation split
    cfg = InitMethodsConfig.from_dict(TINY06 | {"output_dir": str(tmp_path / "06_init_methods")})
    with pytest.raises(ParameterError, match=r"^arm 'searched' needs a searched scale: .* has no val_accuracy .*: "
                                             r"rerun 02; or set searched_scale"):
        cfg.arm_scales()


def test_the_searched_scale_is_chosen_on_validation_with_diverged_runs_at_chance():
    runs = pd.DataFrame([
        {"mode": "independent", "scale": s, "seed_index": j, "epoch": 3, "val_accuracy": v, "test_accuracy": t}
        for s, j, v, t in [(0.5, 0, 0.70, 0.90), (0.5, 1, 0.70, 0.90),      # best on test, not on validation
                           (1.0, 0, 0.80, 0.60), (1.0, 1, 0.80, 0.60),
                           (2.0, 0, 0.99, 0.99), (2.0, 1, np.nan, np.nan)]])  # one run diverged: (0.99 + 0.1) / 2
    runs = pd.concat([runs, runs.assign(mode="crn", val_accuracy=1.0)])    # the CRN grid is not 02's choice
    assert best_validation_scale(runs, 3) == (1.0, 2)
    assert best_validation_scale(runs, 3, chance=0.7)[0] == 2.0


def test_06_has_its_own_seeds_not_02s_networks():
    """06's He-type arms would otherwise re-run 02's CRN networks (same seed, data and settings)."""
    fid = FidelityConfig.from_dict({"seeds": 10, "crn_seeds": 10})
    seeds02 = {j["seed"] for j in grid_jobs(fid)}
    ours = {arm_seed(0, j) for j in range(10)} | {width_seed(0, j) for j in range(10)}
    assert len(ours) == 20 and not ours & seeds02


def test_arms_draw_weights_and_data_order_from_separate_streams(synthetic):
    """The He arm is what train_and_evaluate builds for the seed (its 'init' stream), never the raw seed."""
    model, _ = initialise_arm("he", synthetic, {"he": 1.0}, 5, "silu", tiny_settings(), 64)
    same = build_child(3, 10, 1.0, "silu", "he_scaled", stream_seed(5, "init"))
    raw = build_child(3, 10, 1.0, "silu", "he_scaled", 5)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters()))
    assert not torch.equal(next(model.parameters()), next(raw.parameters()))
    assert len({stream_seed(5, p) for p in ("init", "data_order", "lsuv", "metainit")}) == 4


def _runs(acc: dict, epochs=(1, 4)) -> pd.DataFrame:
    return pd.DataFrame([{"arm": a, "seed_index": j, "seed": j, "epoch": e, "val_accuracy": v, "test_accuracy": v,
                          "train_loss": 1.0, "nan_detected": bool(np.isnan(v))}
                         for a, vals in acc.items() for j, v in enumerate(vals) for e in epochs])


def test_diverged_runs_are_kept_at_chance_and_their_rate_reported():
    runs = _runs({"he": [0.8, 0.8, 0.8, 0.8], "searched": [0.9, np.nan, 0.9, np.nan]})
    init = pd.DataFrame({"arm": ["he", "searched"], "seed_index": 0, "init_seconds": 0.0, "epoch_equivalents": 0.0,
                         "epochs_by_time": 0.0})
    result = im.InitMethodsResult(runs, init, pd.DataFrame(), pd.DataFrame(), {"he": 1.0, "searched": 1.1})
    cfg = InitMethodsConfig.from_dict({"arms": ["he", "searched"], "seeds": 4, "proxy_epochs": 1, "long_epochs": 4})
    table = arm_table(result, cfg).set_index("arm")
    assert table.loc["searched", "long_accuracy"] == pytest.approx((0.9 + 0.1) / 2)   # not 0.9 (nanmean)
    assert table.loc["searched", "long_diverged_rate"] == 0.5 and table.loc["he", "long_diverged_rate"] == 0
    assert table.loc["searched", "seeds"] == 4 and table.loc["searched", "interval"].startswith("t")


def _sim_tables(rng, arms, n, shift, sd_seed=0.02, sd=0.01):
    """(long, proxy) seed x arm accuracies: a shared seed effect (paired) plus noise; ``shift`` arm -> true offset."""
    base = 0.8 + sd_seed * rng.normal(size=(n, 1))
    tabs = [pd.DataFrame(base + sd * rng.normal(size=(n, len(arms))) + [shift.get(a, 0.0) for a in arms], columns=arms)
            for _ in range(2)]
    return tabs[0], tabs[1]


N_SIM, SESOI = 300, 0.01
LIMIT = 0.05 + 3 * math.sqrt(0.05 * 0.95 / N_SIM)


def _primary(rng, shift, n=5):
    rows = verdict_rows(arm_contrasts(*_sim_tables(rng, ["he", "searched"], n, shift), ["he", "searched"]), SESOI)
    return rows, rows.set_index("comparison").loc[PRIMARY, "verdict"]


def test_the_primary_verdict_says_better_or_worse_for_identical_arms_at_most_5_percent():
    rng = np.random.default_rng(1)
    calls = [_primary(rng, {})[1] for _ in range(N_SIM)]
    assert np.mean([v in ("better", "worse") for v in calls]) <= LIMIT


def test_arms_2_sesoi_apart_are_not_called_equivalent_and_the_search_is_not_said_not_to_pay():
    rng = np.random.default_rng(2)
    out = [_primary(rng, {"searched": 2 * SESOI}) for _ in range(N_SIM)]
    assert np.mean([v == "equivalent" for _, v in out]) <= LIMIT
    assert np.mean(["does not pay" in search_pays(rows) for rows, _ in out]) <= LIMIT
    rng = np.random.default_rng(3)                          # and the same with searched 2 sesoi worse than He
    out = [_primary(rng, {"searched": -2 * SESOI}) for _ in range(N_SIM)]
    assert np.mean([v == "equivalent" for _, v in out]) <= LIMIT


def test_does_not_pay_needs_equivalence_and_appears_when_it_holds():
    """The old verdict printed 'does not pay' for any non-significant cheap arm (99.4% with every arm 0.01 worse)."""
    rng = np.random.default_rng(4)
    out = [_primary(rng, {}, n=10) for _ in range(40)]       # identical arms, small paired noise: equivalence shows
    rows = verdict_rows(arm_contrasts(*_sim_tables(rng, ["he", "searched"], 10, {}, sd=0.001), ["he", "searched"]), SESOI)
    assert "does not pay" in search_pays(rows) and rows.iloc[0]["verdict"] == "equivalent"
    assert all(("does not pay" in search_pays(r)) == (v in ("equivalent", "worse")) for r, v in out)
    inconclusive = verdict_rows(arm_contrasts(*_sim_tables(rng, ["he", "searched"], 3, {}, sd=0.05),
                                              ["he", "searched"]), SESOI)
    assert inconclusive.iloc[0]["verdict"] == "inconclusive" and "undecided" in search_pays(inconclusive)


def test_the_exploratory_family_keeps_its_family_wise_error_for_identical_arms():
    rng = np.random.default_rng(5)
    arms = ["he", "searched", "lsuv", "xavier_uniform"]
    hits = []
    for _ in range(150):
        rows = verdict_rows(arm_contrasts(*_sim_tables(rng, arms, 5, {}), arms), SESOI)
        explore = rows[rows["role"] == "exploratory"]
        assert len(explore) == 1 + 2 * 2 and (explore["confidence"] == 1 - 0.05 / 5).all()
        hits.append(explore["verdict"].isin(["better", "worse"]).any())
    assert np.mean(hits) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 150)


def _width_rows(rng, peaks: dict, n, luck=0.02, noise=0.002, scales=(0.5, 1.0, 1.5, 2.0), curvature=0.05):
    """Each network has its own luck, shared by its val and test accuracy (what makes in-sample choice biased)."""
    rows = []
    for w, peak in peaks.items():
        for s in scales:
            for j in range(n):
                u = 0.8 - curvature * (s - peak) ** 2 + luck * rng.normal()
                rows.append({"width": w, "scale": s, "seed_index": j, "val_accuracy": u + noise * rng.normal(),
                             "test_accuracy": u + noise * rng.normal()})
    return pd.DataFrame(rows)


def test_the_best_scale_per_width_is_chosen_on_validation_and_reported_on_test():
    rows = [{"width": w, "scale": s, "seed_index": j, "val_accuracy": 0.8 - (s - peak) ** 2,
             "test_accuracy": 0.5 + 0.01 * j + (0.2 if s == 2.0 else 0.0)}       # test would pick 2.0
            for w, peak in ((0.5, 1.0), (1.0, 1.0), (2.0, 1.5)) for s in (0.5, 1.0, 1.5, 2.0) for j in range(3)]
    best = best_scale_per_width(pd.DataFrame(rows))
    assert list(best["best_scale"]) == [1.0, 1.0, 1.5] and list(best["shift_from_reference"]) == [0.0, 0.0, 0.5]
    assert best["test_accuracy"].tolist() == pytest.approx([0.51] * 3)
    assert (best["test_ci_low"] < 0.51).all() and (best["test_ci_high"] > 0.51).all() and (best["seeds"] == 3).all()


def test_leave_one_seed_out_choices_ignore_the_seed_they_are_scored_on():
    val = np.array([[0.9, 0.1, 0.1], [0.2, 0.5, 0.5]])        # seed 0 alone prefers scale 0
    own, ref = leave_one_out_choices(val, val[::-1])
    assert own.tolist() == [1, 0, 0] and ref.tolist() == [0, 1, 1]


def test_a_moving_best_scale_costs_accuracy_and_a_transferring_one_is_equivalent():
    rng = np.random.default_rng(6)
    moved = transfer_by_seed(_width_rows(rng, {1.0: 0.5, 2.0: 2.0}, 6, luck=0.002))
    assert set(moved["own_scale"]) == {2.0} and set(moved["transferred_scale"]) == {0.5}
    rows = verdict_rows(width_contrasts(moved), SESOI)
    assert rows.iloc[0]["comparison"] == "width x2: own scale - x1's scale" and rows.iloc[0]["verdict"] == "better"
    same = transfer_by_seed(_width_rows(rng, {1.0: 1.0, 2.0: 1.0}, 6, luck=0.002))
    assert verdict_rows(width_contrasts(same), SESOI).iloc[0]["verdict"] == "equivalent"


def test_width_transfer_calls_a_flat_optimum_moved_at_most_5_percent():
    """Every scale equally good at both widths; each network's luck is shared by its val and test accuracy, which
    would make the width's own in-sample choice look better than the transferred one."""
    rng = np.random.default_rng(7)
    calls = [verdict_rows(width_contrasts(transfer_by_seed(_width_rows(rng, {1.0: 1.0, 2.0: 1.0}, 3, luck=0.02,
                                                                          curvature=0.0))),
                          SESOI).iloc[0]["verdict"] for _ in range(N_SIM)]
    assert np.mean([v in ("better", "worse") for v in calls]) <= LIMIT
