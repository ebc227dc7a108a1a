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

Saved tokenizers load with `AutoTokenizer` in every transformers that pyproject allows: transformers 5
writes its own class name (`TokenizersBackend`) into tokenizer_config.json, which transformers 4 does
not know, so the tokenizer is a `KarelTokenizerFast`, a `PreTrainedTokenizerFast` (the same class
in 5, an alias) that writes that name instead, wherever it is saved (the Trainer's checkpoints too).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from karel_hf.data.formatting import (
    CODE_HEADER,
    EXAMPLES_HEADER,
    PROGRAM_FOOTER,
    PROGRAM_HEADER,
    format_program,
    format_prompt,
    input_header,
    output_header,
)
from karel_hf.karel.program import ACTIONS, CONDITIONS, Action, Condition, If, Program, Repeat, While
from karel_hf.karel.world import CELL_WORDS
from karel_hf.utils import atomic_write_json

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
    # one row per cell word, so each word appears both inside a row (then a space) and at its end
    grid = np.array([[code] * 6 for code in range(len(CELL_WORDS))], dtype=np.int8)
    prompt = format_prompt([grid] * MAX_PAIRS, [grid] * MAX_PAIRS)
    texts = [prompt] + [format_program(p, "lines") for d in range(MAX_DEPTH + 1) for p in _statement_forms(d)]
    texts.append(PROGRAM_HEADER + PROGRAM_FOOTER)  # an empty program
    for text in texts:
        for piece in pieces(text):
            found.setdefault(piece, None)
    return SPECIAL_TOKENS + tuple(sorted(found))


# The class tokenizer_config.json names: transformers 4 and 5 both load it (5: an alias of TokenizersBackend).
PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


class KarelTokenizerFast(PreTrainedTokenizerFast):
    """A `PreTrainedTokenizerFast` whose saved tokenizer_config.json names `PreTrainedTokenizerFast`,
    so that `AutoTokenizer.from_pretrained` loads it with any transformers from 4.x on."""

    def save_pretrained(self, save_directory, *args, **kwargs):
        files = super().save_pretrained(save_directory, *args, **kwargs)
        for name in files:
            if str(name).endswith(TOKENIZER_CONFIG_FILE):
                config = json.loads(Path(name).read_text(encoding="utf-8"))
                config["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
                atomic_write_json(name, config)
        return files


def build_tokenizer():
    """The karel_hf tokenizer, a `PreTrainedTokenizerFast` (`KarelTokenizerFast`; save it with `save_pretrained`)."""
    vocab = {token: i for i, token in enumerate(vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return KarelTokenizerFast(
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
    """Load a saved karel_hf tokenizer (as `KarelTokenizerFast`, so it saves portably again), with a clear
    error for a bad path."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise ValueError(
            f"no tokenizer at {path}: expected a folder with tokenizer.json, as written by "
            "`karel-hf tokenizer save DIR` or `karel-hf dataset export` (DIR/tokenizer)"
        )
    return KarelTokenizerFast.from_pretrained(str(path))


class FastEncoder:
    """Token ids straight from view-code arrays, bypassing text: one lookup per cell.

    Gives exactly `tokenizer(format_prompt(inputs, outputs))["input_ids"]` (a test checks it) at
    NumPy speed, for tokenising whole corpora. Built from a tokenizer, so ids always agree with it;
    the headers come from karel_hf.data.formatting, each grid row ends with a newline.
    """

    def __init__(self, tokenizer):
        vocab = tokenizer.get_vocab()
        self.bos = tokenizer.bos_token_id
        self.cell_space = np.array([vocab[w + " "] for w in CELL_WORDS], dtype=np.int32)
        self.cell_newline = np.array([vocab[w + "\n"] for w in CELL_WORDS], dtype=np.int32)
        self.vocab = vocab
        self.unk = tokenizer.unk_token_id

    def _word(self, piece: str) -> int:
        return self.vocab.get(piece, self.unk)

    def _column(self, n: int, text: str):
        """(n, pieces) int ids of a fixed text (a header of karel_hf.data.formatting), one row per sample."""
        return np.tile(np.array([self._word(p) for p in pieces(text)], dtype=np.int64), (n, 1))

    def encode_prompts(self, inputs, outputs):
        """(n, pairs, rows, cols) view codes -> (n, prompt_len) int32 ids, `<s>` first."""
        inputs, outputs = np.asarray(inputs), np.asarray(outputs)
        n, pairs, rows, cols = inputs.shape
        table = np.tile(self.cell_space, (cols, 1))  # (cols, codes)
        table[-1] = self.cell_newline

        def grid_ids(codes):  # (n, rows, cols) -> (n, rows*cols)
            return table[np.arange(cols)[None, None, :], codes.astype(np.intp)].reshape(n, rows * cols)

        parts = [np.full((n, 1), self.bos), self._column(n, EXAMPLES_HEADER)]
        for p in range(pairs):
            parts += [self._column(n, input_header(p)), grid_ids(inputs[:, p])]
            parts += [self._column(n, output_header(p)), grid_ids(outputs[:, p])]
        parts.append(self._column(n, CODE_HEADER))
        return np.concatenate(parts, axis=1).astype(np.int32)

    def encode_program(self, program_text: str) -> list[int]:
        return [self._word(p) for p in pieces(program_text)]
