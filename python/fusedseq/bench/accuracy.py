"""Error of an implementation's result against the float64 reference.

Two numbers per row, because each hides something the other shows:
- ``max_abs``: the largest elementwise ``|y - y_ref|``: catches one bad tile
  or a wrong tail row that a norm would average away.
- ``rel``: ``‖y - y_ref‖₂ / ‖y_ref‖₂``: scale-free, comparable across shapes
  and dtypes (≈ unit roundoff × growth for a correct kernel).

A result can be several tensors (the gradients of a forward+backward row);
then the worst of each is reported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor


@dataclass(frozen=True)
class Error:
    max_abs: float
    rel: float


def tensor_error(got: Tensor, ref: Tensor) -> Error:
    """Error of ``got`` against the float64 ``ref`` (same number of elements;
    ``got`` is reshaped, e.g. nn.RNN's ``(1, B, H)`` h0 against ``(B, H)``)."""
    diff = got.detach().to(torch.float64).reshape(ref.shape) - ref
    ref_norm = torch.linalg.vector_norm(ref).item()
    diff_norm = torch.linalg.vector_norm(diff).item()
    max_abs = diff.abs().max().item() if diff.numel() else 0.0
    if ref_norm == 0.0:
        rel = 0.0 if diff_norm == 0.0 else math.inf
    else:
        rel = diff_norm / ref_norm
    # NaN anywhere must show as NaN, not vanish in max().
    if torch.isnan(diff).any().item():
        max_abs, rel = math.nan, math.nan
    return Error(max_abs=max_abs, rel=rel)


def worst_error(got: Sequence[Tensor], ref: Sequence[Tensor]) -> Error:
    """Worst ``max_abs`` and worst ``rel`` over pairs of tensors."""
    if len(got) != len(ref):
        raise ValueError(f"expected {len(ref)} result tensors, got {len(got)}")
    errors = [tensor_error(g, r) for g, r in zip(got, ref)]
    return Error(max_abs=_nan_max(e.max_abs for e in errors), rel=_nan_max(e.rel for e in errors))


def _nan_max(values) -> float:
    values = list(values)
    return math.nan if any(math.isnan(v) for v in values) else max(values)
