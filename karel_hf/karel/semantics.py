"""Alternative semantics: named remappings of what each action means, applied to the AST.

Used by the intervention experiment (docs/protocol.md §6b-7): the hidden states of the original
program are kept, the program is reinterpreted under another meaning, re-executed, and a fresh
probe is trained on the new labels.

A `Semantics` maps each of the five actions to the action it is executed as ("a -> b": the token
`a` runs as `b`). The map need not be one-to-one: the authors' map idx 3 sends two actions to
`turn_right` and two to `turn_left` (nothing runs as `move` or a marker action there).

`SEMANTICS` holds:
- `original`: every action means itself;
- karel_hf's own maps `swap`, `cycle1`, `cycle2`;
- the authors' intervention maps (docs/protocol.md §6b), `authors0`, `authors3`, `authors5`,
  `authors8`, `authors11` for their idx 0, 3, 5, 8, 11. `authors0` is the same map as `swap`
  (kept under both names so older results stay readable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from .program import ACTIONS, Action, If, Program, Repeat, While


@dataclass(frozen=True)
class Semantics:
    """A renaming of actions: the action written `a` is executed as `mapping[a]`.

    `mapping` must give every one of the five actions a meaning among the five actions; it may
    send several actions to the same one (see the module docstring).
    """

    name: str
    mapping: MappingProxyType = field(repr=False)
    description: str = ""

    def __post_init__(self):
        mapping = dict(self.mapping)
        if sorted(mapping) != sorted(ACTIONS):
            raise ValueError(f"semantics {self.name!r} must give each of the actions {ACTIONS} a meaning, got {mapping}")
        unknown = sorted(set(mapping.values()) - set(ACTIONS))
        if unknown:
            raise ValueError(f"semantics {self.name!r} maps to unknown action(s) {unknown}; expected actions from {ACTIONS}")
        object.__setattr__(self, "mapping", MappingProxyType(mapping))

    @property
    def one_to_one(self) -> bool:
        return len(set(self.mapping.values())) == len(ACTIONS)

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


def _authors(move: str, turn_left: str, turn_right: str, put_marker: str, pick_marker: str) -> dict:
    return {"move": move, "turn_left": turn_left, "turn_right": turn_right,
            "put_marker": put_marker, "pick_marker": pick_marker}


ORIGINAL = Semantics("original", {a: a for a in ACTIONS}, "the reference semantics")
SEMANTICS = {
    s.name: s
    for s in (
        ORIGINAL,
        Semantics(
            "swap",
            _authors("move", "turn_right", "turn_left", "pick_marker", "put_marker"),
            "turn_left <-> turn_right and put_marker <-> pick_marker",
        ),
        Semantics("cycle1", _cycle(1), "each action means the next one in " + " -> ".join(ACTIONS)),
        Semantics("cycle2", _cycle(2), "each action means the one two places on in " + " -> ".join(ACTIONS)),
        # The authors' maps (docs/protocol.md §6b), in the order move, turn_left, turn_right, put, pick.
        Semantics(
            "authors0",
            _authors("move", "turn_right", "turn_left", "pick_marker", "put_marker"),
            "authors' idx 0: pick <-> put, turn_right <-> turn_left, move -> move (the same map as swap)",
        ),
        Semantics(
            "authors3",
            _authors("turn_left", "turn_right", "move", "turn_left", "turn_right"),
            "authors' idx 3: pick -> turn_right, put -> turn_left, turn_right -> move, "
            "turn_left -> turn_right, move -> turn_left (not one-to-one)",
        ),
        Semantics(
            "authors5",
            _authors("turn_left", "turn_right", "move", "pick_marker", "put_marker"),
            "authors' idx 5: pick <-> put, turn_right -> move, turn_left -> turn_right, move -> turn_left",
        ),
        Semantics(
            "authors8",
            _authors("turn_left", "move", "turn_right", "pick_marker", "put_marker"),
            "authors' idx 8: pick <-> put, turn_right unchanged, turn_left <-> move",
        ),
        Semantics(
            "authors11",
            _authors("turn_right", "move", "turn_left", "pick_marker", "put_marker"),
            "authors' idx 11: pick <-> put, turn_right -> turn_left, turn_left -> move, move -> turn_right",
        ),
    )
}
ALTERNATIVE_SEMANTICS = tuple(name for name in SEMANTICS if name != "original")
AUTHORS_SEMANTICS = tuple(name for name in SEMANTICS if name.startswith("authors"))


def get_semantics(name: str) -> Semantics:
    try:
        return SEMANTICS[name]
    except KeyError:
        raise ValueError(f"unknown semantics {name!r}; expected one of {sorted(SEMANTICS)}") from None
