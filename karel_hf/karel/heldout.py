"""Program-disjoint splits: which straight-line programs are held out for evaluation.

A program is identified by its action-code sequence. It is *held out* iff a keyed hash of that
sequence, `program_hash(key, actions)`, falls below `fraction * 2^64`; the key is the corpus seed,
so every split of a corpus agrees on what is held out, and the same program is held out in
corpora of any `max_length` (the hash stops at the first -1 padding code). The corpus generator
(karel_hf.karel.sampling) uses it with a `role` per split: "exclude" (training: a held-out program
is drawn again), "only" (evaluation: every other program is drawn again), "none" (no split).

Short lengths have few programs (5 of length 1, 25 of length 2), so at a given fraction a length
may have no held-out program at all, or only held-out ones. `heldout_mass` gives, exactly (by
enumerating the programs of a length), the probability that a random program of that length is
held out, and `check_heldout_lengths` refuses a split whose draws would succeed too rarely to
finish within the generator's attempt limit.

`program_hash` with `IDENTITY_KEY` also names programs for counting distinct ones
(karel_hf.data.overlap).

Pure Python + NumPy.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .randomness import _GAMMA, _MIX1, _MIX2, stream_key

HELDOUT_ROLES = ("none", "exclude", "only")
STREAM_HELDOUT = 3  # the key's stream (karel_hf.karel.randomness numbers the others)
IDENTITY_KEY = 0  # the key of program identities
# A split may only use lengths whose programs fall on its side with at least this probability:
# then a draw fails all of the generator's 1000 attempts with probability < 1e-11.
MIN_SIDE_MASS = 0.025
# Lengths with more programs than this are not enumerated: their held-out mass is the fraction,
# up to a negligible spread, and is checked as such.
MASS_ENUMERATION_LIMIT = 5**8


def program_hash(key: int, actions) -> np.ndarray:
    """(n,) uint64 keyed hash of each row of (n, T) action codes, up to its first -1 (padding).

    h starts from the key's stream (`stream_key(key, STREAM_HELDOUT)`); each action a mixes in as
    h = SplitMix64(h ^ (a + 1)). A sequence hashes the same whatever padding follows it.
    """
    actions = np.asarray(actions)
    if actions.ndim != 2:
        raise ValueError(f"actions: need an (n, T) array of action codes, got shape {actions.shape}")
    n = actions.shape[0]
    h = np.full(n, stream_key(key, STREAM_HELDOUT), dtype=np.uint64)
    live = np.ones(n, dtype=bool)
    s30, s27, s31 = np.uint64(30), np.uint64(27), np.uint64(31)
    m1, m2, gamma = np.uint64(_MIX1), np.uint64(_MIX2), np.uint64(_GAMMA)
    with np.errstate(over="ignore"):
        for t in range(actions.shape[1]):
            a = actions[:, t]
            live &= a >= 0
            z = (h ^ (a.astype(np.int64) + 1).astype(np.uint64)) + gamma
            z = (z ^ (z >> s30)) * m1
            z = (z ^ (z >> s27)) * m2
            z ^= z >> s31
            h = np.where(live, z, h)
    return h


def heldout_threshold(fraction: float) -> np.uint64:
    """Hashes below this are held out: fraction * 2^64, capped to the uint64 range."""
    return np.uint64(min(int(round(fraction * 2.0**64)), 2**64 - 1))


def is_heldout(key: int, fraction: float, actions) -> np.ndarray:
    """(n,) bool: the program of each row of (n, T) action codes is held out."""
    if fraction == 0.0:
        return np.zeros(len(actions), dtype=bool)
    return program_hash(key, actions) < heldout_threshold(fraction)


@lru_cache(maxsize=256)
def heldout_mass(key: int, fraction: float, weights: tuple, length: int) -> float | None:
    """Probability that a random program of `length` actions (drawn with `weights`) is held out.

    Exact, by enumerating all 5^length programs; None when there are more than
    MASS_ENUMERATION_LIMIT of them.
    """
    k = len(weights)
    if k**length > MASS_ENUMERATION_LIMIT:
        return None
    codes = np.indices((k,) * length, dtype=np.int8).reshape(length, -1).T  # (k^length, length) every program
    p = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    probability = p[codes].prod(axis=1)
    return float(probability[is_heldout(key, fraction, codes)].sum())


def check_heldout_lengths(key: int, fraction: float, role: str, weights, min_length: int, max_length: int) -> None:
    """Raise ValueError (naming the length and the fix) if a length of min_length..max_length has too
    few programs on the split's side (held out for "only", not held out for "exclude")."""
    if role == "none":
        return
    weights = tuple(float(w) for w in weights)
    for length in range(min_length, max_length + 1):
        mass = heldout_mass(key, float(fraction), weights, length)
        held = fraction if mass is None else mass
        side = held if role == "only" else 1.0 - held
        if side < MIN_SIDE_MASS:
            what = "held-out" if role == "only" else "training (not held-out)"
            fix = ("use longer evaluation programs (a larger eval_min_length) or a larger heldout_fraction"
                   if role == "only" else "use a smaller heldout_fraction or longer training programs")
            raise ValueError(
                f"heldout_fraction={fraction}: programs of length {length} are {what} with probability "
                f"{side:.4f} (< {MIN_SIDE_MASS}), too few to draw from; {fix}"
            )


__all__ = ["HELDOUT_ROLES", "IDENTITY_KEY", "MIN_SIDE_MASS", "check_heldout_lengths", "heldout_mass",
           "heldout_threshold", "is_heldout", "program_hash"]
