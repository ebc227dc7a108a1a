"""A word-level tokenizer built from the DSL's own vocabulary: one token per grid cell, per
program line, per header; or, built with `cells_per_token=2`, one token per two neighbouring cells
of a grid row (the prompt in about half the tokens, the same text).

Pieces are cut by one regex (`PIECE_PATTERN`): a word with its indentation in front and the one
space or newline that follows it, e.g. `"__wall__ "`, `"__up__\\n"`, `"Input0\\n"`,
`"  move()\\n"`. Each piece is one vocabulary entry, so the text decodes by plain concatenation
(`decoders.Fuse`) and `decode(encode(text)) == text` for every text the formatter writes.

The vocabulary is not a hand-written list: it is every piece that occurs when the formatter renders
the grid cells, the headers, and every statement form of the printer at each indentation depth, up
to the limits of the text format that `karel_hf.data.formatting` enforces (`MAX_PROMPT_PAIRS` pairs,
blocks nested `MAX_SAMPLE_NESTING` deep, repeat counts up to `MAX_SAMPLE_REPEAT`): `format_sample`
and `format_prompt` refuse anything beyond them, so their output never encodes to `<unk>`. Other
text (a hand-made corpus, a program deeper than the format allows) can hold pieces outside the
vocabulary; `check_encodable` names the first one, and the training pipeline's encoders
(`FastEncoder`, `karel_hf.training.lm_dataset`) refuse such text instead of training on `<unk>`.

With `cells_per_token=2` a row's cells are cut left to right into pairs (`"__wall__ __up__ "`,
`"__space__ __wall__\\n"`; a row of odd width ends in one single cell): `PAIR_PIECE_PATTERN` goes first
in the pre-tokenizer, and the vocabulary adds every pair of cell words with either separator. The
text format is the paper's either way; the tokenizer says which it is by its vocabulary
(`cells_per_token(tokenizer)`), so a saved one loads back as it was and `FastEncoder` and
`karel_hf.modeling.prompt_layout` follow it. Programs encode the same in both.

Special tokens: `<s>` (bos, prepended by the post-processor, so a prompt is encoded as the model saw
samples start in training), `</s>` (eos, appended by the training pipeline after each sample;
decoding stops there), `<pad>` (padding only, never trained on), `<unk>`.

Saved tokenizers load with `AutoTokenizer` in every transformers that pyproject allows: transformers 5
writes its own class name (`TokenizersBackend`) into tokenizer_config.json, which transformers 4 does
not know, so the tokenizer is a `KarelTokenizerFast`, a `PreTrainedTokenizerFast` (the same class
in 5, an alias) that writes that name instead, wherever it is saved (the Trainer's checkpoints too).
"""

from __future__ import annotations

import itertools
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
    MAX_PROMPT_PAIRS,
    MAX_SAMPLE_NESTING,
    MAX_SAMPLE_REPEAT,
    PROGRAM_FOOTER,
    PROGRAM_HEADER,
    format_program,
    format_prompt,
    input_header,
    output_header,
)
from karel_hf.karel.program import ACTIONS, CONDITIONS, Action, Condition, If, Program, Repeat, While
from karel_hf.karel.world import CELL_WORDS, MARKER_CODE_OFFSET, ROBOT_CODE_OFFSET
from karel_hf.utils import atomic_write_json

PIECE_PATTERN = r" *[^ \n]+[ \n]?|\n| +"
PAIR_PIECE_PATTERN = r"__\w+__ __\w+__[ \n]?|" + PIECE_PATTERN  # two cell words, else a piece as above
CELLS_PER_TOKEN = (1, 2)
BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)


def _piece_pattern(cells_per_token: int) -> str:
    return PAIR_PIECE_PATTERN if cells_per_token == 2 else PIECE_PATTERN


def pieces(text: str, cells_per_token: int = 1) -> list[str]:
    return re.findall(_piece_pattern(cells_per_token), text)


