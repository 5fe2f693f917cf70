"""MinAtar Breakout for K games at once: one NumPy step advances them all.

Source: Young & Tian (2019), "MinAtar: An Atari-inspired testbed for thorough and reproducible
reinforcement learning experiments" (arXiv:1903.03176), and its package ``minatar``
(``minatar/environment.py`` and ``minatar/environments/breakout.py``, version 1.0.15): a 10x10
grid, a paddle on the bottom row, a ball that moves one cell along a diagonal per step, three rows
of bricks (refilled when all are gone and the ball reaches the bottom row), +1 per brick, the
episode ends when the ball reaches the bottom row beside the paddle. Six actions (no-op, left, up,
right, down, fire; only left and right move the paddle), sticky actions with probability 0.1 (the
previous action is repeated), observation the 10x10x4 bool channels (paddle, ball, trail, brick) of
``env.state()``.

Each member keeps its own ``numpy.random.RandomState`` and draws from it what the package draws, in
its order: one ``rand()`` per step for the sticky action (also on a finished game) and one
``randint(2)`` per reset for the ball's start (left corner moving right-down, or right corner
moving left-down). So member ``m`` reset with seed ``s`` plays exactly the game of
``env = minatar.Environment("breakout"); env.seed(s); env.reset()`` for the same actions, step for
step (``tests/test_tasks.py`` checks long random rollouts; seeds are taken modulo 2**32, as ``RandomState``
needs, here and in ``tasks.ReferenceEnv``). As in the package, the last action
(for sticky actions) is kept across resets, and seeding does not change it. Breakout has no
difficulty ramp, so ``difficulty_ramping`` changes nothing there.
"""
from __future__ import annotations

import numpy as np

GRID = 10
N_ACTIONS = 6                 # all MinAtar games expose 6 actions (Environment.num_actions)
LEFT, RIGHT = 1, 3            # action_map ['n', 'l', 'u', 'r', 'd', 'f']
PADDLE, BALL, TRAIL, BRICK = range(4)
OBS_SHAPE = (GRID, GRID, 4)
DX = np.array([-1, 1, 1, -1])     # ball_dir 0: up-left, 1: up-right, 2: down-right, 3: down-left
DY = np.array([-1, -1, 1, 1])
FLIP_X = np.array([1, 0, 3, 2])   # off a side wall
FLIP_Y = np.array([3, 2, 1, 0])   # off the top, a brick, or the paddle's middle
REVERSE = np.array([2, 3, 0, 1])  # off the paddle's edge: straight back
STARTS = ((0, 2), (GRID - 1, 3))  # (ball_x, ball_dir) for randint(2) = 0, 1


