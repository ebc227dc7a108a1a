"""Publishing to a Hub (`karel_hf.hub`, `karel-hf push`): dry-run trees and emulator-backed round trips.

The round trips use the real clients end to end: `karel-hf push` (a subprocess) -> huggingface_hub over
HTTP -> tests/hub_emulator.py on 127.0.0.1 (started and stopped here) -> `load_dataset`,
`from_pretrained(revision="step-N")` and `evaluate.load` in fresh processes. huggingface_hub, datasets
and evaluate read HF_ENDPOINT at import, so every client runs in a subprocess with its own environment.
`test_real_hub_round_trip` repeats them against a real Hub when KAREL_HF_HUB_ENDPOINT, KAREL_HF_HUB_TOKEN
and KAREL_HF_HUB_NAMESPACE are set.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hub_emulator import HubEmulator
from karel_hf import hub, model_card

FAKE_TOKEN = "hf_emulatorFAKEtoken0123456789abcdefXYZ"
NS = "karel-test"
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "trainer_state.json")
STEPS = (0, 2)
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "DEF", "run", "m(", "m)", "move", "turnLeft", "turnRight",
         "putMarker", "pickMarker", "IF", "c(", "c)", "frontIsClear", "i(", "i)", "WHILE", "w(", "w)"]

# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hub")


@pytest.fixture(scope="module")
def emulator():
    server = HubEmulator(token=FAKE_TOKEN)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tokenizer_dir(workdir) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    out = workdir / "tokenizer"
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def train_dir(workdir, tokenizer_dir) -> Path:
    """A Trainer-shaped output dir: checkpoint-0, checkpoint-2 (with training state) and the final model (step 4).

    checkpoint-0 has a card written by the trainer; checkpoint-2 and the top level have none (hub renders one)."""
    import shutil

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(1)
    out = workdir / "train"
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=32, vocab_size=len(VOCAB),
                        bos_token_id=1, eos_token_id=2, pad_token_id=0)

    def save(folder: Path, seed: int, log_history: list[dict], step: int) -> None:
        torch.manual_seed(seed)
        GPT2LMHeadModel(config).save_pretrained(folder)
        for name in tokenizer_dir.iterdir():
            shutil.copy(name, folder / name.name)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": log_history}))
        # a run config from before karel_hf masked tokens: the push must mask it
        (folder / "karel_run_config.json").write_text(json.dumps({"seed": seed, "versions": {"torch": "x"},
                                                                  "argv": ["--hub_token", FAKE_TOKEN]}))

    logs = [{"step": 0, "loss": 3.0912, "learning_rate": 0.0}, {"step": 2, "loss": 2.7461, "learning_rate": 5e-4},
            {"step": 2, "eval_loss": 2.6833}, {"step": 4, "loss": 2.3125}]
    for step in STEPS:
        ckpt = out / f"checkpoint-{step}"
        save(ckpt, seed=100 + step, log_history=[e for e in logs if e["step"] <= step], step=step)
        for name in TRAINING_STATE[:-1]:
            (ckpt / name).write_bytes(b"\x00training state " + name.encode())
    (out / "checkpoint-0" / "README.md").write_text("---\nlicense: mit\n---\n# trainer card at step 0\n")
    save(out, seed=7, log_history=logs, step=4)
    (out / "all_results.json").write_text(json.dumps({"eval_exact_match": 0.8125, "eval_loss": 2.5187,
                                                      "train_loss": 2.6021, "epoch": 1.0}))
    (out / "training_args.bin").write_bytes(b"\x00args")
    return out


@pytest.fixture(scope="module")
def export_dir(workdir, tokenizer_dir) -> Path:
    """A `karel-hf dataset export`-shaped folder: two configs of Parquet splits, a card and the tokenizer."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    out = workdir / "export"
    rows = {
        "cpu": {"train": ["DEF run m( move m)", "DEF run m( turnLeft m)", "DEF run m( putMarker m)"],
                "validation": ["DEF run m( pickMarker m)"]},
        "tiny": {"train": ["DEF run m( turnRight m)", "DEF run m( move move m)"]},
    }
    configs = []
    for config, splits in rows.items():
        for split, programs in splits.items():
            path = out / config / f"{split}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({"id": list(range(len(programs))), "program": programs}), path)
        files = "\n".join(f"  - split: {s}\n    path: {config}/{s}-*.parquet" for s in splits)
        configs.append(f"- config_name: {config}\n  data_files:\n{files}")
    card = ("---\nlicense: mit\nconfigs:\n" + "\n".join(configs) + "\n---\n\n# Karel programs\n\n"
            "| config | train | validation |\n|---|---|---|\n| cpu | 3 | 1 |\n| tiny | 2 | 0 |\n")
    (out / "README.md").write_text(card)
    shutil.copytree(tokenizer_dir, out / "tokenizer")
    return out


