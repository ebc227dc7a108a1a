"""Property-based tests (hypothesis) of every entry point that takes user input: the parser,
`World.from_ascii`, `format_sample` / `parse_sample`, the tokenizer, the generation-accuracy metric
and the probes (plain functions and evaluate modules) and the `karel-hf` CLI run in process.

The property is always the same: a correct result (checked by a round trip or an independent
computation) or a clear ValueError (a TypeError for an argument of the wrong Python type); never
another exception, never a silently wrong answer. Bad inputs that must be refused are generated on
purpose (a named mutation of a valid input) and must raise.

KAREL_HF_FUZZ_SCALE=N multiplies every example count (a longer campaign); the default keeps the
file to seconds.
"""

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from karel_hf.data.formatting import (
    MAX_PROMPT_PAIRS,
    MAX_SAMPLE_NESTING,
    MAX_SAMPLE_REPEAT,
    SampleFormatError,
    format_prompt,
    format_sample,
    parse_sample,
    split_sample,
)
from karel_hf.karel import ACTIONS, CONDITIONS, Action, Condition, If, Program, Repeat, While, World, format_program, parse
from karel_hf.karel.program import MAX_NESTING_DEPTH, MAX_REPEAT_COUNT, KarelSyntaxError, nesting_depth, walk
from karel_hf.karel.world import CELL_WORDS, WorldFormatError
from karel_hf.metrics.generation import compute_generation_accuracy, reference_to_json
from karel_hf.tokenizer import FastEncoder, build_tokenizer, check_encodable

SCALE = int(os.environ.get("KAREL_HF_FUZZ_SCALE", "1"))
REFERENCE = Path(__file__).resolve().parent / "data" / "reference"
STYLES = ("lines", "compact", "reference")


def fuzz(examples: int):
    return settings(max_examples=examples * SCALE, deadline=None, derandomize=SCALE == 1,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.filter_too_much, HealthCheck.data_too_large])


# ------------------------------------------------------------------------------------ strategies
CONDITION = st.builds(Condition, st.sampled_from(CONDITIONS), st.booleans())
ACTION = st.sampled_from(ACTIONS).map(Action)


def statements(max_repeat: int):
    def control(inner):
        body = st.lists(inner, max_size=3).map(tuple)
        return st.one_of(
            st.builds(If, CONDITION, body),
            st.builds(If, CONDITION, body, body),
            st.builds(Repeat, st.integers(0, max_repeat), body),
            st.builds(While, CONDITION, body),
        )

    return st.recursive(ACTION, control, max_leaves=12)


def programs(max_repeat: int = MAX_REPEAT_COUNT):
    return st.lists(statements(max_repeat), max_size=5).map(lambda body: Program(tuple(body)))


def nested(depth: int, kind: str) -> Program:
    """A program whose blocks nest `depth` deep (its text grows linearly with depth)."""
    body = (Action("move"),)
    for level in range(depth):
        body = ((Repeat(2, body),) if kind == "repeat" else (While(Condition("front_is_clear"), body),)
                if kind == "while" else (If(Condition(CONDITIONS[level % 5], bool(level % 2)), body, (Action("move"),)),))
    return Program(body)


def nested_text(depth: int, kind: str) -> str:
    """The compact text of `nested(depth, kind)`, written directly (the printers refuse ASTs deeper
    than the parser reads)."""
    head = {"repeat": "repeat(2) { ", "while": "while(front_is_clear()) { ", "if": "if(not markers_present()) { "}[kind]
    return "def run() { " + head * depth + "move()" + " }" * depth + " }"


@st.composite
def worlds(draw, height=None, width=None) -> World:
    """A random valid world (walls, up to 9 markers a cell, one robot), drawn from a seed: cheap to
    generate, so the examples go to the code under test."""
    height = draw(st.integers(3, 8)) if height is None else height
    width = draw(st.integers(3, 8)) if width is None else width
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    walls = np.ones((height, width), dtype=bool)
    walls[1:-1, 1:-1] = rng.random((height - 2, width - 2)) < rng.random()
    markers = np.where(walls, 0, rng.integers(0, 10, (height, width)) * (rng.random((height, width)) < 0.3))
    x, y = int(rng.integers(1, width - 1)), int(rng.integers(1, height - 1))
    walls[y, x] = False
    markers[y, x] = 0
    return World(walls, markers.astype(np.int16), x, y, int(rng.integers(4)))


NON_ASCII_DIGITS = st.characters(categories=["Nd"]).filter(lambda c: not c.isascii())
PROGRAM_TOKENS = ["def", "run", "(", ")", "{", "}", ";", "else", "not", "if", "ifelse", "repeat", "while", *ACTIONS,
                  *CONDITIONS, "0", "2", "20", "21", "1000001", "0" * 5000 + "7", "9" * 5000, "٣", "३", "\n", " ",
                  "\t", "\u00a0", "\u3000", "\x00", "é", "move(", "()", "{}", "#"]


