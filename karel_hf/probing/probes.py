"""Probes: classifiers from model states to semantic labels, with their controls (docs/protocol.md §6-7).

A probe is fitted on traces of training specs and scored on traces of test specs, one probe per
(task, checkpoint). Probes (`PROBES`): `linear` (the paper's v1; standardised features then
multinomial logistic regression, as Othello-GPT's linear probe), `mlp1` and `mlp2` (v3; an MLP
with 1 or 2 hidden layers). Everything is seeded.

Each score comes with its controls:
- chance: `uniform` (1 / number of classes: 25% for directions) and `majority` (the most frequent
  training label);
- `shuffled`: the same probe trained on permuted training labels (it can only learn the labels'
  marginal distribution);
- the shortcut baseline `initial`: predict the state before any action (for directions: the
  robot's initial direction, which is visible in the prompt); docs/cpu_notes.md explains why it is reported.

`semantic_content` works on trace datasets (`karel_hf.probing.traces`); `probe_report` is the same
computation on plain arrays, which the `semantic_probe` evaluate module wraps.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from .labels import DIRECTION_LABELS, INITIAL, MISSING, NUM_SPEC_INPUTS, label_column, num_classes, v1_labels
from .labels import label_set as _label_set

PROBES = ("linear", "mlp1", "mlp2")
DEFAULT_MAX_ITER = {"linear": 200, "mlp1": 200, "mlp2": 200}


# ------------------------------------------------------------------------------- estimators
def make_probe(probe: str = "linear", *, seed: int = 0, max_iter: int | None = None, hidden_size: int = 256):
    """A fresh sklearn pipeline: StandardScaler then the probe's classifier."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; expected one of {PROBES}")
    max_iter = max_iter or DEFAULT_MAX_ITER[probe]
    if probe == "linear":
        # Newton-Cholesky converges in a few iterations on these (rows >> features) problems, about
        # 10x faster than lbfgs at the same accuracy on trace sets of a few thousand rows.
        classifier = LogisticRegression(solver="newton-cholesky", max_iter=max_iter, random_state=seed)
    else:
        depth = int(probe[-1])
        classifier = MLPClassifier(hidden_layer_sizes=(hidden_size,) * depth, max_iter=max_iter, random_state=seed)
    return make_pipeline(StandardScaler(), classifier)


