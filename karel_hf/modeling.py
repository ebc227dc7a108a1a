"""GPT-2 model presets for karel_hf: a stock `GPT2LMHeadModel` sized to the karel_hf tokenizer.

A preset fixes the shape (layers, width, heads, context); the vocabulary size and the special token
ids come from the tokenizer, so a checkpoint loads with `AutoModelForCausalLM` and generates with
`pipeline("text-generation")` without any extra arguments. Attention is "eager": on the CPUs this
project runs on it beat "sdpa" by 12-19% at these sizes (shared/HF_NOTES.md).

| preset | layers x width (heads) | context | parameters (300-word vocabulary) | use |
|---|---|---|---|---|
| tiny  | 2 x 64 (2)     | 512  | 0.15M | tests, seconds |
| demo  | 4 x 128 (4)    | 512  | 0.9M  | the README's demo reproduction (minutes) |
| cpu   | 4 x 128 (4)    | 512  | 0.9M  | the CPU reproduction (2 cores, about an hour) |
| small | 8 x 512 (8)    | 1024 | 25.9M | a bigger CPU run or one small GPU |
| paper | 20 x 1024 (16) | 2048 | 254.3M | the paper's model (GPU) |

`paper` has the transformer body of CodeGen-350M, the paper's model: 20 blocks of width 1024 with
16 heads and a 4x MLP (251.8M parameters in the blocks). CodeGen's "350M" also counts a
51,200-token embedding and an untied LM head (~105M); with a 300-word vocabulary (tied, as GPT-2
does) those shrink to ~2.4M, the position table included.

Dropout is 0 in every preset, as in CodeGen-350M's config: the runs see each sample about once.

`position_init="sinusoidal"` starts GPT-2's learned position table (`wpe`) from the Transformer's
sine/cosine table scaled to `SINUSOIDAL_POSITION_SCALE` instead of N(0, 0.02). The model and the
checkpoint stay a stock GPT-2 (the table is still learned); only its starting point changes, and
with it attention by relative offset ("the same cell one grid earlier") is available from step 0.
On this project's CPU runs it is what lets a small model leave the babbling phase within minutes
(see karel_hf/presets/cpu.json for the measurements).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EAGER = "eager"
POSITION_INITS = ("normal", "sinusoidal", "grid")
# Grid start: weight of the sinusoidal code in the last quarter of a grid cell's position vector.
GRID_SINUSOIDAL_WEIGHT = 0.7
# ... and of the grid code (which grid), so that the same cell of two grids starts at cosine ~0.85.
GRID_CODE_WEIGHT = 0.5
# Amplitude of the sinusoidal table: per-dimension spread ~0.02, like GPT-2's token embeddings.
SINUSOIDAL_POSITION_SCALE = 0.03


@dataclass(frozen=True)
class ModelPreset:
    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    description: str


MODEL_PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(2, 64, 2, 512, "tests: a few dozen steps in seconds"),
    "demo": ModelPreset(4, 128, 4, 512, "the README's demo reproduction: minutes on 2 CPU cores"),
    "cpu": ModelPreset(4, 128, 4, 512, "the CPU reproduction: the demo's shape, trained longer (presets/cpu.json)"),
    "small": ModelPreset(8, 512, 8, 1024, "a bigger CPU run or one small GPU"),
    "paper": ModelPreset(20, 1024, 16, 2048, "the paper's size: CodeGen-350M's 20 x 1024 body (GPU)"),
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


def model_config(preset: str, tokenizer, **overrides):
    """The `GPT2Config` of a preset, with vocab size and bos/eos/pad ids from `tokenizer`.

    `overrides` are GPT2Config fields (e.g. `n_layer=6`, `resid_pdrop=0.0`); unknown names raise.
    """
    from transformers import GPT2Config

    if preset not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; expected one of {', '.join(MODEL_PRESETS)}")
    shape = MODEL_PRESETS[preset]
    known = set(GPT2Config().to_dict())
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown GPT2Config field(s) {unknown} in the model overrides")
    values = {
        "n_layer": shape.n_layer,
        "n_embd": shape.n_embd,
        "n_head": shape.n_head,
        "n_positions": shape.n_positions,
        "vocab_size": len(tokenizer),
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        **_special_ids(tokenizer),
        **overrides,
    }
    if values["n_embd"] % values["n_head"]:
        raise ValueError(f"n_embd ({values['n_embd']}) must be a multiple of n_head ({values['n_head']})")
    config = GPT2Config(**values)
    config._attn_implementation = EAGER
    return config


def parse_config_overrides(text: str | None) -> dict:
    """`"n_layer=6,resid_pdrop=0.0"` -> `{"n_layer": 6, "resid_pdrop": 0.0}` (as run_clm.py's flag)."""
    if not text:
        return {}
    result = {}
    for item in text.split(","):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"config_overrides: expected key=value pairs separated by commas, got {item!r}")
        raw = raw.strip()
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        else:
            value = {"true": True, "false": False, "none": None}.get(raw.lower(), raw)
        result[key.strip()] = value
    return result


