"""Scoring predicted programs against specifications: generation accuracy (docs/protocol.md §5).

A predicted program is correct when executing it on each of the specification inputs gives the
specification outputs, compared as rendered interiors (view codes: markers under the robot are
hidden, as in the prompt). The stricter `accuracy_all_pairs` also requires the held-out pairs.
Correctness is computed by the Karel interpreter only: no host code is ever executed. A
prediction that does not parse, exhausts the interpreter's step budget, or leaves a cell with more
than 9 markers (not renderable) is incorrect; nothing about a prediction ever raises.

References are either karel_hf dataset rows (dicts with "inputs"/"outputs" view codes of shape
(pairs, rows, cols), arrays or nested lists, and optionally "length"), records in the authors'
JSON-lines format (`input0..9` / `output0..9` ASCII worlds with the border, `code` optional, used
for the length), or either of them as a JSON string (what the `evaluate` module stores). A reference
is checked whole (every grid a valid world with one robot, outputs the shape of their inputs,
`length` an integer in 1..2**31-1, `code` a program that parses); a bad one is a ValueError naming
its index and what to pass, never a wrong score.

Results are one flat dict of plain Python numbers (loggable, JSON-safe): `accuracy`,
`accuracy_all_pairs`, `parse_rate`, `mean_generated_length` (actions in the parseable predictions),
`num_examples`, and `accuracy_length_<n>` for each reference program length n present
(`accuracy_by_length(results)` turns those back into `{n: accuracy}`).

This module lives in the Karel core, not in `karel_hf.metrics` (which re-exports it), because the
`generation_accuracy` metric Space ships it: like `world`, `program` and `interpreter`, it imports
only the standard library, NumPy and its siblings (relatively), so the four files run unchanged
beside the module script in a Space where karel_hf is not installed.

    >>> spec = {"input0": "#####\\n#..>#\\n#####", "output0": "#####\\n#..>#\\n#####",
    ...         "input1": "#####\\n#>..#\\n#####", "output1": "#####\\n#1>.#\\n#####",
    ...         "code": "def run() { put_marker(); move() }"}
    >>> predictions = ["def run() {\\n  put_marker()\\n  move()\\n}",  # right on both pairs
    ...                "def run() {\\n  move()\\n}",                    # right on the spec pair only
    ...                "def run() {\\n  turn_left()\\n}",               # wrong
    ...                "def run() { move("]                             # does not parse
    >>> results = compute_generation_accuracy(predictions, [spec] * 4, num_spec_pairs=1)
    >>> results["accuracy"], results["accuracy_all_pairs"], results["parse_rate"]
    (0.5, 0.25, 0.75)
    >>> accuracy_by_length(results)
    {2: 0.5}
"""

from __future__ import annotations

import json
import re
from itertools import product
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .interpreter import execute
from .program import ACTIONS, KarelSyntaxError, Program, format_program, parse
from .world import MARKER_CODE_OFFSET, ROBOT_CODE_OFFSET, World, WorldFormatError, check_view_codes

CONSTANT_PROGRAM = format_program(Program.from_actions(["put_marker"]), "lines")
LENGTH_KEY_PREFIX = "accuracy_length_"
MAX_LENGTH = 2**31 - 1  # a reference's `length` is an int32
REFERENCE_FORMS = (
    "pass a karel_hf dataset row ({'inputs', 'outputs': view codes (pairs, rows, cols), 'length'}), a record in "
    "the authors' JSON-lines format ({'input0', 'output0', ..., 'code'}), or either as a JSON string"
)


@dataclass
class Spec:
    """One reference: input worlds, expected output views, and the reference program's length."""

    inputs: list[World]
    outputs: list[np.ndarray]  # (rows, cols) view codes per pair
    length: int | None


def _reference_form(reference) -> str:
    """"row" (a karel_hf dataset row) or "record" (the authors' JSON-lines format); else a ValueError."""
    if not isinstance(reference, Mapping):
        raise ValueError(f"a reference must be a dict or a JSON string, got {type(reference).__name__}; {REFERENCE_FORMS}")
    if "inputs" in reference and "outputs" in reference:
        return "row"
    if "input0" in reference:
        return "record"
    keys = sorted(map(str, reference))
    raise ValueError(f"a reference needs 'inputs' and 'outputs' or 'input0', 'output0', ...; got keys {keys}; "
                     f"{REFERENCE_FORMS}")


