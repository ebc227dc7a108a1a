"""Faults: a corrupted trace cache is rebuilt, a killed trace build leaves no temporary folder behind
once the next build starts, and the package never runs host code (no eval/exec/pickle/
trust_remote_code). Resuming past a torn checkpoint is in tests/test_training.py, CLI errors for
unwritable or file output paths in tests/test_cli_errors.py."""

import io
import os
import signal
import subprocess
import sys
import time
import tokenize
from pathlib import Path

import numpy as np
import pytest

from karel_hf import decoding
from karel_hf.data.formatting import format_prompt, parse_sample
from karel_hf.karel import World, execute, parse
from karel_hf.karel.corpus_config import CorpusConfig
from karel_hf.karel.sampling import generate
from karel_hf.probing import traces

REPO = Path(__file__).resolve().parents[1]


class _Tokenizer:
    def get_vocab(self):
        return {"a": 0}


def _rows(n: int = 6) -> list[dict]:
    batch = generate(CorpusConfig(num_programs=n, seed=3), 0, n)
    return [{"id": i, "inputs": batch.inputs[i], "outputs": batch.outputs[i], "program": batch.programs[i]}
            for i in range(n)]


def _fake_decode(rows):
    """`decoding.decode` that writes each row's reference program, with one-hot direction states."""
    by_prompt = {format_prompt(r["inputs"][:5], r["outputs"][:5]): r["program"] for r in rows}
    calls = []

    def decode(model, tokenizer, prompts, **kwargs):
        calls.append(len(prompts))
        texts, states = [], []
        for prompt in prompts:
            text = by_prompt[prompt]
            world = World.from_view_codes(parse_sample(prompt).inputs[0])
            directions = [s.direction for s in execute(parse(text), world, trace=True).states]
            texts.append(text)
            states.append(np.eye(4, 8, dtype=np.float32)[directions])
        return decoding.DecodeOutput(programs=texts, num_actions=[len(s) for s in states], action_states=states,
                                     code_states=[np.zeros(8, dtype=np.float32)] * len(states))

    decode.calls = calls
    return decode


KWARGS = dict(model_fingerprint="model-a", semantics=("original",), progress=False)


@pytest.mark.parametrize("damage", ["truncate the data", "garble the state", "drop the config"])
def test_a_corrupted_trace_cache_is_named_and_rebuilt(monkeypatch, tmp_path, caplog, damage):
    rows = _rows()
    fake = _fake_decode(rows)
    monkeypatch.setattr(decoding, "decode", fake)
    first = traces.build_trace_dataset(None, _Tokenizer(), rows, cache_dir=tmp_path, **KWARGS).to_dict()
    (cached,) = tmp_path.glob("traces-*")
    if damage == "truncate the data":
        (arrow,) = cached.glob("*.arrow")
        arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    elif damage == "garble the state":
        (cached / "state.json").write_text('{"_data_files": [')
    else:
        (cached / traces.CONFIG_FILE).unlink()
    with caplog.at_level("WARNING", logger="karel_hf.probing.traces"):
        again = traces.build_trace_dataset(None, _Tokenizer(), rows, cache_dir=tmp_path, **KWARGS)
    assert fake.calls == [6, 6]  # decoded again
    assert again.to_dict() == first
    (warning,) = [r.getMessage() for r in caplog.records]
    assert f"trace cache {cached} is unreadable" in warning and "building it again" in warning
    assert traces.build_trace_dataset(None, _Tokenizer(), rows, cache_dir=tmp_path, **KWARGS).to_dict() == first
    assert fake.calls == [6, 6]  # and the rebuilt cache is used
    assert sorted(p.name for p in tmp_path.iterdir()) == [cached.name]


_HANGING_BUILD = """
import sys, time
from pathlib import Path
from karel_hf import decoding
from karel_hf.karel.corpus_config import CorpusConfig
from karel_hf.karel.sampling import generate
from karel_hf.probing import traces

def hang(*args, **kwargs):  # the decoding never ends: the build is killed inside its temporary folder
    Path(sys.argv[2]).write_text("decoding")
    time.sleep(600)

class Tokenizer:
    def get_vocab(self):
        return {"a": 0}

decoding.decode = hang
batch = generate(CorpusConfig(num_programs=6, seed=3), 0, 6)
rows = [{"id": i, "inputs": batch.inputs[i], "outputs": batch.outputs[i]} for i in range(6)]
traces.build_trace_dataset(None, Tokenizer(), rows, cache_dir=sys.argv[1], model_fingerprint="model-a",
                           semantics=("original",), progress=False)
"""


def test_a_killed_trace_build_leaves_no_temporary_folder_after_the_next_start(monkeypatch, tmp_path):
    cache, started = tmp_path / "traces", tmp_path / "started"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _HANGING_BUILD, str(cache), str(started)], env=env,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not started.is_file():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the build did not start decoding within 120 s"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (left,) = cache.glob(f"{traces.WORK_PREFIX}*")  # what a kill leaves
    assert left.name.startswith(f"{traces.WORK_PREFIX}{proc.pid}-")
    alive = cache / f"{traces.WORK_PREFIX}{os.getppid()}-busy"  # a live build's folder is left alone
    alive.mkdir()

    rows = _rows()
    monkeypatch.setattr(decoding, "decode", _fake_decode(rows))
    traces.build_trace_dataset(None, _Tokenizer(), rows, cache_dir=cache, **KWARGS)
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith(".")) == [alive.name]
    assert len(list(cache.glob("traces-*"))) == 1


def _code_names(path: Path):
    """(name, next token) of every NAME token of a Python file: code only, never strings or comments."""
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
              if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT)]
    for before, token, after in zip([None] + tokens, tokens, tokens[1:] + [None]):
        if token.type == tokenize.NAME:
            yield (before.string if before else ""), token.string, (after.string if after else "")


def test_the_package_never_runs_host_code():
    """No eval/exec/compile of text, no pickle (torch.load included), no trust_remote_code: programs
    are run by the Karel interpreter, models and tokenizers load as stock classes."""
    found = []
    for path in sorted((REPO / "karel_hf").rglob("*.py")):
        for before, name, after in _code_names(path):
            called = after == "(" and before != "."  # a builtin call, not model.eval()
            if (name in ("eval", "exec", "compile", "__import__") and called) or name in (
                    "pickle", "cPickle", "dill", "cloudpickle", "marshal", "trust_remote_code"):
                found.append(f"{path.relative_to(REPO)}: {name}")
        if "torch.load(" in path.read_text():  # unpickles
            found.append(f"{path.relative_to(REPO)}: torch.load")
    assert found == []
