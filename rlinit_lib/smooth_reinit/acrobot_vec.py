"""Acrobot-v1 for K environments at once: one NumPy array operation steps them all.

Source: Gymnasium's ``AcrobotEnv`` (classic control; Sutton 1996, Sutton & Barto's book dynamics by
default): two links, torque -1/0/+1 on the middle joint, one RK4 step of ``dt = 0.2`` per action
(Gymnasium's ``rk4`` with ``t = [0, dt]``), angles wrapped to [-pi, pi], velocities bounded to
+-4pi and +-9pi, termination when ``-cos(s0) - cos(s1 + s0) > 1.0``, reward -1 on every step and 0 on
the terminating one, observation ``[cos s0, sin s0, cos s1, sin s1, dtheta1, dtheta2]`` in float32.
Resets draw ``uniform(-0.1, 0.1, 4)`` from the generator that ``reset(seed=s)`` makes
(``gymnasium.utils.seeding.np_random``), cast to float32 as Gymnasium does; a reset without a seed
continues that member's generator, like ``env.reset()``. Truncation at 500 steps is left to the
caller, like Gymnasium's ``TimeLimit`` wrapper.

Bit for bit: every expression is Gymnasium's, in its order, on float64 arrays instead of float64
scalars. The one operation that differs between the two is the square: Gymnasium writes
``x**2`` on NumPy float64 scalars, which calls the C library's ``pow(x, 2.0)``, and that is not
always the correctly rounded ``x * x`` (glibc: about 1 in 1,000 values differ by one unit in the last
place; NumPy's array ``**`` and ``np.power`` take other routes). The dynamics are chaotic, so one
such unit grows to a different trajectory within a few hundred steps; ``square`` therefore calls
the C library's ``pow`` per element (``math.pow``), which keeps every member equal to
``gymnasium.make("Acrobot-v1")`` bit for bit (``tests/test_tasks.py`` checks long random rollouts,
observations and the float64 state). With one or two members stepping, the same functions run on
Python floats, as Gymnasium's scalar code does: NumPy calls cost more than the arithmetic there.
"""
from __future__ import annotations

import math
from itertools import repeat

import numpy as np

DT = 0.2
LINK_LENGTH_1, LINK_MASS_1, LINK_MASS_2 = 1.0, 1.0, 1.0
LINK_COM_POS_1, LINK_COM_POS_2, LINK_MOI = 0.5, 0.5, 1.0
MAX_VEL_1, MAX_VEL_2 = 4 * math.pi, 9 * math.pi
AVAIL_TORQUE = np.array([-1.0, 0.0, +1.0])
DYNAMICS = ("book", "nips")


def square(x):
    """``x**2`` as Gymnasium computes it on a float64 scalar: the C library's ``pow(x, 2.0)``."""
    if np.ndim(x) == 0:
        return x**2
    return np.fromiter(map(math.pow, x.tolist(), repeat(2.0)), np.float64, x.size)


def dsdt(theta1, theta2, dtheta1, dtheta2, a, book: bool = True) -> tuple:
    """Gymnasium's ``AcrobotEnv._dsdt`` on float64 arrays: the time derivative of the state."""
    m1, m2, l1, lc1, lc2, i1, i2, g = (LINK_MASS_1, LINK_MASS_2, LINK_LENGTH_1, LINK_COM_POS_1,
                                       LINK_COM_POS_2, LINK_MOI, LINK_MOI, 9.8)
    d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * np.cos(theta2)) + i1 + i2
    d2 = m2 * (lc2**2 + l1 * lc2 * np.cos(theta2)) + i2
    phi2 = m2 * lc2 * g * np.cos(theta1 + theta2 - math.pi / 2.0)
    phi1 = (-m2 * l1 * lc2 * square(dtheta2) * np.sin(theta2)
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * np.sin(theta2)
            + (m1 * lc1 + m2 * l1) * g * np.cos(theta1 - math.pi / 2) + phi2)
    if book:
        ddtheta2 = ((a + d2 / d1 * phi1 - m2 * l1 * lc2 * square(dtheta1) * np.sin(theta2) - phi2)
                    / (m2 * lc2**2 + i2 - square(d2) / d1))
    else:
        ddtheta2 = (a + d2 / d1 * phi1 - phi2) / (m2 * lc2**2 + i2 - square(d2) / d1)
    ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
    return dtheta1, dtheta2, ddtheta1, ddtheta2


def rk4_step(state: tuple, torque: np.ndarray, book: bool = True) -> tuple:
    """One step of Gymnasium's ``rk4`` over ``t = [0, DT]``, component by component.
    (The torque is the fifth state component there, with derivative 0: it stays ``torque``.)"""
    dt, dt2 = DT - 0, DT / 2.0
    k1 = dsdt(*state, torque, book)
    k2 = dsdt(*(y + dt2 * k for y, k in zip(state, k1)), torque, book)
    k3 = dsdt(*(y + dt2 * k for y, k in zip(state, k2)), torque, book)
    k4 = dsdt(*(y + dt * k for y, k in zip(state, k3)), torque, book)
    return tuple(y + dt / 6.0 * (a + 2 * b + 2 * c + d) for y, a, b, c, d in zip(state, k1, k2, k3, k4))


