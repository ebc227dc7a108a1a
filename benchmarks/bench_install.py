"""Benchmark: README command 1's set-up, timed per pip option: a fresh venv, the install, the first run.

A new user's first minutes are `python3 -m venv .venv`, `pip install -q -c constraints.txt -e .` and
the first `karel-hf` run, whose imports compile whatever the install did not. This script times the
three for each variant of the install command in a fresh venv (deleted afterwards), so a pip option
is judged by what the user waits for, not by the install alone. pip byte-compiles every installed
`.py` file by default (~15k files for karel_hf's dependencies); with `--no-compile` Python compiles
only the modules a run imports, when it first imports them (into the venv's `__pycache__`, so later
runs and worker processes reuse them).

Variants are pip argument strings separated by ';' (`default` means none); every variant installs the
same target from the same pip cache, the order alternates between rounds, and the median of each
stage is reported with each variant's total over the first's. `.pyc` files counted after the install
(minus those of the bare venv) say how much the install compiled, those counted after the first run
how much was left to the run. The counts are net: one below 0 means the install replaced a package
the bare venv had compiled (Python 3.11's venvs come with setuptools 65.5, which the install
replaces) and compiled nothing.

    python benchmarks/bench_install.py --variants 'default;--no-compile' --rounds 3 --output install.json
    python benchmarks/bench_install.py --first_run none            # the install alone
    python benchmarks/bench_install.py --target dist/pkg.whl --pip_args=--no-index --first_run 'python -c "import pkg"'

The default first run is `karel-hf reproduce --preset tiny` into a temporary folder: every stage of the
main job (train, evaluate with its worker processes, analyze, plot, view, report) on a model small
enough that the imports, not the work, dominate its time.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = "karel-hf reproduce --preset tiny --output_dir {tmp}/run"
# left out of the venv's environment: a new user's shell has no other venv, no PYTHONPATH and writes
# bytecode (with PYTHONDONTWRITEBYTECODE set, a --no-compile venv would compile every import again
# in every process)
NOT_A_NEW_USERS = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")


class BenchError(Exception):
    """A stage failed: one line for the user."""


def _pyc_count(venv: Path) -> int:
    return sum(1 for _ in venv.rglob("*.pyc"))


def _timed(cmd: list[str], what: str, env: dict, cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise BenchError(f"{what} exited {done.returncode}: {last}")
    return time.perf_counter() - start


def measure(variant: str, target: str, pip_args: str, first_run: str, python: str) -> dict:
    """One fresh venv: seconds for its creation, the install with `variant`'s pip arguments and the
    first run, and the `.pyc` files the install wrote and those the first run's imports wrote into the venv."""
    extra = [] if variant == "default" else shlex.split(variant)
    with tempfile.TemporaryDirectory(prefix="bench_install_") as tmp:
        tmp = Path(tmp)
        venv = tmp / ".venv"
        env = {k: v for k, v in os.environ.items() if k not in NOT_A_NEW_USERS}
        env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
        row = {"venv_s": _timed([python, "-m", "venv", str(venv)], "python -m venv", env, tmp)}
        bare = _pyc_count(venv)
        install = [str(venv / "bin" / "pip"), "install", "-q", *shlex.split(pip_args), *extra]
        install += ["-e", target] if Path(target).is_dir() else [target]
        row["install_s"] = _timed(install, f"pip install ({variant})", env, ROOT)
        row["pyc_from_install"] = _pyc_count(venv) - bare
        row["first_run_s"] = (0.0 if first_run == "none" else
                              _timed(["bash", "-c", first_run.format(tmp=tmp)], f"the first run ({variant})", env, tmp))
        row["pyc_from_first_run"] = _pyc_count(venv) - bare - row["pyc_from_install"]
        row["total_s"] = row["venv_s"] + row["install_s"] + row["first_run_s"]
    return row


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog=Path(__file__).name, description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="default;--no-compile",
                        help="pip arguments per variant, separated by ';' ('default': none); ratios over the first")
    parser.add_argument("--rounds", type=int, default=1, help="measurements per variant; medians")
    parser.add_argument("--target", default=str(ROOT),
                        help="what pip installs: a project folder (installed with -e) or a file (default: this repository)")
    parser.add_argument("--pip_args", default=f"-c {shlex.quote(str(ROOT / 'constraints.txt'))}",
                        help="pip arguments every variant shares (default: README's -c constraints.txt)")
    parser.add_argument("--first_run", default=TINY_RUN,
                        help="the command run in the new venv after the install ({tmp}: a temporary folder; "
                             "'none': skip)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that makes the venvs")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(";")]
    if len(variants) < 2 or not all(variants) or len(set(variants)) < len(variants):
        parser.error("--variants: two or more distinct non-empty pip argument strings separated by ';'")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not Path(args.target).exists():
        parser.error(f"--target {args.target}: no such file or folder")

    runs = {v: [] for v in variants}
    try:
        for r in range(args.rounds):
            for v in (variants if r % 2 == 0 else variants[::-1]):
                runs[v].append(measure(v, args.target, args.pip_args, args.first_run, args.python))
                print(f"round {r + 1}, {v}: " + ", ".join(f"{k} {x:.1f}" for k, x in runs[v][-1].items()), flush=True)
    except BenchError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    stages = ("venv_s", "install_s", "first_run_s", "total_s", "pyc_from_install", "pyc_from_first_run")
    median = {v: {s: statistics.median(m[s] for m in rows) for s in stages} for v, rows in runs.items()}
    from karel_hf.utils import describe_machine, machine_info

    result = {
        "machine": machine_info(), "rounds": args.rounds, "target": args.target, "pip_args": args.pip_args,
        "first_run": args.first_run, "runs": runs,
        "median": {v: {s: round(x, 2) for s, x in m.items()} for v, m in median.items()},
        "total_first_over": {v: round(median[variants[0]]["total_s"] / median[v]["total_s"], 3) for v in variants[1:]},
    }
    print(describe_machine(result["machine"]))
    print(f"{'variant':<24}{'venv s':>8}{'install s':>11}{'first run s':>13}{'total s':>9}{'pyc by install':>16}"
          f"{'pyc by first run':>18}")
    for v, m in median.items():
        print(f"{v:<24}{m['venv_s']:>8.1f}{m['install_s']:>11.1f}{m['first_run_s']:>13.1f}{m['total_s']:>9.1f}"
              f"{m['pyc_from_install']:>16.0f}{m['pyc_from_first_run']:>18.0f}")
    print(f"total, {variants[0]} / variant: " + ", ".join(f"{v} {x:.3f}" for v, x in result["total_first_over"].items()))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
