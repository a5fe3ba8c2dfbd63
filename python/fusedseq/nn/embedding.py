"""Word embeddings learned by next-word prediction.

A small recurrent network reads the previous words and predicts the next:

    idx (B, T) ──Embedding──> (B, T, embed_dim) ──RNN──> h (B, T, hidden_size) ──Linear──> logits (B, T, V)

Nothing asks the network to place words anywhere in particular, yet words
that are followed by the same words (in a grammar: words of one category)
must push the output layer the same way, so the network learns to give them
similar hidden states. A word's *embedding* is therefore taken where the
teaching material takes it: the activation of the layer before the output
when the network reads that word, i.e. the RNN hidden state after reading
just that word from a zero state. Similar words point in similar directions,
and :meth:`NextWordModel.most_similar` ranks words by cosine similarity.

The vocabulary travels with the model: it is part of the module's state
(``get_extra_state``), so a saved ``state_dict`` knows which row is which word.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._backend import check_backend
from .rnn import RNN


class NextWordModel(nn.Module):
    """Embedding -> one-layer Elman RNN -> Linear, trained to predict the next word.

    Args:
        vocab: the words, one per token id (``vocab[i]`` is id ``i``); distinct
            non-empty strings. Kept as ``self.vocab`` and in the state dict.
        embed_dim: width of the input word vectors.
        hidden_size: width of the RNN state, and so of the learned embeddings.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        backend: ``"fused"`` (the RNN runs on :func:`fusedseq.rnn`) or
            ``"reference"`` (``torch.nn.RNN``'s own path); a settable attribute.

    Submodules: ``token_embedding`` (``nn.Embedding(V, embed_dim)``), ``rnn``
    (:class:`fusedseq.nn.rnn.RNN`, ``batch_first=True``, parameter names as in
    ``torch.nn.RNN``) and ``head`` (``nn.Linear(hidden_size, V)``).
    """

    def __init__(self, vocab: Sequence[str], embed_dim: int = 32, hidden_size: int = 64,
                 nonlinearity: str = "tanh", backend: str = "fused"):
        super().__init__()
        words = self._check_vocab(vocab)
        for name, value in (("embed_dim", embed_dim), ("hidden_size", hidden_size)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"NextWordModel: '{name}' must be an int, got {type(value).__name__}")
            if value <= 0:
                raise ValueError(f"NextWordModel: '{name}' must be a positive int, got {value}")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"NextWordModel: 'nonlinearity' must be 'tanh' or 'relu', got {nonlinearity!r}")
        check_backend(backend)
        self._set_vocab(words)
        V = len(words)
        self.embed_dim = embed_dim
        self.hidden_size = hidden_size
        self.token_embedding = nn.Embedding(V, embed_dim)
        self.rnn = RNN(embed_dim, hidden_size, nonlinearity=nonlinearity, batch_first=True, backend=backend)
        self.head = nn.Linear(hidden_size, V)

    # ---------------------------------------------------------- vocabulary --
    @staticmethod
    def _check_vocab(vocab) -> list[str]:
        if isinstance(vocab, str) or not isinstance(vocab, Sequence):
            raise TypeError(f"NextWordModel: 'vocab' must be a sequence of str, got {type(vocab).__name__}")
        words = list(vocab)
        if not words:
            raise ValueError("NextWordModel: 'vocab' must hold at least one word, got an empty sequence")
        for w in words:
            if not isinstance(w, str) or not w:
                raise ValueError(f"NextWordModel: every word in 'vocab' must be a non-empty str, got {w!r}")
        if len(set(words)) != len(words):
            seen, dupes = set(), []
            for w in words:
                if w in seen:
                    dupes.append(w)
                seen.add(w)
            raise ValueError(f"NextWordModel: 'vocab' must not repeat words, repeated: {dupes[:5]}")
        return words

    def _set_vocab(self, words: list[str]) -> None:
        self.vocab = words
        self.word_to_index = {w: i for i, w in enumerate(words)}

    def get_extra_state(self) -> dict:
        """The vocabulary, saved in ``state_dict()`` under ``"_extra_state"``."""
        return {"vocab": list(self.vocab)}

    def set_extra_state(self, state: dict) -> None:
        """Takes the checkpoint's vocabulary (its rows are the checkpoint's words)."""
        words = self._check_vocab(state["vocab"])
        if len(words) != len(self.vocab):
            raise ValueError(f"NextWordModel: the checkpoint's vocabulary has {len(words)} words, "
                             f"this model has {len(self.vocab)}")
        self._set_vocab(words)

    def index(self, word: str) -> int:
        """The token id of ``word``; ValueError naming it when it is not in the vocabulary."""
        try:
            return self.word_to_index[word]
        except (KeyError, TypeError):
            raise ValueError(f"NextWordModel: unknown word {word!r} (not in the model's "
                             f"{len(self.vocab)}-word vocabulary)") from None

    # ------------------------------------------------------------ backend --
    @property
    def backend(self) -> str:
        return self.rnn.backend

    @backend.setter
    def backend(self, backend: str) -> None:
        self.rnn.backend = check_backend(backend)

    def set_backend(self, backend: str) -> "NextWordModel":
        """Switch the RNN to ``backend``; returns ``self``."""
        self.backend = backend
        return self

    # ------------------------------------------------------------ forward --
    def forward(self, idx: Tensor, targets: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """Next-word logits at every position, and the loss when ``targets`` are given.

        Args:
            idx: ``(B, T)`` long word ids; each row is read from a zero state.
            targets: ``(B, T)`` long, the word following each position; ``-1``
                marks a position to ignore (padding).

        Returns:
            ``logits: (B, T, V)`` and the mean cross-entropy (scalar) or ``None``.
        """
        if not isinstance(idx, Tensor) or idx.dtype != torch.long:
            raise TypeError("NextWordModel: 'idx' must be a torch.long tensor of word ids")
        if idx.dim() != 2 or idx.shape[1] == 0:
            raise ValueError(f"NextWordModel: 'idx' must have shape (B, T) with T >= 1, got {tuple(idx.shape)}")
        if not torch.compiler.is_compiling() and idx.numel() > 0:
            lo, hi = idx.min().item(), idx.max().item()
            if lo < 0 or hi >= len(self.vocab):
                raise ValueError(f"NextWordModel: 'idx' holds word ids in [{lo}, {hi}], outside "
                                 f"[0, V = {len(self.vocab)})")
        B, T = idx.shape
        states, _ = self.rnn(self.token_embedding(idx))                    # (B, T, hidden_size)
        logits = self.head(states)                                         # (B, T, V)
        if targets is None:
            return logits, None
        if not isinstance(targets, Tensor) or targets.dtype != torch.long:
            raise TypeError("NextWordModel: 'targets' must be a torch.long tensor of word ids")
        if targets.shape != idx.shape:
            raise ValueError(f"NextWordModel: 'targets' must have the shape of 'idx' {tuple(idx.shape)}, "
                             f"got {tuple(targets.shape)}")
        loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T), ignore_index=-1)
        return logits, loss

    # --------------------------------------------------------- embeddings --
    def _embed_ids(self, ids: Tensor) -> Tensor:
        """Hidden state after reading each word alone from a zero state:
        ``ids: (n,)`` -> ``(n, hidden_size)``, one batched RNN call."""
        with torch.no_grad():
            x = self.token_embedding(ids.unsqueeze(1))                     # (n, 1, embed_dim)
            states, _ = self.rnn(x)                                        # (n, 1, hidden_size)
        return states[:, 0, :]

    def embeddings(self) -> Tensor:
        """Every word's embedding, row ``i`` for ``vocab[i]``: ``(V, hidden_size)``
        (detached; computed without gradients, on the model's device)."""
        ids = torch.arange(len(self.vocab), device=self.head.weight.device)
        return self._embed_ids(ids)

    def embedding(self, word: str) -> Tensor:
        """The embedding of ``word``: ``(hidden_size,)``, detached."""
        ids = torch.tensor([self.index(word)], device=self.head.weight.device)
        return self._embed_ids(ids)[0]

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of the embeddings of words ``a`` and ``b``, in [-1, 1]
        (0 when one embedding is the zero vector, as a relu RNN may give)."""
        ids = torch.tensor([self.index(a), self.index(b)], device=self.head.weight.device)
        unit = F.normalize(self._embed_ids(ids).double(), dim=-1)          # (2, hidden_size)
        return float((unit[0] @ unit[1]).clamp(-1.0, 1.0))

    def most_similar(self, word: str, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` words whose embeddings are closest to ``word``'s in
        cosine similarity, best first, ``word`` itself left out.

        Args:
            word: a word of the vocabulary.
            k: how many, ``1 <= k <= V - 1``.

        Returns:
            ``[(word, cosine), ...]`` sorted by decreasing cosine.
        """
        i = self.index(word)
        V = len(self.vocab)
        if isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f"NextWordModel.most_similar: 'k' must be an int, got {type(k).__name__}")
        if not 1 <= k <= V - 1:
            raise ValueError(f"NextWordModel.most_similar: 'k' must be in [1, {V - 1}] "
                             f"(the other words of the vocabulary), got {k}")
        unit = F.normalize(self.embeddings().double(), dim=-1)             # (V, hidden_size)
        cosine = (unit @ unit[i]).clamp(-1.0, 1.0)                         # (V,)
        cosine[i] = float("-inf")                                          # never the word itself
        best = torch.topk(cosine, k)
        return [(self.vocab[j], float(c)) for c, j in zip(best.values.tolist(), best.indices.tolist())]
