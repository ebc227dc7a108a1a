"""Reproduce the paper end to end: train, sweep the checkpoints, analyse, plot, report.

`karel-hf reproduce --preset demo --output_dir DIR` runs the stages below. Each stage writes its
outputs under DIR and is skipped when they already exist, so an interrupted run picks up where it
stopped (training resumes from its last checkpoint, finished checkpoint evaluations are kept).

    train      DIR/model/                 a `karel-hf train` run with checkpoints (step 0 included);
               after a preset's curriculum (karel_hf.presets), whose stages train first in
               DIR/stages/<i>-<preset>/, each from the model the one before ended with
    evaluate   DIR/evaluations/step-N.json  per checkpoint: generation accuracy (spec pairs and all
               10), two probe families (`generated`: the programs the model writes, the paper's;
               `teacher_forced`: the test split's reference programs, the same rows at every
               checkpoint), each at offsets prev2, prev1, current, next1, next2 with every control
               and the conditional gains (docs/protocol.md §6b), v3 at the current state, the
               intervention (each alternative semantics, a fresh probe on the same states and
               rows; in the conditional form, gains over the prompt facts, at generated/current
               and teacher_forced/prev1), the future-state analysis, program lengths,
               perplexity, wall times;
               DIR/evaluations/step-N.rows.parquet  the v1 probes' per-row predictions (below);
               DIR/evaluations/step-N.programs.parquet  the program written for each test spec;
               DIR/evaluations/test_specs.parquet  the test specs (id, inputs, outputs, reference
               program, length), written once;
               DIR/evaluations/untrained-on-step-N.json  the generated family's control: the
               step-0 checkpoint's states on the programs the final checkpoint N wrote
               (`untrained_control`)
    analyze    DIR/results.json           regressions across checkpoints (on semantic content,
               margin and conditional gain, per family and offset), future-state analysis,
               length test, baselines, flags, stage wall times
    plot       DIR/figures/*.png          drawn from results.json only (`--stages plot` redraws)
    view       DIR/viewer/index.html      the trace viewer as one static page (`karel_hf.viewer`;
               `karel-hf view DIR` serves the same as a Gradio app)
    report     DIR/report.md              our numbers beside the paper's (linking the viewer page)

On a corpus in the extended language (`extended: true`, e.g. the `cpu-cf` preset) the evaluate,
analyze, plot and report stages are karel_hf.reproduce_control_flow's (its docstring lists their
files) and the view stage is skipped: those programs have no straight-line traces.

Probe scores use a fixed budget: the same numbers of probe-training and test specs, and at most
`max_train_rows` / `max_test_rows` rows (seeded subsample), at every checkpoint.

results.json: `checkpoints[i]["probes"][family][name]` with family `generated` or
`teacher_forced` and name `prev2`, `prev1`, `current`, `next1`, `next2` (v1) or `v3_current`,
each with `semantic_content`, `unobserved`, `controls` {initial_glyph, output_glyph, prompt_only,
code_position, shuffled}, `strongest_control`, `margin`, `conditional_gain` {value, low, high},
`conditional_gain_code`, `per_task`, `per_step`, `num_train`, `num_test`, `budget`, `drop_last`;
`checkpoints[i]["intervention"][family][name]` (accuracies, as the paper compares them; at
`CONDITIONAL_INTERVENTION_OFFSETS` also `["conditional"]`, the gains:
`measure.conditional_intervention`) and `["future"][family][name]`;
`regressions[family][name][metric]` for metric in `semantic_content`, `margin`,
`conditional_gain`; `baselines["untrained_states_on_final_programs"]`, the control file's content.

step-N.rows.parquet, one row per (family, offset, scored test row, v1 task): `family`, `offset`
(-2..2), `example_id`, `step` (k), `num_actions` (n), `task` (the label, e.g. `direction_0`),
`label` (the true class), `probe` (the probe's prediction from the model state), `prompt_only`
(the prompt-only control's), `conditional` (the probe on the state plus the prompt facts); -1
where a probe was not fitted. These are the test rows the scores above were computed on (the
fixed budget's subsample). step-N.programs.parquet: `example_id`, `program` (the generated text
of the trace dataset, empty when the program gave no trace row: no parse, control flow or no
action), `num_actions`, `correct` (spec pairs), `correct_all` (all pairs).

Trace datasets (hidden states + labels per action) are cached in DIR/traces/ by a fingerprint of
the checkpoint weights and options; push them with `karel-hf push traces`.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
from transformers import HfArgumentParser

from karel_hf.errors import StrictParsing, UsageError, run_main
from karel_hf.presets import PresetError, load_preset, preset_names
from karel_hf.probing.labels import OFFSET_NAMES  # -2..+2: prev2, prev1, current, next1, next2
from karel_hf.training import load_raw_datasets, parse_train_args, run_training
from karel_hf.utils import (
    StdoutHandler,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    checkpoint_problem,
    describe_machine,
    latest_checkpoint,
    library_versions,
    machine_info,
    model_checkpoints,
    writable_dir,
)

logger = logging.getLogger(__name__)

STAGES = ("train", "evaluate", "analyze", "plot", "view", "report")
FAMILIES = ("generated", "teacher_forced")
REGRESSION_METRICS = ("semantic_content", "margin", "conditional_gain")
# Offsets of the intervention per family (every probe is a fit; generated rows change with the model).
INTERVENTION_OFFSETS = {"generated": (0, 1, 2), "teacher_forced": (-2, -1, 0, 1, 2)}
# ... and of its conditional form (gains over the prompt facts, docs/protocol.md §6b): the paper's
# setting (generated, current) and the state the model has read (teacher-forced, prev1).
CONDITIONAL_INTERVENTION_OFFSETS = {"generated": (0,), "teacher_forced": (-1,)}
# A preset's `second_probe` (e.g. an MLP, which reads what a linear probe cannot: LOG.md E7, E21) is
# fitted at these offsets only, both families, for the conditional gain and its prompt-only control.
SECOND_PROBE_OFFSETS = (-1,)
SECOND_PROBE_CONTROLS = ("prompt_only", "conditional_gain")
PROBE_KINDS = ("linear", "mlp1", "mlp2")
V3_CONTROLS = ("initial_glyph", "output_glyph")  # the v3 probe's controls (the fitted ones cost 12 fits each)
AT_FLOOR_POINTS = 0.05  # the length test is "at the floor" when accuracy <= constant program + 5 points
VALIDATION_ID_OFFSET = 1_000_000_000  # ids of validation specs used as extra test specs

# The paper's numbers (docs/protocol.md §7), shown beside ours in report.md.
PAPER = {
    "r2": {"current": 0.968, "next1": 0.919, "next2": 0.900},
    "best_future_classifier": {"next1": 0.622, "next2": 0.407},
    "probe_given_current_correct": {"next1": 0.684, "next2": 0.610},
    "generation_accuracy": {"v1": 0.964, "v3": 0.924},
}


@dataclass(frozen=True)
class ReproducePreset:
    """What one reproduction runs: a training preset plus the sweep's sizes (a preset's `reproduce`
    section, karel_hf/presets/<name>.yaml, gives the values).

    Test specs come from the test split, then from the validation split when the preset asks for
    more than the test split holds (their ids shifted by `VALIDATION_ID_OFFSET`).
    """

    train_preset: str
    train_overrides: tuple = ()  # extra `karel-hf train` flags, e.g. ("--max_steps", "600")
    test_specs: int = 500  # test specs per checkpoint (generation accuracy, probe test set)
    probe_train_specs: int = 1000  # training specs per checkpoint (probe training set)
    max_train_rows: int | None = None  # probe-training rows per family and offset (seeded subsample)
    max_test_rows: int | None = None  # probe test rows per family and offset
    teacher_forced_min_length: int | None = None  # None: 4 when the test split has such programs, else 1
    num_bootstrap: int = 1000  # resamples of the conditional gain's interval
    perplexity_programs: int = 256
    probe: str = "linear"
    # A second probe kind, fitted beside `probe` for the conditional gain at SECOND_PROBE_OFFSETS only
    # (both families, every checkpoint and the untrained control), with the same row budgets;
    # "" for none. The `cpu` preset's linear probe reads little of the state an MLP reads (README).
    second_probe: str = ""
    # Extended-language runs only: a probe kind fitted on the rotation each prefix has made since the
    # start, (direction - initial direction) mod 4, beside `probe` on the direction, at every checkpoint
    # and on the untrained control (alternatives at the final checkpoint); "" for none. A linear probe
    # reads the rotation where it cannot read the direction (LOG.md E21, E63).
    rotation_probe: str = ""
    # Extended-language runs only: the final checkpoint's and the untrained model's real meaning read
    # again beside the best alternative, on this many test specs (the test split generated again that
    # long; the training split and the probes' training rows stay the run's own); None or 0: not read.
    # Where swap's labels say something new only a few hundred of 1,000 specs' rows are left, too few
    # for its margin (LOG.md E59, E67).
    alternatives_test_specs: int | None = None
    # Extended-language runs with a curriculum only: the regression of accuracy on the conditional gain
    # over the curriculum, where accuracy rises from the floor, not over the last stage alone (where it
    # moves little): every `trajectory_stride`-th checkpoint of the stage before the last and of the
    # last, their gains read on this many test specs (the test split generated again that long, the
    # real meaning only; accuracy on `test_specs`); None or 0: not read (LOG.md E69, E84).
    trajectory_test_specs: int | None = None
    trajectory_stride: int = 2
    # BLAS / OpenMP threads while the probes are fitted (threadpoolctl); 0: the libraries' default,
    # every core. One thread was 5.5x faster than two for the cpu preset's probes on an AVX2 CPU
    # (benchmarks/bench_probe_threads.py), and it makes the probe numbers the same whatever the
    # machine's thread count.
    probe_threads: int = 1
    # Checkpoints evaluated at once, each in its own process with an equal share of the torch
    # threads (so at most one worker per thread); the numbers are the same as with one worker.
    eval_workers: int = 1
    batch_size: int = 64
    description: str = ""

    def __post_init__(self):
        for name, least, meaning in (("probe_threads", 0, " (0: every core)"), ("eval_workers", 1, ""),
                                     ("trajectory_stride", 1, "")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name}: must be an integer >= {least}{meaning}, got {value!r}")
        for name in ("alternatives_test_specs", "trajectory_test_specs"):
            more = getattr(self, name)
            if more is not None and (isinstance(more, bool) or not isinstance(more, int) or more < 0):
                raise ValueError(f"{name}: must be an integer >= 0 (0 or null: not read), got {more!r}")
        for name, allowed in (("probe", PROBE_KINDS), ("second_probe", ("", *PROBE_KINDS)),
                              ("rotation_probe", ("", *PROBE_KINDS))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: unknown value {getattr(self, name)!r}; expected one of "
                                 f"{', '.join(repr(a) for a in allowed)}")


def reproduce_preset_names() -> tuple[str, ...]:
    """The presets of karel_hf/presets that have a `reproduce` section, smallest run first."""
    return tuple(name for name in preset_names() if load_preset(name).reproduce is not None)


def reproduce_preset(preset: str) -> ReproducePreset:
    """The `reproduce` section of a preset (a name or a preset file) as a `ReproducePreset`."""
    try:
        loaded = load_preset(preset)
    except PresetError as err:
        raise ValueError(f"preset: {err}") from None
    if loaded.reproduce is None:
        raise ValueError(f"preset: {preset!r} has no reproduce section; expected one of "
                         f"{', '.join(reproduce_preset_names())} or a preset file with a reproduce section")
    values = dict(loaded.reproduce)
    values["train_overrides"] = tuple(str(v) for v in values.get("train_overrides", ()))
    try:
        return ReproducePreset(train_preset=loaded.name, **values)
    except (TypeError, ValueError) as err:  # a key ReproducePreset does not have, or a bad value
        raise ValueError(f"preset {loaded.path}: reproduce section: {err}") from None


@dataclass
class ReproduceArguments:
    """`karel-hf reproduce` arguments (parsed with HfArgumentParser)."""

    output_dir: str = field(metadata={"help": "Folder for every output; a rerun skips finished stages."})
    preset: str = field(default="demo", metadata={
        "help": f"One of {', '.join(reproduce_preset_names())} (karel_hf/presets/NAME.yaml) or a preset file "
        "with a reproduce section."})
    stages: str = field(default=",".join(STAGES), metadata={"help": f"Comma-separated subset of {', '.join(STAGES)}."})
    test_specs: int | None = field(default=None, metadata={"help": "Override the preset's test specs per checkpoint."})
    probe_train_specs: int | None = field(default=None, metadata={"help": "Override the preset's probe training specs."})
    probe: str | None = field(default=None, metadata={"help": "linear (default), mlp1 or mlp2."})
    second_probe: str | None = field(default=None, metadata={
        "help": "A second probe (linear, mlp1 or mlp2; '' for none) for the conditional gain at prev1, both families "
        "(the preset's value: mlp1 for cpu)."})
    rotation_probe: str | None = field(default=None, metadata={
        "help": "Extended-language runs: a probe (linear, mlp1 or mlp2; '' for none) on the rotation since the start "
        "beside the direction's (the preset's value: linear for cpu-cf)."})
    alternatives_test_specs: int | None = field(default=None, metadata={
        "help": "Extended-language runs: read the final checkpoint's real meaning against the best alternative "
        "again on this many test specs (the preset's value: 5000 for cpu-cf; 0: not read)."})
    trajectory_test_specs: int | None = field(default=None, metadata={
        "help": "Extended-language runs: regress accuracy on the conditional gain over every second checkpoint of "
        "the last two stages, the gain read on this many test specs (the preset's value: 5000 for cpu-cf; 0: not read)."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Override the preset's probe-training row budget."})
    max_test_rows: int | None = field(default=None, metadata={"help": "Override the preset's probe test row budget."})
    batch_size: int | None = field(default=None, metadata={"help": "Decoding batch size."})
    probe_threads: int | None = field(default=None, metadata={
        "help": "BLAS threads while fitting the probes (preset default 1; 0: every core)."})
    eval_workers: int | None = field(default=None, metadata={
        "help": "Checkpoints evaluated at once, one process each (the preset's value; 1: in this process)."})
    train_args: str = field(default="", metadata={"help": "Extra `karel-hf train` flags, quoted, e.g. '--max_steps 100'."})
    follow: bool = field(default=False, metadata={
        "help": "With the evaluate stage: evaluate each new checkpoint as it is saved, until the training "
        "(another `karel-hf reproduce` or `karel-hf train` on the same folder) has finished."})

    def __post_init__(self):
        self.resolved()  # raises, naming the presets there are for an unknown one, or a bad probe / threads / workers
        unknown = [s for s in self.stage_list() if s not in STAGES]
        if unknown:
            raise ValueError(f"stages: unknown stage(s) {unknown}; expected a comma-separated subset of {', '.join(STAGES)}")
        if self.follow and (set(self.stage_list()) & {"train", "evaluate"}) != {"evaluate"}:
            raise ValueError("follow: needs the evaluate stage without the train stage (the training runs in "
                             "another process), e.g. --stages evaluate,analyze,plot,report --follow")
        for name in ("test_specs", "probe_train_specs", "batch_size", "max_train_rows", "max_test_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value}")

    def stage_list(self) -> list[str]:
        return [s.strip() for s in self.stages.split(",") if s.strip()]

    def resolved(self) -> ReproducePreset:
        base = reproduce_preset(self.preset)
        changes = {k: getattr(self, k) for k in ("test_specs", "probe_train_specs", "probe", "second_probe",
                                                 "rotation_probe", "alternatives_test_specs", "trajectory_test_specs",
                                                 "batch_size", "max_train_rows",
                                                 "max_test_rows", "probe_threads", "eval_workers")
                   if getattr(self, k) is not None}
        if self.train_args.strip():
            changes["train_overrides"] = base.train_overrides + tuple(self.train_args.split())
        return ReproducePreset(**{**asdict(base), **changes})


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class _Timer:
    """Wall time per stage, accumulated in DIR/timings.json across resumed runs."""

    def __init__(self, path: Path):
        self.path = path
        self.times = json.loads(path.read_text()) if path.is_file() else {}

    def run(self, name: str, fn, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            if self.path.is_file():  # another process on this folder (--follow) may have added its own
                self.times = {**self.times, **json.loads(self.path.read_text())}
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start
            atomic_write_json(self.path, self.times, default=_json_default)


# ----------------------------------------------------------------------------------------- train
CURRICULUM_DIR = "stages"  # DIR/stages/<i>-<preset>/: the model folders of a curriculum's earlier stages


def curriculum_dirs(out: Path, preset: ReproducePreset) -> list[tuple[str, Path]]:
    """(stage preset, its model folder DIR/stages/<i>-<name>) for each stage of the preset's curriculum
    (karel_hf.presets), in order; empty without one. The preset's own stage trains in DIR/model."""
    stages = load_preset(preset.train_preset).curriculum
    return [(stage, out / CURRICULUM_DIR / f"{i}-{Path(stage).stem}") for i, stage in enumerate(stages, 1)]


