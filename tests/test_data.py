"""The corpus as Hugging Face data: builder configs, text format, tokenizer, Parquet export."""

import collections
import hashlib
import subprocess
import sys

import numpy as np
import pytest

from karel_hf.data import SampleFormatError, format_prompt, format_sample, get_config, load_karel, parse_sample
from karel_hf.karel import CELL_WORDS, World, execute, parse
from karel_hf.tokenizer import FastEncoder, build_tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    build_tokenizer().save_pretrained(str(path))
    return load_tokenizer(path)


def test_builder_features_sizes_and_lengths(tiny_dataset):
    assert {s: len(d) for s, d in tiny_dataset.items()} == {"train": 512, "validation": 64, "test": 64}
    features = tiny_dataset["train"].features
    assert features["inputs"].shape == (10, 6, 6) and features["inputs"].dtype == "int8"
    assert set(features) >= {"id", "text", "program", "length", "trace_direction", "trace_x", "trace_y"}
    lengths = collections.Counter(tiny_dataset["test"]["length"])
    # 64 programs over lengths 1..10: 7 each for lengths 1-4, 6 each for 5-10
    assert sorted(lengths.items()) == [(n, 7 if n <= 4 else 6) for n in range(1, 11)]


def test_rows_agree_with_the_interpreter(tiny_dataset):
    for row in tiny_dataset["test"].select(range(20)):
        program = parse(row["program"])
        assert program.num_actions() == row["length"]
        for p in range(10):
            world = World.from_view_codes(np.array(row["inputs"][p]))
            result = execute(program, world, trace=True)
            assert np.array_equal(result.world.view_codes(), np.array(row["outputs"][p]))
            assert row["trace_direction"][p] == [world.direction] + [s.direction for s in result.states]
            assert row["trace_x"][p] == [world.x] + [s.x for s in result.states]
        text = format_sample(np.array(row["inputs"][:5]), np.array(row["outputs"][:5]), program)
        assert row["text"] == text


def test_paper_6to10_trains_on_long_programs_only():
    config = get_config("paper_6to10")
    assert config.lengths("train") == (6, 10) and config.lengths("test") == (1, 10)
    assert config.train_size == 500_000 and config.test_size == 10_000


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train_size": -1}, "train_size"),
        ({"num_prompt_pairs": 11}, "num_prompt_pairs"),
        ({"wall_ratio": 1.5}, "wall_ratio"),
        ({"min_length": 5, "max_length": 2}, "length"),
        ({"train_szie": 10}, "train_szie"),
    ],
)
def test_bad_config_values_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_config("tiny", **overrides)


def test_unknown_config_lists_the_valid_ones():
    with pytest.raises(ValueError, match="paper_6to10"):
        get_config("papr")


def test_formatter_round_trip(tiny_dataset):
    for row in tiny_dataset["validation"].select(range(10)):
        sample = parse_sample(row["text"])
        assert np.array_equal(sample.inputs, np.array(row["inputs"][:5]))
        assert np.array_equal(sample.outputs, np.array(row["outputs"][:5]))
        assert sample.program == parse(row["program"])
        assert format_sample(sample.inputs, sample.outputs, sample.program) == row["text"]


def test_formatter_errors_say_where():
    with pytest.raises(SampleFormatError, match="Code:"):
        parse_sample("Examples:\n\nInput0\n")
    good = format_prompt(np.zeros((1, 6, 6), np.int8) + np.eye(6, dtype=np.int8)[None] * 2, np.full((1, 6, 6), 2, np.int8))
    with pytest.raises(SampleFormatError, match="Output0"):
        parse_sample(good.replace("Output0", "Outptu0"))
    with pytest.raises(SampleFormatError, match="cell word"):
        parse_sample(good.replace("__space__", "__spaec__", 1))


def test_tokenizer_round_trip_and_one_token_per_cell(tiny_dataset, tokenizer):
    texts = tiny_dataset["test"]["text"][:16]
    encoded = tokenizer(texts)["input_ids"]
    for text, ids, length in zip(texts, encoded, tiny_dataset["test"]["length"][:16]):
        assert tokenizer.unk_token_id not in ids
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
        # <s>, 'Examples:', blank, 10 headers, 360 cells, blank, 'Code:', 3 preamble, n actions, '}'
        assert len(ids) == 1 + 1 + 1 + 10 + 10 * 36 + 1 + 1 + 3 + length + 1
        assert len(ids) <= 0.55 * (812 + 3 * length)
    cell_ids = {tokenizer.convert_tokens_to_ids(w + s) for w in CELL_WORDS for s in (" ", "\n")}
    assert tokenizer.unk_token_id not in cell_ids and len(cell_ids) == 2 * len(CELL_WORDS)


