"""Training with Trainer: tokenisation and packing, loss masking, flags and presets, the generation
callback, the model card, a tiny end-to-end run, and kill-then-resume."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from karel_hf import training
from karel_hf.data.formatting import split_sample
from karel_hf.modeling import sinusoidal_table
from karel_hf.presets import load_preset
from karel_hf.training import (
    CausalLMCollator,
    GenerationAccuracyCallback,
    TrainArgumentError,
    pack_blocks,
    parse_train_args,
    prepare_lm_dataset,
    render_model_card,
    tokenize_from_arrays,
    tokenize_samples,
)

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
# The tiny preset, fixed here so the reference run and the resumed run agree step for step.
RUN_FLAGS = ["--preset", "tiny", "--logging_steps", "1", "--save_steps", "10", "--lr_scheduler_type",
             "constant_with_warmup", "--generation_eval_steps", "10", "--report_to", "tensorboard"]


@pytest.fixture(scope="module")
def tokenizer():
    from karel_hf.tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="module")
def tiny():
    from karel_hf.data.builder import load_karel

    return load_karel("tiny")


# ----------------------------------------------------------------------------- data preparation
def test_tokenisation_matches_the_tokenizer_and_ends_with_eos(tokenizer, tiny):
    texts = tiny["train"]["text"][:5]
    out = tokenize_samples(texts, tokenizer, "all")
    for text, ids, labels in zip(texts, out["input_ids"], out["labels"]):
        assert ids == tokenizer(text).input_ids + [tokenizer.eos_token_id]
        assert ids[0] == tokenizer.bos_token_id
        assert labels == ids


def test_program_loss_masks_exactly_outside_program_and_eos(tokenizer, tiny):
    texts = tiny["train"]["text"][:5]
    out = tokenize_samples(texts, tokenizer, "program")
    for text, ids, labels in zip(texts, out["input_ids"], out["labels"]):
        prompt, program = split_sample(text)
        n_prompt = len(tokenizer(prompt).input_ids)
        kept = [i for i, label in enumerate(labels) if label != -100]
        assert kept == list(range(n_prompt, len(ids)))  # the program tokens and the final eos
        assert [labels[i] for i in kept] == ids[n_prompt:]
        assert tokenizer.decode(ids[n_prompt:-1]) == program
        assert ids[-1] == tokenizer.eos_token_id
        assert tokenizer.convert_ids_to_tokens(ids[n_prompt - 1]) == "Code:\n"


@pytest.mark.parametrize("loss_on", ["all", "program"])
def test_array_tokenisation_equals_text_tokenisation(tokenizer, tiny, loss_on):
    rows = tiny["train"][:12]
    assert tokenize_from_arrays(rows, tokenizer, loss_on) == tokenize_samples(rows["text"], tokenizer, loss_on)
    assert tokenize_from_arrays({"text": rows["text"]}, tokenizer, loss_on) is None  # not corpus rows


def test_packing_shapes(tokenizer, tiny):
    block = 128
    batch = tokenize_samples(tiny["train"]["text"][:10], tokenizer, "program")
    packed = pack_blocks(batch, block)
    total = sum(len(r) for r in batch["input_ids"])
    assert len(packed["input_ids"]) == total // block
    assert all(len(r) == block for key in ("input_ids", "labels") for r in packed[key])
    flat = [t for r in batch["input_ids"] for t in r]
    assert [t for r in packed["input_ids"] for t in r] == flat[: total // block * block]

    ds = prepare_lm_dataset(tiny["validation"], tokenizer, block_size=block, max_samples=20)
    assert set(ds.column_names) == {"input_ids", "labels"} and len(ds) > 0
    assert {len(r) for r in ds["input_ids"]} == {block}


def test_collator_stacks_packed_blocks_and_pads_samples(tokenizer, tiny):
    collate = CausalLMCollator(tokenizer.pad_token_id)
    packed = collate([{"input_ids": [5] * 8, "labels": [5] * 8}] * 3)
    assert packed["input_ids"].shape == (3, 8) and "attention_mask" not in packed
    unpacked = prepare_lm_dataset(tiny["validation"], tokenizer, block_size=512, packing=False, max_samples=4)
    rows = [unpacked[i] for i in range(4)]
    batch = collate(rows)
    width = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (4, width)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        assert batch["attention_mask"][i].sum() == n
        assert (batch["labels"][i, n:] == -100).all() and (batch["input_ids"][i, n:] == tokenizer.pad_token_id).all()


@pytest.mark.parametrize("block", [37, 96, 512])
def test_program_token_mask_finds_the_tokens_loss_on_program_keeps(tokenizer, tiny, block):
    """On packed blocks (37: blocks that start inside a prompt or a program), the mask computed from the
    labels of loss_on all is exactly where loss_on program keeps a label."""
    from karel_hf.training.loss import ProgramWeightedLoss, program_token_mask

    texts = tiny["train"]["text"][:12]
    every = pack_blocks(tokenize_samples(texts, tokenizer, "all"), block)
    program = pack_blocks(tokenize_samples(texts, tokenizer, "program"), block)
    loss = ProgramWeightedLoss.for_tokenizer(2.0, tokenizer)
    mask = program_token_mask(torch.tensor(every["labels"]), loss.code_id, loss.bos_id)
    assert torch.equal(mask, torch.tensor(program["labels"]) != -100)
    assert 0 < mask.float().mean() < 0.5


def test_program_weighted_loss_is_the_models_loss_at_weight_1_and_a_weighted_mean_otherwise(tokenizer, tiny):
    from transformers import GPT2LMHeadModel

    from karel_hf.modeling import model_config
    from karel_hf.training.loss import ProgramWeightedLoss

    torch.manual_seed(0)
    model = GPT2LMHeadModel(model_config("tiny", tokenizer)).eval()
    texts = tiny["train"]["text"][:6]
    rows = [{"input_ids": i, "labels": l} for i, l in zip(*tokenize_samples(texts, tokenizer, "all").values())]
    batch = CausalLMCollator(tokenizer.pad_token_id)(rows)  # padded: -100 labels on the padding
    program = CausalLMCollator(tokenizer.pad_token_id)(
        [{"input_ids": i, "labels": l} for i, l in zip(*tokenize_samples(texts, tokenizer, "program").values())])
    with torch.no_grad():
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        own = model(**batch).loss
        n = (batch["labels"][:, 1:] != -100).sum()
        assert torch.allclose(ProgramWeightedLoss.for_tokenizer(1.0, tokenizer)(outputs, batch["labels"]), own)
        assert torch.allclose(ProgramWeightedLoss.for_tokenizer(1.0, tokenizer)(outputs, batch["labels"], n), own)
        ce = torch.nn.functional.cross_entropy(outputs.logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:],
                                               reduction="none")
        prog = program["labels"][:, 1:] != -100
        kept = batch["labels"][:, 1:] != -100
        expected = (ce[kept].sum() + 3 * ce[prog].sum()) / (kept.sum() + 3 * prog.sum())
        weighted = ProgramWeightedLoss.for_tokenizer(4.0, tokenizer)(outputs, batch["labels"], n)
        assert torch.allclose(weighted, expected) and not torch.allclose(weighted, own)
        # two micro-batches of one optimizer step: their sum is the step's loss when each has the same weights
        half = ProgramWeightedLoss.for_tokenizer(4.0, tokenizer)(outputs, batch["labels"], 2 * n)
        assert torch.allclose(2 * half, weighted)


def test_the_trainer_gets_the_models_own_loss_at_weight_1_and_the_weighted_one_otherwise(tokenizer):
    from karel_hf.training.loss import ProgramWeightedLoss, compute_loss_func

    assert compute_loss_func(1, tokenizer) is None and compute_loss_func(1.0, tokenizer) is None
    weighted = compute_loss_func(4, tokenizer)
    assert isinstance(weighted, ProgramWeightedLoss) and weighted.program_weight == 4.0
    for bad in (0, -1, float("nan"), float("inf"), "4"):
        with pytest.raises(ValueError, match="program_loss_weight"):
            compute_loss_func(bad, tokenizer)


# ----------------------------------------------------------------------------- presets and flags
def test_preset_values_and_flag_overrides(tmp_path):
    model_args, data_args, args, preset = parse_train_args(
        ["--preset", "tiny", "--output_dir", str(tmp_path), "--learning_rate", "0.01", "--loss_on", "program"])
    assert preset == "tiny"
    assert args.learning_rate == 0.01  # the flag wins
    assert args.max_steps == 40 and args.per_device_train_batch_size == 8  # from the preset
    assert data_args.loss_on == "program" and data_args.block_size == 256
    assert model_args.model_preset == "tiny"
    for name in training.PRESET_NAMES:  # a curriculum's last stage starts from the stage before's model
        start = ["--model_name_or_path", str(tmp_path)] if load_preset(name).curriculum else []
        parse_train_args(["--preset", name, "--output_dir", str(tmp_path), *start])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--preset", "huge"], r"unknown preset 'huge'; expected one of tiny, demo, cpu, cpu-cf, cpu-cf-stage1, cpu-cf-stage2, small, paper"),
        (["--preset", "tiny", "--lerning_rate", "1"], r"'--lerning_rate'; did you mean '--learning_rate'"),
        (["--preset", "tiny", "--learning_rate", "fast"], r"--learning_rate.*invalid float value: 'fast'"),
        (["--preset", "tiny", "--loss_on", "prompt"], r"--loss_on.*invalid choice: 'prompt'"),
        (["--preset", "tiny", "--model_preset", "huge"], r"--model_preset.*invalid choice"),
        (["--preset", "tiny", "--block_size", "4"], r"block_size: must be at least 8"),
        (["--preset", "tiny", "--position_init", "rotary"], r"--position_init.*invalid choice: 'rotary'"),
        (["--preset", "tiny", "--program_loss_weight", "0"], r"program_loss_weight: must be a finite number > 0, got 0"),
        (["--preset", "tiny", "--program_loss_weight", "nan"], r"program_loss_weight: must be a finite number > 0"),
        (["--preset", "tiny", "--program_loss_weight", "4", "--loss_on", "program"],
         r"program_loss_weight: .* needs loss_on all, got loss_on program"),
        (["--preset", "tiny", "--cells_per_token", "3"], r"cells_per_token: expected 1 or 2, got 3"),
        (["--preset", "tiny", "--cells_per_token", "2", "--tokenizer_path", "tok"],
         r"cells_per_token builds the tokenizer, tokenizer_path loads one: give one of them"),
    ],
)
def test_flag_errors_name_the_flag(argv, message, tmp_path):
    with pytest.raises(TrainArgumentError, match=message):
        parse_train_args(argv + ["--output_dir", str(tmp_path)])


def test_preset_file_errors_and_missing_output_dir(tmp_path, capsys):
    bad = tmp_path / "mine.json"
    bad.write_text(json.dumps({"model_preset": "tiny", "learnng_rate": 0.1}))
    with pytest.raises(TrainArgumentError, match=r"unknown field 'learnng_rate'; did you mean 'learning_rate'"):
        parse_train_args(["--preset", str(bad), "--output_dir", str(tmp_path)])
    bad.write_text(json.dumps({"max_steps": "many"}))
    with pytest.raises(TrainArgumentError, match="max_steps"):
        parse_train_args(["--preset", str(bad), "--output_dir", str(tmp_path)])
    with pytest.raises(TrainArgumentError, match="--output_dir is required"):
        parse_train_args(["--preset", "tiny"])
    assert training.main(["--preset", "nope", "--output_dir", str(tmp_path)]) == 2
    assert "karel-hf train: error: unknown preset 'nope'" in capsys.readouterr().err


# ----------------------------------------------------------------------- callback and model card
class _StubTrainer:
    def __init__(self):
        from transformers import TrainerControl

        self.control = TrainerControl()
        self.logged = []

    def log(self, logs):
        self.logged.append(dict(logs))
        self.control.should_log = False  # as CallbackHandler.on_log does


def test_generation_callback_logs_every_k_steps(tmp_path, tokenizer):
    from transformers import TrainerState

    from karel_hf.modeling import build_model

    calls = []

    def fake_eval(model):
        calls.append(model.training)
        return {"generation_accuracy": 0.25 * len(calls)}

    model = build_model("tiny", tokenizer)
    model.train()
    stub = _StubTrainer()
    callback = GenerationAccuracyCallback(fake_eval, 2, jsonl_path=tmp_path / "gen.jsonl").bind(stub)
    args = training.KarelTrainingArguments(output_dir=str(tmp_path), report_to="none")
    state = TrainerState()
    callback.on_train_begin(args, state, stub.control, model=model)
    for step in range(1, 6):
        state.global_step = step
        stub.control.should_log = step == 4  # a loss log is due at step 4
        callback.on_step_end(args, state, stub.control, model=model)
        if step == 4:
            assert stub.control.should_log  # the callback's own log did not swallow it
    callback.on_train_end(args, state, stub.control, model=model)
    assert [r["step"] for r in callback.history] == [0, 2, 4, 5]
    assert calls == [False] * 4 and model.training  # evaluated in eval mode, then put back
    assert stub.logged[1] == {"eval_generation_accuracy": 0.5}
    lines = [json.loads(line) for line in (tmp_path / "gen.jsonl").read_text().splitlines()]
    assert [(r["step"], r["generation_accuracy"]) for r in lines] == [(0, 0.25), (2, 0.5), (4, 0.75), (5, 1.0)]


def test_model_card_renders_yaml_and_requires_every_value():
    metrics = {"generation_accuracy": 0.5, "loss": 1.25, "generation_parse_rate": 1.0}
    block = training.model_index_yaml("run", "me/karel", "cpu", metrics, 64)
    template = "---\nlibrary_name: transformers\n${model_index}---\n# ${model_name}\ndef run() {\n}\n"
    text = render_model_card({"model_index": block, "model_name": "run"}, template)
    meta = yaml.safe_load(text.split("---\n")[1])
    result = meta["model-index"][0]["results"][0]
    assert result["dataset"] == {"type": "me/karel", "name": "Karel (cpu)", "config": "cpu", "split": "validation"}
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"generation_accuracy": 0.5, "loss": 1.25}
    with pytest.raises(KeyError, match="model_name"):
        render_model_card({"model_index": ""}, template)
    assert training.model_index_yaml("run", "karel", "cpu", {}, 64) == ""


def test_model_card_words_follow_the_runs_corpus_and_start():
    """The card's task words come from the corpus config and its overrides; a start is named by its Hub
    id, or by its folder's name alone (no local path); a corpus read from a folder gets neutral words."""
    from karel_hf.model_card import task_values

    words = task_values({"dataset_config": "paper", "dataset_overrides": "num_prompt_pairs=3,extended=true"},
                        {"model_name_or_path": "me/karel-stage1"})
    assert words["examples"] == "3 input/output grid examples" and words["last_pair"] == "2"
    assert words["origin"].startswith("starting from the model `me/karel-stage1`") and "`while`" in words["language"]
    words = task_values({"dataset_config": "paper"}, {"model_name_or_path": "/home/someone/runs/stage-1"})
    assert "`stage-1`" in words["origin"] and "/home" not in words["origin"]
    assert words["program_kind"] == "a straight-line program" and words["worlds"].startswith("8x8 worlds")
    assert words["cell_tokens"] == "one token per grid cell"
    assert task_values({"dataset_config": "paper", "cells_per_token": 2}, {})["cell_tokens"].startswith(
        "one token per two neighbouring cells of a grid row")
    for data_args in ({"dataset_config": "paper", "dataset_path": "/data/karel"},
                      {"dataset_config": "paper", "dataset_overrides": "no_such_field=1"}):
        words = task_values(data_args, {"model_name_or_path": None})
        assert words["origin"] == "from scratch" and words["examples"] == "input/output grid examples"


