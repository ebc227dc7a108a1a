"""The batched twin of the interpreter: programs run on many worlds at once.

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
- `compile_line_codes` and `run_compiled`: programs with control flow. A program in the flat form
  of karel_hf.karel.program (one code per line) compiles to a short instruction list (actions,
  condition tests, repeat entry and count-down, jumps, halt); every world is then a lane with its
  own instruction pointer, and each step executes one instruction of every live lane with table
  lookups (no per-lane branching), under the interpreter's step budget (executed actions,
  evaluated conditions and repeat iterations count).

tests/test_sampling.py checks both against `execute` on random programs and worlds, directly and
through every generated corpus.

Pure Python + NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .program import (
    ACTIONS,
    CONDITIONS,
    ELSE_CODE,
    END_CODE,
    IF_CODE,
    IFELSE_CODE,
    MAX_REPEAT,
    NUM_CONDITION_IDS,
    REPEAT_CODE,
    WHILE_CODE,
)
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


# ------------------------------------------------------------------- programs with control flow
# Instructions: op 0..4 executes that action; TEST evaluates condition `cond` and goes to `next`
# if it holds, else to `alt`; ENTER sets repeat counter `slot` to `arg`; CHECK goes to `next` (the
# body) while counter `slot` is positive, counting it down, else to `alt`; JUMP goes to `next`;
# HALT ends the run. Only actions, TESTs and CHECKs that enter the body spend the step budget, as
# in the interpreter; jumps are threaded away at compile time.
OP_TEST, OP_ENTER, OP_CHECK, OP_JUMP, OP_HALT = range(len(ACTIONS), len(ACTIONS) + 5)
COND_TRUE, COND_FALSE = NUM_CONDITION_IDS, NUM_CONDITION_IDS + 1  # the `cond` of non-TEST instructions


@dataclass
class CompiledPrograms:
    """n programs as (n, C) instruction fields; instruction 0 is the entry, `next`/`alt` are indices."""

    op: np.ndarray  # (n, C) int32
    cond: np.ndarray  # (n, C) int32 condition id, or COND_TRUE / COND_FALSE
    arg: np.ndarray  # (n, C) int32 repeat count of ENTER
    slot: np.ndarray  # (n, C) int32 repeat counter (the repeat's nesting depth)
    next: np.ndarray  # (n, C) int32
    alt: np.ndarray  # (n, C) int32
    num_slots: int


def _match(keys: np.ndarray, others: np.ndarray, later: bool) -> np.ndarray:
    """For each of `keys`, the index into `others` (sorted) of the nearest one after it (`later`) or
    before it; -1 where there is none. Keys are (program, depth, position) numbers."""
    at = np.searchsorted(others, keys, side="right") - (0 if later else 1)
    return np.where((at >= 0) & (at < len(others)), at, -1)


def compile_line_codes(codes, depths) -> CompiledPrograms:
    """Compile (n, L) line codes and depths (karel_hf.karel.program.line_codes, -1 padded).

    Per line: an action -> its op; if / ifelse / while -> TEST (else-branch: past the block's
    `} else {`, or past its `}`); repeat -> ENTER then CHECK; `} else {` -> JUMP past the block;
    `}` of a while -> JUMP to its TEST, of a repeat -> JUMP to its CHECK, of an if -> nothing.
    The lines of a block are matched by depth: a block's `} else {` and `}` are the first of
    their kind at its depth after its opening line (found by binary search over the lines'
    (program, depth, position) numbers).
    """
    codes, depths = np.asarray(codes, dtype=np.int32), np.asarray(depths, dtype=np.int32)
    n, L = codes.shape
    flat = codes.reshape(-1)
    is_action = (codes >= 0) & (codes < len(ACTIONS))
    is_test = (codes >= IF_CODE) & (codes < REPEAT_CODE)
    is_repeat = (codes >= REPEAT_CODE) & (codes <= REPEAT_CODE + MAX_REPEAT)
    flat_depths = depths.reshape(-1)
    span = int(depths.max(initial=0)) + 1

    def group(lines):  # (program, depth): the lines of one block share it
        return lines // L * span + flat_depths[lines]

    def key(lines):  # (program, depth, position) as one number
        return group(lines) * L + lines % L

    def lines_by_key(mask):  # flat indices of the lines of a kind, in key order
        lines = np.flatnonzero(mask)
        return lines[np.argsort(key(lines), kind="stable")]

    opens, ends, elses = lines_by_key(is_test | is_repeat), lines_by_key(flat == END_CODE), lines_by_key(
        flat == ELSE_CODE)
    open_key = key(opens)
    end_at, else_at = _match(open_key, key(ends), True), _match(open_key, key(elses), True)
    end_of = np.where(end_at >= 0, ends[np.maximum(end_at, 0)] if len(ends) else -1, -1)
    end_of[(end_at < 0) | (group(np.maximum(end_of, 0)) != group(opens))] = -1
    opener = flat[opens]
    is_ifelse = (opener >= IFELSE_CODE) & (opener < WHILE_CODE)
    else_of = np.where(is_ifelse & (else_at >= 0), elses[np.maximum(else_at, 0)] if len(elses) else -1, -1)
    opener_of_end = _match(key(ends), open_key, False)  # index into opens
    opener_of_else = _match(key(elses), open_key, False)
    if (np.any(end_of < 0) or np.any(opener_of_end < 0) or np.any(opener_of_else < 0)
            or np.any(end_of[opener_of_end] != ends) or np.any(else_of[opener_of_else] != elses)
            or np.any(is_ifelse & ((else_of < 0) | (else_of > end_of)))):
        raise ValueError("line codes: every block needs its closing line (and an ifelse its else line) at the "
                         "depth of its opening line")
    loop = (opener >= WHILE_CODE)  # while and repeat blocks jump back from their `}`
    count = (is_action | is_test).astype(np.int32) + 2 * is_repeat
    count.reshape(-1)[elses] = 1
    count.reshape(-1)[ends[loop[opener_of_end]]] = 1
    first = (np.cumsum(count, axis=1, dtype=np.int32) - count).reshape(-1)  # each line's first instruction
    after = first + count.reshape(-1)  # the instruction after each line's
    total = count.sum(axis=1, dtype=np.int32)  # HALT's index
    C = int(total.max(initial=0)) + 1
    row_start = np.arange(n, dtype=np.int64) * C  # flat instruction index = row * C + pc
    op = np.full((n, C), OP_HALT, dtype=np.int32)
    cond = np.full((n, C), COND_TRUE, dtype=np.int32)
    arg, slot = np.zeros((n, C), dtype=np.int32), np.zeros((n, C), dtype=np.int32)
    nxt = np.minimum(np.arange(1, C + 1, dtype=np.int32), total[:, None])  # (n, C); HALT stays put
    alt = nxt.copy()
    op_f, cond_f, arg_f, slot_f, nxt_f, alt_f = (a.reshape(-1) for a in (op, cond, arg, slot, nxt, alt))

    def flat_pc(lines):  # flat instruction index of lines' first instructions
        return lines // L * C + first[lines]

    def resolve(rows, pcs):  # follow jumps from (row, pc) targets; returns pcs
        pcs = pcs.copy()
        while True:
            jumps = op_f[rows * C + pcs] == OP_JUMP
            if not jumps.any():
                return pcs
            pcs[jumps] = nxt_f[rows[jumps] * C + pcs[jumps]]

    lines = np.flatnonzero(is_action)
    op_f[flat_pc(lines)] = flat[lines]
    at = flat_pc(opens)  # each block's TEST or ENTER
    tests = opener < REPEAT_CODE
    op_f[at[tests]], cond_f[at[tests]] = OP_TEST, (opener[tests] - IF_CODE) % NUM_CONDITION_IDS
    alt_f[at[tests]] = np.where(is_ifelse, after[np.maximum(else_of, 0)], after[end_of])[tests]
    reps = ~tests
    op_f[at[reps]], arg_f[at[reps]], slot_f[at[reps]] = OP_ENTER, opener[reps] - REPEAT_CODE, depths.reshape(-1)[
        opens[reps]]
    check = at[reps] + 1
    op_f[check], cond_f[check], slot_f[check], alt_f[check] = OP_CHECK, COND_FALSE, slot_f[at[reps]], after[
        end_of[reps]]
    else_jump = flat_pc(elses)  # `} else {`: past the block
    op_f[else_jump], nxt_f[else_jump] = OP_JUMP, after[end_of[opener_of_else]]
    back = loop[opener_of_end]  # `}` of a while / repeat: to its TEST / CHECK
    loop_jump = flat_pc(ends[back])
    op_f[loop_jump] = OP_JUMP
    nxt_f[loop_jump] = first[opens[opener_of_end[back]]] + (opener[opener_of_end[back]] >= REPEAT_CODE)
    # Thread jumps: a target that is a JUMP becomes the JUMP's final target. Jumps are reached from
    # the instruction before them (an action ending a block), a TEST's or CHECK's exit, or a jump.
    jumps = np.concatenate([else_jump, loop_jump])
    before = jumps[(jumps % C > 0)] - 1
    before = before[op_f[before] < len(ACTIONS)]
    branches = np.concatenate([at[tests], check])
    for field, where in ((nxt_f, before), (alt_f, branches), (nxt_f, jumps)):
        field[where] = resolve(where // C, field[where])
    num_slots = int(depths.reshape(-1)[opens[reps]].max(initial=-1)) + 1
    return CompiledPrograms(op, cond, arg, slot, nxt, alt, num_slots=num_slots)


def _wall_bits(walls: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N * c,) int8: bit d set where a move in direction d from the cell is blocked (wall or border)."""
    h, w = height - 2, width - 2
    padded = np.ones((len(walls), h + 2, w + 2), dtype=np.int8)
    padded[:, 1:-1, 1:-1] = walls.reshape(-1, h, w)
    bits = np.zeros((len(walls), h, w), dtype=np.int8)
    for d in range(4):
        bits |= padded[:, 1 + DY[d] : 1 + DY[d] + h, 1 + DX[d] : 1 + DX[d] + w] << d
    return bits.reshape(-1)