def program_texts():
    tokens = st.lists(st.sampled_from(PROGRAM_TOKENS), max_size=60)
    return st.one_of(
        st.text(max_size=120),
        tokens.map(" ".join),
        tokens.map("".join),
        st.builds(lambda p, style: format_program(p, style), programs(), st.sampled_from(STYLES)),
        st.builds(nested_text, st.integers(0, 3 * MAX_NESTING_DEPTH), st.sampled_from(["repeat", "while", "if"])),
    )


# ---------------------------------------------------------------------------------------- parser
@fuzz(250)
@given(program_texts())
def test_parse_gives_a_program_that_round_trips_or_a_syntax_error(text):
    try:
        program = parse(text)
    except KarelSyntaxError as err:
        assert "\n" not in str(err) and str(err)
        event("refused")
        return
    event("parsed")
    assert nesting_depth(program.body) <= MAX_NESTING_DEPTH
    assert all(0 <= s.times <= MAX_REPEAT_COUNT for s in walk(program.body) if isinstance(s, Repeat))
    for style in STYLES:
        assert parse(format_program(program, style)) == program


@fuzz(150)
@given(programs())
def test_every_program_prints_and_parses_back_in_every_style(program):
    for style in STYLES:
        assert parse(format_program(program, style)) == program


@fuzz(60)
@given(st.integers(0, 20 * MAX_NESTING_DEPTH), st.sampled_from(["repeat", "while", "if"]), st.sampled_from(STYLES))
def test_nesting_beyond_the_limit_is_a_syntax_error_naming_it(depth, kind, style):
    if depth <= MAX_NESTING_DEPTH:
        assert nesting_depth(parse(format_program(nested(depth, kind), style)).body) == depth
        assert nesting_depth(parse(nested_text(depth, kind)).body) == depth
    else:
        with pytest.raises(KarelSyntaxError, match=f"more than {MAX_NESTING_DEPTH} deep \\(MAX_NESTING_DEPTH\\)"):
            parse(nested_text(depth, kind))
        with pytest.raises(ValueError, match="could not be parsed back"):  # nor printed
            format_program(nested(depth, kind), style)


@fuzz(60)
@given(NON_ASCII_DIGITS, st.integers(0, 2))
def test_non_ascii_digits_are_refused_everywhere(digit, where):
    text = ["def run() {{ repeat({}) {{ move() }} }}", "def run() {{ repeat(1{}) {{ move() }} }}",
            "def run() {{ move(); {} }}"][where].format(digit)
    with pytest.raises(KarelSyntaxError, match="unexpected character"):
        parse(text)
    with pytest.raises(WorldFormatError, match="unexpected character"):
        World.from_ascii(f"#####\n#>{digit}.#\n#####")


def test_repeat_count_limit():
    assert parse(f"def run() {{ repeat({MAX_REPEAT_COUNT}) {{ move() }} }}").body[0].times == MAX_REPEAT_COUNT
    for count in (MAX_REPEAT_COUNT + 1, "9" * 5000):
        with pytest.raises(KarelSyntaxError, match=r"larger than 1000000 \(MAX_REPEAT_COUNT\)"):
            parse(f"def run() {{ repeat({count}) {{ move() }} }}")


def test_parse_rejects_non_text():
    for value in (None, 3, b"def run() { }", ["def run() { }"]):
        with pytest.raises(TypeError, match="program text must be a str"):
            parse(value)


# ------------------------------------------------------------------------------------ worlds
ASCII_WORLD_CHARS = "#.^>v<0123456789\n"


@st.composite
def ascii_world_texts(draw):
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.text(max_size=80))
    if kind == 1:
        return draw(st.text(alphabet=ASCII_WORLD_CHARS + "١३x \r", max_size=80))
    text = draw(worlds()).to_ascii()
    if kind == 2:
        return text
    chars = list(text)  # one edit of a valid world
    at = draw(st.integers(0, len(chars) - 1))
    chars[at] = draw(st.sampled_from(list(ASCII_WORLD_CHARS) + ["١", "x", "", "##", "\r"]))
    return "".join(chars)


@fuzz(250)
@given(ascii_world_texts())
def test_from_ascii_reads_exactly_what_it_is_given_or_says_why_not(text):
    try:
        world = World.from_ascii(text)
    except WorldFormatError as err:
        assert "\n" not in str(err)
        event("refused")
        return
    event("read")
    assert world.to_ascii() == text.strip("\n")  # nothing dropped or invented
    assert World.from_ascii(world.to_ascii()) == world


def test_from_ascii_rejects_non_text():
    with pytest.raises(TypeError, match="a str"):
        World.from_ascii(None)


# ------------------------------------------------------------------------------ sample format
GRID_MUTATIONS = ("code -1", "code 15", "code 127", "no robot", "two robots", "empty grid", "1-D grid",
                  "output shape", "pair shape", "fewer outputs", "no pairs", "too many pairs", "float codes",
                  "ragged rows")
