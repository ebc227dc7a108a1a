"""The scripts under benchmarks/ (not a package), imported as modules for the tests that call them."""

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(relative: str):
    """benchmarks/<relative>.py as a module, e.g. load_script("bench_train") or load_script("emergence/run")."""
    spec = importlib.util.spec_from_file_location(relative.replace("/", "_"), BENCHMARKS / f"{relative}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
