"""GPT-2 presets: shapes, sizes, special ids from the tokenizer, clear errors."""

import pytest
import torch

from karel_hf.modeling import (
    MODEL_PRESETS,
    SINUSOIDAL_POSITION_SCALE,
    build_model,
    count_parameters,
    model_config,
    sinusoidal_table,
)
from karel_hf.tokenizer import build_tokenizer
from karel_hf.utils import parse_overrides as parse_config_overrides

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.mark.parametrize("preset", list(MODEL_PRESETS))
def test_preset_config_is_sized_to_the_tokenizer(preset, tokenizer):
    config = model_config(preset, tokenizer)
    shape = MODEL_PRESETS[preset]
    assert (config.n_layer, config.n_embd, config.n_head, config.n_positions) == (
        shape.n_layer, shape.n_embd, shape.n_head, shape.n_positions)
    assert config.vocab_size == len(tokenizer)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert config._attn_implementation == "eager"
    assert config.resid_pdrop == config.embd_pdrop == config.attn_pdrop == 0.0


def test_paper_preset_has_codegen_350m_body(tokenizer):
    with torch.device("meta"):  # no memory for 254M parameters
        model = build_model("paper", tokenizer)
    d = 1024
    # per block: qkv (3d^2 + 3d), out (d^2 + d), MLP (8d^2 + 5d), two layer norms (4d)
    assert count_parameters(model, blocks_only=True) == 20 * (12 * d * d + 13 * d)
    assert 250e6 < count_parameters(model) < 260e6


