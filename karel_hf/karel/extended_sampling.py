"""The extended-language sampler: random programs with if / ifelse / repeat / while, a batch at a time.

The distribution (docs/protocol.md §1, karel_hf's extension): a program has exactly the drawn number
of action nodes; each statement is, with probability 0.3 while nesting is below
`EXTENDED_MAX_DEPTH`, a control block holding some of the remaining actions (if, repeat 2..4 times,
while, each equally likely, and ifelse when at least two actions remain; conditions uniform over
the five, negated with probability 1/2), else one action drawn with the config's action weights.
`sample_extended_program` draws one program from an `np.random.Generator`, recursively: the
reference. `sample_line_codes` is its batched twin: it draws a whole batch of programs in the flat
form of karel_hf.karel.program (one code per line), all programs one line per step, each program's
recursion kept as a small stack of remaining action counts per depth. Its random values are
counter-based (karel_hf.karel.randomness, stream STREAM_EXTENDED): value j of step t of attempt a of
example i is a hash of (i, a, t, j), so an example depends only on (config, i). tests/test_sampling.py
checks that both samplers give the same distribution.

`extended_examples` builds a batch: programs are compiled and run on the example's input worlds
(the same counter-based worlds as straight-line corpora) by the interpreter's batched twin
(karel_hf.karel.batched.run_compiled). A program that exhausts the step budget
(`EXTENDED_STEP_BUDGET`) or leaves more than 9 markers on a visible cell on any input is drawn
again (attempt 1, 2, ...): each example takes its first valid attempt. With a held-out split a
program on the wrong side of it is drawn again too (a program is its line codes, hashed by
karel_hf.karel.heldout.program_hash: a straight-line program has the same name as in a straight-line
corpus), and with `control_flow_pairs` so is one whose first pairs a straight-line program solves
(karel_hf.karel.compiled.straight_line_solves, compiled when numba is installed). Examples still waiting after
a round try several next attempts at once, which changes only the speed, never the choice. With
numba installed (`pip install karel_hf[fast]`), karel_hf.karel.compiled makes the same examples,
byte for byte, one example at a time in compiled code (benchmarks/bench_corpus.py: the ratios).

Python + NumPy; numba optional.
"""

from __future__ import annotations

import importlib.util
import warnings
from functools import cache, partial

import numpy as np

from .batched import WorldBatch, compile_line_codes, run_compiled, view_codes
from .corpus_config import EXTENDED_STEP_BUDGET, MAX_ATTEMPTS, CorpusConfig
from .program import (
    ACTIONS,
    CONDITIONS,
    ELSE_CODE,
    END_CODE,
    IF_CODE,
    IFELSE_CODE,
    REPEAT_CODE,
    WHILE_CODE,
    Action,
    Condition,
    If,
    Program,
    Repeat,
    While,
    format_line_codes_batch,
)
from .heldout import STREAM_HELDOUT, heldout_threshold, is_heldout
from .randomness import action_thresholds, draw_actions, halves, hash_at, stream_key
from .world import MARKER_CODE_OFFSET, MAX_VISIBLE_MARKERS
from .world_sampling import sample_worlds_at

EXTENDED_MAX_DEPTH = 2
CONTROL_PROBABILITY = 0.3
# Which random streams extended corpora are drawn from: 2 = the batched sampler's counter-based
# values (1, the per-example np.random.Generator of the first release, drew other programs from
# the same distribution). Dataset caches of extended configs are keyed on it.
EXTENDED_SAMPLER_REVISION = 2
STREAM_EXTENDED = 4  # karel_hf.karel.randomness numbers the other streams
_VALUES_PER_STEP = 3  # uint64 hashes per sampler step: six uint32 values
ROWS_PER_ROUND = 256  # programs tried at least in a redraw round (see extended_examples)
# With control_flow_pairs: attempts on one draw of an example's worlds, and fresh draws of its worlds.
WORLD_ATTEMPTS = 200
WORLD_ROUNDS = 50


# ------------------------------------------------------------------ the reference: one program
def sample_extended_program(rng: np.random.Generator, num_actions: int, weights,
                            max_depth: int = EXTENDED_MAX_DEPTH) -> Program:
    """A random program with exactly `num_actions` action nodes, control flow nested <= max_depth."""
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64)) / float(np.sum(weights))
    return Program(_sample_block(rng, num_actions, 0, max_depth, cumulative))