# What a lane sees, as one index `low` in [0, 128): direction * 32 + wall bits * 2 + (markers here > 0).
_DIRECTION, _BITS, _MARKER = (a.reshape(-1) for a in np.meshgrid(np.arange(4), np.arange(16), np.arange(2),
                                                                     indexing="ij"))
_NUM_OPS = OP_HALT + 1


def _condition_table() -> np.ndarray:
    """(cond ids + 2) * 128 bool: the value of each condition id in each `low` situation."""
    table = np.zeros((NUM_CONDITION_IDS + 2, 128), dtype=bool)
    for c, name in enumerate(CONDITIONS):
        if name == "markers_present":
            value = _MARKER == 1
        elif name == "no_markers_present":
            value = _MARKER == 0
        else:
            turn = {"front_is_clear": 0, "left_is_clear": 3, "right_is_clear": 1}[name]
            value = (_BITS >> ((_DIRECTION + turn) % 4)) & 1 == 0
        table[2 * c], table[2 * c + 1] = value, ~value
    table[COND_TRUE] = True
    return table.reshape(-1)


_COND_TABLE = _condition_table()


# A lane's state is packed into three int32s: `posdir` = absolute cell * 128 + direction * 32 (the
# direction bits are `low`'s), `acc` = steps << 20 | marker changes << 10 | executed actions, and
# `ins2` = 2 * absolute instruction index (so that ins2 + branch indexes the successor table).
_STEPS, _VERSION = 1 << 20, 1 << 10
_HALTED = 1 << 30  # added by HALT: ends the lane through the same test as an exhausted budget
MAX_COMPILED_STEPS = _VERSION - 2  # counts must fit 10 bits


