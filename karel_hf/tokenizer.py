"""A word-level tokenizer built from the DSL's own vocabulary: one token per grid cell, per
program line, per header.

Pieces are cut by one regex (`PIECE_PATTERN`): a word with its indentation in front and the one
space or newline that follows it, e.g. `"__wall__ "`, `"__up__\\n"`, `"Input0\\n"`,
`"  move()\\n"`. Each piece is one vocabulary entry, so the text decodes by plain concatenation
(`decoders.Fuse`) and `decode(encode(text)) == text` for every text the formatter writes.

The vocabulary is not a hand-written list: it is every piece that occurs when the formatter renders
the grid cells, the headers, and every statement form of the printer at each indentation depth.

Special tokens: `<s>` (bos, prepended by the post-processor, so a prompt is encoded as the model saw
samples start in training), `</s>` (eos, appended by the training pipeline after each sample;
decoding stops there), `<pad>` (padding only, never trained on), `<unk>`.
"""

from __future__ import annotations

import re
from functools import lru_cache

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from karel_hf.data.formatting import format_prompt, format_program
from karel_hf.karel.program import ACTIONS, CONDITIONS, Action, Condition, If, Program, Repeat, While
from karel_hf.karel.world import CELL_WORDS

PIECE_PATTERN = r" *[^ \n]+[ \n]?|\n| +"
BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
MAX_PAIRS = 10  # Input0..Input9
MAX_DEPTH = 4  # nesting depth of extended-language blocks covered by the vocabulary
MAX_REPEAT = 20


def pieces(text: str) -> list[str]:
    return re.findall(PIECE_PATTERN, text)


def _statement_forms(depth: int):
    """One program per statement form, nested `depth` blocks deep."""
    conditions = [Condition(c, neg) for c in CONDITIONS for neg in (False, True)]
    leaves = tuple(Action(a) for a in ACTIONS)
    forms = [leaves]
    for cond in conditions:
        forms += [(If(cond, leaves),), (If(cond, leaves, leaves),), (While(cond, leaves),)]
    forms += [(Repeat(n, leaves),) for n in range(MAX_REPEAT + 1)]
    for body in forms:
        for _ in range(depth):
            body = (Repeat(2, body),)
        yield Program(body)


@lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """All pieces of formatted text, specials first; the order (and so every id) is deterministic."""
    found: dict[str, None] = {}
    rows = [[code] * 6 for code in range(len(CELL_WORDS))]
    grid = [row for row in rows]  # every cell word both inside a row and at its end
    import numpy as np

    grids = np.array(grid, dtype=np.int8)[None]
    prompt = format_prompt([grids[0]] * MAX_PAIRS, [grids[0]] * MAX_PAIRS)
    texts = [prompt] + [format_program(p, "lines") for d in range(MAX_DEPTH + 1) for p in _statement_forms(d)]
    texts.append("def run() {\n}")  # an empty program
    for text in texts:
        for piece in pieces(text):
            found.setdefault(piece, None)
    return SPECIAL_TOKENS + tuple(sorted(found))


def build_tokenizer():
    """The karel_hf tokenizer as a `PreTrainedTokenizerFast` (save it with `save_pretrained`)."""
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
        padding_side="left",
    )


def load_tokenizer(path):
    """Load a saved karel_hf tokenizer with `AutoTokenizer`, with a clear error for a bad path."""
    from pathlib import Path

    from transformers import AutoTokenizer

    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise ValueError(
            f"no tokenizer at {path}: expected a folder with tokenizer.json, as written by "
            "`karel-hf tokenizer save DIR` or `karel-hf dataset export` (DIR/tokenizer)"
        )
    return AutoTokenizer.from_pretrained(str(path))
