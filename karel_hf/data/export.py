"""Export a Karel config as the Hub layout: Parquet per config and split, the tokenizer, a card.

    DIR/README.md                              dataset card (YAML `configs:` + `dataset_info:`)
    DIR/<config>/<split>-00000-of-00002.parquet
    DIR/tokenizer/                             AutoTokenizer-loadable

so `load_dataset(DIR, "<config>", split="test")` (and `streaming=True`) needs no karel_hf code,
and `upload_folder` publishes it as is. Several configs can be exported into one DIR: the card
lists all of them. Shard boundaries depend only on the split size, so the same config and seed give
byte-identical Parquet whatever `num_proc` built the data. Every file is written to a temporary
name first and renamed, so an interrupted export never leaves a half-written file.
"""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

import yaml

from karel_hf import __version__
from karel_hf.tokenizer import build_tokenizer, load_tokenizer
from karel_hf.utils import atomic_path, atomic_write_text

from .builder import SPLITS, _CITATION, _LICENSE, get_config, load_karel

ROWS_PER_SHARD = 100_000
# The top-level dataset_card.md; karel_hf/templates/ links to it so wheels carry a copy.
CARD_TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "dataset_card.md"


def _size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M")]
    for bound, label in bounds:
        if n < bound:
            return label
    return "10M<n<100M"


def _read_front_matter(readme: Path) -> dict:
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}
    return yaml.safe_load(text[4 : text.index("\n---", 4)]) or {}


def export_dataset(config: str, output_dir, *, num_proc: int | None = None, cache_dir: str | None = None,
                   rows_per_shard: int = ROWS_PER_SHARD, **overrides) -> Path:
    """Generate `config` (with field overrides) and write it to `output_dir` in the Hub layout."""
    resolved = get_config(config, **overrides)
    out = Path(output_dir)
    (out / config).mkdir(parents=True, exist_ok=True)
    dataset = load_karel(config, cache_dir=cache_dir, num_proc=num_proc, **overrides)

    for split in SPLITS:
        if split not in dataset:
            continue
        ds = dataset[split]
        for stale in (out / config).glob(f"{split}-*.parquet"):
            stale.unlink()
        num_shards = max(1, math.ceil(len(ds) / rows_per_shard))
        for index in range(num_shards):
            path = out / config / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
            with atomic_path(path) as tmp:
                ds.shard(num_shards, index, contiguous=True).to_parquet(str(tmp))

    with atomic_path(out / "tokenizer", directory=True) as tmp:
        build_tokenizer().save_pretrained(str(tmp))
    atomic_write_text(out / "README.md", render_card(out, config, resolved, dataset))
    return out


def render_card(out: Path, config_name: str, config, dataset) -> str:
    """The dataset card: front matter merged with configs exported earlier into the same folder."""
    meta = _read_front_matter(out / "README.md")
    configs = [c for c in meta.get("configs", []) if c.get("config_name") != config_name]
    configs.append({
        "config_name": config_name,
        "data_files": [{"split": s, "path": f"{config_name}/{s}-*.parquet"} for s in SPLITS if s in dataset],
    })
    infos = [i for i in meta.get("dataset_info", []) if i.get("config_name") != config_name]
    first = dataset[next(iter(dataset))]
    info = first.info._to_yaml_dict()
    infos.append({"config_name": config_name, "features": info["features"], "splits": [
        {"name": s, "num_examples": len(dataset[s])} for s in SPLITS if s in dataset]})
    configs.sort(key=lambda c: c["config_name"])
    infos.sort(key=lambda c: c["config_name"])
    total = sum(s["num_examples"] for i in infos for s in i["splits"])
    front = {
        "license": _LICENSE.lower(),
        "task_categories": ["text-generation"],
        "tags": ["karel", "program-synthesis", "interpretability", "probing", "code"],
        "pretty_name": "Karel programs with input/output examples",
        "size_categories": [_size_category(total)],
        "configs": configs,
        "dataset_info": infos,
    }

    example = dict(first[0])
    tokenizer = load_tokenizer(out / "tokenizer")
    sample_tokens = len(tokenizer(example["text"])["input_ids"])
    example_json = {k: v for k, v in example.items() if k not in ("inputs", "outputs", "text")}
    split_table = "\n".join(
        f"| {config_name} | {s} | {len(dataset[s]):,} | {'-'.join(map(str, config.lengths(s)))} |"
        for s in SPLITS if s in dataset
    )
    fields = {
        "config_name": config_name,
        "version": __version__,
        "split_table": split_table,
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
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + body