def train_argv(model_dir: Path, preset: ReproducePreset) -> list[str]:
    """The `karel-hf train` flags of the preset's own stage in `model_dir` (DIR/model): after a
    curriculum it starts from the last earlier stage's model; the preset's train_overrides (and
    --train_args) last."""
    argv = ["--preset", preset.train_preset, "--output_dir", str(model_dir)]
    earlier = curriculum_dirs(model_dir.parent, preset)
    if earlier:
        argv += ["--model_name_or_path", str(earlier[-1][1])]
    return argv + list(preset.train_overrides)


def _train_one(model_dir: Path, argv: list[str]) -> None:
    if (model_dir / "train_results.json").is_file():
        logger.info("train: %s is finished, skipping", model_dir)
        return
    if latest_checkpoint(model_dir) is not None:
        argv = [*argv, "--resume_from_checkpoint", "last"]
    model_args, data_args, training_args, name = parse_train_args(argv)
    run_training(model_args, data_args, training_args, preset=name, argv=argv)


def train_stage(out: Path, preset: ReproducePreset) -> Path:
    """Train the curriculum's stages in turn, each from the model the one before ended with, then the
    preset's own stage in DIR/model; a finished stage is skipped, an interrupted one resumes. The
    train_overrides apply to every stage."""
    start = None
    for stage, folder in curriculum_dirs(out, preset):
        _train_one(folder, ["--preset", stage, "--output_dir", str(folder),
                            *(["--model_name_or_path", str(start)] if start else []), *preset.train_overrides])
        start = folder
    model_dir = out / "model"
    _train_one(model_dir, train_argv(model_dir, preset))
    return model_dir


# -------------------------------------------------------------------------------------- evaluate
def _data_rows(model_dir: Path, preset: ReproducePreset):
    """(test rows, probe-training rows, training texts for perplexity), as the run's config says.

    Test rows: the first `test_specs` of the test split, then of the validation split (ids shifted
    by `VALIDATION_ID_OFFSET`) when the test split is smaller."""
    _, data_args, _, _ = parse_train_args(train_argv(model_dir, preset))
    raw = load_raw_datasets(data_args)
    test = raw["test"].select(range(min(preset.test_specs, len(raw["test"]))))
    more = preset.test_specs - len(test)
    if more > 0 and "validation" in raw and len(raw["validation"]):
        extra = raw["validation"].select(range(min(more, len(raw["validation"]))))
        extra = extra.map(lambda batch: {"id": [i + VALIDATION_ID_OFFSET for i in batch["id"]]}, batched=True,
                          desc="validation specs as test specs")
        test = datasets.concatenate_datasets([test, extra])
    train = raw["train"]
    probe_train = train.select(range(min(preset.probe_train_specs, len(train))))
    # perplexity programs: training specs not used for the probes, when the split is big enough
    start = min(len(probe_train), max(0, len(train) - preset.perplexity_programs))
    texts = train.select(range(start, min(len(train), start + preset.perplexity_programs)))["text"]
    return test, probe_train, texts


def teacher_forced_min_length(preset: ReproducePreset, test_rows) -> int:
    """The preset's value, else 4 when the test specs have programs that long (docs/protocol.md §6b),
    else 2 (with drop_last a 1-action program has no scored row: its one state is the final one)."""
    if preset.teacher_forced_min_length is not None:
        return preset.teacher_forced_min_length
    return 4 if len(test_rows) and max(test_rows["length"]) >= 4 else 2


def _programs_by_example(traces, ids: list[int]) -> dict:
    """example id -> (generated program text, number of actions) from a trace dataset."""
    found = {}
    for example_id, program, n in zip(traces["example_id"], traces["program"], traces["num_actions"]):
        found.setdefault(int(example_id), (program, int(n)))
    return {i: found.get(i, ("", 0)) for i in ids}


def _on_device(model):
    """The model on the GPU when there is one (as `evaluate_checkpoint` puts it), else as it is."""
    import torch

    return model.to("cuda") if torch.cuda.is_available() else model


def written_programs(path: Path, step: int, row_sets, preset: ReproducePreset, out: Path, pairs: int) -> tuple:
    """Each of `row_sets` with every reference program replaced by the one checkpoint `step` (folder
    `path`) writes for the spec, read from its generated traces (the evaluate stage's cache, built if
    missing); specs it wrote no scoreable program for are left out."""
    from karel_hf.probing.traces import build_trace_dataset

    model, tokenizer = _checkpoint_model(path)
    kept = []
    for rows in row_sets:
        traces = build_trace_dataset(model, tokenizer, rows, batch_size=preset.batch_size, cache_dir=str(out / "traces"),
                                     fingerprint_extra={"step": step}, num_prompt_pairs=pairs, progress=False)
        ids = [int(i) for i in rows["id"]]
        written = _programs_by_example(traces, ids)
        chosen = rows.select([j for j, i in enumerate(ids) if written[i][1] > 0])
        kept.append(chosen.map(lambda row: {"program": written[int(row["id"])][0]}, desc=f"programs of step {step}"))
    return tuple(kept)


