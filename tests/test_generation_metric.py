"""Generation accuracy: the plain function, the `evaluate` module folder, and its docs."""

import ast
import doctest
import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

import karel_hf.metrics.generation as generation
from karel_hf.karel import ACTIONS, Program, World, format_program, parse
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


def _load_module_script():
    spec = importlib.util.spec_from_file_location("generation_accuracy_script", MODULE_DIR / "generation_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_doc_examples_run():
    for module in (generation, _load_module_script()):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__


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


def test_evaluate_load_offline(monkeypatch, rows, programs, records):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from karel_hf.metrics import load_metric

    metric = load_metric("generation_accuracy")
    expected = compute_generation_accuracy(programs[:20], rows[:20])
    assert metric.compute(predictions=programs[:20], references=[reference_to_json(r) for r in rows[:20]]) == expected
    assert metric.compute(predictions=programs[:20], references=[json.dumps(r) for r in records[:20]]) == expected
    dict_refs = [{k: r[k] for k in ("inputs", "outputs", "length")} for r in rows[:20]]
    assert metric.compute(predictions=programs[:20], references=dict_refs) == expected
    # batches accumulate like any evaluate metric
    metric.add_batch(predictions=["nonsense"], references=[reference_to_json(rows[0])])
    assert metric.compute()["accuracy"] == 0.0


def test_module_folder_layout():
    assert {p.name for p in MODULE_DIR.iterdir() if not p.name.startswith((".", "__"))} >= {
        "generation_accuracy.py", "README.md", "app.py", "requirements.txt"
    }
    text = (MODULE_DIR / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    for key in ("title", "emoji", "colorFrom", "colorTo", "sdk", "app_file", "pinned", "tags", "description"):
        assert key in front, key
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and {"evaluate", "metric"} <= set(front["tags"])
    app = ast.parse((MODULE_DIR / "app.py").read_text())
    assert "launch_gradio_widget" in ast.unparse(app)
    assert set((MODULE_DIR / "requirements.txt").read_text().split()) >= {"evaluate", "karel_hf", "numpy"}


def test_metrics_package_does_not_import_evaluate():
    import subprocess
    import sys

    code = "import sys, karel_hf.metrics; print('evaluate' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
