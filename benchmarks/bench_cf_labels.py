"""Benchmark: the control-flow reading of a checkpoint with its rows labelled at each checkpoint against
labelled once (karel_hf.reproduce_control_flow.label_split, LOG.md E84).

`karel-hf reproduce --preset cpu-cf` reads the same probe-training and test rows at every checkpoint.
Their labels (each statement prefix run under the real meaning and every alternative) and token
positions do not depend on the model; before E84 they were made again for each checkpoint. This script
reads --steps checkpoints of a finished extended-language run both ways, alternating over --rounds in
one process, and prints each way's wall time for those checkpoints (labelling once included), their
ratio, and whether every number came out the same.

    OMP_NUM_THREADS=2 python benchmarks/bench_cf_labels.py runs/cpu-cf --steps 1600,8000,16000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished `karel-hf reproduce --preset cpu-cf` output folder")
    parser.add_argument("--steps", default="1600,8000,16000", help="checkpoints of the run's own stage")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from karel_hf.reproduce import _data_rows, prompt_pairs, reproduce_preset
    from karel_hf.reproduce_control_flow import label_split, read_states
    from karel_hf.utils import model_checkpoints

    config = json.loads((args.run / "reproduce_config.json").read_text())
    preset = reproduce_preset(config["preset"])
    found = dict(model_checkpoints(args.run / "model"))
    steps = [int(s) for s in args.steps.split(",")]
    missing = [s for s in steps if s not in found]
    if missing:
        raise SystemExit(f"bench_cf_labels.py: error: no checkpoint at step(s) {missing} in {args.run / 'model'}")
    test_rows, probe_rows, _ = _data_rows(args.run / "model", preset)
    pairs = prompt_pairs(test_rows)
    models = {s: (AutoModelForCausalLM.from_pretrained(found[s]).eval(), AutoTokenizer.from_pretrained(found[s]))
              for s in steps}

    def each_time() -> tuple[float, list]:
        start = time.perf_counter()
        out = [read_states(m, t, probe_rows, test_rows, preset, pairs, False) for m, t in models.values()]
        return time.perf_counter() - start, out

    def once() -> tuple[float, list]:
        start = time.perf_counter()
        labelled = label_split(found[steps[-1]], probe_rows, test_rows, pairs)
        out = [read_states(m, t, probe_rows, test_rows, preset, pairs, False, labelled=labelled)
               for m, t in models.values()]
        return time.perf_counter() - start, out

    times = {"each checkpoint": [], "once": []}
    results = {}
    for _ in range(args.rounds):
        for name, way in (("each checkpoint", each_time), ("once", once)):
            seconds, results[name] = way()
            times[name].append(seconds)
    same = json.dumps(results["each checkpoint"], sort_keys=True) == json.dumps(results["once"], sort_keys=True)
    base = min(times["each checkpoint"])
    print(f"{len(steps)} checkpoints of {args.run}, {len(test_rows)} test specs, {len(probe_rows)} probe-training "
          f"specs, torch threads {torch.get_num_threads()}, probe threads {preset.probe_threads}")
    for name, values in times.items():
        print(f"labelled {name}: best {min(values):.1f} s of {', '.join(f'{v:.1f}' for v in values)}; "
              f"{base / min(values):.2f}x")
    print(f"every number the same: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
