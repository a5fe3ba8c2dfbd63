"""RNN sequence cases: ``fusedseq.rnn`` against a one-layer ``nn.RNN``
(cuDNN on CUDA), a Python loop of ``nn.RNNCell`` (one launch per op per
step: what an RNN costs without a sequence kernel) and, optionally, that loop
with its step under ``torch.compile``.

The compiled variant compiles the *step* (the cell's math on the cell's
parameters) and keeps the Python loop: compiling the loop itself would unroll
all T steps into one graph, whose compile time grows with T and is paid again
for every T of a sweep. The step is compiled with dynamic shapes, once per
device × dtype × activation, so a sweep over (T, B, H) does not recompile for
every shape (inductor calls cuBLAS for the products either way; what it fuses
is the bias and activation). Compilation happens in untimed calls.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import fusedseq
from fusedseq import reference

from ..case import Case, CaseSetup, Impl, Reference, float64_leaves, generator_for, leaf, random_tensor
from ..cudnn_rules import DeviceTraits, cudnn_persistence
from ..flops import rnn_flops
from ._recurrent import copy_weights, default_dtypes, recurrent_weights, set_train_mode

OP = "rnn"
PRIMARY = "nn.RNN"  # the PyTorch path the summary compares with


@dataclass(frozen=True)
class RnnShape:
    T: int
    B: int
    I: int
    H: int

    @classmethod
    def parse(cls, text: str) -> "RnnShape":
        """``"T,B,I,H"``, e.g. ``"200,16,256,256"``."""
        T, B, I, H = (int(v) for v in text.split(","))
        return cls(T, B, I, H)


CPU_SHAPES = [RnnShape(200, 16, 256, 256)]
QUICK_SHAPES = [RnnShape(16, 4, 32, 32)]
# Issue 4's sweep: sequence length × batch × hidden size, I = H.
CUDA_T = (40, 200, 1000)
CUDA_B = (1, 8, 64, 256)
CUDA_H = (128, 256, 512, 1024, 2048)
CUDA_SHAPES = [RnnShape(T, B, H, H) for T in CUDA_T for B in CUDA_B for H in CUDA_H]


def default_shapes(device: torch.device, quick: bool) -> list[RnnShape]:
    if quick:
        return QUICK_SHAPES
    return CUDA_SHAPES if device.type == "cuda" else CPU_SHAPES


def _cell_loop(cell, x, h0):
    """``nn.RNNCell`` applied step by step; returns every hidden state (T, B, H)."""
    h, states = h0, []
    for t in range(x.shape[0]):
        h = cell(x[t], h)
        states.append(h)
    return torch.stack(states)


def _cell_step(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity: str):
    """nn.RNNCell's math, as a function of tensors (what torch.compile sees)."""
    z = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    return torch.tanh(z) if nonlinearity == "tanh" else torch.relu(z)


_compiled_for = None  # (device, dtype, nonlinearity) the dynamo cache currently holds


def _compiled_step(device: torch.device, dtype: torch.dtype, nonlinearity: str):
    """torch.compile'd ``_cell_step``. Dynamo's cache is reset whenever the
    (device, dtype, activation) changes, which keeps the handful of graphs a
    key needs (grad mode, requires_grad of h, B = 1 specialised) under the
    recompile limit: past it dynamo would silently run eager code."""
    global _compiled_for
    key = (device, dtype, nonlinearity)
    if key != _compiled_for:
        torch._dynamo.reset()
        _compiled_for = key
    return torch.compile(_cell_step, dynamic=True)


def _compiled_loop(step, x, h0, params, nonlinearity: str):
    h, states = h0, []
    for t in range(x.shape[0]):
        h = step(x[t], h, *params, nonlinearity)
        states.append(h)
    return torch.stack(states)


