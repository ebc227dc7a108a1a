"""Probe core: classifiers from model states to program-state labels, scored with their controls.

Array-level and self-contained: NumPy, SciPy and scikit-learn only, no karel_hf import (the
`semantic_probe` evaluate module ships this file as is). Follows docs/protocol.md §6-6b.

Probes (`PROBES`): `linear` (the paper's v1: standardised features, then multinomial logistic
regression, as Othello-GPT's linear probe), `mlp1` and `mlp2` (v3: an MLP with 1 or 2 hidden
layers). Everything is seeded.

`score_family` scores ONE probe family at ONE offset: states (rows, hidden) and labels (rows,
columns), the rows split by `train_mask`. A task is one label column, or several (`tasks`): a task
with several parts is right only when every part is (one probe per part; the authors' v3). Beside
`semantic_content` (mean test accuracy over tasks) it reports, on the same rows with the same
probe recipe:

- `unobserved`: the accuracy on test rows whose label differs from both the initial and the
  output label (what the prompt prints);
- `controls`: `initial_glyph` (predict the initial label), `output_glyph` (predict the output
  grid's label), `prompt_only` (the probe on `prompt_facts`: what the prompt gives away, best as
  `joint_one_hot` of the facts, one column per combination, so that a linear probe on them is a
  smoothed lookup table and misses no interaction), `code_position` (the probe on
  `code_states`, the state before the first program token), `shuffled` (the probe on the states
  with permuted training labels);
- `margin` = semantic_content - the strongest control;
- `conditional_gain` (conditional probing, Hewitt et al. 2021): accuracy of the probe on
  [states, prompt_facts] minus the probe on prompt_facts, with a 95% bootstrap interval over test
  groups (specs) with the predictions held fixed; `conditional_gain_code`: [states, facts, code]
  minus [facts, code].

A fixed budget (`max_train_rows`, `max_test_rows`) subsamples the scored rows (seeded) so that
every checkpoint is scored on the same number of rows; the counts used are recorded.
`probe_report` is the same computation flattened to floats (what `semantic_probe` returns).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

MISSING = -1  # a label that does not exist (e.g. a state beyond the program's end)
PROBES = ("linear", "mlp1", "mlp2")
CONTROLS = ("initial_glyph", "output_glyph", "prompt_only", "code_position", "shuffled")
GAINS = ("conditional_gain", "conditional_gain_code")
DEFAULT_MAX_ITER = {"linear": 200, "mlp1": 200, "mlp2": 200}
NUM_BOOTSTRAP = 1000


# ------------------------------------------------------------------------------- estimators
NEWTON_MAX_PARAMETERS = 512  # features x classes up to which the linear probe uses Newton-Cholesky


def make_probe(probe: str = "linear", *, seed: int = 0, max_iter: int | None = None, hidden_size: int = 256,
               num_features: int | None = None, num_classes: int | None = None):
    """A fresh sklearn pipeline: StandardScaler then the probe's classifier.

    The linear probe is L2-regularised (C = 1) multinomial logistic regression: a convex problem
    with one optimum, which two solvers reach at different speeds. Newton-Cholesky converges in a
    few iterations, but each solves a (features x classes)^2 system: it is used up to
    `NEWTON_MAX_PARAMETERS` parameters (e.g. a 128-wide state, 4 classes; measured ~2-10x faster
    than lbfgs there on trace sets), lbfgs beyond (states concatenated with prompt facts and code
    states: ~5-10x faster than Newton there).
    """
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; expected one of {PROBES}")
    max_iter = max_iter or DEFAULT_MAX_ITER[probe]
    if probe == "linear":
        size = (num_features or 0) * (num_classes or 0)
        solver = "newton-cholesky" if size <= NEWTON_MAX_PARAMETERS else "lbfgs"
        classifier = LogisticRegression(solver=solver, max_iter=max_iter if solver != "lbfgs" else max(max_iter, 500),
                                        random_state=seed)
    else:
        depth = int(probe[-1])
        classifier = MLPClassifier(hidden_layer_sizes=(hidden_size,) * depth, max_iter=max_iter, random_state=seed)
    return make_pipeline(StandardScaler(), classifier)


def fit_predict(train_x, train_y, test_x, *, probe: str = "linear", seed: int = 0, shuffle_labels: bool = False,
                **probe_kwargs) -> np.ndarray:
    """Fit a probe on (train_x, train_y) and predict test_x. Rows with a missing label (-1) are not
    trained on. `shuffle_labels` permutes the training labels first (the shuffled-label control)."""
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
    model = make_probe(probe, seed=seed, num_features=train_x.shape[1], num_classes=len(classes), **probe_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(train_x, train_y)
    return model.predict(test_x).astype(np.int64)


# ---------------------------------------------------------------------------------- helpers
def _nanmean(values) -> float:
    """Mean ignoring NaN (a task with no scored row); NaN when nothing is left."""
    values = np.asarray(list(values), dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def _subsample(candidates: np.ndarray, budget: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices: all `candidates`, or a seeded sample of `budget` of them."""
    if budget is None or len(candidates) <= budget:
        return candidates
    return np.sort(rng.choice(candidates, size=budget, replace=False))


