"""The corpus as Hugging Face data: builder configs, text format, tokenizer, Parquet export."""

import collections
import hashlib
import json
import subprocess
import sys

import datasets
import numpy as np
import pyarrow as pa
import pytest

from karel_hf.data import SampleFormatError, format_prompt, format_sample, get_config, load_karel, parse_sample
from karel_hf.data import builder as builder_module
from karel_hf.data.builder import batch_table, example_from_batch, karel_features
from karel_hf.data.formatting import format_samples
from karel_hf.data.overlap import program_ids, program_overlap
from karel_hf.karel import CELL_WORDS, World, execute, parse
from karel_hf.karel.sampling import CorpusConfig, generate
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
    grid = np.zeros((1, 6, 6), np.int8)
    grid[0, 2, 3] = 2  # the robot, facing north
    good = format_prompt(grid, grid)
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


def test_two_cells_per_token_halve_the_grid_tokens_and_keep_the_text(tiny_dataset, tmp_path):
    """build_tokenizer(cells_per_token=2): a grid row's cells in pairs (an odd row ends in one cell), the
    same text back, the program's tokens unchanged; saved and loaded, it says what it is, and
    FastEncoder follows it."""
    from transformers import AutoTokenizer

    from karel_hf.data.formatting import format_prompt
    from karel_hf.tokenizer import cells_per_token

    build_tokenizer(2).save_pretrained(tmp_path)
    pair, single = AutoTokenizer.from_pretrained(tmp_path), build_tokenizer()
    assert (cells_per_token(pair), cells_per_token(single)) == (2, 1)
    assert len(pair) == len(single) + 2 * len(CELL_WORDS) ** 2
    rows = tiny_dataset["test"].select(range(12))
    fast = FastEncoder(pair)
    prompt_ids = fast.encode_prompts(np.array(rows["inputs"])[:, :5], np.array(rows["outputs"])[:, :5])
    for i, row in enumerate(rows):
        ids = pair(row["text"])["input_ids"]
        assert pair.unk_token_id not in ids and pair.decode(ids, skip_special_tokens=True) == row["text"]
        # <s>, 'Examples:', blank, 10 headers, 10 grids of 6 rows of 3 pairs, blank, 'Code:', 3 preamble, n actions, '}'
        assert len(ids) == 1 + 1 + 1 + 10 + 10 * 18 + 1 + 1 + 3 + row["length"] + 1
        program = pair.convert_ids_to_tokens(ids)[-(row["length"] + 4):]
        assert program == single.convert_ids_to_tokens(single(row["text"])["input_ids"])[-(row["length"] + 4):]
        assert prompt_ids[i].tolist() + fast.encode_program(row["program"]) == ids
    grids = np.random.default_rng(0).choice([0, 1, 6, 9], size=(3, 2, 3, 5)).astype(np.int8)  # odd width
    grids[:, :, 0, 0] = 2  # a robot facing up
    odd = FastEncoder(pair).encode_prompts(grids, grids)
    for i in range(3):
        ids = pair(format_prompt(grids[i], grids[i]))["input_ids"]
        assert odd[i].tolist() == ids
        tokens = pair.convert_ids_to_tokens(ids)
        first_row = tokens[4:7]  # after <s>, 'Examples:', blank, 'Input0'
        assert first_row == [f"{CELL_WORDS[grids[i, 0, 0, 0]]} {CELL_WORDS[grids[i, 0, 0, 1]]} ",
                             f"{CELL_WORDS[grids[i, 0, 0, 2]]} {CELL_WORDS[grids[i, 0, 0, 3]]} ",
                             f"{CELL_WORDS[grids[i, 0, 0, 4]]}\n"]
    with pytest.raises(ValueError, match="cells_per_token: expected 1 or 2, got 3"):
        build_tokenizer(3)


def test_saved_tokenizer_names_a_class_every_transformers_loads(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path / "a")
    load_tokenizer(tmp_path / "a").save_pretrained(tmp_path / "b")  # saving a loaded one again
    text = "Examples:\n\nInput0\n__wall__ __space__\n"
    for folder in ("a", "b"):
        config = json.loads((tmp_path / folder / "tokenizer_config.json").read_text())
        assert config["tokenizer_class"] == "PreTrainedTokenizerFast"  # transformers 5 would write TokenizersBackend
        loaded = AutoTokenizer.from_pretrained(tmp_path / folder)
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"] and loaded.padding_side == "left"


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


