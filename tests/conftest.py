"""Shared pytest set-up: offline, single-threaded, quiet (other test modules may add fixtures below)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """The `tiny` Karel config (512/64/64), built once per test session in a private cache."""
    from karel_hf.data import load_karel

    return load_karel("tiny", cache_dir=str(tmp_path_factory.mktemp("karel_cache")))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """`karel-hf reproduce --preset tiny` once per test session (about a minute): every stage's
    files, shared by test_reproduce and test_viewer (tests that change it work on a copy)."""
    from karel_hf.reproduce import main

    out = tmp_path_factory.mktemp("repro") / "tiny"
    assert main(["--preset", "tiny", "--output_dir", str(out)]) == 0
    return out