PROGRAM_MUTATIONS = ("too deep", "repeat too large", "compact layout", "garbage text", "not a program")


@st.composite
def sample_parts(draw, mutate: bool = True):
    """(inputs, outputs, program, mutation): valid parts when mutation is None, else one named
    defect that format_sample must refuse."""
    height, width = draw(st.integers(3, 8)), draw(st.integers(3, 8))
    pairs = draw(st.integers(1, MAX_PROMPT_PAIRS))
    inputs = [draw(worlds(height, width)).view_codes().astype(np.int64) for _ in range(pairs)]
    outputs = [draw(worlds(height, width)).view_codes().astype(np.int64) for _ in range(pairs)]
    program = draw(programs(MAX_SAMPLE_REPEAT).filter(lambda p: nesting_depth(p.body) <= MAX_SAMPLE_NESTING))
    as_text = draw(st.booleans())
    mutation = draw(st.sampled_from((None,) * 4 + GRID_MUTATIONS + PROGRAM_MUTATIONS)) if mutate else None
    grids = inputs + outputs
    target = grids[draw(st.integers(0, len(grids) - 1))]
    robot = tuple(np.argwhere((target >= 2) & (target < 6))[0])
    free = [tuple(c) for c in np.argwhere((target < 2) | (target >= 6))]
    if mutation in ("code -1", "code 15", "code 127"):
        target[robot if not free else free[0]] = int(mutation.split()[1])
    elif mutation == "no robot":
        target[robot] = 0
    elif mutation == "two robots":
        assume(free)
        target[free[0]] = 3
    elif mutation == "float codes":
        inputs[0] = inputs[0].astype(np.float64) + 0.5
    elif mutation == "empty grid":
        inputs[0] = np.zeros((0, width - 2), dtype=np.int64)
    elif mutation == "1-D grid":
        outputs[-1] = outputs[-1].reshape(-1)
    elif mutation == "output shape":
        outputs[0] = draw(worlds(height + 1, width)).view_codes()
    elif mutation == "pair shape":
        assume(pairs > 1)
        inputs[1], outputs[1] = (draw(worlds(height, width + 1)).view_codes() for _ in range(2))
    elif mutation == "fewer outputs":
        outputs = outputs[:-1]
    elif mutation == "no pairs":
        inputs, outputs = [], []
    elif mutation == "too many pairs":
        inputs = inputs * (MAX_PROMPT_PAIRS + 1)
        outputs = outputs * (MAX_PROMPT_PAIRS + 1)
    elif mutation == "ragged rows":
        inputs[0] = [list(row) for row in inputs[0]]
        inputs[0][-1] = inputs[0][-1][:-1]
    elif mutation == "too deep":
        program = nested(MAX_SAMPLE_NESTING + draw(st.integers(1, 3)), draw(st.sampled_from(["repeat", "while", "if"])))
    elif mutation == "repeat too large":
        program = Program((Repeat(draw(st.integers(MAX_SAMPLE_REPEAT + 1, MAX_REPEAT_COUNT)), (Action("move"),)),))
    if mutation == "compact layout":
        program = "def run() { move(); " + format_program(program, "compact")[len("def run() { "):]
    elif mutation == "garbage text":
        program = "def run() {\n" + draw(st.text(min_size=1, max_size=30)) + "\n}"
        assume(program != format_program(Program(()), "lines"))
        try:
            assume(format_program(parse(program), "lines") != program)
        except KarelSyntaxError:
            pass
    elif mutation == "not a program":
        program = draw(st.one_of(st.none(), st.integers(), st.binary()))
    elif as_text and isinstance(program, Program):
        program = format_program(program, "lines")
    return inputs, outputs, program, mutation


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@fuzz(80)
@given(parts=sample_parts())
def test_format_sample_round_trips_through_parse_and_the_tokenizer_or_refuses(parts, tokenizer):
    inputs, outputs, program, mutation = parts
    event(f"mutation: {mutation}")
    if mutation is not None:
        with pytest.raises((ValueError, TypeError)) as info:
            format_sample(inputs, outputs, program)
        assert "\n" not in str(info.value)
        assert info.type is not TypeError or mutation == "not a program"
        return
    text = format_sample(inputs, outputs, program)
    sample = parse_sample(text)
    assert np.array_equal(sample.inputs, np.stack(inputs)) and np.array_equal(sample.outputs, np.stack(outputs))
    expected = program if isinstance(program, Program) else parse(program)
    assert sample.program == expected
    assert format_sample(sample.inputs, sample.outputs, sample.program) == text
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    check_encodable(text, tokenizer.get_vocab())
    prompt, program_text = split_sample(text)
    fast = FastEncoder(tokenizer)
    assert fast.encode_prompts(sample.inputs[None], sample.outputs[None])[0].tolist() + \
        fast.encode_program(program_text) == ids


