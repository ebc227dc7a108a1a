"""`karel-hf reproduce` on a corpus in the extended language (if / ifelse / repeat / while), such as
the `cpu-cf` preset's: the evaluate, analyze, plot and report stages of such a run.

The straight-line reading (karel_hf.probing.labels) labels each action; with control flow an
action may run many times or not at all. So here a probe row is a top-level statement of a test
spec's reference program, read teacher-forced, and its label the robot's direction after the
statements before it (karel_hf.probing.control_flow; LOG.md E43-E60). The files:

    evaluate   DIR/evaluations/step-N.json   per checkpoint of the preset's own stage: generation
               accuracy (grammar-constrained greedy decoding in the extended language, scored on
               the prompt pairs and on all 10), the share of written programs with control flow,
               and the conditional gain at -1 (the preset's probe on the last layer's state, over
               the prompt facts) on every scored statement and on the world-dependent ones (where
               the direction is not a function of the tokens read); at the final checkpoint each
               alternative meaning's gain too and the real meaning's lead over the best informative
               one (`control_flow.alternative_gains`); with the preset's `rotation_probe`, the same
               reading of the rotation each prefix has made since the start, (direction - initial
               direction) mod 4, by that probe (`rotation`: a linear probe reads the rotation the
               state holds where it cannot read the direction, LOG.md E21, E63)
               DIR/evaluations/untrained.json   the same reading, alternatives included, by the
               untrained model (the first stage's step 0) on the same rows
               DIR/evaluations/test_facts.json  the test specs' floors and the share of their
               programs that occur in any stage's training split
               DIR/evaluations/alternatives-more-specs.json   with the preset's
               `alternatives_test_specs` N: the final checkpoint's and the untrained model's real
               meaning against the best alternative again, on N test specs (the test split generated
               again that long; the probes' training rows are the same), so that the margin where
               that alternative's labels are not a function of the real ones has enough rows
               DIR/evaluations/trajectory/<stage>-step-N.json   with the preset's
               `trajectory_test_specs` N: accuracy and the real meaning's gain (on N test specs) at
               every `trajectory_stride`-th checkpoint of the last two stages of the curriculum,
               where accuracy rises from the floor (`trajectory_checkpoints`)
    analyze    DIR/results.json   the above per checkpoint, the regressions of accuracy on each
               gain over the checkpoints, the controls, timings and machines
    plot       DIR/figures/fig_control_flow.png
    report     DIR/report.md

Every checkpoint's probes are fitted on the same rows: the reference programs of the probe-training
and test specs, at most `max_train_rows` / `max_test_rows` of them (seeded subsample). Step 0 of a
curriculum's last stage is the stage before's final model; the untrained control is the first
stage's step 0. The regressions per checkpoint use the preset's own stage's checkpoints; the
trajectory's, the last two stages'. Each row set is labelled once (`label_split`): only the states
change between checkpoints. The readings are independent of one another (the alternatives on more
specs wait only on the final checkpoint's), so with the preset's `eval_workers` N they run N at a
time, each in a spawned process (`run_readings`); the numbers are the same as in one process.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from karel_hf.reproduce import _gain, _json_default, _pct, _points
from karel_hf.utils import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    library_versions,
    machine_info,
    model_checkpoints,
)

logger = logging.getLogger(__name__)

UNTRAINED_FILE = "untrained.json"
MORE_SPECS_FILE = "alternatives-more-specs.json"
FACTS_FILE = "test_facts.json"
TRAJECTORY_DIR = "trajectory"
FIGURE = "fig_control_flow.png"
TRAJECTORY_FIGURE = "fig_trajectory.png"
PARTS = ("all_rows", "world_dependent")
PART_NAMES = {"all_rows": "every statement", "world_dependent": "world-dependent statements"}


def control_flow_share(programs) -> float:
    """The share of program texts (None or unparsable: none) that are not straight-line.

    >>> control_flow_share(["def run() { move() }", "def run() { repeat(2) { move() } }", None])
    0.3333333333333333
    """
    from karel_hf.karel import parse

    def has_control(text):
        try:
            return not parse(text).is_straight_line
        except (TypeError, ValueError):
            return False

    programs = list(programs)
    return sum(has_control(p) for p in programs) / len(programs) if programs else 0.0


# -------------------------------------------------------------------------------------- evaluate
def read_states(model, tokenizer, train_rows, test_rows, preset, pairs: int, alternatives: bool,
                only: tuple[str, ...] | None = None, labelled: dict | None = None) -> dict:
    """The conditional gain at -1 of `preset.probe` on the last layer's state at each top-level statement
    of the reference programs of `train_rows` (fit) and `test_rows` (scored): on every scored row and
    on the world-dependent ones; with `alternatives`, each alternative meaning's too
    (`control_flow.alternative_gains`, trimmed to the gains, the best informative alternative, the
    margin over it, and each alternative's margin on the rows where its labels are not a function of
    the real and initial ones, `undetermined`). Every meaning's labels are built either way, so the scored rows are the same.
    With `preset.rotation_probe`, `rotation` holds that probe's same reading of the rotation since the
    start (`control_flow.as_rotation`) on the same rows and states. `only`: with `alternatives`, only
    these alternatives' probes are fitted (every meaning still decides which rows are scored).
    `labelled`: `label_rows(train_rows)` and `label_rows(test_rows)` as `train` and `test`
    (`label_split`), made once for a reading of many checkpoints; the same numbers as without."""
    from threadpoolctl import threadpool_limits  # a scikit-learn requirement

    from karel_hf.probing.control_flow import alternative_gains, as_rotation, build_table, gains, with_feature
    from karel_hf.probing.measure import ALTERNATIVE_SEMANTICS

    semantics = tuple(ALTERNATIVE_SEMANTICS)
    # the study's batch of 32 (control_flow.build_table's): padding changes the states in their last bits,
    # and an MLP probe's gains by a few tenths of a point
    built = {name: build_table(model, tokenizer, rows, pairs, semantics, labelled=(labelled or {}).get(name))
             for name, rows in (("train", train_rows), ("test", test_rows))}
    layer = built["test"]["layers"]["states"].shape[1] - 1 if len(built["test"]["table"]["step"]) else 0
    feature = f"layer_{layer}"
    train, test = with_feature(built["train"], feature), with_feature(built["test"], feature)
    dependent = np.asarray(test["world_dependent"], dtype=bool)
    budgets = {"max_train_rows": preset.max_train_rows, "max_test_rows": preset.max_test_rows,
               "num_bootstrap": preset.num_bootstrap}
    rows = {"train": int(len(train["step"])), "test": int(len(test["step"])),
            "test_world_dependent": int(dependent.sum()),
            "skipped": {k: v["skipped"] for k, v in built.items()},
            "incomplete": {k: v["incomplete"] for k, v in built.items()}}
    if not rows["train"] or not rows["test"]:
        nan = {"value": float("nan"), "low": float("nan"), "high": float("nan")}
        empty = {part: {"conditional_gain": nan, "num_test_rows": 0} for part in PARTS}
        rotation = {"rotation": {"probe": preset.rotation_probe, **empty}} if preset.rotation_probe else {}
        return {"feature": feature, "probe": preset.probe, "rows": rows, **empty, **rotation}

    def fit(train, test, probe: str) -> dict:
        with threadpool_limits(limits=preset.probe_threads or None):
            if alternatives:
                found = alternative_gains(train, test, dependent, pairs, probe, budgets, only or semantics)
            else:
                found = gains(train, test, dependent, pairs, probe, budgets)
        parts = {}
        for part in PARTS:
            entry = {"conditional_gain": found[part]["conditional_gain"], "num_test_rows": found[part]["num_test_rows"]}
            if alternatives:
                entry.update(gains=found[part]["gains"], best_alternative=found[part]["best_alternative"],
                             original_minus_best_alternative=found[part]["original_minus_best_alternative"],
                             undetermined=found[part]["undetermined"])
            parts[part] = entry
        return parts

    reading = {"feature": feature, "probe": preset.probe, "rows": rows, **fit(train, test, preset.probe)}
    if preset.rotation_probe:  # the same rows and states, every meaning's label turned into its rotation
        turned = {name: with_feature(as_rotation(b, pairs, semantics), feature) for name, b in built.items()}
        reading["rotation"] = {"probe": preset.rotation_probe,
                               **fit(turned["train"], turned["test"], preset.rotation_probe)}
    return reading


def label_split(path: Path, probe_rows, test_rows, pairs: int) -> dict:
    """`read_states`'s `labelled` for these rows, with the tokenizer of the checkpoint at `path`."""
    from transformers import AutoTokenizer

    from karel_hf.probing.control_flow import label_rows
    from karel_hf.probing.measure import ALTERNATIVE_SEMANTICS

    tokenizer = AutoTokenizer.from_pretrained(path)
    return {name: label_rows(tokenizer, rows, pairs, tuple(ALTERNATIVE_SEMANTICS))
            for name, rows in (("train", probe_rows), ("test", test_rows))}


