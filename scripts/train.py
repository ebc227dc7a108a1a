"""Train a GPT-2 on the Karel corpus: `accelerate launch scripts/train.py --preset cpu --output_dir runs/cpu`.

Same as `karel-hf train`; the logic is `karel_hf.training.main` (see the `karel_hf.training` docstring for presets,
flags, resuming and multi-process CPU/GPU launches).
"""

import sys

from karel_hf.training import main

if __name__ == "__main__":
    sys.exit(main())
