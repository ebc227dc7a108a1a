"""The seeded vectorised generator: config validation, determinism independent of batching,
the corpus distribution (lengths, actions, walls, markers, robot), and a cross-check of every
array against the AST interpreter, for straight-line and extended programs; the batched twins
(engine, compiled engine, printers, extended sampler) against their references; held-out programs."""

import hashlib
import subprocess
import sys
import types

import numpy as np
import pytest
from scipy.stats import chi2_contingency, chisquare

from karel_hf.karel import ACTIONS, CONDITIONS, Action, Condition, If, Program, Repeat, While, World, execute
from karel_hf.karel import format_program, parse
from karel_hf.karel.batched import WorldBatch, compile_line_codes, run_compiled, run_straight_line, view_codes
from karel_hf.karel.extended_sampling import max_lines, sample_extended_program, sample_line_codes
from karel_hf.karel.heldout import heldout_mass, is_heldout, program_hash
from karel_hf.karel.program import END_CODE, REPEAT_CODE, format_line_codes_batch, format_lines_batch, line_codes, walk
from karel_hf.karel.sampling import (
    EXTENDED_STEP_BUDGET,
    CorpusConfig,
    ProgramBatch,
    _sample_actions,
    generate,
    iter_batches,
    program_lengths,
    to_worlds,
)
from karel_hf.karel.world import MARKER_CODE_OFFSET, MAX_VISIBLE_MARKERS, ROBOT_CODE_OFFSET, WALL_CODE
from karel_hf.karel.world_sampling import sample_worlds as _sample_worlds

ARRAYS = ("index", "lengths", "actions", "inputs", "outputs", "trace_x", "trace_y", "trace_dir", "trace_len")


def assert_same(a: ProgramBatch, b: ProgramBatch):
    assert a.programs == b.programs
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_programs": 0}, "num_programs"),
        ({"num_programs": 10, "min_length": 0}, "min_length"),
        ({"num_programs": 10, "min_length": 5, "max_length": 4}, "max_length"),
        ({"num_programs": 10, "max_length": 1000}, "max_length"),
        ({"num_programs": 10, "num_pairs": 0}, "num_pairs"),
        ({"num_programs": 10, "height": 2}, "height"),
        ({"num_programs": 10, "width": 1000}, "width"),
        ({"num_programs": 10, "wall_ratio": 1.5}, "wall_ratio"),
        ({"num_programs": 10, "marker_ratio": -0.1}, "marker_ratio"),
        ({"num_programs": 10, "action_weights": (1, 2, 3)}, "action_weights"),
        ({"num_programs": 10, "action_weights": (0, 0, 0, 0, 0)}, "action_weights"),
        ({"num_programs": 10, "action_weights": (1, -1, 1, 1, 1)}, "action_weights"),
        ({"num_programs": 10, "extended": "yes"}, "extended"),
        ({"num_programs": 10, "seed": -1}, "seed"),
        ({"num_programs": 2.5}, "num_programs"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"CorpusConfig\.{field}"):
        CorpusConfig(**kwargs)


def test_config_is_hashable_and_weights_become_a_tuple():
    config = CorpusConfig(num_programs=5, action_weights=[1, 1, 1, 1, 1])
    assert config.action_weights == (1, 1, 1, 1, 1)
    assert hash(config) == hash(CorpusConfig(num_programs=5, action_weights=(1, 1, 1, 1, 1)))


@pytest.mark.parametrize("start, stop", [(-1, 3), (5, 3), (0, 11)])
def test_generate_range_errors(start, stop):
    with pytest.raises(ValueError, match="start"):
        generate(CorpusConfig(num_programs=10), start, stop)


# ------------------------------------------------------------------------------- determinism
def test_same_config_same_arrays_and_shapes():
    config = CorpusConfig(num_programs=200, seed=7)
    a, b = generate(config, 0, 100), generate(config, 0, 100)
    assert_same(a, b)
    n, P, T = 100, config.num_pairs, config.max_length
    assert a.inputs.shape == a.outputs.shape == (n, P, 6, 6) and a.inputs.dtype == np.int8
    assert a.actions.shape == (n, T) and a.actions.dtype == np.int8
    assert a.trace_x.shape == a.trace_y.shape == a.trace_dir.shape == (n, P, T + 1)
    assert a.trace_x.dtype == np.int8
    assert a.lengths.dtype == a.trace_len.dtype == np.int16
    assert a.index.dtype == np.int64 and a.index.tolist() == list(range(100))


@pytest.mark.parametrize("extended", [False, True])
def test_examples_do_not_depend_on_batching(extended):
    config = CorpusConfig(num_programs=300, seed=3, extended=extended)
    whole = generate(config, 0, 300)
    assert_same(whole, ProgramBatch.concatenate([generate(config, 0, 37), generate(config, 37, 300)]))
    assert_same(whole, ProgramBatch.concatenate(iter_batches(config, batch_size=16)))
    for i in (60, 146, 299):  # alone, an example's runs share the compiled engine with no other program
        alone = generate(config, i, i + 1)
        assert_same(alone, ProgramBatch.concatenate(iter_batches(config, 7, start=i, stop=i + 1)))
        assert_same(alone, ProgramBatch(programs=whole.programs[i : i + 1],
                                        **{name: getattr(whole, name)[i : i + 1] for name in ARRAYS}))