def bootstrap_difference(correct_a, correct_b, valid, groups, *, num_resamples: int = NUM_BOOTSTRAP,
                         seed: int = 0) -> dict:
    """Mean-over-tasks accuracy of predictor A minus predictor B, with a 95% bootstrap interval.

    `correct_a`, `correct_b`: (tasks, rows) bools (is the prediction right), or per-row scores
    (the sum of several predictors' hits, for a difference of differences); `valid`: (tasks, rows)
    bools (is the row scored for the task); `groups` (rows,): the resampling unit (a spec). Predictions are fixed;
    groups are resampled with replacement (multinomial weights, `num_resamples` times, seeded).
    Returns {"value", "low", "high"} (NaN when no row is scored).

    >>> ok = np.array([[True, True, False, True]]); no = np.array([[False, True, False, False]])
    >>> r = bootstrap_difference(ok, no, np.ones((1, 4), bool), [0, 1, 2, 3], num_resamples=200)
    >>> r["value"], r["low"] <= r["value"] <= r["high"]
    (0.5, True)
    """
    correct_a, correct_b = (np.atleast_2d(np.asarray(v, dtype=float)) for v in (correct_a, correct_b))
    valid = np.atleast_2d(np.asarray(valid, dtype=bool))
    _, index = np.unique(np.asarray(groups), return_inverse=True)
    num_groups = int(index.max()) + 1 if index.size else 0
    nan = {"value": float("nan"), "low": float("nan"), "high": float("nan")}
    if num_groups == 0 or not valid.any():
        return nan

    def per_group(values):  # (groups, tasks) counts
        return np.stack([np.bincount(index, weights=np.where(m, v, 0.0), minlength=num_groups)
                         for v, m in zip(values, valid)], axis=1)

    hits_a, hits_b, counts = per_group(correct_a), per_group(correct_b), per_group(valid)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.nanmean(hits_a.sum(0) / counts.sum(0) - hits_b.sum(0) / counts.sum(0))
        weights = np.random.default_rng(seed).multinomial(num_groups, np.full(num_groups, 1.0 / num_groups),
                                                          size=num_resamples).astype(float)  # (resamples, groups)
        n = weights @ counts  # (resamples, tasks)
        diff = (weights @ hits_a - weights @ hits_b) / n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without rows for a task: NaN, skipped
        diff = np.nanmean(diff, axis=1)
    diff = diff[~np.isnan(diff)]
    if not len(diff):
        return nan
    low, high = np.percentile(diff, [2.5, 97.5])
    return {"value": float(value), "low": float(low), "high": float(high)}


