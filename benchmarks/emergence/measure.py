"""Teacher-forced semantic probing and generation accuracy of one saved checkpoint (issue 16 prototype).

    python benchmarks/emergence/measure.py RUN/checkpoint-4000 --corpus corpus.json [--out m.json]

What is measured (all rows identical at every checkpoint, the untrained one included):

- Reference programs from the corpus (probe training: the first `probe_train` training-split specs
  with >= 2 actions; probe test: the first `probe_test` test-split specs) are forced through the model
  after their prompt in one forward pass (`output_hidden_states=True`).
- m_k = hidden state at the position whose logits emit action k ("{\\n" for k = 1, action k-1's token
  otherwise), averaged over all hidden-state layers (embeddings included), or one layer.
- Label: the robot's direction in input 0 in state s_j (after actions 1..j). Offset o pairs m_k with
  s_{k+o}; a row is kept only when 1 <= k+o <= n-1 (neither the input nor the output state, which the
  prompt prints).
- Prompt facts of a row: one-hot initial direction, output direction, k and n.
- Probes: linear (standardised logistic regression) and MLP (one hidden layer), trained on the
  training-split rows, scored on the test-split rows.
- Per offset: semantic content probe(m); controls initial glyph, output glyph, prompt_only
  probe(facts), facts_table (majority label per fact combination), code_position probe(state at
  "Code:\\n"), shuffled labels; conditional gain probe([m, facts]) - probe(facts) with a 95%
  bootstrap interval over test specs; accuracy on unobserved rows (label differs from both glyphs);
  intervention: the same rows relabelled under each alternative semantics (authors' maps idx 0, 3,
  5, 8, 11, the repo's cycle1/cycle2), a fresh probe each.
- Generation accuracy: grammar-constrained greedy decoding of the first `gen_specs` test specs,
  against the constant program put_marker().
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ACTIONS = ("move", "turn_left", "turn_right", "put_marker", "pick_marker")
MOVE, LEFT, RIGHT, PUT, PICK = range(5)
# Direction change (N=0, E=1, S=2, W=3; clockwise) of executing each action.
DELTA = np.array([0, 3, 1, 0, 0])
# Alternative semantics as "action i is executed as MAP[i]" (order = ACTIONS). The authors' maps
# (PROTOCOL.md section 6b) and the repo's cyclic ones (karel_hf/karel/semantics.py).
SEMANTICS = {
    "original": (MOVE, LEFT, RIGHT, PUT, PICK),
    "idx0": (MOVE, RIGHT, LEFT, PICK, PUT),  # pick<->put, turn_right<->turn_left
    "idx3": (LEFT, RIGHT, MOVE, LEFT, RIGHT),  # pick->R, put->L, R->move, L->R, move->L
    "idx5": (LEFT, RIGHT, MOVE, PICK, PUT),  # pick<->put, R->move, L->R, move->L
    "idx8": (LEFT, MOVE, RIGHT, PICK, PUT),  # pick<->put, R fixed, L<->move
    "idx11": (RIGHT, MOVE, LEFT, PICK, PUT),  # pick<->put, R->L, L->move, move->R
    "cycle1": (LEFT, RIGHT, PUT, PICK, MOVE),
    "cycle2": (RIGHT, PUT, PICK, MOVE, LEFT),
}
AUTHORS_MAPS = ("idx0", "idx3", "idx5", "idx8", "idx11")
OFFSETS = (-2, -1, 0, 1, 2)


# ------------------------------------------------------------------------------------ specs
@dataclass
class Specs:
    """Reference programs with their prompts (one entry per spec)."""

    prompts: list  # prompt texts ending with "Code:\n"
    actions: list  # (n,) int arrays of action codes
    init_dir: np.ndarray  # (S,) direction of the robot in input 0
    out_dir: np.ndarray  # (S,) direction in output 0
    rows: list = field(default_factory=list)  # the dataset rows (for generation accuracy)

    def __len__(self):
        return len(self.prompts)


def program_actions(text: str) -> np.ndarray:
    """Action codes of a straight-line program text in the lines layout."""
    names = [line.strip()[:-2] for line in text.splitlines() if line.strip().endswith("()")]
    return np.array([ACTIONS.index(n) for n in names], dtype=np.int64)


def robot_direction(codes) -> int:
    codes = np.asarray(codes)
    robot = codes[(codes >= 2) & (codes < 6)]
    assert robot.size == 1, "a grid must show one robot"
    return int(robot[0]) - 2


def specs_from_rows(rows, num_prompt_pairs: int, min_length: int = 1) -> Specs:
    from karel_hf.data.formatting import format_prompt

    keep = [r for r in rows if r["length"] >= min_length]
    prompts, actions, init, out = [], [], [], []
    for r in keep:
        inputs, outputs = np.asarray(r["inputs"]), np.asarray(r["outputs"])
        prompts.append(format_prompt(inputs[:num_prompt_pairs], outputs[:num_prompt_pairs]))
        actions.append(program_actions(r["program"]))
        init.append(robot_direction(inputs[0]))
        out.append(robot_direction(outputs[0]))
    return Specs(prompts, actions, np.array(init), np.array(out), keep)


def load_specs(corpus: dict, split: str, n: int, min_length: int = 1, cache_dir: str | None = None) -> Specs:
    """The first specs of a split with >= min_length actions; `corpus` = {"config": name, **overrides}."""
    from karel_hf.data.builder import load_karel

    corpus = dict(corpus)
    name = corpus.pop("config", "cpu")
    ds = load_karel(name, split=split, cache_dir=cache_dir, **corpus)
    ds = ds.select_columns(["program", "length", "inputs", "outputs"])
    if min_length > 1:
        lengths = np.asarray(ds["length"])
        ds = ds.select(np.flatnonzero(lengths >= min_length)[:n].tolist())
    else:
        ds = ds.select(range(min(n, len(ds))))
    from karel_hf.data.builder import get_config

    pairs = get_config(name, **corpus).num_prompt_pairs
    return specs_from_rows(list(ds), pairs, min_length)


# -------------------------------------------------------------------------------- labels, rows
def directions(actions: np.ndarray, init: int, semantics: str = "original") -> np.ndarray:
    """(n+1,) direction in s_0..s_n when `actions` run under `semantics`."""
    mapped = np.asarray(SEMANTICS[semantics])[actions]
    return (init + np.concatenate([[0], np.cumsum(DELTA[mapped])])) % 4


@dataclass
class Rows:
    """Probe rows of one offset: spec index, k (1-based action index), j = k + offset, labels."""

    spec: np.ndarray
    k: np.ndarray
    j: np.ndarray
    n: np.ndarray
    labels: dict  # semantics -> (rows,) direction in s_j
    init: np.ndarray
    out: np.ndarray


def build_rows(specs: Specs, offset: int, semantics=tuple(SEMANTICS)) -> Rows:
    spec, ks, js, ns, init, out = [], [], [], [], [], []
    labels = {s: [] for s in semantics}
    for i, acts in enumerate(specs.actions):
        n = len(acts)
        traj = {s: directions(acts, specs.init_dir[i], s) for s in semantics}
        for k in range(1, n + 1):
            j = k + offset
            if 1 <= j <= n - 1:
                spec.append(i), ks.append(k), js.append(j), ns.append(n)
                init.append(specs.init_dir[i]), out.append(specs.out_dir[i])
                for s in semantics:
                    labels[s].append(traj[s][j])
    arr = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    return Rows(arr(spec), arr(ks), arr(js), arr(ns), {s: arr(v) for s, v in labels.items()}, arr(init), arr(out))


def fact_features(rows: Rows, max_length: int, joint: bool = False) -> np.ndarray:
    """Prompt facts of each row as one-hot features.

    joint=False: one-hot initial direction, output direction, k and n, side by side (8 + 2L columns).
    joint=True: one column per combination (initial, output, k, n) (16 L^2 columns), so a linear probe
    on them is as strong as a lookup table of the facts (the best classifier of the facts alone).
    """
    m = len(rows.k)
    r = np.arange(m)
    if joint:
        out = np.zeros((m, 16 * max_length * max_length), dtype=np.float32)
        out[r, ((rows.init * 4 + rows.out) * max_length + rows.k - 1) * max_length + rows.n - 1] = 1
        return out
    out = np.zeros((m, 8 + 2 * max_length), dtype=np.float32)
    out[r, rows.init] = 1
    out[r, 4 + rows.out] = 1
    out[r, 8 + rows.k - 1] = 1
    out[r, 8 + max_length + rows.n - 1] = 1
    return out


def fact_keys(rows: Rows) -> np.ndarray:
    return ((rows.init * 4 + rows.out) * 128 + rows.k) * 128 + rows.n


def relative_labels(rows: Rows, semantics: str = "original") -> np.ndarray:
    """Direction relative to the initial one (net rotation of the prefix), 0..3."""
    return (rows.labels[semantics] - rows.init) % 4


# ------------------------------------------------------------------------------ hidden states
def teacher_forced_ids(tokenizer, prompt: str, actions) -> tuple[list, list]:
    """(token ids of prompt + "def run() {" + the actions, position emitting each action k = 1..n)."""
    from karel_hf.decoding import KarelVocab

    vocab = tokenizer.get_vocab()
    prompt_ids = tokenizer(prompt)["input_ids"]
    preamble = KarelVocab(tokenizer).preamble_ids
    ids = prompt_ids + preamble + [vocab[f"  {ACTIONS[a]}()\n"] for a in actions]
    first = len(prompt_ids) + len(preamble) - 1  # "{\n" emits action 1
    return ids, [first + k for k in range(len(actions))]


def forward_states(model, tokenizer, specs: Specs, batch_size: int = 128):
    """Teacher-forced hidden states of every spec: (code_state (S, L, H), action_states list of (n, L, H)).

    L = n_layer + 1 hidden-state layers (0 = embeddings). action_states[i][k-1] is taken at the
    position whose logits emit action k.
    """
    import torch

    model.eval()
    code_states, action_states = [], []
    with torch.no_grad():
        for lo in range(0, len(specs), batch_size):
            idx = range(lo, min(lo + batch_size, len(specs)))
            built = [teacher_forced_ids(tokenizer, specs.prompts[i], specs.actions[i]) for i in idx]
            width = max(len(ids) for ids, _ in built)
            ids = torch.full((len(built), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(built), width), dtype=torch.long)
            for r, (seq, _) in enumerate(built):
                ids[r, : len(seq)] = torch.tensor(seq)
                mask[r, : len(seq)] = 1
            hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            hidden = torch.stack(hidden, dim=2).float().numpy()  # (batch, seq, L, H)
            for r, (_, emit) in enumerate(built):
                code_states.append(hidden[r, emit[0] - 3])  # "Code:\n": the last prompt token
                action_states.append(hidden[r, emit].copy())
    return np.stack(code_states), action_states


def row_states(action_states, code_states, rows: Rows, layer="mean"):
    """(rows, H) m_k and the code-position state for each row; layer = 'mean' or an int."""
    pick = (lambda a: a.mean(axis=-2)) if layer == "mean" else (lambda a: a[..., layer, :])
    m = np.stack([pick(action_states[s][k - 1]) for s, k in zip(rows.spec, rows.k)]) if len(rows.k) else None
    c = pick(code_states[rows.spec]) if len(rows.k) else None
    return m, c


# ------------------------------------------------------------------------------------ probes
def fit_predict(x_train, y_train, x_test, kind: str = "linear", seed: int = 0):
    """Predictions of a probe (standardised features) trained on (x_train, y_train)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y_train)) < 2:
        return np.full(len(x_test), y_train[0])
    if kind == "linear":
        clf = LogisticRegression(max_iter=2000, tol=1e-3, C=1.0)
    elif kind == "mlp":
        clf = MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, max_iter=300, early_stopping=True,
                            n_iter_no_change=10, random_state=seed)
    else:
        raise ValueError(kind)
    model = make_pipeline(StandardScaler(), clf)
    model.fit(x_train, y_train)
    return model.predict(x_test)