@st.composite
def edited_samples(draw):
    """A valid sample's text with a few random edits (characters, lines, cell words)."""
    inputs, outputs, program, _ = draw(sample_parts(mutate=False))
    text = format_sample(inputs, outputs, program)
    for _ in range(draw(st.integers(0, 3))):
        lines = text.split("\n")
        edit = draw(st.integers(0, 6))
        at = draw(st.integers(0, len(lines) - 1))
        if edit == 0:
            del lines[at]
        elif edit == 1:
            lines.insert(at, lines[draw(st.integers(0, len(lines) - 1))])
        elif edit == 2:
            lines[at] = " ".join(draw(st.sampled_from(CELL_WORDS + ("__wall__ ", "", "Input0", "x")))
                                 for _ in lines[at].split(" "))
        elif edit == 3:
            pos = draw(st.integers(0, len(text)))
            text = text[:pos] + draw(st.sampled_from(["", "\n", " ", "Output0\n", "१", "__"])) + text[pos + 1:]
            continue
        elif edit == 4:
            lines[at] = lines[at].replace(" ", "  ", 1)
        elif edit == 5:
            lines = lines[:at]
        else:
            lines[at] = draw(st.text(max_size=20))
        text = "\n".join(lines)
    return text


@fuzz(100)
@given(st.one_of(edited_samples(), st.text(max_size=200), st.just("Examples:\n\n\nCode:\n")))
def test_parse_sample_reads_the_examples_exactly_or_says_where(text):
    try:
        sample = parse_sample(text)
    except SampleFormatError as err:
        assert "\n" not in str(err)
        event("refused")
        return
    event("parsed")
    prompt, program_text = split_sample(text)
    assert format_prompt(sample.inputs, sample.outputs) == prompt  # the grids are what the text shows
    try:
        expected = parse(program_text) if program_text else None
    except KarelSyntaxError:
        expected = None
    assert sample.program == expected


def test_encoders_refuse_text_outside_the_vocabulary(tokenizer):
    from karel_hf.training.lm_dataset import tokenize_samples

    grid = np.zeros((4, 4), dtype=np.int64)
    grid[1, 2] = 3
    deep = format_program(nested(MAX_SAMPLE_NESTING + 1, "repeat"), "lines")
    text = format_prompt([grid], [grid]) + deep
    with pytest.raises(SampleFormatError, match="MAX_SAMPLE_NESTING"):
        format_sample([grid], [grid], deep)
    with pytest.raises(ValueError, match=r"sample 1 of the batch: the piece '            repeat\(2\) '"):
        tokenize_samples([format_sample([grid], [grid], Program(())), text], tokenizer)
    with pytest.raises(ValueError, match="FastEncoder: the piece"):
        FastEncoder(tokenizer).encode_program(deep)
    with pytest.raises(ValueError, match="'<unk>'"):
        check_encodable("def run() {\n<unk>", tokenizer.get_vocab())


# --------------------------------------------------------------------------- generation metric
def _records():
    with open(REFERENCE / "straight_line_200.jsonl") as f:
        return [json.loads(line) for line in f][:20]


RECORDS = _records()


def _rows():
    from karel_hf.karel.corpus_config import CorpusConfig
    from karel_hf.karel.sampling import generate

    batch = generate(CorpusConfig(num_programs=10, seed=5, height=5, width=6), 0, 10)
    return [{"inputs": batch.inputs[i], "outputs": batch.outputs[i], "length": int(batch.lengths[i]),
             "program": batch.programs[i]} for i in range(10)]


ROWS = _rows()
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                           max_leaves=10)
PREDICTIONS = st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=20), st.text(max_size=60),
                        st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                        program_texts(), st.sampled_from([r["code"] for r in RECORDS] + [r["program"] for r in ROWS]))
REFERENCE_MUTATIONS = ("length 1.7", "length -3", "length 1e30", "length True", "length '3'", "length 0",
                       "code -1", "code 15", "no robot", "ragged", "shape", "no pairs", "not a world",
                       "non-ascii digit", "bad code", "deep code", "missing output", "not a dict", "bad json", "no keys")