class BreakoutVec:
    """K independent MinAtar Breakout games; positions are int64 [K], ``bricks`` bool [K, 10, 10]."""

    def __init__(self, k: int, sticky_action_prob: float = 0.1, difficulty_ramping: bool = True):
        from rlinit_lib.core.params import ParameterError, check_float, check_int
        self.k = check_int("k", k, low=1)
        self.sticky_action_prob = check_float("sticky_action_prob", sticky_action_prob, low=0.0, high=1.0)
        if not isinstance(difficulty_ramping, bool):
            raise ParameterError(f"difficulty_ramping must be True or False (got {difficulty_ramping!r})")
        self.rngs: list[np.random.RandomState | None] = [None] * self.k
        self.last_action = np.zeros(self.k, dtype=np.int64)
        self.ball_x, self.ball_y, self.ball_dir, self.pos, self.last_x, self.last_y = (
            np.zeros(self.k, dtype=np.int64) for _ in range(6))
        self.bricks = np.zeros((self.k, GRID, GRID), dtype=bool)
        self.strike = np.zeros(self.k, dtype=bool)
        self.terminal = np.zeros(self.k, dtype=bool)

    def reset(self, members, seeds=None) -> np.ndarray:
        """Start a new game for ``members`` (indices): ``env.seed(s); env.reset()`` for each of
        ``seeds``, or ``env.reset()`` (the member's stream continues) where ``seeds`` or an entry of it
        is ``None``. Returns every member's observation, bool [K, 10, 10, 4]."""
        seeds = [None] * len(members) if seeds is None else seeds
        for m, s in zip(members, seeds):
            if self.rngs[m] is None:
                self.rngs[m] = np.random.RandomState()   # unseeded, like the package's
            if s is not None:
                self.rngs[m].seed(int(s) % 2**32)   # RandomState(s)'s stream (32-bit seeds), without building one
            self.ball_x[m], self.ball_dir[m] = STARTS[self.rngs[m].randint(2)]
            self.ball_y[m], self.pos[m] = 3, 4
            self.last_x[m], self.last_y[m] = self.ball_x[m], self.ball_y[m]
            self.bricks[m] = False
            self.bricks[m, 1:4, :] = True
            self.strike[m] = self.terminal[m] = False
        return self.observation()

    def observation(self) -> np.ndarray:
        """``env.state()`` of every member: bool [K, 10, 10, 4] (paddle, ball, trail, brick)."""
        obs = np.zeros((self.k,) + OBS_SHAPE, dtype=bool)
        members = np.arange(self.k)
        obs[members, self.ball_y, self.ball_x, BALL] = True
        obs[members, GRID - 1, self.pos, PADDLE] = True
        obs[members, self.last_y, self.last_x, TRAIL] = True
        obs[..., BRICK] = self.bricks
        return obs

    def step(self, action: np.ndarray, active: np.ndarray):
        """Advance the ``active`` members (bool [K]) by ``action`` (0..5 [K]); the others are left
        alone and draw nothing. Returns the observation (bool [K, 10, 10, 4]), the reward [K]
        (float, bricks broken) and ``terminated`` [K] (False for inactive members)."""
        members = np.flatnonzero(active)
        action = np.asarray(action, dtype=np.int64)[members]
        sticky = np.array([self.rngs[m].rand() for m in members]) < self.sticky_action_prob
        action = np.where(sticky, self.last_action[members], action)
        self.last_action[members] = action
        playing = ~self.terminal[members]       # a finished game draws the sticky action, then stops
        reward = np.zeros(self.k)
        reward[members[playing]] = self.advance(members[playing], action[playing])
        return self.observation(), reward, self.terminal & active

    def advance(self, m: np.ndarray, action: np.ndarray) -> np.ndarray:
        """Breakout's ``Env.act`` for members ``m`` (not terminal) and their actions; returns the rewards."""
        pos = self.pos[m]
        pos = np.where(action == LEFT, np.maximum(0, pos - 1),
                       np.where(action == RIGHT, np.minimum(GRID - 1, pos + 1), pos))
        x, y, d, strike = self.ball_x[m], self.ball_y[m], self.ball_dir[m], self.strike[m]
        nx, ny = x + DX[d], y + DY[d]
        wall = (nx < 0) | (nx > GRID - 1)
        nx, d = np.clip(nx, 0, GRID - 1), np.where(wall, FLIP_X[d], d)
        top = ny < 0
        ny, d = np.where(top, 0, ny), np.where(top, FLIP_Y[d], d)
        brick = ~top & self.bricks[m, ny, nx]
        hit = brick & ~strike                  # a brick right after a strike is passed through
        self.bricks[m[hit], ny[hit], nx[hit]] = False
        ny, d = np.where(hit, y, ny), np.where(hit, FLIP_Y[d], d)
        bottom = ~top & ~brick & (ny == GRID - 1)
        refill = bottom & ~self.bricks[m].any(axis=(1, 2))
        self.bricks[m[refill], 1:4, :] = True
        middle = bottom & (x == pos)           # the paddle is under the ball's old column
        ny, d = np.where(middle, y, ny), np.where(middle, FLIP_Y[d], d)
        edge = bottom & ~middle & (nx == pos)  # the paddle is under the ball's new column
        ny, d = np.where(edge, y, ny), np.where(edge, REVERSE[d], d)
        self.terminal[m] = bottom & ~middle & ~edge
        self.pos[m], self.strike[m] = pos, brick
        self.last_x[m], self.last_y[m] = x, y
        self.ball_x[m], self.ball_y[m], self.ball_dir[m] = nx, ny, d
        return hit.astype(np.float64)