def _sample_block(rng, num_actions: int, depth: int, max_depth: int, cumulative) -> tuple:
    body = []
    while num_actions > 0:
        if depth < max_depth and rng.random() < CONTROL_PROBABILITY:
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


# ------------------------------------------------------------- the batched twin: many programs
def max_lines(config: CorpusConfig) -> int:
    """Most lines a program can have: each action, and up to 3 lines (open, else, close) for each of
    the <= EXTENDED_MAX_DEPTH blocks around it (blocks at one depth hold disjoint actions)."""
    return (1 + 3 * EXTENDED_MAX_DEPTH) * config.max_length


def _uniform(u32: np.ndarray, k) -> np.ndarray:
    """Uniform integers in [0, k) from uniform uint32 values (multiply-shift)."""
    return ((u32.astype(np.uint64) * np.asarray(k).astype(np.uint64)) >> np.uint64(32)).astype(np.int64)


def sample_line_codes(config: CorpusConfig, index: np.ndarray, lengths: np.ndarray, attempts: np.ndarray):
    """Attempt `attempts[r]` of example `index[r]`'s program (`lengths[r]` action nodes), for every r.

    Returns (n, L) line codes (-1 padded) and their depths, L <= max_lines(config) the most lines
    of a program of the batch. Each step every
    unfinished program writes one line: closes its innermost finished block (`} else {` first for
    an ifelse), opens a control block, or writes an action, with the decisions of `_sample_block`.
    """
    n, steps = len(index), max_lines(config)
    codes = np.full((n, steps), -1, dtype=np.int16)
    depths = np.zeros((n, steps), dtype=np.int8)
    remaining = np.zeros((n, EXTENDED_MAX_DEPTH + 1), dtype=np.int64)  # actions left in the block at each depth
    remaining[:, 0] = lengths
    orelse = np.zeros_like(remaining)  # actions of an ifelse's else part, still to open
    depth = np.zeros(n, dtype=np.int64)
    key = stream_key(config.seed, STREAM_EXTENDED)
    first = (index.astype(np.uint64) * np.uint64(MAX_ATTEMPTS + 1) + attempts.astype(np.uint64)) * np.uint64(steps)
    thresholds = action_thresholds(config.action_weights)
    control = np.uint32(round(CONTROL_PROBABILITY * 2**32))
    live = np.arange(n)
    for step in range(steps + 1):
        d = depth[live]
        left = remaining[live, d]
        running = (left > 0) | (d > 0)
        live, d, left = live[running], d[running], left[running]
        if not len(live):
            return codes[:, :step], depths[:, :step]
        if step == steps:  # cannot happen: every step writes one of the program's lines
            raise RuntimeError("sample_line_codes: a program has more lines than max_lines(config)")
        counters = ((first[live] + np.uint64(step)) * np.uint64(_VALUES_PER_STEP))[:, None] + np.arange(
            _VALUES_PER_STEP, dtype=np.uint64)
        low, high = halves(hash_at(key, counters))  # (m, 3) uint32 each
        u = np.concatenate([low, high], axis=1)  # (m, 6) uint32: open?, kind / action, size, argument, negated, split
        code = np.empty(len(live), dtype=np.int64)
        line_depth = d.copy()
        # a finished block: `} else {` if it is an ifelse's first part, else `}`
        closing = left == 0
        pending = orelse[live, d]
        to_else = closing & (pending > 0)
        rows = live[to_else]
        code[to_else] = ELSE_CODE
        remaining[rows, d[to_else]], orelse[rows, d[to_else]] = pending[to_else], 0
        to_end = closing & (pending == 0)
        code[to_end] = END_CODE
        depth[live[to_end]] -= 1
        line_depth[closing] -= 1
        # a control block
        opening = ~closing & (d < EXTENDED_MAX_DEPTH) & (u[:, 0] < control)
        kind = _uniform(u[:, 1], np.where(left >= 2, 4, 3))  # if, repeat, while, ifelse (as `kinds` above)
        smallest = np.where(kind == 3, 2, 1)
        size = smallest + _uniform(u[:, 2], np.maximum(left - smallest + 1, 1))
        condition = _uniform(u[:, 3], len(CONDITIONS)) * 2 + (u[:, 4] >> np.uint32(31))
        split = 1 + _uniform(u[:, 5], np.maximum(size - 1, 1))
        base = np.array([IF_CODE, REPEAT_CODE, WHILE_CODE, IFELSE_CODE])[kind]
        code[opening] = (base + np.where(kind == 1, 2 + _uniform(u[:, 3], 3), condition))[opening]
        rows, od = live[opening], d[opening]
        remaining[rows, od] -= size[opening]
        body = np.where(kind == 3, split, size)[opening]  # an ifelse's first part, or the whole body
        remaining[rows, od + 1], orelse[rows, od + 1] = body, size[opening] - body
        depth[rows] += 1
        # an action
        acting = ~closing & ~opening
        code[acting] = draw_actions(u[acting, 1], thresholds)
        remaining[live[acting], d[acting]] -= 1
        codes[live, step] = code
        depths[live, step] = line_depth
    return codes, depths  # (not reached: the last step finds no live program)


