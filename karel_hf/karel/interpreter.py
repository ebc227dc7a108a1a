"""Execute a parsed Karel program (AST) on a world, optionally recording the trace.

Semantics (docs/protocol.md §1, checked against tests/data/reference/ on every example):
`move` into a wall (the border included) does nothing; `turn_left` maps (dx, dy) to (dy, -dx);
`turn_right` is three left turns; `put_marker` always adds one marker; `pick_marker` on an empty
cell does nothing. Markers never block.

The step budget counts executed actions and evaluated conditions, so every program terminates;
a run that exhausts it returns with `completed=False`.

This is the reference implementation. Its batched twin, `karel_hf.karel.batched.run_straight_line`,
applies the same rules to straight-line programs on many worlds at once (for the corpus generator);
tests/test_sampling.py checks the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .program import Action, Condition, If, Program, Repeat, While
from .world import DX, DY, World

DEFAULT_MAX_STEPS = 1000


@dataclass
class ConditionEvent:
    """A condition evaluated during execution; `after_actions` = actions executed before it."""

    condition: Condition
    value: bool
    after_actions: int


@dataclass
class ExecutionResult:
    world: World
    actions: list[str] = field(default_factory=list)
    states: list[World] | None = None  # state after each executed action, when traced
    conditions: list[ConditionEvent] | None = None
    completed: bool = True

    @property
    def num_actions(self) -> int:
        return len(self.actions)


def apply_action(world: World, name: str) -> None:
    """Apply one action to `world` in place."""
    if name == "move":
        nx, ny = world.x + DX[world.direction], world.y + DY[world.direction]
        if not world.walls[ny, nx]:
            world.x, world.y = nx, ny
    elif name == "turn_left":
        world.direction = (world.direction + 3) % 4
    elif name == "turn_right":
        world.direction = (world.direction + 1) % 4
    elif name == "put_marker":
        world.markers[world.y, world.x] += 1
    elif name == "pick_marker":
        if world.markers[world.y, world.x] > 0:
            world.markers[world.y, world.x] -= 1
    else:
        raise ValueError(f"unknown action {name!r}")


def evaluate_condition(world: World, condition: Condition) -> bool:
    name = condition.name
    if name in ("front_is_clear", "left_is_clear", "right_is_clear"):
        turn = {"front_is_clear": 0, "left_is_clear": 3, "right_is_clear": 1}[name]
        d = (world.direction + turn) % 4
        value = not world.walls[world.y + DY[d], world.x + DX[d]]
    elif name == "markers_present":
        value = world.markers[world.y, world.x] > 0
    elif name == "no_markers_present":
        value = world.markers[world.y, world.x] == 0
    else:
        raise ValueError(f"unknown condition {name!r}")
    return bool(value) != condition.negated


class _BudgetExhausted(Exception):
    pass


class _Run:
    def __init__(self, world: World, trace: bool, max_steps: int):
        self.result = ExecutionResult(world, states=[] if trace else None, conditions=[] if trace else None)
        self.steps_left = max_steps

    def spend(self):
        if self.steps_left <= 0:
            raise _BudgetExhausted
        self.steps_left -= 1

    def run(self, body):
        for stmt in body:
            if isinstance(stmt, Action):
                self.spend()
                apply_action(self.result.world, stmt.name)
                self.result.actions.append(stmt.name)
                if self.result.states is not None:
                    self.result.states.append(self.result.world.copy())
            elif isinstance(stmt, If):
                if self.test(stmt.condition):
                    self.run(stmt.body)
                elif stmt.orelse is not None:
                    self.run(stmt.orelse)
            elif isinstance(stmt, Repeat):
                for _ in range(stmt.times):
                    self.spend()
                    self.run(stmt.body)
            elif isinstance(stmt, While):
                while self.test(stmt.condition):
                    self.run(stmt.body)
            else:
                raise TypeError(f"not a Karel statement: {stmt!r}")

    def test(self, condition: Condition) -> bool:
        self.spend()
        value = evaluate_condition(self.result.world, condition)
        if self.result.conditions is not None:
            self.result.conditions.append(ConditionEvent(condition, value, len(self.result.actions)))
        return value


def execute(program: Program, world: World, *, trace: bool = False, max_steps: int = DEFAULT_MAX_STEPS) -> ExecutionResult:
    """Run `program` on a copy of `world`; the input world is never modified."""
    if not isinstance(program, Program):
        raise TypeError(f"execute() takes a parsed Program (see karel_hf.karel.parse), got {type(program).__name__}")
    run = _Run(world.copy(), trace, max_steps)
    try:
        run.run(program.body)
    except _BudgetExhausted:
        run.result.completed = False
    return run.result
