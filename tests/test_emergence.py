"""benchmarks/emergence/run.py: specs become presets, a finished run becomes a results row."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "benchmarks" / "emergence" / "specs").glob("*.json"))


def _script(name: str):
    """benchmarks/emergence/<name>.py, imported as a module."""
    return load_script(f"emergence/{name}")


@pytest.fixture(scope="module")
def emergence():
    return _script("run")


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_builds_a_preset_that_loads(emergence, path, tmp_path):
    from karel_hf.data.builder import get_config
    from karel_hf.presets import load_preset

    spec = emergence.read_spec(path)
    sections = emergence.build_preset(spec, seed=3, precision="fp32")
    file = tmp_path / "preset.yaml"
    file.write_text(yaml.safe_dump(sections))
    preset = load_preset(file)
    args = preset.train_arguments()
    assert args["seed"] == 3 and args["bf16"] is False and args["bf16_auto"] is False
    assert args["position_init"] == spec.get("model", {}).get("position_init", args["position_init"])
    config = get_config(preset.corpus, **{k: v for k, v in preset.corpus_fields.items() if k != "description"})
    for key, value in spec.get("dataset", {}).items():
        assert getattr(config, key) == value
    from karel_hf.modeling import ModelPreset

    shape = ModelPreset.of(str(file))
    activation = shape.activation_function
    if spec.get("base") == "demo":  # the demo preset's activation (E27) and MLP width (E28) changed: its specs name theirs
        assert activation == spec["model"]["activation_function"]
        assert "n_inner" in spec["model"] and shape.n_inner == spec["model"]["n_inner"]
    else:
        assert activation == spec.get("model", {}).get("activation_function", "gelu_new")


def test_a_row_records_the_instruction_set_limits_it_ran_under(emergence, monkeypatch):
    from karel_hf.utils import ISA_LIMITS

    for name in ISA_LIMITS:
        monkeypatch.delenv(name, raising=False)
    assert "isa_limits" not in emergence.machine()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    found = emergence.machine()
    assert found["isa_limits"] == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_bad_specs_get_one_line_errors(emergence, tmp_path):
    cases = {"x.json": "{not json", "y.json": '{"about": "no name"}', "z.json": '{"name": "a", "trainig": {}}'}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(emergence.SpecError) as err:
            emergence.read_spec(tmp_path / name)
        assert "\n" not in str(err.value)
    with pytest.raises(emergence.SpecError, match="precision"):
        emergence.build_preset({"name": "a"}, 0, "fp16")
    with pytest.raises(emergence.SpecError, match="base"):
        emergence.build_preset({"name": "a", "base": "nope"}, 0, "bf16")


def test_a_curriculum_spec_starts_from_its_earlier_run_or_names_it(emergence, tmp_path, capsys):
    """start_from: the checkpoint of the named spec's run of the same seed and precision; a missing one
    is a one-line refusal that names the run to make, before anything is written."""
    spec = {"name": "next", "base": "tiny", "start_from": {"spec": "first", "step": 40}}
    (tmp_path / "next.json").write_text(json.dumps(spec))
    assert emergence.read_spec(tmp_path / "next.json")["start_from"] == {"spec": "first", "step": 40}
    assert emergence.start_checkpoint({"name": "x"}, 0, "fp32", tmp_path) is None
    runs = tmp_path / "runs"
    assert emergence.main([str(tmp_path / "next.json"), "--seed", "2", "--precision", "fp32", "--runs", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: start_from: no checkpoint at {runs}/first-s2-fp32/model/checkpoint-40; run spec first "
                   f"with --seed 2 --precision fp32 --runs {runs} first")
    assert not runs.exists()
    checkpoint = runs / "first-s2-fp32" / "model" / "checkpoint-40"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    assert emergence.start_checkpoint(spec, 2, "fp32", runs) == checkpoint
    for bad in ({"spec": "first"}, {"spec": "", "step": 1}, {"spec": "first", "step": -1}, "first"):
        (tmp_path / "bad.json").write_text(json.dumps({**spec, "start_from": bad}))
        with pytest.raises(emergence.SpecError, match="'start_from' must be"):
            emergence.read_spec(tmp_path / "bad.json")


def test_a_finished_run_becomes_a_row(emergence, tiny_run, tmp_path, monkeypatch):
    results = json.loads((tiny_run / "results.json").read_text())
    summary = emergence.summarize(tiny_run)
    assert summary["steps"] == results["steps"]
    assert summary["accuracy_end"] == results["checkpoints"][-1]["generation"]["accuracy"]
    baselines = results["baselines"]
    assert summary["floor"] == max(baselines["constant_program"], baselines["best_constant_program"]["accuracy"])
    assert summary["floor_put_marker"] == baselines["constant_program"]
    tf = results["checkpoints"][-1]["probes"]["teacher_forced"]["prev1"]["conditional_gain"]
    assert summary["gain_tf_end"]["value"] == pytest.approx(tf["value"], nan_ok=True)
    assert set(summary["offsets_end"]["teacher_forced"]) == {"prev2", "prev1", "current", "next1", "next2"}
    monkeypatch.setattr(emergence, "RESULTS_JSONL", tmp_path / "results.jsonl")
    monkeypatch.setattr(emergence, "RESULTS_MD", tmp_path / "results.md")
    row = {"date": "2026-12-02 00:00", "spec": "tiny", "seed": 0, "precision": "fp32", "wall_seconds": 1.0,
           "machine": {"cpu": "cpu", "flags": ["avx2"], "threads": 1}, "summary": summary}
    emergence.append(row)
    emergence.append(row)
    table = (tmp_path / "results.md").read_text().splitlines()
    assert table.count(table[-1]) == 2 and table[-1].startswith("| 2026-12-02 00:00 | tiny | 0 | fp32 | cpu (avx2) | 1 |")
    assert len(table[-1].split(" | ")) == len(emergence.MD_HEADER.splitlines()[0].split(" | "))
    assert [json.loads(x)["spec"] for x in (tmp_path / "results.jsonl").read_text().splitlines()] == ["tiny", "tiny"]


def test_summary_gives_mean_and_sd_over_seeds_and_keeps_the_last_record(emergence):
    summary = _script("summary")

    def row(seed, accuracy, gain, precision="bf16", flags=("amx_bf16", "avx512f", "avx2"), threads=1, limits=None):
        g = {"value": gain, "low": gain - 0.01, "high": gain + 0.01}
        outcome = {"floor": 0.1, "accuracy_end": accuracy, "gain_tf_end": g, "gain_tf_untrained": g, "gain_gen_end": g,
                   "timings_seconds": {"train": 100.0}}
        machine = {"flags": list(flags), "threads": threads, **({"isa_limits": limits} if limits else {})}
        return {"spec": "s", "seed": seed, "precision": precision, "machine": machine, "summary": outcome}

    rows = [row(0, 0.5, 0.0), row(0, 0.2, 0.1), row(1, 0.4, 0.3), row(0, 0.9, 0.2, "fp32"),
            row(0, 0.7, 0.2, "fp32", flags=("avx2",)),  # another machine: its own row, not a rerun
            row(0, 0.6, 0.2, "fp32", flags=("avx2",), threads=2),  # another thread count: its own row too
            row(0, 0.3, 0.2, "fp32", limits={"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"})]
    lines = summary.summarize(rows).splitlines()
    assert len(lines) == 7
    assert lines[2] == "| s | bf16 | AMX | 1 | 0,1 | 10.0 ± 0.0% | 30.0 ± 14.1% | +20.0 ± 14.1 | +20.0 ± 14.1 | +20.0 ± 14.1 | 100 ± 0 |"
    assert lines[3].startswith("| s | fp32 | AMX | 1 | 0 | 10.0% | 90.0% | +20.0 |")
    assert lines[4].startswith("| s | fp32 | AVX2 | 1 | 0 | 10.0% | 70.0% | +20.0 |")
    assert lines[5].startswith("| s | fp32 | AVX2 | 2 | 0 | 10.0% | 60.0% | +20.0 |")
    assert lines[6].startswith("| s | fp32 | AVX2 on AMX | 1 | 0 | 10.0% | 30.0% | +20.0 |")  # AVX2 kernels on AMX


    def evaluation_row(step, offset, gain, moved=None):
        return {"probe": "mlp1", "step": step, "family": "teacher_forced", "offset": offset, "accuracy": 0.5,
                "conditional_gain": {"value": gain}, "margin": -gain,
                "intervention": None if moved is None else {"original_minus_best_alternative": moved}}

    runs = [{"rows": [evaluation_row(24, "prev1", 0.30, 0.02), evaluation_row(0, "prev1", 0.1)]},
            {"rows": [evaluation_row(24, "prev1", 0.34, -0.04), evaluation_row(0, "prev1", 0.1)]}]
    lines = summary.summarize_evaluations(runs).splitlines()
    assert lines[2] == "| mlp1 | 24 | teacher_forced | prev1 | 2 | 50.0 ± 0.0% | +32.0 ± 2.8 | -32.0 ± 2.8 | -1.0 ± 4.2 |"
    assert lines[3] == "| mlp1 | 0 | teacher_forced | prev1 | 2 | 50.0 ± 0.0% | +10.0 ± 0.0 | -10.0 ± 0.0 |  |"


def test_probe_study_scores_every_layer_and_probe_on_a_finished_run(tiny_run, tmp_path, capsys):
    from karel_hf.probing.measure import load_traces, semantic_content

    study = _script("probe_study")
    out = tmp_path / "study.json"
    argv = [str(tiny_run), "--features", "state,layer_0", "--probes", "linear", "--budgets", "40,all",
            "--offsets=-1,0", "--intervention", "--conditional_intervention", "--intervention_offsets=-1", "--num_bootstrap", "20", "--output", str(out)]
    assert study.main(argv) == 0
    payload = json.loads(out.read_text())
    rows = payload["rows"]
    steps = sorted({r["step"] for r in rows})
    assert len(steps) == 2 and steps[0] == 0  # default: the first and the last checkpoint
    assert len(rows) == 2 * 2 * 2 * 2  # steps x features x budgets x offsets
    assert {r["feature"] for r in rows} == {"state", "layer_0"}
    for r in rows:
        assert (r["budget"] is None) or r["num_train"] <= 40
        assert ("intervention" in r) == ("conditional_intervention" in r) == (r["offset"] == -1)
        if r["offset"] == -1:
            cond = r["conditional_intervention"]
            assert set(cond["gain"]) >= {"original", "swap", "authors3"}
            assert cond["gain"]["swap"] == cond["gain"]["authors0"]  # one fit per distinct map
            # swap is a function of (original, initial direction): never the informative alternative
            assert cond["determined_by_original_and_initial"]["swap"] == pytest.approx(1.0)
            # the mirror's rotation is the real one's negated: a function of the change alone
            assert cond["determined_by_prompt"]["swap"] == pytest.approx(1.0)
            assert cond["best_alternative"] != "swap"
            assert cond["gain"]["original"] == r["conditional_gain"]  # the same probe, seed and rows
            best = cond["gain"][cond["best_alternative"]]["value"]
            assert cond["original_minus_best_alternative"] == pytest.approx(r["conditional_gain"]["value"] - best)
            # where the meanings differ: one comparison per alternative, on a share of the scored rows
            assert set(cond["discordant"]) == set(cond["gain"]) - {"original"}
            for found in cond["discordant"].values():
                assert 0 <= found["num_rows"] <= r["num_test"] and 0 <= found["fraction"] <= 1
                if found["num_rows"]:
                    assert found["value"] == pytest.approx(found["original_gain"] - found["alternative_gain"])
            low = cond["discordant_minimum"]
            assert low is None or (low["num_rows"] >= 100 and low["value"] == min(
                cond["discordant"][k]["value"] for k in cond["gain"] if k != "original"
                and cond["determined_by_original_and_initial"][k] < 0.95 and cond["discordant"][k]["num_rows"] >= 100))
        gain = r["conditional_gain"]
        assert -1 <= gain["low"] <= gain["value"] <= gain["high"] <= 1
    assert capsys.readouterr().out.count(" | linear | ") == len(rows)  # the markdown table, one line per row
    # the layer-0 state (token embeddings) is not the layer-mean state: the two features give different probes
    state = [r for r in rows if r["feature"] == "state" and r["budget"] is None]
    layer0 = [r for r in rows if r["feature"] == "layer_0" and r["budget"] is None]
    assert [r["semantic_content"] for r in state] != [r["semantic_content"] for r in layer0]
    assert payload["machine"]["threads"] >= 1 and payload["teacher_forced_min_length"] >= 1

    # every checkpoint, the layer-mean state only (the reproduction's cached traces): accuracy
    # regressed on the conditional gain across checkpoints, as the analyse stage does for its probes
    import shutil

    from karel_hf.probing.analysis import regress

    run = tmp_path / "run"  # a copy whose accuracies differ (the tiny model writes no correct program)
    shutil.copytree(tiny_run, run)
    results = json.loads((run / "results.json").read_text())
    for i, checkpoint in enumerate(results["checkpoints"]):
        checkpoint["generation"]["accuracy"] = 0.1 + 0.2 * i
    (run / "results.json").write_text(json.dumps(results))
    argv = [str(run), "--steps", "all", "--features", "state", "--probes", "linear", "--budgets", "all",
            "--offsets=0", "--num_bootstrap", "20", "--output", str(out)]
    assert study.main(argv) == 0
    payload = json.loads(out.read_text())
    accuracy = {c["step"]: c["generation"]["accuracy"]
                for c in json.loads((run / "results.json").read_text())["checkpoints"]}
    assert sorted(r["step"] for r in payload["rows"]) == sorted(accuracy)
    (fit,) = payload["regressions"]
    expected = regress([accuracy[r["step"]] for r in payload["rows"]], [r["conditional_gain"]["value"] for r in payload["rows"]])
    assert fit["n"] == len(accuracy) == 3 and 0 <= fit["r2"] <= 1
    assert fit["r2"] == pytest.approx(expected["r2"])
    assert "R^2" in capsys.readouterr().out

    with pytest.raises(SystemExit) as err:
        study.main([str(tmp_path), "--output", str(tmp_path / "x.json")])
    assert err.value.code == 2 and "reproduction folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.main([str(tiny_run), "--features", "layer_99", "--output", str(tmp_path / "x.json")])
    assert "unknown feature" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_probe_study_reads_the_programs_a_checkpoint_writes(tiny_run, tmp_path, capsys):
    """--mode generated probes the checkpoint's own programs; --programs_from STEP teacher-forces
    those programs through any checkpoint: through the same one it gives the same rows and numbers,
    through another the same rows with that model's states (the untrained control)."""
    study = _script("probe_study")
    last = max(json.loads((tiny_run / "results.json").read_text())["steps"])
    common = ["--features", "state", "--probes", "linear", "--budgets", "all", "--offsets=-1,0",
              "--num_bootstrap", "20"]

    def rows(*argv):
        out = tmp_path / f"{len(list(tmp_path.iterdir()))}.json"
        assert study.main([str(tiny_run), *argv, *common, "--output", str(out)]) == 0
        payload = json.loads(out.read_text())
        return payload, {r["offset"]: r for r in payload["rows"]}

    generated, own = rows("--mode", "generated", "--steps", str(last))
    forced, same = rows("--programs_from", str(last), "--steps", str(last))
    _, untrained = rows("--programs_from", str(last), "--steps", "0")
    assert generated["mode"] == "generated" and forced["programs_from"] == last
    for offset in (-1, 0):
        assert same[offset]["num_train"] == own[offset]["num_train"] == untrained[offset]["num_train"] > 0
        assert same[offset]["num_test"] == own[offset]["num_test"] == untrained[offset]["num_test"]
        assert same[offset]["semantic_content"] == pytest.approx(own[offset]["semantic_content"], abs=0.02)
        assert same[offset]["prompt_only"] == untrained[offset]["prompt_only"]  # the same rows and labels
    assert [untrained[o]["semantic_content"] for o in (-1, 0)] != [same[o]["semantic_content"] for o in (-1, 0)]
    # --given_previous: the facts also hold the true label one offset earlier; the same rows, a
    # facts-only probe that knows more (at 0 it knows the state before the action: most of the label)
    given, previous = rows("--mode", "generated", "--steps", str(last), "--given_previous")
    assert all(r["given_previous"] for r in given["rows"]) and not any(r["given_previous"] for r in generated["rows"])
    assert previous[0]["num_train"] == own[0]["num_train"] and previous[0]["num_test"] == own[0]["num_test"]
    capsys.readouterr()
    for bad, message in ((["--mode", "generated", "--programs_from", str(last)], "needs --mode teacher_forced"),
                         (["--programs_from", "999999"], "no checkpoint for step 999999"),
                         (["--given_previous", "--intervention"], "--given_previous takes")):
        with pytest.raises(SystemExit) as err:
            study.main([str(tiny_run), *bad, "--output", str(tmp_path / "x.json")])
        assert err.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_probe_study_intervention_on_the_position_reruns_the_worlds(tiny_run, tmp_path, capsys):
    """--label_set position with the intervention: each alternative's positions come from its program
    re-run on the spec's worlds (`with_alternative_labels`), checked here against the interpreter."""
    from karel_hf.karel import execute, parse
    from karel_hf.karel.semantics import get_semantics
    from karel_hf.karel.world import World
    from karel_hf.reproduce import _data_rows, reproduce_preset

    study = _script("probe_study")
    out = tmp_path / "position.json"
    argv = [str(tiny_run), "--steps", "0", "--features", "state", "--probes", "linear", "--budgets", "all",
            "--offsets=-1", "--label_set", "position", "--intervention", "--conditional_intervention",
            "--intervention_offsets=-1", "--given_other", "swap,cycle1", "--num_bootstrap", "20", "--output", str(out)]
    assert study.main(argv) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["label_set"] == "position"
    cond = row["conditional_intervention"]
    # each meaning's probes given the other's cell (and the initial heading): the same rows differ,
    # and the facts now hold the other's cell, so neither facts-only probe does worse than without it
    assert set(cond["given_other"]) == {"swap", "cycle1"}
    for name, crossed in cond["given_other"].items():
        plain = cond["discordant"][name]
        assert crossed["num_rows"] == plain["num_rows"] and crossed["fraction"] == plain["fraction"]
        if crossed["num_rows"]:
            assert crossed["value"] == pytest.approx(crossed["original_gain"] - crossed["alternative_gain"])
            assert crossed["alternative_facts"] >= plain["alternative_facts"] - 0.05
        assert set(crossed["all_rows"]) == {"original_gain", "alternative_gain"}
    assert " given the other, swap: " in capsys.readouterr().out
    assert cond["gain"]["original"] == row["conditional_gain"] and set(cond["gain"]) >= {"cycle1", "authors3"}
    assert all(0 < share <= 1 for share in cond["determined_by_prompt"].values())
    assert set(row["intervention"]["accuracy"]) >= {"original", "cycle1"}

    preset = reproduce_preset(json.loads((tiny_run / "reproduce_config.json").read_text())["preset"])
    specs = [dict(r) for r in _data_rows(tiny_run / "model", preset)[0]][:12]
    table = {"example_id": [], "program": [], "step": []}  # trace rows: one per (spec, action k)
    for spec in specs:
        for k in range(1, len(parse(spec["program"]).body) + 1):
            table["example_id"].append(spec["id"]), table["program"].append(spec["program"]), table["step"].append(k)
    table = {k: np.asarray(v) for k, v in table.items()}
    added = study.with_alternative_labels(table, specs, "position", (-1, 0))
    by_id = {int(spec["id"]): spec for spec in specs}
    for i, (eid, text, k) in enumerate(zip(table["example_id"], table["program"], table["step"])):
        world = World.from_view_codes(np.asarray(by_id[int(eid)]["inputs"][0]))
        states = [world, *execute(get_semantics("cycle1").apply(parse(str(text))), world, trace=True).states]
        assert added["cycle1__x"][i] == states[k].x - 1 and added["cycle1__y_prev1"][i] == states[k - 1].y - 1
    assert len(table["step"]) > 12 and "x" not in added  # the original's columns are the traces' own
    capsys.readouterr()
    for bad, message in ((["--label_set", "positions"], "unknown --label_set 'positions'"),
                         (["--given_other", "swap"], "--given_other is part of --conditional_intervention"),
                         (["--conditional_intervention", "--given_other", "swapp"], "--given_other: unknown semantics")):
        with pytest.raises(SystemExit) as err:
            study.main([str(tiny_run), *bad, "--output", str(tmp_path / "x.json")])
        assert err.value.code == 2 and message in capsys.readouterr().err


