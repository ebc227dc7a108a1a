"""Rotation probe on a finished run: is the rotation the prefix has made (the direction after it
minus the initial direction, mod 4) linearly readable where the direction itself is not?

The v1 label at offset -1 is the robot's direction d after the prefix, in spec input 0. In a
straight-line program d = d0 + r (mod 4), where d0 is the initial direction (a prompt fact) and r
the rotation the prefix's turns add up to. If the hidden state holds r, a linear probe on
[state, one-hot d0] cannot produce d (a sum mod 4 is not linear in the two codes), while an MLP can:
this script measures, per checkpoint, on the run's own teacher-forced traces (the layer-mean
`state` of each program token, cached in RUN/traces like probe_study.py's):

- `linear_d`, `linear_d_d0`, `mlp_d_d0`: the direction from the state, and from [state, d0];
- `lookup_d0`: the best any function of d0 alone does (the prompt's share);
- `linear_r`, `mlp_r`, `majority_r`: the rotation r from the state, and the most frequent r;
- `linear_r_<alt>`, `majority_r_<alt>`: the rotation under each alternative semantics
  (karel_hf.karel.semantics), on the same states; `best_informative_alternative` leaves out those
  whose r is a function of the original's (swap: -r), as the conditional intervention does.

Every training row of the run's probe-training specs fits the probes (standardised features,
scikit-learn's LogisticRegression, or an MLP with one hidden layer of 256); every test row scores.

    python benchmarks/emergence/rotation_probe.py RUNS/p2l6-cpu-plw4-lr05-16k-s0-bf16 --steps 0,16000
    python benchmarks/emergence/rotation_probe.py RUN --steps 16000 --features state,layer_1,layer_2,layer_3,layer_4
    python benchmarks/emergence/rotation_probe.py RUN --steps 16000 --features layer_4 --mode generated
    python benchmarks/emergence/rotation_probe.py RUN --steps 0 --features layer_4 --programs_from 16000

`--mode generated` reads the programs the checkpoint writes itself; `--programs_from STEP` the
programs checkpoint STEP wrote, teacher-forced (probe_study.py's options).

Writes RUN/rotation_probe.json (or --output) and prints a markdown table; over >= 3 checkpoints of
a run with the analyse stage's results.json, also R^2 of generation accuracy on `linear_r` and on
the margin over the best alternative.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OFFSET_COLUMN = "direction_0_prev1"  # the direction after the prefix the model has read (offset -1)
INITIAL_COLUMN = "direction_0_initial"


def rotation(direction: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """The rotation from `initial` to `direction`, in quarter turns, 0..3 (directions are 0..3 in
    the order N, E, S, W).

    >>> rotation(np.array([0, 3, 1]), np.array([1, 1, 1])).tolist()
    [3, 2, 0]
    """
    return (np.asarray(direction) - np.asarray(initial)) % 4


def rows(table: dict, column: str = OFFSET_COLUMN, feature: str = "state") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, direction, initial direction) of the rows where both labels are defined (>= 0);
    `feature` is the traces' layer-mean `state` or one `layer_<i>`."""
    direction, initial = np.asarray(table[column]), np.asarray(table[INITIAL_COLUMN])
    keep = (direction >= 0) & (initial >= 0)
    return np.asarray(table[feature], dtype=np.float32)[keep], direction[keep], initial[keep]


def fit_score(kind: str, x, y, x_test, y_test) -> float:
    """Test accuracy of a linear or one-hidden-layer MLP probe fitted on (x, y); with one class in
    `y` (e.g. programs without a turn) the probe can only answer it.

    >>> fit_score("linear", np.zeros((3, 2)), np.array([1, 1, 1]), np.zeros((2, 2)), np.array([1, 0]))
    0.5
    """
    if len(np.unique(y)) < 2:
        return float(np.mean(np.asarray(y_test) == y[0]))
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "linear":
        probe = LogisticRegression(max_iter=2000)
    else:
        probe = MLPClassifier(hidden_layer_sizes=(256,), max_iter=500, early_stopping=True, random_state=0)
    model = make_pipeline(StandardScaler(), probe).fit(x, y)
    return float(np.mean(model.predict(x_test) == y_test))


def majority(y, y_test) -> float:
    """Test accuracy of always answering the most frequent training label."""
    return float(np.mean(y_test == np.bincount(y, minlength=4).argmax()))


