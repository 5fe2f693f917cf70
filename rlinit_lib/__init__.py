"""rlinit_lib: a library for studying learned weight initialisation.

Importing the package registers the Gymnasium environment ``rlinit/ScaleEnv-v0``.
"""
import gymnasium as _gym

from .validation import ParameterError

ENV_ID = "rlinit/ScaleEnv-v0"
if ENV_ID not in _gym.registry:
    _gym.register(id=ENV_ID, entry_point="rlinit_lib.scale_env:ScaleEnv")

__all__ = ["ENV_ID", "ParameterError"]