def test_given_previous_puts_the_earlier_state_among_the_facts():
    """A label at +1 that the true label at 0 fixes: the prompt facts alone read it at chance, the
    facts with the earlier state (`with_previous`) read all of it, and the state adds nothing."""
    from karel_hf.probing.measure import semantic_content

    study = _script("probe_study")
    rng = np.random.default_rng(0)
    n = 800
    current = rng.integers(0, 4, n)
    table = {"example_id": np.arange(n), "step": np.ones(n, dtype=np.int64), "num_actions": np.full(n, 3),
             "state": rng.normal(size=(n, 8)).astype(np.float32), "code_state": rng.normal(size=(n, 8)).astype(np.float32),
             "direction_0_initial": rng.integers(0, 4, n), "direction_0_output": rng.integers(0, 4, n),
             "direction_0": current, "direction_0_next1": (current + 1) % 4}
    train, test = ({k: v[:600] for k, v in table.items()}, {k: v[600:] for k, v in table.items()})
    options = dict(offset=1, controls=("prompt_only", "conditional_gain"), num_prompt_pairs=1, num_bootstrap=20)
    plain = semantic_content(train, test, **options)
    given = semantic_content(study.with_previous(train, 1, 1), study.with_previous(test, 1, 1), **options)
    assert plain["controls"]["prompt_only"] < 0.45
    assert given["controls"]["prompt_only"] == pytest.approx(1.0)
    assert given["conditional_gain"]["value"] == pytest.approx(0.0, abs=0.02)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_probe_study_evaluation_is_the_reproductions_own_with_another_probe(tiny_run, tmp_path, capsys, monkeypatch):
    import shutil

    from karel_hf.probing import probes

    # The plumbing is under test, not the MLP's fit: 654 MLP fits of 200 epochs took 228 s on an
    # AVX2 CPU; 10 epochs each keep the MLP's numbers apart from the linear probe's.
    monkeypatch.setitem(probes.DEFAULT_MAX_ITER, "mlp1", 10)

    study = _script("probe_study")
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    # a run trained but never evaluated (no traces/ yet) is measured too: its traces are built
    untraced = tmp_path / "untraced"
    shutil.copytree(tiny_run, untraced, ignore=shutil.ignore_patterns("traces", "evaluations"))
    assert study.main([str(untraced), "--evaluation", "--probes", "linear", "--steps", "0",
                       "--output", str(tmp_path / "untraced.json")]) == 0
    assert (untraced / "probe_study_linear" / "evaluations" / "step-0.json").is_file()
    last = max(int(p.stem.split("-")[1].split(".")[0]) for p in (run / "evaluations").glob("step-*.json"))
    official = json.loads((run / "evaluations" / f"step-{last}.json").read_text())
    before = {p.name: p.read_bytes() for p in (run / "evaluations").iterdir()}
    out = tmp_path / "evaluation.json"
    argv = [str(run), "--evaluation", "--probes", "linear,mlp1", "--steps", str(last), "--output", str(out)]
    assert study.main(argv) == 0
    assert {p.name: p.read_bytes() for p in (run / "evaluations").iterdir()} == before  # the run's own files untouched
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * 2 * 5  # probes x families x offsets
    linear = json.loads((run / "probe_study_linear" / "evaluations" / f"step-{last}.json").read_text())
    mlp = json.loads((run / "probe_study_mlp1" / "evaluations" / f"step-{last}.json").read_text())
    # the preset's probe is linear: the same evaluation as the reproduction's, number for number
    assert linear["probes"] == official["probes"] and linear["intervention"] == official["intervention"]
    assert mlp["generation"] == official["generation"]  # the same programs: only the probes change
    assert mlp["probes"] != official["probes"]
    for r in rows:
        source = linear if r["probe"] == "linear" else mlp
        assert r["conditional_gain"] == source["probes"][r["family"]][r["offset"]]["conditional_gain"]
        assert (r["intervention"] is not None) == (r["offset"] in source["intervention"][r["family"]])
    assert capsys.readouterr().out.count(f"| {last} | mlp1 | ") == 10  # the markdown table
    # a rerun reads the finished evaluations back instead of refitting
    stamp = (run / "probe_study_mlp1" / "evaluations" / f"step-{last}.json").stat().st_mtime_ns
    assert study.main(argv) == 0
    assert (run / "probe_study_mlp1" / "evaluations" / f"step-{last}.json").stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit) as err:  # options the whole evaluation does not take: an error, not ignored
        study.main([*argv, "--budgets", "all"])
    assert err.value.code == 2 and "does not take --budgets" in capsys.readouterr().err


