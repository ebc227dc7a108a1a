"""The trajectory reading of `karel-hf reproduce` (karel_hf.reproduce_control_flow.read_trajectory) on
a curriculum trained by run.py: accuracy and the conditional gain at -1 at every second checkpoint of
its last two stages, and the regression of accuracy on the gain over them (LOG.md E84).

run.py writes each stage to its own RUNS/<spec>-s<seed>-<precision>/model; `karel-hf reproduce`
expects DIR/stages/<i>-<stage preset>/ and DIR/model. This script links the runs' model folders
into that layout under --output_dir and calls the command's own functions with the preset's sizes,
so the numbers are the ones `karel-hf reproduce --preset cpu-cf` would give for those checkpoints:

    OMP_NUM_THREADS=1 python benchmarks/emergence/trajectory.py \\
        RUNS/p2l6-cpu-ext-16k-ho-ni256-s1-bf16 RUNS/p2l6-cpu-needs-cf-from-ext-ho-ni256-s1-bf16 \\
        RUNS/p2l6-cpu-needs-cf-32k-ho-ni256-s1-bf16 --output_dir RUNS/e84-s1

The runs are given in the curriculum's order, one per stage of the preset's curriculum and its own
stage. Writes DIR/evaluations/trajectory/*.json and DIR/trajectory.json (`trajectory_results`) and
prints the checkpoints and R^2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def link_layout(runs: list[Path], output_dir: Path, preset) -> Path:
    """DIR/stages/<i>-<stage>/ and DIR/model as links to the runs' model folders; returns DIR/model."""
    from karel_hf.reproduce import curriculum_dirs

    stages = curriculum_dirs(output_dir, preset)
    if len(runs) != len(stages) + 1:
        raise SystemExit(f"trajectory.py: error: preset {preset.train_preset} has {len(stages) + 1} stages, "
                         f"got {len(runs)} runs")
    for run, folder in zip(runs, [f for _, f in stages] + [output_dir / "model"]):
        source = (run / "model").resolve()
        if not source.is_dir():
            raise SystemExit(f"trajectory.py: error: {run} has no model folder")
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.is_symlink() and folder.resolve() != source:
            raise SystemExit(f"trajectory.py: error: {folder} links to {folder.resolve()}, not {source}")
        if not folder.exists():
            folder.symlink_to(source, target_is_directory=True)
    return output_dir / "model"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run.py run folders, in the curriculum's order")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--preset", default="cpu-cf", help="the reproduce preset whose sizes are used")
    parser.add_argument("--test_specs", type=int, default=None, help="the trajectory's test specs (preset's value)")
    args = parser.parse_args(argv)

    import dataclasses

    from karel_hf.reproduce import reproduce_preset
    from karel_hf.reproduce_control_flow import longer_split, read_trajectory, trajectory_results
    from karel_hf.utils import atomic_write_json, model_checkpoints

    preset = reproduce_preset(args.preset)
    if args.test_specs is not None:
        preset = dataclasses.replace(preset, trajectory_test_specs=args.test_specs)
    if not preset.trajectory_test_specs:
        raise SystemExit(f"trajectory.py: error: preset {args.preset} reads no trajectory; pass --test_specs N")
    model_dir = link_layout(args.runs, args.output_dir, preset)
    last = model_checkpoints(model_dir)[-1][1]
    read_trajectory(args.output_dir, model_dir, preset,
                    lambda n: longer_split(model_dir, preset, n, last))
    found = trajectory_results(args.output_dir, preset)
    atomic_write_json(args.output_dir / "trajectory.json", found)
    for e in found["checkpoints"]:
        gains = {p: e["reading"][p]["conditional_gain"]["value"] for p in ("all_rows", "world_dependent")}
        print(f"{e['stage']} {e['step']}: accuracy {100 * e['generation']['accuracy']:.1f}%, gain every statement "
              f"{100 * gains['all_rows']:+.1f}, world-dependent {100 * gains['world_dependent']:+.1f}")
    print(json.dumps({p: (f or {}).get("r2") for p, f in found["regressions"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
