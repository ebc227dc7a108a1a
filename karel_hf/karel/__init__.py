"""Pure Python + NumPy Karel: worlds, programs, the interpreter, alternative semantics, sampling.

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
