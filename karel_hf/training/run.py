"""A training run: `run_training` (the Trainer wiring, resuming, saving) and `main` (the console
script), plus `RunInfo`, what every output folder records about the run.

    karel-hf train --preset tiny --output_dir runs/tiny                    # seconds, tests
    accelerate launch scripts/train.py --preset cpu --output_dir runs/cpu   # the CPU reproduction
    accelerate launch scripts/train.py --preset cpu --output_dir runs/cpu --resume_from_checkpoint last

Checkpoints every `save_steps` are standard Trainer directories (model.safetensors, config.json,
generation_config.json with bos/eos/pad, tokenizer files, trainer_state.json, optimizer, scheduler,
RNG state) plus the model card (README.md) and the resolved run config with library versions
(karel_run_config.json). No file of a run holds a token: `RunInfo.run_config` masks them, and
`KarelTrainingArguments` pickles (training_args.bin) without them. `--resume_from_checkpoint last|PATH` continues with the saved weights,
optimizer, schedule, RNG and data position; without it an output_dir that already holds
checkpoints is refused.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import datasets
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, Trainer, set_seed

from karel_hf.data.builder import load_karel
from karel_hf.model_card import card_values, python_args, write_model_card
from karel_hf.modeling import build_model, count_parameters, set_generation_ids
from karel_hf.tokenizer import build_tokenizer, cells_per_token, load_tokenizer
from karel_hf.errors import run_main
from karel_hf.utils import (
    StdoutHandler,
    atomic_write_json,
    checkpoint_problem,
    latest_checkpoint,
    library_versions,
    machine_info,
    redact_argv,
    writable_dir,
)

from .arguments import DataArguments, KarelTrainingArguments, ModelArguments, TrainArgumentError, parse_train_args
from .callbacks import CheckpointExtrasCallback, GenerationAccuracyCallback, generation_rows, make_generation_eval_fn
from .lm_dataset import CausalLMCollator, prepare_lm_dataset
from .loss import compute_loss_func

logger = logging.getLogger(__name__)

RUN_CONFIG_NAME = "karel_run_config.json"
GENERATION_LOG_NAME = "generation_eval.jsonl"


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
        """The resolved config and library versions, with no secret: the command line's token flags and any
        token this process knows are masked (`redact_argv`), `training_args.to_dict` masks `*_token` fields."""
        secrets = (self.training_args.hub_token, os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN"))
        return {
            "preset": self.preset,
            "argv": redact_argv(self.argv, secrets),
            "model_args": asdict(self.model_args),
            "data_args": asdict(self.data_args),
            "training_args": self.training_args.to_dict(),
            "model_config": self.model_config,
            "num_parameters": self.num_parameters,
            "world_size": self.world_size,
            "versions": library_versions(),
            "machine": machine_info(),
        }

    def tokens_per_step(self) -> int:
        t = self.training_args
        return t.per_device_train_batch_size * t.gradient_accumulation_steps * self.world_size * self.data_args.block_size

    def card_values(self, name: str, global_step: int, log_history: list[dict], folder) -> dict:
        """The model card's values for the model saved in `folder` (`karel_hf.model_card.card_values`)."""
        return card_values(self.run_config(), model_name=name, global_step=global_step, log_history=log_history,
                           model_ref=python_args(folder))


def _write_run_files(directory: Path, info: RunInfo, state) -> None:
    atomic_write_json(directory / RUN_CONFIG_NAME, info.run_config(), default=str)
    name = Path(info.training_args.output_dir).resolve().name
    write_model_card(directory, info.card_values(name, state.global_step, state.log_history, directory))


# -------------------------------------------------------------------------------------- the run
def resolve_resume(training_args) -> str | None:
    """`--resume_from_checkpoint last` -> the newest intact checkpoint in output_dir (a newer torn
    one is named in a warning and skipped); a path -> itself, if it is intact."""
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
    problem = checkpoint_problem(value)
    if problem is not None:
        raise TrainArgumentError(f"resume_from_checkpoint: {value} is not a checkpoint to resume from: {problem}")
    return str(value)


