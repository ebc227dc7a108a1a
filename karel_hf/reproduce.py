"""Reproduce the paper end to end: train, sweep the checkpoints, analyse, plot, report.

`karel-hf reproduce --preset demo --output_dir DIR` runs the stages below. Each stage writes its
outputs under DIR and is skipped when they already exist, so an interrupted run picks up where it
stopped (training resumes from its last checkpoint, finished checkpoint evaluations are kept).

    train      DIR/model/                 a `karel-hf train` run with checkpoints (step 0 included)
    evaluate   DIR/evaluations/step-N.json  per checkpoint: generation accuracy (spec pairs and all
               10), semantic content (v1 direction probes, current / +1 / +2), the v3 features,
               the intervention (same states, labels from each alternative semantics, a fresh
               probe each), generated vs reference program lengths, perplexity on training programs
    analyze    DIR/results.json           regressions across checkpoints, future-state analysis,
               length test, baselines, stage wall times
    plot       DIR/figures/*.png          drawn from results.json only (`--stages plot` redraws)
    report     DIR/report.md              our numbers beside the paper's

Trace datasets (hidden states + labels per generated action) are cached in DIR/traces/ by a
fingerprint of the checkpoint weights and options; push them with `karel-hf push traces`.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from transformers import HfArgumentParser

from karel_hf.errors import StrictParsing, UsageError, run_main
from karel_hf.presets import PresetError, load_preset, preset_names
from karel_hf.training import load_raw_datasets, parse_train_args, run_training
from karel_hf.utils import (
    StdoutHandler,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    latest_checkpoint,
    library_versions,
    model_checkpoints,
    writable_dir,
)

logger = logging.getLogger(__name__)

STAGES = ("train", "evaluate", "analyze", "plot", "report")
OFFSET_NAMES = {0: "current", 1: "next1", 2: "next2"}

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
    section, karel_hf/presets/<name>.yaml, gives the values)."""

    train_preset: str
    train_overrides: tuple = ()  # extra `karel-hf train` flags, e.g. ("--max_steps", "600")
    test_specs: int = 500  # test specs decoded per checkpoint (generation accuracy, probe test set)
    probe_train_specs: int = 1000  # training specs decoded per checkpoint (probe training set)
    perplexity_programs: int = 256
    probe: str = "linear"
    batch_size: int = 64
    description: str = ""


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
    except TypeError as err:  # a key ReproducePreset does not have
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
    batch_size: int | None = field(default=None, metadata={"help": "Decoding batch size."})
    train_args: str = field(default="", metadata={"help": "Extra `karel-hf train` flags, quoted, e.g. '--max_steps 100'."})

    def __post_init__(self):
        reproduce_preset(self.preset)  # raises, naming the presets there are, for an unknown one
        unknown = [s for s in self.stage_list() if s not in STAGES]
        if unknown:
            raise ValueError(f"stages: unknown stage(s) {unknown}; expected a comma-separated subset of {', '.join(STAGES)}")
        if self.probe is not None and self.probe not in ("linear", "mlp1", "mlp2"):
            raise ValueError(f"probe: unknown value {self.probe!r}; expected linear, mlp1 or mlp2")
        for name in ("test_specs", "probe_train_specs", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value}")

    def stage_list(self) -> list[str]:
        return [s.strip() for s in self.stages.split(",") if s.strip()]

    def resolved(self) -> ReproducePreset:
        base = reproduce_preset(self.preset)
        changes = {k: getattr(self, k) for k in ("test_specs", "probe_train_specs", "probe", "batch_size")
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
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start
            atomic_write_json(self.path, self.times, default=_json_default)


# ----------------------------------------------------------------------------------------- train
def train_stage(out: Path, preset: ReproducePreset) -> Path:
    model_dir = out / "model"
    if (model_dir / "train_results.json").is_file():
        logger.info("train: %s is finished, skipping", model_dir)
        return model_dir
    argv = ["--preset", preset.train_preset, "--output_dir", str(model_dir), *preset.train_overrides]
    if latest_checkpoint(model_dir) is not None:
        argv += ["--resume_from_checkpoint", "last"]
    model_args, data_args, training_args, name = parse_train_args(argv)
    run_training(model_args, data_args, training_args, preset=name, argv=argv)
    return model_dir


# -------------------------------------------------------------------------------------- evaluate
def _data_rows(model_dir: Path, preset: ReproducePreset):
    """(test rows, probe-training rows, training texts for perplexity), as the run's config says."""
    argv = ["--preset", preset.train_preset, "--output_dir", str(model_dir), *preset.train_overrides]
    _, data_args, _, _ = parse_train_args(argv)
    raw = load_raw_datasets(data_args)
    test = raw["test"].select(range(min(preset.test_specs, len(raw["test"]))))
    train = raw["train"]
    probe_train = train.select(range(min(preset.probe_train_specs, len(train))))
    # perplexity programs: training specs not used for the probes, when the split is big enough
    start = min(len(probe_train), max(0, len(train) - preset.perplexity_programs))
    texts = train.select(range(start, min(len(train), start + preset.perplexity_programs)))["text"]
    return test, probe_train, texts


def _summary(result: dict) -> dict:
    keep = ("semantic_content", "per_task", "per_input", "chance", "shuffled", "initial", "initial_direction",
            "num_train", "num_test", "num_test_labelled")
    return {k: result[k] for k in keep if k in result}


def _programs_by_example(traces, ids: list[int]) -> dict:
    """example id -> (generated program text, number of actions) from a trace dataset."""
    found = {}
    for example_id, program, n in zip(traces["example_id"], traces["program"], traces["num_actions"]):
        found.setdefault(int(example_id), (program, int(n)))
    return {i: found.get(i, ("", 0)) for i in ids}


def evaluate_checkpoint(step: int, path: Path, data, out: Path, preset: ReproducePreset) -> dict:
    """Everything measured at one checkpoint (docs/protocol.md §5-7)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from karel_hf.karel.semantics import ALTERNATIVE_SEMANTICS
    from karel_hf.metrics.generation import compute_generation_accuracy
    from karel_hf.probing.analysis import best_future_classifier, length_test, probe_future_given_current_correct, program_perplexity
    from karel_hf.probing.probes import semantic_content
    from karel_hf.probing.traces import build_trace_dataset

    test_rows, probe_rows, texts = data
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="eager")
    model.eval()
    if torch.cuda.is_available():
        model.to("cuda")
    pairs = prompt_pairs(test_rows)
    common = dict(batch_size=preset.batch_size, cache_dir=str(out / "traces"), fingerprint_extra={"step": step},
                  num_prompt_pairs=pairs)
    test_traces = build_trace_dataset(model, tokenizer, test_rows, **common)
    train_traces = build_trace_dataset(model, tokenizer, probe_rows, **common)

    # generation accuracy from the programs decoded for the traces (no second decoding pass)
    ids = [int(i) for i in test_rows["id"]]
    generated = _programs_by_example(test_traces, ids)
    predictions = [generated[i][0] for i in ids]
    generation = compute_generation_accuracy(predictions, test_rows, num_spec_pairs=pairs)

    per_example = compute_correctness(predictions, test_rows, pairs)
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

    # Shuffled-label controls for the current state only, the intervention on the current state:
    # every probe is a fit, and the fits are most of a checkpoint's evaluation time.
    probes, future = {}, {}
    for offset, name in OFFSET_NAMES.items():
        result = semantic_content(train_traces, test_traces, offset=offset, probe=preset.probe,
                                  controls=offset == 0, return_predictions=True, num_prompt_pairs=pairs)
        probes[name] = _summary(result)
        if offset == 0:
            current = result
            continue
        future[name] = {
            "probe_given_current_correct": probe_future_given_current_correct(
                current["predictions"], current["targets"], result["predictions"], result["targets"]),
            "best_future_classifier": best_future_classifier(current["targets"], result["targets"]),
        }
    probes["v3_current"] = _summary(semantic_content(train_traces, test_traces, label_set="v3", probe=preset.probe,
                                                     controls=False))
    alternatives = {
        semantics: {"current": _summary(semantic_content(train_traces, test_traces, probe=preset.probe,
                                                         semantics=semantics, controls=False,
                                                         num_prompt_pairs=pairs))}
        for semantics in ALTERNATIVE_SEMANTICS
    }
    perplexity = program_perplexity(model, tokenizer, texts, batch_size=min(32, preset.batch_size))
    return {
        "step": step,
        "generation": generation,
        "lengths": lengths,
        "probes": probes,
        "future": future,
        "alternative_semantics": alternatives,
        "perplexity": perplexity,
        "num_trace_rows": {"train": len(train_traces), "test": len(test_traces)},
    }


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


def evaluate_stage(out: Path, model_dir: Path, preset: ReproducePreset) -> list[Path]:
    from tqdm.auto import tqdm

    found = model_checkpoints(model_dir)
    if not found:
        raise ValueError(f"no checkpoint-N folders in {model_dir}: run the train stage first")
    todo = [(s, p) for s, p in found if not (out / "evaluations" / f"step-{s}.json").is_file()]
    data = _data_rows(model_dir, preset) if todo else None
    for step, path in tqdm(todo, desc="checkpoints", unit="ckpt"):
        atomic_write_json(out / "evaluations" / f"step-{step}.json", evaluate_checkpoint(step, path, data, out, preset),
                          default=_json_default)
    return [out / "evaluations" / f"step-{s}.json" for s, _ in found]


# --------------------------------------------------------------------------------------- analyze
def analyze_stage(out: Path, preset_name: str, preset: ReproducePreset, timings: dict) -> dict:
    from karel_hf.metrics.generation import constant_program_baseline
    from karel_hf.probing.analysis import regress

    evaluations = sorted((json.loads(p.read_text()) for p in (out / "evaluations").glob("step-*.json")),
                         key=lambda e: e["step"])
    if not evaluations:
        raise ValueError(f"no evaluations in {out / 'evaluations'}: run the evaluate stage first")
    accuracy = [e["generation"]["accuracy"] for e in evaluations]
    regressions = {}
    for name in OFFSET_NAMES.values():
        content = [e["probes"][name]["semantic_content"] for e in evaluations]
        try:
            regressions[name] = regress(accuracy, content) if np.isfinite(content).sum() >= 3 else None
        except ValueError:  # every checkpoint had the same semantic content
            regressions[name] = None
    test_rows, _, _ = _data_rows(out / "model", preset)
    final = evaluations[-1]
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
            "semantic_content": {n: final["probes"][n]["semantic_content"] for n in OFFSET_NAMES.values()},
            "future": final["future"],
            "lengths": final["lengths"],
        },
        "baselines": {
            "constant_program": constant_program_baseline(test_rows, prompt_pairs(test_rows))["accuracy"],
            "probe_chance": 0.25,
            "untrained_semantic_content": evaluations[0]["probes"]["current"]["semantic_content"]
            if evaluations[0]["step"] == 0 else None,
        },
        "paper": PAPER,
        "timings_seconds": timings,
        "versions": library_versions(),
    }
    atomic_write_json(out / "results.json", results, default=_json_default)
    return results


# ------------------------------------------------------------------------------------------ plot
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

    def save(fig, name):
        path = figures / name
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
        plt.close(fig)
        written.append(path)

    def content(name, semantics=None):
        if semantics is None:
            return [e["probes"][name]["semantic_content"] for e in evals]
        return [e["alternative_semantics"][semantics][name]["semantic_content"] for e in evals]

    accuracy = [100 * e["generation"]["accuracy"] for e in evals]
    # Fig. 2: semantic content and generation accuracy over training
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(steps, [100 * v for v in content("current")], "o-", color="tab:blue", label="semantic content (current)")
    ax.plot(steps, [100 * e["probes"]["current"].get("shuffled", float("nan")) for e in evals], ":", color="tab:blue",
            label="shuffled-label control")
    ax.plot(steps, [100 * e["probes"]["current"].get("initial_direction", float("nan")) for e in evals], "--",
            color="tab:cyan", lw=0.9, label="initial direction (prompt shortcut)")
    ax.axhline(25, color="grey", lw=0.8, ls="--", label="chance (25%)")
    ax.set_xlabel("training step")
    ax.set_ylabel("probe accuracy (%)")
    ax.set_ylim(0, 100)
    ax2 = ax.twinx()
    ax2.set_ylim(0, 100)
    ax2.plot(steps, accuracy, "s-", color="tab:red", label="generation accuracy")
    ax2.axhline(100 * results["baselines"]["constant_program"], color="tab:red", lw=0.8, ls=":",
                label="constant program put_marker()")
    ax2.set_ylabel("generation accuracy (%)")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    ax.set_title("Semantic content and generation accuracy (paper Fig. 2)")
    save(fig, "fig2_semantic_content.png")

    # Fig. 3: current, +1, +2
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, style in (("current", "o-"), ("next1", "s-"), ("next2", "^-")):
        ax.plot(steps, [100 * v for v in content(name)], style, label=name)
    ax.axhline(25, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_ylim(0, 100)
    ax.set_xlabel("training step")
    ax.set_ylabel("semantic content (%)")
    ax.legend(fontsize=8)
    ax.set_title("Current and future states (paper Fig. 3)")
    save(fig, "fig3_future_states.png")

    # Intervention: original vs alternative semantics
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(steps, [100 * v for v in content("current")], "o-", color="black", label="original")
    alternatives = sorted(evals[0]["alternative_semantics"]) if evals else []
    for semantics in alternatives:
        ax.plot(steps, [100 * v for v in content("current", semantics)], ".--", label=semantics)
    ax.axhline(25, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0, 100)
    ax.set_xlabel("training step")
    ax.set_ylabel("semantic content, current (%)")
    ax.legend(fontsize=8)
    ax.set_title("Original vs alternative semantics (intervention)")
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

    # Regression scatter
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, marker in (("current", "o"), ("next1", "s"), ("next2", "^")):
        reg = results["regressions"].get(name)
        label = name if not reg else f"{name}: R^2={reg['r2']:.3f}"
        ax.scatter([100 * v for v in content(name)], accuracy, marker=marker, label=label)
    ax.set_xlabel("semantic content (%)")
    ax.set_ylabel("generation accuracy (%)")
    ax.legend(fontsize=8)
    ax.set_title("Generation accuracy vs semantic content")
    save(fig, "fig_regression.png")
    return written


# ---------------------------------------------------------------------------------------- report
def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _caveats(results: dict) -> list[str]:
    """Plain warnings when the numbers above cannot be read as the paper's: no learning yet, or a
    direction task that the prompt alone answers (programs without turns)."""
    evals = results["checkpoints"]
    notes = []
    floor = results["baselines"]["constant_program"]
    best = max(e["generation"]["accuracy"] for e in evals)
    if best <= floor:
        notes.append(
            f"- Generation accuracy never beat the constant program `put_marker()` ({_pct(best)} <= {_pct(floor)}): "
            "the model has not left the \"babbling\" phase, so the regressions above are fits to noise "
            "(or to the untrained checkpoint alone) and say nothing about the paper's claims. Train longer "
            "(the `cpu` or `paper` preset).")
    shortcut = [e["step"] for e in evals if (e["probes"]["current"].get("initial_direction") or 0) >= 0.99]
    if shortcut:
        notes.append(
            f"- At steps {', '.join(map(str, shortcut))} the robot's initial direction (visible in the prompt) "
            "predicts the direction labels on >= 99% of rows: the generated programs barely turn, so a "
            "probe can score by reading the prompt; compare the probe with this `initial dir.` baseline.")
    return ["", "## Caveats", "", *notes] if notes else []


def render_report(out: Path) -> Path:
    if not (out / "results.json").is_file():
        raise ValueError(f"no results.json in {out}: run the analyze stage first")
    results = json.loads((out / "results.json").read_text())
    evals = results["checkpoints"]
    final = results["final"]
    final_eval = evals[-1]  # the specs actually decoded (a split smaller than the preset's count is used whole)
    lines = [
        f"# karel_hf reproduction: preset `{results['preset']}`",
        "",
        f"{len(evals)} checkpoints (steps {', '.join(str(s) for s in results['steps'])}); "
        f"test specs per checkpoint: {int(final_eval['generation']['num_examples'])}, probe training specs: "
        f"{results['config']['probe_train_specs']}, probe: {results['config']['probe']}.",
        "",
        "## Headline numbers",
        "",
        "| quantity | ours | paper |",
        "|---|---|---|",
        f"| generation accuracy, final (spec pairs) | {_pct(final['generation_accuracy'])} | 96.4% (v1), 92.4% (v3) |",
        f"| generation accuracy, final (all 10 pairs) | {_pct(final['generation_accuracy_all_pairs'])} | - |",
        f"| constant program `put_marker()` | {_pct(results['baselines']['constant_program'])} | - |",
        f"| semantic content at step 0 | {_pct(results['baselines']['untrained_semantic_content'])} | ~25% (chance) |",
    ]
    for name in OFFSET_NAMES.values():
        reg = results["regressions"].get(name)
        ours = "-" if not reg else f"R^2={reg['r2']:.3f}, slope={reg['slope']:.2f}, p={reg['p_value']:.2g}"
        lines.append(f"| semantic content final ({name}) | {_pct(final['semantic_content'][name])} | - |")
        lines.append(f"| regression of accuracy on semantic content ({name}) | {ours} | R^2={PAPER['r2'][name]}, p<0.001 |")
    for name in ("next1", "next2"):
        fut = final["future"].get(name, {})
        lines.append(f"| best classifier current -> {name} direction | {_pct(fut.get('best_future_classifier'))} | "
                     f"{_pct(PAPER['best_future_classifier'][name])} |")
        lines.append(f"| probe {name}, where the current probe is right | {_pct(fut.get('probe_given_current_correct'))} | "
                     f"{_pct(PAPER['probe_given_current_correct'][name])} |")
    lt = final["lengths"].get("length_test") or {}
    lines.append(f"| correct generated vs reference length (final) | {final['lengths']['mean_generated_correct']:.2f} vs "
                 f"{final['lengths']['mean_reference_correct']:.2f}, Wilcoxon p={lt.get('p_value', float('nan')):.2g} | "
                 "generated shorter, significant |")
    lines += _caveats(results)
    lines += [
        "",
        "## Per checkpoint",
        "",
        "| step | gen. acc. | all 10 | sem. current | +1 | +2 | shuffled | initial dir. | v3 | "
        + " | ".join(sorted(evals[0]["alternative_semantics"])) + " | gen. len | perplexity |",
        "|" + "---|" * (11 + len(evals[0]["alternative_semantics"])),
    ]
    for e in evals:
        p = e["probes"]
        alts = " | ".join(_pct(e["alternative_semantics"][s]["current"]["semantic_content"])
                          for s in sorted(e["alternative_semantics"]))
        lines.append(
            f"| {e['step']} | {_pct(e['generation']['accuracy'])} | {_pct(e['generation']['accuracy_all_pairs'])} | "
            f"{_pct(p['current']['semantic_content'])} | {_pct(p['next1']['semantic_content'])} | "
            f"{_pct(p['next2']['semantic_content'])} | {_pct(p['current'].get('shuffled'))} | "
            f"{_pct(p['current'].get('initial_direction'))} | {_pct(p['v3_current']['semantic_content'])} | {alts} | "
            f"{e['lengths']['mean_generated']:.2f} | {e['perplexity']['perplexity']:.3g} |"
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
    atomic_write_json(out / "reproduce_config.json", {"preset": args.preset, "resolved": asdict(preset),
                                                      "stages": stages, "versions": library_versions()},
                      default=_json_default)
    model_dir = out / "model"
    if "train" in stages:
        timer.run("train", train_stage, out, preset)
    if "evaluate" in stages:
        timer.run("evaluate", evaluate_stage, out, model_dir, preset)
    if "analyze" in stages:
        timer.run("analyze", analyze_stage, out, args.preset, preset, timer.times)
    if "plot" in stages:
        timer.run("plot", plot_results, out)
    if "report" in stages:
        timer.run("report", render_report, out)
    return out


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
    # the training flags (the preset's and --train_args) fail now, not after the first stages ran
    parse_train_args(["--preset", preset.train_preset, "--output_dir", str(Path(args.output_dir) / "model"),
                      *preset.train_overrides])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[StdoutHandler()])
    out = reproduce(args)
    print(f"wrote {out / 'results.json'}, {out / 'report.md'} and {out / 'figures'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`karel-hf reproduce`: an error is one line on stderr and exit status 2 (usage) or 1 (failure),
    as `karel_hf.errors.run_main` says."""
    return run_main("karel-hf reproduce", reproduce_command, argv)
