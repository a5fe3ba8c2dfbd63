"""The RNN cell and the RNN sequence against ``nn.RNNCell`` / ``nn.RNN``
(cuDNN on CUDA), a Python loop of ``nn.RNNCell`` and plain eager code; the
LSTM and GRU cells and sequences likewise against ``nn.LSTMCell`` /
``nn.GRUCell``, ``nn.LSTM`` / ``nn.GRU`` and a loop of their cells.

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
from torch import Tensor, nn

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


# ----------------------------------------------------------- LSTM and GRU --
# One builder per shape of call (cell, sequence), registered for both kinds:
# what differs is the gate count and which functions compute it.
_GATED = {  # kind -> (gates, fused cell, fused sequence, reference cell, reference sequence, nn cell, nn module)
    "lstm": (4, fusedseq.lstm_cell, fusedseq.lstm, reference.lstm_cell, reference.lstm, nn.LSTMCell, nn.LSTM),
    "gru": (3, fusedseq.gru_cell, fusedseq.gru, reference.gru_cell, reference.gru, nn.GRUCell, nn.GRU),
}


def _gated_flops(kind: str):
    """2·B·G·H·(I+H) per step forward (G gates), ×3 with the backward's products."""
    G = _GATED[kind][0]
    return lambda p, mode: (G * _cell_flops(p, mode)[0], "FLOP")


def _gated_args(kind: str, make, B: int, I: int, H: int) -> tuple[list, list]:
    """The initial states ((h, c) or (h,)) and w_ih, w_hh, b_ih, b_hh with
    torch's init (uniform ±1/√H)."""
    G, b = _GATED[kind][0], 1.0 / math.sqrt(H)
    states = [make(B, H, scale=0.5) for _ in range(2 if kind == "lstm" else 1)]
    return states, [make(*s, scale=b, uniform=True) for s in ((G * H, I), (G * H, H), (G * H,), (G * H,))]


def _pair(states: list):
    """Our state argument: (h, c) for the LSTM, h for the GRU."""
    return tuple(states) if len(states) == 2 else states[0]


def _one(out) -> Tensor:
    """A cell's (h', c') as one tensor (both get gradients, as in a training loop); h' alone for the GRU."""
    return torch.stack(out) if isinstance(out, tuple) else out


def _gated_cell(kind: str):
    _, fused_cell, _, ref_cell, _, nn_cell, _ = _GATED[kind]

    def build(make, B, I, H):
        x = make(B, I)
        states, w = _gated_args(kind, make, B, I, H)
        cell = nn_cell(I, H, device=make.device, dtype=make.dtype)
        n = len(states)
        return Setup([x, *states, *w], {
            "fused": lambda: _one(fused_cell(x, _pair(states), *w)),
            f"nn.{nn_cell.__name__}": Path(lambda: _one(cell(x, _pair(states))),
                                           leaves=[x, *states, *_owning(cell, _NAMES, w)]),
            "eager": lambda: _one(ref_cell(x, _pair(states), *w)),
        }, reference=lambda x, *t: _one(ref_cell(x, _pair(list(t[:n])), *t[n:])))
    return build


def _gated_seq(kind: str):
    _, _, fused_seq, _, ref_seq, nn_cell, nn_module = _GATED[kind]

    def build(make, T, B, I, H):
        x = make(T, B, I)
        states, w = _gated_args(kind, make, B, I, H)
        net = nn_module(I, H, device=make.device, dtype=make.dtype)
        cell = nn_cell(I, H, device=make.device, dtype=make.dtype)
        cell_params = _owning(cell, _NAMES, w)
        n = len(states)

        def loop():  # a Python loop of the torch cell: what a hand-written model runs
            state, outs = _pair(states), []
            for t in range(T):
                state = cell(x[t], state)
                outs.append(state[0] if n == 2 else state)
            return torch.stack(outs)

        return Setup([x, *states, *w], {
            "fused": lambda: fused_seq(x, _pair(states), *w)[0],
            f"nn.{nn_module.__name__}": Path(lambda: net(x, _pair([s.unsqueeze(0) for s in states]))[0],
                                             leaves=[x, *states, *_owning(net, [f + "_l0" for f in _NAMES], w)],
                                             context=lambda: _train_mode(net)),
            f"loop nn.{nn_cell.__name__}": Path(loop, leaves=[x, *states, *cell_params]),
        }, reference=lambda x, *t: ref_seq(x, _pair(list(t[:n])), *t[n:])[0])
    return build


for _kind in _GATED:
    case(f"{_kind}_cell", primary=f"nn.{_GATED[_kind][5].__name__}", work=_gated_flops(_kind),
         cuda_ops=(f"{_kind}_cell", f"{_kind}_cell_backward"), shapes={
             "cpu": [dict(B=16, I=256, H=256)],
             "cuda": [dict(B=B, I=H, H=H) for H in (256, 1024) for B in (1, 64, 256)],
             "quick": [dict(B=4, I=24, H=32)]})(_gated_cell(_kind))
    case(_kind, primary=f"nn.{_GATED[_kind][6].__name__}", work=_gated_flops(_kind),
         cuda_ops=(_kind, f"{_kind}_backward"), shapes={
             "cpu": [dict(T=200, B=16, I=256, H=256)],
             "cuda": [dict(T=T, B=B, I=H, H=H) for T in (200, 1000) for B in (8, 64) for H in (256, 1024)],
             "quick": [dict(T=16, B=4, I=24, H=32)]})(_gated_seq(_kind))
