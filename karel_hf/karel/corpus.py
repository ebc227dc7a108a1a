"""Interop with the authors' JSON-lines corpus format (tests/data/reference/*.jsonl).

One JSON object per line: `input0..inputK` and `output0..outputK` (the whole world, border
included, as `World.to_ascii` writes it) and `code` (the program in the authors' layout,
`format_program(p, "reference")`), keys in that order.

- `read_jsonl` streams the records, with errors naming the line and the key;
- `verify_jsonl` re-executes every program on every input and compares the rendered worlds;
- `export_jsonl` writes a generated corpus (a `CorpusConfig`, streamed, or `ProgramBatch`es).

Pure Python + NumPy (+ tqdm for progress bars).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from karel_hf.utils import atomic_path

from .interpreter import execute
from .program import ACTIONS, KarelSyntaxError, Program, format_program, parse
from .corpus_config import CorpusConfig
from .sampling import ProgramBatch, iter_batches
from .world import (
    EMPTY_CODE,
    MARKER_CODE_OFFSET,
    MAX_VISIBLE_MARKERS,
    ROBOT_CHARS,
    ROBOT_CODE_OFFSET,
    WALL_CODE,
    World,
    WorldFormatError,
)

PROGRESS_MIN_BYTES = 1 << 20  # show a progress bar for files at least this large


class CorpusFormatError(ValueError):
    """A JSON-lines corpus does not follow the authors' format; the message names line and key."""


# -------------------------------------------------------------------------------------- reading
def _records(path) -> Iterator[tuple[int, int, dict]]:
    """(line number, bytes read, record) for every non-blank line, validated."""
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            line = raw.strip()
            if line:
                yield lineno, len(raw), _check_record(path, lineno, line)
            else:
                yield lineno, len(raw), None


def _check_record(path, lineno: int, line: bytes) -> dict:
    where = f"{path}, line {lineno}"
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorpusFormatError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(record, dict):
        raise CorpusFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if not isinstance(record.get("code"), str):
        problem = "is missing" if "code" not in record else "must be a string"
        raise CorpusFormatError(f"{where}: key 'code' {problem}")
    pairs = 0
    while f"input{pairs}" in record:
        pairs += 1
    if pairs == 0:
        raise CorpusFormatError(f"{where}: key 'input0' is missing (need input0..inputK and output0..outputK)")
    expected = {"code"} | {f"{kind}{k}" for kind in ("input", "output") for k in range(pairs)}
    missing, unexpected = sorted(expected - set(record)), sorted(set(record) - expected)
    if missing:
        raise CorpusFormatError(f"{where}: key {missing[0]!r} is missing (every inputK needs a matching outputK)")
    if unexpected:
        raise CorpusFormatError(f"{where}: unexpected key {unexpected[0]!r} (pairs are numbered 0..{pairs - 1} without gaps)")
    not_text = [key for key in sorted(expected) if not isinstance(record[key], str)]
    if not_text:
        raise CorpusFormatError(f"{where}: key {not_text[0]!r} must be a string (the world as ASCII rows)")
    return record


def read_jsonl(path) -> Iterator[dict]:
    """Stream the records of a corpus file (blank lines skipped); raises CorpusFormatError."""
    for _, _, record in _records(path):
        if record is not None:
            yield record


def num_pairs(record: dict) -> int:
    """Input/output pairs in a record."""
    return sum(1 for key in record if key.startswith("input"))


# ------------------------------------------------------------------------------------ verifying
def verify_jsonl(path, extended: bool = True, *, file=None) -> int:
    """Re-run every program on every input; print `M/N examples match`; 0 if all match, else 1.

    Each program is parsed once (with `extended=False` control flow is a syntax error). On a
    mismatch the first one is printed: line, pair, program, expected and actual output.
    """
    file = sys.stdout if file is None else file
    size = Path(path).stat().st_size
    matched = total = 0
    first_failure = None
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"verify {Path(path).name}",
              disable=size < PROGRESS_MIN_BYTES, file=sys.stderr) as bar:
        for lineno, nbytes, record in _records(path):
            bar.update(nbytes)
            if record is None:
                continue
            pairs = num_pairs(record)
            total += pairs
            try:
                program = parse(record["code"], extended=extended)
            except KarelSyntaxError as err:
                first_failure = first_failure or (lineno, 0, record, None, f"parse error: {err}")
                continue
            for k in range(pairs):
                expected = record[f"output{k}"]
                got = _run_ascii(program, record[f"input{k}"], path, lineno, k)
                if got == expected:
                    matched += 1
                elif first_failure is None:
                    first_failure = (lineno, k, record, expected, got)
    if total == 0:
        raise ValueError(f"{path}: no input/output pairs to verify (the corpus is empty)")
    print(f"{matched}/{total} examples match", file=file)
    if first_failure is not None:
        lineno, k, record, expected, got = first_failure
        print(f"first mismatch: line {lineno}, pair {k}\nprogram:\n{record['code']}", file=file)
        if expected is None:
            print(got, file=file)
        else:
            print(f"input{k}:\n{record[f'input{k}']}\nexpected output{k}:\n{expected}\ngot:\n{got}", file=file)
    return 0 if total > 0 and matched == total else 1


