"""The studies, in the order the notebooks run: what ``run_notebooks``, the report site and the tests are
parametrised over. A study is a module that follows ``core.study`` (``Config``, ``QUESTION``, ``trials``,
``tables``, ``report``, ``verdicts``); registering it here gives it the runner, the report site's section,
and the resume, refusal, bad-input and every-profile tests.

A later notebook may read an earlier one's results from the profile's output root
(``core.store.read_upstream``): 03 reads 01's best scale and 02's proxy curve, 06 reads 02's best scale.
"""
from __future__ import annotations

from types import ModuleType

from rlinit_lib.core.params import Config
from rlinit_lib.core.study import check_study
from rlinit_lib.formula_search import experiment as formula_search
from rlinit_lib.init_methods import experiment as init_methods
from rlinit_lib.keras_validation import experiment as keras_validation
from rlinit_lib.scale_search import proxy_fidelity, search, strategy_comparison
from rlinit_lib.smooth_reinit import experiment as smooth_reinit

STUDIES: dict[str, ModuleType] = {
    "01_search": search,
    "02_proxy_fidelity": proxy_fidelity,
    "03_keras_validation": keras_validation,
    "04_smooth_reinit": smooth_reinit,
    "05_search_strategies": strategy_comparison,
    "06_init_methods": init_methods,
    "07_formula_search": formula_search,
}
for _name, _study in STUDIES.items():
    assert check_study(_study).Config.notebook == _name, _name

NOTEBOOKS: dict[str, type[Config]] = {name: study.Config for name, study in STUDIES.items()}
QUESTIONS: dict[str, str] = {name: study.QUESTION for name, study in STUDIES.items()}   # for the report site


def config_for(notebook: str, params: dict) -> Config:
    """The validated config of ``notebook`` for a profile's parameters (ParameterError on a bad one)."""
    if notebook not in NOTEBOOKS:
        raise KeyError(f"no config is registered for notebook {notebook!r}; known: {', '.join(NOTEBOOKS)}")
    return NOTEBOOKS[notebook].from_dict(params)
