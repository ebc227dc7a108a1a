"""Every `karel-hf` error is one line on stderr naming the problem, with exit status 2 for a usage
error and 1 for a failure, never a traceback (karel_hf.errors.run_main); KAREL_HF_DEBUG=1 shows the
traceback of an unexpected error."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import transformers  # its log handler binds the stream it finds at import: the session's, not a test's capture

from karel_hf import cli
from karel_hf.cli import main

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"


@pytest.fixture(autouse=True)
def fresh_process_logging():
    """Each command starts with the library log levels of a new process (an earlier in-process
    training run turns transformers' INFO logs on)."""
    transformers.utils.logging.set_verbosity_warning()


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli_errors")
    records = [json.loads(line) for line in (REFERENCE / "straight_line_200.jsonl").read_text().splitlines()[:3]]
    files = {
        "bad_json": [json.dumps(records[0]), "{not json"],
        "unicode_digit": [json.dumps({**records[0], "input0": records[0]["input0"].replace(".", "١", 1)})],
        "no_output": [json.dumps({k: v for k, v in records[0].items() if k != "output4"})],
    }
    for name, lines in files.items():
        (base / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    (base / "a_file").write_text("x")
    (base / "empty.jsonl").write_text("")
    (base / "a_link").symlink_to(base / "a_file")
    (base / "a_folder").mkdir()
    (base / "empty_run").mkdir()
    if os.geteuid() != 0:
        (base / "readonly").mkdir()
        (base / "readonly").chmod(0o555)
        unwritable = base / "readonly" / "out"
    else:  # root ignores permissions; sysfs refuses new files even to root
        unwritable = Path("/sys/karel_hf_test/out")
    return {"base": base, "unwritable": unwritable}


def _argv(template: list[str], paths) -> list[str]:
    return [a.format(base=paths["base"], unwritable=paths["unwritable"]) for a in template]


TRAIN = ["train", "--preset", "tiny", "--output_dir", "{base}/run"]
USAGE = [
    (["bogus"], r"karel-hf: error: argument command: invalid choice: 'bogus'"),
    (["generate", "--num_programs", "5", "--output", "{base}/c.jsonl", "--batch_size", "0"],
     r"karel-hf generate: error: --batch_size: must be a positive integer, got 0"),
    (["generate", "--num_programs", "١٠", "--output", "{base}/c.jsonl"],
     r"karel-hf generate: error: argument --num_programs: invalid int value: '١٠'"),
    (["generate", "--num_programs", "5", "--output", "{base}/c.jsonl", "--wall_ratio", "2"],
     r"karel-hf generate: error: CorpusConfig.wall_ratio must be a probability in \[0, 1\], got 2.0"),
    (["generate", "--output", "{base}/c.jsonl"], r"karel-hf generate: error: the following arguments are required: --num_programs"),
    (TRAIN + ["--per_device_train_batch_size", "0"],
     r"karel-hf train: error: per_device_train_batch_size: must be a positive integer, got 0"),
    (TRAIN + ["--dataset_overrides", "foo"],
     r"karel-hf train: error: dataset_overrides: expected key=value pairs separated by commas, got 'foo'"),
    (TRAIN + ["--dataset_overrides", "num_prompt_pairs=12"], r"karel-hf train: error: dataset_overrides: num_prompt_pairs must be in 1\.\.10"),
    (TRAIN + ["--dataset_overrides", "trian_size=5"], r"karel-hf train: error: dataset_overrides: unknown config field\(s\) \['trian_size'\]"),
    (TRAIN + ["--dataset_config", "nope"], r"karel-hf train: error: dataset_config: unknown corpus 'nope'; expected one of paper, tiny"),
    (TRAIN + ["--learning_rate", "-0.001"], r"karel-hf train: error: learning_rate: must be a finite number >= 0, got -0.001"),
    (TRAIN + ["--max_steps", "0"], r"karel-hf train: error: max_steps: must be a positive number of steps"),
    (TRAIN + ["--block_size", "٦٤"], r"karel-hf train: error: argument --block_size/--block-size: invalid int value: '٦٤'"),
    (TRAIN + ["--learnig_rate", "1"], r"karel-hf train: error: unrecognized argument '--learnig_rate'; did you mean '--learning_rate'"),
    (["train", "--preset", "tiny"], r"karel-hf train: error: --output_dir is required"),
    (TRAIN + ["--resume_from_checkpoint", "last"], r"karel-hf train: error: resume_from_checkpoint=last: no complete checkpoint"),
    (["reproduce", "--output_dir", "{base}/r", "--batch_size", "0"], r"karel-hf reproduce: error: batch_size: must be a positive integer, got 0"),
    (["reproduce", "--output_dir", "{base}/r", "--stages", "train,plto"], r"karel-hf reproduce: error: stages: unknown stage\(s\) \['plto'\]"),
    (["reproduce", "--output_dir", "{base}/r", "--train_args", "--learning_rate -1"],
     r"karel-hf reproduce: error: learning_rate: must be a finite number >= 0, got -1.0"),
    (["reproduce", "--output_dir", "{base}/r", "--preset", "laptop"], r"karel-hf reproduce: error: preset: unknown preset 'laptop'"),
    (["reproduce", "--output_dir", "{base}/r", "--preset", "tiny", "--train_args", "--dataset_overrides extended=true",
      "--stages", "evaluate", "--follow"],
     r"karel-hf reproduce: error: --follow: the evaluate stage of an extended-language run "),
    (["reproduce", "--output_dir", "{base}/r", "--preset", "tiny", "--rotation_probe", "linear"],
     r"karel-hf reproduce: error: --rotation_probe: reads the control-flow task \(a corpus in the extended language\); "
     r"preset tiny trains straight-line programs"),
    (["reproduce", "--output_dir", "{base}/r", "--preset", "tiny", "--alternatives_test_specs", "500"],
     r"karel-hf reproduce: error: --alternatives_test_specs: reads the control-flow task \(a corpus in the extended "
     r"language\); preset tiny trains straight-line programs"),
    (["reproduce", "--output_dir", "{base}/r", "--preset", "tiny", "--trajectory_test_specs", "500"],
     r"karel-hf reproduce: error: --trajectory_test_specs: reads the control-flow task \(a corpus in the extended "
     r"language\); preset tiny trains straight-line programs"),
    (["reproduce", "--output_dir", "{base}/r", "--trajectory_test_specs", "-5"],
     r"karel-hf reproduce: error: trajectory_test_specs: must be an integer >= 0 \(0 or null: not read\), got -5"),
    (["reproduce", "--output_dir", "{base}/r", "--alternatives_test_specs", "-1"],
     r"karel-hf reproduce: error: alternatives_test_specs: must be an integer >= 0 \(0 or null: not read\), got -1"),
    (["reproduce", "--output_dir", "{base}/r", "--rotation_probe", "mpl1"],
     r"karel-hf reproduce: error: rotation_probe: unknown value 'mpl1'; expected one of '', 'linear'"),
    (["train", "--preset", "cpu-cf", "--output_dir", "{base}/t"],
     r"karel-hf train: error: preset cpu-cf is the last stage of a curriculum \(cpu-cf-stage1, cpu-cf-stage2 first\): "
     r"train it from the stage before's model with --model_name_or_path"),
    (["reproduce", "--output_dir", "{base}/r", "--test_specs", "x"], r"karel-hf reproduce: error: argument --test_specs/--test-specs: invalid int value: 'x'"),
    (["dataset", "export", "--config", "nope", "--output_dir", "{base}/e"], r"karel-hf dataset export: error: unknown Karel config 'nope'"),
    (["dataset", "export", "--set", "x", "--output_dir", "{base}/e"], r"karel-hf dataset export: error: --set: expected key=value pairs"),
    (["dataset", "export", "--num_proc", "0", "--output_dir", "{base}/e"], r"karel-hf dataset export: error: --num_proc: must be a positive integer"),
    (["tokenizer", "save"], r"karel-hf tokenizer save: error: the following arguments are required: output_dir"),
    (["tokenizer", "save", "{base}/t", "--cells_per_token", "3"],
     r"karel-hf tokenizer save: error: argument --cells_per_token: invalid choice: 3 \(choose from 1, 2\)"),
]
FAILURE = [
    (["verify-corpus", "{base}/missing.jsonl"], r"karel-hf verify-corpus: error: No such file or directory: .*missing\.jsonl"),
    (["verify-corpus", "{base}/a_folder"], r"karel-hf verify-corpus: error: Is a directory: .*a_folder"),
    (["verify-corpus", "{base}/bad_json.jsonl"], r"karel-hf verify-corpus: error: .*bad_json\.jsonl, line 2: not valid JSON"),
    (["verify-corpus", "{base}/unicode_digit.jsonl"],
     r"karel-hf verify-corpus: error: .*line 1: key 'input0' is not a world \(unexpected character '١'"),
    (["verify-corpus", "{base}/no_output.jsonl"], r"karel-hf verify-corpus: error: .*line 1: key 'output4' is missing"),
    (["tokenizer", "save", "{base}/a_file"], r"karel-hf tokenizer save: error: the tokenizer folder .*a_file cannot be made: .*a_file is a file"),
    (["tokenizer", "save", "{unwritable}"], r"karel-hf tokenizer save: error: cannot write the tokenizer folder \((Operation not permitted|Permission denied)\)"),
    (["generate", "--num_programs", "3", "--output", "{base}/a_folder"], r"karel-hf generate: error: the --output file .*a_folder is a folder"),
    (["generate", "--num_programs", "3", "--output", "{base}/a_link"],
     r"karel-hf generate: error: the --output file .*a_link is a link or a special file, which a write would replace"),
    (["generate", "--num_programs", "3", "--output", "/dev/null"],
     r"karel-hf generate: error: the --output file /dev/null is a link or a special file"),
    (["verify-corpus", "{base}/empty.jsonl"], r"karel-hf verify-corpus: error: .*empty\.jsonl: no input/output pairs to verify"),
    (["generate", "--num_programs", "3", "--output", "{unwritable}/c.jsonl"], r"karel-hf generate: error: cannot write the folder of the --output file"),
    (["train", "--preset", "tiny", "--output_dir", "{base}/a_file"], r"karel-hf train: error: the --output_dir .*a_file cannot be made"),
    (["train", "--preset", "tiny", "--output_dir", "{unwritable}"], r"karel-hf train: error: cannot write the --output_dir"),
    (["reproduce", "--output_dir", "{base}/a_file"], r"karel-hf reproduce: error: the --output_dir .*a_file cannot be made"),
    (["reproduce", "--output_dir", "{unwritable}"], r"karel-hf reproduce: error: cannot write the --output_dir"),
    (["reproduce", "--output_dir", "{base}/empty_run", "--stages", "evaluate"],
     r"karel-hf reproduce: error: no checkpoint-N folders in .*model: run the train stage first"),
    (["reproduce", "--output_dir", "{base}/empty_run", "--stages", "analyze"],
     r"karel-hf reproduce: error: no evaluations in .*evaluations: run the evaluate stage first"),
    (["reproduce", "--output_dir", "{base}/empty_run", "--stages", "plot"], r"karel-hf reproduce: error: no results.json in .*: run the analyze stage first"),
    (["reproduce", "--output_dir", "{base}/empty_run", "--stages", "report"], r"karel-hf reproduce: error: no results.json in .*: run the analyze stage first"),
    (["dataset", "export", "--output_dir", "{base}/a_file"], r"karel-hf dataset export: error: the --output_dir .*a_file cannot be made"),
    (["push", "dataset", "{base}/missing", "--repo_id", "me/karel"], r"karel-hf push dataset: error: .*missing"),
    (["push", "model", "{base}/a_folder", "--repo_id", "me/karel", "--dry-run", "{base}/a_file"],
     r"karel-hf push model: error: the --dry-run folder .*a_file cannot be made"),
]


@pytest.mark.parametrize("status, template, pattern", [(2, a, p) for a, p in USAGE] + [(1, a, p) for a, p in FAILURE],
                         ids=[" ".join(a)[:60] for a, _ in USAGE + FAILURE])
def test_bad_invocations_exit_with_one_line(paths, capsys, status, template, pattern):
    assert main(_argv(template, paths)) == status
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert re.fullmatch(pattern + r".*\n", err), err


def test_unpacked_rows_longer_than_block_size_are_refused_not_cut(paths, capsys):
    """The issue's example: a corpus change makes samples longer than the preset's block_size (the
    cpu preset's 96 tokens fit its 2 pairs of 1..6 actions; 4 pairs do not)."""
    import datasets

    datasets.disable_progress_bars()
    try:
        argv = ["train", "--preset", "cpu", "--output_dir", str(paths["base"] / "cut"), "--dataset_cache_dir",
                str(paths["base"] / "hf"), "--dataset_overrides",
                "num_prompt_pairs=4,max_length=6,train_size=64,validation_size=8,test_size=8"]
        assert main(argv) == 2
    finally:
        datasets.enable_progress_bars()
    err = capsys.readouterr().err
    match = re.fullmatch(r"karel-hf train: error: packing is off and the longest sample has (\d+) tokens, more than "
                         r"block_size 96: pass --block_size \1 \(or more\) so that no sample is cut, or --packing true\n", err)
    assert match and int(match.group(1)) > 96, err


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "verify-corpus" in capsys.readouterr().out
    assert main(["train", "--help"]) == 0
    assert "--learning_rate" in capsys.readouterr().out


def test_unexpected_errors_are_one_line_with_the_debug_hint(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(cli, "_cmd_verify_corpus", broken)
    assert main(["verify-corpus", "x.jsonl"]) == 1
    assert capsys.readouterr().err == ("karel-hf verify-corpus: internal error: RuntimeError: something unexpected "
                                       "(rerun with KAREL_HF_DEBUG=1 to see the traceback)\n")
    monkeypatch.setenv("KAREL_HF_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something"):
        main(["verify-corpus", "x.jsonl"])


def test_console_script_exit_status_and_stderr(paths):
    """The installed entry point, as a user runs it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "karel_hf.cli", "tokenizer", "save", str(paths["base"] / "a_file")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1 and out.stdout == ""
    assert re.fullmatch(r"karel-hf tokenizer save: error: .*a_file is a file, not a folder; choose another path\n", out.stderr)
    assert (paths["base"] / "a_file").read_text() == "x"
    out = subprocess.run([sys.executable, "-m", "karel_hf.cli", "verify-corpus", str(paths["base"] / "missing")],
                         capture_output=True, text=True, env={**env, "KAREL_HF_DEBUG": "1"}, timeout=120)
    assert out.returncode == 1 and "Traceback" in out.stderr and "FileNotFoundError" in out.stderr
