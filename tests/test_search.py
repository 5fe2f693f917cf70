import json

import pandas as pd
import pytest

from rlinit_lib.search import SearchConfig, run_search
from rlinit_lib.validation import ParameterError

VOLATILE = ["seconds"]


def cfg(tmp_path, name, **kw):
    base = dict(episodes=4, epochs=1, dataset="synthetic", train_subset=256, test_subset=128, recheck_seeds=2,
                device="cpu", wandb_mode="disabled", progress=False, output_dir=str(tmp_path / name))
    return SearchConfig(**(base | kw))


class Interrupt(Exception):
    pass


def test_interrupted_search_resumes_to_the_same_table(tmp_path, synthetic):
    full = run_search(cfg(tmp_path, "full"))

    def stop_after_two(row):
        if row["episode"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_search(cfg(tmp_path, "cut"), on_episode=stop_after_two)
    assert len(pd.read_csv(tmp_path / "cut" / "episodes.csv")) == 2  # finished episodes are on disk
    seen = []
    resumed = run_search(cfg(tmp_path, "cut"), on_episode=lambda r: seen.append(r["episode"]))
    assert seen == [2, 3]  # nothing repeated, nothing lost
    pd.testing.assert_frame_equal(full.table.drop(columns=VOLATILE), resumed.table.drop(columns=VOLATILE))
    pd.testing.assert_frame_equal(full.recheck, resumed.recheck)
    assert full.baseline["accuracy"] == resumed.baseline["accuracy"]


def test_results_files_and_summary(tmp_path):
    r = run_search(cfg(tmp_path, "a", episodes=3))
    out = tmp_path / "a"
    summary = json.loads((out / "results.json").read_text())
    assert summary["episodes"] == 3 and summary["config"]["seed"] == 42
    assert summary["environment"]["packages"]["torch"]
    assert summary["best_scale"] == r.table.loc[r.table["reward"].idxmax(), "scale"]
    assert summary["recheck"]["n_seeds"] == 2
    assert list(pd.read_csv(out / "episodes.csv")["episode"]) == [0, 1, 2]
    assert r.table["scale"].between(0.3, 1.7).all()


def test_more_episodes_extend_a_finished_search(tmp_path):
    short = run_search(cfg(tmp_path, "x", episodes=2, recheck_seeds=0))
    longer = run_search(cfg(tmp_path, "x", episodes=4, recheck_seeds=0))
    pd.testing.assert_frame_equal(short.table.drop(columns=VOLATILE),
                                  longer.table.drop(columns=VOLATILE).iloc[:2])
    assert len(longer.table) == 4


def test_changed_configuration_in_same_output_dir_is_refused(tmp_path):
    run_search(cfg(tmp_path, "y", episodes=1, recheck_seeds=0))
    with pytest.raises(ParameterError, match=r"holds a search with epochs=1 \(now epochs=2\)"):
        run_search(cfg(tmp_path, "y", episodes=1, epochs=2, recheck_seeds=0))


@pytest.mark.parametrize("values,msg", [
    ({"min_scale": 1.5, "max_scale": 1.0}, r"^min_scale must be < max_scale"),
    ({"episodes": 0}, r"^episodes must be an integer >= 1 \(got 0\)$"),
    ({"epochs": -3}, r"^epochs must be an integer >= 1 \(got -3\)$"),
    ({"dataset": "mnist"}, r"^dataset must be one of 'cifar10', 'fashion_mnist', 'synthetic' \(got 'mnist'\)$"),
    ({"activation": "elu"}, r"^activation must be one of 'silu', 'relu', 'gelu', 'tanh' \(got 'elu'\)$"),
    ({"wandb_mode": "cloud"}, r"^wandb_mode must be one of 'offline', 'online', 'disabled'"),
    ({"device": "tpu"}, r"^device must be"),
    ({"episodez": 3}, r"^unknown parameter 'episodez' for 01_search; known parameters: "),
])
def test_invalid_parameters_fail_with_one_line(values, msg):
    with pytest.raises(ParameterError, match=msg) as err:
        SearchConfig.from_dict(values)
    assert "\n" not in str(err.value)
