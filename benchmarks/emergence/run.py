"""Run one emergence experiment from a JSON spec: train with the product's training path, measure the
checkpoints (measure.py), append one row to results.md and results.jsonl.

    python benchmarks/emergence/run.py benchmarks/emergence/specs/NAME.json [--seed 1] [--precision fp32]
        [--skip_train] [--full_every 4]

Spec fields (see specs/*.json):
    name, about            what and why
    corpus                 {"config": "cpu", **load_karel overrides}
    base_preset            a karel_hf preset name or file the train fields override (default "cpu")
    train                  preset fields (position_init, block_size, max_steps, save_steps, ...)
    init_from              optional: "<run dir>/checkpoint-N" (or a spec name + step, see below) to continue
                           from (curriculum); passed as --model_name_or_path
    seed, precision        0 / "bf16" (bf16 autocast where fast) or "fp32"
    measure                {"probe_train": 3000, "probe_test": 1000, "gen_specs": 256, "light_offsets": [-1]}

Every checkpoint gets the light measurement (generation accuracy + the offset -1 conditional gain,
linear probe on the layer mean, enough for the regression); step 0, the last checkpoint and every
`full_every`-th one get the full one (offsets -2..+2, controls, alternatives, MLP, relative label).
Run folders: runs/emergence/<name>-s<seed>-<precision>/ (train/, measure.jsonl, preset.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import measure as M  # noqa: E402

RESULTS_MD = HERE / "results.md"
RESULTS_JSONL = HERE / "results.jsonl"
RUNS = ROOT / "runs" / "emergence"


def machine() -> dict:
    flags, model = set(), platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": model, "amx": "amx_tile" in flags, "avx512_bf16": "avx512_bf16" in flags, "avx2": "avx2" in flags,
            "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count(), "cores": os.cpu_count()}


def overrides_string(corpus: dict) -> str:
    parts = []
    for k, v in corpus.items():
        if k == "config":
            continue
        if isinstance(v, (list, tuple, dict)):
            raise ValueError(f"corpus field {k}: only scalar overrides can be passed to karel-hf train")
        parts.append(f"{k}={v}")
    return ",".join(parts)


def preset_values(spec: dict, seed: int, precision: str) -> dict:
    from karel_hf.training import load_preset

    values = load_preset(spec.get("base_preset", "cpu"))
    values.update(spec.get("train", {}))
    corpus = spec["corpus"]
    values["dataset_config"] = corpus.get("config", "cpu")
    values["dataset_overrides"] = overrides_string(corpus) or None
    values["seed"] = seed
    values["report_to"] = []
    values["generation_eval_steps"] = spec.get("train", {}).get("generation_eval_steps", 0)
    if precision == "fp32":
        values["bf16_auto"], values["bf16"] = False, False
    else:
        values["bf16_auto"] = True
    if spec.get("init_from"):
        values["model_name_or_path"] = str(resolve_init(spec["init_from"], seed, precision))
    return values


def resolve_init(init_from, seed: int, precision: str) -> Path:
    """A checkpoint path, or {"spec": name, "step": N} (the same seed and precision's run)."""
    if isinstance(init_from, str):
        return Path(init_from)
    folder = RUNS / f"{init_from['spec']}-s{seed}-{precision}" / "train"
    step = init_from.get("step")
    if step is None:
        steps = sorted(int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*"))
        step = steps[-1]
    return folder / f"checkpoint-{step}"


def checkpoints(train_dir: Path) -> list[Path]:
    found = [(int(p.name.split("-")[1]), p) for p in train_dir.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    return [p for _, p in sorted(found)]


def train(spec: dict, run_dir: Path, seed: int, precision: str) -> dict:
    values = preset_values(spec, seed, precision)
    preset = run_dir / "preset.json"
    preset.write_text(json.dumps({"_about": spec.get("about", ""), **values}, indent=1) + "\n")
    train_dir = run_dir / "train"
    cmd = [str(Path(sys.executable).parent / "karel-hf"), "train", "--preset", str(preset), "--output_dir", str(train_dir)]
    if checkpoints(train_dir):
        cmd += ["--resume_from_checkpoint", "last"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1")}
    import resource

    t0, r0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(run_dir / "train.log", "a") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
    wall = time.time() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)  # includes corpus generation
    state = json.loads((train_dir / "trainer_state.json").read_text())
    runtime = next((e["train_runtime"] for e in reversed(state["log_history"]) if "train_runtime" in e), None)
    tokens = state.get("num_input_tokens_seen")
    info = {"wall_s": wall, "cpu_s": cpu, "train_runtime_s": runtime, "tokens": tokens, "steps": state.get("global_step")}
    (run_dir / "train_info.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def unseen_fraction(corpus: dict, n_test: int) -> dict:
    from karel_hf.data.builder import load_karel

    c = dict(corpus)
    name = c.pop("config", "cpu")
    ds = load_karel(name, **c)
    train = set(ds["train"]["program"])
    test = ds["test"].select(range(min(n_test, len(ds["test"]))))["program"]
    unseen = sum(p not in train for p in test)
    return {"unseen_fraction": unseen / len(test), "distinct_train_programs": len(train),
            "distinct_test_programs": len(set(test)), "num_test": len(test)}


def measure_run(spec: dict, run_dir: Path, full_every: int) -> list[dict]:
    m = spec.get("measure", {})
    budget = M.Budget(probe_train=m.get("probe_train", 3000), probe_test=m.get("probe_test", 1000),
                      gen_specs=m.get("gen_specs", 256))
    light = M.Budget(**{**budget.__dict__, "offsets": tuple(m.get("light_offsets", [-1])), "mlp_offsets": (),
                        "relative_offsets": (), "semantics": ("original",),
                        "controls": False})
    out_path = run_dir / "measure.jsonl"
    done = {}
    if out_path.exists():
        for line in out_path.read_text().splitlines():
            r = json.loads(line)
            done[(r["step"], r["mode"])] = r
    ckpts = checkpoints(run_dir / "train")
    if m.get("every"):  # measure only every N-th checkpoint (and the last)
        ckpts = [c for i, c in enumerate(ckpts) if i % m["every"] == 0 or i == len(ckpts) - 1]
    if not ckpts:
        raise SystemExit(f"no checkpoints in {run_dir / 'train'}")
    measurer = None
    results = []
    for i, ck in enumerate(ckpts):
        step = M._step_of(ck)
        full = i == 0 or i == len(ckpts) - 1 or (full_every and i % full_every == 0)
        mode = "full" if full else "light"
        if (step, mode) in done:
            results.append(done[(step, mode)])
            continue
        if measurer is None:
            measurer = M.Measurer(spec["corpus"], budget)
        measurer.budget = budget if full else light
        r = measurer.measure(ck)
        r["mode"] = mode
        print(M.summary_line(r), flush=True)
        with open(out_path, "a") as f:
            f.write(json.dumps(r) + "\n")
        results.append(r)
    return results


def r_squared(x, y) -> float | None:
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1] ** 2)


def summarise(spec: dict, results: list[dict], seed: int, precision: str, train_info: dict, unseen: dict) -> dict:
    key = "linear/mean"
    by_step = sorted(results, key=lambda r: r["step"])
    final = [r for r in by_step if r["mode"] == "full"][-1]
    first = by_step[0]
    steps = [r["step"] for r in by_step]
    gains = [r["probes"]["-1"][key]["conditional_gain"] for r in by_step if key in r["probes"].get("-1", {})]
    accs = [r["generation"]["accuracy"] for r in by_step if key in r["probes"].get("-1", {})]
    row = {
        "spec": spec["name"], "seed": seed, "precision": precision, "machine": machine(),
        "corpus": spec["corpus"], "train": spec.get("train", {}), "init_from": spec.get("init_from"),
        "train_info": train_info, **unseen,
        "final_step": final["step"], "accuracy": final["generation"]["accuracy"],
        "accuracy_all_pairs": final["generation"]["accuracy_all_pairs"], "floor": final["generation"]["floor"],
        "best_constant": final["generation"].get("best_constant"),
        "untrained_accuracy": first["generation"]["accuracy"],
        "mean_generated_length": final["generation"]["mean_generated_length"],
        "accuracy_curve": list(zip(steps, [r["generation"]["accuracy"] for r in by_step])),
        "gain_curve": list(zip(steps, gains)),
        "r2_accuracy_on_gain_m1": r_squared(gains, accs), "num_checkpoints": len(gains),
        "untrained": {}, "final": {},
    }
    for name, r in (("untrained", first), ("final", final)):
        for o, p in r["probes"].items():
            if key in p:
                q = p[key]
                row[name][o] = {k: q.get(k) for k in ("semantic_content", "conditional_gain", "conditional_gain_ci",
                                                      "original_minus_best_alternative", "best_alternative",
                                                      "gain_minus_best_alternative_gain", "unobserved",
                                                      "conditional_gain_sep", "code_position", "shuffled")}
                row[name][o]["controls"] = p.get("controls")
        for fam in ("probes_mlp", "probes_relative"):
            for o, p in r.get(fam, {}).items():
                for k2, q in p.items():
                    if isinstance(q, dict) and "conditional_gain" in q:
                        row[name][f"{fam}/{k2}/{o}"] = {k: q.get(k) for k in (
                            "semantic_content", "conditional_gain", "conditional_gain_ci",
                            "original_minus_best_alternative", "gain_minus_best_alternative_gain")}
    return row


def pct(x, signed=False):
    if x is None:
        return "-"
    return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def markdown_row(row: dict) -> str:
    mc = row["machine"]
    flags = "/".join(f for f in ("amx", "avx512_bf16", "avx2") if mc.get(f)) or "none"
    from karel_hf.data.builder import get_config

    c = get_config(row["corpus"].get("config", "cpu"), **{k: v for k, v in row["corpus"].items() if k != "config"})
    lo, hi = c.lengths("train")
    elo, ehi = c.lengths("test")
    task = (f"{c.height}x{c.width} P{c.num_prompt_pairs} train L{lo}..{hi} test L{elo}..{ehi} "
            f"heldout {c.heldout_fraction} ({c.train_size // 1000}k)")
    t = row["train"]
    recipe = " ".join(f"{k}={v}" for k, v in t.items() if k not in ("save_steps", "logging_steps"))
    gains = []
    for o in ("-2", "-1", "0", "1", "2"):
        q = row["final"].get(o)
        if q and q.get("conditional_gain") is not None:
            lo, hi = q["conditional_gain_ci"]
            gains.append(f"{pct(q['conditional_gain'], True)} [{pct(lo, True)},{pct(hi, True)}]")
        else:
            gains.append("-")
    u = row["untrained"].get("-1", {})
    f1 = row["final"].get("-1", {})
    mlp = row["final"].get("probes_mlp/mlp/mean/-1", {})
    rel = row["final"].get("probes_relative/linear/mean/-1", {})
    ti = row["train_info"]
    return ("| " + " | ".join([
        row["spec"], task, recipe, str(row["seed"]), row["precision"], f"{mc['cpu']} ({flags}), {mc['threads']} thr",
        f"{ti.get('train_runtime_s') or 0:.0f} ({ti.get('cpu_s') or 0:.0f} cpu)", str(ti.get("steps")), f"{(ti.get('tokens') or 0) / 1e6:.1f}M",
        f"{pct(row['accuracy'])} / {pct(row['floor'])} / {pct(row.get('best_constant'))} / {pct(row.get('untrained_accuracy'))}",
        pct(row["unseen_fraction"]),
        *gains, pct(u.get("conditional_gain"), True), pct(f1.get("original_minus_best_alternative"), True),
        pct(f1.get("gain_minus_best_alternative_gain"), True),
        pct(mlp.get("conditional_gain"), True), pct(rel.get("conditional_gain"), True),
        "-" if row["r2_accuracy_on_gain_m1"] is None else f"{row['r2_accuracy_on_gain_m1']:.2f} ({row['num_checkpoints']})",
    ]) + " |")


HEADER = ("| spec | task | recipe | seed | precision | machine | train s (cpu s) | steps | tokens | acc / put_marker / best const / step 0 | unseen % "
          "| gain -2 | gain -1 | gain 0 | gain +1 | gain +2 | step-0 gain -1 | orig-alt sc -1 | orig-alt gain -1 "
          "| MLP gain -1 | rel gain -1 | R2 acc~gain -1 (ckpts) |\n" + "|---" * 22 + "|\n")


def append_results(row: dict) -> None:
    if not RESULTS_MD.exists():
        RESULTS_MD.write_text(
            "# Emergence experiments (issue 17)\n\nOne row per run of benchmarks/emergence/run.py. Gains are the "
            "teacher-forced conditional gain (linear probe on [layer-mean state, joint prompt facts] minus the probe on "
            "the joint prompt facts) at the final checkpoint, in points, with 95% bootstrap intervals over test specs; "
            "acc = grammar-constrained greedy generation accuracy on the first test specs vs the constant program "
            "put_marker(). Details per run in results.jsonl and runs/emergence/<run>/measure.jsonl.\n\n" + HEADER)
    with open(RESULTS_MD, "a") as f:
        f.write(markdown_row(row) + "\n")
    with open(RESULTS_JSONL, "a") as f:
        f.write(json.dumps(row) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--precision", choices=("bf16", "fp32"), default=None)
    parser.add_argument("--skip_train", action="store_true")
    parser.add_argument("--full_every", type=int, default=0, help="full measurement every N-th checkpoint too")
    parser.add_argument("--no_append", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    spec = json.loads(Path(args.spec).read_text())
    seed = spec.get("seed", 0) if args.seed is None else args.seed
    precision = args.precision or spec.get("precision", "bf16")
    run_dir = RUNS / f"{spec['name']}-s{seed}-{precision}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=1) + "\n")
    if args.skip_train and (run_dir / "train_info.json").exists():
        info = json.loads((run_dir / "train_info.json").read_text())
    else:
        info = train(spec, run_dir, seed, precision)
    print(f"trained: {info}", flush=True)
    t0 = time.time()
    results = measure_run(spec, run_dir, args.full_every)
    unseen = unseen_fraction(spec["corpus"], spec.get("measure", {}).get("probe_test", 1000))
    row = summarise(spec, results, seed, precision, info, unseen)
    row["measure_wall_s"] = time.time() - t0
    if not args.no_append:
        append_results(row)
    print(markdown_row(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
