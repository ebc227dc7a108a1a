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

Offsets pair a step with a state (k = 1..n indexes the generated actions; the model state m_k is
taken where action k is emitted): offset 0 ("current") gives s_k, 1 ("+1") s_{k+1}, 2 ("+2")
s_{k+2}; rows with k + offset > n get `MISSING` (-1). `INITIAL` gives s_0 on every row: the
"nothing happened" shortcut baseline (e.g. predict the input's initial direction).

Under an alternative semantics (`karel_hf.karel.SEMANTICS`) the program is reinterpreted with
`Semantics.apply` and re-executed, which gives the intervention's alternative labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from karel_hf.karel.interpreter import execute
from karel_hf.karel.program import Program
from karel_hf.karel.semantics import SEMANTICS, get_semantics
from karel_hf.karel.world import DX, DY, World

MISSING = -1
NUM_SPEC_INPUTS = 5
INITIAL = "initial"  # the offset name of the s_0 shortcut column
OFFSETS = (0, 1, 2)
V1_LABELS = tuple(f"direction_{i}" for i in range(NUM_SPEC_INPUTS))
V3_LABELS = (
    "direction_0",
    "dx_start", "dy_start", "dx_end", "dy_end",
    "x", "y",
    "facing_wall",
    "wall_north", "wall_east", "wall_south", "wall_west",
)
ALL_LABELS = V1_LABELS + tuple(name for name in V3_LABELS if name not in V1_LABELS)
LABEL_SETS = {"v1": V1_LABELS, "v3": V3_LABELS}
DIRECTION_LABELS = V1_LABELS
_NEIGHBOURS = ("wall_north", "wall_east", "wall_south", "wall_west")  # direction order N, E, S, W


def v1_labels(num_prompt_pairs: int = NUM_SPEC_INPUTS) -> tuple[str, ...]:
    """The v1 direction tasks of the spec inputs shown in the prompt (at most `NUM_SPEC_INPUTS`).

    >>> v1_labels(1), len(v1_labels())
    (('direction_0',), 5)
    """
    if num_prompt_pairs < 1:
        raise ValueError(f"num_prompt_pairs must be >= 1, got {num_prompt_pairs}")
    return V1_LABELS[: min(num_prompt_pairs, NUM_SPEC_INPUTS)]


def label_column(label: str, offset: int | str = 0, semantics: str = "original") -> str:
    """The trace-dataset column holding `label` at `offset` under `semantics`.

    >>> label_column("direction_0"), label_column("direction_0", 2), label_column("x", "initial", "swap")
    ('direction_0', 'direction_0_next2', 'swap__x_initial')
    """
    if label not in ALL_LABELS:
        raise ValueError(f"unknown label {label!r}; expected one of {ALL_LABELS}")
    if offset == INITIAL:
        name = f"{label}_{INITIAL}"
    elif isinstance(offset, (int, np.integer)) and offset >= 0:
        name = label if offset == 0 else f"{label}_next{int(offset)}"
    else:
        raise ValueError(f"offset must be a non-negative int or {INITIAL!r}, got {offset!r}")
    get_semantics(semantics)
    return name if semantics == "original" else f"{semantics}__{name}"


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


def trajectory_labels(program: Program, inputs: Sequence, semantics: str = "original") -> dict[str, np.ndarray]:
    """Every label of `ALL_LABELS` for states s_0..s_n, each an (n+1,) int64 array.

    `inputs` are the spec input worlds (`World`s or view-code arrays); the first
    `NUM_SPEC_INPUTS` are used.
    """
    worlds = [w if isinstance(w, World) else World.from_view_codes(w) for w in inputs[:NUM_SPEC_INPUTS]]
    if len(worlds) < NUM_SPEC_INPUTS:
        raise ValueError(f"need {NUM_SPEC_INPUTS} spec inputs, got {len(worlds)}")
    trajectories = [world_trajectory(program, w, semantics) for w in worlds]
    labels = state_labels(trajectories[0])
    for i, states in enumerate(trajectories):
        labels[f"direction_{i}"] = np.array([s.direction for s in states])
    return {name: labels[name].astype(np.int64) for name in ALL_LABELS}


def shift(labels: np.ndarray, offset: int | str) -> np.ndarray:
    """Labels s_0..s_n (length n+1) aligned to steps k = 1..n (length n) at `offset`.

    >>> shift(np.array([0, 1, 2, 3]), 0), shift(np.array([0, 1, 2, 3]), 2), shift(np.array([0, 1, 2, 3]), "initial")
    (array([1, 2, 3]), array([ 3, -1, -1]), array([0, 0, 0]))
    """
    labels = np.asarray(labels)
    n = len(labels) - 1
    if offset == INITIAL:
        return np.full(n, labels[0], dtype=labels.dtype)
    out = np.full(n, MISSING, dtype=labels.dtype)
    keep = max(n - int(offset), 0)
    out[:keep] = labels[1 + int(offset) : 1 + int(offset) + keep]
    return out


def step_labels(
    program: Program,
    inputs: Sequence,
    *,
    semantics: Sequence[str] = tuple(SEMANTICS),
    offsets: Sequence[int] = OFFSETS,
    labels: Sequence[str] = ALL_LABELS,
) -> dict[str, np.ndarray]:
    """One (n,) int64 array per trace-dataset label column (see `label_column`), rows k = 1..n.

    Covers each semantics x label x offset, plus the `initial` (s_0) column per semantics x label.
    """
    out = {}
    for name in semantics:
        table = trajectory_labels(program, inputs, name)
        for label in labels:
            for offset in (*offsets, INITIAL):
                out[label_column(label, offset, name)] = shift(table[label], offset)
    return out
