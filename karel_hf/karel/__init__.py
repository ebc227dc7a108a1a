"""Pure Python + NumPy Karel: worlds, programs, the interpreter, alternative semantics, sampling.

- `world`: the grid and the robot, and their renderings (ASCII, cell words, view codes);
- `program`: the AST, the parser and the printers (with the "lines" printer's batched twin), and the
  flat one-code-per-line form of programs;
- `interpreter`: `execute` runs a parsed program on a world, with traces and a step budget;
- `scoring`: generation accuracy, whether predicted programs meet their specifications (the
  `generation_accuracy` metric Space ships it with `world`, `program` and `interpreter`);
- `batched`: the interpreter's batched twin, programs on many worlds at once (straight-line ones
  step by step, any program compiled to instructions);
- `semantics`: alternative meanings of the actions, as mappings on the AST;
- `corpus_config`, `randomness`, `world_sampling`, `extended_sampling`, `heldout`, `sampling`: the
  seeded corpus generator (what a corpus is, counter-based random streams, random worlds, random
  extended-language programs, held-out programs for program-disjoint splits, and `generate` /
  `iter_batches`);
- `corpus`: the authors' JSON-lines corpus format (read, verify, export).

Nothing here imports torch, transformers or datasets (a test checks it).
"""

from .interpreter import ExecutionResult, apply_action, evaluate_condition, execute
from .program import (
    ACTIONS,
    CONDITIONS,
    Action,
    Condition,
    If,
    KarelSyntaxError,
    Program,
    Repeat,
    While,
    format_program,
    parse,
)
from .semantics import ALTERNATIVE_SEMANTICS, SEMANTICS, Semantics, get_semantics
from .world import CELL_WORDS, DIRECTION_NAMES, World, WorldFormatError

__all__ = [
    "ACTIONS", "ALTERNATIVE_SEMANTICS", "CELL_WORDS", "CONDITIONS", "DIRECTION_NAMES", "SEMANTICS",
    "Action", "Condition", "ExecutionResult", "If", "KarelSyntaxError", "Program", "Repeat",
    "Semantics", "While", "World", "WorldFormatError", "apply_action", "evaluate_condition",
    "execute", "format_program", "get_semantics", "parse",
]
