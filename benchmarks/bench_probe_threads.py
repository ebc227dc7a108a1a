"""Benchmark: the probe fitting of one checkpoint's evaluation with 1 BLAS thread against more.

`karel-hf reproduce`'s evaluate stage fits a few hundred small scikit-learn probes per checkpoint
(logistic regressions on 2,000 x 128..1,000 features). This script runs the reproduction's own
`evaluate_checkpoint` on one checkpoint of a finished run several times in one process, with the
BLAS / OpenMP thread pools limited (threadpoolctl) to each of --threads in turn (alternating over
--rounds), and prints the probe stage's wall and the process's CPU time per setting, the ratio to
the first setting, and whether every probe number came out the same. The traces come from the
run's cache (built once, on the first call, if missing), so only the probes differ.

    OMP_NUM_THREADS=2 python benchmarks/bench_probe_threads.py runs/cpu --step 3200
    python benchmarks/bench_probe_threads.py                  # on a tiny reproduction made first
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _evaluate(run: Path, step: int, threads: int, out: Path) -> tuple[float, float, dict]:
    from threadpoolctl import threadpool_limits

    from karel_hf.reproduce import _data_rows, evaluate_checkpoint, model_checkpoints, reproduce_preset

    preset = reproduce_preset(json.loads((run / "reproduce_config.json").read_text())["preset"])
    found = dict(model_checkpoints(run / "model"))
    (out / "evaluations").mkdir(parents=True, exist_ok=True)
    (run / "traces").mkdir(exist_ok=True)
    if not (out / "traces").is_symlink():
        (out / "traces").symlink_to((run / "traces").resolve(), target_is_directory=True)
    data = _data_rows(run / "model", preset)
    cpu = time.process_time()
    with threadpool_limits(limits=threads):
        result = evaluate_checkpoint(step, found[step], data, out, preset, {})
    return result["timings_seconds"]["probes"], time.process_time() - cpu, result["probes"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="a `karel-hf reproduce` folder (default: a tiny one, made first)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the last)")
    parser.add_argument("--threads", default="1,2", help="thread-pool limits to compare, the first is the baseline")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    from karel_hf.reproduce import main as reproduce, model_checkpoints

    work = Path(tempfile.mkdtemp(prefix="bench_probe_threads_"))
    run = args.run
    if run is None:
        run = work / "tiny"
        reproduce(["--preset", "tiny", "--output_dir", str(run)])
    step = args.step if args.step is not None else max(dict(model_checkpoints(run / "model")))
    settings = list(dict.fromkeys(int(t) for t in args.threads.split(",")))  # each setting once
    print(f"{run}, step {step}, cpu count {os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    _evaluate(run, step, settings[0], work / "warmup")  # builds the traces if the run has none cached
    times = {t: [] for t in settings}
    probes = {}
    for r in range(args.rounds):
        for t in settings if r % 2 == 0 else settings[::-1]:
            wall, cpu, probes[t] = _evaluate(run, step, t, work / f"t{t}-r{r}")
            times[t].append((wall, cpu))
            print(f"  round {r}: {t} thread(s): probes {wall:.1f} s wall, evaluation {cpu:.1f} s CPU", flush=True)
    base = min(w for w, _ in times[settings[0]])
    print("| threads | probe stage wall (best) | CPU | vs first | same probe numbers as first |")
    print("|---|---|---|---|---|")
    for t in settings:
        wall, cpu = min(times[t])
        same = json.dumps(probes[t], sort_keys=True) == json.dumps(probes[settings[0]], sort_keys=True)
        print(f"| {t} | {wall:.1f} s | {cpu:.1f} s | {wall / base:.2f}x | {same} |")


if __name__ == "__main__":
    main()