def _action_columns(codes: np.ndarray, max_length: int) -> np.ndarray:
    """(n, max_length) action codes of the programs' action lines in text order, -1 padded."""
    is_action = (codes >= 0) & (codes < len(ACTIONS))
    column = np.cumsum(is_action, axis=1) - 1
    actions = np.full((len(codes), max_length), -1, dtype=np.int8)
    r, j = np.nonzero(is_action)
    actions[r, column[r, j]] = codes[r, j]
    return actions


_MAX_VISIBLE_CODE = MARKER_CODE_OFFSET + MAX_VISIBLE_MARKERS - 1


def extended_examples(config: CorpusConfig, index: np.ndarray, lengths: np.ndarray, worlds: WorldBatch,
                      engine: str = "auto") -> dict:
    """The `ProgramBatch` arrays of examples `index` (program lengths `lengths`, input worlds `worlds`).

    `engine`: "numpy" (the batched sampler and interpreter below), "numba" (karel_hf.karel.compiled,
    the same examples compiled per example; needs numba: `pip install karel_hf[fast]`), or "auto"
    (numba when it is installed).
    """
    if engine not in ("auto", "numpy", "numba"):
        raise ValueError(f"engine must be 'auto', 'numpy' or 'numba', got {engine!r}")
    compiled = _compiled() if engine != "numpy" else None
    if engine == "numba" and compiled is None:
        raise ImportError("engine='numba' needs numba: pip install karel_hf[fast]")
    if engine == "auto" and compiled is None and config.control_flow_pairs:
        _warn_slow_rule()
    build = _numpy_examples if compiled is None else partial(_compiled_examples, compiled)
    tries = WORLD_ATTEMPTS if config.control_flow_pairs else MAX_ATTEMPTS
    parts, failed = build(config, index, lengths, worlds, tries)
    if failed.any() and not config.control_flow_pairs:
        raise RuntimeError(f"example {int(index[np.argmax(failed)])}: no valid extended program in {MAX_ATTEMPTS} "
                           "attempts; lower max_length")
    # With control_flow_pairs some worlds admit no program that needs control flow (every program
    # does the same on them): such an example draws fresh worlds, round 1, 2, ... (worlds and programs
    # of "example" index + round * num_programs, past every real example), up to WORLD_ROUNDS.
    P = config.num_pairs
    for round_ in range(1, WORLD_ROUNDS + 1):
        rows = np.flatnonzero(failed)
        if not len(rows):
            break
        fresh = index[rows] + round_ * config.num_programs
        new, failed_again = build(config, fresh, lengths[rows], sample_worlds_at(config, fresh), tries)
        done = ~failed_again
        for name, values in new.items():
            if name == "programs":
                for r, text in zip(rows[done], np.asarray(values, dtype=object)[done]):
                    parts[name][r] = text
            elif name in ("inputs", "outputs"):  # (n * P, c)
                parts[name].reshape(len(index), P, -1)[rows[done]] = values.reshape(len(rows), P, -1)[done]
            else:
                parts[name][rows[done]] = values[done]
        failed[rows] = failed_again
    if failed.any():
        raise RuntimeError(f"example {int(index[np.argmax(failed)])}: no program that needs control flow on its first "
                           f"{config.control_flow_pairs} pairs in {WORLD_ROUNDS + 1} draws of its worlds; show more "
                           "prompt pairs (num_prompt_pairs) or lower max_length (on one pair a program's own run "
                           "is a straight-line solution when it is short enough)")
    return parts


