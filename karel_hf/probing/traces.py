"""Trace datasets: the model's hidden state at every action of a program, with the program state.

Follows docs/protocol.md §6-6b (and Othello-GPT's activation caches). Two families (`mode`):

- `generated` (the paper's): for every specification the model writes a program (greedy,
  grammar-constrained, `karel_hf.decoding.decode` with capture on); the *generated* program is
  parsed and executed on the 5 spec inputs;
- `teacher_forced`: the row's reference `program` is run through the model in one forward pass
  (`karel_hf.decoding.teacher_force`), optionally only rows with at least `min_length` actions.
  The rows and labels are then the same at every checkpoint, the untrained model included.

Each action becomes one row pairing the model state m_k (taken where action k is emitted) with
the semantic states s_(k+o), o = -2..+2, from `karel_hf.probing.labels`.

Schema of the returned `datasets.Dataset` (one row per action):

| column | type | meaning |
|---|---|---|
| `example_id` | int64 | the spec row's `id` |
| `step` | int16 | k, 1-based index of the action |
| `num_actions` | int16 | n, actions in the program |
| `action` | string | the k-th action |
| `program` | string | the program text (generated, or the reference when teacher-forced) |
| `correct` | bool | the program maps the prompt's spec inputs to their outputs |
| `correct_all` | bool | ... and every held-out pair of the row too |
| `state` | float32[hidden] | m_k averaged over all hidden-state layers (embeddings included) |
| `code_state` | float32[hidden] | the layer-mean state at the last prompt position ("Code:\\n"), which has seen no program; repeated on each row of the example |
| `layer_<i>` | float32[hidden] | m_k at hidden-state layer i (0 = embeddings), for i in `layers` |
| `<label>` | int8 | label at s_k (offset 0, "current") |
| `<label>_prev2`, `_prev1`, `_next1`, `_next2` | int8 | label at s_(k+o); -1 when k + o < 0 or > n |
| `<label>_initial`, `<label>_final` | int8 | label at s_0 (the input grid) and s_n (after the whole program) |
| `<label>_output` | int8 | label read off the spec's output world (the output grid) |
| `<semantics>__direction_<i>[...]` | int8 | the direction labels (offsets and `_final`) under an alternative semantics |

`<label>` ranges over `labels.ALL_LABELS` (`direction_0..4`, `dx_start`, `dy_start`, `dx_end`,
`dy_end`, `x`, `y`, `facing_wall`, `wall_north/east/south/west`; see `labels` for the class coding);
`labels.label_column(label, offset, semantics)` names a column. Labels are stored raw: which rows
count at an offset (`drop_last`, the row rule `labels.scored_rows`) is decided when scoring
(`karel_hf.probing.measure.semantic_content(..., drop_last=True)`), so one dataset serves both
settings. Generated programs that do not parse (or have control flow) produce no rows. The
untrained-model control is the same call with an untrained model.

Caching: with `cache_dir`, the dataset is saved under `cache_dir/traces-<fingerprint>` where the
fingerprint hashes the model weights (the checkpoint's weight files, else the in-memory tensors, or
a `model_fingerprint` you pass), the tokenizer's vocabulary, the rows (ids, worlds and, teacher-
forced, programs), the mode and every option; it is written to a temporary folder and renamed, so
an interrupted run leaves no partial cache, and a second call with the same inputs loads it
without running the model. The temporary folder (`.traces-tmp-<pid>-*`) of a build that was killed
is removed by the next build in the same cache folder once its process is gone. A cached dataset
that no longer loads (a truncated or corrupted file) is named in a warning, removed and built again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
from datasets.arrow_writer import ArrowWriter
from tqdm.auto import tqdm

from karel_hf.data.formatting import format_prompt
from karel_hf.karel.interpreter import execute
from karel_hf.karel.program import format_program, parse
from karel_hf.karel.semantics import SEMANTICS, get_semantics
from karel_hf.karel.world import World, WorldFormatError
from karel_hf.utils import library_versions

from .labels import NUM_SPEC_INPUTS, OFFSETS, label_columns, step_labels

logger = logging.getLogger(__name__)

TRACE_FORMAT_VERSION = 2  # bump when the rows or columns change meaning (2: offsets -2..+2, code_state, _final/_output, modes)
MODES = ("generated", "teacher_forced")
WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
CONFIG_FILE = "trace_config.json"
WORK_PREFIX = ".traces-tmp-"  # + "<pid>-<random>": a build's temporary folder inside the cache folder
_WORK_PID = re.compile(rf"^{re.escape(WORK_PREFIX)}(\d+)-")
_STARTED = time.time()  # about when this process started: older pid-less work folders are stale


# ------------------------------------------------------------------------------ fingerprints
def _weight_files(path) -> list[Path]:
    if not path or not Path(path).is_dir():
        return []
    return sorted(
        p for p in Path(path).iterdir()
        if p.is_file() and p.suffix in WEIGHT_FILE_SUFFIXES and not p.name.startswith(("optimizer", "scheduler", "rng_state", "training_args"))
    )


def fingerprint_model(model) -> str:
    """sha256 of the checkpoint's weight file(s) when the model was loaded from a local folder,
    else of the in-memory parameters and buffers; the dtype is included either way."""
    digest = hashlib.sha256(str(getattr(model, "dtype", "")).encode())
    files = _weight_files(getattr(model, "name_or_path", None))
    if files:
        for path in files:
            digest.update(path.name.encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
    else:
        import torch

        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprint_tokenizer(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()


def _rows_fingerprint(rows, with_programs: bool = False) -> str:
    digest = hashlib.sha256()
    for ids, inputs, outputs, programs in _iter_rows(rows, 1024, with_programs):
        digest.update(np.asarray(ids, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(inputs, dtype=np.int8).tobytes())
        digest.update(np.ascontiguousarray(outputs, dtype=np.int8).tobytes())
        if with_programs:
            digest.update(json.dumps(list(programs)).encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------- rows
def _iter_rows(rows, size: int, with_programs: bool = False):
    """(ids, inputs, outputs, programs or None) chunks from a Dataset or a sequence of dicts."""
    needed = {"id", "inputs", "outputs"} | ({"program"} if with_programs else set())
    if isinstance(rows, datasets.Dataset):
        missing = needed - set(rows.column_names)
        if missing:
            raise ValueError(f"rows lack column(s) {sorted(missing)}; pass a Karel split (load_karel(...))")
        view = rows.with_format("numpy", columns=["id", "inputs", "outputs"])
        for start in range(0, len(rows), size):
            batch = view[start : start + size]
            programs = rows[start : start + size]["program"] if with_programs else None
            yield batch["id"], batch["inputs"], batch["outputs"], programs
    else:
        rows = list(rows)
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            missing = needed - set(chunk[0]) if chunk else set()
            if missing:
                raise ValueError(f"rows lack key(s) {sorted(missing)}; each row needs {sorted(needed)}")
            yield (
                np.array([r["id"] for r in chunk]),
                np.stack([np.asarray(r["inputs"]) for r in chunk]),
                np.stack([np.asarray(r["outputs"]) for r in chunk]),
                [r["program"] for r in chunk] if with_programs else None,
            )


def _is_correct(program, inputs, outputs) -> bool:
    for inp, out in zip(inputs, outputs):
        try:
            got = execute(program, World.from_view_codes(inp)).world.view_codes()
        except WorldFormatError:  # e.g. more markers in a cell than the text format can show
            return False
        if not np.array_equal(got, out):
            return False
    return True


# ------------------------------------------------------------------------------------ cache
def _process_alive(pid: int) -> bool:
    if os.name != "posix":  # no cheap liveness test: keep the folder
        return True
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_work_dirs(cache_dir) -> list[Path]:
    """Remove the temporary folders that killed builds left in `cache_dir` (their process is gone);
    returns them."""
    removed = []
    for path in sorted(Path(cache_dir).glob(f"{WORK_PREFIX}*")):
        match = _WORK_PID.match(path.name)
        if match:
            pid = int(match.group(1))
            if pid == os.getpid() or _process_alive(pid):
                continue
        elif path.stat().st_mtime >= _STARTED:
            continue
        logger.info("removing %s, the temporary folder of an interrupted trace build", path)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _load_cached(final: Path) -> datasets.Dataset | None:
    """The cached trace dataset, or None when there is none or it no longer loads (then it is
    named in a warning and removed, so that it is built again)."""
    if not final.is_dir():
        return None
    try:
        dataset = datasets.load_from_disk(str(final))
        json.loads((final / CONFIG_FILE).read_text())
    except (OSError, ValueError, KeyError, IndexError, pa.ArrowException) as err:  # torn files, bad JSON, bad Arrow,
        # no shard at all (an empty dataset saved before save_to_disk was given one)
        reason = " ".join(str(err).split())[:200]
        logger.warning("trace cache %s is unreadable (%s: %s); removing it and building it again",
                       final, type(err).__name__, reason)
        shutil.rmtree(final, ignore_errors=True)
        return None
    logger.info("trace dataset found in cache: %s", final)
    return dataset


# ----------------------------------------------------------------------------------- schema
def trace_features(hidden_size: int, *, layers=(), semantics=tuple(SEMANTICS), offsets=OFFSETS) -> datasets.Features:
    vector = datasets.List(datasets.Value("float32"), length=hidden_size)
    columns = {
        "example_id": datasets.Value("int64"),
        "step": datasets.Value("int16"),
        "num_actions": datasets.Value("int16"),
        "action": datasets.Value("string"),
        "program": datasets.Value("string"),
        "correct": datasets.Value("bool"),
        "correct_all": datasets.Value("bool"),
        "state": vector,
        "code_state": vector,
    }
    columns.update({f"layer_{i}": vector for i in layers})
    columns.update({name: datasets.Value("int8") for name in label_columns(semantics, offsets)})
    return datasets.Features(columns)


def _program_columns(text, inputs, outputs, semantics, offsets, num_prompt_pairs) -> dict | None:
    """The columns that depend on the program and the spec only (not on the model): n, actions,
    correctness and every label column (int8); None when the program yields no rows."""
    try:
        program = parse(text)
    except ValueError:
        return None
    if not program.is_straight_line or len(program.body) == 0:
        return None
    spec_in, spec_out = inputs[:num_prompt_pairs], outputs[:num_prompt_pairs]
    correct = _is_correct(program, spec_in, spec_out)
    correct_all = correct and _is_correct(program, inputs[num_prompt_pairs:], outputs[num_prompt_pairs:])
    labels = step_labels(program, inputs[:NUM_SPEC_INPUTS], outputs[:NUM_SPEC_INPUTS], semantics=semantics, offsets=offsets)
    return {"n": len(program.body), "actions": program.actions(), "correct": correct, "correct_all": correct_all,
            "label_names": tuple(labels), "labels": np.stack(list(labels.values())).astype(np.int8)}  # (columns, n)


def _example_rows(example_id, text, states, code_state, layer_states, inputs, outputs, semantics, offsets,
                 num_prompt_pairs: int = NUM_SPEC_INPUTS, cache: dict | None = None) -> dict | None:
    """Columns (lists) for one spec's program; None when it yields no rows. `cache` maps
    (program, spec, options) to `_program_columns`, so a sweep computes each one once."""
    key = (text, np.asarray(inputs).tobytes(), np.asarray(outputs).tobytes(), semantics, offsets, num_prompt_pairs)
    if cache is not None and key in cache:
        fixed = cache[key]
    else:
        fixed = _program_columns(text, inputs, outputs, semantics, offsets, num_prompt_pairs)
        if cache is not None:
            cache[key] = fixed
    if fixed is None:
        return None
    n = fixed["n"]
    if states.shape[0] != n:
        logger.warning(
            "example %s: the program has %d actions but %d captured states; skipped", example_id, n, states.shape[0]
        )
        return None
    columns = {
        "example_id": [int(example_id)] * n,
        "step": list(range(1, n + 1)),
        "num_actions": [n] * n,
        "action": fixed["actions"],
        "program": [text] * n,
        "correct": [fixed["correct"]] * n,
        "correct_all": [fixed["correct_all"]] * n,
        "state": np.asarray(states, dtype=np.float32),
        "code_state": np.repeat(np.asarray(code_state, dtype=np.float32)[None], n, axis=0),
    }
    for layer, per_example in layer_states.items():
        columns[f"layer_{layer}"] = np.asarray(per_example, dtype=np.float32)
    columns.update(zip(fixed["label_names"], fixed["labels"]))
    return columns


def _program_length(text: str) -> int:
    try:
        return len(parse(text).body)
    except ValueError:
        return 0


# ------------------------------------------------------------------------------------ build
def build_trace_dataset(
    model,
    tokenizer,
    rows,
    *,
    mode: str = "generated",
    min_length: int = 1,
    batch_size: int = 32,
    max_new_actions: int = 14,
    layers: Sequence[int] = (),
    constrained: bool = True,
    semantics: Sequence[str] = tuple(SEMANTICS),
    offsets: Sequence[int] = OFFSETS,
    cache_dir: str | os.PathLike | None = None,
    model_fingerprint: str | None = None,
    fingerprint_extra: str | dict | None = None,
    chunk_size: int = 512,
    progress: bool = True,
    num_prompt_pairs: int = NUM_SPEC_INPUTS,
    label_cache: dict | None = None,
) -> datasets.Dataset:
    """One row per action of a program for each spec in `rows` (schema: the module docstring).

    `mode="generated"` decodes a program per spec (`max_new_actions`, `constrained`);
    `mode="teacher_forced"` runs the row's reference `program` through the model, keeping only rows
    whose program has at least `min_length` actions (the caller picks it, e.g. 4 when the split has
    such lengths; `min_length` is ignored for generated programs).

    `rows` is a Karel split (`load_karel(...)`) or dicts with `id`, `inputs` and `outputs`
    ((pairs, rows, cols) view codes; the first `num_prompt_pairs` pairs form the prompt and the
    specification, the rest are held out; labels are read on the first 5 inputs, so rows need >= 5)
    and, teacher-forced, `program`. `layers` adds `layer_<i>` columns (hidden-state index,
    0 = embeddings, -1 = the last, named by its non-negative index). `fingerprint_extra` (any
    JSON-serialisable value) is folded into the cache key, e.g. the checkpoint step. `label_cache`: a
    dict kept across calls (the checkpoints of a sweep) so that the labels of a (program, spec) pair,
    which do not depend on the model, are computed once (teacher-forced rows: once per sweep).

    Labels are stored raw at every offset; the row rule (`drop_last`) is applied when scoring
    (`karel_hf.probing.measure.semantic_content(..., drop_last=True)`, the default there).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    teacher = mode == "teacher_forced"
    if not isinstance(rows, datasets.Dataset):
        rows = list(rows)  # iterated twice (fingerprint, then the model)
    layers = tuple(int(i) for i in layers)
    if any(i < 0 for i in layers):  # name columns by the non-negative index (layer_-1 -> layer_<n_layer>)
        n_hidden = model.config.num_hidden_layers + 1
        layers = tuple(i % n_hidden if -n_hidden <= i else i for i in layers)
    semantics = tuple(semantics)
    for name in semantics:
        get_semantics(name)
    if "original" not in semantics:
        raise ValueError(f"semantics must include 'original' (the labels every probe is scored on), got {semantics}")
    offsets = tuple(int(o) for o in offsets)
    if num_prompt_pairs < 1:
        raise ValueError(f"num_prompt_pairs must be >= 1, got {num_prompt_pairs}")
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be positive, got {batch_size} and {chunk_size}")
    if min_length < 1:
        raise ValueError(f"min_length must be >= 1, got {min_length}")

    final = None
    if cache_dir is not None:
        options = {
            "format": TRACE_FORMAT_VERSION,
            "mode": mode,
            "model": model_fingerprint or fingerprint_model(model),
            "tokenizer": fingerprint_tokenizer(tokenizer),
            "rows": _rows_fingerprint(rows, with_programs=teacher),
            "min_length": min_length if teacher else None,
            "max_new_actions": None if teacher else max_new_actions,
            "constrained": None if teacher else constrained,
            "layers": layers,
            "semantics": semantics,
            "offsets": offsets,
            "num_prompt_pairs": num_prompt_pairs,
            "extra": fingerprint_extra,
        }
        key = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:20]
        final = Path(cache_dir) / f"traces-{key}"
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        remove_stale_work_dirs(cache_dir)
        cached = _load_cached(final)
        if cached is not None:
            return cached

    from karel_hf import decoding  # torch-side; imported here so `import karel_hf.probing` stays light

    work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=cache_dir))
    try:
        arrow_path = work / "data.arrow"
        writer = None
        total = len(rows)
        skipped = 0
        bar = tqdm(total=total, desc=f"traces ({mode})", unit="spec", disable=not progress)
        for ids, inputs, outputs, programs in _iter_rows(rows, chunk_size, with_programs=teacher):
            if teacher:
                programs = [format_program(parse(p), "lines") for p in programs]
                keep = [j for j, p in enumerate(programs) if _program_length(p) >= min_length]
                bar.update(len(ids) - len(keep))
                ids, inputs, outputs = ids[keep], inputs[keep], outputs[keep]
                programs = [programs[j] for j in keep]
                if not keep:
                    continue
            prompts = [format_prompt(i[:num_prompt_pairs], o[:num_prompt_pairs]) for i, o in zip(inputs, outputs)]
            if teacher:
                out = decoding.teacher_force(model, tokenizer, prompts, programs, batch_size=batch_size, layers=layers)
            else:
                out = decoding.decode(
                    model, tokenizer, prompts, batch_size=batch_size, constrained=constrained,
                    max_new_actions=max_new_actions, capture=True, layers=layers, progress=False,
                )
            batch: dict[str, list] = {}
            for j, example_id in enumerate(ids):
                layer_states = {i: (out.layer_states or {})[i][j] for i in layers}
                columns = _example_rows(
                    example_id, out.programs[j], out.action_states[j], out.code_states[j], layer_states,
                    inputs[j], outputs[j], semantics, offsets, num_prompt_pairs, label_cache,
                )
                if columns is None:
                    skipped += 1
                    continue
                for name, values in columns.items():
                    batch.setdefault(name, []).append(values)
            if batch:
                if writer is None:
                    hidden = batch["state"][0].shape[1]
                    features = trace_features(hidden, layers=layers, semantics=semantics, offsets=offsets)
                    writer = ArrowWriter(features=features, path=str(arrow_path))
                writer.write_batch({name: _concat(batch[name]) for name in features})
            bar.update(len(ids))
        bar.close()
        if skipped:
            logger.info("%d of %d programs gave no trace rows (no parse, control flow or empty)", skipped, total)
        if writer is None:
            hidden = int(getattr(model.config, "hidden_size"))
            features = trace_features(hidden, layers=layers, semantics=semantics, offsets=offsets)
            dataset = datasets.Dataset.from_dict({k: [] for k in features}, features=features)
        else:
            writer.finalize()
            writer.close()
            dataset = datasets.Dataset.from_file(str(arrow_path), in_memory=final is None)
        if final is None:
            return dataset
        staged = work / "dataset"
        quiet = not progress and not datasets.utils.are_progress_bars_disabled()
        if quiet:
            datasets.utils.disable_progress_bars()
        try:
            dataset.save_to_disk(str(staged), num_shards=1 if len(dataset) == 0 else None)  # 0 shards do not load
        finally:
            if quiet:
                datasets.utils.enable_progress_bars()
        (staged / CONFIG_FILE).write_text(json.dumps({**options, "versions": library_versions()}, indent=2, default=str))
        del dataset
        try:
            os.rename(staged, final)
        except OSError:  # another process finished the same traces first
            if not final.is_dir():
                raise
        return datasets.load_from_disk(str(final))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _concat(parts: list):
    if isinstance(parts[0], np.ndarray):
        return list(np.concatenate(parts)) if parts[0].ndim == 2 else np.concatenate(parts)
    return [value for part in parts for value in part]
