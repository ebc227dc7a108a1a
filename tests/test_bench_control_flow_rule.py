"""benchmarks/bench_control_flow_rule.py: the extended generator timed with and without needs_control_flow."""

import re

from bench_scripts import load_script


def test_the_benchmark_times_both_shapes_with_and_without_the_rule(capsys):
    bench = load_script("bench_control_flow_rule")
    assert bench.main(["--examples", "100", "--paper_examples", "10", "--repeats", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| cpu") or line.startswith("| paper")]
    assert len(rows) == 2
    for row, n in zip(rows, (100, 10)):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == f"{n:,}"
        assert all(float(c.replace(",", "")) > 0 for c in cells[2:4])
        assert re.fullmatch(r"\d+\.\dx", cells[4])
