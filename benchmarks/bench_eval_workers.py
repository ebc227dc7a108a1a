"""Benchmark: the evaluate stage with checkpoints in parallel worker processes against one process.

`karel-hf reproduce`'s evaluate stage decodes and probes every checkpoint (about 144 s each for the
`cpu` preset on one AVX2 thread). With `eval_workers: N` it evaluates N checkpoints at once, each
in a spawned process with 1/N of the torch threads. This script runs the real evaluate stage on
some checkpoints of a finished run once per setting of --workers (each into a fresh folder, so
every setting decodes its traces afresh), and prints the stage's wall time, the ratio to the first
setting, and whether every number of every file it wrote (timings aside) equals the first setting's.

On an extended-language run (the `cpu-cf` preset's) the stage is karel_hf.reproduce_control_flow's:
its earlier curriculum stages are linked in too, and besides the checkpoints it reads the untrained
model, the alternatives on more test specs and the trajectory, as the preset asks.

    python benchmarks/bench_eval_workers.py runs/cpu --checkpoints 4
    python benchmarks/bench_eval_workers.py runs/cpu-cf --checkpoints 11   # the whole evaluate stage
    python benchmarks/bench_eval_workers.py                  # on a tiny reproduction made first
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path


def _stage(run: Path, steps: list[int], workers: int, out: Path) -> tuple[float, dict]:
    """The evaluate stage on `steps` of `run` into `out` (checkpoints linked, nothing cached); every
    file it wrote, timings and the folder's name aside."""
    from karel_hf.reproduce import CURRICULUM_DIR, evaluate_stage, extended_language, model_checkpoints, reproduce_preset

    preset = reproduce_preset(json.loads((run / "reproduce_config.json").read_text())["preset"])
    preset = dataclasses.replace(preset, eval_workers=workers)
    found = dict(model_checkpoints(run / "model"))
    (out / "model").mkdir(parents=True)
    for step in steps:
        (out / "model" / f"checkpoint-{step}").symlink_to(found[step].resolve(), target_is_directory=True)
    if (run / CURRICULUM_DIR).is_dir():
        (out / CURRICULUM_DIR).symlink_to((run / CURRICULUM_DIR).resolve(), target_is_directory=True)
    start = time.perf_counter()
    if extended_language(out / "model", preset):
        from karel_hf.reproduce_control_flow import evaluate_stage as flow_stage

        flow_stage(out, out / "model", preset)
    else:
        evaluate_stage(out, out / "model", preset)
    wall = time.perf_counter() - start
    numbers = {}
    for path in sorted((out / "evaluations").rglob("*.json")):
        entry = json.loads(path.read_text())
        for part in (entry, entry.get("trained"), entry.get("untrained")):
            if isinstance(part, dict):
                part.pop("timings_seconds", None)
        numbers[str(path.relative_to(out))] = json.dumps(entry, sort_keys=True).replace(str(out), "OUT")
    return wall, numbers


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="a `karel-hf reproduce` folder (default: a tiny one, made first)")
    parser.add_argument("--checkpoints", type=int, default=4, help="how many checkpoints, the last ones")
    parser.add_argument("--workers", default="1,2", help="eval_workers settings to compare, the first is the baseline")
    args = parser.parse_args(argv)
    import torch

    from karel_hf.reproduce import main as reproduce, model_checkpoints

    work = Path(tempfile.mkdtemp(prefix="bench_eval_workers_"))
    run = args.run
    if run is None:
        run = work / "tiny"
        reproduce(["--preset", "tiny", "--output_dir", str(run), "--stages", "train"])
    steps = [s for s, _ in model_checkpoints(run / "model")][-args.checkpoints:]
    settings = list(dict.fromkeys(int(w) for w in args.workers.split(",")))
    print(f"{run}, steps {steps}, cpu count {os.cpu_count()}, torch threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    results = {}
    for w in settings:
        results[w] = _stage(run, steps, w, work / f"workers{w}")
        print(f"  {w} worker(s): {results[w][0]:.1f} s", flush=True)
    base_wall, base_numbers = results[settings[0]]
    print("| eval_workers | stage wall | per checkpoint | vs first | same numbers as first |")
    print("|---|---|---|---|---|")
    for w in settings:
        wall, numbers = results[w]
        print(f"| {w} | {wall:.1f} s | {wall / len(steps):.1f} s | {base_wall / wall:.2f}x faster | "
              f"{numbers == base_numbers} ({len(numbers)} files) |")


if __name__ == "__main__":
    main()
