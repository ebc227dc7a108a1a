"""The viewer's data: one JSON-ready bundle read from a reproduction's saved files.

`build_bundle(run_dir)` reads what `karel-hf reproduce` saved (karel_hf/reproduce.py documents
the files) and recomputes none of it:

- `results.json`: the checkpoints, their generation accuracy and every probe family's numbers
  (semantic content, controls, conditional gain), the constant-program floor;
- `evaluations/test_specs.parquet`: the test specs (worlds, reference program);
- `evaluations/step-N.programs.parquet`: the program the model wrote for each test spec;
- `evaluations/step-N.rows.parquet`: the v1 probes' per-row predictions (true label, probe,
  prompt-only control, probe on state + prompt facts) of both families at offsets -2..+2;
- `model/checkpoint-N/`: which checkpoints exist (named as `karel-hf push model` names their
  revisions, `step-N`).

What it does compute is ground truth, with the Karel interpreter: the world after each action of
each program (generated or reference) on each of the spec's inputs, and whether the program maps
each input to its output (the generation metric's rule, `pairs_correct`). The probes' true labels
are the saved ones; the states agree with them (tests/test_viewer.py checks it).

Bundle format (`BUNDLE_FORMAT`), plain JSON; `views` (and the static page's script) read it:

    format, title, preset, num_prompt_pairs, tasks (v1 task names), families, offsets ([o, name]),
    directions (names of 0..3), drop_last, model_repo, baselines {constant_program, chance},
    checkpoints: [{step, revision, accuracy, accuracy_all_pairs,
                   probes: {family: {offset name: {semantic_content, unobserved, strongest_control,
                            strongest_control_value, prompt_only, conditional_gain {value, low,
                            high}, num_test}}}}],
    specs: [{id, length, inputs: [grid], outputs: [grid], reference: program index,
             programs: [{lines, action_lines, actions, parsed, states, correct}]}],
    generated: [[program index per spec] per checkpoint],
    rows: [{family: [[spec index, k, offset, task index, label, probe, prompt_only, conditional]]}
           per checkpoint]

A grid is {"rows": ["#..1", ...], "robot": [x, y, direction]} over the interior ('#' wall, '.'
empty, '1'-'9' markers; interior coordinates, y down; directions 0..3 = N, E, S, W; the robot's
cell shows no markers, as in the prompt). `states[i][k]` = [x, y, direction, markers] of the robot
on input i after k actions (k = 0: the input), `markers` being the count on its cell then: the
only cell an action changes, so a state is the input with those counts written in, in order.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from karel_hf.karel.interpreter import execute
from karel_hf.karel.program import format_program, parse
from karel_hf.karel.world import DIRECTION_NAMES, World, WorldFormatError
from karel_hf.karel.scoring import load_reference, pairs_correct
from karel_hf.probing.labels import OFFSET_NAMES

BUNDLE_FORMAT = 1
DEFAULT_MAX_SPECS = 100  # specs in a bundle by default (the page inlines them all)
FAMILIES = ("generated", "teacher_forced")
PROBE_KEYS = ("semantic_content", "unobserved", "strongest_control", "num_test")
ROW_KEYS = ("label", "probe", "prompt_only", "conditional")
_CELL_CHARS = {0: ".", 1: "#"}  # view codes: 0 empty, 1 wall, 2-5 robot, 6.. markers 1..9


class RunDirError(ValueError):
    """A run folder lacks what the viewer reads; the message names the file and the fix."""


# ------------------------------------------------------------------------------------ checks
def _fix(run_dir: Path, preset: str | None) -> str:
    preset_flag = f"--preset {preset} " if preset else ""
    return (f"re-run `karel-hf reproduce {preset_flag}--output_dir {run_dir} --stages evaluate,analyze,view,report` "
            "(cached trace datasets are reused; only the probes are refitted)")


def _read_results(run_dir: Path) -> dict:
    if not run_dir.is_dir():
        raise RunDirError(f"RUN_DIR {run_dir} does not exist or is not a folder: pass a `karel-hf reproduce` output dir")
    path = run_dir / "results.json"
    if not path.is_file():
        raise RunDirError(f"{path} not found: RUN_DIR must be a finished `karel-hf reproduce --output_dir RUN_DIR` "
                          "run (its analyze stage writes results.json)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}): re-run the analyze stage") from None
    if not isinstance(results, dict) or not results.get("checkpoints"):
        raise RunDirError(f"{path} lists no checkpoints: re-run `karel-hf reproduce --output_dir {run_dir} "
                          "--stages evaluate,analyze`")
    if results.get("language") == "extended":
        raise RunDirError(f"{run_dir} is a run on the extended language (if / repeat / while), which has no "
                          f"straight-line traces to view: its numbers are in {run_dir / 'report.md'}")
    return results


def _required(path: Path, run_dir: Path, preset: str | None, what: str) -> Path:
    if not path.is_file():
        raise RunDirError(f"{path} not found ({what}; runs from before the viewer lack it): {_fix(run_dir, preset)}")
    return path


def check_run_dir(run_dir: str | Path) -> dict:
    """The run's results.json, after checking that every file the viewer reads is there
    (`RunDirError`, one line naming the missing file and the command that writes it)."""
    run_dir = Path(run_dir).expanduser().resolve()
    results = _read_results(run_dir)
    evaluations = run_dir / "evaluations"
    preset = results.get("preset")
    if not evaluations.is_dir() or not any(evaluations.glob("step-*.json")):
        raise RunDirError(f"{evaluations} holds no step-N.json: run the evaluate stage "
                          f"(`karel-hf reproduce {'--preset ' + preset + ' ' if preset else ''}--output_dir {run_dir}`)")
    _required(evaluations / "test_specs.parquet", run_dir, preset, "the test specs")
    for entry in results["checkpoints"]:
        step = entry["step"]
        _required(evaluations / f"step-{step}.programs.parquet", run_dir, preset, f"the programs written at step {step}")
        _required(evaluations / f"step-{step}.rows.parquet", run_dir, preset, f"the per-row probe predictions at step {step}")
    return results


# ------------------------------------------------------------------------------------ worlds
def grid(codes) -> dict:
    """A view-code interior (rows, cols) as a bundle grid: rows of cell characters plus the robot."""
    codes = np.asarray(codes)
    robot = np.argwhere((codes >= 2) & (codes <= 5))
    if len(robot) != 1:
        raise WorldFormatError(f"a grid needs exactly one robot cell, found {len(robot)}")
    y, x = (int(v) for v in robot[0])
    rows = ["".join(_CELL_CHARS.get(int(c), str(int(c) - 5) if c >= 6 else ".") for c in row) for row in codes]
    return {"rows": rows, "robot": [x, y, int(codes[y, x]) - 2]}


def program_entry(text: str, inputs, outputs) -> dict:
    """One program on one spec: its text lines, the line of each action (straight-line programs),
    the robot's state on every input after every executed action, and per-pair correctness.
    `inputs`/`outputs` are (pairs, rows, cols) view codes. A text that does not parse gets no
    actions, the inputs as its only states, and no correct pair."""
    try:
        program = parse(text) if text else None
    except (ValueError, RecursionError):
        program = None
    worlds = [World.from_view_codes(np.asarray(codes)) for codes in inputs]
    if program is None:
        states = [[[w.x - 1, w.y - 1, w.direction, 0]] for w in worlds]
        return {"lines": text.split("\n") if text else [], "action_lines": [], "actions": [],
                "parsed": False, "states": states, "correct": [False] * len(worlds)}
    shown = format_program(program, "lines")
    lines = shown.split("\n")
    actions = []
    states = []
    for world in worlds:
        result = execute(program, world, trace=True)
        actions = actions or list(result.actions)
        path = [[world.x - 1, world.y - 1, world.direction, int(world.markers[world.y, world.x])]]
        path += [[s.x - 1, s.y - 1, s.direction, int(s.markers[s.y, s.x])] for s in result.states]
        states.append(path)
    spec = load_reference({"inputs": np.asarray(inputs), "outputs": np.asarray(outputs)})
    correct = [bool(pairs_correct(program, spec, i + 1, start=i)) for i in range(len(worlds))]
    action_lines = list(range(1, len(lines) - 1)) if program.is_straight_line else []
    return {"lines": lines, "action_lines": action_lines, "actions": actions, "parsed": True,
            "states": states, "correct": correct}


# ------------------------------------------------------------------------------------ bundle
def _number(value):
    """JSON-safe: NaN and infinities become None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _probe_summary(entry: dict) -> dict:
    gain = entry.get("conditional_gain") or {}
    controls = entry.get("controls") or {}
    strongest = entry.get("strongest_control")
    return {
        "semantic_content": _number(entry.get("semantic_content")),
        "unobserved": _number(entry.get("unobserved")),
        "strongest_control": strongest,
        "strongest_control_value": _number(controls.get(strongest)) if strongest else None,
        "prompt_only": _number(controls.get("prompt_only")),
        "conditional_gain": {k: _number(gain.get(k)) for k in ("value", "low", "high")},
        "num_test": int(entry.get("num_test") or 0),
    }