@st.composite
def references(draw):
    """(reference, mutation): a valid dataset row or JSON-lines record (as a dict or JSON), or the
    same with one named defect, or random JSON-like garbage (mutation "garbage")."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES), "garbage"
    use_row = draw(st.booleans())
    mutation = draw(st.sampled_from((None,) * 2 * len(REFERENCE_MUTATIONS) + REFERENCE_MUTATIONS))
    if use_row:
        row = draw(st.sampled_from(ROWS))
        ref = {"inputs": np.array(row["inputs"]).tolist(), "outputs": np.array(row["outputs"]).tolist(),
               "length": row["length"]}
    else:
        ref = dict(draw(st.sampled_from(RECORDS)))
    if mutation and mutation.startswith("length "):
        ref["length"] = {"1.7": 1.7, "-3": -3, "1e30": 1e30, "True": True, "'3'": "3", "0": 0}[mutation.split(" ", 1)[1]]
    elif mutation in ("code -1", "code 15", "no robot", "ragged", "shape", "no pairs") and use_row:
        grids = ref[draw(st.sampled_from(["inputs", "outputs"]))]
        if mutation in ("code -1", "code 15"):
            grids[0][0][0] = int(mutation.split()[1])
        elif mutation == "no robot":
            grids[-1] = [[0] * len(grids[-1][0]) for _ in grids[-1]]
        elif mutation == "ragged":
            grids[0][0] = grids[0][0][:-1]
        elif mutation == "shape":
            ref["outputs"] = [g[:-1] for g in ref["outputs"]]
        else:
            ref["inputs"], ref["outputs"] = [], []
    elif mutation in ("not a world", "non-ascii digit", "missing output", "no robot") and not use_row:
        key = f"{draw(st.sampled_from(['input', 'output']))}{draw(st.integers(0, 9))}"
        if mutation == "not a world":
            ref[key] = draw(st.one_of(st.integers(), st.none(), st.just("#\n#"), st.just("")))
        elif mutation == "non-ascii digit":
            assume("." in ref[key])
            ref[key] = ref[key].replace(".", draw(NON_ASCII_DIGITS), 1)
        elif mutation == "no robot":
            ref[key] = "".join("." if c in "^>v<" else c for c in ref[key])
        else:
            del ref["output3"]
    elif mutation in ("bad code", "deep code") and not use_row:
        ref["code"] = "def run() { jump() }" if mutation == "bad code" else nested_text(500, "repeat")
    elif mutation == "not a dict":
        ref = draw(st.one_of(st.integers(), st.none(), st.lists(st.integers(), max_size=2)))
    elif mutation == "bad json":
        ref = json.dumps(ref)[:-1]
    elif mutation == "no keys":
        ref = {"foo": 1}
    else:
        mutation = None
    if isinstance(ref, dict) and draw(st.booleans()):
        ref = json.dumps(ref)
    return ref, mutation


def _check_results(results, predictions):
    n = len(predictions)
    assert results["num_examples"] == n
    for key in ("accuracy", "accuracy_all_pairs", "parse_rate"):
        assert 0.0 <= results[key] <= 1.0
    strings = sum(isinstance(p, str) for p in predictions)
    assert results["parse_rate"] * n <= strings + 1e-9  # a non-str prediction never counts as parsed
    assert results["accuracy_all_pairs"] <= results["accuracy"] <= results["parse_rate"]


@fuzz(150)
@given(st.lists(st.tuples(PREDICTIONS, references()), min_size=1, max_size=4), st.integers(1, 5))
def test_generation_accuracy_scores_any_prediction_and_refuses_bad_references(pairs, num_spec_pairs):
    predictions = [p for p, _ in pairs]
    refs = [r for _, (r, _) in pairs]
    must_fail = [i for i, (_, (_, m)) in enumerate(pairs) if m not in (None, "garbage")]
    try:
        results = compute_generation_accuracy(predictions, refs, num_spec_pairs=num_spec_pairs)
    except ValueError as err:
        assert str(err).startswith("reference ") and "\n" not in str(err)
        event("refused")
        return
    event(f"scored, {sum(isinstance(p, str) for p in predictions)} str predictions of {len(predictions)}")
    assert not must_fail, f"bad reference {must_fail[0]} was accepted: {pairs[must_fail[0]]}"
    _check_results(results, predictions)


@fuzz(50)
@given(st.lists(PREDICTIONS, min_size=1, max_size=6))
def test_reference_programs_score_one_and_non_text_scores_zero(predictions):
    refs = [RECORDS[i % len(RECORDS)] for i in range(len(predictions))]
    results = compute_generation_accuracy(predictions, refs, num_spec_pairs=5)
    _check_results(results, predictions)
    right = compute_generation_accuracy([r["code"] for r in refs], refs, num_spec_pairs=5)
    assert right["accuracy"] == right["accuracy_all_pairs"] == 1.0


@fuzz(60)
@given(st.one_of(st.integers(-3, 0), st.floats(), st.none(), st.text(max_size=3), st.booleans(), st.just(1.0)))
def test_num_spec_pairs_must_be_a_positive_integer(value):
    with pytest.raises(ValueError, match="num_spec_pairs must be a positive integer"):
        compute_generation_accuracy(["def run() { }"], [RECORDS[0]], num_spec_pairs=value)


def test_length_must_be_a_positive_int32():
    for length in (1.7, -3, 1e30, 0, True, 2**31, "3"):
        with pytest.raises(ValueError, match=r"reference 0: reference 'length' must be .* integer in 1\.\.2147483647"):
            compute_generation_accuracy(["def run() { }"], [{**ROWS[0], "length": length}], num_spec_pairs=1)
    for bad in (None, 3, "def run() { }", {"a": 1}):
        with pytest.raises(ValueError, match="must be a list"):
            compute_generation_accuracy(bad, [RECORDS[0]])


@pytest.fixture(scope="module")
def evaluate_metric():
    from karel_hf.metrics import load_metric

    return load_metric("generation_accuracy")


@fuzz(40)
@given(st.lists(st.tuples(PREDICTIONS, references()), min_size=1, max_size=3), st.integers(1, 5))
def test_evaluate_module_never_raises_on_predictions_and_refuses_bad_references(evaluate_metric, pairs, num_spec_pairs):
    predictions = [p for p, _ in pairs]
    refs = [r for _, (r, _) in pairs]
    must_fail = [i for i, (_, (_, m)) in enumerate(pairs) if m not in (None, "garbage")]
    valid_refs = all(m is None for _, (_, m) in pairs)
    try:
        results = evaluate_metric.compute(predictions=predictions, references=refs, num_spec_pairs=num_spec_pairs)
    except ValueError as err:
        assert str(err).startswith("reference "), str(err)
        assert not valid_refs or "fewer than num_spec_pairs" in str(err)
        event("refused")
        return
    event("scored")
    assert not must_fail
    _check_results(results, predictions)
    plain = compute_generation_accuracy(predictions, refs, num_spec_pairs=num_spec_pairs)
    assert results == plain


def test_evaluate_module_takes_whole_dataset_rows(evaluate_metric):
    rows = [{**row, "id": i, "text": "..."} for i, row in enumerate(ROWS[:3])]
    predictions = [None, 7, rows[2]["program"]]
    results = evaluate_metric.compute(predictions=predictions, references=rows, num_spec_pairs=2)
    assert results["num_examples"] == 3 and results["accuracy"] == pytest.approx(1 / 3)
    assert results == compute_generation_accuracy(predictions, [reference_to_json(r) for r in rows], num_spec_pairs=2)


# ---------------------------------------------------------------------------------------- probes
PROBE_MUTATIONS = ("steps shorter", "num_classes -1", "num_classes 1", "num_classes 1.5", "num_classes too small",
                   "labels 1.7", "labels -2", "labels text", "mask text", "mask all train", "mask length",
                   "nan state", "ragged states", "no rows", "groups length", "initial shape", "facts rows",
                   "empty task", "task column", "unknown control", "max_train_rows 0", "seed -1", "bootstrap 0")


@st.composite
def probe_inputs(draw):
    """(states, labels, train_mask, kwargs, mutation): a valid probe_report call when mutation is
    None, else one named defect that must be refused."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows, hidden, columns = draw(st.integers(4, 40)), draw(st.integers(1, 6)), draw(st.integers(1, 3))
    labels = rng.integers(-1, 4, (rows, columns))
    states = (rng.standard_normal((rows, hidden)) + labels[:, :1]).astype(np.float32)
    train_mask = np.arange(rows) < rows // 2 + 1
    kwargs = {"num_bootstrap": 20, "seed": draw(st.integers(0, 5)), "probe": draw(st.sampled_from(["linear", "linear", "mlp1"])),
              "max_iter": 30}
    if draw(st.booleans()):
        kwargs["steps"] = rng.integers(1, 6, rows).tolist()
    if draw(st.booleans()):
        kwargs["initial_labels"], kwargs["output_labels"] = rng.integers(0, 4, (2, rows, columns))
    if draw(st.booleans()):
        kwargs["prompt_facts"] = rng.standard_normal((rows, 2))
        kwargs["groups"] = rng.integers(0, 5, rows)
    if draw(st.booleans()):
        kwargs["num_classes"] = 4
    mutation = draw(st.sampled_from((None,) * 6 + PROBE_MUTATIONS))
    if mutation == "steps shorter":
        kwargs["steps"] = list(range(1, rows))
    elif mutation and mutation.startswith("num_classes"):
        value = mutation.split()[1]
        kwargs["num_classes"] = {"-1": -1, "1": 1, "1.5": 1.5, "too": 2}[value]
        if value == "too":
            assume((labels >= 2).any())
    elif mutation == "labels 1.7":
        labels = labels + 0.7
    elif mutation == "labels -2":
        labels[0, 0] = -2
    elif mutation == "labels text":
        labels = [["a"] * columns for _ in range(rows)]
    elif mutation == "mask text":
        train_mask = ["train" if m else "test" for m in train_mask]
    elif mutation == "mask all train":
        train_mask = np.ones(rows, dtype=bool)
    elif mutation == "mask length":
        train_mask = train_mask[:-1]
    elif mutation == "nan state":
        states[rng.integers(rows), 0] = np.nan
    elif mutation == "ragged states":
        states = [list(v) for v in states]
        states[-1] = states[-1] + [0.0]
    elif mutation == "no rows":
        states, labels, train_mask = np.zeros((0, hidden)), np.zeros((0, columns), dtype=int), np.zeros(0, dtype=bool)
        kwargs = {}
    elif mutation == "groups length":
        kwargs["groups"] = list(range(rows + 1))
    elif mutation == "initial shape":
        kwargs["initial_labels"] = np.zeros((rows, columns + 1), dtype=int)
        kwargs["output_labels"] = kwargs["initial_labels"]
    elif mutation == "facts rows":
        kwargs["prompt_facts"] = np.zeros((rows + 2, 2))
    elif mutation == "empty task":
        kwargs["tasks"] = {"nothing": []}
    elif mutation == "task column":
        kwargs["tasks"] = {"far": [columns]}
    elif mutation == "unknown control":
        kwargs["controls"] = ["shuffled", "bogus"]
    elif mutation == "max_train_rows 0":
        kwargs["max_train_rows"] = 0
    elif mutation == "seed -1":
        kwargs["seed"] = -1
    elif mutation == "bootstrap 0":
        kwargs["num_bootstrap"] = 0
    return states, labels, train_mask, kwargs, mutation


