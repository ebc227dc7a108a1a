"""The whole reproduction on the `tiny` preset: artifacts and their schema (numbers not asserted)."""

import json
import shutil
import subprocess
import sys

import pytest

from karel_hf.karel.semantics import ALTERNATIVE_SEMANTICS
from karel_hf.reproduce import FAMILIES, OFFSET_NAMES, ReproduceArguments, main, plot_results, render_report


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "tiny"
    assert main(["--preset", "tiny", "--output_dir", str(out)]) == 0
    return out


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


def test_rerun_skips_finished_stages(run_dir):
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "evaluations").glob("*.json")}
    timings = json.loads((run_dir / "timings.json").read_text())
    assert main(["--preset", "tiny", "--output_dir", str(run_dir), "--stages", "train,evaluate"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "evaluations").glob("*.json")} == before
    assert json.loads((run_dir / "timings.json").read_text())["train"] < timings["train"] + 5


def test_plot_redraws_from_results_json_alone(run_dir, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(run_dir / "results.json", copy / "results.json")
    written = plot_results(copy)
    assert {p.name for p in written} == FIGURES and all(p.stat().st_size > 10_000 for p in written)
    assert "fig2_semantic_content" in render_report(copy).read_text()


def test_cli_plot_stage_and_errors(run_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "karel_hf.cli", "reproduce", "--output_dir", str(run_dir),
                          "--stages", "plot"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    with pytest.raises(ValueError, match="preset"):
        ReproduceArguments(output_dir=str(tmp_path), preset="laptop")
    with pytest.raises(ValueError, match="stages"):
        ReproduceArguments(output_dir=str(tmp_path), stages="train,plto")
    with pytest.raises(ValueError, match="analyze stage"):
        plot_results(tmp_path)
