"""The model cards karel_hf writes, rendered in one place.

- The full card: the top-level `model_card.md` (karel_hf/templates/ links to it, so wheels carry a
  copy), whose `${name}` placeholders `render_model_card` fills as `string.Template` does for
  dataset_card.md. Its values come from a run config (`card_values`: the resolved configuration a
  run records in karel_run_config.json) and where the model is: training writes the card into every
  checkpoint and the final model for their folders (`write_model_card`), and `karel-hf push model`
  renders it again from the same files for the repository (the repo's name as the model name, the
  `from_pretrained` arguments of each revision, the dataset repository).
- The minimal card: the push's fallback when they do not (`render_minimal_card`).
- The step card: what a `step-N` branch gets when its checkpoint has no card (`render_step_card`).

Every card opens with YAML metadata (`library_name`, `pipeline_tag`, and for the full card a
`model-index` with the real numbers, built with huggingface_hub's `EvalResult` and `ModelCardData`,
and `datasets:` when the data is a Hub dataset), so the Hub shows the model as a text-generation model
with its results; `check_card` parses a card with huggingface_hub's `ModelCard` and checks its
model-index round-trips.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from string import Template

import yaml

from karel_hf.utils import atomic_write_text

CARD_NAME = "README.md"
TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "model_card.md"
# The headline numbers that go into the card's model-index (all numbers go into its table).
MODEL_INDEX_METRICS = ("generation_accuracy", "generation_accuracy_all_pairs", "loss")
REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# What karel_run_config.json holds for a karel_hf run (`karel_hf.training.RunInfo.run_config`).
RUN_CONFIG_KEYS = ("model_args", "data_args", "training_args", "model_config", "num_parameters")


class PlaceholderError(KeyError):
    """A `${name}` placeholder of a card template has no value; `name` says which."""

    def __init__(self, name: str):
        super().__init__(f"model card placeholder ${{{name}}} has no value")
        self.name = name


def default_template() -> Path | None:
    """The model_card.md template, or None when this installation lacks it."""
    return TEMPLATE_PATH if TEMPLATE_PATH.is_file() else None


def render_model_card(values: dict, template: str | None = None) -> str:
    """Fill the `${name}` placeholders of the template (default: model_card.md); a missing value raises
    `PlaceholderError` (a KeyError) naming the placeholder, metadata huggingface_hub cannot read a
    ValueError (`check_card`)."""
    if template is None:
        path = default_template()
        if path is None:
            raise FileNotFoundError(f"model card template {TEMPLATE_PATH} not found: reinstall karel_hf")
        template = path.read_text(encoding="utf-8")
    try:
        card = Template(template).substitute(values)
    except KeyError as err:
        raise PlaceholderError(err.args[0]) from None
    check_card(card)
    return card


def check_card(text: str, model_name: str | None = None):
    """Parse a model card with huggingface_hub's `ModelCard` and return its `ModelCardData`; raise ValueError
    when its YAML does not parse, its model-index does not round-trip through `EvalResult`s, its model-index
    name is not `model_name` (when given), or it still holds a placeholder (`${name}`, `<this repo ...>`)."""
    from huggingface_hub import ModelCard  # here, not at the top: it loads huggingface_hub's client (seconds)
    from huggingface_hub.repocard_data import eval_results_to_model_index

    try:
        data = ModelCard(text, ignore_metadata_errors=False).data
    except (ValueError, TypeError, KeyError, yaml.YAMLError) as err:  # malformed YAML or model-index
        raise ValueError(f"the model card's metadata is not valid: {err}") from None
    index = data.to_dict().get("model-index")
    if data.eval_results:
        if eval_results_to_model_index(data.model_name, data.eval_results) != index:
            raise ValueError("the model card's model-index does not round-trip through huggingface_hub's EvalResult")
        if model_name is not None and data.model_name != model_name:
            raise ValueError(f"the model card's model-index names {data.model_name!r}, not {model_name!r}")
    left = re.search(r"\$\{\w+\}|<(this|your)[^<>\n]*>", text)
    if left:
        raise ValueError(f"the model card still holds the placeholder {left.group(0)}")
    return data


def write_model_card(directory, values: dict) -> Path:
    """Render the full card and write it to directory/README.md atomically."""
    return atomic_write_text(Path(directory) / CARD_NAME, render_model_card(values))


def format_value(value) -> str:
    """A number as cards show it (floats to 4 significant digits)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def latest_metrics(log_history: list[dict]) -> tuple[dict, int | None]:
    """The most recent eval_* numbers of a Trainer log (generation check and eval loss) and their step."""
    latest, step = {}, None
    for entry in log_history:
        numbers = {k[len("eval_") :]: v for k, v in entry.items()
                   if k.startswith("eval_") and isinstance(v, (int, float)) and not k.endswith(("runtime", "per_second"))}
        if numbers:
            latest.update(numbers)
            step = entry.get("step", step)
    return latest, step


