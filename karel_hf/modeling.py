"""The GPT-2 of karel_hf: a stock `GPT2LMHeadModel` shaped by a preset and sized to the tokenizer.

A preset's `model` section (karel_hf/presets/<name>.yaml, one file per preset, read into
`MODEL_PRESETS`) fixes the shape: layers, width, heads, context. The vocabulary size and the special
token ids come from the tokenizer, so a checkpoint loads with `AutoModelForCausalLM` and generates
with `pipeline("text-generation")` without any extra arguments. Attention is "eager": on the CPUs
this project runs on it beat "sdpa" by 12-19% at these sizes (docs/cpu_notes.md). The `paper`
preset has the transformer body of CodeGen-350M, the paper's model (251.8M parameters in the blocks).

Dropout is 0 in every preset, as in CodeGen-350M's config: the runs see each sample about once.

`position_init="sinusoidal"` starts GPT-2's learned position table (`wpe`) from the Transformer's
sine/cosine table scaled to `SINUSOIDAL_POSITION_SCALE` instead of N(0, 0.02). The model and the
checkpoint stay a stock GPT-2 (the table is still learned); only its starting point changes, and
with it attention by relative offset ("the same cell one grid earlier") is available from step 0.
On this project's CPU runs it is what lets a small model leave the babbling phase within minutes
(see karel_hf/presets/cpu.yaml for the measurements).

`position_init="grid"` goes one step further (`grid_position_table`): every grid cell of the
prompt starts with a row code, a column code and a code for its grid, so the same cell of every
input and output grid starts with nearly the same position vector. The cells' positions are read
off the tokenised prompt (`prompt_layout`), never hard-coded. On 2 prompt pairs and 1..6 actions it
reached 68% generation accuracy in 16k steps where the sinusoidal start reached 27% (one seed each,
docs/cpu_notes.md); benchmarks/emergence/ records the runs made with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.activations import ACT2FN

from karel_hf.presets import MODEL_SHAPE, PresetError, load_preset, preset_names
from karel_hf.utils import apply_config_overrides

EAGER = "eager"
# GPT-2's own activation, and the preset default: the tanh approximation of GELU written as
# elementwise ops. "gelu_pytorch_tanh" is the same function as one fused kernel (a preset may choose it).
DEFAULT_ACTIVATION = "gelu_new"
POSITION_INITS = ("normal", "sinusoidal", "grid")
# Grid start: weight of the sinusoidal code in the last quarter of a grid cell's position vector.
GRID_SINUSOIDAL_WEIGHT = 0.7
# ... and of the grid code (which grid), so that the same cell of two grids starts at cosine ~0.85.
GRID_CODE_WEIGHT = 0.5
# Amplitude of the sinusoidal table: per-dimension spread ~0.02, like GPT-2's token embeddings.
SINUSOIDAL_POSITION_SCALE = 0.03


@dataclass(frozen=True)
class ModelPreset:
    """The GPT-2 of a preset (its `model` section): the shape, and the activation (GPT-2's own unless the
    section names another of transformers' activations)."""

    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    activation_function: str = DEFAULT_ACTIVATION
    n_inner: int | None = None  # the MLP width; GPT-2's 4 x n_embd when None

    @classmethod
    def from_section(cls, model: dict, source: str = "") -> ModelPreset:
        """From a preset's model section (its keys and types checked by karel_hf.presets); an activation
        transformers does not know raises `PresetError` naming it and `source`."""
        activation = model.get("activation_function", DEFAULT_ACTIVATION)
        if activation not in ACT2FN:
            raise PresetError(f"preset {source}: model activation_function {activation!r} is not one of "
                              f"transformers' activations ({', '.join(sorted(ACT2FN))})")
        return cls(**{k: model[k] for k in MODEL_SHAPE}, activation_function=activation, n_inner=model.get("n_inner"))

    @classmethod
    def of(cls, preset: str) -> ModelPreset:
        """The shape of a preset of karel_hf/presets, or of a preset file with a model section."""
        if preset in MODEL_PRESETS:
            return MODEL_PRESETS[preset]
        expected = f"expected one of {', '.join(MODEL_PRESETS)} or a preset file with a model section"
        if not Path(preset).is_file():
            raise ValueError(f"unknown model preset {preset!r}; {expected}")
        try:
            model = load_preset(preset).model
        except PresetError as err:
            raise ValueError(f"model preset {preset!r}: {err}") from None
        if not model:
            raise ValueError(f"model preset {preset!r} has no model section; {expected}")
        return cls.from_section(model, preset)


# Every preset's shape, smallest run first (karel_hf.presets.preset_names).
MODEL_PRESETS: dict[str, ModelPreset] = {
    name: ModelPreset.from_section(load_preset(name).model, name) for name in preset_names()
}


def _special_ids(tokenizer) -> dict:
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    missing = [name for name, value in ids.items() if value is None]
    if missing:
        raise ValueError(f"the tokenizer has no {', '.join(missing)}: use karel_hf.tokenizer.build_tokenizer()")
    return ids


def model_config(preset: str, tokenizer, *, config_overrides: str | None = None, **overrides):
    """The `GPT2Config` of a preset (a name or a preset file), with vocab size and bos/eos/pad ids from
    `tokenizer`.

    `overrides` are GPT2Config fields (e.g. `n_layer=6`, `resid_pdrop=0.0`); unknown names raise.
    `config_overrides` is the same as a string (`"n_layer=6,resid_pdrop=0.0"`), applied last with
    transformers' own `PretrainedConfig.update_from_string` (karel_hf.utils.apply_config_overrides).
    """
    shape = ModelPreset.of(preset)
    known = set(GPT2Config().to_dict())
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown GPT2Config field(s) {unknown} in the model overrides")
    values = {
        "n_layer": shape.n_layer,
        "n_embd": shape.n_embd,
        "n_head": shape.n_head,
        "n_positions": shape.n_positions,
        "activation_function": shape.activation_function,
        "n_inner": shape.n_inner,
        "vocab_size": len(tokenizer),
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        **_special_ids(tokenizer),
        **overrides,
    }
    config = apply_config_overrides(GPT2Config(**values), config_overrides)
    if config.n_embd % config.n_head:
        raise ValueError(f"n_embd ({config.n_embd}) must be a multiple of n_head ({config.n_head})")
    config._attn_implementation = EAGER
    return config


def sinusoidal_table(num_positions: int, dim: int, scale: float = SINUSOIDAL_POSITION_SCALE):
    """(num_positions, dim) float32 tensor: sin/cos of position / 10000^(2i/dim), times `scale`."""
    position = torch.arange(num_positions, dtype=torch.float32)[:, None]  # (P, 1)
    frequency = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (ceil(D/2),)
    angle = position * frequency  # (P, ceil(D/2))
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return table * scale


@dataclass(frozen=True)
class PromptLayout:
    """Where the grid cells sit in a tokenised prompt (`<s>` included, as the model sees it).

    `cells[g, r, k]` is the token position of row r's k-th cell token of grid g, grids in prompt
    order (Input0, Output0, Input1, ...): column k with one cell per token, columns 2k and 2k + 1
    with a `cells_per_token=2` tokenizer; `prompt_length` counts every token up to and including "Code:\\n".
    """

    cells: np.ndarray  # (2 * num_prompt_pairs, rows, cell tokens per row) int
    prompt_length: int

    @property
    def num_grids(self) -> int:
        return self.cells.shape[0]


def prompt_layout(tokenizer, num_prompt_pairs: int, rows: int, cols: int) -> PromptLayout:
    """The grid-cell positions of a prompt with `num_prompt_pairs` pairs of rows x cols interiors.

    Read off the tokenised text of `format_prompt` (never hard-coded): a grid row is
    ceil(cols / cells_per_token) tokens, and each grid's cell tokens must be one contiguous run in
    row-major order.
    """
    from karel_hf.data.formatting import format_prompt
    from karel_hf.karel.world import ROBOT_CODE_OFFSET
    from karel_hf.tokenizer import cells_per_token

    grids = np.zeros((num_prompt_pairs, rows, cols), dtype=np.int8)
    grids[:, 0, 0] = ROBOT_CODE_OFFSET  # one robot per grid, as the text format requires
    ids = tokenizer(format_prompt(grids, grids))["input_ids"]
    cell_ids = {i for piece, i in tokenizer.get_vocab().items() if piece.startswith("__")}  # cell words: __space__ ...
    positions = np.array([i for i, t in enumerate(ids) if t in cell_ids])
    num_grids = 2 * num_prompt_pairs
    cells_each = cells_per_token(tokenizer)
    per_row = -(-cols // cells_each)
    if len(positions) != num_grids * rows * per_row:
        raise ValueError(f"expected {num_grids * rows * per_row} cell tokens in the prompt, found {len(positions)}: "
                         f"the tokenizer does not spend one token per {cells_each} cell(s)")
    cells = positions.reshape(num_grids, rows, per_row)
    if not (np.diff(cells.reshape(num_grids, -1), axis=1) == 1).all():
        raise ValueError("a grid's cell tokens are not contiguous in the tokenised prompt")
    return PromptLayout(cells=cells, prompt_length=len(ids))


def corpus_layout(tokenizer, corpus_config) -> PromptLayout:
    """`prompt_layout` for a corpus config (`load_karel`'s): its prompt pairs and grid interior."""
    return prompt_layout(tokenizer, corpus_config.num_prompt_pairs, corpus_config.height - 2, corpus_config.width - 2)


def grid_position_table(num_positions: int, dim: int, layout: PromptLayout, *, generator=None,
                        scale: float = SINUSOIDAL_POSITION_SCALE, sinusoidal_weight: float = GRID_SINUSOIDAL_WEIGHT,
                        grid_code_weight: float = GRID_CODE_WEIGHT):
    """(num_positions, dim) float32 start for GPT-2's position table that knows the prompt's grids.

    Every grid-cell position gets a row code, a column code and a grid code (which of the 2P grids):
    fixed random N(0, 1) vectors (the grid code times `grid_code_weight`), each in its own quarter of
    the dimensions; the last quarter holds the sinusoidal code of the absolute position times
    `sinusoidal_weight`. So the same cell of every input and output grid starts with nearly the same
    position vector, cells of one row share the row code, and far cells are near-orthogonal. Every
    other position (headers, the program) gets the full-width sinusoidal code. The table is scaled
    to standard deviation `scale`. The codes come from `generator` (torch's global one by default,
    so `transformers.set_seed` fixes them).
    """
    q = dim // 4
    if q == 0:
        raise ValueError(f"the grid position start needs n_embd >= 4, got {dim}")
    if layout.cells.max() >= num_positions:
        raise ValueError(f"the prompt ({layout.cells.max() + 1} positions) exceeds the model's {num_positions}")
    num_grids, rows, cols = layout.cells.shape
    table = sinusoidal_table(num_positions, dim, scale=1.0)
    row_code = torch.randn(rows, q, generator=generator)
    col_code = torch.randn(cols, q, generator=generator)
    grid_code = torch.randn(num_grids, q, generator=generator) * grid_code_weight
    tail = sinusoidal_table(num_positions, dim - 3 * q, scale=sinusoidal_weight)
    g, r, c = np.meshgrid(np.arange(num_grids), np.arange(rows), np.arange(cols), indexing="ij")
    pos = torch.as_tensor(layout.cells.reshape(-1))
    g, r, c = (torch.as_tensor(a.reshape(-1)) for a in (g, r, c))
    table[pos] = torch.cat([row_code[r], col_code[c], grid_code[g], tail[pos]], dim=1)
    return table * (scale / table.std())


def build_model(preset_or_config, tokenizer, *, position_init: str = "normal", config_overrides: str | None = None,
                layout: PromptLayout | None = None, **overrides):
    """A freshly initialised `GPT2LMHeadModel` (call `transformers.set_seed` first for reproducibility).

    `position_init`: "normal" (GPT-2's N(0, 0.02)), "sinusoidal" (see the module docstring) or
    "grid" (`grid_position_table`; needs the prompt `layout`, see `prompt_layout` / `corpus_layout`).

    The generation config carries the tokenizer's bos/eos/pad ids, so `generate` and
    `pipeline("text-generation")` stop at `</s>` and pad with `<pad>` without extra arguments.
    """
    if isinstance(preset_or_config, str):
        config = model_config(preset_or_config, tokenizer, config_overrides=config_overrides, **overrides)
    else:
        config = preset_or_config
        config._attn_implementation = EAGER
    if position_init not in POSITION_INITS:
        raise ValueError(f"position_init: unknown value {position_init!r}; expected one of {', '.join(POSITION_INITS)}")
    if position_init == "grid" and layout is None:
        raise ValueError("position_init='grid' needs the prompt layout (karel_hf.modeling.prompt_layout)")
    model = GPT2LMHeadModel(config)
    if position_init in ("sinusoidal", "grid"):
        shape = model.transformer.wpe.weight.shape
        table = sinusoidal_table(*shape) if position_init == "sinusoidal" else grid_position_table(*shape, layout)
        with torch.no_grad():
            model.transformer.wpe.weight.copy_(table)
    set_generation_ids(model, tokenizer)
    return model


def set_generation_ids(model, tokenizer) -> None:
    """Write the tokenizer's bos/eos/pad ids into the model config and its generation config."""
    ids = _special_ids(tokenizer)
    for target in (model.config, model.generation_config):
        for name, value in ids.items():
            setattr(target, name, value)


def count_parameters(model, *, blocks_only: bool = False) -> int:
    """Parameters of a model (tied weights counted once); `blocks_only`: the transformer blocks only."""
    module = model.transformer.h if blocks_only else model
    return sum(p.numel() for p in module.parameters())