def fit_predict(train_x, train_y, test_x, *, probe: str = "linear", seed: int = 0, shuffle_labels: bool = False, **probe_kwargs) -> np.ndarray:
    """Fit a probe on (train_x, train_y) and predict test_x. Rows with a missing label (-1) are not
    trained on. `shuffle_labels` permutes the training labels first (the shuffled-label control)."""
    from sklearn.exceptions import ConvergenceWarning

    train_x, train_y, test_x = np.asarray(train_x), np.asarray(train_y), np.asarray(test_x)
    keep = train_y != MISSING
    train_x, train_y = train_x[keep], train_y[keep]
    if len(train_y) == 0:
        raise ValueError("no training rows with a label: is the offset beyond every trace's length?")
    if shuffle_labels:
        train_y = np.random.default_rng(seed).permutation(train_y)
    classes = np.unique(train_y)
    if len(classes) == 1:
        return np.full(len(test_x), classes[0], dtype=np.int64)
    model = make_probe(probe, seed=seed, **probe_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(train_x, train_y)
    return model.predict(test_x).astype(np.int64)


def _mean(values) -> float:
    """Mean ignoring NaN (a task with no labelled test rows); NaN when nothing is left."""
    values = np.asarray(list(values), dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def _accuracy(predictions, targets) -> float:
    valid = targets != MISSING
    return float(np.mean(predictions[valid] == targets[valid])) if valid.any() else float("nan")


def score_task(
    train_x,
    train_y,
    test_x,
    test_y,
    *,
    probe: str = "linear",
    seed: int = 0,
    controls: bool = True,
    test_steps=None,
    test_shortcut=None,
    num_classes: int | None = None,
    **probe_kwargs,
) -> dict:
    """Fit one probe and score it on the test rows whose label is not missing.

    With no labelled training row (an offset beyond every trace) the accuracies are NaN and the
    predictions all `MISSING`, so a sweep goes on past a checkpoint whose programs are all short.

    Returns `accuracy`, `predictions` (for every test row), the controls `uniform`, `majority`,
    `shuffled` (with `controls`), `initial` (when `test_shortcut`, the s_0 labels, is given),
    `per_step` ({k: accuracy} when `test_steps` is given) and the row counts.
    """
    train_y, test_y = np.asarray(train_y, dtype=np.int64), np.asarray(test_y, dtype=np.int64)
    labelled = train_y[train_y != MISSING]
    if len(labelled) == 0:  # e.g. +1 when every generated program has one action: nothing to fit
        nan = float("nan")
        out = {"accuracy": nan, "predictions": np.full(len(test_y), MISSING, dtype=np.int64),
               "uniform": 1.0 / num_classes if num_classes else nan, "majority": nan,
               "num_train": 0, "num_test": int((test_y != MISSING).sum())}
        if controls:
            out["shuffled"] = nan
        if test_shortcut is not None:
            out["initial"] = _accuracy(np.asarray(test_shortcut, dtype=np.int64), test_y)
        if test_steps is not None:
            out["per_step"] = {}
        return out
    predictions = fit_predict(train_x, train_y, test_x, probe=probe, seed=seed, **probe_kwargs)
    values, counts = np.unique(labelled, return_counts=True)
    seen = np.union1d(values, test_y[test_y != MISSING])
    out = {
        "accuracy": _accuracy(predictions, test_y),
        "predictions": predictions,
        "uniform": 1.0 / (num_classes or len(seen)),
        "majority": _accuracy(np.full(len(test_y), values[np.argmax(counts)]), test_y),
        "num_train": int(len(labelled)),
        "num_test": int((test_y != MISSING).sum()),
    }
    if controls:
        shuffled = fit_predict(train_x, train_y, test_x, probe=probe, seed=seed, shuffle_labels=True, **probe_kwargs)
        out["shuffled"] = _accuracy(shuffled, test_y)
    if test_shortcut is not None:
        out["initial"] = _accuracy(np.asarray(test_shortcut, dtype=np.int64), test_y)
    if test_steps is not None:
        test_steps = np.asarray(test_steps)
        out["per_step"] = {
            int(k): _accuracy(predictions[test_steps == k], test_y[test_steps == k])
            for k in np.unique(test_steps[test_y != MISSING])
        }
    return out


# ------------------------------------------------------------------------------ on datasets
def _known_classes(label: str) -> int | None:
    """Classes of a label whatever the world size (directions, binary features); else None."""
    if label.startswith(("dx_", "dy_")) or label in ("x", "y"):
        return None  # depends on the grid: count the classes seen
    return num_classes(label)


def trace_columns(dataset, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns of a trace dataset as NumPy arrays (vectors as (rows, hidden) float32)."""
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"trace dataset lacks column(s) {missing}; rebuild it with the needed layers/semantics/offsets "
            "(build_trace_dataset(..., layers=..., semantics=..., offsets=...))"
        )
    if len(dataset) == 0:
        raise ValueError("the trace dataset is empty: no generated program produced trace rows")
    batch = dataset.with_format("numpy", columns=list(columns))[:]
    return {c: np.asarray(batch[c]) for c in columns}


def semantic_content(
    train,
    test,
    offset: int = 0,
    label_set: str = "v1",
    probe: str = "linear",
    semantics: str = "original",
    *,
    feature: str = "state",
    seed: int = 0,
    controls: bool = True,
    return_predictions: bool = False,
    num_prompt_pairs: int = NUM_SPEC_INPUTS,
    **probe_kwargs,
) -> dict:
    """Fit one probe per task of `label_set` on `train` traces; score on `test` traces.

    For "v1" the tasks are the directions in the spec inputs the prompt showed (`num_prompt_pairs`,
    at most 5: `labels.v1_labels`).

    Returns `semantic_content` (mean test accuracy over the tasks; for v1 the paper's "semantic
    content"), `per_task` and `per_input` (the `direction_<i>` tasks) accuracies, `per_step` (mean
    over tasks at each step k), `chance` ({"uniform", "majority"}), `shuffled` (shuffled-label
    control), `initial` (the s_0 shortcut) and `initial_direction` (the same over the direction
    tasks), each also per task, plus the setting and row counts. With `return_predictions`,
    `predictions` and `targets` hold {task: (test rows,) array} (-1 = missing target).
    """
    tasks = v1_labels(num_prompt_pairs) if label_set == "v1" else _label_set(label_set)
    target_cols = {t: label_column(t, offset, semantics) for t in tasks}
    shortcut_cols = {t: label_column(t, INITIAL, semantics) for t in tasks}
    tr = trace_columns(train, [feature, *target_cols.values()])
    te = trace_columns(test, [feature, "step", *target_cols.values(), *shortcut_cols.values()])
    scores = {
        t: score_task(
            tr[feature], tr[target_cols[t]], te[feature], te[target_cols[t]],
            probe=probe, seed=seed, controls=controls, test_steps=te["step"],
            test_shortcut=te[shortcut_cols[t]], num_classes=_known_classes(t), **probe_kwargs,
        )
        for t in tasks
    }

    def mean(key, names=tasks):
        return _mean(scores[t][key] for t in names)

    steps = sorted({k for s in scores.values() for k in s["per_step"]})
    directions = [t for t in tasks if t in DIRECTION_LABELS]
    result = {
        "semantic_content": mean("accuracy"),
        "label_set": label_set,
        "offset": offset,
        "probe": probe,
        "semantics": semantics,
        "feature": feature,
        "per_task": {t: scores[t]["accuracy"] for t in tasks},
        "per_input": [scores[t]["accuracy"] for t in directions],
        "per_step": {k: _mean(s["per_step"].get(k, np.nan) for s in scores.values()) for k in steps},
        "chance": {"uniform": mean("uniform"), "majority": mean("majority")},
        "chance_per_task": {t: {"uniform": scores[t]["uniform"], "majority": scores[t]["majority"]} for t in tasks},
        "initial": mean("initial"),
        "initial_per_task": {t: scores[t]["initial"] for t in tasks},
        "initial_direction": mean("initial", directions) if directions else float("nan"),
        "num_train": len(train),
        "num_test": len(test),
        "num_test_labelled": int(np.mean([scores[t]["num_test"] for t in tasks])),
    }
    if controls:
        result["shuffled"] = mean("shuffled")
        result["shuffled_per_task"] = {t: scores[t]["shuffled"] for t in tasks}
    if return_predictions:
        result["predictions"] = {t: scores[t]["predictions"] for t in tasks}
        result["targets"] = {t: np.asarray(te[target_cols[t]], dtype=np.int64) for t in tasks}
    return result


# -------------------------------------------------------------------------- on plain arrays
def _offset_suffix(offset: int) -> str:
    return "" if offset == 0 else f"_next{offset}"


def probe_report(
    states,
    labels,
    train_mask,
    *,
    task_names: Sequence[str] | None = None,
    task_offsets: Sequence[int] | None = None,
    steps=None,
    shortcut=None,
    num_classes: int | None = None,
    probe: str = "linear",
    seed: int = 0,
    controls: bool = True,
) -> dict[str, float]:
    """Probe scores on plain arrays, flattened to floats (what `semantic_probe` returns).

    `states` (rows, hidden); `labels` (rows,) or (rows, tasks) ints, -1 = missing; `train_mask`
    (rows,) bool, True = train row, False = test row. `task_names` name the label columns
    (default task_0, ...), `task_offsets` give each task's offset (0 current, 1 = +1, 2 = +2);
    `steps` (rows,) adds a per-step breakdown; `shortcut` (same shape as labels) is scored as the
    `initial` baseline. Keys: `semantic_content` (mean accuracy over offset-0 tasks, or over all
    tasks when none has offset 0), `semantic_content_next<o>` per other offset, `accuracy_<task>`,
    `chance_uniform`, `chance_majority`, `shuffled_control`, `initial_baseline` (means over the
    same tasks as `semantic_content`; `*_next<o>` for other offsets), `accuracy_step_<k>`,
    `num_train`, `num_test`.
    """
    states = np.asarray(states, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim == 1:
        labels = labels[:, None]
    train_mask = np.asarray(train_mask, dtype=bool)
    rows, tasks = labels.shape
    if states.ndim != 2 or len(states) != rows or len(train_mask) != rows:
        raise ValueError(
            f"predictions (states) must be (rows, hidden) and references/train_mask have the same rows; got "
            f"{states.shape}, {labels.shape} and {train_mask.shape}"
        )
    if train_mask.all() or not train_mask.any():
        raise ValueError("train_mask must mark some rows for training (True) and some for testing (False)")
    names = list(task_names) if task_names is not None else [f"task_{t}" for t in range(tasks)]
    offsets = list(task_offsets) if task_offsets is not None else [0] * tasks
    if len(names) != tasks or len(offsets) != tasks:
        raise ValueError(f"task_names and task_offsets need one entry per label column ({tasks})")
    if shortcut is not None:
        shortcut = np.asarray(shortcut, dtype=np.int64).reshape(rows, tasks)
    test = ~train_mask
    test_steps = None if steps is None else np.asarray(steps)[test]
    scores = [
        score_task(
            states[train_mask], labels[train_mask, t], states[test], labels[test, t],
            probe=probe, seed=seed, controls=controls, test_steps=test_steps, num_classes=num_classes,
            test_shortcut=None if shortcut is None else shortcut[test, t],
        )
        for t in range(tasks)
    ]
    out = {}
    primary = [t for t in range(tasks) if offsets[t] == 0] or list(range(tasks))
    groups = [("", primary)] + [
        (_offset_suffix(o), [t for t in range(tasks) if offsets[t] == o]) for o in sorted(set(offsets) - {0})
    ]
    for suffix, members in groups:
        keys = {"semantic_content": "accuracy", "chance_uniform": "uniform", "chance_majority": "majority"}
        if controls:
            keys["shuffled_control"] = "shuffled"
        if shortcut is not None:
            keys["initial_baseline"] = "initial"
        for name, key in keys.items():
            out[f"{name}{suffix}"] = _mean(scores[t][key] for t in members)
        if steps is not None:
            for k in sorted({k for t in members for k in scores[t]["per_step"]}):
                out[f"accuracy_step_{k}{suffix}"] = _mean(scores[t]["per_step"].get(k, np.nan) for t in members)
    for t, name in enumerate(names):
        out[f"accuracy_{name}"] = scores[t]["accuracy"]
    out["num_train"] = float(train_mask.sum())
    out["num_test"] = float(test.sum())
    return out
