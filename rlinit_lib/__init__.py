"""rlinit_lib: a library for studying learned weight initialisation.

Importing the package registers the Gymnasium environment ``rlinit/ScaleEnv-v0``.
"""
import gymnasium as _gym

from rlinit_lib.core.params import ParameterError

ENV_ID = "rlinit/ScaleEnv-v0"
if ENV_ID not in _gym.registry:
    _gym.register(id=ENV_ID, entry_point="rlinit_lib.scale_search.scale_env:ScaleEnv")

__all__ = ["ENV_ID", "ParameterError"]
