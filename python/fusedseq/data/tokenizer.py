"""A word-level tokenizer: text -> words -> integer ids, and back.

How text is split into words (:func:`tokenize`):

1. The text is lowercased and put in Unicode NFC form (so "é" typed as "e"
   plus a combining accent is the same word as a precomposed "é").
2. A word is a maximal run of letters, digits, combining marks and
   apostrophes (' and ’), in any script: "don't", "café", "naïve", "2024".
3. Every other character that is not whitespace is a token of its own:
   punctuation such as . , ! ? ; : and any other symbol ("-", "(", "€").
4. Whitespace separates tokens and is otherwise dropped.

So ``decode(encode(text)) == " ".join(tokenize(text))``: the round trip
keeps every token and normalises only case and spacing.

The vocabulary of :meth:`WordTokenizer.from_text` is deterministic: special
tokens first (in the order given), then words by falling count, ties in
alphabetical (code point) order. A special token such as ``"<unk>"`` can never
collide with a word, because tokenize() always splits "<" and ">" off.
"""
from __future__ import annotations

import difflib
import operator
import re
import unicodedata
from collections import Counter
from types import MappingProxyType
from typing import Iterable, Mapping, Sequence, Union

UNK = "<unk>"

# One regex pass finds word runs and single other characters; combining
# marks (which str.isalnum() does not count as letters, e.g. Devanagari vowel
# signs) come out as single characters and are glued back to their word.
_PIECE = re.compile(r"(?:[^\W_]|['’])+|\S")


def _is_mark(piece: str) -> bool:
    return unicodedata.category(piece[0]).startswith("M")


def _is_wordy(piece: str) -> bool:
    c = piece[0]
    return c.isalnum() or c in "'’" or _is_mark(c)


def tokenize(text: str) -> list[str]:
    """Split ``text`` into lowercase word and punctuation tokens (rules in the module doc)."""
    if not isinstance(text, str):
        raise TypeError(f"tokenize: text must be a str, got {type(text).__name__}")
    text = unicodedata.normalize("NFC", text.lower())
    tokens: list[str] = []
    glue_end = -1  # end offset of the last token, when it is a word that may continue
    for m in _PIECE.finditer(text):
        piece = m.group()
        if len(piece) > 1 or _is_wordy(piece):
            if m.start() == glue_end:  # a word continued by a mark (or a mark by a word)
                tokens[-1] += piece
            else:
                tokens.append(piece)
            glue_end = m.end()
        else:
            tokens.append(piece)
            glue_end = -1
    return tokens


