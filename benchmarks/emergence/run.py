"""Run one emergence experiment from a JSON spec and append its outcome to the results table.

An experiment is `karel-hf reproduce` on a preset built from a spec: a built-in preset (`base`)
whose sections the spec's `model` / `dataset` / `training` / `reproduce` entries update, trained
with one seed in one precision. The measurement is the official one (karel_hf.probing, protocol
section 6b), so a row of the table is what `karel-hf reproduce` reports for that preset.

    python benchmarks/emergence/run.py benchmarks/emergence/specs/p2l6-demo.json --seed 0 --precision bf16

A spec:

    {"name": "p2l6-demo", "about": "why this run", "base": "demo",
     "dataset": {"num_prompt_pairs": 2, "max_length": 6, ...},
     "model": {"position_init": "grid"}, "training": {"max_steps": 4000}, "reproduce": {...}}

A curriculum: `"start_from": {"spec": "p2l6-cpu-ext-16k", "step": 16000}` starts the model from that
checkpoint of the named spec's run of the same seed and precision under the same --runs folder
(RUNS/<spec>-s<seed>-<precision>/model/checkpoint-<step>), instead of a fresh one; run that spec
first (LOG.md E45).

Each run writes RUNS/<name>-s<seed>-<precision>/ (the preset it ran as preset.yaml, every stage's
files) and appends one line to benchmarks/emergence/results.jsonl (everything summarised) and one
row to benchmarks/emergence/results.md (the table a reader scans): the spec, seed, machine (CPU
model and the flags that decide bf16's speed), precision, threads, wall and train time, and the
outcome. `--summarize` re-reads the finished run of that spec, seed and precision without running
it again (its wall time is then the sum of the stages' times).

Precision: `bf16` turns bf16 autocast on for training, `fp32` turns it off, `auto` keeps the preset's
`bf16_auto` (bf16 only where the CPU has AMX/AVX512-BF16). Evaluation runs in fp32 either way.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from karel_hf.utils import machine_info

HERE = Path(__file__).resolve().parent
RESULTS_JSONL = HERE / "results.jsonl"
RESULTS_MD = HERE / "results.md"
SPEC_KEYS = {"name", "about", "base", "model", "dataset", "training", "reproduce", "start_from"}
PRECISIONS = ("bf16", "fp32", "auto")
MD_HEADER = (
    "| date (UTC) | spec | seed | precision | CPU | threads | wall s | train s | steps | unseen test | floor "
    "| accuracy start -> end | gain -1 TF (untrained) | gain -1 gen | orig - best alt -1 TF | R^2 acc~gain -1 |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
)


class SpecError(ValueError):
    """A spec that cannot be run."""


def read_spec(path: Path) -> dict:
    """The spec at `path`, checked: a name, a built-in base preset, only known sections."""
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SpecError(f"spec {path}: {err}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
        raise SpecError(f"spec {path}: expected a JSON object with a non-empty 'name'")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise SpecError(f"spec {path}: unknown keys {sorted(unknown)}; expected {sorted(SPEC_KEYS)}")
    for section in ("model", "dataset", "training", "reproduce"):
        if not isinstance(spec.get(section, {}), dict):
            raise SpecError(f"spec {path}: '{section}' must be an object")
    start = spec.get("start_from")
    if start is not None and not (isinstance(start, dict) and set(start) == {"spec", "step"}
                                  and isinstance(start["spec"], str) and start["spec"]
                                  and isinstance(start["step"], int) and not isinstance(start["step"], bool)
                                  and start["step"] >= 0):
        raise SpecError(f"spec {path}: 'start_from' must be {{\"spec\": NAME, \"step\": STEP}}, got {start!r}")
    return spec


def start_checkpoint(spec: dict, seed: int, precision: str, runs: Path) -> Path | None:
    """The checkpoint a curriculum spec starts from (None without `start_from`); a SpecError naming
    the run to make first when it is not there."""
    start = spec.get("start_from")
    if start is None:
        return None
    path = Path(runs) / f"{start['spec']}-s{seed}-{precision}" / "model" / f"checkpoint-{start['step']}"
    if not (path / "config.json").is_file():
        raise SpecError(f"start_from: no checkpoint at {path}; run spec {start['spec']} with --seed {seed} "
                        f"--precision {precision} --runs {runs} first")
    return path


def build_preset(spec: dict, seed: int, precision: str) -> dict:
    """The preset sections a spec runs as: its base preset's, updated by the spec, seed and precision."""
    from karel_hf.presets import PresetError, load_preset

    if precision not in PRECISIONS:
        raise SpecError(f"precision: unknown value {precision!r}; expected one of {', '.join(PRECISIONS)}")
    try:
        base = load_preset(spec.get("base", "demo"))
    except PresetError as err:
        raise SpecError(f"spec {spec['name']}: base: {err}") from None
    sections = {
        "model": {**base.model, **spec.get("model", {})},
        # the base corpus by name; the spec's fields override its definition
        "dataset": {"name": base.corpus, **{k: v for k, v in base.corpus_fields.items() if k != "description"},
                    **spec.get("dataset", {})},
        "training": {**base.training, **spec.get("training", {}), "seed": int(seed)},
        "reproduce": {**(base.reproduce or {}), **spec.get("reproduce", {})},
    }
    if precision != "auto":
        sections["training"].update(bf16_auto=False, bf16=precision == "bf16")
    return sections


