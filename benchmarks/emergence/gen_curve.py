"""Generation accuracy of several checkpoints on the first N test specs of a spec's corpus (quick screens).

    python benchmarks/emergence/gen_curve.py SPEC.json CKPT [CKPT ...] [--n 256]
"""
import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import measure as M  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--n", type=int, default=256)
    args = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    from karel_hf.data.builder import get_config
    from karel_hf.tokenizer import load_tokenizer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    corpus = json.loads(Path(args.spec).read_text())["corpus"]
    pairs = get_config(corpus.get("config", "cpu"), **{k: v for k, v in corpus.items() if k != "config"}).num_prompt_pairs
    specs = M.load_specs(corpus, "test", args.n)
    for ck in args.checkpoints:
        model = AutoModelForCausalLM.from_pretrained(ck, attn_implementation="eager")
        g = M.generation(model, load_tokenizer(ck), specs, pairs)
        by = " ".join(f"L{k.split('_')[-1]} {100 * v:.0f}" for k, v in g["by_length"].items())
        print(f"{ck}: acc {100 * g['accuracy']:.1f}% (all pairs {100 * g['accuracy_all_pairs']:.1f}%, floor "
              f"{100 * g['floor']:.1f}%) mean len {g['mean_generated_length']:.2f} | {by}", flush=True)


if __name__ == "__main__":
    main()
