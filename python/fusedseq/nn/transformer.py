"""A decoder-only transformer language model (GPT style), on fused attention.

    idx (B, T) ──token embedding + position embedding──> x (B, T, d_model)
      └─ n_layers × TransformerBlock:  x = x + attn(ln1(x));  x = x + mlp(ln2(x))
      └─ final LayerNorm ──> head (the token embedding, transposed) ──> logits (B, T, V)

The output head shares its weight with the token embedding (weight tying): a
word is read and written with the same vector, which halves the embedding
parameters and helps small models. Every block's attention is causal, so the
logits at position ``t`` depend only on tokens ``0..t`` and one forward pass
trains all ``T`` next-token predictions at once.

``backend="fused"`` runs attention on :func:`fusedseq.attention`,
``"reference"`` on PyTorch's ``scaled_dot_product_attention``; the rest
(embeddings, LayerNorm, MLP) is ordinary PyTorch in both.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._backend import check_backend
from .attention import SelfAttention


def _check_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"TransformerConfig: '{name}' must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"TransformerConfig: '{name}' must be >= {minimum}, got {value}")


@dataclass
class TransformerConfig:
    """Sizes and options of a :class:`TransformerLM`.

    ``n_kv_heads=None`` means ``n_heads`` (plain multi-head attention) and
    ``d_ff=None`` means ``4 * d_model``; both are filled in by
    ``__post_init__``, which also validates every field.

    ``dropout`` is applied to the summed embeddings and to each residual
    branch's output (after the attention's output projection and after the
    MLP). ``attention_dropout`` drops attention probabilities (SDPA's
    ``dropout_p``; the fused kernel regenerates its mask in the backward
    rather than storing it). ``sliding_window``: each position attends to
    itself and the ``sliding_window - 1`` positions before it (Mistral-style);
    None: to every earlier position.
    """

    vocab_size: int
    context_length: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: Optional[int] = None
    d_ff: Optional[int] = None
    dropout: float = 0.0
    bias: bool = True
    backend: str = "fused"
    attention_dropout: float = 0.0
    sliding_window: Optional[int] = None

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads"):
            _check_int(name, getattr(self, name))
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        _check_int("n_kv_heads", self.n_kv_heads)
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        _check_int("d_ff", self.d_ff)
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"TransformerConfig: 'd_model' ({self.d_model}) must be divisible by "
                             f"'n_heads' ({self.n_heads})")
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(f"TransformerConfig: 'n_heads' ({self.n_heads}) must be a multiple of "
                             f"'n_kv_heads' ({self.n_kv_heads})")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise TypeError(f"TransformerConfig: 'dropout' must be a float, got {type(self.dropout).__name__}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TransformerConfig: 'dropout' must be in [0, 1), got {self.dropout}")
        self.dropout = float(self.dropout)
        a = self.attention_dropout
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= a < 1.0:
            raise ValueError(f"TransformerConfig: 'attention_dropout' must be a float in [0, 1), got {a!r}")
        self.attention_dropout = float(a)
        if self.sliding_window is not None:
            _check_int("sliding_window", self.sliding_window)
        if not isinstance(self.bias, bool):
            raise TypeError(f"TransformerConfig: 'bias' must be a bool, got {type(self.bias).__name__}")
        check_backend(self.backend)


class MLP(nn.Module):
    """The position-wise feed-forward network: ``d_model -> d_ff -> GELU -> d_model``."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.act = nn.GELU()
        self.proj = nn.Linear(config.d_ff, config.d_model, bias=config.bias)  # a residual projection
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, T, d_model)`` -> ``(B, T, d_model)``."""
        return self.dropout(self.proj(self.act(self.fc(x))))


class TransformerBlock(nn.Module):
    """Pre-norm decoder block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``,
    with causal self-attention. Normalising inside the branch leaves the
    residual stream an identity path from input to output, which is what
    keeps deep stacks trainable without warm-up tricks."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model, bias=config.bias)
        window = None if config.sliding_window is None else (config.sliding_window - 1, 0)
        self.attn = SelfAttention(config.d_model, config.n_heads, config.n_kv_heads, is_causal=True,
                                  bias=config.bias, backend=config.backend, dropout=config.attention_dropout,
                                  window=window)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.ln2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = MLP(config)

    @property
    def backend(self) -> str:
        return self.attn.backend

    @backend.setter
    def backend(self, backend: str) -> None:
        self.attn.backend = backend

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        """``x: (B, T, d_model)`` -> ``(B, T, d_model)``; ``attn_mask`` as in :meth:`SelfAttention.forward`."""
        x = x + self.attn_dropout(self.attn(self.ln1(x), attn_mask))
        x = x + self.mlp(self.ln2(x))
        return x


