"""The seeded, vectorised, streaming corpus generator (docs/protocol.md §1-2): `generate` and
`iter_batches` turn a `CorpusConfig` into `ProgramBatch`es.

What one example is:

- a program whose length (number of action nodes) is uniform over `min_length..max_length`, with
  exactly `num_programs / L` programs per length (the remainder going to the first lengths), the
  lengths shuffled by one seeded global permutation (`program_lengths`);
- `num_pairs` random input worlds (karel_hf.karel.world_sampling);
- the outputs of running the program on them, and the robot's trace on every input.

Randomness is counter-based (karel_hf.karel.randomness): example `i` depends only on (config, i),
never on the batch boundaries or the number of workers, and every array is computed for a whole
batch at once with NumPy. Straight-line programs draw one action per program position and run on
all of their worlds at once with the interpreter's batched twin (karel_hf.karel.batched); their
texts come from the "lines" printer's batched twin (`format_lines_batch`). Extended programs
(`extended=True`: if / ifelse / repeat / while) are sampled a batch at a time too, compiled and run
by the interpreter's batched twin for control flow (karel_hf.karel.extended_sampling). With a
held-out split (`heldout_role`, karel_hf.karel.heldout) a straight-line program on the wrong side of
it is drawn again, like one that overfills a cell.

Pure Python + NumPy (no torch, transformers or datasets).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Iterator

import numpy as np

from .batched import WorldBatch, run_straight_line, view_codes
from .corpus_config import EXTENDED_STEP_BUDGET, MAX_ATTEMPTS, CorpusConfig
from .extended_sampling import extended_examples
from .heldout import is_heldout
from .program import format_lines_batch
from .randomness import STREAM_ACTIONS, action_thresholds, draw_actions, halves, hash_at, hash_range, stream_key
from .world import MARKER_CODE_OFFSET, MAX_VISIBLE_MARKERS, World
from .world_sampling import sample_worlds

__all__ = ["EXTENDED_STEP_BUDGET", "CorpusConfig", "ProgramBatch", "generate", "iter_batches", "program_lengths",
           "to_worlds"]


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


# ----------------------------------------------------------------- straight-line, vectorised
def _sample_actions(config: CorpusConfig, index: np.ndarray, lengths: np.ndarray, attempt: int) -> np.ndarray:
    """(n, max_length) int8 actions of the examples `index` (any subset), -1 past each length."""
    key = stream_key(config.seed, STREAM_ACTIONS, attempt)
    T = config.max_length
    if len(index) == 0 or np.all(np.diff(index) == 1):  # a contiguous range: one hash call
        first = int(index[0]) if len(index) else 0
        hashes = hash_range(key, first * T, len(index) * T).reshape(len(index), T)
    else:
        hashes = hash_at(key, index[:, None] * T + np.arange(T))  # (n, T)
    actions = draw_actions(halves(hashes)[0], action_thresholds(config.action_weights))
    actions[np.arange(T)[None, :] >= lengths[:, None]] = -1
    return actions


def _sample_actions_at(config: CorpusConfig, index: np.ndarray, lengths: np.ndarray, attempts: np.ndarray) -> np.ndarray:
    """`_sample_actions` with one attempt number per example."""
    actions = np.empty((len(index), config.max_length), dtype=np.int8)
    for attempt in np.unique(attempts):
        rows = np.flatnonzero(attempts == attempt)
        actions[rows] = _sample_actions(config, index[rows], lengths[rows], int(attempt))
    return actions


def _wrong_side(config: CorpusConfig, actions: np.ndarray) -> np.ndarray:
    """(n,) bool: the program may not appear in this split (karel_hf.karel.heldout)."""
    if config.heldout_role == "none":
        return np.zeros(len(actions), dtype=bool)
    held = is_heldout(config.heldout_key, config.heldout_fraction, actions)
    return held if config.heldout_role == "exclude" else ~held


def _allowed_actions(config: CorpusConfig, index: np.ndarray, lengths: np.ndarray, attempts: np.ndarray):
    """For each example, the first attempt >= attempts[row] whose program this split may hold, and
    its actions: ((n, max_length) actions, (n,) attempts)."""
    attempts = attempts.copy()
    actions = _sample_actions_at(config, index, lengths, attempts)
    wrong = np.flatnonzero(_wrong_side(config, actions))
    while len(wrong):
        attempts[wrong] += 1
        _check_attempts(attempts[wrong], "fall on the wrong side of the held-out split")
        actions[wrong] = _sample_actions_at(config, index[wrong], lengths[wrong], attempts[wrong])
        wrong = wrong[_wrong_side(config, actions[wrong])]
    return actions, attempts


def _check_attempts(attempts: np.ndarray, what: str) -> None:
    if len(attempts) and attempts.max() > MAX_ATTEMPTS:
        raise RuntimeError(
            f"{int((attempts > MAX_ATTEMPTS).sum())} programs still {what} after {MAX_ATTEMPTS} attempts; lower "
            "max_length or the put_marker weight, or (held-out splits) change this split's lengths"
        )


_MAX_VISIBLE_CODE = MARKER_CODE_OFFSET + MAX_VISIBLE_MARKERS - 1


def _overfull(codes: np.ndarray, n: int) -> np.ndarray:
    """(n,) bool: example shows a cell with more than 9 markers, from (n * P, c) view codes."""
    return (codes.reshape(n, -1) > _MAX_VISIBLE_CODE).any(axis=1) if n else np.zeros(0, dtype=bool)


def _straight_line(config: CorpusConfig, index: np.ndarray, lengths: np.ndarray, worlds: WorldBatch) -> dict:
    n, P = len(index), config.num_pairs
    shape = dict(num_pairs=P, height=config.height, width=config.width)
    inputs = view_codes(worlds.walls, worlds.markers, worlds.robot, worlds.direction)  # (N, c)
    # Each example takes the first attempt (0, 1, ...) whose program is on its side of a held-out
    # split and leaves no visible cell with more than 9 markers (which text cannot show; impossible
    # for max_length <= 10). Attempt k draws from its own stream, so the example depends only on i.
    actions, attempts = _allowed_actions(config, index, lengths, np.zeros(n, dtype=np.int64))
    markers, robot, direction, trace_pos, trace_dir = run_straight_line(worlds, actions, **shape)
    outputs = view_codes(worlds.walls, markers, robot, direction)  # (N, c)
    bad = np.flatnonzero(_overfull(outputs, n))
    while len(bad):
        attempts[bad] += 1
        _check_attempts(attempts[bad], f"leave more than {MAX_VISIBLE_MARKERS} markers on a visible cell")
        sub_worlds = worlds.examples(bad, P)
        sub_actions, attempts[bad] = _allowed_actions(config, index[bad], lengths[bad], attempts[bad])
        sub_markers, sub_robot, sub_direction, sub_pos, sub_dir = run_straight_line(sub_worlds, sub_actions, **shape)
        sub_outputs = view_codes(sub_worlds.walls, sub_markers, sub_robot, sub_direction)  # (len(bad) * P, c)
        actions[bad], trace_pos[bad], trace_dir[bad] = sub_actions, sub_pos, sub_dir
        outputs.reshape(n, P, -1)[bad] = sub_outputs.reshape(len(bad), P, -1)
        bad = bad[_overfull(sub_outputs, len(bad))]
    # Straight-line programs execute every action: the trace ends after `length` steps. Interior
    # cells map to grid (x, y) through lookup tables whose extra last entry is the -1 padding.
    cells, w = (config.height - 2) * (config.width - 2), config.width - 2
    done = np.arange(config.max_length + 1)[None, None, :] > lengths[:, None, None]  # (n, 1, T + 1)
    trace_pos = np.where(done, cells, trace_pos)  # (n, P, T + 1)
    column = np.append(np.arange(cells) % w + 1, -1).astype(np.int8)
    row = np.append(np.arange(cells) // w + 1, -1).astype(np.int8)
    return dict(
        actions=actions,
        programs=format_lines_batch(actions),
        inputs=inputs,
        outputs=outputs,
        trace_x=column.take(trace_pos),
        trace_y=row.take(trace_pos),
        trace_dir=np.where(done, np.int8(-1), trace_dir),
        trace_len=np.repeat(lengths[:, None], P, axis=1).astype(np.int16),
    )


# ----------------------------------------------------------------------------------- public API
def generate(config: CorpusConfig, start: int, stop: int) -> ProgramBatch:
    """Examples [start, stop) of the corpus `config` describes (each depends only on config and i)."""
    if not isinstance(config, CorpusConfig):
        raise TypeError(f"generate() takes a CorpusConfig, got {type(config).__name__}")
    _check_range(config, start, stop)
    start, stop = int(start), int(stop)
    index = np.arange(start, stop, dtype=np.int64)
    lengths = program_lengths(config, start, stop)
    worlds = sample_worlds(config, start, stop)
    build = extended_examples if config.extended else _straight_line
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
