"""A cell-aware start for GPT-2's token embeddings, written as a checkpoint to train from (LOG.md E22).

The grid position start (karel_hf.modeling, `position_init: grid`) tells the model which cells are
the same cell of another grid. This screen asks the same of the token table: the tokenizer spends one
token per cell word and separator ("__up__ " and "__up__\\n" are two tokens), and nothing tells the
model at step 0 that the two are the same cell, or that the four robot tokens are all the robot.
This script copies a checkpoint (the untrained checkpoint-0 of a run) and restarts the rows of the
token table (`wte`, tied to the LM head) for

- every cell token: its kind's code (space, wall, robot, marker) + its value's code (the robot's
  direction, the marker count) + `--sep_weight` x the separator's code (" " or "\\n");
- every action token of a straight-line program: its action's code + `--sep_weight` x its
  indentation's code;

each code a fixed N(0, 1) vector drawn from `--seed`, the rows rescaled to the table's standard
deviation. Every other row, and every other weight, is left as it was. The result is a stock GPT-2
checkpoint; `karel-hf train --model_name_or_path DST ...` trains from it:

    python benchmarks/emergence/token_init.py RUN/model/checkpoint-0 runs/init-token-cell
    karel-hf train --preset demo --model_name_or_path runs/init-token-cell --output_dir R ...
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

ROBOT_WORDS = ("__up__", "__right__", "__down__", "__left__")
ACTION_WORDS = ("move()", "turn_left()", "turn_right()", "put_marker()", "pick_marker()")


def structured_rows(vocab: dict, dim: int, *, seed: int = 0, sep_weight: float = 0.3) -> dict:
    """{token id: start vector} for the vocabulary's cell and action tokens (see the module docstring),
    not yet rescaled."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    codes: dict = {}

    def code(name: str):
        if name not in codes:
            codes[name] = torch.randn(dim, generator=generator)
        return codes[name]

    rows = {}
    for word, index in sorted(vocab.items(), key=lambda item: item[1]):
        stripped = word.strip()
        separator = code("newline" if word.endswith("\n") else "space") * sep_weight
        if stripped in ("__space__", "__wall__"):
            rows[index] = code(stripped) + separator
        elif stripped in ROBOT_WORDS:
            rows[index] = code("robot") + code(stripped) + separator
        elif re.fullmatch(r"__\d_Marker__", stripped):
            rows[index] = code("marker") + code(stripped) + separator
        elif stripped in ACTION_WORDS:
            indent = len(word) - len(word.lstrip(" "))
            rows[index] = code(stripped) + code(f"indent {indent}") * sep_weight
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="a checkpoint folder (model.safetensors, config.json, tokenizer files)")
    parser.add_argument("dst", type=Path, help="the new checkpoint folder (must not exist)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sep_weight", type=float, default=0.3, help="weight of the separator and indentation codes")
    args = parser.parse_args(argv)
    if not (args.src / "model.safetensors").is_file():
        parser.error(f"{args.src} is not a checkpoint folder: no model.safetensors")
    if args.dst.exists():
        parser.error(f"{args.dst} exists; give a new folder")

    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    weights = load_file(str(args.src / "model.safetensors"))
    key = "transformer.wte.weight"
    if key not in weights:
        parser.error(f"{args.src} is not a GPT-2 checkpoint: no {key}")
    table = weights[key].float().clone()
    rows = structured_rows(AutoTokenizer.from_pretrained(str(args.src)).get_vocab(), table.shape[1], seed=args.seed,
                           sep_weight=args.sep_weight)
    if not rows:
        parser.error(f"{args.src}'s tokenizer has no cell or action words")
    import torch

    ids = torch.tensor(sorted(rows))
    block = torch.stack([rows[i] for i in sorted(rows)])
    table[ids] = block * (table.std() / block.std())
    weights[key] = table.to(weights[key].dtype)
    if "lm_head.weight" in weights:  # tied: keep the two the same tensor's values
        weights["lm_head.weight"] = weights[key]
    partial = args.dst.with_name(args.dst.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(args.src, partial)
    save_file(weights, str(partial / "model.safetensors"), metadata={"format": "pt"})
    partial.rename(args.dst)
    print(f"wrote {args.dst}: {len(ids)} of {table.shape[0]} token rows restarted (std {table.std():.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