@cache  # once per process
def _warn_slow_rule() -> None:
    """Say once that the control-flow rule runs in Python here: it checks every straight-line program
    of up to max_length actions per candidate, about 30 examples a second on one core of an AMD
    EPYC for the `cpu-cf` corpus (300,000 examples: hours) where numba makes about 9,000
    (benchmarks/bench_control_flow_rule.py)."""
    warnings.warn("needs_control_flow without numba: the NumPy engine checks each program against every "
                  "straight-line one in Python, about 30 examples a second (numba: about 9,000); "
                  "pip install 'karel_hf[fast]'", RuntimeWarning, stacklevel=3)


def _compiled():
    """karel_hf.karel.compiled when numba is installed, else None. Imported on first use: numba
    takes about a second to load, and straight-line corpora never need it."""
    if importlib.util.find_spec("numba") is None:
        return None
    from . import compiled

    return compiled if compiled.AVAILABLE else None


def _compiled_examples(compiled, config: CorpusConfig, index, lengths, worlds: WorldBatch, tries: int):
    inputs = view_codes(worlds.walls, worlds.markers, worlds.robot, worlds.direction)  # (n * P, c)
    n, P, T = len(index), config.num_pairs, config.trace_steps
    steps = max_lines(config)
    codes = np.full((n, steps), -1, dtype=np.int16)
    depths = np.zeros((n, steps), dtype=np.int8)
    markers = np.empty(worlds.markers.shape, dtype=np.int8)
    robot, direction = np.empty(n * P, dtype=np.int64), np.empty(n * P, dtype=np.int8)
    trace_x, trace_y, trace_dir = (np.empty((n, P, T + 1), dtype=np.int8) for _ in range(3))
    trace_len = np.empty((n, P), dtype=np.int16)
    failed = np.zeros(n, dtype=np.bool_)
    compiled.extended_kernel(
        np.ascontiguousarray(index, dtype=np.int64), np.ascontiguousarray(lengths, dtype=np.int64),
        np.ascontiguousarray(worlds.walls, dtype=np.bool_), np.ascontiguousarray(worlds.markers, dtype=np.int8),
        np.ascontiguousarray(worlds.robot, dtype=np.int64), np.ascontiguousarray(worlds.direction, dtype=np.int8),
        np.uint64(stream_key(config.seed, STREAM_EXTENDED)), steps, MAX_ATTEMPTS, tries,
        action_thresholds(config.action_weights),
        np.uint64(round(CONTROL_PROBABILITY * 2**32)), EXTENDED_MAX_DEPTH, EXTENDED_STEP_BUDGET, MAX_VISIBLE_MARKERS,
        P, config.width - 2, np.uint64(stream_key(config.heldout_key, STREAM_HELDOUT)),
        heldout_threshold(config.heldout_fraction), ("none", "exclude", "only").index(config.heldout_role),
        config.control_flow_pairs, config.max_length,
        codes, depths, markers, robot, direction, trace_x, trace_y, trace_dir, trace_len, failed)
    lost = np.repeat(failed, P)  # the worlds of failed examples hold no run: blank them
    markers[lost], robot[lost], direction[lost] = 0, 0, 0
    return dict(
        actions=_action_columns(codes, config.max_length),
        programs=format_line_codes_batch(codes, depths),
        inputs=inputs,
        outputs=view_codes(worlds.walls, markers, robot, direction),
        trace_x=trace_x,
        trace_y=trace_y,
        trace_dir=trace_dir,
        trace_len=trace_len,
    ), failed


def _drop_straight_line_solvable(config: CorpusConfig, ok: np.ndarray, worlds: WorldBatch, world_of, markers,
                                 robot, direction) -> None:
    """Clear ok[e, j] (example e's j-th attempt of the round) where a straight-line program solves the
    attempt's first control_flow_pairs pairs, for each example up to its first attempt that passes:
    the attempts after it are not chosen whatever they are."""
    from .compiled import straight_line_solves  # compiled when numba is installed, plain Python else

    P, k = config.num_pairs, ok.shape[1]
    lanes = np.arange(config.control_flow_pairs)
    for e in np.flatnonzero(ok.any(axis=1)):
        for j in np.flatnonzero(ok[e]):
            rows = (e * k + j) * P + lanes  # the attempt's runs on its first pairs
            w = world_of[rows]
            if not straight_line_solves(worlds.walls[w], worlds.markers[w], worlds.robot[w], worlds.direction[w],
                                        markers[rows], robot[rows], direction[rows], config.max_length,
                                        config.width - 2):
                break
            ok[e, j] = False


