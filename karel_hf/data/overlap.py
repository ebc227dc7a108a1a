"""Which programs the splits of a corpus hold: distinct programs per split, and the share of
validation and test examples whose program also occurs in the training split.

A program is named by a 64-bit hash: of its action-code sequence for straight-line corpora
(`karel_hf.karel.heldout.program_hash` with `IDENTITY_KEY`), of its text for extended ones.
`program_overlap(config)` streams the generator over every split (nothing else is built), the
Parquet export collects the same names while it writes and puts them in the dataset card. With
`heldout_fraction > 0` no validation or test program occurs in training (seen fraction 0).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from karel_hf.karel.heldout import IDENTITY_KEY, program_hash
from karel_hf.karel.sampling import ProgramBatch, iter_batches

from .builder import GENERATION_CHUNK, SPLITS, KarelConfig, get_config

EVAL_SPLITS = ("validation", "test")


def program_ids(batch: ProgramBatch, extended: bool) -> np.ndarray:
    """(n,) uint64 names of the batch's programs (equal programs, equal names)."""
    if not extended:
        return program_hash(IDENTITY_KEY, batch.actions)
    digests = b"".join(hashlib.blake2b(p.encode(), digest_size=8).digest() for p in batch.programs)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


@dataclass
class ProgramCounts:
    """Distinct program names of one split and how many examples hold each."""

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))  # sorted, unique
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def of(cls, ids: np.ndarray) -> ProgramCounts:
        unique, counts = np.unique(ids, return_counts=True)
        return cls(unique, counts.astype(np.int64))

    @classmethod
    def combine(cls, parts) -> ProgramCounts:
        """The counts of several parts of a split together."""
        parts = list(parts)
        if not parts:
            return cls()
        unique, inverse = np.unique(np.concatenate([p.ids for p in parts]), return_inverse=True)
        counts = np.bincount(inverse, weights=np.concatenate([p.counts for p in parts]), minlength=len(unique))
        return cls(unique, counts.astype(np.int64))

    @property
    def examples(self) -> int:
        return int(self.counts.sum())


@dataclass
class ProgramOverlap:
    """Per split: examples, distinct programs; per evaluation split: the share of its examples
    whose program occurs in the training split (`seen_in_train`, None without a training split)."""

    examples: dict
    distinct: dict
    seen_in_train: dict

    @classmethod
    def from_counts(cls, counts: dict) -> ProgramOverlap:
        train = counts.get("train")
        seen = {}
        for split in EVAL_SPLITS:
            if split in counts and train is not None and counts[split].examples:
                held = np.isin(counts[split].ids, train.ids)
                seen[split] = float(counts[split].counts[held].sum() / counts[split].examples)
            elif split in counts:
                seen[split] = None
        return cls(examples={s: c.examples for s, c in counts.items()},
                   distinct={s: len(c.ids) for s, c in counts.items()}, seen_in_train=seen)


def split_program_counts(config: KarelConfig, split: str, start: int = 0, stop: int | None = None) -> ProgramCounts:
    """ProgramCounts of examples [start, stop) of a split (the generator only, batch by batch)."""
    corpus = config.corpus_config(split)
    ids = [program_ids(batch, config.extended)
           for batch in iter_batches(corpus, batch_size=GENERATION_CHUNK, start=start, stop=stop)]
    return ProgramCounts.of(np.concatenate(ids)) if ids else ProgramCounts()


def program_overlap(config: str | KarelConfig, **overrides) -> ProgramOverlap:
    """Distinct programs per split and the share of validation/test examples seen in training, for a
    named config (with field overrides) or a KarelConfig."""
    if isinstance(config, str):
        config = get_config(config, **overrides)
    elif overrides:
        raise ValueError("program_overlap: field overrides need a config name, not a KarelConfig")
    counts = {split: split_program_counts(config, split) for split in SPLITS if getattr(config, f"{split}_size")}
    return ProgramOverlap.from_counts(counts)
