"""Presets: one commented YAML file each (model, dataset, training, reproduce), the list of presets
from the folder, corpora defined once, files of your own and flag overrides."""

import subprocess
import sys

import pytest
import yaml

from karel_hf import presets
from karel_hf.data import CONFIG_NAMES, get_config
from karel_hf.modeling import MODEL_PRESETS
from karel_hf.presets import PRESET_DIR, PresetError, corpora, load_preset, preset_names
from karel_hf.reproduce import ReproduceArguments, reproduce_preset, reproduce_preset_names
from karel_hf.training import PRESET_NAMES, TrainArgumentError, parse_train_args


def test_the_presets_are_the_files_of_the_folder_smallest_run_first():
    files = {p.stem for p in PRESET_DIR.glob("*.yaml")}
    assert set(preset_names()) == files == set(PRESET_NAMES) == set(MODEL_PRESETS)
    sizes = [load_preset(name).training_tokens() for name in preset_names()]
    assert sizes == sorted(sizes)
    assert set(reproduce_preset_names()) == {n for n in files if load_preset(n).reproduce is not None}
    for path in PRESET_DIR.glob("*.yaml"):
        text = path.read_text()
        assert text.startswith(f"# {path.stem}: ")  # each file says what it is for
        assert set(yaml.safe_load(text)) <= set(presets.SECTIONS)


def test_cli_help_lists_every_preset_and_corpus():
    out = subprocess.run([sys.executable, "-m", "karel_hf.cli", "--help"], capture_output=True, text=True, check=True)
    assert "|".join(preset_names()) in " ".join(out.stdout.split()).replace("| ", "|").replace("- ", "-")  # argparse wraps at | and -
    out = subprocess.run([sys.executable, "-m", "karel_hf.cli", "dataset", "export", "--help"], capture_output=True,
                         text=True, check=True)
    assert all(name in out.stdout for name in corpora())


def test_corpora_come_from_the_presets_and_demo_shares_the_cpu_task():
    assert CONFIG_NAMES == ("paper", *corpora())
    for name in preset_names():
        assert load_preset(name).corpus in CONFIG_NAMES
    cpu, demo = get_config("cpu").generator_fields(), get_config("demo").generator_fields()
    # the cpu task, fewer training programs and a smaller test split
    assert {k for k in cpu if cpu[k] != demo[k]} == {"train_size", "test_size"}


def test_the_cpu_and_demo_presets_count_program_tokens_four_times_and_the_others_once(tmp_path):
    weights = {name: parse_train_args(["--preset", name, "--output_dir", str(tmp_path), "--model_name_or_path",
                                       str(tmp_path)])[1].program_loss_weight
               for name in preset_names()}
    fours = ("cpu", "demo", "cpu-cf", "cpu-cf-stage1", "cpu-cf-stage2")
    assert weights == {**{name: 1 for name in preset_names()}, **{name: 4 for name in fours}}
    flag = parse_train_args(["--preset", "cpu", "--output_dir", str(tmp_path), "--program_loss_weight", "1"])
    assert flag[1].program_loss_weight == 1  # the paper's loss, from the flag


def test_the_demo_preset_computes_gpt2s_gelu_as_one_kernel_and_the_others_as_gpt2_does(tmp_path):
    from karel_hf.modeling import model_config
    from karel_hf.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    activation = {name: model_config(name, tokenizer).activation_function for name in preset_names()}
    assert activation == {name: "gelu_pytorch_tanh" if name == "demo" else "gelu_new" for name in preset_names()}
    mine = tmp_path / "mine.yaml"
    mine.write_text("model: {n_layer: 1, n_embd: 8, n_head: 2, n_positions: 16, activation_function: relu}\n")
    assert model_config(str(mine), tokenizer).activation_function == "relu"
    # a flag still wins over the file
    assert model_config(str(mine), tokenizer, config_overrides="activation_function=gelu_new").activation_function \
        == "gelu_new"


def test_an_activation_transformers_does_not_know_is_one_line_naming_it(tmp_path):
    from karel_hf.modeling import ModelPreset

    mine = tmp_path / "mine.yaml"
    mine.write_text("model: {n_layer: 1, n_embd: 8, n_head: 2, n_positions: 16, activation_function: gelu_fancy}\n")
    message = r"model activation_function 'gelu_fancy' is not one of transformers' activations \(gelu, "
    with pytest.raises(PresetError, match=message):
        ModelPreset.of(str(mine))
    with pytest.raises(TrainArgumentError, match=message) as err:
        parse_train_args(["--preset", str(mine), "--output_dir", str(tmp_path)])
    assert "\n" not in str(err.value)