def generation(model, tokenizer, test_rows, preset, pairs: int) -> dict:
    """Grammar-constrained greedy decoding from each test spec's prompt, scored (module docstring)."""
    from karel_hf.decoding import decode, prompts_from_rows
    from karel_hf.metrics.generation import compute_generation_accuracy

    references = list(test_rows)
    written = decode(model, tokenizer, prompts_from_rows(references, pairs), batch_size=preset.batch_size,
                     extended=True, progress=False).programs
    numbers = compute_generation_accuracy(written, references, num_spec_pairs=pairs)
    return {"accuracy": numbers["accuracy"], "accuracy_all_pairs": numbers["accuracy_all_pairs"],
            "parse_rate": numbers["parse_rate"], "with_control_flow": control_flow_share(written)}


def evaluate_checkpoint(step: int, path: Path, test_rows, probe_rows, preset, pairs: int, alternatives: bool,
                        labelled: dict | None = None) -> dict:
    """Generation accuracy and the state reading of one checkpoint (see the module docstring)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    written = generation(model, tokenizer, test_rows, preset, pairs)
    decoded = time.perf_counter()
    reading = read_states(model, tokenizer, probe_rows, test_rows, preset, pairs, alternatives, labelled=labelled)
    return {"step": step, "language": "extended", "generation": written, "reading": reading,
            "timings_seconds": {"generation": decoded - start, "reading": time.perf_counter() - decoded}}


def with_test_split(model_dir: Path, preset, test_specs: int):
    """`preset` reading `test_specs` test specs: the run's corpus with its test split generated again
    that long (LOG.md E67). The split deals its examples out over the lengths in exact counts
    (karel_hf.karel.sampling), so these are a new sample of the held-out programs' specs, not the
    run's own followed by more; the training split, and so the probes' training rows, are the run's own."""
    import dataclasses

    from karel_hf.reproduce import train_argv
    from karel_hf.training import parse_train_args
    from karel_hf.utils import format_overrides

    if test_specs < 1:
        raise ValueError(f"test specs: must be at least 1, got {test_specs}")
    _, data_args, _, _ = parse_train_args(train_argv(model_dir, preset))
    if data_args.dataset_path:
        raise ValueError(f"{model_dir} reads its corpus from {data_args.dataset_path}, which cannot be generated "
                         "with more test examples")
    overrides = {**data_args.load_karel_overrides(), "test_size": test_specs}
    return dataclasses.replace(preset, test_specs=test_specs, train_overrides=(
        *preset.train_overrides, "--dataset_overrides", format_overrides(overrides)))


