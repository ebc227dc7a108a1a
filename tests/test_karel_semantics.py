"""Karel core: action semantics, conditions, the parser (layouts, round trips, errors), traces,
the step budget, and the reference corpora re-executed end to end."""

from pathlib import Path

import numpy as np
import pytest

from karel_hf.karel import (
    Condition,
    KarelSyntaxError,
    World,
    apply_action,
    evaluate_condition,
    execute,
    format_program,
    parse,
)
from karel_hf.karel.corpus import read_jsonl, verify_jsonl

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"
REFERENCE_FILES = ("straight_line_200.jsonl", "conditionals_40.jsonl")


def world(text: str) -> World:
    return World.from_ascii(text.strip())


ROOM = """
#####
#...#
#.>1#
#.#.#
#####
"""


# ---------------------------------------------------------------------------------- actions
def test_move_into_interior_wall_does_nothing():
    w = world(ROOM)
    w.direction = 2  # south: the cell below (2, 3)... robot at (2, 2), below is (2, 3) = wall
    apply_action(w, "move")
    assert (w.x, w.y) == (2, 2)


def test_move_into_border_does_nothing_and_free_move_moves():
    w = world(ROOM)
    apply_action(w, "move")  # east onto the marker: markers never block
    assert (w.x, w.y) == (3, 2)
    apply_action(w, "move")  # east into the border
    assert (w.x, w.y) == (3, 2)
    w.direction = 0
    apply_action(w, "move")
    apply_action(w, "move")  # north into the border
    assert (w.x, w.y) == (3, 1)


def test_pick_on_empty_is_noop_and_put_stacks():
    w = world(ROOM)
    apply_action(w, "pick_marker")
    assert w.markers[2, 2] == 0
    for _ in range(3):
        apply_action(w, "put_marker")
    assert w.markers[2, 2] == 3
    apply_action(w, "pick_marker")
    assert w.markers[2, 2] == 2
    apply_action(w, "move")
    assert w.to_ascii().splitlines()[2] == "#.2>#"  # the robot now hides the pre-existing marker


def test_turns_cycle():
    w = world(ROOM)
    seen = []
    for _ in range(4):
        apply_action(w, "turn_left")
        seen.append(w.direction)
    assert seen == [0, 3, 2, 1]  # east -> north -> west -> south -> east
    for _ in range(4):
        apply_action(w, "turn_right")
    assert w.direction == 1
    left3 = world(ROOM)
    for _ in range(3):
        apply_action(left3, "turn_left")
    right = world(ROOM)
    apply_action(right, "turn_right")
    assert left3.direction == right.direction == 2


def test_unknown_action_rejected():
    with pytest.raises(ValueError, match="unknown action"):
        apply_action(world(ROOM), "jump")


@pytest.mark.parametrize(
    "name, direction, expected",
    [
        ("front_is_clear", 1, True),  # east: the marker cell
        ("front_is_clear", 2, False),  # south: interior wall
        ("left_is_clear", 1, True),  # north of (2, 2) is free
        ("right_is_clear", 1, False),  # south is the wall
        ("front_is_clear", 3, True),
        ("left_is_clear", 0, True),
        ("right_is_clear", 2, True),  # facing south, right is west: free
        ("markers_present", 1, False),
        ("no_markers_present", 1, True),
    ],
)
def test_conditions(name, direction, expected):
    w = world(ROOM)
    w.direction = direction
    assert evaluate_condition(w, Condition(name)) is expected
    assert evaluate_condition(w, Condition(name, negated=True)) is (not expected)


def test_marker_conditions_after_put():
    w = world(ROOM)
    apply_action(w, "put_marker")
    assert evaluate_condition(w, Condition("markers_present"))
    assert not evaluate_condition(w, Condition("no_markers_present"))


# ----------------------------------------------------------------------------------- parser
def reference_programs():
    for name in REFERENCE_FILES:
        for record in read_jsonl(REFERENCE / name):
            yield record["code"]


@pytest.mark.parametrize("style", ["lines", "compact", "reference"])
def test_parser_round_trips_on_reference_programs(style):
    for code in reference_programs():
        program = parse(code)
        assert format_program(program, "reference") == code
        text = format_program(program, style)
        assert parse(text) == program
        assert format_program(parse(text), style) == text


def test_layouts_of_one_program():
    program = parse("def run() { move(); turn_left() }", extended=False)
    assert format_program(program, "lines") == "def run() {\n  move()\n  turn_left()\n}"
    assert format_program(program, "compact") == "def run() { move(); turn_left() }"
    assert format_program(program, "reference") == "def run() {\n  move(); turn_left()\n}"


@pytest.mark.parametrize(
    "text, message",
    [
        ("def run() { move( }", r"expected '\)' at line 1, column 19, found '\}'"),
        ("def run() { jump() }", r"expected an action .* at line 1, column 13, found 'jump'"),
        ("def run() {\n  move()\n", r"found the end of the program"),
        ("def run() { move() } move()", r"the end of the program .* line 1, column 22"),
        ("def run() {\n  move() $\n}", r"unexpected character '\$' at line 2, column 10"),
        ("def walk() { move() }", r"expected 'run' at line 1, column 5"),
    ],
)
def test_parser_errors_name_the_place(text, message):
    with pytest.raises(KarelSyntaxError, match=message):
        parse(text)