def load_reference(reference) -> Spec:
    """A dataset row, a JSON-lines record, or either as a JSON string -> `Spec` (checked; a
    ValueError says what is wrong and what to pass)."""
    if isinstance(reference, (str, bytes)):
        try:
            reference = json.loads(reference)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"a string reference must be JSON ({err}); {REFERENCE_FORMS}") from None
    length = reference.get("length") if isinstance(reference, Mapping) else None
    if _reference_form(reference) == "row":
        in_codes = _view_code_stack(reference["inputs"], "inputs")
        out_codes = _view_code_stack(reference["outputs"], "outputs")
        if in_codes.shape != out_codes.shape:
            raise ValueError(f"reference 'inputs' and 'outputs' must have the same shape (pairs, rows, cols), got "
                             f"{in_codes.shape} and {out_codes.shape}")
        inputs = [World.from_view_codes(c) for c in in_codes]
        outputs = list(out_codes)
    else:
        inputs, outputs = [], []
        while f"input{len(inputs)}" in reference:
            i = len(inputs)
            if f"output{i}" not in reference:
                raise ValueError(f"reference has 'input{i}' but no 'output{i}'; {REFERENCE_FORMS}")
            world = _ascii_world(reference, f"input{i}")
            expected = _ascii_world(reference, f"output{i}")
            if expected.walls.shape != world.walls.shape:
                raise ValueError(f"reference 'output{i}' is {expected.height}x{expected.width} but 'input{i}' is "
                                 f"{world.height}x{world.width}")
            inputs.append(world)
            try:
                outputs.append(expected.view_codes().astype(np.int64))
            except WorldFormatError as err:
                raise ValueError(f"reference 'output{i}': {err}") from None
        code = reference.get("code")
        if length is None and code is not None and code != "":
            if not isinstance(code, str):
                raise ValueError(f"reference 'code' must be the program's text, got {type(code).__name__}")
            try:
                length = parse(code).num_actions()
            except KarelSyntaxError as err:
                raise ValueError(f"reference 'code' does not parse: {err}") from None
    return Spec(inputs, outputs, None if length is None else _check_length(length))


def _view_code_stack(value, key: str) -> np.ndarray:
    """(pairs, rows, cols) int64 view codes of a dataset row's `inputs`/`outputs`, each grid checked."""
    try:
        codes = np.asarray(value)
    except (ValueError, TypeError) as err:
        raise ValueError(f"reference {key!r}: not a rectangular array of view codes ({err})") from None
    if codes.ndim != 3 or codes.shape[0] == 0:
        raise ValueError(f"reference {key!r} must be view codes of shape (pairs, rows, cols) with at least one pair, "
                         f"got shape {codes.shape}")
    for k, grid in enumerate(codes):
        try:
            check_view_codes(grid, f"reference {key!r}, pair {k}")
        except WorldFormatError as err:
            raise ValueError(str(err)) from None
        robots = int(np.count_nonzero((grid >= ROBOT_CODE_OFFSET) & (grid < MARKER_CODE_OFFSET)))
        if robots != 1:
            raise ValueError(f"reference {key!r}, pair {k}: a grid must show exactly one robot, found {robots}")
    return codes.astype(np.int64)


def _ascii_world(reference, key: str) -> World:
    text = reference[key]
    if not isinstance(text, str):
        raise ValueError(f"reference {key!r} must be a world in the authors' ASCII format (a str), got {type(text).__name__}")
    try:
        return World.from_ascii(text)
    except WorldFormatError as err:
        raise ValueError(f"reference {key!r}: {err}") from None


def _check_length(length) -> int:
    """A reference program's length: an integer number of actions in 1..MAX_LENGTH."""
    if isinstance(length, (bool, np.bool_)) or not isinstance(length, (int, np.integer)) or not 1 <= length <= MAX_LENGTH:
        raise ValueError(f"reference 'length' must be the reference program's number of actions, an integer in "
                         f"1..{MAX_LENGTH}, got {length!r}")
    return int(length)


def reference_to_json(reference) -> str:
    """A compact JSON string of a reference, the form the `evaluate` module stores: of a dataset row its
    `inputs`, `outputs` and `length`; of an authors' record its `input<i>`, `output<i>`, `code` and
    `length`; a string is returned as it is. A dict is checked first (`load_reference`), so a bad one
    fails here with a ValueError, not later inside evaluate."""
    if isinstance(reference, str):
        return reference
    load_reference(reference)
    if _reference_form(reference) == "row":
        out = {"inputs": np.asarray(reference["inputs"]).tolist(), "outputs": np.asarray(reference["outputs"]).tolist()}
        if reference.get("length") is not None:
            out["length"] = int(reference["length"])
        return json.dumps(out, separators=(",", ":"))
    keep = {k: v for k, v in reference.items() if re.fullmatch(r"(input|output)[0-9]+|code", str(k))}
    if reference.get("length") is not None:
        keep["length"] = int(reference["length"])
    return json.dumps(keep, separators=(",", ":"))


def parse_prediction(text) -> Program | None:
    """The parsed program, or None when `text` is not a (str) Karel program."""
    if not isinstance(text, str):
        return None
    try:
        return parse(text, extended=True)
    except (ValueError, RecursionError):  # KarelSyntaxError is a ValueError
        return None


