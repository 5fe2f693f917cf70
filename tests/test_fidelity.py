import numpy as np
import pandas as pd
import pytest

from rlinit_lib.scale_search.fidelity_stats import horizon_report, seeds_needed, signal_to_noise, target_accuracy, target_choice
from rlinit_lib.scale_search.proxy_fidelity import FidelityConfig, accuracy_array, fidelity_report, grid_jobs, run_grid
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
    rows = horizon_report(acc, SCALES, [1, 5], n_boot=200)
    assert all(r["spearman"] > 0.9 and r["spearman_low"] > 0.5 for r in rows)
    assert rows[-1]["regret"] == pytest.approx(0.0)
    assert target_choice(acc, SCALES) == pytest.approx(SCALES[np.argmin(abs(SCALES - 1.15))])


def test_misleading_proxy_is_detected_with_positive_regret():
    acc = synthetic_grid(0.5, 1.5, noise=0.002)
    first = horizon_report(acc, SCALES, [1], n_boot=200)[0]
    assert first["spearman"] < 0 and first["proxy_choice"] == 0.5 and first["regret"] > 0.05
    assert first["regret_low"] > 0


def test_best_epoch_target_handles_overfitting():
    acc = synthetic_grid(1.0, 1.0, noise=0.0)
    acc[:, :, -1] -= 0.3  # last epoch collapses
    assert np.all(target_accuracy(acc, "best") > target_accuracy(acc, "final"))
    with pytest.raises(ValueError, match="target must be 'final' or 'best'"):
        target_accuracy(acc, "mean")


def test_signal_to_noise_separates_signal_from_seed_noise():
    strong = signal_to_noise(synthetic_grid(1.0, 1.0, noise=0.001), 5)
    weak = signal_to_noise(synthetic_grid(1.0, 1.0, noise=0.2), 5)
    assert strong["eta_squared"] > 0.9 and strong["p_value"] < 1e-6
    assert weak["eta_squared"] < strong["eta_squared"] and weak["seed_sd"] > 10 * strong["seed_sd"]


def test_pairing_reduces_seeds_needed_when_noise_is_shared():
    rng = np.random.default_rng(1)
    shared = rng.normal(0, 0.01, 20)  # seed effect common to both scales
    a = 0.735 + shared + rng.normal(0, 0.001, 20)
    b = 0.737 + shared + rng.normal(0, 0.001, 20)
    unpaired, paired = seeds_needed(a, b, paired=False), seeds_needed(a, b, paired=True)
    assert paired["seeds_needed"] < unpaired["seeds_needed"] / 10
    # normal-approximation formula, checked by hand for the unpaired case
    z = 1.959964 + 0.841621
    assert unpaired["seeds_needed"] == np.ceil((z * unpaired["sd"] / abs(unpaired["difference"])) ** 2)


def small_cfg(tmp_path, **kw):
    base = dict(min_scale=0.5, max_scale=1.5, n_scales=3, seeds=2, crn_seeds=2, epochs=2, horizons=[1], proxy_horizon=1,
                compare_scales=[1.0, 1.5],
                dataset="synthetic", train_subset=256, test_subset=128, bootstrap=100, device="cpu",
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
    serial = run_grid(small_cfg(tmp_path / "s"))
    assert len(serial) == 12 * 2 and not serial.duplicated(["mode", "scale_index", "seed_index", "epoch"]).any()
    acc = accuracy_array(serial, "crn")
    assert acc.shape == (3, 2, 2) and np.isfinite(acc).all()
    pooled = run_grid(small_cfg(tmp_path / "p", executor="processes", workers=2))
    pd.testing.assert_frame_equal(serial, pooled)   # same seeds, same numbers, whatever the executor
    again = run_grid(small_cfg(tmp_path / "s", seeds=3))   # one more seed: only its 3 networks are trained
    assert len(again) == 15 * 2
    assert again.merge(serial, on=list(serial.columns)).shape[0] == len(serial)


def test_report_tables_load_back_as_numbers(tmp_path):
    cfg = small_cfg(tmp_path)
    rep = fidelity_report(cfg, run_grid(cfg))
    h = pd.read_csv(tmp_path / "g" / "horizon_report.csv")
    for col in ("spearman", "spearman_low", "spearman_high", "regret_low", "regret_high", "proxy_choice_low"):
        assert pd.api.types.is_float_dtype(h[col]), col
    per_scale = pd.read_csv(tmp_path / "g" / "per_scale.csv")
    assert list(per_scale["scale"]) == [0.5, 1.0, 1.5] and per_scale["accuracy"].between(0, 1).all()
    assert "At 1 epochs the proxy" in rep.text() or "At 1 epoch" in rep.text()
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
    with pytest.raises(ParameterError, match=r"^unknown parameter 'epoch' for 02_proxy_fidelity"):
        FidelityConfig.from_dict({"epoch": 3})
