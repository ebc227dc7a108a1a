"""Curricula (a preset's `curriculum` section) and `karel-hf reproduce` on the extended language
(karel_hf.reproduce_control_flow): the stages train in turn, each from the model the one before
ended with, and the evaluate stage reads the control-flow task beside its controls."""

import doctest
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from karel_hf import reproduce
from karel_hf.presets import PresetError, curriculum_stages, load_preset
from karel_hf.training import parse_train_args

MODEL = {"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 256, "position_init": "grid"}
CORPUS = {"name": "cpu", "train_size": 300, "validation_size": 16, "test_size": 30, "min_length": 1, "max_length": 4,
          "height": 6, "width": 6, "num_prompt_pairs": 2, "extended": True, "heldout_fraction": 0.15,
          "eval_min_length": 2}
TRAINING = {"block_size": 128, "per_device_train_batch_size": 8, "max_steps": 6, "save_steps": 3,
            "learning_rate": 0.003, "logging_steps": 3, "eval_strategy": "no", "generation_eval_steps": 0,
            "report_to": [], "seed": 0, "dataloader_pin_memory": False, "loss_on": "all"}
SWEEP = {"test_specs": 30, "probe_train_specs": 60, "max_train_rows": 200, "num_bootstrap": 100, "probe": "mlp1",
         "rotation_probe": "linear", "batch_size": 16}


def write_curriculum(folder: Path) -> Path:
    """A two-stage curriculum of tiny models: the extended language, then only programs that need
    control flow; returns the last stage's preset file (the one `reproduce` takes)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stage1.yaml").write_text(yaml.safe_dump({"model": MODEL, "dataset": CORPUS, "training": TRAINING}))
    final = folder / "final.yaml"
    final.write_text(yaml.safe_dump({"curriculum": ["stage1.yaml"], "model": MODEL,
                                     "dataset": {**CORPUS, "needs_control_flow": True},
                                     "training": TRAINING, "reproduce": SWEEP}))
    return final


@pytest.fixture(scope="module")
def curriculum_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("curriculum")
    final = write_curriculum(base / "presets")
    assert reproduce.main(["--preset", str(final), "--output_dir", str(base / "run")]) == 0
    return base / "run"


def _weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def test_each_stage_starts_from_the_model_the_one_before_ended_with(curriculum_run):
    stage = curriculum_run / "stages" / "1-stage1"
    model = curriculum_run / "model"
    assert (stage / "train_results.json").is_file() and (model / "train_results.json").is_file()
    ended, started = _weights(stage), _weights(model / "checkpoint-0")
    assert all(np.array_equal(ended[k], started[k]) for k in ended)
    fresh = _weights(stage / "checkpoint-0")
    assert not all(np.array_equal(ended[k], fresh[k]) for k in ended)  # the first stage trained
    config = json.loads((model / "karel_run_config.json").read_text())
    assert config["model_args"]["model_name_or_path"] == str(stage)
    assert "needs_control_flow=true" in config["data_args"]["dataset_overrides"]
    first = json.loads((stage / "karel_run_config.json").read_text())
    assert first["model_args"]["model_name_or_path"] is None
    assert "needs_control_flow" not in first["data_args"]["dataset_overrides"]
    card, first_card = ((folder / "README.md").read_text() for folder in (model, stage))
    assert "trained starting from the model `1-stage1`" in card and "trained from scratch" in first_card
    # a local start is named by its folder only (the usage snippet loads the card's own folder)
    assert str(stage) not in card and str(curriculum_run) not in card.split("## Results")[0]
    for text in (card, first_card):  # the task's own words, not the paper's 5 pairs on 8x8 grids
        assert "2 input/output grid examples" in text and "`ifelse`" in text
        assert "6x6 worlds (the prompt shows the 4x4 cells" in text
        assert "5 input/output" not in text and "straight-line" not in text and "Output1" in text


def test_the_evaluation_reads_the_extended_language_beside_its_controls(curriculum_run):
    results = json.loads((curriculum_run / "results.json").read_text())
    assert results["language"] == "extended" and results["steps"] == [0, 3, 6]
    rows = None
    for e in results["checkpoints"]:
        assert 0.0 <= e["generation"]["accuracy"] <= 1.0 and 0.0 <= e["generation"]["parse_rate"] <= 1.0
        reading = e["reading"]
        assert reading["feature"] == "layer_2" and reading["probe"] == "mlp1"  # the last of 2 layers
        assert reading["rows"]["test"] > 0 and reading["all_rows"]["num_test_rows"] <= reading["rows"]["test"]
        assert reading["world_dependent"]["num_test_rows"] <= reading["all_rows"]["num_test_rows"]
        rows = rows or reading["rows"]
        assert reading["rows"] == rows  # the same rows at every checkpoint
        gain = reading["all_rows"]["conditional_gain"]
        assert gain["low"] <= gain["value"] <= gain["high"]
        # the alternatives are fitted at the final checkpoint only
        assert ("best_alternative" in reading["all_rows"]) == (e["step"] == 6)
        turned = reading["rotation"]  # the rotation since the start, the same rows, a linear probe
        assert turned["probe"] == "linear"
        assert all(turned[p]["num_test_rows"] == reading[p]["num_test_rows"] for p in ("all_rows", "world_dependent"))
        assert ("best_alternative" in turned["all_rows"]) == (e["step"] == 6)
    final = results["final"]["reading"]["all_rows"]
    assert set(final["gains"]) >= {"original", "swap"} and "swap" in final["undetermined"]
    if final["best_alternative"]:
        assert final["original_minus_best_alternative"] == pytest.approx(
            final["gains"]["original"] - final["gains"][final["best_alternative"]])
    untrained = results["untrained"]
    assert untrained["checkpoint"] == str(curriculum_run / "stages" / "1-stage1" / "checkpoint-0")
    assert untrained["reading"]["rows"] == rows
    assert untrained["reading"]["rotation"]["probe"] == "linear" and "best_alternative" in untrained["reading"]["rotation"]["all_rows"]
    facts = results["test"]
    assert facts["stages"] == 2 and facts["num_test_specs"] == 30
    assert facts["test_seen_in_training"] == 0.0  # the held-out programs, in both stages' corpora
    assert facts["test_with_control_flow"] == 1.0  # needs_control_flow keeps no straight-line program
    assert set(results["regressions"]) == {"all_rows", "world_dependent", "rotation"}
    assert set(results["regressions"]["rotation"]) == {"all_rows", "world_dependent"}
    report = (curriculum_run / "report.md").read_text()
    assert "(extended language)" in report and "| 6 |" in report and "untrained model" in report
    assert "| every statement, rotation (linear probe) |" in report and "rotation, world-dependent |" in report
    assert "linear probe on the rotation since the start: every statement" in report
    assert (curriculum_run / "figures" / "fig_control_flow.png").stat().st_size > 0
    assert not (curriculum_run / "viewer").exists()  # no straight-line traces to view


def test_the_viewer_says_in_one_line_that_an_extended_run_has_no_traces(curriculum_run, tmp_path, capsys):
    from karel_hf.cli import main

    assert main(["view", str(curriculum_run), "--export", str(tmp_path / "page")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a run on the extended language" in err and "report.md" in err
    assert not (tmp_path / "page").exists()


def test_a_rerun_trains_and_reads_nothing_again(curriculum_run, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(reproduce, "run_training", refuse)
    monkeypatch.setattr("karel_hf.reproduce_control_flow.read_states", refuse)
    before = (curriculum_run / "evaluations" / "step-6.json").read_bytes()
    assert reproduce.main(["--preset", str(curriculum_run.parent / "presets" / "final.yaml"),
                           "--output_dir", str(curriculum_run)]) == 0
    assert (curriculum_run / "evaluations" / "step-6.json").read_bytes() == before
    out = capsys.readouterr().out
    assert "conditional gain at -1, world-dependent statements" in out and "untrained model" in out


def test_a_run_read_without_the_rotation_reads_it_and_nothing_else(curriculum_run, tmp_path):
    """An evaluation written before the preset asked for the rotation (or by another probe) is read
    again; the complete ones are kept byte for byte."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(curriculum_run, run, symlinks=True)
    evaluations = run / "evaluations"
    for name in ("step-3.json", "untrained.json"):
        found = json.loads((evaluations / name).read_text())
        del found["reading"]["rotation"]
        (evaluations / name).write_text(json.dumps(found))
    kept = {name: (evaluations / name).read_bytes() for name in ("step-0.json", "step-6.json")}
    assert reproduce.main(["--preset", str(curriculum_run.parent / "presets" / "final.yaml"), "--output_dir", str(run),
                           "--stages", "evaluate,analyze"]) == 0
    for name in ("step-3.json", "untrained.json"):
        assert json.loads((evaluations / name).read_text())["reading"]["rotation"]["probe"] == "linear"
    assert all((evaluations / name).read_bytes() == data for name, data in kept.items())
    assert reproduce.main(["--preset", str(curriculum_run.parent / "presets" / "final.yaml"), "--output_dir", str(run),
                           "--stages", "evaluate", "--rotation_probe", "mlp1"]) == 0  # another probe: read again
    assert json.loads((evaluations / "step-0.json").read_text())["reading"]["rotation"]["probe"] == "mlp1"


def _evaluate_a_copy_again(curriculum_run: Path, tmp_path: Path, *flags: str) -> tuple[Path, list[str]]:
    """A copy of the run evaluated again with `flags` (evaluate, analyze, report); every evaluation file
    it had is kept byte for byte. Returns the copy and the command."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(curriculum_run, run, symlinks=True)
    evaluations = run / "evaluations"
    kept = {p.name: p.read_bytes() for p in evaluations.iterdir()}
    preset = str(curriculum_run.parent / "presets" / "final.yaml")
    command = ["--preset", preset, "--output_dir", str(run), "--stages", "evaluate,analyze,report", *flags]
    assert reproduce.main(command) == 0
    assert {p.name: p.read_bytes() for p in evaluations.iterdir() if p.name in kept} == kept
    return run, command


def test_the_best_alternatives_are_read_again_on_more_test_specs(curriculum_run, tmp_path, monkeypatch, capsys):
    """--alternatives_test_specs N: the final checkpoint and the untrained model are read again on a
    test split generated N long, fitting only each part's best alternative of the final reading, on
    the run's own probe-training rows; every other evaluation is kept byte for byte, the headline and
    report.md name the margins and their rows, and a rerun asking the same reads nothing again."""
    run, command = _evaluate_a_copy_again(curriculum_run, tmp_path, "--alternatives_test_specs", "90")
    evaluations = run / "evaluations"
    final = json.loads((evaluations / "step-6.json").read_text())["reading"]
    more = json.loads((evaluations / "alternatives-more-specs.json").read_text())
    fitted = sorted({final[part]["best_alternative"] for part in ("all_rows", "world_dependent")} - {None})
    assert fitted and more["fitted"] == fitted and more["step"] == 6 and more["requested"] == 90
    assert more["test_specs"] == 90 > SWEEP["test_specs"]
    for name in ("trained", "untrained"):
        reading = more[name]
        assert "rotation" not in reading  # the direction only
        assert reading["rows"]["train"] == final["rows"]["train"] and reading["rows"]["test"] > final["rows"]["test"]
        assert set(reading["all_rows"]["gains"]) == {"original", *fitted}
        for part in ("all_rows", "world_dependent"):
            assert set(reading[part]["undetermined"]) <= set(fitted)
    results = json.loads((run / "results.json").read_text())
    assert results["alternatives_more_specs"]["trained"] == more["trained"]
    out = capsys.readouterr().out
    assert f"where {fitted[0]}'s labels are not a function of the real ones, on 90 test specs" in out
    assert "on 90 test specs" in (run / "report.md").read_text()

    def refuse(*args, **kwargs):
        raise AssertionError("read again")

    monkeypatch.setattr("karel_hf.reproduce_control_flow.read_states", refuse)
    assert reproduce.main(command) == 0
    assert json.loads((evaluations / "alternatives-more-specs.json").read_text()) == more
    capsys.readouterr()
    assert reproduce.main([*command[:-1], "100"]) != 0  # another count: read again, refused here
    assert "AssertionError: read again" in capsys.readouterr().err


def test_the_trajectory_is_read_over_the_last_two_stages(curriculum_run, tmp_path, monkeypatch, capsys):
    """--trajectory_test_specs N: every second checkpoint counted back from each of the last two stages'
    last (the stage before from its step 0, this one after its step 0, which is the same model as the
    stage before's end) is read on a test split generated N long, the real meaning only; accuracy on
    the run's own test specs, the same as the checkpoint's own evaluation gives; R^2 over them in
    results.json, the headline and report.md; the other evaluations are kept byte for byte, and a
    rerun asking the same reads nothing again."""
    from karel_hf.probing.analysis import regress

    run, command = _evaluate_a_copy_again(curriculum_run, tmp_path, "--trajectory_test_specs", "60")
    evaluations = run / "evaluations"
    files = sorted(p.name for p in (evaluations / "trajectory").iterdir())
    assert files == ["final-step-6.json", "stage1-step-0.json", "stage1-step-6.json"]  # checkpoints 0, 3, 6 each
    read = {name: json.loads((evaluations / "trajectory" / name).read_text()) for name in files}
    own = {step: json.loads((evaluations / f"step-{step}.json").read_text()) for step in (0, 6)}
    assert read["final-step-6.json"]["generation"] == own[6]["generation"]
    assert read["stage1-step-6.json"]["generation"] == own[0]["generation"]  # stage 1's end is this stage's step 0
    for entry in read.values():
        assert entry["test_specs"] == 60 and "rotation" not in entry["reading"]
        assert entry["reading"]["rows"]["train"] == own[6]["reading"]["rows"]["train"]
        assert entry["reading"]["rows"]["test"] > own[6]["reading"]["rows"]["test"]
    results = json.loads((run / "results.json").read_text())["trajectory"]
    order = ["stage1-step-0.json", "stage1-step-6.json", "final-step-6.json"]
    assert [(e["stage"], e["step"]) for e in results["checkpoints"]] == [("stage1", 0), ("stage1", 6), ("final", 6)]
    accuracy = [read[n]["generation"]["accuracy"] for n in order]
    for part in ("all_rows", "world_dependent"):
        gains = [read[n]["reading"][part]["conditional_gain"]["value"] for n in order]
        fit = results["regressions"][part]
        if len(set(gains)) > 1:
            assert fit["r2"] == pytest.approx(regress(accuracy, gains)["r2"], nan_ok=True) and fit["n"] == 3
    report = (run / "report.md").read_text()
    assert "## Over the curriculum" in report and "Every second checkpoint of the last two stages" in report
    assert "(figures/fig_trajectory.png)" in report
    assert reproduce.main([*command[:4], "--stages", "plot", "--trajectory_test_specs", "60"]) == 0
    assert (run / "figures" / "fig_trajectory.png").stat().st_size > 10_000
    assert "R^2 of accuracy on the conditional gain over stage1 and final (every second checkpoint, the gain on 60 " \
           "test specs)" in capsys.readouterr().out

    def refuse(*args, **kwargs):
        raise AssertionError("read again")

    monkeypatch.setattr("karel_hf.reproduce_control_flow.read_states", refuse)
    assert reproduce.main(command) == 0
    assert json.loads((run / "results.json").read_text())["trajectory"] == results


def test_evaluation_workers_write_what_one_process_writes(curriculum_run, tmp_path, capfd):
    """--eval_workers 2 (two spawned processes of one torch thread each, as the run had): every reading
    of the evaluate stage -- the checkpoints, the untrained model, the alternatives on more specs (which
    waits on the final checkpoint) and the trajectory -- equals the in-process one, timings aside."""
    import shutil

    import torch

    flags = ["--alternatives_test_specs", "90", "--trajectory_test_specs", "60"]
    preset = str(curriculum_run.parent / "presets" / "final.yaml")
    runs = {}
    for workers in (1, 2):
        run = runs[workers] = tmp_path / f"workers{workers}"
        shutil.copytree(curriculum_run, run, symlinks=True)
        shutil.rmtree(run / "evaluations")
        threads = torch.get_num_threads()
        torch.set_num_threads(workers)  # each worker's share: one thread, as in one process
        try:
            assert reproduce.main(["--preset", preset, "--output_dir", str(run), "--stages", "evaluate",
                                   "--eval_workers", str(workers), *flags]) == 0
        finally:
            torch.set_num_threads(threads)
    assert "readings (2 workers)" in capfd.readouterr().err

    def files(run: Path) -> dict:
        found = {}
        for path in sorted((run / "evaluations").rglob("*.json")):
            entry = json.loads(path.read_text())
            for part in (entry, entry.get("trained"), entry.get("untrained")):
                if isinstance(part, dict):
                    part.pop("timings_seconds", None)
            found[str(path.relative_to(run))] = json.dumps(entry, sort_keys=True).replace(str(run), "RUN")
        return found

    one, two = files(runs[1]), files(runs[2])
    assert {"evaluations/untrained.json", "evaluations/alternatives-more-specs.json",
            "evaluations/trajectory/final-step-6.json", "evaluations/step-6.json"} <= set(one)
    assert one == two


def test_the_trajectory_takes_every_second_checkpoint_back_from_each_stage_end(tmp_path):
    """With the cpu-cf curriculum's checkpoints (0, 1600, ..., 16000 in each stage): stage 2's 0, 3200,
    ..., 16000 and stage 3's 3200, ..., 16000, 11 in all, every 3,200 steps of the two stages."""
    import dataclasses

    from karel_hf.reproduce_control_flow import trajectory_checkpoints

    preset = dataclasses.replace(reproduce.reproduce_preset("cpu-cf"), trajectory_stride=2)
    out = tmp_path / "run"
    for folder in (out / "stages" / "1-cpu-cf-stage1", out / "stages" / "2-cpu-cf-stage2", out / "model"):
        for step in range(0, 16001, 1600):
            (folder / f"checkpoint-{step}").mkdir(parents=True)
            for name in ("config.json", "model.safetensors"):
                (folder / f"checkpoint-{step}" / name).write_text("{}")
    found = [(stage, step) for stage, step, _ in trajectory_checkpoints(out, out / "model", preset)]
    assert found == [("cpu-cf-stage2", s) for s in range(0, 16001, 3200)] + [("cpu-cf", s) for s in range(3200, 16001, 3200)]
    odd = dataclasses.replace(preset, trajectory_stride=3)
    assert [s for _, s, _ in trajectory_checkpoints(out, out / "model", odd)] == [
        1600, 6400, 11200, 16000, 1600, 6400, 11200, 16000]


def test_a_saved_corpus_in_the_extended_language_is_read_as_one(tmp_path, capsys):
    """A corpus read from --dataset_path has no config to say it is in the extended language: its
    programs say so, so such a run gets the control-flow evaluation (not the straight-line one, which
    labels actions control flow may run many times); the reading on a longer test split, which has to
    generate it, is refused in one line before anything runs."""
    import dataclasses

    from karel_hf.cli import main

    small = ["--set", "train_size=60", "--set", "validation_size=8", "--set", "test_size=20"]
    assert main(["dataset", "export", "--config", "cpu-ext", *small, "--output_dir", str(tmp_path / "ext")]) == 0
    assert main(["dataset", "export", "--config", "tiny", *small, "--output_dir", str(tmp_path / "plain")]) == 0
    tiny = reproduce.reproduce_preset("tiny")
    for folder, config, extended in (("ext", "cpu-ext", True), ("plain", "tiny", False)):
        saved = dataclasses.replace(tiny, train_overrides=("--dataset_path", str(tmp_path / folder),
                                                           "--dataset_config", config))
        assert reproduce.extended_language(tmp_path / "run" / "model", saved) is extended, folder
    capsys.readouterr()
    assert reproduce.main(["--preset", "cpu-cf", "--output_dir", str(tmp_path / "run"), "--train_args",
                           f"--dataset_path {tmp_path / 'ext'} --dataset_config cpu-ext"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"karel-hf reproduce: error: alternatives_test_specs: the corpus comes from {tmp_path / 'ext'}, whose test "
        "split cannot be generated longer; pass --alternatives_test_specs 0")
    assert not (tmp_path / "run").exists()


def test_a_saved_corpus_the_evaluation_cannot_read_is_refused_before_training(tmp_path, capsys):
    """`karel-hf reproduce` on a --dataset_path corpus without a test split, or without the columns the
    evaluation reads (the worlds, the programs), stops in one line naming what is missing, before any
    stage runs, instead of failing after training with an internal error."""
    import datasets

    from karel_hf.cli import main

    small = ["--set", "train_size=40", "--set", "validation_size=8", "--set", "test_size=10"]
    assert main(["dataset", "export", "--config", "tiny", *small, "--output_dir", str(tmp_path / "plain")]) == 0
    full = datasets.load_dataset(str(tmp_path / "plain"))
    datasets.DatasetDict({"train": full["train"], "validation": full["validation"]}).save_to_disk(tmp_path / "no-test")
    datasets.DatasetDict({split: rows.select_columns(["id", "text", "length"])
                          for split, rows in full.items()}).save_to_disk(tmp_path / "text-only")
    expected = {
        "no-test": f"the corpus at {tmp_path / 'no-test'} has no test examples, which karel-hf reproduce needs "
                   "(splits: train (40 rows), validation (8 rows))",
        "text-only": f"the corpus at {tmp_path / 'text-only'}: its train split lacks the column(s) program, inputs, "
                     "outputs of a karel_hf corpus (karel-hf dataset export writes them)",
    }
    capsys.readouterr()
    for folder, message in expected.items():
        run = tmp_path / f"run-{folder}"
        assert main(["reproduce", "--preset", "tiny", "--output_dir", str(run), "--train_args",
                     f"--dataset_path {tmp_path / folder}"]) == 1, folder
        assert capsys.readouterr().err.strip() == f"karel-hf reproduce: error: {message}"
        assert not run.exists()


def test_cpu_cf_trains_what_the_study_measured(tmp_path):
    """The `cpu-cf` curriculum is benchmarks/emergence's specs p2l6-cpu-ext-16k-ho-ni256,
    p2l6-cpu-needs-cf-from-ext-ho-ni256 and p2l6-cpu-needs-cf-32k-ho-ni256 (LOG.md E47-E58, E82), as run.py runs them:
    the same corpus (fingerprint), model and training arguments."""
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks" / "emergence"))
    try:
        import run as runner
    finally:
        sys.path.remove(str(root / "benchmarks" / "emergence"))
    specs = ("p2l6-cpu-ext-16k-ho-ni256", "p2l6-cpu-needs-cf-from-ext-ho-ni256", "p2l6-cpu-needs-cf-32k-ho-ni256")
    stages = curriculum_stages("cpu-cf")
    assert [p.name for p in stages] == ["cpu-cf-stage1", "cpu-cf-stage2", "cpu-cf"]
    for spec_name, stage in zip(specs, stages):
        spec = runner.read_spec(root / "benchmarks" / "emergence" / "specs" / f"{spec_name}.json")
        written = tmp_path / f"{spec_name}.yaml"
        written.write_text(yaml.safe_dump(runner.build_preset(spec, 0, "auto"), sort_keys=False))
        common = ["--output_dir", str(tmp_path / "out"), "--model_name_or_path", str(tmp_path)]
        theirs = parse_train_args(["--preset", str(written), *common])
        mine = parse_train_args(["--preset", stage.name, *common])
        assert mine[1].corpus_config().fingerprint() == theirs[1].corpus_config().fingerprint(), spec_name
        assert mine[2].to_dict() == theirs[2].to_dict(), spec_name
        assert load_preset(stage.name).model == load_preset(str(written)).model
        assert ({k: v for k, v in asdict(mine[0]).items() if k != "model_preset"}
                == {k: v for k, v in asdict(theirs[0]).items() if k != "model_preset"})
    assert reproduce.reproduce_preset("cpu-cf").probe == "mlp1"


@pytest.mark.parametrize("section, message", [
    ("curriculum: stage1.yaml", "section 'curriculum' must be a list of preset names or files"),
    ("curriculum: [nowhere.yaml]", "curriculum stage"),
    ("curriculum: [nested.yaml]", "has a curriculum of its own"),
    ("curriculum: [wider.yaml]", "has another model section"),
])
def test_a_bad_curriculum_is_named(tmp_path, section, message):
    write_curriculum(tmp_path)
    (tmp_path / "nested.yaml").write_text((tmp_path / "final.yaml").read_text())
    (tmp_path / "wider.yaml").write_text(yaml.safe_dump({"model": {**MODEL, "n_embd": 64}, "dataset": CORPUS,
                                                          "training": TRAINING}))
    mine = tmp_path / "mine.yaml"
    mine.write_text(section + "\n" + yaml.safe_dump({"model": MODEL, "dataset": CORPUS, "training": TRAINING}))
    with pytest.raises(PresetError, match=message):
        load_preset(str(mine))


def test_the_modules_examples_hold():
    from karel_hf import reproduce_control_flow
    from karel_hf.probing import control_flow

    assert doctest.testmod(control_flow).failed == 0 and doctest.testmod(reproduce_control_flow).failed == 0