def _numpy_examples(config: CorpusConfig, index, lengths, worlds: WorldBatch, tries: int):
    inputs = view_codes(worlds.walls, worlds.markers, worlds.robot, worlds.direction)  # (n * P, c)
    n, P, T = len(index), config.num_pairs, config.trace_steps
    h, w = config.height - 2, config.width - 2
    c = h * w
    steps = max_lines(config)
    outputs = np.empty_like(inputs)
    chosen_codes = np.full((n, steps), -1, dtype=np.int16)
    chosen_depths = np.zeros((n, steps), dtype=np.int8)
    cells = np.full((n, P, T + 1), -1, dtype=np.int16)  # -1 after the run (and for a failed example)
    directions = np.empty((n, P, T + 1), dtype=np.int8)
    trace_len = np.zeros((n, P), dtype=np.int16)
    waiting = np.arange(n)  # examples without a valid program yet
    tried = 0  # attempts 0..tried-1 of every waiting example failed
    while len(waiting) and tried < tries:
        # Every waiting example tries its next k attempts at once: one while many wait, more once
        # few do (a round costs at least as much as its longest run, whatever its size).
        k = int(np.clip(ROWS_PER_ROUND // len(waiting), 1, min(64, tries - tried)))
        example = np.repeat(waiting, k)  # (m,) one row per (example, attempt)
        attempt = tried + np.tile(np.arange(k), len(waiting))
        codes, depths = sample_line_codes(config, index[example], lengths[example], attempt)
        world_of = (example[:, None] * P + np.arange(P)).reshape(-1)  # each row runs on its example's worlds
        runs = run_compiled(worlds, compile_line_codes(codes, depths), np.repeat(np.arange(len(example)), P),
                            world_of=world_of, height=config.height, width=config.width,
                            max_steps=EXTENDED_STEP_BUDGET, stop_program_on_failure=True)
        ok = runs.completed.reshape(-1, P).all(axis=1)
        robot, direction = runs.final_robot()
        out = view_codes(worlds.walls[world_of], runs.markers, robot, direction)  # (m * P, c)
        ok &= (out.reshape(-1, P * c) <= _MAX_VISIBLE_CODE).all(axis=1)
        if config.heldout_role != "none":
            held = is_heldout(config.heldout_key, config.heldout_fraction, codes)
            ok &= ~held if config.heldout_role == "exclude" else held
        ok = ok.reshape(len(waiting), k)
        if config.control_flow_pairs:
            _drop_straight_line_solvable(config, ok, worlds, world_of, runs.markers, robot, direction)
        found = ok.any(axis=1)
        row = np.flatnonzero(found) * k + ok[found].argmax(axis=1)  # each example's first valid attempt
        done = waiting[found]
        lanes = (row[:, None] * P + np.arange(P)).reshape(-1)
        chosen_codes[done, : codes.shape[1]], chosen_depths[done, : codes.shape[1]] = codes[row], depths[row]
        outputs.reshape(n, P, c)[done] = out[lanes].reshape(-1, P, c)
        lane_cells, lane_directions = runs.robot_states(lanes)
        cells[done], directions[done] = lane_cells.reshape(-1, P, T + 1), lane_directions.reshape(-1, P, T + 1)
        trace_len[done] = runs.count[lanes].reshape(-1, P)
        waiting, tried = waiting[~found], tried + k
    # Traces: interior cell -> grid column / row (border included); -1 (after the run's last action)
    # picks the lookup tables' extra last entry, -1.
    column = np.append(np.arange(c) % w + 1, -1).astype(np.int8)
    row = np.append(np.arange(c) // w + 1, -1).astype(np.int8)
    return dict(
        actions=_action_columns(chosen_codes, config.max_length),
        programs=format_line_codes_batch(chosen_codes, chosen_depths),
        inputs=inputs,
        outputs=outputs,
        trace_x=column.take(cells),
        trace_y=row.take(cells),
        trace_dir=directions,
        trace_len=trace_len,
    ), np.isin(np.arange(n), waiting)
