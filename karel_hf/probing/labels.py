"""Semantic-state labels for probing: what the program state is after each action (docs/protocol.md §6).

Pure NumPy over `karel_hf.karel` (no torch, transformers or datasets). A straight-line program of
n actions is executed on each specification input; state s_k is the world after actions 1..k
(s_0 = the input). For every state these labels are read off:

- v1 (`V1_LABELS`): `direction_<i>` = the robot's facing direction (0..3 = N, E, S, W) in spec
  input i, for i = 0..4 (five 4-way tasks, chance 25%). A corpus whose prompts show k < 5 pairs
  is probed on the k inputs the model sees (`v1_labels(k)`).
- v3 (`V3_LABELS`), all on input 0:
  `direction_0`;
  `dx_start`, `dy_start` = position relative to the initial position, `dx_end`, `dy_end` =
  relative to the final position (after all n actions); a difference d is stored as the class
  d + (interior size - 1), so 0..2*(size-1) (on the paper's 6x6 interior, 5 = no offset);
  `x`, `y` = absolute interior position (0..5, y grows downward);
  `facing_wall` = 1 when the cell in front is a wall (border included);
  `wall_north`, `wall_east`, `wall_south`, `wall_west` = 1 when that neighbouring cell is a wall.

Offsets pair a step with a state (k = 1..n indexes the program's actions; the model state m_k is
taken where action k is emitted): offset o pairs m_k with s_j, j = k + o. `OFFSETS` are -2..+2,
named `prev2`, `prev1`, `current`, `next1`, `next2` (`OFFSET_NAMES`); the column of offset o is
`<label>_prev<|o|>`, `<label>` or `<label>_next<o>` (`label_column`). Labels are stored raw:
`MISSING` (-1) only when j < 0 or j > n.

Three more columns per label give what the prompt shows: `<label>_initial` (s_0, the input grid),
`<label>_final` (s_n, the state after the whole program traced) and `<label>_output` (the label
read off the spec's output world of that pair: the output grid's robot; for a generated program
that is wrong it differs from `_final`).

Which rows count (`scored_rows`) is decided at scoring time from `step`, `num_actions` and
`drop_last`: a (row, offset) is scored iff 1 <= j <= n - 1 (`drop_last=True`, the default, as the
authors: the label is neither the input grid's state nor, for a correct program, the output
grid's) or 1 <= j <= n (`drop_last=False`). j = 0 is never scored.

Under an alternative semantics (`karel_hf.karel.SEMANTICS`) the program is reinterpreted with
`Semantics.apply` and re-executed, which gives the intervention's alternative labels. To keep the
column count sane, alternative semantics get the direction labels only (their offsets and `_final`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from karel_hf.karel.interpreter import execute
from karel_hf.karel.program import Program
from karel_hf.karel.semantics import SEMANTICS, get_semantics
from karel_hf.karel.world import DX, DY, World

MISSING = -1
NUM_SPEC_INPUTS = 5
INITIAL = "initial"  # s_0: the input grid's state
FINAL = "final"  # s_n: the state after the whole program traced
OUTPUT = "output"  # the spec's output grid
OFFSETS = (-2, -1, 0, 1, 2)
OFFSET_NAMES = {-2: "prev2", -1: "prev1", 0: "current", 1: "next1", 2: "next2"}
V1_LABELS = tuple(f"direction_{i}" for i in range(NUM_SPEC_INPUTS))
V3_LABELS = (
    "direction_0",
    "dx_start", "dy_start", "dx_end", "dy_end",
    "x", "y",
    "facing_wall",
    "wall_north", "wall_east", "wall_south", "wall_west",
)
# The authors' v3 scoring: 6 tasks; a task with several parts is right only when every part is.
V3_TASKS = {
    "direction": ("direction_0",),
    "position_from_start": ("dx_start", "dy_start"),
    "position_from_end": ("dx_end", "dy_end"),
    "facing_wall": ("facing_wall",),
    "position": ("x", "y"),
    "walls": ("wall_north", "wall_east", "wall_south", "wall_west"),
}
ALL_LABELS = V1_LABELS + tuple(name for name in V3_LABELS if name not in V1_LABELS)
LABEL_SETS = {"v1": V1_LABELS, "v3": V3_LABELS}
DIRECTION_LABELS = V1_LABELS
ALTERNATIVE_LABELS = DIRECTION_LABELS  # the labels kept under an alternative semantics
_NEIGHBOURS = ("wall_north", "wall_east", "wall_south", "wall_west")  # direction order N, E, S, W
_SPECIAL = (INITIAL, FINAL, OUTPUT)


def v1_labels(num_prompt_pairs: int = NUM_SPEC_INPUTS) -> tuple[str, ...]:
    """The v1 direction tasks of the spec inputs shown in the prompt (at most `NUM_SPEC_INPUTS`).

    >>> v1_labels(1), len(v1_labels())
    (('direction_0',), 5)
    """
    if num_prompt_pairs < 1:
        raise ValueError(f"num_prompt_pairs must be >= 1, got {num_prompt_pairs}")
    return V1_LABELS[: min(num_prompt_pairs, NUM_SPEC_INPUTS)]


def offset_suffix(offset: int | str) -> str:
    """The column suffix of an offset (or of `initial`/`final`/`output`).

    >>> [offset_suffix(o) for o in (-2, 0, 1, "final")]
    ['_prev2', '', '_next1', '_final']
    """
    if offset in _SPECIAL:
        return f"_{offset}"
    if isinstance(offset, (int, np.integer)) and not isinstance(offset, bool):
        offset = int(offset)
        return "" if offset == 0 else (f"_next{offset}" if offset > 0 else f"_prev{-offset}")
    raise ValueError(f"offset must be an int or one of {_SPECIAL}, got {offset!r}")


def label_column(label: str, offset: int | str = 0, semantics: str = "original") -> str:
    """The trace-dataset column holding `label` at `offset` under `semantics`.

    >>> label_column("direction_0"), label_column("direction_0", 2), label_column("direction_0", -1)
    ('direction_0', 'direction_0_next2', 'direction_0_prev1')
    >>> label_column("x", "initial"), label_column("direction_1", "final", "swap")
    ('x_initial', 'swap__direction_1_final')
    """
    if label not in ALL_LABELS:
        raise ValueError(f"unknown label {label!r}; expected one of {ALL_LABELS}")
    name = label + offset_suffix(offset)
    get_semantics(semantics)
    return name if semantics == "original" else f"{semantics}__{name}"


def label_columns(
    semantics: Sequence[str] = tuple(SEMANTICS), offsets: Sequence[int] = OFFSETS, labels: Sequence[str] = ALL_LABELS
) -> list[str]:
    """Every label column of a trace dataset, in order: under `original` each of `labels` at each
    offset plus `_initial`, `_final` and `_output`; under an alternative semantics the direction
    labels among `labels` (`ALTERNATIVE_LABELS`) at each offset plus `_final`."""
    columns = []
    for name in semantics:
        if name == "original":
            columns += [label_column(l, o) for l in labels for o in (*offsets, *_SPECIAL)]
        else:
            columns += [label_column(l, o, name) for l in labels if l in ALTERNATIVE_LABELS for o in (*offsets, FINAL)]
    return columns


def label_set(name: str) -> tuple[str, ...]:
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; expected one of {sorted(LABEL_SETS)}") from None


def num_classes(label: str, interior_size: int = 6) -> int:
    """How many classes a label has on a square interior of `interior_size` cells a side."""
    if label.startswith("direction_"):
        return 4
    if label in ("x", "y"):
        return interior_size
    if label.startswith(("dx_", "dy_")):
        return 2 * interior_size - 1
    return 2


def scored_rows(steps, num_actions, offset: int, drop_last: bool = True) -> np.ndarray:
    """The row rule: which rows (k = `steps`, n = `num_actions`) are scored at `offset`.

    j = k + offset must satisfy 1 <= j <= n - 1 with `drop_last` (the label is neither the input
    grid's state s_0 nor the final state s_n, the output grid's for a correct program), or
    1 <= j <= n without. j = 0 is never scored.

    >>> scored_rows([1, 2, 3], [3, 3, 3], 0).tolist(), scored_rows([1, 2, 3], [3, 3, 3], 0, drop_last=False).tolist()
    ([True, True, False], [True, True, True])
    >>> scored_rows([1, 2, 3], [3, 3, 3], -1).tolist(), scored_rows([1, 2, 3], [3, 3, 3], 1).tolist()
    ([False, True, True], [True, False, False])
    """
    steps, num_actions = np.asarray(steps, dtype=np.int64), np.asarray(num_actions, dtype=np.int64)
    j = steps + int(offset)
    last = num_actions - 1 if drop_last else num_actions
    return (j >= 1) & (j <= last)


def world_trajectory(program: Program, world: World, semantics: str = "original") -> list[World]:
    """[s_0, s_1, ..., s_n]: the input and the world after each action of `program`."""
    if not program.is_straight_line:
        raise ValueError("labels are defined for straight-line programs only (this one has control flow)")
    program = get_semantics(semantics).apply(program)
    result = execute(program, world, trace=True)
    return [world.copy(), *result.states]


def state_labels(states: Sequence[World]) -> dict[str, np.ndarray]:
    """The v3 labels (input-0 features) of a trajectory s_0..s_n, each an (n+1,) int array."""
    first, last = states[0], states[-1]
    span = first.width - 3  # interior size - 1
    x = np.array([s.x for s in states])
    y = np.array([s.y for s in states])
    d = np.array([s.direction for s in states])
    walls = first.walls  # walls never change
    labels = {
        "direction_0": d,
        "dx_start": x - first.x + span,
        "dy_start": y - first.y + span,
        "dx_end": x - last.x + span,
        "dy_end": y - last.y + span,
        "x": x - 1,
        "y": y - 1,
        "facing_wall": walls[y + np.take(DY, d), x + np.take(DX, d)].astype(int),
    }
    for direction, name in enumerate(_NEIGHBOURS):
        labels[name] = walls[y + DY[direction], x + DX[direction]].astype(int)
    return labels


def _worlds(worlds: Sequence) -> list[World]:
    return [w if isinstance(w, World) else World.from_view_codes(w) for w in worlds[:NUM_SPEC_INPUTS]]


def trajectory_labels(program: Program, inputs: Sequence, semantics: str = "original") -> dict[str, np.ndarray]:
    """Every label of `ALL_LABELS` for states s_0..s_n, each an (n+1,) int64 array.

    `inputs` are the spec input worlds (`World`s or view-code arrays); the first
    `NUM_SPEC_INPUTS` are used.
    """
    worlds = _worlds(inputs)
    if len(worlds) < NUM_SPEC_INPUTS:
        raise ValueError(f"need {NUM_SPEC_INPUTS} spec inputs, got {len(worlds)}")
    trajectories = [world_trajectory(program, w, semantics) for w in worlds]
    labels = state_labels(trajectories[0])
    for i, states in enumerate(trajectories):
        labels[f"direction_{i}"] = np.array([s.direction for s in states])
    return {name: labels[name].astype(np.int64) for name in ALL_LABELS}


_TURN = {"turn_left": 3, "turn_right": 1}  # direction change (mod 4) per action; the others keep it


def direction_trajectories(program: Program, inputs: Sequence, semantics: str = "original") -> dict[str, np.ndarray]:
    """The `direction_<i>` labels of s_0..s_n without running the worlds: in a straight-line program
    only turns change the direction (walls and markers never do), so d_j = d_0 + the turns of
    actions 1..j. The same values as `trajectory_labels`, far cheaper (the intervention's labels)."""
    if not program.is_straight_line:
        raise ValueError("labels are defined for straight-line programs only (this one has control flow)")
    meaning = get_semantics(semantics).mapping
    turns = np.cumsum([0] + [_TURN.get(meaning[a], 0) for a in program.actions()])  # (n+1,)
    worlds = _worlds(inputs)
    return {f"direction_{i}": ((w.direction + turns) % 4).astype(np.int64) for i, w in enumerate(worlds)}


def output_labels(inputs: Sequence, outputs: Sequence) -> dict[str, int]:
    """Every label of `ALL_LABELS` read off the spec's output worlds (what the prompt's output grids
    show): for input 0 the output world is taken as the end state (so `dx_end`/`dy_end` are 0
    offsets) and positions are relative to input 0's start."""
    ins, outs = _worlds(inputs), _worlds(outputs)
    if len(ins) < NUM_SPEC_INPUTS or len(outs) < NUM_SPEC_INPUTS:
        raise ValueError(f"need {NUM_SPEC_INPUTS} spec inputs and outputs, got {len(ins)} and {len(outs)}")
    table = state_labels([ins[0], outs[0]])
    out = {name: int(values[1]) for name, values in table.items()}
    for i, world in enumerate(outs):
        out[f"direction_{i}"] = int(world.direction)
    return {name: out[name] for name in ALL_LABELS}


def shift(labels: np.ndarray, offset: int | str) -> np.ndarray:
    """Labels s_0..s_n (length n+1) aligned to steps k = 1..n (length n) at `offset`: row k holds
    s_(k+offset), `MISSING` when k + offset is outside 0..n; `initial` / `final` repeat s_0 / s_n.

    >>> a = np.array([0, 1, 2, 3])
    >>> shift(a, 0), shift(a, 2), shift(a, -2), shift(a, "initial"), shift(a, "final")
    (array([1, 2, 3]), array([ 3, -1, -1]), array([-1,  0,  1]), array([0, 0, 0]), array([3, 3, 3]))
    """
    labels = np.asarray(labels)
    n = len(labels) - 1
    if offset == INITIAL:
        return np.full(n, labels[0], dtype=labels.dtype)
    if offset == FINAL:
        return np.full(n, labels[-1], dtype=labels.dtype)
    j = np.arange(1, n + 1) + int(offset)
    inside = (j >= 0) & (j <= n)
    out = np.full(n, MISSING, dtype=labels.dtype)
    out[inside] = labels[j[inside]]
    return out


@lru_cache(maxsize=256)
def _column_names(semantics: str, label: str, columns: tuple) -> tuple[str, ...]:
    return tuple(label_column(label, c, semantics) for c in columns)


def step_labels(
    program: Program,
    inputs: Sequence,
    outputs: Sequence | None = None,
    *,
    semantics: Sequence[str] = tuple(SEMANTICS),
    offsets: Sequence[int] = OFFSETS,
    labels: Sequence[str] = ALL_LABELS,
    alternative_labels: Sequence[str] = ALTERNATIVE_LABELS,
) -> dict[str, np.ndarray]:
    """One (n,) int64 array per trace-dataset label column (`label_columns`), rows k = 1..n: the
    same values as `shift` of each label's trajectory, gathered for all columns at once.

    The `_output` columns need the spec's `outputs`; without them they are left out.
    `alternative_labels`: the labels (among `labels`) kept under an alternative semantics; the
    directions by default (no world to run); any other label, e.g. the position `x` and `y`, runs
    the spec's worlds under that semantics (walls and markers included).
    """
    unknown = sorted(set(alternative_labels) - set(ALL_LABELS))
    if unknown:
        raise ValueError(f"unknown label(s) {unknown} in alternative_labels; expected some of {ALL_LABELS}")
    directions_only = set(alternative_labels) <= set(DIRECTION_LABELS)
    worlds = _worlds(inputs)  # parsed once for every semantics
    spec_output = output_labels(worlds, outputs) if outputs is not None else None
    n = len(program.body)
    offsets = tuple(int(o) for o in offsets)
    # gather index (columns, n) into [s_0..s_n, MISSING]: offsets, then s_0 (initial) and s_n (final)
    j = np.arange(1, n + 1)[None, :] + np.array(offsets, dtype=np.int64)[:, None]
    gather = np.vstack([np.where((j >= 0) & (j <= n), j, n + 1), np.zeros((1, n), np.int64), np.full((1, n), n)])
    out = {}
    for name in semantics:
        if name == "original":  # every label; an alternative keeps `alternative_labels`
            table, kept, specials = trajectory_labels(program, worlds, name), labels, (INITIAL, FINAL)
            rows = gather
        else:
            run = direction_trajectories if directions_only else trajectory_labels
            table, kept, specials = run(program, worlds, name), [l for l in labels if l in alternative_labels], (FINAL,)
            rows = gather[[c for c in range(len(gather)) if c != len(offsets)]]  # no initial column
        if not kept:
            continue
        values = np.stack([table[l] for l in kept])  # (labels, n + 1)
        padded = np.hstack([values, np.full((len(kept), 1), MISSING, dtype=np.int64)])
        gathered = padded[:, rows]  # (labels, columns, n)
        for i, label in enumerate(kept):
            for c, column in enumerate(_column_names(name, label, (*offsets, *specials))):
                out[column] = gathered[i, c]
            if name == "original" and spec_output is not None:
                out[label_column(label, OUTPUT)] = np.full(n, spec_output[label], dtype=np.int64)
    return out