# ------------------------------------------------------------------------------ end to end runs
@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The tiny preset for 20 steps, in process: (output dir, metrics)."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    model_args, data_args, args, preset = parse_train_args(RUN_FLAGS + ["--max_steps", "20", "--output_dir", str(out)])
    metrics = training.run_training(model_args, data_args, args, preset=preset)
    return out, metrics


def _losses(state_file) -> dict[int, float]:
    history = json.loads(Path(state_file).read_text())["log_history"]
    return {e["step"]: e["loss"] for e in history if "loss" in e}


def test_tiny_run_end_to_end(reference_run, tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    out, metrics = reference_run
    losses = _losses(out / "trainer_state.json")
    assert sorted(losses) == list(range(1, 21))
    assert sum(losses[s] for s in range(16, 21)) < 0.6 * sum(losses[s] for s in range(1, 6))  # loss falls
    for step in (0, 10, 20):
        assert (out / f"checkpoint-{step}" / "model.safetensors").is_file()
    state = json.loads((out / "checkpoint-20" / "trainer_state.json").read_text())
    generation = [e for e in state["log_history"] if any(k.startswith("eval_") for k in e)]
    assert [e["step"] for e in generation] == [0, 10, 20]  # the callback's numbers travel with checkpoints
    assert len((out / "generation_eval.jsonl").read_text().splitlines()) == 3
    assert list((out / "runs").rglob("events.out.tfevents.*"))  # TensorBoard
    config = json.loads((out / "karel_run_config.json").read_text())
    assert config["preset"] == "tiny" and config["versions"]["transformers"]
    assert config["training_args"]["max_steps"] == 20

    ckpt = str(out / "checkpoint-20")
    for folder in (out, out / "checkpoint-0", out / "checkpoint-20"):  # transformers 4 loads these too
        assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    tok = AutoTokenizer.from_pretrained(ckpt)
    assert model.generation_config.eos_token_id == tok.eos_token_id
    prompt, _ = split_sample(tiny["test"][0]["text"])
    text = pipeline("text-generation", model=model, tokenizer=tok)(prompt, max_new_tokens=6, do_sample=False)
    generated = text[0]["generated_text"]
    assert generated.startswith(prompt) and len(generated) > len(prompt)
    untrained = AutoModelForCausalLM.from_pretrained(str(out / "checkpoint-0"))
    table = untrained.transformer.wpe.weight.detach()  # the tiny preset starts positions sinusoidal
    assert torch.equal(table, sinusoidal_table(*table.shape))

    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["pipeline_tag"] == "text-generation" and meta["library_name"] == "transformers"
    numbers = {m["type"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert numbers & {"generation_accuracy", "internal_exact_program_match"}
    assert "karel-hf train --preset tiny" in card and "step 20" in card
    assert "position table initialised sinusoidal" in card
    assert "trained from scratch" in card and "5 input/output grid examples" in card  # the tiny corpus's task
    assert "8x8 worlds" in card and "straight-line programs of 1 to 10 actions" in card and "Output4" in card
    assert (out / "checkpoint-10" / "README.md").is_file()


def _train_two_steps(out, *flags):
    """The reference run's flags for 2 steps, no generation check, plus `flags`, trained in process into `out`."""
    model_args, data_args, args, preset = parse_train_args(
        RUN_FLAGS + ["--max_steps", "2", "--generation_eval_steps", "0", *flags, "--output_dir", str(out)])
    training.run_training(model_args, data_args, args, preset=preset)


def test_program_loss_weight_trains_on_the_weighted_loss_and_says_so(reference_run, tmp_path):
    ref_out, _ = reference_run
    out = tmp_path / "weighted"
    _train_two_steps(out, "--program_loss_weight", "4")
    weighted, plain = _losses(out / "trainer_state.json"), _losses(ref_out / "trainer_state.json")
    assert sorted(weighted) == [1, 2]
    # the same model, data and seed: at step 1 another mean of the same token losses (at initialisation every
    # token's loss is near log(vocabulary), so the two differ by ~5e-4), at step 2 another update (~1e-2)
    assert abs(weighted[1] - plain[1]) > 1e-4 and abs(weighted[2] - plain[2]) > 5e-3
    assert json.loads((out / "karel_run_config.json").read_text())["data_args"]["program_loss_weight"] == 4
    assert "next-token loss on `all`, each program token weighted 4x" in (out / "README.md").read_text()
    assert "next-token loss on `all` (" in (ref_out / "README.md").read_text()


def test_two_cells_per_token_trains_on_shorter_rows_and_saves_its_tokenizer(reference_run, tmp_path):
    """--cells_per_token 2: the same samples in fewer tokens (a 6x6 interior's row is 3 tokens, not 6), a
    model with the bigger vocabulary, and the tokenizer saved beside it; a model of the other tokenizer
    is refused as a start, in one line."""
    from transformers import AutoTokenizer

    from karel_hf.data import load_karel
    from karel_hf.tokenizer import cells_per_token

    ref_out, _ = reference_run
    out = tmp_path / "pairs"
    _train_two_steps(out, "--cells_per_token", "2")
    saved = AutoTokenizer.from_pretrained(out)
    assert cells_per_token(saved) == 2 and len(saved) == 751
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 751
    assert "one token per two neighbouring cells of a grid row" in (out / "README.md").read_text()
    assert "word-level: one token per grid cell," in (ref_out / "README.md").read_text()
    plain = AutoTokenizer.from_pretrained(ref_out)
    text = load_karel("tiny", split="test")[0]["text"]
    assert len(plain(text)["input_ids"]) - len(saved(text)["input_ids"]) == 10 * 6 * 3  # 10 grids, 6 rows, 3 saved

    model_args, data_args, args, preset = parse_train_args(
        RUN_FLAGS + ["--max_steps", "2", "--cells_per_token", "2", "--model_name_or_path", str(ref_out),
                     "--output_dir", str(tmp_path / "mixed")])
    with pytest.raises(TrainArgumentError, match=r"the model's vocabulary has 301 tokens, the tokenizer 751 "
                       r"\(cells_per_token 2\): train with the tokenizer it was trained with"):
        training.run_training(model_args, data_args, args, preset=preset)
    assert not list((tmp_path / "mixed").glob("checkpoint-*"))


def test_kill_then_resume_continues_from_the_saved_step(reference_run, tmp_path):
    ref_out, _ = reference_run
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(  # a run meant to go on much longer, killed after its first checkpoint
        [sys.executable, str(REPO / "scripts" / "train.py"), *RUN_FLAGS, "--max_steps", "100000",
         "--output_dir", str(out)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while not (out / "checkpoint-10" / "README.md").is_file():  # README.md: written after the save
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.time() < deadline, "no checkpoint-10 within 240 s"
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
        log.close()

    from karel_hf.cli import main as cli_main

    # The killed run's schedule was for 100,000 steps: resume with the reference's 20 (constant lr).
    assert cli_main(["train", *RUN_FLAGS, "--max_steps", "20", "--output_dir", str(out),
                     "--resume_from_checkpoint", str(out / "checkpoint-10")]) == 0
    state = json.loads((out / "checkpoint-20" / "trainer_state.json").read_text())
    assert state["global_step"] == 20
    resumed, reference = _losses(out / "trainer_state.json"), _losses(ref_out / "trainer_state.json")
    assert sorted(resumed) == list(range(1, 21))  # steps 1-10 from checkpoint-10, 11-20 from the resumed run
    for step in range(11, 21):  # same weights, optimizer, data order and RNG as an uninterrupted run
        assert resumed[step] == pytest.approx(reference[step], rel=1e-4), step
    with pytest.raises(TrainArgumentError, match="already holds checkpoints"):
        model_args, data_args, args, preset = parse_train_args(RUN_FLAGS + ["--output_dir", str(out)])
        training.run_training(model_args, data_args, args, preset=preset)


def test_resume_falls_back_past_a_torn_checkpoint_and_names_it(reference_run, tmp_path, caplog):
    """A kill while trainer_state.json was being written leaves it torn: `--resume_from_checkpoint
    last` names that checkpoint, resumes from the one before, and ends where an uninterrupted run
    ends."""
    from karel_hf.cli import main as cli_main

    ref_out, _ = reference_run
    out = tmp_path / "torn"
    for step in (0, 10, 20):
        shutil.copytree(ref_out / f"checkpoint-{step}", out / f"checkpoint-{step}")
    state = out / "checkpoint-20" / "trainer_state.json"
    state.write_bytes(state.read_bytes()[:200])
    with caplog.at_level("WARNING", logger="karel_hf.utils"):
        assert cli_main(["train", *RUN_FLAGS, "--max_steps", "20", "--output_dir", str(out),
                         "--resume_from_checkpoint", "last"]) == 0
    assert f"skipping checkpoint {out / 'checkpoint-20'}: trainer_state.json is torn" in caplog.text
    resumed, reference = _losses(out / "trainer_state.json"), _losses(ref_out / "trainer_state.json")
    assert sorted(resumed) == list(range(1, 21))
    assert [resumed[s] for s in range(11, 21)] == [reference[s] for s in range(11, 21)]  # bit-identical
    assert json.loads(state.read_text())["global_step"] == 20  # the torn checkpoint was saved again

    (out / "checkpoint-20" / "optimizer.pt").unlink()  # a checkpoint missing a file is skipped too
    args = training.KarelTrainingArguments(output_dir=str(out), report_to="none", resume_from_checkpoint="last")
    caplog.clear()
    with caplog.at_level("WARNING", logger="karel_hf.utils"):
        assert training.resolve_resume(args) == str(out / "checkpoint-10")
    assert "checkpoint-20: no optimizer.pt" in caplog.text
    args.resume_from_checkpoint = str(out / "checkpoint-20")
    with pytest.raises(TrainArgumentError, match="checkpoint-20 is not a checkpoint to resume from: no optimizer.pt"):
        training.resolve_resume(args)


def test_latest_checkpoint_skips_incomplete_saves(tmp_path):
    for step, complete in ((0, True), (10, True), (15, False), (9, True)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in ("config.json", "model.safetensors", "optimizer.pt", "scheduler.pt"):
            (folder / name).write_text("{}")
        if complete:
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    assert training.latest_checkpoint(tmp_path).name == "checkpoint-10"
    args = training.KarelTrainingArguments(output_dir=str(tmp_path), report_to="none", resume_from_checkpoint="last")
    assert training.resolve_resume(args) == str(tmp_path / "checkpoint-10")
    args.resume_from_checkpoint = str(tmp_path / "checkpoint-15")
    with pytest.raises(TrainArgumentError, match="not a checkpoint to resume from: no trainer_state.json"):
        training.resolve_resume(args)


def test_the_generation_check_decodes_in_the_language_of_the_references(monkeypatch, tokenizer):
    """A model trained on an extended corpus is checked with the extended grammar (else every program
    with control flow would be out of reach and its accuracy silently low); straight-line references
    keep the straight-line grammar; an explicit `extended` wins."""
    from karel_hf.training import callbacks

    seen = []
    monkeypatch.setattr(callbacks, "evaluate_generation", lambda *a, **kw: seen.append(kw["extended"]) or {"accuracy": 1.0})
    line = {"text": "\nCode:\n", "program": "def run() { move() turn_left() }"}
    loop = {"text": "\nCode:\n", "program": "def run() { repeat(2) { move() } turn_left() }"}
    for rows, extended, expected in [([line, line], None, False), ([line, loop], None, True),
                                     ([line, loop], False, False), ([line], True, True)]:
        assert callbacks.make_generation_eval_fn(tokenizer, rows, extended=extended)(None) == {"generation_accuracy": 1.0}
        assert seen.pop() is expected
