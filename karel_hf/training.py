"""Training a GPT-2 on the Karel corpus with `transformers.Trainer` (PROTOCOL.md section 4).

Follows transformers' `examples/pytorch/language-modeling/run_clm.py`: argument dataclasses parsed
by `HfArgumentParser` (here from a preset file plus flag overrides), `set_seed` before the model is
built, `Trainer` with `resume_from_checkpoint`, then `save_model` / `save_metrics` / `save_state`.

    karel-hf train --preset tiny --output_dir runs/tiny                    # seconds, tests
    accelerate launch scripts/train.py --preset cpu --output_dir runs/cpu   # the CPU reproduction
    accelerate launch scripts/train.py --preset cpu --output_dir runs/cpu --resume_from_checkpoint last
    accelerate launch --config_file scripts/accelerate/gpu_1.yaml scripts/train.py --preset paper --output_dir runs/paper

Presets (karel_hf/presets/NAME.json, each with an "_about" note saying how it was chosen): `tiny`
(2 x 64, tests), `demo` and `cpu` (4 x 128 on the scaled-down `demo`/`cpu` corpora, sinusoidal
position start), `small` (8 x 512), `paper` (20 x 1024, the paper's recipe). Any flag overrides
the preset (`--learning_rate 3e-4`); a JSON/YAML file of the same keys is a preset too.

What it adds for the reproduction:

- Samples: each is `tokenizer(text)` (which starts with `<s>`) plus `</s>`. `loss_on="all"` (the
  paper's objective) trains on every token; `loss_on="program"` sets the labels to -100 everywhere
  except the program tokens after "Code:\n" and the closing `</s>`.
- Packing (default, as the paper): the samples of each map batch of 1,000 are concatenated and cut
  into `block_size` blocks; the tail shorter than a block is dropped (one partial block per ~390k
  tokens). No padding is ever computed and samples cross block boundaries as in the paper's
  2048-token blocks, so every forward pass is a full (batch, block_size) tensor: the most training
  tokens per second for a given batch. `packing=False` keeps one sample per row and pads each batch.
- Checkpoints every `save_steps` are standard Trainer directories (model.safetensors, config.json,
  generation_config.json with bos/eos/pad, tokenizer files, trainer_state.json, optimizer,
  scheduler, RNG state) plus the model card (README.md) and the resolved run config with library
  versions (karel_run_config.json). `checkpoint-0` (the untrained model, no optimizer state) is
  written when training starts: the reproduction probes every checkpoint, the untrained one too.
  `--resume_from_checkpoint last|PATH` continues with the saved weights, optimizer, schedule, RNG
  and data position; without it an output_dir that already holds checkpoints is refused.
- `GenerationAccuracyCallback` decodes a validation subset every K steps with an injected
  `eval_fn(model) -> dict` and logs the numbers to the Trainer log (console, TensorBoard,
  trainer_state.json) and to output_dir/generation_eval.jsonl.
- `bf16_auto`: bf16 autocast only where it is fast (a GPU with bf16, a CPU with AMX or AVX512-BF16);
  on an AVX2-only CPU bf16 autocast is several times slower than fp32 (benchmarks/bench_train.py).

Several processes: on GPUs, `accelerate launch --config_file scripts/accelerate/gpu_multi.yaml
--num_processes N scripts/train.py ...`. On CPUs (accelerate 1.15), `accelerate launch --multi_gpu
--num_processes 2 scripts/train.py ...` (or --config_file scripts/accelerate/cpu_2proc.yaml) runs two
gloo processes: without CUDA, `KarelTrainingArguments` then sets `use_cpu`, without which each
process would train alone. `--cpu --num_processes 2` and `distributed_type: MULTI_CPU` silently run
ONE process. The generation check runs on the main process only.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Literal

from transformers import HfArgumentParser, TrainerCallback, TrainingArguments

logger = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).parent / "presets"
PRESET_NAMES = ("tiny", "demo", "cpu", "small", "paper")
LOSS_ON = ("all", "program")
RUN_CONFIG_NAME = "karel_run_config.json"
GENERATION_LOG_NAME = "generation_eval.jsonl"
CARD_NAME = "README.md"
IGNORE_INDEX = -100
# Tokens of "def run() {\n" ("def ", "run() ", "{\n") and of the closing "}" and "</s>".
PREAMBLE_TOKENS, CLOSING_TOKENS = 3, 2


class TrainArgumentError(ValueError):
    """A bad preset, flag or value; the message names it and says how to fix it."""


# --------------------------------------------------------------------------------------- arguments
@dataclass
class ModelArguments:
    """Which model to train."""

    model_preset: Literal["tiny", "demo", "cpu", "small", "paper"] = field(
        default="tiny",
        metadata={"help": "GPT-2 shape from karel_hf.modeling.MODEL_PRESETS: tiny, demo, cpu, small or paper."},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "GPT2Config fields over the preset, e.g. 'n_layer=6,n_embd=384'."},
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
        from karel_hf.modeling import MODEL_PRESETS, POSITION_INITS, parse_config_overrides

        if self.position_init not in POSITION_INITS:
            raise TrainArgumentError(
                f"position_init: unknown value {self.position_init!r}; expected one of {', '.join(POSITION_INITS)}"
            )

        if self.model_preset not in MODEL_PRESETS:
            raise TrainArgumentError(
                f"model_preset: unknown value {self.model_preset!r}; expected one of {', '.join(MODEL_PRESETS)}"
            )
        parse_config_overrides(self.config_overrides)  # raises on a malformed string


@dataclass
class DataArguments:
    """Which data, how it is tokenised, packed and scored."""

    dataset_config: str = field(
        default="tiny",
        metadata={"help": "karel_hf.data.load_karel config: paper, paper_6to10, cpu, demo or tiny."},
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
        metadata={"help": "A saved karel_hf tokenizer; default: karel_hf.tokenizer.build_tokenizer()."},
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
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training samples."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N validation samples for the eval loss."}
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for corpus generation and tokenisation."}
    )

    def __post_init__(self):
        if self.loss_on not in LOSS_ON:
            raise TrainArgumentError(f"loss_on: unknown value {self.loss_on!r}; expected one of {', '.join(LOSS_ON)}")
        if self.block_size < 8:
            raise TrainArgumentError(f"block_size: must be at least 8 tokens, got {self.block_size}")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainArgumentError(f"{name}: must be a positive number of samples, got {value}")

    def load_karel_overrides(self) -> dict:
        from karel_hf.modeling import parse_config_overrides

        return parse_config_overrides(self.dataset_overrides)


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
            import torch

            # Without CUDA, bf16 means CPU autocast and several processes mean gloo on CPUs: both need
            # use_cpu, else transformers refuses bf16 and accelerate runs each process on its own.
            if not torch.cuda.is_available():
                self.use_cpu = True
        for name in ("generation_eval_steps", "generation_eval_samples", "generation_eval_batch_size"):
            if getattr(self, name) < 0 or (name != "generation_eval_steps" and getattr(self, name) == 0):
                raise TrainArgumentError(f"{name}: must be positive, got {getattr(self, name)}")
        super().__post_init__()


def bf16_is_fast(use_cpu: bool = False) -> bool:
    """True on a GPU that supports bf16, or on a CPU with AMX or AVX512-BF16 units."""
    import torch

    if not use_cpu and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


# ---------------------------------------------------------------------------- presets and flags
class _ArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose errors raise `TrainArgumentError` instead of printing usage and exiting."""

    def error(self, message):
        raise TrainArgumentError(message)