def test_a_preset_may_set_the_mlp_width(tmp_path):
    """`n_inner` in the model section is GPT-2's MLP width (4 x n_embd when absent)."""
    from transformers import AutoModelForCausalLM

    from karel_hf.modeling import ModelPreset, build_model
    from karel_hf.tokenizer import build_tokenizer

    mine = tmp_path / "mine.yaml"
    mine.write_text("model: {n_layer: 1, n_embd: 16, n_head: 2, n_positions: 64, n_inner: 24}\n")
    assert ModelPreset.of(str(mine)).n_inner == 24
    model = build_model(str(mine), build_tokenizer())
    assert model.config.n_inner == 24 and model.transformer.h[0].mlp.c_fc.weight.shape == (16, 24)
    model.save_pretrained(tmp_path / "saved")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "saved").transformer.h[0].mlp.c_proj.weight.shape == (24, 16)
    # the demo's MLP is a quarter of GPT-2's (LOG.md E29), the cpu-cf curriculum's half (E82); the others 4 x n_embd
    widths = {"demo": 128, "cpu-cf": 256, "cpu-cf-stage1": 256, "cpu-cf-stage2": 256}
    assert {name: ModelPreset.of(name).n_inner for name in preset_names()} == {
        name: widths.get(name) for name in preset_names()}
    assert build_model("tiny", build_tokenizer()).transformer.h[0].mlp.c_fc.weight.shape[1] == 4 * ModelPreset.of("tiny").n_embd
    mine.write_text("model: {n_layer: 1, n_embd: 16, n_head: 2, n_positions: 64, n_inner: null}\n")
    assert build_model(str(mine), build_tokenizer()).transformer.h[0].mlp.c_fc.weight.shape == (16, 64)


