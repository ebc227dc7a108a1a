"""The `karel-hf` console script: thin subcommands over the package's public functions.

Each subcommand lives in one `_cmd_*` function registered in `_build_parser`; heavy imports happen
inside the function so `karel-hf --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys


def _cmd_verify_corpus(args) -> int:
    from karel_hf.karel.corpus import verify_jsonl

    return verify_jsonl(args.path, extended=not args.straight_line_only)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="karel-hf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("verify-corpus", help="re-execute every program of a JSON-lines corpus on every input")
    p.add_argument("path", help="a corpus in the authors' JSON-lines format (code, input0..9, output0..9)")
    p.add_argument("--straight_line_only", action="store_true", help="reject programs with control flow")
    p.set_defaults(func=_cmd_verify_corpus)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
