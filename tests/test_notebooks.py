"""The notebooks' parameter handling, executed through papermill as users run them."""
from pathlib import Path

import papermill as pm
import pytest
import yaml

from rlinit_lib.notebook import parameters_since, repo_root
from rlinit_lib.run_notebooks import notebook_jobs

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks" / "01_search.ipynb"


def test_parameters_since_keeps_only_new_public_names():
    before = {"a", "nb"}
    assert parameters_since(before, {"a": 1, "nb": 2, "episodes": 3, "_i2": "x"}) == {"episodes": 3}


def test_repo_root_is_found_from_a_subfolder():
    assert repo_root(ROOT / "notebooks") == ROOT


def test_every_profile_has_the_same_notebooks_and_only_known_names():
    from rlinit_lib.search import SearchConfig

    for profile in ("paper", "quick", "smoke"):
        jobs = notebook_jobs(ROOT, profile)
        assert [nb.stem for nb, _ in jobs][:1] == ["01_search"]
        SearchConfig.from_dict(yaml.safe_load((ROOT / "params" / profile / "01_search.yaml").read_text()))


@pytest.mark.parametrize("params,message", [
    ({"episodes": 0}, "episodes must be an integer >= 1 (got 0)"),
    ({"episodez": 5}, "unknown parameter 'episodez' for 01_search"),
    ({"min_scale": 1.8}, "min_scale must be < max_scale"),
])
def test_bad_papermill_parameters_stop_before_training(tmp_path, params, message):
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(NB), str(tmp_path / "out.ipynb"), cwd=str(ROOT), progress_bar=False,
                            parameters={"dataset": "synthetic", "output_dir": str(tmp_path / "o")} | params)
    assert err.value.ename == "ParameterError" and message in err.value.evalue
    assert not (tmp_path / "o").exists()  # no work started
