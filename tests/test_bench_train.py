"""benchmarks/bench_train.py: the Trainer timed per model variant (activation or config override)."""

import os
from types import SimpleNamespace

import pytest

from bench_scripts import load_script


def _bench():
    return load_script("bench_train")


def test_config_override_variants_build_their_models_and_report_ratios(tmp_path):
    bench = _bench()
    from karel_hf.tokenizer import build_tokenizer

    args = SimpleNamespace(model_preset="tiny", seed=0)
    tokenizer = build_tokenizer()
    assert bench._model(args, tokenizer, {"config_overrides": "n_embd=16"}).config.n_embd == 16
    assert bench._model(args, tokenizer, {"activation_function": "relu"}).config.activation_function == "relu"

    result = bench.main(["--model_preset", "tiny", "--steps", "2", "--warmup", "1", "--batch_size", "2",
                         "--block_size", "64", "--precisions", "fp32", "--threads", "1",
                         "--config_overrides", "n_embd=32; n_embd=16", "--output", str(tmp_path / "b.json")])
    assert set(result["tokens_per_second"]) == {"trainer:n_embd=32_fp32", "trainer:n_embd=16_fp32"}
    assert all(v > 0 for v in result["tokens_per_second"].values())
    ratio = result["over_first_config"]["fp32"]["n_embd=16"]
    speeds = result["tokens_per_second"]
    # the ratio comes from the unrounded medians, the speeds are reported to 0.1 token/s
    assert ratio == pytest.approx(speeds["trainer:n_embd=16_fp32"] / speeds["trainer:n_embd=32_fp32"], abs=1e-3)
    assert "over_first_activation" not in result
    assert (tmp_path / "b.json").is_file()


