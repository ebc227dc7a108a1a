"""Probing: labels, trace datasets, probes, analysis (karel_hf.probing)."""

import copy
import doctest
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from karel_hf import decoding
from karel_hf.data.formatting import format_prompt, parse_sample
from karel_hf.karel import ACTIONS, Program, World, execute, parse
from karel_hf.karel.semantics import get_semantics
from karel_hf.probing import analysis, labels, measure, probes, traces
from karel_hf.probing.labels import MISSING, label_column, scored_rows, shift, step_labels, trajectory_labels

torch.set_num_threads(1)

# Robot at interior (0, 0) facing north, a wall at interior (2, 0).
CORNER = World.from_ascii(
    "########\n"
    "#^.#...#\n"
    "#......#\n"
    "#......#\n"
    "#......#\n"
    "#......#\n"
    "#......#\n"
    "########"
)


def _facing(world: World, direction: int) -> World:
    world = world.copy()
    world.direction = direction
    return world


def random_world(rng) -> World:
    walls = np.ones((8, 8), dtype=bool)
    walls[1:-1, 1:-1] = rng.random((6, 6)) < 0.1
    x, y = (int(v) for v in rng.integers(1, 7, size=2))
    walls[y, x] = False
    markers = np.zeros((8, 8), dtype=np.int16)
    markers[1:-1, 1:-1] = (rng.random((6, 6)) < 0.1) & ~walls[1:-1, 1:-1]
    markers[y, x] = 0
    return World(walls, markers, x, y, int(rng.integers(4)))


def make_rows(n: int, seed: int = 0, start_id: int = 0) -> list[dict]:
    """Spec rows like load_karel's (id, program, inputs/outputs as (10, 6, 6) view codes)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        program = Program.from_actions(rng.choice(ACTIONS, size=int(rng.integers(1, 8)), p=[5 / 15, 3 / 15, 3 / 15, 2 / 15, 2 / 15]))
        worlds = [random_world(rng) for _ in range(10)]
        rows.append({
            "id": start_id + i,
            "program": str(program),
            "inputs": np.stack([w.view_codes() for w in worlds]),
            "outputs": np.stack([execute(program, w).world.view_codes() for w in worlds]),
        })
    return rows


# ------------------------------------------------------------------------------------ labels
def test_labels_turns_moves_walls_and_offsets():
    program = parse("def run() { move(); turn_right(); move(); move(); turn_left(); turn_left() }")
    table = trajectory_labels(program, [CORNER] * 5)
    # s_0..s_6: facing N; move into the border does nothing; turn right -> E; move; move into wall.
    assert table["direction_0"].tolist() == [0, 0, 1, 1, 1, 0, 3]
    assert table["x"].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert table["y"].tolist() == [0] * 7
    assert table["dx_start"].tolist() == [5, 5, 5, 6, 6, 6, 6]  # class = dx + 5
    assert table["dx_end"].tolist() == [4, 4, 4, 5, 5, 5, 5]
    assert table["dy_start"].tolist() == [5] * 7
    assert table["facing_wall"].tolist() == [1, 1, 0, 1, 1, 1, 0]
    assert table["wall_north"].tolist() == [1] * 7
    assert table["wall_east"].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert table["wall_west"].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert table["wall_south"].tolist() == [0] * 7

    rows = step_labels(program, [CORNER] * 5, semantics=["original"])
    assert rows["direction_0"].tolist() == [0, 1, 1, 1, 0, 3]  # s_1..s_6
    assert rows["direction_0_next1"].tolist() == [1, 1, 1, 0, 3, MISSING]
    assert rows["direction_0_next2"].tolist() == [1, 1, 0, 3, MISSING, MISSING]
    assert rows["direction_0_prev1"].tolist() == [0, 0, 1, 1, 1, 0]  # s_0..s_5: raw, j = 0 included
    assert rows["direction_0_prev2"].tolist() == [MISSING, 0, 0, 1, 1, 1]
    assert rows["direction_0_initial"].tolist() == [0] * 6
    assert rows["direction_0_final"].tolist() == [3] * 6
    assert len(rows) == len(labels.ALL_LABELS) * 7  # 5 offsets, initial, final (no outputs given: no _output)
    # the output grid's labels: here the output world is the program's end state
    end = execute(program, CORNER).world
    with_output = step_labels(program, [CORNER] * 5, [end] * 5, semantics=["original"])
    assert with_output["direction_3_output"].tolist() == [3] * 6 and with_output["x_output"].tolist() == [1] * 6
    assert with_output["dx_end_output"].tolist() == [5] * 6  # no offset from the end
    assert sorted(with_output) == sorted(labels.label_columns(["original"]))


def test_labels_per_input_and_short_programs():
    inputs = [_facing(CORNER, d) for d in (0, 1, 2, 3, 0)]
    table = trajectory_labels(parse("def run() { turn_left() }"), inputs)
    for i, d in enumerate((0, 1, 2, 3, 0)):
        assert table[f"direction_{i}"].tolist() == [d, (d + 3) % 4]
    rows = step_labels(parse("def run() { turn_left() }"), inputs, semantics=["original"])
    assert rows["direction_1_next1"].tolist() == [MISSING]
    assert rows["direction_1_next2"].tolist() == [MISSING]
    assert shift(np.array([7]), 1).tolist() == []
    with pytest.raises(ValueError, match="straight-line"):
        trajectory_labels(parse("def run() { repeat(2) { move() } }"), inputs)
    with pytest.raises(ValueError, match="unknown label"):
        label_column("colour")


def test_alternative_semantics_labels():
    rng = np.random.default_rng(3)
    for _ in range(20):
        program = Program.from_actions(rng.choice(["move", "turn_left", "turn_right"], size=6))
        inputs = [random_world(rng) for _ in range(5)]
        rows = step_labels(program, inputs, semantics=["original", "swap", "cycle1"])
        for i in range(5):
            start = rows[f"direction_{i}_initial"]
            original = (rows[f"direction_{i}"] - start) % 4
            swapped = (rows[f"swap__direction_{i}"] - start) % 4
            assert np.array_equal(swapped, (-original) % 4)  # swap mirrors every turn
        # cycle1 reads move as turn_left, turn_left as turn_right, turn_right as put_marker.
        expected = execute(Program.from_actions([{"move": "turn_left", "turn_left": "turn_right", "turn_right": "put_marker"}[a] for a in program.actions()]), inputs[0], trace=True)
        assert rows["cycle1__direction_0"].tolist() == [s.direction for s in expected.states]
        assert rows["cycle1__direction_0_final"].tolist() == [expected.states[-1].direction] * 6
        assert "cycle1__x" not in rows and "cycle1__direction_0_initial" not in rows  # directions only
        every = Program.from_actions(rng.choice(ACTIONS, size=8))  # markers and walls included
        for name in ("original", "swap", "cycle1", "cycle2", "authors3", "authors8"):  # the shortcut = running the worlds
            fast = labels.direction_trajectories(every, inputs, name)
            slow = trajectory_labels(every, inputs, name)
            assert all(np.array_equal(fast[f"direction_{i}"], slow[f"direction_{i}"]) for i in range(5))
    assert label_column("x", 1, "cycle2") == "cycle2__x_next1"


def test_alternative_semantics_position_labels_rerun_the_worlds():
    rng = np.random.default_rng(5)
    moved = 0
    for _ in range(20):
        program = Program.from_actions(rng.choice(ACTIONS, size=7))
        inputs = [random_world(rng) for _ in range(5)]
        rows = step_labels(program, inputs, semantics=["original", "cycle1", "authors3"], labels=("x", "y", "direction_0"),
                           alternative_labels=("x", "y"))
        for name in ("cycle1", "authors3"):
            # the program run under the alternative meaning, on input 0's world (walls block moves)
            remapped = Program.from_actions([get_semantics(name).mapping[a] for a in program.actions()])
            states = [inputs[0], *execute(remapped, inputs[0], trace=True).states]
            assert rows[f"{name}__x"].tolist() == [s.x - 1 for s in states[1:]]
            assert rows[f"{name}__y_prev1"].tolist() == [s.y - 1 for s in states[:-1]]
            assert rows[f"{name}__x_final"].tolist() == [states[-1].x - 1] * 7
            assert f"{name}__direction_0" not in rows and f"{name}__x_initial" not in rows  # the labels asked for only
        moved += rows["cycle1__x"].tolist() != rows["x"].tolist()
    assert moved > 0  # the alternative's positions are not the original's
    default = step_labels(program, inputs, semantics=["cycle1"])
    assert "cycle1__x" not in default and "cycle1__direction_0" in default  # directions only by default
    with pytest.raises(ValueError, match="unknown label"):
        step_labels(program, inputs, semantics=["cycle1"], alternative_labels=("colour",))


def test_step_labels_gather_equals_shifted_trajectories():
    rng = np.random.default_rng(11)
    for n in (1, 2, 5):
        program = Program.from_actions(rng.choice(ACTIONS, size=n))
        inputs = [random_world(rng) for _ in range(5)]
        outputs = [execute(program, w).world for w in inputs]
        rows = step_labels(program, inputs, outputs, semantics=["original", "authors3"])
        assert sorted(rows) == sorted(labels.label_columns(["original", "authors3"]))
        for name in ("original", "authors3"):
            table = trajectory_labels(program, inputs, name)
            for label in (labels.ALL_LABELS if name == "original" else labels.ALTERNATIVE_LABELS):
                for offset in (*labels.OFFSETS, "final", *(("initial",) if name == "original" else ())):
                    assert rows[label_column(label, offset, name)].tolist() == shift(table[label], offset).tolist()


def test_labels_module_is_numpy_only():
    code = "import sys, karel_hf.probing; sys.exit(any(m in sys.modules for m in ('torch', 'datasets', 'sklearn', 'transformers')))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    assert doctest.testmod(labels).failed == 0


# ------------------------------------------------------------------------------------ traces
@pytest.fixture(scope="module")
def tokenizer():
    from karel_hf.tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_layer=2, n_embd=32, n_head=2, n_positions=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config).eval()


def test_trace_rows_align_with_decoding(tiny_model, tokenizer):
    rows = make_rows(6, seed=1)
    ds = traces.build_trace_dataset(tiny_model, tokenizer, rows, batch_size=4, layers=(0, -1), progress=False)
    prompts = [format_prompt(r["inputs"][:5], r["outputs"][:5]) for r in rows]
    out = decoding.decode(tiny_model, tokenizer, prompts, batch_size=4, capture=True, layers=(0, -1), progress=False)
    data = ds.with_format("numpy")[:]
    for j, row in enumerate(rows):
        mine = data["example_id"] == row["id"]
        assert mine.sum() == out.num_actions[j] == len(parse(out.programs[j]).body)
        assert data["step"][mine].tolist() == list(range(1, out.num_actions[j] + 1))
        np.testing.assert_allclose(data["state"][mine], out.action_states[j], rtol=1e-6)
        np.testing.assert_allclose(data["layer_2"][mine], out.layer_states[-1][j], rtol=1e-6)
    assert ds.features["state"].length == tiny_model.config.n_embd


def _fake_decode(programs_by_prompt, noise=0.3, seed=0):
    """A decode that writes the given programs; state = one-hot of input 0's direction + noise."""
    calls = []

    def decode(model, tokenizer, prompts, *, capture=False, layers=(), **kwargs):
        calls.append(len(prompts))
        rng = np.random.default_rng(seed + len(calls))
        texts, states, code = [], [], []
        for prompt in prompts:
            text = programs_by_prompt[prompt]
            world = World.from_view_codes(parse_sample(prompt).inputs[0])
            try:
                directions = [s.direction for s in execute(parse(text), world, trace=True).states]
            except ValueError:  # a program that does not parse: no action states
                directions = []
            onehot = np.eye(4, 8, dtype=np.float32)[directions]
            texts.append(text)
            states.append(onehot + noise * rng.standard_normal(onehot.shape).astype(np.float32))
            code.append(rng.standard_normal(8).astype(np.float32))  # the code-position state: noise
        return decoding.DecodeOutput(
            programs=texts, num_actions=[len(s) for s in states], action_states=states,
            layer_states={i: states for i in layers} if layers else None, code_states=code,
        )

    decode.calls = calls
    return decode


