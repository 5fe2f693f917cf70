import numpy as np
import pandas as pd
import pytest

from rlinit_lib.core.verdicts import seeds_needed as verdict_seeds_needed
from rlinit_lib.scale_search.fidelity_stats import (CHANCE_ACCURACY, block_anova, disjoint_fidelity, horizon_report,
                                                    one_way_anova, same_run_spearman, scored, seeds_needed,
                                                    signal_to_noise, target_accuracy, target_choice)
from rlinit_lib.core.study import run
from rlinit_lib.scale_search import proxy_fidelity as pf
from rlinit_lib.scale_search.proxy_fidelity import FidelityConfig, accuracy_array, grid_jobs
from rlinit_lib.initialisation.theory import critical_scales, gaussian_expectation
from rlinit_lib.core.params import ParameterError
SCALES = np.linspace(0.5, 1.5, 6)


def synthetic_grid(proxy_peak, final_peak, noise, n_seeds=8, epochs=10, seed=0):
    """acc[scale, seed, epoch]: early epochs peak at proxy_peak, late ones at final_peak."""
    rng = np.random.default_rng(seed)
    acc = np.empty((len(SCALES), n_seeds, epochs))
    for e in range(epochs):
        w = e / (epochs - 1)
        peak = (1 - w) * proxy_peak + w * final_peak
        acc[:, :, e] = (0.6 + 0.02 * e - 0.2 * (SCALES[:, None] - peak) ** 2
                        + noise * rng.standard_normal((len(SCALES), n_seeds)))
    return acc


def test_gaussian_expectation_and_relu_gives_he():
    assert gaussian_expectation(lambda z: z ** 2) == pytest.approx(1.0, abs=1e-12)
    relu = critical_scales("relu")
    assert relu["second_moment"] == pytest.approx(1.0, abs=1e-9)
    assert relu["backward"] == pytest.approx(1.0, abs=1e-3)  # E[step(z)^2] = 1/2


def test_silu_critical_scales_match_monte_carlo():
    silu = critical_scales("silu")
    z = np.random.default_rng(0).standard_normal(2_000_000)
    mc = np.mean((z / (1 + np.exp(-z))) ** 2)
    assert silu["E[phi^2]"] == pytest.approx(mc, rel=3e-3)
    assert 1.15 < silu["second_moment"] < 1.22 and silu["variance"] > silu["second_moment"] > silu["backward"]


def test_agreeing_proxy_has_high_rank_correlation_and_no_regret():
    acc = synthetic_grid(1.15, 1.15, noise=0.002)
    rows = horizon_report(acc, acc, SCALES, [1, 5], n_boot=200)
    assert all(r["spearman"] > 0.9 and r["spearman_low"] > 0.5 for r in rows)
    assert rows[-1]["regret"] == pytest.approx(0.0)
    assert target_choice(acc, acc, SCALES) == pytest.approx(SCALES[np.argmin(abs(SCALES - 1.15))])


def test_misleading_proxy_is_detected_with_positive_regret():
    acc = synthetic_grid(0.5, 1.5, noise=0.002)
    first = horizon_report(acc, acc, SCALES, [1], n_boot=200)[0]
    assert first["spearman"] < 0 and first["proxy_choice"] == 0.5 and first["regret"] > 0.05
    assert first["regret_low"] > 0


def test_choices_are_made_on_validation_and_reported_on_test():
    val = synthetic_grid(1.0, 1.0, noise=0.0)
    test = val.copy()
    test[:, :, 3] += 0.5          # the test set's best epoch is 4; validation's is the last
    tv, tt = target_accuracy(val, test, "best")
    np.testing.assert_allclose(tt, test[:, :, -1])     # the epoch validation chose, scored on test
    np.testing.assert_allclose(tv, val[:, :, -1])
    peaked = val.copy()
    peaked[0] += 1.0              # validation prefers scale 0.5; test follows the curve's peak at 1.0
    assert target_choice(peaked, val, SCALES) == 0.5
    assert horizon_report(peaked, val, SCALES, [10], n_boot=100)[0]["proxy_choice"] == 0.5
    with pytest.raises(ValueError, match="target must be 'final' or 'best'"):
        target_accuracy(val, test, "mean")


def lasting_luck_grid(rng, n_scales=8, n_seeds=6, luck=0.02, noise=0.002):
    """(proxy, long run) accuracy [scale, seed] with no effect of the scale at all, where a run's luck (its
    init) stays with it from the proxy to the long run."""
    run_luck = luck * rng.standard_normal((n_scales, n_seeds))
    proxy = 0.7 + run_luck + noise * rng.standard_normal((n_scales, n_seeds))
    return proxy, 0.75 + run_luck + noise * rng.standard_normal((n_scales, n_seeds))


