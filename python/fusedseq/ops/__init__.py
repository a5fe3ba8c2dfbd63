"""Python side of the fused ops: fake kernels, autograd, public functions.

The schemas live in csrc/bindings/library.cpp (declared once); this package
adds what torch needs around them: a fake (meta) kernel per op so that
``torch.compile(fullgraph=True)`` can trace it, and autograd whose backward is
itself a fused op. Importing it registers both.
"""
from .attention import attention, attention_varlen, attention_with_lse
from .gru import gru, gru_cell
from .lstm import lstm, lstm_cell
from .rnn import rnn, rnn_cell

__all__ = ["attention", "attention_varlen", "attention_with_lse", "gru", "gru_cell", "lstm", "lstm_cell", "rnn",
           "rnn_cell"]
