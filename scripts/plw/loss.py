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
            logits = (chunk_hidden @ head_weight.T).float()
            log_normalizer = logits.logsumexp(dim=-1)
            target_logits = logits.gather(1, chunk_targets[:, None]).squeeze(1)
            total += ((log_normalizer - target_logits) * chunk_weights).sum()
            if grad_hidden is None and grad_head is None:
                continue
            # d(w·ℓ)/d logits = w · (softmax - one_hot(target)), made in place of the logits
            grad_logits = logits.sub_(log_normalizer[:, None]).exp_()
            grad_logits.scatter_add_(1, chunk_targets[:, None], torch.full_like(grad_logits[:, :1], -1.0))
            grad_logits.mul_(chunk_weights[:, None])
            grad_logits = grad_logits.to(head_weight.dtype)  # the matmuls' dtype (under autocast: cast again)
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
    memory holds one chunk of fp32 logits and a head-sized product per chunk. Positions of weight 0 are skipped.
    Matmuls run in head_weight's dtype, or autocast's.
    """
    chunk_size = chunk_size or max(1, LOGITS_PER_CHUNK // head_weight.shape[0])
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    targets = input_ids[:, 1:].reshape(-1)
    weights = weights[:, 1:].reshape(-1).to(torch.float32)
    keep = weights != 0
    # a micro-batch whose weights are all 0 (PLW 0, completions truncated away) still gives hidden and
    # head_weight a (zero) gradient, as backward and data-parallel reduction expect
    grad_enabled = torch.is_grad_enabled()
    return _WeightedLinearCrossEntropy.apply(
        hidden[keep], head_weight, targets[keep], weights[keep], chunk_size,
        grad_enabled and hidden.requires_grad, grad_enabled and head_weight.requires_grad)
