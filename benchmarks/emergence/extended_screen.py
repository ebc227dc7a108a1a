"""Generation accuracy of a run trained on the extended language (if / ifelse / repeat / while), for
a screen of the control-flow task (LOG.md E43, E44).

`karel-hf reproduce` probes straight-line programs only (karel_hf.probing.labels), so its evaluate
stage cannot read such a run. This script reads what can be read before the probes exist: at each
chosen checkpoint, grammar-constrained greedy decoding in the extended language on the run's test
specs, scored on the prompt pairs and on all pairs (karel_hf.decoding.evaluate_generation's numbers
and the share of written programs that use control flow), beside the floors (`put_marker()` and the
best constant program of 1-2 actions), the share of specs that some straight-line program of up to
`--straight_line_max` actions solves on the prompt pairs (what an extended task leaves to straight-line
programs), and two facts about the test split: the share of its
reference programs with control flow, and the share whose program text occurs in the training split,
with the accuracy on the others (0 with a held-out split, `heldout_fraction` > 0; LOG.md E44);
`--seen_in RUN ...` counts the training programs of a curriculum's earlier runs as seen too (E45).

    python benchmarks/emergence/extended_screen.py RUNS/p2l6-cpu-ext-16k-s0-bf16 --steps 0,8000,16000

Writes RUN/extended_screen.json (or --output) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from karel_hf.reproduce_control_flow import control_flow_share  # noqa: F401  (the study's name, re-exported)


def straight_line_ceiling(references, num_spec_pairs: int, max_length: int) -> dict[int, float]:
    """{L: share of the references whose prompt pairs some straight-line program of at most L actions
    solves}, L = 1..max_length: how much of an extended task straight-line programs can do. Every
    program of 1..max_length actions is run on each reference's prompt inputs by the batched engine
    (karel_hf.karel.batched.run_straight_line) and its output views compared: a brute force,
    independent of the corpus rule's search (karel_hf.karel.compiled.straight_line_solves)."""
    from itertools import product

    import numpy as np

    from karel_hf.karel.batched import WorldBatch, run_straight_line, view_codes
    from karel_hf.metrics.generation import load_reference

    rows = [list(a) + [-1] * (max_length - n) for n in range(1, max_length + 1) for a in product(range(5), repeat=n)]
    programs = np.array(rows, dtype=np.int8).reshape(-1, max_length)
    length = (programs >= 0).sum(axis=1)
    n, P = len(programs), num_spec_pairs
    shortest = []
    for reference in references:
        spec = load_reference(reference)
        worlds = spec.inputs[:P]
        height, width = worlds[0].walls.shape
        walls = np.array([w.walls[1:-1, 1:-1].reshape(-1) for w in worlds])
        markers = np.array([w.markers[1:-1, 1:-1].reshape(-1) for w in worlds], dtype=np.int8)
        robot = np.array([(w.y - 1) * (width - 2) + w.x - 1 for w in worlds])
        direction = np.array([w.direction for w in worlds], dtype=np.int8)
        batch = WorldBatch(np.tile(walls, (n, 1)), np.tile(markers, (n, 1)), np.tile(robot, n), np.tile(direction, n))
        out_markers, out_robot, out_direction, _, _ = run_straight_line(batch, programs, num_pairs=P, height=height,
                                                                        width=width)
        views = view_codes(batch.walls, out_markers, out_robot, out_direction).reshape(n, P, -1)
        expected = np.array([np.asarray(v).reshape(-1) for v in spec.outputs[:P]])
        solved = (views == expected[None]).all(axis=(1, 2))
        shortest.append(length[solved].min() if solved.any() else max_length + 1)
    shortest = np.array(shortest)
    return {k: float((shortest <= k).mean()) if len(shortest) else 0.0 for k in range(1, max_length + 1)}


