"""Pure-PyTorch references for every fused op.

Written for clarity, not speed: the tests and benchmarks compare the fused
kernels against these (usually evaluated in float64), and the models'
``backend="reference"`` runs on them. They take and return the same shapes
as the public functions in :mod:`fusedseq`.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor


def _act(z: Tensor, nonlinearity: str) -> Tensor:
    if nonlinearity == "tanh":
        return torch.tanh(z)
    if nonlinearity == "relu":
        return torch.relu(z)
    raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def rnn_cell(x: Tensor, h: Optional[Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
             b_hh: Optional[Tensor] = None, nonlinearity: str = "tanh") -> Tensor:
    """act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh); x (B, I) or (I,), h (B, H) or None."""
    if h is None:
        h = x.new_zeros(*x.shape[:-1], w_hh.shape[0])
    z = x @ w_ih.T + h @ w_hh.T
    if b_ih is not None:
        z = z + b_ih
    if b_hh is not None:
        z = z + b_hh
    return _act(z, nonlinearity)


def rnn(x: Tensor, h0: Optional[Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
        b_hh: Optional[Tensor] = None, nonlinearity: str = "tanh",
        batch_first: bool = False) -> tuple[Tensor, Tensor]:
    """The recurrence as a Python loop of rnn_cell; same contract as fusedseq.rnn."""
    unbatched = x.dim() == 2
    if unbatched:
        x = x.unsqueeze(1)
        h0 = None if h0 is None else h0.unsqueeze(0)
    elif batch_first:
        x = x.transpose(0, 1)
    h = h0 if h0 is not None else x.new_zeros(x.shape[1], w_hh.shape[0])
    states = []
    for t in range(x.shape[0]):
        h = rnn_cell(x[t], h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
        states.append(h)
    output = torch.stack(states)
    if unbatched:
        return output.squeeze(1), h.squeeze(0)
    return (output.transpose(0, 1) if batch_first else output), h


def _linear(x: Tensor, w: Tensor, b: Optional[Tensor]) -> Tensor:
    return x @ w.T if b is None else x @ w.T + b


def lstm_cell(x: Tensor, state: Optional[tuple[Tensor, Tensor]], w_ih: Tensor, w_hh: Tensor,
              b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """One LSTM step as torch.nn.LSTMCell computes it; gates in torch's order
    i, f, g, o. x (B, I) or (I,); state (h, c), each (B, H) or (H,), or None."""
    H = w_hh.shape[1]
    if state is None:
        zeros = x.new_zeros(*x.shape[:-1], H)
        state = (zeros, zeros)
    h, c = state
    gates = _linear(x, w_ih, b_ih) + _linear(h, w_hh, b_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_next), c_next


def gru_cell(x: Tensor, h: Optional[Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
             b_hh: Optional[Tensor] = None) -> Tensor:
    """One GRU step as torch.nn.GRUCell computes it (gate order r, z, n; the
    reset gate multiplies the hidden side of n, bias included):
    n = tanh(W_in x + b_in + r (W_hn h + b_hn)), h' = (1 - z) n + z h."""
    if h is None:
        h = x.new_zeros(*x.shape[:-1], w_hh.shape[1])
    gi_r, gi_z, gi_n = _linear(x, w_ih, b_ih).chunk(3, dim=-1)
    gh_r, gh_z, gh_n = _linear(h, w_hh, b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(gi_r + gh_r)
    z = torch.sigmoid(gi_z + gh_z)
    n = torch.tanh(gi_n + r * gh_n)
    return (1 - z) * n + z * h


def _time_major(x: Tensor, batch_first: bool) -> tuple[Tensor, bool]:
    """x (T, B, I), (B, T, I) if batch_first, or (T, I) -> ((T, B, I), unbatched)."""
    if x.dim() == 2:
        return x.unsqueeze(1), True
    return (x.transpose(0, 1) if batch_first else x), False


def lstm(x: Tensor, state: Optional[tuple[Tensor, Tensor]], w_ih: Tensor, w_hh: Tensor,
         b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None,
         batch_first: bool = False) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """The LSTM recurrence as a Python loop of lstm_cell; same contract as fusedseq.lstm."""
    x, unbatched = _time_major(x, batch_first)
    if state is not None and unbatched:
        state = (state[0].unsqueeze(0), state[1].unsqueeze(0))
    if state is None:
        zeros = x.new_zeros(x.shape[1], w_hh.shape[1])
        state = (zeros, zeros)
    states = []
    for t in range(x.shape[0]):
        state = lstm_cell(x[t], state, w_ih, w_hh, b_ih, b_hh)
        states.append(state[0])
    output = torch.stack(states)
    h_n, c_n = state
    if unbatched:
        return output.squeeze(1), (h_n.squeeze(0), c_n.squeeze(0))
    return (output.transpose(0, 1) if batch_first else output), (h_n, c_n)


def gru(x: Tensor, h0: Optional[Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
        b_hh: Optional[Tensor] = None, batch_first: bool = False) -> tuple[Tensor, Tensor]:
    """The GRU recurrence as a Python loop of gru_cell; same contract as fusedseq.gru."""
    x, unbatched = _time_major(x, batch_first)
    h = h0.unsqueeze(0) if (h0 is not None and unbatched) else h0
    if h is None:
        h = x.new_zeros(x.shape[1], w_hh.shape[1])
    states = []
    for t in range(x.shape[0]):
        h = gru_cell(x[t], h, w_ih, w_hh, b_ih, b_hh)
        states.append(h)
    output = torch.stack(states)
    if unbatched:
        return output.squeeze(1), h.squeeze(0)
    return (output.transpose(0, 1) if batch_first else output), h


def attention_scores(q: Tensor, k: Tensor, causal: bool = False, scale: Optional[float] = None) -> Tensor:
    """The (masked, scaled) score matrix Q Kᵀ·scale, (..., Hq, Nq, Nk), -inf where masked."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    group = q.shape[-3] // k.shape[-3]
    k = k.repeat_interleave(group, dim=-3)
    s = (q @ k.transpose(-1, -2)) * scale
    if causal:
        nq, nk = s.shape[-2], s.shape[-1]
        visible = torch.ones(nq, nk, dtype=torch.bool, device=s.device).tril()
        s = s.masked_fill(~visible, float("-inf"))
    return s


def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False, scale: Optional[float] = None) -> Tensor:
    """softmax(Q Kᵀ·scale [+ causal mask]) V with grouped-query heads, computed
    in the inputs' dtype with the full score matrix."""
    s = attention_scores(q, k, causal, scale)
    group = q.shape[-3] // k.shape[-3]
    return torch.softmax(s, dim=-1) @ v.repeat_interleave(group, dim=-3)


def attention_lse(q: Tensor, k: Tensor, causal: bool = False, scale: Optional[float] = None) -> Tensor:
    """Row log-sum-exp of the scores, (..., Hq, Nq)."""
    return torch.logsumexp(attention_scores(q, k, causal, scale), dim=-1)
