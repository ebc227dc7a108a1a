"""What one generated corpus is: `CorpusConfig` (docs/protocol.md §1-2) and the limits it checks.

One config fixes how many programs, their lengths (action nodes, uniform over
`min_length..max_length`), the worlds (size, wall and marker ratios, input/output pairs per
program), the action weights, the language (straight-line or `extended` with if / ifelse / repeat /
while), the seed, and for program-disjoint splits which programs this split may draw
(`heldout_fraction`, `heldout_role`, `heldout_key`; karel_hf.karel.heldout), and for extended
corpora whether a program must need its control flow (`control_flow_pairs`). Every field is checked
when the config is made, and an error names the field and the fix.
`karel_hf.karel.sampling.generate` turns a config into examples.

Pure Python + NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .heldout import HELDOUT_ROLES, check_heldout_lengths
from .program import ACTIONS

# Largest values the int8 arrays can hold safely (markers grow by at most one per action).
MAX_PROGRAM_LENGTH = 100
MAX_GRID_SIDE = 64
# Extended programs: step budget (executed actions + evaluated conditions) of one run; programs
# that exhaust it on any input are resampled. The trace arrays of extended batches have
# EXTENDED_STEP_BUDGET + 1 columns.
EXTENDED_STEP_BUDGET = 100
# A program that breaks a corpus rule (a visible cell with more than 9 markers; for extended
# programs also an exhausted step budget, and with control_flow_pairs a straight-line solution; with
# held-out programs, one on the wrong side of the split) is drawn again, at most this many times.
MAX_ATTEMPTS = 1000


@dataclass(frozen=True)
class CorpusConfig:
    """One corpus: how many programs, their lengths, the worlds, the seed."""

    num_programs: int
    min_length: int = 1
    max_length: int = 10
    num_pairs: int = 10
    height: int = 8
    width: int = 8
    wall_ratio: float = 0.1
    marker_ratio: float = 0.1
    action_weights: tuple = (5, 3, 3, 2, 2)  # order = karel.program.ACTIONS
    extended: bool = False  # programs with if/ifelse/repeat/while
    seed: int = 0
    # Program-disjoint splits (karel_hf.karel.heldout): a program is held out iff
    # program_hash(heldout_key, actions) < heldout_fraction * 2^64. heldout_role "exclude" (a
    # training split) draws held-out programs again, "only" (an evaluation split) draws every other
    # program again, "none" keeps all.
    heldout_fraction: float = 0.0
    heldout_role: str = "none"
    heldout_key: int = 0
    # Extended corpora: > 0 keeps only programs whose first `control_flow_pairs` input/output pairs
    # no straight-line program of 1..max_length actions solves (karel_hf.karel.compiled.
    # straight_line_solves): on those pairs the program's control flow is needed. 0: no such rule.
    control_flow_pairs: int = 0

    def __post_init__(self):
        _check_int("num_programs", self.num_programs, 1, None, "use a positive number of programs")
        _check_int("min_length", self.min_length, 1, MAX_PROGRAM_LENGTH, "programs need at least one action")
        _check_int("max_length", self.max_length, self.min_length, MAX_PROGRAM_LENGTH,
                   f"use min_length <= max_length <= {MAX_PROGRAM_LENGTH}")
        _check_int("num_pairs", self.num_pairs, 1, 1000, "use 1..1000 input/output pairs")
        for name in ("height", "width"):
            _check_int(name, getattr(self, name), 3, MAX_GRID_SIDE,
                       f"the grid (border included) must be 3..{MAX_GRID_SIDE} cells")
        for name in ("wall_ratio", "marker_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"CorpusConfig.{name} must be a probability in [0, 1], got {value!r}")
        weights = tuple(self.action_weights) if isinstance(self.action_weights, (list, tuple, np.ndarray)) else None
        if (
            weights is None
            or len(weights) != len(ACTIONS)
            or any(isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) for w in weights)
            or any(not np.isfinite(w) or w < 0 for w in weights)
            or sum(weights) <= 0
        ):
            raise ValueError(
                f"CorpusConfig.action_weights must be {len(ACTIONS)} non-negative numbers with a positive sum, "
                f"one per action in the order {ACTIONS}; got {self.action_weights!r}"
            )
        object.__setattr__(self, "action_weights", tuple(weights))
        if not isinstance(self.extended, bool):
            raise ValueError(f"CorpusConfig.extended must be True or False, got {self.extended!r}")
        _check_int("seed", self.seed, 0, 2**63 - 1, "use a non-negative integer seed")
        value = self.heldout_fraction
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ValueError(f"CorpusConfig.heldout_fraction must be in [0, 1), got {value!r}")
        if self.heldout_role not in HELDOUT_ROLES:
            raise ValueError(f"CorpusConfig.heldout_role must be one of {HELDOUT_ROLES}, got {self.heldout_role!r}")
        if self.heldout_role != "none" and self.heldout_fraction == 0.0:
            raise ValueError(f"CorpusConfig.heldout_role={self.heldout_role!r} needs heldout_fraction > 0")
        _check_int("heldout_key", self.heldout_key, 0, 2**63 - 1, "use a non-negative integer key")
        if not self.extended:  # extended lengths hold too many programs (control flow) for a side to be empty
            try:
                check_heldout_lengths(self.heldout_key, self.heldout_fraction, self.heldout_role, self.action_weights,
                                      self.min_length, self.max_length)
            except ValueError as err:
                raise ValueError(f"CorpusConfig.{err}") from None
        _check_int("control_flow_pairs", self.control_flow_pairs, 0, self.num_pairs,
                   "use 0 (no rule) or a number of pairs up to num_pairs")
        if self.control_flow_pairs and not self.extended:
            raise ValueError("CorpusConfig.control_flow_pairs needs extended=True: a straight-line program always "
                             "has a straight-line solution, itself")

    @property
    def trace_steps(self) -> int:
        """T: the trace arrays hold T + 1 columns."""
        return EXTENDED_STEP_BUDGET if self.extended else self.max_length


def _check_int(name, value, low, high, fix):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"CorpusConfig.{name} must be an integer, got {value!r}; {fix}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"CorpusConfig.{name} must be {bounds}, got {value}; {fix}")
