"""fusedseq.data: the word tokenizer, the grammar and the default corpus.

    load_corpus(path=None)          the shipped corpus, or any UTF-8 text file
    WordTokenizer.from_text(text)   words <-> ids
    lm_windows(ids, L)              (inputs, targets) next-word windows
    random_batches(n, B, generator) seeded batches of example indices
    grammar                         the corpus's grammar: exact next-word
                                    distributions, optimal accuracy, accepts()

Nothing here imports torch at import time.
"""
from . import grammar
from .corpus import (default_corpus_path, lm_windows, load_corpus, random_batches,
                     sentences_from_text)
from .grammar import (CATEGORIES, accepts, acceptance, category_of, model_accuracy,
                      next_word_distribution, optimal_accuracy, sample_sentences,
                      split_sentences, unigram_accuracy)
from .tokenizer import UNK, WordTokenizer, tokenize

__all__ = [
    "CATEGORIES", "UNK", "WordTokenizer", "accepts", "acceptance", "category_of",
    "default_corpus_path", "grammar", "lm_windows", "load_corpus", "model_accuracy",
    "next_word_distribution", "optimal_accuracy", "random_batches", "sample_sentences",
    "sentences_from_text", "split_sentences", "tokenize", "unigram_accuracy",
]
