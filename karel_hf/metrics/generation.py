"""Generation accuracy as plain functions, importable without `evaluate` (docs/protocol.md §5).

They are defined in `karel_hf.karel.scoring` and re-exported here under the metrics package: they
live in the Karel core because the `generation_accuracy` metric Space ships that module beside its
script (`karel_hf.metrics.space`), which needs a module whose imports are its Karel siblings only.
"""

from karel_hf.karel.scoring import (
    CONSTANT_PROGRAM,
    LENGTH_KEY_PREFIX,
    Spec,
    accuracy_by_length,
    best_constant_program_baseline,
    compute_generation_accuracy,
    constant_program_baseline,
    load_reference,
    pairs_correct,
    parse_prediction,
    reference_to_json,
)

__all__ = [
    "CONSTANT_PROGRAM", "LENGTH_KEY_PREFIX", "Spec", "accuracy_by_length", "best_constant_program_baseline",
    "compute_generation_accuracy", "constant_program_baseline", "load_reference", "pairs_correct", "parse_prediction",
    "reference_to_json",
]
