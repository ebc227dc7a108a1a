"""Metrics: plain functions (importable without `evaluate`) and one `evaluate` module per folder.

    >>> from karel_hf.metrics import load_metric
    >>> metric = load_metric("generation_accuracy")   # evaluate.load on the packaged folder  # doctest: +SKIP
    >>> probe = load_metric("semantic_probe")          # probe accuracy with its controls  # doctest: +SKIP

Each folder is a self-contained Space (`space.check_space`): its script imports only evaluate, the
packages its requirements.txt installs and the files beside it, which link to the pure karel_hf
modules it runs. `evaluate` is imported only inside `load_metric` (it takes seconds to import).
"""

from __future__ import annotations

from pathlib import Path

from .generation import accuracy_by_length, compute_generation_accuracy, constant_program_baseline, reference_to_json

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("generation_accuracy", "semantic_probe")


def metric_path(name: str) -> Path:
    """The folder of a packaged `evaluate` module (what a Hub Space would hold)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; expected one of {', '.join(METRIC_NAMES)}")
    return METRICS_DIR / name


def load_metric(name: str, **kwargs):
    """`evaluate.load` of a packaged metric folder (works offline, HF_HUB_OFFLINE=1)."""
    import evaluate

    return evaluate.load(str(metric_path(name)), **kwargs)


__all__ = [
    "METRIC_NAMES", "accuracy_by_length", "compute_generation_accuracy", "constant_program_baseline",
    "load_metric", "metric_path", "reference_to_json",
]