def test_a_train_only_run_ends_cleanly_without_a_row(emergence, tmp_path, monkeypatch, capsys):
    """--stages train leaves no results.json: the runner says so and records nothing (it used to crash reading it)."""
    calls = []
    monkeypatch.setattr(emergence, "run_child", lambda command: calls.append(command) or 0)
    monkeypatch.setattr(emergence, "RESULTS_JSONL", tmp_path / "results.jsonl")
    monkeypatch.setattr(emergence, "RESULTS_MD", tmp_path / "results.md")
    spec = ROOT / "benchmarks" / "emergence" / "specs" / "p2l6-demo.json"
    assert emergence.main([str(spec), "--seed", "0", "--precision", "fp32", "--runs", str(tmp_path),
                           "--stages", "train"]) == 0
    assert calls and calls[0][calls[0].index("--stages") + 1] == "train"
    assert "nothing recorded" in capsys.readouterr().out
    assert not (tmp_path / "results.jsonl").exists() and not (tmp_path / "results.md").exists()


def test_stopping_the_runner_stops_the_run_it_started(tmp_path):
    """SIGTERM to run.py reaches `karel-hf reproduce`: it used to train on as an orphan after the runner died."""
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    runner = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks' / 'emergence')!r}); import run; "
              f"sys.exit(run.run_child([sys.executable, '-c', {child!r}]))")
    proc = subprocess.Popen([sys.executable, "-c", runner])
    deadline = time.monotonic() + 60
    while not pid_file.is_file() or not pid_file.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM  # the child's status, in the shell's convention
        with pytest.raises(ProcessLookupError):  # reaped by the runner, not left running
            os.kill(pid, 0)
    finally:
        for leftover in (proc.pid, pid):  # a failed run of this test leaves nothing behind either
            try:
                os.kill(leftover, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_specs_keep_the_loss_and_rate_their_recorded_runs_trained_on(emergence):
    """A spec says what its recorded runs trained with, whatever the base preset says now: the cpu
    preset counts program tokens 4x since LOG.md E13, and the specs recorded before say 1; the cpu specs
    recorded at lr 2e-3 say so; the demo specs recorded before E22 say 4 layers."""
    trained = {}
    for name in ("p2l6-cpu", "p2l6-cpu24k", "p2l6-cpu-plw4", "p2l6-cpu-plw10", "p2l6-cpu-plw4-lr05", "p2l6-demo"):
        spec = emergence.read_spec(ROOT / "benchmarks" / "emergence" / "specs" / f"{name}.json")
        training = emergence.build_preset(spec, seed=0, precision="fp32")["training"]
        trained[name] = (training.get("program_loss_weight", 1), training["learning_rate"])
    assert trained == {"p2l6-cpu": (1, 2e-3), "p2l6-cpu24k": (1, 2e-3), "p2l6-cpu-plw4": (4, 2e-3),
                       "p2l6-cpu-plw10": (10, 2e-3), "p2l6-cpu-plw4-lr05": (4, 5e-4), "p2l6-demo": (1, 2e-3)}
    # the demo preset has 2 layers since LOG.md E22; every demo spec recorded before ran 4
    for path in sorted((ROOT / "benchmarks" / "emergence" / "specs").glob("*.json")):
        spec = emergence.read_spec(path)
        if spec.get("base") == "demo" and not spec["name"].startswith("p2l6-demo-l2"):  # the 2-layer specs
            assert emergence.build_preset(spec, seed=0, precision="fp32")["model"]["n_layer"] == 4, spec["name"]


@pytest.mark.parametrize("preset, spec_name, learning_rate, n_layer",
                         [("cpu", "p2l6-cpu-plw4-lr05-16k", 5e-4, 4), ("demo", "p2l6-demo-l2t-ni128", 2.5e-4, 2)])
def test_a_preset_is_the_spec_its_recorded_seeds_ran(emergence, preset, spec_name, learning_rate, n_layer):
    """README and the preset files quote a spec's recorded seeds for the cpu and demo presets: a change
    to the preset that the spec does not follow (or the other way round) leaves those numbers behind."""
    from karel_hf.presets import load_preset

    spec = emergence.read_spec(ROOT / "benchmarks" / "emergence" / "specs" / f"{spec_name}.json")
    ran = emergence.build_preset(spec, seed=0, precision="auto")
    loaded = load_preset(preset)
    def shape(model):  # n_inner absent and null both mean 4 x n_embd
        return {**model, "n_inner": model.get("n_inner")}

    assert shape(ran["model"]) == shape(loaded.model) and ran["reproduce"] == loaded.reproduce
    assert ran["training"] == loaded.training and ran["training"]["learning_rate"] == learning_rate
    assert ran["training"]["program_loss_weight"] == 4 and ran["model"]["n_layer"] == n_layer
    assert ran["dataset"] == {"name": preset, **{k: v for k, v in loaded.corpus_fields.items() if k != "description"}}


def test_rotation_probe_tells_a_held_rotation_from_the_direction_and_from_alternatives():
    """States that hold the rotation r (not the direction d = d0 + r): a linear probe reads r and
    not d, an MLP given d0 reads d, swap (-r) is left out and a rotation the states do not hold is
    read at chance, so the original beats the best alternative."""
    from karel_hf.karel.semantics import ALTERNATIVE_SEMANTICS
    from karel_hf.probing.labels import label_column

    probe = _script("rotation_probe")
    rng = np.random.default_rng(0)

    def table(n):
        d0, r = rng.integers(0, 4, n), rng.integers(0, 4, n)
        state = np.eye(4)[r] + 0.05 * rng.standard_normal((n, 4))
        t = {"state": np.hstack([state, rng.standard_normal((n, 4))]).astype(np.float32),
             "direction_0_prev1": (d0 + r) % 4, "direction_0_initial": d0}
        for name in ALTERNATIVE_SEMANTICS:
            t[label_column("direction_0", -1, name)] = (d0 - r) % 4 if name == "swap" else rng.integers(0, 4, n)
        t["direction_0_prev1"][:5] = -1  # undefined labels are left out
        return t

    out = probe.score(table(1200), table(600))
    assert out["num_train"] == 1195 and out["num_test"] == 595
    assert out["linear_r"] > 0.95 and out["linear_r_swap"] > 0.95
    assert out["linear_d"] < 0.4 and out["linear_d_d0"] < 0.5 and out["mlp_d_d0"] > 0.9
    assert abs(out["lookup_d0"] - 0.25) < 0.1 and abs(out["majority_r"] - 0.25) < 0.1
    assert out["best_informative_alternative"] not in (None, "swap")
    assert out["linear_r_minus_best_alternative"] > 0.5
    assert probe.rotation(np.array([0, 3, 1]), np.array([1, 1, 1])).tolist() == [3, 2, 0]


def test_rotation_probe_reads_a_finished_run_and_refuses_a_folder_that_is_not_one(tiny_run, tmp_path, capsys):
    probe = _script("rotation_probe")
    out = tmp_path / "rotation.json"
    assert probe.main([str(tiny_run), "--output", str(out), "--features", "state,layer_1"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["step"], r["feature"]) for r in rows] == [(0, "state"), (0, "layer_1"), (rows[-1]["step"], "state"),
                                                         (rows[-1]["step"], "layer_1")]
    for row in rows:
        assert row["num_train"] > 0 and row["num_test"] > 0
        assert all(0.0 <= row[k] <= 1.0 for k in ("linear_d", "lookup_d0", "linear_r", "mlp_r", "majority_r"))
    # the layer's states are not the layer mean's: the two features read differently somewhere
    assert any(a["linear_r"] != b["linear_r"] or a["linear_d"] != b["linear_d"] for a, b in zip(rows[::2], rows[1::2]))
    assert "| step | feature | linear d |" in capsys.readouterr().out
    assert json.loads(out.read_text())["regressions"] == {}  # two checkpoints: no line to fit
    # the checkpoint's own programs, and the same programs teacher-forced: the same rows and readings
    last = str(rows[-1]["step"])
    own, forced = tmp_path / "own.json", tmp_path / "forced.json"
    assert probe.main([str(tiny_run), "--steps", last, "--mode", "generated", "--output", str(own)]) == 0
    assert probe.main([str(tiny_run), "--steps", last, "--programs_from", last, "--output", str(forced)]) == 0
    (a,), (b,) = (json.loads(p.read_text())["rows"] for p in (own, forced))
    assert json.loads(own.read_text())["mode"] == "generated" and json.loads(forced.read_text())["programs_from"] == int(last)
    assert (a["num_train"], a["num_test"], a["majority_r"]) == (b["num_train"], b["num_test"], b["majority_r"])
    assert a["linear_r"] == pytest.approx(b["linear_r"], abs=0.02)
    for argv, message in (([str(tmp_path)], "is not a reproduction folder"),
                          ([str(tiny_run), "--features", "layer_x"], "--features: expected state and/or layer_<i>"),
                          ([str(tiny_run), "--features", "layer_99"], "--features: the model has layers 0.."),
                          ([str(tiny_run), "--mode", "generated", "--programs_from", "0"], "needs --mode teacher_forced"),
                          ([str(tiny_run), "--programs_from", "999999"], "no checkpoint for step 999999")):
        with pytest.raises(SystemExit) as exit_info:
            probe.main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_rotation_probe_regresses_accuracy_on_the_rotation_reading(tmp_path):
    probe = _script("rotation_probe")
    checkpoints = [{"step": s, "generation": {"accuracy": a}} for s, a in ((0, 0.1), (10, 0.3), (20, 0.5), (30, 0.2))]
    (tmp_path / "results.json").write_text(json.dumps({"checkpoints": checkpoints}))
    rows = [{"step": s, "linear_r": r, "linear_r_minus_best_alternative": m}
            for s, r, m in ((0, 0.6, -0.1), (10, 0.8, 0.3), (20, 1.0, 0.0), (40, 0.9, 0.9))]  # step 40: no accuracy
    fits = probe.accuracy_regressions(tmp_path, rows)
    assert fits["linear_r"]["n"] == 3 and abs(fits["linear_r"]["r2"] - 1.0) < 1e-9 and abs(fits["linear_r"]["slope"] - 1.0) < 1e-9
    assert fits["linear_r_minus_best_alternative"]["r2"] < 0.9
    assert probe.accuracy_regressions(tmp_path / "missing", rows) == {}


def test_token_init_restarts_the_cell_and_action_rows_and_nothing_else(tiny_run, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    module = _script("token_init")
    src = tiny_run / "model" / "checkpoint-0"
    assert module.main([str(src), str(tmp_path / "a")]) == 0
    assert module.main([str(src), str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    before, after = load_file(str(src / "model.safetensors")), load_file(str(tmp_path / "a" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before if k not in ("transformer.wte.weight", "lm_head.weight"))
    vocab = AutoTokenizer.from_pretrained(str(src)).get_vocab()
    old, new = before["transformer.wte.weight"], after["transformer.wte.weight"]
    changed = {w for w, i in vocab.items() if not torch.equal(old[i], new[i])}
    assert "__up__ " in changed and "    move()\n" in changed and "Input0\n" not in changed and "<s>" not in changed

    def cos(a, b):
        return float(torch.nn.functional.cosine_similarity(new[vocab[a]], new[vocab[b]], dim=0))

    # the same cell with either separator starts close; two robots share the robot code; a robot and a wall do not
    assert cos("__up__ ", "__up__\n") > 0.9 > cos("__up__ ", "__left__ ") > 0.3 > abs(cos("__up__ ", "__wall__ "))
    assert abs(float(new.std()) - float(old.std())) < 0.1 * float(old.std())
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "a"))  # a stock checkpoint, tied head included
    assert torch.equal(model.lm_head.weight, model.transformer.wte.weight)
    for argv, message in (([str(tmp_path), str(tmp_path / "c")], "is not a checkpoint folder"),
                          ([str(src), str(tmp_path / "a")], "exists; give a new folder")):
        with pytest.raises(SystemExit) as exit_info:
            module.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_summary_of_reproduction_folders(tiny_run, tmp_path, capsys):
    """`summary.py --reproductions DIR...`: the final checkpoint's intervention (gains and the paper's
    accuracies) and the generated family's gains beside their controls, mean and sd over folders."""
    summary = _script("summary")
    results = json.loads((tiny_run / "results.json").read_text())
    assert summary.main(["--reproductions", str(tiny_run), str(tiny_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| quantity (2 runs) | final | control |"
    last = results["checkpoints"][-1]
    accuracy = 100 * last["generation"]["accuracy"]
    assert f"| accuracy | {accuracy:.1f} ± 0.0% | - |" in lines
    gain = last["probes"]["generated"]["prev1"]["conditional_gain"]["value"]
    base = results["baselines"]["untrained_states_on_final_programs"]["probes"]["prev1"]["conditional_gain"]["value"]
    row = next(l for l in lines if l.startswith("| conditional gain, generated/prev1"))
    assert row.endswith(f"| {100 * gain:+.1f} ± 0.0 | {100 * base:+.1f} ± 0.0 |")
    tf_final, tf_step_0 = (c["probes"]["teacher_forced"]["prev1"]["conditional_gain"]["value"]
                           for c in (last, results["checkpoints"][0]))
    row = next(l for l in lines if l.startswith("| conditional gain, teacher_forced/prev1 (control: step 0)"))
    assert results["checkpoints"][0]["step"] == 0 and row.endswith(f"| {100 * tf_final:+.1f} ± 0.0 | {100 * tf_step_0:+.1f} ± 0.0 |")
    row = next(l for l in lines if l.startswith("| ... final minus control, generated/prev1"))
    assert f"| {100 * (gain - base):+.1f} ± 0.0 |" in row
    # the tiny preset's second probe (mlp1): its gains beside their controls, and the R^2 on it
    second = results["second_probe"]
    tf, step_0 = (x["teacher_forced"]["prev1"]["conditional_gain"]["value"] for x in (second["final"], second["step_0"]))
    row = next(l for l in lines if l.startswith("| mlp1 conditional gain, teacher_forced/prev1 (control: step 0)"))
    assert row.endswith(f"| {100 * tf:+.1f} ± 0.0 | {100 * step_0:+.1f} ± 0.0 |")
    fit = second["regressions"]["teacher_forced"]["prev1"]
    row = next(l for l in lines if l.startswith("| R^2 of accuracy on the mlp1 teacher_forced/prev1 gain"))
    finite = fit is not None and fit["r2"] == fit["r2"]  # NaN where the tiny run's accuracy is constant
    assert row.endswith(f"| {fit['r2']:.2f} ± 0.00 | - |" if finite else "| n/a | - |")
    row = next(l for l in lines if l.startswith("| R^2 of accuracy on the mlp1 teacher_forced/prev1 gain, trained"))
    assert second["regressions_trained"]["teacher_forced"]["prev1"] is None  # 2 trained checkpoints: no fit
    assert row.endswith("| n/a | - |")
    # a run without a quantity (here: a run analyzed before the fit over the trained checkpoints existed)
    # is left out of that row's mean, and the row says over how many runs it is
    fitted, older = json.loads(json.dumps(results)), json.loads(json.dumps(results))
    fitted["second_probe"]["regressions_trained"]["teacher_forced"]["prev1"] = {
        "r2": 0.8, "slope": 1.0, "intercept": 0.0, "p_value": 0.01, "n": 10}
    del older["second_probe"]["regressions_trained"]
    lines = summary.summarize_reproductions([fitted, older]).splitlines()
    assert next(l for l in lines if "trained checkpoints" in l).endswith("| 0.80 (1 of 2 runs) | - |")
    assert f"| {accuracy:.1f} ± 0.0% | - |" in next(l for l in lines if l.startswith("| accuracy |"))
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(SystemExit):
        summary.main(["--reproductions", str(tmp_path)])
    assert "--reproductions: not a finished reproduction folder" in capsys.readouterr().err


def test_extended_screen_reads_a_run_beside_its_floors_and_refuses_a_missing_step(tiny_run, tmp_path, capsys):
    """extended_screen.py on a finished run (here the tiny straight-line one, as run.py lays it out):
    the floors are the reproduction's own, no test program has control flow, and a step that is not
    a checkpoint is a one-line refusal."""
    import shutil

    screen = _script("extended_screen")
    assert screen.control_flow_share(["def run() { move() }", "def run() { while(front_is_clear()) { move() } }",
                                      "def run() { move(", None]) == 0.25
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ROOT / "karel_hf" / "presets" / "tiny.yaml", run / "preset.yaml")
    (run / "model").symlink_to(tiny_run / "model")
    steps = sorted(int(p.name.split("-")[1]) for p in (tiny_run / "model").glob("checkpoint-*"))
    assert screen.main([str(run), "--steps", f"{steps[0]},{steps[-1]}", "--straight_line_max", "2"]) == 0
    result = json.loads((run / "extended_screen.json").read_text())
    baselines = json.loads((tiny_run / "results.json").read_text())["baselines"]
    assert result["floor_put_marker"] == baselines["constant_program"]
    assert result["floor_best_constant"] == baselines["best_constant_program"]
    assert result["test_with_control_flow"] == 0.0 and 0.0 <= result["test_seen_in_train"] <= 1.0
    ceiling = result["straight_line_ceiling"]  # JSON keys: "1", "2"; no one program beats the union
    assert list(ceiling) == ["1", "2"] and baselines["best_constant_program"]["accuracy"] <= ceiling["2"]
    assert ceiling["1"] <= ceiling["2"] <= 1.0
    assert [c["step"] for c in result["checkpoints"]] == [steps[0], steps[-1]]
    assert all(0.0 <= c["accuracy"] <= 1.0 and c["parse_rate"] == 1.0 for c in result["checkpoints"])
    assert "| step | accuracy | on unseen programs |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no checkpoint at step"):
        screen.main([str(run), "--steps", "7"])
    # a curriculum's earlier run: its training programs count as seen (here the same corpus: all of them)
    assert screen.main([str(run), "--steps", str(steps[-1]), "--straight_line_max", "1", "--seen_in", str(run),
                        "--output", str(tmp_path / "seen.json")]) == 0
    again = json.loads((tmp_path / "seen.json").read_text())
    assert again["seen_in"] == [str(run)] and again["test_seen_in_train"] == result["test_seen_in_train"]
    with pytest.raises(SystemExit, match="--seen_in .* has no preset.yaml"):
        screen.main([str(run), "--steps", "0", "--seen_in", str(tmp_path)])
    with pytest.raises(SystemExit, match="no preset.yaml"):
        screen.main([str(tmp_path), "--steps", "0"])


def test_control_flow_probe_runs_on_a_finished_run_and_reads_another_runs_checkpoints(tiny_run, tmp_path, capsys):
    """control_flow_probe.py end to end on a run laid out as run.py does (the tiny straight-line one):
    `--gains_only --alternatives --given_other swap` writes every part's margins; `--checkpoints_of`
    reads the models from another run's folder (a curriculum's first stage, its untrained step 0)
    with RUN's rows, and names that folder when it lacks the step."""
    import shutil

    probe = _script("control_flow_probe")
    runs = {}
    for name in ("run", "first"):
        runs[name] = tmp_path / name
        runs[name].mkdir()
        shutil.copy(ROOT / "karel_hf" / "presets" / "tiny.yaml", runs[name] / "preset.yaml")
    (runs["run"] / "model").symlink_to(tiny_run / "model")
    (runs["first"] / "model").mkdir()
    (runs["first"] / "model" / "checkpoint-0").symlink_to(tiny_run / "model" / "checkpoint-0")
    options = ["--steps", "0", "--features", "layer_1", "--probe", "linear", "--gains_only", "--alternatives",
               "--given_other", "swap", "--max_train_rows", "300"]
    assert probe.main([str(runs["run"]), *options, "--output", str(tmp_path / "own.json")]) == 0
    assert probe.main([str(runs["run"]), *options, "--checkpoints_of", str(runs["first"]),
                       "--output", str(tmp_path / "other.json")]) == 0
    own, other = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("own", "other"))
    assert other["checkpoints_of"] == str(runs["first"]) and own["checkpoints_of"] == str(runs["run"])
    reading = own["checkpoints"][0]["readings"][0]["all_rows"]
    assert reading["given_other"]["swap"]["num_rows"] > 0 and "swap" in reading["discordant"]
    assert other["checkpoints"][0]["readings"] == own["checkpoints"][0]["readings"]  # the same model, the same rows
    assert "given the other's label, where they differ: original - swap" in capsys.readouterr().out
    # --programs generated: the model's own programs, counted, and read as the references are
    assert probe.main([str(runs["run"]), "--steps", "0", "--features", "layer_1", "--probe", "linear", "--gains_only",
                       "--programs", "generated", "--max_train_rows", "300", "--output", str(tmp_path / "gen.json")]) == 0
    gen = json.loads((tmp_path / "gen.json").read_text())
    counts = gen["checkpoints"][0]["generated"]
    assert gen["programs"] == "generated" and own["programs"] == "reference"
    assert all(0 <= counts[k]["left_out"] < counts[k]["written"] for k in ("train", "test"))
    assert gen["checkpoints"][0]["rows"]["test"] > 0 and "generated programs" in capsys.readouterr().out
    # --programs_of: the last checkpoint's programs read by step 0's model: the rows its own reading has
    last = max(int(p.name.split("-")[1]) for p in (tiny_run / "model").glob("checkpoint-*"))
    writer = tiny_run / "model" / f"checkpoint-{last}"
    base = [str(runs["run"]), "--features", "layer_1", "--probe", "linear", "--gains_only", "--programs", "generated",
            "--max_train_rows", "300"]
    assert probe.main([*base, "--steps", str(last), "--output", str(tmp_path / "last.json")]) == 0
    assert probe.main([*base, "--steps", "0", "--programs_of", str(writer), "--output", str(tmp_path / "by.json")]) == 0
    mine, by = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("last", "by"))
    assert by["programs_of"] == str(writer) and mine["programs_of"] is None
    assert by["checkpoints"][0]["rows"] == mine["checkpoints"][0]["rows"]
    assert by["checkpoints"][0]["generated"] == mine["checkpoints"][0]["generated"]
    assert (by["checkpoints"][0]["rows"], by["checkpoints"][0]["generated"]) != (
        gen["checkpoints"][0]["rows"], gen["checkpoints"][0]["generated"])  # not step 0's own programs
    for wrong in (["--programs_of", str(writer)], ["--programs", "generated", "--programs_of", str(tmp_path)]):
        with pytest.raises(SystemExit) as exit_info:
            probe.main([str(runs["run"]), "--steps", "0", *wrong])
        assert exit_info.value.code == 2
    with pytest.raises(SystemExit, match=f"{runs['first']} has no checkpoint at step"):
        probe.main([str(runs["run"]), "--steps", "1", "--gains_only", "--checkpoints_of", str(runs["first"])])


def test_control_flow_probe_scores_a_longer_test_split_on_the_same_training_rows(tiny_run, tmp_path):
    """control_flow_probe.py --test_specs (E67): the test rows come from the corpus generated again with
    that many test examples, while the probes' training rows stay the run's own, so the fits are the
    same; a count below 1 is refused in one line."""
    import shutil

    from karel_hf.reproduce import _data_rows, reproduce_preset

    probe = _script("control_flow_probe")
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ROOT / "karel_hf" / "presets" / "tiny.yaml", run / "preset.yaml")
    (run / "model").symlink_to(tiny_run / "model")
    preset = reproduce_preset(str(run / "preset.yaml"))
    own_test, own_train, _ = _data_rows(run / "model", preset)
    longer = probe.with_test_specs(run, preset, 150)
    test, train, _ = _data_rows(run / "model", longer)
    assert len(own_test) == preset.test_specs < 150 == len(test)
    assert train["text"] == own_train["text"] and train["id"] == own_train["id"]
    options = ["--steps", "0", "--features", "layer_1", "--probe", "linear", "--gains_only", "--max_train_rows", "300"]
    assert probe.main([str(run), *options, "--output", str(tmp_path / "own.json")]) == 0
    assert probe.main([str(run), *options, "--test_specs", "150", "--output", str(tmp_path / "long.json")]) == 0
    own, long = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("own", "long"))
    assert (own["test_specs"], long["test_specs"]) == (preset.test_specs, 150)
    assert long["checkpoints"][0]["rows"]["train"] == own["checkpoints"][0]["rows"]["train"]
    assert long["checkpoints"][0]["rows"]["test"] > own["checkpoints"][0]["rows"]["test"]
    with pytest.raises(SystemExit, match="--test_specs must be at least 1, got 0"):
        probe.main([str(run), *options, "--test_specs", "0"])