def test_reading_the_presets_does_not_import_torch():
    """`karel-hf --help` reads every preset: it must stay fast (no torch, no transformers models)."""
    code = "import sys; from karel_hf.presets import load_preset, preset_names; [load_preset(n) for n in preset_names()]; " \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_preset_file_of_your_own(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "# my run\nmodel: {n_layer: 3, n_embd: 96, n_head: 3, n_positions: 128, position_init: sinusoidal}\n"
        "dataset: {name: tiny, train_size: 100}\ntraining: {max_steps: 7, block_size: 128}\n"
        "reproduce: {test_specs: 4, probe_train_specs: 8}\n")
    model_args, data_args, args, preset = parse_train_args(["--preset", str(mine), "--output_dir", str(tmp_path),
                                                            "--max_steps", "9"])
    assert preset == str(mine) and model_args.model_preset == str(mine) and model_args.position_init == "sinusoidal"
    assert data_args.dataset_config == "tiny" and data_args.load_karel_overrides() == {"train_size": 100}
    assert args.max_steps == 9 and data_args.block_size == 128  # flags override the file
    from karel_hf.modeling import model_config
    from karel_hf.tokenizer import build_tokenizer

    config = model_config(model_args.model_preset, build_tokenizer())
    assert (config.n_layer, config.n_embd, config.n_head, config.n_positions) == (3, 96, 3, 128)
    resolved = ReproduceArguments(output_dir=str(tmp_path), preset=str(mine)).resolved()
    assert resolved.train_preset == str(mine) and resolved.test_specs == 4
    assert resolved.probe_threads == 1  # the default: one BLAS thread for the probes
    assert ReproduceArguments(output_dir=str(tmp_path), preset=str(mine), probe_threads=0).resolved().probe_threads == 0
    with pytest.raises(ValueError, match="probe_threads: must be an integer >= 0"):
        ReproduceArguments(output_dir=str(tmp_path), preset=str(mine), probe_threads=-1)
    text = mine.read_text()
    for bad in ("-2", "two", "true"):  # a bad value in the file: one line naming the key
        mine.write_text(text.replace("probe_train_specs: 8}", f"probe_train_specs: 8, probe_threads: {bad}}}"))
        with pytest.raises(ValueError, match=r"reproduce section: probe_threads: must be an integer >= 0"):
            ReproduceArguments(output_dir=str(tmp_path), preset=str(mine))
    mine.write_text(text)
    assert resolved.eval_workers == 1  # the default: the evaluate stage in this process
    assert ReproduceArguments(output_dir=str(tmp_path), preset=str(mine), eval_workers=3).resolved().eval_workers == 3
    with pytest.raises(ValueError, match="eval_workers: must be an integer >= 1, got 0"):
        ReproduceArguments(output_dir=str(tmp_path), preset=str(mine), eval_workers=0)
    mine.write_text(text.replace("probe_train_specs: 8}", "probe_train_specs: 8, eval_workers: 1.5}"))
    with pytest.raises(ValueError, match=r"reproduce section: eval_workers: must be an integer >= 1, got 1.5"):
        ReproduceArguments(output_dir=str(tmp_path), preset=str(mine))
    for bad, message in (("trajectory_stride: 0", "trajectory_stride: must be an integer >= 1, got 0"),
                         ("trajectory_test_specs: many", "trajectory_test_specs: must be an integer >= 0 "
                                                          r"\(0 or null: not read\), got 'many'")):
        mine.write_text(text.replace("probe_train_specs: 8}", f"probe_train_specs: 8, {bad}}}"))
        with pytest.raises(ValueError, match=f"reproduce section: {message}"):
            ReproduceArguments(output_dir=str(tmp_path), preset=str(mine))
    mine.write_text(text)
    assert reproduce_preset("cpu-cf").trajectory_test_specs == 5000 and resolved.trajectory_test_specs is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("modle: {}\ntraining: {}\n", r"unknown section\(s\) \['modle'\]"),
        ("model: {n_layer: 2}\n", r"missing: \['n_embd', 'n_head', 'n_positions'\]"),
        ("dataset: {train_size: 5}\n", "needs `name`"),
        ("training: {dataset_config: tiny}\n", "set them in the dataset section"),
        ("model: {n_layer: 1, n_embd: 8, n_head: 2, n_positions: 16, activation_function: 3}\n",
         "model activation_function must be the name of one of transformers' activations, got 3"),
        ("model: {n_layer: 1, n_embd: 8, n_head: 2, n_positions: 16, n_inner: 0}\n",
         "model n_inner \\(the MLP width\\) must be a positive integer or null, got 0"),
        ("model: {n_layer: 1, n_embd: 8, n_head: 2, n_positions: 16, n_inner: wide}\n",
         "model n_inner \\(the MLP width\\) must be a positive integer or null, got 'wide'"),
        ("model: {n_layer: 1, n_embd: 8, n_head: 2, n_positions: 16, n_inner: true}\n",
         "model n_inner \\(the MLP width\\) must be a positive integer or null, got True"),
    ],
)
def test_preset_file_errors_name_the_key(tmp_path, text, message):
    mine = tmp_path / "mine.yaml"
    mine.write_text(text)
    with pytest.raises(PresetError, match=message):
        load_preset(str(mine))
    with pytest.raises(TrainArgumentError, match=message):
        parse_train_args(["--preset", str(mine), "--output_dir", str(tmp_path)])


@pytest.fixture
def preset_folder(tmp_path, monkeypatch):
    """An empty preset folder in place of karel_hf/presets, with the caches cleared before and after."""
    caches = (presets.preset_names, presets._load_builtin, presets.corpora)
    for cache in caches:
        cache.cache_clear()
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path)
    yield tmp_path
    monkeypatch.undo()
    for cache in caches:
        cache.cache_clear()


def test_a_corpus_is_defined_in_one_file(preset_folder):
    body = "model: {n_layer: 1, n_embd: 8, n_head: 1, n_positions: 8}\ntraining: {max_steps: %d}\n"
    (preset_folder / "a.yaml").write_text(body % 1 + "dataset: {name: mine, train_size: 10}\n")
    (preset_folder / "b.yaml").write_text(body % 2 + "dataset: {name: mine}\n")
    assert preset_names() == ("a", "b") and corpora() == {"mine": {"train_size": 10}}
    (preset_folder / "b.yaml").write_text(body % 2 + "dataset: {name: mine, train_size: 20}\n")
    presets._load_builtin.cache_clear()
    presets.corpora.cache_clear()
    with pytest.raises(PresetError, match="a.yaml and b.yaml both define the corpus 'mine'"):
        corpora()