def test_same_run_fidelity_is_inflated_by_lasting_luck_and_disjoint_seeds_are_not():
    rng = np.random.default_rng(0)
    same, disjoint = [], []
    for _ in range(300):   # no scale effect at all: the true rank agreement of the mean curves is nothing
        proxy, final = lasting_luck_grid(rng)
        same.append(same_run_spearman(proxy, final))
        disjoint.append(disjoint_fidelity(proxy, final, final, n_boot=1)["spearman"])
    same, disjoint = np.array(same), np.array(disjoint)
    assert same.mean() > 0.8                                           # the same runs "agree" through their luck
    assert abs(disjoint.mean()) < 3 * disjoint.std() / np.sqrt(len(disjoint)) + 0.01   # centred on the truth, 0


def test_disjoint_halves_never_share_a_network():
    proxy = np.arange(24, dtype=float).reshape(4, 6)
    r = disjoint_fidelity(proxy, proxy, proxy, n_boot=50)
    assert (r["seeds_a"], r["seeds_b"]) == (3, 3) and r["spearman"] == pytest.approx(1.0)
    one = disjoint_fidelity(proxy[:, :3], proxy[:, :3], proxy[:, :3], n_boot=50)   # a half of 1 seed: no interval
    assert (one["seeds_a"], one["seeds_b"]) == (1, 2) and np.isnan(one["spearman_low"])


def test_diverged_runs_are_scored_at_chance_not_dropped():
    acc = np.full((2, 3, 2), 0.8)
    acc[1, 0, 1] = np.nan          # a run that diverged in its second epoch
    s = scored(acc)
    assert s[1, 0, 1] == CHANCE_ACCURACY and s[1, 0, 0] == 0.8 and np.isfinite(s).all()
    assert s[1, :, 1].mean() == pytest.approx((0.8 * 2 + CHANCE_ACCURACY) / 3)   # nanmean would say 0.8


def test_one_way_anova_matches_scipy_and_separates_signal_from_noise():
    from scipy import stats
    y = synthetic_grid(1.0, 1.0, noise=0.05)[:, :, 4]
    assert one_way_anova(y)["F"] == pytest.approx(stats.f_oneway(*y).statistic)
    strong = signal_to_noise(synthetic_grid(1.0, 1.0, noise=0.001), 5)
    weak = signal_to_noise(synthetic_grid(1.0, 1.0, noise=0.2), 5)
    assert strong["eta_squared"] > 0.9 and strong["p_value"] < 1e-6
    assert weak["eta_squared"] < strong["eta_squared"] and weak["seed_sd"] > 10 * strong["seed_sd"]


def test_block_anova_matches_statsmodels_and_gains_power_from_shared_seeds():
    pytest.importorskip("statsmodels")
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    rng = np.random.default_rng(2)
    y = 0.7 + 0.004 * np.arange(6)[:, None] + 0.02 * rng.standard_normal(4)[None] + 0.002 * rng.standard_normal((6, 4))
    df = pd.DataFrame([{"y": y[i, j], "scale": i, "block": j} for i in range(6) for j in range(4)])
    ref = anova_lm(smf.ols("y ~ C(scale) + C(block)", df).fit(), typ=2)
    got = block_anova(y)
    assert got["F"] == pytest.approx(ref.loc["C(scale)", "F"], rel=1e-9)
    assert got["p_value"] == pytest.approx(ref.loc["C(scale)", "PR(>F)"], rel=1e-9)
    assert got["block_F"] == pytest.approx(ref.loc["C(block)", "F"], rel=1e-9)
    assert got["seed_sd"] ** 2 == pytest.approx(ref.loc["Residual", "sum_sq"] / ref.loc["Residual", "df"], rel=1e-9)
    assert got["p_value"] < 1e-4 < one_way_anova(y)["p_value"]   # ignoring the blocks hides the scale effect
    assert signal_to_noise(y[:, :, None], 1, blocked=True)["F"] == got["F"]