@pytest.fixture(scope="module")
def metric_dir(workdir) -> Path:
    """A self-contained evaluate module folder in the layout of karel_hf/metrics/<name>/."""
    folder = workdir / "metrics" / "toy_exact_match"
    folder.mkdir(parents=True)
    (folder / "toy_exact_match.py").write_text('''"""Exact match (a test fixture)."""
import datasets
import evaluate

_DESCRIPTION = "Fraction of predictions equal to their reference."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str), references (list of str)
Returns:
    exact_match (float)
Examples:
    >>> evaluate.load("toy_exact_match").compute(predictions=["a"], references=["a"])
    {'exact_match': 1.0}
"""
_CITATION = ""


def exact_match(predictions, references):
    return sum(p == r for p, r in zip(predictions, references)) / len(references)


class ToyExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        return {"exact_match": float(exact_match(predictions, references))}
''')
    (folder / "README.md").write_text("---\ntitle: toy_exact_match\nemoji: 🎯\ncolorFrom: blue\ncolorTo: green\n"
                                      "sdk: gradio\nsdk_version: 4.44.0\napp_file: app.py\npinned: false\n"
                                      "tags:\n- evaluate\n- metric\n---\n\n# toy_exact_match\n")
    (folder / "app.py").write_text("import evaluate\nfrom evaluate.utils import launch_gradio_widget\n\n"
                                   'launch_gradio_widget(evaluate.load("toy_exact_match"))\n')
    (folder / "requirements.txt").write_text("evaluate==0.4.6\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "toy_exact_match.cpython-311.pyc").write_bytes(b"\x00")
    return folder


@pytest.fixture(scope="module")
def traces_dir(workdir) -> Path:
    import datasets

    out = workdir / "traces-layer0"
    datasets.Dataset.from_dict({"example_id": [0, 0, 1], "step": [0, 1, 0],
                                "hidden": [[0.5, -1.0], [0.25, 2.0], [1.5, 0.0]],
                                "facing": ["north", "east", "south"]}).save_to_disk(str(out))
    return out


# -------------------------------------------------------------------------------------------- helpers


def _client_env(endpoint: str, home: Path, token: str | None = FAKE_TOKEN, xet: bool | None = False) -> dict:
    """A client environment for `endpoint`: online, its own HF_HOME, no proxies; Xet off (the emulator has none),
    or as in this process's environment when xet is None."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE",
                        "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
                        "https_proxy", "ALL_PROXY", "all_proxy")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_UPDATE_DOWNLOAD_COUNTS="0", NO_PROXY="127.0.0.1,localhost", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    if xet is not None:
        env["HF_HUB_DISABLE_XET"] = "0" if xet else "1"
    if token:
        env["HF_TOKEN"] = token
    return env


def _push(kind: str, src: Path, repo_id: str, endpoint: str, home: Path, *extra: str,
          token: str | None = FAKE_TOKEN, xet: bool | None = False) -> subprocess.CompletedProcess:
    """`karel-hf push KIND SRC --repo_id ID ...` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "karel_hf.cli", "push", kind, str(src), "--repo_id", repo_id, *extra],
                          env=_client_env(endpoint, home, token, xet), capture_output=True, text=True, timeout=600)


def _python(code: str, endpoint: str, home: Path, *args: str) -> dict:
    """Run `code` in a fresh process against `endpoint`; it prints one JSON line last."""
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=_client_env(endpoint, home),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert FAKE_TOKEN not in result.stdout + result.stderr
    return result.stdout


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _read_all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


INFERENCE_FILES = {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                   "tokenizer_config.json", "README.md", "karel_run_config.json"}

# ---------------------------------------------------------------------------------------------- tests


def test_importing_hub_touches_no_hub_client():
    code = "import sys, karel_hf.hub; print(sorted(m for m in ('huggingface_hub', 'datasets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_model_dry_run_tree(train_dir, workdir, monkeypatch):
    monkeypatch.setattr(model_card, "default_template", lambda: None)  # the minimal card, whatever templates exist
    plan = hub.plan_model_push(train_dir, f"{NS}/karel-gpt2")
    out = hub.write_dry_run(plan, workdir / "dry-model")

    assert [r.revision for r in plan.revisions] == ["step-0", "step-2", "main"]  # main last
    assert _tree(out) >= {"plan.json"}
    step_tree = _tree(out / "step-2")
    assert INFERENCE_FILES <= step_tree
    assert not step_tree & set(TRAINING_STATE)
    assert (out / "step-2" / "model.safetensors").read_bytes() == (train_dir / "checkpoint-2" / "model.safetensors").read_bytes()
    assert (out / "main" / "model.safetensors").read_bytes() == (train_dir / "model.safetensors").read_bytes()
    assert _tree(out / "main") == INFERENCE_FILES | {"all_results.json", "revisions.json"} | (
        _tree(out / "step-2") - INFERENCE_FILES)

    card = (out / "main" / "README.md").read_text()
    assert "0.8125" in card and "2.519" in card  # measured results from all_results.json
    assert "1 layers, hidden size 16, 2 heads" in card and "step-2" in card and "{" not in card.split("```")[0]
    step_card = (out / "step-2" / "README.md").read_text()
    assert "2.746" in step_card and "2.683" in step_card  # loss / eval_loss logged at step 2
    assert 'revision="step-2"' in step_card and "0.8125" not in step_card
    assert (out / "step-0" / "README.md").read_text() == (train_dir / "checkpoint-0" / "README.md").read_text()

    manifest = json.loads((out / "main" / "revisions.json").read_text())
    assert manifest["revisions"] == [{"revision": "step-0", "step": 0}, {"revision": "step-2", "step": 2}]
    described = json.loads((out / "plan.json").read_text())
    assert [r["revision"] for r in described["revisions"]] == ["step-0", "step-2", "main"]
    assert {f["path"] for f in described["revisions"][1]["files"]} == step_tree