def table_predict(keys_train, y_train, keys_test, fallback_pred):
    """Majority label per prompt-fact combination (the fallback where a combination is unseen)."""
    best = {}
    for key in np.unique(keys_train):
        best[key] = np.bincount(y_train[keys_train == key], minlength=4).argmax()
    return np.array([best.get(k, f) for k, f in zip(keys_test, fallback_pred)])


def bootstrap_interval(correct_a, correct_b, spec, num: int = 1000, seed: int = 0):
    """95% interval of mean(correct_a) - mean(correct_b), resampling test specs."""
    rng = np.random.default_rng(seed)
    specs, inverse = np.unique(spec, return_inverse=True)
    per_a = np.bincount(inverse, weights=correct_a, minlength=len(specs))
    per_b = np.bincount(inverse, weights=correct_b, minlength=len(specs))
    count = np.bincount(inverse, minlength=len(specs))
    draws = rng.integers(0, len(specs), size=(num, len(specs)))
    w = np.apply_along_axis(np.bincount, 1, draws, minlength=len(specs))  # (num, S) multiplicities
    diff = (w @ per_a - w @ per_b) / (w @ count)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return float(lo), float(hi)


def accuracy(pred, y) -> float:
    return float(np.mean(pred == y)) if len(y) else float("nan")


