"""Probe study on a finished run: linear and MLP probes, on the layer mean and on each layer, with
more probe-training rows, at offsets -2..+2 (issue 17's "measuring" lever).

`karel-hf reproduce` measures one probe (the preset's: linear, on the layer-mean state, 2,000
training rows for the cpu preset). This script asks whether the program state is there but read
the wrong way: for each checkpoint STEP of a `karel-hf reproduce` output folder (run.py's runs
are), it builds the teacher-forced traces of the run's own test and probe-training specs
with every hidden-state layer (cached in RUN/traces; `--mode generated`: the programs the
checkpoint writes itself, as the paper probes them), then scores, for each (feature, probe,
training-row budget, offset), the v1 direction probe with its prompt-facts controls
(`karel_hf.probing.measure.semantic_content`): the probe's accuracy, the prompt-only probe's and the
conditional gain with its 95% bootstrap interval (`--label_set position`: the robot's cell instead
of its direction, which depends on the walls). With `--intervention` it also fits the
alternative-semantics probes on the same states and rows and reports the original minus the best
alternative; with `--conditional_intervention` the original's conditional gain minus the best
alternative's (`karel_hf.probing.measure.conditional_intervention`), the form that matches the
conditional gain. With another `--label_set` than v1 the alternatives' labels of that task are
computed here, each program re-run on its spec's worlds under each semantics
(`with_alternative_labels`).

    python benchmarks/emergence/probe_study.py /work/runs/emergence/p2l6-cpu24k-s0-bf16 \\
        --steps 0,24000 --probes linear,mlp1 --budgets 2000,all --offsets=-2,-1,0,1,2 --intervention

Writes RUN/probe_study.json (every number, with the machine and the options) and prints a markdown
table (one row per step, feature, probe, budget and offset). Scoring uses every scored test row
unless --max_test_rows is given.

With `--evaluation` it runs instead the reproduction's own evaluation of each STEP
(`karel_hf.reproduce.evaluate_checkpoint`: both probe families, offsets -2..+2, every control, the
conditional gains and the intervention, at the preset's row budgets) with each probe of `--probes`
in place of the preset's, into RUN/probe_study_PROBE/evaluations/step-N.json (the format of
RUN/evaluations; the trace datasets come from RUN/traces), and prints the headline table:

    python benchmarks/emergence/probe_study.py /work/runs/emergence/p2l6-cpu24k-s0-bf16 \\
        --evaluation --probes mlp1 --steps 0,24000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def machine_info() -> dict:
    """run.py's description of the machine (CPU model and flags, cores, threads, torch)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("emergence_run", HERE / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    return run.machine()


def parse_list(text: str, kind=str) -> list:
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"probe_study.py: error: expected a comma-separated list of {kind.__name__}, got {text!r}") from None


def parse_budget(text: str) -> int | None:
    return None if text == "all" else int(text)


def full_evaluations(run: Path, preset, data, found: dict, steps: list[int], probes: list[str]) -> list[dict]:
    """The reproduction's evaluation of each step with each probe (the preset's otherwise), written to
    RUN/probe_study_PROBE/evaluations/step-N.json; a step whose file exists is read back, not redone."""
    import dataclasses

    from karel_hf.probing.labels import OFFSET_NAMES
    from karel_hf.reproduce import _json_default, evaluate_checkpoint
    from karel_hf.utils import atomic_write_json

    found_rows = []
    for probe in probes:
        out = run / f"probe_study_{probe}"
        (out / "evaluations").mkdir(parents=True, exist_ok=True)
        (run / "traces").mkdir(exist_ok=True)  # a run whose evaluate stage never ran has none yet
        if not (out / "traces").is_symlink():
            (out / "traces").symlink_to((run / "traces").resolve(), target_is_directory=True)
        chosen = dataclasses.replace(preset, probe=probe)
        for step in steps:
            path = out / "evaluations" / f"step-{step}.json"
            if not path.is_file():
                atomic_write_json(path, evaluate_checkpoint(step, found[step], data, out, chosen, {}),
                                  default=_json_default)
            evaluation = json.loads(path.read_text())
            for family, by_offset in evaluation["probes"].items():
                for name in OFFSET_NAMES.values():  # v1 at -2..+2 (v3_current has no conditional gain)
                    result, moved = by_offset[name], evaluation["intervention"].get(family, {}).get(name)
                    found_rows.append({"step": step, "probe": probe, "family": family, "offset": name,
                                       "accuracy": evaluation["generation"]["accuracy"],
                                       "semantic_content": result["semantic_content"],
                                       "strongest_control": result["strongest_control"], "margin": result["margin"],
                                       "conditional_gain": result["conditional_gain"],
                                       "num_train": result["num_train"], "num_test": result["num_test"],
                                       "intervention": moved, "evaluation": str(path)})
    return found_rows


