"""Pure-PyTorch references for every fused op.

Written for clarity, not speed: the tests and benchmarks compare the fused
kernels against these (usually evaluated in float64), and the models'
``backend="reference"`` runs on them. They take and return the same shapes
as the public functions in :mod:`fusedseq`.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

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


def attention_visible(Nq: int, Nk: int, is_causal: bool = False, window: Optional[Sequence[int]] = None,
                      bottom_right: bool = False, device=None) -> Tensor:
    """(Nq, Nk) bool: which keys each query may see before any attn_mask.
    Query i sits on key diagonal i (top-left, SDPA) or i + Nk - Nq
    (bottom-right, FlashAttention's varlen); causal: j <= diagonal; window
    (left, right): diagonal - left <= j <= diagonal + right, -1 unbounded."""
    i = torch.arange(Nq, device=device)[:, None] + (Nk - Nq if bottom_right else 0)
    j = torch.arange(Nk, device=device)[None, :]
    visible = torch.ones(Nq, Nk, dtype=torch.bool, device=device)
    if is_causal:
        visible &= j <= i
    if window is not None:
        left, right = window
        if left >= 0:
            visible &= j >= i - left
        if right >= 0:
            visible &= j <= i + right
    return visible


def attention_scores(q: Tensor, k: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False,
                     scale: Optional[float] = None, window: Optional[Sequence[int]] = None,
                     bottom_right: bool = False, *, causal: Optional[bool] = None) -> Tensor:
    """The masked, scaled score matrix Q Kᵀ·scale (+ attn_mask), (..., Hq, Nq, Nk), -inf where masked.
    ``attn_mask``: bool (True = attend) or additive, broadcastable; ``causal``: alias of ``is_causal``."""
    if isinstance(attn_mask, bool):  # the old positional signature attention_scores(q, k, causal, scale)
        attn_mask, is_causal = None, attn_mask
    if causal is not None:
        is_causal = causal
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    group = q.shape[-3] // k.shape[-3]
    k = k.repeat_interleave(group, dim=-3)
    s = (q @ k.transpose(-1, -2)) * scale
    if is_causal or window is not None:
        visible = attention_visible(s.shape[-2], s.shape[-1], is_causal, window, bottom_right, s.device)
        s = s.masked_fill(~visible, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            s = s.masked_fill(~attn_mask, float("-inf"))
        else:
            s = s + attn_mask.to(s.dtype)
    return s


def attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor] = None, dropout_p: float = 0.0,
              is_causal: bool = False, scale: Optional[float] = None, window: Optional[Sequence[int]] = None,
              bottom_right: bool = False, *, causal: Optional[bool] = None,
              dropout_mask: Optional[Tensor] = None) -> Tensor:
    """softmax(Q Kᵀ·scale + mask) V with grouped-query heads, computed in the
    inputs' dtype with the full score matrix. A row that sees no key gives
    zeros (and zero gradients). Dropout: with ``dropout_mask`` (bool, True =
    kept) exactly that mask, scaled by 1/(1 - dropout_p); else F.dropout's."""
    if isinstance(attn_mask, bool):  # the old positional signature attention(q, k, v, causal, scale)
        attn_mask, is_causal = None, attn_mask
        if not isinstance(dropout_p, bool) and dropout_p is not None and dropout_p != 0.0 and scale is None:
            dropout_p, scale = 0.0, dropout_p
    s = attention_scores(q, k, attn_mask, is_causal, scale, window, bottom_right, causal=causal)
    empty = (s == float("-inf")).all(dim=-1, keepdim=True)
    p = torch.softmax(s.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    if dropout_mask is not None:
        p = p * dropout_mask.to(p.dtype) / (1.0 - dropout_p)
    elif dropout_p > 0:
        p = torch.nn.functional.dropout(p, dropout_p)
    group = q.shape[-3] // k.shape[-3]
    return p @ v.repeat_interleave(group, dim=-3)


def attention_lse(q: Tensor, k: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False,
                  scale: Optional[float] = None, window: Optional[Sequence[int]] = None,
                  *, causal: Optional[bool] = None) -> Tensor:
    """Row log-sum-exp of the scores, (..., Hq, Nq); -inf for a row that sees no key."""
    return torch.logsumexp(attention_scores(q, k, attn_mask, is_causal, scale, window, causal=causal), dim=-1)


def attention_varlen(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
                     is_causal: bool = False, scale: Optional[float] = None,
                     window: Optional[Sequence[int]] = None) -> Tensor:
    """Packed sequences one at a time: q (total_q, Hq, D), k/v (total_k, Hkv, D);
    causal and window bottom-right aligned per sequence, as FlashAttention's varlen."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    outs = []
    for b in range(cu_seqlens_q.numel() - 1):
        q0, q1 = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1])
        k0, k1 = int(cu_seqlens_k[b]), int(cu_seqlens_k[b + 1])
        qb, kb, vb = (t.transpose(0, 1) for t in (q[q0:q1], k[k0:k1], v[k0:k1]))  # (H, N, D)
        if k1 == k0:
            outs.append(q.new_zeros(q1 - q0, q.shape[1], v.shape[-1]))
            continue
        outs.append(attention(qb, kb, vb, is_causal=is_causal, scale=scale, window=window,
                              bottom_right=True).transpose(0, 1))
    return torch.cat(outs, dim=0)