def model_index_yaml(name: str, dataset_id: str, dataset_config: str, metrics: dict, samples: int) -> str:
    """The YAML `model-index` block with the real numbers (empty when there are none yet), written by
    huggingface_hub's `ModelCardData` from one `EvalResult` per number."""
    from huggingface_hub import EvalResult, ModelCardData  # here, not at the top: as in check_card

    metrics = {k: v for k, v in metrics.items() if k in MODEL_INDEX_METRICS}
    if not metrics:
        return ""
    results = [
        EvalResult(task_type="text-generation", task_name="Karel program synthesis", dataset_type=dataset_id,
                   dataset_name=f"Karel ({dataset_config})", dataset_config=dataset_config, dataset_split="validation",
                   metric_type=key, metric_value=round(float(value), 4),
                   metric_name="validation loss" if key == "loss"
                   else key.replace("_", " ") + f" (first {samples} validation programs)")
        for key, value in sorted(metrics.items())
    ]
    return ModelCardData(model_name=name, eval_results=results).to_yaml() + "\n"


def is_repo_id(value) -> bool:
    """Whether `value` reads as a Hub repository id (`namespace/name`)."""
    return isinstance(value, str) and bool(REPO_ID_PATTERN.match(value))


def training_precision(training_args: dict) -> str:
    """bf16, fp16 or fp32: what a run's training arguments (karel_run_config.json) trained in."""
    return "bf16" if training_args.get("bf16") else "fp16" if training_args.get("fp16") else "fp32"


def is_run_config(config: dict) -> bool:
    """Whether `config` is a karel_hf run config (what `card_values` reads)."""
    return all(key in config for key in RUN_CONFIG_KEYS)


def task_values(data_args: dict, model_args: dict) -> dict:
    """The card's words for the run's task and start: how many prompt pairs, which worlds and language,
    and whether training began from scratch or from another model (a Hub id, or a local folder by its
    name only). The task comes from the generated corpus's config (`dataset_config` with its overrides);
    a corpus read from `dataset_path` gets neutral words, since its config is not recorded."""
    from karel_hf.data.builder import CONFIG_NAMES, get_config  # here, not at the top: it loads `datasets`
    from karel_hf.utils import parse_overrides

    config = None
    if not data_args.get("dataset_path") and data_args.get("dataset_config") in CONFIG_NAMES:
        try:
            config = get_config(data_args["dataset_config"], **parse_overrides(data_args.get("dataset_overrides")))
        except ValueError:  # a run config from another version: the neutral words
            pass
    start = model_args.get("model_name_or_path")
    if start:
        name = start if is_repo_id(start) else Path(str(start)).name
        origin = f"starting from the model `{name}` (`model_name_or_path` in `karel_run_config.json`)"
    else:
        origin = "from scratch"
    cells = ("one token per two neighbouring cells of a grid row (`cells_per_token: 2`)"
             if data_args.get("cells_per_token", 1) == 2 else "one token per grid cell")
    if config is None:
        return {"origin": origin, "cell_tokens": cells, "examples": "input/output grid examples", "program_kind": "a program",
                "num_prompt_pairs": "prompt's", "last_pair": "N", "worlds": "its corpus's worlds",
                "language": "the Karel language of its corpus"}
    pairs = config.num_prompt_pairs
    extended = bool(config.extended)
    programs = "programs with `if`, `ifelse`, `repeat` and `while`" if extended else "straight-line programs"
    return {
        "origin": origin,
        "cell_tokens": cells,
        "examples": f"{pairs} input/output grid example{'s' if pairs != 1 else ''}",
        "program_kind": "a program (with `if`, `ifelse`, `repeat` and `while` where it needs them)" if extended
                        else "a straight-line program",
        "num_prompt_pairs": str(pairs),
        "last_pair": str(pairs - 1),
        "worlds": (f"{config.height}x{config.width} worlds (the prompt shows the {config.height - 2}x{config.width - 2}"
                   " cells inside their wall border)"),
        "language": f"{programs} of {config.min_length} to {config.max_length} actions",
    }