def untrained_control(out: Path, model_dir: Path, preset: ReproducePreset, kept: dict | None = None) -> Path | None:
    """The control for the generated family: the untrained checkpoint's states on the programs the
    final checkpoint wrote (teacher-forced through it, every length), probed as the generated family
    is, at every offset with every control, and the conditional intervention at the current state.
    The untrained model's own programs are not a control: it writes programs the prompt facts already
    explain (LOG.md E25). Writes evaluations/untrained-on-step-N.json (N the final step) once; None
    when the run has no step-0 checkpoint or no later one, or the final one wrote no scoreable program
    for the test or the probe-training specs (a warning says so). With the preset's second probe the
    file has its gains as well (`second_probe`, the generated family's keys); one written without
    them is made again."""
    from karel_hf.probing.traces import build_trace_dataset

    found = dict(model_checkpoints(model_dir))
    if 0 not in found or max(found) == 0:
        return None
    final = max(found)
    path = out / "evaluations" / CONTROL_FILE.format(final)
    if path.is_file() and not _lacks_second_probe(json.loads(path.read_text()), preset):
        return path
    start = time.perf_counter()
    kept = {} if kept is None else kept
    if "data" not in kept:
        kept["data"] = _data_rows(model_dir, preset)
    test_rows, probe_rows, _ = kept["data"]
    pairs = prompt_pairs(test_rows)
    test_rows, probe_rows = written_programs(found[final], final, (test_rows, probe_rows), preset, out, pairs)
    if not len(test_rows) or not len(probe_rows):
        logger.warning("no untrained control: checkpoint %d wrote no scoreable program for the %s specs", final,
                       "test" if not len(test_rows) else "probe-training")
        return None
    model, tokenizer = _checkpoint_model(found[0])
    forced = dict(batch_size=preset.batch_size, cache_dir=str(out / "traces"), fingerprint_extra={"step": 0},
                  num_prompt_pairs=pairs, mode="teacher_forced", min_length=1, progress=False)
    traces = (build_trace_dataset(model, tokenizer, probe_rows, **forced),
              build_trace_dataset(model, tokenizer, test_rows, **forced))
    from threadpoolctl import threadpool_limits  # a scikit-learn requirement

    from karel_hf.probing.measure import load_traces

    sizes = {"train": len(traces[0]), "test": len(traces[1])}
    traces = tuple(load_traces(t) for t in traces)  # read once for both probes
    with threadpool_limits(limits=preset.probe_threads or None):
        probes, conditional = _control_probes(*traces, preset, pairs)
    second = {"second_probe": second_probe_gains({"generated": traces}, preset, pairs)} if preset.second_probe else {}
    return atomic_write_json(path, {
        "step": 0, "programs_from": final, "probes": probes, "intervention": {"current": {"conditional": conditional}},
        **second,
        "num_trace_rows": sizes,
        "num_specs": {"test": len(test_rows), "probe_train": len(probe_rows)},
        "timings_seconds": {"total": time.perf_counter() - start}}, default=_json_default)


def _probe_options(preset: ReproducePreset, pairs: int) -> dict:
    """The preset's probe, row budgets and bootstrap, as `measure.semantic_content` takes them."""
    return dict(probe=preset.probe, max_train_rows=preset.max_train_rows, max_test_rows=preset.max_test_rows,
                num_bootstrap=preset.num_bootstrap, num_prompt_pairs=pairs)


def _control_probes(train, test, preset: ReproducePreset, pairs: int) -> tuple[dict, dict]:
    from karel_hf.probing.labels import OFFSETS
    from karel_hf.probing.measure import conditional_intervention, load_traces, semantic_content, summary

    common = _probe_options(preset, pairs)
    train, test = load_traces(train), load_traces(test)
    results = {o: semantic_content(train, test, o, return_predictions=True, **common) for o in OFFSETS}
    conditional = conditional_intervention(train, test, 0, original=results[0], **common)
    return {OFFSET_NAMES[o]: summary(r) for o, r in results.items()}, conditional


def probe_families(traces: dict, preset: ReproducePreset, pairs: int) -> tuple[dict, dict, dict, dict]:
    """Every probe number of one checkpoint: {family: (train traces, test traces)} ->
    (probes, intervention, future, rows): the first three keyed by family, then by offset name;
    `rows` the v1 probes' per-row predictions as columns (`prediction_rows`)."""
    from threadpoolctl import threadpool_limits  # a scikit-learn requirement

    with threadpool_limits(limits=preset.probe_threads or None):
        return _probe_families(traces, preset, pairs)


def _probe_families(traces: dict, preset: ReproducePreset, pairs: int) -> tuple[dict, dict, dict, dict]:
    from karel_hf.probing.labels import OFFSETS
    from karel_hf.probing.measure import (
        conditional_intervention, future_analysis, intervention, load_traces, semantic_content, summary,
    )

    common = _probe_options(preset, pairs)
    probes, interventions, future, rows = {}, {}, {}, []
    for family, (train, test) in traces.items():
        train, test = load_traces(train), load_traces(test)
        results = {o: semantic_content(train, test, o, return_predictions=True, **common) for o in OFFSETS}
        rows += [prediction_rows(family, o, r, test) for o, r in results.items()]
        probes[family] = {OFFSET_NAMES[o]: summary(r) for o, r in results.items()}
        # v3 (12 probes, 6 tasks) with the glyph controls only: each fitted control costs 12 fits more
        probes[family]["v3_current"] = summary(semantic_content(train, test, 0, "v3", controls=V3_CONTROLS, **common))
        future[family] = {OFFSET_NAMES[o]: future_analysis(results[0], results[o], test) for o in (1, 2)}
        interventions[family] = {
            OFFSET_NAMES[o]: intervention(train, test, o, original=results[o]["semantic_content"], **common)
            for o in INTERVENTION_OFFSETS[family]
        }
        for o in CONDITIONAL_INTERVENTION_OFFSETS[family]:  # the original's probes are reused, not refitted
            interventions[family][OFFSET_NAMES[o]]["conditional"] = conditional_intervention(
                train, test, o, original=results[o], **common)
    columns = {name: np.concatenate([r[name] for r in rows]) for name in ROW_COLUMNS}
    return probes, interventions, future, columns


def second_probe_gains(traces: dict, preset: ReproducePreset, pairs: int) -> dict:
    """`preset.second_probe`'s conditional gain (with its prompt-only control) at `SECOND_PROBE_OFFSETS`:
    {family: (train traces, test traces)} -> {"probe": kind, family: {offset name: summary}}, the
    rows and budgets of the preset's own probe."""
    from threadpoolctl import threadpool_limits  # a scikit-learn requirement

    from karel_hf.probing.measure import load_traces, semantic_content, summary

    options = dict(_probe_options(preset, pairs), probe=preset.second_probe)
    found = {"probe": preset.second_probe}
    with threadpool_limits(limits=preset.probe_threads or None):
        for family, (train, test) in traces.items():
            train, test = load_traces(train), load_traces(test)
            found[family] = {OFFSET_NAMES[o]: summary(semantic_content(train, test, o, controls=SECOND_PROBE_CONTROLS,
                                                                       **options))
                             for o in SECOND_PROBE_OFFSETS}
    return found


def _lacks_second_probe(evaluation: dict, preset: ReproducePreset) -> bool:
    """Whether a saved evaluation (or control) lacks the second probe the preset asks for."""
    return bool(preset.second_probe) and (evaluation.get("second_probe") or {}).get("probe") != preset.second_probe


ROW_COLUMNS = ("family", "offset", "example_id", "step", "num_actions", "task", "label", "probe", "prompt_only",
               "conditional")


def prediction_rows(family: str, offset: int, result: dict, test: dict) -> dict[str, np.ndarray]:
    """The per-row predictions of one `semantic_content(..., return_predictions=True)` result on
    the `test` trace columns: one row per (scored test row, v1 task), columns `ROW_COLUMNS`."""
    positions = result["test_rows"]
    tasks = list(result["targets"])
    missing = np.full(len(positions), -1, dtype=np.int64)
    controls = result.get("control_predictions", {})

    def per_task(table: dict) -> np.ndarray:
        return np.concatenate([np.asarray(table.get(t, missing)) for t in tasks]) if tasks else np.zeros(0, np.int64)

    def repeat(values) -> np.ndarray:
        return np.tile(np.asarray(values), len(tasks))

    size = len(positions) * len(tasks)
    return {
        "family": np.full(size, family, dtype=object),
        "offset": np.full(size, offset, dtype=np.int8),
        "example_id": repeat(np.asarray(test["example_id"])[positions]).astype(np.int64),
        "step": repeat(np.asarray(test["step"])[positions]).astype(np.int16),
        "num_actions": repeat(np.asarray(test["num_actions"])[positions]).astype(np.int16),
        "task": np.repeat(np.array(tasks, dtype=object), len(positions)),
        "label": per_task(result["targets"]).astype(np.int8),
        "probe": per_task(result["predictions"]).astype(np.int8),
        "prompt_only": per_task(controls.get("prompt_only", {})).astype(np.int8),
        "conditional": per_task(controls.get("conditional", {})).astype(np.int8),
    }