def test_export_is_byte_identical_across_num_proc_and_loads_with_stock_datasets(tmp_path, monkeypatch):
    from karel_hf.data import export as export_module
    from karel_hf.data.export import export_dataset

    # tables of 64 rows: with num_proc=2 the cache is two files per split instead of one
    monkeypatch.setattr(builder_module, "GENERATION_CHUNK", 64)
    monkeypatch.setattr(export_module, "GENERATION_CHUNK", 64)
    overrides = dict(train_size=300, validation_size=40, test_size=50)
    one = export_dataset("tiny", tmp_path / "one", cache_dir=str(tmp_path / "c1"), rows_per_shard=128, **overrides)
    two = export_dataset("tiny", tmp_path / "two", cache_dir=str(tmp_path / "c2"), num_proc=2, rows_per_shard=128,
                         **overrides)
    assert len(list((tmp_path / "c2").rglob("karel-train-*.arrow"))) == 2  # the layouts differ
    digests = _tree_digest(one)
    assert digests == _tree_digest(two)
    assert "tiny/train-00002-of-00003.parquet" in digests

    card = (one / "README.md").read_text()
    assert "config_name: tiny" in card and "num_examples: 300" in card and "${" not in card
    overlap = program_overlap("tiny", **overrides)
    assert f"| tiny | test | 50 | 1-10 | {overlap.distinct['test']} | {100 * overlap.seen_in_train['test']:.1f}% |" in card
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
    assert "Ignoring part of dataset_info" not in out.stderr  # each split has num_bytes: datasets keeps the infos


def test_the_card_of_a_control_flow_corpus_says_what_its_programs_need(tmp_path):
    from karel_hf.data.export import export_dataset

    overrides = dict(train_size=100, validation_size=20, test_size=20, extended=True, needs_control_flow=True,
                     heldout_fraction=0.2, eval_min_length=4)
    card = (export_dataset("tiny", tmp_path / "out", cache_dir=str(tmp_path / "c"), **overrides) / "README.md").read_text()
    assert "a hash of its line codes keyed by the seed" in card
    assert "no straight-line program of up to 10 actions maps the 5 prompt pairs' inputs to their outputs" in card
    assert "| tiny | test | 20 | 4-10 | 20 | 0.0% |" in card
    plain = export_dataset("tiny", tmp_path / "plain", cache_dir=str(tmp_path / "c"), train_size=100, validation_size=20,
                           test_size=20, extended=True)
    assert "control flow (`needs_control_flow`)" not in (plain / "README.md").read_text()


