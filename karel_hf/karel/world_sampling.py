"""Random input worlds of the corpus generator (docs/protocol.md §2), a batch at a time.

Each of the `num_pairs` input worlds of a program: every interior cell a wall with p = `wall_ratio`;
the robot on a uniformly drawn interior cell (cleared of wall) facing N/E/S/W uniformly; every free
interior cell except the robot's holding one marker with p = `marker_ratio`. The values come from
the counter-based stream `STREAM_WORLDS` (karel_hf.karel.randomness): one hash per interior cell and
one for the robot, so world j of example i depends only on (config, i, j).

Pure Python + NumPy.
"""

from __future__ import annotations

import numpy as np

from .batched import WorldBatch
from .corpus_config import CorpusConfig
from .randomness import STREAM_WORLDS, bernoulli, halves, hash_at, hash_range, stream_key


def sample_worlds(config: CorpusConfig, start: int, stop: int) -> WorldBatch:
    """The input worlds of examples [start, stop): (stop - start) * num_pairs worlds, example-major."""
    per_world = (config.height - 2) * (config.width - 2) + 1  # one hash per interior cell + one for the robot
    num_worlds = (stop - start) * config.num_pairs
    key = stream_key(config.seed, STREAM_WORLDS)
    return _worlds(config, hash_range(key, start * config.num_pairs * per_world, num_worlds * per_world))


def sample_worlds_at(config: CorpusConfig, index: np.ndarray) -> WorldBatch:
    """The input worlds of examples `index` (any non-negative integers; those >= num_programs name the
    fresh worlds a corpus rule asks for, karel_hf.karel.extended_sampling): as sample_worlds."""
    per_world = (config.height - 2) * (config.width - 2) + 1
    span = np.uint64(config.num_pairs * per_world)
    counters = np.asarray(index, dtype=np.uint64)[:, None] * span + np.arange(int(span), dtype=np.uint64)
    return _worlds(config, hash_at(stream_key(config.seed, STREAM_WORLDS), counters.reshape(-1)))


def _worlds(config: CorpusConfig, hashes: np.ndarray) -> WorldBatch:
    cells = (config.height - 2) * (config.width - 2)
    num_worlds = len(hashes) // (cells + 1)
    low, high = halves(hashes.reshape(num_worlds, cells + 1))  # (N, c + 1) uint32 each
    robot = (low[:, cells].astype(np.uint64) * np.uint64(cells)) >> np.uint64(32)  # (N,) in [0, c)
    robot = robot.astype(np.int64)
    direction = (high[:, cells] >> np.uint32(30)).astype(np.int8)  # (N,) in [0, 4)
    rows = np.arange(num_worlds)
    walls = bernoulli(low[:, :cells], config.wall_ratio)  # (N, c)
    walls[rows, robot] = False
    markers = bernoulli(high[:, :cells], config.marker_ratio) & ~walls  # (N, c)
    markers[rows, robot] = False
    return WorldBatch(walls, markers, robot, direction)
