"""The model cards karel_hf writes, rendered in one place.

- The full card: the top-level `model_card.md` (karel_hf/templates/ links to it, so wheels carry a
  copy), whose `${name}` placeholders `render_model_card` fills as `string.Template` does for
  dataset_card.md. Training writes it into every checkpoint and the final model (`write_model_card`,
  values from `karel_hf.training.RunInfo`); `karel-hf push model` renders it for a run folder that
  has no README.md when the run's files fill every placeholder.
- The minimal card: the push's fallback when they do not (`render_minimal_card`).
- The step card: what a `step-N` branch gets when its checkpoint has no card (`render_step_card`).

Every card opens with YAML metadata (`library_name`, `pipeline_tag`, and for the full card a
`model-index` with the real numbers, `model_index_yaml`), so the Hub shows the model as a
text-generation model with its results.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

import yaml

from karel_hf.utils import atomic_write_text

CARD_NAME = "README.md"
TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "model_card.md"
# The headline numbers that go into the card's model-index (all numbers go into its table).
MODEL_INDEX_METRICS = ("generation_accuracy", "generation_accuracy_all_pairs", "loss")


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
    `PlaceholderError` (a KeyError) naming the placeholder."""
    if template is None:
        path = default_template()
        if path is None:
            raise FileNotFoundError(f"model card template {TEMPLATE_PATH} not found: reinstall karel_hf")
        template = path.read_text(encoding="utf-8")
    try:
        return Template(template).substitute(values)
    except KeyError as err:
        raise PlaceholderError(err.args[0]) from None


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
    """The YAML `model-index` block with the real numbers (empty when there are none yet)."""
    metrics = {k: v for k, v in metrics.items() if k in MODEL_INDEX_METRICS}
    if not metrics:
        return ""
    results = [{
        "task": {"type": "text-generation", "name": "Karel program synthesis"},
        "dataset": {"type": dataset_id, "name": f"Karel ({dataset_config})", "config": dataset_config,
                    "split": "validation"},
        "metrics": [
            {"type": key, "value": round(float(value), 4),
             "name": "validation loss" if key == "loss" else key.replace("_", " ") + f" (first {samples} validation programs)"}
            for key, value in sorted(metrics.items())
        ],
    }]
    return yaml.safe_dump({"model-index": [{"name": name, "results": results}]}, sort_keys=False)


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
