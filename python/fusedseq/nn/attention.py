"""Multi-head self-attention with learned query, key and value projections.

Every position of a sequence turns its vector into three: a *query* (what it
looks for), a *key* (what it offers) and a *value* (what it hands over when
chosen). A query is matched against every key by a dot product; the softmax of
those matches weights the values. Each head does this in its own subspace of
``head_dim = d_model / n_heads`` dimensions, and an output projection mixes
the heads back into ``d_model``.

Grouped-query attention (``n_kv_heads < n_heads``) lets ``n_heads / n_kv_heads``
query heads share one key/value head: fewer key/value parameters and a
smaller key/value cache for the same number of query heads. Both backends
take the grouped K/V as they are (nothing is repeated in memory).

Backends: ``"fused"`` calls :func:`fusedseq.attention` (tiled, online softmax,
the ``N × N`` score matrix never stored); ``"reference"`` calls
``F.scaled_dot_product_attention(..., enable_gqa=True)``. Same parameters, same
numbers up to rounding.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.attention import attention as fused_attention
from ._backend import check_backend


def _check_positive_int(name: str, value) -> int:
    # bool is an int subclass; True heads is a bug, not a count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"SelfAttention: '{name}' must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"SelfAttention: '{name}' must be a positive int, got {value}")
    return value


class SelfAttention(nn.Module):
    """Multi-head self-attention: ``out_proj(attention(q_proj(x), k(x), v(x)))``.

    Parameters (the layout is chosen so a ``torch.nn.MultiheadAttention``'s
    weights copy in by slicing its ``in_proj_weight``):

    * ``q_proj``: ``Linear(d_model, n_heads * head_dim)``: the queries.
    * ``kv_proj``: ``Linear(d_model, 2 * n_kv_heads * head_dim)``: keys and
      values in one matrix product, keys in the first half of the output
      features, values in the second.
    * ``out_proj``: ``Linear(d_model, d_model)``: mixes the heads.

    Args:
        d_model: width of the input and output vectors.
        n_heads: number of query heads; must divide ``d_model``.
        n_kv_heads: number of key/value heads (grouped-query attention);
            must divide ``n_heads``. Default ``n_heads`` (plain multi-head).
        causal: position ``i`` attends only to positions ``j <= i``.
        bias: whether the three projections have biases.
        backend: ``"fused"`` or ``"reference"`` (see the module docstring);
            also a settable attribute.
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: Optional[int] = None, causal: bool = False,
                 bias: bool = True, backend: str = "fused", device=None, dtype=None):
        super().__init__()
        _check_positive_int("d_model", d_model)
        _check_positive_int("n_heads", n_heads)
        if n_kv_heads is None:
            n_kv_heads = n_heads
        _check_positive_int("n_kv_heads", n_kv_heads)
        if d_model % n_heads != 0:
            raise ValueError(f"SelfAttention: 'd_model' ({d_model}) must be divisible by 'n_heads' ({n_heads})")
        if n_heads % n_kv_heads != 0:
            raise ValueError(f"SelfAttention: 'n_heads' ({n_heads}) must be a multiple of "
                             f"'n_kv_heads' ({n_kv_heads})")
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.head_dim = d_model // n_heads
        self.causal = bool(causal)
        self.backend = backend  # validated by the property setter

        factory = {"device": device, "dtype": dtype}
        kv_width = n_kv_heads * self.head_dim
        self.q_proj = nn.Linear(d_model, d_model, bias=bias, **factory)
        self.kv_proj = nn.Linear(d_model, 2 * kv_width, bias=bias, **factory)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias, **factory)

    # ------------------------------------------------------------ backend --
    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, backend: str) -> None:
        self._backend = check_backend(backend)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, "
                f"causal={self.causal}, backend={self.backend!r}")

    # ------------------------------------------------------------ forward --
    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"SelfAttention: 'x' must be a Tensor, got {type(x).__name__}")
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"SelfAttention: 'x' must have shape (B, N, d_model={self.d_model}), "
                             f"got {tuple(x.shape)}")
        if x.shape[1] == 0:
            raise ValueError("SelfAttention: 'x' must have at least one position (N >= 1), got N = 0")

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values in head layout.

        Args:
            x: ``(B, N, d_model)``.

        Returns:
            ``q: (B, n_heads, N, head_dim)``, ``k, v: (B, n_kv_heads, N, head_dim)``
            (strided views of the projections; both backends take them as they are).
        """
        self._check_input(x)
        B, N, _ = x.shape
        q = self.q_proj(x).view(B, N, self.n_heads, self.head_dim).transpose(1, 2)  # (B, Hq, N, D)
        kv = self.kv_proj(x).view(B, N, 2, self.n_kv_heads, self.head_dim)       # (B, N, 2, Hkv, D)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)                                # 2 × (B, Hkv, N, D)
        return q, k, v

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, N, d_model)`` -> ``(B, N, d_model)``."""
        q, k, v = self.project(x)
        if self.backend == "fused":
            heads = fused_attention(q, k, v, causal=self.causal)                  # (B, Hq, N, D)
        else:
            heads = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, enable_gqa=True)
        B, _, N, _ = heads.shape
        merged = heads.transpose(1, 2).reshape(B, N, self.d_model)                # (B, N, d_model)
        return self.out_proj(merged)

    def attention_weights(self, x: Tensor) -> Tensor:
        """The attention probabilities ``softmax(q kᵀ / sqrt(head_dim))``, built
        explicitly as an ``N × N`` matrix per head, for looking at (plots).

        This is **not** the fast path: it stores the whole score matrix, which
        the fused backend never does. Differentiable, whatever the backend.

        Args:
            x: ``(B, N, d_model)``.

        Returns:
            ``(B, n_heads, N, N)``: row ``i`` of head ``h`` is how much query
            ``i`` takes from each key ``j``; rows sum to 1, and ``j > i`` is 0
            when the module is causal.
        """
        q, k, _ = self.project(x)
        # Query head h reads key/value head h // group (the same grouping SDPA's enable_gqa uses).
        group = self.n_heads // self.n_kv_heads
        k = k.repeat_interleave(group, dim=1)                                     # (B, Hq, N, D)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)             # (B, Hq, N, N)
        if self.causal:
            N = x.shape[1]
            future = torch.ones(N, N, dtype=torch.bool, device=x.device).triu(1)  # (N, N), True above the diagonal
            scores = scores.masked_fill(future, float("-inf"))
        return scores.softmax(dim=-1)
