"""``attn_implementation="fusedseq"`` for Hugging Face transformers.

Importing this module registers fusedseq's fused attention with transformers'
``AttentionInterface`` (and, for the masks it is given, SDPA's mask builder),
so that::

    import fusedseq.integrations.transformers  # noqa: F401
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="fusedseq")

runs every attention layer of any model that dispatches through the
interface (Llama, Mistral, Qwen2, GPT-2, ...) on :func:`fusedseq.attention`:
causal prefill, padding masks (a boolean ``(B, 1, Nq, Nk)`` mask read tile by
tile, never expanded over the heads), grouped-query heads without
``repeat_kv``, sliding windows, attention dropout in training, and
KV-cache decoding (one query against the cache: the split-KV path).

transformers is an optional dependency (``pip install fusedseq[transformers]``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

try:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
except ImportError as e:  # pragma: no cover - exercised only without transformers
    raise ImportError("fusedseq.integrations.transformers needs Hugging Face transformers: "
                      "pip install 'fusedseq[transformers]' (or pip install transformers)") from e

from ..ops.attention import attention

NAME = "fusedseq"


def fusedseq_attention_forward(module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor,
                               attention_mask: Optional[Tensor], dropout: float = 0.0,
                               scaling: Optional[float] = None, is_causal: Optional[bool] = None,
                               sliding_window: Optional[int] = None, **kwargs) -> tuple[Tensor, None]:
    """transformers' attention-function contract.

    Args:
        query: ``(B, Hq, Nq, D)``.  key, value: ``(B, Hkv, Nk, D)`` (the cache included).
        attention_mask: None, or SDPA's boolean ``(B, 1, Nq, Nk)`` (True = attend).
        dropout: attention dropout (the model passes 0 in eval mode).
        scaling: the softmax scale.
        is_causal: the module's causality; as SDPA's integration, used only
            without a mask and with more than one query (decoding sees the whole cache).
        sliding_window: the layer's window (Mistral-style); it is part of the
            mask when there is one, and a ``(window - 1, 0)`` band otherwise.

    Returns:
        ``((B, Nq, Hq, D), None)``: the layout the model's output projection reads.
    """
    if kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None:
        raise ValueError("fusedseq attention supports neither logit soft-capping nor an additive position bias; "
                         "use attn_implementation='eager' for this model")
    if kwargs.get("s_aux") is not None:
        raise ValueError("fusedseq attention does not support attention sinks (s_aux)")
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    q_length = query.shape[2]
    causal = bool(is_causal) and attention_mask is None and q_length > 1
    window = None
    if causal and sliding_window is not None:
        window = (sliding_window - 1, 0)  # transformers: kv_idx > q_idx - sliding_window
    out = attention(query, key, value, attn_mask=attention_mask, dropout_p=float(dropout), is_causal=causal,
                    scale=scaling, enable_gqa=True, window=window)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, fusedseq_attention_forward)
# The masks the model builds for us: SDPA's (boolean, True = attend, or None
# where plain causality is enough). Without a registered mask function
# transformers would build no mask at all, and padding would leak.
AttentionMaskInterface.register(NAME, sdpa_mask)

__all__ = ["NAME", "fusedseq_attention_forward"]