def _run_ascii(program: Program, text: str, path, lineno: int, k: int) -> str:
    """The output world's ASCII, or a description of why there is none."""
    try:
        world = World.from_ascii(text)
    except WorldFormatError as err:
        raise CorpusFormatError(f"{path}, line {lineno}: key 'input{k}' is not a world ({err})") from None
    result = execute(program, world)
    if not result.completed:
        return "(the run exhausted the interpreter's step budget)"
    try:
        return result.world.to_ascii()
    except WorldFormatError as err:
        return f"({err})"


# ------------------------------------------------------------------------------------ exporting
def _ascii_table() -> np.ndarray:
    """(number of view codes,) uint8: the ASCII character of each view code."""
    table = np.zeros(MARKER_CODE_OFFSET + MAX_VISIBLE_MARKERS, dtype=np.uint8)
    table[EMPTY_CODE], table[WALL_CODE] = ord("."), ord("#")
    for d, char in enumerate(ROBOT_CHARS):
        table[ROBOT_CODE_OFFSET + d] = ord(char)
    for k in range(1, MAX_VISIBLE_MARKERS + 1):
        table[MARKER_CODE_OFFSET + k - 1] = ord(str(k))
    return table


_ASCII = _ascii_table()


def codes_to_ascii(codes: np.ndarray) -> list[str]:
    """World.to_ascii of every (h, w) view in (M, h, w) codes, vectorised (the border is wall)."""
    codes = np.asarray(codes)
    m, h, w = codes.shape
    grid = np.full((m, h + 2, w + 3), ord("#"), dtype=np.uint8)  # each row ends with a newline
    grid[:, :, -1] = ord("\n")
    grid[:, 1:-1, 1:-2] = _ASCII[codes]
    text = grid.tobytes().decode("ascii")
    size = (h + 2) * (w + 3)
    return [text[i * size : (i + 1) * size - 1] for i in range(m)]


def _reference_code(text: str, actions: np.ndarray, length: int) -> str:
    """format_program(p, "reference") of a generated program ("lines" text plus its action codes)."""
    if text.count("\n") == length + 1:  # straight-line: the header, one line per action, "}"
        program = Program.from_actions(ACTIONS[a] for a in actions[:length])
    else:
        program = parse(text, extended=True)
    return format_program(program, "reference")


def batch_records(batch: ProgramBatch) -> Iterator[dict]:
    """The JSON-lines records of a batch, keys in the authors' order."""
    n, pairs = batch.inputs.shape[:2]
    shape = (n * pairs, *batch.inputs.shape[2:])
    inputs = codes_to_ascii(batch.inputs.reshape(shape))
    outputs = codes_to_ascii(batch.outputs.reshape(shape))
    for i in range(n):
        record = {f"input{k}": inputs[i * pairs + k] for k in range(pairs)}
        record.update({f"output{k}": outputs[i * pairs + k] for k in range(pairs)})
        record["code"] = _reference_code(batch.programs[i], batch.actions[i], int(batch.lengths[i]))
        yield record


def export_jsonl(config_or_batches: CorpusConfig | ProgramBatch | Iterable[ProgramBatch], path, *,
                 batch_size: int = 8192) -> int:
    """Write a corpus in the authors' JSON-lines format; returns the number of programs written.

    A `CorpusConfig` is generated and written batch by batch (never held at once). The file appears
    atomically: it is written to a temporary file beside `path` and renamed.
    """
    if isinstance(config_or_batches, CorpusConfig):
        batches = iter_batches(config_or_batches, batch_size=batch_size)
        total = config_or_batches.num_programs
    elif isinstance(config_or_batches, ProgramBatch):
        batches, total = [config_or_batches], len(config_or_batches)
    else:
        batches, total = config_or_batches, None
    path = Path(path)
    written = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="ascii", newline="\n") as handle, \
            tqdm(total=total, unit="programs", desc=f"write {path.name}", file=sys.stderr,
                 disable=total is None or total < 10_000) as bar:
        for batch in batches:
            if not isinstance(batch, ProgramBatch):
                raise TypeError(f"export_jsonl() takes a CorpusConfig or ProgramBatches, got {type(batch).__name__}")
            handle.writelines(json.dumps(record) + "\n" for record in batch_records(batch))
            written += len(batch)
            bar.update(len(batch))
    return written