def test_different_seed_differs():
    a = generate(CorpusConfig(num_programs=50, seed=0), 0, 50)
    b = generate(CorpusConfig(num_programs=50, seed=1), 0, 50)
    assert not np.array_equal(a.inputs, b.inputs)
    assert not np.array_equal(a.actions, b.actions)
    assert not np.array_equal(a.lengths, b.lengths)


def test_iter_batches_streams():
    config = CorpusConfig(num_programs=50)
    batches = iter_batches(config, batch_size=16)
    assert isinstance(batches, types.GeneratorType)
    assert [len(b) for b in batches] == [16, 16, 16, 2]
    assert len(generate(config, 5, 5)) == 0
    with pytest.raises(ValueError, match="batch_size"):
        iter_batches(config, batch_size=0)
    with pytest.raises(ValueError, match="stop"):
        iter_batches(config, stop=51)


# ------------------------------------------------------------------------------ distribution
@pytest.mark.parametrize("num_programs, low, high", [(1003, 1, 10), (500, 6, 10), (7, 1, 10)])
def test_exact_counts_per_length(num_programs, low, high):
    config = CorpusConfig(num_programs=num_programs, min_length=low, max_length=high, seed=5)
    lengths = program_lengths(config)
    counts = np.bincount(lengths, minlength=high + 1)[low:]
    base, extra = divmod(num_programs, high - low + 1)
    assert counts.tolist() == [base + (i < extra) for i in range(high - low + 1)]
    assert lengths.min() >= low and lengths.max() <= high
    batch = generate(config, 0, num_programs)
    assert np.array_equal(batch.lengths, lengths)
    assert np.array_equal((batch.actions >= 0).sum(axis=1), lengths)  # -1 padded after the length
    if num_programs > 100:
        assert not np.all(np.diff(lengths) >= 0)  # shuffled


def test_action_frequencies_follow_weights():
    config = CorpusConfig(num_programs=3000, seed=11)
    actions = generate(config, 0, 3000).actions
    counts = np.bincount(actions[actions >= 0], minlength=len(ACTIONS))
    weights = np.array(config.action_weights, dtype=float)
    assert chisquare(counts, counts.sum() * weights / weights.sum()).pvalue > 1e-3


@pytest.mark.parametrize("extended", [False, True])
def test_zero_weight_action_never_drawn(extended):
    config = CorpusConfig(num_programs=300, action_weights=(1, 1, 0, 1, 1), extended=extended)
    actions = generate(config, 0, 300).actions
    assert ACTIONS.index("turn_right") not in actions


def test_world_statistics():
    config = CorpusConfig(num_programs=2000, seed=13)
    worlds = _sample_worlds(config, 0, 2000)  # 20,000 worlds
    cells = worlds.walls.shape[1]
    rows = np.arange(len(worlds.robot))
    assert not worlds.walls[rows, worlds.robot].any()  # the robot's cell is cleared of wall
    assert not worlds.markers[rows, worlds.robot].any()  # and gets no marker
    others = np.ones_like(worlds.walls)
    others[rows, worlds.robot] = False
    wall_ratio = worlds.walls[others].mean()
    assert abs(wall_ratio - config.wall_ratio) < 0.005
    free = others & ~worlds.walls
    assert not (worlds.markers & worlds.walls).any()
    assert abs(worlds.markers[free].mean() - config.marker_ratio) < 0.005
    assert chisquare(np.bincount(worlds.robot, minlength=cells)).pvalue > 1e-3
    assert chisquare(np.bincount(worlds.direction, minlength=4)).pvalue > 1e-3


def test_inputs_show_one_robot_and_agree_with_the_trace():
    batch = generate(CorpusConfig(num_programs=200, seed=2), 0, 200)
    is_robot = (batch.inputs >= ROBOT_CODE_OFFSET) & (batch.inputs < MARKER_CODE_OFFSET)
    assert (is_robot.sum(axis=(2, 3)) == 1).all()
    assert set(np.unique(batch.inputs)) <= {0, WALL_CODE, *range(ROBOT_CODE_OFFSET, MARKER_CODE_OFFSET + 1)}
    n, P = batch.inputs.shape[:2]
    ys, xs = np.nonzero(is_robot.reshape(n * P, 6, 6))[1:]
    assert np.array_equal(batch.trace_x[:, :, 0].reshape(-1), xs + 1)
    assert np.array_equal(batch.trace_y[:, :, 0].reshape(-1), ys + 1)
    direction = batch.inputs.reshape(n * P, 36).max(axis=1, where=is_robot.reshape(n * P, 36), initial=0)
    assert np.array_equal(batch.trace_dir[:, :, 0].reshape(-1), direction - ROBOT_CODE_OFFSET)


# ------------------------------------------------------------------ cross-check: interpreter
def check_against_interpreter(batch: ProgramBatch, config: CorpusConfig, examples):
    """Every array of the chosen examples equals what the AST interpreter computes."""
    for i in examples:
        program = parse(batch.programs[i], extended=config.extended)
        assert format_program(program, "lines") == batch.programs[i]
        assert program.num_actions() == batch.lengths[i]
        nodes = [ACTIONS.index(stmt.name) for stmt in _actions_in_text(batch.programs[i])]
        assert batch.actions[i, : len(nodes)].tolist() == nodes and (batch.actions[i, len(nodes):] == -1).all()
        for pair in range(config.num_pairs):
            start = World.from_view_codes(batch.inputs[i, pair])
            result = execute(program, start, trace=True, max_steps=EXTENDED_STEP_BUDGET)
            assert result.completed
            assert np.array_equal(result.world.view_codes(), batch.outputs[i, pair]), (i, pair)
            states = [start, *result.states]
            assert batch.trace_len[i, pair] == len(result.states) == result.num_actions
            for name, attribute in (("trace_x", "x"), ("trace_y", "y"), ("trace_dir", "direction")):
                trace = getattr(batch, name)[i, pair]
                assert trace[: len(states)].tolist() == [getattr(s, attribute) for s in states], (i, pair, name)
                assert (trace[len(states):] == -1).all()