def test_control_flow_probe_fits_the_named_alternatives_on_the_rows_every_meaning_labels(tiny_run, tmp_path, capsys):
    """control_flow_probe.py --fit swap (E68): only swap's probes are fitted beside the real meaning's,
    on the same rows as with every meaning, so its gains and margins are the full reading's to the
    digit; --fit without --alternatives, an unknown name, or --given_other outside it are usage errors."""
    import shutil

    probe = _script("control_flow_probe")
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ROOT / "karel_hf" / "presets" / "tiny.yaml", run / "preset.yaml")
    (run / "model").symlink_to(tiny_run / "model")
    options = [str(run), "--steps", "0", "--features", "layer_1", "--probe", "linear", "--gains_only", "--alternatives",
               "--max_train_rows", "300"]
    assert probe.main([*options, "--output", str(tmp_path / "every.json")]) == 0
    assert probe.main([*options, "--fit", "swap", "--output", str(tmp_path / "swap.json")]) == 0
    every, swap = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("every", "swap"))
    assert swap["fitted"] == ["swap"] and every["fitted"] == every["semantics"] and len(every["semantics"]) > 1
    assert swap["checkpoints"][0]["rows"] == every["checkpoints"][0]["rows"]
    for part in ("all_rows", "world_dependent"):
        mine, full = (r["checkpoints"][0]["readings"][0][part] for r in (swap, every))
        assert set(mine["gains"]) == {"original", "swap"}
        assert mine["gains"] == {k: full["gains"][k] for k in ("original", "swap")}
        assert mine["conditional_gain"] == full["conditional_gain"]
        for margin in ("discordant", "undetermined"):
            assert mine[margin]["swap"] == full[margin]["swap"]
    for wrong in (["--fit", "swap"], ["--alternatives", "--fit", "mirror"], ["--alternatives", "--fit", "swap",
                                                                              "--given_other", "cycle1"]):
        with pytest.raises(SystemExit) as exit_info:
            probe.main([str(run), "--steps", "0", "--gains_only", *wrong])
        assert exit_info.value.code == 2
    assert "--given_other: each name must also be in --fit" in capsys.readouterr().err


