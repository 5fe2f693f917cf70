"""The study's notebooks, their configs and the data they need: what ``run_notebooks`` checks for a
whole profile before the first notebook starts.

The notebooks run in this order; a later one may read an earlier one's results from the profile's
output root (``core.notebook.upstream_dir``): 03 reads 01's best scale and 02's proxy curve, 06 reads
02's best scale from its run store.
"""
from __future__ import annotations

from rlinit_lib.core.params import Config
from rlinit_lib.keras_validation.experiment import KerasValidationConfig
from rlinit_lib.scale_search.init_methods import InitMethodsConfig
from rlinit_lib.scale_search.proxy_fidelity import FidelityConfig
from rlinit_lib.scale_search.search import SearchConfig
from rlinit_lib.scale_search.strategy_comparison import ComparisonConfig
from rlinit_lib.smooth_reinit.experiment import SmoothReinitConfig

NOTEBOOKS: dict[str, type[Config]] = {
    "01_search": SearchConfig,
    "02_proxy_fidelity": FidelityConfig,
    "03_keras_validation": KerasValidationConfig,
    "04_smooth_reinit": SmoothReinitConfig,
    "05_search_strategies": ComparisonConfig,
    "06_init_methods": InitMethodsConfig,
}

QUESTIONS = {
    "01_search": "Does the dissertation's REINFORCE search find a He scale better than s = 1.0 when re-checked on fresh "
                 "paired seeds?",
    "02_proxy_fidelity": "Does the 7-epoch proxy rank scales like long training, and is the effect of the scale bigger "
                         "than seed noise?",
    "03_keras_validation": "Does the searched scale beat s = 1.0 on the VGG-style Keras CNN of the dissertation's Phase 2?",
    "04_smooth_reinit": "Does smooth re-initialisation help DQN and a character GPT against matched controls, and does "
                        "it act like exploration or like restored plasticity?",
    "05_search_strategies": "Does RL earn its place against random search, grids, Bayesian optimisation and successive "
                            "halving on the same budget?",
    "06_init_methods": "Does the searched scale beat the initialisers practitioners use (analytic gains, LSUV, GradInit, "
                       "MetaInit), and does it carry over across widths?",
}   # what each notebook asks, for the study's report site


def config_for(notebook: str, params: dict) -> Config:
    """The validated config of ``notebook`` for a profile's parameters (ParameterError on a bad one)."""
    if notebook not in NOTEBOOKS:
        raise KeyError(f"no config is registered for notebook {notebook!r}; known: {', '.join(NOTEBOOKS)}")
    return NOTEBOOKS[notebook].from_dict(params)


def check_data(cfg: Config) -> str:
    """Load what ``cfg`` will train on, so that a missing dataset or text fails before any training
    (DatasetNotFoundError / FileNotFoundError, saying how to get it); returns where the data was found."""
    return cfg.check_data()
