"""GRU ops: the fused cell and the fused whole-sequence recurrence.

torch's GRU (gate order r, z, n; the reset gate multiplies the hidden side of
n, bias included)::

    r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr)     z = σ(x W_izᵀ + b_iz + h W_hzᵀ + b_hz)
    n = tanh(x W_inᵀ + b_in + r ∘ (h W_hnᵀ + b_hn))
    h' = (1 - z) ∘ n + z ∘ h

The raw ops (``torch.ops.fusedseq.gru_cell`` / ``gru``) also return
``gates`` ``(…, 4H)``, what their backward needs, in the compute dtype
(float32 for float16/bfloat16 inputs): r, z, n and ``h W_hnᵀ + b_hn``. It is
not differentiable. Memory the sequence's forward keeps for the backward, per
time step: 4·B·H values, 16·B·H bytes in float32, next to the B·H outputs it
returns anyway.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _C  # noqa: F401  (loads the schemas)
from . import _args, _autocast
from ._recurrent import (batch_state, check_tensors, compute_dtype, from_time_major, hidden_size,
                         refuse_double_backward, to_time_major, zeros_state)

_ops = torch.ops.fusedseq


# ----------------------------------------------------------------- fakes --
@torch.library.register_fake("fusedseq::gru_cell")
def _gru_cell_fake(x, h, w_ih, w_hh, b_ih, b_hh):
    B, H = x.shape[0], h.shape[1]
    return x.new_empty(B, H), x.new_empty(B, 4 * H, dtype=compute_dtype(x))


def _gru_grads_fake(x, h, w_ih, w_hh):
    return (x.new_empty(x.shape), h.new_empty(h.shape), w_ih.new_empty(w_ih.shape), w_hh.new_empty(w_hh.shape),
            w_ih.new_empty(w_ih.shape[0]), w_hh.new_empty(w_hh.shape[0]))


@torch.library.register_fake("fusedseq::gru_cell_backward")
def _gru_cell_backward_fake(grad_h_next, gates, x, h, w_ih, w_hh):
    return _gru_grads_fake(x, h, w_ih, w_hh)


@torch.library.register_fake("fusedseq::gru")
def _gru_fake(x, h0, w_ih, w_hh, b_ih, b_hh):
    T, B, H = x.shape[0], x.shape[1], h0.shape[1]
    return x.new_empty(T, B, H), x.new_empty(T, B, 4 * H, dtype=compute_dtype(x))


@torch.library.register_fake("fusedseq::gru_backward")
def _gru_backward_fake(grad_output, output, gates, x, h0, w_ih, w_hh):
    return _gru_grads_fake(x, h0, w_ih, w_hh)


# -------------------------------------------------------------- autograd --
def _setup(ctx, inputs, output):
    x, h, w_ih, w_hh, b_ih, b_hh = inputs
    out, gates = output
    ctx.mark_non_differentiable(gates)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, h, w_ih, w_hh, out, gates)
    ctx.has_bias = (b_ih is not None, b_hh is not None)


def _grads(ctx, dx, dh, dw_ih, dw_hh, db_ih, db_hh):
    return dx, dh, dw_ih, dw_hh, db_ih if ctx.has_bias[0] else None, db_hh if ctx.has_bias[1] else None


def _gru_cell_backward(ctx, grad_h_next, _grad_gates):
    x, h, w_ih, w_hh, _, gates = ctx.saved_tensors
    if grad_h_next is None:
        return (None,) * 6
    return _grads(ctx, *_ops.gru_cell_backward(grad_h_next, gates, x, h, w_ih, w_hh))


def _gru_backward(ctx, grad_output, _grad_gates):
    x, h0, w_ih, w_hh, output, gates = ctx.saved_tensors
    if grad_output is None:
        return (None,) * 6
    return _grads(ctx, *_ops.gru_backward(grad_output, output, gates, x, h0, w_ih, w_hh))


torch.library.register_autograd("fusedseq::gru_cell", _gru_cell_backward, setup_context=_setup)
torch.library.register_autograd("fusedseq::gru", _gru_backward, setup_context=_setup)
refuse_double_backward("gru_cell_backward", "gru_backward")
_autocast.register("gru_cell")
_autocast.register("gru")


# ------------------------------------------------------------ public API --
def gru_cell(x: Tensor, h: Optional[Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
             b_hh: Optional[Tensor] = None) -> Tensor:
    """One fused GRU step; same numbers as ``torch.nn.GRUCell``.

    Args:
        x: ``(B, I)``, or ``(I,)`` for one unbatched sample.
        h: ``(B, H)`` (``(H,)`` unbatched), or None for zeros.
        w_ih: ``(3H, I)``.  w_hh: ``(3H, H)``.  b_ih, b_hh: ``(3H,)`` or None.

    Returns:
        ``h'``, shaped like ``h``.
    """
    check_tensors("fusedseq.gru_cell", dict(x=x, w_ih=w_ih, w_hh=w_hh), dict(h=h, b_ih=b_ih, b_hh=b_hh))
    unbatched = x.dim() == 1
    if unbatched:
        x, h = x.unsqueeze(0), batch_state(h, True)
    h = zeros_state(x, 0, hidden_size(w_hh)) if h is None else h
    h_next, _ = _ops.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    return h_next.squeeze(0) if unbatched else h_next


def gru(x: Tensor, h0: Optional[Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
        b_hh: Optional[Tensor] = None, batch_first: bool = False) -> tuple[Tensor, Tensor]:
    """The whole GRU recurrence over a sequence, one layer, one direction.

    Same numbers as a one-layer ``torch.nn.GRU``; designed as :func:`fusedseq.lstm`.

    Args:
        x: ``(T, B, I)``, ``(B, T, I)`` if ``batch_first``, or ``(T, I)`` unbatched.
        h0: ``(B, H)`` (``(H,)`` unbatched), or None for zeros.
        w_ih: ``(3H, I)``.  w_hh: ``(3H, H)``.  b_ih, b_hh: ``(3H,)`` or None.
        batch_first: ``x`` and ``output`` are ``(B, T, ·)``.

    Returns:
        ``(output, h_n)``: every hidden state, ``(T, B, H)`` (``(B, T, H)`` if
        ``batch_first``, ``(T, H)`` unbatched), and the last, ``(B, H)``
        (``(H,)`` unbatched). Unlike ``nn.GRU``, ``h_n`` has no layer dim.
    """
    check_tensors("fusedseq.gru", dict(x=x, w_ih=w_ih, w_hh=w_hh), dict(h0=h0, b_ih=b_ih, b_hh=b_hh))
    x, unbatched = to_time_major(x, _args.flag("fusedseq.gru", "batch_first", batch_first))
    h0 = zeros_state(x, 1, hidden_size(w_hh)) if h0 is None else batch_state(h0, unbatched)
    output, _ = _ops.gru(x, h0, w_ih, w_hh, b_ih, b_hh)
    h_n = output[-1].clone()  # a copy, not a view of output (as nn.GRU returns it)
    return from_time_major(output, unbatched, batch_first), (h_n.squeeze(0) if unbatched else h_n)
