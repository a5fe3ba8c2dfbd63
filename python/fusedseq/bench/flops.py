"""Useful floating-point operations per call, by op and mode.

"Useful" means the FLOPs of the mathematical operation, independent of how
an implementation computes it: a path that computes the masked half of a
causal score matrix and throws it away gets no credit for it. Rates (GFLOP/s)
are these numbers over the measured time, so all paths of one case are
compared on the same numerator.

Multiply and add count as two FLOPs; activations, softmax exponentials and
bias additions are not counted (lower order).
"""
from __future__ import annotations

FWD = "fwd"
FWD_BWD = "fwd+bwd"
MODES = (FWD, FWD_BWD)


def rnn_cell_flops(B: int, I: int, H: int, mode: str) -> float:
    """Forward: the two products ``x W_ihᵀ`` and ``h W_hhᵀ``: 2·B·H·(I+H).
    Backward: ``dx``, ``dh`` and the two weight gradients: ≈ 2× forward."""
    fwd = 2.0 * B * H * (I + H)
    return fwd if mode == FWD else 3.0 * fwd


def rnn_flops(T: int, B: int, I: int, H: int, mode: str) -> float:
    """T cell steps: forward 2·T·B·H·(I+H); backward (BPTT) ≈ 2× forward."""
    return T * rnn_cell_flops(B, I, H, mode)


def attention_flops(B: int, Hq: int, Nq: int, Nk: int, D: int, causal: bool, mode: str) -> float:
    """Forward: ``QKᵀ`` and ``PV``, 2 FLOPs each per (query, key, dim):
    4·B·Hq·Nq·Nk·D, halved for causal (the convention of the FlashAttention
    papers and PyTorch's benchmarks; exact for Nq = Nk up to the diagonal).
    Backward: five products of the same size (dV, dP, dQ, dK, plus the
    recomputed S): 2.5× forward, so forward+backward is 3.5× forward."""
    fwd = 4.0 * B * Hq * Nq * Nk * D
    if causal:
        fwd /= 2.0
    return fwd if mode == FWD else 3.5 * fwd