@fuzz(50)
@given(probe_inputs())
def test_probe_report_gives_floats_or_refuses(inputs):
    from karel_hf.probing.probes import probe_report

    states, labels, train_mask, kwargs, mutation = inputs
    event(f"mutation: {mutation}")
    try:
        report = probe_report(states, labels, train_mask, **kwargs)
    except ValueError as err:
        assert mutation is not None, f"a valid call was refused: {err}"
        assert "\n" not in str(err)
        return
    assert mutation is None, f"{mutation} was accepted"
    assert all(isinstance(v, float) for v in report.values())
    for key in ("semantic_content", "chance_uniform", "chance_majority", "control_shuffled"):
        assert np.isnan(report[key]) or 0.0 <= report[key] <= 1.0, (key, report[key])
    if kwargs.get("num_classes"):
        assert report["chance_uniform"] == pytest.approx(1 / kwargs["num_classes"])
    if "steps" in kwargs:
        assert set(k for k in report if k.startswith("accuracy_step_")) <= {f"accuracy_step_{k}" for k in range(1, 6)}


@pytest.fixture(scope="module")
def semantic_probe_metric():
    from karel_hf.metrics import load_metric

    return load_metric("semantic_probe")


@fuzz(15)
@given(probe_inputs())
def test_semantic_probe_module_gives_floats_or_a_clear_error(semantic_probe_metric, inputs):
    states, labels, train_mask, kwargs, mutation = inputs
    kwargs.pop("max_iter", None)
    if "tasks" in kwargs:  # the module names tasks by task_names; give it a wrong number of names instead
        kwargs["task_names"] = ["a"] * (np.shape(labels)[1] + 1)
        del kwargs["tasks"]
    event(f"mutation: {mutation}")
    try:
        report = semantic_probe_metric.compute(predictions=states, references=labels, train_mask=train_mask, **kwargs)
    except ValueError as err:
        assert mutation is not None, f"a valid call was refused: {err}"
        return
    assert mutation is None, f"{mutation} was accepted"
    assert all(isinstance(v, float) for v in report.values())


