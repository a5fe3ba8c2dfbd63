"""The ``backend`` switch every fusedseq model takes.

``"fused"`` runs the model on fusedseq's kernels (``torch.ops.fusedseq.*``);
``"reference"`` runs the same parameters through plain PyTorch (``nn.RNN``'s
functional path, ``F.scaled_dot_product_attention``). The two must agree to
rounding: that is how a model's use of the fused ops is tested.
"""
from __future__ import annotations

BACKENDS = ("fused", "reference")


def check_backend(backend: str) -> str:
    """Return ``backend`` if it is one of :data:`BACKENDS`, else raise ValueError."""
    if backend not in BACKENDS:
        raise ValueError(f"fusedseq.nn: backend must be one of {BACKENDS}, got {backend!r}")
    return backend
