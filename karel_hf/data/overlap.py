"""Which programs the splits of a corpus hold: distinct programs per split, and the share of
validation and test examples whose program also occurs in the training split.

A program is its text (the `program` column, one statement per line), named by a 64-bit hash of
it (`program_ids`: a sum of the text's bytes weighted by per-position random keys, then SplitMix64;
two different programs share a name with probability < 2^-56), so that counting a million programs
takes 16 bytes each. `program_overlap(config)` streams the generator over every split (nothing
else is built); the Parquet export counts the programs of the shards it writes and puts the result
in the dataset card. With `heldout_fraction > 0` no validation or test program occurs in training
(seen fraction 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pyarrow as pa

from karel_hf.karel.randomness import hash_at, hash_range
from karel_hf.karel.sampling import iter_batches

from .builder import GENERATION_CHUNK, SPLITS, KarelConfig, get_config

EVAL_SPLITS = ("validation", "test")


@lru_cache(maxsize=4)
def _position_keys(length: int) -> np.ndarray:
    """(length,) uint64 random keys, one per byte position (SplitMix64 of the position)."""
    return hash_range(0x6B617265, 0, length)


def program_ids(programs) -> np.ndarray:
    """(n,) uint64 names of program texts (a list or an Arrow string array); equal texts, equal names."""
    column = programs if isinstance(programs, (pa.Array, pa.ChunkedArray)) else pa.array(programs, pa.large_string())
    column = column.cast(pa.large_string())
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    _, offsets, data = column.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int64, count=n + 1, offset=column.offset * 8)
    lengths = np.diff(offsets)
    data = np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]].astype(np.uint64) + np.uint64(1)
    position = np.arange(len(data)) - np.repeat(offsets[:-1] - offsets[0], lengths)
    with np.errstate(over="ignore"):
        weighted = data * _position_keys(int(lengths.max()))[position]
        sums = np.zeros(n, dtype=np.uint64)
        nonempty = lengths > 0
        sums[nonempty] = np.add.reduceat(weighted, (offsets[:-1] - offsets[0])[nonempty])
        return hash_at(0, sums ^ lengths.astype(np.uint64))


@dataclass
class ProgramCounts:
    """The distinct programs (their names) of (part of) a split and how many examples hold each."""

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))  # sorted, distinct
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def of(cls, programs) -> ProgramCounts:
        """Counts of a column (or list) of program texts."""
        ids, counts = np.unique(program_ids(programs), return_counts=True)
        return cls(ids, counts.astype(np.int64))

    @classmethod
    def combine(cls, parts) -> ProgramCounts:
        """The counts of several parts of a split together."""
        parts = list(parts)
        if not parts:
            return cls()
        ids, inverse = np.unique(np.concatenate([p.ids for p in parts]), return_inverse=True)
        counts = np.bincount(inverse, weights=np.concatenate([p.counts for p in parts]), minlength=len(ids))
        return cls(ids, counts.astype(np.int64))

    @property
    def examples(self) -> int:
        return int(self.counts.sum())


@dataclass
class ProgramOverlap:
    """Per split: examples and distinct programs; per evaluation split: the share of its examples
    whose program occurs in the training split (`seen_in_train`, None without a training split)."""

    examples: dict
    distinct: dict
    seen_in_train: dict

    @classmethod
    def from_counts(cls, counts: dict) -> ProgramOverlap:
        """From {split: ProgramCounts}."""
        train = counts.get("train")
        seen = {}
        for split in EVAL_SPLITS:
            if split not in counts:
                continue
            if train is None or not counts[split].examples:
                seen[split] = None
                continue
            held = np.isin(counts[split].ids, train.ids)
            seen[split] = float(counts[split].counts[held].sum() / counts[split].examples)
        return cls(examples={s: c.examples for s, c in counts.items()},
                   distinct={s: len(c.ids) for s, c in counts.items()}, seen_in_train=seen)


def split_program_counts(config: KarelConfig, split: str, start: int = 0, stop: int | None = None) -> ProgramCounts:
    """ProgramCounts of examples [start, stop) of a split (the generator only, batch by batch)."""
    batches = iter_batches(config.corpus_config(split), batch_size=GENERATION_CHUNK, start=start, stop=stop)
    return ProgramCounts.combine(ProgramCounts.of(batch.programs) for batch in batches)


def program_overlap(config: str | KarelConfig, **overrides) -> ProgramOverlap:
    """Distinct programs per split and the share of validation/test examples seen in training, for a
    named config (with field overrides) or a KarelConfig."""
    if isinstance(config, str):
        config = get_config(config, **overrides)
    elif overrides:
        raise ValueError("program_overlap: field overrides need a config name, not a KarelConfig")
    counts = {split: split_program_counts(config, split) for split in SPLITS if getattr(config, f"{split}_size")}
    return ProgramOverlap.from_counts(counts)
