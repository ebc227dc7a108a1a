"""Export a Karel config as the Hub layout: Parquet per config and split, the tokenizer, a card.

    DIR/README.md                              dataset card (YAML `configs:` + `dataset_info:`)
    DIR/<config>/<split>-00000-of-00002.parquet
    DIR/tokenizer/                             AutoTokenizer-loadable

so `load_dataset(DIR, "<config>", split="test")` (and `streaming=True`) needs no karel_hf code.
`karel-hf push dataset` publishes it with the card's "How to load" code rewritten for the
repository (`card_for_repo`). Several configs can be exported into one DIR: the card
lists all of them, with the number of distinct programs per split and how many evaluation examples
have a program that also occurs in training (karel_hf.data.overlap).

The shards are written with pyarrow from the tables the builder put in the datasets cache
(`load_karel`, which builds the cache or reuses it), a row group of GENERATION_CHUNK rows at a time
read straight from the cache files, so memory stays bounded by a row group per worker process.
Shard and row-group boundaries depend only on the split size, so the same config and seed give
byte-identical Parquet whatever `num_proc`. Every file is written to a temporary name first and
renamed, so an interrupted export never leaves a half-written file.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import re
import string
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from karel_hf import __version__
from karel_hf.karel.sampling import generate
from karel_hf.tokenizer import build_tokenizer, load_tokenizer
from karel_hf.utils import atomic_path, atomic_write_text

from .builder import (
    GENERATION_CHUNK,
    SPLITS,
    _CITATION,
    _LICENSE,
    KarelConfig,
    batch_table,
    get_config,
    karel_features,
    load_karel,
)
from .overlap import ProgramCounts, ProgramOverlap

ROWS_PER_SHARD = 100_000
# Parquet as written: snappy pages (datasets' own default); a dictionary only for the program
# column (texts are all different, and dictionaries of the list columns' int8 values cost more to
# write than they save); min/max statistics for the integer columns only. The nested list columns
# (worlds, traces) dominate the time: Parquet encodes a repetition and a definition level per value.
PARQUET_OPTIONS = dict(compression="snappy", use_dictionary=["program"], write_statistics=["id", "length"])
# The top-level dataset_card.md; karel_hf/templates/ links to it so wheels carry a copy.
CARD_TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "dataset_card.md"
HOW_TO_LOAD_HEADING = "## How to load"


def _size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M")]
    for bound, label in bounds:
        if n < bound:
            return label
    return "10M<n<100M"


def shard_bounds(size: int, rows_per_shard: int) -> list[tuple[int, int]]:
    """[start, stop) of each Parquet shard of a split of `size` rows: ceil(size / rows_per_shard)
    contiguous shards whose sizes differ by at most one (as `Dataset.shard(contiguous=True)`)."""
    num_shards = max(1, math.ceil(size / rows_per_shard))
    div, mod = divmod(size, num_shards)
    return [(i * div + min(i, mod), (i + 1) * div + min(i + 1, mod)) for i in range(num_shards)]


@dataclass(frozen=True)
class _Shard:
    split: str
    files: tuple  # the split's cache files (Arrow IPC streams), in order
    file_rows: tuple  # rows per cache file
    start: int
    stop: int
    path: Path
    schema: pa.Schema


def _read_rows(shard: _Shard, lo: int, hi: int) -> pa.Table:
    """Rows [lo, hi) of the split, copied out of its cache files.

    Each file is memory-mapped only while its rows are copied: its pages then leave the process, so
    memory stays bounded by a row group (a mapping kept open would count every page read).
    """
    parts, first = [], 0
    for name, rows in zip(shard.files, shard.file_rows):
        if first < hi and first + rows > lo:
            with pa.memory_map(name) as source:
                batches, row = [], first
                for batch in pa.ipc.open_stream(source):  # zero-copy: skipped batches are not read
                    a, b = max(lo - row, 0), min(hi - row, batch.num_rows)
                    if a < b:
                        batches.append(batch.slice(a, b - a))
                    row += batch.num_rows
                    if row >= hi:
                        break
                parts.append(pa.Table.from_batches(batches, shard.schema).combine_chunks())
        first += rows
    return pa.concat_tables(parts).combine_chunks()


def write_shard(shard: _Shard) -> tuple[str, ProgramCounts]:
    """Write one Parquet shard: row groups of GENERATION_CHUNK rows counted from the shard's start,
    so the bytes depend only on the data and the shard; return its split and its programs' counts."""
    counts = []
    with atomic_path(shard.path) as tmp, pq.ParquetWriter(str(tmp), shard.schema, **PARQUET_OPTIONS) as writer:
        for lo in range(shard.start, shard.stop, GENERATION_CHUNK):
            table = _read_rows(shard, lo, min(lo + GENERATION_CHUNK, shard.stop))
            writer.write_table(table, row_group_size=len(table))
            counts.append(ProgramCounts.of(table["program"]))
    return shard.split, ProgramCounts.combine(counts)