def _pick_specs(spec_ids: list[int], row_tables: list, max_specs: int | None) -> list[int]:
    """All specs, or the `max_specs` with the most probe rows over the checkpoints (ties: lower
    id first), in id order: capped bundles keep the specs that have predictions to show."""
    if not max_specs or max_specs >= len(spec_ids):
        return sorted(spec_ids)
    counts = dict.fromkeys(spec_ids, 0)
    for table in row_tables:
        ids, n = np.unique(table.column("example_id").to_numpy(), return_counts=True)
        for i, c in zip(ids.tolist(), n.tolist()):
            if i in counts:
                counts[i] += c
    ranked = sorted(spec_ids, key=lambda i: (-counts[i], i))
    return sorted(ranked[:max_specs])


def build_bundle(run_dir: str | Path, *, max_specs: int | None = DEFAULT_MAX_SPECS,
                 model_repo: str | None = None) -> dict:
    """The viewer's data for a reproduction folder (the module docstring gives the format).

    `max_specs` caps the test specs (None or 0: all of them; see `_pick_specs`); `model_repo`
    names the Hub model repository the checkpoints were pushed to (`karel-hf push model`), shown
    with each checkpoint's revision.
    """
    if max_specs is not None and max_specs < 0:
        raise ValueError(f"max_specs must be >= 0 (0 or None: every test spec), got {max_specs}")
    run_dir = Path(run_dir).expanduser().resolve()
    results = check_run_dir(run_dir)
    evaluations = run_dir / "evaluations"
    checkpoints = results["checkpoints"]
    first = checkpoints[0]["probes"]["generated"]["current"]
    tasks = sorted(first.get("per_task") or {"direction_0": None})
    pairs = len(tasks)
    specs_table = pq.read_table(evaluations / "test_specs.parquet").to_pylist()
    by_id = {int(s["id"]): s for s in specs_table}
    programs = [pq.read_table(evaluations / f"step-{e['step']}.programs.parquet").to_pylist() for e in checkpoints]
    row_tables = [pq.read_table(evaluations / f"step-{e['step']}.rows.parquet") for e in checkpoints]
    for e, table in zip(checkpoints, programs):
        unknown = {int(r["example_id"]) for r in table} - set(by_id)
        if unknown:
            raise RunDirError(f"{evaluations}/step-{e['step']}.programs.parquet names specs missing from "
                              f"test_specs.parquet (e.g. {min(unknown)}): {_fix(run_dir, results.get('preset'))}")
    chosen = _pick_specs(list(by_id), row_tables, max_specs)
    index = {spec_id: i for i, spec_id in enumerate(chosen)}

    specs = []
    entries: list[dict[str, int]] = []  # per spec: program text -> index in its programs list
    for spec_id in chosen:
        spec = by_id[spec_id]
        inputs, outputs = np.asarray(spec["inputs"], dtype=np.int8), np.asarray(spec["outputs"], dtype=np.int8)
        reference = program_entry(spec["program"], inputs, outputs)
        specs.append({"id": spec_id, "length": int(spec["length"]), "inputs": [grid(g) for g in inputs],
                      "outputs": [grid(g) for g in outputs], "reference": 0, "programs": [reference]})
        entries.append({})
    generated = []
    for table in programs:
        written = {int(r["example_id"]): r["program"] or "" for r in table}
        column = []
        for i, spec_id in enumerate(chosen):
            text = written.get(spec_id, "")
            if text not in entries[i]:
                spec = by_id[spec_id]
                entries[i][text] = len(specs[i]["programs"])
                specs[i]["programs"].append(program_entry(text, np.asarray(spec["inputs"], dtype=np.int8),
                                                          np.asarray(spec["outputs"], dtype=np.int8)))
            column.append(entries[i][text])
        generated.append(column)

    rows = []
    task_index = {t: i for i, t in enumerate(tasks)}
    for table in row_tables:
        columns = table.to_pydict()
        per_family: dict[str, list] = {f: [] for f in FAMILIES}
        for j, spec_id in enumerate(columns["example_id"]):
            if spec_id not in index or columns["task"][j] not in task_index:
                continue
            per_family.setdefault(columns["family"][j], []).append(
                [index[spec_id], int(columns["step"][j]), int(columns["offset"][j]), task_index[columns["task"][j]],
                 *(int(columns[k][j]) for k in ROW_KEYS)])
        rows.append(per_family)

    # `karel-hf push model` publishes model/checkpoint-N as revision step-N
    revisions = {int(e["step"]): f"step-{e['step']}" for e in checkpoints
                 if (run_dir / "model" / f"checkpoint-{e['step']}").is_dir()}
    bundle_checkpoints = []
    for e in checkpoints:
        bundle_checkpoints.append({
            "step": int(e["step"]),
            "revision": revisions.get(int(e["step"])),
            "accuracy": _number(e["generation"]["accuracy"]),
            "accuracy_all_pairs": _number(e["generation"].get("accuracy_all_pairs")),
            "probes": {f: {name: _probe_summary(e["probes"][f][name]) for name in OFFSET_NAMES.values()}
                       for f in FAMILIES},
        })
    baselines = results.get("baselines", {})
    return {
        "format": BUNDLE_FORMAT,
        "title": f"karel_hf trace viewer: {run_dir.name} (preset {results.get('preset', '?')})",
        "preset": results.get("preset"),
        "num_prompt_pairs": pairs,
        "tasks": tasks,
        "families": list(FAMILIES),
        "offsets": [[o, name] for o, name in OFFSET_NAMES.items()],
        "directions": list(DIRECTION_NAMES),
        "drop_last": bool(first.get("drop_last", True)),
        "model_repo": model_repo,
        "baselines": {"constant_program": _number(baselines.get("constant_program")),
                      "chance": _number(baselines.get("probe_chance", 0.25))},
        "checkpoints": bundle_checkpoints,
        "specs": specs,
        "generated": generated,
        "rows": rows,
    }


def bundle_json(bundle: dict) -> str:
    """The bundle as compact JSON text (what the page inlines and the Space ships)."""
    return json.dumps(bundle, separators=(",", ":"), allow_nan=False)
