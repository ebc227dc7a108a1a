"""Probing the model's states for program semantics (docs/protocol.md §6-7).

- `labels`: semantic-state labels from replaying a program, the row rule (NumPy only);
- `traces`: trace datasets, one row per action of a generated or teacher-forced program
  (model states + labels, cached on disk);
- `probes`: the probe core on arrays: linear / MLP probes, one family scored with its controls
  and conditional gains (NumPy, SciPy, scikit-learn only);
- `measure`: the same on trace datasets: `semantic_content` (row rule, prompt facts, budgets),
  v3, the intervention, the future-state analysis;
- `analysis`: regressions across checkpoints, future-state baselines, length test, perplexity.

Importing this package loads only `labels`; the rest is imported on first use.
"""

from importlib import import_module

from .labels import (
    ALL_LABELS,
    LABEL_SETS,
    MISSING,
    OFFSET_NAMES,
    OFFSETS,
    V1_LABELS,
    V3_LABELS,
    V3_TASKS,
    label_column,
    scored_rows,
    step_labels,
    trajectory_labels,
    v1_labels,
)

_LAZY = {
    "build_trace_dataset": "traces",
    "trace_features": "traces",
    "fingerprint_model": "traces",
    "PROBES": "probes",
    "CONTROLS": "probes",
    "fit_predict": "probes",
    "make_probe": "probes",
    "probe_report": "probes",
    "score_family": "probes",
    "semantic_content": "measure",
    "intervention": "measure",
    "future_analysis": "measure",
    "load_traces": "measure",
    "best_future_classifier": "analysis",
    "length_test": "analysis",
    "probe_future_given_current_correct": "analysis",
    "program_perplexity": "analysis",
    "regress": "analysis",
}

__all__ = [
    "ALL_LABELS", "LABEL_SETS", "MISSING", "OFFSET_NAMES", "OFFSETS", "V1_LABELS", "V3_LABELS", "V3_TASKS",
    "label_column", "scored_rows", "step_labels", "trajectory_labels", "v1_labels", *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