def export_dataset(config: str, output_dir, *, num_proc: int | None = None, cache_dir: str | None = None,
                   rows_per_shard: int = ROWS_PER_SHARD, **overrides) -> Path:
    """Generate `config` (with field overrides) and write it to `output_dir` in the Hub layout.

    The data comes from `load_karel` (built into the datasets cache with `num_proc` processes, or
    reused from it); `num_proc` processes then write the Parquet shards, each reading its rows from
    the cache a row group at a time, so memory stays bounded by a row group per process.
    """
    resolved = get_config(config, **overrides)
    if isinstance(rows_per_shard, bool) or not isinstance(rows_per_shard, int) or rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be a positive integer, got {rows_per_shard!r}")
    if num_proc is not None and (isinstance(num_proc, bool) or not isinstance(num_proc, int) or num_proc < 1):
        raise ValueError(f"num_proc must be a positive integer or None, got {num_proc!r}")
    dataset = load_karel(config, cache_dir=cache_dir, num_proc=num_proc, **overrides)
    schema = karel_features(resolved).arrow_schema
    out = Path(output_dir)
    (out / config).mkdir(parents=True, exist_ok=True)
    shards = []
    for split in (s for s in SPLITS if s in dataset):
        for stale in (out / config).glob(f"{split}-*.parquet"):
            stale.unlink()
        data = dataset[split]
        files = tuple(f["filename"] for f in data.cache_files)
        file_rows = tuple(data.info.splits[split].shard_lengths or [len(data)])
        if len(files) != len(file_rows) or sum(file_rows) != len(data):
            raise RuntimeError(f"the {split} split's cache files ({len(files)}) do not match its shard lengths "
                               f"{file_rows}; delete the cache folder and export again")
        bounds = shard_bounds(len(data), rows_per_shard)
        shards += [_Shard(split, files, file_rows, start, stop,
                          out / config / f"{split}-{i:05d}-of-{len(bounds):05d}.parquet", schema)
                   for i, (start, stop) in enumerate(bounds)]
    shards.sort(key=lambda s: s.start - s.stop)  # largest first: the workers finish together
    if num_proc is None or num_proc == 1 or len(shards) == 1:
        written = [write_shard(shard) for shard in shards]
    else:
        # fork where the platform has it: the workers inherit the imported modules
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(min(num_proc, len(shards))) as pool:
            written = pool.map(write_shard, shards, chunksize=1)
    splits = [s for s in SPLITS if s in dataset]
    overlap = ProgramOverlap.from_counts(
        {split: ProgramCounts.combine(c for s, c in written if s == split) for split in splits})

    with atomic_path(out / "tokenizer", directory=True) as tmp:
        build_tokenizer().save_pretrained(str(tmp))
    split_bytes = {split: dataset[split].data.nbytes for split in splits}
    atomic_write_text(out / "README.md", render_card(out, config, resolved, overlap, split_bytes))
    return out


def render_card(out: Path, config_name: str, config: KarelConfig, overlap: ProgramOverlap,
                split_bytes: dict[str, int]) -> str:
    """The dataset card: front matter merged with configs exported earlier into the same folder.

    The metadata is written as datasets' own `push_to_hub` writes it (`MetadataConfigs` and
    `DatasetInfosDict` into a `DatasetCardData`): `configs:` with the data files, `dataset_info:` with
    the features and, per split, `num_examples` and `num_bytes` (`split_bytes`: the Arrow bytes;
    datasets ignores a split list without them), the download size (the Parquet bytes) and the total.
    """
    splits = [s for s in SPLITS if s in overlap.examples]
    readme = out / "README.md"
    card_data = DatasetCard.load(readme).data if readme.is_file() else DatasetCardData()
    info = datasets.DatasetInfo(features=karel_features(config), config_name=config_name)
    info.splits = datasets.SplitDict(dataset_name=config_name)
    for split in splits:
        info.splits.add(datasets.SplitInfo(split, num_bytes=split_bytes[split], num_examples=overlap.examples[split]))
    info.dataset_size = sum(split_bytes[s] for s in splits)
    info.download_size = sum(p.stat().st_size for p in (out / config_name).glob("*.parquet"))
    DatasetInfosDict({config_name: info}).to_dataset_card_data(card_data)
    data_files = [{"split": s, "path": f"{config_name}/{s}-*.parquet"} for s in splits]
    MetadataConfigs({config_name: {"data_files": data_files}}).to_dataset_card_data(card_data)
    total = sum(s["num_examples"] for i in _as_list(card_data["dataset_info"]) for s in i["splits"])
    card_data.license = _LICENSE.lower()
    card_data.task_categories = ["text-generation"]
    card_data.tags = ["karel", "program-synthesis", "interpretability", "probing", "code"]
    card_data.pretty_name = "Karel programs with input/output examples"
    card_data.size_categories = [_size_category(total)]

    example = batch_table(generate(config.corpus_config(splits[0]), 0, 1), config).to_pylist()[0]
    tokenizer = load_tokenizer(out / "tokenizer")
    sample_tokens = len(tokenizer(example["text"])["input_ids"])
    example_json = {k: v for k, v in example.items() if k not in ("inputs", "outputs", "text")}

    def seen(split):
        share = overlap.seen_in_train.get(split)
        return "-" if share is None else f"{100 * share:.1f}%"

    split_table = "\n".join(
        f"| {config_name} | {s} | {overlap.examples[s]:,} | {'-'.join(map(str, config.lengths(s)))} | "
        f"{overlap.distinct[s]:,} | {seen(s)} |"
        for s in splits
    )
    if config.heldout_fraction:
        heldout = (f"Program-disjoint splits: a program is held out for evaluation iff a hash of its "
                   f"{'line codes' if config.extended else 'actions'} keyed "
                   f"by the seed falls below `heldout_fraction` = {config.heldout_fraction}; the training split "
                   "holds no held-out program, validation and test hold only held-out ones, so no evaluation "
                   "program occurs in training.")
    else:
        heldout = ("The splits are drawn independently (`heldout_fraction` = 0): a short program can occur in "
                   "training and in evaluation; the last column says how often.")
    if config.needs_control_flow:
        heldout += (f"\n\nEvery program needs its control flow (`needs_control_flow`): no straight-line program of up "
                    f"to {config.max_length} actions maps the {config.num_prompt_pairs} prompt pairs' inputs to their "
                    "outputs. Input worlds on which no program needed it were drawn again, so the worlds are "
                    "chosen, not uniform.")
    fields = {
        "config_name": config_name,
        "version": __version__,
        "split_table": split_table,
        "how_to_load": how_to_load(_as_list(card_data["configs"]), repo_id=None),
        "heldout": heldout,
        "config_json": json.dumps(config.generator_fields(), indent=2, default=list),
        "example_text": example["text"],
        "example_json": json.dumps(example_json, indent=2)[:3000],
        "num_actions": example["length"],
        "sample_tokens": sample_tokens,
        "paper_tokens": 812 + 3 * example["length"],
        "token_ratio": f"{sample_tokens / (812 + 3 * example['length']):.3f}",
        "citation": _CITATION.strip(),
        "prompt_pairs": config.num_prompt_pairs,
        "last_prompt_pair": config.num_prompt_pairs - 1,
        "num_pairs": config.num_pairs,
        "height": config.height,
        "width": config.width,
        "rows": config.height - 2,
        "cols": config.width - 2,
    }
    body = string.Template(CARD_TEMPLATE.read_text(encoding="utf-8")).substitute(fields)
    return str(DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}"))