def write_parquet(path: Path, columns: dict) -> Path:
    """`columns` ({name: array or list}) as one Parquet file, written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    grids = pa.list_(pa.list_(pa.list_(pa.int8())))  # (pairs, rows, cols) view codes
    table = pa.table({name: pa.array(list(values), type=grids if name in ("inputs", "outputs") else None)
                      if not isinstance(values, np.ndarray) or values.dtype == object else values
                      for name, values in columns.items()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def evaluate_checkpoint(step: int, path: Path, data, out: Path, preset: ReproducePreset,
                        label_cache: dict | None = None) -> dict:
    """Everything measured at one checkpoint (docs/protocol.md §5-7). `label_cache` (a dict kept
    across checkpoints) computes the teacher-forced labels once (the same programs at every checkpoint)."""
    from karel_hf.metrics.generation import compute_generation_accuracy
    from karel_hf.probing.analysis import length_test, program_perplexity
    from karel_hf.probing.measure import load_traces

    start, cpu_start = time.perf_counter(), time.process_time()
    timings = {}
    test_rows, _, texts = data
    model, tokenizer = _checkpoint_model(path)
    pairs = prompt_pairs(test_rows)
    min_length = teacher_forced_min_length(preset, test_rows)
    traces = _checkpoint_traces(model, tokenizer, step, data, out, preset, label_cache, timings)
    (train_traces, test_traces), (tf_train, tf_test) = traces["generated"], traces["teacher_forced"]

    # generation accuracy from the programs decoded for the traces (no second decoding pass)
    ids = [int(i) for i in test_rows["id"]]
    generated = _programs_by_example(test_traces, ids)
    predictions = [generated[i][0] for i in ids]
    generation = compute_generation_accuracy(predictions, test_rows, num_spec_pairs=pairs)

    per_example = compute_correctness(predictions, test_rows, pairs)
    per_example_all = compute_correctness(predictions, test_rows, len(test_rows[0]["inputs"]) if ids else pairs)
    write_parquet(out / "evaluations" / f"step-{step}.programs.parquet", {
        "example_id": np.asarray(ids, dtype=np.int64), "program": np.array(predictions, dtype=object),
        "num_actions": np.array([generated[i][1] for i in ids], dtype=np.int16),
        "correct": np.array(per_example, dtype=bool), "correct_all": np.array(per_example_all, dtype=bool)})
    correct_gen = [generated[i][1] for i, ok in zip(ids, per_example) if ok]
    correct_ref = [int(n) for n, ok in zip(test_rows["length"], per_example) if ok]
    lengths = {
        "mean_generated": float(np.mean([generated[i][1] for i in ids])) if ids else float("nan"),
        "mean_reference": float(np.mean(test_rows["length"])),
        "mean_generated_correct": float(np.mean(correct_gen)) if correct_gen else float("nan"),
        "mean_reference_correct": float(np.mean(correct_ref)) if correct_ref else float("nan"),
        "num_correct": len(correct_gen),
        "length_test": length_test(correct_gen, correct_ref) if len(correct_gen) >= 2 else None,
    }

    tick = time.perf_counter()
    traces = {family: tuple(load_traces(t) for t in pair) for family, pair in traces.items()}  # read once for both probes
    probes, interventions, future, rows = probe_families(traces, preset, pairs)
    write_parquet(out / "evaluations" / f"step-{step}.rows.parquet", rows)
    timings["probes"] = time.perf_counter() - tick
    second = {}
    if preset.second_probe:
        tick = time.perf_counter()
        second["second_probe"] = second_probe_gains(traces, preset, pairs)
        timings["second_probe"] = time.perf_counter() - tick
    tick = time.perf_counter()
    perplexity = program_perplexity(model, tokenizer, texts, batch_size=min(32, preset.batch_size))
    timings["perplexity"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - start
    timings["total_cpu"] = time.process_time() - cpu_start  # this process's CPU time: robust to other jobs
    return {
        "step": step,
        "generation": generation,
        "lengths": lengths,
        "probes": probes,
        "future": future,
        "intervention": interventions,
        **second,
        "perplexity": perplexity,
        "num_trace_rows": {"train": len(train_traces), "test": len(test_traces),
                           "teacher_forced_train": len(tf_train), "teacher_forced_test": len(tf_test)},
        "num_specs": {"test": len(test_rows), "probe_train": len(data[1])},
        "teacher_forced_min_length": min_length,
        "timings_seconds": timings,
    }


def _checkpoint_model(path: Path):
    """A checkpoint's model (eval mode, on the GPU when there is one) and tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="eager")
    return _on_device(model.eval()), AutoTokenizer.from_pretrained(str(path))


def _checkpoint_traces(model, tokenizer, step: int, data, out: Path, preset: ReproducePreset, label_cache: dict | None,
                       timings: dict) -> dict:
    """One checkpoint's trace datasets, {family: (probe-training traces, test traces)}: decoded (or
    read from the cache under out/traces) and teacher-forced; their times go into `timings`."""
    from karel_hf.probing.traces import build_trace_dataset

    test_rows, probe_rows, _ = data
    common = dict(batch_size=preset.batch_size, cache_dir=str(out / "traces"), fingerprint_extra={"step": step},
                  num_prompt_pairs=prompt_pairs(test_rows))
    tick = time.perf_counter()
    test = build_trace_dataset(model, tokenizer, test_rows, **common)  # the test rows first, as always
    generated = (build_trace_dataset(model, tokenizer, probe_rows, **common), test)
    timings["traces_generated"] = time.perf_counter() - tick
    tick = time.perf_counter()
    forced = dict(common, mode="teacher_forced", min_length=teacher_forced_min_length(preset, test_rows),
                  label_cache=label_cache)
    test = build_trace_dataset(model, tokenizer, test_rows, **forced)
    teacher_forced = (build_trace_dataset(model, tokenizer, probe_rows, **forced), test)
    timings["traces_teacher_forced"] = time.perf_counter() - tick
    return {"generated": generated, "teacher_forced": teacher_forced}


def add_second_probe(step: int, path: Path, data, out: Path, preset: ReproducePreset,
                     label_cache: dict | None = None) -> dict:
    """Add the preset's second probe to checkpoint `step`'s saved evaluation (one made without it),
    from its cached traces, leaving every other number as it is; returns the updated evaluation."""
    saved = out / "evaluations" / f"step-{step}.json"
    evaluation = json.loads(saved.read_text())
    timings = {}
    model, tokenizer = _checkpoint_model(path)
    traces = _checkpoint_traces(model, tokenizer, step, data, out, preset, label_cache, timings)
    tick = time.perf_counter()
    evaluation["second_probe"] = second_probe_gains(traces, preset, prompt_pairs(data[0]))
    evaluation["timings_seconds"]["second_probe"] = time.perf_counter() - tick
    _write_evaluation(out, step, evaluation)
    return evaluation


def prompt_pairs(rows) -> int:
    """How many spec pairs the corpus shows in a prompt (the paper: 5), read from its first text."""
    from karel_hf.data.formatting import count_prompt_pairs

    return count_prompt_pairs(rows[0]["text"]) if len(rows) else 5


def compute_correctness(predictions, rows, num_spec_pairs: int = 5) -> list[bool]:
    from karel_hf.metrics.generation import load_reference, pairs_correct, parse_prediction

    flags = []
    for text, row in zip(predictions, rows):
        program = parse_prediction(text)
        flags.append(program is not None and pairs_correct(program, load_reference(row), num_spec_pairs))
    return flags


EVALUATION_FILES = ("step-{}.rows.parquet", "step-{}.programs.parquet", "step-{}.json")  # the JSON last: it marks a finished checkpoint
TEST_SPECS_FILE = "test_specs.parquet"
CONTROL_FILE = "untrained-on-step-{}.json"  # untrained_control's, for the final step
TEST_SPEC_COLUMNS = ("id", "program", "length", "inputs", "outputs")


FOLLOW_POLL_SECONDS = 30.0  # --follow: how often to look for new checkpoints


def evaluate_stage(out: Path, model_dir: Path, preset: ReproducePreset, follow: bool = False) -> list[Path]:
    """Evaluate every checkpoint that lacks one of its files (`EVALUATION_FILES`: an evaluation
    from before the per-row files is redone, the trace datasets coming from the cache). With
    `follow`, beside a training in another process: evaluate the checkpoints saved so far (complete
    ones: `checkpoint_problem` finds nothing), wait for more, and stop after the pass that starts
    once the training has written model/train_results.json."""
    kept, reported = {}, None  # the data rows and label cache, loaded once for every pass
    while follow:
        finished = (model_dir / "train_results.json").is_file()  # read first: the last pass sees every checkpoint
        complete = [(s, p) for s, p in model_checkpoints(model_dir) if checkpoint_problem(p) is None]
        if complete:
            _evaluate_checkpoints(out, complete, preset, model_dir, kept)
        if finished:
            break
        if len(complete) != reported:  # one line per new checkpoint, not per poll
            logger.info("evaluate: %d checkpoint(s) evaluated, waiting for the training in %s", len(complete), model_dir)
            reported = len(complete)
        time.sleep(FOLLOW_POLL_SECONDS)
    found = model_checkpoints(model_dir)
    if not found:
        raise ValueError(f"no checkpoint-N folders in {model_dir}: run the train stage first")
    kept = kept if follow else {}
    _evaluate_checkpoints(out, found, preset, model_dir, kept)
    control = untrained_control(out, model_dir, preset, kept)
    return [out / "evaluations" / f"step-{s}.json" for s, _ in found] + ([control] if control else [])


def _evaluate_checkpoints(out: Path, found: list, preset: ReproducePreset, model_dir: Path, kept: dict) -> None:
    """Evaluate those of the (step, folder) `found` that lack one of their files; `kept` holds the
    data rows and the label cache between calls."""
    from tqdm.auto import tqdm

    evaluations = out / "evaluations"
    todo = [(s, p) for s, p in found if not all((evaluations / f.format(s)).is_file() for f in EVALUATION_FILES)]
    # evaluations made without the preset's second probe get it added, the rest of them kept
    lacking = [(s, p) for s, p in found if (s, p) not in todo
               and _lacks_second_probe(json.loads((evaluations / f"step-{s}.json").read_text()), preset)
               ] if preset.second_probe else []
    specs_missing = not (evaluations / TEST_SPECS_FILE).is_file()
    workers = _eval_workers(preset, len(todo))
    if ((todo and workers == 1) or lacking or specs_missing) and "data" not in kept:
        kept["data"] = _data_rows(model_dir, preset)
    if specs_missing:
        test_rows = kept["data"][0]
        write_parquet(evaluations / TEST_SPECS_FILE, {name: list(test_rows[name]) for name in TEST_SPEC_COLUMNS})
    if workers > 1:
        _evaluate_in_workers(todo, workers, out, model_dir, preset)
    else:
        # labels depend on (program, spec) only: teacher-forced ones are computed once per sweep
        label_cache = kept.setdefault("label_cache", {})
        for step, path in tqdm(todo, desc="checkpoints", unit="ckpt"):
            _write_evaluation(out, step, evaluate_checkpoint(step, path, kept["data"], out, preset, label_cache))
    for step, path in tqdm(lacking, desc=f"second probe ({preset.second_probe})", unit="ckpt"):
        add_second_probe(step, path, kept["data"], out, preset, kept.setdefault("label_cache", {}))


def _eval_workers(preset: ReproducePreset, checkpoints: int) -> int:
    """The preset's `eval_workers`, at most one per checkpoint and per torch thread (OMP_NUM_THREADS=1
    keeps the stage in this process)."""
    import torch

    return max(1, min(preset.eval_workers, checkpoints, torch.get_num_threads()))


def _write_evaluation(out: Path, step: int, evaluation: dict) -> None:
    atomic_write_json(out / "evaluations" / f"step-{step}.json", evaluation, default=_json_default)


def _evaluate_in_workers(todo: list, workers: int, out: Path, model_dir: Path, preset: ReproducePreset) -> None:
    """Evaluate the `todo` checkpoints in `workers` fresh processes (spawned: no forked thread pools),
    each with an equal share of this process's torch threads; the parent writes each result as it
    arrives, so an interrupted stage keeps the finished checkpoints. A worker's error stops the stage."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch
    from tqdm.auto import tqdm

    threads = max(1, torch.get_num_threads() // workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start,
                             initargs=(model_dir, preset, threads)) as pool:
        jobs = {pool.submit(_worker_evaluate, step, path, out): step for step, path in todo}
        try:
            for job in tqdm(as_completed(jobs), total=len(jobs), desc=f"checkpoints ({workers} workers)", unit="ckpt"):
                _write_evaluation(out, jobs[job], job.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


_WORKER = {}  # one evaluation worker's data rows, preset and label cache (set by _worker_start)


def worker_threads(threads: int):
    """An evaluation worker's torch and BLAS threads set to `threads`; keep the returned limits alive
    (probe fits set their own)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    return threadpool_limits(limits=threads)


