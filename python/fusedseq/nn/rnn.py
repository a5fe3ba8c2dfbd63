"""Drop-in ``torch.nn.RNN`` and ``torch.nn.RNNCell`` running on the fused ops.

Everything that is not the forward pass is torch's own: ``RNN`` subclasses
``torch.nn.RNNBase`` (the common base of torch's RNN, GRU and LSTM) and
``RNNCell`` subclasses ``torch.nn.RNNCell``, so the constructor arguments, the
parameter names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), their
initialisation (the same seed gives the same weights as torch), the argument
checks and ``state_dict`` are torch's. A ``torch.nn.RNN`` state dict loads
as is. ``RNN`` is deliberately *not* a ``torch.nn.RNN`` subclass: Dynamo
refuses to trace any ``torch.nn.RNN`` instance, and this one must compile
(``torch.compile(fullgraph=True)`` traces the fused ops).

``backend="fused"`` runs each (layer, direction) as one ``fusedseq.rnn`` call:
the input projection of all steps is one matrix product and the recurrence is
one fused kernel. ``backend="reference"`` is ``torch.nn.RNN.forward``
unchanged (cuDNN on a GPU), which is what the fused path is tested against.

Stacking follows ``torch.nn.RNN``: layer ``l > 0`` reads layer ``l - 1``'s
output (both directions concatenated), with dropout between layers in
training mode; ``h_n[l * num_directions + d]`` is the last state of layer
``l``, direction ``d``. Packed sequences work too: a padded copy is run, and
since a forward recurrence at step ``t`` depends only on steps ``<= t``, the
padding never reaches a real position; the reverse direction flips each
sequence within its own length.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from ..ops.rnn import rnn as _fused_rnn
from ..ops.rnn import rnn_cell as _fused_rnn_cell
from ._backend import check_backend


class RNNCell(torch.nn.RNNCell):
    """``torch.nn.RNNCell`` whose step is one fused kernel (``fusedseq.rnn_cell``).

    Args: those of ``torch.nn.RNNCell`` (``input_size, hidden_size, bias=True,
    nonlinearity="tanh", device=None, dtype=None``), plus ``backend``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device=None, dtype=None, *, backend: str = "fused") -> None:
        super().__init__(input_size, hidden_size, bias, nonlinearity, device=device, dtype=dtype)
        self.backend = check_backend(backend)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        """input: ``(B, input_size)`` or ``(input_size,)``; hx: ``(B, hidden_size)``
        (``(hidden_size,)``) or None for zeros. Returns ``h'`` shaped like hx."""
        if check_backend(self.backend) == "reference":
            return super().forward(input, hx)
        if input.dim() not in (1, 2):
            raise ValueError(f"RNNCell: expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and hx.dim() != input.dim():
            raise ValueError(f"RNNCell: expected hx to be {input.dim()}D (like input), got {hx.dim()}D instead")
        return _fused_rnn_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                               self.nonlinearity)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend!r}"