def lookup(keys, y, keys_test, y_test) -> float:
    """Test accuracy of the best function of `keys` alone, learnt on the training rows."""
    table = {k: np.bincount(y[keys == k], minlength=4).argmax() for k in np.unique(keys)}
    fallback = np.bincount(y, minlength=4).argmax()
    return float(np.mean([table.get(k, fallback) == t for k, t in zip(keys_test, y_test)]))


def score(train: dict, test: dict, feature: str = "state") -> dict:
    """Every number of the module docstring for one checkpoint's traces, read from `feature`."""
    from karel_hf.karel.semantics import ALTERNATIVE_SEMANTICS
    from karel_hf.probing.labels import label_column

    x, d, d0 = rows(train, feature=feature)
    xt, dt, d0t = rows(test, feature=feature)
    onehot = np.eye(4, dtype=np.float32)
    r, rt = rotation(d, d0), rotation(dt, d0t)
    out = {"num_train": int(len(d)), "num_test": int(len(dt)),
           "linear_d": fit_score("linear", x, d, xt, dt), "lookup_d0": lookup(d0, d, d0t, dt),
           "linear_d_d0": fit_score("linear", np.hstack([x, onehot[d0]]), d, np.hstack([xt, onehot[d0t]]), dt),
           "mlp_d_d0": fit_score("mlp", np.hstack([x, onehot[d0]]), d, np.hstack([xt, onehot[d0t]]), dt),
           "linear_r": fit_score("linear", x, r, xt, rt), "mlp_r": fit_score("mlp", x, r, xt, rt),
           "majority_r": majority(r, rt)}
    informative = {}
    for name in ALTERNATIVE_SEMANTICS:
        column = label_column("direction_0", -1, name)
        xa, da, d0a = rows(train, column, feature)
        xat, dat, d0at = rows(test, column, feature)
        ra, rat = rotation(da, d0a), rotation(dat, d0at)
        out[f"linear_r_{name}"] = fit_score("linear", xa, ra, xat, rat)
        out[f"majority_r_{name}"] = majority(ra, rat)
        # an alternative whose rotation is a function of the original's (swap: -r) says nothing
        # about which of the two the state holds: left out of the best alternative
        both = (np.asarray(train[OFFSET_COLUMN]) >= 0) & (np.asarray(train[column]) >= 0) & (np.asarray(train[INITIAL_COLUMN]) >= 0)
        initial = np.asarray(train[INITIAL_COLUMN])[both]
        original = rotation(np.asarray(train[OFFSET_COLUMN])[both], initial)
        alternative = rotation(np.asarray(train[column])[both], initial)
        if lookup(original, alternative, original, alternative) < 0.95:
            informative[name] = out[f"linear_r_{name}"]
    best = max(informative, key=informative.get) if informative else None
    out["best_informative_alternative"] = best
    out["linear_r_minus_best_alternative"] = out["linear_r"] - informative[best] if best else float("nan")
    return out