def longer_split(model_dir: Path, preset, test_specs: int, path: Path) -> tuple:
    """(preset, test rows, probe-training rows, pairs, labelled) for a reading on `test_specs` test
    specs without the rotation (`with_test_split`), labelled with the tokenizer at `path`."""
    import dataclasses

    from karel_hf.reproduce import _data_rows, prompt_pairs

    longer = dataclasses.replace(with_test_split(model_dir, preset, test_specs), rotation_probe="")
    test_rows, probe_rows, _ = _data_rows(model_dir, longer)
    pairs = prompt_pairs(test_rows)
    return longer, test_rows, probe_rows, pairs, label_split(path, probe_rows, test_rows, pairs)


def read_more_specs(step: int, path: Path, untrained: Path, model_dir: Path, preset, fit: tuple[str, ...],
                    split: tuple | None = None) -> dict:
    """The final checkpoint (`path`, `step`) and the untrained model read again on
    `preset.alternatives_test_specs` test specs, alternatives `fit` only, without the rotation reading.
    `split`: `longer_split`'s result for those specs, when already made."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    longer, test_rows, probe_rows, pairs, labelled = split or longer_split(
        model_dir, preset, preset.alternatives_test_specs, path)
    readings = {}
    for name, folder in (("trained", path), ("untrained", untrained)):
        if name == "untrained" and not (folder / "config.json").is_file():
            continue
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        readings[name] = read_states(model, AutoTokenizer.from_pretrained(folder), probe_rows, test_rows, longer,
                                     pairs, alternatives=True, only=fit, labelled=labelled)
    return {"step": step, "test_specs": len(test_rows), "fitted": list(fit), **readings,
            "timings_seconds": {"reading": time.perf_counter() - start}}


def first_model_dir(out: Path, model_dir: Path, preset) -> Path:
    """The folder whose step 0 is the untrained model: the first curriculum stage's, else the run's."""
    from karel_hf.reproduce import curriculum_dirs

    earlier = curriculum_dirs(out, preset)
    return earlier[0][1] if earlier else model_dir


def test_facts(out: Path, model_dir: Path, preset, test_rows, pairs: int) -> dict:
    """The test specs' floors and the share of their programs found in the training split of any stage."""
    from karel_hf.metrics.generation import best_constant_program_baseline, constant_program_baseline
    from karel_hf.reproduce import curriculum_dirs, train_argv
    from karel_hf.training import load_raw_datasets, parse_train_args

    seen = set()
    argvs = [["--preset", stage, "--output_dir", str(folder)] for stage, folder in curriculum_dirs(out, preset)]
    for argv in (*argvs, train_argv(model_dir, preset)):
        _, data_args, _, _ = parse_train_args(argv)
        seen |= set(load_raw_datasets(data_args)["train"]["program"])
    programs = list(test_rows["program"])
    references = list(test_rows)
    return {"num_test_specs": len(programs), "prompt_pairs": pairs,
            "stages": len(argvs) + 1,
            "test_seen_in_training": sum(p in seen for p in programs) / len(programs) if programs else float("nan"),
            "test_with_control_flow": control_flow_share(programs),
            "floor_put_marker": constant_program_baseline(references, pairs)["accuracy"],
            "floor_best_constant": best_constant_program_baseline(references, pairs)}


def evaluate_stage(out: Path, model_dir: Path, preset) -> list[Path]:
    """Evaluate every checkpoint of `model_dir` without its step-N.json, the untrained control and the
    test facts once; the alternatives are fitted at the final checkpoint (and redone there when a
    later checkpoint has appeared since); then the longer readings of the preset. With the preset's
    `eval_workers` N > 1 these readings run N at a time, each worker a spawned process with 1/N of the
    torch threads (`run_readings`); the numbers are the same."""
    from karel_hf.reproduce import _data_rows, prompt_pairs
    from karel_hf.utils import checkpoint_dir

    found = model_checkpoints(model_dir)
    if not found:
        raise ValueError(f"no checkpoint-N folders in {model_dir}: run the train stage first")
    evaluations = out / "evaluations"
    final, last = found[-1]

    def complete(reading: dict, with_alternatives: bool) -> bool:
        parts = [reading]
        if preset.rotation_probe:  # the preset's rotation reading, by its probe
            parts.append(reading.get("rotation") or {})
            if parts[-1].get("probe") != preset.rotation_probe:
                return False
        return not with_alternatives or all("best_alternative" in p.get("all_rows", {}) for p in parts)

    def done(step: int) -> bool:
        path = evaluations / f"step-{step}.json"
        return path.is_file() and complete(json.loads(path.read_text())["reading"], step == final)

    jobs = [("step", s, p, s == final) for s, p in found if not done(s)]
    jobs.sort(key=lambda job: not job[3])  # the final checkpoint first: the longest, and the alternatives wait on it
    untrained = evaluations / UNTRAINED_FILE
    if untrained.is_file() and not complete(json.loads(untrained.read_text())["reading"], True):
        untrained.unlink()  # written without the preset's rotation reading: read again
    start = checkpoint_dir(first_model_dir(out, model_dir, preset), 0)
    if not untrained.is_file():
        if (start / "config.json").is_file():
            jobs.insert(1 if jobs and jobs[0][3] else 0, ("untrained", start))  # after the final checkpoint
        else:
            logger.warning("no untrained control: %s has no step-0 checkpoint", start.parent)
    facts = evaluations / FACTS_FILE
    trajectory = trajectory_jobs(out, model_dir, preset) if preset.trajectory_test_specs else []
    more = evaluations / MORE_SPECS_FILE

    def more_job(final_reading: dict) -> list[tuple]:
        """The final checkpoint read again against each part's best alternative, when due."""
        if not preset.alternatives_test_specs:
            return []
        fit = tuple(sorted({final_reading[part]["best_alternative"] for part in PARTS} - {None}))
        known = json.loads(more.read_text()) if more.is_file() else {}
        if not fit or (known.get("step"), known.get("requested"), known.get("fitted")) == (
                final, preset.alternatives_test_specs, list(fit)):
            return []
        logger.info("reading the final checkpoint against %s on %d test specs", ", ".join(fit),
                    preset.alternatives_test_specs)
        return [("more", final, last, start, fit)]

    final_due = any(job[0] == "step" and job[3] for job in jobs)
    if not final_due:
        jobs += more_job(json.loads((evaluations / f"step-{final}.json").read_text())["reading"])
    context: dict = {"preset": preset, "splits": {}}
    if jobs or trajectory or not facts.is_file():
        test_rows, probe_rows, _ = _data_rows(model_dir, preset)
        pairs = prompt_pairs(test_rows)
        if not facts.is_file():
            atomic_write_json(facts, test_facts(out, model_dir, preset, test_rows, pairs), default=_json_default)
        # the same rows at every checkpoint: labelled once, when some reading needs them
        labelled = label_split(last, probe_rows, test_rows, pairs) if any(
            job[0] in ("step", "untrained") for job in jobs) else None
        context.update(rows=(test_rows, probe_rows, pairs), labelled=labelled)
        # longer test splits, generated and labelled once for every reading on them
        lengths = {preset.trajectory_test_specs} if trajectory else set()
        if any(job[0] == "more" for job in jobs) or (final_due and preset.alternatives_test_specs):
            lengths.add(preset.alternatives_test_specs)
        context["splits"] = {n: longer_split(model_dir, preset, n, last) for n in sorted(lengths)}

    def follow_up(job: tuple, result: dict) -> list[tuple]:
        return more_job(result["reading"]) if job[0] == "step" and job[3] else []

    run_readings(jobs + trajectory, context, lambda job, result: atomic_write_json(
        reading_file(out, job), result, default=_json_default), follow_up)
    return ([evaluations / f"step-{s}.json" for s, _ in found] + ([untrained] if untrained.is_file() else [])
            + ([more] if preset.alternatives_test_specs and more.is_file() else [])
            + [trajectory_file(out, stage, step) for stage, step, _ in trajectory_checkpoints(out, model_dir, preset)
               if preset.trajectory_test_specs])