def test_model_card_template_is_used_only_when_it_can_be_filled(train_dir, workdir, caplog):
    from safetensors.numpy import load_file

    def main_card(template_text: str) -> str:
        template = workdir / "template.md"
        template.write_text(template_text)
        plan = hub.plan_model_push(train_dir, f"{NS}/karel-gpt2", card_template=template)
        return next(f for f in plan.revisions[-1].files if f.path_in_repo == "README.md").content.decode()

    count = sum(t.size for t in load_file(train_dir / "model.safetensors").values())
    card = main_card("---\nlicense: mit\n---\n# ${model_name}\nexact match ${eval_exact_match}, "
                     "${num_parameters} parameters, step ${global_step}\n")
    assert card.startswith(f"---\nlicense: mit\n---\n# karel-gpt2\nexact match 0.8125, {count:,} parameters, step 4")
    card = main_card("# ${model_name} trained with preset ${preset}\n")  # nothing records the preset
    assert "${" not in card and "| eval_exact_match | 0.8125 |" in card and "needs ${preset}" in caplog.text


def test_dataset_and_metric_dry_run_trees(export_dir, metric_dir, workdir):
    out = hub.write_dry_run(hub.plan_dataset_push(export_dir, f"{NS}/karel-data"), workdir / "dry-data")
    assert _tree(out / "main") == _tree(export_dir)
    assert (out / "main" / "README.md").read_text() == (export_dir / "README.md").read_text()

    plan = hub.plan_metric_push(metric_dir, NS)  # a namespace alone: the folder name is the Space name
    assert (plan.repo_id, plan.repo_type, plan.space_sdk) == (f"{NS}/toy_exact_match", "space", "gradio")
    out = hub.write_dry_run(plan, workdir / "dry-metric")
    assert _tree(out / "main") == {"toy_exact_match.py", "README.md", "app.py", "requirements.txt"}


def test_plans_reject_bad_input_with_clear_errors(train_dir, metric_dir, export_dir, workdir):
    with pytest.raises(ValueError, match="--repo_id"):
        hub.plan_dataset_push(export_dir, "no-namespace")
    with pytest.raises(ValueError, match="toy.py"):
        hub.plan_metric_push(metric_dir, f"{NS}/toy")
    with pytest.raises(ValueError, match="safetensors"):
        hub.plan_model_push(workdir / "metrics", f"{NS}/m")
    with pytest.raises(ValueError, match="not empty"):
        hub.write_dry_run(hub.plan_dataset_push(export_dir, f"{NS}/d"), export_dir)


def test_cli_dry_run_never_writes_the_token(train_dir, workdir):
    out = workdir / "dry-cli"
    # the endpoint is unroutable: a dry run sends nothing
    result = _push("model", train_dir, f"{NS}/karel-gpt2", "http://127.0.0.1:9", workdir / "hf-dry", "--dry-run",
                   str(out))
    assert "dry run" in _ok(result)
    assert _tree(out) >= {"plan.json", "main/README.md", "step-0/README.md", "step-2/model.safetensors"}
    assert FAKE_TOKEN.encode() not in _read_all_bytes(out)


CONSUMER = r"""
import json, sys, traceback
data_repo, traces_repo, model_repo, train_dir, metric_repo = sys.argv[1:6]
out = {}


def section(name):
    def run(fn):
        try:
            out[name] = fn()
        except Exception:
            out[name] = {"error": traceback.format_exc()[-3000:]}
    return run


@section("dataset")
def _():
    from datasets import load_dataset
    return {f"{config}/{split}": load_dataset(repo, config, split=split).to_dict()
            for repo, config, split in [(data_repo, "cpu", "train"), (data_repo, "cpu", "validation"),
                                        (data_repo, "tiny", "train"), (traces_repo, "layer0", "train")]}


@section("model")
def _():
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from huggingface_hub import HfApi, hf_hub_download
    torch.set_num_threads(1)
    got = {}
    for revision, local in (("step-2", "checkpoint-2"), ("step-0", "checkpoint-0"), ("main", ".")):
        model = AutoModelForCausalLM.from_pretrained(model_repo, revision=revision)
        state, saved = model.state_dict(), load_file(f"{train_dir}/{local}/model.safetensors")
        got[revision] = all(torch.equal(state[k], v) for k, v in saved.items())
    got["tokenizer"] = AutoTokenizer.from_pretrained(model_repo, revision="step-2")("DEF run m( move m)")["input_ids"]
    api = HfApi()
    got["files"] = {b.name: sorted(api.list_repo_files(model_repo, revision=b.name))
                    for b in api.list_repo_refs(model_repo).branches}
    got["manifest"] = json.load(open(hf_hub_download(model_repo, "revisions.json")))
    got["step_card"] = open(hf_hub_download(model_repo, "README.md", revision="step-2")).read()
    return got


@section("metric")
def _():
    import evaluate
    metric = evaluate.load(metric_repo)
    return metric.compute(predictions=["move", "turnLeft", "x"], references=["move", "turnLeft", "y"])


print(json.dumps(out))
"""

DATA_REPO, TRACES_REPO, MODEL_REPO, METRIC_REPO = (f"{NS}/karel-data", f"{NS}/karel-traces", f"{NS}/karel-gpt2",
                                                   f"{NS}/toy_exact_match")


