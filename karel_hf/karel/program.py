"""Karel programs: the AST, a parser for the curly syntax, and printers.

The straight-line language of the paper (docs/protocol.md §1) is a `Program` whose body holds
only `Action`s. The extended language adds `If` (the reference corpora's `if`/`ifelse`),
`Repeat` (`repeat(n) { ... }`) and `While` over the five conditions, optionally negated with `not`.

Accepted layouts: statements separated by `;` and/or newlines, any indentation and blank lines, so
the compact form (`def run() { move(); turn_left() }`), the paper's one-action-per-line form and the
reference generator's layout all parse. Three printers write them back:

- "lines": the paper's text format, one statement per line, two-space indentation, between
  `PROGRAM_HEADER` and `PROGRAM_FOOTER`; `format_line_codes_batch` is its batched twin for
  programs in the flat form below (the corpus generator's), `format_lines_batch` the same for
  straight-line programs given as action codes; both tested equal to it;
- "compact": one line;
- "reference": byte-identical to the authors' generator (tests/data/reference/*.jsonl).

The flat form ("line codes") writes a program as one code per line of its "lines" layout (an
action, the opening line of a block, `} else {`, or a closing `}`) with each line's nesting depth:
`line_codes` makes it from an AST, the batched printer and the batched interpreter
(karel_hf.karel.batched.compile_line_codes) read it, and the extended-language sampler writes it.

Pure Python + NumPy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Union

import numpy as np

ACTIONS = ("move", "turn_left", "turn_right", "put_marker", "pick_marker")
CONDITIONS = ("front_is_clear", "left_is_clear", "right_is_clear", "markers_present", "no_markers_present")
ACTION_CODES = {name: code for code, name in enumerate(ACTIONS)}
# The "lines" layout: a program's first line and its closing brace; statements are indented by INDENT
# per nesting level.
PROGRAM_HEADER = "def run() {\n"
PROGRAM_FOOTER = "}"
INDENT = "  "


class KarelSyntaxError(ValueError):
    """A program's text does not follow the Karel grammar; the message names the place."""


@dataclass(frozen=True)
class Action:
    name: str


@dataclass(frozen=True)
class Condition:
    name: str
    negated: bool = False

    def __str__(self) -> str:
        return f"{'not ' if self.negated else ''}{self.name}()"


@dataclass(frozen=True)
class If:
    """`if(cond) { body }`, or `ifelse(cond) { body } else { orelse }` when orelse is not None."""

    condition: Condition
    body: tuple
    orelse: tuple | None = None


@dataclass(frozen=True)
class Repeat:
    times: int
    body: tuple


@dataclass(frozen=True)
class While:
    condition: Condition
    body: tuple


Statement = Union[Action, If, Repeat, While]


@dataclass(frozen=True)
class Program:
    body: tuple

    @classmethod
    def from_actions(cls, names) -> Program:
        actions = tuple(Action(name) for name in names)
        for action in actions:
            if action.name not in ACTION_CODES:
                raise ValueError(f"unknown action {action.name!r}; expected one of {ACTIONS}")
        return cls(actions)

    @property
    def is_straight_line(self) -> bool:
        return all(isinstance(stmt, Action) for stmt in self.body)

    def actions(self) -> list[str]:
        """The action names of a straight-line program, in order."""
        if not self.is_straight_line:
            raise ValueError("actions() needs a straight-line program; this one has control flow")
        return [stmt.name for stmt in self.body]

    def num_actions(self) -> int:
        """Action nodes in the program text (for straight-line programs: its length)."""
        return sum(1 for node in walk(self.body) if isinstance(node, Action))

    def __str__(self) -> str:
        return format_program(self)


def walk(body) -> Iterator[Statement]:
    for stmt in body:
        yield stmt
        if isinstance(stmt, If):
            yield from walk(stmt.body)
            if stmt.orelse is not None:
                yield from walk(stmt.orelse)
        elif isinstance(stmt, (Repeat, While)):
            yield from walk(stmt.body)


