"""Benchmark: grammar-constrained decoding with hidden-state capture vs plain `generate`.

(a) `karel_hf.decoding.decode(..., constrained=True, capture=True)`: the Karel grammar processor,
    `output_hidden_states=True`, per-action layer-mean states gathered to NumPy;
(b) plain greedy `model.generate` (no processor, no hidden states) with the same max_new_tokens,
    tokenisation and `batch_decode` included.

Same model, same prompts, same process; the two are run alternately `--repeats` times after a
warm-up batch (in alternating order) and the median times are reported as prompts/s, with the ratio
(a)/(b) (goal: >= 0.8), both for wall time and for this process's CPU time (the latter is robust to
other jobs sharing the cores; on a GPU only wall time means anything).
The model is a randomly initialised GPT-2 sized like a CPU preset (eager attention); its weights
do not matter for speed, and a fresh one emits all `max_new_actions` actions, so (a) and (b)
generate the same number of tokens.

    OMP_NUM_THREADS=1 python benchmarks/bench_decode.py                  # 4 x 256, 64 prompts, fp32
    python benchmarks/bench_decode.py --bf16 --n_layer 8 --n_embd 512    # bf16 autocast
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from karel_hf.data.formatting import format_prompt
from karel_hf.decoding import decode, default_max_new_tokens
from karel_hf.karel import World
from karel_hf.tokenizer import build_tokenizer

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "straight_line_200.jsonl"


def reference_prompts(n: int, num_pairs: int = 5) -> list[str]:
    """Prompts of the authors' reference specs (cycled to n), or seeded random worlds without them."""
    if REFERENCE.is_file():
        records = [json.loads(line) for line in REFERENCE.read_text().splitlines() if line.strip()]
        views = [
            ([World.from_ascii(r[f"input{i}"]).view_codes() for i in range(num_pairs)],
             [World.from_ascii(r[f"output{i}"]).view_codes() for i in range(num_pairs)])
            for r in records
        ]
    else:
        rng = np.random.default_rng(0)
        views = []
        for _ in range(64):
            grids = rng.choice([0, 0, 0, 0, 0, 0, 0, 1, 6], size=(2 * num_pairs, 6, 6)).astype(np.int8)
            grids[:, 0, 0] = 3  # a robot facing east
            views.append((list(grids[:num_pairs]), list(grids[num_pairs:])))
    return [format_prompt(*views[i % len(views)]) for i in range(n)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_prompts", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--n_layer", type=int, default=4)
    parser.add_argument("--n_embd", type=int, default=256)
    parser.add_argument("--n_head", type=int, default=4)
    parser.add_argument("--max_new_actions", type=int, default=14)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for both")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=1024, n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        attn_implementation="eager",
    )
    model = GPT2LMHeadModel(config).to(args.device).eval()
    prompts = reference_prompts(args.num_prompts)
    max_new_tokens = default_max_new_tokens(args.max_new_actions)
    autocast = (
        torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16)
        if args.bf16 else contextlib.nullcontext()
    )

    def constrained(batch):
        return decode(model, tokenizer, batch, batch_size=args.batch_size, capture=True,
                      max_new_actions=args.max_new_actions, progress=False)

    @torch.no_grad()
    def plain(batch):
        texts = []
        for start in range(0, len(batch), args.batch_size):
            enc = tokenizer(batch[start : start + args.batch_size], return_tensors="pt", padding=True, padding_side="left").to(args.device)
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            texts += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return texts

    def timed(fn):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn(prompts)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - wall, time.process_time() - cpu, result

    runs = {"constrained+capture": constrained, "plain generate": plain}
    times = {name: [] for name in runs}  # (wall s, process CPU s) per repeat
    with autocast:
        for fn in runs.values():  # warm-up
            fn(prompts[: args.batch_size])
        for r in range(args.repeats):  # alternate the order, so drifting load hits both alike
            for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                wall, cpu, result = timed(runs[name])
                times[name].append((wall, cpu))
                if name == "constrained+capture":
                    out = result

    n_params = sum(p.numel() for p in model.parameters())
    prompt_len = len(tokenizer(prompts[0])["input_ids"])
    print(f"model: GPT-2 {args.n_layer} x {args.n_embd} ({n_params / 1e6:.1f}M params), eager attention, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}, device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"{args.num_prompts} prompts of {prompt_len} tokens, batch {args.batch_size}, max_new_tokens {max_new_tokens}, "
          f"{args.repeats} repeats (median); constrained mean actions {np.mean(out.num_actions):.1f}")
    rates, cpu_rates = {}, {}
    for name, ts in times.items():
        rates[name] = args.num_prompts / statistics.median(t for t, _ in ts)
        cpu_rates[name] = args.num_prompts / statistics.median(c for _, c in ts)
        print(f"  {name:22s} {rates[name]:8.2f} prompts/s wall, {cpu_rates[name]:8.2f} per CPU-second   "
              f"(wall {', '.join(f'{t:.2f}' for t, _ in ts)} s; CPU {', '.join(f'{c:.2f}' for _, c in ts)} s)")
    ratio = rates["constrained+capture"] / rates["plain generate"]
    cpu_ratio = cpu_rates["constrained+capture"] / cpu_rates["plain generate"]
    print(f"  ratio constrained+capture / plain: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU time (goal >= 0.8x; "
          "on a shared CPU the CPU-time ratio is the less noisy one)")


if __name__ == "__main__":
    main()
