"""The presets: one commented YAML file per preset in this folder, and their loader.

A preset file holds everything a run sets, in four sections:

- `model`: the GPT-2 shape (`n_layer`, `n_embd`, `n_head`, `n_positions`), `position_init` and,
  optionally, `n_inner` (the MLP width; 4 x n_embd when absent or null) and `activation_function` (one of
  transformers' activations; GPT-2's `gelu_new` when absent) (karel_hf.modeling);
- `dataset`: the corpus, by `name`. In a file of this folder the other fields *define* that corpus
  (the fields of `karel_hf.data.KarelConfig`, with `description`): it becomes the dataset config
  `name` (`load_karel(name)`, config `name` of an exported dataset). A preset whose section only
  names a corpus uses the one another file (or `paper`, the KarelConfig defaults) defines;
- `training`: `karel-hf train` flags (karel_hf.training.arguments);
- `reproduce` (optional): the checkpoint sweep of `karel-hf reproduce` (karel_hf.reproduce);
- `curriculum` (optional): the presets (names, or files beside this one) trained before this one, in
  order, each starting from the model the one before it ended with; this preset's own training then
  starts from the last stage's model. `karel-hf reproduce` runs the stages; `karel-hf train` trains
  one stage, so this preset's own stage needs `--model_name_or_path`. Every stage has this preset's
  model section, and no stage has a curriculum of its own.

The presets are the files of this folder (`preset_names()`, smallest run first: fewest training
tokens). A file of your own (`--preset path/to/mine.yaml`) has the same sections, its `dataset`
fields then overriding those of the corpus it names; or it is a flat mapping of `karel-hf train`
flags, in JSON or YAML (keys starting with `_` are comments).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from karel_hf.utils import format_overrides

PRESET_DIR = Path(__file__).resolve().parent
SECTIONS = ("model", "dataset", "training", "reproduce", "curriculum")
MODEL_SHAPE = ("n_layer", "n_embd", "n_head", "n_positions")
MODEL_KEYS = (*MODEL_SHAPE, "n_inner", "position_init", "activation_function")
# `karel-hf train` flags that the model and dataset sections set; a training section may not repeat them.
SECTION_FLAGS = {"model_preset": "model", "position_init": "model", "dataset_config": "dataset",
                 "dataset_overrides": "dataset"}
_TOKEN_FACTORS = ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "block_size")


class PresetError(ValueError):
    """A preset name or file that cannot be used; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Preset:
    """One preset file, read: its sections as mappings (empty when absent; `reproduce` None)."""

    name: str  # the file's stem for a preset of this folder, else the path as given
    path: Path
    builtin: bool  # a file of this folder
    model: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    reproduce: dict | None = None
    curriculum: tuple = ()  # the stages trained before this one (preset names or paths), in order

    @property
    def corpus(self) -> str | None:
        """The dataset config the preset trains on."""
        return self.dataset.get("name")

    @property
    def corpus_fields(self) -> dict:
        """The dataset section without `name`: a corpus definition (this folder) or overrides (yours)."""
        return {k: v for k, v in self.dataset.items() if k != "name"}

    def train_arguments(self) -> dict:
        """The preset as `karel-hf train` argument values (what `--preset` sets before the flags)."""
        values = dict(self.training)
        if self.model:
            values["model_preset"] = self.name
            if "position_init" in self.model:
                values["position_init"] = self.model["position_init"]
        if self.dataset:
            values["dataset_config"] = self.corpus
            overrides = {k: v for k, v in self.corpus_fields.items() if k != "description"}
            if overrides and not self.builtin:
                values["dataset_overrides"] = format_overrides(overrides)
        return values

    def training_tokens(self) -> int:
        """max_steps x per-device batch x accumulation x block_size (1 for a missing factor): the run's size."""
        return math.prod(int(self.training.get(k, 1)) for k in _TOKEN_FACTORS)


@lru_cache(maxsize=1)
def preset_names() -> tuple[str, ...]:
    """The presets of this folder, smallest run first (then by name)."""
    presets = [load_preset(path.stem) for path in PRESET_DIR.glob("*.yaml")]
    return tuple(p.name for p in sorted(presets, key=lambda p: (p.training_tokens(), p.name)))


def preset_path(preset: str | Path) -> Path:
    """A preset name (a file of this folder) or the path to a .json/.yaml/.yml file."""
    builtin = PRESET_DIR / f"{preset}.yaml"
    if "/" not in str(preset) and builtin.is_file():
        return builtin
    path = Path(preset)
    if path.suffix in (".json", ".yaml", ".yml") and path.is_file():
        return path
    raise PresetError(
        f"unknown preset {str(preset)!r}; expected one of {', '.join(preset_names())} "
        "or the path to an existing .json/.yaml file of argument values"
    )


def load_preset(preset: str | Path) -> Preset:
    """Read a preset (a name of this folder or a file path) and check its sections.

    The files of this folder are read once; a file of yours is read again at every call.
    """
    path = preset_path(preset)
    if path.parent == PRESET_DIR:
        return _load_builtin(path.stem)
    return _read_preset(path, str(preset), builtin=False)


@lru_cache(maxsize=None)
def _load_builtin(name: str) -> Preset:
    return _read_preset(PRESET_DIR / f"{name}.yaml", name, builtin=True)