def test_seeds_needed_comes_from_sesoi_and_spread_not_the_observed_difference():
    rng = np.random.default_rng(1)
    shared = rng.normal(0, 0.01, 20)  # seed effect common to both scales
    a = 0.735 + shared + rng.normal(0, 0.001, 20)
    b = 0.737 + shared + rng.normal(0, 0.001, 20)
    unpaired, paired = seeds_needed(a, b, 0.005, paired=False), seeds_needed(a, b, 0.005, paired=True)
    assert paired["seeds_needed"] < unpaired["seeds_needed"] / 10
    assert seeds_needed(a + 0.05, b, 0.005, paired=False)["seeds_needed"] == unpaired["seeds_needed"]  # difference unused
    assert (unpaired["seeds_needed"], unpaired["seeds_needed_low"], unpaired["seeds_needed_high"]) == \
        verdict_seeds_needed(np.sqrt(a.var(ddof=1) + b.var(ddof=1)), 0.005, 20, paired=False)
    assert unpaired["seeds_needed_low"] <= unpaired["seeds_needed"] <= unpaired["seeds_needed_high"]


def fake_runs(n_scales=3, seeds=4, epochs=3, seed=0):
    """A runs table as run_grid returns it, without training (independent and CRN), one diverged run."""
    rng = np.random.default_rng(seed)
    rows = []
    for mode in ("independent", "crn"):
        for i in range(n_scales):
            for j in range(seeds):
                for e in range(epochs):
                    acc = 0.6 + 0.05 * i + 0.02 * e + 0.01 * rng.standard_normal()
                    rows.append({"mode": mode, "scale_index": i, "scale": [0.5, 1.0, 1.5][i], "seed_index": j,
                                 "seed": j, "epoch": e + 1, "val_accuracy": acc + 0.005, "test_accuracy": acc,
                                 "train_loss": 1.0, "nan_detected": False})
    runs = pd.DataFrame(rows)
    bad = (runs["mode"] == "independent") & (runs["scale_index"] == 2) & (runs["seed_index"] == 0)
    runs.loc[bad, "nan_detected"] = True
    runs.loc[bad & (runs["epoch"] >= 2), ["val_accuracy", "test_accuracy"]] = np.nan
    return runs


def test_report_on_a_runs_table_keeps_diverged_runs_and_starts_with_the_sesoi_line(tmp_path):
    cfg = small_cfg(tmp_path, seeds=4, crn_seeds=4, epochs=3, horizons=[1, 2], proxy_horizon=2, sesoi=0.01)
    runs = fake_runs()
    (tmp_path / "g").mkdir()
    rep = pf.report(cfg, pf.FidelityResult(runs))
    per_scale = pd.read_csv(tmp_path / "g" / "per_scale.csv")
    test = accuracy_array(runs, "independent")
    expected = np.where(np.isfinite(test[2, :, 1]), test[2, :, 1], CHANCE_ACCURACY).mean()
    assert per_scale.loc[2, "accuracy"] == pytest.approx(expected)                  # scored at chance, not dropped
    assert per_scale.loc[2, "diverged_rate"] == 0.25 and "val_accuracy" in per_scale
    div = pd.read_csv(tmp_path / "g" / "divergence.csv").set_index("mode")
    assert div.loc["independent", "diverged"] == 1 and div.loc["crn", "diverged"] == 0
    verdict = rep.summary["verdict"]
    assert verdict.split("\n")[1].startswith("Smallest effect of interest (declared before the run): **0.01 accuracy**")
    h = pd.read_csv(tmp_path / "g" / "horizon_report.csv")
    assert (h["role"] == "primary").sum() == 1
    assert h.loc[h["role"] == "primary", ["mode", "target", "horizon"]].values.tolist() == [["independent", "final", 2]]
    snr = pd.read_csv(tmp_path / "g" / "signal_to_noise.csv")
    assert set(snr.loc[snr["mode"] == "crn", "test"]) == {"two-way ANOVA (scale + seed block)"}
    comparisons = pd.read_csv(tmp_path / "g" / "comparisons.csv")
    assert set(comparisons["role"]) == {"exploratory"} and set(comparisons["test"]) == {"Welch", "paired t"}


def small_cfg(tmp_path, **kw):
    base = dict(min_scale=0.5, max_scale=1.5, n_scales=3, seeds=2, crn_seeds=2, epochs=2, horizons=[1], proxy_horizon=1,
                compare_scales=[1.0, 1.5],
                dataset="synthetic", train_subset=256, test_subset=128, val_size=200, bootstrap=100, device="cpu",
                wandb_mode="disabled", progress=False, executor="serial", output_dir=str(tmp_path / "g"))
    return FidelityConfig(**(base | kw))


def test_grid_jobs_give_crn_one_seed_per_seed_index(tmp_path):
    jobs = pd.DataFrame(grid_jobs(small_cfg(tmp_path)))
    assert len(jobs) == 3 * 2 * 2
    crn = jobs[jobs["mode"] == "crn"]
    assert crn.groupby("seed_index")["seed"].nunique().eq(1).all()
    ind = jobs[jobs["mode"] == "independent"]
    assert ind["seed"].nunique() == len(ind)


