"""The notebooks as users run them: parameters declared once, profiles checked before any work, and the
main command going on after a failure."""
import ast
import json
import shutil
import socket
from pathlib import Path

import papermill as pm
import pytest
import yaml

from rlinit_lib.core.notebook import parameters_cell, parameters_since, repo_root
from rlinit_lib.registry import NOTEBOOKS
from rlinit_lib.run_notebooks import main, notebook_jobs

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks" / "01_search.ipynb"


def cell_values(notebook: Path, tag: str = "parameters") -> dict:
    cell = next(c for c in json.loads(notebook.read_text())["cells"] if tag in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)}


def test_parameters_since_keeps_only_new_public_names():
    before = {"a", "nb"}
    assert parameters_since(before, {"a": 1, "nb": 2, "episodes": 3, "_i2": "x"}) == {"episodes": 3}


def test_repo_root_is_found_from_a_subfolder():
    assert repo_root(ROOT / "notebooks") == ROOT


def test_every_notebook_is_registered_and_its_parameters_cell_is_its_config_defaults():
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks == sorted(NOTEBOOKS)
    for name, cls in NOTEBOOKS.items():
        values = cell_values(ROOT / "notebooks" / f"{name}.ipynb")
        assert values.pop("profile") is None, name
        assert values == cls.defaults(), name
        cell = next(c for c in json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
                    if "parameters" in c["metadata"].get("tags", []))
        source = "".join(cell["source"])
        assert parameters_cell(cls, source) == source, f"{name}: run python -m rlinit_lib.run_notebooks --write-parameters"


def test_a_profile_fills_the_parameters_left_at_their_defaults(tmp_path):
    from rlinit_lib.core.notebook import with_profile
    from rlinit_lib.core.params import ParameterError
    from rlinit_lib.scale_search.search import SearchConfig

    cell = SearchConfig.defaults() | {"episodes": 7}          # the user changed one parameter
    values = with_profile(SearchConfig, cell, "quick", ROOT)
    quick = yaml.safe_load((ROOT / "params" / "quick" / "01_search.yaml").read_text())
    assert values["episodes"] == 7 and values["dataset"] == quick["dataset"] == "fashion_mnist"
    assert values["output_dir"] == quick["output_dir"] and values["lr"] == SearchConfig.defaults()["lr"]
    SearchConfig.from_dict(values)
    with pytest.raises(ParameterError, match=r"^profile must be None or one of 'paper', 'quick', 'smoke' for 01_search "
                                             r"\(got 'fast'\)$"):
        with_profile(SearchConfig, cell, "fast", ROOT)
    (tmp_path / "params" / "listy").mkdir(parents=True)
    (tmp_path / "params" / "listy" / "01_search.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ParameterError, match=r"01_search.yaml must hold NAME: VALUE lines \(a mapping\), not a list$"):
        with_profile(SearchConfig, cell, "listy", tmp_path)


def test_every_profile_validates_and_names_only_known_notebooks():
    files = sorted((ROOT / "params").glob("*/*.yaml"))
    assert {f.parent.name for f in files} >= {"paper", "quick", "smoke", "source_win"}
    for f in files:
        assert f.stem in NOTEBOOKS, f
        NOTEBOOKS[f.stem].from_dict(yaml.safe_load(f.read_text()) or {})
    for profile in ("paper", "quick", "smoke"):
        assert [nb.stem for nb, _ in notebook_jobs(ROOT, profile)] == list(NOTEBOOKS)


def test_notebooks_are_committed_without_outputs():
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        assert not any(c.get("outputs") or c.get("execution_count") for c in cells if c["cell_type"] == "code"), nb


@pytest.mark.parametrize("params,message", [
    ({"episodes": 0}, "episodes must be an integer >= 1 (got 0)"),
    ({"episodez": 5}, "unknown parameter 'episodez' for 01_search"),
])
def test_bad_papermill_parameters_stop_before_training(tmp_path, params, message):
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(NB), str(tmp_path / "out.ipynb"), cwd=str(ROOT), progress_bar=False,
                            parameters={"dataset": "synthetic", "output_dir": str(tmp_path / "o")} | params)
    assert err.value.ename == "ParameterError" and message in err.value.evalue
    assert not (tmp_path / "o").exists()  # no work started


