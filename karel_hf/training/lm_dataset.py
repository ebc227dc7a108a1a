"""Corpus rows -> causal-LM training rows: tokenising, program-only loss masking, packing, collating.

- A sample is `tokenizer(text)` (which starts with `<s>`) plus `</s>`. Corpus rows are tokenised
  from their world arrays (`karel_hf.tokenizer.FastEncoder`, one lookup per grid cell), checked
  against the text tokenizer on the first row of every batch; other text is tokenised as text.
- `loss_on="all"` (the paper's objective) trains on every token; `loss_on="program"` sets the labels
  to -100 (`IGNORE_INDEX`) everywhere except the program tokens after "Code:\n" and the closing `</s>`.
- Packing (the default, as the paper): the samples of each map batch of 1,000 are concatenated and
  cut into `block_size` blocks; the tail shorter than a block is dropped (one partial block per
  ~390k tokens). No padding is ever computed and samples cross block boundaries as in the paper's
  2048-token blocks, so every forward pass is a full (batch, block_size) tensor: the most training
  tokens per second for a given batch. `packing=False` keeps one sample per row, and
  `CausalLMCollator` pads each batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from karel_hf.data.formatting import count_prompt_pairs, split_sample
from karel_hf.tokenizer import FastEncoder

logger = logging.getLogger(__name__)

LOSS_ON = ("all", "program")
IGNORE_INDEX = -100


def tokenize_samples(texts: list[str], tokenizer, loss_on: str = "all") -> dict[str, list[list[int]]]:
    """Token ids (`<s>` ... `</s>`) and labels of samples; `loss_on="program"` masks the prompt.

    The prompt (up to and including "Code:\\n") and the program are tokenised separately and
    joined; with the word-level tokenizer this equals `tokenizer(text).input_ids` (a test checks).
    """
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
    if not {"inputs", "outputs", "program", "text"} <= set(batch) or not batch["text"]:
        return None
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