def probe_offset(train, test, offset: int, max_length: int, kinds=("linear",), layers=("mean",),
                 semantics=("original",) + AUTHORS_MAPS, label: str = "absolute", controls: bool = True,
                 seed: int = 0) -> dict:
    """All numbers of one offset. train/test = (specs, code_states, action_states).

    label "absolute": direction in input 0; "relative": direction relative to the initial one (net
    rotation of the program prefix). The headline conditional gain is probe([m, joint facts]) minus
    probe(joint facts) (`fact_features(joint=True)`); `conditional_gain_sep` uses the side-by-side
    one-hot facts instead.
    """
    (tr_specs, tr_code, tr_act), (te_specs, te_code, te_act) = train, test
    rtr, rte = build_rows(tr_specs, offset, semantics), build_rows(te_specs, offset, semantics)
    out = {"offset": offset, "label": label, "num_train": int(len(rtr.k)), "num_test": int(len(rte.k)),
           "num_test_specs": int(len(np.unique(rte.spec)))}
    if len(rtr.k) < 20 or len(rte.k) < 20:
        out["skipped"] = "too few rows"
        return out
    lab = (lambda r, s: r.labels[s]) if label == "absolute" else relative_labels
    ytr, yte = lab(rtr, "original"), lab(rte, "original")
    ftr, fte = fact_features(rtr, max_length), fact_features(rte, max_length)
    jtr, jte = fact_features(rtr, max_length, True), fact_features(rte, max_length, True)
    orig_te = rte.labels["original"]
    unobserved = (orig_te != rte.init) & (orig_te != rte.out)
    glyph = (lambda d: d) if label == "absolute" else (lambda d: (d - rte.init) % 4)
    out["controls"] = {
        "initial_glyph": accuracy(glyph(rte.init), yte),
        "output_glyph": accuracy(glyph(rte.out), yte),
        "majority": accuracy(np.full(len(yte), np.bincount(ytr, minlength=4).argmax()), yte),
        "facts_table": accuracy(table_predict(fact_keys(rtr), ytr, fact_keys(rte), glyph(rte.init)), yte),
    }
    out["unobserved_fraction"] = float(unobserved.mean())
    rng = np.random.default_rng(seed)
    for kind in kinds:
        joint_pred = fit_predict(jtr, ytr, jte, kind, seed)
        sep_pred = fit_predict(ftr, ytr, fte, kind, seed)
        out["controls"][f"prompt_only_{kind}"] = accuracy(joint_pred, yte)
        out["controls"][f"prompt_only_sep_{kind}"] = accuracy(sep_pred, yte)
        for layer in layers:
            mtr, ctr = row_states(tr_act, tr_code, rtr, layer)
            mte, cte = row_states(te_act, te_code, rte, layer)
            res = {}
            pred_m = fit_predict(mtr, ytr, mte, kind, seed)
            pred_mj = fit_predict(np.hstack([mtr, jtr]), ytr, np.hstack([mte, jte]), kind, seed)
            res["semantic_content"] = accuracy(pred_m, yte)
            res["prompt_only"] = accuracy(joint_pred, yte)
            res["with_facts"] = accuracy(pred_mj, yte)
            a, b = (pred_mj == yte).astype(float), (joint_pred == yte).astype(float)
            res["conditional_gain"] = float(a.mean() - b.mean())
            res["conditional_gain_ci"] = bootstrap_interval(a, b, rte.spec, seed=seed)
            res["unobserved"] = accuracy(pred_m[unobserved], yte[unobserved])
            res["unobserved_with_facts"] = accuracy(pred_mj[unobserved], yte[unobserved])
            res["unobserved_prompt_only"] = accuracy(joint_pred[unobserved], yte[unobserved])
            if controls and layer == "mean":
                pred_ms = fit_predict(np.hstack([mtr, ftr]), ytr, np.hstack([mte, fte]), kind, seed)
                a2, b2 = (pred_ms == yte).astype(float), (sep_pred == yte).astype(float)
                res["conditional_gain_sep"] = float(a2.mean() - b2.mean())
                res["conditional_gain_sep_ci"] = bootstrap_interval(a2, b2, rte.spec, seed=seed)
                res["code_position"] = accuracy(fit_predict(ctr, ytr, cte, kind, seed), yte)
                pred_cj = fit_predict(np.hstack([ctr, jtr]), ytr, np.hstack([cte, jte]), kind, seed)
                res["code_position_with_facts"] = accuracy(pred_cj, yte)
                res["conditional_gain_vs_code_position"] = float(a.mean() - np.mean(pred_cj == yte))
                res["shuffled"] = accuracy(fit_predict(mtr, rng.permutation(ytr), mte, kind, seed), yte)
            alt = {}
            for s in semantics if layer == "mean" else ():
                if s == "original":
                    continue
                ys_tr, ys_te = lab(rtr, s), lab(rte, s)
                sc = accuracy(fit_predict(mtr, ys_tr, mte, kind, seed), ys_te)
                wf = accuracy(fit_predict(np.hstack([mtr, jtr]), ys_tr, np.hstack([mte, jte]), kind, seed), ys_te)
                po = accuracy(fit_predict(jtr, ys_tr, jte, kind, seed), ys_te)
                alt[s] = {"semantic_content": sc, "with_facts": wf, "prompt_only": po, "conditional_gain": wf - po}
            res["alternatives"] = alt
            authors = [s for s in AUTHORS_MAPS if s in alt]
            if authors:
                best = max(authors, key=lambda s: alt[s]["semantic_content"])
                res["best_alternative"] = best
                res["original_minus_best_alternative"] = res["semantic_content"] - alt[best]["semantic_content"]
                best_g = max(authors, key=lambda s: alt[s]["conditional_gain"])
                res["best_alternative_gain"] = best_g
                res["gain_minus_best_alternative_gain"] = res["conditional_gain"] - alt[best_g]["conditional_gain"]
            out[f"{kind}/{layer}"] = res
    return out


