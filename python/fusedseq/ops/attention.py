"""Fused attention ops: softmax(Q Kᵀ · scale + mask) V, dense and varlen.

:func:`attention` takes ``F.scaled_dot_product_attention``'s whole signature,
with its meaning for every argument, plus a sliding ``window``;
:func:`attention_varlen` takes FlashAttention-2's ``flash_attn_varlen_func``
arguments on packed sequences. Both run one fused kernel whose backward is a
fused op too (``torch.ops.fusedseq.attention{,_varlen}_{fwd,bwd}``).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from .. import _C  # noqa: F401  (loads the schemas)
from . import _args, _autocast

_ops = torch.ops.fusedseq


def _lse_dtype(q: Tensor) -> torch.dtype:
    return torch.float64 if q.dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------- fakes --
@torch.library.register_fake("fusedseq::attention_fwd")
def _attention_fwd_fake(q, k, v, attn_mask, dropout_p, is_causal, scale, window_left, window_right, seed, offset):
    B, Hq, Nq, _ = q.shape
    lse = q.new_empty(B, Hq, Nq, dtype=_lse_dtype(q))
    return torch.empty_like(q, memory_format=torch.contiguous_format), lse, torch.empty_like(lse)


@torch.library.register_fake("fusedseq::attention_bwd")
def _attention_bwd_fake(grad_out, q, k, v, out, lse, lse_lo, attn_mask, dropout_p, is_causal, scale, window_left,
                        window_right, seed, offset):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


@torch.library.register_fake("fusedseq::attention_varlen_fwd")
def _attention_varlen_fwd_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
                               is_causal, scale, window_left, window_right, seed, offset):
    total_q, Hq, _ = q.shape
    lse = q.new_empty(Hq, total_q, dtype=_lse_dtype(q))
    return torch.empty_like(q, memory_format=torch.contiguous_format), lse, torch.empty_like(lse)


@torch.library.register_fake("fusedseq::attention_varlen_bwd")
def _attention_varlen_bwd_fake(grad_out, q, k, v, out, lse, lse_lo, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                               max_seqlen_k, dropout_p, is_causal, scale, window_left, window_right, seed, offset):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


@torch.library.register_fake("fusedseq::attention_dropout_mask")
def _attention_dropout_mask_fake(q, Nk, dropout_p, seed, offset):
    B, Hq, Nq, _ = q.shape
    return q.new_empty(B, Hq, Nq, Nk, dtype=torch.bool)


# -------------------------------------------------------------- autograd --
# The mask, the flags and the RNG key are not differentiable: their gradient
# is None (a float attn_mask that requires grad gets none; documented).
def _attention_setup(ctx, inputs, output):
    q, k, v, attn_mask, *options = inputs
    out, lse, lse_lo = output
    ctx.save_for_backward(q, k, v, out, lse, lse_lo, attn_mask)
    ctx.options = options
    ctx.mark_non_differentiable(lse, lse_lo)


def _attention_backward(ctx, grad_out, _grad_lse, _grad_lse_lo):
    q, k, v, out, lse, lse_lo, attn_mask = ctx.saved_tensors
    dq, dk, dv = _ops.attention_bwd(grad_out, q, k, v, out, lse, lse_lo, attn_mask, *ctx.options)
    return (dq, dk, dv, None) + (None,) * len(ctx.options)


torch.library.register_autograd("fusedseq::attention_fwd", _attention_backward, setup_context=_attention_setup)


def _attention_varlen_setup(ctx, inputs, output):
    q, k, v, cu_seqlens_q, cu_seqlens_k, *options = inputs
    out, lse, lse_lo = output
    ctx.save_for_backward(q, k, v, out, lse, lse_lo, cu_seqlens_q, cu_seqlens_k)
    ctx.options = options
    ctx.mark_non_differentiable(lse, lse_lo)


def _attention_varlen_backward(ctx, grad_out, _grad_lse, _grad_lse_lo):
    q, k, v, out, lse, lse_lo, cu_q, cu_k = ctx.saved_tensors
    dq, dk, dv = _ops.attention_varlen_bwd(grad_out, q, k, v, out, lse, lse_lo, cu_q, cu_k, *ctx.options)
    return (dq, dk, dv, None, None) + (None,) * len(ctx.options)


torch.library.register_autograd("fusedseq::attention_varlen_fwd", _attention_varlen_backward,
                                setup_context=_attention_varlen_setup)


def _refuse_double_backward(op_name: str):
    def refuse(ctx, *grads):
        raise RuntimeError(f"fusedseq: double backward through {op_name} is not supported "
                           f"(its backward op is not differentiable)")
    return refuse


# Differentiating a gradient must fail loudly, not return autograd's zeros.
for _op, _public in (("attention_bwd", "fusedseq.attention"), ("attention_varlen_bwd", "fusedseq.attention_varlen")):
    torch.library.register_autograd(f"fusedseq::{_op}", _refuse_double_backward(_public),
                                    setup_context=lambda ctx, inputs, output: None)


# Under torch.autocast the forward ops run in the autocast dtype, as SDPA; a
# float32 attn_mask is cast with q, k and v (SDPA's autocast rule casts it too).
_autocast.register("attention_fwd")
_autocast.register("attention_varlen_fwd")


# --------------------------------------------------------------- dropout --
def _dropout_key(device: torch.device, keys: int) -> tuple[int, int]:
    """(seed, offset) of the Philox stream for one call, taken from torch's
    generator for ``device`` so that ``torch.manual_seed`` makes dropout
    reproducible and successive calls draw fresh masks.

    CPU: a 63-bit seed drawn from the CPU generator, offset 0. CUDA: the
    generator's own Philox seed and offset, advanced past the counters this
    call uses (``ceil(keys / 4)`` per row), as PyTorch's CUDA kernels do."""
    if device.type == "cuda":
        gen = torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
        seed, offset = gen.initial_seed(), gen.get_offset()
        gen.set_offset(offset + 4 * ((keys + 3) // 4))
        return seed, offset
    return int(torch.randint(0, 2 ** 63 - 1, (), dtype=torch.int64).item()), 0


def _dropout_p(op: str, dropout_p) -> float:
    p = _args.real(op, "dropout_p", dropout_p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{op}: argument 'dropout_p' must be in [0, 1), got {p}")
    return p


def _window(op: str, window) -> tuple[int, int]:
    if window is None:
        return -1, -1
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise TypeError(f"{op}: argument 'window' must be a pair (left, right) of ints (-1 = unbounded) or None, "
                        f"got {window!r}")
    left, right = (_args.integer(op, "window", w) for w in window)
    if left < -1 or right < -1:
        raise ValueError(f"{op}: argument 'window' must be (left, right) with each >= 0, or -1 for unbounded, "
                         f"got ({left}, {right})")
    return left, right


def _is_causal(op: str, is_causal, causal) -> bool:
    is_causal = _args.flag(op, "is_causal", is_causal)
    if causal is not None:  # the older name, kept as an alias
        causal = _args.flag(op, "causal", causal)
        if is_causal and not causal:
            raise ValueError(f"{op}: 'causal' is an alias of 'is_causal'; got is_causal=True and causal=False")
        is_causal = causal
    return is_causal


def _scale(op: str, scale, D: int, name: str = "scale") -> float:
    scale = _args.optional_real(op, name, scale)
    return 1.0 / math.sqrt(D) if scale is None else scale


# ------------------------------------------------------------ public API --
def _attention(op: str, q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa, window, causal):
    """Checks the arguments and runs the op on 4-D (or 3-D unbatched) q, k, v.
    Returns (out, lse) with the unbatched dim restored."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        _args.tensor(op, name, t)
    attn_mask = _args.optional_tensor(op, "attn_mask", attn_mask)
    dropout_p = _dropout_p(op, dropout_p)
    is_causal = _is_causal(op, is_causal, causal)
    enable_gqa = _args.flag(op, "enable_gqa", enable_gqa)
    window_left, window_right = _window(op, window)
    if not (q.dim() == k.dim() == v.dim()):
        raise ValueError(f"{op}: 'q', 'k' and 'v' must have the same number of dims "
                         f"(4: (B, H, N, D), or 3 unbatched), got {q.dim()}, {k.dim()} and {v.dim()}")
    if attn_mask is not None and is_causal:
        # As scaled_dot_product_attention: the two are exclusive (combine them into one mask).
        raise ValueError(f"{op}: arguments 'attn_mask' and 'is_causal' cannot both be set "
                         "(as in scaled_dot_product_attention); fold the causal mask into attn_mask")
    if not enable_gqa and q.dim() >= 3 and k.dim() >= 3 and q.shape[-3] != k.shape[-3]:
        raise ValueError(f"{op}: 'q' has {q.shape[-3]} heads and 'k' {k.shape[-3]}: grouped-query attention needs "
                         "argument 'enable_gqa'=True")
    unbatched = q.dim() == 3
    if unbatched:
        q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
    scale = _scale(op, scale, q.shape[-1] if q.dim() >= 1 and q.shape[-1] > 0 else 1)
    seed, offset = _dropout_key(q.device, k.shape[-2]) if dropout_p > 0 else (0, 0)
    out, lse, _ = _ops.attention_fwd(q, k, v, attn_mask, dropout_p, is_causal, scale, window_left, window_right,
                                     seed, offset)
    if unbatched:
        return out.squeeze(0), lse.squeeze(0)
    return out, lse


def attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor] = None, dropout_p: float = 0.0,
              is_causal: bool = False, scale: Optional[float] = None, enable_gqa: bool = True, *,
              window: Optional[Sequence[int]] = None, causal: Optional[bool] = None) -> Tensor:
    """Fused ``softmax(Q Kᵀ · scale + attn_mask) V``: a drop-in for
    ``F.scaled_dot_product_attention`` (same arguments, same meaning, same
    layout), plus sliding windows.

    The ``Nq × Nk`` score matrix is never stored, forward or backward, and
    neither is an expanded mask: the mask is read tile by tile where it lies,
    and key tiles it hides entirely are skipped, as are tiles outside the
    causal triangle or the window.

    Args:
        q: ``(B, Hq, Nq, D)``, or ``(Hq, Nq, D)`` unbatched.
        k, v: ``(B, Hkv, Nk, D)`` (``(Hkv, Nk, D)`` unbatched).
        attn_mask: broadcastable to ``(B, Hq, Nq, Nk)`` (e.g. ``(Nq, Nk)``, or
            ``(B, 1, 1, Nk)`` for key padding). Bool: True = may attend.
            Float (float32 or q's dtype): added to the scaled logits. **It gets
            no gradient**, even if it requires one.
        dropout_p: dropout on the attention probabilities, as SDPA (applied
            whenever > 0: this is a function, it has no train/eval mode).
            The mask comes from a counter-based generator (Philox) keyed by
            torch's generator (``torch.manual_seed`` reproduces it) and is
            regenerated in the backward, never stored. Under ``torch.compile``
            the key is drawn with ``.item()``: one graph break, so
            ``fullgraph=True`` needs ``dropout_p=0`` (or the raw op
            ``torch.ops.fusedseq.attention_fwd`` with an explicit key).
        is_causal: query ``i`` sees keys ``j <= i`` (top-left aligned, as
            SDPA). Cannot be combined with ``attn_mask`` (SDPA refuses too).
        scale: multiplies ``Q Kᵀ``; default ``1 / sqrt(D)``.
        enable_gqa: allow ``Hq`` a multiple of ``Hkv`` (query head ``h`` reads
            key/value head ``h // (Hq // Hkv)``). Default True (SDPA: False).
        window: ``(left, right)``: query ``i`` sees keys
            ``i - left <= j <= i + right``; ``-1`` leaves a side unbounded
            (FlashAttention's ``window_size``). Combines with the mask and
            with ``is_causal``.
        causal: the older name of ``is_causal`` (keyword only).

    A query row that may see no key at all (every key masked) returns zeros
    and gets zero gradients, never NaN.

    Returns:
        ``(B, Hq, Nq, D)`` (``(Hq, Nq, D)`` unbatched), dtype of ``q``.
    """
    return _attention("fusedseq.attention", q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa, window,
                      causal)[0]


def attention_with_lse(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor] = None, dropout_p: float = 0.0,
                       is_causal: bool = False, scale: Optional[float] = None, enable_gqa: bool = True, *,
                       window: Optional[Sequence[int]] = None,
                       causal: Optional[bool] = None) -> tuple[Tensor, Tensor]:
    """:func:`attention`, also returning the row log-sum-exp of the (scaled,
    masked) logits: ``(B, Hq, Nq)`` (``(Hq, Nq)`` unbatched), float32 (float64
    for float64 inputs), not differentiable; ``-inf`` for a row that sees no key."""
    return _attention("fusedseq.attention_with_lse", q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                      window, causal)


def attention_varlen(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
                     max_seqlen_q: int, max_seqlen_k: int, dropout_p: float = 0.0,
                     softmax_scale: Optional[float] = None, causal: bool = False,
                     window_size: Sequence[int] = (-1, -1), *, scale: Optional[float] = None,
                     is_causal: Optional[bool] = None, window: Optional[Sequence[int]] = None,
                     return_lse: bool = False):
    """Attention over packed variable-length sequences, without padding: the
    arguments of FlashAttention-2's ``flash_attn_varlen_func``.

    Sequence ``b`` is query tokens ``cu_seqlens_q[b]:cu_seqlens_q[b+1]`` of
    ``q`` against key tokens ``cu_seqlens_k[b]:cu_seqlens_k[b+1]`` of ``k``
    and ``v``; no token sees another sequence.

    Args:
        q: ``(total_q, Hq, D)``.  k, v: ``(total_k, Hkv, D)``, ``Hq`` a multiple of ``Hkv``.
        cu_seqlens_q, cu_seqlens_k: int32 ``(B + 1,)``, from 0, non-decreasing,
            ending at ``total_q`` / ``total_k`` (empty sequences allowed).
        max_seqlen_q, max_seqlen_k: at least the longest sequence.
        dropout_p: as in :func:`attention`.
        softmax_scale (alias ``scale``): default ``1 / sqrt(D)``.
        causal (alias ``is_causal``): query ``i`` of a sequence of ``Nq_b``
            queries and ``Nk_b`` keys sees keys ``j <= i + Nk_b - Nq_b``
            (bottom-right aligned, as FlashAttention >= 2.1; the same as
            top-left when ``Nq_b == Nk_b``).
        window_size (alias ``window``): ``(left, right)`` around that same
            diagonal, ``-1`` unbounded.
        return_lse: also return the log-sum-exp, ``(Hq, total_q)`` float32.

    Returns:
        ``(total_q, Hq, D)`` in q's dtype (and the LSE when ``return_lse``).
    """
    op = "fusedseq.attention_varlen"
    for name, t in (("q", q), ("k", k), ("v", v)):
        _args.tensor(op, name, t, "a (total, H, D) torch.Tensor")
    _args.tensor(op, "cu_seqlens_q", cu_seqlens_q, "an int32 torch.Tensor")
    _args.tensor(op, "cu_seqlens_k", cu_seqlens_k, "an int32 torch.Tensor")
    max_seqlen_q = _args.integer(op, "max_seqlen_q", max_seqlen_q)
    max_seqlen_k = _args.integer(op, "max_seqlen_k", max_seqlen_k)
    dropout_p = _dropout_p(op, dropout_p)
    scale_name = "softmax_scale"
    if scale is not None:
        softmax_scale, scale_name = scale, "scale"
    if is_causal is not None:
        causal = is_causal
    causal = _args.flag(op, "causal", causal)
    window_left, window_right = _window(op, window if window is not None else window_size)
    _args.flag(op, "return_lse", return_lse)
    softmax_scale = _scale(op, softmax_scale, q.shape[-1] if q.dim() >= 1 and q.shape[-1] > 0 else 1, scale_name)
    seed, offset = _dropout_key(q.device, max_seqlen_k) if dropout_p > 0 else (0, 0)
    out, lse, _ = _ops.attention_varlen_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                            dropout_p, causal, softmax_scale, window_left, window_right, seed, offset)
    return (out, lse) if return_lse else out


def attention_dropout_mask(q: Tensor, Nk: int, dropout_p: float, seed: int, offset: int = 0) -> Tensor:
    """The dropout keep-mask the kernels draw with key ``(seed, offset)`` for
    ``q``'s ``(B, Hq, Nq)`` and ``Nk`` keys: bool ``(B, Hq, Nq, Nk)``, True =
    kept (scaled by ``1 / (1 - dropout_p)``). Exposed for tests; see
    ``AttnDropout`` in csrc/common/params.h for the stream's layout."""
    op = "fusedseq.attention_dropout_mask"
    _args.tensor(op, "q", q)
    return _ops.attention_dropout_mask(q, _args.integer(op, "Nk", Nk), _dropout_p(op, dropout_p),
                                       _args.integer(op, "seed", seed), _args.integer(op, "offset", offset))