def preset_path(preset: str) -> Path:
    """A preset name (tiny, demo, cpu, small, paper) or a path to a JSON/YAML file of argument values."""
    if preset in PRESET_NAMES:
        return PRESET_DIR / f"{preset}.json"
    path = Path(preset)
    if path.suffix in (".json", ".yaml", ".yml") and path.is_file():
        return path
    raise TrainArgumentError(
        f"unknown preset {preset!r}; expected one of {', '.join(PRESET_NAMES)} or the path to an existing "
        ".json/.yaml file of argument values"
    )


def load_preset(preset: str) -> dict:
    """The argument values of a preset; keys starting with '_' are comments and are dropped."""
    path = preset_path(preset)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        values = json.loads(text)
    else:
        import yaml

        values = yaml.safe_load(text)
    if not isinstance(values, dict):
        raise TrainArgumentError(f"preset {path}: expected a mapping of argument names to values")
    return {k: v for k, v in values.items() if not k.startswith("_")}


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

    The preset's values replace the dataclass defaults, then every flag replaces the preset's value.
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
        help=f"{', '.join(PRESET_NAMES)} (karel_hf/presets/NAME.json) or a path to a JSON/YAML file of these flags",
    )
    values = {}
    if known.preset is not None:
        values = load_preset(known.preset)
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
    return (*outputs, known.preset)