def _effect_tables(width: int) -> dict:
    """Per (op, `low`) (index op * 128 + low): what the instruction does to a lane."""
    op = np.repeat(np.arange(_NUM_OPS), 128)
    direction, bits, marker = (np.tile(a, _NUM_OPS) for a in (_DIRECTION, _BITS, _MARKER))
    blocked = (bits >> direction) & 1
    delta = np.array([DY[d] * (width - 2) + DX[d] for d in range(4)])[direction]
    move = np.where((op == MOVE) & (blocked == 0), delta, 0)
    turn = np.select([op == TURN_LEFT, op == TURN_RIGHT], [3, 1], 0)
    change = np.select([op == PUT_MARKER, (op == PICK_MARKER) & (marker == 1)], [1, -1], 0)
    spend = op <= OP_TEST  # actions and tests; a CHECK that enters its body adds one more
    return dict(
        posdir=(move * 128 + ((direction + turn) % 4 - direction) * 32).astype(np.int32),  # change of posdir
        marker=change.astype(np.int8),
        acc=(spend * _STEPS + (change != 0) * _VERSION + (op < len(ACTIONS)) + (op == OP_HALT) * _HALTED
             ).astype(np.int32),
        repeat=np.select([op == OP_ENTER, op == OP_CHECK], [1, 2], 0).astype(np.int8),
    )


