"""Training a GPT-2 on the Karel corpus with `transformers.Trainer` (docs/protocol.md §4).

Follows transformers' causal language-modeling example (`run_clm`): argument dataclasses parsed
by `HfArgumentParser` (here from a preset file plus flag overrides), `set_seed` before the model is
built, `Trainer` with `resume_from_checkpoint`, then `save_model` / `save_metrics` / `save_state`.

    karel-hf train --preset tiny --output_dir runs/tiny                    # seconds, tests
    accelerate launch scripts/train.py --preset cpu --output_dir runs/cpu   # the CPU reproduction
    accelerate launch --config_file scripts/accelerate/gpu_1.yaml scripts/train.py --preset paper --output_dir runs/paper

One module per concept:

- `arguments`: `ModelArguments`, `DataArguments`, `KarelTrainingArguments`, `parse_train_args`
  (a preset plus flag overrides; errors name the flag and the fix);
- `lm_dataset`: corpus rows -> token ids and labels (from the world arrays), program-only loss
  masking, packing into blocks, the collator;
- `loss`: `ProgramWeightedLoss`, the whole-text loss with the program's tokens weighted
  (`--program_loss_weight`);
- `callbacks`: the generation check every K steps, checkpoint 0 and the files every checkpoint gets;
- `run`: `run_training` (train or resume, save the model, metrics and card) and `main`, with
  `RunInfo`, what the run config and the model card (`karel_hf.model_card`) record.

`bf16_auto` turns bf16 autocast on only where it is fast (a GPU with bf16, a CPU with AMX or
AVX512-BF16); on an AVX2-only CPU bf16 autocast is several times slower than fp32
(benchmarks/bench_train.py).

Several processes: on GPUs, `accelerate launch --config_file scripts/accelerate/gpu_multi.yaml
--num_processes N scripts/train.py ...`. On CPUs (accelerate 1.15), `accelerate launch --multi_gpu
--num_processes 2 scripts/train.py ...` (or --config_file scripts/accelerate/cpu_2proc.yaml) runs two
gloo processes: without CUDA, `KarelTrainingArguments` then sets `use_cpu`, without which each
process would train alone. `--cpu --num_processes 2` and `distributed_type: MULTI_CPU` silently run
ONE process. The generation check runs on the main process only.
"""

from karel_hf.model_card import model_index_yaml, render_model_card, write_model_card
from karel_hf.utils import latest_checkpoint

from .arguments import (
    PRESET_NAMES,
    DataArguments,
    KarelTrainingArguments,
    ModelArguments,
    TrainArgumentError,
    bf16_is_fast,
    parse_train_args,
)
from .callbacks import CheckpointExtrasCallback, GenerationAccuracyCallback, generation_rows, make_generation_eval_fn
from .lm_dataset import (
    IGNORE_INDEX,
    LOSS_ON,
    CausalLMCollator,
    pack_blocks,
    prepare_lm_dataset,
    tokenize_from_arrays,
    tokenize_samples,
)
from .loss import ProgramWeightedLoss, program_token_mask
from .run import (
    GENERATION_LOG_NAME,
    RUN_CONFIG_NAME,
    RunInfo,
    load_raw_datasets,
    main,
    resolve_resume,
    run_training,
    train_command,
)

__all__ = [
    "GENERATION_LOG_NAME", "IGNORE_INDEX", "LOSS_ON", "PRESET_NAMES", "RUN_CONFIG_NAME", "CausalLMCollator",
    "CheckpointExtrasCallback", "DataArguments", "GenerationAccuracyCallback", "KarelTrainingArguments",
    "ModelArguments", "ProgramWeightedLoss", "RunInfo", "TrainArgumentError", "bf16_is_fast", "generation_rows", "latest_checkpoint",
    "load_raw_datasets", "main", "make_generation_eval_fn", "model_index_yaml", "pack_blocks", "parse_train_args",
    "prepare_lm_dataset", "program_token_mask", "render_model_card", "resolve_resume", "run_training", "tokenize_from_arrays",
    "tokenize_samples", "train_command", "write_model_card",
]
