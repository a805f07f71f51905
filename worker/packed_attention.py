"""Varlen attention for packed rows without flash-attn: PyTorch SDPA run on each example of the row.

A packed row (worker/data.py) holds several examples one after the other. With plain SDPA transformers
builds a dense block-diagonal mask from the position ids, so attention costs the square of the whole
row (and the mask is built on every forward); FlashAttention-2 takes the example boundaries instead
(``cu_seq_lens``), but needs CUDA and the ``flash-attn`` package. This module gives SDPA the same
boundaries: an attention function registered with transformers' ``AttentionInterface`` cuts q/k/v at
the boundaries and runs causal SDPA on each example (its fused causal kernel, no mask at all), and a
matching ``AttentionMaskInterface`` entry returns no mask for such rows, so none is built. Anything
else (padding, a KV cache, sliding windows) falls back to transformers' own SDPA path and mask.

Used by default for causal-LM packing on CPU, and on CUDA when flash-attn is not installed
(worker/machine_defaults.py)."""
from __future__ import annotations

from itertools import pairwise

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

NAME = "studio_packed_sdpa"

_last: tuple[torch.Tensor | None, list[int]] = (None, [])  # the boundaries of the row being run, for every layer


def _lengths(cu_seq_lens: torch.Tensor | None, position_ids: torch.Tensor | None, total: int) -> list[int] | None:
    """The example lengths of a packed row, from the collator's ``cu_seq_lens`` or else from position ids
    restarting at 0; read once per forward (every layer gets the same tensor) to spare a device sync each."""
    global _last
    source = cu_seq_lens if cu_seq_lens is not None else position_ids
    if source is None or (position_ids is not None and position_ids.shape[0] != 1):
        return None
    if source is _last[0]:
        return _last[1]
    if cu_seq_lens is not None:
        bounds = cu_seq_lens.tolist()
    else:
        starts = (torch.diff(position_ids[0], prepend=position_ids[0, :1] - 1) != 1).nonzero().flatten().tolist()
        bounds = [*starts, total] if starts and starts[0] == 0 else [0, *starts, total]
    lengths = [b - a for a, b in pairwise(bounds) if b > a]
    if sum(lengths) != total:  # not boundaries of this row (e.g. a row cut by the caller): do not guess
        return None
    _last = (source, lengths)
    return lengths


def packed_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, *, cu_seq_lens_q: torch.Tensor | None = None,
                        position_ids: torch.Tensor | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """Causal SDPA on each example of a packed row (batch 1, no mask, no cache); else transformers' SDPA.

    q: (1, heads, tokens, dim); k/v: (1, kv_heads, tokens, dim). Returns (1, tokens, heads, dim) like SDPA."""
    plain = attention_mask is not None or query.shape[0] != 1 or key.shape[2] != query.shape[2]
    lengths = None if plain else _lengths(cu_seq_lens_q, position_ids, query.shape[2])
    if lengths is None or len(lengths) == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, position_ids=position_ids, **kwargs)
    kwargs.pop("is_causal", None)  # each example is causal in itself
    outs = [sdpa_attention_forward(module, q, k, v, None, is_causal=True, **kwargs)[0]
            for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2))]
    return torch.cat(outs, dim=1), None


def packed_sdpa_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                     attention_mask: torch.Tensor | None = None, local_size: int | None = None, **kwargs):
    """No mask for an unpadded row without a cache (packed or not: the attention function cuts it at the
    boundaries); transformers' dense SDPA mask otherwise (padding, KV cache, sliding window)."""
    unpadded = attention_mask is None or (attention_mask.shape[-1] == kv_length and bool(attention_mask.all()))
    if unpadded and q_length == kv_length and not q_offset and not kv_offset and local_size is None:
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, attention_mask=attention_mask, local_size=local_size, **kwargs)


def register() -> str:
    """Register the attention and mask functions with transformers (idempotent); returns their name."""
    AttentionInterface.register(NAME, packed_sdpa_forward)
    AttentionMaskInterface.register(NAME, packed_sdpa_mask)
    return NAME


def supports(model) -> bool:
    """Whether ``model`` can run it: a transformers model on SDPA that dispatches attention through the
    AttentionInterface, with causal full attention in every layer (no sliding windows, no bidirectional)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if not getattr(config, "is_causal", True) or getattr(config, "use_sliding_window", False):
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or []):
        return False
    can_set = getattr(type(model), "_can_set_attn_implementation", None)
    return bool(getattr(model, "_supports_sdpa", False) and can_set and can_set())


def use(model) -> bool:
    """Switch ``model`` (a transformers model, or a peft model around one) to packed SDPA when it supports
    it; returns whether it did. The choice lives in the loaded config only: transformers never saves it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not supports(base):
        return False
    base.set_attn_implementation(register())
    return base.config._attn_implementation == NAME


def takes_boundaries(model) -> bool:
    """Whether ``model``'s attention reads the examples' boundaries (``cu_seq_lens_*``) from the batch:
    packed SDPA and FlashAttention do; others would be handed keys they do not take."""
    attn = str(getattr(getattr(model, "config", None), "_attn_implementation", None) or "")
    return attn == NAME or attn.startswith("flash_attention")
