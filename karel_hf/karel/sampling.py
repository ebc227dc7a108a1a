"""Seeded, vectorised, streaming corpus generator (PROTOCOL.md sections 1-2).

What one example is:

- a program whose length (number of action nodes) is uniform over `min_length..max_length`, with
  exactly `num_programs / L` programs per length (the remainder going to the first lengths), the
  lengths shuffled by one seeded global permutation;
- `num_pairs` random input worlds: each interior cell a wall with p = `wall_ratio`; the robot on a
  uniformly drawn interior cell (cleared of wall) facing N/E/S/W uniformly; each free interior cell
  except the robot's holding one marker with p = `marker_ratio`;
- the outputs of running the program on them, and the robot's trace on every input.

Randomness is counter-based: value number `slot` of example `i` is SplitMix64(key + counter * GAMMA)
with `counter = i * stride + slot` and `key` derived from the seed and the stream (worlds, actions).
Example `i` therefore depends only on (config, i), never on the batch boundaries or the number of
workers, and every array is computed for a whole batch at once with NumPy. One 64-bit hash per
interior cell gives the wall bit (low 32 bits) and the marker bit (high 32 bits); one more per world
places the robot (multiply-shift of the low half by the number of cells) and turns it (the two top
bits of the high half); one per program position draws the action (low half against cumulative
32-bit thresholds of `action_weights`).

Straight-line programs run vectorised: step k applies action k of every program to all of its
worlds at once, on flat (batch * pairs * height * width) wall and marker arrays. Extended programs
(`extended=True`: if / ifelse / repeat / while) are sampled per example from
`np.random.default_rng([seed, index])` and run with the AST interpreter.

Pure Python + NumPy (no torch, transformers or datasets).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Iterator

import numpy as np

from .interpreter import execute
from .program import ACTIONS, CONDITIONS, Action, Condition, If, Program, Repeat, While, format_program, walk
from .world import (
    DX,
    DY,
    MARKER_CODE_OFFSET,
    MAX_VISIBLE_MARKERS,
    ROBOT_CODE_OFFSET,
    WALL_CODE,
    World,
    WorldFormatError,
)

MOVE, TURN_LEFT, TURN_RIGHT, PUT_MARKER, PICK_MARKER = range(len(ACTIONS))
# Largest values the int8 arrays can hold safely (markers grow by at most one per action).
MAX_PROGRAM_LENGTH = 100
MAX_GRID_SIDE = 64
# Extended programs: step budget (executed actions + evaluated conditions) of one run; programs
# that exhaust it on any input are resampled. The trace arrays of extended batches have
# EXTENDED_STEP_BUDGET + 1 columns.
EXTENDED_STEP_BUDGET = 100
EXTENDED_MAX_DEPTH = 2
MAX_ATTEMPTS = 1000
HELDOUT_ROLES = ("none", "exclude", "only")

# ------------------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class CorpusConfig:
    """One corpus: how many programs, their lengths, the worlds, the seed."""

    num_programs: int
    min_length: int = 1
    max_length: int = 10
    num_pairs: int = 10
    height: int = 8
    width: int = 8
    wall_ratio: float = 0.1
    marker_ratio: float = 0.1
    action_weights: tuple = (5, 3, 3, 2, 2)  # order = karel.program.ACTIONS
    extended: bool = False  # programs with if/ifelse/repeat/while
    seed: int = 0
    # Program-disjoint splits: a program (its action sequence) is held out iff
    # program_hash(heldout_key, actions) < heldout_fraction * 2^64. heldout_role "exclude" (training
    # split) redraws held-out programs, "only" (evaluation splits) redraws all others, "none" keeps all.
    heldout_fraction: float = 0.0
    heldout_role: str = "none"
    heldout_key: int = 0

    def __post_init__(self):
        _check_int("num_programs", self.num_programs, 1, None, "use a positive number of programs")
        _check_int("min_length", self.min_length, 1, MAX_PROGRAM_LENGTH, "programs need at least one action")
        _check_int("max_length", self.max_length, self.min_length, MAX_PROGRAM_LENGTH,
                   f"use min_length <= max_length <= {MAX_PROGRAM_LENGTH}")
        _check_int("num_pairs", self.num_pairs, 1, 1000, "use 1..1000 input/output pairs")
        for name in ("height", "width"):
            _check_int(name, getattr(self, name), 3, MAX_GRID_SIDE,
                       f"the grid (border included) must be 3..{MAX_GRID_SIDE} cells")
        for name in ("wall_ratio", "marker_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"CorpusConfig.{name} must be a probability in [0, 1], got {value!r}")
        weights = tuple(self.action_weights) if isinstance(self.action_weights, (list, tuple, np.ndarray)) else None
        if (
            weights is None
            or len(weights) != len(ACTIONS)
            or any(isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) for w in weights)
            or any(not np.isfinite(w) or w < 0 for w in weights)
            or sum(weights) <= 0
        ):
            raise ValueError(
                f"CorpusConfig.action_weights must be {len(ACTIONS)} non-negative numbers with a positive sum, "
                f"one per action in the order {ACTIONS}; got {self.action_weights!r}"
            )
        object.__setattr__(self, "action_weights", tuple(weights))
        if not isinstance(self.extended, bool):
            raise ValueError(f"CorpusConfig.extended must be True or False, got {self.extended!r}")
        _check_int("seed", self.seed, 0, 2**63 - 1, "use a non-negative integer seed")
        value = self.heldout_fraction
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ValueError(f"CorpusConfig.heldout_fraction must be in [0, 1), got {value!r}")
        if self.heldout_role not in HELDOUT_ROLES:
            raise ValueError(f"CorpusConfig.heldout_role must be one of {HELDOUT_ROLES}, got {self.heldout_role!r}")
        if self.heldout_role != "none" and self.heldout_fraction == 0.0:
            raise ValueError("CorpusConfig.heldout_role needs heldout_fraction > 0")
        if self.heldout_role != "none" and self.extended:
            raise ValueError("CorpusConfig.heldout_role: held-out programs are defined for straight-line corpora only")
        _check_int("heldout_key", self.heldout_key, 0, 2**63 - 1, "use a non-negative integer key")
        if self.heldout_role != "none":
            for length in range(self.min_length, self.max_length + 1):
                mass = heldout_mass(self, length)
                side = None if mass is None else (mass if self.heldout_role == "only" else 1.0 - mass)
                if side is not None and side < 1e-3:
                    raise ValueError(
                        f"CorpusConfig.heldout_fraction: length {length} has (almost) no "
                        f"{'held-out' if self.heldout_role == 'only' else 'training'} programs "
                        f"(held-out probability mass {mass:.4f}); narrow this split's lengths "
                        "(eval_min_length) or change heldout_fraction"
                    )

    @property
    def num_lengths(self) -> int:
        return self.max_length - self.min_length + 1

    @property
    def trace_steps(self) -> int:
        """T: the trace arrays hold T + 1 columns."""
        return EXTENDED_STEP_BUDGET if self.extended else self.max_length

    @classmethod
    def field_names(cls) -> tuple:
        return tuple(f.name for f in fields(cls))


def _check_int(name, value, low, high, fix):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"CorpusConfig.{name} must be an integer, got {value!r}; {fix}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"CorpusConfig.{name} must be {bounds}, got {value}; {fix}")


# ------------------------------------------------------------------------------------- batch
@dataclass
class ProgramBatch:
    """Examples [start, stop) of a corpus; n = stop - start, P = num_pairs, h x w = interior.

    T = config.trace_steps: max_length for straight-line corpora, EXTENDED_STEP_BUDGET for extended
    ones. Trace column 0 is the initial robot state, column k the state after the k-th executed
    action. For extended programs `actions` lists the text's action nodes, not the executed ones.
    """

    index: np.ndarray  # (n,) int64 global example indices
    lengths: np.ndarray  # (n,) int16 action nodes in the program text
    programs: list  # n program texts, format_program(p, "lines")
    actions: np.ndarray  # (n, max_length) int8 action codes of the text's action nodes, -1 padded
    inputs: np.ndarray  # (n, P, h, w) int8 view codes
    outputs: np.ndarray  # (n, P, h, w) int8 view codes
    trace_x: np.ndarray  # (n, P, T + 1) int8 grid column (border included); -1 after the run
    trace_y: np.ndarray  # (n, P, T + 1) int8 grid row
    trace_dir: np.ndarray  # (n, P, T + 1) int8 direction (0 = north .. 3 = west)
    trace_len: np.ndarray  # (n, P) int16 executed actions

    def __len__(self) -> int:
        return len(self.index)

    def input_world(self, i: int, pair: int) -> World:
        return World.from_view_codes(self.inputs[i, pair])

    def output_world(self, i: int, pair: int) -> World:
        return World.from_view_codes(self.outputs[i, pair])

    @classmethod
    def concatenate(cls, batches) -> ProgramBatch:
        """One batch from consecutive batches (for small corpora and tests)."""
        batches = list(batches)
        if not batches:
            raise ValueError("concatenate() needs at least one batch")
        arrays = {
            f.name: np.concatenate([getattr(b, f.name) for b in batches])
            for f in fields(cls)
            if f.name != "programs"
        }
        return cls(programs=[p for b in batches for p in b.programs], **arrays)


def to_worlds(codes) -> World | list:
    """World(s) from view codes: a (h, w) array gives one World, (..., h, w) nested lists of them."""
    codes = np.asarray(codes)
    if codes.ndim == 2:
        return World.from_view_codes(codes)
    if codes.ndim < 2:
        raise ValueError(f"view codes need at least 2 dimensions (h, w), got shape {codes.shape}")
    return [to_worlds(c) for c in codes]


# -------------------------------------------------------------------------- counter-based hash
_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_LO, _HI = (0, 1) if sys.byteorder == "little" else (1, 0)  # halves of a uint64 viewed as 2 x uint32
_CHUNK = 1 << 16  # hash this many values at a time so the temporaries stay in cache
_ARANGE_GAMMA = np.arange(_CHUNK, dtype=np.uint64) * np.uint64(_GAMMA)  # (CHUNK,) j * GAMMA mod 2^64
_STREAM_WORLDS, _STREAM_ACTIONS = 1, 2


def _splitmix(x: int) -> int:
    """SplitMix64 on a Python int (exact; used for keys)."""
    z = (x + _GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def _stream_key(seed: int, stream: int, attempt: int = 0) -> int:
    return _splitmix(_splitmix(_splitmix(seed) ^ stream) ^ attempt)


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


def _halves(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) uint32 views of (..., ) uint64 hashes, each shaped like `hashes`."""
    pairs = hashes.view(np.uint32).reshape(*hashes.shape, 2)
    return pairs[..., _LO], pairs[..., _HI]