def _pair_word(a: str, b: str, end: str) -> str:
    return f"{a} {b}{end}"


def _vocab_cells_per_token(vocab) -> int:
    return 2 if _pair_word(CELL_WORDS[0], CELL_WORDS[0], " ") in vocab else 1


def cells_per_token(tokenizer) -> int:
    """How many grid cells one token of `tokenizer` covers: 1, or 2 for `build_tokenizer(cells_per_token=2)`."""
    return _vocab_cells_per_token(tokenizer.get_vocab())


def check_encodable(text: str, vocab, what: str = "text") -> None:
    """Raise a ValueError naming the first piece of `text` that is not in `vocab` (a tokenizer's
    `get_vocab()`), i.e. that would encode to `<unk>`; `what` names the text in the message."""
    for piece in pieces(text, _vocab_cells_per_token(vocab)):
        if piece not in vocab or piece in SPECIAL_TOKENS:  # "<unk>" in a text is not the formatter's either
            raise ValueError(
                f"{what}: the piece {piece[:60]!r} is not in the tokenizer's vocabulary (it would encode to {UNK}); "
                "the vocabulary covers what karel_hf.data.formatting.format_sample writes (at most "
                f"{MAX_PROMPT_PAIRS} prompt pairs, blocks nested {MAX_SAMPLE_NESTING} deep, repeat counts up to "
                f"{MAX_SAMPLE_REPEAT})"
            )


def _statement_forms(depth: int):
    """One program per statement form, inside `depth` enclosing blocks (so its own blocks, if any,
    are nested depth + 1 deep)."""
    conditions = [Condition(c, neg) for c in CONDITIONS for neg in (False, True)]
    leaves = tuple(Action(a) for a in ACTIONS)
    forms = [leaves]
    for cond in conditions:
        forms += [(If(cond, leaves),), (If(cond, leaves, leaves),), (While(cond, leaves),)]
    forms += [(Repeat(n, leaves),) for n in range(MAX_SAMPLE_REPEAT + 1)]
    for body in forms:
        for _ in range(depth):
            body = (Repeat(2, body),)
        yield Program(body)


def _cell_grids() -> list[np.ndarray]:
    """2x2 grids, each with the one robot a prompt grid needs, that show every cell word both inside
    a row (then a space) and at the end of a row (then a newline)."""
    grids = []
    for code in range(len(CELL_WORDS)):
        if ROBOT_CODE_OFFSET <= code < MARKER_CODE_OFFSET:
            grids += [np.array([[code, 0], [0, 0]]), np.array([[0, code], [0, 0]])]
        else:
            grids.append(np.array([[code, code], [ROBOT_CODE_OFFSET, 0]]))
    return grids


@lru_cache(maxsize=2)
def vocabulary(cells_per_token: int = 1) -> tuple[str, ...]:
    """All pieces of formatted text, specials first; the order (and so every id) is deterministic.
    `cells_per_token=2` adds every pair of cell words (a space or a newline after the second)."""
    if cells_per_token not in CELLS_PER_TOKEN:
        raise ValueError(f"cells_per_token: expected 1 or 2, got {cells_per_token!r}")
    found: dict[str, None] = {}
    if cells_per_token == 2:
        for a, b, end in itertools.product(CELL_WORDS, CELL_WORDS, " \n"):
            found[_pair_word(a, b, end)] = None
    grids = _cell_grids()
    texts = [format_prompt(grids[i : i + MAX_PROMPT_PAIRS], grids[i : i + MAX_PROMPT_PAIRS])
             for i in range(0, len(grids), MAX_PROMPT_PAIRS)]
    texts += [format_prompt([grids[0]] * MAX_PROMPT_PAIRS, [grids[0]] * MAX_PROMPT_PAIRS)]  # every header
    texts += [format_program(p, "lines") for d in range(MAX_SAMPLE_NESTING) for p in _statement_forms(d)]
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