# -------------------------------------------------------------------------------- generation
def generation(model, tokenizer, specs: Specs, num_prompt_pairs: int, batch_size: int = 64) -> dict:
    from karel_hf.decoding import evaluate_generation
    from karel_hf.metrics.generation import constant_program_baseline

    res = evaluate_generation(model, tokenizer, specs.rows, batch_size=batch_size, num_prompt_pairs=num_prompt_pairs,
                              max_new_actions=14)
    floor = constant_program_baseline(specs.rows, num_spec_pairs=num_prompt_pairs)
    best_name, best = best_constant_program(specs.rows, num_prompt_pairs)
    return {"accuracy": res["accuracy"], "accuracy_all_pairs": res["accuracy_all_pairs"],
            "mean_generated_length": res["mean_generated_length"], "floor": floor["accuracy"],
            "floor_all_pairs": floor["accuracy_all_pairs"], "best_constant": best, "best_constant_program": best_name,
            "num_examples": res["num_examples"],
            "by_length": {k: v for k, v in res.items() if k.startswith("accuracy_length_")}}


CONSTANT_PROGRAMS = [["put_marker"], ["turn_left"], ["turn_right"], ["turn_left", "turn_left"]] + [
    ["move"] * k for k in range(1, 15)]


def best_constant_program(rows, num_prompt_pairs: int):
    """The best of a few constant programs (put_marker, turns, move x 1..14) on these specs: a floor that
    the untrained model's "14 moves" babbling also reaches."""
    from karel_hf.metrics.generation import compute_generation_accuracy

    best = ("", -1.0)
    for prog in CONSTANT_PROGRAMS:
        text = "def run() {\n" + "".join(f"  {a}()\n" for a in prog) + "}"
        acc = compute_generation_accuracy([text] * len(rows), rows, num_prompt_pairs)["accuracy"]
        if acc > best[1]:
            best = (" ".join(prog), acc)
    return best