def read(job: tuple, context: dict) -> dict:
    """One reading's file content. `job`: ("step", step, folder, with alternatives), ("untrained",
    folder), ("more", step, folder, untrained folder, alternatives fitted) or ("trajectory", stage,
    step, folder); `context`: the preset, the rows, their labels and the longer splits
    (`evaluate_stage`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    preset = context["preset"]
    kind = job[0]
    if kind == "more":
        _, step, path, untrained, fit = job
        split = context["splits"][preset.alternatives_test_specs]
        return {"requested": preset.alternatives_test_specs,
                **read_more_specs(step, path, untrained, None, preset, fit, split)}
    test_rows, probe_rows, pairs = context["rows"]
    if kind == "step":
        _, step, path, alternatives = job
        return evaluate_checkpoint(step, path, test_rows, probe_rows, preset, pairs, alternatives,
                                   labelled=context["labelled"])
    begun = time.perf_counter()
    path = job[1] if kind == "untrained" else job[3]
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if kind == "untrained":
        reading = read_states(model, tokenizer, probe_rows, test_rows, preset, pairs, alternatives=True,
                              labelled=context["labelled"])
        return {"checkpoint": str(path), "reading": reading,
                "timings_seconds": {"reading": time.perf_counter() - begun}}
    _, stage, step, path = job
    longer, long_rows, long_probe_rows, long_pairs, labelled = context["splits"][preset.trajectory_test_specs]
    written = generation(model, tokenizer, test_rows, preset, pairs)
    decoded = time.perf_counter()
    reading = read_states(model, tokenizer, long_probe_rows, long_rows, longer, long_pairs, alternatives=False,
                          labelled=labelled)
    return {"stage": stage, "step": step, "checkpoint": str(path), "test_specs": preset.trajectory_test_specs,
            "generation": written, "reading": reading,
            "timings_seconds": {"generation": decoded - begun, "reading": time.perf_counter() - decoded}}


def reading_file(out: Path, job: tuple) -> Path:
    """Where `read`'s result for `job` is written."""
    evaluations = out / "evaluations"
    kind = job[0]
    if kind == "step":
        return evaluations / f"step-{job[1]}.json"
    if kind == "trajectory":
        return trajectory_file(out, job[1], job[2])
    return evaluations / (UNTRAINED_FILE if kind == "untrained" else MORE_SPECS_FILE)


