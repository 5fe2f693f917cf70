import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rlinit_lib.scale_search.plotting import plot_reward_vs_scale, plot_search_history, quadratic_peak
from rlinit_lib.core.stats import difference_by_seed, mean_ci, paired_difference, welch

matplotlib.use("Agg")


def test_mean_ci_matches_scipy_t_interval():
    x = np.array([0.71, 0.73, 0.72, 0.74, 0.70])
    m, lo, hi = mean_ci(x)
    ref = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert m == pytest.approx(x.mean()) and (lo, hi) == pytest.approx(ref)


def test_mean_ci_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(0)
    hits = sum(lo <= 0 <= hi for _, lo, hi in (mean_ci(rng.normal(0, 1, 6)) for _ in range(2000)))
    assert 0.93 < hits / 2000 < 0.97


def test_paired_and_welch_detect_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(1)
    base = rng.normal(0.73, 0.01, 30)
    better = base + 0.01 + rng.normal(0, 0.002, 30)
    assert paired_difference(better, base)["ci_low"] > 0
    w = welch(rng.normal(0, 1, 40), rng.normal(0, 1, 40))
    assert w["ci_low"] < 0 < w["ci_high"]
    ref = stats.ttest_ind(better, base, equal_var=False).pvalue
    assert welch(better, base)["p_value"] == pytest.approx(ref)


def test_quadratic_peak_recovers_the_peak_and_refuses_convex_fits():
    s = np.linspace(0.3, 1.7, 50)
    rng = np.random.default_rng(2)
    _, peak = quadratic_peak(s, 7 - 3 * (s - 1.2) ** 2 + rng.normal(0, 0.05, 50))
    assert peak == pytest.approx(1.2, abs=0.05)
    assert quadratic_peak(s, (s - 1) ** 2)[1] is None
    assert quadratic_peak([1.0, 1.0], [1, 2]) == (None, None)


def test_figures_draw_from_a_search_table():
    n = 20
    rng = np.random.default_rng(3)
    table = pd.DataFrame({"episode": range(n), "scale": rng.uniform(0.3, 1.7, n), "reward": rng.uniform(6, 7, n),
                          "accuracy": rng.uniform(0.6, 0.7, n), "nan_detected": [False] * (n - 1) + [True],
                          "policy_mean_scale": 1.0, "policy_std": 0.5, "policy_loss": 1.0,
                          "final_train_loss": 1.0, "final_train_accuracy": 0.5})
    assert len(plot_search_history(table).axes) == 6
    ax = plot_reward_vs_scale(table, {"scale": 1.0, "reward": 6.5}).axes[0]
    assert ax.get_xlabel() == "scale s"


def test_difference_by_seed_pairs_matching_seeds_and_falls_back_to_welch():
    """A small effect under a large per-seed offset: the paired test sees it, Welch's cannot; with other seeds
    in the control there is nothing to pair and Welch's is used."""
    rng = np.random.default_rng(1)
    offset = rng.normal(0, 1.0, 8)
    arm = pd.DataFrame({"seed": range(8), "loss": offset + 0.1 + rng.normal(0, 0.01, 8)})
    ctrl = pd.DataFrame({"seed": range(7, -1, -1), "loss": offset[::-1]})   # same seeds, other order
    paired = difference_by_seed(arm, ctrl, "loss")
    assert paired["test"] == "paired t" and paired["ci_low"] > 0.08 and paired["ci_high"] < 0.12
    unpaired = welch(arm["loss"], ctrl["loss"])
    assert unpaired["ci_low"] < 0 < unpaired["ci_high"]
    other = difference_by_seed(arm, ctrl.assign(seed=ctrl["seed"] + 100), "loss")
    assert other["test"] == "Welch" and other["mean"] == pytest.approx(unpaired["mean"])
    same = difference_by_seed(ctrl, ctrl.iloc[::-1], "loss")
    assert (same["mean"], same["ci_low"], same["ci_high"], same["p_value"]) == (0.0, 0.0, 0.0, 1.0)


def test_bf16_fidelity_check_pairs_networks_not_network_epochs(tmp_path):
    """benchmarks.bench_profiles.fidelity: 70 networks x 6 epochs are 70 paired differences, not 420."""
    import json

    from benchmarks.bench_profiles import fidelity

    rng = np.random.default_rng(0)
    rows = [{"mode": "independent", "scale_index": i, "scale": 0.5 + 0.1 * i, "seed_index": j, "epoch": e,
             "test_accuracy": 0.7 + 0.01 * i + 0.002 * e + rng.normal(0, 0.01)}
            for i in range(7) for j in range(10) for e in range(1, 7)]
    for name, shift in (("a", 0.0), ("b", 0.001)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"proxy_horizon": 2}))
        pd.DataFrame(rows).assign(test_accuracy=lambda d: d["test_accuracy"] + shift).to_csv(
            tmp_path / name / "runs.csv", index=False)
    out = fidelity(tmp_path / "a", tmp_path / "b", n_boot=50)
    assert out["networks"] == 70 and out["difference_b_minus_a"]["n"] == 70
    assert out["difference_b_minus_a"]["mean"] == pytest.approx(0.001)
