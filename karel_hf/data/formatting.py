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
whole sample (the dataset builder writes every `text` with it). The tokenizer's `FastEncoder` and
the decoding grammar take their headers from here too.

Worlds are given either as `World`s or as view-code arrays (`World.view_codes`, what datasets
store); `parse_sample(format_sample(...))` gives back the same codes and program, and formatting
the parsed sample again gives back the same text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from karel_hf.karel.program import INDENT, PROGRAM_FOOTER, PROGRAM_HEADER, Program, format_program, parse
from karel_hf.karel.world import World, WorldFormatError, codes_to_words, words_to_codes

EXAMPLES_HEADER = "Examples:\n\n"
INPUT_WORD, OUTPUT_WORD = "Input", "Output"  # the grid headers: "Input0\n", "Output0\n", ...
CODE_HEADER = "\nCode:\n"
__all__ = [
    "CODE_HEADER", "EXAMPLES_HEADER", "INDENT", "INPUT_WORD", "OUTPUT_WORD", "PROGRAM_FOOTER", "PROGRAM_HEADER", "Sample", "SampleFormatError",
    "count_prompt_pairs", "format_prompt", "format_sample", "input_header", "output_header", "parse_sample",
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
