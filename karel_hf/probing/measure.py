"""Measurement on trace datasets: probe families with their controls, v3, the intervention, the
future-state analysis (docs/protocol.md §6-7, the rules of §6b).

A probe family is (trace family, offset): the probe is trained on traces of training specs and
scored on traces of test specs (two trace datasets, `karel_hf.probing.traces`, or their columns
as a {name: array} mapping from `load_traces`). For each family this module builds the arrays
that `probes.score_family` scores:

- rows: those passing the row rule at the offset (`labels.scored_rows`; `drop_last=True` by
  default: the label state is neither the input grid's s_0 nor the final state s_n);
- labels: v1, the direction in each spec input the prompt shows (`labels.v1_labels`); v3, the
  authors' 6 tasks (`labels.V3_TASKS`, a joint task right only when every part is);
- prompt facts, per label: what the prompt prints, plus position: the label's initial value (the
  input grid) and output value (the output grid), step k and program length n, as a joint one-hot
  (`probes.joint_one_hot`: one column per combination that occurs), so that the prompt-only probe
  is a smoothed lookup table of the facts. Side-by-side one-hots would miss interactions (the net
  rotation output - initial; a linear probe on them was ~9 points below the lookup table on the
  `cpu` corpus), which a hidden state that merely encodes them would then show as a "gain";
- the code-position states (`code_state`), the initial and output labels (`_initial`, `_output`)
  and the spec id of each row (`example_id`, the bootstrap unit).

`semantic_content` returns the family's score with its controls; `intervention` refits a fresh
probe on the labels of each alternative semantics (same states, same rows) and compares accuracies,
as the paper does; `conditional_intervention` compares what the state adds beyond the prompt facts
for each semantics (gains, not accuracies: §6b); `future_analysis` compares the +1/+2 probes with
the best function of the true current state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from karel_hf.karel.semantics import ALTERNATIVE_SEMANTICS, get_semantics

from .analysis import best_future_classifier, probe_future_given_current_correct
from .labels import (
    INITIAL, NUM_SPEC_INPUTS, OFFSET_NAMES, OUTPUT, V3_TASKS, label_column, scored_rows, v1_labels,
)
from .probes import MISSING, NUM_BOOTSTRAP, bootstrap_difference, joint_one_hot, score_family

KEY_COLUMNS = ("example_id", "step", "num_actions")
UNINFORMATIVE_BEST = 0.95  # best current -> future classifier at or above this: the comparison says nothing
UNINFORMATIVE_ROWS = 100  # fewer rows than this: the comparison says nothing


# ------------------------------------------------------------------------------------ tables
def load_traces(dataset, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """A trace dataset's columns as NumPy arrays (vectors as (rows, hidden) float32): load once,
    then score many families without re-reading the Arrow files. A mapping passes through."""
    if isinstance(dataset, Mapping):
        return dict(dataset) if columns is None else {c: dataset[c] for c in _check(dataset, columns)}
    columns = list(dataset.column_names) if columns is None else _check(dataset, columns)
    if len(dataset) == 0:
        raise ValueError("the trace dataset is empty: no program produced trace rows")
    batch = dataset.with_format("numpy", columns=columns)[:]
    return {c: np.asarray(batch[c]) for c in columns}


def _names(table) -> set[str]:
    return set(table.column_names) if hasattr(table, "column_names") else set(table)


def _check(table, columns) -> list[str]:
    names = _names(table)
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(
            f"trace dataset lacks column(s) {missing}; rebuild it with the needed layers/semantics/offsets "
            "(build_trace_dataset(..., layers=..., semantics=..., offsets=...))"
        )
    return list(dict.fromkeys(columns))


def prompt_facts(initial, output, steps, num_actions) -> list[np.ndarray]:
    """Per label column, (rows, combinations) float32: the joint one-hot of (initial label, output
    label, step k, length n) of each row (see the module docstring). `initial` and `output` are
    (rows, labels); build it on train and test rows together, so that their columns mean the same
    combinations."""
    initial, output = np.atleast_2d(np.asarray(initial).T).T, np.atleast_2d(np.asarray(output).T).T
    return [joint_one_hot(initial[:, c], output[:, c], steps, num_actions) for c in range(initial.shape[1])]


def label_tasks(label_set: str, num_prompt_pairs: int = NUM_SPEC_INPUTS) -> dict[str, tuple[str, ...]]:
    """The tasks a label set scores, each with its label columns: {"position": ("x", "y")}."""
    if label_set == "v1":
        return {t: (t,) for t in v1_labels(num_prompt_pairs)}
    if label_set == "v3":
        return dict(V3_TASKS)
    if label_set in V3_TASKS:  # one of the v3 tasks alone, e.g. "position" (x and y of spec input 0)
        return {label_set: V3_TASKS[label_set]}
    raise ValueError(f"unknown label set {label_set!r}; expected 'v1', 'v3' or one v3 task ({', '.join(V3_TASKS)})")


# -------------------------------------------------------------------------- semantic content
def semantic_content(
    train,
    test,
    offset: int = 0,
    label_set: str = "v1",
    probe: str = "linear",
    semantics: str = "original",
    *,
    feature: str = "state",
    controls: bool | Sequence[str] = True,
    drop_last: bool = True,
    max_train_rows: int | None = None,
    max_test_rows: int | None = None,
    seed: int = 0,
    num_bootstrap: int = NUM_BOOTSTRAP,
    num_prompt_pairs: int = NUM_SPEC_INPUTS,
    return_predictions: bool = False,
    given: Sequence[str] = (),
    **probe_kwargs,
) -> dict:
    """Probe `feature` (default: the layer-mean `state`) for the labels at `offset` under
    `semantics`, trained on `train` traces and scored on `test` traces (datasets or `load_traces`
    mappings), on the rows the row rule keeps (`drop_last`).

    `label_set` "v1": one task per direction of the spec inputs the prompt shows
    (`num_prompt_pairs`, at most 5); "v3": the authors' 6 tasks (original semantics only); the
    name of one v3 task (`labels.V3_TASKS`, e.g. "position"): that task alone, so that its controls
    and conditional gain are its own.
    `controls` adds the initial/output glyphs, the prompt-only, code-position and shuffled
    probes, `margin` and the conditional gains (`probes.score_family`); False fits the probe
    alone (the intervention); a list of names picks some (`probes.CONTROLS`, `probes.GAINS`).
    `max_train_rows` / `max_test_rows`: the fixed budget (a seeded subsample of the scored rows).
    `given`: trace columns (e.g. another semantics' labels, `swap__x_prev1`) whose joint one-hot is
    set beside every label's prompt facts, so that the conditional gain is the state's over the
    facts and these (`given_other` in benchmarks/emergence/probe_study.py); it needs `controls`.

    Returns `probes.score_family`'s dict plus `label_set`, `offset`, `family` (the offset's name),
    `semantics`, `given`, `probe`, `feature`, `drop_last`, `num_train_specs`, `num_test_specs` (specs with
    a scored row); with
    `return_predictions` also `test_rows` (positions in `test` of the scored test rows, the order
    of `predictions` and `targets`, which are keyed by label name) and `control_predictions`
    ({"prompt_only": ..., "conditional": ...} keyed by label name likewise, when the controls fit
    them; `probes.score_family`).
    """
    tasks = label_tasks(label_set, num_prompt_pairs)
    labels = list(dict.fromkeys(l for parts in tasks.values() for l in parts))
    target_cols = [label_column(l, offset, semantics) for l in labels]
    if semantics != "original" and label_set != "v1":
        if not set(target_cols) <= _names(train):
            raise ValueError(f"the traces carry no {label_set} labels under {semantics!r} (by default an alternative "
                             "semantics carries the direction labels only): use label_set='v1', or add the columns "
                             "with labels.step_labels(..., alternative_labels=...)")
    given = list(given)
    if given and not controls:
        raise ValueError("given columns are prompt facts: they need controls (e.g. ('prompt_only', 'conditional_gain'))")
    needed = [feature, *KEY_COLUMNS, *target_cols, *given]
    if controls:
        needed += ["code_state"]
        needed += [label_column(l, which) for l in labels for which in (INITIAL, OUTPUT)]
    tr, te = load_traces(train, needed), load_traces(test, needed)
    keep_tr = np.flatnonzero(scored_rows(tr["step"], tr["num_actions"], offset, drop_last))
    keep_te = np.flatnonzero(scored_rows(te["step"], te["num_actions"], offset, drop_last))

    def stack(get):
        return np.concatenate([get(tr)[keep_tr], get(te)[keep_te]])

    train_mask = np.r_[np.ones(len(keep_tr), dtype=bool), np.zeros(len(keep_te), dtype=bool)]
    states = stack(lambda t: np.asarray(t[feature], dtype=np.float32))
    targets = stack(lambda t: np.stack([t[c] for c in target_cols], axis=1).astype(np.int64))
    kwargs = {}
    if controls:
        initial = stack(lambda t: np.stack([t[label_column(l, INITIAL)] for l in labels], 1).astype(np.int64))
        output = stack(lambda t: np.stack([t[label_column(l, OUTPUT)] for l in labels], 1).astype(np.int64))
        facts = prompt_facts(initial, output, stack(lambda t: t["step"]), stack(lambda t: t["num_actions"]))
        if given:  # one block for all labels, beside each label's own facts
            extra = joint_one_hot(*(stack(lambda t, c=c: np.asarray(t[c])) for c in given))
            facts = [np.hstack([f, extra]) for f in facts]
        kwargs = dict(
            prompt_facts=facts,
            code_states=stack(lambda t: np.asarray(t["code_state"], dtype=np.float32)),
            initial_labels=initial,
            output_labels=output,
        )
    index = {l: c for c, l in enumerate(labels)}
    if not train_mask.any() or train_mask.all():  # no scored row on one side: nothing to fit or score
        result = _empty(tasks, len(keep_tr), len(keep_te), max_train_rows, max_test_rows)
    else:
        result = score_family(
            states, targets, train_mask,
            groups=stack(lambda t: np.asarray(t["example_id"])),
            tasks={name: [index[l] for l in parts] for name, parts in tasks.items()},
            steps=stack(lambda t: np.asarray(t["step"])),
            probe=probe, seed=seed, controls=controls, max_train_rows=max_train_rows, max_test_rows=max_test_rows,
            num_bootstrap=num_bootstrap, return_predictions=return_predictions, **kwargs, **probe_kwargs,
        )
    ids = stack(lambda t: np.asarray(t["example_id"]))
    result.update(
        label_set=label_set, offset=int(offset), family=OFFSET_NAMES.get(int(offset), str(offset)), semantics=semantics,
        given=given, probe=probe, feature=feature, drop_last=drop_last,
        num_train_specs=int(len(np.unique(ids[train_mask]))), num_test_specs=int(len(np.unique(ids[~train_mask]))),
    )
    if return_predictions:
        used = result.pop("test_index", np.zeros(0, dtype=np.int64)) - len(keep_tr)  # positions among the test rows
        result["test_rows"] = keep_te[used]
        result["predictions"] = {labels[c]: p for c, p in result.get("predictions", {}).items()}
        result["targets"] = {labels[c]: t for c, t in result.get("targets", {}).items()}
        result["control_predictions"] = {name: {labels[c]: p for c, p in by_column.items()}
                                         for name, by_column in result.get("control_predictions", {}).items()}
    else:
        for key in ("test_index", "predictions", "targets", "control_predictions"):
            result.pop(key, None)
    return result


def _empty(tasks, num_train, num_test, max_train_rows, max_test_rows) -> dict:
    """The result when one side has no scored row (e.g. +2 when no program has 4 actions)."""
    nan = float("nan")
    gain = {"value": nan, "low": nan, "high": nan}
    return {
        "semantic_content": nan, "per_task": dict.fromkeys(tasks, nan), "per_step": {},
        "num_train": num_train, "num_test": num_test,
        "budget": {"max_train_rows": max_train_rows, "max_test_rows": max_test_rows, "met": False},
        "chance": {"uniform": nan, "majority": nan}, "unobserved": nan, "num_unobserved": 0,
        "conditional_gain": dict(gain), "conditional_gain_code": dict(gain),
        "controls": dict.fromkeys(("initial_glyph", "output_glyph", "prompt_only", "code_position", "shuffled"), nan),
        "margin": nan, "strongest_control": None,
        "test_index": np.zeros(0, dtype=np.int64), "predictions": {}, "targets": {}, "control_predictions": {},
    }


# ------------------------------------------------------------------------------ intervention
def intervention(
    train,
    test,
    offset: int = 0,
    *,
    semantics: Sequence[str] = ALTERNATIVE_SEMANTICS,
    original: float | None = None,
    **kwargs,
) -> dict:
    """The intervention (docs/protocol.md §7): the same states and rows, the labels of each
    alternative semantics (the program re-executed under it), a fresh v1 probe each.

    `original` is the original semantics' score when already known (else it is fitted here).
    Returns {"accuracy": {"original": ..., <semantics>: ...}, "best_alternative",
    "original_minus_best_alternative", "determined_by_original" ({semantics: the best any function
    of the original label does at predicting the alternative label on the scored rows}),
    "num_rows", "uninformative"}. The comparison is `uninformative` when the best alternative's
    labels are >= 95% a function of the original ones (e.g. programs that never turn under either
    meaning: any probe that reads one reads the other) or fewer than 100 rows are scored.
    `kwargs` go to `semantic_content` (budgets, seed, ...).
    """
    kwargs = {**kwargs, "controls": False, "return_predictions": True}
    if original is None:
        original = semantic_content(train, test, offset, **kwargs)["semantic_content"]
    accuracy = {"original": float(original)}
    determined = {}
    done = {}  # one fit per distinct map (swap and authors0 are the same map)
    rows = np.zeros(0, dtype=np.int64)
    for name in semantics:
        key = tuple(sorted(get_semantics(name).mapping.items()))
        if key not in done:
            result = semantic_content(train, test, offset, semantics=name, **kwargs)
            rows = result["test_rows"]
            labels = list(result["targets"])
            table = load_traces(test, [label_column(l, offset) for l in labels])
            original_labels = {l: np.asarray(table[label_column(l, offset)])[rows] for l in labels}
            done[key] = (result["semantic_content"],
                         best_future_classifier(original_labels, result["targets"]) if len(rows) else float("nan"))
        accuracy[name], determined[name] = done[key]
    alternatives = {k: v for k, v in accuracy.items() if k != "original" and not np.isnan(v)}
    best = max(alternatives, key=alternatives.get) if alternatives else None
    return {
        "accuracy": accuracy,
        "best_alternative": best,
        "original_minus_best_alternative": float(original - alternatives[best]) if best else float("nan"),
        "determined_by_original": determined,
        "num_rows": int(len(rows)),
        "uninformative": bool(best is None or len(rows) < UNINFORMATIVE_ROWS
                              or determined[best] >= UNINFORMATIVE_BEST),
    }


def conditional_intervention(
    train,
    test,
    offset: int = 0,
    *,
    label_set: str = "v1",
    num_prompt_pairs: int = NUM_SPEC_INPUTS,
    num_bootstrap: int = NUM_BOOTSTRAP,
    semantics: Sequence[str] = ALTERNATIVE_SEMANTICS,
    given_other: Sequence[str] = (),
    original: dict | None = None,
    **kwargs,
) -> dict:
    """The intervention in the conditional form (docs/protocol.md §6b): for the original semantics
    and each distinct alternative map, the conditional gain (probe on [state, prompt facts] minus the
    probe on the prompt facts alone) for that semantics' labels, and the original's gain minus the
    best alternative's.

    Gains, not accuracies: the prompt facts include the output grid, which shows the original
    semantics' final state, so the facts alone already predict the original labels better than an
    alternative's (on an untrained model the accuracies differ by ~10 points, the gains by ~0).
    A probe given the initial label can also turn any encoding of the original state into the
    label of an alternative whose labels are a function of (original label, initial label) (swap:
    d0 - r where the original is d0 + r), so such an alternative says nothing: `determined` gives,
    per semantics, the best any function of (original, initial) label does at predicting its label
    on the scored rows (a task's label is the tuple of its parts: the cell is (x, y)), and
    `best_alternative` is taken among those below `UNINFORMATIVE_BEST`. `determined_by_prompt`:
    the best any function of (the original's change from the initial label, the initial direction
    in the label's input) does at predicting the alternative's change; the mirror meaning's cell
    is the real one's reflected about the initial heading wherever no wall or border stops one of
    the two runs, which the cell's screen cannot see, so this says how much of an alternative is a
    relabeling of the real meaning. (Changes, not cells, as the key: a key of both cells and the
    heading has more values than there are test rows, and the in-sample best function then fits
    the rows' noise.)

    `discordant`: per alternative, the same comparison on the rows where its labels differ from the
    original's (`discordant_margin`); `discordant_minimum`: the smallest of those margins over the
    informative alternatives with at least `UNINFORMATIVE_ROWS` such rows.

    `given_other` (alternative names): `given_other[name]`, the same comparison with each meaning's
    probes also given the other meaning's label as a fact (and the initial direction of the label's
    input, about which the mirror meaning reflects the path): the original's gain over (prompt facts,
    the alternative's label) minus the alternative's gain over (prompt facts, the original's label),
    where the labels differ (`discordant_margin`) and on every row. The prompt facts are the
    original's (the output grid shows its final state), so with the facts alone the alternative's
    probe starts lower and gains more where the meanings differ; given the original's label, that
    lean helps the alternative's probe too wherever the original's label fixes the alternative's. A
    state holding the original's label and the prompt only gives the alternative's probe nothing over
    (facts, the original's label) but what the prompt's walls add; a state holding the prefix's
    tokens gives both probes a gain.

    `original`: the original semantics' `semantic_content(..., return_predictions=True)` result at
    this offset on these traces, with the prompt-only and conditional probes fitted (the default
    controls fit them), reused instead of fitted again. `kwargs` go to `semantic_content` (probe,
    feature, budgets, seed, ...).
    """
    unknown = sorted(set(given_other) - set(ALTERNATIVE_SEMANTICS))
    if unknown:
        raise ValueError(f"given_other: unknown alternative semantics {unknown}; expected some of {ALTERNATIVE_SEMANTICS}")
    if original is not None and (
        not {"prompt_only", "conditional"} <= set(original.get("control_predictions", {}))
        or original.get("semantics") != "original" or original.get("offset") != offset
        or original.get("label_set") != label_set
    ):
        raise ValueError(f"original: expected the original semantics' {label_set} result at offset {offset} from "
                         "semantic_content(..., return_predictions=True) with the prompt-only and conditional probes")
    options = dict(label_set=label_set, num_prompt_pairs=num_prompt_pairs, num_bootstrap=num_bootstrap, **kwargs)
    tasks = label_tasks(label_set, num_prompt_pairs)
    labels = [l for parts in tasks.values() for l in parts]
    heading = {l: l if l.startswith("direction_") else "direction_0" for l in labels}  # the label's input
    table = load_traces(test, [*(label_column(l, w) for l in labels for w in (offset, INITIAL)),
                               *(label_column(h, INITIAL) for h in heading.values())])

    def change(found, initial):  # from the initial label (+100 keeps a change of -1 apart from MISSING)
        return {l: np.where(v == MISSING, MISSING, v - initial[l] + 100) for l, v in found.items()}

    def fit(meaning, given=()):
        return semantic_content(train, test, offset, semantics=meaning, controls=("prompt_only", "conditional_gain"),
                                return_predictions=True, given=given, **options)

    gain, determined, by_prompt, discordant, done = {}, {}, {}, {}, {}
    reference = rows = real = initial = initial_heading = None
    for name in ("original", *semantics):
        key = tuple(sorted(get_semantics(name).mapping.items()))
        if key not in done:
            scored = original if name == "original" and original is not None else fit(name)
            if reference is None:  # the original (scored first): its rows are every semantics' rows
                reference, rows = scored, scored["test_rows"]
                real, initial = ({l: np.asarray(table[label_column(l, w)])[rows] for l in labels}
                                 for w in (offset, INITIAL))
                initial_heading = {l: np.asarray(table[label_column(heading[l], INITIAL)])[rows] for l in labels}
            targets = scored["targets"]
            done[key] = (scored, *((determined_by(g, t, tasks) if len(rows) else float("nan")) for g, t in (
                ([real, initial], targets), ([change(real, initial), initial_heading], change(targets, initial)))))
        scored, determined[name], by_prompt[name] = done[key]
        gain[name] = scored["conditional_gain"]
        if name != "original":
            discordant[name] = discordant_margin(reference, scored, test, num_prompt_pairs=num_prompt_pairs,
                                                 num_bootstrap=num_bootstrap)
    informative = informative_gains(gain, determined)
    best = max(informative, key=informative.get) if informative else None
    compared = {k: discordant[k] for k in informative
                if discordant[k]["num_rows"] >= UNINFORMATIVE_ROWS and not np.isnan(discordant[k]["value"])}
    lowest = min(compared, key=lambda k: compared[k]["value"]) if compared else None
    headings = list(dict.fromkeys(label_column(h, INITIAL) for h in heading.values()))
    crossed = {}
    for name in given_other:
        pair = [fit(meaning, [*(label_column(l, offset, other) for l in labels), *headings])
                for meaning, other in (("original", name), (name, "original"))]
        crossed[name] = {**discordant_margin(*pair, test, num_prompt_pairs=num_prompt_pairs, num_bootstrap=num_bootstrap),
                         "all_rows": {"original_gain": pair[0]["conditional_gain"],
                                      "alternative_gain": pair[1]["conditional_gain"]}}
    return {"gain": gain, "determined_by_original_and_initial": determined, "determined_by_prompt": by_prompt,
            "given_other": crossed,
            "best_alternative": best,
            "original_minus_best_alternative": float(gain["original"]["value"] - informative[best]) if best else float("nan"),
            "discordant": discordant,
            "discordant_minimum": {"alternative": lowest, **compared[lowest]} if lowest else None,
            "num_rows": int(len(rows)),
            "uninformative": bool(best is None or len(rows) < UNINFORMATIVE_ROWS)}


def informative_gains(gain: Mapping[str, Mapping[str, float]], determined: Mapping[str, float]) -> dict[str, float]:
    """The alternatives' gain values (`gain`: meaning -> {"value", ...}, "original" among them) that
    say something: a value, and labels that no function of (original label, initial label)
    predicts `UNINFORMATIVE_BEST` of the time (`determined`: meaning -> that best function's score).

    >>> informative_gains({"original": {"value": 0.3}, "swap": {"value": 0.2}, "cycle1": {"value": 0.1}},
    ...                   {"swap": 0.99, "cycle1": 0.5})
    {'cycle1': 0.1}
    """
    return {k: v["value"] for k, v in gain.items()
            if k != "original" and not np.isnan(v["value"]) and determined[k] < UNINFORMATIVE_BEST}


def _task_codes(parts: Sequence[np.ndarray]) -> np.ndarray:
    """One integer per row for the tuple of its values in `parts` (equal tuples, equal codes);
    MISSING where any part is missing."""
    stacked = np.stack([np.asarray(p, dtype=np.int64) for p in parts], axis=1)
    codes = np.unique(stacked, axis=0, return_inverse=True)[1].reshape(-1)
    return np.where((stacked == MISSING).any(axis=1), MISSING, codes)


def determined_by(given: Sequence[Mapping[str, np.ndarray]], targets: Mapping[str, np.ndarray],
                  tasks: Mapping[str, Sequence[str]]) -> float:
    """The best any function of the `given` labels does at predicting `targets`, task by task
    (a task's value is the tuple of its parts' labels: the cell is (x, y)), pooled over tasks.

    `given`: label mappings on the same rows as `targets` (e.g. the original labels and the
    initial ones). NaN when no row has every label.

    >>> x, y = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    >>> determined_by([{"x": x, "y": y}], {"x": y, "y": x}, {"cell": ("x", "y")})  # the transpose of the cell
    1.0
    >>> determined_by([{"x": x, "y": y}], {"x": x ^ y, "y": x}, {"x": ("x",)})  # x alone does not fix x xor y
    0.5
    """
    keys, values, shift_key, shift_value = [], [], 0, 0
    for parts in tasks.values():
        key = _task_codes([g[l] for g in given for l in parts])
        value = _task_codes([targets[l] for l in parts])
        keys.append(np.where(key == MISSING, MISSING, key + shift_key))
        values.append(np.where(value == MISSING, MISSING, value + shift_value))
        shift_key, shift_value = shift_key + int(key.max(initial=0)) + 1, shift_value + int(value.max(initial=0)) + 1
    return best_future_classifier(np.concatenate(keys), np.concatenate(values))


def undetermined_rows(given: Sequence[Mapping[str, np.ndarray]], targets: Mapping[str, np.ndarray],
                      tasks: Mapping[str, Sequence[str]]) -> np.ndarray:
    """Booleans, one per row: where some task's `targets` value is not the one the best function of
    the `given` labels gives (`determined_by`'s: the most common value of each key, the smallest on
    a tie). These are the rows an alternative meaning's labels cannot be read off the original's
    (and the initial ones) there; a row missing a label is False.

    >>> real, start = np.array([1, 1, 1, 2, 2]), np.array([0, 0, 0, 0, 0])
    >>> undetermined_rows([{"d": real}, {"d": start}], {"d": np.array([3, 3, 0, 2, -1])}, {"d": ("d",)})
    array([False, False,  True, False, False])
    """
    off = []
    for parts in tasks.values():
        key = _task_codes([g[l] for g in given for l in parts])
        value = _task_codes([targets[l] for l in parts])
        labelled = (key != MISSING) & (value != MISSING)
        row_off = np.zeros(len(key), dtype=bool)
        for k in np.unique(key[labelled]):
            rows = labelled & (key == k)
            values, counts = np.unique(value[rows], return_counts=True)
            row_off[rows] = value[rows] != values[np.argmax(counts)]
        off.append(row_off)
    return np.any(off, axis=0) if off else np.zeros(0, dtype=bool)


def discordant_margin(original: dict, alternative: dict, test, *, num_prompt_pairs: int = NUM_SPEC_INPUTS,
                      num_bootstrap: int = NUM_BOOTSTRAP, seed: int = 0, keep: np.ndarray | None = None) -> dict:
    """The conditional intervention on the rows where the two semantics' labels differ.

    `original` and `alternative`: `semantic_content(..., return_predictions=True)` results with the
    conditional gain fitted (controls "prompt_only" and "conditional_gain"), on the same `test`
    rows. Where both semantics give a row the same label, both probes have the same target there and
    any difference between their gains is noise; averaged over every row, the difference shrinks with
    the share of rows where the meanings agree (a property of the task, not of the model). On the
    rows where they disagree (a task's row: any of its parts differs), each gain is the probe on
    [state, prompt facts] minus the probe on the facts alone, each semantics' probes as fitted on
    all rows.

    Returns {"value", "low", "high"}: the original's gain minus the alternative's on those rows, with
    a 95% bootstrap interval over test specs (paired: the same resampled specs for the four
    predictors); "original_gain" and "alternative_gain" on those rows, the four accuracies there
    ("original_state_facts", "original_facts", "alternative_state_facts", "alternative_facts"),
    "num_rows" (rows that differ in some task) and "fraction" (of the rows with every label).

    The facts are the original's (the output grid shows its final state), and on these rows the
    alternative's label is never the original's: a facts-only probe that leans to the original's
    label is wrong there for the alternative, which lowers its baseline and raises its gain. The
    comparison is therefore tilted toward the alternative; the accuracies show by how much.

    `keep` (booleans over the scored test rows, in `test_rows` order): only those rows are compared
    (e.g. the rows where the direction depends on the world), the probes still as fitted on all.
    """
    for result in (original, alternative):
        if not {"prompt_only", "conditional"} <= set(result.get("control_predictions", {})):
            raise ValueError("discordant_margin needs semantic_content(..., controls=('prompt_only', "
                             "'conditional_gain'), return_predictions=True) results")
    rows = original["test_rows"]
    if not np.array_equal(rows, alternative["test_rows"]):
        raise ValueError("the original and the alternative semantics were scored on different test rows")
    keep = np.ones(len(rows), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    if keep.shape != (len(rows),):
        raise ValueError(f"keep: expected {len(rows)} booleans (one per scored test row), got shape {keep.shape}")
    tasks = label_tasks(original["label_set"], num_prompt_pairs)
    groups = np.asarray(load_traces(test, ["example_id"])["example_id"])[rows]

    def hits(result, which, parts):  # every part of the task right
        return np.all([result["control_predictions"][which][l] == result["targets"][l] for l in parts], axis=0)

    scores = {k: [] for k in ("oc", "of", "ac", "af")}
    valid, labelled = [], []
    for parts in tasks.values():
        present = np.all([(r["targets"][l] != MISSING) for r in (original, alternative) for l in parts], axis=0)
        differs = np.any([original["targets"][l] != alternative["targets"][l] for l in parts], axis=0)
        valid.append(present & differs & keep), labelled.append(present & keep)
        for key, result, which in (("oc", original, "conditional"), ("of", original, "prompt_only"),
                                   ("ac", alternative, "conditional"), ("af", alternative, "prompt_only")):
            scores[key].append(hits(result, which, parts))
    oc, of, ac, af = (np.asarray(scores[k], dtype=float) for k in ("oc", "of", "ac", "af"))
    valid, labelled = np.asarray(valid), np.asarray(labelled)
    margin = bootstrap_difference(oc + af, of + ac, valid, groups, num_resamples=num_bootstrap, seed=seed)
    num_labelled = int(labelled.any(axis=0).sum())
    with np.errstate(invalid="ignore"):  # per task on its differing rows, then the mean over tasks
        accuracy = {name: float(np.nanmean((right * valid).sum(axis=1) / valid.sum(axis=1)))
                    if valid.any() else float("nan")
                    for name, right in (("original_state_facts", oc), ("original_facts", of),
                                        ("alternative_state_facts", ac), ("alternative_facts", af))}
    return {**margin, **accuracy,
            "original_gain": accuracy["original_state_facts"] - accuracy["original_facts"],
            "alternative_gain": accuracy["alternative_state_facts"] - accuracy["alternative_facts"],
            "num_rows": int(valid.any(axis=0).sum()),
            "fraction": float(valid.any(axis=0).sum() / num_labelled) if num_labelled else float("nan")}


# ---------------------------------------------------------------------------------- future
def future_analysis(current: dict, future: dict, test) -> dict:
    """Is the future (+1/+2) encoded, or derived by the probe from the current state?

    `current` and `future` are `semantic_content(..., return_predictions=True)` results on the same
    `test` traces (offset 0 and +1 or +2). `best_future_classifier`: the best any function of the
    true current label does at predicting the future label, on the future probe's test rows;
    `probe_future_given_current_correct`: the future probe's accuracy on the rows (of both) where
    the current probe is right. `uninformative` is True when the best classifier is >= 95% or
    fewer than 100 rows are compared: the comparison then carries no information.
    """
    labels = list(future["targets"])
    rows = future["test_rows"]
    table = load_traces(test, [label_column(l, 0, future["semantics"]) for l in labels]) if labels else {}
    current_true = {l: np.asarray(table[label_column(l, 0, future["semantics"])])[rows] for l in labels}
    best = best_future_classifier(current_true, future["targets"]) if len(rows) else float("nan")
    common, at_current, at_future = np.intersect1d(current["test_rows"], rows, return_indices=True)
    given = float("nan")
    if len(common) and labels:
        given = probe_future_given_current_correct(
            {l: current["predictions"][l][at_current] for l in labels},
            {l: current["targets"][l][at_current] for l in labels},
            {l: future["predictions"][l][at_future] for l in labels},
            {l: future["targets"][l][at_future] for l in labels},
        )
    return {
        "best_future_classifier": best,
        "probe_future_given_current_correct": given,
        "num_rows": int(len(rows)),
        "num_rows_given_current": int(len(common)),
        "uninformative": bool(np.isnan(best) or best >= UNINFORMATIVE_BEST or len(rows) < UNINFORMATIVE_ROWS),
    }


def summary(result: dict) -> dict:
    """The JSON part of a `semantic_content` result (no arrays): what `results.json` keeps."""
    skip = {"test_rows", "predictions", "targets", "test_index", "control_predictions"}
    return {k: v for k, v in result.items() if k not in skip}