def load_raw_datasets(data_args: DataArguments):
    """The corpus as a DatasetDict: generated by `load_karel`, or read from `dataset_path`."""
    if data_args.dataset_path:
        path = Path(data_args.dataset_path)
        if (path / "dataset_dict.json").is_file():
            return datasets.load_from_disk(str(path))
        return datasets.load_dataset(str(path), data_args.dataset_config, cache_dir=data_args.dataset_cache_dir)
    return load_karel(
        data_args.dataset_config,
        cache_dir=data_args.dataset_cache_dir,
        num_proc=data_args.preprocessing_num_workers,
        **data_args.load_karel_overrides(),
    )


def _setup_logging(training_args) -> None:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S",
                        handlers=[StdoutHandler()])
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
    _setup_logging(training_args)
    output_dir = writable_dir(training_args.output_dir, "--output_dir")
    resume = resolve_resume(training_args)
    existing = latest_checkpoint(output_dir) if resume is None else None
    if existing is not None:
        raise TrainArgumentError(
            f"{output_dir} already holds checkpoints ({existing.name}); pass "
            "--resume_from_checkpoint last to continue that run, or choose another --output_dir"
        )
    set_seed(training_args.seed)

    tokenizer = (load_tokenizer(data_args.tokenizer_path) if data_args.tokenizer_path
                 else build_tokenizer(data_args.cells_per_token))
    if model_args.model_name_or_path:  # before the corpus is tokenised: a start of another vocabulary fails now
        start_vocab = AutoConfig.from_pretrained(model_args.model_name_or_path).vocab_size
        if start_vocab != len(tokenizer):
            raise TrainArgumentError(
                f"model_name_or_path: the model's vocabulary has {start_vocab} tokens, the tokenizer "
                f"{len(tokenizer)} (cells_per_token {cells_per_token(tokenizer)}): train with the tokenizer it was trained with")
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
            from karel_hf.modeling import corpus_layout

            layout = corpus_layout(tokenizer, get_config(data_args.dataset_config, **data_args.load_karel_overrides()))
        model = build_model(model_args.model_preset, tokenizer, position_init=model_args.position_init,
                            config_overrides=model_args.config_overrides, layout=layout)
    if data_args.block_size > model.config.n_positions:
        raise TrainArgumentError(
            f"block_size {data_args.block_size} exceeds the model's context n_positions {model.config.n_positions}"
        )
    info = RunInfo(preset, model_args, data_args, training_args, model.config.to_dict(), count_parameters(model),
                   training_args.world_size, argv)
    logger.info("model: %s preset, %s parameters; loss on %s (program weight %g); %d training blocks of %d tokens",
                model_args.model_preset, f"{info.num_parameters:,}", data_args.loss_on,
                data_args.program_loss_weight, len(train_dataset),
                data_args.block_size)

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=CausalLMCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        compute_loss_func=compute_loss_func(data_args.program_loss_weight, tokenizer),
    )
    generation = None
    if training_args.generation_eval_steps and "validation" in raw:
        rows = generation_rows(raw["validation"], training_args.generation_eval_samples)
        config = data_args.corpus_config()  # None for a corpus read from a path: its references decide
        extended = config.extended if config is not None else None
        fn = eval_fn or make_generation_eval_fn(tokenizer, rows, batch_size=training_args.generation_eval_batch_size,
                                                max_new_actions=training_args.generation_max_new_actions,
                                                extended=extended)
        generation = GenerationAccuracyCallback(fn, training_args.generation_eval_steps,
                                                jsonl_path=output_dir / GENERATION_LOG_NAME).bind(trainer)
        trainer.add_callback(generation)
    trainer.add_callback(CheckpointExtrasCallback(lambda d, s: _write_run_files(Path(d), info, s),
                                                  save_initial=training_args.save_initial_checkpoint))
    for cb in callbacks:
        trainer.add_callback(cb)
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(output_dir / RUN_CONFIG_NAME, info.run_config(), default=str)

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


def train_command(argv: list[str]) -> int:
    """Parse `--preset` + flags and train; errors are raised (see `main`)."""
    model_args, data_args, training_args, preset = parse_train_args(argv)
    run_training(model_args, data_args, training_args, preset=preset, argv=argv)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`karel-hf train` / `scripts/train.py`: train; an error is one line on stderr and exit status 2
    (usage) or 1 (failure), as `karel_hf.errors.run_main` says."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_main("karel-hf train", train_command, argv)