# -------------------------------------------------------------------------------------- main
@dataclass
class Budget:
    probe_train: int = 3000
    probe_test: int = 1000
    gen_specs: int = 256
    offsets: tuple = OFFSETS
    kinds: tuple = ("linear",)
    layers: tuple = ("mean",)
    semantics: tuple = ("original",) + AUTHORS_MAPS
    # extra (lighter) families: MLP probes and the relative-direction label at these offsets
    mlp_offsets: tuple = (-1, 0)
    relative_offsets: tuple = (-1, 0)
    controls: bool = True  # code-position, shuffled and side-by-side-facts probes


class Measurer:
    """Loads the specs once; `measure(checkpoint)` gives one checkpoint's numbers."""

    def __init__(self, corpus: dict, budget: Budget, cache_dir: str | None = None):
        from karel_hf.data.builder import get_config

        self.corpus, self.budget = corpus, budget
        config = get_config(corpus.get("config", "cpu"), **{k: v for k, v in corpus.items() if k != "config"})
        self.num_prompt_pairs = config.num_prompt_pairs
        self.max_length = config.max_length
        self.train_specs = load_specs(corpus, "train", budget.probe_train, min_length=2, cache_dir=cache_dir)
        self.test_specs = load_specs(corpus, "test", max(budget.probe_test, budget.gen_specs), cache_dir=cache_dir)
        self.probe_test_specs = _head(self.test_specs, budget.probe_test)
        self.gen_specs = _head(self.test_specs, budget.gen_specs)

    def measure(self, checkpoint, *, generate: bool = True) -> dict:
        from transformers import AutoModelForCausalLM

        from karel_hf.tokenizer import load_tokenizer

        t0 = time.time()
        model = AutoModelForCausalLM.from_pretrained(str(checkpoint), attn_implementation="eager")
        tokenizer = load_tokenizer(checkpoint)
        b = self.budget
        out = {"checkpoint": str(checkpoint), "step": _step_of(checkpoint),
               "budget": {"probe_train_specs": len(self.train_specs), "probe_test_specs": len(self.probe_test_specs),
                          "gen_specs": len(self.gen_specs), "kinds": list(b.kinds), "layers": list(b.layers)}}
        if generate:
            out["generation"] = generation(model, tokenizer, self.gen_specs, self.num_prompt_pairs)
        t1 = time.time()
        tr_code, tr_act = forward_states(model, tokenizer, self.train_specs)
        te_code, te_act = forward_states(model, tokenizer, self.probe_test_specs)
        train, test = (self.train_specs, tr_code, tr_act), (self.probe_test_specs, te_code, te_act)
        out["probes"], out["probes_mlp"], out["probes_relative"] = {}, {}, {}
        for o in b.offsets:
            out["probes"][str(o)] = probe_offset(train, test, o, self.max_length, kinds=b.kinds, layers=b.layers,
                                                 semantics=b.semantics, controls=b.controls)
        for o in b.mlp_offsets:
            out["probes_mlp"][str(o)] = probe_offset(train, test, o, self.max_length, kinds=("mlp",),
                                                     semantics=b.semantics, controls=False)
        for o in b.relative_offsets:
            out["probes_relative"][str(o)] = probe_offset(train, test, o, self.max_length, kinds=b.kinds + ("mlp",),
                                                          semantics=b.semantics, label="relative", controls=False)
        out["seconds"] = {"generation": t1 - t0, "probes": time.time() - t1}
        return out


