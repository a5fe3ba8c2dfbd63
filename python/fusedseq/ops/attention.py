"""Fused attention op: softmax(Q Kᵀ · scale [+ causal mask]) V."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .. import _C  # noqa: F401  (loads the schemas)
from . import _autocast

_ops = torch.ops.fusedseq


def _lse_dtype(q: Tensor) -> torch.dtype:
    return torch.float64 if q.dtype == torch.float64 else torch.float32


@torch.library.register_fake("fusedseq::attention_fwd")
def _attention_fwd_fake(q, k, v, causal, scale):
    B, Hq, Nq, D = q.shape
    return q.new_empty(B, Hq, Nq, D), q.new_empty(B, Hq, Nq, dtype=_lse_dtype(q))


@torch.library.register_fake("fusedseq::attention_bwd")
def _attention_bwd_fake(grad_out, q, k, v, out, lse, causal, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _attention_setup(ctx, inputs, output):
    q, k, v, causal, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.causal, ctx.scale = causal, scale
    ctx.mark_non_differentiable(lse)


def _attention_backward(ctx, grad_out, _grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = _ops.attention_bwd(grad_out, q, k, v, out, lse, ctx.causal, ctx.scale)
    return dq, dk, dv, None, None


torch.library.register_autograd("fusedseq::attention_fwd", _attention_backward, setup_context=_attention_setup)


def _attention_bwd_refuse(ctx, *grads):
    raise RuntimeError("fusedseq: double backward through fusedseq.attention is not supported "
                       "(attention_bwd is not differentiable)")


# Differentiating the gradient must fail loudly, not return autograd's zeros.
torch.library.register_autograd("fusedseq::attention_bwd", _attention_bwd_refuse,
                                setup_context=lambda ctx, inputs, output: None)

_autocast.register("attention_fwd")


def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False, scale: Optional[float] = None) -> Tensor:
    """Fused ``softmax(Q Kᵀ · scale [+ causal mask]) V``.

    Same meaning and layout as
    ``F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=True)``.
    The ``Nq × Nk`` score matrix is never stored, forward or backward.

    Args:
        q: ``(B, Hq, Nq, D)``, or ``(Hq, Nq, D)`` unbatched.
        k, v: ``(B, Hkv, Nk, D)`` (``(Hkv, Nk, D)`` unbatched); ``Hq`` a multiple of ``Hkv``.
        causal: query ``i`` sees keys ``j <= i`` (top-left aligned, as SDPA's ``is_causal``).
        scale: multiplies ``Q Kᵀ``; default ``1 / sqrt(D)``.

    Returns:
        ``(B, Hq, Nq, D)`` (``(Hq, Nq, D)`` unbatched), dtype of ``q``.
    """
    if not (q.dim() == k.dim() == v.dim()):
        raise ValueError(f"fusedseq.attention: 'q', 'k' and 'v' must have the same number of dims "
                         f"(4: (B, H, N, D), or 3 unbatched), got {q.dim()}, {k.dim()} and {v.dim()}")
    unbatched = q.dim() == 3
    if unbatched:
        q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1]) if q.dim() >= 1 and q.shape[-1] > 0 else 1.0
    out, _ = _ops.attention_fwd(q, k, v, bool(causal), float(scale))
    return out.squeeze(0) if unbatched else out


def attention_with_lse(q: Tensor, k: Tensor, v: Tensor, causal: bool = False,
                       scale: Optional[float] = None) -> tuple[Tensor, Tensor]:
    """Like :func:`attention` (4-D inputs only), also returning the row
    log-sum-exp ``(B, Hq, Nq)`` (float32, or float64 for float64 inputs), not
    differentiable."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    return _ops.attention_fwd(q, k, v, bool(causal), float(scale))