def test_semantic_probe_module_refuses_empty_and_mismatched_inputs(semantic_probe_metric):
    for predictions, references in (([], []), ([[0.0]], []), (None, [1]), ([[0.0], [1.0]], [1])):
        with pytest.raises(ValueError, match="predictions"):
            semantic_probe_metric.compute(predictions=predictions, references=references, train_mask=[True])
    with pytest.raises(ValueError, match="`split` must be a list of 'train' or 'test'"):
        semantic_probe_metric.compute(predictions=[[0.0], [1.0]], references=[0, 1], split=["train", "tset"])


# -------------------------------------------------------------------------------------- the CLI
VALUES = ["0", "-1", "1", "3", "7", "1.5", "abc", "١٠", "", "1e30", "true", "false", "nan", "inf", "-0", "none"]


@pytest.fixture(scope="module")
def cli_paths(tmp_path_factory):
    """Paths the fuzzed commands may point at: a corpus, a broken corpus, a folder, a file, a missing
    path, an unwritable folder."""
    base = tmp_path_factory.mktemp("cli")
    good = base / "good.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:5]))
    broken = base / "broken.jsonl"
    broken.write_text(json.dumps({**RECORDS[0], "input2": "#\n١"}) + "\n{not json\n")
    (base / "folder").mkdir()
    (base / "file.txt").write_text("x")
    return {"good": str(good), "broken": str(broken), "folder": str(base / "folder"), "file": str(base / "file.txt"),
            "missing": str(base / "missing" / "x.jsonl"), "readonly": _unwritable(base), "new": str(base / "out")}


def _unwritable(base: Path) -> str:
    """A folder nothing can be written under: read-only for a normal user; for root (which ignores
    permissions) a path in sysfs, which refuses new files."""
    if os.geteuid() != 0:
        folder = base / "readonly"
        folder.mkdir()
        folder.chmod(0o555)
        return str(folder / "sub")
    return "/sys/karel_hf_test/sub"