def fake_repo(tmp_path: Path, profile: dict[str, dict], notebooks: dict[str, Path] | None = None) -> Path:
    """A checkout with only ``profile``'s notebooks (copies of ours unless given) and its params."""
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "params" / "t").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "rlinit-lib"\n')
    for name, params in profile.items():
        shutil.copy((notebooks or {}).get(name, ROOT / "notebooks" / f"{name}.ipynb"), root / "notebooks" / f"{name}.ipynb")
        (root / "params" / "t" / f"{name}.yaml").write_text(yaml.safe_dump(params))
    return root


def smoke(name: str) -> dict:
    return yaml.safe_load((ROOT / "params" / "smoke" / f"{name}.yaml").read_text())


def test_a_bad_profile_is_refused_before_the_first_notebook(tmp_path, monkeypatch, capsys):
    root = fake_repo(tmp_path, {"01_search": smoke("01_search"), "04_smooth_reinit": smoke("04_smooth_reinit")
                                | {"dqn_seeds": 1}})
    monkeypatch.chdir(root)
    assert main(["--profile", "t", "--outputs-root", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("not started: params/t/04_smooth_reinit.yaml: ParameterError: dqn_seeds must be an integer >= 2 "
                   "(got 1)")
    assert not (tmp_path / "out").exists()


def test_a_missing_dataset_offline_fails_in_seconds_naming_it(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise OSError("network unreachable (blocked by this test)")

    monkeypatch.setattr(socket.socket, "connect", offline)
    empty = tmp_path / "no-data"
    empty.mkdir()
    root = fake_repo(tmp_path, {"01_search": smoke("01_search"),
                                "02_proxy_fidelity": smoke("02_proxy_fidelity") | {"dataset": "cifar10",
                                                                                 "data_root": str(empty)}})
    monkeypatch.chdir(root)
    assert main(["--profile", "t", "--outputs-root", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("not started: 02_proxy_fidelity (params/t/02_proxy_fidelity.yaml): DatasetNotFoundError: "
                          "CIFAR-10 not found") and "cifar-10-python.tar.gz" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_a_notebook_run_alone_checks_its_data_before_it_makes_a_store(tmp_path, monkeypatch):
    """What a notebook's config cell does (``core.notebook.config_from_cell``): the README's headline command
    offline with CIFAR-10 missing is one line, and no run store or trial exists."""
    from rlinit_lib.core.data import DatasetNotFoundError
    from rlinit_lib.core.notebook import config_from_cell
    from rlinit_lib.scale_search.search import SearchConfig

    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: (_ for _ in ()).throw(OSError("offline (test)")))
    namespace = {"dataset": "cifar10", "data_root": str(tmp_path / "no-data"), "episodes": 200,
                 "output_dir": str(tmp_path / "out")}
    with pytest.raises(DatasetNotFoundError, match=r"^CIFAR-10 not found under .*cifar-10-python.tar.gz") as err:
        config_from_cell(SearchConfig, set(), namespace)
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_a_failing_notebook_does_not_stop_the_others(tmp_path, monkeypatch, capsys):
    broken = json.loads(NB.read_text())
    at = next(i for i, c in enumerate(broken["cells"]) if "config_from_cell" in "".join(c["source"]))
    broken["cells"].insert(at + 1, {"cell_type": "code", "execution_count": None, "id": "boom", "metadata": {},
                                    "outputs": [], "source": "raise RuntimeError('boom\\nsecond line')"})
    (tmp_path / "broken.ipynb").write_text(json.dumps(broken))
    # the notebook after it: 07, the smoke profile's fastest that reads nothing from 01
    root = fake_repo(tmp_path, {"01_search": smoke("01_search"), "07_formula_search": smoke("07_formula_search")},
                     {"01_search": tmp_path / "broken.ipynb"})
    monkeypatch.chdir(root)
    assert main(["--profile", "t", "--outputs-root", str(tmp_path / "out")]) == 1
    lines = capsys.readouterr().out.splitlines()
    summary = lines[lines.index(next(l for l in lines if l.startswith("notebook "))) + 1:]
    assert summary[0].split()[:2] == ["01_search", "failed"] and summary[0].endswith("RuntimeError: boom")
    assert summary[1].split()[:2] == ["07_formula_search", "ok"]
    assert (tmp_path / "out" / "07_formula_search" / "candidates.csv").exists()


def markdown_outputs(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    for c in cells:
        for o in c.get("outputs", []):
            assert o.get("output_type") != "error", f"{notebook.name}: {o.get('ename')}: {o.get('evalue')}"
    return "\n".join("".join(o["data"]["text/markdown"]) for c in cells for o in c.get("outputs", [])
                     if "text/markdown" in o.get("data", {}))


def test_the_smoke_profile_fills_every_section(smoke_outputs):
    """A fresh ``make run PROFILE=smoke``: every notebook runs, in order, and every section says something,
    03's transfer check against 02 included; executed copies keep a picture of the explorer and no stale bars."""
    text = {name: markdown_outputs(smoke_outputs / f"{name}.ipynb") for name in NOTEBOOKS}
    assert "Re-trained on 2 fresh paired seeds" in text["01_search"]
    assert "## What this run found" in text["02_proxy_fidelity"] and "Spearman rho =" in text["02_proxy_fidelity"]
    transfer = text["03_keras_validation"].split("## Transfer")[1]
    assert "Spearman rho between the proxy's and this network's per-scale accuracy:" in transfer
    assert "The proxy predicts s_proxy - 1.0 =" in transfer
    assert "- eps0_last_noise vs eps0, area under the return curve on CartPole-v1: **" in text["04_smooth_reinit"] and "GPT validation loss" in text["04_smooth_reinit"]
    assert "Smooth re-initialisation against exploration and plasticity methods" in text["04_smooth_reinit"]
    assert "Smallest effect of interest (declared before the run): **25 return points" in text["04_smooth_reinit"]
    assert "Paired over 2 repeats" in text["05_search_strategies"]
    assert "Primary comparison: the searched scale minus He (s = 1)" in text["06_init_methods"] and "## Width transfer" in text["06_init_methods"]
    for name in NOTEBOOKS:
        assert "Smallest effect of interest (declared before the run)" in text[name], name   # issue 23: the margin
        assert (smoke_outputs / name / "environment.json").exists() and (smoke_outputs / name / "config.json").exists()
        assert json.loads((smoke_outputs / name / "report.json").read_text())["verdict"]
        cells = json.loads((smoke_outputs / f"{name}.ipynb").read_text())["cells"]
        outputs = [o for c in cells for o in c.get("outputs", [])]
        assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) and "image/png" not in o["data"]
                       for o in outputs), f"{name}: a widget output without a picture"
        assert not any("%|" in "".join(o.get("text", "")) for o in outputs), f"{name}: a progress bar was left"
    explorer = [o for c in json.loads((smoke_outputs / "01_search.ipynb").read_text())["cells"]
                for o in c.get("outputs", []) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(explorer) == 1 and "need a running kernel" in "".join(explorer[0]["data"]["text/plain"])


def test_the_runner_names_unknown_notebooks_unknown_overrides_bad_profiles_and_a_wrong_folder(tmp_path, monkeypatch):
    root = fake_repo(tmp_path, {"01_search": smoke("01_search")})
    monkeypatch.chdir(root)
    with pytest.raises(SystemExit, match=r"^--only names unknown notebook '07_nothing'; known notebooks: 01_search$"):
        main(["--profile", "t", "--only", "07_nothing"])
    with pytest.raises(SystemExit, match=r"^--set names 'epochz', which no notebook of this run has as a parameter$"):
        main(["--profile", "t", "--set", "epochz=3"])
    (root / "params" / "t" / "01_search.yaml").write_text("- a\n- b\n")
    with pytest.raises(SystemExit, match=r"01_search.yaml must hold NAME: VALUE lines \(a mapping\), not a list$"):
        main(["--profile", "t"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"^run_notebooks must run inside the rlinit checkout .*: cd into the checkout"):
        main(["--profile", "t"])


def test_kernels_run_over_ipc_so_there_is_no_unencrypted_tcp_warning(tmp_path, capfd):
    """And a kernel's own noise at shut-down (here: a line written to its stderr at exit, as ipykernel's
    "Task was destroyed but it is pending!" is) goes to the notebook's kernel log, not the terminal."""
    from rlinit_lib.run_notebooks import ipc_kernel_manager

    noise = "import atexit, os; atexit.register(lambda: os.write(2, b'shutdown-noise'))"
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "c", "metadata": {}, "outputs": [],
                     "source": f"{noise}\nprint(os.getpid())"}],
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "in.ipynb").write_text(json.dumps(nb))
    pm.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), progress_bar=False,
                        kernel_manager_class=ipc_kernel_manager(tmp_path / "kernel.log"))
    out = json.loads((tmp_path / "out.ipynb").read_text())["cells"][0]["outputs"]
    assert out and "".join(out[0]["text"]).strip().isdigit()      # the kernel ran the cell
    err = capfd.readouterr().err
    assert "without encryption" not in err and "shutdown-noise" not in err
    assert "shutdown-noise" in (tmp_path / "kernel.log").read_text()