def evaluation_table(rows: list[dict]) -> list[str]:
    """The markdown table of `full_evaluations`' rows."""
    lines = ["| step | probe | family | offset | accuracy | probe acc | margin (strongest control) "
             "| conditional gain [95%] | orig - best alt (alt) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gain, moved = r["conditional_gain"], r["intervention"]
        alt = (f"{100 * moved['original_minus_best_alternative']:+.1f} ({moved['best_alternative']})"
               if moved else "")
        lines.append(f"| {r['step']} | {r['probe']} | {r['family']} | {r['offset']} | {100 * r['accuracy']:.1f} "
                     f"| {100 * r['semantic_content']:.1f} | {100 * r['margin']:+.1f} ({r['strongest_control']}) "
                     f"| {100 * gain['value']:+.1f} [{100 * gain['low']:+.1f}, {100 * gain['high']:+.1f}] | {alt} |")
    return lines


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=1, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
    print(f"wrote {path}")


def accuracy_regressions(run: Path, rows: list[dict]) -> list[dict]:
    """Generation accuracy (RUN/results.json, per checkpoint) regressed on the conditional gain,
    per (feature, probe, budget, offset) measured at >= 3 checkpoints (`karel_hf.probing.analysis.regress`)."""
    from karel_hf.probing.analysis import regress

    try:
        accuracy = {c["step"]: c["generation"]["accuracy"]
                    for c in json.loads((run / "results.json").read_text())["checkpoints"]}
    except (OSError, ValueError, KeyError, TypeError):
        return []  # no analyse stage yet: nothing to regress on
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["step"] in accuracy:
            groups.setdefault((row["feature"], row["probe"], row["budget"], row["offset"]), []).append(row)
    found = []
    for (feature, probe, budget, offset), members in groups.items():
        if len(members) >= 3:
            try:
                fit = regress([accuracy[m["step"]] for m in members], [m["conditional_gain"]["value"] for m in members])
            except ValueError:  # gains all equal: no line
                continue
            found.append({"feature": feature, "probe": probe, "budget": budget, "offset": offset, **fit})
    return found


def with_previous(table: dict, offset: int, pairs: int) -> dict:
    """`table` (load_traces columns) whose initial direction of each v1 label also carries the true
    direction at `offset - 1` (initial * 4 + previous; -1 where either is undefined), so that the
    prompt facts, the joint one-hot of (initial, output, k, n), hold the earlier state too.

    >>> t = {"direction_0_initial": np.array([1, 2, -1]), "direction_0": np.array([3, -1, 0])}
    >>> with_previous(t, 1, 1)["direction_0_initial"].tolist()
    [7, -1, -1]
    """
    from karel_hf.probing.labels import INITIAL, label_column, v1_labels

    out = dict(table)
    for label in v1_labels(pairs):
        initial, previous = np.asarray(table[label_column(label, INITIAL)]), np.asarray(table[label_column(label, offset - 1)])
        out[label_column(label, INITIAL)] = np.where((initial >= 0) & (previous >= 0), initial * 4 + previous, -1)
    return out


def with_alternative_labels(table: dict, rows, label_set: str, offsets, cache: dict | None = None) -> dict:
    """`table` (loaded traces) with the `label_set` task's labels under every alternative semantics at
    `offsets` (and `_final`): each row's program re-run on its spec's worlds under that semantics
    (`labels.step_labels(..., alternative_labels=...)`; walls and markers count). The traces carry the
    directions only, so the intervention on another task (e.g. the position) needs these. `cache`
    keeps each (spec, program)'s labels between calls (the same programs at every checkpoint)."""
    from karel_hf.karel.program import parse
    from karel_hf.karel.semantics import ALTERNATIVE_SEMANTICS
    from karel_hf.probing.labels import NUM_SPEC_INPUTS, V3_TASKS, step_labels

    wanted = tuple(dict.fromkeys(l for task in V3_TASKS.values() for l in task)) if label_set == "v3" else V3_TASKS[label_set]
    inputs = {int(r["id"]): np.asarray(r["inputs"])[:NUM_SPEC_INPUTS] for r in rows}
    keys = np.char.add(np.asarray(table["example_id"]).astype(str), np.char.add("\t", np.asarray(table["program"]).astype(str)))
    _, first, group = np.unique(keys, return_index=True, return_inverse=True)
    steps = np.asarray(table["step"], dtype=np.int64)
    columns, cache = {}, {} if cache is None else cache
    rows_of = np.split(np.argsort(group, kind="stable"), np.cumsum(np.bincount(group))[:-1])  # each group's rows
    for i, at in zip(first, rows_of):
        worlds = inputs[int(table["example_id"][i])]
        key = (label_set, tuple(offsets), str(table["program"][i]), worlds.tobytes())  # ids may repeat across splits
        if key not in cache:
            cache[key] = step_labels(parse(str(table["program"][i])), worlds,
                                     semantics=ALTERNATIVE_SEMANTICS, offsets=offsets, labels=wanted,
                                     alternative_labels=wanted)
        found = cache[key]
        for name, values in found.items():
            columns.setdefault(name, np.full(len(steps), -1, dtype=np.int64))[at] = values[steps[at] - 1]
    return {**table, **columns}


def written_programs(run: Path, preset, found: dict, step: int, row_sets, pairs: int, mode: str = "teacher_forced"):
    """Each of `row_sets` with every reference program replaced by the one checkpoint `step` (of
    `found`, step -> path) writes for the spec (`karel_hf.reproduce.written_programs`). A ValueError
    (one line) for a step with no checkpoint or a `mode` other than teacher_forced."""
    if mode != "teacher_forced":
        raise ValueError("--programs_from teacher-forces another checkpoint's programs: it needs --mode teacher_forced")
    if step not in found:
        raise ValueError(f"--programs_from: no checkpoint for step {step} in {run / 'model'}; found {sorted(found)}")
    from karel_hf.reproduce import written_programs as written

    return written(found[step], step, row_sets, preset, run, pairs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a `karel-hf reproduce` output folder (model/checkpoint-N, reproduce_config.json)")
    parser.add_argument("--steps", default="", help="checkpoint steps, comma-separated, or all (default: the first and the last)")
    parser.add_argument("--features", default="", help="state (layer mean), layer_0 .. layer_<n_layer> (default: all)")
    parser.add_argument("--probes", default="linear,mlp1")
    parser.add_argument("--budgets", default="2000,all", help="probe-training rows: numbers or 'all'")
    parser.add_argument("--offsets", default="-2,-1,0,1,2")
    parser.add_argument("--label_set", default="v1",
                        help="v1 (the direction in each prompt input, the protocol's probe) or one v3 task alone, "
                             "e.g. position (x and y in input 0: moves blocked by walls need the world)")
    parser.add_argument("--max_test_rows", type=int, default=None)
    parser.add_argument("--mode", default="teacher_forced", choices=("teacher_forced", "generated"),
                        help="the traces: the reference programs teacher-forced (default), or the programs the "
                             "checkpoint decodes itself (the paper's setting; the layer-mean ones the evaluate "
                             "stage cached serve)")
    parser.add_argument("--programs_from", type=int, default=None, metavar="STEP",
                        help="teacher-force, instead of the references, the programs checkpoint STEP wrote for the "
                             "same specs (its generated traces), every length: e.g. --steps 0 --programs_from 16000 "
                             "reads the untrained model's states on the trained model's programs, the control for "
                             "--mode generated, whose untrained model writes programs the prompt already explains")
    parser.add_argument("--given_previous", action="store_true",
                        help="the prompt facts also hold the true label one offset earlier (at +1: the true "
                             "state after the coming action): is the later state in the model's state, or only "
                             "derived by the probe from the earlier one (the paper's check, as a conditional gain)")
    parser.add_argument("--intervention", action="store_true", help="also original minus best alternative semantics")
    parser.add_argument("--conditional_intervention", action="store_true",
                        help="also the intervention on [state, prompt facts] (conditional_intervention)")
    parser.add_argument("--given_other", default="", metavar="NAMES",
                        help="with --conditional_intervention: for these alternative semantics (comma-separated) also "
                             "the comparison with each meaning's probes given the other meaning's label as a fact "
                             "(conditional_intervention's given_other)")
    parser.add_argument("--intervention_offsets", default="-1,0")
    parser.add_argument("--num_bootstrap", type=int, default=1000)
    parser.add_argument("--evaluation", action="store_true",
                        help="instead: the reproduction's whole evaluation of each step with each of --probes "
                             "(full_evaluations), into RUN/probe_study_PROBE/evaluations")
    parser.add_argument("--output", type=Path, default=None, help="default: RUN/probe_study.json")
    args = parser.parse_args(argv)
    if args.evaluation:  # the evaluation takes the preset's features, budgets and offsets: say so, not ignore
        ignored = [f"--{k}" for k in ("features", "budgets", "offsets", "label_set", "max_test_rows", "intervention",
                                     "conditional_intervention", "given_other", "intervention_offsets", "num_bootstrap")
                   if getattr(args, k) != parser.get_default(k)]
        if ignored:
            parser.error(f"--evaluation runs the reproduction's own measurement; it does not take {', '.join(ignored)}")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from karel_hf.karel.semantics import ALTERNATIVE_SEMANTICS
    from karel_hf.probing.labels import OFFSET_NAMES, OFFSETS, V3_TASKS
    from karel_hf.probing.measure import conditional_intervention, intervention, load_traces, semantic_content
    from karel_hf.probing.traces import build_trace_dataset
    from karel_hf.reproduce import _data_rows, model_checkpoints, prompt_pairs, reproduce_preset, teacher_forced_min_length

    run = args.run
    try:
        preset_name = json.loads((run / "reproduce_config.json").read_text())["preset"]
    except (OSError, ValueError, KeyError, TypeError):
        parser.error(f"{run} is not a reproduction folder: it needs reproduce_config.json (with its preset) and model/")
    if not (run / "model").is_dir():
        parser.error(f"{run} is not a reproduction folder: it has no model/ (run the train stage first)")
    try:
        preset = reproduce_preset(str(preset_name))
    except ValueError as err:
        parser.error(f"{run}: {err}")
    found = dict(model_checkpoints(run / "model"))
    steps = sorted(found) if args.steps == "all" else parse_list(args.steps, int) or [min(found), max(found)]
    missing = [s for s in steps if s not in found]
    if missing:
        parser.error(f"no checkpoint for step(s) {missing} in {run / 'model'}; found {sorted(found)}")
    data = _data_rows(run / "model", preset)
    test_rows, probe_rows, _ = data
    pairs = prompt_pairs(test_rows)
    min_length = teacher_forced_min_length(preset, test_rows)
    if args.programs_from is not None:
        try:
            test_rows, probe_rows = written_programs(run, preset, found, args.programs_from, (test_rows, probe_rows),
                                                     pairs, args.mode)
        except ValueError as err:
            parser.error(str(err))
        min_length = 1  # as the generated traces: every program, whatever its length
    budgets = parse_list(args.budgets, parse_budget)
    offsets = parse_list(args.offsets, int)
    intervention_offsets = set(parse_list(args.intervention_offsets, int))
    if args.label_set not in ("v1", "v3", *V3_TASKS):
        parser.error(f"unknown --label_set {args.label_set!r}: expected v1, v3 or one of {', '.join(V3_TASKS)}")
    given_other = parse_list(args.given_other)
    if given_other and not args.conditional_intervention:
        parser.error("--given_other is part of --conditional_intervention: add it")
    if not set(given_other) <= set(ALTERNATIVE_SEMANTICS):
        parser.error(f"--given_other: unknown semantics {sorted(set(given_other) - set(ALTERNATIVE_SEMANTICS))}; "
                     f"expected some of {', '.join(ALTERNATIVE_SEMANTICS)}")
    if args.given_previous and (args.label_set != "v1" or args.intervention or args.conditional_intervention
                                or min(offsets, default=0) < -1):
        parser.error("--given_previous takes --label_set v1, offsets from -1 and no intervention")
    if not set(offsets) <= set(OFFSETS) or any(b is not None and b < 1 for b in budgets):
        parser.error(f"offsets must be in {OFFSETS} and budgets positive or 'all', got {args.offsets!r}, {args.budgets!r}")
    for name in parse_list(args.probes):
        if name not in ("linear", "mlp1", "mlp2"):
            parser.error(f"unknown probe {name!r}: expected linear, mlp1 or mlp2")
    machine = machine_info()
    if args.evaluation:
        rows = full_evaluations(run, preset, data, found, steps, parse_list(args.probes))
        print("\n".join(evaluation_table(rows)))
        write_json(args.output or run / "probe_study_evaluation.json",
                   {"run": str(run), "argv": sys.argv[1:], "machine": machine, "rows": rows})
        return 0
    results, lines, alternative_labels = [], [], {}
    header = ("| step | feature | probe | train rows | offset | probe acc | prompt only | conditional gain [95%] "
              "| orig - best alt (alt) |")
    print(header)
    print("|---|---|---|---|---|---|---|---|---|")
    for step in steps:
        tick = time.perf_counter()
        path = found[step]
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="eager").eval()
        layers = tuple(range(model.config.num_hidden_layers + 1))
        known = ["state", *(f"layer_{i}" for i in layers)]
        features = parse_list(args.features) or known
        if not set(features) <= set(known):
            parser.error(f"unknown feature(s) {sorted(set(features) - set(known))}: expected some of {known}")
        if features == ["state"]:
            layers = ()  # the layer-mean state only: the traces `karel-hf reproduce` cached serve
        common = dict(batch_size=preset.batch_size, cache_dir=str(run / "traces"), fingerprint_extra={"step": step},
                      num_prompt_pairs=pairs, mode=args.mode, min_length=min_length, layers=layers,
                      progress=False)
        train = load_traces(build_trace_dataset(model, tokenizer, probe_rows, **common))
        test = load_traces(build_trace_dataset(model, tokenizer, test_rows, **common))
        if args.label_set != "v1" and (args.intervention or args.conditional_intervention):
            train = with_alternative_labels(train, probe_rows, args.label_set, OFFSETS, alternative_labels)
            test = with_alternative_labels(test, test_rows, args.label_set, OFFSETS, alternative_labels)
        tables = {offset: (with_previous(train, offset, pairs), with_previous(test, offset, pairs))
                  if args.given_previous else (train, test) for offset in offsets}
        for feature in features:
            for probe in parse_list(args.probes):
                for budget in budgets:
                    for offset in offsets:
                        options = dict(label_set=args.label_set, probe=probe, feature=feature, max_train_rows=budget,
                                       max_test_rows=args.max_test_rows, num_bootstrap=args.num_bootstrap,
                                       num_prompt_pairs=pairs)
                        scored = semantic_content(*tables[offset], offset, controls=("prompt_only", "conditional_gain"),
                                                  **options)
                        row = {"step": step, "label_set": args.label_set, "feature": feature, "probe": probe, "budget": budget, "offset": offset,
                               "given_previous": args.given_previous,
                               "semantic_content": scored["semantic_content"],
                               "prompt_only": scored["controls"]["prompt_only"],
                               "conditional_gain": scored["conditional_gain"], "num_train": scored["num_train"],
                               "num_test": scored["num_test"]}
                        alt = ""
                        if args.intervention and offset in intervention_offsets:
                            found_alt = intervention(train, test, offset, original=scored["semantic_content"], **options)
                            row["intervention"] = found_alt
                            alt = (f"{100 * found_alt['original_minus_best_alternative']:+.1f} "
                                   f"({found_alt['best_alternative']})")
                        if args.conditional_intervention and offset in intervention_offsets:
                            cond = conditional_intervention(train, test, offset, given_other=given_other, **options)
                            row["conditional_intervention"] = cond
                            alt += (f" gain: {100 * cond['original_minus_best_alternative']:+.1f} "
                                    f"({cond['best_alternative']})")
                            low = cond["discordant_minimum"]
                            if low:
                                alt += (f" where they differ: {100 * low['value']:+.1f} [{100 * low['low']:+.1f}, "
                                        f"{100 * low['high']:+.1f}] ({low['alternative']}, {low['num_rows']} rows)")
                            for name, cross in cond["given_other"].items():
                                alt += (f" given the other, {name}: {100 * cross['value']:+.1f} [{100 * cross['low']:+.1f}, "
                                        f"{100 * cross['high']:+.1f}] ({100 * cross['original_gain']:+.1f} / "
                                        f"{100 * cross['alternative_gain']:+.1f})")
                        results.append(row)
                        gain = scored["conditional_gain"]
                        line = (f"| {step} | {feature} | {probe} | {scored['num_train']} | {OFFSET_NAMES[offset]} "
                                f"| {100 * scored['semantic_content']:.1f} | {100 * row['prompt_only']:.1f} "
                                f"| {100 * gain['value']:+.1f} [{100 * gain['low']:+.1f}, {100 * gain['high']:+.1f}] "
                                f"| {alt} |")
                        print(line, flush=True)
                        lines.append(line)
        print(f"<!-- step {step}: {time.perf_counter() - tick:.0f} s -->", flush=True)
    regressions = accuracy_regressions(run, results)
    for r in regressions:
        print(f"accuracy ~ conditional gain, {r['feature']} {r['probe']} {r['budget'] or 'all'} rows, offset "
              f"{r['offset']:+d}: R^2 {r['r2']:.2f} over {r['n']} checkpoints (slope {r['slope']:.2f})")
    output = args.output or run / "probe_study.json"
    payload = {"run": str(run), "argv": sys.argv[1:], "machine": machine, "mode": args.mode,
               "programs_from": args.programs_from, "test_specs": len(test_rows),
               "probe_train_specs": len(probe_rows), "teacher_forced_min_length": min_length, "rows": results,
               "regressions": regressions}
    write_json(output, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