class TransformerLM(nn.Module):
    """Decoder-only transformer language model (see the module docstring).

    Initialisation follows GPT-2: every Linear and Embedding weight drawn from
    ``N(0, 0.02²)``, biases zero, LayerNorms at identity, and the two
    projections that write into the residual stream (attention output, MLP
    output) scaled by ``1/sqrt(2 * n_layers)`` so the stream's variance does
    not grow with depth. All draws come from the global RNG, in a fixed
    order: ``torch.manual_seed(s)`` before construction reproduces a model.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"TransformerLM: 'config' must be a TransformerConfig, got {type(config).__name__}")
        # A private copy: set_backend() updates it without touching a config other models share.
        self.config = dataclasses.replace(config)
        c = self.config
        self.token_embedding = nn.Embedding(c.vocab_size, c.d_model)
        self.position_embedding = nn.Embedding(c.context_length, c.d_model)
        self.embedding_dropout = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList([TransformerBlock(c) for _ in range(c.n_layers)])
        self.ln_f = nn.LayerNorm(c.d_model, bias=c.bias)
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.head.weight = self.token_embedding.weight  # tied: the same Parameter, (V, d_model)
        self._init_weights()

    def _init_weights(self) -> None:
        std = 0.02
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if module is self.head:
                continue  # its weight is the token embedding's, drawn below
            if isinstance(module, nn.Linear):
                is_residual = name.endswith("attn.out_proj") or name.endswith("mlp.proj")
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if is_residual else std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)

    # ------------------------------------------------------------ backend --
    @property
    def backend(self) -> str:
        return self.config.backend

    @backend.setter
    def backend(self, backend: str) -> None:
        check_backend(backend)
        self.config.backend = backend
        for block in self.blocks:
            block.backend = backend

    def set_backend(self, backend: str) -> "TransformerLM":
        """Switch every attention layer to ``backend``; returns ``self``."""
        self.backend = backend
        return self

    def num_parameters(self) -> int:
        """Number of trainable scalars, the tied embedding/head counted once."""
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------ forward --
    def _check_idx(self, idx: Tensor, name: str = "idx") -> None:
        if not isinstance(idx, Tensor):
            raise TypeError(f"TransformerLM: '{name}' must be a Tensor, got {type(idx).__name__}")
        if idx.dtype != torch.long:
            raise TypeError(f"TransformerLM: '{name}' must be a torch.long tensor of token ids, got {idx.dtype}")
        if idx.dim() != 2:
            raise ValueError(f"TransformerLM: '{name}' must have shape (B, T), got {tuple(idx.shape)}")
        if idx.shape[1] == 0:
            raise ValueError(f"TransformerLM: '{name}' must hold at least one token (T >= 1), got T = 0")
        if idx.shape[1] > self.config.context_length:
            raise ValueError(f"TransformerLM: '{name}' has T = {idx.shape[1]} tokens, more than "
                             f"context_length = {self.config.context_length}")
        # A data-dependent check (one host sync); skipped while torch.compile traces.
        if not torch.compiler.is_compiling() and idx.numel() > 0:
            lo, hi = idx.min().item(), idx.max().item()
            if lo < 0 or hi >= self.config.vocab_size:
                raise ValueError(f"TransformerLM: '{name}' holds token ids in [{lo}, {hi}], outside "
                                 f"[0, vocab_size = {self.config.vocab_size})")

    def forward(self, idx: Tensor, targets: Optional[Tensor] = None,
                attention_mask: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """Next-token logits, and the loss when ``targets`` are given.

        Args:
            idx: ``(B, T)`` long token ids, ``1 <= T <= context_length``.
            targets: ``(B, T)`` long, the token that follows each position
                (usually ``idx`` shifted left by one); ``-1`` marks a position
                to ignore (padding).
            attention_mask: ``(B, T)``, 1 (or True) for a real token and 0 for
                padding, as Hugging Face's: padding keys are hidden from every
                query, and positions count real tokens only, so a left-padded
                sequence gets the logits it gets unpadded.

        Returns:
            ``logits: (B, T, vocab_size)`` and the mean cross-entropy over the
            non-ignored positions (a scalar), or ``None`` without targets.
        """
        self._check_idx(idx)
        B, T = idx.shape
        key_mask = None
        if attention_mask is None:
            positions = torch.arange(T, device=idx.device)                             # (T,)
        else:
            if not isinstance(attention_mask, Tensor) or attention_mask.shape != idx.shape:
                raise ValueError(f"TransformerLM: 'attention_mask' must be a (B, T) tensor like 'idx' "
                                 f"{tuple(idx.shape)}, got {getattr(attention_mask, 'shape', attention_mask)}")
            real = attention_mask.to(torch.bool)                                        # (B, T)
            positions = (real.long().cumsum(1) - 1).clamp_min(0)                        # (B, T)
            key_mask = real[:, None, None, :]                                           # (B, 1, 1, T)
        x = self.token_embedding(idx) + self.position_embedding(positions)             # (B, T, d_model)
        x = self.embedding_dropout(x)
        for block in self.blocks:
            x = block(x, key_mask)                                                      # (B, T, d_model)
        logits = self.head(self.ln_f(x))                                                # (B, T, V)
        if targets is None:
            return logits, None
        if not isinstance(targets, Tensor) or targets.dtype != torch.long:
            raise TypeError("TransformerLM: 'targets' must be a torch.long tensor of token ids")
        if targets.shape != idx.shape:
            raise ValueError(f"TransformerLM: 'targets' must have the shape of 'idx' {tuple(idx.shape)}, "
                             f"got {tuple(targets.shape)}")
        loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T), ignore_index=-1)
        return logits, loss

    def attention_maps(self, idx: Tensor) -> list[Tensor]:
        """Every layer's attention probabilities on ``idx``, for plotting.

        Runs the model in eval mode (no dropout) without gradients, and asks
        each block's attention for its explicit weights
        (:meth:`SelfAttention.attention_weights`, not the fast path).

        Args:
            idx: ``(B, T)`` long token ids.

        Returns:
            ``n_layers`` tensors ``(B, n_heads, T, T)``: query positions
            (rows) against key positions (columns); causal, rows sum to 1.
        """
        self._check_idx(idx)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                T = idx.shape[1]
                x = self.token_embedding(idx) + self.position_embedding(torch.arange(T, device=idx.device))
                maps = []
                for block in self.blocks:
                    maps.append(block.attn.attention_weights(block.ln1(x)))           # (B, Hq, T, T)
                    x = block(x)
        finally:
            self.train(was_training)
        return maps

    # ----------------------------------------------------------- generate --
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: Optional[int] = None,
                 generator: Optional[torch.Generator] = None) -> Tensor:
        """Extend ``idx`` by sampling one token at a time.

        Each step feeds the last ``context_length`` tokens, divides the final
        position's logits by ``temperature``, keeps the ``top_k`` most likely
        tokens (all when None), and draws from the softmax with
        ``torch.multinomial``. Runs without gradients in eval mode and puts the
        model back in the mode it was in.

        Args:
            idx: ``(B, T)`` long, the prompt (``T >= 1``; longer prompts are
                cropped to the last ``context_length`` tokens).
            max_new_tokens: how many tokens to add (>= 0).
            temperature: > 0; below 1 sharpens, above 1 flattens.
            top_k: sample among the ``top_k`` best tokens, ``1 <= top_k <= vocab_size``
                (``top_k=1`` is greedy decoding).
            generator: the random source for the draws (on ``idx``'s device);
                a seeded one makes the output reproducible.

        Returns:
            ``(B, T + max_new_tokens)``: the prompt followed by the new tokens.
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise TypeError(f"TransformerLM.generate: 'max_new_tokens' must be an int, "
                            f"got {type(max_new_tokens).__name__}")
        if max_new_tokens < 0:
            raise ValueError(f"TransformerLM.generate: 'max_new_tokens' must be >= 0, got {max_new_tokens}")
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
            raise ValueError(f"TransformerLM.generate: 'temperature' must be a number > 0, got {temperature!r}")
        V = self.config.vocab_size
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int):
                raise TypeError(f"TransformerLM.generate: 'top_k' must be an int or None, got {type(top_k).__name__}")
            if not 1 <= top_k <= V:
                raise ValueError(f"TransformerLM.generate: 'top_k' must be in [1, vocab_size = {V}], got {top_k}")
        if not isinstance(idx, Tensor) or idx.dim() != 2 or idx.shape[1] == 0:
            raise ValueError("TransformerLM.generate: 'idx' must be a (B, T) tensor of token ids with T >= 1, "
                             f"got {tuple(idx.shape) if isinstance(idx, Tensor) else type(idx).__name__}")

        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for _ in range(max_new_tokens):
                    context = idx[:, -self.config.context_length:]                       # (B, <= context_length)
                    logits, _ = self(context)
                    logits = logits[:, -1, :] / temperature                               # (B, V)
                    if top_k is not None and top_k < V:
                        kth_best = torch.topk(logits, top_k, dim=-1).values[:, -1:]      # (B, 1)
                        logits = logits.masked_fill(logits < kth_best, float("-inf"))
                    probs = logits.softmax(dim=-1)                                        # (B, V)
                    next_token = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
                    idx = torch.cat([idx, next_token], dim=1)
        finally:
            self.train(was_training)
        return idx
