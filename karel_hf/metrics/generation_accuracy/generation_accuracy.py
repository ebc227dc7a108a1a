"""Karel generation accuracy as an `evaluate` module (the layout of evaluate's metric Spaces).

The computation lives in `karel_hf.metrics.generation.compute_generation_accuracy` (importable
without evaluate); this script declares the inputs, documents them, and hands evaluate's typed
storage only what it can hold: a prediction that is not a str (None, a number) becomes the empty
text, which counts as wrong, and dict references become their checked JSON strings
(`reference_to_json`), so a bad one is a ValueError naming it rather than an error from the
storage layer.
"""

from collections.abc import Mapping

import datasets
import evaluate

from karel_hf import CITATION

from karel_hf.metrics.generation import compute_generation_accuracy, reference_to_json

_CITATION = CITATION

_DESCRIPTION = """\
Generation accuracy for Karel program synthesis (Jin & Rinard): a predicted program is correct when
running it on each specification input gives the specification output, compared as the rendered
grid interiors (markers under the robot are hidden, as in the prompt). `accuracy_all_pairs` also
requires the held-out pairs. Programs are run by the Karel interpreter only (never as host code);
unparseable text, programs that exhaust the step budget, or cells with more than 9 markers count as
incorrect.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): predicted program texts, e.g. "def run() {\\n  move()\\n}"
        (any layout the Karel parser accepts; the extended language is allowed). Anything that is
        not a str (None, a number) counts as a wrong prediction; it never raises.
    references (`list` of `str` or `dict`): one specification per prediction, either
        - a JSON string of a karel_hf dataset row ({"inputs", "outputs": view codes of shape
          (pairs, rows, cols), "length"}; `karel_hf.metrics.reference_to_json(row)` writes it) or of a
          record in the authors' JSON-lines format ("input0".."input9", "output0".."output9" ASCII
          worlds with the border, "code" optional: it gives the length), or
        - a dict: a dataset row (view codes as arrays or nested lists; other columns are ignored) or
          a JSON-lines record.
        A reference that is not one of these is a ValueError naming its index and what to pass.
    num_spec_pairs (`int`, defaults to 5): how many leading pairs are the specification; the rest
        are held out.

Returns:
    accuracy (`float`): fraction correct on the specification pairs.
    accuracy_all_pairs (`float`): fraction correct on all pairs of the reference.
    parse_rate (`float`): fraction of predictions that parse.
    mean_generated_length (`float`): mean number of actions of the parseable predictions.
    num_examples (`int`): number of predictions.
    accuracy_length_<n> (`float`): accuracy over references whose program has n actions (one key
        per length present; needs "length" or "code" in the references). The keys are flat so the
        results log and save as JSON; `karel_hf.metrics.accuracy_by_length(results)` gives {n: acc}.

Examples:
    Tiny worlds in the authors' format (the corpus uses 8x8 with the border; any size works).
    Pair 0 is the specification, pair 1 is held out:

    >>> import json
    >>> from karel_hf.metrics import load_metric
    >>> generation_accuracy = load_metric("generation_accuracy")  # evaluate.load of this folder
    >>> spec = json.dumps({"input0": "#####\\n#..>#\\n#####", "output0": "#####\\n#..>#\\n#####",
    ...                    "input1": "#####\\n#>..#\\n#####", "output1": "#####\\n#1>.#\\n#####",
    ...                    "code": "def run() { put_marker(); move() }"})
    >>> results = generation_accuracy.compute(
    ...     predictions=["def run() {\\n  put_marker()\\n  move()\\n}", "def run() {\\n  move()\\n}",
    ...                  "def run() {\\n  turn_left()\\n}", "def run() { move("],
    ...     references=[spec] * 4, num_spec_pairs=1)
    >>> print(results["accuracy"], results["accuracy_all_pairs"], results["parse_rate"])
    0.5 0.25 0.75
    >>> results["accuracy_length_2"], results["num_examples"]
    (0.5, 4)

    Dataset rows as dicts of view codes (karel_hf.karel.CELL_WORDS[code]; 5 = robot facing west):

    >>> row = {"inputs": [[[0, 5]], [[5, 0]]], "outputs": [[[5, 0]], [[5, 0]]], "length": 1}
    >>> generation_accuracy.compute(predictions=["def run() { move() }"], references=[row],
    ...                             num_spec_pairs=1)["accuracy_all_pairs"]
    1.0
"""

@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GenerationAccuracy(evaluate.Metric):
    """Karel generation accuracy (see the description above)."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # dict references are stored as their JSON strings (see `add_batch`)
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            homepage="https://arxiv.org/abs/2305.11169",
            reference_urls=["https://arxiv.org/abs/2305.11169"],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of predictions and references (non-str predictions count as wrong)."""
        predictions, references = _storable(predictions, references)
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one prediction and reference (a non-str prediction counts as wrong)."""
        (prediction,), (reference,) = _storable([prediction], [reference])
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, predictions, references, num_spec_pairs=5):
        return compute_generation_accuracy(predictions, references, num_spec_pairs=num_spec_pairs)


def _storable(predictions, references):
    """(predictions as str, references as JSON str): non-str predictions become "" (wrong, never an
    error); each reference is checked, a bad one is a ValueError naming its index."""
    for name, values in (("predictions", predictions), ("references", references)):
        if values is None or isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__iter__"):
            raise ValueError(f"{name} must be a list with one entry per example, got {type(values).__name__}")
    predictions = [p if isinstance(p, str) else "" for p in predictions]
    out = []
    for index, reference in enumerate(references):
        try:
            out.append(reference_to_json(reference) if not isinstance(reference, str) else reference)
        except ValueError as err:
            raise ValueError(f"reference {index}: {err}") from None
    return predictions, out