def _programs(rows, broken=(), pairs=5):
    out = {}
    for row in rows:
        text = row["program"] if row["id"] not in broken else "def run() {\n  jump()\n}"
        out[format_prompt(row["inputs"][:pairs], row["outputs"][:pairs])] = text
    return out


def test_trace_labels_match_execution_and_correctness(monkeypatch):
    rows = make_rows(12, seed=2)
    fake = _fake_decode(_programs(rows, broken={rows[3]["id"]}))
    monkeypatch.setattr(decoding, "decode", fake)
    ds = traces.build_trace_dataset(None, None, rows, chunk_size=5, semantics=("original", "swap"), progress=False)
    assert fake.calls == [5, 5, 2]
    assert rows[3]["id"] not in set(ds["example_id"])  # unparsable programs give no rows
    assert "cycle1__direction_0" not in ds.column_names and "swap__direction_0_next2" in ds.column_names
    assert all(ds["correct"]) and all(ds["correct_all"])  # the fake writes the reference programs
    by_id = {r["id"]: r for r in rows}
    for record in ds:
        row = by_id[record["example_id"]]
        program = parse(row["program"])
        assert record["num_actions"] == len(program.body)
        assert record["action"] == program.actions()[record["step"] - 1]
        prefix = Program(program.body[: record["step"]])
        for i in range(5):
            world = World.from_view_codes(row["inputs"][i])
            assert record[f"direction_{i}"] == execute(prefix, world).world.direction
            assert record[f"direction_{i}_initial"] == world.direction
            assert record[f"direction_{i}_final"] == execute(program, world).world.direction
            assert record[f"direction_{i}_output"] == World.from_view_codes(row["outputs"][i]).direction
            if record["step"] >= 2:
                before = Program(program.body[: record["step"] - 1])
                assert record[f"direction_{i}_prev1"] == execute(before, world).world.direction
        assert len(record["code_state"]) == 8
        end = execute(prefix, World.from_view_codes(row["inputs"][0])).world
        assert (record["x"], record["y"]) == (end.x - 1, end.y - 1)


