"""Small helpers every part of karel_hf shares: atomic writes, library versions, checkpoint
discovery and key=value overrides.

- Atomic writes: a file (or folder) is written under a temporary name beside its target and renamed
  onto it, so an interrupted run never leaves a half-written file; `atomic_path` is the pattern for
  writers that take a path (`to_parquet`, `savefig`, `save_pretrained`), the other three write text,
  bytes or JSON. `writable_dir` / `writable_file` check an output path before any work is done (a
  file where a folder should be, or the reverse, or a folder that cannot be written is an OSError
  naming the path).
- `library_versions`: the versions every output folder records (run config, reproduction, traces).
- Checkpoints are Trainer folders `checkpoint-<N>` (transformers' `PREFIX_CHECKPOINT_DIR`). What
  counts as one depends on the use, and both uses are named here: a *model* checkpoint holds weights
  and a config (what the reproduction sweeps and the Hub gets); a *resumable* one holds a
  `trainer_state.json` that parses, which the Trainer writes after the weights, optimizer and
  scheduler, so a save cut short lacks it or holds a torn copy, plus the model (and, past step 0,
  the optimizer and scheduler state) that resuming loads. `checkpoint_problem` says what is missing;
  `latest_checkpoint` skips such a checkpoint and names it in a warning, so a resume falls back to
  the previous intact one.
- Secrets: `redact_argv` replaces the value of every `--*token` flag (`--hub_token hf_...`,
  `--hub_token=hf_...`) and every occurrence of a known secret in a command line, as transformers'
  `TrainingArguments.to_dict` masks its `*_token` fields, before a command line is recorded.
- Overrides: `parse_overrides` reads `key=value` pairs for corpus configs (`--dataset_overrides`,
  `karel-hf dataset export --set`); GPT-2 config overrides go through transformers' own
  `PretrainedConfig.update_from_string` (`apply_config_overrides`), as transformers' causal
  language-modeling example does with its `--config_overrides`.

Standard library only, so that the pure Python + NumPy `karel_hf.karel` package can use it too.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterator

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path` (an empty file, or an empty folder with `directory=True`);
    when the block ends without an error it is renamed onto `path`, else removed.

    The temporary name keeps the suffix (`savefig` reads the format from it). An existing folder at
    `path` is moved aside, replaced, then deleted. The result gets the permissions a plain `open` or
    `mkdir` would give it (the process umask), not the owner-only mode of `tempfile`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = f".{path.stem}.", f".tmp{path.suffix}"
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix, suffix=suffix))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
        os.close(fd)
        tmp = Path(name)
    os.chmod(tmp, (0o777 if directory else 0o666) & ~_umask())
    try:
        yield tmp
        if directory and path.is_dir():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix, suffix=".old"))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def writable_dir(path, what: str = "output folder") -> Path:
    """Create folder `path` (and its parents) if needed and check that files can be written in it;
    an OSError names `what` and the path when a file is in the way or the folder is read-only."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"the {what} {path} cannot be made: {parent} is a file, not a "
                                     "folder; choose another path")
        if parent.exists():
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise type(err)(err.errno, f"cannot write the {what} ({err.strerror})", str(path)) from None
    return path


def writable_file(path, what: str = "output file") -> Path:
    """Check that file `path` can be written (its folder is made if needed); an OSError names `what`
    and the path when it is a folder, a link or a special file (a device, a pipe: the atomic rename
    would replace it rather than write through it) or its folder cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"the {what} {path} is a folder; pass a file path")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise OSError(errno.EINVAL, f"the {what} {path} is a link or a special file, which a write would replace; "
                      "pass a regular file path")
    writable_dir(path.parent, f"folder of the {what}")
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    """Write UTF-8 `text` to `path` through a temporary file and a rename."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, value, *, default=None) -> Path:
    """Write `value` as indented JSON plus a newline; `default` as in `json.dumps`."""
    return atomic_write_text(path, json.dumps(value, indent=2, default=default) + "\n")


