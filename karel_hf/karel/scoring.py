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
for the length), or either of them as a JSON string (what the `evaluate` module stores).

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
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .interpreter import execute
from .program import Program, format_program, parse
from .world import World, WorldFormatError

CONSTANT_PROGRAM = format_program(Program.from_actions(["put_marker"]), "lines")
LENGTH_KEY_PREFIX = "accuracy_length_"


@dataclass
class Spec:
    """One reference: input worlds, expected output views, and the reference program's length."""

    inputs: list[World]
    outputs: list[np.ndarray]  # (rows, cols) view codes per pair
    length: int | None


def _reference_form(reference) -> str:
    """"row" (a karel_hf dataset row) or "record" (the authors' JSON-lines format); else a ValueError."""
    if not isinstance(reference, Mapping):
        raise ValueError(f"a reference must be a dict or a JSON string, got {type(reference).__name__}")
    if "inputs" in reference and "outputs" in reference:
        return "row"
    if "input0" in reference:
        return "record"
    raise ValueError(
        "a reference needs 'inputs' and 'outputs' (a karel_hf dataset row) or 'input0', 'output0', ... "
        f"(the authors' JSON-lines format); got keys {sorted(reference)}"
    )


def load_reference(reference) -> Spec:
    """A dataset row, a JSON-lines record, or either as a JSON string -> `Spec`."""
    if isinstance(reference, (str, bytes)):
        try:
            reference = json.loads(reference)
        except json.JSONDecodeError as err:
            raise ValueError(f"a string reference must be JSON (a dataset row or a JSON-lines record): {err}") from None
    length = reference.get("length") if isinstance(reference, Mapping) else None
    if _reference_form(reference) == "row":
        in_codes = np.asarray(reference["inputs"], dtype=np.int64)
        out_codes = np.asarray(reference["outputs"], dtype=np.int64)
        if in_codes.ndim != 3 or in_codes.shape != out_codes.shape:
            raise ValueError(
                "reference 'inputs'/'outputs' must be view codes of the same shape (pairs, rows, cols), "
                f"got {in_codes.shape} and {out_codes.shape}"
            )
        inputs = [World.from_view_codes(c) for c in in_codes]
        outputs = list(out_codes)
    else:
        inputs, outputs = [], []
        while f"input{len(inputs)}" in reference:
            i = len(inputs)
            if f"output{i}" not in reference:
                raise ValueError(f"reference has 'input{i}' but no 'output{i}'")
            inputs.append(World.from_ascii(reference[f"input{i}"]))
            outputs.append(World.from_ascii(reference[f"output{i}"]).view_codes().astype(np.int64))
        if length is None and reference.get("code"):
            length = parse(reference["code"]).num_actions()
    return Spec(inputs, outputs, None if length is None else int(length))


def reference_to_json(reference) -> str:
    """A compact JSON string of a reference, the form the `evaluate` module stores: of a dataset row its
    `inputs`, `outputs` and `length`; of an authors' record its `input<i>`, `output<i>`, `code` and
    `length`; a string is returned as it is."""
    if isinstance(reference, str):
        return reference
    if _reference_form(reference) == "row":
        out = {"inputs": np.asarray(reference["inputs"]).tolist(), "outputs": np.asarray(reference["outputs"]).tolist()}
        if reference.get("length") is not None:
            out["length"] = int(reference["length"])
        return json.dumps(out, separators=(",", ":"))
    keep = {k: v for k, v in reference.items() if re.fullmatch(r"(input|output)\d+|code", k)}
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


def compute_generation_accuracy(predictions, references, num_spec_pairs: int = 5) -> dict:
    """Score predicted program texts against references (see the module docstring)."""
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references; pass one reference per prediction")
    if num_spec_pairs < 1:
        raise ValueError(f"num_spec_pairs must be >= 1, got {num_spec_pairs}")
    correct, correct_all, parsed, generated_lengths = 0, 0, 0, []
    by_length: dict[int, list[int]] = {}
    for text, reference in zip(predictions, references):
        spec = load_reference(reference)
        if len(spec.inputs) < num_spec_pairs:
            raise ValueError(f"a reference has {len(spec.inputs)} pairs, fewer than num_spec_pairs={num_spec_pairs}")
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
    return {int(k[len(LENGTH_KEY_PREFIX) :]): v for k, v in results.items() if k.startswith(LENGTH_KEY_PREFIX)}


def constant_program_baseline(references, num_spec_pairs: int = 5) -> dict:
    """Scores of the constant program `put_marker()` (its visible effect is often nil: the robot
    hides the marker), the floor any accuracy should be read against (docs/cpu_notes.md: 7.4% on a paper-format test set)."""
    references = list(references)
    return compute_generation_accuracy([CONSTANT_PROGRAM] * len(references), references, num_spec_pairs)