@dataclass
class CompiledRuns:
    """What `run_compiled` returns for N lanes; c interior cells, T = max_steps."""

    markers: np.ndarray  # (N, c) int8 final marker counts
    count: np.ndarray  # (N,) int32 executed actions
    completed: np.ndarray  # (N,) bool: the run ended within the budget (else the rest is partial)
    trace: np.ndarray  # (N, T + 2) int32 (lane * c + cell) * 128 + direction * 32 after each action
    cells: int

    def robot_states(self, lanes=None) -> tuple[np.ndarray, np.ndarray]:
        """(interior cell (m, T + 1) int16, direction (m, T + 1) int8) before the first and after
        every executed action of the chosen lanes (default all); -1 after a run's last action."""
        lanes = np.arange(len(self.count)) if lanes is None else np.asarray(lanes)
        steps = self.trace.shape[1] - 1
        kept = np.arange(steps)[None, :] <= self.count[lanes][:, None]  # (m, T + 1)
        values = self.trace[lanes, :-1][kept]  # only the entries of the runs
        cells = np.full(kept.shape, -1, dtype=np.int16)
        directions = np.full(kept.shape, -1, dtype=np.int8)
        cells[kept] = (values >> 7) - np.repeat(lanes.astype(np.int32) * self.cells, self.count[lanes] + 1)
        directions[kept] = (values & 127) >> 5
        return cells, directions

    def final_robot(self, lanes=None) -> tuple[np.ndarray, np.ndarray]:
        """(interior cell, direction) at the end of the chosen lanes' runs (default all)."""
        lanes = np.arange(len(self.count)) if lanes is None else np.asarray(lanes)
        last = self.trace[lanes, self.count[lanes]]
        return (last >> 7) - lanes.astype(np.int32) * self.cells, ((last & 127) >> 5).astype(np.int8)