# --------------------------------------------------------------------------- tokenising + packing
def tokenize_samples(texts: list[str], tokenizer, loss_on: str = "all") -> dict[str, list[list[int]]]:
    """Token ids (`<s>` ... `</s>`) and labels of samples; `loss_on="program"` masks the prompt.

    The prompt (up to and including "Code:\\n") and the program are tokenised separately and
    joined; with the word-level tokenizer this equals `tokenizer(text).input_ids` (a test checks).
    """
    from karel_hf.data.formatting import split_sample

    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
    prompts, programs = zip(*(split_sample(t) for t in texts)) if texts else ((), ())
    prompt_ids = tokenizer(list(prompts)).input_ids
    program_ids = tokenizer(list(programs), add_special_tokens=False).input_ids
    eos = tokenizer.eos_token_id
    input_ids, labels = [], []
    for p, g in zip(prompt_ids, program_ids):
        ids = p + g + [eos]
        input_ids.append(ids)
        labels.append(list(ids) if loss_on == "all" else [IGNORE_INDEX] * len(p) + g + [eos])
    return {"input_ids": input_ids, "labels": labels}


def pack_blocks(batch: dict[str, list[list[int]]], block_size: int) -> dict[str, list[list[int]]]:
    """Concatenate the rows of a batch and cut them into `block_size` blocks (the tail is dropped)."""
    out = {}
    for key, rows in batch.items():
        flat = [t for row in rows for t in row]
        usable = len(flat) // block_size * block_size
        out[key] = [flat[i : i + block_size] for i in range(0, usable, block_size)]
    return out


def tokenize_from_arrays(batch: dict, tokenizer, loss_on: str = "all") -> dict | None:
    """`tokenize_samples` for rows of the Karel corpus, from the world arrays instead of the text.

    One table lookup per grid cell (`karel_hf.tokenizer.FastEncoder`), about 30x faster than
    tokenising the text (benchmarks/bench_tokenize.py). The first row is checked against the text
    tokenizer; None (use the text path) when the batch is not a karel_hf corpus or does not match.
    """
    import numpy as np

    from karel_hf.tokenizer import FastEncoder

    if not {"inputs", "outputs", "program", "text"} <= set(batch) or not batch["text"]:
        return None
    from karel_hf.data.formatting import count_prompt_pairs

    num_pairs = count_prompt_pairs(batch["text"][0])
    encoder = FastEncoder(tokenizer)
    inputs, outputs = np.asarray(batch["inputs"]), np.asarray(batch["outputs"])  # (n, pairs, rows, cols)
    prompts = encoder.encode_prompts(inputs[:, :num_pairs], outputs[:, :num_pairs]).tolist()
    programs = [encoder.encode_program(p) for p in batch["program"]]
    if prompts[0] + programs[0] != tokenizer(batch["text"][0]).input_ids:
        return None
    eos = tokenizer.eos_token_id
    input_ids = [p + g + [eos] for p, g in zip(prompts, programs)]
    if loss_on == "all":
        labels = [list(ids) for ids in input_ids]
    else:
        labels = [[IGNORE_INDEX] * len(p) + g + [eos] for p, g in zip(prompts, programs)]
    return {"input_ids": input_ids, "labels": labels}


def _tokenize_batch(batch: dict, tokenizer, loss_on: str) -> dict:
    fast = tokenize_from_arrays(batch, tokenizer, loss_on)
    return fast if fast is not None else tokenize_samples(batch["text"], tokenizer, loss_on)


def _truncate(batch: dict, block_size: int) -> dict:
    return {key: [row[:block_size] for row in rows] for key, rows in batch.items()}


