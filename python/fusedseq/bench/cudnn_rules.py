"""Which cuDNN RNN algorithm ``torch.nn.RNN`` picks for a shape on CUDA.

cuDNN's persistent algorithms keep the recurrent weights on chip across
steps, the same idea as fusedseq's persistent kernel, so whether one applies
decides what "beating cuDNN" means for a shape. PyTorch chooses the
algorithm itself in ``get_algo`` (aten/src/ATen/native/cudnn/RNN.cpp); this
module restates that rule (PyTorch 2.x, cuDNN ≥ 8.2.1) for a single-layer,
unidirectional, unpacked tanh/relu RNN:

1. ``PERSIST_STATIC_SMALL_H`` ("small_h"): any dtype except float64, compute
   capability ≥ 6.0, and ``H ≤ 384`` for the forward pass, ``H ≤ 256`` for
   the backward pass (the forward of a training step is chosen with the
   forward rule, the backward with the backward rule).
2. else ``PERSIST_STATIC`` ("static"): float16 only, ``H ≤ 1024``,
   ``H % 128 == 0`` and ``I % 128 == 0``, and the device rule: compute
   capability 7.0 with batch limits, or ≥ 8.0 (not x.6) with ≥ 98 SMs and
   ``B % 8 == 0``, ``B ≤ 128``, and not (``B ≥ 96`` and ``H ≥ 896``).
3. else ``STANDARD`` ("std"): one cuBLAS-like call per step.

This is a prediction from PyTorch's source, not a query of what cuDNN ran
(PyTorch exposes no such query); it holds for unpacked input when
``torch.cudnn_is_acceptable(x)`` is true (cuDNN enabled, and a dtype this
torch sends to cuDNN: some versions keep bfloat16 off cuDNN). When it is
false, ``nn.RNN`` runs ATen's per-step loop and the cell reads "no cudnn".
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

STANDARD, SMALL_H, STATIC, NO_CUDNN = "std", "small_h", "static", "no cudnn"


@dataclass(frozen=True)
class DeviceTraits:
    """The device properties the rule reads."""
    major: int
    minor: int
    sm_count: int

    @classmethod
    def of(cls, device: torch.device) -> "DeviceTraits":
        p = torch.cuda.get_device_properties(device)
        return cls(p.major, p.minor, p.multi_processor_count)


def _small_h(H: int, backward: bool, dev: DeviceTraits) -> bool:
    return dev.major >= 6 and H <= (256 if backward else 384)


def _static_common(I: int, H: int) -> bool:
    return H <= 1024 and H % 128 == 0 and I % 128 == 0


def _static_device(T: int, B: int, H: int, dev: DeviceTraits) -> bool:
    if dev.major == 7:
        if dev.minor == 5:
            return False  # Turing excluded
        return (((B % 16 == 0 and B not in (80, 112)) or B == 8)
                and ((T >= 40 and B <= 128) or (T >= 20 and B <= 96) or (T >= 10 and B <= 32)))
    if dev.major >= 8 and dev.sm_count >= 98 and dev.minor != 6:
        return B % 8 == 0 and B <= 128 and (B < 96 or H < 896)
    return False


def cudnn_rnn_algo(T: int, B: int, I: int, H: int, dtype: torch.dtype, backward: bool,
                   dev: DeviceTraits) -> str:
    """The algorithm PyTorch asks cuDNN for (see module doc): "small_h",
    "static" or "std"."""
    if dtype == torch.float64:
        return STANDARD
    if _small_h(H, backward, dev):
        return SMALL_H
    if dtype == torch.float16 and _static_common(I, H) and _static_device(T, B, H, dev):
        return STATIC
    return STANDARD


def cudnn_persistence(T: int, B: int, I: int, H: int, dtype: torch.dtype, mode: str,
                      dev: DeviceTraits, uses_cudnn: bool = True) -> str:
    """Table cell: the forward algorithm, and for a forward+backward row
    ``"<forward>/<backward>"``, e.g. ``"small_h/std"`` at H = 384;
    "no cudnn" when ``uses_cudnn`` is false (see module doc)."""
    if not uses_cudnn:
        return NO_CUDNN
    fwd = cudnn_rnn_algo(T, B, I, H, dtype, backward=False, dev=dev)
    if mode == "fwd":
        return fwd
    return f"{fwd}/{cudnn_rnn_algo(T, B, I, H, dtype, backward=True, dev=dev)}"