@pytest.fixture(scope="module")
def published(emulator, export_dir, traces_dir, train_dir, metric_dir, workdir) -> dict:
    """Push everything with `karel-hf push`, then load it all back in ONE fresh process (imports are slow)."""
    home = workdir / "hf-push"
    pushes = {
        "dataset": _push("dataset", export_dir, DATA_REPO, emulator.url, home),
        "traces": _push("traces", traces_dir, TRACES_REPO, emulator.url, home, "--config_name", "layer0"),
        "model": _push("model", train_dir, MODEL_REPO, emulator.url, home),
        "metric": _push("metric", metric_dir, NS, emulator.url, home),  # the namespace alone: folder = Space name
    }
    loaded = _python(CONSUMER, emulator.url, workdir / "hf-consumer", DATA_REPO, TRACES_REPO, MODEL_REPO, train_dir,
                     METRIC_REPO)
    return {"push": pushes, "loaded": loaded}


def _loaded(published: dict, section: str) -> dict:
    got = published["loaded"][section]
    assert "error" not in got, got.get("error")
    return got


def test_dataset_and_traces_round_trip(published):
    assert f"{DATA_REPO}@main" in _ok(published["push"]["dataset"])
    _ok(published["push"]["traces"])
    got = _loaded(published, "dataset")
    assert got["cpu/train"]["program"] == ["DEF run m( move m)", "DEF run m( turnLeft m)", "DEF run m( putMarker m)"]
    assert got["cpu/validation"]["program"] == ["DEF run m( pickMarker m)"]
    assert got["tiny/train"]["id"] == [0, 1]
    assert got["layer0/train"]["hidden"] == [[0.5, -1.0], [0.25, 2.0], [1.5, 0.0]]
    assert got["layer0/train"]["facing"] == ["north", "east", "south"]


def test_model_round_trip_at_step_revisions(published, emulator, train_dir, workdir):
    stdout = _ok(published["push"]["model"])
    assert stdout.index("@step-0") < stdout.index("@step-2") < stdout.index("@main")
    got = _loaded(published, "model")
    assert got["step-2"] and got["step-0"] and got["main"]  # weights equal those saved at that step
    assert got["tokenizer"] == [4, 5, 6, 8, 7]
    assert set(got["files"]) == {"main", "step-0", "step-2"}
    step_files = set(got["files"]["step-2"])
    assert INFERENCE_FILES | {".gitattributes"} <= step_files
    assert step_files - INFERENCE_FILES - {".gitattributes"} <= set(hub._TOKENIZER_FILES)  # no training state
    assert [r["revision"] for r in got["manifest"]["revisions"]] == ["step-0", "step-2"]
    assert "2.746" in got["step_card"]
    assert FAKE_TOKEN.encode() not in _read_all_bytes(emulator.root)  # nothing pushed carries the token

    # pushing again is idempotent: every revision ends with the same tree
    _ok(_push("model", train_dir, MODEL_REPO, emulator.url, workdir / "hf-push"))
    stored = emulator.repos[("model", MODEL_REPO)]
    assert {b: sorted(stored.commits[oid].files) for b, oid in stored.refs.items()} == got["files"]


def test_metric_round_trip(published, emulator):
    assert f"space {METRIC_REPO}@main" in _ok(published["push"]["metric"])
    assert emulator.repos[("space", METRIC_REPO)].sdk == "gradio"
    assert _loaded(published, "metric") == {"exact_match": pytest.approx(2 / 3)}


# ------------------------------------------------------------------ karel_hf's metric Spaces, without karel_hf

SPACE_CONSUMER = r"""
import importlib.util, json, sys
for name in ("karel_hf", "torch", "transformers"):  # not installed here
    assert importlib.util.find_spec(name) is None, name
import evaluate

out = {}
for repo, inputs_path in zip(sys.argv[1::2], sys.argv[2::2]):
    metric = evaluate.load(repo)
    out[repo] = {case: metric.compute(**kwargs) for case, kwargs in json.load(open(inputs_path)).items()}
print(json.dumps(out))
"""
PACKAGED_SPACES = ("generation_accuracy", "semantic_probe")


def _generation_cases() -> dict:
    """Predictions (right, wrong, unparseable) for the authors' records, as dicts and as JSON strings."""
    from karel_hf.karel import format_program, parse

    path = Path(__file__).resolve().parent / "data" / "reference" / "straight_line_200.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()[:30]]
    predictions = [format_program(parse(r["code"]), "lines") if i % 3 == 0 else
                   "def run() {\n  move()\n}" if i % 3 == 1 else "def run() { move(" for i, r in enumerate(records)]
    return {"records": {"predictions": predictions, "references": records},
            "json": {"predictions": predictions, "references": [json.dumps(r) for r in records], "num_spec_pairs": 3}}


WITHOUT = ("karel_hf", "torch", "torchgen", "functorch", "transformers", "accelerate")


def _site_without(folder: Path, blocked=WITHOUT) -> Path:
    """A folder of links to this environment's installed packages, less `blocked` (modules, dist-info and
    karel_hf's editable-install hooks): with `python -S` and PYTHONPATH=folder, they are not installed."""
    import sysconfig

    if folder.exists():
        return folder
    folder.mkdir(parents=True)
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        distribution = re.split(r"-\d", entry.name)[0].removesuffix(".py")
        if "karel_hf" in entry.name or distribution in blocked or entry.suffix == ".pth":
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


