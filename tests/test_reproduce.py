"""The whole reproduction on the `tiny` preset: artifacts and their schema (numbers not asserted)."""

import json
import shutil
import subprocess
import sys

import pytest

from karel_hf.karel.semantics import ALTERNATIVE_SEMANTICS
from karel_hf.reproduce import FAMILIES, OFFSET_NAMES, ReproduceArguments, main, plot_results, render_report


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return tiny_run


FIGURES = {"fig2_semantic_content.png", "fig3_future_states.png", "fig_conditional_gain.png", "fig6a_program_length.png",
           "fig6b_perplexity.png", "fig_regression.png", "fig_semantics_intervention.png"}


def test_pipeline_writes_every_artifact(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == [0, 10, 20]
    assert {p.name for p in (run_dir / "figures").glob("*.png")} == FIGURES
    names = list(OFFSET_NAMES.values())
    assert names == ["prev2", "prev1", "current", "next1", "next2"]
    for e in results["checkpoints"]:
        assert 0.0 <= e["generation"]["accuracy"] <= 1.0
        for family in FAMILIES:
            assert set(e["probes"][family]) == {*names, "v3_current"}
            for name in names:
                r = e["probes"][family][name]
                assert set(r) >= {"semantic_content", "unobserved", "controls", "margin", "conditional_gain",
                                  "num_train", "num_test", "drop_last"}
                assert set(r["controls"]) == {"initial_glyph", "output_glyph", "prompt_only", "code_position", "shuffled"}
                assert set(r["conditional_gain"]) == {"value", "low", "high"} and r["drop_last"] is True
                assert r["num_train"] <= 150 and r["num_test"] <= 60  # the tiny preset's row budget
            assert set(e["probes"][family]["v3_current"]["per_task"]) == {
                "direction", "position_from_start", "position_from_end", "facing_wall", "position", "walls"}
            assert set(e["future"][family]) == {"next1", "next2"}
            assert all("uninformative" in v for v in e["future"][family].values())
        assert set(e["intervention"]["generated"]) == {"current", "next1", "next2"}
        assert set(e["intervention"]["teacher_forced"]) == set(names)
        assert set(e["intervention"]["generated"]["current"]["accuracy"]) == {"original", *ALTERNATIVE_SEMANTICS}
        assert isinstance(e["intervention"]["teacher_forced"]["prev1"]["uninformative"], bool)
        # the conditional form (gains over the prompt facts) where the preset asks for it, only there
        conditional = {(f, n) for f in FAMILIES for n, v in e["intervention"][f].items() if "conditional" in v}
        assert conditional == {("generated", "current"), ("teacher_forced", "prev1")}
        for family, name in conditional:
            cond = e["intervention"][family][name]["conditional"]
            assert set(cond["gain"]) == {"original", *ALTERNATIVE_SEMANTICS}
            # the original's gain is the family's own conditional gain: its probes are reused
            assert cond["gain"]["original"] == e["probes"][family][name]["conditional_gain"]
            best = cond["best_alternative"]
            if best is not None:
                assert cond["original_minus_best_alternative"] == pytest.approx(
                    cond["gain"]["original"]["value"] - cond["gain"][best]["value"])
            assert set(cond["discordant"]) == set(ALTERNATIVE_SEMANTICS) and isinstance(cond["uninformative"], bool)
        assert e["perplexity"]["perplexity"] > 1.0
        assert e["num_trace_rows"]["test"] > 0 and e["timings_seconds"]["total"] > 0
    # teacher forcing: the same rows at every checkpoint
    first, *rest = results["checkpoints"]
    for e in rest:
        assert e["num_trace_rows"]["teacher_forced_test"] == first["num_trace_rows"]["teacher_forced_test"]
        for name in names:
            for key in ("num_train", "num_test"):
                assert e["probes"]["teacher_forced"][name][key] == first["probes"]["teacher_forced"][name][key]
    assert first["teacher_forced_min_length"] == 4  # the tiny corpus has programs of 4+ actions
    for family in FAMILIES:
        for name in names:
            assert set(results["regressions"][family][name]) == {"semantic_content", "margin", "conditional_gain"}
    reg = results["regressions"]["generated"]["current"]["semantic_content"]
    assert set(reg) >= {"r2", "slope", "p_value", "n"} and reg["n"] == 3
    assert results["baselines"]["untrained_semantic_content"] == first["probes"]["generated"]["current"]["semantic_content"]
    assert isinstance(results["flags"]["length_test_at_floor"], bool)
    assert set(results["timings_seconds"]) >= {"train", "evaluate"}
    report = (run_dir / "report.md").read_text()
    assert "| 20 |" in report and "0.968" in report and "conditional gain" in report and "## Caveats" in report
    # the generated family's control: the untrained states on the programs the final checkpoint wrote,
    # the same rows and labels (the prompt-only probe scores the same), other states
    control = json.loads((run_dir / "evaluations" / "untrained-on-step-20.json").read_text())
    assert results["baselines"]["untrained_states_on_final_programs"] == control
    assert control["step"] == 0 and control["programs_from"] == 20
    last = results["checkpoints"][-1]
    assert control["num_trace_rows"] == {k: last["num_trace_rows"][k] for k in ("train", "test")}
    for name in names:
        ours, theirs = last["probes"]["generated"][name], control["probes"][name]
        assert (theirs["num_train"], theirs["num_test"]) == (ours["num_train"], ours["num_test"])
        assert theirs["controls"]["prompt_only"] == ours["controls"]["prompt_only"]
    assert set(control["intervention"]["current"]["conditional"]["gain"]) == {"original", *ALTERNATIVE_SEMANTICS}
    gain = control["probes"]["current"]["conditional_gain"]["value"]
    row = next(l for l in report.splitlines() if l.startswith("| ... the untrained model's states on the final programs "
                                                              "(generated, current)"))
    assert f"{100 * gain:+.1f} [" in row
    assert f"; {100 * (last['probes']['generated']['current']['conditional_gain']['value'] - gain):+.1f} |" in row
    assert "| generated, untrained states | current |" in report
    for family, name in (("generated", "current"), ("teacher_forced", "prev1")):
        final, untrained = (c["intervention"][family][name]["conditional"] for c in (results["checkpoints"][-1], first))
        if family == "generated":  # beside the untrained states on the same programs
            untrained = control["intervention"]["current"]["conditional"]
        row = next(l for l in report.splitlines()
                   if l.startswith(f"| intervention, gains over the prompt facts ({family}, {name})"))
        assert f"= {100 * final['original_minus_best_alternative']:+.1f}" in row or final["best_alternative"] is None
        which = "untrained states on these programs" if family == "generated" else "untrained model"
        assert (f"{which} {100 * untrained['original_minus_best_alternative']:+.1f}" in row
                if untrained["best_alternative"] else f"{which} no informative alternative" in row)
    assert (run_dir / "viewer" / "index.html").is_file() and "(viewer/index.html)" in report  # the view stage's page
    # where the numbers came from: the training's precision and machine (its run config), the analysing machine
    run_config = json.loads((run_dir / "model" / "karel_run_config.json").read_text())
    precision = "bf16" if run_config["training_args"]["bf16"] else "fp32"
    training = results["machine"]["training"]
    assert training["precision"] == precision and training["machine"] == run_config["machine"]
    assert set(run_config["machine"]) >= {"cpu", "flags", "cores", "threads", "torch"}
    assert results["machine"]["analysis"]["threads"] >= 1
    assert f"Trained in {precision} on {run_config['machine']['cpu']}" in report and "Analysed on " in report


def test_per_row_files_reproduce_the_saved_scores(run_dir):
    """evaluations/step-N.rows.parquet: the test rows each score was computed on, with the probe's
    and the prompt-only control's predictions (they give back semantic_content and prompt_only);
    step-N.programs.parquet gives back the generation accuracy; test_specs.parquet the specs."""
    import numpy as np
    import pyarrow.parquet as pq

    from karel_hf.probing.labels import scored_rows

    results = json.loads((run_dir / "results.json").read_text())
    specs = pq.read_table(run_dir / "evaluations" / "test_specs.parquet").to_pydict()
    assert set(specs) == {"id", "program", "length", "inputs", "outputs"} and len(specs["id"]) == 24
    names = dict((v, k) for k, v in OFFSET_NAMES.items())
    for e in results["checkpoints"]:
        rows = pq.read_table(run_dir / "evaluations" / f"step-{e['step']}.rows.parquet").to_pandas()
        assert set(rows.columns) == {"family", "offset", "example_id", "step", "num_actions", "task", "label", "probe",
                                     "prompt_only", "conditional"}
        assert set(rows["example_id"]) <= set(specs["id"])
        for family in FAMILIES:
            for name, offset in names.items():
                saved = e["probes"][family][name]
                part = rows[(rows["family"] == family) & (rows["offset"] == offset)]
                assert part["task"].nunique() == len(saved["per_task"]) == 5
                assert len(part) == saved["num_test"] * 5  # every scored test row, once per task
                assert scored_rows(part["step"], part["num_actions"], offset).all()  # drop_last's row rule
                part = part[part["label"] >= 0]
                for column, value in (("probe", saved["semantic_content"]),
                                      ("prompt_only", saved["controls"]["prompt_only"])):
                    per_task = (part[column] == part["label"]).groupby(part["task"]).mean()
                    assert per_task.mean() == pytest.approx(value, abs=1e-9), (e["step"], family, name, column)
        programs = pq.read_table(run_dir / "evaluations" / f"step-{e['step']}.programs.parquet").to_pandas()
        assert sorted(programs["example_id"]) == sorted(specs["id"])
        assert programs["correct"].mean() == pytest.approx(e["generation"]["accuracy"])
        assert programs["correct_all"].mean() == pytest.approx(e["generation"]["accuracy_all_pairs"])
        assert (programs["num_actions"] > 0).mean() == pytest.approx(e["generation"]["parse_rate"])
        assert np.all(programs.loc[programs["correct_all"], "correct"])


def test_rerun_skips_finished_stages(run_dir):
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "evaluations").glob("*.json")}
    timings = json.loads((run_dir / "timings.json").read_text())
    assert main(["--preset", "tiny", "--output_dir", str(run_dir), "--stages", "train,evaluate"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "evaluations").glob("*.json")} == before
    assert json.loads((run_dir / "timings.json").read_text())["train"] < timings["train"] + 5