def run_readings(jobs: list[tuple], context: dict, write, follow_up=lambda job, result: []) -> None:
    """`read` each job, in this process or, with the preset's `eval_workers` N > 1 (at most one per
    torch thread and per job), in N spawned processes with an equal share of this process's torch
    threads, started with `context` (no forked thread pools). Jobs are read in their order, a worker
    taking the next when it is free. `write(job, result)` runs here as each result arrives, so an
    interrupted stage keeps the finished readings; `follow_up(job, result)` gives the jobs that wait
    on that one, read next. A worker's error stops the stage."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    import torch
    from tqdm.auto import tqdm

    from karel_hf.reproduce import _eval_workers

    workers = _eval_workers(context["preset"], len(jobs))
    bar = tqdm(total=len(jobs), desc="readings" + (f" ({workers} workers)" if workers > 1 else ""), unit="reading")

    def finish(job: tuple, result: dict) -> list[tuple]:
        write(job, result)
        later = follow_up(job, result)
        bar.total += len(later)
        bar.update()
        return later

    with bar:
        if workers == 1:
            queue = list(jobs)
            while queue:
                job = queue.pop(0)
                queue[:0] = finish(job, read(job, context))
            return
        threads = max(1, torch.get_num_threads() // workers)
        queue = list(jobs)  # handed out one per free worker, so that a follow-up goes next, not last
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_reader_start,
                                 initargs=(context, threads)) as pool:
            running: dict = {}
            try:
                while queue or running:
                    while queue and len(running) < workers:
                        job = queue.pop(0)
                        running[pool.submit(_reader_read, job)] = job
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        queue[:0] = finish(running.pop(future), future.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise


_READER: dict = {}  # one reading worker's context (set by _reader_start)


def _reader_start(context: dict, threads: int) -> None:
    from karel_hf.reproduce import worker_threads

    _READER.update(limits=worker_threads(threads), context=context)


def _reader_read(job: tuple) -> dict:
    return read(job, _READER["context"])


def trajectory_checkpoints(out: Path, model_dir: Path, preset) -> list[tuple[str, int, Path]]:
    """(stage, step, folder) of the trajectory reading: every `trajectory_stride`-th checkpoint counted
    back from each stage's last, over the stage before this one (from its step 0, the end of the one
    before it) and this stage after its step 0 (the stage before's end); this stage's only without a
    curriculum. With the `cpu-cf` presets: stage 2's 0, 3200, ..., 16000 and stage 3's 3200, ..., 16000."""
    from karel_hf.reproduce import curriculum_dirs

    stride = preset.trajectory_stride
    earlier = curriculum_dirs(out, preset)
    own = model_checkpoints(model_dir)
    stages = [(Path(earlier[-1][0]).stem, model_checkpoints(earlier[-1][1]))] if earlier else []
    stages.append((Path(preset.train_preset).stem, own[1:] if earlier else own))
    return [(name, step, path) for name, found in stages for step, path in found[::-1][::stride][::-1]]


def trajectory_file(out: Path, stage: str, step: int) -> Path:
    return out / "evaluations" / TRAJECTORY_DIR / f"{stage}-step-{step}.json"


def trajectory_jobs(out: Path, model_dir: Path, preset) -> list[tuple]:
    """`read`'s jobs for those of `trajectory_checkpoints` without their file: accuracy on the preset's
    test specs and the conditional gain at -1 (the preset's probe, the real meaning) on
    `preset.trajectory_test_specs` test specs (the longer split), for the regression of accuracy on the
    gain over the curriculum, where accuracy rises from the floor (LOG.md E69, E84). A file already
    there for the same number of specs is kept."""

    def done(file: Path) -> bool:
        return file.is_file() and json.loads(file.read_text()).get("test_specs") == preset.trajectory_test_specs

    return [("trajectory", stage, step, path) for stage, step, path in trajectory_checkpoints(out, model_dir, preset)
            if not done(trajectory_file(out, stage, step))]


def read_trajectory(out: Path, model_dir: Path, preset, split) -> list[Path]:
    """DIR/evaluations/trajectory/<stage>-step-N.json for each of `trajectory_checkpoints`
    (`trajectory_jobs`), `preset.eval_workers` at a time; `split(n)`: `longer_split`'s result for n
    test specs. The evaluate stage reads them with its other readings."""
    from karel_hf.reproduce import _data_rows, prompt_pairs

    jobs = trajectory_jobs(out, model_dir, preset)
    if jobs:
        test_rows, probe_rows, _ = _data_rows(model_dir, preset)
        context = {"preset": preset, "rows": (test_rows, probe_rows, prompt_pairs(test_rows)), "labelled": None,
                   "splits": {preset.trajectory_test_specs: split(preset.trajectory_test_specs)}}
        run_readings(jobs, context, lambda job, result: atomic_write_json(
            reading_file(out, job), result, default=_json_default))
    return [trajectory_file(out, stage, step) for stage, step, _ in trajectory_checkpoints(out, model_dir, preset)]


# --------------------------------------------------------------------------------------- analyze
def analyze_stage(out: Path, preset_name: str, preset, timings: dict) -> dict:
    """results.json of an extended-language run (the module docstring lists its parts)."""
    from karel_hf.reproduce import _regression, _training_machine

    evaluations = sorted((json.loads(p.read_text()) for p in (out / "evaluations").glob("step-*.json")),
                         key=lambda e: e["step"])
    if not evaluations:
        raise ValueError(f"no evaluations in {out / 'evaluations'}: run the evaluate stage first")
    accuracy = [e["generation"]["accuracy"] for e in evaluations]
    regressions = {part: _regression(accuracy, [e["reading"][part]["conditional_gain"]["value"] for e in evaluations])
                   for part in PARTS}
    if all("rotation" in e["reading"] for e in evaluations):
        regressions["rotation"] = {part: _regression(accuracy, [e["reading"]["rotation"][part]["conditional_gain"]["value"]
                                                                for e in evaluations]) for part in PARTS}
    untrained_file = out / "evaluations" / UNTRAINED_FILE
    facts_file = out / "evaluations" / FACTS_FILE
    more_file = out / "evaluations" / MORE_SPECS_FILE
    more = json.loads(more_file.read_text()) if preset.alternatives_test_specs and more_file.is_file() else None
    results = {
        "preset": preset_name,
        "language": "extended",
        "config": asdict(preset),
        "steps": [e["step"] for e in evaluations],
        "checkpoints": evaluations,
        "final": evaluations[-1],
        "regressions": regressions,
        "untrained": json.loads(untrained_file.read_text()) if untrained_file.is_file() else None,
        "test": json.loads(facts_file.read_text()) if facts_file.is_file() else None,
        "alternatives_more_specs": more if more and more["step"] == evaluations[-1]["step"] else None,
        "trajectory": trajectory_results(out, preset),
        "timings_seconds": timings,
        "versions": library_versions(),
        "machine": {"training": _training_machine(out / "model"), "analysis": machine_info()},
    }
    atomic_write_json(out / "results.json", results, default=_json_default)
    return results


def trajectory_results(out: Path, preset) -> dict | None:
    """The trajectory reading's checkpoints (`read_trajectory`) and the regressions of accuracy on each
    part's gain over them; None without the reading or while a checkpoint's file is missing."""
    from karel_hf.reproduce import _regression

    if not preset.trajectory_test_specs:
        return None
    wanted = trajectory_checkpoints(out, out / "model", preset)
    files = [trajectory_file(out, stage, step) for stage, step, _ in wanted]
    if not files or not all(f.is_file() for f in files):
        return None
    entries = [json.loads(f.read_text()) for f in files]
    if any(e.get("test_specs") != preset.trajectory_test_specs for e in entries):
        return None
    accuracy = [e["generation"]["accuracy"] for e in entries]
    return {"test_specs": preset.trajectory_test_specs, "stride": preset.trajectory_stride, "checkpoints": entries,
            "regressions": {part: _regression(accuracy, [e["reading"][part]["conditional_gain"]["value"]
                                                         for e in entries]) for part in PARTS}}


# ------------------------------------------------------------------------------------------ plot
def plot_results(out: Path) -> list[Path]:
    """figures/fig_control_flow.png from results.json: accuracy, and the conditional gain on each part
    with its interval, per checkpoint; the untrained model's gains as dashed lines; with the rotation
    reading, its gains as dotted squares and the untrained model's as dash-dot lines."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads((out / "results.json").read_text())
    steps = results["steps"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5.2))
    accuracy = [100 * e["generation"]["accuracy"] for e in results["checkpoints"]]
    left.plot(steps, accuracy, "o-", color="black")
    left.set_ylim(0, max(10.0, 1.1 * max(accuracy)))
    floor = (results.get("test") or {}).get("floor_best_constant") or {}
    if floor:
        left.axhline(100 * floor["accuracy"], color="gray", linestyle=":", label="best constant program")
        left.legend(loc="upper left")
    left.set(xlabel="step", ylabel="test accuracy (%)", title="generation accuracy (extended language)")
    for part, color in zip(PARTS, ("tab:blue", "tab:orange")):
        gains = [e["reading"][part]["conditional_gain"] for e in results["checkpoints"]]
        values = np.array([100 * g["value"] for g in gains])
        right.plot(steps, values, "o-", color=color, label=PART_NAMES[part])
        right.fill_between(steps, [100 * g["low"] for g in gains], [100 * g["high"] for g in gains], color=color,
                           alpha=0.2)
        untrained = (results.get("untrained") or {}).get("reading", {}).get(part)
        if untrained:
            right.axhline(100 * untrained["conditional_gain"]["value"], color=color, linestyle="--",
                          label=f"untrained model, {PART_NAMES[part]}")
    if all("rotation" in e["reading"] for e in results["checkpoints"]):
        probe = results["checkpoints"][-1]["reading"]["rotation"]["probe"]
        for part, color in zip(PARTS, ("tab:green", "tab:red")):
            values = [100 * e["reading"]["rotation"][part]["conditional_gain"]["value"] for e in results["checkpoints"]]
            right.plot(steps, values, "s:", color=color, label=f"rotation, {probe} probe, {PART_NAMES[part]}")
            untrained = ((results.get("untrained") or {}).get("reading", {}).get("rotation") or {}).get(part)
            if untrained:
                right.axhline(100 * untrained["conditional_gain"]["value"], color=color, linestyle="-.",
                              label=f"untrained model, rotation, {PART_NAMES[part]}")
    right.axhline(0, color="gray", linewidth=0.8)
    right.set(xlabel="step", ylabel="points over the prompt facts",
              title="conditional gain at -1 (the robot before each statement)")
    for axis in (left, right):
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(6, integer=True))
    fig.legend(*right.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize="small")  # below: no point hidden
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    path = out / "figures" / FIGURE
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return [path] + ([plot_trajectory(out, results["trajectory"])] if results.get("trajectory") else [])


