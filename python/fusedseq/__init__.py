"""fusedseq: fused C++/CUDA kernels for RNNs and attention, as torch ops.

    fusedseq.rnn_cell(x, h, w_ih, w_hh, ...)        one fused Elman step
    fusedseq.rnn(x, h0, w_ih, w_hh, ...)            the whole recurrence
    fusedseq.attention(q, k, v, causal, scale)      softmax(QKᵀ·scale)V, tiled
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
from .ops import attention, rnn, rnn_cell
from .ops.attention import attention_with_lse

__version__ = _C.build_info()["version"]

__all__ = ["attention", "attention_with_lse", "build_info", "reference", "rnn", "rnn_cell"]
