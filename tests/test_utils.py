"""The shared helpers: atomic writes, library versions, what counts as a checkpoint, secrets, overrides."""

import json

import pytest
from transformers import GPT2Config

from karel_hf.utils import (
    apply_config_overrides,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    checkpoint_folders,
    checkpoint_problem,
    format_overrides,
    is_resumable,
    latest_checkpoint,
    library_versions,
    model_checkpoints,
    parse_overrides,
    redact_argv,
)


def test_atomic_writes_replace_files_and_folders_and_leave_nothing_on_error(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"x": 1})
    assert json.loads(target.read_text()) == {"x": 1}
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "new\n"
    folder = tmp_path / "tok"
    for content in ("first", "second"):
        with atomic_path(folder, directory=True) as tmp:
            (tmp / "file.txt").write_text(content)
    assert [p.name for p in folder.iterdir()] == ["file.txt"] and (folder / "file.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub", "tok"]  # no temporary left over
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.json"]
    with atomic_path(tmp_path / "fig.png") as tmp:
        assert tmp.suffix == ".png"  # writers that read the format from the suffix


def test_atomic_writes_get_the_umask_permissions_not_tempfiles_owner_only(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "card.md", "x\n")
        with atomic_path(tmp_path / "folder", directory=True):
            pass
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.md", "x\n")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE((tmp_path / p).stat().st_mode)  # noqa: E731
    assert (mode("card.md"), mode("folder"), mode("private.md")) == (0o644, 0o755, 0o600)


def test_library_versions():
    versions = library_versions()
    assert versions["transformers"] and versions["torch"] and versions["python"]


def _checkpoint(folder, step: int, files=("config.json", "model.safetensors", "optimizer.pt", "scheduler.pt"),
                state: str | None = None):
    folder.mkdir()
    for name in files:
        (folder / name).write_text("{}")
    if state is not None:
        (folder / "trainer_state.json").write_text(state)


def test_model_and_resumable_checkpoints_are_named_in_one_place(tmp_path, caplog):
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    folder = tmp_path.joinpath
    _checkpoint(folder(f"{PREFIX_CHECKPOINT_DIR}-0"), 0, ("config.json", "model.safetensors"), '{"global_step": 0}')
    _checkpoint(folder("checkpoint-5"), 5, ("config.json",))
    _checkpoint(folder("checkpoint-10"), 10, ("config.json", "model.safetensors"))  # cut short: no state
    _checkpoint(folder("checkpoint-20"), 20, state='{"global_step": 20}')
    _checkpoint(folder("checkpoint-25"), 25, ("config.json", "model.safetensors"), '{"global_step": 25}')
    _checkpoint(folder("checkpoint-30"), 30, state='{"global_step": 30, "log_hi')  # torn mid-write
    (tmp_path / "checkpoint-x").mkdir()
    assert [s for s, _ in checkpoint_folders(tmp_path)] == [0, 5, 10, 20, 25, 30]
    assert [s for s, _ in model_checkpoints(tmp_path)] == [0, 10, 20, 25, 30]  # weights + config
    assert is_resumable(folder("checkpoint-0")) and is_resumable(folder("checkpoint-20"))
    assert checkpoint_problem(folder("checkpoint-10")) == "no trainer_state.json (the save was cut short)"
    assert checkpoint_problem(folder("checkpoint-25")) == "no optimizer.pt or scheduler.pt"
    assert checkpoint_problem(folder("checkpoint-30")).startswith("trainer_state.json is torn or unreadable")
    with caplog.at_level("WARNING", logger="karel_hf.utils"):
        assert latest_checkpoint(tmp_path).name == "checkpoint-20"
    skipped = [r.getMessage() for r in caplog.records]
    assert len(skipped) == 2 and "checkpoint-30: trainer_state.json is torn" in skipped[0]
    assert "checkpoint-25: no optimizer.pt" in skipped[1]
    assert latest_checkpoint(tmp_path / "missing") is None and checkpoint_folders(tmp_path / "missing") == []


