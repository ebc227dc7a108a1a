"""The whole reproduction on the `tiny` preset: artifacts and their schema (numbers not asserted)."""

import json
import shutil
import subprocess
import sys

import pytest

from karel_hf.reproduce import OFFSET_NAMES, ReproduceArguments, main, plot_results, render_report


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "tiny"
    assert main(["--preset", "tiny", "--output_dir", str(out)]) == 0
    return out


def test_pipeline_writes_every_artifact(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == [0, 10, 20]
    assert {p.name for p in (run_dir / "figures").glob("*.png")} == {
        "fig2_semantic_content.png", "fig3_future_states.png", "fig6a_program_length.png",
        "fig6b_perplexity.png", "fig_regression.png", "fig_semantics_intervention.png"}
    for e in results["checkpoints"]:
        assert 0.0 <= e["generation"]["accuracy"] <= 1.0
        assert set(OFFSET_NAMES.values()) <= set(e["probes"])
        assert set(e["alternative_semantics"]) == {"swap", "cycle1", "cycle2"}
        assert e["perplexity"]["perplexity"] > 1.0
        assert e["num_trace_rows"]["test"] > 0
    for name in OFFSET_NAMES.values():
        reg = results["regressions"][name]
        assert set(reg) >= {"r2", "slope", "p_value", "n"} and reg["n"] == 3
    assert results["baselines"]["untrained_semantic_content"] == results["checkpoints"][0]["probes"]["current"]["semantic_content"]
    assert set(results["timings_seconds"]) >= {"train", "evaluate"}
    report = (run_dir / "report.md").read_text()
    assert "| 20 |" in report and "0.968" in report


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
    assert len(written) == 6 and all(p.stat().st_size > 10_000 for p in written)
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
