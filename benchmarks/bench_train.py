"""Benchmark: training tokens/s of `transformers.Trainer` vs a hand-written PyTorch loop, fp32 vs bf16.

Both paths train the same freshly initialised GPT-2 (a karel_hf model preset, default `cpu`) on
the same packed Karel blocks (default 16 x 512 tokens per step, the cpu preset's batch) with the
same optimizer (AdamW, linear schedule, gradient clipping at 1.0), in the same process, one after
the other. The Trainer path is karel_hf's (`KarelTrainingArguments`, `CausalLMCollator`); the loop
is the minimal equivalent: DataLoader, autocast, backward, clip, step. Each measurement times
--steps optimizer steps after --warmup steps; with --rounds > 1 the order alternates and the
median is reported.

Prints tokens/s per (path, precision) and the ratios Trainer/loop (goal: Trainer within 10%) and
bf16/fp32. bf16 autocast pays off on CPUs with AMX (or AVX512-BF16); on AVX2-only CPUs it is
slower than fp32 (the output says which the CPU has). With --program_loss_weight W (not 1) a third
path, `weighted`, is the Trainer with the weighted program loss (karel_hf.training.loss, as
`karel-hf train --program_loss_weight W` trains), and weighted/Trainer says what the weight costs.
With --activations A,B,... the paths are instead the Trainer with each GPT-2 `activation_function`
(the model preset's shape, that activation), and each is reported over the first (the baseline):
the demo preset's fused GELU (`gelu_pytorch_tanh`) against GPT-2's own `gelu_new`, for instance.
With --config_overrides 'A;B;...' the paths are the Trainer with each GPT-2 config override (as
`karel-hf train --config_overrides`: the demo's width, `n_embd=128;n_embd=96`, for instance).
With --torch_compile one more path, `compiled`, is the Trainer with `torch_compile=True` (TorchDynamo
and the --compile_backend, inductor by default) on the --program_loss_weight loss, and compiled over
the same loss uncompiled (`weighted`, or the Trainer when the weight is 1) says what compiling buys
once compiled. The compilation falls in the untimed --warmup steps; its cost is reported beside the
ratio (`compile_seconds`: the compiled warm-up's extra seconds in the first round, with inductor's
kernel cache in a fresh folder unless TORCHINDUCTOR_CACHE_DIR names another than the default) with
the steps it takes to earn it back (`steps_to_break_even`). A real stage can still gain nothing:
LOG.md E70 trained 4,000 steps of `cpu-cf`'s last stage compiled in 0.98x the uncompiled time, where
this benchmark said 1.24x. With --unpacked each row is one sample, right-padded to the batch's
longest as `packing: false` presets (cpu-cf) train, so the batches' widths vary and the compiled
model meets new shapes (dynamo then compiles a shape-generic graph); tokens/s counts the samples'
own tokens. With --block_sizes A,B,... the paths are instead the Trainer on packed rows of each
length (`trainer@A`, ...), each on its own blocks of the same corpus, and each step's seconds are
reported over the first's: how a step's time scales with its tokens (LOG.md E76). With
--cells_per_token 1,2 the paths are instead the Trainer with each tokenizer (`trainer/cpt1`, ...:
`build_tokenizer(cells_per_token)`, the model's vocabulary with it), on the same samples, one per row
as `packing: false` presets train; each step's seconds are reported over the first's (LOG.md E77).

    OMP_NUM_THREADS=1 python benchmarks/bench_train.py                 # 20 steps each, cpu preset
    python benchmarks/bench_train.py --model_preset tiny --steps 5 --batch_size 4 --output bench.json
    OMP_NUM_THREADS=1 python benchmarks/bench_train.py --precisions fp32 --program_loss_weight 4 --rounds 3
    python benchmarks/bench_train.py --model_preset demo --block_size 96 --precisions fp32 --rounds 3 \
        --steps 100 --warmup 5 --activations gelu_new,gelu_pytorch_tanh
    python benchmarks/bench_train.py --model_preset demo --dataset_config demo --block_size 96 \
        --precisions fp32 --rounds 3 --steps 100 --warmup 5 --config_overrides 'n_embd=128;n_embd=96;n_embd=64'
    python benchmarks/bench_train.py --model_preset cpu-cf --dataset_config cpu-ext --block_sizes 128,64 \
        --precisions fp32 --rounds 3 --steps 100 --warmup 10
    python benchmarks/bench_train.py --model_preset cpu-cf --dataset_config cpu-cf --block_size 128 \
        --cells_per_token 1,2 --precisions fp32 --rounds 3 --steps 100 --warmup 10
    python benchmarks/bench_train.py --model_preset cpu --dataset_config cpu-cf --block_size 128 --rounds 3 \
        --steps 100 --warmup 5 --program_loss_weight 4 --torch_compile [--unpacked]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time

import torch


def _dataset(tokenizer, dataset_config: str, block_size: int, blocks_needed: int, unpacked: bool = False):
    from karel_hf.data.builder import load_karel
    from karel_hf.training import prepare_lm_dataset

    raw = load_karel(dataset_config, split="train")
    if unpacked:  # one sample per row, as `packing: false` presets train (block_size bounds the longest)
        if len(raw) < blocks_needed:
            raise SystemExit(f"{dataset_config} has {len(raw)} samples, {blocks_needed} needed: use a bigger --dataset_config")
        return prepare_lm_dataset(raw, tokenizer, block_size=block_size, packing=False, max_samples=blocks_needed)
    samples = min(len(raw), blocks_needed * block_size // 300 + 64)  # ~390 tokens per sample on 8x8 worlds
    data = prepare_lm_dataset(raw, tokenizer, block_size=block_size, max_samples=samples)
    while len(data) < blocks_needed and samples < len(raw):  # shorter samples (the demo's ~80 tokens): more
        samples = min(len(raw), 2 * samples * blocks_needed // max(len(data), 1))
        data = prepare_lm_dataset(raw, tokenizer, block_size=block_size, max_samples=samples)
    if len(data) < blocks_needed:
        raise SystemExit(f"{dataset_config} gives {len(data)} blocks, {blocks_needed} needed: use a bigger --dataset_config")
    return data.select(range(blocks_needed))


def _tokens_per_step(args, data) -> float:
    """Tokens in one step: a packed row is block_size tokens, an unpacked row its sample's own."""
    return args.batch_size * statistics.mean(len(r) for r in data["input_ids"])


