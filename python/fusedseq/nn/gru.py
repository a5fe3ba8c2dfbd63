"""Drop-in ``torch.nn.GRU`` and ``torch.nn.GRUCell`` running on the fused ops.

``GRU`` subclasses ``torch.nn.RNNBase`` through :class:`FusedRNNBase` (see
``_recurrent.py``); ``GRUCell`` subclasses ``torch.nn.GRUCell``. A torch
state dict loads as is; ``backend="fused"`` runs each (layer, direction) as
one ``fusedseq.gru`` call, ``backend="reference"`` is torch's own forward.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..ops.gru import gru as _fused_gru
from ..ops.gru import gru_cell as _fused_gru_cell
from ._recurrent import FusedCell, FusedRNNBase, States


class GRUCell(FusedCell, torch.nn.GRUCell):
    """``torch.nn.GRUCell`` whose step is one fused kernel (``fusedseq.gru_cell``).

    Args: those of ``torch.nn.GRUCell`` (``input_size, hidden_size, bias=True,
    device=None, dtype=None``), plus ``backend``.
    forward(input (B, I) or (I,), hx (B, H) or (H,) or None) -> h'.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 backend: str = "fused") -> None:
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self._init_backend(backend)

    def _fused(self, input: Tensor, hx: Optional[Tensor]) -> Tensor:
        return _fused_gru_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class GRU(FusedRNNBase):
    """``torch.nn.GRU`` (layers, ``batch_first``, dropout, bidirectional,
    packed sequences) whose recurrences run on ``fusedseq.gru``.

    Args: those of ``torch.nn.GRU``, in its order, plus ``backend``.
    """

    _torch_class = torch.nn.GRU

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, device=None,
                 dtype=None, *, backend: str = "fused") -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype)
        self._init_backend(backend)

    def _run_direction(self, seq, states: States, w_ih, w_hh, b_ih, b_hh) -> tuple[Tensor, States]:
        out, _ = _fused_gru(seq, states[0], w_ih, w_hh, b_ih, b_hh)
        return out, (out,)
