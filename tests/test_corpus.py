"""JSON-lines interop: reading with located errors, verifying, exporting generated corpora in the
authors' exact format, and the `karel-hf generate` / `verify-corpus` commands."""

import json
from pathlib import Path

import numpy as np
import pytest

from karel_hf.cli import main
from karel_hf.karel import World, format_program, parse
from karel_hf.karel.corpus import CorpusFormatError, codes_to_ascii, export_jsonl, read_jsonl, verify_jsonl
from karel_hf.karel.sampling import CorpusConfig, generate, iter_batches

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"


def write_lines(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture
def reference_records():
    return list(read_jsonl(REFERENCE / "straight_line_200.jsonl"))


# -------------------------------------------------------------------------------------- reading
def test_read_jsonl_yields_reference_records(reference_records):
    assert len(reference_records) == 200
    assert list(reference_records[0]) == [f"input{k}" for k in range(10)] + [f"output{k}" for k in range(10)] + ["code"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: "{not json", r"line 2: not valid JSON"),
        (lambda r: [1, 2], r"line 2: expected a JSON object, got list"),
        (lambda r: {k: v for k, v in r.items() if k != "output3"}, r"line 2: key 'output3' is missing"),
        (lambda r: {k: v for k, v in r.items() if k != "code"}, r"line 2: key 'code' is missing"),
        (lambda r: {**r, "code": 5}, r"line 2: key 'code' must be a string"),
        (lambda r: {**r, "output12": "#"}, r"line 2: unexpected key 'output12'"),
        (lambda r: {**r, "input4": None}, r"line 2: key 'input4' must be a string"),
        (lambda r: {"code": r["code"]}, r"line 2: key 'input0' is missing"),
    ],
)
def test_read_jsonl_errors_name_line_and_key(tmp_path, reference_records, mutate, message):
    path = write_lines(tmp_path / "bad.jsonl", [reference_records[0], mutate(reference_records[1])])
    with pytest.raises(CorpusFormatError, match=message):
        list(read_jsonl(path))


# ------------------------------------------------------------------------------------ verifying
def test_verify_reports_first_mismatch(tmp_path, reference_records, capsys):
    records = reference_records[:20]
    records[5] = {**records[5], "output3": records[5]["input3"]}
    path = write_lines(tmp_path / "tampered.jsonl", records)
    assert verify_jsonl(path) == 1
    out = capsys.readouterr().out
    assert out.startswith("199/200 examples match\nfirst mismatch: line 6, pair 3\nprogram:\n")
    assert records[5]["code"] in out and "expected output3:" in out


def test_verify_straight_line_only_rejects_control_flow(capsys):
    assert verify_jsonl(REFERENCE / "conditionals_40.jsonl", extended=False) == 1
    out = capsys.readouterr().out
    assert "parse error" in out and "extended=True" in out


def test_verify_empty_file_fails(tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="empty.jsonl: no input/output pairs to verify"):
        verify_jsonl(tmp_path / "empty.jsonl")
    assert capsys.readouterr().out == ""  # no "0/0 examples match" that reads like a result


# ------------------------------------------------------------------------------------ exporting
def test_codes_to_ascii_equals_world_to_ascii():
    batch = generate(CorpusConfig(num_programs=100, seed=1), 0, 100)
    codes = np.concatenate([batch.inputs, batch.outputs]).reshape(-1, 6, 6)
    assert codes_to_ascii(codes) == [World.from_view_codes(c).to_ascii() for c in codes]
    assert codes.max() > 6  # some cell holds at least two markers


@pytest.mark.parametrize("extended", [False, True])
def test_exported_corpus_is_in_the_authors_format_and_verifies(tmp_path, extended, capsys):
    config = CorpusConfig(num_programs=150, extended=extended, seed=8)
    path = tmp_path / "nested" / "corpus.jsonl"
    assert export_jsonl(config, path, batch_size=64) == 150
    assert [p.name for p in path.parent.iterdir()] == ["corpus.jsonl"]  # no temporary file left
    assert verify_jsonl(path, extended=extended) == 0
    assert capsys.readouterr().out.startswith("1500/1500 examples match")
    batch = generate(config, 0, 150)
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        record = json.loads(line)
        assert json.dumps(record) == line
        assert list(record) == [f"input{k}" for k in range(10)] + [f"output{k}" for k in range(10)] + ["code"]
        assert record["code"] == format_program(parse(batch.programs[i]), "reference")
        for k in range(10):
            assert record[f"input{k}"] == World.from_view_codes(batch.inputs[i, k]).to_ascii()
            assert record[f"output{k}"] == World.from_view_codes(batch.outputs[i, k]).to_ascii()


def test_export_from_batches_matches_export_from_config(tmp_path):
    config = CorpusConfig(num_programs=40, seed=2)
    export_jsonl(config, tmp_path / "a.jsonl")
    export_jsonl(iter_batches(config, batch_size=9), tmp_path / "b.jsonl")
    export_jsonl(generate(config, 0, 40), tmp_path / "c.jsonl")
    text = (tmp_path / "a.jsonl").read_text()
    assert text == (tmp_path / "b.jsonl").read_text() == (tmp_path / "c.jsonl").read_text()


def test_failed_export_leaves_nothing(tmp_path):
    with pytest.raises(TypeError, match="ProgramBatch"):
        export_jsonl([generate(CorpusConfig(num_programs=3), 0, 3), "not a batch"], tmp_path / "x.jsonl")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ CLI
def test_cli_generate_then_verify(tmp_path, capsys):
    path = tmp_path / "corpus.jsonl"
    assert main(["generate", "--num_programs", "30", "--output", str(path), "--seed", "3",
                 "--min_length", "6", "--num_pairs", "4"]) == 0
    assert main(["verify-corpus", str(path), "--straight_line_only"]) == 0
    assert "120/120 examples match" in capsys.readouterr().out
    record = next(read_jsonl(path))
    assert "input3" in record and "input4" not in record
    assert 6 <= parse(record["code"]).num_actions() <= 10


def test_cli_generate_rejects_bad_config(tmp_path, capsys):
    assert main(["generate", "--num_programs", "5", "--output", str(tmp_path / "x.jsonl"), "--wall_ratio", "2"]) == 2
    assert capsys.readouterr().err == (
        "karel-hf generate: error: CorpusConfig.wall_ratio must be a probability in [0, 1], got 2.0\n")
    assert list(tmp_path.iterdir()) == []
