"""A next-token loss that weights the program's tokens against the prompt's (`program_loss_weight`).

The paper's objective (`loss_on="all"`, weight 1) is the mean next-token loss over every token. In a
CPU sample of 2 prompt pairs about 90% of the tokens are grid cells, so the program the model is
trained to write carries a tenth of the gradient. `ProgramWeightedLoss(w)` is the weighted mean
instead: each program token (after "Code:\\n", through the closing `</s>`) counts w times, each
prompt token once; w = 1 gives the model's own loss exactly (tests/test_training.py). It is a
`transformers.Trainer(compute_loss_func=...)`: the Trainer passes the unshifted labels, and the
tokens are told apart from the labels alone, also in packed blocks that start inside a sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .lm_dataset import IGNORE_INDEX


def check_program_weight(program_weight) -> float:
    """The weight as a float; a ValueError naming it unless it is a finite number > 0."""
    if not (isinstance(program_weight, (int, float)) and 0 < program_weight < float("inf")):
        raise ValueError(f"program_loss_weight: must be a finite number > 0, got {program_weight}")
    return float(program_weight)


def program_token_mask(labels: torch.Tensor, code_id: int, bos_id: int) -> torch.Tensor:
    """Bool mask, shape of `labels` (batch, tokens): True where the token belongs to a program.

    A program token follows a "Code:\\n" token with no `<s>` in between (so the closing `</s>` is
    one). Tokens before a row's first marker belong to the program when that marker is `<s>` (a
    packed block that starts inside a program), to the prompt when it is "Code:\\n".
    """
    marker = torch.zeros_like(labels, dtype=torch.int8)
    marker[labels == code_id] = 1
    marker[labels == bos_id] = -1
    positions = torch.arange(labels.shape[-1], device=labels.device).expand_as(labels)
    # the last marker at or before each position (-1 where there is none yet)
    last = torch.where(marker != 0, positions, -1).cummax(dim=-1).values
    phase = torch.gather(marker, -1, last.clamp(min=0))
    # before a row's first marker: the opposite of that marker's phase
    first = torch.where(marker != 0, positions, labels.shape[-1]).min(dim=-1, keepdim=True).values
    first_phase = torch.gather(marker, -1, first.clamp(max=labels.shape[-1] - 1))
    phase = torch.where(last < 0, -first_phase, phase)
    return (phase == 1) & (marker == 0)


class ProgramWeightedLoss:
    """`compute_loss_func` for `transformers.Trainer`: next-token cross-entropy, program tokens weighted.

    Normalised as the Trainer expects a `compute_loss_func` to be (by `num_items_in_batch`, the
    labelled tokens of the whole optimizer step): the micro-batch's weighted sum over its weight sum
    times its share of the step's tokens, so one micro-batch on one process gives the weighted mean.
    """

    def __init__(self, program_weight: float, code_id: int, bos_id: int):
        self.program_weight = check_program_weight(program_weight)
        self.code_id, self.bos_id = int(code_id), int(bos_id)

    @classmethod
    def for_tokenizer(cls, program_weight: float, tokenizer) -> ProgramWeightedLoss:
        code_id = tokenizer.convert_tokens_to_ids("Code:\n")
        if code_id is None or code_id == tokenizer.unk_token_id:
            raise ValueError("program_loss_weight: the tokenizer has no 'Code:\\n' token to find the program by")
        return cls(program_weight, code_id, tokenizer.bos_token_id)

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        targets = labels[:, 1:]
        losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                 reduction="none")
        labelled = targets != IGNORE_INDEX
        weights = torch.where(program_token_mask(targets, self.code_id, self.bos_id), self.program_weight, 1.0)
        weights = weights * labelled
        loss = (losses * weights).sum() / weights.sum().clamp(min=1e-12)
        if num_items_in_batch is not None:
            loss = loss * labelled.sum() / num_items_in_batch
        return loss


def compute_loss_func(program_weight: float, tokenizer) -> ProgramWeightedLoss | None:
    """The Trainer's `compute_loss_func` for a program weight: None (the model's own loss) at weight 1."""
    if check_program_weight(program_weight) == 1:
        return None
    return ProgramWeightedLoss.for_tokenizer(program_weight, tokenizer)
