"""What PyTorch's ``scaled_dot_product_attention`` offers on a device.

SDPA dispatches to one of several backends (flash, memory-efficient, cuDNN,
math); forcing one with ``torch.nn.attention.sdpa_kernel([backend])`` lets
the benchmark compare against each. Which backends can exist depends on the
device; whether one accepts given inputs (dtype, head dim, causal, GQA) is
only known by trying, so the engine turns "no kernel" errors into skipped
rows.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch.nn.attention import SDPBackend

# Backends worth forcing, per device type. CPU builds only implement MATH and
# a flash-style kernel; EFFICIENT/CUDNN there always fail, so they are not
# listed (OVERRIDEABLE is for out-of-tree devices).
_BACKENDS = {
    "cpu": ("FLASH_ATTENTION", "MATH"),
    "cuda": ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"),
}


def backends_for(device: torch.device) -> list[SDPBackend]:
    """SDPA backends that exist in this torch for ``device``'s type."""
    names = _BACKENDS.get(device.type, ("MATH",))
    return [getattr(SDPBackend, n) for n in names if hasattr(SDPBackend, n)]


def priority_order() -> Optional[list[str]]:
    """``torch._C._get_sdp_priority_order()`` as backend names (the order in
    which SDPA tries backends), or None where this torch has no such call."""
    getter = getattr(torch._C, "_get_sdp_priority_order", None)
    if getter is None:
        return None
    try:
        return [_backend_name(int(i)) for i in getter()]
    except Exception:  # noqa: BLE001  private API: never fail the run over it
        return None


def default_choice(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                   enable_gqa: bool) -> Optional[str]:
    """Which backend plain SDPA would pick for these inputs
    (``torch._fused_sdp_choice``, private), or None if unknown."""
    choose = getattr(torch, "_fused_sdp_choice", None)
    if choose is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # CUDA explains each rejected backend as a warning
            kwargs = {"is_causal": causal}
            if enable_gqa:
                kwargs["enable_gqa"] = True
            return _backend_name(int(choose(q, k, v, **kwargs)))
    except Exception:  # noqa: BLE001
        return None


def _backend_name(index: int) -> str:
    for b in SDPBackend.__members__.values():
        if int(b) == index:
            return b.name
    return str(index)