def prepare_lm_dataset(dataset, tokenizer, *, block_size: int, loss_on: str = "all", packing: bool = True,
                       max_samples: int | None = None, num_proc: int | None = None):
    """A `datasets.Dataset` with a `text` column -> one with `input_ids` and `labels` rows for the Trainer."""
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    tokenized = dataset.map(
        _tokenize_batch,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "loss_on": loss_on},
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc=f"tokenising (loss on {loss_on})",
    )
    if packing:
        return tokenized.map(
            pack_blocks, batched=True, batch_size=1000, fn_kwargs={"block_size": block_size},
            num_proc=num_proc, desc=f"packing into {block_size}-token blocks",
        )
    longest = max((len(r) for r in tokenized["input_ids"]), default=0)
    if longest > block_size:
        logger.warning("samples up to %d tokens are truncated to block_size %d", longest, block_size)
        tokenized = tokenized.map(_truncate, batched=True, fn_kwargs={"block_size": block_size}, desc="truncating")
    return tokenized


@dataclass
class CausalLMCollator:
    """Stacks `input_ids`/`labels` rows; rows of unequal length are right-padded (labels with -100)."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        if all(len(f["input_ids"]) == width for f in features):  # packed blocks: no padding, no mask
            return {
                "input_ids": torch.tensor([f["input_ids"] for f in features], dtype=torch.long),  # (batch, seq)
                "labels": torch.tensor([f["labels"] for f in features], dtype=torch.long),  # (batch, seq)
            }
        ids, labels, mask = [], [], []
        for f in features:
            pad = width - len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            mask.append([1] * len(f["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
        }


# ------------------------------------------------------------------------------------- callbacks
class GenerationAccuracyCallback(TrainerCallback):
    """Every `every_steps` optimizer steps, run `eval_fn(model) -> {name: float}` and log the numbers.

    The numbers go to the Trainer's log as `eval_<name>` (console, TensorBoard `eval/<name>`,
    `trainer_state.json`'s log_history, so every checkpoint carries them) once the callback is bound
    to the trainer with `bind(trainer)`, and always to `jsonl_path` (one JSON object per check with
    `step`, the numbers, and `seconds`). Only the main process evaluates. The model is put in eval
    mode under `torch.no_grad()` (and bf16 autocast when the run uses bf16) and put back afterwards.
    """

    def __init__(self, eval_fn: Callable, every_steps: int, *, jsonl_path: str | os.PathLike | None = None,
                 at_start: bool = True, at_end: bool = True, log_prefix: str = "eval_"):
        if every_steps < 0:
            raise ValueError(f"every_steps must be >= 0, got {every_steps}")
        self.eval_fn = eval_fn
        self.every_steps = every_steps
        self.jsonl_path = Path(jsonl_path) if jsonl_path is not None else None
        self.at_start, self.at_end = at_start, at_end
        self.log_prefix = log_prefix
        self.trainer = None
        self.history: list[dict] = []
        self._last_step = None

    def bind(self, trainer) -> GenerationAccuracyCallback:
        self.trainer = trainer
        return self

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.at_start and state.global_step == 0:
            self.evaluate(args, state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every_steps and state.global_step % self.every_steps == 0:
            self.evaluate(args, state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.at_end and self._last_step != state.global_step:
            self.evaluate(args, state, model)

    def evaluate(self, args, state, model) -> dict | None:
        if not state.is_world_process_zero or self._last_step == state.global_step:
            return None
        import torch

        self._last_step = state.global_step
        was_training = model.training
        model.eval()
        start = time.perf_counter()
        use_bf16 = bool(getattr(args, "bf16", False))
        try:
            with torch.no_grad(), torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                metrics = {k: float(v) for k, v in dict(self.eval_fn(model)).items()}
        finally:
            model.train(was_training)
        record = {"step": state.global_step, **metrics, "seconds": round(time.perf_counter() - start, 3)}
        self.history.append(record)
        if self.jsonl_path is not None:
            self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.jsonl_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.trainer is not None:
            # Trainer.log clears control.should_log; keep the step's own loss log when it is due.
            control = self.trainer.control
            due = control.should_log
            self.trainer.log({f"{self.log_prefix}{k}": v for k, v in metrics.items()})
            control.should_log = due or control.should_log
        else:
            logger.info("step %d: %s", state.global_step, metrics)
        return metrics


class CheckpointExtrasCallback(TrainerCallback):
    """Writes checkpoint-0 when training starts, and `write_extras(checkpoint_dir, state)` after every save."""

    def __init__(self, write_extras: Callable | None = None, *, save_initial: bool = True):
        self.write_extras = write_extras
        self.save_initial = save_initial

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if not (self.save_initial and state.global_step == 0 and state.is_world_process_zero):
            return
        directory = Path(args.output_dir) / "checkpoint-0"
        if (directory / "trainer_state.json").is_file():
            return
        model.save_pretrained(directory)
        if processing_class is not None:
            processing_class.save_pretrained(directory)
        state.save_to_json(str(directory / "trainer_state.json"))
        if self.write_extras is not None:
            self.write_extras(directory, state)
        logger.info("saved the untrained model to %s", directory)

    def on_save(self, args, state, control, **kwargs):
        if self.write_extras is not None and state.is_world_process_zero:
            directory = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if directory.is_dir():
                self.write_extras(directory, state)


# ------------------------------------------------------------------------------ generation check
def internal_exact_program_match(model, tokenizer, rows: list[dict], *, batch_size: int = 32,
                                 max_new_actions: int = 14) -> dict[str, float]:
    """Fraction of rows whose greedily generated program text equals the reference program.

    An internal stand-in for generation accuracy (which executes the program on the specification)
    used while `karel_hf.decoding.evaluate_generation` is unavailable: it is stricter (a different
    program with the same effect counts as wrong) and its name says so in every log.
    """
    from karel_hf.data.formatting import split_sample

    pairs = [split_sample(r["text"]) for r in rows]
    matches = 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        enc = tokenizer([p for p, _ in chunk], return_tensors="pt", padding=True).to(model.device)
        out = model.generate(
            **enc,
            max_new_tokens=PREAMBLE_TOKENS + max_new_actions + CLOSING_TOKENS,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )  # (batch, prompt + new)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        matches += sum(t.strip() == ref.strip() for t, (_, ref) in zip(texts, chunk))
    return {"internal_exact_program_match": matches / max(len(pairs), 1)}


def make_generation_eval_fn(tokenizer, rows: list[dict], *, batch_size: int = 32, max_new_actions: int = 14):
    """`eval_fn(model) -> dict`: `karel_hf.decoding.evaluate_generation` when it exists (its keys
    prefixed `generation_`: generation_accuracy, generation_parse_rate, ...), else
    `internal_exact_program_match` (a warning says which)."""
    try:
        from karel_hf.decoding import evaluate_generation
    except ImportError as err:
        logger.warning(
            "karel_hf.decoding.evaluate_generation is unavailable (%s): logging internal_exact_program_match "
            "(exact program text match) instead of generation accuracy", err,
        )

        def eval_fn(model):
            return internal_exact_program_match(
                model, tokenizer, rows, batch_size=batch_size, max_new_actions=max_new_actions
            )
    else:

        from karel_hf.data.formatting import count_prompt_pairs

        num_prompt_pairs = count_prompt_pairs(rows[0]["text"]) if rows else 5

        def eval_fn(model):
            numbers = evaluate_generation(model, tokenizer, rows, batch_size=batch_size, max_new_actions=max_new_actions,
                                          num_prompt_pairs=num_prompt_pairs)
            return {k if k.startswith("generation_") else f"generation_{k}": v for k, v in numbers.items()}

    return eval_fn


# ------------------------------------------------------------------------------------ model card
def card_template_path() -> Path:
    """The top-level model_card.md (karel_hf/templates/ links to it, so wheels carry a copy)."""
    for path in (Path(__file__).parent / "templates" / "model_card.md",):
        if path.is_file():
            return path
    raise FileNotFoundError("model_card.md template not found next to the karel_hf package")


def render_model_card(values: dict, template: str | None = None) -> str:
    """Fill the `${name}` placeholders of the template (as dataset_card.md); a missing value raises."""
    from string import Template

    template = card_template_path().read_text(encoding="utf-8") if template is None else template
    try:
        return Template(template).substitute(values)
    except KeyError as err:
        raise KeyError(f"model card placeholder ${{{err.args[0]}}} has no value") from None


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_model_card(directory, values: dict) -> Path:
    """Render the card and write it to directory/README.md atomically (temp file + os.replace)."""
    path = Path(directory) / CARD_NAME
    _atomic_write(path, render_model_card(values))
    return path


def _latest_metrics(log_history: list[dict]) -> tuple[dict, int | None]:
    """The most recent eval_* numbers (generation check and eval loss) and their step."""
    latest, step = {}, None
    for entry in log_history:
        numbers = {k[len("eval_") :]: v for k, v in entry.items()
                   if k.startswith("eval_") and isinstance(v, (int, float)) and not k.endswith(("runtime", "per_second"))}
        if numbers:
            latest.update(numbers)
            step = entry.get("step", step)
    return latest, step


# The headline numbers that go into the card's model-index (all numbers go into its table).
MODEL_INDEX_METRICS = ("generation_accuracy", "generation_accuracy_all_pairs", "internal_exact_program_match", "loss")


def model_index_yaml(name: str, dataset_id: str, dataset_config: str, metrics: dict, samples: int) -> str:
    """The YAML `model-index` block with the real numbers (empty when there are none yet)."""
    import yaml

    metrics = {k: v for k, v in metrics.items() if k in MODEL_INDEX_METRICS}
    if not metrics:
        return ""
    results = [{
        "task": {"type": "text-generation", "name": "Karel program synthesis"},
        "dataset": {"type": dataset_id, "name": f"Karel ({dataset_config})", "config": dataset_config,
                    "split": "validation"},
        "metrics": [
            {"type": key, "value": round(float(value), 4),
             "name": "validation loss" if key == "loss" else key.replace("_", " ") + f" (first {samples} validation programs)"}
            for key, value in sorted(metrics.items())
        ],
    }]
    return yaml.safe_dump({"model-index": [{"name": name, "results": results}]}, sort_keys=False)


def library_versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("karel_hf", "torch", "transformers", "datasets", "accelerate", "tokenizers", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass
class RunInfo:
    """What the card and the run config need to know about a run."""

    preset: str | None
    model_args: ModelArguments
    data_args: DataArguments
    training_args: KarelTrainingArguments
    model_config: dict
    num_parameters: int
    world_size: int = 1
    argv: list[str] | None = None

    def run_config(self) -> dict:
        return {
            "preset": self.preset,
            "argv": self.argv,
            "model_args": asdict(self.model_args),
            "data_args": asdict(self.data_args),
            "training_args": self.training_args.to_dict(),
            "model_config": self.model_config,
            "num_parameters": self.num_parameters,
            "world_size": self.world_size,
            "versions": library_versions(),
        }

    def tokens_per_step(self) -> int:
        t = self.training_args
        return t.per_device_train_batch_size * t.gradient_accumulation_steps * self.world_size * self.data_args.block_size

    def card_values(self, name: str, global_step: int, log_history: list[dict]) -> dict:
        t, d, c = self.training_args, self.data_args, self.model_config
        metrics, metrics_step = _latest_metrics(log_history)
        rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items())) or "| (no evaluation yet) | |"
        versions = library_versions()
        return {
            "model_name": name,
            "dataset_id": d.dataset_id,
            "dataset_config": d.dataset_config,
            "dataset_overrides": d.dataset_overrides or "none",
            "model_index": model_index_yaml(name, d.dataset_id, d.dataset_config, metrics, t.generation_eval_samples),
            "preset": self.preset or "none (flags only)",
            "model_preset": self.model_args.model_preset,
            "n_layer": c["n_layer"],
            "n_embd": c["n_embd"],
            "n_head": c["n_head"],
            "n_positions": c["n_positions"],
            "position_init": self.model_args.position_init,
            "vocab_size": c["vocab_size"],
            "num_parameters": f"{self.num_parameters:,}",
            "loss_on": d.loss_on,
            "block_size": d.block_size,
            "packing": "packed" if d.packing else "one padded sample per row",
            "learning_rate": t.learning_rate,
            "lr_scheduler_type": getattr(t.lr_scheduler_type, "value", t.lr_scheduler_type),
            "warmup_steps": t.warmup_steps,
            "max_steps": t.max_steps,
            "tokens_per_step": f"{self.tokens_per_step():,}",
            "global_step": global_step,
            "tokens_seen": f"{global_step * self.tokens_per_step():,}",
            "precision": "bf16 autocast" if t.bf16 else ("fp16" if t.fp16 else "fp32"),
            "seed": t.seed,
            "results_step": metrics_step if metrics_step is not None else "-",
            "results_table": rows,
            "generation_eval_samples": t.generation_eval_samples,
            "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        }


def _write_run_files(directory: Path, info: RunInfo, state) -> None:
    _atomic_write(directory / RUN_CONFIG_NAME, json.dumps(info.run_config(), indent=2, default=str) + "\n")
    name = Path(info.training_args.output_dir).resolve().name
    write_model_card(directory, info.card_values(name, state.global_step, state.log_history))


# -------------------------------------------------------------------------------------- the run
def resolve_resume(training_args) -> str | None:
    """`--resume_from_checkpoint last` -> the newest complete checkpoint in output_dir; a path -> itself."""
    value = training_args.resume_from_checkpoint
    if value in (None, "", "false", "False"):
        return None
    if value in ("last", "latest", "true", "True"):
        found = latest_checkpoint(training_args.output_dir)
        if found is None:
            raise TrainArgumentError(
                f"resume_from_checkpoint={value}: no complete checkpoint-* folder in {training_args.output_dir}"
            )
        return str(found)
    if not (Path(value) / "trainer_state.json").is_file():
        raise TrainArgumentError(f"resume_from_checkpoint: {value} is not a checkpoint folder (no trainer_state.json)")
    return str(value)


def latest_checkpoint(output_dir) -> Path | None:
    """The checkpoint-N folder with the largest N that holds a trainer_state.json (complete saves only)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = []
    for path in folder.glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and (path / "trainer_state.json").is_file():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def load_raw_datasets(data_args: DataArguments):
    """The corpus as a DatasetDict: generated by `load_karel`, or read from `dataset_path`."""
    if data_args.dataset_path:
        import datasets

        path = Path(data_args.dataset_path)
        if (path / "dataset_dict.json").is_file():
            return datasets.load_from_disk(str(path))
        return datasets.load_dataset(str(path), data_args.dataset_config, cache_dir=data_args.dataset_cache_dir)
    from karel_hf.data.builder import load_karel

    return load_karel(
        data_args.dataset_config,
        cache_dir=data_args.dataset_cache_dir,
        num_proc=data_args.preprocessing_num_workers,
        **data_args.load_karel_overrides(),
    )