def run_compiled(worlds: WorldBatch, programs: CompiledPrograms, program_of: np.ndarray, *, height: int, width: int,
                 max_steps: int, world_of: np.ndarray | None = None,
                 stop_program_on_failure: bool = False) -> CompiledRuns:
    """Run program `program_of[j]` on world `world_of[j]` (default j), for all N lanes j at once,
    with a step budget of `max_steps`; each lane changes its own copy of its world's markers.

    A run that comes back to the same instruction with the same robot, repeat counters and markers
    loops forever: it stops there, as not completed (checked every 4 steps against the state at the
    last power-of-two step, as in Brent's cycle detection). With `stop_program_on_failure`, all runs
    of a program stop (not completed) once one of them fails.
    """
    N, c = len(program_of), (height - 2) * (width - 2)
    world_of = np.arange(N) if world_of is None else np.asarray(world_of)
    if len(world_of) != N or (N and world_of.max() >= len(worlds.robot)):
        raise ValueError(f"world_of: need one index into the {len(worlds.robot)} worlds per lane ({N})")
    if not 0 <= max_steps <= MAX_COMPILED_STEPS:
        raise ValueError(f"max_steps must be in 0..{MAX_COMPILED_STEPS}, got {max_steps}")
    n, C = programs.op.shape
    T = max_steps
    # Instruction tables over ins2 (even entries); the successor table holds (alt, next) pairs.
    base = np.arange(n, dtype=np.int32)[:, None] * C
    op_base = np.repeat((programs.op * 128).reshape(-1), 2)
    cond_base = np.repeat((programs.cond * 128).reshape(-1), 2)
    successor = np.stack([programs.alt + base, programs.next + base], axis=-1).reshape(-1) * 2
    arg_table, slot_table = np.repeat(programs.arg.reshape(-1), 2), np.repeat(programs.slot.reshape(-1), 2)
    effect = _effect_tables(width)
    markers = worlds.markers[world_of].astype(np.int8).reshape(-1)  # (N * c,) the lanes' own counts
    bits2 = _wall_bits(worlds.walls[world_of], height, width) * 2  # (N * c,) int8, the lanes' worlds
    S = max(programs.num_slots, 1)
    counters = np.zeros(N * S, dtype=np.int32)
    program_of = np.asarray(program_of, dtype=np.int32)
    failed_program = np.zeros(n, dtype=bool)
    limit = (T + 1) * _STEPS  # acc >= limit: budget exhausted or halted

    lane = np.arange(N, dtype=np.int32)  # live lanes, compacted as they finish
    ins2 = program_of * (2 * C)
    posdir = (lane * c + worlds.robot[world_of].astype(np.int32)) * 128 + worlds.direction[world_of].astype(np.int32) * 32
    acc = np.zeros(N, dtype=np.int32)
    trace_start = lane * (T + 2)  # T + 2 columns: the action that exhausts the budget lands in the last
    trace = np.empty(N * (T + 2), dtype=np.int32)  # posdir after each executed action
    trace[trace_start] = posdir
    final = np.zeros(N, dtype=np.int32)  # acc at the end
    completed = np.ones(N, dtype=bool)
    snapshot = None
    step = 0
    while len(lane):
        step += 1
        pos = posdir >> 7
        here = markers[pos]
        low = (posdir & 127) + bits2[pos] + (here > 0)
        k = op_base[ins2] + low
        branch = _COND_TABLE[cond_base[ins2] + low]
        markers[pos] = here + effect["marker"][k]
        posdir += effect["posdir"][k]
        acc += effect["acc"][k]
        trace[trace_start + (acc & (_VERSION - 1))] = posdir
        rep = np.flatnonzero(effect["repeat"][k])
        if len(rep):
            i = ins2[rep]
            where = lane[rep] * S + slot_table[i]
            counter = counters[where]
            enter = effect["repeat"][k[rep]] == 1
            go = ~enter & (counter > 0)
            counters[where] = np.where(enter, arg_table[i], counter - go)
            branch[rep] = enter | go
            acc[rep] += go * _STEPS
        ins2 = successor[ins2 + branch]
        done = acc >= limit
        if step % 4 == 0:  # the same state as at the last power-of-two step: an endless loop
            now = (ins2, posdir, acc & ((_VERSION - 1) * _VERSION), counters.reshape(N, S)[lane])
            if step & (step - 1) == 0:
                snapshot = tuple(a.copy() for a in now)  # posdir changes in place
            elif snapshot is not None:
                done |= (now[0] == snapshot[0]) & (now[1] == snapshot[1]) & (now[2] == snapshot[2]) & (
                    now[3] == snapshot[3]).all(axis=1)
            if stop_program_on_failure:
                done |= failed_program[program_of[lane]]
        if done.any():
            ended = lane[done]
            failed = acc[done] < _HALTED
            completed[ended[failed]] = False
            failed_program[program_of[ended[failed]]] = True
            final[ended] = acc[done]
            keep = ~done
            lane, ins2, posdir, acc, trace_start = (a[keep] for a in (lane, ins2, posdir, acc, trace_start))
            if snapshot is not None:
                snapshot = tuple(a[keep] for a in snapshot)
    count = np.minimum(final & (_VERSION - 1), T)  # (N,) executed actions
    return CompiledRuns(markers.reshape(N, c), count, completed, trace.reshape(N, T + 2), c)
