"""fusedseq.nn: models built on the fused ops (SPEC §2).

    RNN, RNNCell             drop-ins for torch.nn.RNN / torch.nn.RNNCell
    LSTM, LSTMCell           drop-ins for torch.nn.LSTM / torch.nn.LSTMCell
    GRU, GRUCell             drop-ins for torch.nn.GRU / torch.nn.GRUCell
    SelfAttention            learned q/k/v projections, heads, grouped-query, causal
    TransformerConfig,       a decoder-only language model (pre-norm blocks,
    TransformerBlock,        tied embeddings, generate)
    TransformerLM
    NextWordModel            word embeddings learned by next-word prediction

Every model takes ``backend="fused" | "reference"``: the same parameters run
on fusedseq's kernels or through plain PyTorch (torch.nn.RNN/LSTM/GRU's paths,
scaled_dot_product_attention), and the two agree.
"""
from ._backend import BACKENDS, check_backend
from .attention import SelfAttention
from .embedding import NextWordModel
from .gru import GRU, GRUCell
from .lstm import LSTM, LSTMCell
from .rnn import RNN, RNNCell
from .transformer import TransformerBlock, TransformerConfig, TransformerLM

__all__ = ["BACKENDS", "GRU", "GRUCell", "LSTM", "LSTMCell", "NextWordModel", "RNN", "RNNCell", "SelfAttention",
           "TransformerBlock", "TransformerConfig", "TransformerLM", "check_backend"]
