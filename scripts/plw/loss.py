"""The weighted causal-LM loss, computed in chunks so the full fp32 logits are never materialized at once."""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


# Tokens per chunk by default: as many as keep one chunk's fp32 logits at 2**27 values (0.5 GiB), i.e. 1046
# tokens at LLaMA-3's 128256 and 4194 at LLaMA-2's 32000 (fewer, larger chunks: less recomputation, fewer kernels).
LOGITS_PER_CHUNK = 2**27


def _chunk_loss(hidden: torch.Tensor, head_weight: torch.Tensor, targets: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
    logits = (hidden @ head_weight.T).float()
    return (F.cross_entropy(logits, targets, reduction="none") * weights).sum()


def weighted_token_loss_sum(hidden: torch.Tensor, head_weight: torch.Tensor, input_ids: torch.Tensor,
                            weights: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Σ w·ℓ over next-token predictions: hidden[:, t] predicts input_ids[:, t+1] with weight weights[:, t+1].

    Each chunk's logits but the last are recomputed in the backward pass (activation checkpointing), so peak
    memory holds one chunk of logits instead of all of them. The last chunk is not checkpointed: the backward
    pass starts with it, so keeping it costs no extra peak and saves its recomputation (all of it when the
    micro-batch fits one chunk).
    """
    chunk_size = chunk_size or max(1, LOGITS_PER_CHUNK // head_weight.shape[0])
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    targets = input_ids[:, 1:].reshape(-1)
    weights = weights[:, 1:].reshape(-1).to(torch.float32)
    keep = weights != 0
    hidden, targets, weights = hidden[keep], targets[keep], weights[keep]
    # zero, but part of the graph: a micro-batch whose weights are all 0 (PLW 0, completions truncated away)
    # still gives every parameter a (zero) gradient, as backward and data-parallel reduction expect
    total = (hidden[:0].sum() + head_weight[:0].sum()).float()
    starts = range(0, targets.shape[0], chunk_size)
    for start in starts:
        end = start + chunk_size
        chunk = (hidden[start:end], head_weight, targets[start:end], weights[start:end])
        if start == starts[-1]:
            total = total + _chunk_loss(*chunk)
        else:
            total = total + checkpoint(_chunk_loss, *chunk, use_reentrant=False)
    return total
