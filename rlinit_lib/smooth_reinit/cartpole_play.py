"""CartPole episodes played in compiled code (numba): the batched DQN's acting loop for runs whose acting
weights stay fixed through an episode.

Between two rounds of updates a run's Q-network does not change unless weight noise is live on it, so such a
run can play its whole episode without returning to Python: greedy action (the MLP forward), epsilon's
pre-drawn block, Gymnasium's CartPole step (``cartpole_vec.euler_step`` itself, compiled: float64, the C
library's sine and cosine), the replay row and the episode's end, the same arithmetic
``BatchedDQN.step`` does with NumPy for many runs at once. Per time step that is a few microseconds instead of
a few hundred (``BENCHMARKS.md``).

Two things stay in Python, and :func:`play_cartpole` stops a run where it needs them (``status``):
- ``DRAW``: the run is at the first step of a block of ``DRAW_BLOCK`` exploration draws that has not been drawn
  (its generator is a NumPy ``Generator``); the caller draws it, sets ``ready`` and calls again;
- ``TIE``: the two Q-values are closer than ``TIE`` times the output layer's sum of |terms|, or not finite, or
  some layer's sum of |terms| is near float32's largest value (there float32 sums may overflow where float64's do
  not). The forward here is the float32 weights' forward in float64, which is nearer the exact value than
  ``nn.Linear``'s float32 sums; at a near tie the faithful path's action can differ, so the caller computes it
  with the faithful forward (``GreedyPolicy.one_network``), sets ``forced`` and calls again. The same margin
  (``dqn_batched.TIE``, about 500x the largest difference measured) guards NumPy's forward.

The sines and cosines are the C library's, as Gymnasium's ``np.cos``/``np.sin`` of a Python float call them.
The functions are compiled once per process (about 2-3 s) and not cached on disk: numba's cache would not notice
a change in ``cartpole_vec``, whose step and constants are compiled in.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from rlinit_lib.smooth_reinit.cartpole_vec import FORCE_MAG, THETA_THRESHOLD, X_THRESHOLD, euler_step

ENDED, DRAW, TIE_STOP = 0, 1, 2     # status of a run when play_cartpole returns
_euler_step = numba.njit(euler_step)
OVERFLOW = 1e37     # a layer's sum of |terms| above this stops the forward (float32's largest value: 3.4e38)


def fast_weights(w: dict, b: dict, ks: np.ndarray) -> tuple:
    """float64 copies of the MLP of runs ``ks`` for :func:`play_cartpole`: hidden layers transposed
    ([M, in, out], so the inner loop runs over contiguous outputs), the output layer as it is ([M, actions,
    in]), biases [M, out], and ``reach`` [M, 2]: per hidden layer the largest row sum of |weights| + |bias|, which
    times max(1, largest |input|) bounds the layer's sums of |terms|. ``w``/``b``: layer -> [K, out, in] /
    [K, out, 1] (``GreedyPolicy``'s host views)."""
    out, reach = [], []
    for layer in ("fc1", "fc2"):
        wl, bl = w[layer][ks], b[layer][ks, :, 0]
        out += [np.ascontiguousarray(wl.transpose(0, 2, 1), dtype=np.float64), bl.astype(np.float64)]
        reach.append((np.abs(wl).sum(2, dtype=np.float64) + np.abs(bl)).max(1))
    return (*out, np.ascontiguousarray(w["fc3"][ks], dtype=np.float64),
            np.ascontiguousarray(b["fc3"][ks, :, 0], dtype=np.float64), np.stack(reach, 1))


@numba.njit
def _greedy(m, x, w1t, b1, w2t, b2, w3, b3, reach, skip, h1, h2, tie):
    """(action, ok) of network m for observation x: ok is False at a near tie, a non-finite Q-value or a sum
    that float32 might not hold."""
    n1, n2 = b1.shape[1], b2.shape[1]
    top = 1.0
    for j in range(n1):
        h1[j] = b1[m, j]
    for i in range(x.shape[0]):
        xi = np.float64(x[i])
        top = max(top, abs(xi))
        for j in range(n1):
            h1[j] += w1t[m, i, j] * xi
    if not reach[m, 0] * top < OVERFLOW:
        return 0, False
    top = 1.0
    for j in range(n1):
        h1[j] = max(h1[j], 0.0)
        top = max(top, h1[j])
    if not reach[m, 1] * top < OVERFLOW:
        return 0, False
    for j in range(n2):
        h2[j] = b2[m, j]
    for i in range(n1):
        hi = h1[i]
        for j in range(n2):
            h2[j] += w2t[m, i, j] * hi
    for j in range(n2):
        h2[j] = max(h2[j], 0.0)
        if skip:
            h2[j] += h1[j]
    best, second, bound, action = -np.inf, -np.inf, 0.0, 0
    for a in range(w3.shape[1]):
        q, s = b3[m, a], abs(b3[m, a])
        for j in range(n2):
            q += w3[m, a, j] * h2[j]
            s += abs(w3[m, a, j]) * h2[j]
        if not (math.isfinite(q) and s < OVERFLOW):
            return 0, False
        bound = max(bound, s)
        if q > best:
            best, second, action = q, best, a
        elif q > second:
            second = q
    return action, best - second > tie * bound


@numba.njit
def play_cartpole(ks, slots, w1t, b1, w2t, b2, w3, b3, reach, skip, state, obs, explore, t, max_steps, ready, forced,
                  data, pos, size, total, playing, waiting, status, tie):
    """Play each run ``ks[i]`` (network ``slots[i]`` of the ``fast_weights`` arrays) until its episode ends or it
    needs the caller (``status[i]``: ENDED, DRAW, TIE_STOP). The arrays are ``BatchedDQN``'s, changed in place:
    ``state`` float64 [K, 4], ``obs`` float32 [K, 4], ``explore`` [K, block] (action, or -1: greedy), ``t``,
    ``max_steps``, ``ready`` (the block at ``t`` is drawn), ``forced`` (greedy action given by the caller, or -1),
    the replay rings ``data`` [K, capacity, 11], ``pos``, ``size``, ``total``, ``playing``, ``waiting``."""
    n1, n2 = b1.shape[1], b2.shape[1]
    h1, h2 = np.empty(n1), np.empty(n2)
    block, capacity = explore.shape[1], data.shape[1]
    for n in range(ks.shape[0]):
        k, m = ks[n], slots[n]
        x0, x1, x2, x3 = state[k, 0], state[k, 1], state[k, 2], state[k, 3]
        while True:
            i = t[k] % block
            if i == 0 and not ready[k]:
                status[n] = DRAW
                break
            a = explore[k, i]
            if a < 0:
                if forced[k] >= 0:
                    a, forced[k] = forced[k], -1
                else:
                    a, ok = _greedy(m, obs[k], w1t, b1, w2t, b2, w3, b3, reach, skip[k], h1, h2, tie)
                    if not ok:
                        status[n] = TIE_STOP
                        break
            ready[k] = False
            x0, x1, x2, x3 = _euler_step(x0, x1, x2, x3, FORCE_MAG if a == 1 else -FORCE_MAG)
            over = abs(x0) > X_THRESHOLD or abs(x2) > THETA_THRESHOLD    # False for NaN, as in Gymnasium
            row = data[k, pos[k]]
            for j in range(4):
                row[j] = obs[k, j]
            row[4], row[5] = a, 1.0
            obs[k, 0], obs[k, 1], obs[k, 2], obs[k, 3] = x0, x1, x2, x3
            for j in range(4):
                row[6 + j] = obs[k, j]
            row[10] = 0.0 if over else 1.0
            pos[k] = (pos[k] + 1) % capacity
            size[k] = min(size[k] + 1, capacity)
            t[k] += 1
            total[k] += 1.0
            if over or t[k] >= max_steps[k]:
                playing[k], waiting[k], status[n] = False, True, ENDED
                break
        state[k, 0], state[k, 1], state[k, 2], state[k, 3] = x0, x1, x2, x3
