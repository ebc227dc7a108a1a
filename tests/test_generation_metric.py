"""Generation accuracy: the plain function, the `evaluate` module folder, and its docs."""

import ast
import doctest
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import karel_hf.karel.scoring as generation
from karel_hf import CITATION
from karel_hf.karel import ACTIONS, Program, World, format_program, parse
from karel_hf.metrics.space import check_space, requirement_names
from karel_hf.metrics import (
    accuracy_by_length,
    compute_generation_accuracy,
    constant_program_baseline,
    metric_path,
    reference_to_json,
)

REFERENCE_DIR = Path(__file__).resolve().parent / "data" / "reference"
MODULE_DIR = metric_path("generation_accuracy")


@pytest.fixture(scope="module")
def records():
    return [json.loads(line) for line in (REFERENCE_DIR / "straight_line_200.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def rows(records):
    """The same specs as karel_hf dataset rows (view codes, (10, 6, 6) per side)."""
    return [
        {
            "inputs": np.stack([World.from_ascii(r[f"input{i}"]).view_codes() for i in range(10)]),
            "outputs": np.stack([World.from_ascii(r[f"output{i}"]).view_codes() for i in range(10)]),
            "length": parse(r["code"]).num_actions(),
            "text": "unused columns are ignored",
        }
        for r in records
    ]


@pytest.fixture(scope="module")
def programs(records):
    return [format_program(parse(r["code"]), "lines") for r in records]


@pytest.fixture(scope="module")
def metric(tmp_path_factory):
    from karel_hf.metrics import load_metric

    return load_metric("generation_accuracy", cache_dir=str(tmp_path_factory.mktemp("evaluate")))


def test_doc_examples_run(metric):
    result = doctest.testmod(generation, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
    script = sys.modules[type(metric).__module__]
    card = (MODULE_DIR / "README.md").read_text()
    examples = card[card.index("### Examples"):card.index("## Limitations")].replace("```python", "").replace("```", "")
    for name, text, globs in (("script", script._KWARGS_DESCRIPTION, {"generation_accuracy": metric}),
                              ("card", examples, {"metric": metric})):
        test = doctest.DocTestParser().get_doctest(text, globs, name, None, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test)
        assert runner.tries >= 2 and runner.failures == 0, name
    assert script._CITATION == CITATION


def test_reference_programs_score_one(records, rows, programs):
    for references in (records, rows, [json.dumps(r) for r in records], [reference_to_json(r) for r in rows]):
        results = compute_generation_accuracy(programs, references)
        assert results["accuracy"] == results["accuracy_all_pairs"] == results["parse_rate"] == 1.0
        assert results["num_examples"] == len(programs)
        assert accuracy_by_length(results) == {n: 1.0 for n in range(1, 11)}
        assert results["mean_generated_length"] == pytest.approx(np.mean([r["length"] for r in rows]))


def _corrupt(program_text: str, rng: random.Random) -> str:
    """Replace one action with a different one whose effect differs (turns vs move vs markers)."""
    actions = parse(program_text).actions()
    k = rng.randrange(len(actions))
    group = {"move": 0, "turn_left": 1, "turn_right": 2, "put_marker": 3, "pick_marker": 3}
    actions[k] = rng.choice([a for a in ACTIONS if group[a] != group[actions[k]]])
    return format_program(Program.from_actions(actions), "lines")


def test_corrupted_programs_score_lower(records, rows, programs):
    rng = random.Random(0)
    corrupted = [_corrupt(p, rng) for p in programs]
    for references in (records, rows):
        results = compute_generation_accuracy(corrupted, references)
        assert results["parse_rate"] == 1.0
        assert results["accuracy_all_pairs"] <= results["accuracy"] < 0.2


def test_garbage_scores_zero_without_raising(rows):
    garbage = [
        "",
        "garbage",
        None,
        "def run() { move(",
        "def run() {\n  fly()\n}",
        "import os; os.system('echo hacked')",
        "def run() { while(front_is_clear()) { turn_left() } }",  # exhausts the step budget
        "def run() { repeat(12) { put_marker() } move() }",  # 12 markers: not renderable
        "def run() { " + "repeat(9) { " * 200 + "move()" + " }" * 200 + " }",  # deep nesting, huge loops
        "def run() { " + "if(front_is_clear()) { " * 5000 + "move()" + " }" * 5000 + " }",  # deeper than Python's stack
    ]
    results = compute_generation_accuracy(garbage, rows[: len(garbage)])
    assert results["accuracy"] == results["accuracy_all_pairs"] == 0.0
    assert results["num_examples"] == len(garbage)
    assert 0.0 <= results["parse_rate"] < 1.0


def test_too_many_markers_is_incorrect_not_an_error():
    spec = {"inputs": [[[3, 0]]], "outputs": [[[0, 3]]], "length": 1}  # robot facing east, moves one cell
    ok = compute_generation_accuracy(["def run() { move() }"], [spec], num_spec_pairs=1)
    assert ok["accuracy"] == 1.0
    bad = compute_generation_accuracy(["def run() { repeat(10) { put_marker() } move() }"], [spec], num_spec_pairs=1)
    assert bad["accuracy"] == 0.0 and bad["parse_rate"] == 1.0


def test_user_errors_are_value_errors(rows):
    with pytest.raises(ValueError, match="predictions"):
        compute_generation_accuracy(["def run() { move() }"], rows[:2])
    with pytest.raises(ValueError, match="input0"):
        compute_generation_accuracy(["def run() { move() }"], [{"program": "x"}])
    with pytest.raises(ValueError, match="num_spec_pairs"):
        compute_generation_accuracy(["def run() { move() }"], rows[:1], num_spec_pairs=11)


def test_constant_program_baseline(records, rows):
    baseline = constant_program_baseline(rows)
    assert baseline == compute_generation_accuracy([generation.CONSTANT_PROGRAM] * len(rows), rows)
    assert 0.02 < baseline["accuracy"] < 0.2  # docs/cpu_notes.md: 7.4% on a paper-format test set
    assert constant_program_baseline(records)["accuracy"] == baseline["accuracy"]


def test_best_constant_program_baseline_is_the_best_of_all_short_programs(rows):
    from itertools import product

    from karel_hf.karel.program import ACTIONS, Program, format_program

    best = generation.best_constant_program_baseline(rows[:60], num_spec_pairs=2)
    scores = {}
    for length in (1, 2):
        for actions in product(ACTIONS, repeat=length):
            text = format_program(Program.from_actions(list(actions)), "lines")
            scores[text] = compute_generation_accuracy([text] * 60, rows[:60], num_spec_pairs=2)["accuracy"]
    assert len(scores) == 30 and best["accuracy"] == max(scores.values()) and scores[best["program"]] == best["accuracy"]
    assert best["accuracy"] >= generation.constant_program_baseline(rows[:60], 2)["accuracy"]
    with pytest.raises(ValueError, match="reference 1"):
        generation.best_constant_program_baseline([rows[0], {"program": "x"}])


def test_evaluate_module_takes_every_reference_form(metric, rows, programs, records):
    expected = compute_generation_accuracy(programs[:20], rows[:20])
    assert expected["accuracy"] == 1.0
    forms = {
        "row json": [reference_to_json(r) for r in rows[:20]],
        "record json": [json.dumps(r) for r in records[:20]],
        "records": records[:20],  # json.loads of the authors' lines
        "rows": rows[:20],  # whole dataset rows (numpy arrays, extra columns)
        "row dicts": [{k: np.asarray(r[k]).tolist() for k in ("inputs", "outputs", "length")} for r in rows[:20]],
    }
    for form, references in forms.items():
        assert metric.compute(predictions=programs[:20], references=references) == expected, form
    # batches accumulate like any evaluate metric, whatever form each batch has
    metric.add_batch(predictions=programs[:3], references=records[:3])
    metric.add(prediction="nonsense", reference=rows[3])
    assert metric.compute() == compute_generation_accuracy(programs[:3] + ["nonsense"], records[:3] + [rows[3]])


def test_evaluate_module_names_the_forms_it_takes(metric, programs):
    for bad, message in (({"program": "def run() { move() }"}, "'input0', 'output0'"),
                         ([1, 2, 3], "a dict or a JSON string, got list")):
        with pytest.raises(ValueError, match=message):
            metric.compute(predictions=programs[:1], references=[bad])


def test_module_folder_is_a_self_contained_space():
    files = {p.name for p in check_space(MODULE_DIR)}
    assert files == {"generation_accuracy.py", "README.md", "app.py", "requirements.txt",
                     "world.py", "program.py", "interpreter.py", "scoring.py"}
    karel_dir = Path(generation.__file__).resolve().parent
    for name in ("world.py", "program.py", "interpreter.py", "scoring.py"):  # links: one source of truth
        assert (MODULE_DIR / name).is_symlink() and (MODULE_DIR / name).resolve() == karel_dir / name
    assert set(requirement_names((MODULE_DIR / "requirements.txt").read_text())) == {"evaluate", "numpy"}
    text = (MODULE_DIR / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    for key in ("title", "emoji", "colorFrom", "colorTo", "sdk", "app_file", "pinned", "tags", "description"):
        assert key in front, key
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and {"evaluate", "metric"} <= set(front["tags"])
    app = ast.parse((MODULE_DIR / "app.py").read_text())
    assert "launch_gradio_widget" in ast.unparse(app)


def test_metrics_package_does_not_import_evaluate():
    import subprocess
    import sys

    code = "import sys, karel_hf.metrics; print('evaluate' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
