"""Analyses over checkpoints and traces (docs/protocol.md §7): regressions, future-state
baselines, output-distribution tests, perplexity.

- `regress`: generation accuracy on semantic content across checkpoints (paper v1: R^2 = 0.968).
- `best_future_classifier`: the best any function of the true current direction can do at
  predicting the +1/+2 direction (paper v1: 62.2% / 40.7%), against which
  `probe_future_given_current_correct` (the +1/+2 probe on rows where the current-state probe is
  right; paper v1: 68.4% / 61.0%) is compared.
- `length_test`: are correct generated programs shorter than the reference programs of the same
  specs (paired one-sided Wilcoxon signed-rank test)?
- `program_perplexity`: the model's perplexity on the program part of texts (torch, imported lazily).

NumPy and SciPy only, except `program_perplexity`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .labels import MISSING


def regress(generation_accuracy: Sequence[float], semantic_content: Sequence[float]) -> dict:
    """Least-squares line of generation accuracy (y) on semantic content (x) across checkpoints.

    Checkpoints where either value is NaN are left out; `n` counts the ones used.

    >>> r = regress([0.1, 0.3, 0.5], [0.2, 0.4, 0.6])
    >>> round(r["r2"], 6), round(r["slope"], 6), round(r["intercept"], 6), r["n"]
    (1.0, 1.0, -0.1, 3)
    """
    from scipy import stats

    y = np.asarray(generation_accuracy, dtype=float)
    x = np.asarray(semantic_content, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two 1-D sequences of the same length, got {x.shape} and {y.shape}")
    finite = np.isfinite(x) & np.isfinite(y)  # a checkpoint with nothing to probe (NaN) is left out
    x, y = x[finite], y[finite]
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("need at least two checkpoints with different semantic content to fit a line")
    fit = stats.linregress(x, y)
    return {
        "r2": float(fit.rvalue**2),
        "slope": float(fit.slope),
        "intercept": float(fit.intercept),
        "p_value": float(fit.pvalue),
        "n": int(len(x)),
    }


def _pooled(values) -> np.ndarray:
    """An array, or a {task: array} mapping pooled over tasks (in key order)."""
    if isinstance(values, Mapping):
        return np.concatenate([np.asarray(values[k]).reshape(-1) for k in sorted(values)])
    return np.asarray(values).reshape(-1)


def best_future_classifier(current_dirs, future_dirs) -> float:
    """Accuracy of the best function from the true current label to the future label (majority
    future class per current class), on the rows whose future label is not missing (-1).

    Arrays or {task: array} mappings (pooled over tasks).

    >>> best_future_classifier([0, 0, 0, 1, 1], [0, 0, 1, 2, -1])
    0.75
    """
    current, future = _pooled(current_dirs), _pooled(future_dirs)
    if current.shape != future.shape:
        raise ValueError(f"current and future labels need the same shape, got {current.shape} and {future.shape}")
    keep = (future != MISSING) & (current != MISSING)
    current, future = current[keep], future[keep]
    if len(future) == 0:
        return float("nan")
    hits = 0
    for value in np.unique(current):
        _, counts = np.unique(future[current == value], return_counts=True)
        hits += counts.max()
    return float(hits / len(future))


def probe_future_given_current_correct(current_predictions, current_targets, future_predictions, future_targets) -> float:
    """The future (+1/+2) probe's accuracy on rows where the current-state probe is right.

    All four are aligned arrays over the same test rows, or {task: array} mappings as returned by
    `semantic_content(..., return_predictions=True)`; rows with a missing target are left out.

    >>> probe_future_given_current_correct([0, 1, 2, 3], [0, 1, 0, 3], [1, 1, 1, 1], [1, 0, 1, -1])
    0.5
    """
    cp, ct, fp, ft = (_pooled(v) for v in (current_predictions, current_targets, future_predictions, future_targets))
    if not (cp.shape == ct.shape == fp.shape == ft.shape):
        raise ValueError("predictions and targets must be aligned over the same rows")
    keep = (cp == ct) & (ct != MISSING) & (ft != MISSING)
    return float(np.mean(fp[keep] == ft[keep])) if keep.any() else float("nan")


def length_test(correct_generated_lengths, reference_lengths) -> dict:
    """Are correct generated programs shorter than the references of the same specs?

    Paired, one-sided Wilcoxon signed-rank test of generated - reference < 0 (zero differences
    dropped, as in Wilcoxon's original test). Returns the mean lengths, the mean difference, the
    counts of shorter/equal/longer programs, the statistic and p-value (1.0 when every pair ties).
    """
    from scipy import stats

    generated = np.asarray(correct_generated_lengths, dtype=float)
    reference = np.asarray(reference_lengths, dtype=float)
    if generated.shape != reference.shape or generated.ndim != 1 or len(generated) == 0:
        raise ValueError(
            f"need paired 1-D lengths (one generated and one reference length per correct spec), got "
            f"{generated.shape} and {reference.shape}"
        )
    diff = generated - reference
    out = {
        "n": int(len(diff)),
        "mean_generated": float(generated.mean()),
        "mean_reference": float(reference.mean()),
        "mean_difference": float(diff.mean()),
        "num_shorter": int((diff < 0).sum()),
        "num_equal": int((diff == 0).sum()),
        "num_longer": int((diff > 0).sum()),
    }
    if np.all(diff == 0):
        return {**out, "statistic": float("nan"), "p_value": 1.0}
    test = stats.wilcoxon(generated, reference, zero_method="wilcox", alternative="less")
    return {**out, "statistic": float(test.statistic), "p_value": float(test.pvalue)}


def program_perplexity(model, tokenizer, texts: Sequence[str], *, batch_size: int = 16, include_eos: bool = True, progress: bool = False) -> dict:
    """Perplexity of `model` on the program part of formatted samples (after 'Code:\\n').

    The whole text is the context; only the program tokens (and the end-of-sample token, with
    `include_eos`, as in training) are scored. Returns `perplexity` (exp of the mean token NLL),
    `mean_nll` and `num_tokens`.
    """
    import torch
    from tqdm.auto import tqdm

    from karel_hf.data.formatting import split_sample

    if len(texts) == 0:
        raise ValueError("no texts to score")
    encoded = []
    for text in texts:
        prompt, program = split_sample(text)
        prompt_ids = tokenizer(prompt)["input_ids"]
        ids = tokenizer(prompt + program)["input_ids"]
        if include_eos:
            ids = ids + [tokenizer.eos_token_id]
        if ids[: len(prompt_ids)] != prompt_ids:
            raise ValueError("the tokenizer does not split samples at 'Code:\\n'; cannot locate the program tokens")
        encoded.append((ids, len(prompt_ids)))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total_nll, total_tokens = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(encoded), batch_size), desc="perplexity", disable=not progress):
            chunk = encoded[start : start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)  # (batch, seq), right-padded
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            for row, (ids, cut) in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
                labels[row, cut : len(ids)] = torch.tensor(ids[cut:])
            with torch.no_grad():
                logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
            logits = logits[:, :-1].float()  # (batch, seq-1, vocab): position t predicts token t+1
            targets = labels[:, 1:].to(device)
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
            )
            total_nll += float(nll)
            total_tokens += int((targets != -100).sum())
    finally:
        model.train(was_training)
    mean_nll = total_nll / max(total_tokens, 1)
    return {"perplexity": float(np.exp(mean_nll)), "mean_nll": float(mean_nll), "num_tokens": total_tokens}