def test_overrides_parse_and_format():
    values = parse_overrides("train_size=20000, seed=7,action_weights=[1,1,0,1,1],extended=true,name=x")
    assert values == {"train_size": 20000, "seed": 7, "action_weights": [1, 1, 0, 1, 1], "extended": True,
                      "name": "x"}
    assert parse_overrides(format_overrides(values)) == values
    assert parse_overrides(["seed=7", "wall_ratio=0.2"]) == {"seed": 7, "wall_ratio": 0.2}
    with pytest.raises(ValueError, match="--set: expected key=value"):
        parse_overrides(["seed"], what="--set")


def test_config_overrides_use_transformers_parser():
    config = apply_config_overrides(GPT2Config(), "n_layer=6, resid_pdrop=0.25,scale_attn_weights=false")
    assert (config.n_layer, config.resid_pdrop, config.scale_attn_weights) == (6, 0.25, False)
    with pytest.raises(ValueError, match="config_overrides: .*n_layers"):
        apply_config_overrides(GPT2Config(), "n_layers=6")
    with pytest.raises(ValueError, match="config_overrides: .*n_layer=6,n_embd=384"):
        apply_config_overrides(GPT2Config(), "n_layer")


def test_config_overrides_set_fields_that_are_none():
    """GPT-2's MLP width `n_inner` is None (4 x n_embd) until set; transformers' parser refuses it."""
    import torch
    from transformers import GPT2LMHeadModel

    config = apply_config_overrides(GPT2Config(n_embd=32, n_head=4, n_layer=1, vocab_size=50),
                                    "n_inner=64,n_layer=2")
    assert (config.n_inner, config.n_layer) == (64, 2)
    model = GPT2LMHeadModel(config)
    assert model.transformer.h[0].mlp.c_fc.weight.shape == (32, 64)  # Conv1D: (in, out)
    assert model(torch.zeros(1, 3, dtype=torch.long)).logits.shape == (1, 3, 50)
    assert apply_config_overrides(GPT2Config(), "n_inner=none").n_inner is None
    with pytest.raises(ValueError, match=r"config_overrides: n_inner: expected a number.*n_layer=6,n_embd=384"):
        apply_config_overrides(GPT2Config(), "n_inner=[64]")
    with pytest.raises(ValueError, match="config_overrides: .*'n_inner'.*expected int") as error:  # its own types
        apply_config_overrides(GPT2Config(), "n_inner=abc")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="config_overrides: .*n_layers"):  # the other items still checked
        apply_config_overrides(GPT2Config(), "n_inner=64,n_layers=2")


def test_redact_argv_masks_token_flags_and_known_secrets():
    argv = ["--preset", "tiny", "--hub_token", "hf_A", "--hub-token=hf_B", "--push_to_hub_token", "--seed", "1",
            "--dataset_overrides", "note=hf_C", "--hub_model_id", "me/model"]
    assert redact_argv(argv, secrets=["hf_C", None, ""]) == [
        "--preset", "tiny", "--hub_token", "<HUB_TOKEN>", "--hub-token=<HUB_TOKEN>", "--push_to_hub_token", "--seed",
        "1", "--dataset_overrides", "note=<SECRET>", "--hub_model_id", "me/model"]
    assert redact_argv(None) is None and redact_argv([]) == []


def test_machine_info_names_the_cpu_its_flags_and_any_instruction_set_limit(monkeypatch):
    from karel_hf.utils import CPU_FLAGS, ISA_LIMITS, describe_machine, machine_info

    for name in ISA_LIMITS:
        monkeypatch.delenv(name, raising=False)
    found = machine_info()
    assert set(found) == {"cpu", "flags", "cores", "threads", "torch"} and set(found["flags"]) <= set(CPU_FLAGS)
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    assert machine_info()["isa_limits"] == {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    text = describe_machine({"cpu": "Xeon", "flags": ["amx_bf16", "avx2"], "threads": 2,
                             "isa_limits": {"ATEN_CPU_CAPABILITY": "avx2"}})
    assert text == "Xeon (amx_bf16, avx2; limited to ATEN_CPU_CAPABILITY=avx2), 2 torch thread(s)"
    assert describe_machine({"cpu": "", "flags": [], "threads": 1}) == \
        "unknown CPU (none of amx_bf16, avx512_bf16, avx512f, avx2), 1 torch thread(s)"