def wrap(x: np.ndarray, m: float, M: float) -> np.ndarray:
    """Gymnasium's ``wrap``: add or subtract ``M - m`` until ``m <= x <= M``."""
    diff = M - m
    while np.any(x > M):
        x = np.where(x > M, x - diff, x)
    while np.any(x < m):
        x = np.where(x < m, x + diff, x)
    return x


def bound(x: np.ndarray, m: float, M: float) -> np.ndarray:
    """Gymnasium's ``bound``: ``min(max(x, m), M)``."""
    return np.minimum(np.maximum(x, m), M)


def get_obs(state: np.ndarray) -> np.ndarray:
    """Gymnasium's ``_get_ob`` for every member: [cos s0, sin s0, cos s1, sin s1, s2, s3] in float32."""
    s0, s1, s2, s3 = state.T.copy()   # contiguous rows: the same NumPy loops as for scalars
    return np.stack([np.cos(s0), np.sin(s0), np.cos(s1), np.sin(s1), s2, s3], 1).astype(np.float32)


class AcrobotVec:
    """K independent Acrobots; ``state`` is float64 [K, 4] (theta1, theta2, dtheta1, dtheta2).

    ``dynamics`` ("book" or "nips") and ``torque_noise_max`` are Gymnasium's ``book_or_nips`` and
    ``torque_noise_max`` (defaults "book" and 0.0, as in Acrobot-v1)."""

    def __init__(self, k: int, dynamics: str = "book", torque_noise_max: float = 0.0):
        from rlinit_lib.core.params import check_choice, check_float, check_int
        self.k = check_int("k", k, low=1)
        self.book = check_choice("dynamics", dynamics, DYNAMICS) == "book"
        self.torque_noise_max = check_float("torque_noise_max", torque_noise_max, low=0.0)
        self.state = np.zeros((self.k, 4))
        self.rngs: list[np.random.Generator | None] = [None] * self.k
        self.fresh = np.zeros(self.k, dtype=bool)   # reset and not stepped since: float32 state

    def reset(self, members, seeds=None) -> np.ndarray:
        """Put ``members`` (indices) at Gymnasium's initial state, ``reset(seed=s)`` for each of
        ``seeds`` (``None``, or a ``None`` entry: continue that member's generator, like
        ``reset()``). Returns every member's observation, float32 [K, 6]."""
        seeds = [None] * len(members) if seeds is None else seeds
        for m, s in zip(members, seeds):
            if s is not None or self.rngs[m] is None:
                self.rngs[m] = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
                    None if s is None else int(s))))
            self.state[m] = self.rngs[m].uniform(low=-0.1, high=0.1, size=(4,)).astype(np.float32)
            self.fresh[m] = True
        return self.observation()

    def next_state(self, state: tuple, torque) -> list:
        """One RK4 step, angles wrapped and velocities bounded: on floats, or on float64 arrays."""
        s0, s1, s2, s3 = rk4_step(state, torque, self.book)
        return [wrap(s0, -math.pi, math.pi), wrap(s1, -math.pi, math.pi),
                bound(s2, -MAX_VEL_1, MAX_VEL_1), bound(s3, -MAX_VEL_2, MAX_VEL_2)]

    def observation(self) -> np.ndarray:
        """Every member's observation, float32 [K, 6]. A member just reset has a float32 state in
        Gymnasium, so its cos and sin are taken in float32 there, and here."""
        obs = get_obs(self.state)
        if self.fresh.any():
            obs[self.fresh] = get_obs(self.state[self.fresh].astype(np.float32))
        return obs

    def step(self, action: np.ndarray, active: np.ndarray):
        """Advance the ``active`` members (bool [K]) by ``action`` (0/1/2 [K]); the others keep their
        state. Returns the float32 observation [K, 6], the reward [K] (-1, 0 on the terminating step,
        0 for inactive members) and ``terminated`` [K] (False for inactive members)."""
        members = np.flatnonzero(active)
        torque = AVAIL_TORQUE[np.asarray(action)[members]]
        if self.torque_noise_max > 0:
            torque = torque + np.array([self.rngs[m].uniform(-self.torque_noise_max, self.torque_noise_max)
                                        for m in members])
        if members.size <= 2:   # one or two members: Gymnasium's scalar code, cheaper than NumPy calls
            for m, tq in zip(members, torque.tolist()):
                self.state[m] = self.next_state(tuple(self.state[m].tolist()), tq)
        else:
            self.state[members] = np.stack(self.next_state(tuple(self.state[members].T.copy()), torque), 1)
        self.fresh[members] = False
        s0, s1 = self.state[:, :2].T.copy()
        terminated = (-np.cos(s0) - np.cos(s1 + s0) > 1.0) & active
        reward = np.where(active & ~terminated, -1.0, 0.0)
        return self.observation(), reward, terminated