def build_tokenizer(cells_per_token: int = 1):
    """The karel_hf tokenizer, a `PreTrainedTokenizerFast` (`KarelTokenizerFast`; save it with `save_pretrained`):
    one token per grid cell, or per two neighbouring cells of a row with `cells_per_token=2`."""
    vocab = {token: i for i, token in enumerate(vocabulary(cells_per_token))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(_piece_pattern(cells_per_token)), behavior="isolated")
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
    """Token ids straight from view-code arrays, bypassing text: one lookup per cell (per pair of cells
    for a `cells_per_token=2` tokenizer).

    Gives exactly `tokenizer(format_prompt(inputs, outputs))["input_ids"]` (a test checks it) at
    NumPy speed, for tokenising whole corpora. Built from a tokenizer, so ids always agree with it;
    the headers come from karel_hf.data.formatting, each grid row ends with a newline.
    """

    def __init__(self, tokenizer):
        vocab = tokenizer.get_vocab()
        self.bos = tokenizer.bos_token_id
        self.cell_space = np.array([vocab[w + " "] for w in CELL_WORDS], dtype=np.int32)
        self.cell_newline = np.array([vocab[w + "\n"] for w in CELL_WORDS], dtype=np.int32)
        self.cells_per_token = _vocab_cells_per_token(vocab)
        if self.cells_per_token == 2:  # (first, second) codes -> the pair's id
            self.pair_space, self.pair_newline = (
                np.array([[vocab[_pair_word(a, b, end)] for b in CELL_WORDS] for a in CELL_WORDS], dtype=np.int32)
                for end in " \n")
        self.vocab = vocab
        self.unk = tokenizer.unk_token_id

    def _word(self, piece: str) -> int:
        found = self.vocab.get(piece)
        if found is None:
            check_encodable(piece, self.vocab, "FastEncoder")  # raises, naming the piece
        return found

    def _column(self, n: int, text: str):
        """(n, pieces) int ids of a fixed text (a header of karel_hf.data.formatting), one row per sample."""
        return np.tile(np.array([self._word(p) for p in pieces(text, self.cells_per_token)], dtype=np.int64), (n, 1))

    def encode_prompts(self, inputs, outputs):
        """(n, pairs, rows, cols) view codes -> (n, prompt_len) int32 ids, `<s>` first."""
        inputs, outputs = np.asarray(inputs), np.asarray(outputs)
        n, pairs, rows, cols = inputs.shape
        table = np.tile(self.cell_space, (cols, 1))  # (cols, codes)
        table[-1] = self.cell_newline

        def grid_ids(codes):  # (n, rows, cols) -> (n, tokens)
            codes = codes.astype(np.intp)
            if self.cells_per_token == 1:
                return table[np.arange(cols)[None, None, :], codes].reshape(n, rows * cols)
            paired = cols - cols % 2  # the row's pairs, then (odd width) its last cell alone
            first, second = codes[:, :, 0:paired:2], codes[:, :, 1:paired:2]
            ids = self.pair_space[first, second]
            if cols % 2:
                ids = np.concatenate([ids, self.cell_newline[codes[:, :, -1:]]], axis=2)
            else:
                ids[:, :, -1] = self.pair_newline[first[:, :, -1], second[:, :, -1]]
            return ids.reshape(n, -1)

        parts = [np.full((n, 1), self.bos), self._column(n, EXAMPLES_HEADER)]
        for p in range(pairs):
            parts += [self._column(n, input_header(p)), grid_ids(inputs[:, p])]
            parts += [self._column(n, output_header(p)), grid_ids(outputs[:, p])]
        parts.append(self._column(n, CODE_HEADER))
        return np.concatenate(parts, axis=1).astype(np.int32)

    def encode_program(self, program_text: str) -> list[int]:
        """The ids of a program text; a ValueError names a piece outside the vocabulary."""
        return [self._word(p) for p in pieces(program_text, self.cells_per_token)]
