"""ScaleEnv: choosing the He-normal scale as a one-step Gymnasium environment.

Source: the dissertation, Sec. 3.4. One action = one scale ``s`` in
``[min_scale, max_scale]``; the environment trains a fresh SimpleCNN initialised with
``std = s * sqrt(2 / fan_in)`` for ``epochs`` epochs (the proxy) and pays
``10 * test accuracy``, or ``-2`` if the loss became NaN/inf. Every episode is one step.
The observation is (previous scale, previous reward); ``reset`` draws the scale
uniformly and sets the reward to 0, as the dissertation does.

Deviation: the reward bound of the observation box is 10 as the text says (the
appendix code used 1.0, which rewards up to 10 violate). Each child training gets a
seed drawn from the environment's RNG, so ``reset(seed=...)`` makes a step reproducible;
``child_seed`` fixes it instead (common random numbers: only the scale varies).
"""
from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np

from rlinit_lib.core.data import DATASETS, DEFAULT_VAL_SIZE, ImageData, load_dataset
from rlinit_lib.initialisation.activations import ACTIVATIONS
from rlinit_lib.children.child import MAX_REWARD, NAN_REWARD, reward_of  # noqa: F401 (re-exported)
from rlinit_lib.children.training import TrainResult, train_and_evaluate
from rlinit_lib.core.params import (ParameterError, check_choice, check_float, check_int, check_optional_int,
                                    check_scale_range)


Evaluator = Callable[[float, int], TrainResult]


class ScaleEnv(gym.Env):
    """Gymnasium environment whose single action is the initialisation scale."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        dataset: str = "cifar10",
        epochs: int = 7,
        min_scale: float = 0.3,
        max_scale: float = 1.7,
        *,
        data_root: str = "data",
        train_subset: int | None = None,
        test_subset: int | None = None,
        val_size: int | None = DEFAULT_VAL_SIZE,
        reward_split: str = "val",
        batch_size: int = 128,
        lr: float = 1e-3,
        activation: str = "silu",
        device: str | None = None,
        child_seed: int | None = None,
        data: ImageData | None = None,
        evaluator: Evaluator | None = None,
        on_epoch: Callable[[int, dict], None] | None = None,
    ):
        super().__init__()
        check_scale_range(min_scale, max_scale)
        check_int("epochs", epochs, low=1)
        check_choice("dataset", dataset, DATASETS)
        check_optional_int("child_seed", child_seed, low=0)
        self.reward_split = check_choice("reward_split", reward_split, ("val", "test"))
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.child_seed = child_seed
        self.action_space = gym.spaces.Box(self.min_scale, self.max_scale, (1,), np.float32)
        self.observation_space = gym.spaces.Box(
            np.array([self.min_scale, NAN_REWARD], np.float32),
            np.array([self.max_scale, MAX_REWARD], np.float32),
        )
        if evaluator is None:
            if data is None:
                data = load_dataset(dataset, data_root, train_subset=train_subset, test_subset=test_subset,
                                    val_size=val_size)
            if reward_split == "val" and data.x_val is None:
                raise ParameterError("reward_split 'val' needs data with a validation split (load it with val_size)")
            train_kw = dict(epochs=epochs, data=data, batch_size=batch_size, lr=lr,
                            activation=activation, device=device, on_epoch=on_epoch)
            # validate the training arguments now rather than at the first step
            check_int("batch_size", batch_size, low=1)
            check_float("lr", lr, low=0.0, low_open=True)
            check_choice("activation", activation, ACTIVATIONS)
            evaluator = lambda scale, seed: train_and_evaluate(scale, seed=seed, **train_kw)  # noqa: E731
        self.evaluator = evaluator
        self.data = data
        self._obs = np.array([self.min_scale, 0.0], np.float32)
        self.last_result: TrainResult | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        scale = self.np_random.uniform(self.min_scale, self.max_scale)
        if options and "scale" in options:
            scale = float(np.clip(options["scale"], self.min_scale, self.max_scale))
        self._obs = np.array([scale, 0.0], np.float32)
        return self._obs.copy(), {}

    def clip(self, action) -> float:
        return float(np.clip(np.asarray(action, np.float64).reshape(-1)[0], self.min_scale, self.max_scale))

    def draw_child_seed(self) -> int:
        """The seed of this episode's child training (drawn from the RNG that ``reset(seed=...)`` set)."""
        return self.child_seed if self.child_seed is not None else int(self.np_random.integers(0, 2**31 - 1))

    def step(self, action):
        scale = self.clip(action)
        seed = self.draw_child_seed()
        return self.record_step(scale, seed, self.evaluator(scale, seed))

    def record_step(self, scale: float, seed: int, result: TrainResult):
        """Finish a step whose child training ran elsewhere (a search trains its episodes as trials of the run
        store: reset, ``clip``, ``draw_child_seed``, the trial, then ``record_step``). Same return as ``step``."""
        reward = reward_of(result, self.reward_split)
        self._obs = np.array([scale, reward], np.float32)
        info = {
            "scale_factor": scale,
            "accuracy": float(result.test_accuracy),
            "val_accuracy": float(result.val_accuracy),
            "nan_detected": bool(result.nan_detected),
            "child_seed": seed,
        }
        self.last_result = result  # the full TrainResult (losses, wall time) of this step
        return self._obs.copy(), reward, True, False, info