@st.composite
def cli_argvs(draw, paths):
    path = st.sampled_from(sorted(paths.values()))
    value = st.one_of(st.sampled_from(VALUES), st.text(max_size=8))
    command = draw(st.sampled_from(["verify-corpus", "generate", "tokenizer", "train", "reproduce", "dataset",
                                    "push", "random"]))
    if command == "verify-corpus":
        argv = ["verify-corpus", draw(path)] + draw(st.lists(st.sampled_from(["--straight_line_only", "--bogus"]),
                                                              max_size=1))
    elif command == "generate":
        argv = ["generate", "--num_programs", draw(st.sampled_from(["3", "0", "-2", "x", "١٠", "2.5"])),
                "--output", draw(st.one_of(path, st.just(paths["new"] + "/c.jsonl")))]
        for flag in draw(st.lists(st.sampled_from(["--batch_size", "--min_length", "--max_length", "--num_pairs",
                                                   "--height", "--wall_ratio", "--seed", "--action_weights"]),
                                  max_size=3, unique=True)):
            argv += [flag, draw(value)]
    elif command == "tokenizer":
        argv = ["tokenizer", "save", draw(st.one_of(path, st.just(paths["new"] + "/tok")))]
    elif command in ("train", "reproduce"):
        flags = (["--per_device_train_batch_size", "--learning_rate", "--dataset_overrides", "--dataset_config",
                  "--block_size", "--max_steps", "--packing", "--loss_on", "--resume_from_checkpoint",
                  "--generation_eval_samples", "--warmup_steps", "--max_train_samples", "--program_loss_weight",
                  "--bogus"]
                 if command == "train" else ["--stages", "--batch_size", "--test_specs", "--probe", "--train_args",
                                             "--preset", "--bogus"])
        argv = [command, "--preset", draw(st.sampled_from(["tiny", "demo", "nope", ""])),
                "--output_dir", draw(st.one_of(path, st.just(paths["new"] + f"/{command}")))]
        for flag in draw(st.lists(st.sampled_from(flags), max_size=3, unique=True)):
            special = {"--dataset_overrides": ["train_size=5", "foo", "seed=x", "num_prompt_pairs=12", "bogus=1",
                                               "max_length=٣"],
                       "--dataset_config": ["tiny", "nope", "cpu"],
                       "--stages": ["train", "plot", "evaluate,report", "trian"],
                       "--train_args": ["--max_steps 0", "--learning_rate -1", "--bogus 1", "--max_steps 2"]}
            argv += [flag, draw(st.sampled_from(special[flag]) if flag in special else value)]
    elif command == "dataset":
        argv = ["dataset", "export", "--config", draw(st.sampled_from(["tiny", "nope"])), "--output_dir",
                draw(st.one_of(path, st.just(paths["new"] + "/export")))]
        argv += draw(st.sampled_from([[], ["--set", "train_size=4"], ["--set", "x"], ["--num_proc", "0"],
                                      ["--set", "seed=-1"]]))
    elif command == "push":
        argv = ["push", draw(st.sampled_from(["dataset", "model", "bogus"])), draw(path), "--repo_id", "me/x",
                "--dry-run", draw(path)]
    else:
        argv = draw(st.lists(st.one_of(st.sampled_from(["train", "--help", "-h", "generate", "push", "--x"]), value),
                             max_size=4))
    return argv


def _stub(calls):
    def record(*args, **kwargs):
        calls.append(args)
        return Path(".")

    return record


@pytest.fixture
def stubbed_work(monkeypatch):
    """The CLI's argument handling is fuzzed; the long work behind it (training, a reproduction, a
    dataset export) is replaced by a recorder."""
    import karel_hf.data.export as export
    import karel_hf.reproduce as reproduce
    import karel_hf.training.run as run

    calls = []
    monkeypatch.setattr(run, "run_training", _stub(calls))
    monkeypatch.setattr(reproduce, "reproduce", _stub(calls))
    monkeypatch.setattr(export, "export_dataset", _stub(calls))
    return calls


@fuzz(100)
@given(data=st.data())
def test_cli_exits_with_one_line_errors(data, cli_paths, stubbed_work):
    from karel_hf.cli import main

    argv = data.draw(cli_argvs(cli_paths))
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        status = main(argv)
    lines = err.getvalue().splitlines()
    event(f"{argv[0] if argv else '(none)'}: exit {status}")
    assert status in (0, 1, 2), argv
    if status and not (argv[:1] == ["verify-corpus"] and not lines):  # verify-corpus: 1 = a mismatch, on stdout
        assert len(lines) == 1, (argv, err.getvalue())
        assert lines[0].startswith("karel-hf") and ": error: " in lines[0], (argv, lines)
    assert "Traceback" not in err.getvalue() and "internal error" not in err.getvalue(), (argv, err.getvalue())