class WordTokenizer:
    """Maps words to ids ``0 .. len(self) - 1`` and back.

    ``itos[i]`` is the word with id ``i``; ``stoi[word]`` its id. Build one
    from text with :meth:`from_text`, save it with :meth:`to_dict`.
    """

    def __init__(self, itos: Sequence[str], specials: Sequence[str] = ()):
        if isinstance(itos, str) or not isinstance(itos, Iterable):
            raise TypeError(f"WordTokenizer: itos must be a sequence of words, got {type(itos).__name__}")
        itos = tuple(itos)
        specials = _check_specials(specials, "WordTokenizer")
        if not itos:
            raise ValueError("WordTokenizer: the vocabulary (itos) is empty")
        for i, word in enumerate(itos):
            if not isinstance(word, str) or not word or any(c.isspace() for c in word):
                raise ValueError(f"WordTokenizer: itos[{i}] must be a non-empty str without "
                                 f"whitespace, got {word!r}")
        if len(set(itos)) != len(itos):
            dups = sorted(w for w, c in Counter(itos).items() if c > 1)
            raise ValueError(f"WordTokenizer: itos holds duplicate words: {dups[:10]}")
        missing = [s for s in specials if s not in itos]
        if missing:
            raise ValueError(f"WordTokenizer: specials {missing} are not in itos")
        self._itos = itos
        self._stoi = {w: i for i, w in enumerate(itos)}
        self._specials = specials

    # ------------------------------------------------------------ building
    @classmethod
    def from_text(cls, text: Union[str, Iterable[str]], min_count: int = 1,
                  specials: Sequence[str] = ()) -> "WordTokenizer":
        """The vocabulary of ``text`` (a string, or an iterable of strings such as lines).

        Words seen fewer than ``min_count`` times are left out (they become
        unknown). ``specials`` come first, e.g. ``specials=("<unk>",)`` to be
        able to encode unknown words as ``<unk>``.
        """
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"WordTokenizer.from_text: min_count must be an int >= 1, got {min_count!r}")
        specials = _check_specials(specials, "WordTokenizer.from_text")
        counts: Counter[str] = Counter()
        if isinstance(text, str):
            counts.update(tokenize(text))
        else:
            for piece in text:
                counts.update(tokenize(piece))
        if not counts:
            raise ValueError("WordTokenizer.from_text: the text has no tokens (it is empty or whitespace)")
        words = sorted((w for w, c in counts.items() if c >= min_count and w not in specials),
                       key=lambda w: (-counts[w], w))
        if not words:
            raise ValueError(f"WordTokenizer.from_text: no word occurs min_count={min_count} times "
                             f"(the most frequent occurs {counts.most_common(1)[0][1]} times)")
        return cls(list(specials) + words, specials)

    # ------------------------------------------------------------ lookups
    @property
    def itos(self) -> tuple[str, ...]:
        """Id -> word."""
        return self._itos

    @property
    def stoi(self) -> Mapping[str, int]:
        """Word -> id (read-only)."""
        return MappingProxyType(self._stoi)

    @property
    def specials(self) -> tuple[str, ...]:
        return self._specials

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, word: object) -> bool:
        return word in self._stoi

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WordTokenizer):
            return NotImplemented
        return self._itos == other._itos and self._specials == other._specials

    def __repr__(self) -> str:
        head = ", ".join(repr(w) for w in self._itos[:8])
        more = ", ..." if len(self) > 8 else ""
        return f"WordTokenizer({len(self)} words: {head}{more})"

    def index(self, word: str) -> int:
        """The id of ``word``; ValueError naming it (and the closest known words) if unknown."""
        i = self._stoi.get(word)
        if i is None:
            raise ValueError(self._unknown_message(word))
        return i

    def _unknown_message(self, word: object) -> str:
        msg = f"unknown word {word!r}: not in the vocabulary of {len(self)} words"
        if isinstance(word, str) and len(self) <= 50_000:  # difflib is linear in the vocabulary
            close = difflib.get_close_matches(word, self._itos, n=3, cutoff=0.6)
            if close:
                msg += "; closest known: " + ", ".join(repr(w) for w in close)
        if UNK in self._stoi:
            msg += "; pass unknown='unk' to encode it as '<unk>'"
        return msg

    # ------------------------------------------------------------ encode / decode
    def encode(self, text_or_words: Union[str, Sequence[str]], unknown: str = "error") -> list[int]:
        """Ids of a text (tokenized first) or of a sequence of words (taken as they are).

        ``unknown="error"`` (default) raises ValueError on a word outside the
        vocabulary; ``unknown="unk"`` maps it to ``<unk>``, which the tokenizer
        must have among its specials.
        """
        if unknown not in ("error", "unk"):
            raise ValueError(f"encode: unknown must be 'error' or 'unk', got {unknown!r}")
        if isinstance(text_or_words, str):
            words = tokenize(text_or_words)
        elif isinstance(text_or_words, Iterable):
            words = list(text_or_words)
        else:
            raise TypeError(f"encode: expected a str or a sequence of words, got {type(text_or_words).__name__}")
        unk_id = None
        if unknown == "unk":
            unk_id = self._stoi.get(UNK)
            if unk_id is None:
                raise ValueError("encode: unknown='unk' needs a tokenizer built with the '<unk>' "
                                 "special (WordTokenizer.from_text(..., specials=('<unk>',)))")
        stoi = self._stoi
        ids = []
        for word in words:
            i = stoi.get(word, unk_id)
            if i is None:
                raise ValueError("encode: " + self._unknown_message(word))
            ids.append(i)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The words of ``ids`` joined by single spaces (ids: ints, or a 1-D integer tensor/array)."""
        if hasattr(ids, "tolist") and getattr(ids, "ndim", 1) != 1:
            raise ValueError(f"decode: ids must be 1-D, got shape {tuple(ids.shape)}")
        return " ".join(self.decode_words(ids))

    def decode_words(self, ids: Iterable[int]) -> list[str]:
        """The list of words of ``ids``."""
        if hasattr(ids, "tolist"):  # torch tensor / numpy array: one conversion, not one per element
            ids = ids.tolist()
        words = []
        n = len(self._itos)
        for pos, i in enumerate(ids):
            try:
                i = operator.index(i)
            except TypeError:
                raise TypeError(f"decode: ids must be integers, got {type(i).__name__} at position {pos}") from None
            if not 0 <= i < n:
                raise ValueError(f"decode: id {i} at position {pos} is out of range [0, {n})")
            words.append(self._itos[i])
        return words

    # ------------------------------------------------------------ checkpoints
    def to_dict(self) -> dict:
        """A plain dict (lists and strings) that :meth:`from_dict` turns back into this tokenizer."""
        return {"kind": "fusedseq.WordTokenizer", "version": 1,
                "itos": list(self._itos), "specials": list(self._specials)}

    @classmethod
    def from_dict(cls, state: Mapping) -> "WordTokenizer":
        if not isinstance(state, Mapping) or state.get("kind") != "fusedseq.WordTokenizer":
            raise ValueError("WordTokenizer.from_dict: not a dict made by WordTokenizer.to_dict()")
        if state.get("version") != 1:
            raise ValueError(f"WordTokenizer.from_dict: unsupported version {state.get('version')!r}")
        return cls(state["itos"], state.get("specials", ()))


def _check_specials(specials: Sequence[str], where: str) -> tuple[str, ...]:
    if isinstance(specials, str):
        raise TypeError(f"{where}: specials must be a sequence of strings such as ('<unk>',), "
                        f"not the string {specials!r}")
    specials = tuple(specials)
    for s in specials:
        if not isinstance(s, str) or not s or any(c.isspace() for c in s):
            raise ValueError(f"{where}: each special must be a non-empty str without whitespace, got {s!r}")
    if len(set(specials)) != len(specials):
        raise ValueError(f"{where}: specials must be distinct, got {specials}")
    return specials
