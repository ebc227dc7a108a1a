"""Trainer callbacks of a training run: the generation check and the checkpoint extras.

- `GenerationAccuracyCallback` decodes a validation subset every K steps with an injected
  `eval_fn(model) -> dict` (by default `make_generation_eval_fn`: grammar-constrained greedy
  decoding scored by executing the programs, `karel_hf.decoding.evaluate_generation`) and logs the
  numbers to the Trainer log (console, TensorBoard, trainer_state.json) and to a JSON-lines file.
- `CheckpointExtrasCallback` writes `checkpoint-0` (the untrained model: the reproduction probes
  every checkpoint, the untrained one too) when training starts, and calls `write_extras` (the
  model card and the run config) after every save.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import torch
from transformers import TrainerCallback

from karel_hf.data.formatting import count_prompt_pairs
from karel_hf.decoding import evaluate_generation
from karel_hf.karel import parse
from karel_hf.utils import TRAINER_STATE_FILE, checkpoint_dir

logger = logging.getLogger(__name__)


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
        directory = checkpoint_dir(args.output_dir, 0)
        if (directory / TRAINER_STATE_FILE).is_file():
            return
        model.save_pretrained(directory)
        if processing_class is not None:
            processing_class.save_pretrained(directory)
        state.save_to_json(str(directory / TRAINER_STATE_FILE))
        if self.write_extras is not None:
            self.write_extras(directory, state)
        logger.info("saved the untrained model to %s", directory)

    def on_save(self, args, state, control, **kwargs):
        if self.write_extras is not None and state.is_world_process_zero:
            directory = checkpoint_dir(args.output_dir, state.global_step)
            if directory.is_dir():
                self.write_extras(directory, state)


def make_generation_eval_fn(tokenizer, rows: list[dict], *, batch_size: int = 32, max_new_actions: int = 14,
                            extended: bool | None = None):
    """`eval_fn(model) -> dict`: `karel_hf.decoding.evaluate_generation` on `rows`, its keys prefixed
    `generation_` (generation_accuracy, generation_parse_rate, ...).

    `extended`: decode in the extended language (if / ifelse / repeat / while) rather than the
    straight-line one. None decides from the rows: extended iff some reference program has control
    flow, so that a model trained on an extended corpus is not held to straight-line programs."""
    num_prompt_pairs = count_prompt_pairs(rows[0]["text"]) if rows else 5
    if extended is None:
        extended = any(not parse(r["program"]).is_straight_line for r in rows if r.get("program"))

    def eval_fn(model):
        numbers = evaluate_generation(model, tokenizer, rows, batch_size=batch_size, max_new_actions=max_new_actions,
                                      num_prompt_pairs=num_prompt_pairs, extended=extended)
        return {k if k.startswith("generation_") else f"generation_{k}": v for k, v in numbers.items()}

    return eval_fn


def generation_rows(dataset, n: int) -> list[dict]:
    """The first n rows of a split, without the trace columns (what the generation check reads)."""
    keep = [c for c in ("id", "text", "program", "length", "inputs", "outputs") if c in dataset.column_names]
    return list(dataset.select_columns(keep).select(range(min(n, len(dataset)))))