def test_built_model_generates_with_tokenizer_ids(tokenizer):
    torch.manual_seed(0)
    model = build_model("tiny", tokenizer)
    gen = model.generation_config
    assert (gen.bos_token_id, gen.eos_token_id, gen.pad_token_id) == (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    enc = tokenizer(["Examples:\n\n"], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert out.shape[1] <= enc["input_ids"].shape[1] + 3


def test_overrides_and_errors(tokenizer):
    assert parse_config_overrides("n_layer=3, resid_pdrop=0.1,scale_attn_weights=false") == {
        "n_layer": 3, "resid_pdrop": 0.1, "scale_attn_weights": False}
    assert model_config("tiny", tokenizer, n_layer=3).n_layer == 3
    with pytest.raises(ValueError, match="unknown model preset 'huge'.*tiny, demo, cpu, cpu-cf, cpu-cf-stage1, cpu-cf-stage2, small, paper"):
        model_config("huge", tokenizer)
    with pytest.raises(ValueError, match="n_layers"):
        model_config("tiny", tokenizer, n_layers=3)
    with pytest.raises(ValueError, match="multiple of n_head"):
        model_config("tiny", tokenizer, n_head=3)
    with pytest.raises(ValueError, match="key=value"):
        parse_config_overrides("n_layer")


def test_sinusoidal_position_init(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = build_model("tiny", tokenizer, position_init="sinusoidal")
    table = model.transformer.wpe.weight.detach()
    assert torch.equal(table, sinusoidal_table(*table.shape))
    assert table[0, 1] == pytest.approx(SINUSOIDAL_POSITION_SCALE)  # cos(0) in every odd column of row 0
    assert table[7, 0] == pytest.approx(SINUSOIDAL_POSITION_SCALE * float(torch.sin(torch.tensor(7.0))))
    # only the position table differs from the default initialisation with the same seed
    torch.manual_seed(0)
    normal = build_model("tiny", tokenizer)
    assert not torch.equal(normal.transformer.wpe.weight, table)
    assert torch.equal(normal.transformer.wte.weight, model.transformer.wte.weight)
    model.save_pretrained(tmp_path)  # still a stock GPT-2 checkpoint
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(loaded.transformer.wpe.weight, table)
    with pytest.raises(ValueError, match="position_init: unknown value 'rotary'"):
        build_model("tiny", tokenizer, position_init="rotary")
def test_prompt_layout_is_read_off_the_tokenised_prompt(tokenizer):
    import numpy as np

    from karel_hf.data.formatting import format_prompt
    from karel_hf.modeling import prompt_layout

    layout = prompt_layout(tokenizer, 2, 4, 4)
    assert layout.cells.shape == (4, 4, 4) and layout.num_grids == 4
    rng = np.random.default_rng(0)
    grids = rng.choice([0, 1, 6, 7, 8], size=(2, 2, 4, 4)).astype(np.int8)  # empty, wall, markers
    grids[:, :, 1, 2] = 3  # one robot per grid (facing right)
    text = format_prompt(grids[0], grids[1])
    ids = tokenizer(text)["input_ids"]
    assert len(ids) == layout.prompt_length
    pieces = tokenizer.convert_ids_to_tokens(ids)
    from karel_hf.karel.world import CELL_WORDS

    order = [grids[0][0], grids[1][0], grids[0][1], grids[1][1]]  # Input0, Output0, Input1, Output1
    for g, grid in enumerate(order):
        for r in range(4):
            for c in range(4):
                assert pieces[layout.cells[g, r, c]].strip() == CELL_WORDS[grid[r, c]]


def test_prompt_layout_of_two_cells_per_token():
    """With build_tokenizer(cells_per_token=2) a row of 4 cells is 2 tokens, and layout.cells[g, r, k] is
    the token of cells 2k and 2k + 1; an odd row ends in its last cell alone."""
    import numpy as np

    from karel_hf.data.formatting import format_prompt
    from karel_hf.karel.world import CELL_WORDS
    from karel_hf.modeling import grid_position_table, prompt_layout

    pair = build_tokenizer(2)
    layout = prompt_layout(pair, 2, 4, 4)
    assert layout.cells.shape == (4, 4, 2) and layout.prompt_length == prompt_layout(build_tokenizer(), 2, 4, 4).prompt_length - 32
    grids = np.random.default_rng(1).choice([0, 1, 6, 7], size=(2, 2, 4, 4)).astype(np.int8)
    grids[:, :, 2, 1] = 4  # one robot per grid (facing down)
    ids = pair(format_prompt(grids[0], grids[1]))["input_ids"]
    pieces = pair.convert_ids_to_tokens(ids)
    order = [grids[0][0], grids[1][0], grids[0][1], grids[1][1]]
    for g, grid in enumerate(order):
        for r in range(4):
            for k in range(2):
                assert pieces[layout.cells[g, r, k]].split() == [CELL_WORDS[grid[r, 2 * k]], CELL_WORDS[grid[r, 2 * k + 1]]]
    assert prompt_layout(pair, 2, 3, 5).cells.shape == (4, 3, 3)
    table = grid_position_table(128, 64, layout, generator=torch.Generator().manual_seed(0))
    cos = torch.nn.functional.cosine_similarity(table[layout.cells[0, 1, 0]], table[layout.cells[1, 1, 0]], dim=0)
    assert cos > 0.7  # the same pair of cells in Input0 and Output0


def test_grid_position_init(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    from karel_hf.modeling import prompt_layout

    layout = prompt_layout(tokenizer, 2, 4, 4)
    torch.manual_seed(0)
    model = build_model("cpu", tokenizer, position_init="grid", layout=layout)
    table = model.transformer.wpe.weight.detach()
    assert table.std() == pytest.approx(SINUSOIDAL_POSITION_SCALE, rel=1e-4)
    cos = lambda a, b: float(torch.nn.functional.cosine_similarity(table[a], table[b], dim=0))  # noqa: E731
    cells = layout.cells
    assert cos(cells[0, 1, 1], cells[1, 1, 1]) > 0.7  # the same cell of Input0 and Output0
    assert cos(cells[0, 1, 1], cells[0, 1, 2]) > 0.5  # neighbours in a row share the row code
    assert abs(cos(cells[0, 0, 0], cells[2, 3, 3])) < 0.4  # far cells of other grids
    q = table.shape[1] // 4
    assert torch.equal(table[cells[0, 2, 1], :q], table[cells[3, 2, 3], :q])  # row code
    torch.manual_seed(0)
    again = build_model("cpu", tokenizer, position_init="grid", layout=layout)
    assert torch.equal(again.transformer.wpe.weight, table)
    model.save_pretrained(tmp_path)  # still a stock GPT-2 checkpoint
    assert torch.equal(AutoModelForCausalLM.from_pretrained(tmp_path).transformer.wpe.weight, table)
    with pytest.raises(ValueError, match="layout"):
        build_model("cpu", tokenizer, position_init="grid")


def test_the_fused_gelu_is_gpt2s_gelu(tokenizer, tmp_path):
    """`gelu_pytorch_tanh` (the demo preset's) computes the function GPT-2's `gelu_new` computes: the same
    weights give the same logits and gradients up to float rounding, and the checkpoint loads as a stock
    GPT-2 that keeps its activation."""
    from transformers import AutoModelForCausalLM, set_seed

    set_seed(0)
    fused = build_model("demo", tokenizer, position_init="normal")
    assert fused.config.activation_function == "gelu_pytorch_tanh"
    plain = build_model("demo", tokenizer, position_init="normal", activation_function="gelu_new")
    plain.load_state_dict(fused.state_dict())
    ids = tokenizer(["Examples:\n\nInput0\n"] * 3, return_tensors="pt")["input_ids"]
    outputs = [model(input_ids=ids, labels=ids) for model in (fused, plain)]
    assert torch.allclose(outputs[0].logits, outputs[1].logits, atol=1e-5)
    for out in outputs:
        out.loss.backward()
    for (name, a), b in zip(fused.named_parameters(), plain.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name
    x = torch.linspace(-6, 6, 1001)
    act = fused.transformer.h[0].mlp.act
    assert torch.allclose(act(x), plain.transformer.h[0].mlp.act(x), atol=1e-6)
    exact = build_model("demo", tokenizer, position_init="normal", activation_function="gelu").transformer.h[0].mlp.act
    assert (act(x) - exact(x)).abs().max() > 1e-4  # the tanh form, not the erf one: the check can tell them apart
    fused.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "GPT2LMHeadModel" and loaded.config.activation_function == "gelu_pytorch_tanh"
