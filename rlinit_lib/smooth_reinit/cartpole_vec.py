"""CartPole-v1 for K environments at once: one NumPy array operation steps them all.

Source: Gymnasium's ``CartPoleEnv`` (classic control; Barto, Sutton & Anderson 1983): Euler
integrator, its constants, termination at |x| > 2.4 or |theta| > 12 degrees, reward 1 on every step
(the terminating step included), float64 state and float32 observation, as in Gymnasium 1.x.
The arithmetic follows Gymnasium's expressions in the same order on float64 arrays, so every member
is bit for bit the trajectory that ``gymnasium.make("CartPole-v1")`` gives for the same actions
(``tests/test_dqn_batched.py`` checks it). Resets draw the initial state exactly as
``reset(seed=s)`` does there (a fresh ``PCG64`` seeded with ``s``). Episode limits (truncation) are
left to the caller, like Gymnasium's ``TimeLimit`` wrapper.
"""
from __future__ import annotations

import math

import numpy as np

GRAVITY, MASSCART, MASSPOLE, LENGTH, FORCE_MAG, TAU = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
TOTAL_MASS = MASSPOLE + MASSCART
POLEMASS_LENGTH = MASSPOLE * LENGTH
THETA_THRESHOLD = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4


def reset_state(seed: int) -> np.ndarray:
    """The float64 initial state that Gymnasium's CartPole draws in ``reset(seed=seed)``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed))).uniform(-0.05, 0.05, size=(4,))


class CartPoleVec:
    """K independent CartPoles; ``state`` is float64 [K, 4] (x, x_dot, theta, theta_dot)."""

    def __init__(self, k: int):
        self.k = k
        self.state = np.zeros((k, 4))

    def reset(self, members: np.ndarray, seeds) -> np.ndarray:
        """Put ``members`` (indices) at Gymnasium's initial state for ``seeds``; returns all observations."""
        for m, s in zip(members, seeds):
            self.state[m] = reset_state(int(s))
        return self.state.astype(np.float32)

    def step(self, action: np.ndarray, active: np.ndarray):
        """Advance the ``active`` members (bool [K]) by ``action`` (0/1 [K]); the others keep their state.
        Returns the float32 observation [K, 4], the reward [K] (1.0 for every active member, the
        terminating step included; 0.0 for the others) and ``terminated`` [K] (False for inactive members).
        With one or two active members, each is stepped with Gymnasium's scalar code:
        a NumPy call costs more than the arithmetic there."""
        members = np.flatnonzero(active)
        if members.size <= 2:
            for m in members:
                self.state[m] = scalar_step(*self.state[m].tolist(), int(action[m]))
        else:
            force = np.where(action == 1, FORCE_MAG, -FORCE_MAG)
            np.copyto(self.state, np.stack(euler_step(*self.state.T, force), 1), where=active[:, None])
        # |x| > limit is (x < -limit) | (x > limit), Gymnasium's test, NaN included
        terminated = (np.abs(self.state[:, 0]) > X_THRESHOLD) | (np.abs(self.state[:, 2]) > THETA_THRESHOLD)
        terminated &= active
        return self.state.astype(np.float32), active.astype(np.float64), terminated


def euler_step(x, x_dot, theta, theta_dot, force) -> tuple:
    """One Euler step of Gymnasium's CartPole, its expressions in its order, on floats or float64 arrays."""
    costheta, sintheta = np.cos(theta), np.sin(theta)
    temp = (force + POLEMASS_LENGTH * np.square(theta_dot) * sintheta) / TOTAL_MASS
    thetaacc = (GRAVITY * sintheta - costheta * temp) / (LENGTH * (4.0 / 3.0 - MASSPOLE * np.square(costheta) / TOTAL_MASS))
    xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS
    return x + TAU * x_dot, x_dot + TAU * xacc, theta + TAU * theta_dot, theta_dot + TAU * thetaacc


def scalar_step(x: float, x_dot: float, theta: float, theta_dot: float, action: int) -> tuple:
    """``euler_step`` for one CartPole and one action (0/1)."""
    return euler_step(x, x_dot, theta, theta_dot, FORCE_MAG if action == 1 else -FORCE_MAG)