def test_the_straight_line_ceiling_is_the_brute_force_of_the_scoring_function():
    """extended_screen.straight_line_ceiling runs every program by the batched engine; the scoring
    function (karel_hf.karel.scoring.pairs_correct, the AST interpreter) gives the same shares."""
    from itertools import product

    from karel_hf.karel import Program
    from karel_hf.karel.sampling import CorpusConfig, generate
    from karel_hf.karel.scoring import load_reference, pairs_correct

    batch = generate(CorpusConfig(num_programs=80, num_pairs=3, height=6, width=6, max_length=4, extended=True,
                                  seed=3), 0, 80)
    references = [{"inputs": batch.inputs[i].tolist(), "outputs": batch.outputs[i].tolist()} for i in range(80)]
    ceiling = _script("extended_screen").straight_line_ceiling(references, 2, 2)
    specs = [load_reference(r) for r in references]
    for length in (1, 2):
        programs = [Program.from_actions(list(a)) for n in range(1, length + 1)
                    for a in product(("move", "turn_left", "turn_right", "put_marker", "pick_marker"), repeat=n)]
        expected = sum(any(pairs_correct(p, spec, 2) for p in programs) for spec in specs) / len(specs)
        assert ceiling[length] == expected
    assert 0 < ceiling[1] < ceiling[2] < 1


