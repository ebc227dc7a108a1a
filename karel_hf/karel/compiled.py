"""The extended-language generator compiled with numba: one example at a time, in machine code.

`karel_hf.karel.extended_sampling.extended_examples` builds a batch of extended-language examples
with NumPy (a batched sampler, a batched interpreter). With numba installed (`pip install
karel_hf[fast]`) it calls `extended_kernel` instead, which does the same work per example in one
compiled loop: draw attempt 0, 1, ... of the example's program from the same counter-based values
(karel_hf.karel.randomness: SplitMix64 of (key, counter)), run it on the example's input worlds
under the same step budget (actions, evaluated conditions and repeat iterations count), and keep
the first attempt whose runs all halt within the budget and leave at most MAX_VISIBLE_MARKERS on
every visible cell. The examples are the same, byte for byte (tests/test_sampling.py compares the
two paths); only the speed differs.

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
def _hash(key, counter):
    """SplitMix64 finalizer of key + counter * GAMMA (karel_hf.karel.randomness.hash_at)."""
    z = np.uint64(counter) * np.uint64(_GAMMA) + key
    z ^= z >> np.uint64(30)
    z *= np.uint64(_MIX1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(_MIX2)
    z ^= z >> np.uint64(31)
    return z


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
def extended_kernel(index, lengths, walls, markers, robot, direction, key, num_lines, max_attempts, thresholds,
                    control, max_depth, budget, max_visible, num_pairs, w,
                    codes, depths, out_markers, out_robot, out_direction, trace_x, trace_y, trace_dir, trace_len):
    """Every example's first valid program and its runs into the output arrays (see module doc).
    Returns -1, or the row of the first example without a valid program in max_attempts."""
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
    for r in range(n):
        found = False
        for attempt in range(max_attempts):
            first = (np.uint64(index[r]) * np.uint64(max_attempts + 1) + np.uint64(attempt)) * np.uint64(num_lines)
            _sample(codes[r], depths[r], key, first, lengths[r], thresholds, control, max_depth, remaining, orelse, u)
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
            if ok:
                found = True
                break
        if not found:
            return r
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
    return -1


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