def accuracy_regressions(run: Path, rows: list[dict]) -> dict:
    """Generation accuracy (RUN/results.json, per checkpoint) regressed on `linear_r` and on
    `linear_r_minus_best_alternative` across the measured checkpoints (>= 3 of them;
    `karel_hf.probing.analysis.regress`); empty without the analyse stage's results."""
    from karel_hf.probing.analysis import regress

    try:
        accuracy = {c["step"]: c["generation"]["accuracy"]
                    for c in json.loads((run / "results.json").read_text())["checkpoints"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    measured = [r for r in rows if r["step"] in accuracy]
    if len(measured) < 3:
        return {}
    return {key: regress([accuracy[r["step"]] for r in measured], [r[key] for r in measured])
            for key in ("linear_r", "linear_r_minus_best_alternative")}


def _probe_study():
    """benchmarks/emergence/probe_study.py, imported as a module (its `written_programs`)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("emergence_probe_study", HERE / "probe_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a `karel-hf reproduce` output folder (model/checkpoint-N, reproduce_config.json)")
    parser.add_argument("--steps", default="", help="checkpoint steps, comma-separated, or all (default: the first and the last)")
    parser.add_argument("--features", default="state",
                        help="comma-separated: state (the layer mean, the default) and/or layer_0 .. layer_<n_layer>")
    parser.add_argument("--mode", default="teacher_forced", choices=("teacher_forced", "generated"),
                        help="the reference programs teacher-forced (default) or the checkpoint's own (probe_study.py's)")
    parser.add_argument("--programs_from", type=int, default=None, metavar="STEP",
                        help="teacher-force the programs checkpoint STEP wrote (probe_study.py's; with --steps 0: "
                             "the untrained control for --mode generated)")
    parser.add_argument("--output", type=Path, default=None, help="default: RUN/rotation_probe.json")
    args = parser.parse_args(argv)
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    bad = [f for f in features if f != "state" and not (f.startswith("layer_") and f[6:].isdigit())]
    if not features or bad:
        parser.error(f"--features: expected state and/or layer_<i>, got {args.features!r}")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from karel_hf.probing.measure import load_traces
    from karel_hf.probing.traces import build_trace_dataset
    from karel_hf.reproduce import _data_rows, model_checkpoints, prompt_pairs, reproduce_preset, teacher_forced_min_length

    run = args.run
    try:
        preset = reproduce_preset(str(json.loads((run / "reproduce_config.json").read_text())["preset"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        parser.error(f"{run} is not a reproduction folder with a readable reproduce_config.json and preset ({err})")
    found = dict(model_checkpoints(run / "model")) if (run / "model").is_dir() else {}
    if not found:
        parser.error(f"{run} has no model/checkpoint-N folders (run the train stage first)")
    try:
        steps = sorted(found) if args.steps == "all" else [int(s) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--steps: expected comma-separated integers or 'all', got {args.steps!r}")
    steps = steps or [min(found), max(found)]
    missing = [s for s in steps if s not in found]
    if missing:
        parser.error(f"no checkpoint for step(s) {missing} in {run / 'model'}; found {sorted(found)}")
    test_rows, probe_rows, _ = _data_rows(run / "model", preset)
    min_length = teacher_forced_min_length(preset, test_rows)
    if args.programs_from is not None:
        try:
            test_rows, probe_rows = _probe_study().written_programs(run, preset, found, args.programs_from,
                                                                    (test_rows, probe_rows), prompt_pairs(test_rows), args.mode)
        except ValueError as err:
            parser.error(str(err))
        min_length = 1  # every program, as the generated traces
    common = dict(batch_size=preset.batch_size, cache_dir=str(run / "traces"), num_prompt_pairs=prompt_pairs(test_rows),
                  mode=args.mode, min_length=min_length,
                  layers=tuple(sorted({int(f[6:]) for f in features if f != "state"})), progress=False)
    results = []
    print("| step | feature | linear d | lookup d0 | linear [state, d0] -> d | MLP [state, d0] -> d | linear r | majority r "
          "| best alternative's linear r | linear r - best alternative |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for step in steps:
        path = found[step]
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="eager").eval()
        if max(common["layers"], default=0) > model.config.num_hidden_layers:
            parser.error(f"--features: the model has layers 0..{model.config.num_hidden_layers}")
        extra = dict(common, fingerprint_extra={"step": step})
        train = load_traces(build_trace_dataset(model, tokenizer, probe_rows, **extra))
        test = load_traces(build_trace_dataset(model, tokenizer, test_rows, **extra))
        for feature in features:
            row = {"step": step, "feature": feature, **score(train, test, feature)}
            results.append(row)
            best = row["best_informative_alternative"]
            print(f"| {step} | {feature} | {100 * row['linear_d']:.1f} | {100 * row['lookup_d0']:.1f} "
                  f"| {100 * row['linear_d_d0']:.1f} | {100 * row['mlp_d_d0']:.1f} | {100 * row['linear_r']:.1f} "
                  f"| {100 * row['majority_r']:.1f} | {100 * row[f'linear_r_{best}']:.1f} ({best}) "
                  f"| {100 * row['linear_r_minus_best_alternative']:+.1f} |"
                  if best else f"| {step} | {feature} | ... no informative alternative |", flush=True)
    regressions = {}  # keyed by measure, with " (layer_<i>)" after it for a single layer
    for feature in features:
        fits = accuracy_regressions(run, [r for r in results if r["feature"] == feature])
        regressions.update({key if feature == "state" else f"{key} ({feature})": fit for key, fit in fits.items()})
    for key, fit in regressions.items():
        print(f"accuracy ~ {key}: R^2 {fit['r2']:.2f} over {fit['n']} checkpoints (slope {fit['slope']:.2f})")
    output = args.output or run / "rotation_probe.json"
    output.write_text(json.dumps({"run": str(run), "argv": sys.argv[1:] if argv is None else list(argv),
                                  "mode": args.mode, "programs_from": args.programs_from, "rows": results,
                                  "regressions": regressions}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
