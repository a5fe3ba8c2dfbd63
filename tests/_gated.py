"""LSTM and GRU side by side for the tests: one adapter per kind giving the
fused function, the float64 reference and PyTorch's own path with the same
flat signature, so each check is written once and run for both.

Flat signatures (what check_against_reference and with_views expect):
  sequence  f(x, h0, [c0,] w_ih, w_hh, b_ih, b_hh, batch_first) -> (output, h_n[, c_n])
  cell      f(x, h, [c,] w_ih, w_hh, b_ih, b_hh)                -> (h'[, c'])
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

import fusedseq
from fusedseq import reference

from conftest import Maker


def gated_weights(make: Maker, I: int, H: int, gates: int, *, bias=(True, True), dtype=torch.float64,
                  w_hh_gain: float = 0.7):
    """w_ih (G·H, I), w_hh (G·H, H), b_ih, b_hh (G·H,) or None, scaled like
    torch's init (∝ 1/sqrt(fan-in)); W_hh's gain < 1 keeps long sequences tame."""
    w_ih = make(gates * H, I, dtype=dtype, scale=1.0 / math.sqrt(I))
    w_hh = make(gates * H, H, dtype=dtype, scale=w_hh_gain / math.sqrt(H))
    b_ih = make(gates * H, dtype=dtype, scale=0.5) if bias[0] else None
    b_hh = make(gates * H, dtype=dtype, scale=0.5) if bias[1] else None
    return w_ih, w_hh, b_ih, b_hh


def _params(w_ih, w_hh, b_ih, b_hh):
    """torch's flat weight list; a missing bias of the pair is a zero one (nn.LSTM has both or none)."""
    if b_ih is None and b_hh is None:
        return [w_ih, w_hh], False
    zeros = w_hh.new_zeros(w_hh.shape[0])
    return [w_ih, w_hh, zeros if b_ih is None else b_ih, zeros if b_hh is None else b_hh], True


def _torch_seq(fn, x, states, weights, batch_first):
    """Runs torch.lstm / torch.gru on our layout; states: tuple of (B, H) (or (H,) unbatched) or None."""
    unbatched = x.dim() == 2
    if unbatched:
        x, batch_first = x.unsqueeze(1), False
        states = None if states is None else tuple(s.unsqueeze(0) for s in states)
    B = x.shape[0] if batch_first else x.shape[1]
    H = weights[1].shape[1]
    n = 2 if fn is torch.lstm else 1
    states = states or tuple(x.new_zeros(B, H) for _ in range(n))
    params, has_bias = _params(*weights)
    hx = tuple(s.unsqueeze(0) for s in states)
    res = fn(x, hx if n == 2 else hx[0], params, has_bias, 1, 0.0, False, False, batch_first)
    out, finals = res[0], tuple(r.squeeze(0) for r in res[1:])
    if unbatched:
        return (out.squeeze(1), *(f.squeeze(0) for f in finals))
    return (out, *finals)


# ----------------------------------------------------------- flat adapters --
def lstm_seq(fn):
    def call(x, h0=None, c0=None, w_ih=None, w_hh=None, b_ih=None, b_hh=None, batch_first=False):
        state = None if h0 is None and c0 is None else (h0, c0)
        out, (h_n, c_n) = fn(x, state, w_ih, w_hh, b_ih, b_hh, batch_first=batch_first)
        return out, h_n, c_n
    return call


def lstm_cell(fn):
    def call(x, h=None, c=None, w_ih=None, w_hh=None, b_ih=None, b_hh=None):
        return fn(x, None if h is None and c is None else (h, c), w_ih, w_hh, b_ih, b_hh)
    return call


def gru_seq(fn):
    def call(x, h0=None, w_ih=None, w_hh=None, b_ih=None, b_hh=None, batch_first=False):
        return fn(x, h0, w_ih, w_hh, b_ih, b_hh, batch_first=batch_first)
    return call