def pairs_correct(program: Program, spec: Spec, stop: int, start: int = 0) -> bool:
    """Whether `program` maps inputs start..stop-1 of `spec` to their outputs."""
    for world, expected in zip(spec.inputs[start:stop], spec.outputs[start:stop]):
        try:
            result = execute(program, world)
        except RecursionError:  # nesting deeper than Python's stack
            return False
        if not result.completed:
            return False
        try:
            view = result.world.view_codes()
        except WorldFormatError:  # more markers in a cell than the rendering can show
            return False
        if view.shape != expected.shape or not np.array_equal(view, expected):
            return False
    return True


def _as_list(values, name: str) -> list:
    if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} must be a list (one entry per example), got {type(values).__name__}")
    return list(values)


def compute_generation_accuracy(predictions, references, num_spec_pairs: int = 5) -> dict:
    """Score predicted program texts against references (see the module docstring).

    A prediction that is not a str, or does not parse, counts as wrong; a bad reference or
    argument is a ValueError saying what to pass.
    """
    predictions, references = _as_list(predictions, "predictions"), _as_list(references, "references")
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references; pass one reference per prediction")
    if isinstance(num_spec_pairs, (bool, np.bool_)) or not isinstance(num_spec_pairs, (int, np.integer)) or num_spec_pairs < 1:
        raise ValueError(f"num_spec_pairs must be a positive integer (the spec pairs shown in the prompt), got {num_spec_pairs!r}")
    correct, correct_all, parsed, generated_lengths = 0, 0, 0, []
    by_length: dict[int, list[int]] = {}
    for index, (text, reference) in enumerate(zip(predictions, references)):
        try:
            spec = load_reference(reference)
        except ValueError as err:
            raise ValueError(f"reference {index}: {err}") from None
        if len(spec.inputs) < num_spec_pairs:
            raise ValueError(f"reference {index} has {len(spec.inputs)} pairs, fewer than num_spec_pairs={num_spec_pairs}")
        program = parse_prediction(text)
        ok = ok_all = False
        if program is not None:
            parsed += 1
            generated_lengths.append(program.num_actions())
            ok = pairs_correct(program, spec, num_spec_pairs)
            ok_all = ok and pairs_correct(program, spec, len(spec.inputs), start=num_spec_pairs)
        correct += ok
        correct_all += ok_all
        if spec.length is not None:
            by_length.setdefault(spec.length, []).append(int(ok))
    n = len(predictions)
    results = {
        "accuracy": correct / n if n else 0.0,
        "accuracy_all_pairs": correct_all / n if n else 0.0,
        "parse_rate": parsed / n if n else 0.0,
        "mean_generated_length": float(np.mean(generated_lengths)) if generated_lengths else 0.0,
        "num_examples": n,
    }
    for length in sorted(by_length):
        results[f"{LENGTH_KEY_PREFIX}{length}"] = sum(by_length[length]) / len(by_length[length])
    return results


def accuracy_by_length(results: dict) -> dict[int, float]:
    """`{length: accuracy}` from the flat `accuracy_length_<n>` keys of a results dict."""
    found = {}
    for key, value in results.items():
        suffix = key[len(LENGTH_KEY_PREFIX) :] if isinstance(key, str) and key.startswith(LENGTH_KEY_PREFIX) else ""
        if suffix.isascii() and suffix.isdigit():  # ASCII only: int() also reads other scripts' digits
            found[int(suffix)] = value
    return found


def best_constant_program_baseline(references, num_spec_pairs: int = 5, max_length: int = 2) -> dict:
    """The best constant program of 1..`max_length` actions on these references, chosen on them:
    `{"program": text, "accuracy": share of references whose prompt pairs it solves}`.

    A stricter floor than `put_marker()`: with walls in the grid many moves are blocked, so a short
    fixed program (`turn_left()`, say) solves a share of specs whose reference programs are longer.
    Chosen on the references it scores, so it is, if anything, optimistic for the floor.
    """
    specs = []
    for index, reference in enumerate(_as_list(references, "references")):
        try:
            specs.append(load_reference(reference))
        except ValueError as err:
            raise ValueError(f"reference {index}: {err}") from None
    best_text, best = CONSTANT_PROGRAM, -1
    for length in range(1, max_length + 1):
        for actions in product(ACTIONS, repeat=length):
            program = Program.from_actions(list(actions))
            correct = sum(pairs_correct(program, spec, num_spec_pairs) for spec in specs)
            if correct > best:
                best_text, best = format_program(program, "lines"), correct
    return {"program": best_text, "accuracy": best / len(specs) if specs else 0.0}


def constant_program_baseline(references, num_spec_pairs: int = 5) -> dict:
    """Scores of the constant program `put_marker()` (its visible effect is often nil: the robot
    hides the marker), the floor any accuracy should be read against (docs/cpu_notes.md: 7.4% on a paper-format test set)."""
    references = list(references)
    return compute_generation_accuracy([CONSTANT_PROGRAM] * len(references), references, num_spec_pairs)
