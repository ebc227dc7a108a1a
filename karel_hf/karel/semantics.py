"""Alternative semantics: named remappings of what each action means, applied to the AST.

Used by the intervention experiment (docs/protocol.md §7): the hidden states of the original
program are kept, the program is reinterpreted under another meaning, re-executed, and a fresh
probe is trained on the new labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from .program import ACTIONS, Action, If, Program, Repeat, While


@dataclass(frozen=True)
class Semantics:
    """A renaming of actions: the action written `a` is executed as `mapping[a]`."""

    name: str
    mapping: MappingProxyType = field(repr=False)
    description: str = ""

    def __post_init__(self):
        mapping = dict(self.mapping)
        if sorted(mapping) != sorted(ACTIONS) or sorted(mapping.values()) != sorted(ACTIONS):
            raise ValueError(f"semantics {self.name!r} must map the five actions one-to-one, got {mapping}")
        object.__setattr__(self, "mapping", MappingProxyType(mapping))

    def apply(self, program: Program) -> Program:
        """The program as it would run under these semantics (a new AST; the input is untouched)."""
        return Program(self._map(program.body))

    def _map(self, body) -> tuple:
        out = []
        for stmt in body:
            if isinstance(stmt, Action):
                out.append(Action(self.mapping[stmt.name]))
            elif isinstance(stmt, If):
                orelse = None if stmt.orelse is None else self._map(stmt.orelse)
                out.append(If(stmt.condition, self._map(stmt.body), orelse))
            elif isinstance(stmt, Repeat):
                out.append(Repeat(stmt.times, self._map(stmt.body)))
            elif isinstance(stmt, While):
                out.append(While(stmt.condition, self._map(stmt.body)))
        return tuple(out)


def _cycle(shift: int) -> dict:
    return {a: ACTIONS[(i + shift) % len(ACTIONS)] for i, a in enumerate(ACTIONS)}


ORIGINAL = Semantics("original", {a: a for a in ACTIONS}, "the reference semantics")
SEMANTICS = {
    s.name: s
    for s in (
        ORIGINAL,
        Semantics(
            "swap",
            {"move": "move", "turn_left": "turn_right", "turn_right": "turn_left",
             "put_marker": "pick_marker", "pick_marker": "put_marker"},
            "turn_left <-> turn_right and put_marker <-> pick_marker",
        ),
        Semantics("cycle1", _cycle(1), "each action means the next one in " + " -> ".join(ACTIONS)),
        Semantics("cycle2", _cycle(2), "each action means the one two places on in " + " -> ".join(ACTIONS)),
    )
}
ALTERNATIVE_SEMANTICS = tuple(name for name in SEMANTICS if name != "original")


def get_semantics(name: str) -> Semantics:
    try:
        return SEMANTICS[name]
    except KeyError:
        raise ValueError(f"unknown semantics {name!r}; expected one of {sorted(SEMANTICS)}") from None
