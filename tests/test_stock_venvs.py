"""Opt-in (KAREL_HF_TEST_VENVS=1; needs the package index, a few minutes): what karel_hf publishes, used in
fresh virtual environments that pip builds from the package index, without karel_hf.

- The transformers floor: transformers at the lowest version pyproject.toml allows (with the tokenizers
  and huggingface_hub it pulls in; torch from this environment, which pyproject allows as well) loads a
  karel_hf tokenizer and a checkpoint saved by the Trainer with AutoTokenizer / AutoModelForCausalLM,
  and computes the same ids, logits and greedy continuation as this environment.
- The metric Spaces: `pip install -r requirements.txt` of each packaged metric Space (as pushed) into
  an empty environment, where `evaluate.load` of the Space computes what karel_hf computes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("KAREL_HF_TEST_VENVS") != "1",
                       reason="set KAREL_HF_TEST_VENVS=1 to build virtual environments from the package index"),
]
REPO = Path(__file__).resolve().parents[1]
PACKAGED_SPACES = ("generation_accuracy", "semantic_probe")


def _transformers_floor() -> str:
    """The lowest transformers version pyproject.toml's dependencies allow."""
    import tomllib

    from packaging.requirements import Requirement

    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    requirement = next(Requirement(d) for d in dependencies if Requirement(d).name == "transformers")
    return next(s.version for s in requirement.specifier if s.operator == ">=")


def _venv(folder: Path, *requirements: str) -> Path:
    """A new virtual environment with `requirements` installed by pip; its python."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    python = folder / "bin" / "python"
    result = subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-5000:]
    return python


def _run(python: Path, code: str, *args, cwd: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HOME=str(cwd / "hf"))
    result = subprocess.run([str(python), "-c", code, *map(str, args)], env=env, cwd=cwd, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


FLOOR_CONSUMER = r"""
import importlib.util, json, sys
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
assert importlib.util.find_spec("karel_hf") is None
folder, prompt = sys.argv[1:3]
torch.set_num_threads(1)
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder).eval()
ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
with torch.no_grad():
    logits = model(ids).logits[0, -1]
    generated = model.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1]:]
print(json.dumps({"version": transformers.__version__, "tokenizer": type(tokenizer).__name__,
                  "ids": ids[0].tolist(), "logits": logits.tolist(), "generated": generated.tolist()}))
"""


def test_tokenizer_and_checkpoint_load_at_the_transformers_floor(tmp_path, tiny_dataset):
    import torch
    from transformers import Trainer, TrainingArguments, set_seed

    from karel_hf.data.formatting import split_sample
    from karel_hf.modeling import build_model
    from karel_hf.tokenizer import build_tokenizer

    floor = _transformers_floor()
    python = _venv(tmp_path / "floor", f"transformers=={floor}.*")
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # torch from this environment, after the floor's own packages (which shadow this environment's)
    Path(site, "torch_from_karel_hf_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    set_seed(0)
    tokenizer = build_tokenizer()
    model = build_model("tiny", tokenizer).eval()
    checkpoint = tmp_path / "checkpoint"
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "run"), report_to=[]),
                      processing_class=tokenizer)
    trainer.save_model(str(checkpoint))  # what the Trainer writes: model, generation config, tokenizer
    prompt, _ = split_sample(tiny_dataset["test"][0]["text"])
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits[0, -1]
        generated = model.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1]:]

    got = _run(python, FLOOR_CONSUMER, checkpoint, prompt, cwd=tmp_path)
    assert got["version"].startswith(floor) and got["tokenizer"] == "PreTrainedTokenizerFast"
    assert got["ids"] == ids[0].tolist()
    assert torch.allclose(torch.tensor(got["logits"]), logits, atol=1e-4)
    assert got["generated"] == generated.tolist()


SPACE_CONSUMER = r"""
import importlib.util, json, sys
for name in ("karel_hf", "torch", "transformers"):
    assert importlib.util.find_spec(name) is None, name
import evaluate
out = {}
for script, cases in zip(sys.argv[1::2], sys.argv[2::2]):
    metric = evaluate.load(script)
    out[script] = {case: metric.compute(**kwargs) for case, kwargs in json.load(open(cases)).items()}
print(json.dumps(out))
"""


def test_metric_spaces_install_from_the_index_and_compute(tmp_path):
    from test_hub import _expected_space_results, _generation_cases, _probe_cases

    from karel_hf import hub

    cases = {"generation_accuracy": _generation_cases(), "semantic_probe": _probe_cases()}
    expected_by_name = _expected_space_results(cases)
    scripts, args, expected = {}, [], {}
    for name in PACKAGED_SPACES:  # the trees as pushed, loaded from their folders
        folder = hub.write_dry_run(hub.plan_metric_push(name, "karel-test"), tmp_path / "spaces" / name) / "main"
        scripts[name] = folder / f"{name}.py"
        (tmp_path / f"{name}.json").write_text(json.dumps(cases[name]))
        args += [scripts[name], tmp_path / f"{name}.json"]
        expected[str(scripts[name])] = expected_by_name[name]
    requirements = [x for script in scripts.values() for x in ("-r", str(script.parent / "requirements.txt"))]
    python = _venv(tmp_path / "space-env", *requirements)
    got = _run(python, SPACE_CONSUMER, *args, cwd=tmp_path)
    assert got.keys() == expected.keys()
    for script, results in expected.items():
        for case, values in results.items():
            assert got[script][case] == pytest.approx(values, nan_ok=True), (script, case)
