"""LSTM ops: the fused cell and the fused whole-sequence recurrence.

The raw ops (``torch.ops.fusedseq.lstm_cell`` / ``lstm``) also return what
their backward needs, in the compute dtype (float32 for float16/bfloat16
inputs, so the backward is as accurate as the forward):

* ``gates`` ``(…, 4H)``: i, f, g, o after their activations;
* for the sequence, ``cell_states`` ``(T, B, H)``: every c_t. It is a real,
  differentiable output (``c_n`` is its last step, and a packed sequence's
  last state sits at its own length); ``gates`` is not differentiable.

Memory the sequence's forward keeps for the backward, per time step: 4·B·H
gate values and B·H cell values in the compute dtype, 20·B·H bytes in
float32, next to the B·H outputs it returns anyway. The backward recomputes
c_t = f c_{t-1} + i g (and tanh c_t) from them instead of storing them.
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
State = tuple[Tensor, Tensor]


# ----------------------------------------------------------------- fakes --
@torch.library.register_fake("fusedseq::lstm_cell")
def _lstm_cell_fake(x, h, c, w_ih, w_hh, b_ih, b_hh):
    B, H = x.shape[0], h.shape[1]
    return x.new_empty(B, H), x.new_empty(B, H), x.new_empty(B, 4 * H, dtype=compute_dtype(x))


@torch.library.register_fake("fusedseq::lstm_cell_backward")
def _lstm_cell_backward_fake(grad_h_next, grad_c_next, gates, x, h, c, w_ih, w_hh):
    return (x.new_empty(x.shape), h.new_empty(h.shape), c.new_empty(c.shape), w_ih.new_empty(w_ih.shape),
            w_hh.new_empty(w_hh.shape), w_hh.new_empty(w_hh.shape[0]))


@torch.library.register_fake("fusedseq::lstm")
def _lstm_fake(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    T, B, H = x.shape[0], x.shape[1], h0.shape[1]
    dt = compute_dtype(x)
    return x.new_empty(T, B, H), x.new_empty(T, B, H, dtype=dt), x.new_empty(T, B, 4 * H, dtype=dt)


@torch.library.register_fake("fusedseq::lstm_backward")
def _lstm_backward_fake(grad_output, grad_cell_states, output, cell_states, gates, x, h0, c0, w_ih, w_hh):
    return (x.new_empty(x.shape), h0.new_empty(h0.shape), c0.new_empty(c0.shape), w_ih.new_empty(w_ih.shape),
            w_hh.new_empty(w_hh.shape), w_hh.new_empty(w_hh.shape[0]))


# -------------------------------------------------------------- autograd --
def _bias_grads(ctx, db):
    return db if ctx.has_bias[0] else None, db if ctx.has_bias[1] else None


def _lstm_cell_setup(ctx, inputs, output):
    x, h, c, w_ih, w_hh, b_ih, b_hh = inputs
    _, _, gates = output
    ctx.mark_non_differentiable(gates)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, h, c, w_ih, w_hh, gates)
    ctx.has_bias = (b_ih is not None, b_hh is not None)


def _lstm_cell_backward(ctx, grad_h_next, grad_c_next, _grad_gates):
    x, h, c, w_ih, w_hh, gates = ctx.saved_tensors
    if grad_h_next is None and grad_c_next is None:
        return (None,) * 7
    # A loss may use only one of (h', c'): the other's gradient is zero.
    grad_h_next = torch.zeros_like(h) if grad_h_next is None else grad_h_next
    grad_c_next = torch.zeros_like(c) if grad_c_next is None else grad_c_next
    dx, dh, dc, dw_ih, dw_hh, db = _ops.lstm_cell_backward(grad_h_next, grad_c_next, gates, x, h, c, w_ih, w_hh)
    return (dx, dh, dc, dw_ih, dw_hh, *_bias_grads(ctx, db))


torch.library.register_autograd("fusedseq::lstm_cell", _lstm_cell_backward, setup_context=_lstm_cell_setup)


def _lstm_setup(ctx, inputs, output):
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = inputs
    output, cell_states, gates = output
    ctx.mark_non_differentiable(gates)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, h0, c0, w_ih, w_hh, output, cell_states, gates)
    ctx.has_bias = (b_ih is not None, b_hh is not None)


def _lstm_backward(ctx, grad_output, grad_cell_states, _grad_gates):
    x, h0, c0, w_ih, w_hh, output, cell_states, gates = ctx.saved_tensors
    if grad_output is None and grad_cell_states is None:
        return (None,) * 7
    grad_output = torch.zeros_like(output) if grad_output is None else grad_output
    grad_cell_states = torch.zeros_like(cell_states) if grad_cell_states is None else grad_cell_states
    dx, dh0, dc0, dw_ih, dw_hh, db = _ops.lstm_backward(grad_output, grad_cell_states, output, cell_states, gates,
                                                        x, h0, c0, w_ih, w_hh)
    return (dx, dh0, dc0, dw_ih, dw_hh, *_bias_grads(ctx, db))


torch.library.register_autograd("fusedseq::lstm", _lstm_backward, setup_context=_lstm_setup)
refuse_double_backward("lstm_cell_backward", "lstm_backward")
_autocast.register("lstm_cell")
_autocast.register("lstm")


# ------------------------------------------------------------ public API --
def _checked(op: str, x, state, w_ih, w_hh, b_ih, b_hh, names: tuple[str, str]):
    """The argument kinds (TypeError naming the argument); returns (h, c) from ``state``."""
    if state is None:
        h = c = None
    elif isinstance(state, (tuple, list)) and len(state) == 2:
        h, c = state
    else:
        raise TypeError(f"{op}: argument 'state' must be a pair (h, c) of tensors or None, "
                        f"got {type(state).__name__}")
    check_tensors(op, dict(x=x, w_ih=w_ih, w_hh=w_hh), {names[0]: h, names[1]: c, "b_ih": b_ih, "b_hh": b_hh})
    return h, c


def lstm_cell(x: Tensor, state: Optional[State], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
              b_hh: Optional[Tensor] = None) -> State:
    """One fused LSTM step; same numbers as ``torch.nn.LSTMCell``.

    Gates in torch's order i, f, g, o: ``i, f, o = σ(·)``, ``g = tanh(·)`` of
    ``x W_ihᵀ + b_ih + h W_hhᵀ + b_hh``; ``c' = f c + i g``, ``h' = o tanh(c')``.
    Both products, the biases, the activations and the state update run in
    one pass.

    Args:
        x: ``(B, I)``, or ``(I,)`` for one unbatched sample.
        state: ``(h, c)``, each ``(B, H)`` (``(H,)`` unbatched), or None for zeros.
        w_ih: ``(4H, I)``.  w_hh: ``(4H, H)``.  b_ih, b_hh: ``(4H,)`` or None.

    Returns:
        ``(h', c')``, shaped like ``h`` and ``c``.
    """
    h, c = _checked("fusedseq.lstm_cell", x, state, w_ih, w_hh, b_ih, b_hh, ("h", "c"))
    unbatched = x.dim() == 1
    if unbatched:
        x, h, c = x.unsqueeze(0), batch_state(h, True), batch_state(c, True)
    H = hidden_size(w_hh)
    h = zeros_state(x, 0, H) if h is None else h
    c = zeros_state(x, 0, H) if c is None else c
    h_next, c_next, _ = _ops.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
    return (h_next.squeeze(0), c_next.squeeze(0)) if unbatched else (h_next, c_next)


def lstm(x: Tensor, state: Optional[State], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
         b_hh: Optional[Tensor] = None, batch_first: bool = False) -> tuple[Tensor, State]:
    """The whole LSTM recurrence over a sequence, one layer, one direction.

    Same numbers as a one-layer ``torch.nn.LSTM``. The input projection of all
    steps is one matrix product; the recurrence is one fused kernel that
    keeps W_hh hot across steps and applies the gates in the same pass.

    Args:
        x: ``(T, B, I)``, ``(B, T, I)`` if ``batch_first``, or ``(T, I)`` unbatched.
        state: ``(h0, c0)``, each ``(B, H)`` (``(H,)`` unbatched), or None for zeros.
        w_ih: ``(4H, I)``.  w_hh: ``(4H, H)``.  b_ih, b_hh: ``(4H,)`` or None.
        batch_first: ``x`` and ``output`` are ``(B, T, ·)``.

    Returns:
        ``(output, (h_n, c_n))``: every hidden state, ``(T, B, H)`` (``(B, T, H)``
        if ``batch_first``, ``(T, H)`` unbatched), and the last states, ``(B, H)``
        each (``(H,)`` unbatched). Unlike ``nn.LSTM``, no layer dim.
    """
    h0, c0 = _checked("fusedseq.lstm", x, state, w_ih, w_hh, b_ih, b_hh, ("h0", "c0"))
    x, unbatched = to_time_major(x, _args.flag("fusedseq.lstm", "batch_first", batch_first))
    H = hidden_size(w_hh)
    h0 = zeros_state(x, 1, H) if h0 is None else batch_state(h0, unbatched)
    c0 = zeros_state(x, 1, H) if c0 is None else batch_state(c0, unbatched)
    output, cell_states, _ = _ops.lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    # Copies, not views of output / cell_states (as nn.LSTM returns them).
    h_n, c_n = output[-1].clone(), cell_states[-1].to(output.dtype, copy=True)
    if unbatched:
        h_n, c_n = h_n.squeeze(0), c_n.squeeze(0)
    return from_time_major(output, unbatched, batch_first), (h_n, c_n)
