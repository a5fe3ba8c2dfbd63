"""The common base of fusedseq's drop-in RNN, LSTM and GRU.

Everything that is not the forward pass is torch's own: the models subclass
``torch.nn.RNNBase`` (the common base of torch's RNN, GRU and LSTM), so the
constructor arguments, the parameter names (``weight_ih_l0``,
``bias_hh_l1_reverse``, ...), their initialisation (the same seed gives the
same weights as torch), the argument checks and ``state_dict`` are torch's: a
torch state dict loads as is. They are deliberately *not* subclasses of
``torch.nn.RNN`` / ``LSTM`` / ``GRU``: Dynamo refuses to trace instances of
those, and these must compile (``torch.compile(fullgraph=True)`` traces the
fused ops).

``backend="fused"`` runs each (layer, direction) as one fused sequence op:
the input projection of all steps is one matrix product and the recurrence
is one kernel. ``backend="reference"`` is torch's own ``forward`` unchanged
(oneDNN on the CPU, cuDNN on a GPU), which is what the fused path is tested
against.

Stacking follows torch: layer ``l > 0`` reads layer ``l - 1``'s output (both
directions concatenated), with dropout between layers in training mode;
``h_n[l * num_directions + d]`` is the last state of layer ``l``, direction
``d``. Packed sequences work too: a padded copy is run, and since a forward
recurrence at step ``t`` depends only on steps ``<= t``, the padding never
reaches a real position; the reverse direction flips each sequence within
its own length, and each sequence's last state is taken at its own length.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from ._backend import check_backend

# A model's recurrent state as a tuple: (h,) for RNN and GRU, (h, c) for LSTM;
# each (num_layers * num_directions, B, H).
States = tuple[Tensor, ...]


class WithBackend:
    """The ``backend`` every fusedseq model takes, shown in its repr."""

    def _init_backend(self, backend: str) -> None:
        self.backend = check_backend(backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend!r}"


class FusedCell(WithBackend):
    """Mixed into a subclass of a torch cell (``class GRUCell(FusedCell,
    torch.nn.GRUCell)``): ``backend="reference"`` is the torch cell's own
    forward; ``"fused"`` checks the input as torch does and runs ``_fused``."""

    _num_states = 1  # tensors in hx: 1, or 2 for LSTMCell (h, c)

    def _fused(self, input: Tensor, hx):
        raise NotImplementedError

    def forward(self, input: Tensor, hx=None):
        """input: ``(B, input_size)`` or ``(input_size,)``; hx: ``(B, hidden_size)``
        (``(hidden_size,)``), a pair of them for LSTMCell, or None for zeros.
        Returns what the torch cell returns, shaped like hx."""
        if check_backend(self.backend) == "reference":
            return super().forward(input, hx)
        states = (None,) * self._num_states if hx is None else (tuple(hx) if self._num_states > 1 else (hx,))
        check_cell_input(type(self).__name__, input, states)
        return self._fused(input, hx)


class FusedRNNBase(WithBackend, torch.nn.RNNBase):
    """``torch.nn.RNNBase`` whose forward runs one fused op per (layer,
    direction). A subclass sets ``_torch_class`` (whose ``forward`` is the
    reference backend) and implements ``_run_direction``; LSTM also overrides
    the conversions between its ``(h, c)`` hx and the ``States`` tuple."""

    _torch_class: type = torch.nn.RNN
    _num_states = 1  # tensors in hx: 1 (h), or 2 for LSTM (h, c)

    # ------------------------------------------------------------- per model --
    def _run_direction(self, seq: Tensor, states: States, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
                       b_hh: Optional[Tensor]) -> tuple[Tensor, States]:
        """seq ``(T, B, I)``, states ``(B, H)`` each -> (every hidden state
        ``(T, B, H)``, every value of each state ``(T, B, H)``)."""
        raise NotImplementedError

    def _states_of(self, hx) -> Optional[States]:
        """The user's hx as a tuple of tensors (None stays None)."""
        return None if hx is None else (hx,)

    def _hx_of(self, states: States):
        """The inverse of ``_states_of``: what forward returns as h_n."""
        return states[0]

    def _check_fused_supported(self) -> None:
        """Raises for configurations the fused backend does not run."""

    # ------------------------------------------------------------------ forward --
    def forward(self, input: Union[Tensor, PackedSequence], hx=None):
        """input: ``(T, B, I)`` (``(B, T, I)`` if batch_first), ``(T, I)``
        unbatched, or a PackedSequence; hx as torch's module takes it, or None
        for zeros. Returns ``(output, h_n)`` exactly as torch's module."""
        if check_backend(self.backend) == "reference":
            return self._torch_class.forward(self, input, hx)  # torch's own path (cuDNN on a GPU)
        self._check_fused_supported()
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)

        name = self._torch_class.__name__
        if input.dim() not in (2, 3):
            raise ValueError(f"{name}: expected input to be 2D or 3D, got {input.dim()}D instead")
        unbatched = input.dim() == 2
        states = self._states_of(hx)
        if states is not None and any(s.dim() != input.dim() for s in states):
            dims = ", ".join(f"{s.dim()}D" for s in states)
            kind = "unbatched 2D" if unbatched else "batched 3D"
            raise ValueError(f"{name}: for {kind} input, hx should also be {input.dim()}D but got ({dims}) "
                             f"tensor{'s' if len(states) > 1 else ''}")
        if unbatched:
            input = input.unsqueeze(0 if self.batch_first else 1)
            states = None if states is None else tuple(s.unsqueeze(1) for s in states)
        x = input.transpose(0, 1) if self.batch_first else input      # (T, B, I)
        if states is None:
            states = self._zero_states(x)
        # torch's own checks, on the caller's layout: torch's messages for wrong sizes and dtypes.
        self.check_forward_args(input, self._hx_of(states), None)

        output, finals = self._run_layers(x, states, lengths=None)    # (T, B, D*H), states (L*D, B, H)
        if self.batch_first:
            output = output.transpose(0, 1)
        if unbatched:
            return output.squeeze(0 if self.batch_first else 1), self._hx_of(tuple(f.squeeze(1) for f in finals))
        return output, self._hx_of(finals)

    # ---------------------------------------------------------------- helpers --
    @property
    def _num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _zero_states(self, x: Tensor) -> States:
        # x: (T, B, I) -> zeros (L*D, B, H) for each state
        zeros = x.new_zeros(self.num_layers * self._num_directions, x.shape[1], self.hidden_size)
        return (zeros,) * self._num_states

    def _layer_weights(self, layer: int, direction: int):
        suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        w_ih = getattr(self, "weight_ih" + suffix)
        w_hh = getattr(self, "weight_hh" + suffix)
        b_ih = getattr(self, "bias_ih" + suffix) if self.bias else None
        b_hh = getattr(self, "bias_hh" + suffix) if self.bias else None
        return w_ih, w_hh, b_ih, b_hh

    def _run_layers(self, x: Tensor, states: States, lengths: Optional[Tensor]) -> tuple[Tensor, States]:
        """x: (T, B, I) (padded when ``lengths`` (B,) is given); states (L*D, B, H) each.
        Returns every hidden state of the last layer, (T, B, D*H), and the final states."""
        T, B = x.shape[0], x.shape[1]
        if lengths is None:
            flip = _reverse_in_time
            last = lambda seq: seq[-1]                               # noqa: E731
        else:
            index = _reversal_index(lengths, T)                      # (T, B)
            flip = lambda seq: _gather_time(seq, index)              # noqa: E731
            last_index = (lengths - 1).clamp(min=0)                  # (B,)
            batch = torch.arange(B, device=x.device)
            # A sequence's last state is at its own length, not at T - 1.
            last = lambda seq: seq[last_index, batch]                # noqa: E731

        layer_input = x
        finals: list[list[Tensor]] = [[] for _ in states]
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self._num_directions):
                k = layer * self._num_directions + direction
                seq = layer_input if direction == 0 else flip(layer_input)
                out, sequences = self._run_direction(seq, tuple(s[k] for s in states),
                                                     *self._layer_weights(layer, direction))
                for f, s in zip(finals, sequences):
                    f.append(last(s).to(out.dtype))
                outputs.append(out if direction == 0 else flip(out))
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        return layer_input, tuple(torch.stack(f) for f in finals)

    def _forward_packed(self, packed: PackedSequence, hx):
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
        states = self._states_of(hx)
        if states is None:
            states = self._zero_states(x)
        self.check_forward_args(packed.data, self._hx_of(states), batch_sizes)
        output, finals = self._run_layers(x, states, lengths)
        data = output[t_index, b_index]                              # (sum(lengths), D*H)
        return PackedSequence(data, batch_sizes, packed.sorted_indices, packed.unsorted_indices), self._hx_of(finals)


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


def check_cell_input(name: str, input: Tensor, hx: tuple[Optional[Tensor], ...]) -> None:
    """torch's cell checks: input and every given state 1D or 2D, and alike."""
    if input.dim() not in (1, 2):
        raise ValueError(f"{name}: expected input to be 1D or 2D, got {input.dim()}D instead")
    for i, h in enumerate(hx):
        if h is not None and h.dim() != input.dim():
            which = "hx" if len(hx) == 1 else f"hx[{i}]"
            raise ValueError(f"{name}: expected {which} to be {input.dim()}D (like input), got {h.dim()}D instead")
