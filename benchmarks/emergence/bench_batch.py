"""Optimizer steps/s and tokens/s of a bare training step vs batch size and width (bf16 autocast or fp32).

    OMP_NUM_THREADS=1 python benchmarks/emergence/bench_batch.py [--fp32]
"""
import argparse
import time

import torch

from karel_hf.modeling import build_model
from karel_hf.tokenizer import build_tokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fp32", action="store_true")
    ap.add_argument("--seq", type=int, default=88)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--shapes", default="4x128,4x256")
    ap.add_argument("--batches", default="16,32,64")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tok = build_tokenizer()
    for shape in args.shapes.split(","):
        layers, width = map(int, shape.split("x"))
        model = build_model("cpu", tok, n_layer=layers, n_embd=width, n_head=4)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for batch in map(int, args.batches.split(",")):
            ids = torch.randint(5, len(tok), (batch, args.seq))
            times = []
            for step in range(args.steps + 3):
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.fp32):
                    loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad()
                if step >= 3:
                    times.append(time.perf_counter() - t)
            times.sort()
            med = times[len(times) // 2]
            print(f"{shape} batch {batch} {'fp32' if args.fp32 else 'bf16'}: {1 / med:.1f} steps/s, "
                  f"{batch * args.seq / med / 1000:.1f}k tokens/s (median of {args.steps})", flush=True)


if __name__ == "__main__":
    main()
