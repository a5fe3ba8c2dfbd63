"""fusedseq: fused C++/CUDA kernels for RNNs and attention, as torch ops."""
import torch  # noqa: F401  (must load before the extension: it registers torch ops)

from . import _C  # noqa: F401  registers torch.ops.fusedseq.*