def card_values(run_config: dict, *, model_name: str, global_step: int, log_history: list[dict], model_ref: str,
                dataset_repo_id: str | None = None) -> dict:
    """The full card's values from a run config (karel_run_config.json) and the Trainer's log at `global_step`.

    `model_name` names the model (the model-index name: the repo's name on the Hub); `model_ref` is the
    `from_pretrained` arguments as Python source (`'"ns/model", revision="step-20"'`); `dataset_repo_id`, a
    Hub dataset repository holding the training data, becomes the card's `datasets:` and dataset link
    (default: the run's `dataset_id` when it is a repo id).
    """
    t, d, c, m = (run_config[k] for k in ("training_args", "data_args", "model_config", "model_args"))
    dataset_repo_id = dataset_repo_id or (d["dataset_id"] if is_repo_id(d.get("dataset_id")) else None)
    dataset_id = dataset_repo_id or d.get("dataset_id") or "karel"
    metrics, metrics_step = latest_metrics(log_history)
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items())) or "| (no evaluation yet) | |"
    tokens_per_step = (t["per_device_train_batch_size"] * t["gradient_accumulation_steps"]
                       * run_config.get("world_size", 1) * d["block_size"])
    versions = run_config.get("versions") or {}
    precision = training_precision(t)
    return {
        "model_name": model_name,
        "model_ref": model_ref,
        "datasets": f"datasets:\n- {dataset_repo_id}\n" if dataset_repo_id else "",
        "dataset_link": (f"[`{dataset_repo_id}`](/datasets/{dataset_repo_id}) (config `{d['dataset_config']}`)"
                         if dataset_repo_id else f"generated with `karel_hf.data.load_karel(\"{d['dataset_config']}\")`"),
        "dataset_config": d["dataset_config"],
        "dataset_overrides": d.get("dataset_overrides") or "none",
        "model_index": model_index_yaml(model_name, dataset_id, d["dataset_config"], metrics, t["generation_eval_samples"]),
        "preset": run_config.get("preset") or "none (flags only)",
        "model_preset": m["model_preset"],
        "n_layer": c["n_layer"],
        "n_embd": c["n_embd"],
        "n_head": c["n_head"],
        "n_positions": c["n_positions"],
        "position_init": m["position_init"],
        "vocab_size": c["vocab_size"],
        "num_parameters": f"{run_config['num_parameters']:,}",
        "loss_on": d["loss_on"],
        "program_weight_note": ("" if d.get("program_loss_weight", 1) == 1
                                else f", each program token weighted {d['program_loss_weight']:g}x"),
        "block_size": d["block_size"],
        "packing": "packed" if d["packing"] else "one padded sample per row",
        "learning_rate": t["learning_rate"],
        "lr_scheduler_type": t["lr_scheduler_type"],
        "warmup_steps": t["warmup_steps"],
        "max_steps": t["max_steps"],
        "tokens_per_step": f"{tokens_per_step:,}",
        "global_step": global_step,
        "tokens_seen": f"{global_step * tokens_per_step:,}",
        "precision": "bf16 autocast" if precision == "bf16" else precision,
        "seed": t["seed"],
        "results_step": metrics_step if metrics_step is not None else "-",
        "results_table": rows,
        "generation_eval_samples": t["generation_eval_samples"],
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        **task_values(d, m),
    }


def python_args(repo_or_folder: str, revision: str | None = None) -> str:
    """`from_pretrained` arguments as Python source: `"ns/model"` or `"ns/model", revision="step-20"`."""
    return json.dumps(str(repo_or_folder)) + (f", revision={json.dumps(revision)}" if revision else "")


_MINIMAL_CARD = """---
library_name: transformers
pipeline_tag: text-generation
tags:
- karel
- program-synthesis
- gpt2
---

# ${model_name}

A GPT-2 language model trained on Karel programs with `karel_hf` (${num_parameters} parameters;
${n_layer} layers, hidden size ${n_embd}, ${n_head} heads, vocabulary ${vocab_size}, context ${n_positions}).
Trained for ${global_step} steps.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("${repo_id}")
tokenizer = AutoTokenizer.from_pretrained("${repo_id}")
```

## Results

| metric | value |
|---|---|
${results_table}
"""


def render_minimal_card(values: dict) -> str:
    """The short card: model_name, repo_id, the shape (n_layer, n_embd, n_head, vocab_size, n_positions),
    num_parameters, global_step and a results_table."""
    return Template(_MINIMAL_CARD).substitute(values)


def render_step_card(repo_id: str, branch: str, step: int, max_step, meta: dict, log_history: list[dict]) -> str:
    """The card of branch `branch` (checkpoint `step` of a run of `max_step` steps): the main card's
    metadata without its results, how to load the branch, and what the Trainer logged at that step."""
    meta = {k: v for k, v in meta.items() if k != "model-index"}  # the main card's results are the final model's
    header = f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n" if meta else ""
    logged = [e for e in log_history if e.get("step", -1) <= step]
    at = max((e["step"] for e in logged), default=None)
    rows = {k: v for e in logged if e["step"] == at for k, v in e.items() if k != "step" and isinstance(v, (int, float))}
    if rows:
        table = (f"Logged at step {at} (trainer_state.json):\n\n| key | value |\n|---|---|\n"
                 + "\n".join(f"| {k} | {format_value(v)} |" for k, v in sorted(rows.items())))
    else:
        table = "Nothing was logged up to this step."
    return (f"{header}# {repo_id.split('/')[-1]} at training step {step}\n\n"
            f"Branch `{branch}` of [`{repo_id}`](../../tree/main) holds the model saved at step {step}"
            f"{f' of {max_step}' if max_step is not None else ''}: weights, config, generation config and "
            "tokenizer; no optimizer, scheduler or RNG state. The main branch's card reports the final model.\n\n"
            f"```python\nfrom transformers import AutoModelForCausalLM\n"
            f"model = AutoModelForCausalLM.from_pretrained(\"{repo_id}\", revision=\"{branch}\")\n```\n\n"
            f"{table}\n")