def _as_list(entries) -> list:
    """A card's `configs:` or `dataset_info:` as a list (datasets writes a single entry as a mapping)."""
    return entries if isinstance(entries, list) else [entries]


def how_to_load(configs: list[dict], repo_id: str | None) -> str:
    """The card's "How to load" code for the first config of `configs` (the card's `configs:` list): from
    the Hub dataset repo `repo_id`, or, for `repo_id=None`, from the export folder itself."""
    config = configs[0]["config_name"]
    files = configs[0].get("data_files") or [{"split": "train"}]
    split = next((f["split"] for f in files if f.get("split") == "test"), files[0].get("split", "train"))
    others = f"  # configs: {', '.join(c['config_name'] for c in configs)}" if len(configs) > 1 else ""
    if repo_id is None:
        return (f"Run in the export folder (or give its path):\n\n```python\nfrom datasets import load_dataset\n\n"
                f"ds = load_dataset(\".\", {json.dumps(config)}, split={json.dumps(split)}){others}\nprint(ds[0][\"text\"])\n```\n\n"
                "The tokenizer the karel_hf models use is in `tokenizer/`:\n\n```python\n"
                "from transformers import AutoTokenizer\n\ntok = AutoTokenizer.from_pretrained(\"tokenizer\")\n```")
    return (f"```python\nfrom datasets import load_dataset\n\nds = load_dataset({json.dumps(repo_id)}, {json.dumps(config)}, split={json.dumps(split)})"
            f"{others}\nprint(ds[0][\"text\"])\n```\n\n"
            "The tokenizer the karel_hf models use is in `tokenizer/` (a tokenizer folder inside a dataset repo: "
            "download it, then load the folder):\n\n```python\nfrom huggingface_hub import snapshot_download\n"
            "from transformers import AutoTokenizer\n\n"
            f"folder = snapshot_download({json.dumps(repo_id)}, repo_type=\"dataset\", allow_patterns=\"tokenizer/*\")\n"
            "tok = AutoTokenizer.from_pretrained(f\"{folder}/tokenizer\")\n```")


def card_for_repo(text: str, repo_id: str) -> str:
    """A karel_hf dataset card rendered for the Hub dataset repo `repo_id`: its "How to load" section
    (from the heading to the next one) rewritten by `how_to_load`. A card without that section is
    returned as it is."""
    card = DatasetCard(text)
    match = re.search(rf"^{re.escape(HOW_TO_LOAD_HEADING)}\n.*?(?=^## |\Z)", card.text, flags=re.S | re.M)
    configs = card.data.to_dict().get("configs")
    if match is None or not configs:
        return text
    section = f"{HOW_TO_LOAD_HEADING}\n\n{how_to_load(_as_list(configs), repo_id)}\n\n"
    card.text = card.text[: match.start()] + section + card.text[match.end():]
    return str(card)