def test_control_flow_probe_labels_statements_by_running_them_and_finds_their_tokens():
    """control_flow_probe.py: a turn inside `if` happens on one world and not the other, under the
    real meaning and under swap (left and right exchanged); the top-level statements are found in
    the tokens the model reads, one start per statement."""
    from karel_hf.karel import World, format_program, parse
    from karel_hf.tokenizer import build_tokenizer

    probe = _script("control_flow_probe")
    program = parse("def run() { turn_left() if(front_is_clear()) { turn_right() } move() }")
    top = World.from_ascii("#####\n#>..#\n#...#\n#####")  # after the left turn it faces the wall
    low = World.from_ascii("#####\n#...#\n#>..#\n#####")  # ... and here the cell above
    assert probe.prefix_directions(program, [top, low]).tolist() == [[1, 1], [0, 0], [0, 1], [0, 1]]
    assert probe.prefix_directions(program, [top, low], "swap").tolist() == [[1, 1], [2, 2], [1, 2], [1, 2]]
    tokenizer = build_tokenizer()
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("\nCode:\n" + format_program(program, "lines"))["input_ids"])
    starts = probe.statement_starts(tokens, tokens.index("Code:\n"))
    assert [tokens[s] for s in starts] == ["  turn_left()\n", "  if(front_is_clear()) ", "  move()\n"]
    nested = parse("def run() { ifelse(markers_present()) { move() } else { repeat(2) { turn_left() } } }")
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("\nCode:\n" + format_program(nested, "lines"))["input_ids"])
    assert len(probe.statement_starts(tokens, tokens.index("Code:\n"))) == len(nested.body) == 1