def _probe_cases() -> dict:
    """Model states with one readable and one unreadable label, with the controls' inputs (seeded)."""
    import numpy as np

    rng = np.random.default_rng(7)
    labels = rng.integers(4, size=(60, 2))
    states = np.concatenate([np.eye(4)[labels[:, 0]], rng.normal(size=(60, 3))], axis=1) + 0.1 * rng.normal(size=(60, 7))
    common = {"predictions": states.round(4).tolist(), "references": labels.tolist(),
              "split": ["train"] * 36 + ["test"] * 24, "task_names": ["readable", "noise"]}
    return {"plain": {**common, "controls": False},
            "controls": {**common, "groups": [i // 3 for i in range(60)], "prompt_facts": np.eye(2)[labels[:, 1] % 2].tolist(),
                         "initial_labels": np.zeros_like(labels).tolist(), "output_labels": labels[:, ::-1].tolist(),
                         "num_bootstrap": 200, "seed": 3}}


def _expected_space_results(cases: dict[str, dict]) -> dict:
    """What karel_hf computes for the cases, in this process (the plain function; the probe's module)."""
    from karel_hf.metrics import load_metric
    from karel_hf.metrics.generation import compute_generation_accuracy

    probe = load_metric("semantic_probe")
    return {"generation_accuracy": {c: compute_generation_accuracy(**kw) for c, kw in cases["generation_accuracy"].items()},
            "semantic_probe": {c: probe.compute(**kw) for c, kw in cases["semantic_probe"].items()}}


def _space_consumer(endpoint: str, home: Path, cases: dict[str, Path]) -> dict:
    """SPACE_CONSUMER in a fresh process that has evaluate and its dependencies but not karel_hf, torch
    or transformers (`python -S` over `_site_without`)."""
    env = _client_env(endpoint, home)
    env["PYTHONPATH"] = str(_site_without(home.parent / "site-without-karel-hf"))
    args = [x for repo, path in cases.items() for x in (repo, str(path))]
    result = subprocess.run([sys.executable, "-S", "-c", SPACE_CONSUMER, *args], env=env, cwd=home.parent,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


class _StaticHub:
    """A second, independent Hub stand-in for `evaluate.load`: a plain stdlib static file server over
    `<root>/spaces/<ns>/<name>/resolve/main/<path>` (what evaluate requests); anything else is a 404."""

    def __init__(self, root: Path):
        import functools
        import threading
        from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def spaces(emulator, workdir) -> dict:
    """karel_hf's metric folders pushed as Spaces (to the emulator, and as dry runs served by a static server),
    then loaded back with `evaluate.load` in processes where karel_hf cannot be imported."""
    import shutil

    cases, dry, pushes = {}, {}, {}
    inputs = {"generation_accuracy": _generation_cases(), "semantic_probe": _probe_cases()}
    expected = {f"{NS}/{name}": results for name, results in _expected_space_results(inputs).items()}
    static_root = workdir / "static-hub"
    for name in PACKAGED_SPACES:
        repo = f"{NS}/{name}"
        cases[repo] = workdir / "space-cases" / f"{name}.json"
        cases[repo].parent.mkdir(parents=True, exist_ok=True)
        cases[repo].write_text(json.dumps(inputs[name]))
        pushes[repo] = _push("metric", name, NS, emulator.url, workdir / "hf-push")  # a packaged metric, by name
        out = workdir / "dry-spaces" / name
        _ok(_push("metric", name, NS, "http://127.0.0.1:9", workdir / "hf-dry", "--dry-run", str(out)))
        dry[repo] = out / "main"
        shutil.copytree(out / "main", static_root / "spaces" / NS / name / "resolve" / "main")
    loaded = _space_consumer(emulator.url, workdir / "hf-spaces", cases)
    with _StaticHub(static_root) as static:
        loaded_static = _space_consumer(static.url, workdir / "hf-spaces-static", cases)
    return {"push": pushes, "dry": dry, "expected": expected, "emulator": loaded, "static": loaded_static}


def test_metric_spaces_compute_without_karel_hf(spaces, emulator):
    for repo, push in spaces["push"].items():
        assert f"space {repo}@main" in _ok(push)
        stored = emulator.repos[("space", repo)]
        files = stored.commits[stored.refs["main"]].files
        pushed = {path: emulator.blob_path(blob.sha256).read_bytes() for path, blob in files.items()
                  if path != ".gitattributes"}
        assert pushed == {p: (spaces["dry"][repo] / p).read_bytes() for p in _tree(spaces["dry"][repo])}
        assert b"karel_hf" not in pushed["requirements.txt"]
    for hub_name in ("emulator", "static"):  # the same numbers as karel_hf's own code, NaN where it has NaN
        assert spaces[hub_name].keys() == spaces["expected"].keys()
        for repo, results in spaces["expected"].items():
            for case, expected in results.items():
                assert spaces[hub_name][repo][case] == pytest.approx(expected, nan_ok=True), (hub_name, repo, case)
    results = spaces["expected"][f"{NS}/generation_accuracy"]
    assert 0.2 < results["records"]["accuracy"] < 0.5 and results["records"]["parse_rate"] < 1.0
    probe = spaces["expected"][f"{NS}/semantic_probe"]
    assert probe["plain"]["accuracy_readable"] > 0.9 > 0.5 > probe["plain"]["accuracy_noise"]
    assert 0.0 <= probe["controls"]["control_prompt_only"] <= 1.0 and probe["controls"]["num_test"] == 24


@pytest.mark.parametrize("name, package, shipped", [
    ("generation_accuracy", "karel", ("world.py", "program.py", "interpreter.py", "scoring.py")),
    ("semantic_probe", "probing", ("probes.py",)),
])
def test_packaged_metric_space_tree(workdir, name, package, shipped):
    import karel_hf

    plan = hub.plan_metric_push(name, NS)  # the packaged folder, by name
    assert plan.repo_id == f"{NS}/{name}"
    out = hub.write_dry_run(plan, workdir / f"dry-packaged-{name}") / "main"
    assert _tree(out) == {f"{name}.py", "README.md", "app.py", "requirements.txt", *shipped}
    source = Path(karel_hf.__file__).parent / package
    for module in shipped:  # regular files holding the package's modules, byte for byte
        assert not (out / module).is_symlink() and (out / module).read_bytes() == (source / module).read_bytes()
    card = (out / "README.md").read_text()
    assert f'evaluate.load("{NS}/{name}")' in card and "${" not in card
    assert not re.search(r"<[^<>\n]*(namespace|repo|folder)[^<>\n]*>|path/to", card)


def test_metric_space_checks_name_the_problem(metric_dir, workdir):
    def broken(name: str, edit) -> Path:
        folder = workdir / "broken-metrics" / name / "toy_exact_match"
        shutil.copytree(metric_dir, folder, ignore=shutil.ignore_patterns("__pycache__"))
        edit(folder)
        return folder

    def script_edit(old: str, new: str):
        def edit(folder: Path):
            script = folder / "toy_exact_match.py"
            script.write_text(script.read_text().replace(old, new, 1))
        return edit

    import shutil

    cases = {
        "karel_hf": (script_edit("import evaluate\n", "import evaluate\nfrom karel_hf import CITATION\n"),
                     "imports karel_hf, which a Space has only if requirements.txt installs it"),
        "sibling-missing": (script_edit("import evaluate\n", "import evaluate\nfrom .helpers import f\n"),
                            "has no helpers.py"),
        "in-a-block": (script_edit("import evaluate\n", "import evaluate\ntry:\n    from .helpers import f\nexcept ImportError:\n    f = None\n"),
                       "inside a block"),
        "requirement": (lambda folder: (folder / "requirements.txt").write_text("evaluate\nkarel_hf\n"),
                        "names karel_hf, which is not on the package index"),
        "url": (lambda folder: (folder / "requirements.txt").write_text("evaluate @ https://example.org/e.whl\n"),
                "from the package index only"),
    }

    def transitive(folder: Path):
        (folder / "helpers.py").write_text("from .inner import g\n\n\ndef f():\n    return g()\n")
        (folder / "inner.py").write_text("def g():\n    return 1\n")
        script_edit("import evaluate\n", "import evaluate\n\nfrom .helpers import f\n")(folder)

    cases["transitive"] = (transitive, "imports .inner, which toy_exact_match.py does not import")
    for name, (edit, message) in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            hub.plan_metric_push(broken(name, edit), NS)


# ----------------------------------------------------------------------------- no secret in any file

RUN_TOKEN, ENV_TOKEN = "hf_runFLAGsecret0123456789abcdefghij", "hf_runENVsecret0123456789abcdefghijk"


@pytest.fixture(scope="module")
def token_runs(workdir) -> dict[str, Path]:
    """Two 1-step tiny training runs (`karel-hf train`'s main, in this process): one given `--hub_token RUN_TOKEN`,
    one with HF_TOKEN=ENV_TOKEN in its environment."""
    from karel_hf.training import main as train_main

    runs = {}
    for name, flags, token in (("flag", ["--hub_token", RUN_TOKEN], None), ("env", [], ENV_TOKEN)):
        out = workdir / f"token-run-{name}"
        saved = os.environ.pop("HF_TOKEN", None)
        if token:
            os.environ["HF_TOKEN"] = token
        try:
            assert train_main(["--preset", "tiny", "--max_steps", "1", "--save_steps", "1", "--generation_eval_steps",
                               "1", "--generation_eval_samples", "4", "--report_to", "tensorboard",
                               "--dataset_cache_dir", str(workdir / "karel-cache"), *flags,
                               "--output_dir", str(out)]) == 0
        finally:
            os.environ.pop("HF_TOKEN", None)
            if saved is not None:
                os.environ["HF_TOKEN"] = saved
        runs[name] = out
    return runs


@pytest.fixture(scope="module")
def pushed_runs(token_runs, emulator, workdir) -> dict[str, dict]:
    """Each token run as a dry run (in this process) and pushed with `karel-hf push model` (the env run with
    `--dataset_repo_id`, for the card tests)."""
    pushed = {}
    for name, run in token_runs.items():
        repo = f"{NS}/karel-gpt2-cards" if name == "env" else f"{NS}/token-run-{name}"
        dataset_repo = f"{NS}/karel-tiny-data" if name == "env" else None
        extra = ("--dataset_repo_id", dataset_repo) if dataset_repo else ()
        dry = hub.write_dry_run(hub.plan_model_push(run, repo, dataset_repo_id=dataset_repo),
                                workdir / f"dry-token-run-{name}")
        pushed[name] = {"repo": repo, "dry": dry,
                        "push": _push("model", run, repo, emulator.url, workdir / "hf-push", *extra)}
    return pushed


def test_no_token_in_any_file_of_a_run_or_its_push(token_runs, pushed_runs, emulator):
    for name, run in token_runs.items():
        written = _tree(run)
        assert {"training_args.bin", "karel_run_config.json", "checkpoint-1/training_args.bin"} <= written
        assert any(p.startswith("runs/") for p in written)  # TensorBoard's event files too
        config = json.loads((run / "karel_run_config.json").read_text())
        assert config["training_args"]["hub_token"] == "<HUB_TOKEN>"
        if name == "flag":
            assert config["argv"][config["argv"].index("--hub_token") + 1] == "<HUB_TOKEN>"
        _ok(pushed_runs[name]["push"])
        stored = emulator.repos[("model", pushed_runs[name]["repo"])]
        assert set(stored.refs) == {"main", "step-0", "step-1"}
        for root in (run, pushed_runs[name]["dry"], emulator.root):  # every byte written: locally, dry run, Hub
            everything = _read_all_bytes(root)
            assert RUN_TOKEN.encode() not in everything and ENV_TOKEN.encode() not in everything, (name, root)


def test_push_refuses_a_file_holding_its_token(emulator, export_dir, workdir):
    import shutil

    leaky = workdir / "export-with-token"
    shutil.copytree(export_dir, leaky)
    (leaky / "notes.md").write_text(f"pushed with {FAKE_TOKEN}\n")
    result = _push("dataset", leaky, f"{NS}/leaky", emulator.url, workdir / "hf-push")
    assert result.returncode != 0 and "holds the Hub token: nothing was sent" in result.stderr
    assert FAKE_TOKEN not in result.stderr and ("dataset", f"{NS}/leaky") not in emulator.repos


# ------------------------------------------------------------------------------ cards for the repository

CARD_CONSUMER = r"""
import json, re, sys
from huggingface_hub import hf_hub_download
data_repo, model_repo = sys.argv[1:3]


def code_blocks(repo, heading, **kwargs):
    text = open(hf_hub_download(repo, "README.md", **kwargs)).read()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


out = {}
scope = {}
for block in code_blocks(data_repo, "## How to load", repo_type="dataset"):  # as written in the card
    exec(block, scope)
out["dataset"] = {"rows": len(scope["ds"]), "text_ids": scope["tok"](scope["ds"][0]["text"])["input_ids"][:8]}
scope = {}
for block in code_blocks(model_repo, "## How to use"):
    exec(block, scope)
out["model"] = {"vocab": scope["model"].config.vocab_size, "bos": scope["tokenizer"].bos_token}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def real_export(workdir) -> Path:
    """`karel-hf dataset export`'s own folder for a small tiny config (its real card)."""
    from karel_hf.data.export import export_dataset

    return export_dataset("tiny", workdir / "real-export", cache_dir=str(workdir / "karel-cache"),
                          train_size=40, validation_size=8, test_size=8)


@pytest.fixture(scope="module")
def cards(emulator, real_export, pushed_runs, workdir) -> dict:
    """The real export and a real run pushed with their cards; the cards' code run as written, in a fresh process."""
    data_repo, model_repo = f"{NS}/karel-tiny-data", pushed_runs["env"]["repo"]
    _ok(_push("dataset", real_export, data_repo, emulator.url, workdir / "hf-push"))
    _ok(pushed_runs["env"]["push"])
    result = subprocess.run([sys.executable, "-c", CARD_CONSUMER, data_repo, model_repo],
                            env=_client_env(emulator.url, workdir / "hf-cards"), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return {"data_repo": data_repo, "model_repo": model_repo, "stderr": result.stderr,
            "loaded": json.loads(result.stdout.strip().splitlines()[-1])}


def _stored_text(emulator, repo_type: str, repo_id: str, branch: str, path: str = "README.md") -> str:
    stored = emulator.repos[(repo_type, repo_id)]
    blob = stored.commits[stored.refs[branch]].files[path]
    return emulator.blob_path(blob.sha256).read_text()


def test_card_code_runs_as_written_against_the_hub(cards, real_export):
    from datasets import load_dataset

    local = load_dataset(str(real_export), "tiny", split="test")
    assert cards["loaded"]["dataset"]["rows"] == len(local) == 8
    assert cards["loaded"]["dataset"]["text_ids"][0] == 1  # <s>, from the tokenizer in the dataset repo
    assert cards["loaded"]["model"] == {"vocab": cards["loaded"]["model"]["vocab"], "bos": "<s>"}
    assert "Ignoring part of dataset_info" not in cards["stderr"]  # num_bytes is there: datasets keeps the infos


def _without_section(text: str, heading: str) -> str:
    before, after = text.split(heading, 1)
    return before + "\n## " + after.split("\n## ", 1)[1]


def test_cards_name_the_repositories_and_validate(cards, emulator, real_export):
    from huggingface_hub import DatasetCard

    from karel_hf.model_card import check_card

    data_repo, model_repo = cards["data_repo"], cards["model_repo"]
    dataset_card = DatasetCard(_stored_text(emulator, "dataset", data_repo, "main"))
    assert f'load_dataset("{data_repo}", "tiny", split="test")' in dataset_card.text
    local_card = DatasetCard((real_export / "README.md").read_text())
    assert local_card.data == dataset_card.data  # only the How to load section differs
    assert _without_section(local_card.text, "## How to load") == _without_section(dataset_card.text, "## How to load")
    info = dataset_card.data.to_dict()["dataset_info"]
    assert [s["num_bytes"] > 0 for s in info["splits"]] == [True] * 3 and info["download_size"] > 0
    stored = emulator.repos[("model", model_repo)]
    assert set(stored.refs) == {"main", "step-0", "step-1"}
    validated = [r for r in emulator.requests if r[:2] == ("POST", "/api/validate-yaml")]
    assert len(validated) >= 4  # the Hub's check of each card before the push: 3 model branches, 1 dataset
    for branch in stored.refs:
        card = _stored_text(emulator, "model", model_repo, branch)
        data = check_card(card, model_name="karel-gpt2-cards")  # YAML parses, model-index round-trips
        assert data.datasets == [data_repo] and f"](/datasets/{data_repo})" in card
        revision = "" if branch == "main" else f', revision="{branch}"'
        assert f'AutoModelForCausalLM.from_pretrained("{model_repo}"{revision})' in card
        if data.eval_results:
            assert {r.dataset_type for r in data.eval_results} == {data_repo}
    for (repo_type, repo_id), repo in emulator.repos.items():  # no placeholder in any card pushed by any test
        for branch, oid in repo.refs.items():
            if "README.md" in repo.commits[oid].files:
                text = _stored_text(emulator, repo_type, repo_id, branch)
                assert not re.search(r"\$\{\w+\}|<(this|your|namespace)[^<>\n]*>", text), (repo_id, branch)


@pytest.mark.parametrize("failing, completed", [("step-2", ["step-0"]), ("main", ["step-0", "step-2"])])
def test_push_failing_halfway_publishes_nothing_partial(emulator, train_dir, workdir, failing, completed):
    repo = f"{NS}/karel-fails-at-{failing}"
    emulator.fail_commits.add((repo, failing))
    result = _push("model", train_dir, repo, emulator.url, workdir / "hf-push")
    assert result.returncode != 0
    assert FAKE_TOKEN not in result.stdout + result.stderr
    assert f"failed at revision {failing}" in result.stderr
    assert f"completed revisions: {', '.join(completed)}" in result.stderr
    assert "revisions.json on main was not updated" in result.stderr

    stored = emulator.repos[("model", repo)]
    main = stored.commits[stored.refs["main"]]
    assert set(main.files) == {".gitattributes"}  # no manifest, no final model: main claims nothing
    assert failing == "main" or failing not in stored.refs  # the failed step branch was deleted again
    for branch in completed:  # what was published is complete
        assert INFERENCE_FILES <= set(stored.commits[stored.refs[branch]].files)


def test_push_without_token_fails_clearly(emulator, export_dir, workdir):
    result = _push("dataset", export_dir, f"{NS}/no-token", emulator.url, workdir / "hf-notoken", token=None)
    assert result.returncode != 0 and "no Hugging Face token found" in result.stderr


@pytest.mark.realhub
def test_real_hub_round_trip(train_dir, export_dir, traces_dir, metric_dir, workdir):
    """Opt-in: the same pushes and loads against a real Hub (private repos, deleted afterwards).

    Xet is as in the caller's environment (on by default with hf_xet installed, as users get it)."""
    import shutil

    endpoint, token, namespace = (os.environ.get(f"KAREL_HF_HUB_{k}") for k in ("ENDPOINT", "TOKEN", "NAMESPACE"))
    if not (endpoint and token and namespace):
        pytest.skip("set KAREL_HF_HUB_ENDPOINT, KAREL_HF_HUB_TOKEN and KAREL_HF_HUB_NAMESPACE to run against a Hub")
    suffix = uuid.uuid4().hex[:8]
    metric_name = f"toy_exact_match_{suffix}"
    metric_copy = workdir / "real-metrics" / metric_name
    shutil.copytree(metric_dir, metric_copy, ignore=shutil.ignore_patterns("__pycache__"))
    (metric_copy / "toy_exact_match.py").rename(metric_copy / f"{metric_name}.py")
    repos = {"dataset": (f"{namespace}/karel-hf-test-data-{suffix}", "dataset"),
             "traces": (f"{namespace}/karel-hf-test-traces-{suffix}", "dataset"),
             "model": (f"{namespace}/karel-hf-test-gpt2-{suffix}", "model"),
             "metric": (f"{namespace}/{metric_name}", "space")}
    sources = {"dataset": export_dir, "traces": traces_dir, "model": train_dir, "metric": metric_copy}
    home = workdir / "hf-real"
    try:
        for kind, (repo_id, _) in repos.items():
            extra = ("--config_name", "layer0") if kind == "traces" else ()
            result = _push(kind, sources[kind], repo_id, endpoint, home, "--private", *extra, token=token, xet=None)
            assert token not in result.stdout + result.stderr
            assert result.returncode == 0, result.stderr[-3000:]
        result = subprocess.run([sys.executable, "-c", CONSUMER, repos["dataset"][0], repos["traces"][0],
                                 repos["model"][0], str(train_dir), repos["metric"][0]],
                                env=_client_env(endpoint, home, token, xet=None), capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        loaded = {"loaded": json.loads(result.stdout.splitlines()[-1])}
        assert _loaded(loaded, "dataset")["cpu/train"]["id"] == [0, 1, 2]
        got = _loaded(loaded, "model")
        assert got["step-2"] and got["step-0"] and got["main"]
        assert _loaded(loaded, "metric") == {"exact_match": pytest.approx(2 / 3)}
    finally:
        cleanup = ("import sys\nfrom huggingface_hub import HfApi\napi = HfApi()\n"
                   "for repo_id, repo_type in zip(sys.argv[1::2], sys.argv[2::2]):\n"
                   "    api.delete_repo(repo_id, repo_type=repo_type, missing_ok=True)\n")
        subprocess.run([sys.executable, "-c", cleanup, *[x for pair in repos.values() for x in pair]],
                       env=_client_env(endpoint, home, token), capture_output=True, timeout=300)