# ---------------------------------------------------------------------------------------- parser
_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z_0-9]*)|(\d+)|([(){};]))")


def _tokenize(text: str) -> list[tuple[str, int]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            bad = text[pos:].lstrip()
            raise KarelSyntaxError(f"unexpected character {bad[0]!r} at {_where(text, len(text) - len(bad))}")
        tokens.append((match.group(match.lastindex), match.start(match.lastindex)))
        pos = match.end()
    return tokens


def _where(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


class _Parser:
    def __init__(self, text: str, extended: bool):
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.extended = extended

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def error(self, expected: str):
        if self.pos < len(self.tokens):
            token, offset = self.tokens[self.pos]
            raise KarelSyntaxError(f"expected {expected} at {_where(self.text, offset)}, found {token!r}")
        raise KarelSyntaxError(f"expected {expected}, found the end of the program")

    def expect(self, token: str):
        if self.peek() != token:
            self.error(repr(token))
        self.pos += 1

    def program(self) -> Program:
        for token in ("def", "run", "(", ")"):
            self.expect(token)
        body = self.block()
        if self.pos != len(self.tokens):
            self.error("the end of the program after the closing '}'")
        return Program(body)

    def block(self) -> tuple:
        self.expect("{")
        body = []
        while self.peek() not in ("}", None):
            body.append(self.statement())
            while self.peek() == ";":
                self.pos += 1
        self.expect("}")
        return tuple(body)

    def statement(self) -> Statement:
        token = self.peek()
        if token in ACTION_CODES:
            self.pos += 1
            self.expect("(")
            self.expect(")")
            return Action(token)
        if token in ("if", "ifelse", "repeat", "while"):
            if not self.extended:
                self.error("an action (control flow is disabled: parse with extended=True)")
            self.pos += 1
            if token == "repeat":
                self.expect("(")
                times = self.peek()
                if times is None or not times.isdigit():
                    self.error("a repeat count")
                self.pos += 1
                self.expect(")")
                return Repeat(int(times), self.block())
            condition = self.condition()
            body = self.block()
            if token == "while":
                return While(condition, body)
            if token == "ifelse":
                self.expect("else")
                return If(condition, body, self.block())
            return If(condition, body)
        self.error(f"an action ({', '.join(ACTIONS)})" + (" or a control statement" if self.extended else ""))

    def condition(self) -> Condition:
        self.expect("(")
        negated = self.peek() == "not"
        if negated:
            self.pos += 1
        name = self.peek()
        if name not in CONDITIONS:
            self.error(f"a condition ({', '.join(CONDITIONS)})")
        self.pos += 1
        self.expect("(")
        self.expect(")")
        self.expect(")")
        return Condition(name, negated)


def parse(text: str, *, extended: bool = True) -> Program:
    """Parse Karel source; raises `KarelSyntaxError` naming the line and column of the problem.

    With `extended=False` only the paper's straight-line language is accepted.
    """
    if not isinstance(text, str):
        raise TypeError(f"program text must be a str, got {type(text).__name__}")
    return _Parser(text, extended).program()


# -------------------------------------------------------------------------------------- printers
def format_program(program: Program, style: str = "lines") -> str:
    """Print a program; `style` is "lines" (paper text format), "compact" or "reference"."""
    if style == "lines":
        return PROGRAM_HEADER + "".join(_lines(program.body, 1)) + PROGRAM_FOOTER
    if style == "compact":
        return "def run() { " + _compact(program.body) + " }" if program.body else "def run() { }"
    if style == "reference":
        return "def run() {\n  " + _reference(program.body, 1) + "\n}"
    raise ValueError(f"unknown style {style!r}; expected 'lines', 'compact' or 'reference'")


def _header(stmt) -> str:
    if isinstance(stmt, Repeat):
        return f"repeat({stmt.times})"
    if isinstance(stmt, While):
        return f"while({stmt.condition})"
    return f"{'if' if stmt.orelse is None else 'ifelse'}({stmt.condition})"


def _lines(body, depth: int) -> Iterator[str]:
    pad = INDENT * depth
    for stmt in body:
        if isinstance(stmt, Action):
            yield f"{pad}{stmt.name}()\n"
            continue
        yield f"{pad}{_header(stmt)} {{\n"
        yield from _lines(stmt.body, depth + 1)
        yield f"{pad}}}\n"
        if isinstance(stmt, If) and stmt.orelse is not None:
            yield f"{pad}else {{\n"
            yield from _lines(stmt.orelse, depth + 1)
            yield f"{pad}}}\n"


# ------------------------------------------------------------------------ the flat form
# Line codes: an action (its index in ACTIONS); `if(c) {`, `ifelse(c) {`, `while(c) {` (base +
# condition id, CONDITIONS.index(name) * 2 + negated); `repeat(k) {` (REPEAT_CODE + k); `} else {`;
# `}` closing a block. -1 pads a program's codes.
NUM_CONDITION_IDS = 2 * len(CONDITIONS)
IF_CODE = len(ACTIONS)
IFELSE_CODE = IF_CODE + NUM_CONDITION_IDS
WHILE_CODE = IFELSE_CODE + NUM_CONDITION_IDS
REPEAT_CODE = WHILE_CODE + NUM_CONDITION_IDS
MAX_REPEAT = 20  # repeat counts of the flat form: 0..MAX_REPEAT
ELSE_CODE = REPEAT_CODE + MAX_REPEAT + 1
END_CODE = ELSE_CODE + 1
NUM_LINE_CODES = END_CODE + 1
MAX_LINE_DEPTH = 8  # nesting depths the batched printer covers


def condition_id(condition: Condition) -> int:
    return CONDITIONS.index(condition.name) * 2 + int(condition.negated)


def line_codes(program: Program) -> tuple[list[int], list[int]]:
    """(codes, depths) of a program's lines, in the order `format_program(p, "lines")` prints them."""
    codes, depths = [], []

    def block(body, depth):
        for stmt in body:
            if isinstance(stmt, Action):
                codes.append(ACTION_CODES[stmt.name])
            elif isinstance(stmt, Repeat):
                if not 0 <= stmt.times <= MAX_REPEAT:
                    raise ValueError(f"repeat({stmt.times}): the flat form holds repeat counts 0..{MAX_REPEAT}")
                codes.append(REPEAT_CODE + stmt.times)
            elif isinstance(stmt, While):
                codes.append(WHILE_CODE + condition_id(stmt.condition))
            else:
                codes.append((IF_CODE if stmt.orelse is None else IFELSE_CODE) + condition_id(stmt.condition))
            depths.append(depth)
            if isinstance(stmt, Action):
                continue
            block(stmt.body, depth + 1)
            if isinstance(stmt, If) and stmt.orelse is not None:
                codes.append(ELSE_CODE)
                depths.append(depth)
                block(stmt.orelse, depth + 1)
            codes.append(END_CODE)
            depths.append(depth)

    block(program.body, 0)
    return codes, depths


def _line_pieces() -> list[str]:
    """The printed line of every (depth, code), depth-major, then the program header and footer."""
    conditions = [Condition(name, negated) for name in CONDITIONS for negated in (False, True)]
    pieces = []
    for depth in range(MAX_LINE_DEPTH + 1):
        pad = INDENT * (depth + 1)
        pieces += [f"{pad}{name}()\n" for name in ACTIONS]
        pieces += [f"{pad}if({c}) {{\n" for c in conditions]
        pieces += [f"{pad}ifelse({c}) {{\n" for c in conditions]
        pieces += [f"{pad}while({c}) {{\n" for c in conditions]
        pieces += [f"{pad}repeat({k}) {{\n" for k in range(MAX_REPEAT + 1)]
        pieces += [f"{pad}}}\n{pad}else {{\n", f"{pad}}}\n"]
    return pieces + [PROGRAM_HEADER, PROGRAM_FOOTER + "\0"]  # the footer with a separator


_PIECES = _line_pieces()
_HEADER, _FOOTER = len(_PIECES) - 2, len(_PIECES) - 1
_PIECE_BYTES = np.frombuffer("".join(_PIECES).encode("ascii"), dtype=np.uint8)
_PIECE_LEN = np.array([len(p) for p in _PIECES], dtype=np.int64)
_PIECE_START = np.concatenate([[0], np.cumsum(_PIECE_LEN)[:-1]])


def format_line_codes_batch(codes, depths) -> list[str]:
    """`format_program(p, "lines")` of every program given as (n, L) line codes and their depths
    (-1 codes after a program's last line), at NumPy speed: the batched twin of the "lines" printer.

    All texts of the batch are gathered into one byte string (pieces looked up by index), then split.
    """
    codes, depths = np.asarray(codes), np.asarray(depths)
    n = len(codes)
    if n == 0:
        return []
    if codes.shape != depths.shape or codes.ndim != 2:
        raise ValueError(f"codes and depths: need two (n, L) arrays of the same shape, got {codes.shape} and {depths.shape}")
    if codes.size and (codes.max() >= NUM_LINE_CODES or depths.max() > MAX_LINE_DEPTH or depths.min() < 0):
        raise ValueError(f"codes must be < {NUM_LINE_CODES} and depths in 0..{MAX_LINE_DEPTH}")
    pieces = np.empty((n, codes.shape[1] + 2), dtype=np.int64)  # (n, L + 2) piece ids, -1 = none
    pieces[:, 0], pieces[:, -1] = _HEADER, _FOOTER
    pieces[:, 1:-1] = np.where(codes >= 0, codes + depths.astype(np.int64) * NUM_LINE_CODES, -1)
    ids = pieces[pieces >= 0]  # row-major: the batch's pieces in order
    lengths = _PIECE_LEN[ids]
    ends = np.cumsum(lengths)
    # Byte j of the output = piece byte (start of its piece) + (j - start of its slot).
    shift = np.repeat(_PIECE_START[ids] - (ends - lengths), lengths)
    text = _PIECE_BYTES[shift + np.arange(ends[-1])].tobytes().decode("ascii")
    return text.split("\0")[:-1]


def format_lines_batch(actions) -> list[str]:
    """`format_program(Program.from_actions(...), "lines")` of every row of (n, T) action codes
    (indices into ACTIONS, -1 after a program's last action): `format_line_codes_batch` for
    straight-line programs (every line at depth 0)."""
    actions = np.asarray(actions)
    return format_line_codes_batch(actions, np.zeros(actions.shape, dtype=np.int8))


def _compact(body) -> str:
    parts = []
    for stmt in body:
        if isinstance(stmt, Action):
            parts.append(f"{stmt.name}()")
            continue
        text = f"{_header(stmt)} {{ {_compact(stmt.body)} }}"
        if isinstance(stmt, If) and stmt.orelse is not None:
            text += f" else {{ {_compact(stmt.orelse)} }}"
        parts.append(text)
    return "; ".join(parts)


def _reference(body, depth: int) -> str:
    """The authors' layout: actions joined by '; ', a blank indented line after each block."""
    pad = "  " * depth
    out = ""
    for i, stmt in enumerate(body):
        if isinstance(stmt, Action):
            out += f"{stmt.name}()"
        else:
            inner = "  " * (depth + 1)
            out += f"{_header(stmt)} {{\n{inner}{_reference(stmt.body, depth + 1)}\n{pad}}}"
            if isinstance(stmt, If) and stmt.orelse is not None:
                out += f"\n{pad}else {{\n{inner}{_reference(stmt.orelse, depth + 1)}\n{pad}}}"
        if i + 1 < len(body):
            out += "; " if isinstance(stmt, Action) else f"\n{pad}\n{pad}"
    return out