def plot_trajectory(out: Path, found: dict) -> Path:
    """figures/fig_trajectory.png: accuracy against each part's conditional gain at the trajectory's
    checkpoints (one marker per stage), with the fitted line and its R^2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = found["checkpoints"]
    accuracy = np.array([100 * e["generation"]["accuracy"] for e in entries])
    stages = list(dict.fromkeys(e["stage"] for e in entries))
    fig, axes = plt.subplots(1, len(PARTS), figsize=(11, 4.6), sharey=True)
    for axis, part in zip(axes, PARTS):
        gains = np.array([100 * e["reading"][part]["conditional_gain"]["value"] for e in entries])
        for stage, marker in zip(stages, "os^Dv"):
            keep = np.array([e["stage"] == stage for e in entries])
            axis.plot(gains[keep], accuracy[keep], marker, linestyle="none", label=stage)
        fit = found["regressions"].get(part)
        if fit and np.isfinite(fit["r2"]):  # accuracy = intercept + slope x gain (both fractions)
            x = np.linspace(gains.min(), gains.max(), 2)
            axis.plot(x, 100 * fit["intercept"] + fit["slope"] * x, color="gray",
                      label=f"fit, R^2 {fit['r2']:.3f} over {fit['n']} checkpoints")
        axis.set(xlabel=f"conditional gain at -1 on {found['test_specs']} test specs (points)",
                 title=PART_NAMES[part])
        axis.legend(loc="upper left", fontsize="small")
    axes[0].set_ylabel("test accuracy (%)")
    fig.suptitle(f"accuracy against the reading over the curriculum ({_every(found['stride'])} checkpoint)")
    fig.tight_layout()
    path = out / "figures" / TRAJECTORY_FIGURE
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------- report
def _r2(fit) -> str:
    return "-" if not fit or not np.isfinite(fit["r2"]) else f"{fit['r2']:.3f} over {fit['n']} checkpoints"


def _rotation_line(final: dict, untrained: dict, regressions: dict) -> list[str]:
    """The rotation reading's headline line, or none when the run has no such reading."""
    mine, theirs = final["reading"].get("rotation"), untrained.get("rotation") or {}
    if not mine:
        return []
    parts = [f"{PART_NAMES[part]} {_gain(mine[part]['conditional_gain'])} (untrained "
             f"{_gain((theirs.get(part) or {}).get('conditional_gain'))}; real - best alternative "
             f"({mine[part].get('best_alternative')}) {_points(mine[part].get('original_minus_best_alternative'))}; "
             f"R^2 {_r2((regressions.get('rotation') or {}).get(part))})" for part in PARTS]
    return [f"{mine['probe']} probe on the rotation since the start: " + "; ".join(parts)]


