"""Mean and spread over seeds of the emergence runs in results.jsonl, one row per spec and precision.

    python benchmarks/emergence/summary.py [--specs p2l6-demo,p2l6-cpu]
    python benchmarks/emergence/summary.py --evaluations benchmarks/emergence/probe_study/*evaluation*.json

Prints a Markdown table (the one in docs/cpu_results.md): seeds, floor, final generation accuracy, the
teacher-forced and generated conditional gains at offset -1 (points) and the untrained model's
teacher-forced gain, each as mean +- sample sd over the seeds (sd only with >= 2 seeds). Runs on
different kinds of CPU (AMX, AVX512, AVX2: what decides bf16's speed) or with different torch thread
counts (which change the order of the fp32 sums, and with it the run) are kept apart. The last row
of a (spec, seed, precision, CPU kind, threads) wins when a run was recorded twice.

With `--evaluations` it summarises instead the files of `probe_study.py --evaluation` (one per run:
the reproduction's evaluation with another probe): per probe, step, family and offset, the mean +-
sd over the files of the conditional gain, of the margin over the strongest control and of the
intervention's original minus best alternative, in points.

With `--reproductions DIR...` it summarises `karel-hf reproduce` folders (their results.json; LOG.md
E35-E36): the final checkpoint's intervention as gains and as the paper's accuracies, and the
generated family's gains, each beside its control (the step-0 checkpoint, or for the generated
family the untrained states on the final programs), and a second probe's gains at prev1 with the
R^2 of accuracy on them where the run has one (the `cpu` preset's MLP), mean +- sd over the folders:

    python benchmarks/emergence/summary.py --reproductions runs/cpu-s0 runs/cpu-s1 runs/cpu-s2
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

RESULTS_JSONL = Path(__file__).resolve().parent / "results.jsonl"


def _fmt(values, scale=100.0, signed=False, unit="", digits=1):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    mean = scale * statistics.fmean(values)
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    if len(values) >= 2:
        text += f" ± {scale * statistics.stdev(values):.{digits}f}"
    return text + unit


def cpu_kind(row: dict) -> str:
    """AMX, AVX512 or AVX2: the best of the CPU flags a results row recorded (? without any); a run made
    with its kernels limited to AVX2 (`karel_hf.utils.ISA_LIMITS`) is "AVX2 on <kind>"."""
    machine = row.get("machine", {})
    flags = set(machine.get("flags", []))
    kind = next((kind for kind, flag in (("AMX", "amx_bf16"), ("AVX512", "avx512f"), ("AVX2", "avx2"))
                 if flag in flags), "?")
    limits = {str(v).lower() for v in (machine.get("isa_limits") or {}).values()}
    if "avx2" in limits and kind != "AVX2":
        return f"AVX2 on {kind}"
    return kind


def summarize(rows: list[dict], specs: list[str] | None = None) -> str:
    latest = {}
    for row in rows:
        threads = row.get("machine", {}).get("threads", 0)
        latest[(row["spec"], row["precision"], cpu_kind(row), threads, row["seed"])] = row
    groups: dict[tuple, list[dict]] = {}
    for (spec, precision, kind, threads, _), row in sorted(latest.items()):
        if specs is None or spec in specs:
            groups.setdefault((spec, precision, kind, threads), []).append(row)
    lines = ["| spec | precision | CPU | threads | seeds | floor | accuracy, final | gain -1 teacher-forced "
             "| (untrained) | gain -1 generated | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (spec, precision, kind, threads), group in groups.items():
        s = [r["summary"] for r in group]
        lines.append(" | ".join([
            f"| {spec}", precision, kind, str(threads or "?"), ",".join(str(r["seed"]) for r in group),
            _fmt([x["floor"] for x in s], unit="%"),
            _fmt([x["accuracy_end"] for x in s], unit="%"),
            _fmt([x["gain_tf_end"]["value"] for x in s], signed=True),
            _fmt([x["gain_tf_untrained"]["value"] for x in s], signed=True),
            _fmt([x["gain_gen_end"]["value"] for x in s], signed=True),
            _fmt([x["timings_seconds"].get("train") for x in s], scale=1.0, digits=0) + " |",
        ]))
    return "\n".join(lines)


def summarize_evaluations(payloads: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for payload in payloads:
        for row in payload["rows"]:
            groups.setdefault((row["probe"], row["step"], row["family"], row["offset"]), []).append(row)
    lines = ["| probe | step | family | offset | runs | accuracy | conditional gain | margin over strongest control "
             "| orig - best alt |", "|---|---|---|---|---|---|---|---|---|"]
    for (probe, step, family, offset), group in groups.items():
        moved = [r["intervention"]["original_minus_best_alternative"] for r in group if r["intervention"]]
        lines.append(" | ".join([
            f"| {probe}", str(step), family, offset, str(len(group)),
            _fmt([r["accuracy"] for r in group], unit="%"),
            _fmt([r["conditional_gain"]["value"] for r in group], signed=True),
            _fmt([r["margin"] for r in group], signed=True),
            (_fmt(moved, signed=True) if moved else "") + " |",
        ]))
    return "\n".join(lines)


def summarize_reproductions(results: list[dict]) -> str:
    """One row per quantity: the final checkpoint's value and its control's, mean +- sd over runs
    (a run without the quantity, e.g. no informative alternative, is left out of that mean, and the
    row says over how many runs it is)."""
    def conditional(evaluation, family, name):
        return ((evaluation or {}).get("intervention", {}).get(family, {}).get(name) or {}).get("conditional") or {}

    def tf_gain(evaluation):  # the protocol's headline: the reproduction's own (linear) probe
        return evaluation["probes"]["teacher_forced"]["prev1"]["conditional_gain"]["value"] if evaluation else None

    def margin(found):
        return found.get("original_minus_best_alternative") if found.get("best_alternative") else None

    rows = []
    for r in results:
        first, last = r["checkpoints"][0], r["checkpoints"][-1]
        untrained = first if first["step"] == 0 else None
        control = r["baselines"].get("untrained_states_on_final_programs") or {}
        gain = {name: last["probes"]["generated"][name]["conditional_gain"]["value"] for name in ("prev1", "current")}
        base = {name: control["probes"][name]["conditional_gain"]["value"] if control else None
                for name in ("prev1", "current")}
        paper = last["intervention"]["generated"]["current"]
        rows.append({
            "accuracy": (last["generation"]["accuracy"], None),
            "intervention as gains, teacher_forced/prev1 (control: step 0)": (
                margin(conditional(last, "teacher_forced", "prev1")), margin(conditional(untrained, "teacher_forced", "prev1"))),
            "intervention as gains, generated/current (control: untrained states on the final programs)": (
                margin(conditional(last, "generated", "current")),
                margin(control.get("intervention", {}).get("current", {}).get("conditional", {}))),
            "intervention as the paper's accuracies, generated/current (control: step 0)": (
                paper["original_minus_best_alternative"] if paper["best_alternative"] else None,
                (untrained["intervention"]["generated"]["current"]["original_minus_best_alternative"]
                 if untrained and untrained["intervention"]["generated"]["current"]["best_alternative"] else None)),
            "conditional gain, teacher_forced/prev1 (control: step 0)": (
                tf_gain(last), tf_gain(untrained)),
            **{f"conditional gain, generated/{name} (control: untrained states on the final programs)": (gain[name], base[name])
               for name in ("prev1", "current")},
            **{f"... final minus control, generated/{name}": (gain[name] - base[name] if base[name] is not None else None, None)
               for name in ("prev1", "current")},
            **_second_probe_rows(r.get("second_probe")),
        })
    lines = [f"| quantity ({len(results)} runs) | final | control |", "|---|---|---|"]
    for name in dict.fromkeys(name for row in rows for name in row):  # every quantity some run has, in order
        finals, controls = [row.get(name, (None, None))[0] for row in rows], [row.get(name, (None, None))[1] for row in rows]
        final = (_fmt(finals, scale=1.0, digits=2) if name.startswith("R^2") else
                 _fmt(finals, signed=name != "accuracy", unit="%" if name == "accuracy" else ""))
        have = sum(f is not None for f in finals)
        if 0 < have < len(rows):
            final += f" ({have} of {len(rows)} runs)"
        lines.append(f"| {name} | {final} | {_fmt(controls, signed=True) if any(c is not None for c in controls) else '-'} |")
    return "\n".join(lines)


def _second_probe_rows(second: dict | None) -> dict:
    """The quantities of a reproduction's second probe (`karel-hf reproduce`'s `second_probe`, e.g. the
    `cpu` preset's MLP): its conditional gains at prev1 beside their controls and the R^2 of accuracy
    on the teacher-forced one, over every checkpoint and over the trained ones (none in a results.json
    written before LOG.md E41: analyze again); none for a run without it."""
    if not second:
        return {}
    kind = second["probe"]
    final, step_0 = second["final"], second.get("step_0") or {}
    control = (second.get("untrained_states_on_final_programs") or {}).get("generated") or {}
    value = lambda found: found["conditional_gain"]["value"] if found else None
    fit = second["regressions"]["teacher_forced"]["prev1"]
    trained = (second.get("regressions_trained") or {}).get("teacher_forced", {}).get("prev1")  # since LOG.md E41
    r2 = lambda found: found["r2"] if found and math.isfinite(found["r2"]) else None  # NaN: a constant accuracy
    return {
        f"{kind} conditional gain, teacher_forced/prev1 (control: step 0)": (
            value(final["teacher_forced"]["prev1"]), value((step_0.get("teacher_forced") or {}).get("prev1"))),
        f"{kind} conditional gain, generated/prev1 (control: untrained states on the final programs)": (
            value(final["generated"]["prev1"]), value(control.get("prev1"))),
        f"R^2 of accuracy on the {kind} teacher_forced/prev1 gain": (r2(fit), None),
        f"R^2 of accuracy on the {kind} teacher_forced/prev1 gain, trained checkpoints (step 0 left out)": (
            r2(trained), None),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", default=None, help="Comma-separated spec names (default: all).")
    parser.add_argument("--results", type=Path, default=RESULTS_JSONL)
    parser.add_argument("--evaluations", type=Path, nargs="+", default=None,
                        help="probe_study.py --evaluation files to summarise instead of the results table")
    parser.add_argument("--reproductions", type=Path, nargs="+", default=None, metavar="DIR",
                        help="karel-hf reproduce output folders to summarise instead of the results table")
    args = parser.parse_args(argv)
    if args.reproductions:
        try:
            results = [json.loads((path / "results.json").read_text(encoding="utf-8")) for path in args.reproductions]
            print(summarize_reproductions(results))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
            parser.error(f"--reproductions: not a finished reproduction folder (its results.json): {err}")
        return 0
    if args.evaluations:
        try:
            payloads = [json.loads(path.read_text(encoding="utf-8")) for path in args.evaluations]
            print(summarize_evaluations(payloads))
        except (OSError, ValueError, KeyError, TypeError) as err:
            parser.error(f"--evaluations: not a probe_study.py --evaluation file: {err}")
        return 0
    rows = [json.loads(line) for line in args.results.read_text(encoding="utf-8").splitlines() if line.strip()]
    print(summarize(rows, args.specs.split(",") if args.specs else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