def _head(specs: Specs, n: int) -> Specs:
    return Specs(specs.prompts[:n], specs.actions[:n], specs.init_dir[:n], specs.out_dir[:n], specs.rows[:n])


def _step_of(checkpoint) -> int | None:
    name = Path(checkpoint).name
    return int(name.split("-")[-1]) if name.startswith("checkpoint-") else None


def _fmt(r: dict) -> str:
    lo, hi = r["conditional_gain_ci"]
    return (f"sc {100 * r['semantic_content']:.1f} gain {100 * r['conditional_gain']:+.1f} ({100 * lo:+.1f}..{100 * hi:+.1f})"
            f" alt {100 * r.get('original_minus_best_alternative', float('nan')):+.1f}"
            f"/{100 * r.get('gain_minus_best_alternative_gain', float('nan')):+.1f}")


def summary_line(m: dict, kind: str = "linear", layer: str = "mean") -> str:
    parts = [f"step {m.get('step')}"]
    if "generation" in m:
        g = m["generation"]
        parts.append(f"acc {100 * g['accuracy']:.1f}% (floor {100 * g['floor']:.1f}%, len {g['mean_generated_length']:.2f})")
    for family, key in (("probes", f"{kind}/{layer}"), ("probes_mlp", "mlp/mean"), ("probes_relative", "linear/mean"),
                        ("probes_relative", "mlp/mean")):
        for o, p in m.get(family, {}).items():
            if key in p:
                tag = {"probes": "", "probes_mlp": "mlp ", "probes_relative": "rel "}[family]
                tag += "mlp " if family == "probes_relative" and key.startswith("mlp") else ""
                parts.append(f"[{tag}{o}] {_fmt(p[key])}")
    return " | ".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--corpus", required=True, help="JSON file or string: {\"config\": name, **overrides}")
    parser.add_argument("--probe_train", type=int, default=3000)
    parser.add_argument("--probe_test", type=int, default=1000)
    parser.add_argument("--gen_specs", type=int, default=256)
    parser.add_argument("--kinds", default="linear")
    parser.add_argument("--layers", default="mean")
    parser.add_argument("--offsets", default=",".join(map(str, OFFSETS)))
    parser.add_argument("--out", default=None, help="append one JSON line per checkpoint here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    corpus = json.loads(Path(args.corpus).read_text()) if os.path.isfile(args.corpus) else json.loads(args.corpus)
    layers = tuple(l if l == "mean" else int(l) for l in args.layers.split(","))
    budget = Budget(args.probe_train, args.probe_test, args.gen_specs, tuple(int(o) for o in args.offsets.split(",")),
                    tuple(args.kinds.split(",")), layers)
    measurer = Measurer(corpus, budget)
    for ckpt in args.checkpoints:
        m = measurer.measure(ckpt)
        print(summary_line(m), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(m) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
