"""Export a Karel config as the Hub layout: Parquet per config and split, the tokenizer, a card.

    DIR/README.md                              dataset card (YAML `configs:` + `dataset_info:`)
    DIR/<config>/<split>-00000-of-00002.parquet
    DIR/tokenizer/                             AutoTokenizer-loadable

so `load_dataset(DIR, "<config>", split="test")` (and `streaming=True`) needs no karel_hf code.
`karel-hf push dataset` publishes it with the card's "How to load" code rewritten for the
repository (`card_for_repo`). Several configs can be exported into one DIR: the card
lists all of them. Shard boundaries depend only on the split size, so the same config and seed give
byte-identical Parquet whatever `num_proc` built the data. Every file is written to a temporary
name first and renamed, so an interrupted export never leaves a half-written file.
"""

from __future__ import annotations

import json
import math
import re
import string
from pathlib import Path

from datasets import DatasetInfo, SplitDict, SplitInfo
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from karel_hf import __version__
from karel_hf.tokenizer import build_tokenizer, load_tokenizer
from karel_hf.utils import atomic_path, atomic_write_text

from .builder import SPLITS, _CITATION, _LICENSE, get_config, load_karel

ROWS_PER_SHARD = 100_000
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
    """The dataset card: front matter merged with configs exported earlier into the same folder.

    The metadata is written as datasets' own `push_to_hub` writes it (`MetadataConfigs` and
    `DatasetInfosDict` into a `DatasetCardData`): `configs:` with the data files, `dataset_info:` with
    features and, per split, `num_examples` and `num_bytes` (datasets ignores a split list without them).
    """
    readme = out / "README.md"
    card_data = DatasetCard.load(readme).data if readme.is_file() else DatasetCardData()
    splits = [s for s in SPLITS if s in dataset]
    first = dataset[splits[0]]
    info = DatasetInfo(features=first.features, config_name=config_name)
    info.splits = SplitDict(dataset_name=config_name)
    for split in splits:
        info.splits.add(SplitInfo(split, num_bytes=dataset[split].data.nbytes, num_examples=len(dataset[split])))
    info.dataset_size = sum(s.num_bytes for s in info.splits.values())
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

    example = dict(first[0])
    tokenizer = load_tokenizer(out / "tokenizer")
    sample_tokens = len(tokenizer(example["text"])["input_ids"])
    example_json = {k: v for k, v in example.items() if k not in ("inputs", "outputs", "text")}
    split_table = "\n".join(
        f"| {config_name} | {s} | {len(dataset[s]):,} | {'-'.join(map(str, config.lengths(s)))} |" for s in splits
    )
    fields = {
        "config_name": config_name,
        "version": __version__,
        "split_table": split_table,
        "how_to_load": how_to_load(_as_list(card_data["configs"]), repo_id=None),
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