def test_tokenizer_round_trip_extended_language(tokenizer):
    text = ("def run() {\n  repeat(3) {\n    ifelse(not front_is_clear()) {\n      turn_left()\n    }\n"
            "    else {\n      move()\n    }\n  }\n  while(markers_present()) {\n    pick_marker()\n  }\n}")
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_fast_encoder_matches_the_tokenizer(tiny_dataset, tokenizer):
    rows = tiny_dataset["test"].select(range(12))
    inputs, outputs = np.array(rows["inputs"])[:, :5], np.array(rows["outputs"])[:, :5]
    fast = FastEncoder(tokenizer)
    prompt_ids = fast.encode_prompts(inputs, outputs)
    for i, row in enumerate(rows):
        expected = tokenizer(row["text"])["input_ids"]
        program_ids = fast.encode_program(row["program"])
        assert prompt_ids[i].tolist() + program_ids == expected


def test_same_seed_same_data_different_seed_different(tmp_path):
    a = load_karel("tiny", split="test", cache_dir=str(tmp_path / "a"))
    b = load_karel("tiny", split="test", cache_dir=str(tmp_path / "b"))
    c = load_karel("tiny", split="test", cache_dir=str(tmp_path / "a"), seed=99)
    assert a["text"] == b["text"]
    assert a["text"] != c["text"]


def _tree_digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.parquet"))}


def test_export_is_byte_identical_across_num_proc_and_loads_with_stock_datasets(tmp_path):
    from karel_hf.data.export import export_dataset

    overrides = dict(train_size=300, validation_size=40, test_size=50)
    one = export_dataset("tiny", tmp_path / "one", cache_dir=str(tmp_path / "c1"), rows_per_shard=128, **overrides)
    two = export_dataset("tiny", tmp_path / "two", cache_dir=str(tmp_path / "c2"), num_proc=2, rows_per_shard=128,
                         **overrides)
    digests = _tree_digest(one)
    assert digests == _tree_digest(two)
    assert "tiny/train-00002-of-00003.parquet" in digests

    card = (one / "README.md").read_text()
    assert "config_name: tiny" in card and "num_examples: 300" in card and "${" not in card
    # A fresh process with no karel_hf import: stock datasets + transformers only.
    code = f"""
import datasets, transformers
ds = datasets.load_dataset({str(one)!r}, "tiny", split="test")
assert len(ds) == 50 and ds.features["inputs"].shape == (10, 6, 6), ds
stream = datasets.load_dataset({str(one)!r}, "tiny", split="validation", streaming=True)
assert sum(1 for _ in stream) == 40
tok = transformers.AutoTokenizer.from_pretrained({str(one / "tokenizer")!r})
assert tok.decode(tok(ds[0]["text"])["input_ids"], skip_special_tokens=True) == ds[0]["text"]
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "karel_hf" not in code


def test_dataset_cli_reports_bad_override(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "karel_hf.cli", "dataset", "export", "--config", "tiny", "--output_dir",
         str(tmp_path / "x"), "--set", "test_size=-5"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode != 0 and "test_size" in out.stderr


def test_heldout_fraction_gives_unseen_test_programs(tmp_path):
    ds = load_karel("tiny", cache_dir=str(tmp_path), train_size=2000, validation_size=50, test_size=100,
                    max_length=6, eval_min_length=4, heldout_fraction=0.15, num_pairs=3, num_prompt_pairs=2)
    train = set(ds["train"]["program"])
    assert not train & set(ds["test"]["program"]) and not train & set(ds["validation"]["program"])
    assert min(ds["test"]["length"]) == 4 and min(ds["train"]["length"]) == 1
    config = get_config("tiny", heldout_fraction=0.15, eval_min_length=4)
    assert config.lengths("test") == (4, 10) and config.lengths("train") == (1, 10)
    # configs that keep the new fields' defaults keep their fingerprint
    assert get_config("tiny").fingerprint() == get_config("tiny", heldout_fraction=0.0).fingerprint()
