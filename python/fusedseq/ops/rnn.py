"""Elman RNN ops: fused cell and fused whole-sequence recurrence."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _C  # noqa: F401  (loads the schemas)
from . import _args, _autocast
from ._recurrent import check_tensors, refuse_double_backward

_ops = torch.ops.fusedseq


# ----------------------------------------------------------------- fakes --
@torch.library.register_fake("fusedseq::rnn_cell")
def _rnn_cell_fake(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    return x.new_empty(x.shape[0], h.shape[1])


@torch.library.register_fake("fusedseq::rnn_cell_backward")
def _rnn_cell_backward_fake(grad_h_next, h_next, x, h, w_ih, w_hh, nonlinearity):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(h, memory_format=torch.contiguous_format),
            w_ih.new_empty(w_ih.shape), w_hh.new_empty(w_hh.shape), w_hh.new_empty(w_hh.shape[0]))


@torch.library.register_fake("fusedseq::rnn")
def _rnn_fake(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    T, B, H = x.shape[0], x.shape[1], h0.shape[1]
    return x.new_empty(T, B, H), x.new_empty(B, H)


@torch.library.register_fake("fusedseq::rnn_backward")
def _rnn_backward_fake(grad_output, grad_h_n, output, x, h0, w_ih, w_hh, nonlinearity):
    return (x.new_empty(x.shape), h0.new_empty(h0.shape), w_ih.new_empty(w_ih.shape),
            w_hh.new_empty(w_hh.shape), w_hh.new_empty(w_hh.shape[0]))


# -------------------------------------------------------------- autograd --
def _rnn_cell_setup(ctx, inputs, output):
    x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity = inputs
    ctx.save_for_backward(x, h, w_ih, w_hh, output)
    ctx.nonlinearity = nonlinearity
    ctx.has_bias = (b_ih is not None, b_hh is not None)


def _rnn_cell_backward(ctx, grad):
    x, h, w_ih, w_hh, out = ctx.saved_tensors
    dx, dh, dw_ih, dw_hh, db = _ops.rnn_cell_backward(grad, out, x, h, w_ih, w_hh, ctx.nonlinearity)
    return (dx, dh, dw_ih, dw_hh, db if ctx.has_bias[0] else None,
            db if ctx.has_bias[1] else None, None)


torch.library.register_autograd("fusedseq::rnn_cell", _rnn_cell_backward, setup_context=_rnn_cell_setup)


def _rnn_setup(ctx, inputs, output):
    x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity = inputs
    output, _ = output
    ctx.save_for_backward(x, h0, w_ih, w_hh, output)
    ctx.nonlinearity = nonlinearity
    ctx.has_bias = (b_ih is not None, b_hh is not None)


def _rnn_backward(ctx, grad_output, grad_h_n):
    x, h0, w_ih, w_hh, output = ctx.saved_tensors
    # A loss may use only one of (output, h_n): the other's gradient is None.
    if grad_output is None:
        grad_output = torch.zeros_like(output)
    if grad_h_n is None:
        grad_h_n = torch.zeros_like(h0)
    dx, dh0, dw_ih, dw_hh, db = _ops.rnn_backward(grad_output, grad_h_n, output, x, h0, w_ih, w_hh,
                                                  ctx.nonlinearity)
    return (dx, dh0, dw_ih, dw_hh, db if ctx.has_bias[0] else None,
            db if ctx.has_bias[1] else None, None)


torch.library.register_autograd("fusedseq::rnn", _rnn_backward, setup_context=_rnn_setup)


refuse_double_backward("rnn_cell_backward", "rnn_backward")
_autocast.register("rnn_cell")
_autocast.register("rnn")


# ------------------------------------------------------------ public API --
def _check_rnn_args(op: str, tensors: dict, optional: dict, nonlinearity) -> None:
    check_tensors(op, tensors, optional)
    _args.string(op, "nonlinearity", nonlinearity)


def rnn_cell(x: Tensor, h: Optional[Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
             b_hh: Optional[Tensor] = None, nonlinearity: str = "tanh") -> Tensor:
    """One fused Elman RNN step: ``act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)``.

    Same numbers as ``torch.nn.RNNCell``.

    Args:
        x: ``(B, I)``, or ``(I,)`` for one unbatched sample.
        h: ``(B, H)`` (``(H,)`` unbatched), or None for zeros.
        w_ih: ``(H, I)``.  w_hh: ``(H, H)``.  b_ih, b_hh: ``(H,)`` or None.
        nonlinearity: ``"tanh"`` or ``"relu"``.

    Returns:
        ``h'``, shaped like ``h``: ``(B, H)`` (``(H,)`` unbatched).
    """
    _check_rnn_args("fusedseq.rnn_cell", dict(x=x, w_ih=w_ih, w_hh=w_hh), dict(h=h, b_ih=b_ih, b_hh=b_hh),
                    nonlinearity)
    unbatched = x.dim() == 1
    if unbatched:
        x = x.unsqueeze(0)
        h = None if h is None else h.unsqueeze(0)
    if h is None:
        h = x.new_zeros(x.shape[0], w_hh.shape[0])
    out = _ops.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
    return out.squeeze(0) if unbatched else out


def rnn(x: Tensor, h0: Optional[Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
        b_hh: Optional[Tensor] = None, nonlinearity: str = "tanh",
        batch_first: bool = False) -> tuple[Tensor, Tensor]:
    """The whole Elman recurrence over a sequence, one layer, one direction.

    Same numbers as a one-layer ``torch.nn.RNN``. The input projection of all
    steps is one matrix product; the recurrence is one fused kernel. On CUDA
    tensors that kernel is persistent (one cooperative launch for all steps,
    ``W_hh`` split over the SMs' shared memory, a grid barrier per step) where
    ``W_hh`` fits on chip, else one launch per step, chosen automatically;
    the environment variable ``FUSEDSEQ_CUDA_RNN_PATH`` (``auto``,
    ``persistent``, ``per_step``) overrides the choice. fp16/bf16 carry the
    hidden state in fp32 between steps.

    Args:
        x: ``(T, B, I)``, ``(B, T, I)`` if ``batch_first``, or ``(T, I)`` unbatched.
        h0: ``(B, H)`` (``(H,)`` unbatched), or None for zeros.
        w_ih: ``(H, I)``.  w_hh: ``(H, H)``.  b_ih, b_hh: ``(H,)`` or None.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        batch_first: ``x`` and ``output`` are ``(B, T, ·)``.

    Returns:
        ``(output, h_n)``: every hidden state, ``(T, B, H)`` (``(B, T, H)`` if
        ``batch_first``, ``(T, H)`` unbatched), and the last, ``(B, H)``
        (``(H,)`` unbatched). Unlike ``nn.RNN``, ``h_n`` has no layer dim.
    """
    _check_rnn_args("fusedseq.rnn", dict(x=x, w_ih=w_ih, w_hh=w_hh), dict(h0=h0, b_ih=b_ih, b_hh=b_hh),
                    nonlinearity)
    batch_first = _args.flag("fusedseq.rnn", "batch_first", batch_first)
    unbatched = x.dim() == 2
    if unbatched:
        x = x.unsqueeze(1)
        h0 = None if h0 is None else h0.unsqueeze(0)
    elif batch_first:
        x = x.transpose(0, 1)
    if h0 is None:
        h0 = x.new_zeros(x.shape[1] if x.dim() == 3 else 1, w_hh.shape[0])
    output, h_n = _ops.rnn(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity)
    if unbatched:
        return output.squeeze(1), h_n.squeeze(0)
    if batch_first:
        output = output.transpose(0, 1)
    return output, h_n