def test_control_flow_rejected_without_extended():
    text = "def run() {\n  if(front_is_clear()) { move() }\n}"
    with pytest.raises(KarelSyntaxError, match=r"control flow is disabled.*line 2, column 3"):
        parse(text, extended=False)
    assert not parse(text, extended=True).is_straight_line


# -------------------------------------------------------------------------------- execution
def test_trace_has_one_state_per_executed_action():
    program = parse("def run() { repeat(3) { move() }; ifelse(markers_present()) { turn_left() } else { put_marker() } }")
    w = world(ROOM)
    result = execute(program, w, trace=True)
    assert result.completed
    assert len(result.states) == len(result.actions) == result.num_actions == 4
    assert result.states[-1] == result.world
    assert w == world(ROOM)  # the input is not modified


def test_step_budget_stops_infinite_loops():
    w = World.from_ascii("#####\n#.>.#\n#####")
    # Facing a free cell forever: turning left on a 1-row world keeps front clear half the time,
    # so use a loop whose condition never changes.
    program = parse("def run() { while(not markers_present()) { turn_left() } }")
    result = execute(program, w, max_steps=50)
    assert not result.completed
    assert 0 < result.num_actions <= 50
    loop = parse("def run() { while(front_is_clear()) { turn_left(); turn_left() } }")
    assert not execute(loop, w, max_steps=100).completed


# ------------------------------------------------------------------------ reference corpora
@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_reference_corpora_verify(name, capsys):
    assert verify_jsonl(REFERENCE / name, extended=True) == 0
    pairs = sum(1 for _ in read_jsonl(REFERENCE / name)) * 10
    assert capsys.readouterr().out.splitlines()[0] == f"{pairs}/{pairs} examples match"


def test_view_codes_distinguish_robot_directions_and_markers():
    for direction, char in enumerate("^>v<"):
        w = World.from_ascii(f"######\n#1{char}9.#\n######")
        assert w.direction == direction
        assert w.to_words().split() == ["__1_Marker__", ("__up__", "__right__", "__down__", "__left__")[direction],
                                        "__9_Marker__", "__space__"]
        assert World.from_view_codes(w.view_codes()) == w


def test_view_codes_round_trip_reference_worlds():
    for name in REFERENCE_FILES:
        for record in list(read_jsonl(REFERENCE / name))[:20]:
            for key in (k for k in record if k != "code"):
                w = World.from_ascii(record[key])
                back = World.from_view_codes(w.view_codes())
                assert back.to_ascii() == record[key]
                assert World.from_words(w.to_words()).to_ascii() == record[key]
                assert np.array_equal(World.from_ascii(back.to_ascii()).view_codes(), w.view_codes())


# ------------------------------------------------------------------- alternative semantics
OPEN_ROOM = """
#######
#.....#
#.....#
#..>..#
#.....#
#.....#
#######
"""
# turn_left, move, put, put, turn_right, move, pick, executed by hand under each map from (3, 3)
# facing east (directions 0..3 = N, E, S, W; y grows downward): the direction after each action,
# the final position and the markers left (cell -> count).
HAND_EXECUTED = {
    "original": ([0, 0, 0, 0, 1, 1, 1], (4, 2), {(3, 2): 2}),
    "authors0": ([2, 2, 2, 2, 1, 1, 1], (4, 4), {(4, 4): 1}),  # tl->tr, tr->tl, put<->pick
    "authors3": ([2, 1, 0, 3, 3, 2, 3], (2, 3), {}),  # tl->tr, move->tl, put->tl, tr->move, pick->tr
    "authors5": ([2, 1, 1, 1, 1, 0, 0], (4, 3), {(4, 3): 1}),  # tl->tr, move->tl, put<->pick, tr->move
    "authors8": ([1, 0, 0, 0, 1, 0, 0], (4, 3), {(4, 3): 1}),  # tl<->move, put<->pick
    "authors11": ([1, 2, 2, 2, 1, 2, 2], (4, 3), {(4, 3): 1}),  # tl->move, move->tr, tr->tl, put<->pick
}


@pytest.mark.parametrize("name", sorted(HAND_EXECUTED))
def test_authors_maps_against_hand_executed_programs(name):
    from karel_hf.karel import SEMANTICS

    program = parse("def run() { turn_left(); move(); put_marker(); put_marker(); turn_right(); move(); pick_marker() }")
    start = world(OPEN_ROOM)
    result = execute(SEMANTICS[name].apply(program), start, trace=True)
    directions, (x, y), markers = HAND_EXECUTED[name]
    assert [s.direction for s in result.states] == directions
    assert (result.world.x, result.world.y) == (x, y)
    assert {(int(c), int(r)): int(result.world.markers[r, c]) for r, c in zip(*np.nonzero(result.world.markers))} == markers
    assert (start.x, start.y, start.direction) == (3, 3, 1)  # the input is untouched


def test_semantics_maps_need_not_be_one_to_one():
    from karel_hf.karel import ACTIONS, SEMANTICS, Semantics

    assert not SEMANTICS["authors3"].one_to_one and SEMANTICS["authors5"].one_to_one
    assert dict(SEMANTICS["authors0"].mapping) == dict(SEMANTICS["swap"].mapping)
    with pytest.raises(ValueError, match="each of the actions"):
        Semantics("partial", {"move": "move"})
    with pytest.raises(ValueError, match="unknown action"):
        Semantics("bad", {**{a: a for a in ACTIONS}, "move": "jump"})
