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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from karel_hf.presets import MODEL_SHAPE, PresetError, load_preset, preset_names
from karel_hf.utils import apply_config_overrides

EAGER = "eager"
POSITION_INITS = ("normal", "sinusoidal")
# Amplitude of the sinusoidal table: per-dimension spread ~0.02, like GPT-2's token embeddings.
SINUSOIDAL_POSITION_SCALE = 0.03


@dataclass(frozen=True)
class ModelPreset:
    """The GPT-2 shape of a preset (its `model` section)."""

    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int

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
        return cls(**{k: model[k] for k in MODEL_SHAPE})


# Every preset's shape, smallest run first (karel_hf.presets.preset_names).
MODEL_PRESETS: dict[str, ModelPreset] = {
    name: ModelPreset(**{k: load_preset(name).model[k] for k in MODEL_SHAPE}) for name in preset_names()
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


def build_model(preset_or_config, tokenizer, *, position_init: str = "normal", config_overrides: str | None = None,
                **overrides):
    """A freshly initialised `GPT2LMHeadModel` (call `transformers.set_seed` first for reproducibility).

    `position_init`: "normal" (GPT-2's N(0, 0.02)) or "sinusoidal" (see the module docstring).

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
    model = GPT2LMHeadModel(config)
    if position_init == "sinusoidal":
        with torch.no_grad():
            model.transformer.wpe.weight.copy_(sinusoidal_table(*model.transformer.wpe.weight.shape))
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
