"""The seeded vectorised generator: config validation, determinism independent of batching,
the corpus distribution (lengths, actions, walls, markers, robot), and a cross-check of every
array against the AST interpreter, for straight-line and extended programs."""

import subprocess
import sys
import types

import numpy as np
import pytest
from scipy.stats import chisquare

from karel_hf.karel import ACTIONS, Program, World, execute, format_program, parse
from karel_hf.karel.sampling import (
    EXTENDED_STEP_BUDGET,
    CorpusConfig,
    ProgramBatch,
    _sample_actions,
    _sample_worlds,
    generate,
    iter_batches,
    program_lengths,
    to_worlds,
)
from karel_hf.karel.world import MARKER_CODE_OFFSET, MAX_VISIBLE_MARKERS, ROBOT_CODE_OFFSET, WALL_CODE

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
    config = CorpusConfig(num_programs=100, seed=3, extended=extended)
    whole = generate(config, 0, 100)
    assert_same(whole, ProgramBatch.concatenate([generate(config, 0, 37), generate(config, 37, 100)]))
    assert_same(whole, ProgramBatch.concatenate(iter_batches(config, batch_size=16)))
    assert_same(generate(config, 60, 61), ProgramBatch.concatenate(iter_batches(config, 7, start=60, stop=61)))


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


def test_to_worlds():
    batch = generate(CorpusConfig(num_programs=3), 0, 3)
    assert to_worlds(batch.inputs[0, 0]) == World.from_view_codes(batch.inputs[0, 0])
    nested = to_worlds(batch.outputs[:2])
    assert len(nested) == 2 and len(nested[0]) == 10 and isinstance(nested[1][9], World)


# ---------------------------------------------------------------------------------- imports
def test_karel_package_imports_no_heavy_libraries():
    code = (
        "import sys, karel_hf.karel, karel_hf.karel.sampling, karel_hf.karel.corpus\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'evaluate') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------ held-out programs
from karel_hf.karel.sampling import heldout_mass, is_heldout, program_hash  # noqa: E402

_HELD = dict(num_pairs=4, height=6, width=6, heldout_fraction=0.2, heldout_key=11)


def test_program_hash_ignores_padding_and_depends_on_key_and_order():
    a = program_hash(3, np.array([[0, 1, 2, -1, -1]]))
    assert a == program_hash(3, np.array([[0, 1, 2]])) == program_hash(3, np.array([[0, 1, 2, -1, -1, -1, -1]]))
    assert a != program_hash(4, np.array([[0, 1, 2]]))
    assert a != program_hash(3, np.array([[0, 2, 1]]))
    assert program_hash(3, np.array([[0, -1]])) != program_hash(3, np.array([[0, 0]]))


def test_heldout_split_is_program_disjoint_and_per_example_deterministic():
    train = CorpusConfig(num_programs=3000, min_length=1, max_length=6, heldout_role="exclude", seed=30, **_HELD)
    test = CorpusConfig(num_programs=400, min_length=3, max_length=6, heldout_role="only", seed=32, **_HELD)
    a, b = generate(train, 0, 3000), generate(test, 0, 400)
    assert not is_heldout(train, a.actions).any() and is_heldout(test, b.actions).all()
    assert not set(a.programs) & set(b.programs)
    assert set(np.unique(b.lengths)) == {3, 4, 5, 6}
    assert_same(b, ProgramBatch.concatenate([generate(test, 0, 123), generate(test, 123, 400)]))
    assert_same(generate(test, 200, 201), ProgramBatch.concatenate(iter_batches(test, 5, start=200, stop=201)))
    check_against_interpreter(b, test, range(0, 400, 20))
    check_against_interpreter(a, train, range(0, 3000, 150))
    # without the split the same examples draw (mostly) other programs: the split redraws some
    plain = generate(CorpusConfig(num_programs=400, min_length=3, max_length=6, seed=32, num_pairs=4, height=6, width=6), 0, 400)
    assert np.array_equal(plain.inputs, b.inputs) and not np.array_equal(plain.actions, b.actions)


def test_heldout_mass_and_impossible_lengths():
    config = CorpusConfig(num_programs=10, min_length=3, max_length=6, heldout_role="only", **_HELD)
    assert 0.1 < heldout_mass(config, 5) < 0.3
    # length-1 programs: five of them, for this key none or few are held out
    masses = [heldout_mass(CorpusConfig(num_programs=10, **{**_HELD, "heldout_key": k}), 1) for k in range(30)]
    key = masses.index(0.0)
    with pytest.raises(ValueError, match="heldout_fraction"):
        CorpusConfig(num_programs=10, min_length=1, max_length=3, heldout_role="only", **{**_HELD, "heldout_key": key})


@pytest.mark.parametrize(
    "kwargs",
    [{"heldout_fraction": 1.0}, {"heldout_fraction": -0.1}, {"heldout_role": "test"},
     {"heldout_role": "only"}, {"heldout_fraction": 0.1, "heldout_role": "only", "extended": True}],
)
def test_heldout_config_errors(kwargs):
    with pytest.raises(ValueError, match="heldout"):
        CorpusConfig(num_programs=10, min_length=3, max_length=5, **kwargs)
