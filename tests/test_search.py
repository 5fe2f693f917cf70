import json

import numpy as np
import pandas as pd
import pytest

from rlinit_lib.core.params import ParameterError
from rlinit_lib.core.trials import TrialsFailed
from rlinit_lib.core.study import run
from rlinit_lib.scale_search import search
from rlinit_lib.scale_search.search import SearchConfig, best_episode

VOLATILE = ["seconds"]
CALLS = []


def cfg(tmp_path, name, **kw):
    base = dict(episodes=4, epochs=1, dataset="synthetic", train_subset=256, test_subset=128, recheck_seeds=2,
                device="cpu", wandb_mode="disabled", progress=False, executor="serial", output_dir=str(tmp_path / name))
    return SearchConfig(**(base | kw))


def toy_child(child, scale, epochs, seed):
    """A child 'training' with a known accuracy curve (peak at 1.1) and seed noise; counts its calls."""
    CALLS.append(seed)
    acc = 0.7 - 0.2 * (scale - 1.1) ** 2 + np.random.default_rng(seed).normal(0, 0.01)
    return {"children": [{"scale": scale, "epochs": epochs, "seed": seed, "reward": 10 * acc, "accuracy": acc,
                          "nan_detected": False, "seconds": 0.0, "final_train_loss": 1.0, "final_train_accuracy": acc}]}


def failing_child(child, scale, epochs, seed):
    if len(CALLS) >= 2:
        raise RuntimeError("simulated crash")
    return toy_child(child, scale, epochs, seed)


def test_interrupted_search_resumes_to_the_same_table(tmp_path):
    full = run(search, cfg(tmp_path, "full"), evaluator=toy_child)
    CALLS.clear()
    with pytest.raises(TrialsFailed, match=r"^1 of 1 trials failed \(first: episode/2: RuntimeError: simulated crash\)"):
        run(search, cfg(tmp_path, "cut"), evaluator=failing_child)
    CALLS.clear()
    resumed = run(search, cfg(tmp_path, "cut"), evaluator=toy_child)
    assert len(CALLS) == 2 + 1 + 2 * 2   # episodes 2 and 3, the baseline, 2 re-check pairs: nothing repeated
    pd.testing.assert_frame_equal(full.table.drop(columns=VOLATILE), resumed.table.drop(columns=VOLATILE))
    pd.testing.assert_frame_equal(full.recheck, resumed.recheck)
    assert full.baseline["accuracy"] == resumed.baseline["accuracy"]


def test_results_files_and_summary(tmp_path):
    r = run(search, cfg(tmp_path, "a", episodes=3))
    out = tmp_path / "a"
    summary = json.loads((out / "results.json").read_text())
    assert summary["episodes"] == 3 and json.loads((out / "config.json").read_text())["seed"] == 42
    env = json.loads((out / "environment.json").read_text())
    assert env["packages"]["torch"] and "git_commit" in env and "cpu_flags" in env
    assert summary["best_scale"] == r.table.loc[r.table["reward"].idxmax(), "scale"]
    assert summary["recheck"]["n_seeds"] == 2
    episodes = pd.read_csv(out / "episodes.csv")
    assert list(episodes["episode"]) == [0, 1, 2] and episodes["policy_std"].dtype == float
    assert r.table["scale"].between(0.3, 1.7).all()


def test_more_episodes_extend_a_finished_search(tmp_path):
    short = run(search, cfg(tmp_path, "x", episodes=2, recheck_seeds=0), evaluator=toy_child)
    longer = run(search, cfg(tmp_path, "x", episodes=4, recheck_seeds=0), evaluator=toy_child)
    pd.testing.assert_frame_equal(short.table.drop(columns=VOLATILE),
                                  longer.table.drop(columns=VOLATILE).iloc[:2])
    assert len(longer.table) == 4


def test_reinforce_with_larger_updates_normalises_returns_and_records_the_policy(tmp_path):
    r = run(search, cfg(tmp_path, "b", episodes=8, update_every=4, recheck_seeds=0), evaluator=toy_child)
    assert r.table["policy_loss"].notna().sum() == 2          # one update per 4 episodes
    assert r.table["policy_std"].gt(0).all() and r.table["policy_mean_scale"].between(0.3, 1.7).all()