def test_trace_cache_hit_skips_decoding(monkeypatch, tmp_path):
    rows = make_rows(5, seed=4)
    fake = _fake_decode(_programs(rows))
    monkeypatch.setattr(decoding, "decode", fake)
    kwargs = dict(cache_dir=tmp_path, model_fingerprint="model-a", semantics=("original",), progress=False)
    tokenizer = type("Tok", (), {"get_vocab": lambda self: {"a": 0}})()
    first = traces.build_trace_dataset(None, tokenizer, rows, **kwargs)
    assert fake.calls == [5]
    second = traces.build_trace_dataset(None, tokenizer, rows, **kwargs)
    assert fake.calls == [5]  # no recomputation
    assert second.to_dict() == first.to_dict()
    cached = [p for p in tmp_path.iterdir() if p.name.startswith("traces-")]
    assert len(cached) == 1 and (cached[0] / traces.CONFIG_FILE).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".traces-tmp")]
    traces.build_trace_dataset(None, tokenizer, rows, **{**kwargs, "model_fingerprint": "model-b"})
    traces.build_trace_dataset(None, tokenizer, rows[:4], **kwargs)
    assert fake.calls == [5, 5, 4]


def test_trace_cache_keeps_a_dataset_with_no_rows(monkeypatch, tmp_path, caplog):
    """A model that writes no scoreable program gives an empty trace dataset; the cache keeps it
    loadable (one empty shard), and a cache left with no shard at all is rebuilt, not a traceback."""
    rows = make_rows(4, seed=4)
    fake = _fake_decode({prompt: "def run() {\n}" for prompt in _programs(rows)})
    monkeypatch.setattr(decoding, "decode", fake)
    model = type("Model", (), {"config": type("Config", (), {"hidden_size": 8})()})()
    tokenizer = type("Tok", (), {"get_vocab": lambda self: {"a": 0}})()
    kwargs = dict(cache_dir=tmp_path, model_fingerprint="model-a", semantics=("original",), progress=False)
    first = traces.build_trace_dataset(model, tokenizer, rows, **kwargs)
    second = traces.build_trace_dataset(model, tokenizer, rows, **kwargs)
    assert len(first) == len(second) == 0 and fake.calls == [4]  # the second from the cache
    (cached,) = [p for p in tmp_path.iterdir() if p.name.startswith("traces-")]
    state = json.loads((cached / "state.json").read_text())  # no shard, as an earlier version saved it
    for shard in state["_data_files"]:
        (cached / shard["filename"]).unlink()
    (cached / "state.json").write_text(json.dumps({**state, "_data_files": []}))
    assert len(traces.build_trace_dataset(model, tokenizer, rows, **kwargs)) == 0 and fake.calls == [4, 4]
    assert "is unreadable (IndexError" in caplog.text


def test_model_fingerprint_follows_weights(tiny_model, tmp_path):
    a = traces.fingerprint_model(tiny_model)
    assert a == traces.fingerprint_model(tiny_model)
    tiny_model.save_pretrained(tmp_path)
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    b = traces.fingerprint_model(loaded)  # hashes tmp_path/model.safetensors
    with torch.no_grad():
        loaded.transformer.wte.weight[0, 0] += 1.0
    loaded.name_or_path = ""
    assert traces.fingerprint_model(loaded) not in (a, b)


# ------------------------------------------------------------------------------------ probes
def _separable(n, seed, dim=16, classes=4):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(100).normal(size=(classes, dim)) * 4
    y = rng.integers(classes, size=n)
    return centres[y] + rng.normal(size=(n, dim)), y


@pytest.mark.parametrize("probe", ["linear", "mlp1"])
def test_probe_separable_data_and_shuffled_control(probe):
    x_train, y_train = _separable(400, 0)
    x_test, y_test = _separable(200, 1)
    x, y = np.vstack([x_train, x_test]), np.r_[y_train, y_test]
    score = probes.score_family(x, y, np.arange(600) < 400, probe=probe, seed=0, controls=["shuffled"], max_iter=300)
    assert score["semantic_content"] > 0.97
    assert score["controls"]["shuffled"] < 0.45
    assert score["chance"]["uniform"] == 0.25 and 0.15 < score["chance"]["majority"] < 0.4
    assert np.isnan(score["controls"]["prompt_only"])  # no prompt facts given