def test_dataset_cli_reports_bad_override(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "karel_hf.cli", "dataset", "export", "--config", "tiny", "--output_dir",
         str(tmp_path / "x"), "--set", "test_size=-5"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode != 0 and "test_size" in out.stderr


def test_format_sample_writes_the_builder_text_from_the_generator_program(tiny_dataset):
    for row in tiny_dataset["test"].select(range(10)):
        assert format_sample(np.array(row["inputs"][:5]), np.array(row["outputs"][:5]), row["program"]) == row["text"]
    with pytest.raises(ValueError, match="lines layout"):
        format_sample(np.array(row["inputs"][:5]), np.array(row["outputs"][:5]), "def run() { move() }")


# ------------------------------------------------------------- the batched path vs the per-example path
@pytest.mark.parametrize("corpus, prompt_pairs", [
    (CorpusConfig(num_programs=300, seed=1), 5),
    (CorpusConfig(num_programs=120, seed=2, height=5, width=9, num_pairs=3), 3),  # 7 columns: runs of 3, 3, 1
    (CorpusConfig(num_programs=80, seed=3, height=3, width=4, num_pairs=2, extended=True), 1),  # 1x2 grids
])
def test_format_samples_equals_format_sample_row_by_row(corpus, prompt_pairs):
    batch = generate(corpus, 0, corpus.num_programs)
    inputs, outputs = batch.inputs[:, :prompt_pairs], batch.outputs[:, :prompt_pairs]
    texts = format_samples(inputs, outputs, batch.programs)
    assert isinstance(texts, pa.StringArray) and len(texts) == len(batch)
    assert texts.to_pylist() == [format_sample(i, o, p) for i, o, p in zip(inputs, outputs, batch.programs)]
    assert format_samples(inputs[7:9], outputs[7:9], pa.array(batch.programs[7:9])).to_pylist() == texts[7:9].to_pylist()
    assert format_samples(inputs[:0], outputs[:0], []).to_pylist() == []


def test_format_samples_errors_name_the_argument():
    codes = np.zeros((2, 1, 3, 3), np.int8)
    codes[:, :, 1, 1] = 2  # one robot per grid
    program = "def run() {\n  move()\n}"
    with pytest.raises(ValueError, match="sample 1: program: expected the lines layout"):
        format_samples(codes, codes, [program, "def run() { move() }"])
    with pytest.raises(ValueError, match="one program per sample"):
        format_samples(codes, codes, [program])
    with pytest.raises(ValueError, match="same shape"):
        format_samples(codes, codes[:, :, :2], [program] * 2)
    with pytest.raises(ValueError, match="view codes"):
        format_samples(codes + 15, codes, [program] * 2)
    no_robot = codes.copy()
    no_robot[1, 0, 1, 1] = 0
    with pytest.raises(ValueError, match="sample 1, Output0: a grid must show exactly one robot, found 0"):
        format_samples(codes, no_robot, [program] * 2)
    with pytest.raises(ValueError, match="at most 10 \\(MAX_PROMPT_PAIRS\\)"):
        format_samples(np.repeat(codes, 11, axis=1), np.repeat(codes, 11, axis=1), [program] * 2)
    deep = "def run() {\n" + "".join("  " * d + "repeat(2) {\n" for d in range(1, 7)) + "  " * 7 + "move()\n" + \
        "".join("  " * d + "}\n" for d in range(6, 0, -1)) + "}"
    with pytest.raises(ValueError, match="sample 0: program: blocks nested 6 deep.*MAX_SAMPLE_NESTING"):
        format_samples(codes, codes, [deep, program])
    extended = "def run() {\n  repeat(3) {\n    move()\n  }\n}"
    assert format_samples(codes, codes, [extended, program]).to_pylist() == [
        format_sample(codes[0], codes[0], extended), format_sample(codes[1], codes[1], program)]


@pytest.mark.parametrize("overrides", [
    {},
    {"height": 5, "width": 9, "num_pairs": 3, "num_prompt_pairs": 2, "min_length": 3, "max_length": 12},
    {"extended": True, "num_pairs": 4, "num_prompt_pairs": 2},
])
def test_batch_table_equals_the_per_example_path(overrides):
    """Every column of the builder's batched table equals what datasets encodes from the per-example dicts."""
    config = get_config("tiny", **overrides)
    batch = generate(config.corpus_config("validation"), 0, 64)
    table = batch_table(batch, config)
    features = karel_features(config)
    reference = datasets.Dataset.from_list([example_from_batch(batch, j, config.num_prompt_pairs) for j in range(64)],
                                           features=features).data.table
    assert table.schema.equals(features.arrow_schema, check_metadata=True)
    assert table.equals(reference)


def test_builder_rows_do_not_depend_on_num_proc_or_batch_size(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(builder_module, "GENERATION_CHUNK", 100)  # 6 tables for the train split, not 1
    small = load_karel("tiny", cache_dir=str(tmp_path / "small"))
    monkeypatch.setattr(builder_module, "GENERATION_CHUNK", 30)
    two = load_karel("tiny", cache_dir=str(tmp_path / "two"), num_proc=2)  # two processes on every split
    assert len(list((tmp_path / "two").rglob("karel-validation-*.arrow"))) == 2
    for split in ("train", "validation", "test"):
        assert two[split].data.table.equals(tiny_dataset[split].data.table)
        assert small[split].data.table.equals(tiny_dataset[split].data.table)


def test_builder_and_export_memory_is_bounded_by_the_batch(tmp_path):
    """A subprocess builds (load_karel) and exports 10k paper-format programs, then 60k: its peak RSS
    grows by far less between the two than the 50k more programs' data (~235 MB of Arrow)."""
    code = f"""
import resource
from karel_hf.data import load_karel
from karel_hf.data.export import export_dataset
peaks = []
for n in (10_000, 60_000):
    sizes = dict(train_size=n, validation_size=100, test_size=100)
    ds = load_karel("paper", cache_dir={str(tmp_path)!r} + f"/cache{{n}}", **sizes)
    assert len(ds["train"]) == n
    export_dataset("paper", {str(tmp_path)!r} + f"/export{{n}}", cache_dir={str(tmp_path)!r} + f"/cache{{n}}", **sizes)
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
print(*peaks)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    small, large = (int(v) / 1024 for v in out.stdout.split())
    print(f"peak RSS {small:.0f} MiB at 10k programs, {large:.0f} MiB at 60k")
    assert large - small < 100, (small, large)


# ------------------------------------------------------------------------- programs across splits
def _programs(config, split):
    return generate(config.corpus_config(split), 0, getattr(config, f"{split}_size")).programs


def test_program_ids_name_texts():
    programs = generate(CorpusConfig(num_programs=20000, seed=1, max_length=6), 0, 20000).programs
    ids = program_ids(programs)
    assert ids.dtype == np.uint64 and len(np.unique(ids)) == len(set(programs))  # no two programs share a name
    column = pa.array(programs)
    assert np.array_equal(program_ids(column.slice(7, 500)), ids[7:507])  # an Arrow slice (offsets) as a list
    assert program_ids(["def run() {\n}", "def run() {\n}"]).tolist()[0] == program_ids(["def run() {\n}"])[0]
    assert len(set(program_ids(["", "a", "b", "ab", "ba"]).tolist())) == 5


@pytest.mark.parametrize("overrides", [{}, {"heldout_fraction": 0.2, "eval_min_length": 3}])
def test_program_overlap_counts_the_programs_the_splits_share(overrides):
    sizes = dict(train_size=3000, validation_size=200, test_size=300, max_length=6)
    config = get_config("tiny", **sizes, **overrides)
    overlap = program_overlap("tiny", **sizes, **overrides)
    train = set(_programs(config, "train"))
    for split in ("train", "validation", "test"):
        programs = _programs(config, split)
        assert overlap.examples[split] == len(programs) and overlap.distinct[split] == len(set(programs))
    for split in ("validation", "test"):
        programs = _programs(config, split)
        assert overlap.seen_in_train[split] == sum(p in train for p in programs) / len(programs)
    if overrides:
        assert overlap.seen_in_train == {"validation": 0.0, "test": 0.0}  # every evaluation program unseen
    else:  # short programs recur: most evaluation examples of lengths 1..6 have a program seen in training
        assert 0.3 < overlap.seen_in_train["test"] < 0.9


def test_heldout_fraction_gives_program_disjoint_splits(tmp_path):
    ds = load_karel("tiny", cache_dir=str(tmp_path), train_size=2000, validation_size=50, test_size=100,
                    max_length=6, eval_min_length=4, heldout_fraction=0.15, num_pairs=3, num_prompt_pairs=2)
    train = set(ds["train"]["program"])
    assert not train & set(ds["test"]["program"]) and not train & set(ds["validation"]["program"])
    assert min(ds["test"]["length"]) == 4 and min(ds["train"]["length"]) == 1
    config = get_config("tiny", heldout_fraction=0.15, eval_min_length=4)
    assert config.lengths("test") == (4, 10) and config.lengths("train") == (1, 10)
    # configs that keep the new fields' defaults keep their fingerprint (and their cache)
    assert get_config("tiny").fingerprint() == get_config("tiny", heldout_fraction=0.0, eval_max_length=None).fingerprint()
    assert get_config("tiny").fingerprint() != config.fingerprint()


def test_heldout_config_errors_name_the_length_and_the_fix():
    # a length whose programs are all on one side of the split for seed 1234: 0.99 leaves no length-1
    # program to train on
    with pytest.raises(ValueError, match=r"train split.*heldout_fraction=0\.99.*length 1.*smaller heldout_fraction"):
        get_config("tiny", heldout_fraction=0.99, eval_min_length=5)
    with pytest.raises(ValueError, match=r"heldout_fraction"):
        get_config("tiny", heldout_fraction=1.5)
    with pytest.raises(ValueError, match=r"needs_control_flow: true needs extended: true"):
        get_config("tiny", needs_control_flow=True)
    with pytest.raises(ValueError, match=r"needs_control_flow must be true or false"):
        get_config("tiny", needs_control_flow="yes", extended=True)
    config = get_config("tiny", heldout_fraction=0.1, eval_min_length=5, extended=True, needs_control_flow=True)
    assert config.corpus_config("test").control_flow_pairs == config.num_prompt_pairs
    assert config.corpus_config("train").heldout_role == "exclude"
