"""Tokenising the corpus: the batched fast tokenizer on `text` vs `FastEncoder` on the arrays.

    python benchmarks/bench_tokenize.py --num_samples 20000

Both give the same ids (checked here on every sample); prints samples/s for each, the ratio, and
the tokens per sample against the authors' 812 + 3n.
"""

import argparse
import time

import numpy as np

from karel_hf.data.formatting import format_prompt
from karel_hf.karel.sampling import CorpusConfig, generate
from karel_hf.tokenizer import FastEncoder, build_tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_samples", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    batch = generate(CorpusConfig(num_programs=args.num_samples, seed=args.seed), 0, args.num_samples)
    texts = [format_prompt(batch.inputs[i, :5], batch.outputs[i, :5]) + batch.programs[i] for i in range(len(batch))]
    tokenizer = build_tokenizer()

    start = time.perf_counter()
    slow = tokenizer(texts)["input_ids"]
    slow_s = time.perf_counter() - start

    fast = FastEncoder(tokenizer)
    start = time.perf_counter()
    prompts = fast.encode_prompts(batch.inputs[:, :5], batch.outputs[:, :5])
    programs = [fast.encode_program(p) for p in batch.programs]
    fast_s = time.perf_counter() - start

    mismatches = sum(prompts[i].tolist() + programs[i] != slow[i] for i in range(len(slow)))
    lengths = np.array([len(ids) for ids in slow])
    authors = 812 + 3 * batch.lengths.astype(np.int64)
    n = args.num_samples
    print(f"samples: {n}, ids identical: {n - mismatches}/{n}")
    print(f"batched fast tokenizer on text: {n / slow_s:,.0f} samples/s")
    print(f"FastEncoder on arrays:          {n / fast_s:,.0f} samples/s  ({slow_s / fast_s:.1f}x)")
    print(f"tokens per sample: mean {lengths.mean():.1f} (min {lengths.min()}, max {lengths.max()}); "
          f"authors' 812+3n: mean {authors.mean():.1f}; ratio {np.mean(lengths / authors):.3f} "
          f"(max {np.max(lengths / authors):.3f})")


if __name__ == "__main__":
    main()