def _build(shape: RnnShape, nonlinearity: str, device: torch.device, dtype: torch.dtype, seed: int,
           compiled_loop: bool) -> CaseSetup:
    T, B, I, H = shape.T, shape.B, shape.I, shape.H
    g = generator_for(device, seed)
    x = leaf(random_tensor((T, B, I), dtype, device, g))
    h0 = leaf(random_tensor((B, H), dtype, device, g, scale=0.5))
    w_ih, w_hh, b_ih, b_hh = weights = recurrent_weights(I, H, dtype, device, g)
    grad_output = random_tensor((T, B, H), dtype, device, g)
    inputs = [x, h0, *weights]

    rnn = nn.RNN(I, H, num_layers=1, nonlinearity=nonlinearity, device=device, dtype=dtype)
    rnn_params = copy_weights(rnn, ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"], weights)
    cell = nn.RNNCell(I, H, nonlinearity=nonlinearity, device=device, dtype=dtype)
    cell_params = copy_weights(cell, ["weight_ih", "weight_hh", "bias_ih", "bias_hh"], weights)

    impls = [
        Impl("fused", lambda: fusedseq.rnn(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity)[0],
             inputs, fused=True),
        Impl("nn.RNN", lambda: rnn(x, h0.unsqueeze(0))[0], [x, h0, *rnn_params],
             prepare=set_train_mode(rnn)),
        Impl("loop nn.RNNCell", lambda: _cell_loop(cell, x, h0), [x, h0, *cell_params]),
    ]
    if compiled_loop:
        step = _compiled_step(device, dtype, nonlinearity)
        impls.append(Impl("loop compiled", lambda: _compiled_loop(step, x, h0, cell_params, nonlinearity),
                          [x, h0, *cell_params], note="torch.compile'd step"))

    def compute_reference(with_grads: bool) -> Reference:
        ref_inputs = float64_leaves(inputs, with_grads)
        out, _ = reference.rnn(*ref_inputs, nonlinearity=nonlinearity)
        grads = None
        if with_grads:
            grads = list(torch.autograd.grad(out, ref_inputs, grad_output.to(torch.float64)))
        return Reference(out.detach(), grads)

    return CaseSetup(impls, grad_output, compute_reference)


def _cudnn_column(shape: RnnShape, dtype: torch.dtype, device: torch.device, mode: str) -> dict[str, str]:
    """The "cuDNN" column on CUDA: which algorithm nn.RNN gets (see cudnn_rules)."""
    if device.type != "cuda":
        return {}
    probe = torch.empty(1, device=device, dtype=dtype)
    uses_cudnn = bool(torch.cudnn_is_acceptable(probe))
    s = shape
    return {"cuDNN": cudnn_persistence(s.T, s.B, s.I, s.H, dtype, mode, DeviceTraits.of(device), uses_cudnn)}


def make_cases(device: torch.device, dtypes: Sequence[torch.dtype], shapes: Sequence[RnnShape],
               modes: Sequence[str], nonlinearity: str = "tanh", seed: int = 0,
               compiled_loop: Optional[bool] = None) -> list[Case]:
    """``compiled_loop`` None: on CUDA only (torch.compile on CPU needs a C++
    toolchain and minutes of compile time for little insight)."""
    if compiled_loop is None:
        compiled_loop = device.type == "cuda"
    cases = []
    for dtype in dtypes:
        for s in shapes:
            cases.append(Case(
                op=OP, device=device, dtype=dtype,
                label=f"T={s.T} B={s.B} I={s.I} H={s.H} {nonlinearity}",
                params={"T": s.T, "B": s.B, "I": s.I, "H": s.H, "nonlinearity": nonlinearity},
                modes=list(modes),
                flops={m: rnn_flops(s.T, s.B, s.I, s.H, m) for m in modes},
                build=lambda s=s, dtype=dtype: _build(s, nonlinearity, device, dtype, seed, compiled_loop),
                steps=s.T,
                extra={m: _cudnn_column(s, dtype, device, m) for m in modes},
            ))
    return cases