def _worker_start(model_dir: Path, preset: ReproducePreset, threads: int) -> None:
    _WORKER["limits"] = worker_threads(threads)
    _WORKER.update(data=_data_rows(model_dir, preset), preset=preset, label_cache={})


def _worker_evaluate(step: int, path: Path, out: Path) -> dict:
    return evaluate_checkpoint(step, path, _WORKER["data"], out, _WORKER["preset"], _WORKER["label_cache"])


# --------------------------------------------------------------------------------------- analyze
def _metric(evaluation: dict, family: str, name: str, metric: str) -> float:
    value = evaluation["probes"][family][name][metric]
    return value["value"] if isinstance(value, dict) else value


def _includes_zero(gain: dict) -> bool:
    low, high = gain.get("low"), gain.get("high")
    return low is None or high is None or not (np.isfinite(low) and np.isfinite(high)) or low <= 0 <= high


def _final_entry(result: dict) -> dict:
    """The headline keys of one probe family's result, with its strongest control's value."""
    keep = ("semantic_content", "unobserved", "strongest_control", "margin", "conditional_gain",
            "conditional_gain_code", "num_train", "num_test", "drop_last")
    entry = {k: result[k] for k in keep}
    strongest = result["strongest_control"]
    entry["strongest_control_value"] = result["controls"][strongest] if strongest else float("nan")
    return entry


def _regression(accuracy: list, values: list) -> dict | None:
    """The regression of accuracy on `values` over the checkpoints; None with fewer than 3 finite
    values or when every checkpoint gave the same value."""
    from karel_hf.probing.analysis import regress

    try:
        return regress(accuracy, values) if np.isfinite(values).sum() >= 3 else None
    except ValueError:  # every checkpoint gave the same value
        return None


def _second_probe_results(evaluations: list, accuracy: list, control: dict | None, preset: ReproducePreset) -> dict | None:
    """The second probe's conditional gains at the final checkpoint, at step 0 and on the untrained
    control, and the regression of accuracy on them over the checkpoints (`regressions`) and over the
    trained ones, step 0 left out (`regressions_trained`: the untrained model's random features give
    an MLP a gain that training first loses, LOG.md E41); None when the preset has no second probe
    or a checkpoint lacks it."""
    if not preset.second_probe or any(_lacks_second_probe(e, preset) for e in evaluations):
        return None
    names = [OFFSET_NAMES[o] for o in SECOND_PROBE_OFFSETS]
    gains = {f: {n: [e["second_probe"][f][n]["conditional_gain"]["value"] for e in evaluations] for n in names}
             for f in FAMILIES}

    def fits(rows):  # accuracy regressed on each gain over the checkpoints `rows`
        return {f: {n: _regression([accuracy[i] for i in rows], [gains[f][n][i] for i in rows]) for n in names}
                for f in FAMILIES}

    return {
        "probe": preset.second_probe,
        "final": {f: {n: evaluations[-1]["second_probe"][f][n] for n in names} for f in FAMILIES},
        "step_0": ({f: {n: evaluations[0]["second_probe"][f][n] for n in names} for f in FAMILIES}
                   if evaluations[0]["step"] == 0 else None),
        "untrained_states_on_final_programs": (control or {}).get("second_probe"),
        "regressions": fits(range(len(evaluations))),
        "regressions_trained": fits([i for i, e in enumerate(evaluations) if e["step"] > 0]),
    }


def _trained_fit(second: dict, name: str) -> dict | None:
    """The second probe's teacher-forced fit over the trained checkpoints (None in a results.json
    analyzed before it existed)."""
    return (second.get("regressions_trained") or {}).get("teacher_forced", {}).get(name)


def analyze_stage(out: Path, preset_name: str, preset: ReproducePreset, timings: dict) -> dict:
    from karel_hf.metrics.generation import best_constant_program_baseline, constant_program_baseline

    evaluations = sorted((json.loads(p.read_text()) for p in (out / "evaluations").glob("step-*.json")),
                         key=lambda e: e["step"])
    if not evaluations:
        raise ValueError(f"no evaluations in {out / 'evaluations'}: run the evaluate stage first")
    accuracy = [e["generation"]["accuracy"] for e in evaluations]
    names = list(OFFSET_NAMES.values())
    regressions = {}
    for family in FAMILIES:
        regressions[family] = {}
        for name in names:
            regressions[family][name] = {}
            for metric in REGRESSION_METRICS:
                regressions[family][name][metric] = _regression(accuracy, [_metric(e, family, name, metric)
                                                                           for e in evaluations])
    test_rows, _, _ = _data_rows(out / "model", preset)
    floor = constant_program_baseline(test_rows, prompt_pairs(test_rows))["accuracy"]
    best_constant = best_constant_program_baseline(test_rows, prompt_pairs(test_rows))
    final = evaluations[-1]
    control_file = out / "evaluations" / CONTROL_FILE.format(final["step"])
    control = json.loads(control_file.read_text()) if control_file.is_file() else None
    final_probes = {family: {name: _final_entry(final["probes"][family][name]) for name in [*names, "v3_current"]}
                    for family in FAMILIES}
    lengths = dict(final["lengths"])
    lengths["at_floor"] = bool(final["generation"]["accuracy"] <= max(floor, best_constant["accuracy"]) + AT_FLOOR_POINTS)
    flags = {
        "length_test_at_floor": lengths["at_floor"],
        "future_uninformative": {f: {n: v["uninformative"] for n, v in final["future"][f].items()} for f in FAMILIES},
        "intervention_uninformative": {f: {n: v["uninformative"] for n, v in final["intervention"][f].items()}
                                       for f in FAMILIES},
        "conditional_gain_includes_zero": {
            f: {n: _includes_zero(final["probes"][f][n]["conditional_gain"]) for n in names} for f in FAMILIES
        },
        "budget_not_met": sorted({f"{f}/{n}" for e in evaluations for f in FAMILIES for n in names
                                  if not e["probes"][f][n]["budget"]["met"]}),
    }
    results = {
        "preset": preset_name,
        "config": asdict(preset),
        "steps": [e["step"] for e in evaluations],
        "checkpoints": evaluations,
        "regressions": regressions,
        "final": {
            "step": final["step"],
            "generation_accuracy": final["generation"]["accuracy"],
            "generation_accuracy_all_pairs": final["generation"]["accuracy_all_pairs"],
            "probes": final_probes,
            "semantic_content": {n: final["probes"]["generated"][n]["semantic_content"] for n in names},
            "future": final["future"],
            "intervention": final["intervention"],
            "lengths": lengths,
        },
        "flags": flags,
        "second_probe": _second_probe_results(evaluations, accuracy, control, preset),
        "baselines": {
            "constant_program": floor,
            "best_constant_program": best_constant,
            "probe_chance": 0.25,
            "untrained_semantic_content": evaluations[0]["probes"]["generated"]["current"]["semantic_content"]
            if evaluations[0]["step"] == 0 else None,
            "untrained_states_on_final_programs": control,
        },
        "paper": PAPER,
        "timings_seconds": timings,
        "versions": library_versions(),
        "machine": {"training": _training_machine(out / "model"), "analysis": machine_info()},
    }
    atomic_write_json(out / "results.json", results, default=_json_default)
    return results


