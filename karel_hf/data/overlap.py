"""Which programs the splits of a corpus hold: distinct programs per split, and the share of
validation and test examples whose program also occurs in the training split.

A program is its text (the `program` column, one statement per line), counted with Arrow's
`value_counts`. `program_overlap(config)` streams the generator over every split (nothing else is
built); the Parquet export counts the programs of the shards it writes and puts the result in the
dataset card. With `heldout_fraction > 0` no validation or test program occurs in training (seen
fraction 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from karel_hf.karel.sampling import iter_batches

from .builder import GENERATION_CHUNK, SPLITS, KarelConfig, get_config

EVAL_SPLITS = ("validation", "test")


@dataclass
class ProgramCounts:
    """The distinct programs of (part of) a split and how many examples hold each."""

    programs: pa.Array  # string, distinct
    counts: pa.Array  # int64, examples per program

    @classmethod
    def of(cls, programs) -> ProgramCounts:
        """Counts of a column (or list) of program texts."""
        column = programs if isinstance(programs, (pa.Array, pa.ChunkedArray)) else pa.array(programs, pa.string())
        counted = pc.value_counts(column)
        return cls(counted.field("values"), counted.field("counts"))

    @classmethod
    def combine(cls, parts) -> ProgramCounts:
        """The counts of several parts of a split together."""
        parts = list(parts)
        if not parts:
            return cls(pa.array([], pa.string()), pa.array([], pa.int64()))
        table = pa.table({"programs": pa.chunked_array([p.programs for p in parts], pa.string()),
                          "counts": pa.chunked_array([p.counts for p in parts], pa.int64())})
        summed = table.group_by("programs").aggregate([("counts", "sum")])
        return cls(summed["programs"].combine_chunks(), summed["counts_sum"].combine_chunks())

    @property
    def examples(self) -> int:
        return int(pc.sum(self.counts).as_py() or 0)


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
            held = pc.is_in(counts[split].programs, value_set=train.programs)
            seen[split] = pc.sum(pc.filter(counts[split].counts, held)).as_py() or 0
            seen[split] /= counts[split].examples
        return cls(examples={s: c.examples for s, c in counts.items()},
                   distinct={s: len(c.programs) for s, c in counts.items()}, seen_in_train=seen)


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
