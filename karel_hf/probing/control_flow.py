"""The control-flow reading: probes at a program's top-level statements, for programs in the
extended language (if / ifelse / repeat / while), where the per-action labels of
`karel_hf.probing.labels` do not apply (LOG.md E43-E60).

A row is a top-level statement k = 1..n of a program. Its feature is a hidden state at the token
before statement k's first token, where the model is about to write it; its label at offset -1
(`direction_<i>_prev1`) is the robot's direction in spec input i after statements 1..k-1, run by the
interpreter under the real meaning and under each alternative meaning
(`karel_hf.karel.semantics`). A row is *world-dependent* when the prefix turns the robot by
different amounts on the spec's inputs: there the direction is not a function of the tokens read.

The table `build_table` makes has the trace datasets' columns, so `karel_hf.probing.measure` scores
it as it scores the straight-line ones: `gains` gives the conditional gain over the prompt facts on
every row and on the world-dependent ones from one fit, `alternative_gains` each alternative
meaning's too and the real meaning's lead over the best informative one. `karel-hf reproduce` reads
runs on the extended language with them (`karel_hf.reproduce_control_flow`), and so does
benchmarks/emergence/control_flow_probe.py, the study's script.
"""

from __future__ import annotations

import numpy as np

LAYOUT_TOKENS = ("def ", "run() ", "{\n")  # what follows "Code:\n" before the first statement


def statement_starts(tokens: list[str], code_index: int) -> list[int]:
    """Token positions where the program's top-level statements start: after "Code:\\n" (at
    `code_index`) and `def run() {`, the pieces indented by exactly two spaces, except `else`
    (the second half of an ifelse) and closing braces.

    >>> statement_starts(["Code:\\n", "def ", "run() ", "{\\n", "  move()\\n", "  repeat(2) ", "{\\n",
    ...                   "    turn_left()\\n", "  }\\n", "}"], 0)
    [4, 5]
    """
    starts = []
    for position in range(code_index + 1 + len(LAYOUT_TOKENS), len(tokens)):
        piece = tokens[position]
        if piece.startswith("  ") and not piece.startswith("   ") and not piece.strip().startswith(("}", "else")):
            starts.append(position)
    return starts


def prefix_directions(program, worlds, semantics: str = "original") -> np.ndarray:
    """(n + 1, len(worlds)) int64: the robot's direction in each world after top-level statements
    1..j of `program` (row j), under `semantics`; -1 where the prefix exhausts the step budget."""
    from karel_hf.karel import execute
    from karel_hf.karel.program import Program
    from karel_hf.karel.semantics import get_semantics

    meaning = get_semantics(semantics)
    body = meaning.apply(program).body
    out = np.full((len(body) + 1, len(worlds)), -1, dtype=np.int64)
    for j in range(len(body) + 1):
        prefix = Program(tuple(body[:j]))
        for w, world in enumerate(worlds):
            result = execute(prefix, world)
            if result.completed:
                out[j, w] = result.world.direction
    return out


