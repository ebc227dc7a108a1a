"""Karel generation accuracy as an `evaluate` module (the layout of evaluate's metric Spaces).

The computation lives in `karel_hf.metrics.generation.compute_generation_accuracy` (importable
without evaluate); this script only declares the inputs and documents them.
"""

import datasets
import evaluate

from karel_hf import CITATION

from karel_hf.metrics.generation import compute_generation_accuracy

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
        (any layout the Karel parser accepts; the extended language is allowed).
    references (`list` of `str` or `dict`): one specification per prediction, either
        - a JSON string of a karel_hf dataset row ({"inputs", "outputs": view codes of shape
          (pairs, rows, cols), "length"}; `karel_hf.metrics.reference_to_json(row)` writes it) or of a
          record in the authors' JSON-lines format ("input0".."input9", "output0".."output9" ASCII
          worlds with the border, "code" optional: it gives the length), or
        - a dict with exactly the keys "inputs", "outputs", "length" (view codes as arrays or nested
          lists; a whole dataset row has more columns: pass `reference_to_json(row)` instead).
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

_VIEW_CODES = datasets.Sequence(datasets.Sequence(datasets.Sequence(datasets.Value("int8"))))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GenerationAccuracy(evaluate.Metric):
    """Karel generation accuracy (see the description above)."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": {"inputs": _VIEW_CODES, "outputs": _VIEW_CODES, "length": datasets.Value("int32")},
                    }
                ),
            ],
            homepage="https://arxiv.org/abs/2305.11169",
            reference_urls=["https://arxiv.org/abs/2305.11169"],
        )

    def _compute(self, predictions, references, num_spec_pairs=5):
        return compute_generation_accuracy(predictions, references, num_spec_pairs=num_spec_pairs)