def joint_one_hot(*facts) -> np.ndarray:
    """(rows, combinations) float32: one column per distinct combination of the integer `facts`
    (each (rows,)) that occurs. A linear probe on it is a smoothed lookup table of the facts: the
    best any function of them does, interactions included (e.g. the net rotation output - initial,
    which a probe on side-by-side one-hots cannot read, and a hidden state could then "add").

    >>> joint_one_hot([0, 1, 0, 1], [2, 2, 2, 3])
    array([[1., 0., 0.],
           [0., 1., 0.],
           [1., 0., 0.],
           [0., 0., 1.]], dtype=float32)
    """
    keys = np.stack([np.asarray(f, dtype=np.int64).reshape(-1) for f in facts], axis=1)
    if not len(keys):
        return np.zeros((0, 0), dtype=np.float32)
    _, index = np.unique(keys, axis=0, return_inverse=True)
    index = np.asarray(index).reshape(-1)
    out = np.zeros((len(keys), int(index.max()) + 1), dtype=np.float32)
    out[np.arange(len(keys)), index] = 1.0
    return out


def checked_array(values, name: str, kind: str) -> np.ndarray:
    """`values` as an array of `kind` ("float": finite numbers; "label": integers >= -1; "bool":
    booleans or 0/1), else a ValueError naming `name`: never a silent cast (1.7 -> 1, "no" -> True)."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise ValueError(f"{name}: not a rectangular array ({' '.join(str(err).split())})") from None
    if kind == "float":
        if array.dtype.kind not in "biuf" or (array.size and not np.isfinite(array.astype(np.float64)).all()):
            raise ValueError(f"{name}: expected finite numbers, got {_describe(array)}")
        return array.astype(np.float32)
    if kind == "bool":
        if array.dtype.kind == "b":
            return array
        if array.dtype.kind in "iu" and np.isin(array, (0, 1)).all():
            return array.astype(bool)
        raise ValueError(f"{name}: expected booleans (True = a training row), got {_describe(array)}")
    if array.dtype.kind == "f" and array.size and np.isfinite(array).all() and (array == np.round(array)).all():
        array = array.astype(np.int64)  # integral floats (e.g. through a float feature) are labels
    if array.dtype.kind not in "iu" or (array.size and array.min() < MISSING):
        raise ValueError(f"{name}: expected integer labels >= 0 ({MISSING} = missing), got {_describe(array)}")
    return array.astype(np.int64)


def _describe(array: np.ndarray) -> str:
    sample = array.reshape(-1)[:3].tolist()
    return f"dtype {array.dtype}, shape {array.shape}, starting {sample}"


def _as_2d(values, rows: int, name: str, kind: str) -> np.ndarray | None:
    if values is None:
        return None
    values = checked_array(values, name, kind)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or len(values) != rows:
        raise ValueError(f"{name} must have one row per state ({rows}), got shape {values.shape}")
    return values


def _check_int(name: str, value, low: int, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}{' or None' if allow_none else ''}, got {value!r}")


# ------------------------------------------------------------------------------------ score
def score_family(
    states,
    labels,
    train_mask,
    *,
    groups=None,
    tasks: Mapping[str, Sequence[int]] | None = None,
    task_names: Sequence[str] | None = None,
    prompt_facts=None,
    code_states=None,
    initial_labels=None,
    output_labels=None,
    steps=None,
    probe: str = "linear",
    seed: int = 0,
    controls: bool | Sequence[str] = True,
    max_train_rows: int | None = None,
    max_test_rows: int | None = None,
    num_bootstrap: int = NUM_BOOTSTRAP,
    num_classes: int | None = None,
    return_predictions: bool = False,
    **probe_kwargs,
) -> dict:
    """Score one probe family at one offset, with its controls (see the module docstring).

    `states` (rows, hidden) floats; `labels` (rows,) or (rows, columns) ints, -1 = missing (not
    trained on, not scored); `train_mask` (rows,) bools, True = a training row, False = a test row.
    A row is used when it has a label in at least one column. Optional, aligned with the rows:
    `groups` (spec id per row: the bootstrap unit; default one group per row), `prompt_facts`
    ((rows, f), shared by every label column, or a list with one (rows, f_c) array per label
    column, e.g. `joint_one_hot(initial_c, output_c, k, n)`), `code_states` (rows, hidden), `initial_labels` and `output_labels` (shaped like
    `labels`), `steps` (program step k per row). `tasks` maps a task name to its label columns (a
    joint task is right only when every part is); default: one task per column, named by
    `task_names` (default `task_<c>`). `num_classes` (for the uniform chance level): default, the
    classes seen. `controls`: True (all of `CONTROLS` and `GAINS`), False (the probe alone), or the
    names to compute (each fitted control or gain costs one or two more fits per label column).

    Returns a dict: `semantic_content`, `unobserved`, `controls` ({name: accuracy} for `CONTROLS`;
    NaN when its input is not given or `controls` is False), `margin`, `conditional_gain` and
    `conditional_gain_code` ({value, low, high}), `chance` ({uniform, majority}), `per_task`,
    `per_step`, `num_train`, `num_test`, `num_unobserved`, `budget` ({max_train_rows, max_test_rows,
    met}), and with `return_predictions` `test_index` (positions of the test rows used, in the
    input's order), `predictions` and `targets` ({column: (test rows,) array}) and
    `control_predictions` ({"prompt_only": ..., "conditional": ...}, each {column: (test rows,)
    array}: the prompt-only probe's and the probe on [states, prompt_facts]'s, when fitted; -1
    where a column had no labelled training row).
    """
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; expected one of {PROBES}")
    states = checked_array(states, "states (predictions)", "float")
    if states.ndim != 2 or not states.size:
        raise ValueError(f"states (predictions) must be (rows, hidden) with at least one row and one feature, "
                         f"got shape {states.shape}")
    rows = len(states)
    labels = _as_2d(labels, rows, "labels (references)", "label")
    train_mask = checked_array(train_mask, "train_mask", "bool")
    if train_mask.shape != (rows,):
        raise ValueError(f"train_mask must have one entry per state ({rows}), got shape {train_mask.shape}")
    if train_mask.all() or not train_mask.any():
        raise ValueError("train_mask must mark some rows for training (True) and some for testing (False)")
    _check_int("num_classes", num_classes, 2)
    _check_int("max_train_rows", max_train_rows, 1)
    _check_int("max_test_rows", max_test_rows, 1)
    _check_int("num_bootstrap", num_bootstrap, 1, allow_none=False)
    _check_int("seed", seed, 0, allow_none=False)
    if num_classes is not None:
        seen = np.unique(labels[labels != MISSING])
        if len(seen) > num_classes or (len(seen) and seen.max() >= num_classes):
            raise ValueError(f"num_classes {num_classes} does not cover the labels (classes {seen.tolist()[:10]}); "
                             "labels must lie in 0..num_classes-1")
    columns = labels.shape[1]
    if tasks is None:
        if task_names is not None and (isinstance(task_names, str) or not all(isinstance(n, str) for n in task_names)):
            raise ValueError(f"task_names must be a list of str, one per label column, got {task_names!r}")
        names = list(task_names) if task_names is not None else [f"task_{c}" for c in range(columns)]
        if len(names) != columns or len(set(names)) != len(names):
            raise ValueError(f"task_names needs one distinct name per label column ({columns}), got {names}")
        tasks = {name: (c,) for c, name in enumerate(names)}
    if not isinstance(tasks, Mapping) or not tasks:
        raise ValueError(f"tasks must map a task name to its label columns, got {tasks!r}")
    try:
        tasks = {name: tuple(checked_array(parts, f"tasks[{name!r}]", "label").reshape(-1).tolist())
                 for name, parts in tasks.items()}
    except ValueError as err:
        raise ValueError(f"tasks must map a task name to a list of label column indices: {err}") from None
    if any(not parts for parts in tasks.values()) or any(not 0 <= c < columns for parts in tasks.values() for c in parts):
        raise ValueError(f"tasks must name label columns in 0..{columns - 1}, at least one per task: {tasks}")
    if prompt_facts is None:
        facts = None
    elif (isinstance(prompt_facts, (list, tuple)) and len(prompt_facts) and np.ndim(prompt_facts[0]) == 2) \
            or np.ndim(prompt_facts) == 3:  # one (rows, f) block per label column
        if len(prompt_facts) != columns:
            raise ValueError(f"prompt_facts: one (rows, f) block per label column ({columns}) or one shared block, "
                             f"got {len(prompt_facts)}")
        facts = [_as_2d(f, rows, "prompt_facts", "float") for f in prompt_facts]
    else:
        facts = [_as_2d(prompt_facts, rows, "prompt_facts", "float")] * columns  # the same object: stacked once
    code = _as_2d(code_states, rows, "code_states", "float")
    initial = _as_2d(initial_labels, rows, "initial_labels", "label")
    output = _as_2d(output_labels, rows, "output_labels", "label")
    for name, values in (("initial_labels", initial), ("output_labels", output)):
        if values is not None and values.shape != labels.shape:
            raise ValueError(f"{name} must be shaped like labels {labels.shape}, got {values.shape}")
    if isinstance(controls, str):
        controls = (controls,)
    wanted = set(CONTROLS + GAINS) if controls is True else set(controls or ())
    unknown = wanted - set(CONTROLS + GAINS)
    if unknown:
        raise ValueError(f"unknown control(s) {sorted(unknown)}; expected names from {CONTROLS + GAINS}")
    groups = np.arange(rows) if groups is None else np.asarray(groups)
    if groups.shape != (rows,):
        raise ValueError(f"groups must have one entry per state ({rows}), got shape {groups.shape}")
    if steps is not None:
        steps = checked_array(steps, "steps", "label")
        if steps.shape != (rows,):
            raise ValueError(f"steps must have one program step per state ({rows}), got shape {steps.shape}")

    # --- rows: the scored ones, then the fixed budget (seeded)
    labelled = (labels != MISSING).any(axis=1)
    rng = np.random.default_rng(seed)
    train_rows = _subsample(np.flatnonzero(train_mask & labelled), max_train_rows, rng)
    test_rows = _subsample(np.flatnonzero(~train_mask & labelled), max_test_rows, rng)
    budget = {
        "max_train_rows": max_train_rows,
        "max_test_rows": max_test_rows,
        "met": bool((max_train_rows is None or len(train_rows) >= max_train_rows)
                    and (max_test_rows is None or len(test_rows) >= max_test_rows)),
    }
    y_train, y_test = labels[train_rows], labels[test_rows]

    def predict(*blocks, shuffle=False) -> list[np.ndarray | None]:
        """Predictions per label column on the test rows (None: no labelled training row) of a probe
        on the blocks side by side; a block is one (rows, f) array or a list of one per column."""
        out, stacked = [], {}
        for c in range(columns):
            if not (y_train[:, c] != MISSING).any() or not len(test_rows):
                out.append(None)
                continue
            parts = [b[c] if isinstance(b, list) else b for b in blocks]
            key = tuple(id(p) for p in parts)
            if key not in stacked:  # shared blocks are stacked (and sliced) once
                features = parts[0] if len(parts) == 1 else np.hstack(parts)
                stacked[key] = (features[train_rows], features[test_rows])
            train_x, test_x = stacked[key]
            out.append(fit_predict(train_x, y_train[:, c], test_x, probe=probe, seed=seed, shuffle_labels=shuffle,
                                   **probe_kwargs))
        return out

    valid = np.stack([(y_test[:, list(parts)] != MISSING).all(axis=1) for parts in tasks.values()])  # (tasks, test)

    def correct(predictions) -> np.ndarray | None:
        """(tasks, test rows) bools; a row of NaN-able tasks is all False where a part was not fitted."""
        if predictions is None:
            return None
        table = np.stack([np.zeros(len(test_rows), dtype=bool) if predictions[c] is None
                          else predictions[c] == y_test[:, c] for c in range(columns)], axis=1)
        return np.stack([table[:, list(parts)].all(axis=1) for parts in tasks.values()])

    fitted = np.array([all((y_train[:, c] != MISSING).any() for c in parts) for parts in tasks.values()])

    def accuracy(hits, rows_mask=None) -> np.ndarray:
        """Per-task accuracy (NaN: no scored row, or a part without training rows)."""
        if hits is None:
            return np.full(len(tasks), np.nan)
        mask = valid if rows_mask is None else valid & rows_mask
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = (hits & mask).sum(1) / mask.sum(1)
        return np.where(fitted & (mask.sum(1) > 0), acc, np.nan)

    main_predictions = predict(states)
    main = correct(main_predictions)
    per_task_acc = accuracy(main)
    names = list(tasks)
    result: dict = {
        "semantic_content": _nanmean(per_task_acc),
        "per_task": {name: float(a) for name, a in zip(names, per_task_acc)},
        "per_step": {},
        "num_train": int(len(train_rows)),
        "num_test": int(len(test_rows)),
        "budget": budget,
    }
    if steps is not None:
        test_steps = steps[test_rows]
        for k in np.unique(test_steps):
            result["per_step"][int(k)] = _nanmean(accuracy(main, test_steps[None, :] == k))

    # chance: uniform (1 / classes, a product over a joint task's parts) and the majority class
    seen = [np.union1d(y_train[:, c], y_test[:, c]) for c in range(columns)]
    sizes = [num_classes or max(len(s[s != MISSING]), 1) for s in seen]
    majority = []
    for c in range(columns):
        known = y_train[:, c][y_train[:, c] != MISSING]
        values, counts = np.unique(known, return_counts=True) if len(known) else (np.array([MISSING]), np.array([1]))
        majority.append(np.full(len(test_rows), values[np.argmax(counts)]))
    result["chance"] = {
        "uniform": _nanmean(math.prod(1.0 / sizes[c] for c in parts) for parts in tasks.values()),
        "majority": _nanmean(accuracy(correct(majority))),
    }

    nan_gain = {"value": float("nan"), "low": float("nan"), "high": float("nan")}
    control_values = dict.fromkeys(CONTROLS, float("nan"))
    result.update(unobserved=float("nan"), num_unobserved=0, conditional_gain=dict(nan_gain),
                  conditional_gain_code=dict(nan_gain))
    if initial is not None and output is not None:
        differs = np.stack([
            (y_test[:, list(p)] != initial[test_rows][:, list(p)]).any(axis=1)
            & (y_test[:, list(p)] != output[test_rows][:, list(p)]).any(axis=1)
            for p in tasks.values()
        ])
        result["unobserved"] = _nanmean(accuracy(main, differs))
        result["num_unobserved"] = int((differs & valid).any(axis=0).sum())
    test_groups = groups[test_rows]
    if initial is not None and "initial_glyph" in wanted:
        control_values["initial_glyph"] = _nanmean(accuracy(correct(list(initial[test_rows].T))))
    if output is not None and "output_glyph" in wanted:
        control_values["output_glyph"] = _nanmean(accuracy(correct(list(output[test_rows].T))))
    if "shuffled" in wanted:
        control_values["shuffled"] = _nanmean(accuracy(correct(predict(states, shuffle=True))))
    if code is not None and "code_position" in wanted:
        control_values["code_position"] = _nanmean(accuracy(correct(predict(code))))
    row_predictions = {}  # kept with return_predictions: per-row predictions of the fitted controls
    if facts is not None and wanted & {"prompt_only", "conditional_gain"}:
        row_predictions["prompt_only"] = predict(facts)
        facts_hits = correct(row_predictions["prompt_only"])
        if "prompt_only" in wanted:
            control_values["prompt_only"] = _nanmean(accuracy(facts_hits))
        if "conditional_gain" in wanted:
            row_predictions["conditional"] = predict(states, facts)
            both = correct(row_predictions["conditional"])
            result["conditional_gain"] = bootstrap_difference(both & fitted[:, None], facts_hits & fitted[:, None],
                                                              valid & fitted[:, None], test_groups,
                                                              num_resamples=num_bootstrap, seed=seed)
    if facts is not None and code is not None and "conditional_gain_code" in wanted:
        with_code = correct(predict(facts, code))
        all_three = correct(predict(states, facts, code))
        result["conditional_gain_code"] = bootstrap_difference(
            all_three & fitted[:, None], with_code & fitted[:, None], valid & fitted[:, None], test_groups,
            num_resamples=num_bootstrap, seed=seed)
    result["controls"] = control_values
    available = [v for v in control_values.values() if not math.isnan(v)]
    result["margin"] = result["semantic_content"] - max(available) if available else float("nan")
    result["strongest_control"] = (max((k for k in CONTROLS if not math.isnan(control_values[k])),
                                       key=control_values.get) if available else None)
    if return_predictions:
        def by_column(predictions):
            return {c: (np.full(len(test_rows), MISSING, dtype=np.int64) if p is None else p)
                    for c, p in enumerate(predictions)}

        result["test_index"] = test_rows
        result["predictions"] = by_column(main_predictions)
        result["targets"] = {c: y_test[:, c] for c in range(columns)}
        result["control_predictions"] = {name: by_column(p) for name, p in row_predictions.items()}
    return result


# ---------------------------------------------------------------------------------- flatten
def flatten(result: dict) -> dict[str, float]:
    """A `score_family` result as flat floats (the `semantic_probe` keys): `semantic_content`,
    `unobserved`, `control_<name>`, `margin`, `conditional_gain` (+ `_low`, `_high`),
    `conditional_gain_code` (+ `_low`, `_high`), `chance_uniform`, `chance_majority`,
    `accuracy_<task>`, `accuracy_step_<k>`, `num_train`, `num_test`, `num_unobserved`,
    `budget_met` (1.0 / 0.0)."""
    out = {"semantic_content": result["semantic_content"], "unobserved": result["unobserved"]}
    out.update({f"control_{name}": value for name, value in result["controls"].items()})
    out["margin"] = result["margin"]
    for key in ("conditional_gain", "conditional_gain_code"):
        gain = result[key]
        out[key], out[f"{key}_low"], out[f"{key}_high"] = gain["value"], gain["low"], gain["high"]
    out["chance_uniform"], out["chance_majority"] = result["chance"]["uniform"], result["chance"]["majority"]
    out.update({f"accuracy_{name}": value for name, value in result["per_task"].items()})
    out.update({f"accuracy_step_{k}": value for k, value in result["per_step"].items()})
    for key in ("num_train", "num_test", "num_unobserved"):
        out[key] = result[key]
    out["budget_met"] = 1.0 if result["budget"]["met"] else 0.0
    return {key: float(value) for key, value in out.items()}


def probe_report(states, labels, train_mask, **kwargs) -> dict[str, float]:
    """`score_family` flattened to floats (`flatten`): what the `semantic_probe` evaluate module
    returns. Takes the same arguments as `score_family` (`return_predictions` excepted).

    >>> states = [[float(i % 4 == d) for d in range(4)] for i in range(40)]
    >>> report = probe_report(states, [i % 4 for i in range(40)], [i < 24 for i in range(40)])
    >>> report["semantic_content"], report["control_shuffled"] < 0.75, report["num_test"]
    (1.0, True, 16.0)
    """
    if kwargs.pop("return_predictions", False):
        raise ValueError("probe_report returns floats only; call score_family(..., return_predictions=True)")
    return flatten(score_family(states, labels, train_mask, **kwargs))