def label_rows(tokenizer, rows, num_prompt_pairs: int, semantics: tuple[str, ...]) -> dict:
    """The part of `build_table` that no model changes: each row's token ids, the positions of its
    scored statements' states, and every column but the states (the labels under each meaning, the
    prompt facts, `world_dependent`), with `skipped` and `incomplete`. Running the programs' prefixes
    under every meaning is a large part of a table's cost at a small model, so a reading of many checkpoints
    labels its rows once (`build_table(..., labelled=...)`). `vocabulary`: the tokenizer's, which the
    ids depend on."""
    from karel_hf.karel import World, parse
    from karel_hf.probing.labels import NUM_SPEC_INPUTS, label_column

    labels = [f"direction_{i}" for i in range(min(num_prompt_pairs, NUM_SPEC_INPUTS))]
    columns: dict[str, list] = {c: [] for c in ("example_id", "step", "num_actions", "world_dependent")}
    for l in labels:
        for which in (-1, "initial", "output"):
            columns[label_column(l, which)] = []
        for name in semantics:
            columns[label_column(l, -1, name)] = []
    encoded, positions = [], []  # per row: its ids; (code index, [state index per scored statement])
    skipped = incomplete = 0
    rows = rows if hasattr(rows, "column_names") else list(rows)  # read twice: the rows, then their ids
    for row in rows:
        ids = tokenizer(row["text"])["input_ids"]
        encoded.append(ids)
        tokens = tokenizer.convert_ids_to_tokens(ids)
        code = tokens.index("Code:\n")
        program = parse(row["program"])
        starts = statement_starts(tokens, code)
        kept: list[int] = []
        positions.append((code, kept))
        if len(starts) != len(program.body):
            skipped += 1
            continue
        worlds = [World.from_view_codes(w) for w in row["inputs"]]
        outputs = [World.from_view_codes(w) for w in row["outputs"]]
        real = prefix_directions(program, worlds)  # (n+1, 10)
        rotation = (real - real[:1]) % 4
        others = {name: prefix_directions(program, worlds[:len(labels)], name) for name in semantics}
        n = len(program.body)
        for k in range(1, n + 1):
            if any((o[k - 1] < 0).any() for o in others.values()):  # a meaning's prefix never ends
                incomplete += 1  # every meaning is scored on the same rows
                continue
            kept.append(starts[k - 1] - 1)
            columns["example_id"].append(int(row["id"]))
            columns["step"].append(k)
            columns["num_actions"].append(n)
            columns["world_dependent"].append(bool(len(set(rotation[k - 1].tolist())) > 1))
            for i, l in enumerate(labels):
                columns[label_column(l, -1)].append(int(real[k - 1, i]))
                columns[label_column(l, "initial")].append(int(real[0, i]))
                columns[label_column(l, "output")].append(int(outputs[i].direction))
            for name, other in others.items():
                for i, l in enumerate(labels):
                    columns[label_column(l, -1, name)].append(int(other[k - 1, i]))
    return {"columns": {c: np.asarray(v) for c, v in columns.items()}, "encoded": encoded, "positions": positions,
            "skipped": skipped, "incomplete": incomplete, "num_prompt_pairs": num_prompt_pairs,
            "semantics": tuple(semantics), "vocabulary": tokenizer.get_vocab(), "example_ids": _example_ids(rows)}


def _example_ids(rows) -> list[int]:
    """The rows' `id`s: a dataset's column, or each row's."""
    return [int(i) for i in (rows["id"] if hasattr(rows, "column_names") else [r["id"] for r in rows])]