class RNN(torch.nn.RNNBase):
    """``torch.nn.RNN`` (Elman; layers, ``batch_first``, dropout, bidirectional,
    packed sequences) whose recurrences run on ``fusedseq.rnn``.

    Args: those of ``torch.nn.RNN``, in its order, plus ``backend``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, backend: str = "fused") -> None:
        modes = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
        if nonlinearity not in modes:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(modes[nonlinearity], input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity
        self.backend = check_backend(backend)

    def forward(self, input: Union[Tensor, PackedSequence],
                hx: Optional[Tensor] = None) -> tuple[Union[Tensor, PackedSequence], Tensor]:
        """input: ``(T, B, I)`` (``(B, T, I)`` if batch_first), ``(T, I)``
        unbatched, or a PackedSequence; hx: ``(num_layers * num_directions, B, H)``
        (``(num_layers * num_directions, H)`` unbatched) or None for zeros.

        Returns ``(output, h_n)`` exactly as ``torch.nn.RNN``: output
        ``(T, B, num_directions * H)`` (or packed like the input), h_n shaped like hx.
        """
        if check_backend(self.backend) == "reference":
            return torch.nn.RNN.forward(self, input, hx)  # torch's own path (cuDNN on a GPU)
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)

        if input.dim() not in (2, 3):
            raise ValueError(f"RNN: expected input to be 2D or 3D, got {input.dim()}D instead")
        unbatched = input.dim() == 2
        if unbatched:
            if hx is not None and hx.dim() != 2:
                raise ValueError(f"RNN: for unbatched 2D input, hx should also be 2D but got {hx.dim()}D tensor")
            input = input.unsqueeze(0 if self.batch_first else 1)
            hx = None if hx is None else hx.unsqueeze(1)
        elif hx is not None and hx.dim() != 3:
            raise ValueError(f"RNN: for batched 3D input, hx should also be 3D but got {hx.dim()}D tensor")
        x = input.transpose(0, 1) if self.batch_first else input    # (T, B, I)
        if hx is None:
            hx = self._zeros_hx(x)
        # torch's own checks, on the caller's layout: nn.RNN's messages for wrong sizes and dtypes.
        self.check_forward_args(input, hx, None)

        output, h_n = self._run_layers(x, hx, lengths=None)         # (T, B, D*H), (L*D, B, H)
        if self.batch_first:
            output = output.transpose(0, 1)
        if unbatched:
            return output.squeeze(0 if self.batch_first else 1), h_n.squeeze(1)
        return output, h_n

    # ---------------------------------------------------------------- helpers --
    @property
    def _num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _zeros_hx(self, x: Tensor) -> Tensor:
        # x: (T, B, I) -> zeros (L*D, B, H)
        return x.new_zeros(self.num_layers * self._num_directions, x.shape[1], self.hidden_size)

    def _layer_weights(self, layer: int, direction: int):
        suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        w_ih = getattr(self, "weight_ih" + suffix)
        w_hh = getattr(self, "weight_hh" + suffix)
        b_ih = getattr(self, "bias_ih" + suffix) if self.bias else None
        b_hh = getattr(self, "bias_hh" + suffix) if self.bias else None
        return w_ih, w_hh, b_ih, b_hh

    def _run_layers(self, x: Tensor, hx: Tensor, lengths: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """x: (T, B, I) (padded when ``lengths`` (B,) is given); hx: (L*D, B, H).
        Returns every state of the last layer, (T, B, D*H), and h_n, (L*D, B, H)."""
        T, B = x.shape[0], x.shape[1]
        if lengths is None:
            flip = _reverse_in_time
            last_index = None
        else:
            index = _reversal_index(lengths, T)                      # (T, B)
            flip = lambda seq: _gather_time(seq, index)              # noqa: E731
            last_index = (lengths - 1).clamp(min=0)                  # (B,)

        layer_input = x
        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self._num_directions):
                w_ih, w_hh, b_ih, b_hh = self._layer_weights(layer, direction)
                seq = layer_input if direction == 0 else flip(layer_input)
                out, h_last = _fused_rnn(seq, hx[layer * self._num_directions + direction],
                                         w_ih, w_hh, b_ih, b_hh, self.nonlinearity)
                if last_index is not None:
                    # A sequence's last state is at its own length, not at T - 1.
                    h_last = out[last_index, torch.arange(B, device=out.device)]
                outputs.append(out if direction == 0 else flip(out))
                finals.append(h_last)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        return layer_input, torch.stack(finals)

    def _forward_packed(self, packed: PackedSequence, hx: Optional[Tensor]) -> tuple[PackedSequence, Tensor]:
        batch_sizes = packed.batch_sizes                             # (T,) on the CPU
        T, B = batch_sizes.numel(), int(batch_sizes[0])
        # Row r of packed.data is (time t, batch b): the first batch_sizes[t]
        # entries of sorted_indices at step t, in order.
        order = (packed.sorted_indices if packed.sorted_indices is not None
                 else torch.arange(B, device=packed.data.device))
        t_index = torch.repeat_interleave(torch.arange(T), batch_sizes).to(packed.data.device)
        b_index = torch.cat([order[:int(n)] for n in batch_sizes])
        lengths = torch.zeros(B, dtype=torch.long, device=packed.data.device)
        lengths[order] = (batch_sizes.unsqueeze(1) > torch.arange(B)).sum(0).to(lengths.device)

        x = packed.data.new_zeros(T, B, packed.data.shape[1])        # (T, B, I), batch in caller's order
        x = x.index_put((t_index, b_index), packed.data)
        if hx is None:
            hx = self._zeros_hx(x)
        self.check_forward_args(packed.data, hx, batch_sizes)
        output, h_n = self._run_layers(x, hx, lengths)
        data = output[t_index, b_index]                              # (sum(lengths), D*H)
        return PackedSequence(data, batch_sizes, packed.sorted_indices, packed.unsorted_indices), h_n

    def extra_repr(self) -> str:
        relu = ", nonlinearity='relu'" if self.nonlinearity == "relu" else ""
        return f"{super().extra_repr()}{relu}, backend={self.backend!r}"


def _reverse_in_time(seq: Tensor) -> Tensor:
    # seq: (T, B, F) -> the same, last step first
    return seq.flip(0)


def _reversal_index(lengths: Tensor, T: int) -> Tensor:
    """(T, B) time index that reverses each sequence within its length and
    leaves the padding after it in place (an involution)."""
    t = torch.arange(T, device=lengths.device).unsqueeze(1)         # (T, 1)
    reversed_t = lengths.unsqueeze(0) - 1 - t                        # (T, B)
    return torch.where(t < lengths.unsqueeze(0), reversed_t, t)


def _gather_time(seq: Tensor, index: Tensor) -> Tensor:
    # seq: (T, B, F), index: (T, B) -> out[t, b] = seq[index[t, b], b]
    return seq.gather(0, index.unsqueeze(-1).expand(-1, -1, seq.shape[-1]))
