"""Probing the model's states for program semantics (docs/protocol.md §6-7).

- `labels`: semantic-state labels from replaying a program (NumPy only);
- `traces`: trace datasets, one row per generated action (decoding + labels, cached on disk);
- `probes`: linear / MLP probes with their controls, `semantic_content`;
- `analysis`: regressions across checkpoints, future-state baselines, length test, perplexity.

Importing this package loads only `labels`; the rest is imported on first use.
"""

from importlib import import_module

from .labels import (
    ALL_LABELS,
    LABEL_SETS,
    MISSING,
    OFFSETS,
    V1_LABELS,
    V3_LABELS,
    label_column,
    step_labels,
    trajectory_labels,
    v1_labels,
)

_LAZY = {
    "build_trace_dataset": "traces",
    "trace_features": "traces",
    "fingerprint_model": "traces",
    "PROBES": "probes",
    "fit_predict": "probes",
    "make_probe": "probes",
    "probe_report": "probes",
    "score_task": "probes",
    "semantic_content": "probes",
    "best_future_classifier": "analysis",
    "length_test": "analysis",
    "probe_future_given_current_correct": "analysis",
    "program_perplexity": "analysis",
    "regress": "analysis",
}

__all__ = [
    "ALL_LABELS", "LABEL_SETS", "MISSING", "OFFSETS", "V1_LABELS", "V3_LABELS", "label_column",
    "step_labels", "trajectory_labels", "v1_labels", *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