# ------------------------------------------------------------------------------------- logging
class StdoutHandler(logging.StreamHandler):
    """A logging handler that writes to whatever `sys.stdout` is when a record is emitted (the
    console, or a notebook's or a test's capture), never to a stream that has since been closed."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the property always reads sys.stdout
        pass


# ------------------------------------------------------------------------------------- machine
# The CPU flags that decide bf16's speed (docs/cpu_notes.md), best first.
CPU_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")
# Variables that make torch (ATen), oneDNN and MKL use a lower instruction set than the CPU has
# (set to avx2 / AVX2 / AVX2, a process runs an AVX2-only CPU's code; docs/cpu_notes.md).
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def machine_info() -> dict:
    """What a speed or a result depends on here: the CPU model, which of `CPU_FLAGS` it has, cores, torch
    threads, torch's version and, when set, the `ISA_LIMITS` variables."""
    import torch

    flags, model = set(), platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    found = {"cpu": model, "flags": [f for f in CPU_FLAGS if f in flags], "cores": os.cpu_count(),
             "threads": torch.get_num_threads(), "torch": torch.__version__}
    limits = {name: os.environ[name] for name in ISA_LIMITS if os.environ.get(name)}
    if limits:
        found["isa_limits"] = limits
    return found


def describe_machine(machine: dict) -> str:
    """`machine_info()` in one phrase: 'Intel Xeon (amx_bf16, avx2; limited to ...), 2 torch threads'."""
    limits = machine.get("isa_limits") or {}
    inside = ", ".join(machine.get("flags", [])) or "none of " + ", ".join(CPU_FLAGS)
    if limits:
        inside += "; limited to " + ", ".join(f"{k}={v}" for k, v in limits.items())
    return f"{machine.get('cpu') or 'unknown CPU'} ({inside}), {machine.get('threads', '?')} torch thread(s)"


# ---------------------------------------------------------------------------- library versions
VERSIONED_LIBRARIES = (
    "karel_hf", "numpy", "torch", "transformers", "datasets", "accelerate", "tokenizers", "safetensors",
    "evaluate", "scikit-learn", "scipy",
)


def library_versions() -> dict[str, str]:
    """Python's version and the installed version of each of `VERSIONED_LIBRARIES` ("not installed")."""
    out = {"python": platform.python_version()}
    for name in VERSIONED_LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


# --------------------------------------------------------------------------------- checkpoints
MODEL_CONFIG_FILE = "config.json"
WEIGHT_GLOBS = ("*.safetensors", "model.safetensors.index.json")  # save_safetensors, the Trainer's default
TRAINER_STATE_FILE = "trainer_state.json"


def _checkpoint_prefix() -> str:
    # transformers.trainer_utils imports torch; imported here so that `import karel_hf.utils` stays
    # light for the pure-NumPy karel package and the Hub client.
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    return PREFIX_CHECKPOINT_DIR


def checkpoint_dir(output_dir, step: int) -> Path:
    """Where the Trainer saves step `step` of a run: `output_dir/checkpoint-<step>`."""
    return Path(output_dir) / f"{_checkpoint_prefix()}-{step}"


