"""Semantic probe: how well a probe reads program semantics out of a model's hidden states.

An `evaluate` metric (docs/protocol.md §6-7; Jin & Rinard's "semantic content"). Each row is
one model state (the hidden state where the model emitted an action of its program) with the
label(s) of the program state at that point; rows marked for training fit the probe, the others
score it. The computation is `karel_hf.probing.probes.probe_report`, usable without `evaluate`.
"""

import datasets
import evaluate

from karel_hf import CITATION

from karel_hf.probing.probes import PROBES, probe_report

_DESCRIPTION = """\
Semantic content (Jin & Rinard, "Evidence of Meaning in Language Models Trained on Programs"):
the held-out accuracy of a probe (a classifier, linear by default) trained to predict the program
state, e.g. the robot's facing direction in each specification input, from the language model's
hidden state at each generated action. The score comes with its controls: chance (1 / number of
classes and the majority class), the same probe trained on shuffled labels, and, when given, a
shortcut baseline (e.g. predicting the initial direction). With several label columns (tasks),
`semantic_content` is the mean over the current-state tasks and `semantic_content_next<o>` the
mean over the tasks `o` steps ahead (the paper's +1/+2 probes).

Inputs are row-wise: `predictions` are model-state vectors, `references` are integer labels (one
per row, or one per task), and `train_mask` (or `split`) says which rows train the probe.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): one model-state vector per row (all the same length),
        e.g. the `state` column of a karel_hf trace dataset.
    references (`list` of `int`, or `list` of `list` of `int`): the label of each row, or one label
        per task; -1 marks a missing label (e.g. a +2 state beyond the end of the program), which
        is neither trained on nor scored.
    train_mask (`list` of `bool`, *optional*): True for rows that train the probe, False for rows
        that score it. Give this or `split`.
    split (`list` of `str`, *optional*): "train" or "test" per row, instead of `train_mask`.
    task_names (`list` of `str`, *optional*): a name per label column (default `task_<t>`); the
        result has `accuracy_<name>` for each.
    task_offsets (`list` of `int`, *optional*): per label column, how many steps ahead its label
        is (0 = current state, 1 = +1, 2 = +2). Defaults to 0 for all.
    steps (`list` of `int`, *optional*): the program step of each row, for a per-step breakdown.
    initial_labels (same shape as `references`, *optional*): the label before any action, scored
        as the `initial_baseline` shortcut.
    num_classes (`int`, *optional*): for the uniform chance level; default: the labels seen.
    probe (`str`, *optional*): "linear" (default), "mlp1" or "mlp2".
    seed (`int`, *optional*): seeds the probe and the label shuffle. Defaults to 0.
    shuffled_control (`bool`, *optional*): also train on shuffled labels. Defaults to True.

Returns:
    semantic_content (`float`): mean test accuracy over the current-state tasks (all tasks when
        none has offset 0).
    semantic_content_next1, semantic_content_next2 (`float`): the same over +1 / +2 tasks, if any.
    accuracy_<task> (`float`): test accuracy per task.
    chance_uniform, chance_majority (`float`): chance levels (mean over the same tasks).
    shuffled_control (`float`): accuracy of the probe trained on shuffled labels.
    initial_baseline (`float`): accuracy of `initial_labels`, when given.
    accuracy_step_<k> (`float`): accuracy at program step k, when `steps` is given.
    num_train, num_test (`float`): rows used to train and to score.
    Chance, control, baseline and per-step keys carry the `_next<o>` suffix for the +o tasks.

Examples:

    Load the metric from its folder (or from the Hub, once pushed):

    >>> import evaluate
    >>> semantic_probe = evaluate.load("path/to/karel_hf/metrics/semantic_probe")  # doctest: +SKIP

    One task: the label is readable from the state, so the probe is perfect.

    >>> states = [[float(i % 4 == d) for d in range(4)] + [0.1 * (i % 3)] for i in range(40)]
    >>> labels = [i % 4 for i in range(40)]
    >>> train_mask = [i < 24 for i in range(40)]
    >>> results = semantic_probe.compute(predictions=states, references=labels, train_mask=train_mask)
    >>> results["semantic_content"], results["chance_uniform"], results["num_test"]
    (1.0, 0.25, 16.0)
    >>> results["shuffled_control"] < 0.75
    True

    Two tasks, the current state and the state one step ahead (-1 = no next state):

    >>> labels = [[i % 4, (i + 1) % 4 if i % 5 else -1] for i in range(40)]
    >>> results = semantic_probe.compute(
    ...     predictions=states, references=labels, split=["train"] * 24 + ["test"] * 16,
    ...     task_names=["direction_0", "direction_0_next1"], task_offsets=[0, 1],
    ... )
    >>> results["semantic_content"], results["semantic_content_next1"], results["accuracy_direction_0_next1"]
    (1.0, 1.0, 1.0)
"""

_CITATION = CITATION


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SemanticProbe(evaluate.Metric):
    """Probe accuracy for program-state labels from model states, with chance and shuffled controls."""

    def _info(self):
        vector = datasets.Sequence(datasets.Value("float32"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": vector, "references": datasets.Sequence(datasets.Value("int64"))}),
                datasets.Features({"predictions": vector, "references": datasets.Value("int64")}),
            ],
            reference_urls=["https://arxiv.org/abs/2305.11169"],
        )

    def _compute(
        self,
        predictions,
        references,
        train_mask=None,
        split=None,
        task_names=None,
        task_offsets=None,
        steps=None,
        initial_labels=None,
        num_classes=None,
        probe="linear",
        seed=0,
        shuffled_control=True,
    ):
        if (train_mask is None) == (split is None):
            raise ValueError("pass exactly one of `train_mask` (bools) or `split` ('train'/'test' per row)")
        if split is not None:
            unknown = sorted(set(split) - {"train", "test"})
            if unknown:
                raise ValueError(f"`split` entries must be 'train' or 'test', got {unknown}")
            train_mask = [s == "train" for s in split]
        if probe not in PROBES:
            raise ValueError(f"unknown probe {probe!r}; expected one of {PROBES}")
        return probe_report(
            predictions,
            references,
            train_mask,
            task_names=task_names,
            task_offsets=task_offsets,
            steps=steps,
            shortcut=initial_labels,
            num_classes=num_classes,
            probe=probe,
            seed=seed,
            controls=shuffled_control,
        )
