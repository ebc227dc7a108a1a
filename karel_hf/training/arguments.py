"""The arguments of a training run: three dataclasses parsed by `HfArgumentParser` from a preset
file plus flag overrides, as in transformers' causal language-modeling example.

- `ModelArguments`: which GPT-2 (a preset's shape, GPT2Config overrides, or a saved model) and how
  its position table starts;
- `DataArguments`: which corpus, how it is tokenised, packed and scored;
- `KarelTrainingArguments`: `TrainingArguments` plus the generation check, checkpoint 0 and bf16
  where it is fast.

`parse_train_args(["--preset", NAME_OR_FILE, ...flags])` gives the three plus the preset: the
preset's values replace the dataclass defaults, every flag replaces the preset's value, and every
error (unknown flag or field, bad value) is a `TrainArgumentError` naming it and the fix.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import sys
from dataclasses import dataclass, field, fields
from typing import Literal

import torch
from transformers import GPT2Config, HfArgumentParser, TrainingArguments

from karel_hf.data.builder import CONFIG_NAMES, get_config
from karel_hf.errors import StrictParsing, UsageError
from karel_hf.modeling import POSITION_INITS, ModelPreset
from karel_hf.presets import PresetError, load_preset, preset_names
from karel_hf.tokenizer import CELLS_PER_TOKEN
from karel_hf.utils import apply_config_overrides, parse_overrides

from .lm_dataset import LOSS_ON
from .loss import check_program_weight

PRESET_NAMES = preset_names()  # the files of karel_hf/presets, smallest run first


class TrainArgumentError(UsageError):
    """A bad preset, flag or value; the message names it and says how to fix it (exit status 2)."""


@dataclass
class ModelArguments:
    """Which model to train."""

    model_preset: str = field(
        default="tiny",
        metadata={"help": f"The preset whose model section gives the GPT-2 shape: {', '.join(PRESET_NAMES)} "
                  "or a preset file."},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "GPT2Config fields over the preset, e.g. 'n_layer=6,n_embd=384' "
                  "(n_inner=256 sets the MLP width, 4 x n_embd when unset)."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Start from this saved model instead of a freshly initialised preset."},
    )
    position_init: Literal["normal", "sinusoidal", "grid"] = field(
        default="normal",
        metadata={"help": "Start of the learned position table: normal (GPT-2), sinusoidal, or grid "
                          "(row/column/grid codes for the prompt's cells; karel_hf.modeling)."},
    )

    def __post_init__(self):
        if self.position_init not in POSITION_INITS:
            raise TrainArgumentError(
                f"position_init: unknown value {self.position_init!r}; expected one of {', '.join(POSITION_INITS)}"
            )

        try:
            ModelPreset.of(self.model_preset)
        except PresetError as err:  # a preset file whose model section cannot be built: say what is wrong
            raise TrainArgumentError(f"--model_preset: {err}") from None
        except ValueError:
            raise TrainArgumentError(
                f"--model_preset: invalid choice: {self.model_preset!r}; expected one of {', '.join(PRESET_NAMES)} "
                "or the path to a preset file with a model section"
            ) from None
        try:  # a malformed string or an unknown field raises now, not after the corpus is tokenised
            apply_config_overrides(GPT2Config(), self.config_overrides)
        except ValueError as err:
            raise TrainArgumentError(str(err)) from None


@dataclass
class DataArguments:
    """Which data, how it is tokenised, packed and scored."""

    dataset_config: str = field(
        default="tiny",
        metadata={"help": "karel_hf.data.load_karel config: paper or the corpus a preset defines (karel_hf/presets)."},
    )
    dataset_overrides: str | None = field(
        default=None,
        metadata={"help": "Config field overrides for load_karel, e.g. 'train_size=20000,seed=7'."},
    )
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Read the corpus from this folder instead of generating it: a DatasetDict.save_to_disk "
            "folder, or an exported Parquet folder (then dataset_config picks the config)."
        },
    )
    dataset_cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder."})
    dataset_id: str = field(
        default="karel",
        metadata={"help": "Dataset id written into the model card metadata (e.g. your-org/karel)."},
    )
    tokenizer_path: str | None = field(
        default=None,
        metadata={"help": "A saved karel_hf tokenizer; default: karel_hf.tokenizer.build_tokenizer(cells_per_token)."},
    )
    cells_per_token: int = field(
        default=1,
        metadata={"help": "Grid cells per prompt token of the built tokenizer: 1 (one token per cell, the paper's) or 2 "
                  "(two neighbouring cells of a row per token: the same text in fewer tokens; karel_hf.tokenizer)."},
    )
    block_size: int = field(default=512, metadata={"help": "Tokens per training row (packed block)."})
    packing: bool = field(
        default=True,
        metadata={"help": "Concatenate samples and cut them into block_size blocks (the paper); false: one padded sample per row."},
    )
    loss_on: Literal["all", "program"] = field(
        default="all",
        metadata={"help": "'all': next-token loss on the whole text (the paper); 'program': program tokens and </s> only."},
    )
    program_loss_weight: float = field(
        default=1.0,
        metadata={"help": "With loss_on all: each program token (after 'Code:', through </s>) counts this many times "
                  "in the mean next-token loss, each prompt token once; 1 is the paper's objective "
                  "(karel_hf.training.loss)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training samples."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N validation samples for the eval loss."}
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for corpus generation and tokenisation."}
    )

    def __post_init__(self):
        if self.cells_per_token not in CELLS_PER_TOKEN:
            raise TrainArgumentError(f"cells_per_token: expected 1 or 2, got {self.cells_per_token}")
        if self.tokenizer_path and self.cells_per_token != 1:
            raise TrainArgumentError("cells_per_token builds the tokenizer, tokenizer_path loads one: give one of them")
        if self.loss_on not in LOSS_ON:
            raise TrainArgumentError(f"loss_on: unknown value {self.loss_on!r}; expected one of {', '.join(LOSS_ON)}")
        try:
            check_program_weight(self.program_loss_weight)
        except ValueError as err:
            raise TrainArgumentError(str(err)) from None
        if self.program_loss_weight != 1 and self.loss_on != "all":
            raise TrainArgumentError("program_loss_weight: weights the program against the prompt, so it needs "
                                     f"loss_on all, got loss_on {self.loss_on}")
        if self.block_size < 8:
            raise TrainArgumentError(f"block_size: must be at least 8 tokens, got {self.block_size}")
        for name in ("max_train_samples", "max_eval_samples", "preprocessing_num_workers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainArgumentError(f"{name}: must be a positive number, got {value}")
        # A malformed string, an unknown corpus or field, a bad value: an error now, not after minutes of work.
        try:
            overrides = self.load_karel_overrides()
        except ValueError as err:
            raise TrainArgumentError(str(err)) from None
        if self.dataset_path is not None:
            if overrides:
                raise TrainArgumentError("dataset_overrides: they change a generated corpus, but dataset_path reads "
                                         "one as it is; drop one of the two")
            return
        if self.dataset_config not in CONFIG_NAMES:
            raise TrainArgumentError(f"dataset_config: unknown corpus {self.dataset_config!r}; expected one of "
                                     f"{', '.join(CONFIG_NAMES)}")
        try:
            get_config(self.dataset_config, **overrides)
        except ValueError as err:
            raise TrainArgumentError(f"dataset_overrides: {err}") from None

    def load_karel_overrides(self) -> dict:
        return parse_overrides(self.dataset_overrides, what="dataset_overrides")

    def corpus_config(self):
        """The `KarelConfig` the corpus is generated from (`dataset_config` with the overrides), or
        None for a corpus read from `dataset_path`."""
        if self.dataset_path:
            return None
        from karel_hf.data.builder import get_config

        return get_config(self.dataset_config, **self.load_karel_overrides())


@dataclass
class KarelTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the generation check, checkpoint 0 and automatic bf16."""

    generation_eval_steps: int = field(
        default=0,
        metadata={"help": "Every K optimizer steps, decode a validation subset and log generation accuracy (0: off)."},
    )
    generation_eval_samples: int = field(
        default=64, metadata={"help": "Validation samples decoded by the generation check."}
    )
    generation_eval_batch_size: int = field(default=32, metadata={"help": "Batch size of the generation check."})
    generation_max_new_actions: int = field(
        default=14, metadata={"help": "At most this many actions per decoded program (the paper: 14)."}
    )
    save_initial_checkpoint: bool = field(
        default=True, metadata={"help": "Save checkpoint-0 (the untrained model) when training starts."}
    )
    bf16_auto: bool = field(
        default=False,
        metadata={
            "help": "Turn bf16 autocast on where it is fast: a GPU with bf16 or a CPU with AMX/AVX512-BF16 "
            "(--bf16 true forces it on anywhere)."
        },
    )

    def __post_init__(self):
        if self.bf16_auto and not self.bf16 and not self.fp16:
            self.bf16 = bf16_is_fast(self.use_cpu)
        if not self.use_cpu and (self.bf16 or int(os.environ.get("WORLD_SIZE", "1")) > 1):
            # Without CUDA, bf16 means CPU autocast and several processes mean gloo on CPUs: both need
            # use_cpu, else transformers refuses bf16 and accelerate runs each process on its own.
            if not torch.cuda.is_available():
                self.use_cpu = True
        for name in ("generation_eval_steps", "generation_eval_samples", "generation_eval_batch_size"):
            if getattr(self, name) < 0 or (name != "generation_eval_steps" and getattr(self, name) == 0):
                raise TrainArgumentError(f"{name}: must be positive, got {getattr(self, name)}")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "generation_max_new_actions"):
            if getattr(self, name) < 1:
                raise TrainArgumentError(f"{name}: must be a positive integer, got {getattr(self, name)}")
        for name in ("learning_rate", "weight_decay", "warmup_steps", "max_grad_norm", "num_train_epochs"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise TrainArgumentError(f"{name}: must be a finite number >= 0, got {value}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise TrainArgumentError(f"max_steps: must be a positive number of steps (or -1: num_train_epochs decides), "
                                     f"got {self.max_steps}")
        super().__post_init__()

    def __getstate__(self):
        """The pickled state (the Trainer's training_args.bin) without secrets: `*_token` fields are None there,
        as `to_dict` masks them; the object itself keeps its token (the Trainer pushes with it)."""
        state = dict(self.__dict__)
        state.update({key: None for key in state if key.endswith("_token")})
        return state


def bf16_is_fast(use_cpu: bool = False) -> bool:
    """True on a GPU that supports bf16, or on a CPU with AMX or AVX512-BF16 units."""
    if not use_cpu and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


class _ArgumentParser(StrictParsing, HfArgumentParser):
    """`HfArgumentParser` whose errors raise `TrainArgumentError` instead of printing usage and exiting
    (and whose number flags are ASCII only, `karel_hf.errors.StrictParsing`)."""

    usage_error = TrainArgumentError


def _suggest(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_preset_values(values: dict, parser, source: str) -> None:
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    for key, value in values.items():
        if key not in actions:
            raise TrainArgumentError(f"preset {source}: unknown field {key!r}{_suggest(key, actions)}")
        action = actions[key]
        if value is None or isinstance(value, list):
            continue
        if action.type in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TrainArgumentError(f"preset {source}: {key} must be a number, got {value!r}")
        if action.type is int and isinstance(value, float) and not value.is_integer():
            raise TrainArgumentError(f"preset {source}: {key} must be an integer, got {value!r}")
        if action.choices is not None and str(value) not in [str(c) for c in action.choices]:
            raise TrainArgumentError(
                f"preset {source}: {key} must be one of {', '.join(map(str, action.choices))}, got {value!r}"
            )


def parse_train_args(argv: list[str] | None = None):
    """(ModelArguments, DataArguments, KarelTrainingArguments, preset) from `--preset NAME_OR_PATH` + flags.

    The preset's values (`karel_hf.presets.Preset.train_arguments`: its training section, the preset
    itself as `model_preset`, its `position_init` and its corpus as `dataset_config`) replace the
    dataclass defaults, then every flag replaces the preset's value.
    Unknown flags, misspelled preset fields and bad values raise `TrainArgumentError` naming them.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--preset", default=None)
    known, rest = pre.parse_known_args(argv)
    parser = _ArgumentParser(
        (ModelArguments, DataArguments, KarelTrainingArguments),
        prog="karel-hf train",
        description="Train a GPT-2 on the Karel corpus (flags override the preset's values).",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--preset",
        default=None,
        help=f"{', '.join(PRESET_NAMES)} (karel_hf/presets/NAME.yaml) or the path to a preset file: the same "
        "sections, or a flat JSON/YAML mapping of these flags",
    )
    values, stages = {}, ()
    if known.preset is not None:
        try:
            loaded = load_preset(known.preset)
            values, stages = loaded.train_arguments(), loaded.curriculum
        except PresetError as err:
            raise TrainArgumentError(str(err)) from None
        _check_preset_values(values, parser, known.preset)
        parser.set_defaults(**values)
    namespace, unknown = parser.parse_known_args(rest)
    if unknown:
        flags = [a for a in unknown if a.startswith("-")]
        bad = flags[0] if flags else unknown[0]
        options = [s for a in parser._actions for s in a.option_strings]
        raise TrainArgumentError(f"unrecognized argument {bad!r}{_suggest(bad.split('=')[0], options)}")
    if namespace.output_dir is None:
        raise TrainArgumentError("--output_dir is required: the folder for checkpoints, logs and the final model")
    outputs = []
    for dtype in (ModelArguments, DataArguments, KarelTrainingArguments):
        keys = {f.name for f in fields(dtype) if f.init}
        try:
            outputs.append(dtype(**{k: v for k, v in vars(namespace).items() if k in keys}))
        except TrainArgumentError:
            raise
        except (ValueError, TypeError) as err:
            raise TrainArgumentError(f"{dtype.__name__}: {err}") from None
    if stages and outputs[0].model_name_or_path is None:
        raise TrainArgumentError(
            f"preset {known.preset} is the last stage of a curriculum ({', '.join(stages)} first): train it from the "
            f"stage before's model with --model_name_or_path, or run every stage with karel-hf reproduce --preset "
            f"{known.preset} --stages train")
    return (*outputs, known.preset)