def build_table(model, tokenizer, rows, num_prompt_pairs: int, semantics: tuple[str, ...], batch_size: int = 32,
                labelled: dict | None = None) -> dict:
    """The trace-like table (karel_hf.probing.measure's columns) of `rows` (dataset rows with
    `id`, `text`, `program`, `inputs`, `outputs`); programs whose statements the tokens do not show
    one for one are left out (counted in `skipped`), and so is a statement after which some meaning
    has no label (its prefix exhausts the step budget under that meaning; `incomplete`), so that
    every meaning is scored on the same rows. `layers` (`states`, `code_states`: (rows, layers,
    hidden)) holds every hidden-state layer's vectors at the tokens of `state` and `code_state`, the
    layer means. `labelled`: `label_rows`'s result for these rows, pairs and meanings, when already
    made (it is made here otherwise, or when it was made with another vocabulary); labels of other
    rows are refused."""
    import torch

    if (labelled is None or labelled["vocabulary"] != tokenizer.get_vocab()
            or (labelled["num_prompt_pairs"], labelled["semantics"]) != (num_prompt_pairs, tuple(semantics))):
        labelled = label_rows(tokenizer, rows, num_prompt_pairs, semantics)
    elif labelled["example_ids"] != _example_ids(rows):
        raise ValueError("labelled: made for other rows than these")
    encoded, positions = labelled["encoded"], labelled["positions"]
    columns: dict[str, list] = {"state": [], "code_state": []}
    layers: dict[str, list] = {"states": [], "code_states": []}
    for start in range(0, len(encoded), batch_size):  # the batches (and so the padding) of the whole row list
        batch = encoded[start:start + batch_size]
        width = max(len(e) for e in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for b, e in enumerate(batch):
            ids[b, :len(e)], mask[b, :len(e)] = torch.tensor(e), 1
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        stacked = torch.stack(hidden, dim=2).float()  # (batch, width, layers, hidden)
        every_layer, layer_mean = stacked.numpy(), stacked.mean(2).numpy()
        for b, (code, kept) in enumerate(positions[start:start + batch_size]):
            for position in kept:
                columns["state"].append(layer_mean[b, position])
                columns["code_state"].append(layer_mean[b, code])
                layers["states"].append(every_layer[b, position])
                layers["code_states"].append(every_layer[b, code])
    states = {c: np.stack(v).astype(np.float32) if v else np.asarray(v) for c, v in columns.items()}
    fixed = {c: v.copy() for c, v in labelled["columns"].items()}
    order = ("example_id", "step", "num_actions", "state", "code_state", "world_dependent")  # build_table's order
    table = {c: states[c] if c in states else fixed[c] for c in (*order, *fixed)}
    stacks = {c: np.stack(v).astype(np.float32) if v else np.zeros((0, 0, 0), np.float32) for c, v in layers.items()}
    return {"table": table, "layers": stacks, "skipped": labelled["skipped"], "incomplete": labelled["incomplete"]}


def generated_rows(model, tokenizer, rows, num_prompt_pairs: int, batch_size: int = 64) -> tuple[list[dict], dict]:
    """`rows` with the model's own program in place of the reference (`--programs generated`, the
    paper's reading): grammar-constrained greedy decoding in the extended language from each row's
    prompt, the sample's `text` and `program` then the corpus's format of what it wrote, so that
    `build_table` labels each statement by running the written program's prefix on the spec's
    inputs. Rows whose program does not parse or lies outside the sample format are left out.
    Returns (rows, counts): `written`, `left_out`, and `accuracy` (the written programs right on the
    prompt pairs, karel_hf.metrics.generation's score)."""
    from karel_hf.data.formatting import SampleFormatError, format_sample
    from karel_hf.decoding import decode, prompts_from_rows
    from karel_hf.karel import parse
    from karel_hf.metrics.generation import compute_generation_accuracy

    rows = list(rows)
    written = decode(model, tokenizer, prompts_from_rows(rows, num_prompt_pairs), batch_size=batch_size,
                     extended=True, progress=False).programs
    out, left_out = [], 0
    for row, program in zip(rows, written):
        inputs, outputs = np.asarray(row["inputs"]), np.asarray(row["outputs"])
        try:  # None: nothing parsable written
            text = (format_sample(inputs[:num_prompt_pairs], outputs[:num_prompt_pairs], parse(program))
                    if program is not None else None)
        except (ValueError, SampleFormatError):  # a syntax error, outside the sample format
            text = None
        if text is None:
            left_out += 1
        else:
            out.append({**row, "program": program, "text": text})
    accuracy = compute_generation_accuracy(written, rows, num_spec_pairs=num_prompt_pairs)["accuracy"]
    return out, {"written": len(rows), "left_out": left_out, "accuracy": float(accuracy)}


def with_feature(built: dict, name: str) -> dict:
    """`built`'s table with `state` and `code_state` read from feature `name` (state: the layer mean)."""
    if name == "state":
        return built["table"]
    layer = int(name[6:])
    return {**built["table"], "state": built["layers"]["states"][:, layer],
            "code_state": built["layers"]["code_states"][:, layer]}


def as_rotation(built: dict, num_prompt_pairs: int, semantics: tuple[str, ...]) -> dict:
    """`build_table`'s result with each label at -1, under the real meaning and under each of
    `semantics`, replaced by the rotation the prefix has made: (direction - initial direction) mod 4
    in the same spec input (-1, no label, stays -1); the prompt facts stay the absolute directions.

    Given the initial direction (a prompt fact) the two labels are in one-to-one correspondence, so
    an MLP probe on [state, facts] can read either as well. A linear one cannot turn a rotation the
    state holds into a direction: a sum mod 4 is not linear in the two codes (LOG.md E21 on
    straight-line programs, E63 here).

    >>> from karel_hf.probing.labels import label_column
    >>> t = {label_column("direction_0", -1): np.array([0, 3, -1]), label_column("direction_0", "initial"): np.array([1, 1, 2]),
    ...      label_column("direction_0", -1, "swap"): np.array([2, 1, 0])}
    >>> out = as_rotation({"table": t}, 1, ("swap",))["table"]
    >>> out[label_column("direction_0", -1)].tolist(), out[label_column("direction_0", -1, "swap")].tolist()
    ([3, 2, -1], [1, 0, 2])
    """
    from karel_hf.probing.labels import NUM_SPEC_INPUTS, label_column

    table = dict(built["table"])
    for i in range(min(num_prompt_pairs, NUM_SPEC_INPUTS)):
        label = f"direction_{i}"
        initial = np.asarray(table[label_column(label, "initial")])
        for name in ("original", *semantics):
            column = label_column(label, -1, name)
            value = np.asarray(table[column])
            table[column] = np.where(value >= 0, (value - initial) % 4, -1)
    return {**built, "table": table}


def subset(table: dict, keep: np.ndarray) -> dict:
    return {c: v[keep] for c, v in table.items()}


def world_dependent_only(built: dict) -> dict:
    """`build_table`'s result kept to its world-dependent rows, every layer's vectors with them
    (`--train_on world_dependent`: the probes learn from the rows where the tokens do not fix the
    direction)."""
    keep = built["table"]["world_dependent"].astype(bool)
    return {**built, "table": subset(built["table"], keep), "layers": subset(built["layers"], keep)}


def measure(train: dict, test: dict, num_prompt_pairs: int, semantics: tuple[str, ...], probe: str, budgets: dict) -> dict:
    from karel_hf.probing.measure import conditional_intervention, semantic_content

    options = dict(label_set="v1", num_prompt_pairs=num_prompt_pairs, probe=probe, **budgets)
    content = semantic_content(train, test, -1, return_predictions=True, **options)  # fitted once, reused below
    intervention = conditional_intervention(train, test, -1, semantics=semantics, original=content, **options)
    gains = {k: v["value"] for k, v in intervention["gain"].items()}
    return {"conditional_gain": content["conditional_gain"], "num_test_rows": intervention["num_rows"], "gains": gains,
            "best_alternative": intervention["best_alternative"],
            "original_minus_best_alternative": intervention["original_minus_best_alternative"]}


def part_gain(content: dict, test: dict, keep: np.ndarray) -> dict:
    """The conditional gain of `content` (`semantic_content(..., return_predictions=True)` with the
    prompt-only and conditional probes) on the scored test rows `keep` marks (booleans in
    `test_rows` order): the same bootstrap over the same predictions as a refit on those rows."""
    from karel_hf.probing.probes import bootstrap_difference

    rows, labels = content["test_rows"], sorted(content["targets"])
    if not labels:  # no label could be fitted (e.g. one class only in the training rows)
        return {"value": float("nan"), "low": float("nan"), "high": float("nan")}
    targets = np.stack([content["targets"][l] for l in labels])
    hits = {name: np.stack([content["control_predictions"][name][l] for l in labels]) == targets
            for name in ("conditional", "prompt_only")}
    return bootstrap_difference(hits["conditional"][:, keep], hits["prompt_only"][:, keep],
                                (targets >= 0)[:, keep], np.asarray(test["example_id"])[rows][keep])


def gains(train: dict, test: dict, dependent: np.ndarray, num_prompt_pairs: int, probe: str, budgets: dict,
          semantics: str = "original", fitted: dict | None = None, given: tuple[str, ...] = ()) -> dict:
    """The conditional gain at -1 alone (`--gains_only`), on every scored row and on the rows
    `dependent` marks, from one fit of the two probes it needs (prompt facts; state and facts):
    the subset's is the same bootstrap over the same predictions as `measure`'s refit on it.

    `semantics`: whose labels the probes learn (the prompt facts stay the real meaning's, as in
    `conditional_intervention`). `given`: columns both probes also get as facts. `fitted`, when
    given, receives the scored test rows, their labels (`rows`, `targets`: label name -> array) and
    the fit itself (`content`) for `alternative_gains`.
    """
    from karel_hf.probing.measure import semantic_content

    content = semantic_content(train, test, -1, label_set="v1", num_prompt_pairs=num_prompt_pairs, probe=probe,
                               semantics=semantics, controls=("prompt_only", "conditional_gain"),
                               return_predictions=True, given=list(given), **budgets)
    rows = content["test_rows"]
    keep = dependent[rows]
    facts_only = content["controls"]["prompt_only"]  # the two probes' own accuracies on every row
    accuracy = {"prompt_only": facts_only, "conditional": facts_only + content["conditional_gain"]["value"]}
    if fitted is not None:
        fitted.update(rows=rows, targets=content["targets"], content=content)
    return {"all_rows": {"conditional_gain": content["conditional_gain"], "num_test_rows": int(len(rows)),
                         "accuracy": accuracy},
            "world_dependent": {"conditional_gain": part_gain(content, test, keep), "num_test_rows": int(keep.sum())}}


def alternative_gains(train: dict, test: dict, dependent: np.ndarray, num_prompt_pairs: int, probe: str,
                      budgets: dict, semantics: tuple[str, ...], given_other: tuple[str, ...] = ()) -> dict:
    """`--gains_only --alternatives`: `gains` for the real meaning and for each distinct alternative
    map (one fit each, on every training row), and per part (every row; the world-dependent ones)
    the real meaning's gain minus the best informative alternative's, as `conditional_intervention`
    takes it: informative where no function of (real label, initial label) predicts the
    alternative's labels on that part's rows 95% of the time (`determined_by_original_and_initial`).
    The full measure refits every probe for the world-dependent part; here both parts share the fits.

    Per part, from the same fits: `discordant` (`measure.discordant_margin` on that part's rows where
    the two meanings' labels differ) and `discordant_minimum` (its smallest margin over the
    informative alternatives with `UNINFORMATIVE_ROWS` such rows), as `conditional_intervention`
    gives them on every row; `undetermined`, the same margin on the part's rows where the
    alternative's labels are not the ones the best function of the real and initial labels (found
    on every scored row) gives (`measure.undetermined_rows`). Swap's direction is the real one's
    mirror about the initial direction until a wall or a condition sends the two paths apart; only
    past that point does a state that follows the real path read swap's label worse (E59).

    `given_other` (alternative names, `--given_other`): two more fits per name, the real meaning's
    probes also given the alternative's labels and the alternative's given the real ones (both with
    the initial direction), as `conditional_intervention(given_other=...)`: per part, the margin on
    the rows where the labels differ and both gains on all of the part's rows.
    """
    from karel_hf.karel.semantics import get_semantics
    from karel_hf.probing.labels import INITIAL, label_column
    from karel_hf.probing.measure import (UNINFORMATIVE_ROWS, determined_by, discordant_margin, informative_gains,
                                          label_tasks, undetermined_rows)

    tasks = label_tasks("v1", num_prompt_pairs)
    labels = [l for parts in tasks.values() for l in parts]
    fits, done = {}, {}
    for name in ("original", *semantics):
        key = tuple(sorted(get_semantics(name).mapping.items()))
        if key not in done:
            fitted = {}
            done[key] = (gains(train, test, dependent, num_prompt_pairs, probe, budgets, name, fitted), fitted)
        fits[name] = done[key]
    rows = fits["original"][1]["rows"]
    real = fits["original"][1]["targets"]
    reference = fits["original"][1]["content"]
    if set(real) != set(labels):  # a label without a scored row (e.g. every program has one statement)
        return {part: {**fits["original"][0][part],
                       "gains": {k: reading[part]["conditional_gain"]["value"] for k, (reading, _) in fits.items()},
                       "best_alternative": None, "original_minus_best_alternative": float("nan"),
                       "discordant": {}, "undetermined": {}, "discordant_minimum": None, "given_other": {}}
                for part in ("all_rows", "world_dependent")}
    initial = {l: np.asarray(test[label_column(l, INITIAL)])[rows] for l in labels}
    headings = [label_column(l, INITIAL) for l in labels]  # every label here is a direction: its own input
    crossed = {}
    for name in given_other:
        crossed[name] = []
        for meaning, other in (("original", name), (name, "original")):
            fitted = {}
            gains(train, test, dependent, num_prompt_pairs, probe, budgets, meaning, fitted,
                  given=(*(label_column(l, -1, other) for l in labels), *headings))
            crossed[name].append(fitted["content"])
    # each fit's rows where its labels are not a function of (real, initial), the function found on
    # every scored row (a small part has keys seen once, each its own majority)
    apart = {id(fitted): undetermined_rows([real, initial], fitted["targets"], tasks)
             for name, (_, fitted) in fits.items() if name != "original"}
    out = {}
    for part, keep in (("all_rows", np.ones(len(rows), dtype=bool)), ("world_dependent", dependent[rows])):
        gain, determined, discordant, undetermined, scored = {}, {}, {}, {}, {}
        for name, (reading, fitted) in fits.items():
            gain[name] = reading[part]["conditional_gain"]
            if name != "original":
                if id(fitted) not in scored:  # meanings with the same map share a fit: score it once
                    given_labels = [{l: v[keep] for l, v in real.items()}, {l: v[keep] for l, v in initial.items()}]
                    theirs = {l: v[keep] for l, v in fitted["targets"].items()}
                    off = keep & apart[id(fitted)]
                    scored[id(fitted)] = (
                        determined_by(given_labels, theirs, tasks) if keep.any() else float("nan"),
                        discordant_margin(reference, fitted["content"], test, num_prompt_pairs=num_prompt_pairs,
                                          keep=keep),
                        discordant_margin(reference, fitted["content"], test, num_prompt_pairs=num_prompt_pairs,
                                          keep=off))
                determined[name], discordant[name], undetermined[name] = scored[id(fitted)]
        informative = informative_gains(gain, determined)
        best = max(informative, key=informative.get) if informative else None
        compared = {k: discordant[k] for k in informative
                    if discordant[k]["num_rows"] >= UNINFORMATIVE_ROWS and not np.isnan(discordant[k]["value"])}
        lowest = min(compared, key=lambda k: compared[k]["value"]) if compared else None
        given = {name: {**discordant_margin(*pair, test, num_prompt_pairs=num_prompt_pairs, keep=keep),
                        "part": {"original_gain": part_gain(pair[0], test, keep),
                                 "alternative_gain": part_gain(pair[1], test, keep)}}
                 for name, pair in crossed.items()}
        out[part] = {**fits["original"][0][part], "gains": {k: v["value"] for k, v in gain.items()},
                     "gain_intervals": gain, "determined_by_original_and_initial": determined,
                     "best_alternative": best,
                     "original_minus_best_alternative":
                         float(gain["original"]["value"] - informative[best]) if best else float("nan"),
                     "discordant": discordant, "undetermined": undetermined,
                     "discordant_minimum": {"alternative": lowest, **compared[lowest]} if lowest else None,
                     "given_other": given}
    return out
