"""Grammar-constrained decoding: grammar, batching, and hidden-state capture (karel_hf/decoding.py)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2LMHeadModel

from karel_hf.data.formatting import format_prompt
from karel_hf.decoding import KarelGrammarProcessor, decode, default_max_new_tokens, evaluate_generation, teacher_force
from karel_hf.karel import World, format_program, parse

torch.set_num_threads(1)
REFERENCE = Path(__file__).resolve().parent / "data" / "reference" / "straight_line_200.jsonl"


@pytest.fixture(scope="module")
def tokenizer():
    from karel_hf.tokenizer import build_tokenizer

    return build_tokenizer()


def tiny_model(tokenizer, seed: int, *, n_embd: int = 16, n_layer: int = 2, initializer_range: float = 1.0):
    """A random GPT-2; the large init makes greedy choices vary with the prompt."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=512, n_embd=n_embd, n_layer=n_layer, n_head=2,
        initializer_range=initializer_range, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, attn_implementation="eager",
    )
    return GPT2LMHeadModel(config).eval()


def _rows(n: int) -> list[dict]:
    """Dataset-style rows (view codes) from the authors' reference specs."""
    rows = []
    for line in REFERENCE.read_text().splitlines()[:n]:
        record = json.loads(line)
        rows.append({
            "inputs": np.stack([World.from_ascii(record[f"input{i}"]).view_codes() for i in range(10)]),
            "outputs": np.stack([World.from_ascii(record[f"output{i}"]).view_codes() for i in range(10)]),
            "length": parse(record["code"]).num_actions(),
        })
    return rows


@pytest.fixture(scope="module")
def rows():
    return _rows(8)


@pytest.fixture(scope="module")
def mixed_prompts(rows):
    """Prompts with 1..3 pairs: different lengths, so a batch is left-padded."""
    return [format_prompt(r["inputs"][: 1 + i % 3], r["outputs"][: 1 + i % 3]) for i, r in enumerate(rows)]


def test_processor_forces_the_paper_grammar(tokenizer):
    vocab = tokenizer.get_vocab()
    processor = KarelGrammarProcessor(tokenizer, prompt_length=2, max_new_actions=2)
    scores = torch.zeros(1, len(tokenizer))

    def allowed(generated):
        ids = torch.tensor([[1, 240] + [vocab[p] for p in generated]])
        return {tokenizer.convert_ids_to_tokens(i) for i in torch.nonzero(processor(ids, scores)[0] > -1e9).flatten().tolist()}

    assert allowed([]) == {"def "}
    assert allowed(["def "]) == {"run() "}
    assert allowed(["def ", "run() "]) == {"{\n"}
    top_actions = {f"  {a}()\n" for a in ("move", "turn_left", "turn_right", "put_marker", "pick_marker")}
    assert allowed(["def ", "run() ", "{\n"]) == top_actions
    assert allowed(["def ", "run() ", "{\n", "  move()\n"]) == top_actions | {"}"}
    assert allowed(["def ", "run() ", "{\n", "  move()\n", "  move()\n"]) == {"}"}
    assert allowed(["def ", "run() ", "{\n", "  move()\n", "}"]) == {"</s>"}


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), max_new_actions=st.integers(1, 6))
def test_constrained_programs_always_parse(tokenizer, mixed_prompts, seed, max_new_actions):
    model = tiny_model(tokenizer, seed, n_layer=1)
    out = decode(model, tokenizer, mixed_prompts[:4], batch_size=4, max_new_actions=max_new_actions, progress=False)
    for text, n, ids, where in zip(out.programs, out.num_actions, out.token_ids, out.action_token_index):
        program = parse(text, extended=False)
        assert 1 <= n <= max_new_actions
        assert program.num_actions() == n == len(where)
        assert format_program(program, "lines") == text  # the paper's one-action-per-line layout
        assert tokenizer.convert_ids_to_tokens(ids)[-1] == "}"
        assert len(ids) <= default_max_new_tokens(max_new_actions) - 1  # eos not included


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), max_new_actions=st.integers(1, 6))
def test_extended_grammar_programs_parse(tokenizer, mixed_prompts, seed, max_new_actions):
    model = tiny_model(tokenizer, seed, n_layer=1)
    out = decode(model, tokenizer, mixed_prompts[:4], batch_size=4, max_new_actions=max_new_actions, extended=True, progress=False)
    for text, n, ids in zip(out.programs, out.num_actions, out.token_ids):
        program = parse(text, extended=True)
        assert 1 <= n <= max_new_actions
        assert program.num_actions() == n
        assert format_program(program, "lines") == text
        assert len(ids) < default_max_new_tokens(max_new_actions, extended=True)


