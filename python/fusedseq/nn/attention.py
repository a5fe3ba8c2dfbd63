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

A mask (``attn_mask``: padding, or any pattern), causality and a sliding
window (``window``) say which keys a position may see; ``dropout`` drops
attention probabilities in training. The names and meanings are those of
``F.scaled_dot_product_attention``.

Backends: ``"fused"`` calls :func:`fusedseq.attention` (tiled, online softmax,
the ``N × N`` score matrix never stored, the mask read where it lies);
``"reference"`` calls ``F.scaled_dot_product_attention(..., enable_gqa=True)``
with causality and the window folded into one explicit mask. Same parameters,
same numbers up to rounding (dropout aside: each backend draws its own mask).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import reference
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
        is_causal: position ``i`` attends only to positions ``j <= i``
            (``causal``: its older name, keyword only).
        bias: whether the three projections have biases.
        backend: ``"fused"`` or ``"reference"`` (see the module docstring);
            also a settable attribute.
        dropout: probability of dropping an attention weight in training
            (``nn.MultiheadAttention``'s ``dropout``); none in eval mode.
        window: ``(left, right)``: position ``i`` sees ``i - left .. i + right``
            only (-1: unbounded), e.g. ``(4095, 0)`` with ``is_causal`` for a
            Mistral-style sliding window of 4096.
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: Optional[int] = None, is_causal: bool = False,
                 bias: bool = True, backend: str = "fused", device=None, dtype=None, *, dropout: float = 0.0,
                 window: Optional[tuple[int, int]] = None, causal: Optional[bool] = None):
        super().__init__()
        if causal is not None:
            is_causal = causal
        if not isinstance(is_causal, bool):
            raise TypeError(f"SelfAttention: 'is_causal' must be a bool, got {type(is_causal).__name__}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"SelfAttention: 'dropout' must be a float in [0, 1), got {dropout!r}")
        if window is not None:
            if (not isinstance(window, (tuple, list)) or len(window) != 2
                    or not all(isinstance(w, int) and not isinstance(w, bool) and w >= -1 for w in window)):
                raise ValueError(f"SelfAttention: 'window' must be (left, right) ints >= -1, got {window!r}")
            window = (int(window[0]), int(window[1]))
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
        self.is_causal = is_causal
        self.dropout = float(dropout)
        self.window = window
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

    @property
    def causal(self) -> bool:
        """The older name of :attr:`is_causal`."""
        return self.is_causal

    def extra_repr(self) -> str:
        extra = f", dropout={self.dropout}" if self.dropout else ""
        extra += f", window={self.window}" if self.window is not None else ""
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, "
                f"is_causal={self.is_causal}, backend={self.backend!r}{extra}")

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

    def _fused_window(self, attn_mask: Optional[Tensor]) -> tuple[bool, Optional[tuple[int, int]]]:
        """(is_causal, window) for fusedseq.attention. SDPA (and so the op)
        refuses a mask together with is_causal; causality is then the window's
        right side set to 0, which the kernel skips just as well."""
        if not (self.is_causal and attn_mask is not None):
            return self.is_causal, self.window
        left, right = self.window if self.window is not None else (-1, -1)
        return False, (left, 0 if right < 0 else min(right, 0))

    def _reference_mask(self, attn_mask: Optional[Tensor], N: int, device) -> Optional[Tensor]:
        """attn_mask with causality and the window folded in, for SDPA."""
        if not self.is_causal and self.window is None:
            return attn_mask
        visible = reference.attention_visible(N, N, self.is_causal, self.window, device=device)  # (N, N)
        if attn_mask is None:
            return visible
        if attn_mask.dtype == torch.bool:
            return attn_mask & visible
        return attn_mask.masked_fill(~visible, float("-inf"))

    def _check_mask(self, attn_mask) -> None:
        if attn_mask is not None and not isinstance(attn_mask, Tensor):
            raise TypeError(f"SelfAttention: 'attn_mask' must be a Tensor or None, got {type(attn_mask).__name__}")

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        """``x: (B, N, d_model)`` -> ``(B, N, d_model)``.

        ``attn_mask``: broadcastable to ``(B, n_heads, N, N)``, bool (True =
        may attend) or additive, e.g. ``(B, 1, 1, N)`` to hide padding keys;
        combined with ``is_causal`` and ``window``. A position that may see
        no key at all gets zeros from the attention."""
        self._check_mask(attn_mask)
        q, k, v = self.project(x)
        dropout_p = self.dropout if self.training else 0.0
        if self.backend == "fused":
            is_causal, window = self._fused_window(attn_mask)
            heads = fused_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                                    window=window)                                # (B, Hq, N, D)
        else:
            mask = self._reference_mask(attn_mask, x.shape[1], x.device)
            heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, enable_gqa=True)
        B, _, N, _ = heads.shape
        merged = heads.transpose(1, 2).reshape(B, N, self.d_model)                # (B, N, d_model)
        return self.out_proj(merged)

    def attention_weights(self, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        """The attention probabilities ``softmax(q kᵀ / sqrt(head_dim) + mask)``,
        built explicitly as an ``N × N`` matrix per head, for looking at (plots).

        This is **not** the fast path: it stores the whole score matrix, which
        the fused backend never does. Differentiable, whatever the backend; no
        dropout.

        Args:
            x: ``(B, N, d_model)``.
            attn_mask: as in :meth:`forward`.

        Returns:
            ``(B, n_heads, N, N)``: row ``i`` of head ``h`` is how much query
            ``i`` takes from each key ``j``; rows sum to 1 (0 for a row that may
            see no key), and hidden keys (the future when causal) get 0.
        """
        self._check_mask(attn_mask)
        q, k, _ = self.project(x)
        # Query head h reads key/value head h // group (the same grouping SDPA's enable_gqa uses).
        scores = reference.attention_scores(q, k, attn_mask, self.is_causal, 1.0 / math.sqrt(self.head_dim),
                                            self.window)                          # (B, Hq, N, N)
        empty = (scores == float("-inf")).all(dim=-1, keepdim=True)
        return scores.masked_fill(empty, 0.0).softmax(dim=-1).masked_fill(empty, 0.0)
