"""The README's Python blocks, as a new user copies them: the cheap ones run and print what their
comments say; the ones that need a trained run or the 300k-program corpus import what they name,
and their comments agree with the configs they describe."""

import ast
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def block_with(text: str) -> str:
    found = [b for b in python_blocks() if text in b]
    assert len(found) == 1, f"one README block should contain {text!r}, found {len(found)}"
    return found[0]


def comment(line: str) -> str:
    return line.split("#", 1)[1].strip()


def test_the_readme_has_the_blocks_these_tests_read():
    assert len(python_blocks()) == 5


def test_the_karel_block_runs_and_the_robot_picks_the_marker(capsys):
    exec(compile(block_with("World.from_ascii"), "README.md", "exec"), {})
    # east onto (1, 2), a right turn to face south, down onto the marker's cell, and the marker picked
    assert capsys.readouterr().out.splitlines() == ["#####", "#...#", "#.v.#", "#####", "[1, 2, 2, 2]"]


def test_the_heldout_block_gives_the_overlap_its_comment_shows(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path))  # not the user's cache
    *body, last = block_with("program_overlap").strip().splitlines()
    namespace = {}
    exec(compile("\n".join(body), "README.md", "exec"), namespace)
    expression, promised = last.split("#", 1)
    value = eval(expression.strip(), namespace)
    assert value == ast.literal_eval(promised.strip())
    assert namespace["ds"]["test"].num_rows > 0


def test_the_control_flow_block_leaves_no_straight_line_program_a_score(tmp_path, monkeypatch):
    import datasets

    from karel_hf.data import load_karel
    from karel_hf.metrics.generation import best_constant_program_baseline

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path))  # not the user's cache
    *body, last = block_with("needs_control_flow").strip().splitlines()
    namespace = {}
    exec(compile("\n".join(body), "README.md", "exec"), namespace)
    expression, promised = last.split("#", 1)
    assert eval(expression.strip(), namespace) == ast.literal_eval(promised.strip())
    assert namespace["ds"]["test"].num_rows > 0
    # without the rule the same task leaves a straight-line program some of its test specs
    plain = load_karel("tiny", extended=True, heldout_fraction=0.2, eval_min_length=4)
    assert best_constant_program_baseline(list(plain["test"]), num_spec_pairs=5, max_length=3)["accuracy"] > 0


def test_the_corpus_block_states_the_cpu_config_sizes():
    from karel_hf.data.builder import get_config

    line = next(l for l in block_with('load_karel("cpu")').splitlines() if "DatasetDict" in l)
    sizes = dict(re.findall(r"(train|validation|test) ([\d,]+k?)", comment(line)))
    to_int = lambda s: int(s[:-1]) * 1000 if s.endswith("k") else int(s.replace(",", ""))
    config = get_config("cpu")
    assert {k: to_int(v) for k, v in sizes.items()} == {
        "train": config.train_size, "validation": config.validation_size, "test": config.test_size}


@pytest.mark.parametrize("marker", ["from_pretrained", 'load_karel("cpu")'])
def test_the_heavy_blocks_import_what_they_name(marker):
    imports = [l for l in block_with(marker).splitlines() if l.startswith(("from ", "import "))]
    assert imports
    exec(compile("\n".join(imports), "README.md", "exec"), {})