def torch_lstm(x, state, w_ih, w_hh, b_ih=None, b_hh=None, batch_first=False):
    """What a one-layer nn.LSTM runs (torch.lstm)."""
    out, h_n, c_n = _torch_seq(torch.lstm, x, state, (w_ih, w_hh, b_ih, b_hh), batch_first)
    return out, (h_n, c_n)


def torch_gru(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, batch_first=False):
    """What a one-layer nn.GRU runs (torch.gru)."""
    return _torch_seq(torch.gru, x, None if h0 is None else (h0,), (w_ih, w_hh, b_ih, b_hh), batch_first)


def _cell_batched(fn, x, states, nstates, H):
    unbatched = x.dim() == 1
    if unbatched:
        x = x.unsqueeze(0)
        states = None if states is None else tuple(s.unsqueeze(0) for s in states)
    states = states or tuple(x.new_zeros(x.shape[0], H) for _ in range(nstates))
    out = fn(x, states)
    return tuple(o.squeeze(0) for o in out) if unbatched else out


def torch_lstm_cell(x, state, w_ih, w_hh, b_ih=None, b_hh=None):
    """What nn.LSTMCell runs (torch.lstm_cell)."""
    return _cell_batched(lambda x, s: torch.lstm_cell(x, s, w_ih, w_hh, b_ih, b_hh), x, state, 2, w_hh.shape[1])


def torch_gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """What nn.GRUCell runs (torch.gru_cell)."""
    return _cell_batched(lambda x, s: (torch.gru_cell(x, s[0], w_ih, w_hh, b_ih, b_hh),), x,
                         None if h is None else (h,), 1, w_hh.shape[1])[0]


@dataclass(frozen=True)
class Gated:
    """One kind of gated recurrence, as the tests see it."""
    name: str                         # "lstm" | "gru"
    gates: int                        # G: rows of W per hidden unit
    states: tuple[str, ...]           # names of the sequence's initial states
    seq: Callable                     # fused, flat
    seq_ref: Callable                 # float64 reference, flat
    seq_torch: Callable               # PyTorch's own path, flat
    cell: Callable
    cell_ref: Callable
    cell_torch: Callable
    module: type                      # torch.nn.LSTM / GRU
    cell_module: type                 # torch.nn.LSTMCell / GRUCell

    @property
    def seq_outputs(self) -> tuple[str, ...]:
        return ("output", "h_n", "c_n")[:1 + len(self.states)]

    @property
    def cell_states(self) -> tuple[str, ...]:
        return tuple(s[0] for s in self.states)  # "h", "c"

    def raw(self, suffix: str = ""):
        return getattr(torch.ops.fusedseq, self.name + suffix)


LSTM = Gated("lstm", 4, ("h0", "c0"), lstm_seq(fusedseq.lstm), lstm_seq(reference.lstm), lstm_seq(torch_lstm),
             lstm_cell(fusedseq.lstm_cell), lstm_cell(reference.lstm_cell), lstm_cell(torch_lstm_cell),
             torch.nn.LSTM, torch.nn.LSTMCell)
GRU = Gated("gru", 3, ("h0",), gru_seq(fusedseq.gru), gru_seq(reference.gru), gru_seq(torch_gru),
            fusedseq.gru_cell, reference.gru_cell, torch_gru_cell, torch.nn.GRU, torch.nn.GRUCell)
KINDS = [LSTM, GRU]


def kind_params():
    import pytest
    return [pytest.param(k, id=k.name) for k in KINDS]


def state_tensors(make: Maker, kind: Gated, shape, dtype=torch.float64) -> dict:
    """Fresh initial states for a sequence: {"h0": ..., ["c0": ...]}."""
    return {name: make(*shape, dtype=dtype) for name in kind.states}


def module_state(kind: Gated, states: dict, unsqueeze: Optional[int] = 0):
    """Our (B, H) states as torch's module takes hx: (1, B, H), a pair for LSTM."""
    ts = [states[n] if unsqueeze is None else states[n].unsqueeze(unsqueeze) for n in kind.states]
    return tuple(ts) if kind.name == "lstm" else ts[0]