def test_batch_size_independence(tokenizer, mixed_prompts):
    model = tiny_model(tokenizer, seed=3)
    batched = decode(model, tokenizer, mixed_prompts, batch_size=8, capture=True, progress=False)
    single = decode(model, tokenizer, mixed_prompts, batch_size=1, capture=True, progress=False)
    assert batched.programs == single.programs
    assert len(set(batched.programs)) > 1  # the test means something only if programs differ
    for a, b in zip(batched.action_states, single.action_states):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_captured_states_align_with_a_full_forward_pass(tokenizer, mixed_prompts):
    model = tiny_model(tokenizer, seed=5, n_embd=32, n_layer=3, initializer_range=0.3)
    out = decode(model, tokenizer, mixed_prompts, batch_size=8, capture=True, layers=(0, -1), progress=False)
    assert set(out.layer_states) == {0, -1}
    vocab = tokenizer.get_vocab()
    actions = [vocab[f"  {a}()\n"] for a in ("move", "turn_left", "turn_right", "put_marker", "pick_marker")]
    close = vocab["}"]
    for i, prompt in enumerate(mixed_prompts):
        prompt_ids = tokenizer(prompt)["input_ids"]
        ids = torch.tensor([prompt_ids + out.token_ids[i]])  # unpadded, one example
        with torch.no_grad():
            hidden = model(ids, output_hidden_states=True).hidden_states  # n_layer+1 x (1, seq, hidden)
        assert len(hidden) == model.config.n_layer + 1
        layer_mean = torch.stack(hidden).mean(0)[0]  # (seq, hidden)
        # action k sits at prompt_len + action_token_index[k]; its logits come from the position before
        before = [len(prompt_ids) + j - 1 for j in out.action_token_index[i]]
        assert out.action_states[i].shape == (out.num_actions[i], model.config.n_embd)
        assert out.action_states[i].dtype == np.float32
        np.testing.assert_allclose(out.action_states[i], layer_mean[before].numpy(), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(out.layer_states[0][i], hidden[0][0, before].numpy(), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(out.layer_states[-1][i], hidden[-1][0, before].numpy(), atol=1e-4, rtol=1e-4)
        # and the constrained greedy choice there is the action itself (the state "emits" action k)
        with torch.no_grad():
            logits = model(ids).logits[0, before]  # (num_actions, vocab)
        for k, (row, j) in enumerate(zip(logits, out.action_token_index[i])):
            choices = actions + ([close] if k > 0 else [])
            assert choices[int(row[choices].argmax())] == out.token_ids[i][j]


def test_teacher_forcing_equals_capture_on_the_greedy_program(tokenizer, mixed_prompts):
    """Capture equivalence: forcing what greedy decoding wrote gives the generated states back
    (action states, code-position state, layers), and two calls give identical rows."""
    model = tiny_model(tokenizer, seed=5, n_embd=32, n_layer=3, initializer_range=0.3)
    out = decode(model, tokenizer, mixed_prompts, batch_size=8, capture=True, layers=(0, -1), progress=False)
    assert len(set(out.programs)) > 1 and len(out.code_states) == len(mixed_prompts)
    forced = teacher_force(model, tokenizer, mixed_prompts, out.programs, batch_size=3, layers=(0, -1))
    again = teacher_force(model, tokenizer, mixed_prompts, out.programs, batch_size=5, layers=(0, -1))
    assert forced.num_actions == out.num_actions and forced.action_token_index == out.action_token_index
    assert forced.token_ids == out.token_ids
    for i, prompt in enumerate(mixed_prompts):
        np.testing.assert_allclose(forced.action_states[i], out.action_states[i], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(forced.code_states[i], out.code_states[i], atol=1e-4, rtol=1e-4)
        for layer in (0, -1):
            np.testing.assert_allclose(forced.layer_states[layer][i], out.layer_states[layer][i], atol=1e-4, rtol=1e-4)
            np.testing.assert_allclose(forced.code_layer_states[layer][i], out.code_layer_states[layer][i], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(again.action_states[i], forced.action_states[i], atol=1e-5)
        # the code state is the last prompt position ("Code:\n"), which has seen no program
        prompt_ids = tokenizer(prompt)["input_ids"]
        with torch.no_grad():
            hidden = model(torch.tensor([prompt_ids]), output_hidden_states=True).hidden_states
        np.testing.assert_allclose(forced.code_states[i], torch.stack(hidden).mean(0)[0, -1].numpy(), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="one program per prompt"):
        teacher_force(model, tokenizer, mixed_prompts, out.programs[:1])


def test_unconstrained_decoding_and_restores_training_mode(tokenizer, mixed_prompts):
    model = tiny_model(tokenizer, seed=0).train()
    out = decode(model, tokenizer, mixed_prompts[:2], constrained=False, capture=True, progress=False)
    assert model.training
    assert len(out.programs) == 2 and all(isinstance(p, str) for p in out.programs)
    assert [s.shape[0] for s in out.action_states] == out.num_actions


def test_evaluate_generation_on_rows(tokenizer, rows):
    model = tiny_model(tokenizer, seed=1)
    metrics = evaluate_generation(model, tokenizer, rows[:4], batch_size=4, max_new_actions=4)
    assert metrics["num_examples"] == 4 and metrics["parse_rate"] == 1.0
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert 1.0 <= metrics["mean_generated_length"] <= 4.0
    assert all(isinstance(v, (int, float)) for v in metrics.values())


def test_bad_arguments(tokenizer, mixed_prompts):
    model = tiny_model(tokenizer, seed=0)
    with pytest.raises(ValueError, match="layer"):
        decode(model, tokenizer, mixed_prompts[:1], capture=True, layers=(7,), progress=False)
    with pytest.raises(ValueError, match="max_new_actions"):
        decode(model, tokenizer, mixed_prompts[:1], max_new_actions=0, progress=False)
    with pytest.raises(TypeError):
        decode(model, tokenizer, mixed_prompts[0], progress=False)
