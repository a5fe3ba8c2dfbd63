"""fusedseq: fused C++/CUDA kernels for RNNs and attention, as torch ops.

    fusedseq.rnn_cell(x, h, w_ih, w_hh, ...)        one fused Elman step
    fusedseq.rnn(x, h0, w_ih, w_hh, ...)            the whole recurrence
    fusedseq.lstm_cell / lstm(x, (h, c), ...)       fused LSTM step / sequence
    fusedseq.gru_cell / gru(x, h, ...)              fused GRU step / sequence
    fusedseq.attention(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa, window=)
                                                    softmax(QKᵀ·scale + mask)V, tiled; SDPA's signature
    fusedseq.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, ...)
                                                    packed variable-length sequences (FlashAttention's varlen)
    fusedseq.reference                              pure-PyTorch references
    fusedseq.build_info()                           what this build contains

Every op is also ``torch.ops.fusedseq.<name>``, with fake kernels (so
``torch.compile(fullgraph=True)`` traces it), autograd through fused backward
ops, and autocast rules.
"""
import torch  # noqa: F401  (must load before the extension: it registers torch ops)

from . import _C  # noqa: F401  registers torch.ops.fusedseq.*
from . import reference
from ._build import build_info
from .ops import attention, attention_varlen, attention_with_lse, gru, gru_cell, lstm, lstm_cell, rnn, rnn_cell

__version__ = _C.build_info()["version"]

__all__ = ["attention", "attention_varlen", "attention_with_lse", "build_info", "gru", "gru_cell", "lstm", "lstm_cell",
           "reference", "rnn", "rnn_cell"]
