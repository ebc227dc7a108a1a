"""The `semantic_probe` evaluate module (karel_hf/metrics/semantic_probe)."""

import doctest
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub / evaluate are imported

import numpy as np
import pytest
import yaml

from karel_hf import CITATION
from karel_hf.probing.probes import probe_report

FOLDER = Path(__file__).resolve().parents[1] / "karel_hf" / "metrics" / "semantic_probe"


@pytest.fixture(scope="module")
def metric(tmp_path_factory):
    import evaluate

    return evaluate.load(str(FOLDER), cache_dir=str(tmp_path_factory.mktemp("evaluate")))


def test_folder_is_a_self_contained_space_and_card():
    from karel_hf.metrics.space import check_space, requirement_names
    from karel_hf.probing import probes

    assert {p.name for p in check_space(FOLDER)} == {"semantic_probe.py", "README.md", "app.py", "requirements.txt",
                                                      "probes.py"}
    assert (FOLDER / "probes.py").is_symlink() and (FOLDER / "probes.py").resolve() == Path(probes.__file__).resolve()
    assert set(requirement_names((FOLDER / "requirements.txt").read_text())) == {"evaluate", "numpy", "scikit-learn"}
    text = (FOLDER / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and front["pinned"] is False
    assert {"evaluate", "metric"} <= set(front["tags"])
    assert {"title", "emoji", "colorFrom", "colorTo", "description"} <= set(front)


def test_doctests(metric):
    module = sys.modules[type(metric).__module__]
    parser = doctest.DocTestParser()
    test = parser.get_doctest(module._KWARGS_DESCRIPTION, {"semantic_probe": metric}, "semantic_probe", None, 0)
    runner = doctest.DocTestRunner()
    runner.run(test)
    assert module._CITATION == CITATION
    assert runner.failures == 0 and runner.tries >= 6


def test_compute_matches_plain_function(metric):
    rng = np.random.default_rng(0)
    labels = rng.integers(4, size=(120, 2))
    labels[::9, 1] = -1
    states = np.eye(4)[labels[:, 0]] + 0.2 * rng.normal(size=(120, 4))
    mask = np.arange(120) < 80
    kwargs = dict(task_names=["d0", "d1"], steps=(np.arange(120) % 4 + 1).tolist(), groups=(np.arange(120) // 3).tolist(),
                  prompt_facts=np.eye(4)[labels[:, 1].clip(0)].tolist(), code_states=rng.normal(size=(120, 3)).tolist(),
                  initial_labels=rng.integers(4, size=(120, 2)).tolist(), output_labels=rng.integers(4, size=(120, 2)).tolist(),
                  num_bootstrap=200)
    got = metric.compute(predictions=states.tolist(), references=labels.tolist(), train_mask=mask.tolist(), **kwargs)
    expected = probe_report(states, labels, mask, **kwargs)
    assert got.keys() == expected.keys()
    for key in got:
        assert got[key] == pytest.approx(expected[key], nan_ok=True), key
    assert got["accuracy_d0"] > 0.9 and got["accuracy_d1"] < 0.6  # d1 is in the facts, not in the states
    assert {"control_prompt_only", "control_code_position", "margin", "conditional_gain_low", "unobserved"} <= set(got)
    assert all(type(v) is float for v in got.values())


def test_load_metric_by_name():
    from karel_hf.metrics import METRIC_NAMES, load_metric

    assert "semantic_probe" in METRIC_NAMES
    metric = load_metric("semantic_probe")
    result = metric.compute(predictions=[[float(i % 2)] for i in range(20)], references=[i % 2 for i in range(20)],
                            split=["train"] * 12 + ["test"] * 8, controls=False)
    assert result["semantic_content"] == 1.0


def test_bad_inputs(metric):
    states, labels = [[0.0, 1.0], [1.0, 0.0]] * 4, [0, 1] * 4
    with pytest.raises(ValueError, match="exactly one"):
        metric.compute(predictions=states, references=labels)
    with pytest.raises(ValueError, match="'train' or 'test'"):
        metric.compute(predictions=states, references=labels, split=["train"] * 4 + ["dev"] * 4)
    with pytest.raises(ValueError, match="unknown probe"):
        metric.compute(predictions=states, references=labels, train_mask=[True] * 4 + [False] * 4, probe="svm")