def test_probe_core_imports_no_karel_hf():
    source = (Path(probes.__file__)).read_text()
    assert "karel_hf" not in source.split('"""', 2)[2].split("def ")[0]  # imports: NumPy, SciPy, scikit-learn
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('p', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "sys.exit(any(k.startswith('karel_hf') for k in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code, probes.__file__]).returncode == 0
    assert doctest.testmod(probes).failed == 0


def test_probe_report_is_the_flattened_family_score():
    x, y = _separable(300, 2)
    rng = np.random.default_rng(0)
    kwargs = dict(steps=np.arange(300) % 3 + 1, initial_labels=np.zeros(300, dtype=int), output_labels=(y + 1) % 4,
                  prompt_facts=rng.normal(size=(300, 3)), code_states=rng.normal(size=(300, 4)),
                  groups=np.arange(300) // 2, task_names=["d"], num_bootstrap=100)
    flat = probes.probe_report(x, y, np.arange(300) < 200, **kwargs)
    nested = probes.score_family(x, y, np.arange(300) < 200, **kwargs)
    assert flat == probes.flatten(nested) and all(type(v) is float for v in flat.values())
    assert flat["semantic_content"] == nested["semantic_content"] > 0.97
    assert flat["control_output_glyph"] == 0.0 and flat["conditional_gain_low"] > 0.5
    assert set(flat) >= {"unobserved", "margin", "conditional_gain_code_high", "accuracy_d", "accuracy_step_3",
                         "num_train", "num_test", "budget_met", *(f"control_{c}" for c in probes.CONTROLS)}
    per_column = probes.probe_report(x, y, np.arange(300) < 200, **{**kwargs, "prompt_facts": [kwargs["prompt_facts"]]})
    assert per_column == flat  # one block per label column: the same as one shared block here
    with pytest.raises(ValueError, match="train_mask"):
        probes.probe_report(x, y, np.ones(300, dtype=bool))
    with pytest.raises(ValueError, match="unknown control"):
        probes.score_family(x, y, np.arange(300) < 200, controls=["prompt"])


def _table(specs, *, label_of, state_of, n_of=lambda i: 3, seed=0, start_id=0):
    """A hand-built trace table (the columns `measure.semantic_content` reads, one prompt pair):
    spec i has n_of(i) actions; row k's direction label s_k = label_of(i, k) (k = 0: the initial
    direction; k = n: the final one, which the output grid shows), its state = state_of(label, rng)."""
    rng = np.random.default_rng(seed)
    columns = {name: [] for name in ("example_id", "step", "num_actions", "state", "code_state", "direction_0",
                                     "direction_0_prev2", "direction_0_prev1", "direction_0_next1", "direction_0_initial",
                                     "direction_0_final", "direction_0_output")}
    for i in range(specs):
        n = n_of(i)
        trace = [label_of(i, k) for k in range(n + 1)]
        code = rng.normal(size=4)
        for k in range(1, n + 1):
            columns["example_id"].append(start_id + i)
            columns["step"].append(k)
            columns["num_actions"].append(n)
            columns["state"].append(state_of(trace[k], rng))
            columns["code_state"].append(code)
            columns["direction_0"].append(trace[k])
            columns["direction_0_prev2"].append(trace[k - 2] if k >= 2 else MISSING)
            columns["direction_0_prev1"].append(trace[k - 1])
            columns["direction_0_next1"].append(trace[k + 1] if k < n else MISSING)
            columns["direction_0_initial"].append(trace[0])
            columns["direction_0_final"].append(trace[n])
            columns["direction_0_output"].append(trace[n])
    return {k: np.asarray(v, dtype=np.float32 if k in ("state", "code_state") else np.int64) for k, v in columns.items()}


def _encode(label, rng):
    return np.eye(4)[label] + 0.1 * rng.normal(size=4)


def test_prompt_gives_every_label_away():
    # The robot turns to its output direction at once: every scored label is printed in the output grid.
    def label_of(i, k):
        return i % 4 if k == 0 else (i // 4) % 4

    train = _table(240, label_of=label_of, state_of=_encode, seed=1)
    test = _table(120, label_of=label_of, state_of=_encode, seed=2, start_id=1000)
    r = measure.semantic_content(train, test, 0, num_prompt_pairs=1, num_bootstrap=200)
    assert r["semantic_content"] == 1.0
    assert r["controls"]["output_glyph"] == 1.0 and r["controls"]["prompt_only"] == 1.0
    assert r["margin"] == 0.0 and r["strongest_control"] in ("output_glyph", "prompt_only")
    gain = r["conditional_gain"]
    assert abs(gain["value"]) < 0.02 and gain["low"] <= 0 <= gain["high"]
    assert np.isnan(r["unobserved"]) and r["num_unobserved"] == 0  # no label differs from both glyphs


def test_prompt_facts_are_joint_so_interactions_are_not_a_gain():
    # The middle state is a function of both grids together (the net rotation): printed by the
    # prompt, though equal to neither glyph. A state that encodes it adds nothing over the facts.
    def label_of(i, k):
        initial, output = i % 4, (i // 4) % 4
        return initial if k == 0 else output if k == 2 else (initial + output) % 4

    train = _table(320, label_of=label_of, state_of=_encode, n_of=lambda i: 2, seed=8)
    test = _table(160, label_of=label_of, state_of=_encode, n_of=lambda i: 2, seed=9, start_id=1000)
    r = measure.semantic_content(train, test, 0, num_prompt_pairs=1, num_bootstrap=200)
    assert r["semantic_content"] == 1.0 and r["controls"]["prompt_only"] == 1.0
    assert r["controls"]["initial_glyph"] < 0.5 and r["controls"]["output_glyph"] < 0.5 and r["unobserved"] == 1.0
    assert r["conditional_gain"]["value"] == 0.0 and r["margin"] == 0.0
    (facts,) = measure.prompt_facts(train["direction_0_initial"], train["direction_0_output"], train["step"],
                                    train["num_actions"])
    assert facts.shape == (len(train["step"]), 32) and (facts.sum(1) == 1).all()  # 4 x 4 x (k = 1, 2), n = 2


def test_prompt_gives_no_label_away():
    # The state encodes a label that neither grid shows (a random walk of turns ending back on the output).
    table = np.random.default_rng(3).integers(4, size=(400, 5))

    def label_of(i, k):
        return int(table[i, k]) if k < 4 else int(table[i, 0] + 2) % 4  # initial != output

    train = _table(260, label_of=label_of, state_of=_encode, n_of=lambda i: 4, seed=4)
    test = _table(140, label_of=lambda i, k: label_of(i + 260, k), state_of=_encode, n_of=lambda i: 4, seed=5,
                  start_id=1000)
    r = measure.semantic_content(train, test, 0, num_prompt_pairs=1, num_bootstrap=300)
    assert r["semantic_content"] > 0.95 and r["unobserved"] > 0.95
    assert max(r["controls"].values()) < 0.5 and r["margin"] > 0.45
    gain = r["conditional_gain"]
    assert gain["value"] > 0.45 and gain["low"] > 0.3
    assert r["conditional_gain_code"]["low"] > 0.3


def test_drop_last_removes_exactly_the_final_rows():
    lengths = [1, 2, 3, 4, 5]
    table = _table(100, label_of=lambda i, k: (i + k) % 4, state_of=_encode, n_of=lambda i: lengths[i % 5], seed=6)
    test = _table(50, label_of=lambda i, k: (i + k) % 4, state_of=_encode, n_of=lambda i: lengths[i % 5], seed=7,
                  start_id=1000)
    kept = {}
    for drop_last in (True, False):
        for offset in (-2, -1, 0, 1):
            r = measure.semantic_content(table, test, offset, num_prompt_pairs=1, controls=False,
                                         drop_last=drop_last, return_predictions=True)
            steps, n = test["step"][r["test_rows"]], test["num_actions"][r["test_rows"]]
            j = steps + offset
            assert (j >= 1).all()  # j = 0 (the input grid) is never scored
            assert (j <= (n - 1 if drop_last else n)).all()
            assert r["drop_last"] is drop_last and r["num_test"] == len(r["test_rows"])
            kept[drop_last, offset] = set(r["test_rows"].tolist())
    final_rows = set(np.flatnonzero(test["step"] == test["num_actions"]).tolist())
    assert kept[False, 0] - kept[True, 0] == final_rows  # exactly the rows whose label is s_n
    assert kept[False, -1] == kept[True, -1] and kept[False, -2] == kept[True, -2]  # j = k - 1 <= n - 1 anyway
    assert scored_rows([1, 2], [2, 2], -1).tolist() == [False, True]
    assert scored_rows([1, 2, 3], [3, 3, 3], -2, drop_last=False).tolist() == [False, False, True]


def test_v3_joint_tasks_right_only_when_every_part_is():
    rows = 10
    labels_ = np.stack([np.arange(rows) % 2, np.arange(rows) % 3], axis=1)
    initial = labels_.copy()
    initial[6:, 0] = 1 - initial[6:, 0]  # part 0 right on rows 0..5
    initial[:3, 1] = (initial[:3, 1] + 1) % 3  # part 1 right on rows 3..9
    train = np.arange(rows) < 4  # test rows 4..9: part 0 right on 4, 5; part 1 right on all
    states = np.hstack([np.eye(2)[labels_[:, 0]], np.zeros((rows, 1))])  # encodes part 0 only
    r = probes.score_family(states, labels_, train, tasks={"joint": [0, 1], "a": [0], "b": [1]},
                            initial_labels=initial, output_labels=initial, controls=["initial_glyph"])
    assert r["controls"]["initial_glyph"] == pytest.approx(np.mean([2 / 6, 2 / 6, 1.0]))
    assert r["per_task"]["a"] == 1.0
    # b is unreadable from the states: the joint task is right exactly where the b probe is
    assert r["per_task"]["joint"] == r["per_task"]["b"] < 1.0
    assert set(labels.V3_TASKS) == {"direction", "position_from_start", "position_from_end", "facing_wall",
                                    "position", "walls"}
    assert sum(len(p) for p in labels.V3_TASKS.values()) == len(labels.V3_LABELS)


def test_bootstrap_interval_is_seeded():
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 300)) < [[0.7], [0.5]]
    groups = np.arange(300) // 3
    first = probes.bootstrap_difference(a[None], b[None], np.ones((1, 300), bool), groups, seed=1)
    assert first == probes.bootstrap_difference(a[None], b[None], np.ones((1, 300), bool), groups, seed=1)
    assert first != probes.bootstrap_difference(a[None], b[None], np.ones((1, 300), bool), groups, seed=2)
    assert first["low"] < first["value"] < first["high"] and first["value"] == pytest.approx(a.mean() - b.mean())


def test_fixed_budget_same_counts_when_programs_differ_in_length(monkeypatch):
    rows = make_rows(120, seed=8)
    longer = {}
    for prompt, text in _programs(rows).items():  # checkpoint B writes each program twice over
        body = parse(text).actions()
        longer[prompt] = str(Program.from_actions(body + body))
    counts = []
    for programs in (_programs(rows), longer):
        monkeypatch.setattr(decoding, "decode", _fake_decode(programs))
        ds = traces.build_trace_dataset(None, None, rows, semantics=("original",), progress=False)
        train = ds.filter(lambda r: r["example_id"] < 80)
        test = ds.filter(lambda r: r["example_id"] >= 80)
        r = measure.semantic_content(train, test, 0, max_train_rows=100, max_test_rows=40, num_bootstrap=50)
        counts.append((len(ds), r["num_train"], r["num_test"], r["budget"]["met"]))
    assert counts[0][0] < counts[1][0]  # different numbers of trace rows ...
    assert counts[0][1:] == counts[1][1:] == (100, 40, True)  # ... the same probe budget


def test_teacher_forced_rows_identical_across_checkpoints(tiny_model, tokenizer):
    rows = make_rows(12, seed=9)
    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cache = {}  # the labels of a (program, spec) pair are computed once, then reused
    a, b = (traces.build_trace_dataset(m, tokenizer, rows, mode="teacher_forced", min_length=3, semantics=("original", "authors3"),
                                       progress=False, label_cache=c) for m, c in ((tiny_model, None), (other, cache)))
    assert len(cache) == len(set(a["example_id"]))
    assert len(a) == len(b) == sum(len(parse(r["program"]).body) for r in rows if len(parse(r["program"]).body) >= 3)
    vectors = {"state", "code_state"}
    assert a.select_columns([c for c in a.column_names if c not in vectors]).to_dict() == \
        b.select_columns([c for c in b.column_names if c not in vectors]).to_dict()
    assert not np.allclose(np.asarray(a["state"]), np.asarray(b["state"]))  # the states are the model's own
    assert all(a["correct"]) and a["program"][0] == rows[[len(parse(r["program"]).body) >= 3 for r in rows].index(True)]["program"]
    with pytest.raises(ValueError, match="mode"):
        traces.build_trace_dataset(tiny_model, tokenizer, rows, mode="forced", progress=False)


def test_semantic_content_on_traces(monkeypatch):
    rows = make_rows(60, seed=5)
    monkeypatch.setattr(decoding, "decode", _fake_decode(_programs(rows)))
    ds = traces.build_trace_dataset(None, None, rows, semantics=("original", "swap", "authors3"), progress=False)
    train = ds.filter(lambda r: r["example_id"] < 40)
    test = ds.filter(lambda r: r["example_id"] >= 40)
    result = measure.semantic_content(train, test, offset=0, label_set="v1", return_predictions=True, num_bootstrap=100)
    # the fake states encode input 0's direction only
    assert result["per_task"]["direction_0"] > 0.95 and result["semantic_content"] < 0.8
    assert result["controls"]["shuffled"] < 0.5 and result["chance"]["uniform"] == 0.25
    assert set(result["controls"]) == set(probes.CONTROLS) and result["family"] == "current"
    assert set(result["per_step"]) <= set(range(1, 7))  # k = n is never scored (drop_last)
    assert len(result["predictions"]["direction_0"]) == len(result["test_rows"]) == result["num_test"]
    # per-row predictions of the prompt-only control and the state + facts probe give back their scores
    targets = result["targets"]
    assert set(result["control_predictions"]) == {"prompt_only", "conditional"}
    prompt_only = result["control_predictions"]["prompt_only"]
    per_task = [np.mean(prompt_only[t][targets[t] >= 0] == targets[t][targets[t] >= 0]) for t in targets]
    assert np.mean(per_task) == pytest.approx(result["controls"]["prompt_only"])
    assert "control_predictions" not in measure.summary(result)
    inter = measure.intervention(train, test, 0, semantics=("swap", "authors3"), original=result["semantic_content"])
    assert set(inter["accuracy"]) == {"original", "swap", "authors3"}
    assert inter["original_minus_best_alternative"] == pytest.approx(
        result["semantic_content"] - max(inter["accuracy"]["swap"], inter["accuracy"]["authors3"]))
    v3 = measure.semantic_content(train, test, offset=1, label_set="v3", controls=False)
    assert set(v3["per_task"]) == set(labels.V3_TASKS)
    position = measure.semantic_content(train, test, offset=1, label_set="position", num_bootstrap=50)
    assert set(position["per_task"]) == {"position"}  # one v3 task alone, with its own controls and gain
    assert position["semantic_content"] == pytest.approx(v3["per_task"]["position"])
    assert 0 <= position["controls"]["prompt_only"] <= 1 and -1 <= position["conditional_gain"]["value"] <= 1
    with pytest.raises(ValueError, match="one v3 task"):
        measure.semantic_content(train, test, label_set="positions")
    future = measure.semantic_content(train, test, offset=1, return_predictions=True, controls=False)
    analysis_ = measure.future_analysis(result, future, test)
    assert analysis_["num_rows"] == future["num_test"] and 0 <= analysis_["best_future_classifier"] <= 1
    assert analysis_["uninformative"] == (analysis_["best_future_classifier"] >= 0.95 or analysis_["num_rows"] < 100)
    with pytest.raises(ValueError, match="lacks column"):
        measure.semantic_content(train, test, semantics="cycle1")
    with pytest.raises(ValueError, match="no position labels under 'swap'"):
        measure.semantic_content(train, test, label_set="position", semantics="swap")
    # with the alternative's position columns added (the program re-run under it), the same probe scores them
    added = {}
    for table in (measure.load_traces(train), measure.load_traces(test)):
        extra = {}
        for i, (eid, k) in enumerate(zip(table["example_id"], table["step"])):
            row = rows[int(eid)]
            found = step_labels(parse(row["program"]), row["inputs"][:5], semantics=["swap"], labels=("x", "y"),
                                alternative_labels=("x", "y"))
            for name, values in found.items():
                extra.setdefault(name, np.zeros(len(table["step"]), np.int64))[i] = values[int(k) - 1]
        added[len(added)] = {**table, **extra}
    swapped = measure.semantic_content(added[0], added[1], offset=1, label_set="position", semantics="swap",
                                       controls=False)
    assert swapped["semantics"] == "swap" and 0 <= swapped["semantic_content"] <= 1


def _cell_table(state_of, n=1600, seed=0):
    """Trace rows of one cell label: the original (x, y), an alternative (`cycle1`) cell that
    differs on ~30% of rows, prompt facts that say nothing, and the state `state_of(cell, other)`."""
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 4, n), rng.integers(0, 4, n)
    moved = rng.random(n) < 0.3
    ax = np.where(moved, (x + rng.integers(1, 4, n)) % 4, x)  # a different x on the moved rows
    table = {"example_id": np.arange(n), "step": np.ones(n, dtype=np.int64), "num_actions": np.full(n, 3),
             "code_state": rng.normal(size=(n, 4)).astype(np.float32), "x": x, "y": y, "cycle1__x": ax, "cycle1__y": y}
    for part in ("x", "y"):
        table[f"{part}_initial"], table[f"{part}_output"] = np.zeros(n, np.int64), np.zeros(n, np.int64)
    table["state"] = state_of(np.eye(16)[4 * x + y], np.eye(16)[4 * ax + y]) + rng.normal(0, 0.1, (n, 16 * 2))
    table["state"] = table["state"].astype(np.float32)
    return {k: v[:1000] for k, v in table.items()}, {k: v[1000:] for k, v in table.items()}


@pytest.mark.parametrize("encoded", ["original only", "both meanings"])
def test_discordant_margin_reads_the_rows_where_the_meanings_differ(encoded):
    """Where the two cells agree both probes have the same target; where they differ, a state that
    holds the original cell only gives the original's probe the gain and the alternative's none, and
    a state that holds both cells gives both the gain (margin ~0)."""
    def state_of(cell, other):
        return np.concatenate([cell, other if encoded == "both meanings" else np.zeros_like(other)], axis=1)

    train, test = _cell_table(state_of)
    options = dict(label_set="position", controls=("prompt_only", "conditional_gain"), return_predictions=True,
                   num_bootstrap=200)
    original = measure.semantic_content(train, test, 0, **options)
    alternative = measure.semantic_content(train, test, 0, semantics="cycle1", **options)
    found = measure.discordant_margin(original, alternative, test, num_bootstrap=200)
    rows = original["test_rows"]
    differs = test["cycle1__x"][rows] != test["x"][rows]
    assert found["num_rows"] == differs.sum() > 100 and found["fraction"] == pytest.approx(differs.mean())

    def hits(result, which):
        return np.all([result["control_predictions"][which][l] == result["targets"][l] for l in ("x", "y")], axis=0)

    by_hand = (hits(original, "conditional") & differs).sum() - (hits(original, "prompt_only") & differs).sum()
    by_hand -= (hits(alternative, "conditional") & differs).sum() - (hits(alternative, "prompt_only") & differs).sum()
    assert found["value"] == pytest.approx(by_hand / differs.sum())
    assert found["value"] == pytest.approx(found["original_gain"] - found["alternative_gain"])
    assert found["original_gain"] == pytest.approx(found["original_state_facts"] - found["original_facts"])
    assert found["alternative_facts"] == pytest.approx(np.mean(hits(alternative, "prompt_only")[differs]))
    assert found["low"] <= found["value"] <= found["high"]
    assert found["original_gain"] > 0.8  # the facts say nothing; the state gives the cell
    if encoded == "original only":  # the alternative's probe reads the original cell where they differ
        assert found["alternative_gain"] < 0.1 and found["low"] > 0.7
    else:
        assert found["alternative_gain"] > 0.8 and abs(found["value"]) < 0.1
    # over every row the same two gains differ by about the share of differing rows times that margin
    all_rows = original["conditional_gain"]["value"] - alternative["conditional_gain"]["value"]
    assert all_rows == pytest.approx(found["value"] * found["fraction"], abs=0.03)
    shifted = {**alternative, "test_rows": alternative["test_rows"][1:]}
    with pytest.raises(ValueError, match="different test rows"):
        measure.discordant_margin(original, shifted, test)
    plain = measure.semantic_content(train, test, 0, label_set="position", controls=False)
    with pytest.raises(ValueError, match="needs semantic_content"):
        measure.discordant_margin(plain, alternative, test)


@pytest.mark.parametrize("encoded", ["original only", "alternative only", "both meanings"])
def test_given_the_other_meaning_the_gain_is_what_the_state_adds_beyond_it(encoded):
    """`semantic_content(..., given=...)` sets the given columns beside the prompt facts. Each
    meaning's probes given the other meaning's cell: a state that holds one cell gives its own probe
    the gain and the other none (the other's cell is in the facts); one that holds both gives both."""
    def state_of(cell, other):
        return np.concatenate([cell if encoded != "alternative only" else np.zeros_like(cell),
                               other if encoded != "original only" else np.zeros_like(other)], axis=1)

    train, test = _cell_table(state_of)
    options = dict(label_set="position", controls=("prompt_only", "conditional_gain"), return_predictions=True,
                   num_bootstrap=200)
    original = measure.semantic_content(train, test, 0, given=["cycle1__x", "cycle1__y"], **options)
    alternative = measure.semantic_content(train, test, 0, semantics="cycle1", given=["x", "y"], **options)
    assert original["given"] == ["cycle1__x", "cycle1__y"]
    found = measure.discordant_margin(original, alternative, test, num_bootstrap=200)
    # where they differ the facts (the other's cell among them) point at the other's cell: 0 right
    assert found["original_facts"] < 0.05 and found["alternative_facts"] < 0.05
    if encoded == "original only":
        assert found["original_gain"] > 0.8 and found["alternative_gain"] < 0.1 and found["low"] > 0.7
    elif encoded == "alternative only":
        assert found["original_gain"] < 0.1 and found["alternative_gain"] > 0.8 and found["high"] < -0.7
    else:
        assert found["original_gain"] > 0.8 and found["alternative_gain"] > 0.8 and abs(found["value"]) < 0.1
    # without the other's cell a state holding only the original's gives the alternative's probe
    # nothing but the rows where the cells agree; given it, the alternative's facts reach them too
    plain = measure.semantic_content(train, test, 0, semantics="cycle1", **options)
    assert alternative["controls"]["prompt_only"] > plain["controls"]["prompt_only"] + 0.3
    with pytest.raises(ValueError, match="lacks column"):
        measure.semantic_content(train, test, 0, given=["swap__x"], **options)
    with pytest.raises(ValueError, match="need controls"):
        measure.semantic_content(train, test, 0, label_set="position", controls=False, given=["cycle1__x"])


def test_given_the_other_meaning_the_facts_lean_no_longer_tilts():
    """The prompt facts show the original's label (here all of it: the output column is the cell):
    on the rows where the meanings differ the facts alone miss the alternative's label, so a state
    that holds both cells gives the alternative's probe the gain and the original's none (margin -1,
    all tilt). Where the other's label and a given fact fix each label (here the alternative's x is
    the original's shifted when the heading is 1), given them both probes start from the same place."""
    rng = np.random.default_rng(1)
    n = 1600
    x, y, heading = rng.integers(0, 4, n), rng.integers(0, 4, n), rng.integers(0, 4, n)
    ax = np.where(heading == 1, (x + 1) % 4, x)
    table = {"example_id": np.arange(n), "step": np.ones(n, dtype=np.int64), "num_actions": np.full(n, 3),
             "code_state": rng.normal(size=(n, 4)).astype(np.float32), "x": x, "y": y, "cycle1__x": ax,
             "cycle1__y": y, "x_initial": np.zeros(n, np.int64), "y_initial": np.zeros(n, np.int64), "x_output": x,
             "y_output": y, "direction_0_initial": heading}
    table["state"] = (np.hstack([np.eye(16)[4 * x + y], np.eye(16)[4 * ax + y]])
                      + rng.normal(0, 0.1, (n, 32))).astype(np.float32)
    train, test = ({k: v[:1000] for k, v in table.items()}, {k: v[1000:] for k, v in table.items()})
    options = dict(label_set="position", controls=("prompt_only", "conditional_gain"), return_predictions=True,
                   num_bootstrap=200)
    tilted = measure.discordant_margin(measure.semantic_content(train, test, 0, **options),
                                       measure.semantic_content(train, test, 0, semantics="cycle1", **options),
                                       test, num_bootstrap=200)
    assert tilted["value"] < -0.8 and tilted["original_facts"] > 0.95 and tilted["alternative_facts"] < 0.05
    given = measure.discordant_margin(
        measure.semantic_content(train, test, 0, given=["cycle1__x", "cycle1__y", "direction_0_initial"], **options),
        measure.semantic_content(train, test, 0, semantics="cycle1", given=["x", "y", "direction_0_initial"],
                                 **options),
        test, num_bootstrap=200)
    assert abs(given["value"]) < 0.05 and given["alternative_facts"] > 0.95


@pytest.mark.parametrize("encoded", ["original only", "both meanings"])
def test_conditional_intervention_compares_what_the_state_adds_for_each_meaning(encoded):
    """`measure.conditional_intervention` (what `karel-hf reproduce` reports beside the paper's
    accuracies): each meaning's gain over the prompt facts, the original's minus the best
    alternative's, the margin where the labels differ, and the same given each other's label. The
    original's probes passed in are reused and give the same numbers as fitting them again."""
    def state_of(cell, other):
        return np.concatenate([cell, other if encoded == "both meanings" else np.zeros_like(other)], axis=1)

    train, test = _cell_table(state_of)
    for table in (train, test):
        table["direction_0_initial"] = np.zeros(len(table["x"]), np.int64)
    options = dict(label_set="position", semantics=("cycle1",), num_bootstrap=200)
    found = measure.conditional_intervention(train, test, 0, given_other=("cycle1",), **options)
    gain, differ, given = found["gain"], found["discordant"]["cycle1"], found["given_other"]["cycle1"]
    assert set(gain) == {"original", "cycle1"} and found["best_alternative"] == "cycle1"
    assert found["original_minus_best_alternative"] == pytest.approx(gain["original"]["value"] - gain["cycle1"]["value"])
    assert found["discordant_minimum"]["alternative"] == "cycle1" and found["num_rows"] == 600
    assert found["uninformative"] is False and found["determined_by_original_and_initial"]["cycle1"] < 0.95
    assert gain["original"]["value"] > 0.8  # the facts say nothing; the state gives the cell
    if encoded == "original only":  # the alternative's probe gets the rows where the cells agree, ~70%
        assert found["original_minus_best_alternative"] > 0.2 and differ["low"] > 0.7 and given["low"] > 0.7
    else:
        assert abs(found["original_minus_best_alternative"]) < 0.05 and abs(differ["value"]) < 0.1
        assert abs(given["value"]) < 0.1
    fitted = measure.semantic_content(train, test, 0, label_set="position", return_predictions=True, num_bootstrap=200)
    reused = measure.conditional_intervention(train, test, 0, original=fitted, **options)
    assert reused["gain"] == found["gain"] and reused["discordant"] == found["discordant"]
    with pytest.raises(ValueError, match="original: expected the original semantics' position result at offset 0"):
        measure.conditional_intervention(train, test, 0, original=measure.semantic_content(
            train, test, 0, label_set="position", controls=False, return_predictions=True), **options)
    with pytest.raises(ValueError, match="unknown alternative semantics"):
        measure.conditional_intervention(train, test, 0, given_other=("mirror",), **options)


def test_determined_by_keys_the_whole_cell():
    """The informative screen asks whether (original cell, initial cell) fix the alternative's cell:
    a key per coordinate would miss a map that exchanges x and y, and `x * 4 + initial x` would mix
    cells whose coordinates exceed 3."""
    rng = np.random.default_rng(0)
    x, y, x0 = rng.integers(0, 8, 500), rng.integers(0, 8, 500), rng.integers(0, 8, 500)
    cell = {"x": x, "y": y}
    tasks = measure.label_tasks("position")
    assert tasks == {"position": ("x", "y")}
    assert measure.determined_by([cell], {"x": y, "y": x}, tasks) == 1.0
    assert measure.determined_by([cell, {"x": x0, "y": y}], {"x": (x + x0) % 8, "y": y}, tasks) == 1.0
    assert measure.determined_by([cell], {"x": (x + x0) % 8, "y": y}, tasks) < 0.5
    assert np.isnan(measure.determined_by([{"x": np.full(3, MISSING), "y": np.zeros(3, np.int64)}],
                                          {"x": np.zeros(3, np.int64), "y": np.zeros(3, np.int64)}, tasks))


def test_undetermined_rows_are_the_rows_the_best_function_misses():
    """`undetermined_rows` marks exactly the rows `determined_by`'s best function gets wrong: on a
    single task their share is 1 - determined_by. Swap's direction is its mirror about the initial
    one (2 x initial - real) except where the paths parted: only those rows are marked."""
    rng = np.random.default_rng(1)
    real, start = rng.integers(0, 4, 400), rng.integers(0, 4, 400)
    swap = (2 * start - real) % 4
    parted = rng.random(400) < 0.1
    swap[parted] = (swap[parted] + rng.integers(1, 4, int(parted.sum()))) % 4  # a wall sent them apart
    tasks = {"d": ("d",)}
    given = [{"d": real}, {"d": start}]
    off = measure.undetermined_rows(given, {"d": swap}, tasks)
    np.testing.assert_array_equal(off, parted)
    assert off.mean() == pytest.approx(1 - measure.determined_by(given, {"d": swap}, tasks))
    # a row missing a label is never marked; a cell is marked when either coordinate is off
    swap[:5] = MISSING
    assert not measure.undetermined_rows(given, {"d": swap}, tasks)[:5].any()
    cell = {"x": real, "y": start}
    moved = {"x": real, "y": np.where(parted, (start + 1) % 4, start)}
    np.testing.assert_array_equal(measure.undetermined_rows([cell], moved, {"cell": ("x", "y")}), parted)


def test_the_mirror_meanings_cell_is_the_real_one_reflected_unless_a_wall_stops_one():
    """Under `swap` (left and right turns exchanged) the robot's move from its initial cell is the
    real move reflected about the initial heading, so (the real move, the initial direction) fix it
    on every row where no wall or border stops one run and not the other, and the real move alone
    does not; a meaning in which other tokens move the robot (`cycle1`) gains little from the
    heading. (`probe_study.py --conditional_intervention` reports it as `determined_by_prompt`.)"""
    rows = make_rows(300, seed=3)
    cols = {}
    for row in rows:
        found = step_labels(parse(row["program"]), row["inputs"][:5], semantics=["original", "swap", "cycle1"],
                            offsets=(0,), labels=("x", "y", "direction_0"), alternative_labels=("x", "y"))
        for name, values in found.items():
            cols.setdefault(name, []).append(values)
    cols = {k: np.concatenate(v) for k, v in cols.items()}
    tasks = measure.label_tasks("position")

    def move(prefix):  # from the initial cell, shifted clear of MISSING
        return {p: cols[f"{prefix}{p}"] - cols[f"{p}_initial"] + 100 for p in ("x", "y")}

    heading = {"x": cols["direction_0_initial"], "y": cols["direction_0_initial"]}
    share = {name: (measure.determined_by([move("")], move(f"{name}__"), tasks),
                    measure.determined_by([move(""), heading], move(f"{name}__"), tasks)) for name in ("swap", "cycle1")}
    assert share["swap"][1] > 0.85 and share["swap"][1] - share["swap"][0] > 0.08
    assert share["cycle1"][1] - share["cycle1"][0] < 0.03 and share["cycle1"][1] < share["swap"][1] - 0.1


def test_fewer_prompt_pairs_prompt_spec_and_v1_tasks(monkeypatch):
    rows = make_rows(40, seed=6)
    programs = _programs(rows, pairs=1)
    # A do-nothing program on a spec whose pair 0 shows no visible change (row 3 with this seed):
    # correct on the 1-pair spec, wrong on the held-out pairs.
    noop = parse("def run() {\n  put_marker()\n  pick_marker()\n}")

    def matches(row, pair):
        return np.array_equal(execute(noop, World.from_view_codes(row["inputs"][pair])).world.view_codes(),
                              row["outputs"][pair])

    wrong = [r["id"] for r in rows if matches(r, 0) and not all(matches(r, j) for j in range(10))]
    assert wrong
    for row in rows:
        if row["id"] in wrong:
            programs[format_prompt(row["inputs"][:1], row["outputs"][:1])] = str(noop)
    fake = _fake_decode(programs)
    monkeypatch.setattr(decoding, "decode", fake)
    ds = traces.build_trace_dataset(None, None, rows, num_prompt_pairs=1, progress=False)
    assert len(set(ds["example_id"])) == len(rows)  # every prompt had one pair (the fake knows no other)
    assert all(ds["correct"])
    assert {i for i, ok in zip(ds["example_id"], ds["correct_all"]) if not ok} == set(wrong)
    train = ds.filter(lambda r: r["example_id"] < 28)
    test = ds.filter(lambda r: r["example_id"] >= 28)
    one = measure.semantic_content(train, test, label_set="v1", num_prompt_pairs=1, num_bootstrap=50)
    assert set(one["per_task"]) == {"direction_0"} and one["semantic_content"] > 0.95  # the fake encodes input 0
    five = measure.semantic_content(train, test, label_set="v1", num_bootstrap=50)
    assert len(five["per_task"]) == 5 and five["semantic_content"] < one["semantic_content"]
    assert labels.v1_labels(3) == ("direction_0", "direction_1", "direction_2") and labels.v1_labels(9) == labels.V1_LABELS
    with pytest.raises(ValueError, match="num_prompt_pairs"):
        traces.build_trace_dataset(None, None, rows, num_prompt_pairs=0, progress=False)


# ---------------------------------------------------------------------------------- analysis
def test_regress_perfect_line():
    result = analysis.regress([0.1, 0.3, 0.5, 0.7], [0.25, 0.35, 0.45, 0.55])
    assert result["r2"] == pytest.approx(1.0) and result["slope"] == pytest.approx(2.0)
    assert result["intercept"] == pytest.approx(-0.4) and result["n"] == 4 and result["p_value"] < 1e-6
    with pytest.raises(ValueError):
        analysis.regress([0.1], [0.2])


def test_best_future_classifier_and_conditional_probe():
    # current N -> future N, N, E (best: N, 2/3); current E -> future S, S (best: S, 2/2); one missing
    current = np.array([0, 0, 0, 1, 1, 2])
    future = np.array([0, 0, 1, 2, 2, MISSING])
    assert analysis.best_future_classifier(current, future) == pytest.approx(4 / 5)
    assert analysis.best_future_classifier({"a": current}, {"a": future}) == pytest.approx(4 / 5)
    value = analysis.probe_future_given_current_correct(
        {"a": [0, 1, 1, 1]}, {"a": [0, 0, 1, 1]}, {"a": [2, 2, 3, 0]}, {"a": [2, 2, 3, MISSING]}
    )
    assert value == pytest.approx(1.0)  # rows 0 and 2 qualify (row 3's future is missing)
    assert doctest.testmod(analysis).failed == 0


def test_length_test():
    generated = np.array([3, 4, 2, 5, 6, 3, 4, 2, 5, 1, 3, 2])
    reference = generated + np.array([1, 2, 1, 0, 3, 1, 2, 1, 1, 2, 1, 2])
    result = analysis.length_test(generated, reference)
    assert result["p_value"] < 0.01 and result["mean_generated"] < result["mean_reference"]
    assert (result["num_shorter"], result["num_equal"], result["num_longer"]) == (11, 1, 0)
    assert analysis.length_test(reference, generated)["p_value"] > 0.5
    assert analysis.length_test([3, 3], [3, 3])["p_value"] == 1.0


def test_program_perplexity(tiny_model, tokenizer):
    rows = make_rows(3, seed=6)
    texts = [format_prompt(r["inputs"][:5], r["outputs"][:5]) + r["program"] for r in rows]
    result = analysis.program_perplexity(tiny_model, tokenizer, texts, batch_size=2)
    expected_tokens = sum(len(parse(r["program"]).body) + 3 + 1 + 1 for r in rows)  # preamble 3, "}", eos
    assert result["num_tokens"] == expected_tokens
    # the same mean NLL as transformers' own loss over the program tokens of one text
    one = analysis.program_perplexity(tiny_model, tokenizer, texts[:1], include_eos=False)
    prompt_ids = tokenizer(format_prompt(rows[0]["inputs"][:5], rows[0]["outputs"][:5]))["input_ids"]
    ids = torch.tensor([tokenizer(texts[0])["input_ids"]])
    labels_ = ids.clone()
    labels_[0, : len(prompt_ids)] = -100
    with torch.no_grad():
        loss = tiny_model(input_ids=ids, labels=labels_).loss
    assert one["mean_nll"] == pytest.approx(float(loss), rel=1e-4)
    assert result["perplexity"] > 1


def test_short_traces_give_nan_not_an_error(monkeypatch):
    rows = make_rows(30, seed=10)
    short = {prompt: "def run() {\n  move()\n  turn_left()\n}" for prompt in _programs(rows)}
    monkeypatch.setattr(decoding, "decode", _fake_decode(short))
    ds = traces.build_trace_dataset(None, None, rows, semantics=("original",), progress=False)
    train, test = ds.filter(lambda r: r["example_id"] < 20), ds.filter(lambda r: r["example_id"] >= 20)
    result = measure.semantic_content(train, test, offset=2)  # no program has 4 actions: nothing to score
    assert np.isnan(result["semantic_content"]) and np.isnan(result["margin"]) and result["num_train"] == 0
    assert np.isnan(result["conditional_gain"]["value"]) and result["per_step"] == {}
    fit = analysis.regress([0.1, 0.3, float("nan"), 0.5], [0.2, 0.4, 0.9, 0.6])
    assert fit["n"] == 3 and fit["r2"] == pytest.approx(1.0)
