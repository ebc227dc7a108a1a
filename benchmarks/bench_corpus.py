"""Benchmark: the `paper` corpus through the user paths, against the raw generator in the same run.

(a) raw generator: `karel_hf.karel.sampling` over the three splits of the paper config (train
    --train_size, validation and test 10,000 each), in --workers processes that reduce every batch
    to a checksum (so nothing is held);
(b) `load_karel("paper", train_size=...)` into a fresh datasets cache with num_proc=--workers;
(c) then `export_dataset("paper", ..., num_proc=--workers)` on that cache: Parquet shards read from
    it, the tokenizer, the card (an export without a cache builds it first, as (b));
(d) the extended-language generator (`extended=True`), its NumPy engine and (with numba installed)
    its numba engine, against the per-example path they replaced (copied below as the baseline:
    `np.random.default_rng([seed, i])`, a recursive AST sampler and the AST interpreter, one example
    at a time), on the same examples' worlds; the two engines' outputs are compared.

(a)-(c) each run in a fresh subprocess, which reports its wall time and CPU time (both from after
its imports) and peak RSS (its own, and the largest of its worker processes, from
resource.getrusage). Prints programs/s, the
ratio to (a), the time of the full 1,020,000-program paper corpus (extrapolated linearly from the
measured size, or measured with --train_size 1000000) and the peak RSS; for (d) the per-program
CPU and wall time of each path, the CPU ratio to the baseline and each engine's first call (numba
compiles then, or loads its cache).

    python benchmarks/bench_corpus.py                          # 200k training programs
    python benchmarks/bench_corpus.py --train_size 1000000     # the real paper config
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from karel_hf.karel import ACTIONS, execute, format_program
from karel_hf.karel.corpus_config import EXTENDED_STEP_BUDGET, MAX_ATTEMPTS
from karel_hf.karel.extended_sampling import _compiled, extended_examples, sample_extended_program
from karel_hf.karel.program import Action, walk
from karel_hf.karel.sampling import CorpusConfig, generate, program_lengths
from karel_hf.karel.world import WorldFormatError
from karel_hf.karel.world_sampling import sample_worlds

PAPER_EXAMPLES = 1_020_000  # 1M / 10k / 10k

# Run in a subprocess: `task` and its arguments come as JSON in argv[1]; prints one JSON line.
_CHILD = r"""
import json, multiprocessing, os, resource, sys, tempfile, time
import numpy as np
from karel_hf.data import load_karel
from karel_hf.data.builder import SPLITS, get_config
from karel_hf.data.export import export_dataset
from karel_hf.karel.sampling import iter_batches
args = json.loads(sys.argv[1])
sizes = dict(train_size=args["train_size"])
start, cpu = time.perf_counter(), time.process_time()  # after the imports
if args["task"] == "generator":
    config = get_config("paper", **sizes)
    tasks = []
    for split in SPLITS:
        corpus = config.corpus_config(split)
        bounds = np.linspace(0, corpus.num_programs, 4 * args["workers"] + 1).astype(int)
        tasks += [(corpus, int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    def work(task):
        corpus, lo, hi = task
        total = 0
        for batch in iter_batches(corpus, batch_size=4096, start=lo, stop=hi):
            total += int(batch.outputs.sum(dtype=np.int64)) + sum(map(len, batch.programs))
        return total
    with multiprocessing.get_context("fork").Pool(args["workers"]) as pool:
        checksum = sum(pool.map(work, tasks, chunksize=1))
    rows = sum(t[2] - t[1] for t in tasks)
elif args["task"] == "load_karel":
    ds = load_karel("paper", cache_dir=os.path.join(args["dir"], "cache"), num_proc=args["workers"], **sizes)
    rows = sum(len(d) for d in ds.values())
    checksum = len(ds["train"][-1]["text"])
else:
    out = export_dataset("paper", os.path.join(args["dir"], "export"), cache_dir=os.path.join(args["dir"], "cache"),
                         num_proc=args["workers"], **sizes)
    rows = args["train_size"] + 20_000
    checksum = sum(p.stat().st_size for p in out.rglob("*.parquet"))
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
children = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps(dict(rows=rows, wall=wall, cpu=cpu + children.ru_utime + children.ru_stime, checksum=checksum,
                      rss_main=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      rss_worker=children.ru_maxrss / 1024)))
"""


def run_child(task: str, train_size: int, workers: int, folder: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_OFFLINE": "1"}
    spec = json.dumps(dict(task=task, train_size=train_size, workers=workers, dir=folder))
    out = subprocess.run([sys.executable, "-c", _CHILD, spec], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{task} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------- (d) the extended generator, before
def extended_per_example(config: CorpusConfig, start: int, stop: int) -> list[str]:
    """The extended-language examples [start, stop) as the per-example path made them: a per-example
    Generator, the recursive sampler, the AST interpreter with a trace, redraws on failure."""
    worlds = sample_worlds(config, start, stop)
    lengths = program_lengths(config, start, stop)
    P = config.num_pairs
    programs = []
    for row, (i, length) in enumerate(zip(range(start, stop), lengths.tolist())):
        rng = np.random.default_rng([config.seed, i])
        starts = [worlds.world(row * P + pair, config.height, config.width) for pair in range(P)]
        for _ in range(MAX_ATTEMPTS):
            program = sample_extended_program(rng, length, config.action_weights)
            runs = []
            for world in starts:
                result = execute(program, world, trace=True, max_steps=EXTENDED_STEP_BUDGET)
                try:
                    runs.append((result, result.world.view_codes()) if result.completed else None)
                except WorldFormatError:
                    runs.append(None)
            if all(r is not None for r in runs):
                break
        for result, _ in runs:  # what the per-example path stored per pair
            states = [result.world, *result.states]
            [s.x for s in states], [s.y for s in states], [s.direction for s in states]
        [ACTIONS.index(s.name) for s in walk(program.body) if isinstance(s, Action)]
        programs.append(format_program(program, "lines"))
    return programs


def _timed(function, *args) -> tuple[float, float, object]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = function(*args)
    return time.process_time() - cpu, time.perf_counter() - wall, out


def bench_extended(old_programs: int, new_programs: int, seed: int) -> dict:
    """CPU and wall time per program of the per-example path (old), the NumPy engine and, when numba
    is installed, the numba engine, on the same examples; the engines' outputs are compared."""
    config = CorpusConfig(num_programs=max(old_programs, new_programs), extended=True, seed=seed)
    index = np.arange(new_programs)
    lengths, worlds = program_lengths(config, 0, new_programs), sample_worlds(config, 0, new_programs)
    engines = ["numpy"] + (["numba"] if _compiled() is not None else [])
    out, first, arrays = {}, {}, {}
    for engine in engines:  # the first call: numba compiles, or loads its cache
        first[engine] = _timed(extended_examples, config, index[:64], lengths[:64],
                               worlds.examples(np.arange(64), config.num_pairs), engine)[1]
    for engine in engines:
        cpu, wall, arrays[engine] = _timed(extended_examples, config, index, lengths, worlds, engine)
        out[engine] = dict(us=1e6 * cpu / new_programs, wall_us=1e6 * wall / new_programs, first_call_s=first[engine])
    if "numba" in arrays:
        a, b = arrays["numpy"], arrays["numba"]
        out["same"] = a["programs"] == b["programs"] and all(np.array_equal(a[k], b[k]) for k in a if k != "programs")
    texts = arrays["numpy"]["programs"]
    out["control_flow"] = float(np.mean(["if" in p or "while" in p or "repeat" in p for p in texts]))
    cpu, wall, _ = _timed(extended_per_example, config, 0, old_programs)
    out["old"] = dict(us=1e6 * cpu / old_programs, wall_us=1e6 * wall / old_programs)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_size", type=int, default=200_000, help="training programs (validation, test: 10k)")
    parser.add_argument("--workers", type=int, default=2, help="processes (num_proc) for (a)-(c)")
    parser.add_argument("--extended_old", type=int, default=1000, help="(d): programs through the per-example path")
    parser.add_argument("--extended_new", type=int, default=16384, help="(d): programs through the batched path")
    parser.add_argument("--skip", nargs="*", default=[], choices=["generator", "load_karel", "export", "extended"])
    args = parser.parse_args(argv)

    rows = args.train_size + 20_000
    print(f"paper config, train_size={args.train_size:,} (+ 10k validation + 10k test), {args.workers} worker(s); "
          f"1M = the full {PAPER_EXAMPLES:,}-program corpus")
    print("| path | wall | CPU | programs/s | vs raw generator | 1M time | peak RSS: main / largest worker |")
    print("|---|---|---|---|---|---|---|")
    base = None
    folder = tempfile.mkdtemp(prefix="bench_corpus_")  # load_karel's cache, then the export's input
    for task in ("generator", "load_karel", "export"):
        if task in args.skip:
            continue
        r = run_child(task, args.train_size, args.workers, folder)
        rate = r["rows"] / r["wall"]
        base = rate if task == "generator" else base
        ratio = "1.00x" if task == "generator" else (f"{base / rate:.2f}x slower" if base else "-")
        scale = "measured" if rows == PAPER_EXAMPLES else "extrapolated"
        print(f"| {task} | {r['wall']:.1f} s | {r['cpu']:.1f} s | {rate:,.0f} | {ratio} | "
              f"{PAPER_EXAMPLES / rate:.1f} s ({scale}) | {r['rss_main']:.0f} / {r['rss_worker']:.0f} MiB |")
    shutil.rmtree(folder, ignore_errors=True)
    if "extended" not in args.skip:
        r = bench_extended(args.extended_old, args.extended_new, seed=1)
        print(f"\nextended language, {args.extended_new:,} programs per engine ({args.extended_old:,} per example), "
              f"control flow in {100 * r['control_flow']:.0f}% of programs; same examples from both engines: "
              f"{r.get('same', 'numba not installed')}")
        print("| path | CPU per program | wall per program | vs per-example (CPU) | first call |")
        print("|---|---|---|---|---|")
        old = r["old"]
        print(f"| per-example (baseline) | {old['us']:,.0f} us | {old['wall_us']:,.0f} us | 1.0x | - |")
        for engine in ("numpy", "numba"):
            if engine in r:
                e = r[engine]
                print(f"| {engine} engine | {e['us']:,.1f} us | {e['wall_us']:,.1f} us | {old['us'] / e['us']:.1f}x | "
                      f"{e['first_call_s']:.2f} s |")

if __name__ == "__main__":
    main()
