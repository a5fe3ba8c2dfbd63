"""Drop-in ``torch.nn.LSTM`` and ``torch.nn.LSTMCell`` running on the fused ops.

``LSTM`` subclasses ``torch.nn.RNNBase`` through :class:`FusedRNNBase` (see
``_recurrent.py``), borrowing ``torch.nn.LSTM``'s own state checks;
``LSTMCell`` subclasses ``torch.nn.LSTMCell``. A torch state dict loads as is;
``backend="fused"`` runs each (layer, direction) as one ``fusedseq`` LSTM
sequence op, ``backend="reference"`` is torch's own forward.

``proj_size > 0`` (an LSTM with projections, h_t = W_hr (o_t ∘ tanh c_t)) is
accepted as torch accepts it and runs on ``backend="reference"``; the fused
kernels do not implement the projection, so the fused backend raises
NotImplementedError for it rather than compute something else.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..ops.lstm import lstm_cell as _fused_lstm_cell
from ._recurrent import FusedCell, FusedRNNBase, States

_ops = torch.ops.fusedseq


class LSTMCell(FusedCell, torch.nn.LSTMCell):
    """``torch.nn.LSTMCell`` whose step is one fused kernel (``fusedseq.lstm_cell``).

    Args: those of ``torch.nn.LSTMCell`` (``input_size, hidden_size, bias=True,
    device=None, dtype=None``), plus ``backend``.
    forward(input (B, I) or (I,), hx (h, c) each (B, H) or (H,), or None) -> (h', c').
    """

    _num_states = 2

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 backend: str = "fused") -> None:
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self._init_backend(backend)

    def _fused(self, input: Tensor, hx: Optional[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        return _fused_lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class LSTM(FusedRNNBase):
    """``torch.nn.LSTM`` (layers, ``batch_first``, dropout, bidirectional,
    packed sequences; ``proj_size`` on the reference backend only) whose
    recurrences run on the fused LSTM op.

    Args: those of ``torch.nn.LSTM``, in its order, plus ``backend``.
    """

    _torch_class = torch.nn.LSTM
    _num_states = 2
    # torch.nn.LSTM's own checks of the (h, c) pair (messages included), and
    # the permutation its forward applies to packed batches.
    get_expected_cell_size = torch.nn.LSTM.get_expected_cell_size
    check_forward_args = torch.nn.LSTM.check_forward_args
    permute_hidden = torch.nn.LSTM.permute_hidden

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None, *, backend: str = "fused") -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device=device, dtype=dtype)
        self._init_backend(backend)
        if self.backend == "fused":
            self._check_fused_supported()

    def _check_fused_supported(self) -> None:
        if self.proj_size > 0:
            raise NotImplementedError(
                f"fusedseq.nn.LSTM: proj_size={self.proj_size} is not supported by the fused backend (its "
                "kernels have no projection); use backend='reference' for an LSTM with projections")

    def _states_of(self, hx) -> Optional[States]:
        if hx is None:
            return None
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"LSTM: hx must be a pair (h_0, c_0) of tensors, got {type(hx).__name__}")
        return tuple(hx)

    def _hx_of(self, states: States):
        return states[0], states[1]

    def _run_direction(self, seq, states: States, w_ih, w_hh, b_ih, b_hh) -> tuple[Tensor, States]:
        out, cell_states, _ = _ops.lstm(seq, states[0], states[1], w_ih, w_hh, b_ih, b_hh)
        return out, (out, cell_states)