def checkpoint_folders(output_dir) -> list[tuple[int, Path]]:
    """(N, folder) of every `checkpoint-<N>` folder in `output_dir`, by N; complete or not."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"^{re.escape(_checkpoint_prefix())}-(\d+)$")
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := pattern.match(p.name))]
    return sorted(found)


def weight_files(folder) -> list[Path]:
    """The model weight files at the top of `folder`."""
    return sorted({p for pattern in WEIGHT_GLOBS for p in Path(folder).glob(pattern) if p.is_file()})


def holds_model(folder) -> bool:
    """A model checkpoint: weights and `config.json` (what `from_pretrained` loads)."""
    return (Path(folder) / MODEL_CONFIG_FILE).is_file() and bool(weight_files(folder))


OPTIMIZER_FILE, SCHEDULER_FILE = "optimizer.pt", "scheduler.pt"  # transformers.trainer's names


def checkpoint_problem(folder) -> str | None:
    """Why `folder` cannot be resumed from (a missing or torn file), or None when it can: a
    `trainer_state.json` that parses, the model, and past step 0 the optimizer and scheduler."""
    folder = Path(folder)
    state_file = folder / TRAINER_STATE_FILE
    if not state_file.is_file():
        return f"no {TRAINER_STATE_FILE} (the save was cut short)"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{TRAINER_STATE_FILE} is torn or unreadable ({' '.join(str(err).split())})"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return f"{TRAINER_STATE_FILE} has no global_step"
    if not holds_model(folder):
        return f"no model ({MODEL_CONFIG_FILE} and weights)"
    if state["global_step"] > 0:
        missing = [name for name in (OPTIMIZER_FILE, SCHEDULER_FILE) if not (folder / name).is_file()]
        if missing:
            return f"no {' or '.join(missing)}"
    return None


def is_resumable(folder) -> bool:
    """A resumable checkpoint: nothing is missing or torn (see `checkpoint_problem`)."""
    return checkpoint_problem(folder) is None


def model_checkpoints(output_dir) -> list[tuple[int, Path]]:
    """(N, folder) of the model checkpoints in `output_dir`, by N (what the reproduction evaluates)."""
    return [(step, path) for step, path in checkpoint_folders(output_dir) if holds_model(path)]


def latest_checkpoint(output_dir) -> Path | None:
    """The resumable `checkpoint-<N>` folder with the largest N, or None; each newer checkpoint
    that is skipped (missing or torn files) is named in a warning."""
    for _, path in reversed(checkpoint_folders(output_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning("skipping checkpoint %s: %s", path, problem)
    return None


# ------------------------------------------------------------------------------------- secrets
_SECRET_FLAG = re.compile(r"^--?[\w-]*token$")


def redact_argv(argv, secrets=()) -> list[str] | None:
    """`argv` with the value of each `--<name>token` flag (`--hub_token X`, `--hub_token=X`) replaced by
    `<NAME_TOKEN>` (transformers' mask for `*_token` fields), and every secret in `secrets` (tokens
    known to this process; None and "" ignored) replaced by `<SECRET>` wherever it occurs."""
    if argv is None:
        return None
    secrets = [s for s in secrets if s]
    out, mask = [], None
    for arg in map(str, argv):
        flag, sep, _ = arg.partition("=")
        if mask is not None and not arg.startswith("-"):
            arg, mask = mask, None
        elif _SECRET_FLAG.match(flag):
            name = f"<{flag.lstrip('-').replace('-', '_').upper()}>"
            arg, mask = (f"{flag}={name}", None) if sep else (arg, name)
        else:
            mask = None
        for secret in secrets:
            arg = arg.replace(secret, "<SECRET>")
        out.append(arg)
    return out


# ----------------------------------------------------------------------------------- overrides
_TRUE_FALSE_NONE = {"true": True, "false": False, "none": None}


def _split_pairs(text: str) -> list[str]:
    """Split on the commas that are not inside brackets (`action_weights=[1,1,1,1,1],seed=7`)."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return items


def parse_value(raw: str):
    """A `key=value` value: JSON when it parses (numbers, true/false/null, lists), true/false/none in
    any case, else the string itself."""
    raw = raw.strip()
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return _TRUE_FALSE_NONE.get(raw.lower(), raw)


def parse_overrides(pairs, *, what: str = "overrides") -> dict:
    """`"train_size=20000,seed=7"` (or a list of "key=value" strings) -> `{"train_size": 20000, "seed": 7}`.

    `what` names the flag in the error a malformed pair raises.
    """
    if not pairs:
        return {}
    items = _split_pairs(pairs) if isinstance(pairs, str) else list(pairs)
    result = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what}: expected key=value pairs separated by commas, got {item!r}")
        result[key.strip()] = parse_value(raw)
    return result


def format_overrides(values: dict) -> str:
    """The inverse of `parse_overrides`: `{"train_size": 20000}` -> `"train_size=20000"`."""
    return ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items())


def apply_config_overrides(config, overrides: str | None, *, what: str = "config_overrides"):
    """Apply `"n_layer=6,resid_pdrop=0.1"` to a `PretrainedConfig` with its own `update_from_string`
    (values take the type of the field they replace; unknown fields raise); returns the config.

    `update_from_string` refuses fields whose value is None (GPT-2's `n_inner`, the MLP width, is
    None for 4 x n_embd): those take a number, true/false or a string as `parse_value` reads it."""
    from huggingface_hub.errors import StrictDataclassError  # transformers 5 configs check types on setattr

    if not overrides:
        return config
    unset, rest = {}, []
    for item in (item.strip() for item in overrides.split(",")):
        key, sep, raw = item.partition("=")
        if sep and hasattr(config, key) and getattr(config, key) is None:
            unset[key] = parse_value(raw)
        else:
            rest.append(item)
    try:
        for key, value in unset.items():
            if value is not None and not isinstance(value, (bool, int, float, str)):
                raise ValueError(f"{key}: expected a number, true/false or a string, got {value!r}")
        if rest:
            config.update_from_string(",".join(rest))
        for key, value in unset.items():
            setattr(config, key, value)
    except (ValueError, TypeError, StrictDataclassError) as err:
        message = " ".join(str(err).split())  # one line (huggingface_hub's validation errors span two)
        raise ValueError(
            f"{what}: {message}; expected existing {type(config).__name__} fields as 'n_layer=6,n_embd=384'"
        ) from None
    return config