def _model(args, tokenizer, variant: dict | None = None):
    """The model preset's GPT-2, freshly initialised; `variant`: build_model keywords (an
    `activation_function`, or `config_overrides` such as "n_embd=96")."""
    from transformers import set_seed

    from karel_hf.modeling import build_model

    set_seed(args.seed)
    return build_model(args.model_preset, tokenizer, **(variant or {}))


def run_trainer(args, tokenizer, data, bf16: bool, weight: float = 1, variant: dict | None = None,
                compile: bool = False) -> tuple[float, float]:
    """(tokens/s over the timed steps, seconds from the start of training to the end of the warm-up)."""
    from transformers import PrinterCallback, Trainer, TrainerCallback

    from karel_hf.training import CausalLMCollator, KarelTrainingArguments
    from karel_hf.training.loss import compute_loss_func

    times = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            times.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        targs = KarelTrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.warmup + args.steps,
            learning_rate=args.learning_rate, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
            bf16=bf16, use_cpu=not torch.cuda.is_available(), report_to="none", save_strategy="no",
            logging_steps=10**9, disable_tqdm=True, dataloader_pin_memory=False, seed=args.seed,
            save_initial_checkpoint=False, torch_compile=compile,
            **({"torch_compile_backend": args.compile_backend} if compile else {}),
        )
        trainer = Trainer(model=_model(args, tokenizer, variant), args=targs, train_dataset=data,
                          data_collator=CausalLMCollator(tokenizer.pad_token_id), callbacks=[Clock()],
                          compute_loss_func=compute_loss_func(weight, tokenizer))
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return (args.steps * _tokens_per_step(args, data) / (times[-1] - times[args.warmup]),
            times[args.warmup] - times[0])


def run_loop(args, tokenizer, data, bf16: bool) -> float:
    from torch.utils.data import DataLoader
    from transformers import get_linear_schedule_with_warmup

    from karel_hf.training import CausalLMCollator

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = _model(args, tokenizer).to(device).train()
    loader = DataLoader(data.with_format(None), batch_size=args.batch_size, shuffle=True,
                        collate_fn=CausalLMCollator(tokenizer.pad_token_id),
                        generator=torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    total = args.warmup + args.steps
    schedule = get_linear_schedule_with_warmup(optimizer, 0, total)
    times = []
    for step, batch in enumerate(loader):
        if step == total:
            break
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter())
    return args.steps * _tokens_per_step(args, data) / (times[-1] - times[args.warmup - 1])