def screen(run: Path, steps: list[int] | None, batch_size: int = 64, straight_line_max: int = 6,
           seen_in: list[Path] = ()) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from karel_hf.decoding import decode, prompts_from_rows
    from karel_hf.metrics.generation import (best_constant_program_baseline, compute_generation_accuracy,
                                             constant_program_baseline)
    from karel_hf.reproduce import _data_rows, prompt_pairs, reproduce_preset
    from karel_hf.utils import checkpoint_dir

    preset_file = run / "preset.yaml"
    if not preset_file.is_file():
        raise SystemExit(f"extended_screen: {run} has no preset.yaml: not a run of benchmarks/emergence/run.py")
    preset = reproduce_preset(str(preset_file))
    test_rows, _, _ = _data_rows(run / "model", preset)
    train_programs = set(_train_programs(run, preset))
    for earlier in seen_in:  # a curriculum's earlier stages: their training programs were seen too
        if not (earlier / "preset.yaml").is_file():
            raise SystemExit(f"extended_screen: --seen_in {earlier} has no preset.yaml: not a run of "
                             "benchmarks/emergence/run.py")
        train_programs |= set(_train_programs(earlier, reproduce_preset(str(earlier / "preset.yaml"))))
    pairs = prompt_pairs(test_rows)
    references = list(test_rows)
    available = sorted(int(p.name.split("-")[1]) for p in (run / "model").glob("checkpoint-*") if p.name.split("-")[1].isdigit())
    chosen = available if steps is None else steps
    missing = sorted(set(chosen) - set(available))
    if missing:
        raise SystemExit(f"extended_screen: no checkpoint at step(s) {missing}; the run has {available}")
    out = {
        "run": str(run), "seen_in": [str(p) for p in seen_in], "num_test_specs": len(references), "prompt_pairs": pairs,
        "test_with_control_flow": control_flow_share(test_rows["program"]),
        "test_seen_in_train": sum(p in train_programs for p in test_rows["program"]) / len(references),
        "floor_put_marker": constant_program_baseline(references, pairs)["accuracy"],
        "floor_best_constant": best_constant_program_baseline(references, pairs),
        "straight_line_ceiling": straight_line_ceiling(references, pairs, straight_line_max),
        "checkpoints": [],
    }
    for step in chosen:
        path = checkpoint_dir(run / "model", step)
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        written = decode(model, tokenizer, prompts_from_rows(references, pairs), batch_size=batch_size,
                         extended=True, progress=False).programs
        numbers = compute_generation_accuracy(written, references, num_spec_pairs=pairs)
        numbers["written_with_control_flow"] = control_flow_share(written)
        unseen = [i for i, p in enumerate(test_rows["program"]) if p not in train_programs]
        numbers["accuracy_unseen"] = (compute_generation_accuracy([written[i] for i in unseen], [references[i] for i in unseen],
                                                                  num_spec_pairs=pairs)["accuracy"] if unseen else None)
        out["checkpoints"].append({"step": step, **numbers})
        print(f"step {step}: accuracy {100 * numbers['accuracy']:.1f}% ({_pct(numbers['accuracy_unseen'])} on unseen programs), all pairs {100 * numbers['accuracy_all_pairs']:.1f}%, "
              f"control flow in {100 * numbers['written_with_control_flow']:.0f}% of the programs written", flush=True)
    return out


def _train_programs(run: Path, preset) -> list[str]:
    from karel_hf.training import load_raw_datasets, parse_train_args

    argv = ["--preset", preset.train_preset, "--output_dir", str(run / "model"), *preset.train_overrides]
    _, data_args, _, _ = parse_train_args(argv)
    return load_raw_datasets(data_args)["train"]["program"]


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def table(result: dict) -> str:
    best = result["floor_best_constant"]
    lines = [f"test specs {result['num_test_specs']} ({result['prompt_pairs']} prompt pairs); "
             f"{100 * result['test_with_control_flow']:.1f}% of their programs use control flow, "
             f"{100 * result['test_seen_in_train']:.1f}% occur in the training split; floors: put_marker() "
             f"{100 * result['floor_put_marker']:.1f}%, best constant program {100 * best['accuracy']:.1f}% "
             f"({best['program'].strip()}); a straight-line program of at most "
             + ", ".join(f"{k} action{'' if int(k) == 1 else 's'} solves {100 * v:.1f}%"
                         for k, v in result["straight_line_ceiling"].items())
             + " of the specs on their prompt pairs", "",
             "| step | accuracy | on unseen programs | all pairs | parsed | programs written with control flow |",
             "|---|---|---|---|---|---|"]
    for c in result["checkpoints"]:
        lines.append(f"| {c['step']} | {100 * c['accuracy']:.1f}% | {_pct(c['accuracy_unseen'])} | {100 * c['accuracy_all_pairs']:.1f}% | "
                     f"{100 * c['parse_rate']:.1f}% | {100 * c['written_with_control_flow']:.1f}% |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run folder of benchmarks/emergence/run.py (preset.yaml, model/)")
    parser.add_argument("--steps", default="all", help="comma-separated checkpoint steps, or all")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--straight_line_max", type=int, default=6,
                        help="longest straight-line programs tried for the ceiling (6: about 10 s on 1,000 specs of 2 pairs)")
    parser.add_argument("--output", type=Path, help="default RUN/extended_screen.json")
    parser.add_argument("--seen_in", type=Path, nargs="*", default=[],
                        help="runs whose training programs count as seen too (a curriculum's earlier stages)")
    args = parser.parse_args(argv)
    try:
        steps = None if args.steps == "all" else [int(s) for s in args.steps.split(",")]
    except ValueError:
        parser.error(f"--steps: expected comma-separated integers or all, got {args.steps!r}")
    if args.straight_line_max < 0:
        parser.error("--straight_line_max: expected 0 or more")
    result = screen(args.run, steps, args.batch_size, args.straight_line_max, args.seen_in)
    output = args.output or args.run / "extended_screen.json"
    tmp = output.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(output)
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