def _actions_in_text(text):
    return [Program.from_actions([line.strip()[:-2]]).body[0] for line in text.splitlines()
            if line.strip().endswith("()") and "(" not in line.strip()[:-2]]


def test_straight_line_matches_interpreter():
    config = CorpusConfig(num_programs=1000, seed=21)
    batch = generate(config, 400, 700)
    check_against_interpreter(batch, config, range(len(batch)))
    for i in range(20):
        names = [ACTIONS[a] for a in batch.actions[i, : batch.lengths[i]]]
        assert batch.programs[i] == format_program(Program.from_actions(names), "lines")
    assert (batch.trace_len == batch.lengths[:, None]).all()


def test_straight_line_other_sizes_match_interpreter():
    config = CorpusConfig(num_programs=60, num_pairs=3, height=5, width=9, min_length=3, max_length=12,
                          wall_ratio=0.3, marker_ratio=0.4, seed=4)
    batch = generate(config, 0, 60)
    assert batch.inputs.shape == (60, 3, 3, 7)
    check_against_interpreter(batch, config, range(60))


def test_long_programs_never_show_more_than_nine_markers():
    # Mostly put_marker and move: many first draws pile >= 10 markers on a visible cell.
    config = CorpusConfig(num_programs=200, min_length=20, max_length=30, action_weights=(1, 0, 0, 3, 0), seed=9)
    batch = generate(config, 0, 200)
    assert batch.outputs.max() <= MARKER_CODE_OFFSET + MAX_VISIBLE_MARKERS - 1
    first_draws = _sample_actions(config, batch.index, batch.lengths, attempt=0)
    resampled = (first_draws != batch.actions).any(axis=1)
    assert 0 < resampled.sum() < len(batch)
    check_against_interpreter(batch, config, range(0, 200, 10))
    assert_same(batch, ProgramBatch.concatenate([generate(config, 0, 71), generate(config, 71, 200)]))


def test_extended_programs_match_interpreter():
    config = CorpusConfig(num_programs=200, extended=True, seed=17)
    batch = generate(config, 0, 120)
    assert batch.trace_x.shape == (120, 10, EXTENDED_STEP_BUDGET + 1)
    assert any(not parse(p).is_straight_line for p in batch.programs)
    assert batch.outputs.max() <= MARKER_CODE_OFFSET + MAX_VISIBLE_MARKERS - 1
    check_against_interpreter(batch, config, range(120))


# --------------------------------------------------------- the batched twins, checked directly
def _random_program(rng, depth=0, max_depth=3) -> Program:
    """Programs the sampler never writes: nesting to depth 3, repeat(0) and repeat(1), empty bodies."""

    def block(depth):
        body = []
        for _ in range(rng.integers(0 if depth else 1, 4)):
            kind = rng.integers(6) if depth < max_depth else 0
            condition = Condition(CONDITIONS[rng.integers(len(CONDITIONS))], bool(rng.integers(2)))
            if kind == 2:
                body.append(If(condition, block(depth + 1)))
            elif kind == 3:
                body.append(If(condition, block(depth + 1), block(depth + 1)))
            elif kind == 4:
                body.append(While(condition, block(depth + 1)))
            elif kind == 5:
                body.append(Repeat(int(rng.integers(0, 5)), block(depth + 1)))
            else:
                body.append(Action(ACTIONS[rng.integers(len(ACTIONS))]))
        return tuple(body)

    return Program(block(depth))


def _as_line_codes(programs):
    pairs = [line_codes(p) for p in programs]
    width = max(len(c) for c, _ in pairs)
    codes = np.full((len(programs), width), -1, dtype=np.int16)
    depths = np.zeros((len(programs), width), dtype=np.int8)
    for i, (c, d) in enumerate(pairs):
        codes[i, : len(c)], depths[i, : len(d)] = c, d
    return codes, depths