def _time_paths(args, tokenizer, data, paths, variants, precisions, tokenizers=None):
    """Each path's tokens/s per round, and each Trainer path's warm-up seconds per round; `data`:
    each path's blocks; `tokenizers`: a path's own tokenizer where it has one."""
    runs = {(path, p): [] for p in precisions for path in paths}
    warmups = {(path, p): [] for p in precisions for path in paths if path != "loop"}  # seconds to the timed steps
    for r in range(args.rounds):
        for p in precisions:
            for path in (paths if r % 2 == 0 else paths[::-1]):
                blocks = data[path]
                tok = (tokenizers or {}).get(path, tokenizer)
                if path == "loop":
                    runs[(path, p)].append(run_loop(args, tok, blocks, p == "bf16"))
                    continue
                if path in variants:
                    speed, warm = run_trainer(args, tok, blocks, p == "bf16", variant=variants[path])
                elif path == "compiled":
                    speed, warm = run_trainer(args, tok, blocks, p == "bf16", args.program_loss_weight,
                                              compile=True)
                else:
                    weight = args.program_loss_weight if path == "weighted" else 1
                    speed, warm = run_trainer(args, tok, blocks, p == "bf16", weight)
                runs[(path, p)].append(speed)
                warmups[(path, p)].append(warm)
    return runs, warmups


