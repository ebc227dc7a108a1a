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
