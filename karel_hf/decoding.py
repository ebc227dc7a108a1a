"""Grammar-constrained greedy decoding through `model.generate`, with hidden-state capture.

Follows docs/protocol.md §5-6 (the authors' decoder): after a prompt ending in "Code:\\n" the
preamble `def run() {` is forced, then each step may emit any top-level action line or, once at
least one action exists, the closing `}`; after `}` only `</s>`; at `max_new_actions` actions `}`
is forced. `KarelGrammarProcessor` implements this as a `transformers.LogitsProcessor` that masks
disallowed tokens, so decoding is stock greedy `generate` (batched, left padding, any device).

With `extended=True` (models trained on the extended language) the processor runs a small
pushdown automaton over the tokenizer's pieces instead: `if`/`ifelse`/`repeat`/`while` headers
(`if(not ` takes a separate condition piece), `{\\n`, statements and closers at the indentation of
the open block, `else` right after an `ifelse` body, every block non-empty, and never a token
that makes finishing within `max_new_actions` actions / `max_new_tokens` tokens impossible.

Hidden-state capture (`capture=True`): the model state m_k of action k is the hidden state at the
position whose logits emitted action k, averaged over all n_layer + 1 hidden-state layers
(embedding output included). `generate(output_hidden_states=True)` already returns, for every
decoding step, the hidden states of the positions fed at that step; the last of them is exactly
the position whose logits chose the step's token. A causal model with a KV cache computes the same
values at that position as a full forward pass over prompt + tokens so far (the cache only
stores earlier positions' keys/values), so no second forward pass is needed: we keep the last
position of each step and pick the steps that emitted action tokens. The code-position state
(`code_states`) is the state at the last prompt position (the token "Code:\\n", whose logits emit
the first program token): it has seen the prompt and no program, the `code_position` control.

Teacher forcing (`teacher_force`): one forward pass per batch over prompt + a given program (e.g.
the reference), taking the same positions: for action k the position whose logits emit it (k = 1:
the last preamble token; k > 1: action k-1's token), and the last prompt position. When the given
program is what greedy decoding wrote, the states are the generated ones (tests check it).

    >>> out = decode(model, tokenizer, prompts, capture=True)          # doctest: +SKIP
    >>> out.programs[0], out.action_states[0].shape                    # doctest: +SKIP
    ('def run() {\\n  move()\\n}', (1, 256))
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from karel_hf.data.formatting import INDENT, PROGRAM_FOOTER, PROGRAM_HEADER, format_prompt
from karel_hf.karel.program import ACTIONS, CONDITIONS
from karel_hf.metrics.generation import compute_generation_accuracy
from karel_hf.tokenizer import pieces

PREAMBLE = tuple(pieces(PROGRAM_HEADER))  # ("def ", "run() ", "{\n"), forced after "Code:\n"
CLOSE_PROGRAM = PROGRAM_FOOTER
OPEN_BLOCK = "{\n"


@dataclass
class DecodeOutput:
    programs: list[str]  # generated program text, "def run() {" through "}" (lines layout)
    num_actions: list[int]  # action tokens emitted per example
    # per example (num_actions, hidden) float32: layer-mean hidden state at the position whose
    # logits emitted action k (None unless capture=True)
    action_states: list[np.ndarray] | None = None
    layer_states: dict[int, list[np.ndarray]] | None = None  # {layer: per example (num_actions, hidden)}
    # per example (hidden,) float32: layer-mean state at the last prompt position ("Code:\n")
    code_states: list[np.ndarray] | None = None
    code_layer_states: dict[int, list[np.ndarray]] | None = None  # {layer: per example (hidden,)}
    token_ids: list[list[int]] = field(default_factory=list)  # generated ids of the program (no eos/pad)
    tokens: list[list[str]] = field(default_factory=list)  # the same as tokenizer pieces
    action_token_index: list[list[int]] = field(default_factory=list)  # index in token_ids of action k


# ------------------------------------------------------------------------------- token classes
_ACTION_RE = re.compile(rf"^((?:{INDENT})*)({'|'.join(ACTIONS)})\(\)\n$")
_HEADER_RE = re.compile(rf"^((?:{INDENT})*)(if|ifelse|while)\((?:(not) |({'|'.join(CONDITIONS)})\(\)\) )$")
_REPEAT_RE = re.compile(rf"^((?:{INDENT})*)repeat\((\d+)\) $")
_ELSE_RE = re.compile(rf"^((?:{INDENT})*)else $")
_CLOSER_RE = re.compile(rf"^((?:{INDENT})*)}}\n$")
_CONDITION_RE = re.compile(rf"^({'|'.join(CONDITIONS)})\(\)\) $")


class KarelVocab:
    """The tokenizer's pieces sorted into grammar classes (depth = indentation / 2)."""

    def __init__(self, tokenizer):
        vocab = tokenizer.get_vocab()
        self.size = max(len(tokenizer), max(vocab.values()) + 1)
        self.eos_id = tokenizer.eos_token_id
        self.preamble_ids = [self._require(vocab, piece) for piece in PREAMBLE]
        self.close_program_id = self._require(vocab, CLOSE_PROGRAM)
        self.open_block_id = self._require(vocab, OPEN_BLOCK)
        self.actions: dict[int, list[int]] = {}  # depth -> ids
        self.headers: dict[int, list[tuple[int, str]]] = {}  # depth -> [(id, kind)], kind in if/ifelse/while/repeat
        self.header_needs_condition: set[int] = set()  # "if(not " etc.
        self.else_ids: dict[int, int] = {}
        self.closers: dict[int, int] = {}  # depth of the block being closed -> id ("}" for depth 1)
        self.condition_ids: list[int] = []
        self.closers[1] = self.close_program_id
        for piece, i in vocab.items():
            if m := _ACTION_RE.match(piece):
                self.actions.setdefault(len(m[1]) // 2, []).append(i)
            elif m := _HEADER_RE.match(piece):
                self.headers.setdefault(len(m[1]) // 2, []).append((i, m[2]))
                if m[3]:
                    self.header_needs_condition.add(i)
            elif m := _REPEAT_RE.match(piece):
                self.headers.setdefault(len(m[1]) // 2, []).append((i, "repeat"))
            elif m := _ELSE_RE.match(piece):
                self.else_ids[len(m[1]) // 2] = i
            elif m := _CLOSER_RE.match(piece):
                self.closers[len(m[1]) // 2 + 1] = i
            elif _CONDITION_RE.match(piece):
                self.condition_ids.append(i)
        if 1 not in self.actions:
            raise ValueError("the tokenizer has no top-level action pieces ('  move()\\n'); build it with karel_hf.tokenizer")
        for d in self.actions:
            self.actions[d].sort()
        self.action_ids = sorted(i for ids in self.actions.values() for i in ids)
        self.header_kind = {i: kind for hs in self.headers.values() for i, kind in hs}
        self.action_depth = {i: d for d, ids in self.actions.items() for i in ids}
        self.else_depth = {i: d for d, i in self.else_ids.items()}
        self.closer_depth = {i: d for d, i in self.closers.items()}
        self.header_depth = {i: d for d, hs in self.headers.items() for i, _ in hs}

    @staticmethod
    def _require(vocab, piece):
        if piece not in vocab:
            raise ValueError(f"the tokenizer has no piece {piece!r}; build it with karel_hf.tokenizer.build_tokenizer()")
        return vocab[piece]


# ------------------------------------------------------------------ extended-language automaton
# A state is (phase, stack, tokens, actions): phase in pre0/pre1/pre2/body/cond/open/else/eos/done;
# stack = tuple of open blocks (kind, non_empty), innermost last, len(stack) = depth of the
# statements it holds; tokens/actions = generated so far. `pending` kinds ride in the phase.
_START = (("pre", 0), (), 0, 0)


class _Automaton:
    """Pushdown automaton of the extended language over the tokenizer's pieces."""

    def __init__(self, kv: KarelVocab, max_actions: int, max_tokens: int):
        self.kv, self.max_actions, self.max_tokens = kv, max_actions, max_tokens
        self._allowed_cache: dict = {}

    def candidates(self, state) -> list[int]:
        kv = self.kv
        (phase, arg), stack, _, _ = state
        if phase == "pre":
            return [kv.preamble_ids[arg]]
        if phase == "body":
            depth = len(stack)
            out = list(kv.actions.get(depth, []))
            if depth + 1 in kv.actions and depth + 1 in kv.closers:
                out += [i for i, _ in kv.headers.get(depth, [])]
            if stack[-1][1]:
                out.append(kv.closers[depth])
            return out
        if phase == "cond":
            return kv.condition_ids
        if phase == "open":
            return [kv.open_block_id]
        if phase == "else":
            return [kv.else_ids[len(stack)]] if len(stack) in kv.else_ids else []
        return [kv.eos_id]  # eos, done

    def advance(self, state, token: int):
        kv = self.kv
        (phase, arg), stack, tokens, actions = state
        tokens += 1
        if phase == "pre":
            if arg + 1 < len(kv.preamble_ids):
                return (("pre", arg + 1), stack, tokens, actions)
            return (("body", None), (("run", False),), tokens, actions)  # "{\n" opens the run block
        if phase == "body":
            if token in kv.action_depth:
                return (("body", None), stack[:-1] + ((stack[-1][0], True),), tokens, actions + 1)
            if token in kv.header_kind:
                kind = kv.header_kind[token]
                nxt = ("cond", kind) if token in kv.header_needs_condition else ("open", kind)
                return (nxt, stack[:-1] + ((stack[-1][0], True),), tokens, actions)
            kind = stack[-1][0]  # a closer
            stack = stack[:-1]
            if not stack:
                return (("eos", None), stack, tokens, actions)
            return ((("else", None) if kind == "then" else ("body", None)), stack, tokens, actions)
        if phase == "cond":
            return (("open", arg), stack, tokens, actions)
        if phase == "else":
            return (("open", "else"), stack, tokens, actions)
        if phase == "open":
            kind = "then" if arg == "ifelse" else arg
            return (("body", None), stack + ((kind, False),), tokens, actions)
        return (("done", None), stack, tokens, actions)

    def finish_cost(self, state) -> tuple[int, int]:
        """(tokens, actions) of the shortest completion, eos included."""
        tokens0, actions0 = state[2], state[3]
        while state[0][0] != "done":
            phase = state[0][0]
            if phase == "body" and not state[1][-1][1]:
                token = self.kv.actions[len(state[1])][0]
            else:
                token = self.candidates(state)[-1]  # closer / forced piece / eos
            state = self.advance(state, token)
        return state[2] - tokens0, state[3] - actions0

    def allowed(self, state) -> list[int]:
        if state not in self._allowed_cache:
            ok = []
            for token in self.candidates(state):
                nxt = self.advance(state, token)
                need_tokens, need_actions = self.finish_cost(nxt)
                if nxt[2] + need_tokens <= self.max_tokens and nxt[3] + need_actions <= self.max_actions:
                    ok.append(token)
            self._allowed_cache[state] = ok or [self.kv.eos_id]
        return self._allowed_cache[state]


# ------------------------------------------------------------------------------ the processor
class KarelGrammarProcessor(LogitsProcessor):
    """Masks every token the Karel grammar does not allow next (scores -> -inf).

    `prompt_length` is the (left-padded) prompt width, so row i's generated tokens are
    `input_ids[i, prompt_length:]`. The straight-line grammar is stateless and vectorised (it is
    recomputed from the generated tokens at every step, on the scores' device); the extended
    grammar keeps one automaton state per row and advances it by the last token.
    """

    def __init__(self, tokenizer, prompt_length: int, *, max_new_actions: int = 14, extended: bool = False, max_new_tokens: int | None = None):
        if max_new_actions < 1:
            raise ValueError(f"max_new_actions must be >= 1, got {max_new_actions}")
        self.kv = KarelVocab(tokenizer)
        self.prompt_length = prompt_length
        self.max_new_actions = max_new_actions
        self.extended = extended
        self.max_new_tokens = max_new_tokens or default_max_new_tokens(max_new_actions, extended)
        if self.max_new_tokens < max_new_actions_min_tokens():
            raise ValueError(f"max_new_tokens must be >= {max_new_actions_min_tokens()}, got {self.max_new_tokens}")
        if extended:
            self.automaton = _Automaton(self.kv, max_new_actions, self.max_new_tokens)
            self._states: list | None = None
        else:
            kv, v = self.kv, self.kv.size
            table = torch.zeros(6, v, dtype=torch.bool)  # rows: preamble 0..2, actions+close, actions, close, eos
            for step, i in enumerate(kv.preamble_ids):
                table[step, i] = True
            top = kv.actions[1]
            table[3, top] = True
            table[3, kv.close_program_id] = True
            table[4, top] = True
            table[5, kv.close_program_id] = True
            eos_row = torch.zeros(v, dtype=torch.bool)
            eos_row[kv.eos_id] = True
            self._table = torch.cat([table, eos_row[None]])  # (7, vocab): row 6 = eos
            self._action_ids = torch.tensor(top)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length :]  # (batch, steps)
        if self.extended:
            allowed = self._extended_mask(generated, scores.shape[-1])
        else:
            allowed = self._straight_mask(generated)
        allowed = allowed.to(scores.device)[:, : scores.shape[-1]]
        if allowed.shape[-1] < scores.shape[-1]:  # model vocabulary larger than the tokenizer's
            allowed = torch.nn.functional.pad(allowed, (0, scores.shape[-1] - allowed.shape[-1]))
        return scores.masked_fill(~allowed, float("-inf"))

    def _straight_mask(self, generated):
        steps = generated.shape[1]
        table = self._table.to(generated.device)
        if steps < 3:
            return table[steps].expand(generated.shape[0], -1)
        n_actions = torch.isin(generated, self._action_ids.to(generated.device)).sum(1)  # (batch,)
        closed = (generated == self.kv.close_program_id).any(1)
        row = torch.where(n_actions == 0, 4, torch.where(n_actions >= self.max_new_actions, 5, 3))
        row = torch.where(closed, 6, row)
        return table[row]  # (batch, vocab)

    def _extended_mask(self, generated, vocab_size):
        batch, steps = generated.shape
        if steps == 0 or self._states is None:
            self._states = [_START] * batch
        else:
            last = generated[:, -1].tolist()
            self._states = [
                self.automaton.advance(s, t) if s[0][0] != "done" and t in self.automaton.candidates(s) else s
                for s, t in zip(self._states, last)
            ]
        mask = torch.zeros(batch, max(vocab_size, self.kv.size), dtype=torch.bool)
        for row, state in enumerate(self._states):
            mask[row, self.automaton.allowed(state)] = True
        return mask


def max_new_actions_min_tokens() -> int:
    return len(PREAMBLE) + 3  # preamble, one action, "}", eos


def default_max_new_tokens(max_new_actions: int, extended: bool = False) -> int:
    """Straight-line: preamble + actions + "}" + eos. Extended: room for ~3 extra pieces per action."""
    return len(PREAMBLE) + (4 if extended else 1) * max_new_actions + 2


# ---------------------------------------------------------------------------------- decoding
def _pieces(tokenizer, ids: list[int]) -> list[str]:
    return tokenizer.convert_ids_to_tokens(ids)


@torch.no_grad()
def decode(
    model,
    tokenizer,
    prompts: list[str],
    *,
    batch_size: int = 32,
    constrained: bool = True,
    max_new_actions: int = 14,
    capture: bool = False,
    layers: tuple[int, ...] = (),
    extended: bool = False,
    progress: bool = True,
    max_new_tokens: int | None = None,
) -> DecodeOutput:
    """Greedy decoding of a program for each prompt (each ending with "Code:\\n").

    `constrained=False` runs plain greedy `generate` with the same token budget (the text is then
    whatever the model wrote before `</s>`). `capture=True` fills `action_states` (layer mean) and,
    for each index in `layers` (0 = embedding output, n_layer = last; negatives count from the
    end), `layer_states`. The model is put in eval mode for the call and restored afterwards.

    transformers may log once "We strongly recommend passing in an `attention_mask`": when no
    prompt of a batch is padded, `generate` drops the all-ones mask and finished rows are then fed
    `<pad>`; their outputs are discarded, so it is harmless.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, got one string")
    kv = KarelVocab(tokenizer)
    budget = max_new_tokens or default_max_new_tokens(max_new_actions, extended)
    layer_index = _layer_index(model, layers)
    action_set = torch.tensor(kv.action_ids)
    stop_ids = {kv.eos_id, tokenizer.pad_token_id}

    out = DecodeOutput(programs=[], num_actions=[], action_states=[] if capture else None,
                       layer_states={l: [] for l in layers} if capture and layers else None,
                       code_states=[] if capture else None,
                       code_layer_states={l: [] for l in layers} if capture and layers else None)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, desc="decoding", unit="batch", disable=not progress):
            batch = list(prompts[start : start + batch_size])
            enc = tokenizer(batch, return_tensors="pt", padding=True, padding_side="left").to(device)
            prompt_length = enc["input_ids"].shape[1]
            processors = LogitsProcessorList()
            if constrained:
                processors.append(
                    KarelGrammarProcessor(tokenizer, prompt_length, max_new_actions=max_new_actions, extended=extended, max_new_tokens=budget)
                )
            gen = model.generate(
                **enc,
                max_new_tokens=budget,
                do_sample=False,
                num_beams=1,
                logits_processor=processors,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                output_hidden_states=capture,
                return_dict_in_generate=True,
            )
            new_ids = gen.sequences[:, prompt_length:].cpu()  # (batch, steps)
            if capture:
                # step t's hidden states: n_hidden tensors (batch, positions fed at t, hidden);
                # the last position is the one whose logits chose token t.
                last = torch.stack([torch.stack([h[:, -1, :] for h in step]) for step in gen.hidden_states])
                last = last.float().cpu()  # (steps, n_hidden, batch, hidden)
                mean = last.mean(1)  # (steps, batch, hidden)
            for row in range(len(batch)):
                ids = new_ids[row].tolist()
                end = next((k for k, t in enumerate(ids) if t in stop_ids), len(ids))
                ids = ids[:end]
                is_action = torch.isin(torch.tensor(ids, dtype=torch.long), action_set) if ids else torch.zeros(0, dtype=torch.bool)
                where = torch.nonzero(is_action).flatten()  # step index of each action token
                pieces = _pieces(tokenizer, ids)
                out.programs.append("".join(pieces))
                out.num_actions.append(int(where.numel()))
                out.token_ids.append(ids)
                out.tokens.append(pieces)
                out.action_token_index.append(where.tolist())
                if capture:
                    out.action_states.append(mean[where, row].numpy().copy())
                    out.code_states.append(mean[0, row].numpy().copy())  # step 0's last position = "Code:\n"
                    for l, li in layer_index.items():
                        out.layer_states[l].append(last[where, li, row].numpy().copy())
                        out.code_layer_states[l].append(last[0, li, row].numpy().copy())
    finally:
        model.train(was_training)
    return out


def _layer_index(model, layers) -> dict[int, int]:
    n_hidden = model.config.num_hidden_layers + 1
    for l in layers:
        if not -n_hidden <= l < n_hidden:
            raise ValueError(f"layer {l} out of range: the model has {n_hidden} hidden-state layers (0 = embeddings)")
    return {l: l % n_hidden for l in layers}


@torch.no_grad()
def teacher_force(
    model,
    tokenizer,
    prompts: list[str],
    programs: list[str],
    *,
    batch_size: int = 32,
    layers: tuple[int, ...] = (),
    progress: bool = False,
) -> DecodeOutput:
    """The states of `model` reading each prompt followed by the given program (teacher forcing).

    `programs` are program texts in the training layout (`format_program(p, "lines")`, e.g. a
    split's `program` column); prompt i + program i is tokenized as one text and run in ONE forward
    pass per batch (right padding, `output_hidden_states=True`). Returns a `DecodeOutput` like
    `decode(..., capture=True)`: `action_states[i]` (n_i, hidden) at the positions whose logits emit
    each action token (action 1: the last preamble token; action k > 1: action k-1's token),
    `code_states[i]` at the last prompt position, and per requested layer `layer_states` /
    `code_layer_states`. The model is put in eval mode for the call and restored afterwards.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(prompts, str) or isinstance(programs, str):
        raise TypeError("prompts and programs must be lists of strings, got one string")
    if len(prompts) != len(programs):
        raise ValueError(f"need one program per prompt, got {len(prompts)} prompts and {len(programs)} programs")
    kv = KarelVocab(tokenizer)
    layer_index = _layer_index(model, layers)
    action_set = set(kv.action_ids)
    encoded = []
    for prompt, program in zip(prompts, programs):
        prompt_ids = tokenizer(prompt)["input_ids"]
        ids = tokenizer(prompt + program)["input_ids"]
        if ids[: len(prompt_ids)] != prompt_ids:
            raise ValueError("the tokenizer does not split prompt + program at 'Code:\\n'; cannot locate the program tokens")
        encoded.append((ids, len(prompt_ids)))
    out = DecodeOutput(programs=list(programs), num_actions=[], action_states=[], code_states=[],
                       layer_states={l: [] for l in layers} if layers else None,
                       code_layer_states={l: [] for l in layers} if layers else None)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in tqdm(range(0, len(encoded), batch_size), desc="teacher forcing", unit="batch", disable=not progress):
            chunk = encoded[start : start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)  # (batch, seq), right-padded
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (ids, _) in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
            result = model(input_ids=input_ids.to(device), attention_mask=attention.to(device), output_hidden_states=True)
            hidden = torch.stack(result.hidden_states).float().cpu()  # (n_hidden, batch, seq, hidden)
            mean = hidden.mean(0)  # (batch, seq, hidden)
            for row, (ids, cut) in enumerate(chunk):
                program_ids = ids[cut:]
                where = [t for t, token in enumerate(program_ids) if token in action_set]
                emit = torch.tensor([cut + t - 1 for t in where], dtype=torch.long)  # position whose logits emit action k
                out.num_actions.append(len(where))
                out.token_ids.append(program_ids)
                out.tokens.append(_pieces(tokenizer, program_ids))
                out.action_token_index.append(where)
                out.action_states.append(mean[row, emit].numpy().copy())
                out.code_states.append(mean[row, cut - 1].numpy().copy())
                for l, li in layer_index.items():
                    out.layer_states[l].append(hidden[li, row, emit].numpy().copy())
                    out.code_layer_states[l].append(hidden[li, row, cut - 1].numpy().copy())
    finally:
        model.train(was_training)
    return out


def prompts_from_rows(rows, num_prompt_pairs: int = 5) -> list[str]:
    """The prompt of each dataset row (dict with "inputs"/"outputs" view codes): its first pairs."""
    prompts = []
    for row in rows:
        inputs, outputs = np.asarray(row["inputs"]), np.asarray(row["outputs"])
        if inputs.shape[0] < num_prompt_pairs:
            raise ValueError(f"a row has {inputs.shape[0]} pairs, fewer than num_prompt_pairs={num_prompt_pairs}")
        prompts.append(format_prompt(inputs[:num_prompt_pairs], outputs[:num_prompt_pairs]))
    return prompts


def evaluate_generation(
    model,
    tokenizer,
    rows,
    *,
    batch_size: int = 32,
    max_new_actions: int = 14,
    num_prompt_pairs: int = 5,
    extended: bool = False,
    progress: bool = False,
) -> dict:
    """Generation accuracy (docs/protocol.md §5) of `model` on dataset rows, as flat floats.

    Decodes (constrained, greedy) the prompt of each row and scores the programs with
    `karel_hf.metrics.generation.compute_generation_accuracy` (keys: accuracy,
    accuracy_all_pairs, parse_rate, mean_generated_length, num_examples, accuracy_length_<n>).
    """
    rows = list(rows)
    prompts = prompts_from_rows(rows, num_prompt_pairs)
    decoded = decode(model, tokenizer, prompts, batch_size=batch_size, max_new_actions=max_new_actions, extended=extended, progress=progress)
    return compute_generation_accuracy(decoded.programs, rows, num_spec_pairs=num_prompt_pairs)