def more_specs_lines(results: dict) -> list[str]:
    """The real meaning's margin over each alternative read again on more test specs, where that
    alternative's labels are not a function of the real and initial ones; none without that reading."""
    more = results.get("alternatives_more_specs")
    if not more:
        return []
    lines = []
    for name in more["fitted"]:
        parts = []
        for part in PARTS:
            mine = more["trained"][part]["undetermined"].get(name) or {}
            theirs = ((more.get("untrained") or {}).get(part, {}).get("undetermined") or {}).get(name) or {}
            parts.append(f"{PART_NAMES[part]} {_gain(mine)} on {mine.get('num_rows', 0)} rows (untrained model "
                         f"{_gain(theirs)})")
        lines.append(f"real meaning - {name} where {name}'s labels are not a function of the real ones, on "
                     f"{more['test_specs']} test specs: " + "; ".join(parts))
    return lines


def headline_summary(results: dict) -> list[str]:
    """A few lines for the console: accuracy against the floor, the final gains against the untrained
    model's, the lead over the best alternative, R^2."""
    final = results["final"]
    facts = results.get("test") or {}
    floor = (facts.get("floor_best_constant") or {}).get("accuracy")
    untrained = (results.get("untrained") or {}).get("reading", {})
    lines = [f"step {final['step']}: generation accuracy {_pct(final['generation']['accuracy'])} (best constant "
             f"program {_pct(floor)}; {_pct(facts.get('test_seen_in_training'))} of the test programs seen in training)"]
    for part in PARTS:
        mine = final["reading"][part]
        lines.append(f"conditional gain at -1, {PART_NAMES[part]} ({mine['num_test_rows']} rows): "
                     f"{_gain(mine['conditional_gain'])} points; untrained model "
                     f"{_gain((untrained.get(part) or {}).get('conditional_gain'))}; real meaning - best alternative "
                     f"({mine.get('best_alternative')}) {_points(mine.get('original_minus_best_alternative'))}; "
                     f"R^2 of accuracy on it {_r2(results['regressions'][part])}")
    lines += more_specs_lines(results)
    lines += _rotation_line(final, untrained, results["regressions"])
    lines += trajectory_lines(results)
    return lines + ["(report.md has every number beside its control, and its caveats)"]


def _every(stride: int) -> str:
    """The words for every `stride`-th checkpoint.

    >>> _every(1), _every(2), _every(5)
    ('every', 'every second', 'every 5th')
    """
    return {1: "every", 2: "every second", 3: "every third"}.get(stride, f"every {stride}th")


def trajectory_lines(results: dict) -> list[str]:
    """The regressions over the curriculum's last two stages; none without that reading."""
    found = results.get("trajectory")
    if not found:
        return []
    stages = list(dict.fromkeys(e["stage"] for e in found["checkpoints"]))
    return [f"R^2 of accuracy on the conditional gain over {' and '.join(stages)} ({_every(found['stride'])} "
            f"checkpoint, the gain on {found['test_specs']} test specs): {_trajectory_fits(found)}"]


def _trajectory_fits(found: dict) -> str:
    return "; ".join(f"{PART_NAMES[part]} {_r2(found['regressions'][part])}" for part in PARTS)


def trajectory_table(results: dict) -> list[str]:
    """report.md's section on the trajectory reading; none without it."""
    found = results.get("trajectory")
    if not found:
        return []
    lines = ["## Over the curriculum", "",
             f"{_every(found['stride']).capitalize()} checkpoint of the last two stages (a stage's step 0 is the one before's end): "
             f"accuracy on the test specs above, the conditional gain at -1 ({found['checkpoints'][-1]['reading']['probe']} "
             f"probe, last layer, the real meaning) on {found['test_specs']} test specs, a longer test split of "
             "held-out programs generated again, with probes fitted on the same training rows.", "",
             "| stage | step | accuracy | gain, every statement | gain, world-dependent |", "|---|---|---|---|---|"]
    for e in found["checkpoints"]:
        lines.append(f"| {e['stage']} | {e['step']} | {_pct(e['generation']['accuracy'])} "
                     f"| {_gain(e['reading']['all_rows']['conditional_gain'])} "
                     f"| {_gain(e['reading']['world_dependent']['conditional_gain'])} |")
    return lines + ["", f"R^2 of accuracy on the gain: {_trajectory_fits(found)}.", "", f"![accuracy against the gain](figures/{TRAJECTORY_FIGURE})", ""]


