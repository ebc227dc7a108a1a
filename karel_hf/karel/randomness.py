"""Counter-based randomness for the corpus generator: every random value is a hash of its position.

Value number `slot` of example `i` is the SplitMix64 finalizer of `key + counter * GAMMA` with
`counter = i * stride + slot`, where `key` is derived from the seed and a stream (`STREAM_WORLDS`,
`STREAM_ACTIONS`, and the resampling attempt). Example `i` therefore depends only on (config, i),
never on batch boundaries or the number of workers, and `hash_range` computes a whole batch's values
at once with NumPy. A 64-bit hash is used as two uniform 32-bit halves (`halves`): one per interior
cell gives the wall bit (low half) and the marker bit (high half); one per world places the robot
(multiply-shift of the low half by the number of cells) and turns it (the two top bits of the high
half); one per program position draws the action (low half against cumulative 32-bit thresholds of
the action weights, `draw_actions`).

Pure Python + NumPy.
"""

from __future__ import annotations

import sys

import numpy as np

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_LO, _HI = (0, 1) if sys.byteorder == "little" else (1, 0)  # halves of a uint64 viewed as 2 x uint32
_CHUNK = 1 << 16  # hash this many values at a time so the temporaries stay in cache
_ARANGE_GAMMA = np.arange(_CHUNK, dtype=np.uint64) * np.uint64(_GAMMA)  # (CHUNK,) j * GAMMA mod 2^64
STREAM_WORLDS, STREAM_ACTIONS = 1, 2


def splitmix64(x: int) -> int:
    """SplitMix64 on a Python int (exact; used for keys)."""
    z = (x + _GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, stream: int, attempt: int = 0) -> int:
    """The key of one stream (STREAM_WORLDS, STREAM_ACTIONS) of a seed, for one resampling attempt."""
    return splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ attempt)


def hash_range(key: int, first: int, count: int) -> np.ndarray:
    """(count,) uint64 SplitMix64 finalizer of key + c * GAMMA for c in [first, first + count)."""
    out = np.empty(count, dtype=np.uint64)
    tmp = np.empty(_CHUNK, dtype=np.uint64)
    s30, s27, s31 = np.uint64(30), np.uint64(27), np.uint64(31)
    m1, m2 = np.uint64(_MIX1), np.uint64(_MIX2)
    for lo in range(0, count, _CHUNK):
        m = min(_CHUNK, count - lo)
        z, t = out[lo : lo + m], tmp[:m]
        np.add(_ARANGE_GAMMA[:m], np.uint64((key + (first + lo) * _GAMMA) & _MASK64), out=z)
        np.right_shift(z, s30, out=t)
        z ^= t
        z *= m1
        np.right_shift(z, s27, out=t)
        z ^= t
        z *= m2
        np.right_shift(z, s31, out=t)
        z ^= t
    return out


def hash_at(key: int, counters: np.ndarray) -> np.ndarray:
    """uint64 SplitMix64 finalizer of key + c * GAMMA for every counter c (any shape): `hash_range`
    for counters that are not one contiguous range."""
    counters = np.asarray(counters, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = counters * np.uint64(_GAMMA) + np.uint64(key & _MASK64)
        z ^= z >> np.uint64(30)
        z *= np.uint64(_MIX1)
        z ^= z >> np.uint64(27)
        z *= np.uint64(_MIX2)
        z ^= z >> np.uint64(31)
    return z


def halves(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) uint32 views of (..., ) uint64 hashes, each shaped like `hashes`."""
    pairs = hashes.view(np.uint32).reshape(*hashes.shape, 2)
    return pairs[..., _LO], pairs[..., _HI]


def bernoulli(u32: np.ndarray, p: float) -> np.ndarray:
    """Bool array, True with probability p (to 2^-32) for uniform uint32 input."""
    threshold = int(round(p * 2**32))
    if threshold >= 2**32:
        return np.ones(u32.shape, dtype=bool)
    return u32 < np.uint32(threshold)


def action_thresholds(weights) -> np.ndarray:
    """(4,) uint64 cumulative thresholds: action = number of thresholds <= a uniform uint32."""
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))[:-1] / float(np.sum(weights))
    return np.minimum(np.round(cumulative * 2**32), 2**32).astype(np.uint64)


def draw_actions(u32: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """int8 action codes from uniform uint32 values (same shape)."""
    u = u32.astype(np.uint64)
    codes = np.zeros(u.shape, dtype=np.int8)
    for t in thresholds:
        codes += u >= t
    return codes
