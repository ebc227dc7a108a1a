"""Benchmark: karel_hf's vectorised corpus generator vs a naive one-program-at-a-time generator.

(a) `karel_hf.karel.sampling` over --num_programs (default 1,000,000 programs x 10 pairs), split
    into --workers disjoint index ranges; each worker streams batches and reduces every batch to
    a few sums (a checksum), so no worker ever holds more than one batch.
(b) a pure-Python generator in the style of the authors' code (the `random` module, `World`
    objects, the AST interpreter, one program and one world at a time) over --naive_programs.

Prints programs/s for both, their ratio, the wall time of (a), and the peak resident memory
(this process and the largest worker, from resource.getrusage).

    python benchmarks/bench_generate.py                        # the 1M-program run
    python benchmarks/bench_generate.py --num_programs 100000 --naive_programs 500
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import resource
import time

import numpy as np

from karel_hf.karel import ACTIONS, World, execute, format_program
from karel_hf.karel.program import Program
from karel_hf.karel.sampling import CorpusConfig, iter_batches


# ------------------------------------------------------------------------- (a) karel_hf, workers
def _worker(task) -> tuple:
    """Stream examples [start, stop), reduce them to sums; returns (sums, peak RSS KiB, CPU seconds)."""
    config, start, stop, batch_size = task
    cpu_start = time.process_time()
    sums = np.zeros(5, dtype=np.int64)  # programs, input codes, output codes, trace x, program chars
    for batch in iter_batches(config, batch_size=batch_size, start=start, stop=stop):
        sums += (
            len(batch),
            batch.inputs.sum(dtype=np.int64),
            batch.outputs.sum(dtype=np.int64),
            batch.trace_x.sum(dtype=np.int64),
            sum(map(len, batch.programs)),
        )
    return sums, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.process_time() - cpu_start


def run_vectorised(config: CorpusConfig, workers: int, batch_size: int) -> tuple[float, np.ndarray, int, float]:
    """(wall seconds, checksum sums, largest worker peak RSS in KiB, CPU seconds of all workers)."""
    # A few disjoint index ranges per worker, so a worker that starts late does not idle the other.
    bounds = np.linspace(0, config.num_programs, 4 * workers + 1).astype(int)
    tasks = [(config, int(lo), int(hi), batch_size) for lo, hi in zip(bounds[:-1], bounds[1:])]
    start = time.perf_counter()
    if workers == 1:
        results = [_worker(task) for task in tasks]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.map(_worker, tasks, chunksize=1)
    wall = time.perf_counter() - start
    return wall, sum(r[0] for r in results), max(r[1] for r in results), sum(r[2] for r in results)


# --------------------------------------------------------------- (b) naive, one program at a time
def naive_world(rng: random.Random, config: CorpusConfig) -> World:
    """One random world, cell by cell, as the authors' generator builds it."""
    height, width = config.height, config.width
    walls = np.ones((height, width), dtype=bool)
    for y in range(1, height - 1):
        for x in range(1, width - 1):
            walls[y, x] = rng.random() < config.wall_ratio
    x, y = rng.randint(1, width - 2), rng.randint(1, height - 2)
    walls[y, x] = False
    markers = np.zeros((height, width), dtype=np.int16)
    for yy in range(1, height - 1):
        for xx in range(1, width - 1):
            if not walls[yy, xx] and (xx, yy) != (x, y) and rng.random() < config.marker_ratio:
                markers[yy, xx] = 1
    return World(walls, markers, x, y, rng.randrange(4))


def run_naive(config: CorpusConfig, num_programs: int) -> tuple[float, int]:
    """(wall seconds, checksum) of generating num_programs examples one at a time."""
    rng = random.Random(config.seed)
    checksum = 0
    start = time.perf_counter()
    for _ in range(num_programs):
        length = rng.randint(config.min_length, config.max_length)
        program = Program.from_actions(rng.choices(ACTIONS, weights=config.action_weights, k=length))
        text = format_program(program, "lines")
        for _ in range(config.num_pairs):
            world = naive_world(rng, config)
            result = execute(program, world, trace=True)
            checksum += int(world.view_codes().sum()) + int(result.world.view_codes().sum())
        checksum += len(text)
    return time.perf_counter() - start, checksum


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_programs", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8192)
    parser.add_argument("--naive_programs", type=int, default=2000)
    parser.add_argument("--num_pairs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    config = CorpusConfig(num_programs=args.num_programs, num_pairs=args.num_pairs, seed=args.seed)
    wall, sums, worker_kib, cpu = run_vectorised(config, args.workers, args.batch_size)
    naive_wall, naive_sum = run_naive(config, args.naive_programs)

    fast = args.num_programs / wall
    slow = args.naive_programs / naive_wall
    own_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    workers_kib = worker_kib * args.workers if args.workers > 1 else 0
    print(f"karel_hf vectorised : {args.num_programs:,} programs x {config.num_pairs} pairs, "
          f"{args.workers} worker(s), batch {args.batch_size}: {wall:.2f} s wall, {fast:,.0f} programs/s")
    print(f"  worker CPU time {cpu:.2f} s in all ({args.num_programs / cpu:,.0f} programs per CPU-second; "
          f"wall > CPU / workers means the machine was busy with other work)")
    print(f"  checksum (programs, input codes, output codes, trace x, program chars): {sums.tolist()}")
    print(f"naive pure Python   : {args.naive_programs:,} programs: {naive_wall:.2f} s, {slow:,.0f} programs/s "
          f"(checksum {naive_sum}); {args.num_programs:,} programs would take ~{args.num_programs / slow:,.0f} s")
    print(f"speed-up            : {fast / slow:,.1f}x")
    print(f"peak RSS            : main {own_kib / 1024:.0f} MiB, largest worker {max(worker_kib, child_kib) / 1024:.0f} MiB, "
          f"main + all workers <= {(own_kib + workers_kib) / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