def render_report(out: Path) -> Path:
    """report.md of an extended-language run."""
    from karel_hf.utils import describe_machine

    results = json.loads((out / "results.json").read_text())
    final, facts = results["final"], results.get("test") or {}
    untrained = (results.get("untrained") or {}).get("reading", {})
    floor = facts.get("floor_best_constant") or {}
    rotation = all("rotation" in e["reading"] for e in results["checkpoints"])
    lines = [f"# Reproduction report: preset `{results['preset']}` (extended language)", "",
             "Programs with if / ifelse / repeat / while. A probe row is a top-level statement of a test spec's "
             "reference program, read teacher-forced; its label is the robot's direction in each prompt input "
             "after the statements before it (offset -1). The conditional gain is the probe on the state plus "
             "the prompt facts (initial and output direction, statement index, program length) over the prompt "
             "facts alone, in points, with its 95% bootstrap interval over specs. World-dependent statements are "
             "those after which the direction differs between the spec's inputs by more than the tokens say: "
             "there it must come from running the program on the grid.", "",
             "## Headline", ""]
    lines += [f"- {line}" for line in headline_summary(results)[:-1]]
    lines += ["", "## The test split", "",
              f"- {facts.get('num_test_specs', 'n/a')} specs, {facts.get('prompt_pairs', 'n/a')} prompt pairs; "
              f"{_pct(facts.get('test_with_control_flow'))} of their reference programs use control flow; "
              f"{_pct(facts.get('test_seen_in_training'))} occur in the training split of any of the "
              f"{facts.get('stages', 'n/a')} stage(s).",
              f"- Floors: `put_marker()` {_pct(facts.get('floor_put_marker'))}, the best constant program "
              f"{_pct(floor.get('accuracy'))} (`{' '.join((floor.get('program') or '').split())}`).", "",
              "## Every checkpoint of the last stage", "",
              f"Probe: {final['reading']['probe']} on `{final['reading']['feature']}` (the last layer)"
              + (f"; the rotation since the start, (direction - initial direction) mod 4, by a "
                 f"{final['reading']['rotation']['probe']} probe on the same states and rows." if rotation else "."), "",
              "| step | accuracy | all pairs | with control flow | gain, every statement | gain, world-dependent |"
              + (" rotation, every statement | rotation, world-dependent |" if rotation else ""),
              "|---|---|---|---|---|---|" + ("---|---|" if rotation else "")]
    for e in results["checkpoints"]:
        turned = "".join(f" {_gain(e['reading']['rotation'][part]['conditional_gain'])} |" for part in PARTS) \
            if rotation else ""
        lines.append(f"| {e['step']} | {_pct(e['generation']['accuracy'])} | {_pct(e['generation']['accuracy_all_pairs'])} "
                     f"| {_pct(e['generation']['with_control_flow'])} | {_gain(e['reading']['all_rows']['conditional_gain'])} "
                     f"| {_gain(e['reading']['world_dependent']['conditional_gain'])} |{turned}")
    lines += ["", f"![accuracy and conditional gain](figures/{FIGURE})", "",
              *trajectory_table(results),
              "## Controls at the final checkpoint", "",
              "| part | rows | gain | untrained model | real - best alternative | untrained: real - best alternative "
              "| R^2 of accuracy on the gain |",
              "|---|---|---|---|---|---|---|"]
    for part in PARTS:
        mine, theirs = final["reading"][part], untrained.get(part) or {}
        lines.append(f"| {PART_NAMES[part]} | {mine['num_test_rows']} | {_gain(mine['conditional_gain'])} "
                     f"| {_gain(theirs.get('conditional_gain'))} "
                     f"| {_points(mine.get('original_minus_best_alternative'))} ({mine.get('best_alternative')}) "
                     f"| {_points(theirs.get('original_minus_best_alternative'))} ({theirs.get('best_alternative')}) "
                     f"| {_r2(results['regressions'][part])} |")
    if rotation:
        turned, theirs_turned = final["reading"]["rotation"], untrained.get("rotation") or {}
        for part in PARTS:
            mine, theirs = turned[part], theirs_turned.get(part) or {}
            lines.append(f"| {PART_NAMES[part]}, rotation ({turned['probe']} probe) | {mine['num_test_rows']} "
                         f"| {_gain(mine['conditional_gain'])} | {_gain(theirs.get('conditional_gain'))} "
                         f"| {_points(mine.get('original_minus_best_alternative'))} ({mine.get('best_alternative')}) "
                         f"| {_points(theirs.get('original_minus_best_alternative'))} ({theirs.get('best_alternative')}) "
                         f"| {_r2((results['regressions'].get('rotation') or {}).get(part))} |")
    apart = (final["reading"]["world_dependent"].get("undetermined") or {}).get("swap")
    lines += ["", "## Caveats", "",
              "- The untrained model is the first stage's step 0; step 0 of this table is the model the stage "
              "before ended with. The regressions in the controls' table use this stage's checkpoints only, "
              "where accuracy moves little; the curriculum's table spans the rise from the floor.",
              "- The alternatives are fitted at the final checkpoint only. An alternative is compared where its "
              "labels are not a function of the real and initial ones on 95% of the rows. Swap's direction "
              "mirrors the real one about the initial direction until a wall or a condition sends the paths apart"
              + (f"; on the world-dependent rows where they have (n = {apart['num_rows']}) the real meaning leads it "
                 f"by {_gain(apart)} points." if apart and apart.get("num_rows") else ".")
              + (" The headline's reading on more test specs scores a new, longer test split of held-out programs, "
                 "with probes fitted on the same training rows: the same meanings' margins on more rows, not "
                 "another measure."
                 if results.get("alternatives_more_specs") else ""),
              *(["- The rotation is the direction less the initial direction (a prompt fact), so an MLP reads it "
                 "as it reads the direction. A linear probe cannot add a rotation the state holds to the initial "
                 "direction (a sum mod 4 is not linear in the two), so its reading of the direction can be nil "
                 "where it reads the rotation (LOG.md E21, E63). On every statement the rotation is mostly fixed "
                 "by the turns read: the world-dependent rows are the ones that need the grid."] if rotation else []),
              "- Teacher-forced only: the model's own programs are read by "
              "benchmarks/emergence/control_flow_probe.py --programs generated (LOG.md E60).", "",
              "## Machine", ""]
    training = (results["machine"] or {}).get("training") or {}
    if training.get("machine"):
        lines.append(f"- training: {describe_machine(training['machine'])}, {training.get('precision')}")
    lines.append(f"- analysis: {describe_machine(results['machine']['analysis'])}")
    lines.append("- wall times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["timings_seconds"].items()))
    return atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
