"""Errors for users, and the one place that turns them into a one-line message and an exit status.

Every console entry point (`karel-hf ...`, `karel-hf train` / scripts/train.py, `karel-hf
reproduce`) runs its work through `run_main`, which maps what it raises to one line on stderr,
`<prog>: error: <what is wrong and how to fix it>`, and an exit status:

- 2, a usage error: the command line is wrong (an unknown flag, a bad value, flags that do not fit
  together). Raised as `UsageError` (a ValueError); argument parsers built on `StrictParsing`
  raise it instead of printing their usage and exiting.
- 1, a failure: the command line is fine but the work could not be done: a missing or malformed
  input file, an output path that is a file or cannot be written, a stage whose inputs do not
  exist yet. Raised as any other ValueError or as an OSError.
- 1, a bug (any other exception): one line naming the exception and the hint to rerun with
  `KAREL_HF_DEBUG=1`, which lets every exception through with its traceback.
- 130 on Ctrl-C.

Number flags are read as ASCII only (`StrictParsing`): Python's int() and float() also accept other
scripts' digits (`int("١٠") == 10`), which a command line should not.

Standard library only.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

DEBUG_ENV = "KAREL_HF_DEBUG"
USAGE_STATUS, FAILURE_STATUS, INTERRUPTED_STATUS = 2, 1, 130


class UsageError(ValueError):
    """The command line is wrong; the message names the flag or value and the fix (exit status 2)."""


def one_line(err: BaseException) -> str:
    """The message of an exception on one line (an OSError as `<reason>: <path>`)."""
    if isinstance(err, OSError) and err.strerror:
        paths = [str(p) for p in (err.filename, err.filename2) if p is not None]
        text = f"{err.strerror}: {' -> '.join(paths)}" if paths else err.strerror
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def run_main(prog: str, fn: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run `fn(argv)` and return its exit status; what it raises becomes one line on stderr (see the
    module docstring). With KAREL_HF_DEBUG set, exceptions propagate with their traceback."""
    debug = bool(os.environ.get(DEBUG_ENV))
    try:
        return fn(argv) or 0
    except SystemExit as err:  # argparse's --help (status 0), or code that exits with a message
        if err.code is None or isinstance(err.code, int):
            return err.code or 0
        if debug:
            raise
        print(f"{prog}: error: {' '.join(str(err.code).split())}", file=sys.stderr)
        return FAILURE_STATUS
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED_STATUS
    except UsageError as err:
        if debug:
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return USAGE_STATUS
    except (ValueError, OSError) as err:
        if debug:
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return FAILURE_STATUS
    except Exception as err:  # a bug: say so on one line, and how to see the traceback
        if debug:
            raise
        print(f"{prog}: internal error: {type(err).__name__}: {one_line(err)} (rerun with {DEBUG_ENV}=1 to see "
              "the traceback)", file=sys.stderr)
        return FAILURE_STATUS


def _ascii_number(kind: type) -> Callable[[str], int | float]:
    def convert(text: str):
        if not text.isascii():
            raise ValueError(f"not an ASCII number: {text!r}")
        return kind(text)

    convert.__name__ = kind.__name__  # argparse names the type in its message: "invalid int value"
    return convert


class StrictParsing:
    """Mixin for `argparse.ArgumentParser` subclasses: errors raise `UsageError` (one line, exit
    status 2, through `run_main`) instead of printing the usage and exiting, and `int`/`float` flags
    accept ASCII digits only. Subparsers made by `add_subparsers` inherit both."""

    usage_error: type[UsageError] = UsageError

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("type", int, _ascii_number(int))  # argument groups share this registry
        self.register("type", float, _ascii_number(float))

    def error(self, message: str):
        raise self.usage_error(message)


class ArgumentParser(StrictParsing, argparse.ArgumentParser):
    """`argparse.ArgumentParser` with `StrictParsing`."""
