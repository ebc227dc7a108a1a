"""The extended-language generator compiled with numba: one example at a time, in machine code.

`karel_hf.karel.extended_sampling.extended_examples` builds a batch of extended-language examples
with NumPy (a batched sampler, a batched interpreter). With numba installed (`pip install
karel_hf[fast]`) it calls `extended_kernel` instead, which does the same work per example in one
compiled loop: draw attempt 0, 1, ... of the example's program from the same counter-based values
(karel_hf.karel.randomness: SplitMix64 of (key, counter)), run it on the example's input worlds
under the same step budget (actions, evaluated conditions and repeat iterations count), and keep
the first attempt whose runs all halt within the budget and leave at most MAX_VISIBLE_MARKERS on
every visible cell, and, where the config asks, whose program is on its side of a held-out split
(`line_hash`) and whose prompt pairs no straight-line program solves (`straight_line_solves`). The
examples are the same, byte for byte (tests/test_sampling.py compares the two paths); only the speed
differs.

The program runs from its flat form (one code per line, karel_hf.karel.program): each block's
opening, `} else {` and `}` lines are matched with a stack, then a program counter walks the lines.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # the NumPy path serves
    numba = None

from .program import ACTIONS, ELSE_CODE, END_CODE, IF_CODE, IFELSE_CODE, NUM_CONDITION_IDS, REPEAT_CODE, WHILE_CODE
from .world import DX, DY

AVAILABLE = numba is not None

_GAMMA, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MOVE, _TURN_LEFT, _TURN_RIGHT, _PUT, _PICK = range(len(ACTIONS))
_NUM_ACTIONS = len(ACTIONS)
DX_, DY_ = np.array(DX, dtype=np.int64), np.array(DY, dtype=np.int64)


def _jit(function):
    return numba.njit(cache=True, nogil=True)(function) if AVAILABLE else function


@_jit
def _mix(z):
    """SplitMix64's finalizer of a uint64."""
    z ^= z >> np.uint64(30)
    z *= np.uint64(_MIX1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(_MIX2)
    z ^= z >> np.uint64(31)
    return z


@_jit
def _hash(key, counter):
    """SplitMix64 finalizer of key + counter * GAMMA (karel_hf.karel.randomness.hash_at)."""
    return _mix(np.uint64(counter) * np.uint64(_GAMMA) + key)


@_jit
def _uniform(u32, k):
    """Uniform integer in [0, k) from a uniform uint32 (multiply-shift, as extended_sampling._uniform)."""
    return np.int64((np.uint64(u32) * np.uint64(k)) >> np.uint64(32))


@_jit
def _sample(codes, depths, key, first, length, thresholds, control, max_depth, remaining, orelse, u):
    """One program (`length` actions) into codes / depths (one line per entry, -1 after the last):
    the line-by-line decisions of extended_sampling.sample_line_codes for a single program."""
    codes[:] = -1
    depths[:] = 0
    remaining[:] = 0
    orelse[:] = 0
    remaining[0] = length
    depth = 0
    for step in range(len(codes)):
        left = remaining[depth]
        if left == 0 and depth == 0:
            return
        for j in range(3):
            z = _hash(key, (first + np.uint64(step)) * np.uint64(3) + np.uint64(j))
            u[j] = z & np.uint64(0xFFFFFFFF)
            u[3 + j] = z >> np.uint64(32)
        if left == 0:  # the block at this depth is finished: `} else {` for an ifelse's first part, else `}`
            depths[step] = depth - 1
            if orelse[depth] > 0:
                codes[step] = ELSE_CODE
                remaining[depth] = orelse[depth]
                orelse[depth] = 0
            else:
                codes[step] = END_CODE
                depth -= 1
        elif depth < max_depth and u[0] < control:  # a control block
            kinds = 4 if left >= 2 else 3  # if, repeat, while, ifelse
            kind = _uniform(u[1], kinds)
            smallest = 2 if kind == 3 else 1
            size = smallest + _uniform(u[2], max(left - smallest + 1, 1))
            condition = _uniform(u[3], 5) * 2 + np.int64(u[4] >> np.uint64(31))
            split = 1 + _uniform(u[5], max(size - 1, 1))
            if kind == 0:
                codes[step] = IF_CODE + condition
            elif kind == 1:
                codes[step] = REPEAT_CODE + 2 + _uniform(u[3], 3)
            elif kind == 2:
                codes[step] = WHILE_CODE + condition
            else:
                codes[step] = IFELSE_CODE + condition
            depths[step] = depth
            remaining[depth] -= size
            body = split if kind == 3 else size
            remaining[depth + 1] = body
            orelse[depth + 1] = size - body
            depth += 1
        else:  # an action: the number of thresholds <= u
            action = 0
            for t in thresholds:
                if np.uint64(u[1]) >= t:
                    action += 1
            codes[step] = action
            depths[step] = depth
            remaining[depth] -= 1


@_jit
def _match_blocks(codes, partner, stack):
    """partner[line]: for an opening line its `}` (an ifelse's: its `} else {`), for a `} else {`
    line its `}`, for a `}` line its opening line."""
    top = 0
    for line in range(len(codes)):
        code = codes[line]
        if code < 0:
            break
        if IF_CODE <= code < ELSE_CODE:
            stack[top] = line
            top += 1
        elif code == ELSE_CODE:
            partner[stack[top - 1]] = line
        elif code == END_CODE:
            top -= 1
            opener = stack[top]
            if IFELSE_CODE <= codes[opener] < WHILE_CODE:
                partner[partner[opener]] = line
            else:
                partner[opener] = line
            partner[line] = opener


@_jit
def _condition(cond, direction, blocked, marker):
    """Condition id `cond` (CONDITIONS.index * 2 + negated) in the robot's situation."""
    name = cond >> 1
    if name == 3:
        value = marker > 0
    elif name == 4:
        value = marker == 0
    else:
        turn = 0 if name == 0 else (3 if name == 1 else 1)  # front, left, right
        value = ((blocked >> ((direction + turn) & 3)) & 1) == 0
    return value != ((cond & 1) == 1)


@_jit
def _run(codes, partner, counters, walls, markers, robot, direction, budget, w, delta, cells_out, dirs_out):
    """Run the program on one world (markers changed in place) under the step budget. Records the
    robot's cell / direction before the first and after every action into cells_out / dirs_out.
    Returns (executed actions, final cell, final direction), actions = -1 when the budget ran out."""
    c = len(markers)
    h = c // w
    steps = 0
    actions = 0
    cell, d = np.int64(robot), np.int64(direction)
    cells_out[0], dirs_out[0] = cell, d
    pc = 0
    L = len(codes)
    while pc < L and codes[pc] >= 0:
        code = codes[pc]
        if code < _NUM_ACTIONS:
            if code == _MOVE:
                y, x = cell // w + DY_[d], cell % w + DX_[d]
                if 0 <= y < h and 0 <= x < w and not walls[cell + delta[d]]:
                    cell += delta[d]
            elif code == _TURN_LEFT:
                d = (d + 3) & 3
            elif code == _TURN_RIGHT:
                d = (d + 1) & 3
            elif code == _PUT:
                markers[cell] += 1
            elif markers[cell] > 0:
                markers[cell] -= 1
            steps += 1
            actions += 1
            if steps > budget:
                return -1, cell, d
            cells_out[actions], dirs_out[actions] = cell, d
            pc += 1
        elif code < REPEAT_CODE:  # if / ifelse / while: evaluate the condition
            steps += 1
            if steps > budget:
                return -1, cell, d
            blocked = 0
            y, x = cell // w, cell % w
            for k in range(4):
                yy, xx = y + DY_[k], x + DX_[k]
                if not (0 <= yy < h and 0 <= xx < w) or walls[cell + delta[k]]:
                    blocked |= 1 << k
            if _condition((code - IF_CODE) % NUM_CONDITION_IDS, d, blocked, markers[cell]):
                pc += 1
            else:
                pc = partner[pc] + 1  # past the `} else {` of an ifelse, past the `}` otherwise
        elif code == ELSE_CODE:  # the end of an ifelse's first part: past its `}`
            pc = partner[pc] + 1
        else:  # repeat(k) (set the counter, then check it), or `}`
            opener = pc if code < ELSE_CODE else partner[pc]
            head = codes[opener]
            if code < ELSE_CODE:
                counters[opener] = code - REPEAT_CODE
            elif head < WHILE_CODE:  # the `}` of an if / ifelse
                pc += 1
                continue
            elif head < REPEAT_CODE:  # the `}` of a while: its condition again
                pc = opener
                continue
            if counters[opener] > 0:  # the repeat's count-down enters the body: a step
                counters[opener] -= 1
                steps += 1
                if steps > budget:
                    return -1, cell, d
                pc = opener + 1
            else:
                pc = partner[opener] + 1
    return actions, cell, d


@_jit
def line_hash(codes, start):
    """karel_hf.karel.heldout.program_hash of one program's line codes (-1 padded) from the hash's
    starting value `start` (stream_key(key, STREAM_HELDOUT))."""
    h = np.uint64(start)
    for line in range(len(codes)):
        if codes[line] < 0:
            break
        h = _mix((h ^ np.uint64(codes[line] + 1)) + np.uint64(_GAMMA))
    return h


@_jit
def _distance(cell, d, marks, target_cell, target_d, target_marks, w):
    """A lower bound on the actions that take one world to its target view: each action moves the
    robot one cell, or turns it a quarter, or changes one cell's markers by one. The markers under
    the target robot are not in the view, so they do not count."""
    steps = abs(cell // w - target_cell // w) + abs(cell % w - target_cell % w)
    turn = (d - target_d) & 3
    steps += min(turn, 4 - turn)
    for k in range(len(marks)):
        if k != target_cell:
            steps += abs(marks[k] - target_marks[k])
    return steps


@_jit
def straight_line_solves(walls, markers, robot, direction, out_markers, out_robot, out_direction, max_length, w):
    """Whether some straight-line program of 1..max_length actions takes every input world (walls /
    markers (P, c) interior, robot cell / direction (P,)) to its output's view (out_markers,
    out_robot, out_direction; the markers under the output's robot are not compared, as the view
    hides them). Exact: no program when the robot turns by different amounts in two worlds, else a
    depth-first search over action sequences in a canonical form (no action undoing the one before,
    turns before the marker actions they commute with, turn_left twice for a half turn, turn_right
    for three left turns: every program has a form as short that does the same) that cuts a branch
    when the actions left are fewer than `_distance` to some target."""
    P, c = markers.shape
    h = c // w
    for p in range(1, P):  # a straight-line program turns the robot by the same amount in every world
        if (out_direction[p] - direction[p]) & 3 != (out_direction[0] - direction[0]) & 3:
            return False
    cells = np.empty((max_length + 1, P), dtype=np.int64)
    dirs = np.empty((max_length + 1, P), dtype=np.int64)
    marks = np.empty((max_length + 1, P, c), dtype=np.int64)
    taken = np.full(max_length + 1, -1, dtype=np.int64)  # taken[t]: the action that made level t
    nxt = np.zeros(max_length + 1, dtype=np.int64)  # the next action to try from level t
    for p in range(P):
        cells[0, p], dirs[0, p] = robot[p], direction[p]
        for k in range(c):
            marks[0, p, k] = markers[p, k]
    t = 0
    while t >= 0:
        a = nxt[t]
        if a >= _NUM_ACTIONS:
            t -= 1
            continue
        nxt[t] = a + 1
        last = taken[t]
        turn = a == _TURN_LEFT or a == _TURN_RIGHT
        if ((turn and last != a and (last == _TURN_LEFT or last == _TURN_RIGHT))  # undoes the last turn
                or (a == _PICK and last == _PUT)  # undoes the last put
                or (turn and (last == _PUT or last == _PICK))  # turns commute with markers: turn first
                or (a == _TURN_RIGHT and last == _TURN_RIGHT)  # a half turn is turn_left twice
                or (a == _TURN_LEFT and last == _TURN_LEFT and t >= 2 and taken[t - 1] == _TURN_LEFT)):  # = turn_right
            continue
        bound = 0
        for p in range(P):
            cell, d = cells[t, p], dirs[t, p]
            for k in range(c):
                marks[t + 1, p, k] = marks[t, p, k]
            if a == _MOVE:
                y, x = cell // w + DY_[d], cell % w + DX_[d]
                if 0 <= y < h and 0 <= x < w and not walls[p, y * w + x]:
                    cell = y * w + x
            elif a == _TURN_LEFT:
                d = (d + 3) & 3
            elif a == _TURN_RIGHT:
                d = (d + 1) & 3
            elif a == _PUT:
                marks[t + 1, p, cell] += 1
            elif marks[t + 1, p, cell] > 0:
                marks[t + 1, p, cell] -= 1
            cells[t + 1, p], dirs[t + 1, p] = cell, d
            bound = max(bound, _distance(cell, d, marks[t + 1, p], out_robot[p], out_direction[p], out_markers[p], w))
        if bound == 0:  # every world shows its output
            return True
        if t + 1 < max_length and bound <= max_length - (t + 1):
            t += 1
            taken[t] = a
            nxt[t] = 0
    return False


@_jit
def extended_kernel(index, lengths, walls, markers, robot, direction, key, num_lines, max_attempts, tries, thresholds,
                    control, max_depth, budget, max_visible, num_pairs, w, held_start, held_threshold, held_role,
                    control_flow_pairs, straight_line_max, codes, depths, out_markers, out_robot, out_direction,
                    trace_x, trace_y, trace_dir, trace_len, failed):
    """Every example's first valid program among attempts 0..tries-1 (max_attempts sets the stride of
    the attempts' random values) and its runs into the output arrays (see module doc); failed[r] is
    set for an example without one, whose outputs are then meaningless.
    held_role: 0 no split, 1 held-out programs (line_hash(codes, held_start) < held_threshold) are
    drawn again, 2 every other program is; control_flow_pairs > 0: programs whose first that many
    pairs a straight-line program of up to straight_line_max actions solves are drawn again.
    Returns the number of failed examples."""
    n = len(index)
    c = walls.shape[1]
    P = num_pairs
    T = trace_x.shape[2] - 1
    delta = np.empty(4, dtype=np.int64)
    for k in range(4):
        delta[k] = DY_[k] * w + DX_[k]
    remaining = np.zeros(max_depth + 1, dtype=np.int64)
    orelse = np.zeros(max_depth + 1, dtype=np.int64)
    u = np.zeros(6, dtype=np.uint64)
    partner = np.zeros(num_lines, dtype=np.int64)
    stack = np.zeros(num_lines, dtype=np.int64)
    counters = np.zeros(num_lines, dtype=np.int64)
    cells = np.zeros((P, budget + 2), dtype=np.int64)
    dirs = np.zeros((P, budget + 2), dtype=np.int64)
    counts = np.zeros(P, dtype=np.int64)
    num_failed = 0
    for r in range(n):
        found = False
        failed[r] = False
        for attempt in range(tries):
            first = (np.uint64(index[r]) * np.uint64(max_attempts + 1) + np.uint64(attempt)) * np.uint64(num_lines)
            _sample(codes[r], depths[r], key, first, lengths[r], thresholds, control, max_depth, remaining, orelse, u)
            if held_role != 0 and (line_hash(codes[r], held_start) < held_threshold) == (held_role == 1):
                continue
            _match_blocks(codes[r], partner, stack)
            ok = True
            for p in range(P):
                world = r * P + p
                out_markers[world, :] = markers[world]
                count, cell, d = _run(codes[r], partner, counters, walls[world], out_markers[world], robot[world],
                                      direction[world], budget, w, delta, cells[p], dirs[p])
                if count < 0:
                    ok = False
                    break
                for k in range(c):  # markers left on a visible cell (the robot's cell shows the robot)
                    if k != cell and out_markers[world, k] > max_visible:
                        ok = False
                if not ok:
                    break
                counts[p] = count
                out_robot[world], out_direction[world] = cell, d
            if ok and control_flow_pairs > 0:
                lo, hi = r * P, r * P + control_flow_pairs
                ok = not straight_line_solves(walls[lo:hi], markers[lo:hi], robot[lo:hi], direction[lo:hi],
                                              out_markers[lo:hi], out_robot[lo:hi], out_direction[lo:hi],
                                              straight_line_max, w)
            if ok:
                found = True
                break
        if not found:
            failed[r] = True
            num_failed += 1
            continue
        for p in range(P):
            trace_len[r, p] = counts[p]
            for t in range(T + 1):
                if t <= counts[p]:
                    trace_x[r, p, t] = cells[p, t] % w + 1
                    trace_y[r, p, t] = cells[p, t] // w + 1
                    trace_dir[r, p, t] = dirs[p, t]
                else:
                    trace_x[r, p, t] = -1
                    trace_y[r, p, t] = -1
                    trace_dir[r, p, t] = -1
    return num_failed


def run_line_codes(codes, walls, markers, robot: int, direction: int, *, budget: int, width: int):
    """Run one program in flat form (`codes`, karel_hf.karel.program.line_codes) on one world of
    interior `walls` / `markers` (flat, row-major, `width` the grid's width), robot on interior cell
    `robot`. Returns (completed, final markers, cells, directions): the robot's interior cell and
    direction before the first and after every action; completed is False when the run spends more
    than `budget` steps (then the rest is partial). The compiled twin of interpreter.execute."""
    codes = np.asarray(codes, dtype=np.int16)
    markers = np.array(markers, dtype=np.int8)
    partner, stack, counters = (np.zeros(len(codes), dtype=np.int64) for _ in range(3))
    cells, dirs = np.zeros(budget + 2, dtype=np.int64), np.zeros(budget + 2, dtype=np.int64)
    w = width - 2
    delta = np.array([DY[k] * w + DX[k] for k in range(4)], dtype=np.int64)
    _match_blocks(codes, partner, stack)
    count, _, _ = _run(codes, partner, counters, np.asarray(walls, dtype=np.bool_), markers, robot, direction,
                       budget, w, delta, cells, dirs)
    return count >= 0, markers, cells[: count + 1], dirs[: count + 1]