def test_evaluate_redoes_a_checkpoint_missing_its_rows(run_dir, tmp_path):
    """A run from before the per-row files: the evaluate stage redoes only the checkpoints that
    lack one (trace datasets from the cache) and writes the same rows as the first time."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    evaluations = copy / "evaluations"
    before = (evaluations / "step-10.rows.parquet").read_bytes()
    (evaluations / "step-10.rows.parquet").unlink()
    (evaluations / "test_specs.parquet").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in evaluations.glob("step-[02]*")}
    assert main(["--preset", "tiny", "--output_dir", str(copy), "--stages", "evaluate"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in evaluations.glob("step-[02]*")} == kept
    assert (evaluations / "step-10.rows.parquet").read_bytes() == before
    assert (evaluations / "test_specs.parquet").read_bytes() == (run_dir / "evaluations" / "test_specs.parquet").read_bytes()


def test_evaluation_workers_write_what_one_process_writes(run_dir, tmp_path, capfd):
    """eval_workers 2 (two spawned processes of one torch thread each, as the tiny run had):
    the checkpoints' evaluations, decoded afresh (no trace cache), equal the in-process ones."""
    import torch

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "traces")
    evaluations = copy / "evaluations"
    for step in (10, 20):
        for name in ("step-{}.json", "step-{}.rows.parquet", "step-{}.programs.parquet"):
            (evaluations / name.format(step)).unlink()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the two workers' share: one thread each
    try:
        assert main(["--preset", "tiny", "--output_dir", str(copy), "--stages", "evaluate", "--eval_workers", "2"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert "checkpoints (2 workers)" in capfd.readouterr().err
    for step in (10, 20):
        for name in ("step-{}.rows.parquet", "step-{}.programs.parquet"):
            assert (evaluations / name.format(step)).read_bytes() == (run_dir / "evaluations" / name.format(step)).read_bytes()
        new, old = (json.loads((d / f"step-{step}.json").read_text()) for d in (evaluations, run_dir / "evaluations"))
        assert new.pop("timings_seconds") and old.pop("timings_seconds")
        assert new == old


def test_follow_evaluates_checkpoints_as_the_training_saves_them(run_dir, tmp_path, monkeypatch):
    """`--stages evaluate --follow` beside a training: it evaluates the complete checkpoints saved so
    far, skips one still being written (no trainer_state.json yet), waits, and stops after the pass
    that follows model/train_results.json; the numbers equal the run's own, and the training run's
    reproduce_config.json and timings are kept."""
    import threading
    import time

    from karel_hf import reproduce

    passes = []  # the steps each pass was given
    original = reproduce._evaluate_checkpoints

    def spy(out, found, *args):
        passes.append([step for step, _ in found])
        return original(out, found, *args)

    monkeypatch.setattr(reproduce, "_evaluate_checkpoints", spy)
    monkeypatch.setattr(reproduce, "FOLLOW_POLL_SECONDS", 0.2)
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    evaluations, model = copy / "evaluations", copy / "model"
    for step in (10, 20):
        for name in ("step-{}.json", "step-{}.rows.parquet", "step-{}.programs.parquet"):
            (evaluations / name.format(step)).unlink()
    done = model / "train_results.json"
    done.rename(tmp_path / "train_results.json")
    state = model / "checkpoint-20" / "trainer_state.json"
    state.rename(tmp_path / "trainer_state.json")  # checkpoint-20: still being saved
    config, timings = (copy / "reproduce_config.json").read_text(), json.loads((copy / "timings.json").read_text())
    outcome = {}
    follower = threading.Thread(daemon=True, target=lambda: outcome.update(rc=main(
        ["--preset", "tiny", "--output_dir", str(copy), "--stages", "evaluate", "--follow"])))
    follower.start()
    try:
        deadline = time.monotonic() + 300
        while len(passes) < 3 and time.monotonic() < deadline:  # a few passes: it waits for the training
            time.sleep(0.1)
        assert len(passes) >= 3 and all(p == [0, 10] for p in passes[:3])  # not the incomplete 20
        assert (evaluations / "step-10.json").is_file() and not (evaluations / "step-20.json").exists()
        assert follower.is_alive()
    finally:  # the training finishes
        (tmp_path / "trainer_state.json").rename(state)
        (tmp_path / "train_results.json").rename(done)
    follower.join(timeout=300)
    assert not follower.is_alive() and outcome["rc"] == 0
    for step in (10, 20):
        new, old = (json.loads((d / f"step-{step}.json").read_text()) for d in (evaluations, run_dir / "evaluations"))
        assert new.pop("timings_seconds") and old.pop("timings_seconds")
        assert new == old
    assert (copy / "reproduce_config.json").read_text() == config
    after = json.loads((copy / "timings.json").read_text())
    assert after["train"] == timings["train"] and after["evaluate"] > timings["evaluate"]
    with pytest.raises(ValueError, match="follow: needs the evaluate stage without the train stage"):
        ReproduceArguments(output_dir=str(tmp_path), preset="tiny", stages="train,evaluate", follow=True)


def test_plot_redraws_from_results_json_alone(run_dir, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(run_dir / "results.json", copy / "results.json")
    written = plot_results(copy)
    assert {p.name for p in written} == FIGURES and all(p.stat().st_size > 10_000 for p in written)
    assert "fig2_semantic_content" in render_report(copy).read_text()


def test_cli_plot_stage_and_errors(run_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "karel_hf.cli", "reproduce", "--preset", "tiny",  # the run's own preset
                          "--output_dir", str(run_dir), "--stages", "plot"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    with pytest.raises(ValueError, match="preset"):
        ReproduceArguments(output_dir=str(tmp_path), preset="laptop")
    with pytest.raises(ValueError, match="stages"):
        ReproduceArguments(output_dir=str(tmp_path), stages="train,plto")
    with pytest.raises(ValueError, match="analyze stage"):
        plot_results(tmp_path)


def test_probes_are_fitted_under_the_presets_thread_limit(monkeypatch):
    """probe_threads caps the BLAS / OpenMP pools while the probes are fitted (0 leaves them as they are)."""
    import dataclasses

    from threadpoolctl import threadpool_info, threadpool_limits

    from karel_hf import reproduce

    seen = []
    monkeypatch.setattr(reproduce, "_probe_families", lambda traces, preset, pairs: seen.append(
        {p["internal_api"]: p["num_threads"] for p in threadpool_info()}) or ({}, {}, {}, {}))
    preset = reproduce.reproduce_preset("tiny")
    assert preset.probe_threads == 1
    with threadpool_limits(limits=2):
        outside = {p["internal_api"]: p["num_threads"] for p in threadpool_info()}
        reproduce.probe_families({}, preset, 1)
        reproduce.probe_families({}, dataclasses.replace(preset, probe_threads=0), 1)
    assert seen[0] and set(seen[0].values()) == {1}
    assert seen[1] == outside


def test_no_untrained_control_when_the_final_checkpoint_wrote_no_program(run_dir, tmp_path, monkeypatch, caplog):
    """A final checkpoint that wrote no scoreable program leaves no control to compute: a warning, no
    file, and the report without the control's rows (not a traceback)."""
    from karel_hf import reproduce

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "evaluations" / "untrained-on-step-20.json").unlink()
    monkeypatch.setattr(reproduce, "written_programs", lambda path, step, row_sets, *a: tuple(
        rows.select([]) for rows in row_sets))
    preset = reproduce.reproduce_preset("tiny")
    assert reproduce.untrained_control(copy, copy / "model", preset) is None
    assert "no untrained control: checkpoint 20 wrote no scoreable program for the test specs" in caplog.text
    assert not (copy / "evaluations" / "untrained-on-step-20.json").exists()
    assert main(["--preset", "tiny", "--output_dir", str(copy), "--stages", "analyze,report"]) == 0
    report = (copy / "report.md").read_text()
    assert "untrained states on the final programs" not in report and "| generated, untrained states |" not in report
    assert "intervention, gains over the prompt facts (generated, current)" in report


def test_report_says_when_the_intervention_does_not_single_out_the_real_meaning(run_dir, tmp_path):
    """A final conditional intervention whose smallest margin where the labels differ is not above 0
    gets a caveat naming the alternative; one above 0 gets none."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    results = json.loads((copy / "results.json").read_text())
    cond = results["checkpoints"][-1]["intervention"]["teacher_forced"]["prev1"]["conditional"]
    for low, said in ((-0.021, True), (0.05, False)):
        cond["discordant_minimum"] = {"alternative": "authors8", "value": low + 0.04, "low": low, "high": low + 0.08,
                                      "num_rows": 332}
        (copy / "results.json").write_text(json.dumps(results))
        render_report(copy)
        caveat = [l for l in (copy / "report.md").read_text().splitlines()
                  if l.startswith("- The intervention as gains (teacher_forced, prev1)")]
        assert bool(caveat) == said
        if said:
            assert "332 rows where authors8's labels differ" in caveat[0] and "+1.9 [-2.1, +5.9] points" in caveat[0]


def test_the_console_gets_the_headline_beside_its_controls(run_dir, tmp_path, capsys):
    """At the end of a run the console shows accuracy against the floor, the final gain against the
    untrained states on the same programs, and the intervention as gains (what report.md heads with)."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert main(["--preset", "tiny", "--output_dir", str(copy), "--stages", "report"]) == 0
    out = capsys.readouterr().out.splitlines()
    results = json.loads((copy / "results.json").read_text())
    gain = results["final"]["probes"]["generated"]["current"]["conditional_gain"]
    control = results["baselines"]["untrained_states_on_final_programs"]["probes"]["current"]["conditional_gain"]
    line = next(l for l in out if l.startswith("conditional gain over the prompt facts (generated, current): "))
    assert f"{100 * gain['value']:+.1f} [{100 * gain['low']:+.1f}, {100 * gain['high']:+.1f}] points" in line
    assert f"the untrained states on the same programs {100 * control['value']:+.1f} [" in line
    assert out[-1] == "(report.md has every number beside its control, and its caveats)"
    assert any(l.startswith(f"step 20: generation accuracy {100 * results['final']['generation_accuracy']:.1f}%")
               for l in out)
    assert main(["--preset", "tiny", "--output_dir", str(copy), "--stages", "plot"]) == 0  # no report, no summary
    assert "conditional gain over the prompt facts" not in capsys.readouterr().out


def test_the_second_probe_reads_the_gain_at_prev1_beside_its_controls(run_dir, capsys, tmp_path):
    """The preset's second probe (tiny: mlp1) is the conditional gain at prev1 of that probe on the
    checkpoint's own traces and budgets, at every checkpoint and on the untrained control; results,
    report and console set it beside step 0 / the control, with the regression of accuracy on it."""
    from karel_hf import reproduce
    from karel_hf.probing.measure import load_traces, semantic_content

    preset = reproduce.reproduce_preset("tiny")
    assert preset.second_probe == "mlp1"
    results = json.loads((run_dir / "results.json").read_text())
    for e in results["checkpoints"]:
        assert e["second_probe"]["probe"] == "mlp1" and set(e["second_probe"]) == {"probe", *FAMILIES}
        for family in FAMILIES:
            r, linear = e["second_probe"][family]["prev1"], e["probes"][family]["prev1"]
            assert r["probe"] == "mlp1" and r["offset"] == -1
            fitted = {k for k, v in r["controls"].items() if v == v}  # not NaN: fitted
            assert fitted == {"prompt_only"} and set(r["conditional_gain"]) == {"value", "low", "high"}
            assert (r["num_train"], r["num_test"]) == (linear["num_train"], linear["num_test"])  # the same rows
        assert e["timings_seconds"]["second_probe"] > 0
    # the saved numbers are that probe's measure on the final checkpoint's traces (rebuilt from the cache)
    last = results["checkpoints"][-1]
    data = reproduce._data_rows(run_dir / "model", preset)
    model, tokenizer = reproduce._checkpoint_model(run_dir / "model" / "checkpoint-20")
    traces = reproduce._checkpoint_traces(model, tokenizer, 20, data, run_dir, preset, {}, {})
    pairs = reproduce.prompt_pairs(data[0])
    for family, (train, test) in traces.items():
        direct = semantic_content(load_traces(train), load_traces(test), -1, probe="mlp1",
                                  controls=("prompt_only", "conditional_gain"), max_train_rows=150, max_test_rows=60,
                                  num_bootstrap=200, num_prompt_pairs=pairs)
        assert last["second_probe"][family]["prev1"]["conditional_gain"] == pytest.approx(direct["conditional_gain"])
    second = results["second_probe"]
    assert second["final"] == {f: {"prev1": last["second_probe"][f]["prev1"]} for f in FAMILIES}
    assert second["step_0"]["teacher_forced"]["prev1"] == results["checkpoints"][0]["second_probe"]["teacher_forced"]["prev1"]
    fit = second["regressions"]["teacher_forced"]["prev1"]
    assert fit is None or fit["n"] == 3
    control = json.loads((run_dir / "evaluations" / "untrained-on-step-20.json").read_text())
    assert second["untrained_states_on_final_programs"] == control["second_probe"]
    ctrl = control["second_probe"]["generated"]["prev1"]
    assert (ctrl["num_train"], ctrl["num_test"]) == (control["probes"]["prev1"]["num_train"],
                                                     control["probes"]["prev1"]["num_test"])
    report = (run_dir / "report.md").read_text()
    tf = second["final"]["teacher_forced"]["prev1"]["conditional_gain"]
    step_0 = second["step_0"]["teacher_forced"]["prev1"]["conditional_gain"]
    row = next(l for l in report.splitlines() if l.startswith("| conditional gain final, mlp1 probe (teacher_forced, prev1)"))
    assert f"| {100 * tf['value']:+.1f} [{100 * tf['low']:+.1f}, {100 * tf['high']:+.1f}]; {100 * step_0['value']:+.1f} [" in row
    row = next(l for l in report.splitlines() if l.startswith("| conditional gain final, mlp1 probe (generated, prev1)"))
    assert f"; {100 * ctrl['conditional_gain']['value']:+.1f} [" in row
    assert "(mlp1 as well for the conditional gain at prev1)" in report
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert main(["--preset", "tiny", "--output_dir", str(copy), "--stages", "report"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("mlp1 probe, conditional gain"))
    assert line.startswith(f"mlp1 probe, conditional gain (teacher_forced, prev1): {100 * tf['value']:+.1f} [")
    assert f"; step 0 {100 * step_0['value']:+.1f} [" in line


def test_the_second_probe_is_regressed_over_every_checkpoint_and_the_trained_ones():
    """`regressions` fits accuracy on the second probe's gain over every checkpoint; `regressions_trained`
    leaves step 0 out (the untrained model's random features give the MLP a gain of their own)."""
    from karel_hf import reproduce
    from karel_hf.probing.analysis import regress

    preset = reproduce.reproduce_preset("tiny")
    accuracy = [0.06, 0.07, 0.09, 0.19, 0.24, 0.54, 0.62, 0.81, 0.83, 0.84, 0.86]
    gains = [0.13, 0.02, -0.01, 0.04, 0.10, 0.17, 0.23, 0.30, 0.33, 0.38, 0.40]
    entry = lambda g: {"conditional_gain": {"value": g, "low": g - 0.03, "high": g + 0.03}}
    evaluations = [{"step": 1600 * i, "second_probe": {"probe": "mlp1", **{f: {"prev1": entry(g + (f == "generated") * 0.05)}
                                                                             for f in FAMILIES}}}
                   for i, g in enumerate(gains)]
    second = reproduce._second_probe_results(evaluations, accuracy, None, preset)
    every, trained = second["regressions"]["teacher_forced"]["prev1"], second["regressions_trained"]["teacher_forced"]["prev1"]
    assert every == pytest.approx(regress(accuracy, gains)) and every["n"] == 11
    assert trained == pytest.approx(regress(accuracy[1:], gains[1:])) and trained["n"] == 10
    assert every["r2"] < 0.9 < trained["r2"]  # step 0's gain is what the fit over every checkpoint misses
    assert second["regressions_trained"]["generated"]["prev1"]["n"] == 10
    lines = reproduce._second_probe_rows({"second_probe": second})
    assert f"| ... over the trained checkpoints (step 0 left out) | R^2={trained['r2']:.3f} (slope" in "\n".join(lines)
    # a run without a step-0 checkpoint: both fits are over the same checkpoints
    second = reproduce._second_probe_results(evaluations[1:], accuracy[1:], None, preset)
    assert second["step_0"] is None
    assert second["regressions_trained"] == second["regressions"]


def test_an_evaluation_without_the_second_probe_gets_it_added(run_dir, tmp_path):
    """A run evaluated before the preset asked for a second probe: the evaluate stage adds it to each
    checkpoint from the cached traces, changing nothing else (the per-row files are not rewritten), and
    makes the untrained control again with it; the numbers are those of a run that had it from the start."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    evaluations = copy / "evaluations"
    saved = {p.name: json.loads(p.read_text()) for p in evaluations.glob("*.json")}
    for name, evaluation in saved.items():
        (evaluations / name).write_text(json.dumps({k: v for k, v in evaluation.items() if k != "second_probe"}))
    rows = {p.name: p.stat().st_mtime_ns for p in evaluations.glob("*.parquet")}
    assert main(["--preset", "tiny", "--output_dir", str(copy), "--stages", "evaluate,analyze"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in evaluations.glob("*.parquet")} == rows
    for name, before in saved.items():
        after = json.loads((evaluations / name).read_text())
        assert after["second_probe"] == before["second_probe"]
        drop = lambda e: {k: v for k, v in e.items() if k not in ("second_probe", "timings_seconds")}
        assert drop(after) == drop(before)
    assert json.loads((copy / "results.json").read_text())["second_probe"] == \
        json.loads((run_dir / "results.json").read_text())["second_probe"]


def test_second_probe_values_are_checked(tmp_path):
    from karel_hf import reproduce

    with pytest.raises(ValueError, match="second_probe: unknown value 'forest'; expected one of '', 'linear'"):
        ReproduceArguments(output_dir=str(tmp_path), preset="tiny", second_probe="forest")
    with pytest.raises(ValueError, match="probe: unknown value 'mlp3'"):
        ReproduceArguments(output_dir=str(tmp_path), preset="tiny", probe="mlp3")
    assert ReproduceArguments(output_dir=str(tmp_path), preset="tiny", second_probe="").resolved().second_probe == ""
    assert reproduce.reproduce_preset("demo").second_probe == ""  # the README's main job stays as it was
    assert reproduce.reproduce_preset("cpu").second_probe == "mlp1"