def _training_machine(model_dir: Path) -> dict | None:
    """The precision and machine of the training run in `model_dir` (its karel_run_config.json; the machine
    only for runs made since it is recorded); None without a readable run config."""
    from karel_hf.model_card import training_precision
    from karel_hf.training.run import RUN_CONFIG_NAME

    try:
        config = json.loads((model_dir / RUN_CONFIG_NAME).read_text())
        args = config["training_args"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {"precision": training_precision(args), "machine": config.get("machine")}


# ------------------------------------------------------------------------------------------ plot
def _series(evals, family, name, key):
    """One number per checkpoint (NaN where missing): `key` of a probe family, or `strongest`
    (the largest control), `gain` / `gain_low` / `gain_high` (the conditional gain)."""
    out = []
    for e in evals:
        r = e["probes"][family][name]
        if key == "strongest":
            values = [v for v in r["controls"].values() if v is not None and np.isfinite(v)]
            out.append(max(values) if values else float("nan"))
        elif key.startswith("gain"):
            part = {"gain": "value", "gain_low": "low", "gain_high": "high"}[key]
            out.append(r["conditional_gain"][part])
        else:
            out.append(r[key])
    return np.array([float("nan") if v is None else v for v in out], dtype=float)


def plot_results(out: Path) -> list[Path]:
    """Draw every figure from DIR/results.json (no model, no data needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results_path = out / "results.json"
    if not results_path.is_file():
        raise ValueError(f"no results.json in {out}: run the analyze stage first")
    results = json.loads(results_path.read_text())
    evals = results["checkpoints"]
    steps = [e["step"] for e in evals]
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    written = []
    names = list(OFFSET_NAMES.values())
    titles = {"generated": "generated programs", "teacher_forced": "teacher-forced reference programs"}

    def save(fig, name):
        path = figures / name
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
        plt.close(fig)
        written.append(path)

    def gain_curve(ax, family, name, color, label):
        ax.plot(steps, 100 * _series(evals, family, name, "gain"), "o-", color=color, ms=3, label=label)
        ax.fill_between(steps, 100 * _series(evals, family, name, "gain_low"),
                        100 * _series(evals, family, name, "gain_high"), color=color, alpha=0.15)

    accuracy = [100 * e["generation"]["accuracy"] for e in evals]
    # Fig. 2: semantic content against its strongest control, the conditional gain, generation accuracy
    fig, (ax, axg) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True, height_ratios=(3, 2))
    ax.plot(steps, 100 * _series(evals, "generated", "current", "semantic_content"), "o-", color="tab:blue",
            label="semantic content (current)")
    ax.plot(steps, 100 * _series(evals, "generated", "current", "strongest"), "--", color="tab:gray",
            label="strongest control (baseline)")
    ax.axhline(25, color="grey", lw=0.8, ls=":", label="chance (25%)")
    ax.set_ylabel("probe accuracy (%)")
    ax.set_ylim(0, 100)
    ax2 = ax.twinx()
    ax2.set_ylim(0, 100)
    ax2.plot(steps, accuracy, "s-", color="tab:red", ms=3, label="generation accuracy")
    ax2.axhline(100 * results["baselines"]["constant_program"], color="tab:red", lw=0.8, ls=":",
                label="constant program put_marker()")
    best_constant = results["baselines"].get("best_constant_program")
    if best_constant:
        ax2.axhline(100 * best_constant["accuracy"], color="tab:orange", lw=0.8, ls=":",
                    label="best constant program (1-2 actions)")
    ax2.set_ylabel("generation accuracy (%)")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", fontsize=7)
    ax.set_title("Semantic content and generation accuracy (paper Fig. 2)")
    gain_curve(axg, "generated", "current", "tab:blue", "conditional gain (current), 95% interval")
    axg.axhline(0, color="black", lw=0.8)
    axg.set_xlabel("training step")
    axg.set_ylabel("gain over prompt facts (points)")
    axg.legend(fontsize=7, loc="upper left")
    save(fig, "fig2_semantic_content.png")

    # Fig. 3: every offset, both families
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, family in zip(axes, FAMILIES):
        for name, style in zip(names, ("v-", "<-", "o-", "s-", "^-")):
            ax.plot(steps, 100 * _series(evals, family, name, "semantic_content"), style, ms=3, label=name)
        ax.axhline(25, color="grey", lw=0.8, ls="--", label="chance")
        ax.set_ylim(0, 100)
        ax.set_xlabel("training step")
        ax.set_title(titles[family], fontsize=9)
    axes[0].set_ylabel("semantic content (%)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Past, current and future states (paper Fig. 3)")
    save(fig, "fig3_future_states.png")

    # Conditional gain per offset, both families
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    colors = dict(zip(names, ("tab:purple", "tab:green", "tab:blue", "tab:orange", "tab:red")))
    for ax, family in zip(axes, FAMILIES):
        for name in names:
            gain_curve(ax, family, name, colors[name], name)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel("training step")
        ax.set_title(titles[family], fontsize=9)
    axes[0].set_ylabel("conditional gain over prompt facts (points)")
    axes[0].legend(fontsize=7)
    fig.suptitle("What the hidden state adds beyond the prompt (95% intervals over specs)")
    save(fig, "fig_conditional_gain.png")

    # Intervention: original vs alternative semantics -- the paper's accuracies (generated, current),
    # then the gains over the prompt facts (teacher-forced, prev1), which the facts do not tilt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    table = [e["intervention"]["generated"]["current"]["accuracy"] for e in evals]
    gains = [(_conditional(e, "teacher_forced", "prev1") or {}).get("gain", {}) for e in evals]
    for semantics in (sorted(table[0]) if table else []):
        style = ("o-", "black") if semantics == "original" else (".--", None)
        axes[0].plot(steps, [100 * (t.get(semantics) if t.get(semantics) is not None else float("nan")) for t in table],
                     style[0], color=style[1], label=semantics)
        axes[1].plot(steps, [100 * g[semantics]["value"] if semantics in g else float("nan") for g in gains],
                     style[0], color=style[1], label=semantics)
    axes[0].axhline(25, color="grey", lw=0.8, ls="--")
    axes[0].set_ylim(0, 100)
    axes[0].set_ylabel("semantic content, generated current (%)")
    axes[0].set_title("accuracies (the paper's comparison)", fontsize=9)
    axes[1].axhline(0, color="grey", lw=0.8)
    axes[1].set_ylabel("conditional gain, teacher-forced prev1 (points)")
    axes[1].set_title("gains over the prompt facts (docs/protocol.md §6b)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("training step")
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle("Original vs alternative semantics (intervention)")
    save(fig, "fig_semantics_intervention.png")

    # Fig. 6a: program lengths
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(steps, [e["lengths"]["mean_generated"] for e in evals], "o-", label="generated (all)")
    ax.plot(steps, [e["lengths"]["mean_generated_correct"] for e in evals], "s-", label="generated (correct)")
    ax.plot(steps, [e["lengths"]["mean_reference_correct"] for e in evals], "^--", label="reference (of correct)")
    ax.plot(steps, [e["lengths"]["mean_reference"] for e in evals], ":", color="grey", label="reference (all)")
    ax.set_xlabel("training step")
    ax.set_ylabel("mean program length (actions)")
    ax.legend(fontsize=8)
    ax.set_title("Program length over training (paper Fig. 6a)")
    save(fig, "fig6a_program_length.png")

    # Fig. 6b: perplexity on training programs
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(steps, [e["perplexity"]["perplexity"] for e in evals], "o-", color="tab:purple", label="perplexity")
    ax.set_xlabel("training step")
    ax.set_ylabel("perplexity on training programs")
    ax2 = ax.twinx()
    ax2.plot(steps, accuracy, "s-", color="tab:red", alpha=0.6, label="generation accuracy")
    ax2.set_ylabel("generation accuracy (%)")
    ax.set_title("Perplexity over training (paper Fig. 6b)")
    save(fig, "fig6b_perplexity.png")

    # Regression scatter (generated family, the paper's)
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, marker in (("current", "o"), ("next1", "s"), ("next2", "^")):
        reg = results["regressions"]["generated"][name]["semantic_content"]
        label = name if not reg else f"{name}: R^2={reg['r2']:.3f}"
        ax.scatter(100 * _series(evals, "generated", name, "semantic_content"), accuracy, marker=marker, label=label)
    ax.set_xlabel("semantic content (%)")
    ax.set_ylabel("generation accuracy (%)")
    ax.legend(fontsize=8)
    ax.set_title("Generation accuracy vs semantic content")
    save(fig, "fig_regression.png")
    return written


# ------------------------------------------------------------------------------------------ view
VIEWER_DIR = "viewer"


def view_stage(out: Path) -> Path:
    """The trace viewer as one static page, DIR/viewer/index.html (karel_hf.viewer: read from the
    saved files only, the default number of specs; seconds)."""
    from karel_hf.viewer.data import build_bundle
    from karel_hf.viewer.export import export_html

    return export_html(build_bundle(out), out / VIEWER_DIR)


# ---------------------------------------------------------------------------------------- report
def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _points(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:+.1f}"


def _gain(gain: dict) -> str:
    if gain is None or gain.get("value") is None or math.isnan(gain["value"]):
        return "-"
    return f"{_points(gain['value'])} [{_points(gain['low'])}, {_points(gain['high'])}]"


def _r2(fit) -> str:
    if not fit or not np.isfinite(fit["r2"]):  # no fit, or a constant accuracy
        return "-"
    return f"R^2={fit['r2']:.3f} (slope {fit['slope']:.2f}, p={fit['p_value']:.2g}, {fit['n']} checkpoints)"


def _one_line(program_text: str) -> str:
    """'def run() {\\n  turn_left()\\n}' -> 'turn_left()'."""
    return " ".join(program_text.split()[3:-1])


def _best_constant_row(results: dict) -> list[str]:
    best = results["baselines"].get("best_constant_program")
    if not best:
        return []
    name = _one_line(best["program"])
    return [f"| best constant program of 1-2 actions (`{name}`, chosen on the test split) | {_pct(best['accuracy'])} | - |"]


def _conditional(evaluation: dict | None, family: str, name: str) -> dict | None:
    """A checkpoint's conditional intervention at (family, name), None where it was not measured."""
    return ((evaluation or {}).get("intervention", {}).get(family, {}).get(name) or {}).get("conditional")


def _control_rows(results: dict) -> list[str]:
    """Headline rows: the final generated-family gains beside the untrained model's states on the
    same programs (`untrained_control`)."""
    control = results["baselines"].get("untrained_states_on_final_programs")
    if not control:
        return []
    final = results["final"]["probes"]["generated"]
    lines = []
    for name in ("current", "prev1"):
        ours, base = final[name]["conditional_gain"], control["probes"][name]["conditional_gain"]
        lines.append(f"| ... the untrained model's states on the final programs (generated, {name}): its gain; "
                     f"the final gain over it (points) | {_gain(base)}; {_points(ours['value'] - base['value'])} | - |")
    return lines


def _intervention_control(results: dict, family: str, name: str) -> tuple[dict | None, bool]:
    """The control of the final conditional intervention at (family, name) and whether it is the
    untrained states on the final programs (generated/current, when computed) rather than step 0's."""
    control = results["baselines"].get("untrained_states_on_final_programs")
    if family == "generated" and name == "current" and control:  # the same programs, not its own
        return control["intervention"]["current"]["conditional"], True
    first = results["checkpoints"][0]
    return (_conditional(first, family, name) if first["step"] == 0 else None), False


def _conditional_intervention_rows(results: dict) -> list[str]:
    """Headline rows: the conditional intervention at the final checkpoint beside the untrained one's."""
    lines = []
    for family, offsets in CONDITIONAL_INTERVENTION_OFFSETS.items():
        for name in (OFFSET_NAMES[o] for o in offsets):
            final = _conditional(results["checkpoints"][-1], family, name)
            base, same_programs = _intervention_control(results, family, name)
            which = "untrained states on these programs" if same_programs else "untrained model"
            if final is None:
                continue
            best = final["best_alternative"]
            flag = " (uninformative)" if final.get("uninformative") else ""
            gains = (f"{_points(final['gain']['original']['value'])} - {_points(final['gain'][best]['value'])} ({best})"
                     if best else "-")
            untrained_margin = ("-" if base is None else "no informative alternative" if base["best_alternative"] is None
                                else _points(base["original_minus_best_alternative"]))
            lines.append(f"| intervention, gains over the prompt facts ({family}, {name}): original's - best "
                         f"alternative's (points) | {gains} = {_points(final['original_minus_best_alternative'])}"
                         f"{flag}; {which} {untrained_margin} | - |")
            low, low_base = final.get("discordant_minimum"), (base or {}).get("discordant_minimum")
            lines.append(f"| ... on the rows where the meanings differ, the smallest margin [95%] | "
                         + (f"{_gain(low)} ({low['alternative']}, {low['num_rows']} rows)" if low else "-")
                         + f"; {which} " + (f"{_gain(low_base)} ({low_base['alternative']})" if low_base else "-")
                         + " | - |")
    return lines


def _second_probe_rows(results: dict) -> list[str]:
    """Headline rows: the second probe's final conditional gains beside their controls (step 0 for
    teacher-forced rows, the untrained states on the same programs for generated ones) and the
    regression of accuracy on the teacher-forced gain."""
    second = results.get("second_probe")
    if not second:
        return []
    kind, lines = second["probe"], []
    for name in (OFFSET_NAMES[o] for o in SECOND_PROBE_OFFSETS):
        tf, gen = second["final"]["teacher_forced"][name], second["final"]["generated"][name]
        step_0 = ((second["step_0"] or {}).get("teacher_forced") or {}).get(name)
        control = ((second["untrained_states_on_final_programs"] or {}).get("generated") or {}).get(name)
        lines += [
            f"| conditional gain final, {kind} probe (teacher_forced, {name}), 95% interval; step 0 (points) | "
            f"{_gain(tf['conditional_gain'])}; {_gain(step_0['conditional_gain']) if step_0 else '-'} | - |",
            f"| ... regression of accuracy on it | {_r2(second['regressions']['teacher_forced'][name])} | - |",
            f"| ... over the trained checkpoints (step 0 left out) | "
            f"{_r2(_trained_fit(second, name))} | - |",
            f"| conditional gain final, {kind} probe (generated, {name}); the untrained states on the same "
            f"programs (points) | {_gain(gen['conditional_gain'])}; {_gain(control['conditional_gain']) if control else '-'}"
            " | - |",
        ]
    return lines


def _caveats(results: dict) -> list[str]:
    """Plain warnings when the numbers above cannot be read as the paper's."""
    evals = results["checkpoints"]
    notes = []
    floor = results["baselines"]["constant_program"]
    constant = results["baselines"].get("best_constant_program") or {"accuracy": floor}
    floor = max(floor, constant["accuracy"])
    best = max(e["generation"]["accuracy"] for e in evals)
    if best <= floor:
        name = _one_line(constant.get("program", "def run() {\n  put_marker()\n}"))
        notes.append(
            f"- Generation accuracy never beat the best constant program `{name}` ({_pct(best)} <= {_pct(floor)}): "
            "the model has not left the \"babbling\" phase, so the regressions above are fits to noise "
            "(or to the untrained checkpoint alone) and say nothing about the paper's claims. Train longer "
            "(the `cpu` or `paper` preset).")
    final = results["final"]["probes"]
    headline = final["generated"]["current"]["conditional_gain"]
    if _includes_zero(headline):
        notes.append(f"- The final conditional gain (generated, current) is {_gain(headline)} points: its 95% "
                     "interval includes 0, so the hidden state adds nothing measurable beyond the prompt facts there.")
    includes = results["flags"]["conditional_gain_includes_zero"]
    positive = [f"{f}/{n} ({_gain(final[f][n]['conditional_gain'])})" for f in FAMILIES for n in OFFSET_NAMES.values()
                if not includes[f][n] and final[f][n]["conditional_gain"]["low"] > 0]
    tested = sum(1 for f in FAMILIES for n in OFFSET_NAMES.values() if np.isfinite(final[f][n]["conditional_gain"]["value"]))
    notes.append("- Final conditional gains with a 95% interval above 0: " + (", ".join(positive) if positive else "none")
                 + f" (of {tested} tested; with no effect at all about 1 in 40 lies above 0 by chance). At the "
                 "look-back offsets of the teacher-forced family the model has read the actions that set the label, "
                 "so a gain there may be a record of those tokens: compare it with the untrained checkpoint's.")
    flags = results["flags"]
    if flags["length_test_at_floor"]:
        notes.append(f"- The length test is at the floor: final accuracy {_pct(results['final']['generation_accuracy'])} "
                     f"<= constant program {_pct(floor)} + {100 * AT_FLOOR_POINTS:.0f} points; its p-value says nothing.")
    for family in FAMILIES:
        for name, future in results["final"]["future"][family].items():
            if future["uninformative"]:
                notes.append(f"- Future analysis ({family}, {name}) is uninformative: best current -> future classifier "
                             f"{_pct(future['best_future_classifier'])} on {future['num_rows']} rows (>= 95% or < 100 rows).")
    for family in FAMILIES:
        for name, inter in results["final"]["intervention"][family].items():
            if inter["uninformative"]:
                best = inter["best_alternative"]
                notes.append(f"- Intervention ({family}, {name}) is uninformative: the best alternative ({best or '-'}) has labels "
                             f"{_pct(inter['determined_by_original'].get(best) if best else None)} determined by the original "
                             f"ones on {inter['num_rows']} rows (>= 95% or < 100 rows).")
    for family, offsets in CONDITIONAL_INTERVENTION_OFFSETS.items():
        for name in (OFFSET_NAMES[o] for o in offsets):
            low = (_conditional(results["checkpoints"][-1], family, name) or {}).get("discordant_minimum")
            if low and low["low"] <= 0:
                notes.append(
                    f"- The intervention as gains ({family}, {name}): on the {low['num_rows']} rows where {low['alternative']}'s "
                    f"labels differ from the original's, what the state adds for the original meaning is not measurably "
                    f"more than for {low['alternative']} (original's gain - its gain {_gain(low)} points, interval not "
                    "above 0), so these probes do not single out the program's real semantics there; the paper's "
                    "comparison of accuracies is tilted toward the original by the prompt facts (docs/protocol.md §6b).")
    if flags["budget_not_met"]:
        notes.append("- The row budget was not met (fewer scored rows than the budget) at some checkpoint for: "
                     + ", ".join(flags["budget_not_met"]) + "; their counts differ across checkpoints (see num_train/num_test).")
    return ["", "## Caveats", "", *notes] if notes else []


def _viewer_link(out: Path) -> list[str]:
    page = out / VIEWER_DIR / "index.html"
    if not page.is_file():
        return []
    return ["", f"Trace viewer: [{VIEWER_DIR}/index.html]({VIEWER_DIR}/index.html), one static page (open it in a "
            "browser): each test spec's grids, the program step by step, the probes' predictions against the true "
            "direction and the prompt-only control, the curves. `karel-hf view DIR` serves the same as a Gradio app."]


def _machine_lines(results: dict) -> list[str]:
    """Where the numbers came from: the training's precision and machine, and the evaluating machine."""
    machine = results.get("machine") or {}
    training, analysis = machine.get("training"), machine.get("analysis")
    lines = []
    if training:
        where = f" on {describe_machine(training['machine'])}" if training.get("machine") else ""
        lines.append(f"Trained in {training['precision']}{where}.")
    if analysis:
        lines.append(f"Analysed on {describe_machine(analysis)}.")
    return ["", " ".join(lines)] if lines else []


def render_report(out: Path) -> Path:
    if not (out / "results.json").is_file():
        raise ValueError(f"no results.json in {out}: run the analyze stage first")
    results = json.loads((out / "results.json").read_text())
    evals = results["checkpoints"]
    final = results["final"]
    config = results["config"]
    final_eval = evals[-1]
    names = list(OFFSET_NAMES.values())
    head = final["probes"]["generated"]["current"]
    lines = [
        f"# karel_hf reproduction: preset `{results['preset']}`",
        "",
        f"{len(evals)} checkpoints (steps {', '.join(str(s) for s in results['steps'])}); "
        f"test specs per checkpoint: {int(final_eval['generation']['num_examples'])}, probe training specs: "
        f"{config['probe_train_specs']}, row budget: {config['max_train_rows']} train / {config['max_test_rows']} test "
        f"per family and offset, probe: {config['probe']}"
        + (f" ({config['second_probe']} as well for the conditional gain at "
           f"{', '.join(OFFSET_NAMES[o] for o in SECOND_PROBE_OFFSETS)})" if config.get("second_probe") else "")
        + f", rows whose label is the initial or final state dropped "
        f"(drop_last={head['drop_last']}). Teacher-forced programs: reference programs with >= "
        f"{final_eval.get('teacher_forced_min_length', 1)} actions.",
        *_viewer_link(out),
        *_machine_lines(results),
        "",
        "## Headline numbers",
        "",
        "| quantity | ours | paper |",
        "|---|---|---|",
        f"| generation accuracy, final (spec pairs) | {_pct(final['generation_accuracy'])} | 96.4% (v1), 92.4% (v3) |",
        f"| generation accuracy, final (all 10 pairs) | {_pct(final['generation_accuracy_all_pairs'])} | - |",
        f"| constant program `put_marker()` | {_pct(results['baselines']['constant_program'])} | - |",
        *_best_constant_row(results),
        f"| semantic content at step 0 (generated, current) | {_pct(results['baselines']['untrained_semantic_content'])} | ~25% (chance) |",
        f"| semantic content final (generated, current) | {_pct(head['semantic_content'])} | - |",
        f"| strongest control final | {head['strongest_control'] or '-'} {_pct(head['strongest_control_value'])} | - |",
        f"| margin final (semantic content - strongest control) | {_points(head['margin'])} points | - |",
        f"| conditional gain final, 95% interval (points) | {_gain(head['conditional_gain'])} | - |",
        *_control_rows(results),
        *_conditional_intervention_rows(results),
        *_second_probe_rows(results),
    ]
    for name in ("current", "next1", "next2"):
        regs = results["regressions"]["generated"][name]
        lines.append(f"| regression of accuracy on semantic content ({name}) | {_r2(regs['semantic_content'])} | "
                     f"R^2={PAPER['r2'][name]}, p<0.001 |")
        lines.append(f"| ... on margin / conditional gain ({name}) | {_r2(regs['margin'])} / {_r2(regs['conditional_gain'])} | - |")
    for name in ("next1", "next2"):
        fut = final["future"]["generated"].get(name, {})
        flag = " (uninformative)" if fut.get("uninformative") else ""
        lines.append(f"| best classifier current -> {name} direction | {_pct(fut.get('best_future_classifier'))}{flag} | "
                     f"{_pct(PAPER['best_future_classifier'][name])} |")
        lines.append(f"| probe {name}, where the current probe is right | "
                     f"{_pct(fut.get('probe_future_given_current_correct'))}{flag} | "
                     f"{_pct(PAPER['probe_given_current_correct'][name])} |")
    lt = final["lengths"].get("length_test") or {}
    floor_flag = " (at the floor)" if final["lengths"].get("at_floor") else ""
    lines.append(f"| correct generated vs reference length (final) | {final['lengths']['mean_generated_correct']:.2f} vs "
                 f"{final['lengths']['mean_reference_correct']:.2f}, Wilcoxon p={lt.get('p_value', float('nan')):.2g}"
                 f"{floor_flag} | generated shorter, significant |")
    lines += _caveats(results)
    lines += ["", "## Final checkpoint, every probe family", "",
              "| family | offset | semantic content | unobserved | strongest control | margin | conditional gain [95%] "
              "| gain over code state [95%] | rows train/test |", "|---|---|---|---|---|---|---|---|---|"]
    control = results["baselines"].get("untrained_states_on_final_programs")
    tables = [(family, final["probes"][family], [*names, "v3_current"]) for family in FAMILIES]
    if control:  # the generated family's control: step 0's states on the final checkpoint's programs
        tables.append(("generated, untrained states", {n: _final_entry(control["probes"][n]) for n in names}, names))
    for family, probes, rows in tables:
        for name in rows:
            r = probes[name]
            lines.append(
                f"| {family} | {name} | {_pct(r['semantic_content'])} | {_pct(r['unobserved'])} | "
                f"{r['strongest_control'] or '-'} {_pct(r['strongest_control_value'])} | {_points(r['margin'])} | "
                f"{_gain(r['conditional_gain'])} | {_gain(r['conditional_gain_code'])} | {r['num_train']}/{r['num_test']} |")
    for family in FAMILIES:
        lines += ["", f"## Per checkpoint: {family}", "",
                  "Each cell: semantic content / strongest control / conditional gain [95% interval], in % and points.", "",
                  "| step | gen. acc. | " + " | ".join(names) + " |", "|" + "---|" * (2 + len(names))]
        for e in evals:
            cells = []
            for name in names:
                r = e["probes"][family][name]
                strongest = r["controls"].get(r["strongest_control"]) if r["strongest_control"] else None
                cells.append(f"{_pct(r['semantic_content'])} / {_pct(strongest)} / {_gain(r['conditional_gain'])}")
            lines.append(f"| {e['step']} | {_pct(e['generation']['accuracy'])} | " + " | ".join(cells) + " |")
    alternatives = sorted(k for k in evals[0]["intervention"]["generated"]["current"]["accuracy"] if k != "original")
    lines += ["", "## Per checkpoint: v3, intervention, lengths", "",
              "Accuracies of the alternatives' probes (generated, current), as the paper compares them; the gains "
              "column is the same comparison on what the state adds beyond the prompt facts (docs/protocol.md §6b).",
              "",
              "| step | gen. acc. | all 10 | v3 gen. | v3 t.f. | original - best alternative (gen. current) | "
              "gains: original - best alternative (gen. current / t.f. prev1) | "
              + " | ".join(alternatives) + " | gen. len | perplexity | eval. s |",
              "|" + "---|" * (10 + len(alternatives))]
    for e in evals:
        inter = e["intervention"]["generated"]["current"]
        alts = " | ".join(_pct(inter["accuracy"][s]) for s in alternatives)
        gains = " / ".join(
            f"{_points(c['original_minus_best_alternative'])} ({c['best_alternative'] or '-'})" if c else "-"
            for c in (_conditional(e, "generated", "current"), _conditional(e, "teacher_forced", "prev1")))
        lines.append(
            f"| {e['step']} | {_pct(e['generation']['accuracy'])} | {_pct(e['generation']['accuracy_all_pairs'])} | "
            f"{_pct(e['probes']['generated']['v3_current']['semantic_content'])} | "
            f"{_pct(e['probes']['teacher_forced']['v3_current']['semantic_content'])} | "
            f"{_points(inter['original_minus_best_alternative'])} ({inter['best_alternative'] or '-'})"
            f"{' (uninformative)' if inter['uninformative'] else ''} | {gains} | {alts} | "
            f"{e['lengths']['mean_generated']:.2f} | {e['perplexity']['perplexity']:.3g} | "
            f"{e.get('timings_seconds', {}).get('total', float('nan')):.0f} |"
        )
    lines += ["", "## Stage wall times", ""]
    lines += [f"- {stage}: {seconds:.0f} s" for stage, seconds in results["timings_seconds"].items()]
    lines += ["", "## Figures", ""]
    lines += [f"![{p.stem}](figures/{p.name})" for p in sorted((out / "figures").glob("*.png"))]
    return atomic_write_text(out / "report.md", "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------- run
def reproduce(args: ReproduceArguments) -> Path:
    out = writable_dir(args.output_dir, "--output_dir")
    preset = args.resolved()
    stages = args.stage_list()
    timer = _Timer(out / "timings.json")
    if not (args.follow and (out / "reproduce_config.json").is_file()):  # a follower keeps the training run's
        atomic_write_json(out / "reproduce_config.json", {"preset": args.preset, "resolved": asdict(preset),
                                                          "stages": stages, "versions": library_versions()},
                          default=_json_default)
    model_dir = out / "model"
    if "train" in stages:
        timer.run("train", train_stage, out, preset)
    if extended_language(model_dir, preset):  # karel_hf.reproduce_control_flow's stages
        from karel_hf import reproduce_control_flow as flow

        if "evaluate" in stages:
            timer.run("evaluate", flow.evaluate_stage, out, model_dir, preset)
        if "analyze" in stages:
            timer.run("analyze", flow.analyze_stage, out, args.preset, preset, timer.times)
        if "plot" in stages:
            timer.run("plot", flow.plot_results, out)
        if "view" in stages:
            logger.info("view: the trace viewer shows straight-line traces; an extended-language run has none")
        if "report" in stages:
            timer.run("report", flow.render_report, out)
        return out
    if "evaluate" in stages:
        timer.run("evaluate", evaluate_stage, out, model_dir, preset, args.follow)
    if "analyze" in stages:
        timer.run("analyze", analyze_stage, out, args.preset, preset, timer.times)
    if "plot" in stages:
        timer.run("plot", plot_results, out)
    if "view" in stages:
        timer.run("view", view_stage, out)
    if "report" in stages:
        timer.run("report", render_report, out)
    return out


def extended_language(model_dir: Path, preset: ReproducePreset) -> bool:
    """Whether the preset's own stage trains on a corpus in the extended language. A corpus read from
    `dataset_path` has no config to say so: it is extended when a program of its test split's first 1,000
    has control flow; such a corpus must hold what the evaluation reads (`check_saved_corpus`)."""
    from karel_hf.reproduce_control_flow import control_flow_share

    _, data_args, _, _ = parse_train_args(train_argv(model_dir, preset))
    config = data_args.corpus_config()
    if config is not None:
        return bool(config.extended)
    raw = load_raw_datasets(data_args)
    check_saved_corpus(raw, data_args.dataset_path)
    return control_flow_share(raw["test"].select(range(min(1000, len(raw["test"]))))["program"]) > 0


# what the evaluate stage reads of a corpus: the test specs' worlds and reference programs, the training
# split's for the probes' training rows and the perplexity texts
EVALUATED_COLUMNS = ("id", "text", "program", "length", "inputs", "outputs")


def check_saved_corpus(raw, source) -> None:
    """A corpus read from `dataset_path` can be evaluated: train and test splits, neither empty, with the
    columns of a karel_hf corpus (`EVALUATED_COLUMNS`); else a ValueError (a malformed input: exit status 1)
    naming what is missing."""
    for split in ("train", "test"):
        if split not in raw or not len(raw[split]):
            have = ", ".join(f"{name} ({len(rows)} rows)" for name, rows in raw.items()) or "none"
            raise ValueError(f"the corpus at {source} has no {split} examples, which karel-hf reproduce needs "
                             f"(splits: {have})")
        missing = [c for c in EVALUATED_COLUMNS if c not in raw[split].column_names]
        if missing:
            raise ValueError(f"the corpus at {source}: its {split} split lacks the column(s) {', '.join(missing)} of a "
                             f"karel_hf corpus (karel-hf dataset export writes them)")


class _ArgumentParser(StrictParsing, HfArgumentParser):
    """`HfArgumentParser` whose errors raise `UsageError` (see `karel_hf.errors`)."""


def reproduce_command(argv: list[str] | None) -> int:
    """Parse the flags, check the training flags the stages will use, run the stages; errors are raised."""
    parser = _ArgumentParser(ReproduceArguments, prog="karel-hf reproduce")
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=False)
    except UsageError:
        raise
    except ValueError as err:  # ReproduceArguments' checks, or flags the parser does not know
        raise UsageError(str(err)) from None
    preset = args.resolved()
    # the training flags (the preset's and --train_args, every stage's) fail now, not after the first stages ran
    out = Path(args.output_dir)
    for stage, folder in curriculum_dirs(out, preset):
        parse_train_args(["--preset", stage, "--output_dir", str(folder), "--model_name_or_path", str(out),
                          *preset.train_overrides])
    extended = extended_language(out / "model", preset)  # parses the preset's own stage's flags
    for name in ("alternatives_test_specs", "trajectory_test_specs"):
        if getattr(args, name) and not extended:
            raise UsageError(f"--{name}: reads the control-flow task (a corpus in the extended language); "
                             f"preset {args.preset} trains straight-line programs")
        if getattr(preset, name) and extended:  # its longer test split is generated: not from a saved corpus
            dataset_path = parse_train_args(train_argv(out / "model", preset))[1].dataset_path
            if dataset_path:
                raise UsageError(f"{name}: the corpus comes from {dataset_path}, whose test split cannot be "
                                 f"generated longer; pass --{name} 0")
    if args.rotation_probe and not extended:
        raise UsageError(f"--rotation_probe: reads the control-flow task (a corpus in the extended language); preset "
                         f"{args.preset} trains straight-line programs, whose probes read every offset (--second_probe)")
    if args.follow and extended:
        raise UsageError("--follow: the evaluate stage of an extended-language run (karel_hf.reproduce_control_flow) "
                         "reads the finished training's checkpoints; run it after the train stage instead")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[StdoutHandler()])
    out = reproduce(args)
    page = out / VIEWER_DIR / "index.html"
    print(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'figures'}"
          + (f" and the trace viewer {page}" if page.is_file() else ""))
    if "report" in args.stage_list() and (out / "results.json").is_file():
        results = json.loads((out / "results.json").read_text())
        if results.get("language") == "extended":
            from karel_hf.reproduce_control_flow import headline_summary as summary
        else:
            summary = headline_summary
        print("\n".join(summary(results)))
    return 0