@pytest.mark.parametrize("notebook,values,message", [
    ("02_proxy_fidelity", {"epochs": 10**9}, r"^epochs must be an integer in \[1, 10000\], a bound that protects memory"),
    ("02_proxy_fidelity", {"n_scales": 10**9}, r"^n_scales must be an integer in \[3, 1000\], a bound that protects"),
    ("05_search_strategies", {"budget": 10**9}, r"^budget must be an integer in \[1, 100000\], a bound that protects"),
    ("04_smooth_reinit", {"dqn_episodes": 10**9}, r"^dqn_episodes must be an integer in \[1, 1000000\], a bound"),
    ("06_init_methods", {"seeds": 10**9}, r"^seeds must be an integer in \[2, 1000\], a bound that protects memory"),
    ("06_init_methods", {"arms": ["he", "he"]}, r"^arms must not repeat a value \(got 'he' twice"),
    ("06_init_methods", {"widths": [1.0, 1.0]}, r"^widths must not repeat a value \(got 1.0 twice"),
    ("05_search_strategies", {"strategies": ["random", "random"]}, r"^strategies must not repeat a value"),
])
def test_counts_are_bounded_and_lists_unrepeated_before_any_work(notebook, values, message):
    from rlinit_lib.core.params import ParameterError

    with pytest.raises(ParameterError, match=message) as err:
        NOTEBOOKS[notebook].from_dict(values)
    assert "\n" not in str(err.value)


