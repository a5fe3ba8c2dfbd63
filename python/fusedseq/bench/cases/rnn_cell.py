"""RNN cell cases: ``fusedseq.rnn_cell`` against ``nn.RNNCell`` and a plain
eager implementation (``fusedseq.reference.rnn_cell``: two matmuls, bias
adds and the activation as separate ATen ops)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

import fusedseq
from fusedseq import reference

from ..case import Case, CaseSetup, Impl, Reference, float64_leaves, generator_for, leaf, random_tensor
from ..flops import rnn_cell_flops
from ._recurrent import copy_weights, default_dtypes, recurrent_weights

OP = "rnn_cell"
PRIMARY = "nn.RNNCell"  # the PyTorch path the summary compares with


@dataclass(frozen=True)
class CellShape:
    B: int
    I: int
    H: int

    @classmethod
    def parse(cls, text: str) -> "CellShape":
        """``"B,I,H"``, e.g. ``"16,256,256"``."""
        B, I, H = (int(v) for v in text.split(","))
        return cls(B, I, H)


CPU_SHAPES = [CellShape(16, 256, 256)]
QUICK_SHAPES = [CellShape(4, 32, 32)]
# On a GPU: batch from one sample (latency-bound) to 256 (a real product),
# a small and a large hidden size.
CUDA_SHAPES = [CellShape(B, H, H) for H in (256, 1024) for B in (1, 8, 64, 256)]


def default_shapes(device: torch.device, quick: bool) -> list[CellShape]:
    if quick:
        return QUICK_SHAPES
    return CUDA_SHAPES if device.type == "cuda" else CPU_SHAPES


def _build(shape: CellShape, nonlinearity: str, device: torch.device, dtype: torch.dtype,
           seed: int) -> CaseSetup:
    B, I, H = shape.B, shape.I, shape.H
    g = generator_for(device, seed)
    x = leaf(random_tensor((B, I), dtype, device, g))
    h = leaf(random_tensor((B, H), dtype, device, g, scale=0.5))
    w_ih, w_hh, b_ih, b_hh = weights = recurrent_weights(I, H, dtype, device, g)
    grad_output = random_tensor((B, H), dtype, device, g)
    inputs = [x, h, *weights]

    cell = nn.RNNCell(I, H, nonlinearity=nonlinearity, device=device, dtype=dtype)
    cell_params = copy_weights(cell, ["weight_ih", "weight_hh", "bias_ih", "bias_hh"], weights)

    impls = [
        Impl("fused", lambda: fusedseq.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity),
             inputs, fused=True),
        Impl("nn.RNNCell", lambda: cell(x, h), [x, h, *cell_params]),
        Impl("eager", lambda: reference.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity), inputs),
    ]

    def compute_reference(with_grads: bool) -> Reference:
        ref_inputs = float64_leaves(inputs, with_grads)
        out = reference.rnn_cell(*ref_inputs, nonlinearity=nonlinearity)
        grads = None
        if with_grads:
            grads = list(torch.autograd.grad(out, ref_inputs, grad_output.to(torch.float64)))
        return Reference(out.detach(), grads)

    return CaseSetup(impls, grad_output, compute_reference)


def make_cases(device: torch.device, dtypes: Sequence[torch.dtype], shapes: Sequence[CellShape],
               modes: Sequence[str], nonlinearity: str = "tanh", seed: int = 0) -> list[Case]:
    cases = []
    for dtype in dtypes:
        for s in shapes:
            cases.append(Case(
                op=OP, device=device, dtype=dtype,
                label=f"B={s.B} I={s.I} H={s.H} {nonlinearity}",
                params={"B": s.B, "I": s.I, "H": s.H, "nonlinearity": nonlinearity},
                modes=list(modes),
                flops={m: rnn_cell_flops(s.B, s.I, s.H, m) for m in modes},
                build=lambda s=s, dtype=dtype: _build(s, nonlinearity, device, dtype, seed),
            ))
    return cases