def test_grid_shapes_and_processes_executor_gives_the_serial_table(tmp_path):
    serial = run(pf, small_cfg(tmp_path / "s")).runs
    assert len(serial) == 12 * 2 and not serial.duplicated(["mode", "scale_index", "seed_index", "epoch"]).any()
    acc = accuracy_array(serial, "crn")
    assert acc.shape == (3, 2, 2) and np.isfinite(acc).all()
    pooled = run(pf, small_cfg(tmp_path / "p", executor="processes", workers=2)).runs
    pd.testing.assert_frame_equal(serial, pooled)   # same seeds, same numbers, whatever the executor
    again = run(pf, small_cfg(tmp_path / "s", seeds=3)).runs   # one more seed: only its 3 networks are trained
    assert len(again) == 15 * 2
    assert again.merge(serial, on=list(serial.columns)).shape[0] == len(serial)


def test_report_tables_load_back_as_numbers(tmp_path):
    cfg = small_cfg(tmp_path)
    rep = pf.report(cfg, run(pf, cfg))
    h = pd.read_csv(tmp_path / "g" / "horizon_report.csv")
    for col in ("spearman", "spearman_low", "spearman_high", "regret", "regret_low", "regret_high", "proxy_choice"):
        assert pd.api.types.is_float_dtype(h[col]), col
    per_scale = pd.read_csv(tmp_path / "g" / "per_scale.csv")
    assert list(per_scale["scale"]) == [0.5, 1.0, 1.5] and per_scale["accuracy"].between(0, 1).all()
    assert per_scale["val_accuracy"].between(0, 1).all()
    runs = pd.read_csv(tmp_path / "g" / "runs.csv")
    assert runs["val_accuracy"].between(0, 1).all() and runs["test_accuracy"].between(0, 1).all()
    assert "Spearman rho =" in rep.text() and "## What this run found" in rep.text()
    assert {"heatmap", "accuracy_vs_scale", "correlation_and_choice_vs_horizon"} <= set(rep.figures())


def test_fidelity_parameters_are_validated(tmp_path):
    with pytest.raises(ParameterError, match=r"^horizons must be an integer in \[1, 2\] \(got 5\)$"):
        small_cfg(tmp_path, horizons=[1, 5]).validate()
    with pytest.raises(ParameterError, match=r"^seeds must be an integer >= 2 \(got 1\)$"):
        small_cfg(tmp_path, seeds=1).validate()
    with pytest.raises(ParameterError, match=r"^compare_scales must be a number >= 0.5 and <= 1.5 \(got 1.75\)$"):
        small_cfg(tmp_path, compare_scales=[1.0, 1.75]).validate()
    with pytest.raises(ParameterError, match=r"^compare_scales must fall on two different grid scales \(both map to 1;"):
        small_cfg(tmp_path, compare_scales=[0.95, 1.1]).validate()
    with pytest.raises(ParameterError, match=r"^sesoi must be a number > 0"):
        small_cfg(tmp_path, sesoi=0.0).validate()
    with pytest.raises(ParameterError, match=r"^unknown parameter 'epoch' for 02_proxy_fidelity"):
        FidelityConfig.from_dict({"epoch": 3})


def test_disjoint_interval_covers_its_estimand():
    rng = np.random.default_rng(3)
    proxy_mean, final_mean = np.linspace(0, 0.02, 7), -0.05 * (np.linspace(0, 1, 7) - 0.6) ** 2

    def draw(n=10):
        luck = 0.01 * rng.standard_normal((7, n))   # lasting luck, shared by a run's proxy and long run
        return (proxy_mean[:, None] + luck + 0.005 * rng.standard_normal((7, n)),
                final_mean[:, None] + luck + 0.005 * rng.standard_normal((7, n)))

    # the estimand: the expected agreement of 5-seed proxy means with 5 other seeds' long-run means
    truth = np.mean([disjoint_fidelity(p, f, f, n_boot=1)["spearman"] for p, f in (draw() for _ in range(600))])
    assert 0.1 < truth < 0.5              # seed noise pulls it below the true curves' rho (0.54)
    cover = []
    for i in range(150):
        p, f = draw()
        r = disjoint_fidelity(p, f, f, n_boot=300, seed=i)
        cover.append(r["spearman_low"] <= truth <= r["spearman_high"])
    assert np.mean(cover) >= 0.88