def test_an_explicit_papermill_value_wins_over_the_profile_even_when_it_equals_the_default(tmp_path):
    """``papermill 01_search.ipynb out.ipynb -p profile quick -p episodes 200``: 200 is the default, and quick says
    20; the explicit value must win (issue 24)."""
    prepared = tmp_path / "in.ipynb"
    pm.execute_notebook(str(NB), str(prepared), parameters={"profile": "quick", "episodes": 200}, prepare_only=True,
                        progress_bar=False)
    cells = json.loads(prepared.read_text())["cells"]
    injected = next(c for c in cells if "injected-parameters" in c["metadata"].get("tags", []))
    from rlinit_lib.core.notebook import config_from_cell, injected_names
    from rlinit_lib.scale_search.search import SearchConfig

    namespace = {**cell_values(NB), **cell_values(prepared, "injected-parameters"),
                 "In": ["", "".join(injected["source"])]}
    assert injected_names(namespace) == {"profile", "episodes"}
    cfg = config_from_cell(SearchConfig, {"In"}, namespace)        # what the notebook's config cell does
    quick = yaml.safe_load((ROOT / "params" / "quick" / "01_search.yaml").read_text())
    merged = cfg.to_dict()
    assert quick["episodes"] != 200 and merged["episodes"] == 200 and merged["dataset"] == quick["dataset"]


def test_every_module_a_notebook_names_exists():
    """Markdown that names ``rlinit_lib.x.y`` (a module, or a function in one) must name something that imports."""
    import importlib
    import re

    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] != "markdown":
                continue
            for path in re.findall(r"`(rlinit_lib(?:\.\w+)+)`", "".join(cell["source"])):
                parts = path.split(".")
                for cut in range(len(parts), 0, -1):       # the longest importable prefix, then attributes
                    try:
                        obj = importlib.import_module(".".join(parts[:cut]))
                        break
                    except ModuleNotFoundError:
                        continue
                for name in parts[cut:]:
                    assert hasattr(obj, name), f"{nb.name} names {path}, which does not exist"
                    obj = getattr(obj, name)
