"""The text a language model learns from, and the windows and batches it is cut into.

``load_corpus()`` returns the default corpus that ships with the package
(sentences of :mod:`fusedseq.data.grammar`, one per line); ``load_corpus(path)``
any UTF-8 text file instead. For training, the text is tokenized and encoded
into one long stream of ids, which :func:`lm_windows` cuts into
(input, target) windows and :func:`random_batches` samples batches from.

torch is imported inside the functions that need it, so importing this
module stays cheap (the command-line parser reaches it).
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Union

from .grammar import split_sentences
from .tokenizer import tokenize

if TYPE_CHECKING:
    import torch

DEFAULT_CORPUS_FILE = "default_corpus.txt"


def default_corpus_path() -> Path:
    """Where the shipped default corpus lies (inside the installed package)."""
    return Path(__file__).with_name(DEFAULT_CORPUS_FILE)


def load_corpus(path: Union[str, os.PathLike, None] = None) -> str:
    """The text of the default corpus (``path=None``) or of a UTF-8 text file.

    Raises FileNotFoundError naming a missing path, ValueError for a
    directory, a file that is not UTF-8, or a text with nothing but
    whitespace. A UTF-8 byte-order mark is dropped.
    """
    if path is None:
        path = default_corpus_path()
    elif not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load_corpus: path must be a str, a path or None, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "load_corpus: corpus file not found", str(path))
    if path.is_dir():
        raise ValueError(f"load_corpus: {str(path)!r} is a directory, expected a UTF-8 text file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"load_corpus: {str(path)!r} is not UTF-8 text (byte {data[e.start]:#04x} "
                         f"at offset {e.start} cannot be decoded)") from e
    if not text.strip():
        raise ValueError(f"load_corpus: the corpus {str(path)!r} is empty (or only whitespace)")
    return text


def sentences_from_text(text: str) -> list[list[str]]:
    """The tokens of ``text`` cut into sentences after each ".".

    Each sentence keeps its "."; words after the last "." form a final,
    unfinished sentence, so no word is lost.
    """
    return split_sentences(tokenize(text), keep_incomplete=True)


def lm_windows(ids: "torch.Tensor", context_length: int,
               stride: int | None = None) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Cut a stream of ids into next-word prediction examples.

    ids: (N,) integer tensor. Returns ``inputs, targets``, each
    (num_windows, context_length), where window ``i`` starts at
    ``i * stride`` and ``targets[i, t] == ids[i * stride + t + 1]``: the word
    that follows ``inputs[i, t]``. ``stride`` defaults to ``context_length``
    (windows that do not overlap, so every target is seen once per pass).
    Both are fresh contiguous tensors on ids' device.
    """
    import torch

    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"lm_windows: ids must be a torch.Tensor, got {type(ids).__name__}")
    if ids.dim() != 1:
        raise ValueError(f"lm_windows: ids must be 1-D (N,), got shape {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ValueError(f"lm_windows: ids must be an integer tensor, got {ids.dtype}")
    context_length = _positive_int(context_length, "lm_windows: context_length")
    stride = context_length if stride is None else _positive_int(stride, "lm_windows: stride")
    n = ids.numel()
    if n < context_length + 1:
        raise ValueError(f"lm_windows: need at least context_length + 1 = {context_length + 1} ids "
                         f"for one window, got {n}")
    # unfold gives views with overlapping storage; copy so callers may write.
    inputs = ids[:-1].unfold(0, context_length, stride).contiguous()   # (W, L)
    targets = ids[1:].unfold(0, context_length, stride).contiguous()   # (W, L)
    return inputs, targets


def random_batches(num_examples: int, batch_size: int, generator: "torch.Generator",
                   num_batches: int | None = None) -> Iterator["torch.Tensor"]:
    """Yield batches of example indices, each a (batch_size,) int64 CPU tensor.

    Each batch is ``batch_size`` indices drawn uniformly (with replacement)
    from ``range(num_examples)`` by ``generator``, and nothing else is
    random. A batch is drawn only when it is asked for, one draw per batch,
    so a generator state saved after step k (``generator.get_state()``) and
    restored later yields exactly the batches k+1, k+2, ... that an
    uninterrupted run gets: that is what makes resumed training equal.
    Infinite unless ``num_batches`` is given.
    """
    import torch

    if not isinstance(generator, torch.Generator):
        raise TypeError(f"random_batches: generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError(f"random_batches: generator must be a CPU generator, got one on {generator.device}")
    num_examples = _positive_int(num_examples, "random_batches: num_examples")
    batch_size = _positive_int(batch_size, "random_batches: batch_size")
    if num_batches is not None and (isinstance(num_batches, bool) or not isinstance(num_batches, int)
                                    or num_batches < 0):
        raise ValueError(f"random_batches: num_batches must be None or an int >= 0, got {num_batches!r}")
    return _batches(num_examples, batch_size, generator, num_batches)


def _batches(num_examples, batch_size, generator, num_batches):
    # A separate generator function, so the argument checks above run at the
    # call rather than at the first next().
    import torch

    step = 0
    while num_batches is None or step < num_batches:
        yield torch.randint(num_examples, (batch_size,), generator=generator)  # (batch_size,)
        step += 1


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value