def test_control_flow_probe_reads_the_models_own_programs():
    """control_flow_probe.py --programs generated: each row's text is its prompt and the program the
    model wrote, in the corpus's own format (a reference row formatted so gives its text byte for
    byte), and each statement's label is the written program's prefix run on the spec's inputs."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from karel_hf.data.builder import get_config, split_table
    from karel_hf.data.formatting import format_sample
    from karel_hf.karel import World, parse
    from karel_hf.probing.labels import label_column
    from karel_hf.tokenizer import build_tokenizer

    probe = _script("control_flow_probe")
    config = get_config("cpu", extended=True, needs_control_flow=True, num_prompt_pairs=2, max_length=4, test_size=24,
                        seed=5)
    rows = split_table(config, "test", 0, 24).to_pylist()
    for row in rows:  # the generated rows are formatted as the corpus formats its own
        inputs, outputs = np.asarray(row["inputs"]), np.asarray(row["outputs"])
        assert format_sample(inputs[:2], outputs[:2], parse(row["program"])) == row["text"]
    tokenizer = build_tokenizer()
    torch.manual_seed(1)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=512, vocab_size=len(tokenizer),
                                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.pad_token_id,
                                       eos_token_id=tokenizer.pad_token_id)).eval()
    written, counts = probe.generated_rows(model, tokenizer, rows, 2, batch_size=8)
    assert counts["written"] == 24 and counts["left_out"] + len(written) == 24 and len(written) >= 12
    assert 0 <= counts["accuracy"] <= 1
    by_id = {row["id"]: row for row in rows}
    assert any(row["program"] != by_id[row["id"]]["program"] for row in written)  # an untrained model's own
    for row in written:
        assert row["text"].startswith(by_id[row["id"]]["text"].split("Code:\n")[0] + "Code:\n")
        assert row["inputs"] == by_id[row["id"]]["inputs"]
    table = probe.build_table(model, tokenizer, written, 2, ("swap",), batch_size=8)["table"]
    assert len(table["step"]) > 0
    for row in written:
        program, worlds = parse(row["program"]), [World.from_view_codes(w) for w in row["inputs"]]
        mine = table["example_id"] == row["id"]
        if not mine.any():
            continue
        assert set(table["num_actions"][mine]) == {len(program.body)}
        real = probe.prefix_directions(program, worlds)
        for k, label in zip(table["step"][mine], table[label_column("direction_0", -1)][mine]):
            assert label == real[k - 1, 0]


def _needs_control_flow_rows_and_model(count: int, n_layer: int):
    """The first `count` test rows of a small corpus whose programs need their control flow (some
    statements turn the robot by the world), the tokenizer, and an untrained GPT-2 of `n_layer`
    layers of width 16 (seeded); and the corpus config, for its other splits."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from karel_hf.data.builder import get_config, split_table
    from karel_hf.tokenizer import build_tokenizer

    config = get_config("cpu", extended=True, needs_control_flow=True, num_prompt_pairs=2, max_length=4,
                        test_size=count, seed=5)
    rows = split_table(config, "test", 0, count).to_pylist()
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=16, n_head=2, n_positions=512, vocab_size=len(tokenizer),
                                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.pad_token_id,
                                       eos_token_id=tokenizer.pad_token_id)).eval()
    return rows, tokenizer, model, config


