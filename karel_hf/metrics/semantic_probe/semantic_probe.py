"""Semantic probe: how well a probe reads program semantics out of a model's hidden states,
beyond what the prompt gives away.

An `evaluate` metric (docs/protocol.md §6-6b; Jin & Rinard's "semantic content"). Each row is
one model state (the hidden state where the model emitted an action of its program) with the
label(s) of the program state at one offset; rows marked for training fit the probe, the others
score it. The computation is `probe_report` of `probes.py` beside this script (NumPy and
scikit-learn only): a link to karel_hf's `karel_hf/probing/probes.py`, which a Space pushed with
`karel-hf push metric` holds as a copy, so `evaluate.load` needs neither karel_hf nor torch. It is
usable without `evaluate` as `karel_hf.probing.probes.probe_report`.
"""

import datasets
import evaluate

from .probes import PROBES, checked_array, probe_report

_CITATION = """\
@inproceedings{jin2024emergent,
  title     = {Emergent Representations of Program Semantics in Language Models Trained on Programs},
  author    = {Jin, Charles and Rinard, Martin},
  booktitle = {Proceedings of the 41st International Conference on Machine Learning},
  year      = {2024},
  note      = {arXiv:2305.11169 (first version: Evidence of Meaning in Language Models Trained on Programs)}
}
"""

