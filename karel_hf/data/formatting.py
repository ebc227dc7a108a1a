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
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from karel_hf.karel.program import INDENT, PROGRAM_FOOTER, PROGRAM_HEADER, Program, format_program, parse
from karel_hf.karel.world import CELL_WORDS, World, WorldFormatError, codes_to_words, words_to_codes

EXAMPLES_HEADER = "Examples:\n\n"
INPUT_WORD, OUTPUT_WORD = "Input", "Output"  # the grid headers: "Input0\n", "Output0\n", ...
CODE_HEADER = "\nCode:\n"
__all__ = [
    "CODE_HEADER", "EXAMPLES_HEADER", "INDENT", "INPUT_WORD", "OUTPUT_WORD", "PROGRAM_FOOTER", "PROGRAM_HEADER", "Sample", "SampleFormatError",
    "count_prompt_pairs", "format_prompt", "format_sample", "format_samples", "input_header", "output_header", "parse_sample",
    "split_sample",
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


def _codes(world) -> np.ndarray:
    return world.view_codes() if isinstance(world, World) else np.asarray(world)


def format_prompt(inputs, outputs) -> str:
    """Everything the model is shown before it writes a program, ending with 'Code:\\n'."""
    if len(inputs) != len(outputs) or len(inputs) == 0:
        raise ValueError(f"need the same positive number of inputs and outputs, got {len(inputs)} and {len(outputs)}")
    parts = [EXAMPLES_HEADER]
    for i, (inp, out) in enumerate(zip(inputs, outputs)):
        parts.append(f"{input_header(i)}{codes_to_words(_codes(inp))}\n{output_header(i)}{codes_to_words(_codes(out))}\n")
    parts.append(CODE_HEADER)
    return "".join(parts)


def format_sample(inputs, outputs, program: Program | str) -> str:
    """A whole training sample: the prompt, then the program in the one-action-per-line layout.

    `program` is a `Program`, or its text already in that layout (`format_program(p, "lines")`, as
    the corpus generator writes it), which is used as is.
    """
    if isinstance(program, Program):
        program = format_program(program, "lines")
    elif not (isinstance(program, str) and program.startswith(PROGRAM_HEADER) and program.endswith(PROGRAM_FOOTER)):
        raise ValueError(f"program: expected a Program or a text in the lines layout ({PROGRAM_HEADER!r} ... "
                         f"{PROGRAM_FOOTER!r}), got {program!r}; parse other layouts with karel_hf.karel.parse")
    return format_prompt(inputs, outputs) + program


# ------------------------------------------------------------------- the batched twin (Arrow)
# A grid row is written as runs of up to CELLS_PER_PIECE cells, each one piece of the table: the
# cells' words joined by spaces, then a space (the run continues the row) or a newline (it ends it).
CELLS_PER_PIECE = 3
_MAX_PAIRS_IN_TABLE = 100  # headers Input0..Input99 / Output0..Output99 are in the table


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
        pieces += [header(p) for p in range(_MAX_PAIRS_IN_TABLE)]
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
    if inputs.ndim != 4 or inputs.shape != outputs.shape or inputs.shape[1] == 0:
        raise ValueError(f"inputs and outputs: need two (n, pairs, rows, cols) arrays of the same shape with "
                         f"pairs >= 1, got {inputs.shape} and {outputs.shape}")
    n, pairs = inputs.shape[:2]
    if pairs > _MAX_PAIRS_IN_TABLE:
        raise ValueError(f"inputs: at most {_MAX_PAIRS_IN_TABLE} prompt pairs, got {pairs}")
    for name, codes in (("inputs", inputs), ("outputs", outputs)):
        if codes.size and (codes.min() < 0 or codes.max() >= len(CELL_WORDS)):
            raise ValueError(f"{name}: view codes must lie in [0, {len(CELL_WORDS)}), got [{codes.min()}, {codes.max()}]")
    if isinstance(programs, pa.ChunkedArray):
        programs = programs.combine_chunks()
    elif not isinstance(programs, pa.Array):
        programs = pa.array(programs, pa.large_string())
    programs = programs.cast(pa.large_string())
    if len(programs) != n:
        raise ValueError(f"programs: need one program per sample ({n}), got {len(programs)}")
    layout = pc.and_(pc.starts_with(programs, PROGRAM_HEADER), pc.ends_with(programs, PROGRAM_FOOTER))
    if n and not pc.all(layout).as_py():
        bad = programs[pc.index(layout, False).as_py()].as_py()
        raise ValueError(f"programs: expected texts in the lines layout ({PROGRAM_HEADER!r} ... {PROGRAM_FOOTER!r}), "
                         f"got {bad!r}; print programs with format_program(p, 'lines')")
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
    at = text.find(CODE_HEADER)
    if at < 0:
        raise SampleFormatError("no 'Code:' line: a sample is the examples, a blank line, 'Code:', then the program")
    cut = at + len(CODE_HEADER)
    return text[:cut], text[cut:]


def parse_sample(text: str) -> Sample:
    """Parse a formatted sample (or a bare prompt) back into view codes and the program."""
    prompt, program_text = split_sample(text)
    if not prompt.startswith(EXAMPLES_HEADER):
        raise SampleFormatError("a sample must start with 'Examples:' and a blank line")
    lines = prompt[len(EXAMPLES_HEADER) : -len(CODE_HEADER)].split("\n")[:-1]
    inputs, outputs, pos, pair = [], [], 0, 0
    while pos < len(lines):
        for header, target in ((input_header(pair)[:-1], inputs), (output_header(pair)[:-1], outputs)):
            if pos >= len(lines) or lines[pos] != header:
                found = lines[pos] if pos < len(lines) else "the end of the examples"
                raise SampleFormatError(f"expected {header!r} at example line {pos + 1}, found {found!r}")
            end = pos + 1
            while end < len(lines) and lines[end].startswith("__"):  # grid rows are cell words
                end += 1
            try:
                target.append(words_to_codes("\n".join(lines[pos + 1 : end])))
            except WorldFormatError as err:
                raise SampleFormatError(f"in {header}: {err}") from None
            pos = end
        pair += 1
    try:
        program = parse(program_text) if program_text else None
    except ValueError:
        program = None
    return Sample(np.stack(inputs), np.stack(outputs), program_text, program)
