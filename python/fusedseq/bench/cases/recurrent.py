"""The RNN cell and the RNN sequence against ``nn.RNNCell`` / ``nn.RNN``
(cuDNN on CUDA), a Python loop of ``nn.RNNCell`` and plain eager code.

On CUDA, ``loop compiled`` times the cell loop with its *step* under
``torch.compile`` (dynamic shapes, one compile per device × dtype ×
activation: compiling the loop would unroll all T steps), and the "cuDNN"
column names the algorithm ``nn.RNN`` gets (a prediction from PyTorch's
``get_algo`` in aten/src/ATen/native/cudnn/RNN.cpp, not a query of cuDNN).
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

import fusedseq
from fusedseq import reference

from ..harness import FWD, Path, Setup, case

_NAMES = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]


def _weights(make, I: int, H: int) -> list:
    """w_ih (H, I), w_hh (H, H), b_ih, b_hh (H,): nn.RNN's init, uniform ±1/√H."""
    b = 1.0 / math.sqrt(H)
    return [make(*s, scale=b, uniform=True) for s in ((H, I), (H, H), (H,), (H,))]


def _owning(module: nn.Module, names: list[str], weights: list) -> list:
    """The module's parameters ``names``, set (in place: cuDNN's flat buffer stays valid) to ``weights``."""
    params = [getattr(module, n) for n in names]
    with torch.no_grad():
        for p, w in zip(params, weights):
            p.copy_(w)
    return params


def _cell_flops(p: dict, mode: str) -> tuple[float, str]:
    """2·B·H·(I+H) forward; the backward's four products ≈ 2× that."""
    fwd = 2.0 * p["B"] * p["H"] * (p["I"] + p["H"]) * p.get("T", 1)
    return (fwd if mode == FWD else 3 * fwd), "FLOP"


@case("rnn_cell", primary="nn.RNNCell", work=_cell_flops, cuda_ops=("rnn_cell", "rnn_cell_backward"), shapes={
    "cpu": [dict(B=16, I=256, H=256, nonlinearity="tanh")],
    "cuda": [dict(B=B, I=H, H=H, nonlinearity="tanh") for H in (256, 1024) for B in (1, 8, 64, 256)],
    "quick": [dict(B=4, I=32, H=32, nonlinearity="tanh")]})
def rnn_cell(make, B, I, H, nonlinearity="tanh"):
    x, h, w = make(B, I), make(B, H, scale=0.5), _weights(make, I, H)
    cell = nn.RNNCell(I, H, nonlinearity=nonlinearity, device=make.device, dtype=make.dtype)
    return Setup([x, h, *w], {
        "fused": lambda: fusedseq.rnn_cell(x, h, *w, nonlinearity),
        "nn.RNNCell": Path(lambda: cell(x, h), leaves=[x, h, *_owning(cell, _NAMES, w)]),
        "eager": lambda: reference.rnn_cell(x, h, *w, nonlinearity),
    }, reference=lambda *t: reference.rnn_cell(*t, nonlinearity=nonlinearity))


def _cell_step(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity: str):
    z = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    return torch.tanh(z) if nonlinearity == "tanh" else torch.relu(z)


def _loop(step, x, h):
    states = []
    for t in range(x.shape[0]):
        h = step(x[t], h)
        states.append(h)
    return torch.stack(states)


_compiled: dict = {}


def _compiled_step(key):
    """Dynamo's cache is reset when (device, dtype, activation) changes, so the
    few graphs one key needs stay under the recompile limit (past it dynamo
    silently runs eager code)."""
    if key not in _compiled:
        torch._dynamo.reset()
        _compiled.clear()
        _compiled[key] = torch.compile(_cell_step, dynamic=True)
    return _compiled[key]


@contextmanager
def _train_mode(module: nn.Module):
    """eval() for forward rows (cuDNN's inference kernels), train() for training rows."""
    module.train(torch.is_grad_enabled())
    yield


def cudnn_algo(T, B, I, H, dtype, backward: bool, device) -> str:
    """PERSIST_STATIC_SMALL_H, PERSIST_STATIC or STANDARD, by PyTorch's rule (sm_80+)."""
    p = torch.cuda.get_device_properties(device)
    if dtype == torch.float64:
        return "std"
    if H <= (256 if backward else 384):
        return "small_h"
    if (dtype == torch.float16 and H <= 1024 and H % 128 == 0 and I % 128 == 0 and p.minor != 6
            and p.multi_processor_count >= 98 and B % 8 == 0 and B <= 128 and (B < 96 or H < 896)):
        return "static"
    return "std"


@case("rnn", primary="nn.RNN", work=_cell_flops, cuda_ops=("rnn", "rnn_backward"), shapes={
    "cpu": [dict(T=200, B=16, I=256, H=256, nonlinearity="tanh")],
    "cuda": [dict(T=T, B=B, I=H, H=H, nonlinearity="tanh", compile=True)
             for T in (40, 200, 1000) for B in (1, 8, 64, 256) for H in (128, 256, 512, 1024, 2048)],
    "quick": [dict(T=16, B=4, I=32, H=32, nonlinearity="tanh")]})
def rnn(make, T, B, I, H, nonlinearity="tanh", compile=False):
    x, h0, w = make(T, B, I), make(B, H, scale=0.5), _weights(make, I, H)
    net = nn.RNN(I, H, nonlinearity=nonlinearity, device=make.device, dtype=make.dtype)
    cell = nn.RNNCell(I, H, nonlinearity=nonlinearity, device=make.device, dtype=make.dtype)
    cell_params = _owning(cell, _NAMES, w)
    paths = {
        "fused": lambda: fusedseq.rnn(x, h0, *w, nonlinearity)[0],
        "nn.RNN": Path(lambda: net(x, h0.unsqueeze(0))[0], leaves=[x, h0, *_owning(net, [n + "_l0" for n in _NAMES], w)],
                       context=lambda: _train_mode(net)),
        "loop nn.RNNCell": Path(lambda: _loop(cell, x, h0), leaves=[x, h0, *cell_params]),
    }
    if compile:
        step = _compiled_step((make.device, make.dtype, nonlinearity))
        paths["loop compiled"] = Path(lambda: _loop(lambda xt, h: step(xt, h, *cell_params, nonlinearity), x, h0),
                                      leaves=[x, h0, *cell_params])
    columns = {}
    if make.device.type == "cuda":
        algo = [cudnn_algo(T, B, I, H, make.dtype, bwd, make.device)
                if torch.cudnn_is_acceptable(x) else "no cudnn" for bwd in (False, True)]
        columns = {"fwd": {"cuDNN": algo[0]}, "fwd+bwd": {"cuDNN": "/".join(algo)}}
    return Setup([x, h0, *w], paths, columns=columns,
                 reference=lambda *t: reference.rnn(*t, nonlinearity=nonlinearity)[0])
