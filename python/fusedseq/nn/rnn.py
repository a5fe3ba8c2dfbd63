"""Drop-in ``torch.nn.RNN`` and ``torch.nn.RNNCell`` running on the fused ops.

``RNN`` subclasses ``torch.nn.RNNBase`` through :class:`FusedRNNBase` (see
``_recurrent.py`` for what that keeps of torch's and why it is not a
``torch.nn.RNN`` subclass); ``RNNCell`` subclasses ``torch.nn.RNNCell``. A
torch state dict loads as is; ``backend="fused"`` runs each (layer,
direction) as one ``fusedseq.rnn`` call, ``backend="reference"`` is torch's
own forward.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..ops.rnn import rnn as _fused_rnn
from ..ops.rnn import rnn_cell as _fused_rnn_cell
from ._recurrent import FusedCell, FusedRNNBase, States


class RNNCell(FusedCell, torch.nn.RNNCell):
    """``torch.nn.RNNCell`` whose step is one fused kernel (``fusedseq.rnn_cell``).

    Args: those of ``torch.nn.RNNCell`` (``input_size, hidden_size, bias=True,
    nonlinearity="tanh", device=None, dtype=None``), plus ``backend``.
    forward(input (B, I) or (I,), hx (B, H) or (H,) or None) -> h'.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device=None, dtype=None, *, backend: str = "fused") -> None:
        super().__init__(input_size, hidden_size, bias, nonlinearity, device=device, dtype=dtype)
        self._init_backend(backend)

    def _fused(self, input: Tensor, hx: Optional[Tensor]) -> Tensor:
        return _fused_rnn_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                               self.nonlinearity)


class RNN(FusedRNNBase):
    """``torch.nn.RNN`` (Elman; layers, ``batch_first``, dropout, bidirectional,
    packed sequences) whose recurrences run on ``fusedseq.rnn``.

    Args: those of ``torch.nn.RNN``, in its order, plus ``backend``.
    """

    _torch_class = torch.nn.RNN

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, backend: str = "fused") -> None:
        modes = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
        if nonlinearity not in modes:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(modes[nonlinearity], input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity
        self._init_backend(backend)

    def _run_direction(self, seq, states: States, w_ih, w_hh, b_ih, b_hh) -> tuple[Tensor, States]:
        out, _ = _fused_rnn(seq, states[0], w_ih, w_hh, b_ih, b_hh, self.nonlinearity)
        return out, (out,)

    def extra_repr(self) -> str:
        relu = ", nonlinearity='relu'" if self.nonlinearity == "relu" else ""
        return f"{torch.nn.RNNBase.extra_repr(self)}{relu}, backend={self.backend!r}"
