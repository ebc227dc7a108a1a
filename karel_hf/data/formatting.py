"""The paper's text format for one sample (docs/protocol.md §3), both ways: the one place that
says how a sample's text is laid out.

```
Examples:

Input0
<rows of cell words>
Output0
<rows of cell words>
...                      (one Input/Output block per prompt pair)

Code:
def run() {
  move()
  turn_left()
}
```

The pieces: `EXAMPLES_HEADER`, `input_header(i)` / `output_header(i)` before each grid (rows of
cell words, `karel_hf.karel.world.codes_to_words`), `CODE_HEADER`, then the program in the "lines"
layout of `karel_hf.karel.program` (`PROGRAM_HEADER`, one indented statement per line,
`PROGRAM_FOOTER`; the Karel package owns its printer and the printer's batched twin, which the
corpus generator uses). `format_prompt` writes everything before the program, `format_sample` the
whole sample. `format_samples` is `format_sample`'s batched twin, the one the dataset builder and
the Parquet export write every `text` with: a whole batch of view-code arrays becomes one Arrow
string array through NumPy lookups into a table of word pieces (every run of up to three cells of a
grid row is one piece) and one Arrow `take`, which concatenates the pieces of all samples in order;
tests/test_data.py checks it against `format_sample` row by row. The tokenizer's `FastEncoder` and
the decoding grammar take their headers from here too.

Worlds are given either as `World`s or as view-code arrays (`World.view_codes`, what datasets
store); `parse_sample(format_sample(...))` gives back the same codes and program, and formatting
the parsed sample again gives back the same text.

What the format holds, checked both ways with errors that say where (`SampleFormatError`, a
ValueError): 1..`MAX_PROMPT_PAIRS` input/output pairs; every grid a non-empty rectangle of codes from
the cell table with exactly one robot, all grids of a sample the same shape; a program in the lines
layout whose blocks nest at most `MAX_SAMPLE_NESTING` deep with repeat counts at most
`MAX_SAMPLE_REPEAT` (narrower than the parser's limits). The tokenizer's vocabulary is built from
these limits, so everything `format_sample` writes encodes without `<unk>`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from karel_hf.karel.program import (
    ACTIONS,
    CONDITIONS,
    INDENT,
    PROGRAM_FOOTER,
    PROGRAM_HEADER,
    KarelSyntaxError,
    Program,
    Repeat,
    format_program,
    nesting_depth,
    parse,
    walk,
)
from karel_hf.karel.world import (
    CELL_WORDS,
    MARKER_CODE_OFFSET,
    ROBOT_CODE_OFFSET,
    World,
    WorldFormatError,
    check_view_codes,
    codes_to_words,
    words_to_codes,
)

EXAMPLES_HEADER = "Examples:\n\n"
INPUT_WORD, OUTPUT_WORD = "Input", "Output"  # the grid headers: "Input0\n", "Output0\n", ...
CODE_HEADER = "\nCode:\n"
# What the text format (and so the tokenizer's vocabulary) covers; see the module docstring.
MAX_PROMPT_PAIRS = 10  # Input0..Input9
MAX_SAMPLE_NESTING = 5  # control blocks nested in a sample's program
MAX_SAMPLE_REPEAT = 20  # repeat(0)..repeat(20)
# A straight-line program in the lines layout (what the corpus generator writes), checked without parsing.
_STRAIGHT_LINE_TEXT = re.compile(
    re.escape(PROGRAM_HEADER) + f"(?:{INDENT}(?:{'|'.join(ACTIONS)})\\(\\)\\n)*" + re.escape(PROGRAM_FOOTER)
)
__all__ = [
    "CODE_HEADER", "EXAMPLES_HEADER", "INDENT", "INPUT_WORD", "MAX_PROMPT_PAIRS", "MAX_SAMPLE_NESTING",
    "MAX_SAMPLE_REPEAT", "OUTPUT_WORD", "PROGRAM_FOOTER", "PROGRAM_HEADER", "Sample", "SampleFormatError",
    "check_sample_program", "count_prompt_pairs", "format_prompt", "format_sample", "format_samples", "input_header",
    "output_header", "parse_sample", "split_sample",
]


def input_header(pair: int) -> str:
    """The line before input grid `pair` of the prompt."""
    return f"{INPUT_WORD}{pair}\n"


def output_header(pair: int) -> str:
    """The line before output grid `pair` of the prompt."""
    return f"{OUTPUT_WORD}{pair}\n"


class SampleFormatError(ValueError):
    """A sample's text does not follow the paper's layout; the message says where."""


@dataclass
class Sample:
    inputs: np.ndarray  # (pairs, rows, cols) int8 view codes
    outputs: np.ndarray  # (pairs, rows, cols) int8 view codes
    program_text: str
    program: Program | None  # None when the program text does not parse


def _grid(world, name: str) -> np.ndarray:
    """The view codes of one prompt grid, checked: a non-empty rectangle of table codes, one robot."""
    if isinstance(world, World):
        try:
            return world.view_codes()
        except WorldFormatError as err:
            raise SampleFormatError(f"{name}: {err}") from None
    try:
        codes = check_view_codes(world, name)
    except WorldFormatError as err:
        raise SampleFormatError(str(err)) from None
    _check_one_robot(codes, name)
    return codes


def _check_one_robot(codes: np.ndarray, name: str) -> None:
    robots = int(np.count_nonzero((codes >= ROBOT_CODE_OFFSET) & (codes < MARKER_CODE_OFFSET)))
    if robots != 1:
        raise SampleFormatError(f"{name}: a grid must show exactly one robot, found {robots}")


def _prompt_grids(inputs, outputs) -> list[tuple[np.ndarray, np.ndarray]]:
    """Checked (input, output) view codes per pair: 1..MAX_PROMPT_PAIRS pairs, every grid the same shape."""
    try:
        num_inputs, num_outputs = len(inputs), len(outputs)
    except TypeError:
        raise TypeError(
            f"inputs and outputs must be sequences of grids, got {type(inputs).__name__} and {type(outputs).__name__}"
        ) from None
    if num_inputs != num_outputs or num_inputs == 0:
        raise SampleFormatError(
            f"need the same positive number of inputs and outputs, got {num_inputs} and {num_outputs}"
        )
    if num_inputs > MAX_PROMPT_PAIRS:
        raise SampleFormatError(
            f"{num_inputs} input/output pairs; the text format shows at most {MAX_PROMPT_PAIRS} (MAX_PROMPT_PAIRS)"
        )
    grids = [(_grid(i, input_header(k)[:-1]), _grid(o, output_header(k)[:-1])) for k, (i, o) in enumerate(zip(inputs, outputs))]
    shape = grids[0][0].shape
    for k, pair in enumerate(grids):
        for grid, header in zip(pair, (input_header(k)[:-1], output_header(k)[:-1])):
            if grid.shape != shape:
                raise SampleFormatError(
                    f"{header} is {_size(grid.shape)} cells but Input0 is {_size(shape)}: every grid of a sample has one shape"
                )
    return grids


def _size(shape) -> str:
    return "x".join(str(n) for n in shape)


def format_prompt(inputs, outputs) -> str:
    """Everything the model is shown before it writes a program, ending with 'Code:\\n'."""
    parts = [EXAMPLES_HEADER]
    for i, (inp, out) in enumerate(_prompt_grids(inputs, outputs)):
        parts.append(f"{input_header(i)}{codes_to_words(inp)}\n{output_header(i)}{codes_to_words(out)}\n")
    parts.append(CODE_HEADER)
    return "".join(parts)


def check_sample_program(program: Program) -> Program:
    """`program` if the text format covers it (blocks nested at most MAX_SAMPLE_NESTING deep, repeat
    counts at most MAX_SAMPLE_REPEAT), else a SampleFormatError naming the limit."""
    depth = nesting_depth(program.body)
    if depth > MAX_SAMPLE_NESTING:
        raise SampleFormatError(
            f"program: blocks nested {depth} deep; the text format covers at most {MAX_SAMPLE_NESTING} (MAX_SAMPLE_NESTING)"
        )
    repeats = [stmt.times for stmt in walk(program.body) if isinstance(stmt, Repeat)]
    bad = next((n for n in repeats if not 0 <= n <= MAX_SAMPLE_REPEAT), None)
    if bad is not None:
        raise SampleFormatError(
            f"program: repeat({bad}); the text format covers repeat counts 0..{MAX_SAMPLE_REPEAT} (MAX_SAMPLE_REPEAT)"
        )
    return program


def _program_text(program) -> str:
    """The lines-layout text of a Program, or of a text already in that layout (checked)."""
    if isinstance(program, Program):
        return format_program(check_sample_program(program), "lines")
    if not isinstance(program, str):
        raise TypeError(f"program: expected a Program or its text in the lines layout, got {type(program).__name__}")
    if _STRAIGHT_LINE_TEXT.fullmatch(program):  # the generator's straight-line texts: no parse needed
        return program
    shown = repr(program) if len(program) <= 80 else repr(program[:80]) + "..."
    try:
        parsed = parse(program)
    except KarelSyntaxError as err:
        raise SampleFormatError(f"program: {err}; got {shown}") from None
    if format_program(parsed, "lines") != program:
        raise SampleFormatError(
            f"program: expected the lines layout ({PROGRAM_HEADER!r}, one statement per line indented by "
            f"{INDENT!r} per block, {PROGRAM_FOOTER!r}), got {shown}; pass the parsed Program instead"
        )
    check_sample_program(parsed)
    return program


def format_sample(inputs, outputs, program: Program | str) -> str:
    """A whole training sample: the prompt, then the program in the one-action-per-line layout.

    `program` is a `Program`, or its text already in that layout (`format_program(p, "lines")`, as
    the corpus generator writes it), which is checked and used as is. Raises SampleFormatError
    (a ValueError) for anything outside the format (see the module docstring).
    """
    text = _program_text(program)
    return format_prompt(inputs, outputs) + text


# ------------------------------------------------------------------- the batched twin (Arrow)
# A grid row is written as runs of up to CELLS_PER_PIECE cells, each one piece of the table: the
# cells' words joined by spaces, then a space (the run continues the row) or a newline (it ends it).
CELLS_PER_PIECE = 3
# A program text in the lines layout whose every line is a piece the text format covers (for Arrow's
# RE2): actions indented 1..MAX_SAMPLE_NESTING + 1 levels; headers, `else {` and closers 1..MAX_SAMPLE_NESTING
# levels; repeat counts 0..MAX_SAMPLE_REPEAT. Brace balance is checked beside it.
_CONDITION_RE2 = "(?:not )?(?:" + "|".join(CONDITIONS) + r")\(\)"
_HEADER_RE2 = (r"(?:(?:if|ifelse|while)\(" + _CONDITION_RE2 + r"\)|repeat\((?:"
               + "|".join(str(k) for k in range(MAX_SAMPLE_REPEAT + 1)) + r")\)) \{")
_SAMPLE_PROGRAM_RE2 = (
    r"^def run\(\) \{\n(?:"
    + f"(?:{INDENT}){{1,{MAX_SAMPLE_NESTING + 1}}}(?:" + "|".join(ACTIONS) + r")\(\)\n|"
    + f"(?:{INDENT}){{1,{MAX_SAMPLE_NESTING}}}(?:" + _HEADER_RE2 + r"|else \{|\})\n"
    + r")*\}$"
)


@lru_cache(maxsize=1)
def _piece_table() -> tuple[pa.LargeStringArray, dict]:
    """(the pieces, {kind: id of its first piece}) for `format_samples`.

    Kinds: ("cells", k, end) for runs of k cells (ids: base + the cells' codes read as a base-V
    number, V = len(CELL_WORDS)), end " " or newline; "input" / "output" (base + pair); "examples",
    "code".
    """
    pieces, first = [], {}
    for k in range(1, CELLS_PER_PIECE + 1):
        runs = [" ".join(words) for words in itertools.product(CELL_WORDS, repeat=k)]
        for end in (" ", "\n"):
            first[("cells", k, end)] = len(pieces)
            pieces += [run + end for run in runs]
    for kind, header in (("input", input_header), ("output", output_header)):
        first[kind] = len(pieces)
        pieces += [header(p) for p in range(MAX_PROMPT_PAIRS)]
    first["examples"], first["code"] = len(pieces), len(pieces) + 1
    pieces += [EXAMPLES_HEADER, CODE_HEADER]
    return pa.array(pieces, type=pa.large_string()), first


def _grid_piece_ids(codes: np.ndarray, first: dict) -> np.ndarray:
    """(n, k, rows, cols) view codes -> (n, k, rows * runs) int32 piece ids, runs = ceil(cols / 3) per row."""
    n, k, rows, cols = codes.shape
    codes = codes.astype(np.int32)
    starts = range(0, cols, CELLS_PER_PIECE)
    out = np.empty((n, k, rows, len(starts)), dtype=np.int32)
    for j, lo in enumerate(starts):
        hi = min(lo + CELLS_PER_PIECE, cols)
        ids = out[:, :, :, j]
        ids[...] = first[("cells", hi - lo, "\n" if hi == cols else " ")]
        for c in range(lo, hi):  # the run's cells as one base-V number, first cell most significant
            ids += codes[:, :, :, c] * len(CELL_WORDS) ** (hi - 1 - c)
    return out.reshape(n, k, rows * len(starts))


def format_samples(inputs, outputs, programs) -> pa.StringArray:
    """`format_sample` of every row, as one Arrow string array: the batched twin of `format_sample`.

    `inputs`, `outputs`: (n, pairs, rows, cols) view codes (the prompt pairs only); `programs`: n
    program texts in the lines layout (a list or an Arrow string array), as the corpus generator
    writes them.
    """
    inputs, outputs = np.asarray(inputs), np.asarray(outputs)
    if inputs.ndim != 4 or inputs.shape != outputs.shape or 0 in inputs.shape[1:]:
        raise SampleFormatError(f"inputs and outputs: need two (n, pairs, rows, cols) arrays of the same shape with "
                                f"pairs, rows, cols >= 1, got {inputs.shape} and {outputs.shape}")
    n, pairs = inputs.shape[:2]
    if pairs > MAX_PROMPT_PAIRS:
        raise SampleFormatError(f"inputs: {pairs} prompt pairs; the text format shows at most {MAX_PROMPT_PAIRS} "
                                "(MAX_PROMPT_PAIRS)")
    for name, codes in (("inputs", inputs), ("outputs", outputs)):
        if codes.dtype.kind not in "iu":
            raise SampleFormatError(f"{name}: view codes must be integers, got dtype {codes.dtype}")
        if codes.size and (codes.min() < 0 or codes.max() >= len(CELL_WORDS)):
            raise SampleFormatError(f"{name}: view codes must lie in [0, {len(CELL_WORDS)}), got "
                                    f"[{codes.min()}, {codes.max()}]")
        robots = ((codes >= ROBOT_CODE_OFFSET) & (codes < MARKER_CODE_OFFSET)).sum(axis=(2, 3))  # (n, pairs)
        if n and (robots != 1).any():
            i, k = (int(v) for v in np.argwhere(robots != 1)[0])
            raise SampleFormatError(f"sample {i}, {(input_header if name == 'inputs' else output_header)(k)[:-1]}: a "
                                    f"grid must show exactly one robot, found {robots[i, k]}")
    if isinstance(programs, pa.ChunkedArray):
        programs = programs.combine_chunks()
    elif not isinstance(programs, pa.Array):
        programs = pa.array(programs, pa.large_string())
    programs = programs.cast(pa.large_string())
    if len(programs) != n:
        raise SampleFormatError(f"programs: need one program per sample ({n}), got {len(programs)}")
    covered = pc.and_(pc.match_substring_regex(programs, _SAMPLE_PROGRAM_RE2),
                      pc.equal(pc.count_substring(programs, "{\n"), pc.add(pc.count_substring(programs, "}\n"), 1)))
    covered = covered.fill_null(False).to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(~covered):  # the exact check, which names the problem
        try:
            _program_text(programs[int(i)].as_py())
        except (SampleFormatError, TypeError) as err:
            raise SampleFormatError(f"sample {i}: {err}") from None
    table, first = _piece_table()
    grid_in, grid_out = _grid_piece_ids(inputs, first), _grid_piece_ids(outputs, first)  # (n, pairs, g)
    g = grid_in.shape[2]
    per_pair = 2 + 2 * g  # Input header, grid, Output header, grid
    body = np.empty((n, pairs, per_pair), dtype=np.int32)
    body[:, :, 0] = first["input"] + np.arange(pairs)
    body[:, :, 1 : 1 + g] = grid_in
    body[:, :, 1 + g] = first["output"] + np.arange(pairs)
    body[:, :, 2 + g :] = grid_out
    ids = np.empty((n, 1 + pairs * per_pair + 2), dtype=np.int32)  # one row of piece ids per sample
    ids[:, 0] = first["examples"]
    ids[:, 1:-2] = body.reshape(n, pairs * per_pair)
    ids[:, -2] = first["code"]
    ids[:, -1] = len(table) + np.arange(n)  # the program: after the table in the source array
    source = pa.concat_arrays([table, programs])
    # `take` writes the pieces of all samples one after another: sample i's text is the bytes from
    # the start of its first piece to the start of the next sample's first piece.
    pieces = source.take(pa.array(ids.reshape(-1)))
    _, offsets, data = pieces.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int64, count=len(pieces) + 1, offset=pieces.offset * 8)
    starts = offsets[:: ids.shape[1]]  # (n + 1,) the sample boundaries
    if starts[-1] - starts[0] >= 2**31:
        raise ValueError(f"format_samples: {n} samples make {starts[-1] - starts[0]:,} bytes, more than one Arrow "
                         "string array holds; format fewer samples at a time")
    return pa.StringArray.from_buffers(n, pa.py_buffer((starts - starts[0]).astype(np.int32)), data[int(starts[0]):])


def count_prompt_pairs(text: str) -> int:
    """How many Input/Output pairs a sample's (or prompt's) text shows before 'Code:'."""
    return sum(1 for line in split_sample(text)[0].split("\n") if line.startswith(OUTPUT_WORD))


def split_sample(text: str) -> tuple[str, str]:
    """(prompt ending with 'Code:\\n', program text)."""
    if not isinstance(text, str):
        raise TypeError(f"a sample is a str, got {type(text).__name__}")
    at = text.find(CODE_HEADER)
    if at < 0:
        raise SampleFormatError("no 'Code:' line: a sample is the examples, a blank line, 'Code:', then the program")
    cut = at + len(CODE_HEADER)
    return text[:cut], text[cut:]


def parse_sample(text: str) -> Sample:
    """Parse a formatted sample (or a bare prompt) back into view codes and the program.

    The examples must follow the format exactly (see the module docstring); the program is None
    when its text is empty or does not parse.
    """
    prompt, program_text = split_sample(text)
    if not prompt.startswith(EXAMPLES_HEADER):
        raise SampleFormatError("a sample must start with 'Examples:' and a blank line")
    body = prompt[len(EXAMPLES_HEADER) : -len(CODE_HEADER)]
    if not body.endswith("\n"):
        raise SampleFormatError("expected a blank line between the last grid and 'Code:'")
    lines = body[:-1].split("\n")
    inputs, outputs, pos, pair = [], [], 0, 0
    while pos < len(lines):
        if pair == MAX_PROMPT_PAIRS:
            raise SampleFormatError(
                f"more than {MAX_PROMPT_PAIRS} input/output pairs (MAX_PROMPT_PAIRS) at example line {pos + 1}"
            )
        for header, target in ((input_header(pair)[:-1], inputs), (output_header(pair)[:-1], outputs)):
            if pos >= len(lines) or lines[pos] != header:
                found = repr(lines[pos][:40]) if pos < len(lines) else "the end of the examples"
                raise SampleFormatError(f"expected {header!r} at example line {pos + 1}, found {found}")
            end = pos + 1
            while end < len(lines) and lines[end].startswith("__"):  # grid rows are cell words
                end += 1
            if end == pos + 1:
                raise SampleFormatError(f"{header} at example line {pos + 1}: the grid is empty (no row of cell words)")
            try:
                codes = words_to_codes("\n".join(lines[pos + 1 : end]))
            except WorldFormatError as err:
                raise SampleFormatError(f"{header} at example line {pos + 1}: {err}") from None
            _check_one_robot(codes, f"{header} at example line {pos + 1}")
            if inputs and codes.shape != inputs[0].shape:
                raise SampleFormatError(
                    f"{header} at example line {pos + 1} is {_size(codes.shape)} cells but Input0 is "
                    f"{_size(inputs[0].shape)}: every grid of a sample has one shape"
                )
            target.append(codes)
            pos = end
        pair += 1
    if not inputs:
        raise SampleFormatError("no Input0/Output0 pair between 'Examples:' and 'Code:'")
    try:
        program = parse(program_text) if program_text else None
    except KarelSyntaxError:
        program = None
    return Sample(np.stack(inputs), np.stack(outputs), program_text, program)
