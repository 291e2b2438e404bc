"""Attention over packed rows that costs each sequence's length squared, not the row's.

Transformers' sdpa reads packed sequences from the position ids and masks a packed row block-diagonally, but
computes the whole row × row score matrix. This attention (`packed_sdpa`, once register_packed_sdpa() ran) runs
causal sdpa on each sequence alone (PyTorch's fused kernels, no mask). On CUDA in fp16/bf16 it instead calls the
flash-attention varlen kernel that PyTorch ships (`torch.nn.attention.varlen`): every sequence in one call,
no host sync. The boundaries come from `cu_seq_lens_q` (Transformers' name; the packing collator passes it,
with `max_length_q`), else from position ids that cover the batch, else each row is one sequence. With a KV
cache (generation) it is sdpa. Query, key and value: (batch, heads, length, head_dim); key and value may have
fewer heads.
"""

import inspect

import torch
import torch.nn.functional as F
from torch.nn.attention.varlen import varlen_attn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask
from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

PACKED_SDPA = "packed_sdpa"
# Attention options of some models that plain causal attention would silently ignore.
UNSUPPORTED_OPTIONS = ("softcap", "sliding_window", "s_aux")
# The varlen kernel: CUDA (flash attention: Ampere or newer), half precision and no dropout only; causal through
# `window_size` (torch >= 2.11), grouped-query attention through `enable_gqa` (torch >= 2.13; before, key and
# value heads are repeated).
VARLEN_DTYPES = (torch.float16, torch.bfloat16)
VARLEN_KEYWORDS = set(inspect.signature(varlen_attn).parameters)


def _runs_flash_attention(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] >= 8


def default_attention(packing: bool) -> str:
    """packed_sdpa with packing (measured faster than sdpa on CPU and on an H200); else Transformers' sdpa."""
    return PACKED_SDPA if packing else "sdpa"


def packed_row_length(attn_implementation: str, max_length: int) -> int | None:
    """The packing collator's row_length: None (one row, no padding) where attention costs each packed sequence's
    length squared; else max_length (sdpa, eager and flex attend over whole rows)."""
    one_row = attn_implementation == PACKED_SDPA or attn_implementation.startswith("flash_attention")
    return None if one_row else max_length


def packed_sdpa_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          cu_seq_lens_q: torch.Tensor | None = None, max_length_q: int | None = None,
                          position_ids: torch.Tensor | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    unsupported = [name for name in UNSUPPORTED_OPTIONS if kwargs.get(name) is not None]
    if unsupported:
        raise ValueError(f"{PACKED_SDPA} attention does not support this model's {', '.join(unsupported)}; "
                         "set training.attn_implementation: sdpa")
    if attention_mask is not None:
        raise ValueError(f"{PACKED_SDPA} attention takes packed or unpadded batches, not an attention mask")
    batch, heads, length, _ = query.shape
    if key.shape[2] != length:  # a KV cache: one sequence per row, plain sdpa
        return sdpa_attention_forward(module, query, key, value, None, dropout=dropout, scaling=scaling, **kwargs)
    if torch.is_autocast_enabled(query.device.type):
        # as autocast runs sdpa; with fp32 weights (train.py's), rotary embedding leaves query and key in fp32
        dtype = torch.get_autocast_dtype(query.device.type)
        query, key, value = (states.to(dtype) for states in (query, key, value))
    if cu_seq_lens_q is None and position_ids is not None and position_ids.numel() == batch * length:
        (cu_seq_lens_q, _), (max_length_q, _) = prepare_fa_kwargs_from_position_ids(position_ids)
    if cu_seq_lens_q is not None and query.is_cuda and query.dtype in VARLEN_DTYPES and dropout == 0.0 \
            and "window_size" in VARLEN_KEYWORDS and _runs_flash_attention(query.device.index):
        longest = int(max_length_q if max_length_q is not None else cu_seq_lens_q.diff().max())
        return varlen_causal_attention(query, key, value, cu_seq_lens_q, longest, scaling), None
    bounds = cu_seq_lens_q.tolist() if cu_seq_lens_q is not None else list(range(0, batch * length + 1, length))

    def flat(states: torch.Tensor) -> torch.Tensor:  # (batch, heads, length, d) -> (1, heads, batch·length, d)
        return states.transpose(0, 1).reshape(1, states.shape[1], batch * length, states.shape[-1])

    # split, not slices: the backward of a split is one concatenation, of a slice a zero-filled full copy
    lengths = [end - start for start, end in zip(bounds[:-1], bounds[1:])]
    output = torch.cat([
        F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling,
                                       enable_gqa=k.shape[1] != heads)
        for q, k, v in zip(*(flat(states).split(lengths, dim=2) for states in (query, key, value)))], dim=2)
    # Transformers' attention output layout: (batch, length, heads, head_dim)
    return output.reshape(heads, batch, length, value.shape[-1]).permute(1, 2, 0, 3), None


def varlen_causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            cu_seq_lens: torch.Tensor, max_length: int, scaling: float | None) -> torch.Tensor:
    """Causal attention on each sequence between the int32 offsets `cu_seq_lens`, in one varlen kernel call."""
    batch, heads, length, _ = query.shape
    grouped_query = {}
    if key.shape[1] != heads:
        if "enable_gqa" in VARLEN_KEYWORDS:
            grouped_query = {"enable_gqa": True}
        else:
            key, value = (repeat_kv(states, heads // key.shape[1]) for states in (key, value))

    def tokens_first(states: torch.Tensor) -> torch.Tensor:  # (batch, heads, length, d) -> (batch·length, heads, d)
        return states.transpose(1, 2).reshape(batch * length, states.shape[1], states.shape[-1])

    output = varlen_attn(tokens_first(query), tokens_first(key), tokens_first(value), cu_seq_lens, cu_seq_lens,
                         max_length, max_length, scale=scaling, window_size=(-1, 0), **grouped_query)
    return output.reshape(batch, length, heads, value.shape[-1])


def register_packed_sdpa() -> None:
    """Make `packed_sdpa` an attn_implementation of Transformers (for from_pretrained and set_attn_implementation),
    with no 4D mask: packed batches carry no attention mask, and this attention needs none."""
    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_SDPA, flash_attention_mask)
