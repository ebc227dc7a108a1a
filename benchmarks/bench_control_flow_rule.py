"""Benchmark: what `needs_control_flow` costs the extended-language generator, against the same
generator without the rule, in the same run.

For two corpus shapes, the `cpu` one of LOG.md E44 (6x6 worlds, 2 prompt pairs, 1..6 actions) and the
paper's (8x8, 5 prompt pairs, 1..10 actions), the training split of an extended corpus is generated
with `karel_hf.karel.sampling.generate` (numba engine when installed, as `load_karel` uses it), once
with `needs_control_flow` (every program whose prompt pairs a straight-line program of up to
max_length actions solves is drawn again: karel_hf.karel.compiled.straight_line_solves) and once
without (the baseline). Each is timed after a warm-up call (numba compiles, or loads its cache, on
the first), best of --repeats, on one thread. Prints the examples per second of each and the ratio.

    OMP_NUM_THREADS=1 python benchmarks/bench_control_flow_rule.py
"""

from __future__ import annotations

import argparse
import time

from karel_hf.data.builder import get_config
from karel_hf.karel.sampling import generate

SHAPES = {
    "cpu (6x6, 2 pairs, 1..6 actions)": dict(config="cpu", overrides={}),
    "paper (8x8, 5 pairs, 1..10 actions)": dict(config="paper", overrides={}),
}


def best_time(corpus, n: int, repeats: int) -> float:
    generate(corpus, 0, 64)  # warm-up: numba compiles or loads its cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        generate(corpus, 0, n)
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=5000, help="training examples per timing (cpu shape)")
    parser.add_argument("--paper_examples", type=int, default=500, help="training examples per timing (paper shape)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print("| corpus | examples | without the rule (examples/s) | with needs_control_flow (examples/s) | time ratio |")
    print("|---|---|---|---|---|")
    for name, shape in SHAPES.items():
        n = args.examples if shape["config"] == "cpu" else args.paper_examples
        rows = []
        for rule in (False, True):
            config = get_config(shape["config"], extended=True, needs_control_flow=rule, **shape["overrides"])
            rows.append(best_time(config.corpus_config("train"), n, args.repeats))
        plain, ruled = rows
        print(f"| {name} | {n:,} | {n / plain:,.0f} | {n / ruled:,.0f} | {ruled / plain:.1f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