def test_best_episode_is_the_best_non_nan_at_the_longest_horizon():
    t = pd.DataFrame({"scale": [0.5, 1.0, 1.5, 2.0], "reward": [7.0, 6.0, 8.0, 9.0], "epochs": [7, 7, 3, 7],
                      "nan_detected": [False, False, False, True]})
    assert best_episode(t)["scale"] == 0.5


def test_report_has_the_figures_and_a_verdict(tmp_path):
    r = run(search, cfg(tmp_path, "rep", episodes=5, recheck_seeds=3), evaluator=toy_child)
    rep = search.report(None, r)
    assert set(rep.figures()) == {"fig5_1_search_history", "reward_vs_scale"}
    text = rep.text()
    assert "Re-trained on 3 fresh paired seeds" in text and "Quadratic trend" in text
    assert "Smallest effect of interest (declared before the run): **0.005 accuracy**" in text
    # the toy child's noise depends on the seed only, so the paired difference is constant: no interval
    assert "**inconclusive**" in text and "no interval can be formed" in text
    assert (tmp_path / "rep" / "fig5_1_search_history.png").stat().st_size > 10_000
    assert pd.read_csv(tmp_path / "rep" / "recheck.csv")["best_accuracy"].dtype == float


def test_reward_is_chosen_on_validation_unless_the_source_protocol_is_asked(tmp_path):
    seen = []

    def spy(child, scale, epochs, seed):
        seen.append(child["reward_split"])
        return toy_child(child, scale, epochs, seed)

    run(search, cfg(tmp_path, "v", episodes=1, recheck_seeds=0), evaluator=spy)
    run(search, cfg(tmp_path, "t", episodes=1, recheck_seeds=0, reward_split="test"), evaluator=spy)
    assert seen == ["val", "val", "test", "test"]   # an episode and the baseline each
    with pytest.raises(ParameterError, match=r"^reward_split must be one of 'val', 'test'"):
        SearchConfig.from_dict({"reward_split": "train"})


def test_changed_configuration_in_same_output_dir_is_refused(tmp_path):
    run(search, cfg(tmp_path, "y", episodes=1, recheck_seeds=0), evaluator=toy_child)
    with pytest.raises(ParameterError, match=r"holds a run with epochs=1 \(now epochs=2\); use another output_dir"):
        run(search, cfg(tmp_path, "y", episodes=1, epochs=2, recheck_seeds=0), evaluator=toy_child)


@pytest.mark.parametrize("values,msg", [
    ({"min_scale": 1.5, "max_scale": 1.0}, r"^min_scale must be < max_scale"),
    ({"episodes": 0}, r"^episodes must be an integer >= 1 \(got 0\)$"),
    ({"epochs": -3}, r"^epochs must be an integer >= 1 \(got -3\)$"),
    ({"dataset": "mnist"}, r"^dataset must be one of 'cifar10', 'fashion_mnist', 'synthetic' \(got 'mnist'\)$"),
    ({"activation": "elu"}, r"^activation must be one of 'silu', 'relu', 'gelu', 'tanh' \(got 'elu'\)$"),
    ({"wandb_mode": "cloud"}, r"^wandb_mode must be one of 'offline', 'online', 'disabled'"),
    ({"device": "tpu"}, r"^device must be"),
    ({"executor": "threads"}, r"^executor must be one of 'auto', 'serial', 'processes', 'ray' \(got 'threads'\)$"),
    ({"workers": 0}, r"^workers must be None or an integer >= 1 \(got 0\)$"),
    ({"episodez": 3}, r"^unknown parameter 'episodez' for 01_search; known parameters: "),
])
def test_invalid_parameters_fail_with_one_line(values, msg):
    with pytest.raises(ParameterError, match=msg) as err:
        SearchConfig.from_dict(values)
    assert "\n" not in str(err.value)