def test_control_flow_probe_reads_each_layer_at_the_statement_tokens():
    """control_flow_probe.py --features: each row holds every hidden-state layer's vector at the token
    before its statement (layer 0 the embeddings), their mean is the `state` the probe read before,
    and a layer's reading swaps exactly `state` and `code_state` for that layer's vectors."""
    import torch

    from karel_hf.data.builder import split_table

    probe = _script("control_flow_probe")
    rows, tokenizer, model, config = _needs_control_flow_rows_and_model(40, n_layer=2)
    built = probe.build_table(model, tokenizer, rows, 2, ("swap", "cycle1"), batch_size=5)
    table, states = built["table"], built["layers"]["states"]
    assert states.shape == (len(table["step"]), 3, 16) and len(table["step"]) > 40
    np.testing.assert_allclose(states.mean(1), table["state"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(built["layers"]["code_states"].mean(1), table["code_state"], rtol=1e-5, atol=1e-6)
    first = rows[0]  # its first statement's row, against the model run on that example alone
    ids = tokenizer(first["text"])["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    start = probe.statement_starts(tokens, tokens.index("Code:\n"))[0]
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    row = int(np.flatnonzero((table["example_id"] == first["id"]) & (table["step"] == 1))[0])
    for layer in range(3):
        np.testing.assert_allclose(states[row, layer], hidden[layer][0, start - 1].numpy(), rtol=1e-4, atol=1e-5)
    one = probe.with_feature(built, "layer_1")
    np.testing.assert_array_equal(one["state"], states[:, 1])
    np.testing.assert_array_equal(one["code_state"], built["layers"]["code_states"][:, 1])
    assert all(np.array_equal(one[c], table[c]) for c in table if c not in ("state", "code_state"))
    assert probe.with_feature(built, "state") is table
    assert probe.feature_names("all", 3) == ["state", "layer_0", "layer_1", "layer_2"]
    # labelled once (karel_hf.reproduce_control_flow.label_split): another model's table from the same
    # labels equals the one built from nothing, bit for bit; labels made with another vocabulary are redone
    from karel_hf.probing.control_flow import label_rows

    labelled = label_rows(tokenizer, rows, 2, ("swap", "cycle1"))
    torch.manual_seed(1)
    other = type(model)(model.config).eval()
    fresh = probe.build_table(other, tokenizer, rows, 2, ("swap", "cycle1"), batch_size=5)
    reused = probe.build_table(other, tokenizer, rows, 2, ("swap", "cycle1"), batch_size=5, labelled=labelled)
    assert not np.array_equal(fresh["table"]["state"], table["state"])  # another model, other states
    assert list(reused["table"]) == list(fresh["table"]) and reused["skipped"] == fresh["skipped"]
    for got, want in ((reused["table"], fresh["table"]), (reused["layers"], fresh["layers"])):
        assert all(np.array_equal(got[c], want[c]) and got[c].dtype == want[c].dtype for c in want)
    stale = {**labelled, "vocabulary": {**labelled["vocabulary"], "Code:\n": -1},
             "columns": {c: v[:0] for c, v in labelled["columns"].items()}}
    redone = probe.build_table(other, tokenizer, rows, 2, ("swap", "cycle1"), batch_size=5, labelled=stale)
    assert np.array_equal(redone["table"]["step"], fresh["table"]["step"])
    with pytest.raises(ValueError, match="labelled: made for other rows than these"):
        probe.build_table(other, tokenizer, rows[1:], 2, ("swap", "cycle1"), labelled=labelled)
    # --gains_only: one fit scores both parts, the same numbers as measure's refit on each part
    train_built = probe.build_table(model, tokenizer, split_table(config, "train", 0, 60).to_pylist(), 2,
                                    ("swap", "cycle1"))
    train, test = probe.with_feature(train_built, "layer_2"), probe.with_feature(built, "layer_2")
    dependent = test["world_dependent"].astype(bool)
    assert 0 < dependent.sum() < len(dependent)
    budgets = {"max_train_rows": None, "max_test_rows": None}
    quick = probe.gains(train, test, dependent, 2, "linear", budgets)
    meanings = ("swap", "cycle1")
    full = {"all_rows": probe.measure(train, test, 2, meanings, "linear", budgets),
            "world_dependent": probe.measure(train, probe.subset(test, dependent), 2, meanings, "linear", budgets)}
    # --alternatives: each meaning fitted once, both parts scored from it, equal to the refit too
    versus = probe.alternative_gains(train, test, dependent, 2, "linear", budgets, meanings)
    for part in ("all_rows", "world_dependent"):
        assert quick[part]["conditional_gain"] == pytest.approx(full[part]["conditional_gain"])
        assert quick[part]["num_test_rows"] == full[part]["num_test_rows"]
        assert versus[part]["conditional_gain"] == pytest.approx(full[part]["conditional_gain"])
        assert versus[part]["gains"] == pytest.approx(full[part]["gains"])
        assert versus[part]["best_alternative"] == full[part]["best_alternative"]
        assert versus[part]["original_minus_best_alternative"] == pytest.approx(
            full[part]["original_minus_best_alternative"], nan_ok=True)
    assert versus["all_rows"]["best_alternative"] == "cycle1"  # swap is a function of (real, initial) labels
    assert versus["all_rows"]["determined_by_original_and_initial"]["swap"] >= 0.95
    # the margins where the labels differ, and given the other's label: on every row, the full
    # measure's (conditional_intervention) from the same fits; on a part, only that part's rows
    from karel_hf.probing.measure import conditional_intervention

    crossed = probe.alternative_gains(train, test, dependent, 2, "linear", budgets, meanings, given_other=("swap",))
    every = conditional_intervention(train, test, -1, label_set="v1", num_prompt_pairs=2, probe="linear",
                                     semantics=meanings, given_other=("swap",), **budgets)
    for name in meanings:
        assert crossed["all_rows"]["discordant"][name] == pytest.approx(every["discordant"][name], nan_ok=True)
    swap, swap_every = crossed["all_rows"]["given_other"]["swap"], every["given_other"]["swap"]
    assert {k: swap[k] for k in ("value", "low", "high", "num_rows")} == pytest.approx(
        {k: swap_every[k] for k in ("value", "low", "high", "num_rows")})
    assert swap["part"]["original_gain"] == pytest.approx(swap_every["all_rows"]["original_gain"])
    assert swap["part"]["alternative_gain"] == pytest.approx(swap_every["all_rows"]["alternative_gain"])
    part = crossed["world_dependent"]
    assert 0 < part["discordant"]["cycle1"]["num_rows"] < crossed["all_rows"]["discordant"]["cycle1"]["num_rows"]
    assert part["given_other"]["swap"]["num_rows"] <= int(dependent.sum())
    assert part["gains"] == pytest.approx(versus["world_dependent"]["gains"])  # the extra fits change nothing else
    # where swap's label is not its mirror (twice the initial direction minus the real one, what the
    # best function of the two gives here): the rows where a wall or a condition sent the paths apart
    from karel_hf.probing.labels import label_column

    labels = ("direction_0", "direction_1")
    real = np.stack([test[label_column(l, -1)] for l in labels])
    mirror = (2 * np.stack([test[label_column(l, "initial")] for l in labels]) - real) % 4
    swapped = np.stack([test[label_column(l, -1, "swap")] for l in labels])
    apart = ((swapped != mirror) & (swapped != real) & (swapped >= 0) & (real >= 0)).any(0)
    for name, keep in (("all_rows", np.ones(len(dependent), dtype=bool)), ("world_dependent", dependent)):
        off = crossed[name]["undetermined"]["swap"]
        assert off["num_rows"] == int((apart & keep).sum())
        assert off["num_rows"] < crossed[name]["discordant"]["swap"]["num_rows"]
    assert crossed["all_rows"]["undetermined"]["swap"]["num_rows"] > 0
    # programs of one top-level statement have no row at -1 (its state is the input's): NaN, no error
    # (an untrained model writes such programs: `--programs generated` on step 0)
    single = {name: probe.subset(t, t["num_actions"] == 1) for name, t in (("train", train), ("test", test))}
    empty = probe.alternative_gains(single["train"], single["test"], dependent[test["num_actions"] == 1], 2, "linear",
                                    budgets, meanings, given_other=("swap",))
    assert empty["all_rows"]["num_test_rows"] == 0 and empty["all_rows"]["best_alternative"] is None
    assert np.isnan(empty["world_dependent"]["conditional_gain"]["value"])
    with pytest.raises(SystemExit) as exit_info:  # refused before any model is loaded
        probe.main(["no-such-run", "--steps", "0", "--alternatives"])
    assert exit_info.value.code == 2
    for wrong in (["--gains_only", "--given_other", "swap"], ["--gains_only", "--alternatives", "--given_other", "spin"]):
        with pytest.raises(SystemExit) as exit_info:
            probe.main(["no-such-run", "--steps", "0", *wrong])
        assert exit_info.value.code == 2
    only = probe.world_dependent_only(train_built)  # --train_on world_dependent: rows and vectors kept together
    keep = train_built["table"]["world_dependent"].astype(bool)
    assert 0 < len(only["table"]["step"]) == keep.sum() < len(keep) and only["table"]["world_dependent"].all()
    np.testing.assert_array_equal(only["layers"]["states"], train_built["layers"]["states"][keep])
    np.testing.assert_array_equal(probe.with_feature(only, "layer_1")["state"], train_built["layers"]["states"][keep, 1])
    with pytest.raises(SystemExit, match="'layer_3' is not state or layer_0..layer_2"):
        probe.feature_names("state,layer_3", 3)


def test_control_flow_probe_reads_the_rotation_since_the_start_under_every_meaning():
    """control_flow_probe.py --label rotation (E63): each row's label at -1, under the real meaning and
    under each alternative, becomes that meaning's direction after the prefix less the initial
    direction, mod 4, as the interpreter runs it; the facts and the states stay as they were."""
    from karel_hf.karel import World, parse
    from karel_hf.probing.labels import label_column

    probe = _script("control_flow_probe")
    rows, tokenizer, model, _ = _needs_control_flow_rows_and_model(30, n_layer=1)
    built = probe.build_table(model, tokenizer, rows, 2, ("swap", "cycle1"), batch_size=8)
    turned = probe.as_rotation(built, 2, ("swap", "cycle1"))
    table, rotation = built["table"], turned["table"]
    assert turned["layers"] is built["layers"] and rotation["state"] is table["state"]
    checked = set()
    for row in rows:
        program, worlds = parse(row["program"]), [World.from_view_codes(w) for w in row["inputs"]]
        for meaning in ("original", "swap", "cycle1"):
            path = probe.prefix_directions(program, worlds[:2], meaning)
            for r in np.flatnonzero(table["example_id"] == row["id"]):
                k = table["step"][r]
                for i in range(2):
                    assert rotation[label_column(f"direction_{i}", -1, meaning)][r] == (path[k - 1, i] - path[0, i]) % 4
                    assert rotation[label_column(f"direction_{i}", "initial")][r] == path[0, i]  # a fact, unchanged
                    checked.add((meaning, int(k > 1)))
    assert checked == {(m, later) for m in ("original", "swap", "cycle1") for later in (0, 1)}
    changed = rotation[label_column("direction_0", -1, "swap")] != table[label_column("direction_0", -1, "swap")]
    assert changed.any() and not changed.all()  # rows whose robot starts facing the direction coded 0 keep theirs
