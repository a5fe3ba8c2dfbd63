"""Regenerate the shipped default corpus from the grammar.

    python -m fusedseq.data.make_default_corpus           # rewrite default_corpus.txt
    python -m fusedseq.data.make_default_corpus --check   # exit 1 if the file differs

The file is ``NUM_SENTENCES`` sentences of :mod:`fusedseq.data.grammar`
drawn with ``SEED``, one per line, words separated by single spaces, UTF-8,
"\\n" line ends. The tests check that the shipped file equals a fresh
regeneration byte for byte, so changing the grammar means running this.
"""
from __future__ import annotations

import argparse
import sys

from .corpus import default_corpus_path
from .grammar import sample_sentences

NUM_SENTENCES = 4000
SEED = 5  # issue 5


def default_corpus_text() -> str:
    """The exact text of the default corpus."""
    return "".join(" ".join(words) + "\n" for words in sample_sentences(NUM_SENTENCES, SEED))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusedseq.data.make_default_corpus",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare the shipped file with a fresh regeneration")
    args = parser.parse_args(argv)
    data = default_corpus_text().encode("utf-8")
    path = default_corpus_path()
    if args.check:
        same = path.exists() and path.read_bytes() == data
        print(f"{path}: {'up to date' if same else 'DIFFERS from the grammar; rerun without --check'}")
        return 0 if same else 1
    path.write_bytes(data)  # bytes, so no platform turns "\n" into "\r\n"
    print(f"wrote {NUM_SENTENCES} sentences ({len(data)} bytes) to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