def _read_preset(path: Path, name: str, *, builtin: bool) -> Preset:
    text = path.read_text(encoding="utf-8")
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise PresetError(f"preset {path}: not valid {path.suffix[1:].upper()}: {err}") from None
    if not isinstance(values, dict):
        raise PresetError(f"preset {path}: expected a mapping of sections ({', '.join(SECTIONS)}) or of flags")
    if not any(k in SECTIONS for k in values):  # a flat file of karel-hf train flags
        if builtin:
            raise PresetError(f"preset {path}: expected the sections {', '.join(SECTIONS)}")
        return Preset(name, path, builtin, training={k: v for k, v in values.items() if not str(k).startswith("_")})
    unknown = [k for k in values if k not in SECTIONS]
    if unknown:
        raise PresetError(f"preset {path}: unknown section(s) {unknown}; expected {', '.join(SECTIONS)} "
                          "(or a flat file of karel-hf train flags without sections)")
    for section in SECTIONS:
        if section != "curriculum" and values.get(section) is not None and not isinstance(values[section], dict):
            raise PresetError(f"preset {path}: section {section!r} must be a mapping of names to values")
    stages = values.get("curriculum") or []
    if not isinstance(stages, list) or not all(isinstance(s, str) and s for s in stages):
        raise PresetError(f"preset {path}: section 'curriculum' must be a list of preset names or files, the stages "
                          f"trained before this one, got {stages!r}")
    preset = Preset(name, path, builtin, model=values.get("model") or {}, dataset=values.get("dataset") or {},
                    training=values.get("training") or {}, reproduce=values.get("reproduce"),
                    curriculum=tuple(_stage_reference(s, path, builtin) for s in stages))
    _check_sections(preset)
    _check_curriculum(preset)
    return preset


def _stage_reference(stage: str, path: Path, builtin: bool) -> str:
    """A curriculum entry as `load_preset` takes it: a name of this folder, or a file, relative to
    the preset that names it."""
    if builtin or (PRESET_DIR / f"{stage}.yaml").is_file() and "/" not in stage:
        return stage
    return str((path.parent / stage)) if not Path(stage).is_absolute() else stage


def _check_curriculum(preset: Preset) -> None:
    where = f"preset {preset.path}"
    for stage in preset.curriculum:
        try:
            loaded = load_preset(stage)
        except PresetError as err:
            raise PresetError(f"{where}: curriculum stage {stage!r}: {err}") from None
        if loaded.curriculum:
            raise PresetError(f"{where}: curriculum stage {stage!r} has a curriculum of its own; list its stages "
                              "in this preset's curriculum instead")
        if loaded.model != preset.model:
            raise PresetError(f"{where}: curriculum stage {stage!r} has another model section; every stage trains "
                              "the same model, so the sections must be equal")


def curriculum_stages(preset: str | Path) -> tuple[Preset, ...]:
    """The stages `karel-hf reproduce` trains for a preset, in order: its curriculum's presets, then the
    preset itself (one stage for a preset without a curriculum)."""
    loaded = load_preset(preset)
    return (*(load_preset(stage) for stage in loaded.curriculum), loaded)


def _check_sections(preset: Preset) -> None:
    where = f"preset {preset.path}"
    if preset.model:
        unknown = [k for k in preset.model if k not in MODEL_KEYS]
        missing = [k for k in MODEL_SHAPE if k not in preset.model]
        if unknown or missing:
            raise PresetError(f"{where}: the model section holds {', '.join(MODEL_KEYS)}"
                              f"{f'; unknown: {unknown}' if unknown else ''}{f'; missing: {missing}' if missing else ''}")
        bad = [k for k in MODEL_SHAPE if isinstance(preset.model[k], bool) or not isinstance(preset.model[k], int)]
        if bad:
            raise PresetError(f"{where}: model {', '.join(bad)} must be integers")
        inner = preset.model.get("n_inner")  # null: GPT-2's 4 x n_embd, as when absent
        if inner is not None and (isinstance(inner, bool) or not isinstance(inner, int) or inner < 1):
            raise PresetError(f"{where}: model n_inner (the MLP width) must be a positive integer or null, got {inner!r}")
        activation = preset.model.get("activation_function")  # the name is checked where the model is built
        if "activation_function" in preset.model and not (isinstance(activation, str) and activation):
            raise PresetError(f"{where}: model activation_function must be the name of one of transformers' "
                              f"activations, got {activation!r}")
    if preset.dataset and not isinstance(preset.corpus, str):
        raise PresetError(f"{where}: the dataset section needs `name`, the corpus (dataset config) to train on")
    owned = [k for k in preset.training if k in SECTION_FLAGS]
    if owned:
        raise PresetError(f"{where}: training sets {owned}; set them in the "
                          f"{' and '.join(sorted({SECTION_FLAGS[k] for k in owned}))} section instead")


@lru_cache(maxsize=1)
def corpora() -> dict[str, dict]:
    """Corpus name -> its fields (description included), for each corpus a preset of this folder defines,
    in preset order. Two files defining the same corpus is an error."""
    found: dict[str, dict] = {}
    defined_by: dict[str, str] = {}
    for name in preset_names():
        preset = load_preset(name)
        if preset.corpus is None or not preset.corpus_fields:
            continue
        if preset.corpus in found:
            raise PresetError(
                f"presets {defined_by[preset.corpus]}.yaml and {name}.yaml both define the corpus {preset.corpus!r}: "
                "keep its fields in one file and name it alone (`dataset: {name: ...}`) in the other"
            )
        found[preset.corpus], defined_by[preset.corpus] = dict(preset.corpus_fields), name
    return found
