"""The extended-language sampler: random programs with if / ifelse / repeat / while, per example.

`CorpusConfig(extended=True)` corpora are sampled one example at a time from
`np.random.default_rng([seed, index])` (so example i depends only on (config, i)) and run with the
AST interpreter (`karel_hf.karel.interpreter.execute`) on the example's input worlds, which come from
the same counter-based world sampler as straight-line corpora. A program that exhausts the step
budget (`EXTENDED_STEP_BUDGET`) or leaves more than 9 markers on a visible cell on any input is
drawn again.

A program has exactly the drawn number of action nodes; each statement is, with probability 0.3
while nesting is below `EXTENDED_MAX_DEPTH`, a control block (if, ifelse, repeat 2..4 times, while
over a random, possibly negated condition) holding some of the remaining actions, else one action
drawn with the config's action weights.

Pure Python + NumPy.
"""

from __future__ import annotations

import numpy as np

from .batched import WorldBatch, view_codes
from .corpus_config import EXTENDED_STEP_BUDGET, MAX_ATTEMPTS, CorpusConfig
from .interpreter import execute
from .program import ACTIONS, CONDITIONS, Action, Condition, If, Program, Repeat, While, format_program, walk
from .world import WorldFormatError

EXTENDED_MAX_DEPTH = 2


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


def extended_examples(config: CorpusConfig, index: np.ndarray, lengths: np.ndarray, worlds: WorldBatch) -> dict:
    """The `ProgramBatch` arrays of examples `index` (program lengths `lengths`, input worlds `worlds`)."""
    n, P, T = len(index), config.num_pairs, config.trace_steps
    h, w = config.height - 2, config.width - 2
    inputs = view_codes(worlds.walls, worlds.markers, worlds.robot, worlds.direction).reshape(n, P, h, w)
    outputs = np.empty_like(inputs)
    actions = np.full((n, config.max_length), -1, dtype=np.int8)
    traces = np.full((3, n, P, T + 1), -1, dtype=np.int8)  # x, y, direction
    trace_len = np.zeros((n, P), dtype=np.int16)
    programs = []
    for row, (i, length) in enumerate(zip(index.tolist(), lengths.tolist())):
        rng = np.random.default_rng([config.seed, i])
        starts = [worlds.world(row * P + pair, config.height, config.width) for pair in range(P)]
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
