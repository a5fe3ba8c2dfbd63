"""Pieces the RNN cell and RNN sequence cases share: the weights, and the
PyTorch modules that hold copies of them."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ..case import leaf, uniform_tensor
from ..flops import FWD


def recurrent_weights(I: int, H: int, dtype: torch.dtype, device: torch.device,
                      generator: torch.Generator) -> list[Tensor]:
    """``[w_ih (H, I), w_hh (H, H), b_ih (H,), b_hh (H,)]`` as leaves,
    initialised like ``nn.RNN`` (uniform ±1/sqrt(H))."""
    bound = 1.0 / math.sqrt(H)
    shapes = [(H, I), (H, H), (H,), (H,)]
    return [leaf(uniform_tensor(s, bound, dtype, device, generator)) for s in shapes]


def copy_weights(module: nn.Module, names: Sequence[str], weights: Sequence[Tensor]) -> list[Tensor]:
    """Copies ``weights`` into the module's parameters ``names`` (in place, so
    that cuDNN's flattened weight buffer stays valid); returns the parameters."""
    params = [getattr(module, n) for n in names]
    with torch.no_grad():
        for p, w in zip(params, weights):
            p.copy_(w)
    return params


def set_train_mode(module: nn.Module):
    """A ``prepare`` hook: ``eval()`` for forward rows (cuDNN's inference
    kernels, nothing saved), ``train()`` for forward+backward rows."""
    def prepare(mode: str) -> None:
        module.train(mode != FWD)
    return prepare


# The RNN cell and the sequence are benchmarked in the same dtypes.
def default_dtypes(device: torch.device) -> list[torch.dtype]:
    if device.type == "cuda":
        return [torch.float32, torch.float16, torch.bfloat16]
    return [torch.float32]