def _bernoulli(u32: np.ndarray, p: float) -> np.ndarray:
    """Bool array, True with probability p (to 2^-32) for uniform uint32 input."""
    threshold = int(round(p * 2**32))
    if threshold >= 2**32:
        return np.ones(u32.shape, dtype=bool)
    return u32 < np.uint32(threshold)


def _action_thresholds(weights) -> np.ndarray:
    """(4,) uint64 cumulative thresholds: action = number of thresholds <= a uniform uint32."""
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))[:-1] / float(np.sum(weights))
    return np.minimum(np.round(cumulative * 2**32), 2**32).astype(np.uint64)


def _draw_actions(u32: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """int8 action codes from uniform uint32 values (same shape)."""
    u = u32.astype(np.uint64)
    codes = np.zeros(u.shape, dtype=np.int8)
    for t in thresholds:
        codes += u >= t
    return codes


def program_hash(key: int, actions: np.ndarray) -> np.ndarray:
    """(n,) uint64 keyed hash of each program's action sequence, from (n, T) codes (-1 = padding).

    Depends only on the key and the actions before the first -1, so the same program hashes alike
    in corpora of any max_length (training and evaluation splits agree on what is held out).
    """
    actions = np.asarray(actions)
    n = actions.shape[0]
    h = np.full(n, np.uint64(_splitmix(key)), dtype=np.uint64)
    live = np.ones(n, dtype=bool)
    s30, s27, s31 = np.uint64(30), np.uint64(27), np.uint64(31)
    m1, m2, gamma = np.uint64(_MIX1), np.uint64(_MIX2), np.uint64(_GAMMA)
    with np.errstate(over="ignore"):
        for t in range(actions.shape[1]):
            a = actions[:, t].astype(np.int64)
            live &= a >= 0
            z = (h ^ (a + 1).astype(np.uint64)) + gamma
            z = (z ^ (z >> s30)) * m1
            z = (z ^ (z >> s27)) * m2
            z = z ^ (z >> s31)
            h = np.where(live, z, h)
    return h


def _heldout_threshold(fraction: float) -> np.uint64:
    return np.uint64(min(int(round(fraction * 2.0**64)), 2**64 - 1))


def is_heldout(config: "CorpusConfig", actions: np.ndarray) -> np.ndarray:
    """(n,) bool: the program of each row of (n, T) action codes is held out under `config`."""
    if config.heldout_fraction == 0.0:
        return np.zeros(len(actions), dtype=bool)
    return program_hash(config.heldout_key, actions) < _heldout_threshold(config.heldout_fraction)


def _wrong_side(config: "CorpusConfig", actions: np.ndarray) -> np.ndarray:
    """(n,) bool: the program may not appear in this split (held out in training, or not held out in evaluation)."""
    if config.heldout_role == "none":
        return np.zeros(len(actions), dtype=bool)
    held = is_heldout(config, actions)
    return held if config.heldout_role == "exclude" else ~held


_MASS_ENUMERATION_LIMIT = 5**8


@lru_cache(maxsize=256)
def _heldout_mass(key: int, fraction: float, weights: tuple, length: int) -> float | None:
    k = len(weights)
    if k**length > _MASS_ENUMERATION_LIMIT:
        return None
    codes = np.indices((k,) * length).reshape(length, -1).T.astype(np.int8)  # every program of this length
    p = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    prob = p[codes].prod(axis=1)
    held = program_hash(key, codes) < _heldout_threshold(fraction)
    return float(prob[held].sum())


def heldout_mass(config: "CorpusConfig", length: int) -> float | None:
    """Probability that a random program of `length` actions is held out (None: too many to enumerate)."""
    return _heldout_mass(config.heldout_key, float(config.heldout_fraction), tuple(float(w) for w in config.action_weights), int(length))


# ----------------------------------------------------------------------------- program lengths
@lru_cache(maxsize=8)
def _length_table(num_programs: int, min_length: int, max_length: int, seed: int) -> np.ndarray:
    """(num_programs,) int16: the length of every example, exact counts per length, shuffled."""
    num_lengths = max_length - min_length + 1
    counts = np.full(num_lengths, num_programs // num_lengths, dtype=np.int64)
    counts[: num_programs % num_lengths] += 1
    ordered = np.repeat(np.arange(min_length, max_length + 1, dtype=np.int16), counts)
    rng = np.random.Generator(np.random.Philox(seed))
    table = rng.permutation(ordered)
    table.setflags(write=False)
    return table


def program_lengths(config: CorpusConfig, start: int = 0, stop: int | None = None) -> np.ndarray:
    """(stop - start,) int16 program lengths of examples [start, stop)."""
    stop = config.num_programs if stop is None else stop
    table = _length_table(config.num_programs, config.min_length, config.max_length, config.seed)
    return table[start:stop].copy()


# ------------------------------------------------------------------------------ random worlds
@dataclass
class _Worlds:
    """Input worlds of a batch; N = n * P worlds, c = h * w interior cells."""

    walls: np.ndarray  # (N, c) bool interior walls
    markers: np.ndarray  # (N, c) bool interior markers (0 or 1)
    robot: np.ndarray  # (N,) int64 robot cell, index into the c interior cells
    direction: np.ndarray  # (N,) int8


def _sample_worlds(config: CorpusConfig, start: int, stop: int) -> _Worlds:
    cells = (config.height - 2) * (config.width - 2)
    per_world = cells + 1  # one hash per interior cell + one for the robot
    num_worlds = (stop - start) * config.num_pairs
    key = _stream_key(config.seed, _STREAM_WORLDS)
    hashes = hash_range(key, start * config.num_pairs * per_world, num_worlds * per_world)
    low, high = _halves(hashes.reshape(num_worlds, per_world))  # (N, c + 1) uint32 each
    robot = (low[:, cells].astype(np.uint64) * np.uint64(cells)) >> np.uint64(32)  # (N,) in [0, c)
    robot = robot.astype(np.int64)
    direction = (high[:, cells] >> np.uint32(30)).astype(np.int8)  # (N,) in [0, 4)
    rows = np.arange(num_worlds)
    walls = _bernoulli(low[:, :cells], config.wall_ratio)  # (N, c)
    walls[rows, robot] = False
    markers = _bernoulli(high[:, :cells], config.marker_ratio) & ~walls  # (N, c)
    markers[rows, robot] = False
    return _Worlds(walls, markers, robot, direction)


def _view_codes(walls: np.ndarray, markers: np.ndarray, robot_cell: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """(N, c) int8 view codes from (N, c) walls / marker counts and the robot's cell and direction."""
    codes = markers.astype(np.int8)  # (N, c) marker counts; walls never hold markers
    has = codes != 0
    codes += MARKER_CODE_OFFSET - 1
    codes *= has  # k markers -> MARKER_CODE_OFFSET - 1 + k, none -> 0 (= EMPTY_CODE)
    codes += walls.view(np.int8) * np.int8(WALL_CODE)
    codes[np.arange(len(codes)), robot_cell] = ROBOT_CODE_OFFSET + direction
    return codes


# ----------------------------------------------------------------- straight-line, vectorised
def _sample_actions(config: CorpusConfig, index: np.ndarray, lengths: np.ndarray, attempt: int) -> np.ndarray:
    """(n, max_length) int8 actions of the examples `index` (any subset), -1 past each length."""
    key = _stream_key(config.seed, _STREAM_ACTIONS, attempt)
    T = config.max_length
    if len(index) == 0 or np.all(np.diff(index) == 1):  # a contiguous range: one hash call
        first = int(index[0]) if len(index) else 0
        hashes = hash_range(key, first * T, len(index) * T).reshape(len(index), T)
    else:
        hashes = np.stack([hash_range(key, int(i) * T, T) for i in index]).reshape(len(index), T)
    actions = _draw_actions(_halves(hashes)[0], _action_thresholds(config.action_weights))
    actions[np.arange(T)[None, :] >= lengths[:, None]] = -1
    return actions


def _move_table(height: int, width: int) -> np.ndarray:
    """(c, 4) int32: interior cell index change of a move from each cell in each direction.

    0 where the move would enter the border (the robot stays); interior walls are checked separately.
    """
    h, w = height - 2, width - 2
    y, x = np.divmod(np.arange(h * w), w)
    table = np.zeros((h * w, 4), dtype=np.int32)
    for d in range(4):
        inside = (0 <= x + DX[d]) & (x + DX[d] < w) & (0 <= y + DY[d]) & (y + DY[d] < h)
        table[:, d] = np.where(inside, DY[d] * w + DX[d], 0)
    return table


def _run_straight_line(config: CorpusConfig, worlds: _Worlds, actions: np.ndarray):
    """Run (n, T) actions on the n * P worlds at once.

    Returns final interior marker counts (N, c) int8, final robot cell (N,) and direction (N,),
    and the robot's interior cell / direction before the first and after every step, (n, P, T + 1).
    """
    n, T = actions.shape
    P = config.num_pairs
    c = (config.height - 2) * (config.width - 2)
    # Interior arrays of all worlds, flattened: world j occupies [j * c, (j + 1) * c).
    walls = worlds.walls.reshape(-1)  # (N * c,) bool
    markers = worlds.markers.astype(np.int8).reshape(-1)  # (N * c,) int8 counts
    base = (np.arange(n * P, dtype=np.int32) * c).reshape(n, P)  # (n, P) first cell of each world
    pos = base + worlds.robot.reshape(n, P).astype(np.int32)  # (n, P) absolute robot cell
    direction = worlds.direction.reshape(n, P).copy()  # (n, P)
    step = _move_table(config.height, config.width)  # (c, 4)
    turn = np.zeros(len(ACTIONS), dtype=np.int8)
    turn[TURN_LEFT], turn[TURN_RIGHT] = 3, 1
    trace_pos = np.empty((n, P, T + 1), dtype=np.int32)
    trace_dir = np.empty((n, P, T + 1), dtype=np.int8)
    trace_pos[:, :, 0], trace_dir[:, :, 0] = pos, direction
    for k in range(T):
        a = actions[:, k]  # (n,) action k of every program (-1 once it has ended)
        rows = np.flatnonzero(a == MOVE)
        if len(rows):
            p = pos[rows]  # (r, P)
            target = p + step[p - base[rows], direction[rows]]
            pos[rows] = np.where(walls[target], p, target)
        rows = np.flatnonzero((a == TURN_LEFT) | (a == TURN_RIGHT))
        if len(rows):
            direction[rows] = (direction[rows] + turn[a[rows]][:, None]) & 3
        rows = np.flatnonzero(a == PUT_MARKER)
        if len(rows):
            markers[pos[rows]] += 1
        rows = np.flatnonzero(a == PICK_MARKER)
        if len(rows):
            cell = pos[rows]
            count = markers[cell]
            markers[cell] = count - (count > 0)
        trace_pos[:, :, k + 1], trace_dir[:, :, k + 1] = pos, direction
    trace_pos -= base[:, :, None]  # (n, P, T + 1) interior cell
    robot = trace_pos[:, :, -1].reshape(-1)  # padded steps leave the robot in place
    return markers.reshape(n * P, c), robot, direction.reshape(-1), trace_pos, trace_dir


_MAX_VISIBLE_CODE = MARKER_CODE_OFFSET + MAX_VISIBLE_MARKERS - 1


def _overfull(codes: np.ndarray, n: int) -> np.ndarray:
    """(n,) bool: example shows a cell with more than 9 markers, from (n * P, c) view codes."""
    return (codes.reshape(n, -1) > _MAX_VISIBLE_CODE).any(axis=1) if n else np.zeros(0, dtype=bool)


def _subset(worlds: _Worlds, rows: np.ndarray, num_pairs: int) -> _Worlds:
    """The worlds of the examples `rows` (each example owns num_pairs consecutive worlds)."""
    worlds_of_rows = (rows[:, None] * num_pairs + np.arange(num_pairs)).reshape(-1)
    return _Worlds(worlds.walls[worlds_of_rows], worlds.markers[worlds_of_rows],
                   worlds.robot[worlds_of_rows], worlds.direction[worlds_of_rows])


def _straight_line(config: CorpusConfig, index: np.ndarray, lengths: np.ndarray, worlds: _Worlds):
    n, P = len(index), config.num_pairs
    inputs = _view_codes(worlds.walls, worlds.markers, worlds.robot, worlds.direction)  # (N, c)
    actions = _sample_actions(config, index, lengths, attempt=0)
    markers, robot, direction, trace_pos, trace_dir = _run_straight_line(config, worlds, actions)
    outputs = _view_codes(worlds.walls, markers, robot, direction)  # (N, c)
    # A visible cell with more than 9 markers cannot be rendered, and a program-disjoint split
    # (heldout_role) keeps each program on its side: resample those programs (same length, same
    # worlds, next attempt). Overfull cells are impossible for max_length <= 10.
    bad = np.flatnonzero(_overfull(outputs, n) | _wrong_side(config, actions))
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if not len(bad):
            break
        sub_worlds = _subset(worlds, bad, P)
        sub_actions = _sample_actions(config, index[bad], lengths[bad], attempt)
        sub_markers, sub_robot, sub_direction, sub_pos, sub_dir = _run_straight_line(config, sub_worlds, sub_actions)
        sub_outputs = _view_codes(sub_worlds.walls, sub_markers, sub_robot, sub_direction)  # (len(bad) * P, c)
        actions[bad], trace_pos[bad], trace_dir[bad] = sub_actions, sub_pos, sub_dir
        outputs.reshape(n, P, -1)[bad] = sub_outputs.reshape(len(bad), P, -1)
        bad = bad[_overfull(sub_outputs, len(bad)) | _wrong_side(config, sub_actions)]
    if len(bad):
        raise RuntimeError(
            f"{len(bad)} programs still leave more than {MAX_VISIBLE_MARKERS} markers on a visible cell "
            f"or fall on the wrong side of the held-out split after {MAX_ATTEMPTS} attempts; lower "
            "max_length or the put_marker weight, or narrow this split's lengths"
        )
    # Straight-line programs execute every action: the trace ends after `length` steps. Interior
    # cells map to grid (x, y) through lookup tables whose extra last entry is the -1 padding.
    cells, w = (config.height - 2) * (config.width - 2), config.width - 2
    done = np.arange(config.max_length + 1)[None, None, :] > lengths[:, None, None]  # (n, 1, T + 1)
    trace_pos = np.where(done, cells, trace_pos)  # (n, P, T + 1)
    column = np.append(np.arange(cells) % w + 1, -1).astype(np.int8)
    row = np.append(np.arange(cells) // w + 1, -1).astype(np.int8)
    return dict(
        actions=actions,
        programs=_lines_layout(actions),
        inputs=inputs,
        outputs=outputs,
        trace_x=column.take(trace_pos),
        trace_y=row.take(trace_pos),
        trace_dir=np.where(done, np.int8(-1), trace_dir),
        trace_len=np.repeat(lengths[:, None], P, axis=1).astype(np.int16),
    )


# Program text pieces: the five action lines, the header, and the closing brace + a separator.
_PIECES = [f"  {name}()\n" for name in ACTIONS] + ["def run() {\n", "}\0"]
_HEADER, _FOOTER = len(ACTIONS), len(ACTIONS) + 1
_PIECE_BYTES = np.frombuffer("".join(_PIECES).encode("ascii"), dtype=np.uint8)
_PIECE_LEN = np.array([len(p) for p in _PIECES], dtype=np.int64)
_PIECE_START = np.concatenate([[0], np.cumsum(_PIECE_LEN)[:-1]])


def _lines_layout(actions: np.ndarray) -> list:
    """Program texts in format_program(p, "lines") layout, assembled from (n, T) action codes.

    All texts of the batch are gathered into one byte string (pieces looked up by index), then split.
    """
    n = len(actions)
    if n == 0:
        return []
    pieces = np.empty((n, actions.shape[1] + 2), dtype=np.int64)  # (n, T + 2) piece ids, -1 = none
    pieces[:, 0], pieces[:, 1:-1], pieces[:, -1] = _HEADER, actions, _FOOTER
    ids = pieces[pieces >= 0]  # row-major: the batch's pieces in order
    lengths = _PIECE_LEN[ids]
    ends = np.cumsum(lengths)
    # Byte j of the output = piece byte (start of its piece) + (j - start of its slot).
    shift = np.repeat(_PIECE_START[ids] - (ends - lengths), lengths)
    text = _PIECE_BYTES[shift + np.arange(ends[-1])].tobytes().decode("ascii")
    return text.split("\0")[:-1]


# ---------------------------------------------------------------------- extended, per example
def sample_extended_program(rng: np.random.Generator, num_actions: int, weights,
                            max_depth: int = EXTENDED_MAX_DEPTH) -> Program:
    """A random program with exactly `num_actions` action nodes, control flow nested <= max_depth."""
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64)) / float(np.sum(weights))
    return Program(_sample_block(rng, num_actions, 0, max_depth, cumulative))


def _sample_block(rng, num_actions: int, depth: int, max_depth: int, cumulative) -> tuple:
    body = []
    while num_actions > 0:
        if depth < max_depth and rng.random() < 0.3:
            kinds = ["if", "repeat", "while"] + (["ifelse"] if num_actions >= 2 else [])
            kind = kinds[rng.integers(len(kinds))]
            inner = int(rng.integers(2 if kind == "ifelse" else 1, num_actions + 1))
            num_actions -= inner
            body.append(_sample_control(rng, kind, inner, depth + 1, max_depth, cumulative))
        else:
            # Number of cumulative weights <= u: zero-weight actions are never drawn.
            body.append(Action(ACTIONS[int(np.searchsorted(cumulative[:-1], rng.random(), side="right"))]))
            num_actions -= 1
    return tuple(body)


def _sample_control(rng, kind: str, inner: int, depth: int, max_depth: int, cumulative):
    if kind == "repeat":
        return Repeat(int(rng.integers(2, 5)), _sample_block(rng, inner, depth, max_depth, cumulative))
    condition = Condition(CONDITIONS[rng.integers(len(CONDITIONS))], bool(rng.random() < 0.5))
    if kind == "while":
        return While(condition, _sample_block(rng, inner, depth, max_depth, cumulative))
    if kind == "if":
        return If(condition, _sample_block(rng, inner, depth, max_depth, cumulative))
    split = int(rng.integers(1, inner))
    return If(condition, _sample_block(rng, split, depth, max_depth, cumulative),
              _sample_block(rng, inner - split, depth, max_depth, cumulative))


def _extended(config: CorpusConfig, index: np.ndarray, lengths: np.ndarray, worlds: _Worlds):
    n, P, T = len(index), config.num_pairs, config.trace_steps
    h, w = config.height - 2, config.width - 2
    inputs = _view_codes(worlds.walls, worlds.markers, worlds.robot, worlds.direction).reshape(n, P, h, w)
    outputs = np.empty_like(inputs)
    actions = np.full((n, config.max_length), -1, dtype=np.int8)
    traces = np.full((3, n, P, T + 1), -1, dtype=np.int8)  # x, y, direction
    trace_len = np.zeros((n, P), dtype=np.int16)
    programs = []
    for row, (i, length) in enumerate(zip(index.tolist(), lengths.tolist())):
        rng = np.random.default_rng([config.seed, i])
        starts = [_start_world(config, worlds, row * P + pair) for pair in range(P)]
        for _ in range(MAX_ATTEMPTS):
            program = sample_extended_program(rng, length, config.action_weights)
            runs = _run_all(program, starts)
            if runs is not None:
                break
        else:
            raise RuntimeError(
                f"example {i}: no valid extended program of length {length} in {MAX_ATTEMPTS} tries; "
                "lower max_length"
            )
        for pair, (result, codes) in enumerate(runs):
            outputs[row, pair] = codes
            states = [starts[pair], *result.states]
            trace_len[row, pair] = len(result.states)
            traces[:, row, pair, : len(states)] = [[s.x for s in states], [s.y for s in states],
                                                   [s.direction for s in states]]
        nodes = [ACTIONS.index(s.name) for s in walk(program.body) if isinstance(s, Action)]  # text order
        actions[row, : len(nodes)] = nodes
        programs.append(format_program(program, "lines"))
    return dict(actions=actions, programs=programs, inputs=inputs, outputs=outputs,
                trace_x=traces[0], trace_y=traces[1], trace_dir=traces[2], trace_len=trace_len)


def _start_world(config: CorpusConfig, worlds: _Worlds, j: int) -> World:
    """World object of input world j (border added)."""
    h, w = config.height - 2, config.width - 2
    walls = np.ones((config.height, config.width), dtype=bool)
    walls[1:-1, 1:-1] = worlds.walls[j].reshape(h, w)
    markers = np.zeros((config.height, config.width), dtype=np.int16)
    markers[1:-1, 1:-1] = worlds.markers[j].reshape(h, w)
    y, x = divmod(int(worlds.robot[j]), w)
    return World(walls, markers, x + 1, y + 1, int(worlds.direction[j]))


def _run_all(program: Program, starts: list):
    """[(ExecutionResult, output view codes)] per input, or None if a run fails the corpus rules."""
    runs = []
    for world in starts:
        result = execute(program, world, trace=True, max_steps=EXTENDED_STEP_BUDGET)
        if not result.completed:
            return None
        try:
            runs.append((result, result.world.view_codes()))
        except WorldFormatError:  # a visible cell with more than 9 markers
            return None
    return runs


# ----------------------------------------------------------------------------------- public API
def generate(config: CorpusConfig, start: int, stop: int) -> ProgramBatch:
    """Examples [start, stop) of the corpus `config` describes (each depends only on config and i)."""
    if not isinstance(config, CorpusConfig):
        raise TypeError(f"generate() takes a CorpusConfig, got {type(config).__name__}")
    _check_range(config, start, stop)
    start, stop = int(start), int(stop)
    index = np.arange(start, stop, dtype=np.int64)
    lengths = program_lengths(config, start, stop)
    worlds = _sample_worlds(config, start, stop)
    build = _extended if config.extended else _straight_line
    parts = build(config, index, lengths, worlds)
    shape = (len(index), config.num_pairs, config.height - 2, config.width - 2)
    parts["inputs"] = parts["inputs"].reshape(shape)
    parts["outputs"] = parts["outputs"].reshape(shape)
    return ProgramBatch(index=index, lengths=lengths, **parts)


def iter_batches(config: CorpusConfig, batch_size: int = 8192, start: int = 0,
                 stop: int | None = None) -> Iterator[ProgramBatch]:
    """Stream examples [start, stop) in batches of `batch_size` (the corpus is never held at once).

    Arguments are checked here, before the first batch is asked for.
    """
    stop = config.num_programs if stop is None else stop
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    _check_range(config, start, stop)
    return (generate(config, lo, min(lo + batch_size, stop)) for lo in range(start, stop, batch_size))


def _check_range(config: CorpusConfig, start, stop) -> None:
    integers = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (start, stop))
    if not (integers and 0 <= start <= stop <= config.num_programs):
        raise ValueError(
            f"need integers 0 <= start <= stop <= num_programs={config.num_programs}, got start={start!r}, stop={stop!r}"
        )