_DESCRIPTION = """\
Semantic content (Jin & Rinard, "Evidence of Meaning in Language Models Trained on Programs"):
the held-out accuracy of a probe (a classifier, linear by default) trained to predict the program
state, e.g. the robot's facing direction in each specification input, from the language model's
hidden state at each action. One call scores one offset (the state k + o at the state that emits
action k); pass only the rows you mean to score (karel_hf drops rows whose label is the initial
or the final state, which the prompt's grids print).

A probe number means something only beside its controls, on the same rows with the same probe
recipe: the initial glyph and the output glyph (the labels the prompt's grids show), a probe on
prompt facts alone, a probe on the state before the first program token (it has seen no program),
and a probe trained on shuffled labels. `margin` is semantic content minus the strongest control;
`conditional_gain` (Hewitt et al. 2021, conditional probing) is the accuracy of the probe on
[state, prompt facts] minus the probe on prompt facts alone, with a 95% bootstrap interval over
specs (`groups`): what the state adds beyond the prompt.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): one model-state vector per row (all the same length),
        e.g. the `state` column of a karel_hf trace dataset.
    references (`list` of `int`, or `list` of `list` of `int`): the label of each row, or one label
        per task; -1 marks a missing label (neither trained on nor scored).
    train_mask (`list` of `bool`, *optional*): True for rows that train the probe, False for rows
        that score it. Give this or `split`.
    split (`list` of `str`, *optional*): "train" or "test" per row, instead of `train_mask`.
    task_names (`list` of `str`, *optional*): a name per label column (default `task_<t>`); the
        result has `accuracy_<name>` for each.
    groups (`list` of `int`, *optional*): the spec each row comes from: the bootstrap resamples
        specs, and rows of one program are not independent. Default: each row its own group.
    prompt_facts (`list` of `list` of `float`, *optional*): what the prompt gives away, per row, or
        one such block per label column: the `prompt_only` control and the conditional gains. Give
        them jointly, one column per combination (karel_hf: of the label's initial value, its output
        value, step k and length n; `karel_hf.probing.probes.joint_one_hot`), so that a linear probe
        on them is a lookup table of the facts and misses no interaction of them.
    code_states (`list` of `list` of `float`, *optional*): the model state before the first program
        token, per row: the `code_position` control and `conditional_gain_code`.
    initial_labels, output_labels (same shape as `references`, *optional*): the labels the input
        and output grids show: the `initial_glyph` / `output_glyph` controls and `unobserved`.
    steps (`list` of `int`, *optional*): the program step of each row, for a per-step breakdown.
    num_classes (`int`, *optional*): for the uniform chance level; default: the labels seen.
    probe (`str`, *optional*): "linear" (default), "mlp1" or "mlp2".
    seed (`int`, *optional*): seeds the probe, the shuffle, the budget subsample and the bootstrap.
    controls (`bool`, *optional*): fit the controls and gains. Defaults to True.
    max_train_rows, max_test_rows (`int`, *optional*): a fixed budget: a seeded subsample of the rows.
    num_bootstrap (`int`, *optional*): bootstrap resamples (default 1000).

Returns (plain floats):
    semantic_content: mean test accuracy over the tasks.
    unobserved: the same on rows whose label differs from both the initial and the output label.
    control_initial_glyph, control_output_glyph, control_prompt_only, control_code_position,
        control_shuffled: the controls (NaN when their input is not given).
    margin: semantic_content minus the largest control.
    conditional_gain, conditional_gain_low, conditional_gain_high: probe on [state, facts] minus
        probe on facts, with its 95% interval; conditional_gain_code(_low, _high): [state, facts,
        code] minus [facts, code].
    chance_uniform, chance_majority: chance levels.
    accuracy_<task>, accuracy_step_<k>: per task, per step.
    num_train, num_test, num_unobserved: rows used; budget_met: 1.0 when the budget was filled.

Examples:

    `semantic_probe` is this module loaded with `evaluate.load` (the Space's id, or a folder holding it).

    The label is readable from the state and the prompt shows nothing of it: a perfect probe, a
    gain far above 0, its interval above 0. (Where in (0, 0.5] the interval starts depends on how
    the prompt-only probe breaks ties between equally likely labels, which differs between CPUs.)

    >>> states = [[float(i % 4 == d) for d in range(4)] + [0.1 * (i % 3)] for i in range(80)]
    >>> labels = [i % 4 for i in range(80)]
    >>> facts = [[float(i % 2)] for i in range(80)]
    >>> results = semantic_probe.compute(predictions=states, references=labels, train_mask=[i < 48 for i in range(80)],
    ...                                  prompt_facts=facts, groups=[i // 2 for i in range(80)])
    >>> results["semantic_content"], results["chance_uniform"], results["num_test"]
    (1.0, 0.25, 32.0)
    >>> results["conditional_gain"], results["conditional_gain_low"] > 0
    (0.5, True)

    The label is the one the output grid shows: the controls match the probe, the margin is 0.

    >>> results = semantic_probe.compute(predictions=states, references=labels, split=["train"] * 48 + ["test"] * 32,
    ...                                  output_labels=labels, initial_labels=[0] * 80)
    >>> results["control_output_glyph"], results["margin"], results["unobserved"] != results["unobserved"]
    (1.0, 0.0, True)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SemanticProbe(evaluate.Metric):
    """Probe accuracy for program-state labels from model states, with its controls and conditional gain."""

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
            reference_urls=["https://arxiv.org/abs/2305.11169", "https://arxiv.org/abs/2109.13392"],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of states and labels (checked: a clear ValueError for empty or mismatched inputs)."""
        _check_inputs(predictions, references)
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one state and its label(s)."""
        _check_inputs([prediction], [reference])
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(
        self,
        predictions,
        references,
        train_mask=None,
        split=None,
        task_names=None,
        groups=None,
        prompt_facts=None,
        code_states=None,
        initial_labels=None,
        output_labels=None,
        steps=None,
        num_classes=None,
        probe="linear",
        seed=0,
        controls=True,
        max_train_rows=None,
        max_test_rows=None,
        num_bootstrap=1000,
    ):
        if (train_mask is None) == (split is None):
            raise ValueError("pass exactly one of `train_mask` (bools) or `split` ('train'/'test' per row)")
        if split is not None:
            if isinstance(split, str) or not all(s in ("train", "test") for s in split):
                raise ValueError(f"`split` must be a list of 'train' or 'test' per row, got {str(split)[:80]}")
            train_mask = [s == "train" for s in split]
        if probe not in PROBES:
            raise ValueError(f"unknown probe {probe!r}; expected one of {PROBES}")
        return probe_report(
            predictions,
            references,
            train_mask,
            task_names=task_names,
            groups=groups,
            prompt_facts=prompt_facts,
            code_states=code_states,
            initial_labels=initial_labels,
            output_labels=output_labels,
            steps=steps,
            num_classes=num_classes,
            probe=probe,
            seed=seed,
            controls=bool(controls),
            max_train_rows=max_train_rows,
            max_test_rows=max_test_rows,
            num_bootstrap=num_bootstrap,
        )


def _check_inputs(predictions, references):
    for name, values in (("predictions (states)", predictions), ("references (labels)", references)):
        if values is None or isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
            raise ValueError(f"{name} must be a list with one entry per row, got {type(values).__name__}")
    if len(predictions) == 0 or len(predictions) != len(references):
        raise ValueError(f"need the same positive number of predictions (states) and references (labels), got "
                         f"{len(predictions)} and {len(references)}")
    # checked before evaluate's storage, which would cast silently (a label 1.7 to 1)
    checked_array(predictions, "predictions (states)", "float")
    checked_array(references, "references (labels)", "label")
