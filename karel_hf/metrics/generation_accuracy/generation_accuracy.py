"""Karel generation accuracy as an `evaluate` module (the layout of evaluate's metric Spaces).

The computation is the Karel core's `compute_generation_accuracy`, in the pure Python + NumPy files
beside this script: `world.py`, `program.py`, `interpreter.py` and `scoring.py` are links to
karel_hf's `karel` package, and a Space pushed with `karel-hf push metric` holds copies of them, so
`evaluate.load` needs neither karel_hf nor torch. evaluate's loader copies each file a module script
imports relatively, but not the files those import in turn: the script imports every one of them.
"""

import datasets
import evaluate

# World, parse and execute are imported for evaluate's loader, which copies only the files the script
# itself imports relatively (and reads a comment after an import as the URL to fetch it from).
from .world import World
from .program import parse
from .interpreter import execute
from .scoring import compute_generation_accuracy, reference_to_json

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
    references (`list` of `dict` or `str`): one specification per prediction, as
        - a record in the authors' JSON-lines format, e.g. `json.loads` of a line of their corpus
          ("input0".."input9", "output0".."output9": ASCII worlds with the border; "code" optional,
          it gives the length), or
        - a karel_hf dataset row ("inputs", "outputs": view codes of shape (pairs, rows, cols);
          "length" optional; other columns are ignored), or
        - either of them as a JSON string (the form the module stores; dicts are converted to it).
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
        results log and save as JSON.

Examples:
    `generation_accuracy` is this module loaded with `evaluate.load` (the Space's id, or a folder
    holding it). Tiny worlds in the authors' format (their corpus uses 8x8 with the border; any
    size works); pair 0 is the specification, pair 1 is held out:

    >>> spec = {"input0": "#####\\n#..>#\\n#####", "output0": "#####\\n#..>#\\n#####",
    ...         "input1": "#####\\n#>..#\\n#####", "output1": "#####\\n#1>.#\\n#####",
    ...         "code": "def run() { put_marker(); move() }"}
    >>> results = generation_accuracy.compute(
    ...     predictions=["def run() {\\n  put_marker()\\n  move()\\n}", "def run() {\\n  move()\\n}",
    ...                  "def run() {\\n  turn_left()\\n}", "def run() { move("],
    ...     references=[spec] * 4, num_spec_pairs=1)
    >>> print(results["accuracy"], results["accuracy_all_pairs"], results["parse_rate"])
    0.5 0.25 0.75
    >>> results["accuracy_length_2"], results["num_examples"]
    (0.5, 4)

    Dataset rows (view codes: 0 empty, 5 the robot facing west):

    >>> row = {"inputs": [[[0, 5]], [[5, 0]]], "outputs": [[[5, 0]], [[5, 0]]], "length": 1}
    >>> generation_accuracy.compute(predictions=["def run() { move() }"], references=[row],
    ...                             num_spec_pairs=1)["accuracy_all_pairs"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GenerationAccuracy(evaluate.Metric):
    """Karel generation accuracy (see the description above).

    References are stored as JSON strings: `add` and `add_batch` (and so `compute`) convert a dict
    reference with `reference_to_json`, which keeps what scoring reads and rejects anything else
    with a message naming the accepted forms. (evaluate appends the inputs description to the
    docstrings of both methods, so they need one.)
    """

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            homepage="https://arxiv.org/abs/2305.11169",
            reference_urls=["https://arxiv.org/abs/2305.11169"],
        )

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one prediction and its reference (a dict is stored as its JSON string)."""
        if reference is not None:
            reference = reference_to_json(reference)
        super().add(prediction=prediction, reference=reference, **kwargs)

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of predictions and references (dicts are stored as their JSON strings)."""
        if references is not None:
            references = [reference_to_json(r) for r in references]
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def _compute(self, predictions, references, num_spec_pairs=5):
        return compute_generation_accuracy(predictions, references, num_spec_pairs=num_spec_pairs)