@contextlib.contextmanager
def _fresh_inductor_cache(wanted: bool):
    """Inductor's kernels compiled into a fresh folder, as on a first run (compile_seconds is then
    the cold cost; a kernel cache shared with a run under another ATEN_CPU_CAPABILITY crashes, LOG.md
    E70), unless TORCHINDUCTOR_CACHE_DIR names another folder than inductor's default, which
    importing transformers already set it to."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not wanted or (before or default_cache_dir()) != default_cache_dir():
        yield
        return
    with tempfile.TemporaryDirectory(prefix="bench_train_inductor_") as fresh:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = fresh
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = before


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_preset", default="cpu", help="karel_hf.modeling preset (default: cpu)")
    parser.add_argument("--dataset_config", default="tiny", help="load_karel config the blocks come from")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--block_size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=1, help="measurements per (path, precision); median")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--program_loss_weight", type=float, default=1,
                        help="also time the Trainer with this program-token weight (path `weighted`)")
    parser.add_argument("--activations", default=None,
                        help="time the Trainer with each of these GPT-2 activation_function values instead "
                             "(comma-separated; ratios over the first)")
    parser.add_argument("--config_overrides", default=None,
                        help="time the Trainer with each of these GPT-2 config overrides instead (separated by "
                             "';', each as `karel-hf train --config_overrides`, e.g. 'n_embd=128;n_embd=96'; "
                             "ratios over the first)")
    parser.add_argument("--block_sizes", default=None,
                        help="time the Trainer on packed rows of each of these lengths instead (comma-separated, "
                             "e.g. 128,64; step times over the first's)")
    parser.add_argument("--cells_per_token", default=None,
                        help="time the Trainer with the tokenizer of each of these cells_per_token values instead "
                             "(1,2), on the same samples one per row; step times over the first's")
    parser.add_argument("--unpacked", action="store_true",
                        help="one sample per row, right-padded to the batch's longest, as `packing: false` presets "
                             "train (tokens/s then counts the samples' own tokens, padding left out)")
    parser.add_argument("--torch_compile", action="store_true",
                        help="also time the Trainer with torch_compile=True (path `compiled`; the program loss "
                             "weight applies to it as to `weighted`)")
    parser.add_argument("--compile_backend", default="inductor", help="with --torch_compile: torch.compile's backend")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the clock starts at the end of a step)")
    activations = args.activations.split(",") if args.activations else []
    if activations:
        from transformers.activations import ACT2FN

        unknown = [a for a in activations if a not in ACT2FN]
        if unknown or len(activations) < 2:
            parser.error(f"--activations: two or more of {', '.join(sorted(ACT2FN))}"
                         f"{f' (unknown: {unknown})' if unknown else ''}")
    overrides = [o.strip() for o in args.config_overrides.split(";")] if args.config_overrides else []
    if overrides and (activations or len(set(overrides)) < len(overrides) or len(overrides) < 2 or not all(overrides)):
        parser.error("--config_overrides: two or more distinct non-empty overrides separated by ';', without --activations")
    if args.torch_compile and (activations or overrides):
        parser.error("--torch_compile times the preset's own model: without --activations or --config_overrides")
    try:
        block_sizes = [int(b) for b in args.block_sizes.split(",")] if args.block_sizes else []
    except ValueError:
        block_sizes = [0]
    if block_sizes and (len(set(block_sizes)) < max(2, len(block_sizes)) or min(block_sizes) < 2
                        or activations or overrides or args.torch_compile or args.unpacked):
        parser.error("--block_sizes: two or more distinct row lengths (integers >= 2) separated by ',', without "
                     "--activations, --config_overrides, --torch_compile or --unpacked")
    cells = args.cells_per_token.split(",") if args.cells_per_token else []
    if cells and (sorted(set(cells)) != ["1", "2"] or len(cells) != 2 or block_sizes or activations or overrides
                  or args.torch_compile):
        parser.error("--cells_per_token: 1,2 or 2,1, without --block_sizes, --activations, --config_overrides or "
                     "--torch_compile")
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers.utils import logging as hf_logging

    from karel_hf.tokenizer import build_tokenizer

    hf_logging.set_verbosity_error()
    tokenizer = build_tokenizer()
    from karel_hf.modeling import model_config

    for o in overrides:  # a bad name or value: one line now, not a traceback mid-benchmark
        try:
            model_config(args.model_preset, tokenizer, config_overrides=o)
        except ValueError as e:
            parser.error(f"--config_overrides {o!r}: {e}")
    blocks_needed = (args.warmup + args.steps) * args.batch_size
    precisions = args.precisions.split(",")
    variants = {f"trainer:{a}": {"activation_function": a} for a in activations}
    variants.update({f"trainer:{o}": {"config_overrides": o} for o in overrides})
    tokenizers = {}
    if cells:  # each tokenizer on the same samples, one per row (the model's vocabulary follows its tokenizer)
        variants = {f"trainer/cpt{c}": {} for c in cells}
        tokenizers = {f"trainer/cpt{c}": build_tokenizer(int(c)) for c in cells}
        data = {path: _dataset(tokenizers[path], args.dataset_config, args.block_size, blocks_needed, unpacked=True)
                for path in variants}
        paths = tuple(variants)
    elif block_sizes:  # the preset's own Trainer on each row length's blocks
        variants = {f"trainer@{b}": {} for b in block_sizes}
        data = {path: _dataset(tokenizer, args.dataset_config, b, blocks_needed)
                for path, b in zip(variants, block_sizes)}
        paths = tuple(variants)
    else:
        blocks = _dataset(tokenizer, args.dataset_config, args.block_size, blocks_needed, args.unpacked)
        paths = tuple(variants) if variants else (
            ("trainer", "loop") + (("weighted",) if args.program_loss_weight != 1 else ())
            + (("compiled",) if args.torch_compile else ()))
        data = dict.fromkeys(paths, blocks)
    tokens_per_step = {path: _tokens_per_step(args, d) for path, d in data.items()}
    tokens = tokens_per_step[paths[0]]
    with _fresh_inductor_cache(args.torch_compile):
        runs, warmups = _time_paths(args, tokenizer, data, paths, variants, precisions, tokenizers)
    median = {k: statistics.median(v) for k, v in runs.items()}
    cpu = {"amx": torch.cpu._is_amx_tile_supported(), "avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
           "capability": torch.backends.cpu.get_cpu_capability()}
    result = {
        "model_preset": args.model_preset, "steps": args.steps, "unpacked": args.unpacked or bool(cells),
        "batch": (f"{args.batch_size} samples of {tokens / args.batch_size:.1f} tokens on average"
                  if args.unpacked or cells else f"{args.batch_size} x {args.block_sizes or args.block_size} tokens"),
        "tokens_per_step": tokens,
        "rounds": args.rounds, "threads": torch.get_num_threads(), "cpu": cpu,
        "tokens_per_second": {f"{path}_{p}": round(v, 1) for (path, p), v in median.items()},
    }
    if "loop" in paths:
        result["trainer_over_loop"] = {p: round(median[("trainer", p)] / median[("loop", p)], 3) for p in precisions}
    if block_sizes or cells:  # a step's seconds, and over the first path's
        seconds = {(path, p): tokens_per_step[path] / v for (path, p), v in median.items()}
        sep = "@" if block_sizes else "/"
        result["tokens_per_step"] = {path.split(sep)[1]: t for path, t in tokens_per_step.items()}
        result["step_seconds"] = {f"{path}_{p}": round(v, 5) for (path, p), v in seconds.items()}
        result["step_time_over_first"] = {
            p: {path.split(sep)[1]: round(seconds[(path, p)] / seconds[(paths[0], p)], 3) for path in paths[1:]}
            for p in precisions}
    elif variants:
        base = paths[0]
        result["over_first_activation" if activations else "over_first_config"] = {
            p: {path.split(":", 1)[1]: round(median[(path, p)] / median[(base, p)], 3) for path in paths[1:]}
            for p in precisions}
    if "weighted" in paths:
        result["program_loss_weight"] = args.program_loss_weight
        result["weighted_over_trainer"] = {p: round(median[("weighted", p)] / median[("trainer", p)], 3)
                                           for p in precisions}
    if "compiled" in paths:  # over the same loss uncompiled: `weighted` when there is a weight
        plain = "weighted" if "weighted" in paths else "trainer"
        result["compile_backend"] = args.compile_backend
        result["compiled_over_uncompiled"] = {p: round(median[("compiled", p)] / median[(plain, p)], 3)
                                              for p in precisions}
        # What compiling costs up front (the warm-up's extra seconds, the first round's: later rounds
        # find the kernels compiled) and the steps it takes to earn them back at the timed rates.
        result["compile_seconds"] = {p: round(warmups[("compiled", p)][0] - warmups[(plain, p)][0], 1)
                                     for p in precisions}
        result["steps_to_break_even"] = {}
        for p in precisions:
            saved = tokens / median[(plain, p)] - tokens / median[("compiled", p)]
            result["steps_to_break_even"][p] = (round(result["compile_seconds"][p] / saved) if saved > 0 else None)
    if "fp32" in precisions and "bf16" in precisions:
        result["bf16_over_fp32"] = {path: round(median[(path, "bf16")] / median[(path, "fp32")], 3)
                                    for path in paths if path not in ("weighted", "compiled")}
    print(f"model {args.model_preset}, batch {result['batch']}, {args.steps} timed steps, "
          f"{result['threads']} thread(s), CPU {cpu}")
    width = max(10, *(len(path) + 2 for path in paths))
    print(f"{'path':<{width}}" + "".join(f"{p + ' tok/s':>14}" for p in precisions))
    for path in paths:
        print(f"{path:<{width}}" + "".join(f"{median[(path, p)]:>14.0f}" for p in precisions))
    if "trainer_over_loop" in result:
        print("Trainer / loop: " + ", ".join(f"{p} {v:.3f}" for p, v in result["trainer_over_loop"].items()))
    for p, ratios in result.get("over_first_activation", result.get("over_first_config", {})).items():
        print(f"{p}, over {paths[0].split(':', 1)[1]}: " + ", ".join(f"{a} {v:.3f}" for a, v in ratios.items()))
    if "weighted_over_trainer" in result:
        print(f"weighted (W = {args.program_loss_weight:g}) / Trainer: "
              + ", ".join(f"{p} {v:.3f}" for p, v in result["weighted_over_trainer"].items()))
    if "compiled_over_uncompiled" in result:
        print(f"compiled ({args.compile_backend}) / {'weighted' if 'weighted' in paths else 'Trainer'}: "
              + ", ".join(f"{p} {v:.3f}" for p, v in result["compiled_over_uncompiled"].items()))
        print("compiling's up-front cost: " + ", ".join(
            f"{p} {result['compile_seconds'][p]:.1f} s, even after "
            + (f"{n} steps" if n is not None else "never (no faster)")
            for p, n in result["steps_to_break_even"].items()))
    for p, ratios in result.get("step_time_over_first", {}).items():
        print(f"{p}, a step's time over {paths[0]}'s: "
              + ", ".join(f"trainer{'@' if block_sizes else '/'}{b} {v:.3f}" for b, v in ratios.items()))
    if "bf16_over_fp32" in result:
        print("bf16 / fp32:    " + ", ".join(f"{k} {v:.3f}" for k, v in result["bf16_over_fp32"].items()))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