def test_line_codes_and_their_batched_printer_equal_the_lines_printer():
    rng = np.random.default_rng(5)
    programs = [_random_program(rng) for _ in range(400)]
    codes, depths = _as_line_codes(programs)
    assert format_line_codes_batch(codes, depths) == [format_program(p, "lines") for p in programs]
    assert all(parse(text) == p for text, p in zip(format_line_codes_batch(codes, depths), programs))
    with pytest.raises(ValueError, match="closing line"):  # repeat(2) { move() without its `}`
        compile_line_codes(np.array([[REPEAT_CODE + 2, 0]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="closing line"):  # a `}` at another depth than its block
        compile_line_codes(np.array([[REPEAT_CODE + 2, 0, END_CODE]]), np.array([[0, 1, 1]]))
    with pytest.raises(ValueError, match="repeat counts"):
        line_codes(Program((Repeat(50, (Action("move"),)),)))


@pytest.mark.parametrize("one_at_a_time", [False, True])
def test_compiled_engine_equals_the_interpreter(one_at_a_time):
    """run_compiled against execute on random programs and worlds: outputs, traces, and which runs
    exhaust the budget (a small one, so that loops of every kind do), whether each program runs with
    many others (lanes finish at different steps) or alone."""
    rng = np.random.default_rng(1 + one_at_a_time)
    height, width, P, T = 6, 7, 3, 40
    programs = [_random_program(rng) for _ in range(40 if one_at_a_time else 250)]
    programs += [parse("def run() { while(front_is_clear()) { turn_left(); turn_left() } }"),  # cycles
                 parse("def run() { while(not markers_present()) { move() } put_marker() }"),
                 parse("def run() { repeat(3) { while(no_markers_present()) { put_marker() } } }"),
                 parse("def run() { while(no_markers_present()) { put_marker(); pick_marker() } }")]
    n, c = len(programs), (height - 2) * (width - 2)
    walls = rng.random((n * P, c)) < 0.25
    robot = rng.integers(0, c, n * P)
    walls[np.arange(n * P), robot] = False
    worlds = WorldBatch(walls, np.where(walls, 0, rng.integers(0, 3, (n * P, c))), robot,
                        rng.integers(0, 4, n * P).astype(np.int8))
    codes, depths = _as_line_codes(programs)
    groups = [[i] for i in range(n)] if one_at_a_time else [list(range(n))]
    incomplete = 0
    for group in groups:
        lanes = (np.array(group)[:, None] * P + np.arange(P)).reshape(-1)
        runs = run_compiled(worlds, compile_line_codes(codes[group], depths[group]), np.repeat(np.arange(len(group)), P),
                            world_of=lanes, height=height, width=width, max_steps=T)
        cells, directions = runs.robot_states()
        for lane, j in enumerate(lanes):
            start = worlds.world(int(j), height, width)
            result = execute(programs[j // P], start, trace=True, max_steps=T)
            assert runs.completed[lane] == result.completed, (j, format_program(programs[j // P]))
            if not result.completed:
                incomplete += 1
                continue
            states = [start, *result.states]
            assert runs.count[lane] == len(result.states)
            end = WorldBatch(walls[j : j + 1], runs.markers[lane : lane + 1], cells[lane : lane + 1, len(states) - 1],
                             directions[lane : lane + 1, len(states) - 1]).world(0, height, width)
            assert end == result.world, j
            assert cells[lane, : len(states)].tolist() == [(s.y - 1) * (width - 2) + s.x - 1 for s in states]
            assert directions[lane, : len(states)].tolist() == [s.direction for s in states]
            assert (cells[lane, len(states):] == -1).all() and (directions[lane, len(states):] == -1).all()
    assert 0 < incomplete < n * P // 2


def test_numba_engine_equals_the_interpreter_on_random_programs_and_worlds():
    """karel_hf.karel.compiled's interpreter against execute, on the programs and worlds of
    test_compiled_engine_equals_the_interpreter (nesting to depth 3, repeat(0), empty bodies)."""
    compiled = pytest.importorskip("karel_hf.karel.compiled")
    if not compiled.AVAILABLE:
        pytest.skip("numba is not installed (pip install karel_hf[fast])")
    rng = np.random.default_rng(3)
    height, width, T = 6, 7, 40
    c = (height - 2) * (width - 2)
    programs = [_random_program(rng) for _ in range(300)]
    programs += [parse("def run() { while(front_is_clear()) { turn_left(); turn_left() } }"),
                 parse("def run() { repeat(3) { while(no_markers_present()) { put_marker() } } }")]
    codes, _ = _as_line_codes(programs)
    outcomes = {True: 0, False: 0}
    for i, program in enumerate(programs):
        walls = rng.random(c) < 0.25
        robot = int(rng.integers(0, c))
        walls[robot] = False
        markers = np.where(walls, 0, rng.integers(0, 3, c))
        start = WorldBatch(walls[None], markers[None], np.array([robot]), np.array([rng.integers(0, 4)], np.int8))
        world = start.world(0, height, width)
        result = execute(program, world, trace=True, max_steps=T)
        completed, end_markers, cells, directions = compiled.run_line_codes(
            codes[i], walls, markers, robot, int(start.direction[0]), budget=T, width=width)
        assert completed == result.completed, format_program(program)
        outcomes[completed] += 1
        if not completed:
            continue
        states = [world, *result.states]
        assert cells.tolist() == [(s.y - 1) * (width - 2) + s.x - 1 for s in states]
        assert directions.tolist() == [s.direction for s in states]
        end = WorldBatch(walls[None], end_markers[None], cells[-1:], directions[-1:].astype(np.int8))
        assert end.world(0, height, width) == result.world
        # the budget's edge: the fewest steps the interpreter completes in, and one fewer
        least = next(b for b in range(T + 1) if execute(program, world, max_steps=b).completed)
        for budget in (least, least - 1):
            if budget >= 0:
                done = compiled.run_line_codes(codes[i], walls, markers, robot, int(start.direction[0]),
                                               budget=budget, width=width)[0]
                assert done == (budget == least), (budget, format_program(program))
    assert outcomes[True] > 100 and outcomes[False] > 10


def test_the_control_flow_rule_without_numba_says_once_that_it_is_slow(monkeypatch):
    """Without numba the rule runs in Python (hours for the cpu-cf corpus): one warning naming the
    extra, none for a corpus without the rule, and the numpy engine asked for by name says nothing."""
    import warnings

    from karel_hf.karel import extended_sampling

    monkeypatch.setattr(extended_sampling, "_compiled", lambda: None)
    extended_sampling._warn_slow_rule.cache_clear()  # a warning given earlier in this process
    config = CorpusConfig(num_programs=100, extended=True, seed=5, height=6, width=6, max_length=4)
    ruled = CorpusConfig(num_programs=100, extended=True, seed=5, height=6, width=6, max_length=4, control_flow_pairs=2)
    index = np.arange(0, 8)

    def make(cfg, engine="auto"):
        return extended_sampling.extended_examples(cfg, index, program_lengths(cfg, 0, 8), _sample_worlds(cfg, 0, 8),
                                                   engine=engine)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make(config)
        make(ruled, engine="numpy")
        assert caught == []
        make(ruled)
        make(ruled)
    assert len(caught) == 1 and "pip install 'karel_hf[fast]'" in str(caught[0].message)


@pytest.mark.parametrize("overrides", [dict(seed=4), dict(seed=9, num_pairs=3, max_length=12),
                                       dict(seed=2, height=6, width=9, action_weights=(1, 1, 0, 3, 1)),
                                       dict(seed=5, height=6, width=6, min_length=3, max_length=6, heldout_fraction=0.15,
                                            heldout_role="only", heldout_key=3, control_flow_pairs=2)],
                         ids=["default", "long", "small-grid-weights", "heldout-needs-control-flow"])
def test_numba_and_numpy_engines_make_the_same_examples(overrides):
    """The extended generator's two engines, array for array and text for text."""
    from karel_hf.karel import compiled
    from karel_hf.karel.extended_sampling import extended_examples

    if not compiled.AVAILABLE:
        pytest.skip("numba is not installed (pip install karel_hf[fast])")
    config = CorpusConfig(num_programs=2000, extended=True, **overrides)
    index = np.arange(1000, 1600)
    lengths, worlds = program_lengths(config, 1000, 1600), _sample_worlds(config, 1000, 1600)
    fast = extended_examples(config, index, lengths, worlds, engine="numba")
    slow = extended_examples(config, index, lengths, worlds, engine="numpy")
    assert fast.keys() == slow.keys() and fast["programs"] == slow["programs"]
    for name in fast.keys() - {"programs"}:
        assert fast[name].dtype == slow[name].dtype and np.array_equal(fast[name], slow[name]), name
    assert any("while" in p or "repeat" in p for p in fast["programs"])
    with pytest.raises(ValueError, match="engine must be"):
        extended_examples(config, index, lengths, worlds, engine="cuda")


def test_compiled_engine_tells_long_loops_from_endless_ones():
    """A loop that repeats its instructions but moves the robot is not an endless one: a robot
    crossing an empty 3x30 interior, then spinning forever once it meets the wall."""
    height, width = 5, 32
    c = (height - 2) * (width - 2)
    worlds = WorldBatch(np.zeros((2, c), bool), np.zeros((2, c), np.int8), np.array([30, 30]),
                        np.array([1, 1], np.int8))  # row 1, column 0, facing east
    programs = [parse("def run() { while(front_is_clear()) { move() } turn_left() }"),
                parse("def run() { while(front_is_clear()) { move() } while(not front_is_clear()) { turn_left() } }")]
    codes, depths = _as_line_codes(programs)
    runs = run_compiled(worlds, compile_line_codes(codes, depths), np.array([0, 1]), height=height, width=width,
                        max_steps=100)
    assert runs.completed.tolist() == [True, True] and runs.count.tolist() == [30, 30]
    runs = run_compiled(worlds, compile_line_codes(codes, depths), np.array([0, 1]), height=height, width=width,
                        max_steps=40)  # 29 moves + 30 tests exhaust 40 steps: not completed, as execute says
    assert runs.completed.tolist() == [False, False]
    endless = parse("def run() { while(front_is_clear()) { move() } "
                    "while(not front_is_clear()) { turn_left(); turn_left(); turn_left(); turn_left() } }")
    codes, depths = _as_line_codes([endless])
    runs = run_compiled(worlds, compile_line_codes(codes, depths), np.array([0, 0]), height=height, width=width,
                        max_steps=1000)
    assert not runs.completed.any() and not execute(endless, worlds.world(0, height, width), max_steps=1000).completed


def test_batched_extended_sampler_has_the_reference_distribution():
    """sample_line_codes against sample_extended_program: the same law of program shapes."""
    config = CorpusConfig(num_programs=1, max_length=6, extended=True, seed=2)
    n = 3000
    codes, depths = sample_line_codes(config, np.arange(n), np.full(n, 6), np.zeros(n, dtype=np.int64))
    batched = [parse(t) for t in format_line_codes_batch(codes, depths)]
    rng = np.random.default_rng(0)
    reference = [sample_extended_program(rng, 6, config.action_weights) for _ in range(n)]

    def features(program):
        nodes = list(walk(program.body))
        kinds = [type(s).__name__ + ("else" if isinstance(s, If) and s.orelse else "") for s in nodes
                 if not isinstance(s, Action)]
        actions = [ACTIONS.index(s.name) for s in nodes if isinstance(s, Action)]
        return (min(len(kinds), 3), len(program.body), kinds, actions)

    for program in batched:
        assert program.num_actions() == 6
    a, b = [features(p) for p in batched], [features(p) for p in reference]
    for column, values in ((0, range(4)), (1, range(1, 7))):  # blocks per program, top-level statements
        table = [[sum(f[column] == v for f in side) for v in values] for side in (a, b)]
        table = np.array(table)[:, np.array(table).sum(0) > 0]
        assert chi2_contingency(table).pvalue > 1e-3, (column, table)
    for index, values in ((2, ["If", "Ifelse", "Repeat", "While"]), (3, range(len(ACTIONS)))):
        table = np.array([[sum(x == v for f in side for x in f[index]) for v in values] for side in (a, b)])
        assert chi2_contingency(table).pvalue > 1e-3, (index, table)
    # the deepest programs fit the sampler's line budget
    short = CorpusConfig(num_programs=1, max_length=3, extended=True, seed=4)
    codes, depths = sample_line_codes(short, np.arange(20000), np.full(20000, 3), np.zeros(20000, dtype=np.int64))
    assert codes.shape[1] <= max_lines(short) and (depths.max() == 2)

def test_batched_engine_equals_the_interpreter_on_random_programs_and_worlds():
    """run_straight_line against execute, on worlds the generator never makes: dense walls, marker
    piles, programs of every length with -1 padding, robots against the border."""
    rng = np.random.default_rng(0)
    for height, width, P, n, T in ((5, 5, 3, 200, 12), (8, 6, 2, 150, 25), (4, 9, 4, 100, 8)):
        c = (height - 2) * (width - 2)
        walls = rng.random((n * P, c)) < 0.35
        robot = rng.integers(0, c, n * P)
        walls[np.arange(n * P), robot] = False
        markers = np.where(walls, 0, rng.integers(0, 4, (n * P, c)))
        worlds = WorldBatch(walls, markers, robot, rng.integers(0, 4, n * P).astype(np.int8))
        lengths = rng.integers(0, T + 1, n)
        actions = rng.integers(0, len(ACTIONS), (n, T)).astype(np.int8)
        actions[np.arange(T)[None, :] >= lengths[:, None]] = -1
        final_markers, final_robot, final_direction, trace_pos, trace_dir = run_straight_line(
            worlds, actions, num_pairs=P, height=height, width=width)
        for i in range(n):
            program = Program.from_actions(ACTIONS[a] for a in actions[i, : lengths[i]])
            for pair in range(P):
                j = i * P + pair
                start = worlds.world(j, height, width)
                result = execute(program, start, trace=True)
                end = WorldBatch(walls[j : j + 1], final_markers[j : j + 1], final_robot[j : j + 1],
                                 final_direction[j : j + 1]).world(0, height, width)
                assert end == result.world, (height, width, i, pair)
                states = [start, *result.states]
                cells = [(s.y - 1) * (width - 2) + s.x - 1 for s in states]
                assert trace_pos[i, pair, : len(states)].tolist() == cells
                assert trace_dir[i, pair, : len(states)].tolist() == [s.direction for s in states]
                assert (trace_pos[i, pair, len(states):] == cells[-1]).all()  # ended programs stay put
        codes = view_codes(walls, np.minimum(final_markers, MAX_VISIBLE_MARKERS), final_robot, final_direction)
        some = rng.integers(0, n * P, 20)
        for j in some:
            world = WorldBatch(walls, np.minimum(final_markers, MAX_VISIBLE_MARKERS), final_robot,
                               final_direction).world(int(j), height, width)
            assert np.array_equal(codes[j].reshape(height - 2, width - 2), world.view_codes())


def test_batched_printer_equals_the_lines_printer():
    rng = np.random.default_rng(1)
    actions = rng.integers(0, len(ACTIONS), (500, 15)).astype(np.int8)
    lengths = rng.integers(0, 16, 500)
    actions[np.arange(15)[None, :] >= lengths[:, None]] = -1
    texts = format_lines_batch(actions)
    assert len(texts) == 500 and format_lines_batch(np.zeros((0, 3), np.int8)) == []
    for text, row, length in zip(texts, actions, lengths):
        assert text == format_program(Program.from_actions(ACTIONS[a] for a in row[:length]), "lines")


def test_to_worlds():
    batch = generate(CorpusConfig(num_programs=3), 0, 3)
    assert to_worlds(batch.inputs[0, 0]) == World.from_view_codes(batch.inputs[0, 0])
    nested = to_worlds(batch.outputs[:2])
    assert len(nested) == 2 and len(nested[0]) == 10 and isinstance(nested[1][9], World)


# ---------------------------------------------------------------------------------- imports
def test_karel_package_imports_no_heavy_libraries():
    code = (
        "import sys, karel_hf.karel, karel_hf.karel.sampling, karel_hf.karel.corpus\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'evaluate', 'numba') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------- same data as before
def _digest(config: CorpusConfig) -> str:
    batch = generate(config, 0, config.num_programs)
    h = hashlib.sha256()
    for name in ARRAYS:
        h.update(getattr(batch, name).tobytes())
    h.update("\0".join(batch.programs).encode())
    return h.hexdigest()


@pytest.mark.parametrize("config, digest", [
    (CorpusConfig(num_programs=300, seed=5), "80b8d48981b78057191385ba7f2e6fb57d44849c180accd09d488cd27c1618a2"),
    # long marker-heavy programs: many redraws for over-full cells
    (CorpusConfig(num_programs=100, min_length=20, max_length=30, action_weights=(1, 0, 0, 3, 0), seed=9),
     "fe4332be59512f1f1137679bda3e692de2033a030e2182eed536e32a6eeecb5d"),
])
def test_straight_line_corpora_are_byte_identical_to_the_first_release(config, digest):
    """Pinned digests of every array (written by the generator before held-out splits existed)."""
    assert _digest(config) == digest


# ------------------------------------------------------------------------ held-out programs
_HELD = dict(num_pairs=4, height=6, width=6, heldout_fraction=0.2, heldout_key=11)


def test_program_hash_ignores_padding_and_depends_on_key_and_order():
    a = program_hash(3, np.array([[0, 1, 2, -1, -1]]))
    assert a == program_hash(3, np.array([[0, 1, 2]])) == program_hash(3, np.array([[0, 1, 2, -1, -1, -1, -1]]))
    assert a != program_hash(4, np.array([[0, 1, 2]]))
    assert a != program_hash(3, np.array([[0, 2, 1]]))
    assert program_hash(3, np.array([[0, -1]])) != program_hash(3, np.array([[0, 0]]))
    # held out iff the hash is below fraction * 2^64: about that share of random long programs
    codes = np.random.default_rng(0).integers(0, 5, (20000, 12)).astype(np.int8)
    assert abs(is_heldout(7, 0.3, codes).mean() - 0.3) < 0.02


def test_heldout_split_is_program_disjoint_and_per_example_deterministic():
    train = CorpusConfig(num_programs=3000, min_length=1, max_length=6, heldout_role="exclude", seed=30, **_HELD)
    test = CorpusConfig(num_programs=400, min_length=3, max_length=6, heldout_role="only", seed=32, **_HELD)
    a, b = generate(train, 0, 3000), generate(test, 0, 400)
    assert not is_heldout(11, 0.2, a.actions).any() and is_heldout(11, 0.2, b.actions).all()
    assert not set(a.programs) & set(b.programs)
    assert set(np.unique(b.lengths)) == {3, 4, 5, 6}
    assert np.array_equal(b.lengths, program_lengths(test))  # the lengths are kept, only programs redrawn
    assert_same(b, ProgramBatch.concatenate([generate(test, 0, 123), generate(test, 123, 400)]))
    assert_same(generate(test, 200, 201), ProgramBatch.concatenate(iter_batches(test, 5, start=200, stop=201)))
    check_against_interpreter(b, test, range(0, 400, 20))
    check_against_interpreter(a, train, range(0, 3000, 150))
    # without the split the same examples have the same worlds; only the programs were redrawn
    plain = generate(CorpusConfig(num_programs=400, min_length=3, max_length=6, seed=32, num_pairs=4, height=6,
                                  width=6), 0, 400)
    assert np.array_equal(plain.inputs, b.inputs)
    kept = ~is_heldout(11, 0.2, plain.actions)  # programs already held out are the first draws, kept as is
    assert np.array_equal(plain.actions[~kept], b.actions[~kept]) and (plain.actions[kept] != b.actions[kept]).any(1).all()


def test_heldout_mass_is_exact_and_impossible_lengths_are_refused():
    config = CorpusConfig(num_programs=10, min_length=3, max_length=6, heldout_role="only", **_HELD)
    codes = np.indices((5, 5, 5)).reshape(3, -1).T.astype(np.int8)  # all 125 programs of length 3
    p = np.array(config.action_weights, float) / sum(config.action_weights)
    expected = p[codes].prod(axis=1)[is_heldout(11, 0.2, codes)].sum()
    assert heldout_mass(11, 0.2, tuple(map(float, config.action_weights)), 3) == pytest.approx(expected)
    # five programs of length 1: for some keys none is held out, and the "only" side is then empty
    weights = tuple(map(float, _HELD_WEIGHTS))
    key = next(k for k in range(100) if heldout_mass(k, 0.2, weights, 1) == 0.0)
    with pytest.raises(ValueError, match=r"CorpusConfig\.heldout_fraction=0\.2: programs of length 1.*eval_min_length"):
        CorpusConfig(num_programs=10, min_length=1, max_length=3, heldout_role="only", **{**_HELD, "heldout_key": key})
    CorpusConfig(num_programs=10, min_length=1, max_length=3, heldout_role="exclude", **{**_HELD, "heldout_key": key})


_HELD_WEIGHTS = CorpusConfig(num_programs=1).action_weights


@pytest.mark.parametrize(
    "kwargs",
    [{"heldout_fraction": 1.0}, {"heldout_fraction": -0.1}, {"heldout_role": "test"},
     {"heldout_role": "only"}, {"heldout_fraction": 0.1, "heldout_role": "only", "heldout_key": -1}],
)
def test_heldout_config_errors(kwargs):
    with pytest.raises(ValueError, match=r"CorpusConfig\.heldout"):
        CorpusConfig(num_programs=10, min_length=3, max_length=5, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"control_flow_pairs": 2}, r"control_flow_pairs needs extended=True"),
    ({"control_flow_pairs": 11, "extended": True}, r"control_flow_pairs must be in \[0, 10\]"),
    ({"control_flow_pairs": True, "extended": True}, r"control_flow_pairs must be an integer"),
])
def test_control_flow_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=rf"CorpusConfig\.{match}"):
        CorpusConfig(num_programs=10, **kwargs)


# ------------------------------------------------ extended corpora: held-out programs, control flow needed
def _interior(view):
    """(walls, markers, robot cell, direction) of one view's interior, as the generator holds a world."""
    world = World.from_view_codes(view)
    w = world.width - 2
    return (world.walls[1:-1, 1:-1].reshape(-1), world.markers[1:-1, 1:-1].reshape(-1).astype(np.int64),
            (world.y - 1) * w + world.x - 1, world.direction)


def _solves(inputs, outputs, pairs, max_length):
    from karel_hf.karel.compiled import straight_line_solves

    ins, outs = [_interior(v) for v in inputs[:pairs]], [_interior(v) for v in outputs[:pairs]]
    column = lambda worlds, j: np.array([world[j] for world in worlds])  # noqa: E731
    return straight_line_solves(column(ins, 0), column(ins, 1), column(ins, 2), column(ins, 3), column(outs, 1),
                                column(outs, 2), column(outs, 3), max_length, inputs.shape[-1])


def _straight_line_programs(max_length):
    """(n, max_length) action codes, -1 padded: every straight-line program of 1..max_length actions."""
    from itertools import product

    rows = [list(a) + [-1] * (max_length - n) for n in range(1, max_length + 1) for a in product(range(5), repeat=n)]
    return np.array(rows, dtype=np.int8)


def _any_straight_line_solves(inputs, outputs, pairs, programs):
    """Run every program on the first `pairs` input views (the batched engine) and compare the views."""
    worlds = [_interior(v) for v in inputs[:pairs]]
    n, (h, w) = len(programs), inputs.shape[1:]
    batch = WorldBatch(np.tile(np.array([x[0] for x in worlds]), (n, 1)),
                       np.tile(np.array([x[1] for x in worlds], dtype=np.int8), (n, 1)),
                       np.tile(np.array([x[2] for x in worlds]), n), np.tile(np.array([x[3] for x in worlds], np.int8), n))
    markers, robot, direction, _, _ = run_straight_line(batch, programs, num_pairs=pairs, height=h + 2, width=w + 2)
    views = view_codes(batch.walls, markers, robot, direction).reshape(n, pairs, -1)
    return bool((views == np.asarray(outputs[:pairs]).reshape(1, pairs, -1)).all(axis=(1, 2)).any())


def test_straight_line_search_agrees_with_trying_every_program():
    """straight_line_solves, the corpus rule of control_flow_pairs, against running all 3,905 programs
    of 1..5 actions on the first 1..4 pairs of 300 extended examples (views, as a reader of the corpus
    sees them: the markers under the output's robot are hidden)."""
    batch = generate(CorpusConfig(num_programs=300, extended=True, num_pairs=4, height=6, width=6, max_length=5,
                                  seed=5), 0, 300)
    programs = _straight_line_programs(5)
    outcomes = {True: 0, False: 0}
    for i in range(300):
        for pairs in (1, 2, 3, 4):
            found = _solves(batch.inputs[i], batch.outputs[i], pairs, 5)
            assert found == _any_straight_line_solves(batch.inputs[i], batch.outputs[i], pairs, programs), (i, pairs)
            outcomes[found] += 1
    assert outcomes[False] >= 50 and outcomes[True] >= 500, outcomes


def test_a_control_flow_corpus_needs_its_control_flow_on_the_prompt_pairs(monkeypatch):
    """control_flow_pairs=2: no straight-line program of up to max_length actions solves an example's
    first two pairs; the program itself does (every array checked against the interpreter), and so
    do examples whose worlds were drawn again (a small WORLD_ATTEMPTS makes that frequent)."""
    from karel_hf.karel import extended_sampling

    config = CorpusConfig(num_programs=400, extended=True, num_pairs=4, height=6, width=6, max_length=3,
                          control_flow_pairs=2, seed=8)
    batch = generate(config, 0, 120)
    programs = _straight_line_programs(3)
    assert all(not _any_straight_line_solves(batch.inputs[i], batch.outputs[i], 2, programs) for i in range(120))
    check_against_interpreter(batch, config, range(0, 120, 3))
    assert_same(batch, ProgramBatch.concatenate([generate(config, 0, 37), generate(config, 37, 120)]))
    monkeypatch.setattr(extended_sampling, "WORLD_ATTEMPTS", 10)
    redrawn = generate(config, 0, 120)
    fresh = (redrawn.inputs != batch.inputs).any(axis=(1, 2, 3))
    assert 10 <= fresh.sum() < 120
    assert all(not _solves(redrawn.inputs[i], redrawn.outputs[i], 2, 3) for i in range(120))
    check_against_interpreter(redrawn, config, np.flatnonzero(fresh)[:30])
    assert_same(redrawn, ProgramBatch.concatenate([generate(config, 0, 50), generate(config, 50, 120)]))


def test_extended_heldout_split_is_program_disjoint():
    """A held-out split of an extended corpus: a program is its line codes (hashed as straight-line
    action codes are, so a program without control flow has one name in both languages)."""
    held = dict(extended=True, height=6, width=6, max_length=5, heldout_fraction=0.2, heldout_key=11)
    train = generate(CorpusConfig(num_programs=1500, heldout_role="exclude", seed=30, **held), 0, 1500)
    test = generate(CorpusConfig(num_programs=300, min_length=3, heldout_role="only", seed=32, **held), 0, 300)
    def codes(batch):  # (n, 40) line codes, -1 padded
        rows = [line_codes(parse(p, extended=True))[0] for p in batch.programs]
        return np.array([row + [-1] * (40 - len(row)) for row in rows])

    assert not is_heldout(11, 0.2, codes(train)).any() and is_heldout(11, 0.2, codes(test)).all()
    assert not set(train.programs) & set(test.programs)
    straight = [i for i, p in enumerate(train.programs) if "{" not in p.split("{", 1)[1]]
    assert straight and not is_heldout(11, 0.2, train.actions[straight]).any()