def generation_rows(dataset, n: int) -> list[dict]:
    """The first n rows of a split, without the trace columns (what the generation check reads)."""
    keep = [c for c in ("id", "text", "program", "length", "inputs", "outputs") if c in dataset.column_names]
    return list(dataset.select_columns(keep).select(range(min(n, len(dataset)))))


def _setup_logging(training_args) -> None:
    import datasets
    import transformers

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    level = training_args.get_process_log_level()
    if training_args.should_log and level == logging.WARNING:  # "passive": main process says what it does
        level = logging.INFO
    logger.setLevel(level)
    datasets.utils.logging.set_verbosity(max(level, logging.WARNING))
    transformers.utils.logging.set_verbosity(level)


def run_training(model_args: ModelArguments, data_args: DataArguments, training_args: KarelTrainingArguments, *,
                 preset: str | None = None, argv: list[str] | None = None, eval_fn: Callable | None = None,
                 callbacks: tuple = ()) -> dict:
    """Train (or resume), save the final model, tokenizer, metrics and card in output_dir; return the metrics.

    `eval_fn(model) -> dict` replaces the default generation check (see `make_generation_eval_fn`).
    """
    from transformers import AutoModelForCausalLM, Trainer, set_seed

    from karel_hf.modeling import build_model, count_parameters, parse_config_overrides, set_generation_ids
    from karel_hf.tokenizer import build_tokenizer, load_tokenizer

    _setup_logging(training_args)
    output_dir = Path(training_args.output_dir)
    resume = resolve_resume(training_args)
    if resume is None and latest_checkpoint(output_dir) is not None:
        raise TrainArgumentError(
            f"{output_dir} already holds checkpoints ({latest_checkpoint(output_dir).name}); pass "
            "--resume_from_checkpoint last to continue that run, or choose another --output_dir"
        )
    set_seed(training_args.seed)

    tokenizer = load_tokenizer(data_args.tokenizer_path) if data_args.tokenizer_path else build_tokenizer()
    with training_args.main_process_first(desc="loading the Karel corpus"):
        raw = load_raw_datasets(data_args)
    if "train" not in raw:
        raise TrainArgumentError(f"the corpus has no train split (splits: {', '.join(raw)})")
    common = dict(block_size=data_args.block_size, loss_on=data_args.loss_on, packing=data_args.packing,
                  num_proc=data_args.preprocessing_num_workers)
    with training_args.main_process_first(desc="tokenising and packing"):
        train_dataset = prepare_lm_dataset(raw["train"], tokenizer, max_samples=data_args.max_train_samples, **common)
        eval_dataset = None
        if training_args.eval_strategy != "no":
            if "validation" not in raw:
                raise TrainArgumentError("eval_strategy needs a validation split; pass --eval_strategy no")
            eval_dataset = prepare_lm_dataset(raw["validation"], tokenizer, max_samples=data_args.max_eval_samples,
                                              **common)
    if len(train_dataset) == 0:
        raise TrainArgumentError(
            f"no training block: the training text is shorter than block_size {data_args.block_size}"
        )

    if model_args.model_name_or_path:
        model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, attn_implementation="eager")
        set_generation_ids(model, tokenizer)
    else:
        layout = None
        if model_args.position_init == "grid":
            from karel_hf.data.builder import get_config
            from karel_hf.modeling import prompt_layout

            corpus = get_config(data_args.dataset_config, **data_args.load_karel_overrides())
            layout = prompt_layout(tokenizer, corpus.num_prompt_pairs, corpus.height - 2, corpus.width - 2)
        model = build_model(model_args.model_preset, tokenizer, position_init=model_args.position_init, layout=layout,
                            **parse_config_overrides(model_args.config_overrides))
    if data_args.block_size > model.config.n_positions:
        raise TrainArgumentError(
            f"block_size {data_args.block_size} exceeds the model's context n_positions {model.config.n_positions}"
        )
    info = RunInfo(preset, model_args, data_args, training_args, model.config.to_dict(), count_parameters(model),
                   training_args.world_size, argv)
    logger.info("model: %s preset, %s parameters; loss on %s; %d training blocks of %d tokens",
                model_args.model_preset, f"{info.num_parameters:,}", data_args.loss_on, len(train_dataset),
                data_args.block_size)

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=CausalLMCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
    )
    generation = None
    if training_args.generation_eval_steps and "validation" in raw:
        rows = generation_rows(raw["validation"], training_args.generation_eval_samples)
        fn = eval_fn or make_generation_eval_fn(tokenizer, rows, batch_size=training_args.generation_eval_batch_size,
                                                max_new_actions=training_args.generation_max_new_actions)
        generation = GenerationAccuracyCallback(fn, training_args.generation_eval_steps,
                                                jsonl_path=output_dir / GENERATION_LOG_NAME).bind(trainer)
        trainer.add_callback(generation)
    trainer.add_callback(CheckpointExtrasCallback(lambda d, s: _write_run_files(Path(d), info, s),
                                                  save_initial=training_args.save_initial_checkpoint))
    for cb in callbacks:
        trainer.add_callback(cb)
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(output_dir / RUN_CONFIG_NAME, json.dumps(info.run_config(), indent=2, default=str) + "\n")

    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    metrics = dict(result.metrics)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    if eval_dataset is not None:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    trainer.save_state()
    if trainer.is_world_process_zero():
        _write_run_files(output_dir, info, trainer.state)
    if generation is not None and generation.history:
        metrics.update({f"generation_{k}" if k in ("step", "seconds") else k: v
                        for k, v in generation.history[-1].items()})
    return metrics


def main(argv: list[str] | None = None) -> int:
    """`karel-hf train` / `scripts/train.py`: parse `--preset` + flags, train; 2 on a usage error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        model_args, data_args, training_args, preset = parse_train_args(argv)
        run_training(model_args, data_args, training_args, preset=preset, argv=argv)
    except TrainArgumentError as err:
        print(f"karel-hf train: error: {err}", file=sys.stderr)
        return 2
    return 0
