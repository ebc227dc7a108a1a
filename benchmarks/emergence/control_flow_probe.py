"""Probe a run trained on the extended language (if / ifelse / repeat / while) at its programs'
top-level statements, teacher-forced: the control-flow reading of LOG.md E43.

The reproduction's probe labels (karel_hf.probing.labels) are defined per action of a straight-line
program. With control flow an action may run many times or not at all, but the robot's state after
each whole top-level statement is defined. So a row here is a top-level statement k = 1..n of a
reference program (n = its top-level statements):
- the feature is the layer-mean hidden state (every hidden-state layer, embeddings included) at the
  token before statement k's first token, where the model is about to write statement k;
- the label at offset -1 (`direction_<i>_prev1`) is the robot's direction in spec input i after
  statements 1..k-1, run by the interpreter, under the real meaning and under each alternative
  meaning of the actions (karel_hf.karel.semantics; a prefix that exhausts the step budget under a
  meaning has no label there).

The table has the trace datasets' columns, so karel_hf.probing.measure scores it as it scores the
reproduction's: `semantic_content` (the conditional gain over the prompt facts: initial and output
direction, k, n) and `conditional_intervention` (the real meaning's gain minus the best informative
alternative's). Both are reported on every scored test row and on the *world-dependent* ones: rows
whose prefix turns the robot by different amounts on the spec's 10 inputs, where the direction is
not a function of the tokens read (in a straight-line program it always is).

`--features all` reads each hidden-state layer on its own too (`layer_0` is the embeddings), beside
the layer mean (`state`; E47), as rotation_probe.py names them; `--probe linear,mlp1` fits each
probe on each of them. The first reading (the first feature with the first probe) is also written at
the top of each checkpoint, as before. `--gains_only` fits only what the conditional gain needs and
scores the world-dependent rows from the same fits (a sweep; the intervention for the layer it picks).
`--gains_only --alternatives` adds each alternative meaning's gain from one fit per meaning, shared by
both parts (E50), and per part the margins where each alternative's labels differ from the real
ones, and where they are not a function of the real and initial labels (E59); `--given_other swap`
also fits each of the two meanings given the other's labels (E55).
`--checkpoints_of FIRST` reads the models from another run's checkpoints with RUN's rows, e.g. a
curriculum's first stage at step 0, the untrained model (E56). `--programs generated` reads the
model's own programs instead, decoded greedily from each prompt, training and test specs alike, each
statement labelled by running the written prefix (E60); `--programs_of CHECKPOINT` has another model
write them (a trained model's programs read by the untrained one). `--train_on world_dependent` fits the
probes on the training rows where the direction depends on the world only (E48). `--label rotation`
reads the rotation each prefix has made since the start in place of the direction, under every
meaning (`as_rotation`; E63: a linear probe can read a rotation the state holds, not the direction).
`--fit swap` fits the alternatives' probes for the named meanings only (each fit is the reading's
cost), on the rows every meaning labels, as without it (E68).
`--test_specs N` scores N test specs from the run's corpus with its test split generated again that
long, a new sample of held-out specs (the training rows stay the run's own), for rows that are few
in 1,000 specs (E67: where swap has left the mirror).

    python benchmarks/emergence/control_flow_probe.py RUN --steps 0,16000
    python benchmarks/emergence/control_flow_probe.py RUN --steps 16000 --features all --probe mlp1,linear --max_train_rows 8000
    python benchmarks/emergence/control_flow_probe.py RUN --steps 0,16000 --features layer_4 --gains_only --alternatives
    python benchmarks/emergence/control_flow_probe.py RUN --steps 0 --checkpoints_of FIRST --features layer_4 --gains_only
    python benchmarks/emergence/control_flow_probe.py RUN --steps 16000 --features layer_4 --gains_only --programs generated
    python benchmarks/emergence/control_flow_probe.py RUN --steps 16000 --features layer_4 --probe linear,mlp1 --gains_only --alternatives --label rotation
    python benchmarks/emergence/control_flow_probe.py RUN --steps 16000 --features layer_4 --gains_only --alternatives --test_specs 5000

Writes RUN/control_flow_probe.json (or --output) and prints one line per checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from karel_hf.probing.control_flow import (  # noqa: F401  (the study's names, re-exported)
    LAYOUT_TOKENS, alternative_gains, as_rotation, build_table, gains, generated_rows, measure, part_gain,
    prefix_directions, statement_starts, subset, with_feature, world_dependent_only,
)


def feature_names(features: str, num_layers: int) -> list[str]:
    """The features `--features` names: comma-separated `state` (the layer mean) and `layer_<i>`
    (hidden-state layer i, 0 the embeddings), or `all` (state, then every layer).

    >>> feature_names("all", 3)
    ['state', 'layer_0', 'layer_1', 'layer_2']
    >>> feature_names("state,layer_2", 5)
    ['state', 'layer_2']
    """
    if features == "all":
        return ["state"] + [f"layer_{i}" for i in range(num_layers)]
    names = [n.strip() for n in features.split(",")]
    for name in names:
        index = name[6:] if name.startswith("layer_") else ""
        if name != "state" and not (index.isdigit() and int(index) < num_layers):
            raise SystemExit(f"control_flow_probe: --features: {name!r} is not state or layer_0..layer_{num_layers - 1}")
    return names


def with_test_specs(run: Path, preset, test_specs: int):
    """`preset` reading `test_specs` test specs (E67): karel_hf.reproduce_control_flow.with_test_split
    (a new, longer test split; the training split and the probes' training rows are the run's own)."""
    from karel_hf.reproduce_control_flow import with_test_split

    if test_specs < 1:
        raise SystemExit(f"control_flow_probe: --test_specs must be at least 1, got {test_specs}")
    try:
        return with_test_split(run / "model", preset, test_specs)
    except ValueError as err:
        raise SystemExit(f"control_flow_probe: --test_specs: {err}") from None


def probe_run(run: Path, steps: list[int], probes: list[str], budgets: dict, semantics: tuple[str, ...],
              features: str = "state", gains_only: bool = False, train_on: str = "all",
              alternatives: bool = False, given_other: tuple[str, ...] = (),
              checkpoints_of: Path | None = None, programs: str = "reference",
              programs_of: Path | None = None, label: str = "direction", test_specs: int | None = None,
              fitted: tuple[str, ...] | None = None) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from karel_hf.reproduce import _data_rows, prompt_pairs, reproduce_preset
    from karel_hf.utils import checkpoint_dir

    preset_file = run / "preset.yaml"
    if not preset_file.is_file():
        raise SystemExit(f"control_flow_probe: {run} has no preset.yaml: not a run of benchmarks/emergence/run.py")
    preset = reproduce_preset(str(preset_file))
    if test_specs is not None:
        preset = with_test_specs(run, preset, test_specs)
    test_rows, train_rows, _ = _data_rows(run / "model", preset)
    pairs = prompt_pairs(test_rows)
    out = {"run": str(run), "probe": probes[0], "probes": probes, "features": features, "gains_only": gains_only,
           "alternatives": alternatives, "given_other": list(given_other),
           "checkpoints_of": str(checkpoints_of or run), "programs": programs,
           "programs_of": str(programs_of) if programs_of else None, "train_on": train_on, "label": label,
           "budgets": budgets, "test_specs": len(test_rows),
           "semantics": list(semantics), "fitted": list(fitted or semantics),
           "checkpoints": []}
    def written(writer, tokenizer) -> tuple[dict, dict]:  # (rows, counts) per split, the writer's programs
        pieces = {name: generated_rows(writer, tokenizer, rows, pairs)
                  for name, rows in (("train", train_rows), ("test", test_rows))}
        return {k: v[0] for k, v in pieces.items()}, {k: v[1] for k, v in pieces.items()}

    fixed = None  # --programs_of: one writer for every step, its programs decoded once
    if programs == "generated" and programs_of:
        fixed = written(AutoModelForCausalLM.from_pretrained(programs_of).eval(),
                        AutoTokenizer.from_pretrained(programs_of))
    for step in steps:
        path = checkpoint_dir((checkpoints_of or run) / "model", step)
        if not path.is_dir():
            raise SystemExit(f"control_flow_probe: {checkpoints_of or run} has no checkpoint at step {step}")
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        sources, generated = {"train": train_rows, "test": test_rows}, {}
        if programs == "generated":  # the model's own programs (or --programs_of's), training and test specs
            sources, generated = fixed or written(model, tokenizer)
        built = {name: build_table(model, tokenizer, rows, pairs, semantics) for name, rows in sources.items()}
        if train_on == "world_dependent":
            built["train"] = world_dependent_only(built["train"])
        if label == "rotation":  # the rotation since the start in place of the direction, every meaning's
            built = {name: as_rotation(b, pairs, semantics) for name, b in built.items()}
        test = built["test"]["table"]
        dependent = test["world_dependent"].astype(bool)
        found = {"step": step, "skipped": {k: v["skipped"] for k, v in built.items()},
                 "incomplete": {k: v["incomplete"] for k, v in built.items()},
                 "rows": {"train": len(built["train"]["table"]["step"]), "test": len(test["step"]),
                          "test_world_dependent": int(dependent.sum())},
                 "readings": []}
        if generated:
            found["generated"] = generated
            print(f"step {step}: generated programs, {100 * generated['test']['accuracy']:.1f}% right on the test "
                  f"specs; left out (unparsable) {generated['train']['left_out']} of {generated['train']['written']} "
                  f"training and {generated['test']['left_out']} of {generated['test']['written']} test specs",
                  flush=True)
        for name in feature_names(features, built["test"]["layers"]["states"].shape[1]):
            train, test = with_feature(built["train"], name), with_feature(built["test"], name)
            for probe in probes:
                if gains_only and alternatives:
                    reading = {"feature": name, "probe": probe,
                               **alternative_gains(train, test, dependent, pairs, probe, budgets,
                                                   fitted or semantics, given_other)}
                elif gains_only:
                    reading = {"feature": name, "probe": probe, **gains(train, test, dependent, pairs, probe, budgets)}
                else:
                    reading = {"feature": name, "probe": probe,
                               "all_rows": measure(train, test, pairs, semantics, probe, budgets),
                               "world_dependent": measure(train, subset(test, dependent), pairs, semantics, probe,
                                                          budgets)}
                found["readings"].append(reading)
                for part in ("all_rows", "world_dependent"):
                    m = reading[part]
                    gain = m["conditional_gain"]
                    versus = ("" if gains_only and not alternatives else
                              f"; original - best alternative ({m['best_alternative']}) "
                              f"{100 * m['original_minus_best_alternative']:+.1f}")
                    print(f"step {step} {name} {probe} {part}: gain -1 "
                          f"{100 * gain['value']:+.1f} [{100 * gain['low']:+.1f}, {100 * gain['high']:+.1f}] "
                          f"on {m['num_test_rows']} rows{versus}", flush=True)
                    lowest = m.get("discordant_minimum")
                    if lowest:
                        print(f"  where the labels differ: original - {lowest['alternative']} "
                              f"{100 * lowest['value']:+.1f} [{100 * lowest['low']:+.1f}, {100 * lowest['high']:+.1f}] "
                              f"on {lowest['num_rows']} rows (the smallest such margin)", flush=True)
                    best = m.get("best_alternative")
                    apart = m.get("undetermined", {}).get(best) if best else None
                    if apart:
                        print(f"  where {best}'s labels are not a function of the real and initial ones: original - "
                              f"{best} {100 * apart['value']:+.1f} [{100 * apart['low']:+.1f}, {100 * apart['high']:+.1f}] "
                              f"on {apart['num_rows']} rows", flush=True)
                    for other, g in m.get("given_other", {}).items():
                        print(f"  given the other's label, where they differ: original - {other} "
                              f"{100 * g['value']:+.1f} [{100 * g['low']:+.1f}, {100 * g['high']:+.1f}] "
                              f"on {g['num_rows']} rows; "
                              f"gains on every row of the part {100 * g['part']['original_gain']['value']:+.1f} / "
                              f"{100 * g['part']['alternative_gain']['value']:+.1f}", flush=True)
        found.update(all_rows=found["readings"][0]["all_rows"], world_dependent=found["readings"][0]["world_dependent"])
        out["checkpoints"].append(found)
    return out


def main(argv=None) -> int:
    from karel_hf.probing.measure import ALTERNATIVE_SEMANTICS
    from karel_hf.probing.probes import PROBES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run folder of benchmarks/emergence/run.py (preset.yaml, model/)")
    parser.add_argument("--steps", required=True, help="comma-separated checkpoint steps")
    parser.add_argument("--probe", default="mlp1", help="linear, mlp1 or mlp2, or several, comma-separated")
    parser.add_argument("--features", default="state",
                        help="comma-separated: state (the layer mean, the default) and/or layer_0 .. layer_<n_layer>; "
                             "all: state and every layer")
    parser.add_argument("--gains_only", action="store_true",
                        help="the conditional gain alone (2 fits per label instead of the intervention's dozens)")
    parser.add_argument("--alternatives", action="store_true",
                        help="with --gains_only: also each alternative meaning's gain, from one fit per meaning "
                             "shared by both parts, and the real meaning's lead over the best informative one")
    parser.add_argument("--given_other", default="",
                        help="with --alternatives: comma-separated alternative meanings (e.g. swap) whose probes and "
                             "the real meaning's are each also given the other's labels (2 more fits per name)")
    parser.add_argument("--programs", choices=("reference", "generated"), default="reference",
                        help="whose programs are read: the corpus's, teacher-forced (default), or the model's own, "
                             "decoded greedily from each prompt (the paper's reading)")
    parser.add_argument("--programs_of", type=Path,
                        help="with --programs generated: the checkpoint folder of the model that writes the programs "
                             "(default: the model read), e.g. a trained model's programs read by the untrained one")
    parser.add_argument("--train_on", choices=("all", "world_dependent"), default="all",
                        help="the probes' training rows: every row (default) or the world-dependent ones")
    parser.add_argument("--fit", default="",
                        help="with --gains_only --alternatives: comma-separated alternative meanings whose probes are "
                             "fitted (default: every one); every meaning still decides which rows are scored (E68)")
    parser.add_argument("--checkpoints_of", type=Path,
                        help="read the models from this run's checkpoints (e.g. a curriculum's first stage at step 0, "
                             "the untrained model) and the rows from RUN's corpus")
    parser.add_argument("--label", choices=("direction", "rotation"), default="direction",
                        help="what the probes read at -1: the robot's direction (default), or the rotation the "
                             "prefix has made since the start, (direction - initial direction) mod 4 (E63)")
    parser.add_argument("--test_specs", type=int,
                        help="score this many test specs: the corpus's test split generated again that long, a new "
                             "sample (E67); default: the run's own test specs")
    parser.add_argument("--max_train_rows", type=int, default=2000)
    parser.add_argument("--max_test_rows", type=int, default=None)
    parser.add_argument("--output", type=Path, help="default RUN/control_flow_probe.json")
    args = parser.parse_args(argv)
    try:
        steps = [int(s) for s in args.steps.split(",")]
    except ValueError:
        parser.error(f"--steps: expected comma-separated integers, got {args.steps!r}")
    if args.alternatives and not args.gains_only:
        parser.error("--alternatives goes with --gains_only (the full measure already fits the alternatives)")
    given_other = tuple(n.strip() for n in args.given_other.split(",") if n.strip())
    if given_other and not args.alternatives:
        parser.error("--given_other goes with --gains_only --alternatives")
    unknown = sorted(set(given_other) - set(ALTERNATIVE_SEMANTICS))
    if unknown:
        parser.error(f"--given_other: unknown meaning(s) {', '.join(unknown)}; expected some of "
                     f"{', '.join(ALTERNATIVE_SEMANTICS)}")
    fitted = tuple(n.strip() for n in args.fit.split(",") if n.strip()) or None
    if fitted and not args.alternatives:
        parser.error("--fit goes with --gains_only --alternatives")
    unknown = sorted(set(fitted or ()) - set(ALTERNATIVE_SEMANTICS))
    if unknown:
        parser.error(f"--fit: unknown meaning(s) {', '.join(unknown)}; expected some of {', '.join(ALTERNATIVE_SEMANTICS)}")
    if fitted and set(given_other) - set(fitted):
        parser.error("--given_other: each name must also be in --fit")
    if args.programs_of and args.programs != "generated":
        parser.error("--programs_of goes with --programs generated")
    if args.programs_of and not (args.programs_of / "config.json").is_file():
        parser.error(f"--programs_of: {args.programs_of} is not a checkpoint folder (no config.json)")
    budgets = {"max_train_rows": args.max_train_rows, "max_test_rows": args.max_test_rows}
    probes = [p.strip() for p in args.probe.split(",")]
    for probe in probes:
        if probe not in PROBES:
            parser.error(f"--probe: unknown probe {probe!r}; expected one of {', '.join(PROBES)}")
    result = probe_run(args.run, steps, probes, budgets, tuple(ALTERNATIVE_SEMANTICS), args.features,
                       args.gains_only, args.train_on, args.alternatives, given_other, args.checkpoints_of,
                       args.programs, args.programs_of, args.label, args.test_specs, fitted)
    output = args.output or args.run / "control_flow_probe.json"
    tmp = output.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=float))
    tmp.replace(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
