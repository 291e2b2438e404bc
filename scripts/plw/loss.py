"""The weighted causal-LM loss, computed in chunks so the full fp32 logits are never materialized at once."""

import torch
from torch.autograd.function import once_differentiable

# Tokens per chunk by default: as many as keep one chunk's fp32 logits at 2**27 values (0.5 GiB), i.e. 1046
# tokens at LLaMA-3's 128256 and 4194 at LLaMA-2's 32000 (fewer, larger chunks: fewer, larger kernels).
LOGITS_PER_CHUNK = 2**27


class _WeightedLinearCrossEntropy(torch.autograd.Function):
    """Σ w·ℓ of the logits hidden @ head_weight.T, chunk by chunk.

    The gradients are computed in the forward pass, while each chunk's logits exist (as Liger-Kernel's fused
    linear cross-entropy does), so the backward pass only scales them: no logits are kept or recomputed, and
    the vocabulary projection costs the plain loss's three matmuls. The gradients are scaled in place, so a
    second backward pass through the same graph (retain_graph) is refused.
    """

    @staticmethod
    def forward(ctx, hidden, head_weight, targets, weights, chunk_size, hidden_needs_grad, head_needs_grad):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if hidden_needs_grad else None  # every row is written
        grad_head = torch.zeros_like(head_weight) if head_needs_grad else None
        for start in range(0, targets.shape[0], chunk_size):
            chunk = slice(start, start + chunk_size)
            chunk_hidden, chunk_targets, chunk_weights = hidden[chunk], targets[chunk], weights[chunk]
            logits = chunk_hidden @ head_weight.T  # the matmuls' dtype (under autocast, bf16)
            if logits.dtype == torch.float32:  # in place: no second chunk of fp32 values
                log_probs = logits.sub_(logits.logsumexp(dim=-1, keepdim=True))
            else:  # one fused pass to fp32, as precise as upcasting the logits first
                log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
            total -= (log_probs.gather(1, chunk_targets[:, None]).squeeze(1) * chunk_weights).sum()
            if grad_hidden is None and grad_head is None:
                continue
            # d(w·ℓ)/d logits = w · (softmax - one_hot(target)), written over the logits in their dtype
            probabilities = log_probs.exp_()
            probabilities.scatter_add_(1, chunk_targets[:, None], torch.full_like(probabilities[:, :1], -1.0))
            grad_logits = torch.mul(probabilities, chunk_weights[:, None], out=logits)
            if grad_hidden is not None:
                grad_hidden[chunk] = grad_logits @ head_weight
            if grad_head is not None:
                grad_head += grad_logits.T @ chunk_hidden
        ctx.gradients = (grad_hidden, grad_head)
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_total):
        if ctx.gradients is None:
            raise RuntimeError("the weighted loss's gradients were used by an earlier backward pass")
        grad_hidden, grad_head = ctx.gradients
        ctx.gradients = None  # scaled in place, not copied: a head-sized gradient can take gigabytes
        for grad in (grad_hidden, grad_head):
            if grad is not None:
                grad.mul_(grad_total)  # a 0-dim fp32 factor: not rounded to a bf16 gradient's precision
        return grad_hidden, grad_head, None, None, None, None, None


def weighted_token_loss_sum(hidden: torch.Tensor, head_weight: torch.Tensor, input_ids: torch.Tensor,
                            weights: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Σ w·ℓ over next-token predictions: hidden[:, t] predicts input_ids[:, t+1] with weight weights[:, t+1].

    Besides the gradients of hidden and head_weight (made in the forward pass, where they require one), the
    memory holds one chunk of logits (and, unless they are fp32, their fp32 log-probabilities) and a head-sized
    product per chunk. Positions of weight 0 are skipped.
    Matmuls run in head_weight's dtype, or autocast's.
    """
    chunk_size = chunk_size or max(1, LOGITS_PER_CHUNK // head_weight.shape[0])
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    targets = input_ids[:, 1:].reshape(-1)
    weights = weights[:, 1:].reshape(-1).to(torch.float32)
    kept = (weights != 0).nonzero().squeeze(1)  # one host sync (a boolean mask would take one per tensor)
    # a micro-batch whose weights are all 0 (PLW 0, completions truncated away) still gives hidden and
    # head_weight a (zero) gradient, as backward and data-parallel reduction expect
    grad_enabled = torch.is_grad_enabled()
    return _WeightedLinearCrossEntropy.apply(
        hidden[kept], head_weight, targets[kept], weights[kept], chunk_size,
        grad_enabled and hidden.requires_grad, grad_enabled and head_weight.requires_grad)