def headline_summary(results: dict) -> list[str]:
    """A few lines for the console at the end of a run: accuracy against the floor, the final
    conditional gain against its control, the intervention as gains against its control."""
    final, baselines = results["final"], results["baselines"]
    constant = baselines.get("best_constant_program") or {}
    floor = max(baselines["constant_program"], constant.get("accuracy", 0.0))
    gain = final["probes"]["generated"]["current"]["conditional_gain"]
    control = baselines.get("untrained_states_on_final_programs")
    lines = [f"step {final['step']}: generation accuracy {_pct(final['generation_accuracy'])} (best constant program "
             f"{_pct(floor)})",
             f"conditional gain over the prompt facts (generated, current): {_gain(gain)} points"
             + (f"; the untrained states on the same programs {_gain(control['probes']['current']['conditional_gain'])}"
                if control else "")]
    for family, offsets in CONDITIONAL_INTERVENTION_OFFSETS.items():
        for name in (OFFSET_NAMES[o] for o in offsets):
            found = _conditional(results["checkpoints"][-1], family, name)
            base, same_programs = _intervention_control(results, family, name)
            which = "the untrained states on these programs" if same_programs else "step 0"
            if found and found["best_alternative"]:
                lines.append(f"intervention as gains ({family}, {name}): original - best alternative "
                             f"({found['best_alternative']}) {_points(found['original_minus_best_alternative'])} points"
                             + (f"; {which} {_points(base['original_minus_best_alternative'])}"
                                if base and base["best_alternative"] else ""))
    second = results.get("second_probe")
    for name in (OFFSET_NAMES[o] for o in SECOND_PROBE_OFFSETS) if second else ():
        step_0 = ((second["step_0"] or {}).get("teacher_forced") or {}).get(name)
        fit = second["regressions"]["teacher_forced"][name]
        trained = _trained_fit(second, name)
        lines.append(f"{second['probe']} probe, conditional gain (teacher_forced, {name}): "
                     f"{_gain(second['final']['teacher_forced'][name]['conditional_gain'])} points"
                     + (f"; step 0 {_gain(step_0['conditional_gain'])}" if step_0 else "")
                     + (f"; R^2 of accuracy on it {fit['r2']:.2f} over {fit['n']} checkpoints"
                        if fit and np.isfinite(fit["r2"]) else "")
                     + (f", {trained['r2']:.2f} over the {trained['n']} trained ones"
                        if fit and np.isfinite(fit["r2"]) and trained and np.isfinite(trained["r2"]) else ""))
    return lines + ["(report.md has every number beside its control, and its caveats)"]


def main(argv: list[str] | None = None) -> int:
    """`karel-hf reproduce`: an error is one line on stderr and exit status 2 (usage) or 1 (failure),
    as `karel_hf.errors.run_main` says."""
    return run_main("karel-hf reproduce", reproduce_command, argv)