@pytest.mark.parametrize("value, message", [
    ("n_embd=32;n_fancy=3", "--config_overrides 'n_fancy=3': config_overrides: key n_fancy isn't in the original"),
    ("n_embd=32", "two or more distinct non-empty overrides"),
    ("n_embd=32;", "two or more distinct non-empty overrides"),
    ("n_embd=32;n_embd=32", "two or more distinct non-empty overrides"),
])
def test_bad_config_overrides_are_one_line_errors(value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _bench().main(["--model_preset", "tiny", "--config_overrides", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in err and "Traceback" not in err


def test_activations_and_config_overrides_do_not_mix(capsys):
    with pytest.raises(SystemExit):
        _bench().main(["--model_preset", "tiny", "--activations", "gelu_new,relu", "--config_overrides", "n_embd=32;n_embd=16"])
    assert "without --activations" in capsys.readouterr().err


def test_torch_compile_path_goes_through_dynamo_and_is_reported_over_the_same_loss_uncompiled(tmp_path):
    """--torch_compile: the `compiled` path is the Trainer with torch_compile=True (the eager backend
    here, to keep the test short: dynamo traces the model, nothing is code-generated), timed beside the
    weighted Trainer, whose loss it trains."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    cache_before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    result = _bench().main(["--model_preset", "tiny", "--steps", "2", "--warmup", "1", "--batch_size", "2",
                            "--block_size", "64", "--precisions", "fp32", "--threads", "1", "--program_loss_weight",
                            "4", "--torch_compile", "--compile_backend", "eager"])
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    assert result["batch"] == "2 x 64 tokens" and result["unpacked"] is False
    speeds = result["tokens_per_second"]
    assert set(speeds) == {f"{path}_fp32" for path in ("trainer", "loop", "weighted", "compiled")}
    assert result["compile_backend"] == "eager"
    assert result["compiled_over_uncompiled"]["fp32"] == pytest.approx(
        speeds["compiled_fp32"] / speeds["weighted_fp32"], abs=1e-3)
    # compiling's up-front cost: tracing makes the compiled warm-up the longer one, and it is earned
    # back after a number of steps that follows from it and the two timed rates (or never)
    cost, even = result["compile_seconds"]["fp32"], result["steps_to_break_even"]["fp32"]
    assert cost > 0
    # from the reported values, rounded to 0.1 s and 0.1 token/s: the bounds of what the unrounded ones give
    tokens, plain, compiled = result["tokens_per_step"], speeds["weighted_fp32"], speeds["compiled_fp32"]
    saved_low = tokens / (plain + 0.05) - tokens / (compiled - 0.05)
    saved_high = tokens / (plain - 0.05) - tokens / (compiled + 0.05)
    if saved_low > 0:
        assert round((cost - 0.05) / saved_high) <= even <= round((cost + 0.05) / saved_low)
    elif saved_high <= 0:
        assert even is None
    assert os.environ.get("TORCHINDUCTOR_CACHE_DIR") == cache_before  # a fresh kernel cache lives with the run only


def test_torch_compile_does_not_mix_with_model_variants(capsys):
    with pytest.raises(SystemExit):
        _bench().main(["--model_preset", "tiny", "--torch_compile", "--config_overrides", "n_embd=32;n_embd=16"])
    assert "without --activations or --config_overrides" in capsys.readouterr().err


def test_unpacked_rows_are_single_samples_padded_per_batch_and_counted_without_padding():
    """--unpacked: each row is one sample (as `packing: false` presets train), so the rows differ in
    length, and tokens/s counts their own tokens, not block_size per row."""
    from karel_hf.tokenizer import build_tokenizer

    bench = _bench()
    data = bench._dataset(build_tokenizer(), "tiny", 512, 12, unpacked=True)
    lengths = [len(r) for r in data["input_ids"]]
    assert len(lengths) == 12 and len(set(lengths)) > 1 and max(lengths) < 512
    result = bench.main(["--model_preset", "tiny", "--steps", "2", "--warmup", "1", "--batch_size", "4",
                         "--block_size", "512", "--precisions", "fp32", "--threads", "1", "--unpacked"])
    assert result["unpacked"] is True
    assert result["batch"] == f"4 samples of {sum(lengths) / len(lengths):.1f} tokens on average"
    assert all(v > 0 for v in result["tokens_per_second"].values())


def test_block_sizes_time_the_trainer_on_each_row_length_and_report_step_times_over_the_first():
    """--block_sizes: each path is the Trainer on its own packed blocks of that length, so a step holds
    batch x length tokens, and a step's seconds are the tokens over the speed, reported over the first's."""
    result = _bench().main(["--model_preset", "tiny", "--steps", "2", "--warmup", "1", "--batch_size", "2",
                            "--block_sizes", "64,32", "--precisions", "fp32", "--threads", "1"])
    assert result["tokens_per_step"] == {"64": 128, "32": 64}
    speeds, seconds = result["tokens_per_second"], result["step_seconds"]
    assert set(speeds) == set(seconds) == {"trainer@64_fp32", "trainer@32_fp32"}
    assert seconds["trainer@32_fp32"] == pytest.approx(64 / speeds["trainer@32_fp32"], rel=1e-3)
    assert result["step_time_over_first"]["fp32"]["32"] == pytest.approx(
        seconds["trainer@32_fp32"] / seconds["trainer@64_fp32"], abs=2e-3)


@pytest.mark.parametrize("argv", [["--block_sizes", "64"], ["--block_sizes", "64,64"], ["--block_sizes", "64,x"],
                                  ["--block_sizes", "64,32", "--unpacked"],
                                  ["--block_sizes", "64,32", "--config_overrides", "n_embd=32;n_embd=16"]])
def test_bad_block_sizes_are_one_line_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _bench().main(["--model_preset", "tiny"] + argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--block_sizes: two or more distinct row lengths" in err


def test_cells_per_token_time_the_trainer_with_each_tokenizer_on_the_same_samples():
    """--cells_per_token 1,2: each path is the Trainer with its own tokenizer and model vocabulary on the same
    samples, one per row; a tiny sample (10 grids of 6 rows) is 180 tokens shorter with cell pairs."""
    result = _bench().main(["--model_preset", "tiny", "--steps", "2", "--warmup", "1", "--batch_size", "2",
                            "--block_size", "512", "--cells_per_token", "1,2", "--precisions", "fp32", "--threads", "1"])
    tokens = result["tokens_per_step"]
    assert set(tokens) == {"cpt1", "cpt2"} and tokens["cpt1"] - tokens["cpt2"] == pytest.approx(2 * 180)
    assert result["unpacked"] is True
    seconds = result["step_seconds"]
    assert seconds["trainer/cpt2_fp32"] == pytest.approx(tokens["cpt2"] / result["tokens_per_second"]["trainer/cpt2_fp32"],
                                                         rel=1e-3)
    assert result["step_time_over_first"]["fp32"]["cpt2"] == pytest.approx(
        seconds["trainer/cpt2_fp32"] / seconds["trainer/cpt1_fp32"], abs=2e-3)


@pytest.mark.parametrize("argv", [["--cells_per_token", "1"], ["--cells_per_token", "1,3"],
                                  ["--cells_per_token", "1,2", "--block_sizes", "64,32"]])
def test_bad_cells_per_token_are_one_line_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _bench().main(["--model_preset", "tiny"] + argv)
    assert exit_info.value.code == 2
    assert "--cells_per_token: 1,2 or 2,1" in capsys.readouterr().err.strip().splitlines()[-1]
