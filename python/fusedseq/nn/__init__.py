"""fusedseq.nn: models built on the fused ops (SPEC §2).

Every model takes ``backend="fused" | "reference"``: the same parameters run
on fusedseq's kernels or through plain PyTorch, and the two agree.
"""
from ._backend import BACKENDS, check_backend
from .rnn import RNN, RNNCell

__all__ = ["BACKENDS", "RNN", "RNNCell", "check_backend"]