def run_child(command: list[str]) -> int:
    """Run `command` and return its exit status (128 + N if signal N ended it); SIGTERM, SIGINT and SIGHUP
    sent to this runner reach it too.

    Without the forwarding, killing the runner left `karel-hf reproduce` training on as an orphan.
    """
    child = subprocess.Popen(command)

    def forward(signum, frame):
        child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        rc = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - rc if rc < 0 else rc


def machine() -> dict:
    """CPU model, the flags that decide bf16's speed, thread count, torch, and any instruction-set limits
    (`karel_hf.utils.ISA_LIMITS`) the process runs under (karel_hf.utils.machine_info)."""
    return machine_info()


def _num(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def summarize(run_dir: Path) -> dict:
    """The outcome of a finished run, from its results.json: accuracy, floor, gains at offset -1."""
    results = json.loads((Path(run_dir) / "results.json").read_text(encoding="utf-8"))
    checkpoints = results["checkpoints"]
    first, last = checkpoints[0], checkpoints[-1]

    def probe(checkpoint, family, key="prev1"):
        return checkpoint["probes"].get(family, {}).get(key, {})

    def gain(checkpoint, family, key="prev1"):
        g = probe(checkpoint, family, key).get("conditional_gain") or {}
        return {k: _num(g.get(k)) for k in ("value", "low", "high")}

    intervention = last.get("intervention", {}).get("teacher_forced", {}).get("prev1", {})
    regression = results.get("regressions", {}).get("teacher_forced", {}).get("prev1", {}).get("conditional_gain")
    offsets = {family: {key: {**gain(last, family, key), "margin": _num(probe(last, family, key).get("margin"))}
                        for key in ("prev2", "prev1", "current", "next1", "next2")}
               for family in ("teacher_forced", "generated")}
    return {
        "steps": results["steps"],
        # the stricter of put_marker() and the best constant program of 1-2 actions
        "floor": max(_num(results["baselines"]["constant_program"]),
                     (results["baselines"].get("best_constant_program") or {}).get("accuracy", 0.0)),
        "floor_put_marker": _num(results["baselines"]["constant_program"]),
        "best_constant_program": results["baselines"].get("best_constant_program"),
        "accuracy": [_num(c["generation"]["accuracy"]) for c in checkpoints],
        "accuracy_start": _num(first["generation"]["accuracy"]),
        "accuracy_end": _num(last["generation"]["accuracy"]),
        "gain_tf_end": gain(last, "teacher_forced"),
        "gain_tf_untrained": gain(first, "teacher_forced"),
        "gain_gen_end": gain(last, "generated"),
        "original_minus_best_alternative_tf": _num(intervention.get("original_minus_best_alternative")),
        "best_alternative_tf": intervention.get("best_alternative"),
        "r2_accuracy_gain_tf": _num((regression or {}).get("r2")),
        "offsets_end": offsets,
        "timings_seconds": results.get("timings_seconds", {}),
    }


def _pct(x, signed=False):
    return "n/a" if x is None else (f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}%")


def _gain(g):
    return "n/a" if g["value"] is None else f"{100 * g['value']:+.1f} [{100 * g['low']:+.1f}, {100 * g['high']:+.1f}]"


def table_row(row: dict) -> str:
    s, m = row["summary"], row["machine"]
    cells = [
        row["date"], row["spec"], str(row["seed"]), row["precision"], f"{m['cpu']} ({', '.join(m['flags'])}"
        + (f"; limited to {', '.join(f'{k}={v}' for k, v in m['isa_limits'].items())}" if m.get("isa_limits") else "")
        + ")",
        str(m["threads"]), f"{row['wall_seconds']:.0f}", f"{s['timings_seconds'].get('train', float('nan')):.0f}",
        str(s["steps"][-1]), _pct(s.get("unseen_test")), _pct(s["floor"]),
        f"{_pct(s['accuracy_start'])} -> {_pct(s['accuracy_end'])}",
        f"{_gain(s['gain_tf_end'])} ({_pct(s['gain_tf_untrained']['value'], True)})", _gain(s["gain_gen_end"]),
        _pct(s["original_minus_best_alternative_tf"], True),
        "n/a" if s["r2_accuracy_gain_tf"] is None else f"{s['r2_accuracy_gain_tf']:.2f}",
    ]
    return "| " + " | ".join(cells) + " |\n"


def append(row: dict) -> None:
    """One line to results.jsonl, one row to results.md (created with its header)."""
    with RESULTS_JSONL.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
    if not RESULTS_MD.exists():
        RESULTS_MD.write_text("# Emergence experiments: one row per run of benchmarks/emergence/run.py\n\n"
                              "Gains are conditional gains at offset -1 (hidden state + prompt facts over prompt facts "
                              "alone), in points, with the 95% bootstrap interval; TF = teacher-forced reference "
                              "programs, gen = the model's own programs. See benchmarks/emergence/README.md.\n\n"
                              + MD_HEADER, encoding="utf-8")
    with RESULTS_MD.open("a", encoding="utf-8") as f:
        f.write(table_row(row))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--runs", type=Path, default=Path("runs/emergence"), help="Folder for the run folders.")
    parser.add_argument("--stages", default="train,evaluate,analyze,plot,report", help="karel-hf reproduce stages.")
    parser.add_argument("--no_record", action="store_true", help="Do not append to the results table.")
    parser.add_argument("--summarize", action="store_true", help="Only re-read the finished run and record it.")
    args = parser.parse_args(argv)
    try:
        spec = read_spec(args.spec)
        preset = build_preset(spec, args.seed, args.precision)
        start = start_checkpoint(spec, args.seed, args.precision, args.runs)
        if start is not None:
            preset["training"]["model_name_or_path"] = str(start.resolve())
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run_dir = args.runs / f"{spec['name']}-s{args.seed}-{args.precision}"
    if args.summarize:
        if not (run_dir / "results.json").is_file():
            print(f"error: no finished run at {run_dir} (results.json is missing)", file=sys.stderr)
            return 1
        wall = sum(json.loads((run_dir / "results.json").read_text())["timings_seconds"].values())
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        preset_file = run_dir / "preset.yaml"
        preset_file.write_text(yaml.safe_dump(preset, sort_keys=False), encoding="utf-8")
        start = time.perf_counter()
        command = [sys.executable, "-m", "karel_hf.cli", "reproduce", "--preset", str(preset_file),
                   "--output_dir", str(run_dir), "--stages", args.stages]
        print("running:", " ".join(command), flush=True)
        rc = run_child(command)
        wall = time.perf_counter() - start
        if rc != 0:
            print(f"error: karel-hf reproduce exited with {rc}; nothing recorded", file=sys.stderr)
            return rc
        if not (run_dir / "results.json").is_file():  # e.g. --stages train: nothing to summarise yet
            print(f"stages {args.stages} done in {wall:.0f} s; no results.json in {run_dir} yet (the analyze stage "
                  "writes it): nothing recorded")
            return 0
    summary = summarize(run_dir)
    from karel_hf.data.overlap import program_overlap

    dataset = dict(preset["dataset"])
    overlap = program_overlap(dataset.pop("name"), **{k: v for k, v in dataset.items() if k != "description"})
    seen = overlap.seen_in_train.get("test")
    summary["unseen_test"] = None if seen is None else 1.0 - seen
    summary["distinct_programs"] = overlap.distinct
    row = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"), "spec": spec["name"],
           "about": spec.get("about", ""), "seed": args.seed, "precision": args.precision, "machine": machine(),
           "wall_seconds": wall, "preset": preset, "run_dir": str(run_dir), "summary": summary}
    (run_dir / "emergence_row.json").write_text(json.dumps(row, indent=1, sort_keys=True), encoding="utf-8")
    if not args.no_record:
        append(row)
    print(table_row(row), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