def sinusoidal_table(num_positions: int, dim: int, scale: float = SINUSOIDAL_POSITION_SCALE):
    """(num_positions, dim) float32 tensor: sin/cos of position / 10000^(2i/dim), times `scale`."""
    import torch

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

    `cells[g, r, c]` is the token position of row r, column c of grid g, grids in prompt order
    (Input0, Output0, Input1, ...); `prompt_length` counts every token up to and including "Code:\n".
    """

    cells: np.ndarray  # (2 * num_prompt_pairs, rows, cols) int
    prompt_length: int

    @property
    def num_grids(self) -> int:
        return self.cells.shape[0]


def prompt_layout(tokenizer, num_prompt_pairs: int, rows: int, cols: int) -> PromptLayout:
    """The grid-cell positions of a prompt with `num_prompt_pairs` pairs of rows x cols interiors.

    Read off the tokenised text of `format_prompt` (never hard-coded): every cell word is one token,
    and each grid's cells must be one contiguous run in row-major order.
    """
    from karel_hf.data.formatting import format_prompt
    from karel_hf.karel.world import CELL_WORDS

    grids = np.zeros((num_prompt_pairs, rows, cols), dtype=np.int8)
    ids = tokenizer(format_prompt(grids, grids))["input_ids"]
    vocab = tokenizer.get_vocab()
    cell_ids = {vocab[w + sep] for w in CELL_WORDS for sep in (" ", "\n") if w + sep in vocab}
    positions = np.array([i for i, t in enumerate(ids) if t in cell_ids])
    num_grids = 2 * num_prompt_pairs
    if len(positions) != num_grids * rows * cols:
        raise ValueError(f"expected {num_grids * rows * cols} cell tokens in the prompt, found {len(positions)}: "
                         "the tokenizer does not spend one token per cell")
    cells = positions.reshape(num_grids, rows, cols)
    runs = cells.reshape(num_grids, -1)
    if not (np.diff(runs, axis=1) == 1).all():
        raise ValueError("a grid's cell tokens are not contiguous in the tokenised prompt")
    return PromptLayout(cells=cells, prompt_length=len(ids))


def grid_position_table(num_positions: int, dim: int, layout: PromptLayout, *, generator=None,
                        scale: float = SINUSOIDAL_POSITION_SCALE, sinusoidal_weight: float = GRID_SINUSOIDAL_WEIGHT,
                        grid_code_weight: float = GRID_CODE_WEIGHT):
    """(num_positions, dim) float32 start for GPT-2's position table that knows the prompt's grids.

    Every grid-cell position gets a row code, a column code and a grid code (which of the 2P grids):
    fixed random N(0, 1) vectors (the grid code times `grid_code_weight`), each in its own quarter of
    the dimensions; the last quarter holds the sinusoidal code of the absolute position times
    `sinusoidal_weight`. So the same cell of
    every input and output grid starts with nearly the same position vector, cells of one row share
    the row code, and far cells are near-orthogonal. Every other position (headers, the program)
    gets the full-width sinusoidal code. The table is scaled to standard deviation `scale`.
    """
    import torch

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


def build_model(preset_or_config, tokenizer, *, position_init: str = "normal", layout: PromptLayout | None = None,
                **overrides):
    """A freshly initialised `GPT2LMHeadModel` (call `transformers.set_seed` first for reproducibility).

    `position_init`: "normal" (GPT-2's N(0, 0.02)), "sinusoidal" (see the module docstring) or
    "grid" (`grid_position_table`; needs the prompt `layout`, see `prompt_layout`; its random codes
    come from torch's global generator, so `set_seed` fixes them).

    The generation config carries the tokenizer's bos/eos/pad ids, so `generate` and
    `pipeline("text-generation")` stop at `</s>` and pad with `<pad>` without extra arguments.
    """
    from transformers import GPT2LMHeadModel

    if isinstance(preset_or_config, str):
        config = model_config(preset_or_config, tokenizer, **overrides)
    else:
        config = preset_or_config
        config._attn_implementation = EAGER
    if position_init not in POSITION_INITS:
        raise ValueError(f"position_init: unknown value {position_init!r}; expected one of {', '.join(POSITION_INITS)}")
    if position_init == "grid" and layout is None:
        raise ValueError("position_init='grid' needs the prompt layout (karel_hf.modeling.prompt_layout)")
    model = GPT2LMHeadModel(config)
    if position_init in ("sinusoidal", "grid"):
        import torch

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
