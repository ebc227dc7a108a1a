"""The batched twin of the interpreter: straight-line programs run on many worlds at once.

`karel_hf.karel.interpreter.execute` is the reference: one parsed program on one `World`. This
module applies the same rules (docs/protocol.md §1: `move` into a wall or the border does nothing,
`turn_left` / `turn_right` turn by a quarter, `put_marker` adds one marker, `pick_marker` on an
empty cell does nothing) to a whole batch with NumPy, for the corpus generator:

- `WorldBatch`: N = n * P worlds (P consecutive worlds per program) as flat arrays of their
  interior cells (c = (height - 2) * (width - 2)), walls and markers (N, c), the robot's cell and
  direction (N,); `view_codes` renders them as the view codes datasets store;
- `run_straight_line`: step k applies action k of every program (an (n, T) int8 array of action
  codes, -1 once a program has ended) to all of its worlds at once, on flat (N * c,) wall and
  marker arrays, recording the robot's cell and direction before the first and after every step.

tests/test_sampling.py checks it against `execute` on random programs and worlds, directly and
through every generated corpus.

Pure Python + NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .program import ACTIONS
from .world import DX, DY, MARKER_CODE_OFFSET, ROBOT_CODE_OFFSET, WALL_CODE, World

MOVE, TURN_LEFT, TURN_RIGHT, PUT_MARKER, PICK_MARKER = range(len(ACTIONS))


@dataclass
class WorldBatch:
    """N worlds as interior arrays; c = (height - 2) * (width - 2) interior cells, row-major."""

    walls: np.ndarray  # (N, c) bool interior walls
    markers: np.ndarray  # (N, c) bool or int interior marker counts
    robot: np.ndarray  # (N,) int64 robot cell, index into the c interior cells
    direction: np.ndarray  # (N,) int8

    def examples(self, rows: np.ndarray, num_pairs: int) -> WorldBatch:
        """The worlds of the programs `rows` (each program owns num_pairs consecutive worlds)."""
        worlds_of_rows = (rows[:, None] * num_pairs + np.arange(num_pairs)).reshape(-1)
        return WorldBatch(self.walls[worlds_of_rows], self.markers[worlds_of_rows],
                          self.robot[worlds_of_rows], self.direction[worlds_of_rows])

    def world(self, j: int, height: int, width: int) -> World:
        """World object of world j (border added)."""
        h, w = height - 2, width - 2
        walls = np.ones((height, width), dtype=bool)
        walls[1:-1, 1:-1] = self.walls[j].reshape(h, w)
        markers = np.zeros((height, width), dtype=np.int16)
        markers[1:-1, 1:-1] = self.markers[j].reshape(h, w)
        y, x = divmod(int(self.robot[j]), w)
        return World(walls, markers, x + 1, y + 1, int(self.direction[j]))


def view_codes(walls: np.ndarray, markers: np.ndarray, robot_cell: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """(N, c) int8 view codes from (N, c) walls / marker counts and the robot's cell and direction."""
    codes = markers.astype(np.int8)  # (N, c) marker counts; walls never hold markers
    has = codes != 0
    codes += MARKER_CODE_OFFSET - 1
    codes *= has  # k markers -> MARKER_CODE_OFFSET - 1 + k, none -> 0 (= EMPTY_CODE)
    codes += walls.view(np.int8) * np.int8(WALL_CODE)
    codes[np.arange(len(codes)), robot_cell] = ROBOT_CODE_OFFSET + direction
    return codes


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


def run_straight_line(worlds: WorldBatch, actions: np.ndarray, *, num_pairs: int, height: int, width: int):
    """Run (n, T) actions on the n * P worlds at once (P = num_pairs worlds per program).

    Returns final interior marker counts (N, c) int8, final robot cell (N,) and direction (N,),
    and the robot's interior cell / direction before the first and after every step, (n, P, T + 1).
    """
    n, T = actions.shape
    P = num_pairs
    c = (height - 2) * (width - 2)
    # Interior arrays of all worlds, flattened: world j occupies [j * c, (j + 1) * c).
    walls = worlds.walls.reshape(-1)  # (N * c,) bool
    markers = worlds.markers.astype(np.int8).reshape(-1)  # (N * c,) int8 counts
    base = (np.arange(n * P, dtype=np.int32) * c).reshape(n, P)  # (n, P) first cell of each world
    pos = base + worlds.robot.reshape(n, P).astype(np.int32)  # (n, P) absolute robot cell
    direction = worlds.direction.reshape(n, P).copy()  # (n, P)
    step = _move_table(height, width)  # (c, 4)
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
